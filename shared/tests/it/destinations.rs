//! Destinations against the local engine: created for many tenants at once, listed without
//! secrets, credentials sealed and bound to their destination, updated, disabled in bulk, and
//! never reachable through another tenant.

use std::collections::BTreeMap;

use formbridge_shared::destination::{
    replace_auth, DestinationAuth, DestinationError, DestinationKind, DestinationSpec,
};
use formbridge_shared::secrets::Keyring;
use formbridge_shared::store::DataStore;
use formbridge_shared::testing::fresh_stack;

use crate::support::tenants;
use formbridge_shared::{FormId, TenantId};
use time::OffsetDateTime;

fn spec(auth: Option<DestinationAuth>) -> DestinationSpec {
    DestinationSpec {
        name: "CRM".into(),
        url: "https://crm.example.com/hooks/forms".into(),
        kind: DestinationKind::Webhook,
        forms: vec![FormId::parse("contact").unwrap()],
        timeout_ms: 15_000,
        auth,
        policy: Default::default(),
    }
}

#[tokio::test]
async fn destinations_keep_their_secrets_sealed_and_their_tenants_apart() {
    let (aws, names, _) = fresh_stack().await;
    let store = DataStore::new(aws.dynamodb.clone(), names.table.clone());
    let keyring = Keyring::parse(&Keyring::generate_spec("k1"), "test").unwrap();
    let ts = tenants(&store, &["agency-a", "agency-b", "agency-c"]).await;
    let now = OffsetDateTime::now_utc();
    let auth = DestinationAuth::Headers { headers: BTreeMap::from([("X-Api-Key".into(), "s3cret-value".into())]) };

    // One command, three tenants: each gets its own destination and secret.
    let created = store.create_destinations(&ts, &spec(Some(auth.clone())), &keyring, now).await.unwrap();
    assert_eq!(created.len(), 3);
    let (a, a_secret) = &created[0];
    assert_ne!(created[0].1, created[1].1, "each destination has its own signing secret");

    // Stored sealed: neither the secret nor the credential appears in the raw item.
    let raw = aws
        .dynamodb
        .query()
        .table_name(&names.table)
        .key_condition_expression("PK = :pk")
        .expression_attribute_values(":pk", aws_sdk_dynamodb::types::AttributeValue::S("TENANT#agency-a".into()))
        .send()
        .await
        .unwrap();
    let dump = format!("{:?}", raw.items());
    assert!(!dump.contains(a_secret.expose()) && !dump.contains("s3cret-value"), "plaintext secret at rest");

    // The worker can open them; the admin view never shows them.
    let listed = store.list_destinations(&ts[0]).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(&listed[0].signing_secret(&keyring).unwrap(), a_secret);
    assert_eq!(listed[0].auth(&keyring).unwrap(), Some(auth));
    let view = serde_json::to_string(&listed[0].view()).unwrap();
    assert!(!view.contains("s3cret") && !view.contains(a_secret.expose()), "{view}");
    assert!(view.contains("headers(X-Api-Key)"));
    assert!(listed[0].wants(&FormId::parse("contact").unwrap(), "www.example.com"));
    assert!(!listed[0].wants(&FormId::parse("quote").unwrap(), "www.example.com"));

    // Updates: URL, all forms, credentials removed.
    let d = store
        .update_destination(&ts[0], &a.id, &keyring, now, "destination.updated", |d, k| {
            d.url = "https://crm.example.com/v2".into();
            d.forms.clear();
            replace_auth(d, k, None);
        })
        .await
        .unwrap();
    assert!(d.wants(&FormId::parse("quote").unwrap(), "www.example.com"));
    assert_eq!(store.get_destination(&ts[0], &a.id).await.unwrap().unwrap().auth(&keyring).unwrap(), None);
    let bad = store
        .update_destination(&ts[0], &a.id, &keyring, now, "destination.updated", |d, _| d.url = "ftp://x".into())
        .await;
    assert!(matches!(bad, Err(DestinationError::Url(..))));

    // Another tenant cannot reach it, by id or by delete.
    assert!(store.get_destination(&ts[1], &a.id).await.unwrap().is_none());
    assert!(matches!(store.delete_destination(&ts[1], &a.id, now).await, Err(DestinationError::NotFound(_))));

    // Disable all of a tenant's destinations at once.
    let more = store.create_destinations(&ts[1..2], &spec(None), &keyring, now).await.unwrap();
    assert_eq!(more.len(), 1);
    let changed = store.set_all_destinations_enabled(&ts[1], false, &keyring, now).await.unwrap();
    assert_eq!(changed.len(), 2);
    assert!(store.list_destinations(&ts[1]).await.unwrap().iter().all(|d| !d.enabled));
    assert!(store.list_destinations(&ts[2]).await.unwrap().iter().all(|d| d.enabled), "other tenants untouched");

    store.delete_destination(&ts[0], &a.id, now).await.unwrap();
    assert!(store.list_destinations(&ts[0]).await.unwrap().is_empty());
}

#[tokio::test]
async fn destinations_are_created_only_for_tenants_that_exist() {
    let (aws, names, _) = fresh_stack().await;
    let store = DataStore::new(aws.dynamodb.clone(), names.table.clone());
    let keyring = Keyring::parse(&Keyring::generate_spec("k1"), "test").unwrap();
    let ts = tenants(&store, &["real-one"]).await;
    let ghost = TenantId::parse("ghost").unwrap();
    let now = OffsetDateTime::now_utc();
    // One real tenant and one that does not exist: nothing is written for either.
    let r = store.create_destinations(&[ts[0].clone(), ghost.clone()], &spec(None), &keyring, now).await;
    assert!(matches!(&r, Err(DestinationError::TenantNotFound(t)) if *t == ghost), "{r:?}");
    assert!(store.list_destinations(&ts[0]).await.unwrap().is_empty(), "the transaction wrote nothing");
    assert!(store.list_destinations(&ghost).await.unwrap().is_empty());
    assert_eq!(store.create_destinations(&ts, &spec(None), &keyring, now).await.unwrap().len(), 1);
}

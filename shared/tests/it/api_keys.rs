//! Tenant API keys against the local engine: shown once and stored only as a keyed hash, one
//! GetItem to authenticate, an agency key covering exactly its tenants, rotation with a grace
//! period, revocation, and an audit event per tenant for every change.

use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use formbridge_shared::apikey::{ApiKeyError, MAX_TENANTS};
use formbridge_shared::secrets::Keyring;
use formbridge_shared::store::DataStore;
use formbridge_shared::testing::fresh_stack;

use crate::support::tenants;
use formbridge_shared::TenantId;
use time::OffsetDateTime;

fn ms(t: OffsetDateTime) -> u64 {
    (t.unix_timestamp_nanos() / 1_000_000) as u64
}

/// Every string in every item of `pk`'s partition, flattened.
async fn strings_in(store: &DataStore, pk: &str) -> Vec<String> {
    let out = store
        .client()
        .query()
        .table_name(store.table())
        .key_condition_expression("PK = :pk")
        .expression_attribute_values(":pk", AttributeValue::S(pk.into()))
        .send()
        .await
        .unwrap();
    fn flat(v: &AttributeValue, out: &mut Vec<String>) {
        match v {
            AttributeValue::S(s) | AttributeValue::N(s) => out.push(s.clone()),
            AttributeValue::Ss(ss) => out.extend(ss.iter().cloned()),
            AttributeValue::M(m) => m.values().for_each(|v| flat(v, out)),
            AttributeValue::L(l) => l.iter().for_each(|v| flat(v, out)),
            _ => {}
        }
    }
    let mut all = Vec::new();
    for item in out.items() {
        item.values().for_each(|v| flat(v, &mut all));
    }
    all
}

#[tokio::test]
async fn an_agency_key_covers_its_tenants_only_and_is_stored_only_as_a_hash() {
    let (aws, names, _) = fresh_stack().await;
    let store = DataStore::new(aws.dynamodb.clone(), names.table.clone());
    let keyring = Keyring::parse(&Keyring::generate_spec("k1"), "test").unwrap();
    let ts = tenants(&store, &["ak-agency-a", "ak-agency-b", "ak-other"]).await;
    let now = OffsetDateTime::now_utc();

    let (key, info) = store.create_api_key(&ts[..2], "agency dashboard", &keyring, now).await.unwrap();
    assert_eq!(info.tenants, ts[..2].to_vec());
    let who = store.authenticate_api_key(key.expose(), &keyring, ms(now)).await.unwrap();
    assert!(who.covers(&ts[0]) && who.covers(&ts[1]));
    assert!(!who.covers(&ts[2]), "a key covers the tenants listed on it, nothing else");
    assert_eq!(who.key_id, info.id);

    // Nothing stored holds the key or its secret part: not the key item, not the listings, not
    // the audit events.
    let secret = key.expose().rsplit('_').next().unwrap().to_owned();
    let month = now.format(&time::macros::format_description!("[year]-[month]")).unwrap();
    let mut stored = Vec::new();
    for t in &ts {
        stored.extend(strings_in(&store, &format!("TENANT#{t}")).await);
        stored.extend(strings_in(&store, &format!("AUDIT#{t}#{month}")).await);
    }
    assert!(stored.iter().any(|s| s == &info.id), "the listings name the key by id");
    let hashes: Vec<String> = stored.iter().filter(|s| s.len() == 43 && !s.contains('#')).cloned().collect();
    assert!(!hashes.is_empty(), "the listings hold the key's hash");
    for h in &hashes {
        stored.extend(strings_in(&store, &format!("APIKEY#{h}")).await);
    }
    assert!(stored.iter().all(|s| !s.contains(&secret) && !s.contains(key.expose())), "{stored:?}");
    let created_events = stored.iter().filter(|s| *s == "api_key.created").count();
    assert_eq!(created_events, 2, "one audit event per covered tenant: {stored:?}");

    // Lists: by each covered tenant, never by another.
    assert_eq!(store.list_api_keys(&ts[1]).await.unwrap(), vec![info.clone()]);
    assert!(store.list_api_keys(&ts[2]).await.unwrap().is_empty());

    // A key with its secret changed, a malformed key, a key under another master key: refused.
    let mut forged = key.expose().to_owned();
    let last = forged.pop().unwrap();
    forged.push(if last == 'A' { 'B' } else { 'A' });
    assert!(matches!(store.authenticate_api_key(&forged, &keyring, ms(now)).await, Err(ApiKeyError::Invalid)));
    assert!(matches!(
        store.authenticate_api_key("Bearer nonsense", &keyring, ms(now)).await,
        Err(ApiKeyError::Malformed)
    ));
    let other = Keyring::parse(&Keyring::generate_spec("k2"), "test").unwrap();
    assert!(matches!(store.authenticate_api_key(key.expose(), &other, ms(now)).await, Err(ApiKeyError::Invalid)));

    // Bad requests: unknown tenant, too many tenants, no name. Nothing is written.
    let ghost = TenantId::parse("ak-ghost").unwrap();
    assert!(matches!(
        store.create_api_key(&[ts[0].clone(), ghost.clone()], "x", &keyring, now).await,
        Err(ApiKeyError::TenantMissing(t)) if t == ghost
    ));
    let many: Vec<TenantId> = (0..=MAX_TENANTS).map(|i| TenantId::parse(&format!("ak-t{i}")).unwrap()).collect();
    assert!(matches!(store.create_api_key(&many, "x", &keyring, now).await, Err(ApiKeyError::TenantCount)));
    assert!(matches!(store.create_api_key(&ts[..1], "  ", &keyring, now).await, Err(ApiKeyError::Name)));
    assert_eq!(store.list_api_keys(&ts[0]).await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_rotated_key_works_through_its_grace_and_a_revoked_one_stops_at_once() {
    let (aws, names, _) = fresh_stack().await;
    let store = DataStore::new(aws.dynamodb.clone(), names.table.clone());
    let old_master = Keyring::generate_spec("k1");
    let keyring = Keyring::parse(&old_master, "test").unwrap();
    let ts = tenants(&store, &["ak-rot-a", "ak-rot-b"]).await;
    let now = OffsetDateTime::now_utc();
    let (old, old_info) = store.create_api_key(&ts, "ci", &keyring, now).await.unwrap();

    // After the master keys rotate (a new one first), keys made under the old one still work.
    let rotated_masters = Keyring::parse(&format!("{},{old_master}", Keyring::generate_spec("k2")), "test").unwrap();
    assert!(store.authenticate_api_key(old.expose(), &rotated_masters, ms(now)).await.is_ok());

    // Rotation by either tenant: a new key now, the old one until the grace ends.
    let grace = Duration::from_secs(3600);
    let (new, new_info) = store.rotate_api_key(&ts[1], &old_info.id, grace, &keyring, now).await.unwrap();
    assert_ne!(new.expose(), old.expose());
    assert_eq!((new_info.tenants.clone(), new_info.name.as_str()), (ts.clone(), "ci"));
    let within = ms(now) + 3_599_000;
    let after = ms(now) + 3_601_000;
    assert!(store.authenticate_api_key(old.expose(), &keyring, within).await.is_ok());
    assert!(matches!(store.authenticate_api_key(old.expose(), &keyring, after).await, Err(ApiKeyError::Invalid)));
    assert!(store.authenticate_api_key(new.expose(), &keyring, after).await.is_ok());
    // A key already rotated out cannot be rotated again (that would fork it).
    assert!(matches!(
        store.rotate_api_key(&ts[0], &old_info.id, grace, &keyring, now).await,
        Err(ApiKeyError::NotFound(_))
    ));
    let listed = store.list_api_keys(&ts[0]).await.unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed.iter().find(|k| k.id == old_info.id).unwrap().replaced_by.as_deref(), Some(new_info.id.as_str()));

    // Revocation is immediate, for every tenant the key covers, and idempotent; a tenant the
    // key does not cover cannot touch it.
    let stranger = tenants(&store, &["ak-rot-c"]).await;
    assert!(matches!(store.revoke_api_key(&stranger[0], &new_info.id, now).await, Err(ApiKeyError::NotFound(_))));
    assert!(store.authenticate_api_key(new.expose(), &keyring, ms(now)).await.is_ok());
    store.revoke_api_key(&ts[0], &new_info.id, now).await.unwrap();
    store.revoke_api_key(&ts[0], &new_info.id, now).await.unwrap();
    assert!(matches!(store.authenticate_api_key(new.expose(), &keyring, ms(now)).await, Err(ApiKeyError::Invalid)));
    let month = now.format(&time::macros::format_description!("[year]-[month]")).unwrap();
    for t in &ts {
        let events = strings_in(&store, &format!("AUDIT#{t}#{month}")).await;
        for kind in ["api_key.created", "api_key.rotated", "api_key.revoked"] {
            assert_eq!(events.iter().filter(|s| *s == kind).count(), 1, "{kind} for {t}: {events:?}");
        }
    }
}

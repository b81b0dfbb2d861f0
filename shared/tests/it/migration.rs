//! The migration from a legacy WordPress authentication table, against the local engine, with the
//! 200-row fixture (`schemas/fixtures/legacy-auth/`): every row ends as its `_expect` says, a
//! re-run creates nothing twice, every site resolves and every legacy key verifies, the legacy
//! table is never written, and a rollback removes exactly what the migration created.

use std::collections::{BTreeMap, BTreeSet};

use formbridge_shared::legacy::{self, PlanOptions, RowOutcome};
use formbridge_shared::secrets::Keyring;
use formbridge_shared::site::SiteRecord;
use formbridge_shared::store::DataStore;
use formbridge_shared::testing::fresh_stack;
use formbridge_shared::{domain, MigrationId, SiteDomain, TenantId};
use time::OffsetDateTime;

use crate::support::tenants;

fn fixture() -> Vec<serde_json::Value> {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas/fixtures/legacy-auth/wp-auth-200.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

async fn scan_all(aws: &formbridge_shared::aws::AwsClients, table: &str) -> Vec<String> {
    let items = aws
        .dynamodb
        .scan()
        .table_name(table)
        .consistent_read(true)
        .into_paginator()
        .items()
        .send()
        .collect::<Result<Vec<_>, _>>()
        .await
        .unwrap();
    let mut out: Vec<String> = items.iter().map(|i| format!("{:?}", i.iter().collect::<BTreeMap<_, _>>())).collect();
    out.sort();
    out
}

#[test]
fn every_fixture_row_has_the_documented_shape() {
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas/legacy-auth-row.schema.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let rows = fixture();
    assert_eq!(rows.len(), 200);
    for (i, r) in rows.iter().enumerate() {
        assert!(validator.is_valid(r), "row {i} does not match the schema: {r}");
    }
    // The schema is not a rubber stamp.
    assert!(!validator.is_valid(&serde_json::json!({ "site_url": 7 })));
}

#[tokio::test]
async fn the_legacy_table_migrates_idempotently_verifies_and_rolls_back_exactly() {
    let (aws, names, _) = fresh_stack().await;
    let store = DataStore::new(aws.dynamodb.clone(), names.table.clone());
    let keyring = Keyring::parse(&Keyring::generate_spec("k1"), "test").unwrap();
    let legacy_table = format!("{}-legacy-auth", names.table);
    let rows_json = fixture();
    assert_eq!(legacy::create_fixture_table(&aws.dynamodb, &legacy_table, &rows_json).await.unwrap(), 200);
    let legacy_before = scan_all(&aws, &legacy_table).await;
    let now = OffsetDateTime::now_utc();

    // Before the migration, an operator registered one of the legacy domains to another tenant,
    // and created one tenant the migration would create too.
    let others = tenants(&store, &["someone-else", "lumen-design"]).await;
    let taken = domain::normalize("site010.kestrel-clients.example").unwrap();
    store.add_sites(&others[0], std::slice::from_ref(&taken), &keyring, now).await.unwrap();

    // Rows come back from a Scan in any order: expectations go by the legacy id.
    let rows = legacy::read_legacy(&aws.dynamodb, &legacy_table).await.unwrap();
    assert_eq!(rows.len(), 200);
    let id = MigrationId::parse("wp-auth-2026").unwrap();
    let mut plan = legacy::plan(id.clone(), &rows, &PlanOptions::default());
    let existing = legacy::assess(&store, &mut plan).await.unwrap();
    assert!(existing.already_created.is_empty());
    assert_eq!(existing.tenants_reused, BTreeSet::from([others[1].clone()]));

    // Every row ends as the fixture says (the pre-registered domain: taken).
    let expected: BTreeMap<String, usize> = rows_json.iter().fold(BTreeMap::new(), |mut m, r| {
        let e = r["_expect"].as_str().unwrap().to_owned();
        *m.entry(e).or_insert(0) += 1;
        m
    });
    let mut want = expected.clone();
    *want.get_mut("migrated").unwrap() -= 1;
    want.insert("problem:domain_taken".into(), 1);
    assert_eq!(plan.outcome_counts(), want, "problems: {:#?}", plan.problems);
    for (i, r) in rows.iter().enumerate() {
        let by_url = rows_json
            .iter()
            .filter(|j| j.get("site_url").and_then(|v| v.as_str()) == r.site_url.as_deref())
            .collect::<Vec<_>>();
        if by_url.len() == 1 && r.site_url.as_deref().is_some_and(|u| !u.contains("kestrel")) {
            let label = plan.outcomes[i].label();
            let expect = by_url[0]["_expect"].as_str().unwrap();
            // Of two rows of one site, whichever the Scan returns first is the one migrated.
            fn same(l: &str) -> &str {
                if l == "merged" {
                    "migrated"
                } else {
                    l
                }
            }
            assert_eq!(same(&label), same(expect), "row {r:?}");
        }
    }
    let kinds: BTreeSet<String> =
        plan.problems.iter().map(|p| serde_json::to_value(p.kind).unwrap().as_str().unwrap().to_owned()).collect();
    for k in [
        "bad_webhook_url",
        "bad_created_at",
        "tenant_id_disambiguated",
        "tenant_exists",
        "no_destination",
        "duplicate_domain",
        "domain_taken",
    ] {
        assert!(kinds.contains(k), "no {k} problem reported: {kinds:?}");
    }

    // A dry run (plan and assess) wrote nothing.
    assert!(legacy::manifest(&store, &id).await.unwrap().is_empty());
    let planned: Vec<SiteDomain> = plan.tenants.iter().flat_map(|t| t.sites.iter().map(|s| s.domain.clone())).collect();
    assert_eq!(planned.len(), plan.site_count());
    assert!(store.get_sites(&planned).await.unwrap().is_empty());

    // The migration.
    let applied = legacy::apply(&store, &keyring, &plan, &existing, now).await.unwrap();
    assert_eq!(applied.tenants_created + applied.tenants_reused, plan.tenants.len());
    assert_eq!(applied.tenants_reused, 1);
    assert_eq!(applied.sites_created, plan.site_count());
    assert_eq!(applied.destinations_created.len(), plan.destination_count());
    assert!(applied.sites_taken.is_empty());
    let report = legacy::verify(&store, &keyring, &plan).await.unwrap();
    assert!(report.ok, "{:#?}", report.failures);
    assert_eq!(report.sites_resolvable, plan.site_count());
    assert_eq!(report.legacy_keys_verified, report.legacy_keys);
    assert!(report.legacy_keys > report.sites_expected, "the merged second key is checked too");

    // Independently of `verify`: a raw legacy key signs as the stored secret does.
    let raw_row = rows_json
        .iter()
        .find(|r| r["_expect"] == "migrated" && !r["api_key"].as_str().unwrap().starts_with("whsec_"))
        .unwrap();
    let d = legacy::legacy_domain(raw_row["site_url"].as_str().unwrap()).unwrap();
    let site = store.get_site(&d, true).await.unwrap().unwrap();
    let stored = keyring.open_secret(&site.secrets[0].sealed, &SiteRecord::owner(&d)).unwrap();
    let legacy_sig = standardwebhooks::Webhook::from_bytes(raw_row["api_key"].as_str().unwrap().as_bytes().to_vec())
        .unwrap()
        .sign("msg_1", 1_700_000_000, b"{}")
        .unwrap();
    assert_eq!(
        standardwebhooks::Webhook::new(stored.expose()).unwrap().sign("msg_1", 1_700_000_000, b"{}").unwrap(),
        legacy_sig
    );
    assert!(applied.converted_secrets.iter().any(|c| c.domain == d && c.signing_secret == stored.expose()));

    // Destinations: per-site webhooks limited to their sites, shared ones serving all.
    let acme = TenantId::parse("acme-agency").unwrap();
    let acme_dests = store.list_destinations(&acme).await.unwrap();
    assert_eq!(acme_dests.len(), 2);
    assert!(acme_dests.iter().all(|d| !d.sites.is_empty()));
    let blue = store.list_destinations(&TenantId::parse("blue-fin-digital").unwrap()).await.unwrap();
    assert_eq!(blue.len(), 1);
    assert!(blue[0].sites.is_empty());

    // A re-run creates nothing.
    let mut again = legacy::plan(
        id.clone(),
        &legacy::read_legacy(&aws.dynamodb, &legacy_table).await.unwrap(),
        &PlanOptions::default(),
    );
    let existing_again = legacy::assess(&store, &mut again).await.unwrap();
    let second = legacy::apply(&store, &keyring, &again, &existing_again, OffsetDateTime::now_utc()).await.unwrap();
    assert_eq!((second.tenants_created, second.sites_created, second.destinations_created.len()), (0, 0, 0));
    assert_eq!(second.sites_already_created, plan.site_count());
    assert_eq!(second.destinations_already_created, plan.destination_count());
    assert!(second.converted_secrets.is_empty(), "secrets are shown once");
    assert_eq!(store.list_destinations(&acme).await.unwrap().len(), 2);
    assert!(legacy::verify(&store, &keyring, &again).await.unwrap().ok);

    // After the migration, an operator adds a site of their own to a migrated tenant.
    let own = domain::normalize("added-later.example.com").unwrap();
    store.add_sites(&acme, std::slice::from_ref(&own), &keyring, OffsetDateTime::now_utc()).await.unwrap();

    // The old table was never written.
    assert_eq!(scan_all(&aws, &legacy_table).await, legacy_before);

    // Rollback: what the migration created goes; the rest stays.
    let rb = legacy::rollback(&store, &id, OffsetDateTime::now_utc()).await.unwrap();
    assert_eq!(rb.removed.get("site"), Some(&plan.site_count()));
    assert_eq!(rb.removed.get("destination"), Some(&plan.destination_count()));
    assert_eq!(rb.removed.get("tenant"), Some(&(applied.tenants_created - 1)), "{:#?}", rb.kept);
    assert_eq!(rb.kept.len(), 1, "acme keeps its later site: {:#?}", rb.kept);
    assert!(store.get_sites(&planned).await.unwrap().is_empty());
    assert!(store.get_tenant(&acme).await.unwrap().is_some());
    assert!(store.get_site(&own, true).await.unwrap().is_some());
    assert!(store.get_tenant(&others[1]).await.unwrap().is_some(), "a tenant the migration did not create stays");
    assert_eq!(store.get_site(&taken, true).await.unwrap().unwrap().tenant, others[0]);
    assert!(store.get_tenant(&TenantId::parse("blue-fin-digital").unwrap()).await.unwrap().is_none());
    assert_eq!(legacy::manifest(&store, &id).await.unwrap().len(), 1, "only acme's entry stays, for a later rollback");
    assert_eq!(scan_all(&aws, &legacy_table).await, legacy_before);

    // Rows skipped for a problem never produced a site.
    let skipped: Vec<&RowOutcome> = plan.outcomes.iter().filter(|o| matches!(o, RowOutcome::Problem { .. })).collect();
    assert_eq!(skipped.len(), want.iter().filter(|(k, _)| k.starts_with("problem:")).map(|(_, v)| v).sum::<usize>());
}

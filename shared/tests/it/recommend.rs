//! Recommendations read from the engine: a tenant's metric and cost items, as the aggregator and
//! the cost flushers write them, become its recommendations; another tenant with healthy usage
//! gets none, and neither sees the other's.

use aws_sdk_dynamodb::types::AttributeValue;
use formbridge_shared::attrs::metrics as mt;
use formbridge_shared::billing::Prices;
use formbridge_shared::keys;
use formbridge_shared::recommend::{recommend, tenant_usage, SystemUsage};
use formbridge_shared::store::DataStore;
use formbridge_shared::testing::fresh_stack;
use time::OffsetDateTime;

use crate::support::tenants;

async fn add(store: &DataStore, key: keys::ItemKey, values: &[(&str, u64)]) {
    let mut u = store
        .client()
        .update_item()
        .table_name(store.table())
        .key(keys::PK, AttributeValue::S(key.pk))
        .key(keys::SK, AttributeValue::S(key.sk));
    let mut expr = Vec::new();
    for (i, (name, v)) in values.iter().enumerate() {
        u = u
            .expression_attribute_names(format!("#a{i}"), *name)
            .expression_attribute_values(format!(":a{i}"), AttributeValue::N(v.to_string()));
        expr.push(format!("#a{i} :a{i}"));
    }
    u.update_expression(format!("ADD {}", expr.join(", "))).send().await.unwrap();
}

#[tokio::test]
async fn usage_on_the_engine_becomes_recommendations() {
    let (aws, names, _) = fresh_stack().await;
    let store = DataStore::new(aws.dynamodb.clone(), names.table.clone());
    let ts = tenants(&store, &["rec-busy", "rec-quiet"]).await;
    let now = OffsetDateTime::now_utc();
    let dest = "01JDQ7Z8X0000000000000000A";
    let failed = format!("{}{dest}#{}", mt::DELIVERY_PREFIX, mt::FAILED);
    let attempts = format!("{}{dest}#{}", mt::DELIVERY_PREFIX, mt::ATTEMPTS);
    // rec-busy: a peak hour far beyond its one shard, a destination that only fails, 365 days
    // of retention nobody reads through the API.
    let busy = &ts[0];
    add(&store, keys::hourly_metrics(busy, now), &[(mt::WRITE_UNITS, 3600 * 450), (mt::SUBMISSIONS, 3600 * 400)]).await;
    add(
        &store,
        keys::daily_metrics(busy, now.date()),
        &[
            (mt::SUBMISSIONS, 400),
            (mt::RAW_BYTES, 2_000_000),
            (mt::STORED_BYTES, 800_000),
            (mt::WRITE_UNITS, 450),
            (&failed, 9),
            (&attempts, 60),
        ],
    )
    .await;
    add(&store, keys::tenant_cost_day(busy, now.date()), &[("w_sub", 450_000)]).await;
    // rec-quiet: little traffic, read through the API, deliveries fine.
    let quiet = &ts[1];
    let ok = format!("{}{dest}#{}", mt::DELIVERY_PREFIX, mt::SUCCEEDED);
    add(&store, keys::hourly_metrics(quiet, now), &[(mt::WRITE_UNITS, 20)]).await;
    add(
        &store,
        keys::daily_metrics(quiet, now.date()),
        &[(mt::SUBMISSIONS, 20), (mt::RAW_BYTES, 40_000), (mt::STORED_BYTES, 16_000), (&ok, 20), (&attempts, 20)],
    )
    .await;
    add(&store, keys::tenant_cost_day(quiet, now.date()), &[("r_api", 5_000)]).await;

    let mut busy_profile = store.get_tenant(busy).await.unwrap().unwrap();
    busy_profile.retention_days = 365;
    let usage = tenant_usage(&store, &busy_profile, now).await.unwrap();
    assert_eq!(usage.shards, 1);
    assert_eq!(usage.peak_hour.as_ref().unwrap().write_units, 3600 * 450);
    let recs = recommend(&[usage], &SystemUsage::default(), &Prices::default());
    let mut kinds: Vec<&str> = recs.iter().map(|r| r.kind).collect();
    kinds.sort_unstable();
    assert_eq!(kinds, ["failing_destination", "retention_unread", "shards_too_low"], "{recs:#?}");
    let grow = recs.iter().find(|r| r.kind == "shards_too_low").unwrap();
    assert_eq!(grow.numbers["recommended_shards"], 5);
    assert!(recs.iter().all(|r| r.tenant.as_ref() == Some(busy)));

    let quiet_profile = store.get_tenant(quiet).await.unwrap().unwrap();
    let usage = tenant_usage(&store, &quiet_profile, now).await.unwrap();
    assert_eq!(usage.cost_30d.get(formbridge_shared::costs::Line::ReadApi), 5_000);
    let recs = recommend(&[usage], &SystemUsage::default(), &Prices::default());
    assert!(recs.is_empty(), "{recs:#?}");
}

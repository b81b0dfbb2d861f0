//! Hot partitions: a burst on a one-shard tenant, above the (lowered) threshold, makes the
//! aggregator raise its shard count once, effective after the growth delay, and publish
//! `TenantShardsGrown`; a second aggregator reading the same burst does not grow it again.

use std::time::{Duration, Instant};

use formbridge_aggregator::hot;
use formbridge_shared::codec::PayloadCodec;
use formbridge_shared::sharding::{ShardHistory, GROWTH_DELAY_MS};
use formbridge_shared::store::DataStore;
use formbridge_shared::submission::{QueueMessage, Submission};
use formbridge_shared::tenant::TenantProfile;
use formbridge_shared::{sample, FormId, SiteDomain, SubmissionId, TenantId};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

fn config(names: &formbridge_shared::aws::ResourceNames, group: &str) -> formbridge_aggregator::Config {
    let mut c = formbridge_aggregator::Config::for_resources(names.clone());
    c.group = group.into();
    c.hot_shard_wcu_per_s = 5;
    c.hot_window_seconds = 5;
    c.linger_ms = 0;
    c.stream.idle_min_ms = 50;
    c.stream.idle_max_ms = 200;
    c
}

async fn events(aws: &formbridge_shared::aws::AwsClients, url: &str) -> Vec<Value> {
    let events = formbridge_shared::testing::drain_events(aws, url).await;
    assert!(events.iter().all(|(t, _)| t == hot::TENANT_SHARDS_GROWN), "{events:?}");
    events.into_iter().map(|(_, d)| d).collect()
}

#[tokio::test]
async fn a_hot_shard_grows_its_tenant_once() {
    let (aws, names, _) = formbridge_shared::testing::fresh_stack().await;
    let queue = formbridge_shared::testing::events_queue(&aws, &names, "hot-events", hot::EVENT_SOURCE).await;
    let store = DataStore::new(aws.dynamodb.clone(), names.table.clone());
    let profile = TenantProfile {
        tenant_id: TenantId::parse("hot-tenant").unwrap(),
        name: "hot".into(),
        created_at: "2026-12-01T00:00:00Z".into(),
        retention_days: 30,
        form_retention: Default::default(),
        shards: ShardHistory::new(1, 0).unwrap(),
    };
    store.create_tenant(&profile).await.unwrap();

    let stop = CancellationToken::new();
    let a = {
        let (aws, stop, c) = (aws.clone(), stop.clone(), config(&names, "hot-a"));
        tokio::spawn(async move { formbridge_aggregator::run(c, aws, stop).await.unwrap() })
    };
    // A burst: 150 submissions of a write unit or two, as fast as the engine takes them.
    let started = formbridge_shared::clock::now_ms();
    let codec = PayloadCodec::default();
    for i in 0..150u64 {
        let Value::Object(payload) = sample::text_heavy_payload(700, i) else { unreachable!() };
        let m = QueueMessage::new(
            &profile,
            SiteDomain::parse("hot.example.com").unwrap(),
            FormId::parse("contact").unwrap(),
            SubmissionId::new(),
            time::OffsetDateTime::now_utc(),
            payload,
        );
        let item = Submission::from_message(m).unwrap().to_item(&codec);
        aws.dynamodb.put_item().table_name(&names.table).set_item(Some(item)).send().await.unwrap();
    }
    let began = Instant::now();
    let grown = loop {
        let p = store.get_tenant(&profile.tenant_id).await.unwrap().unwrap();
        if p.shards.current() > 1 {
            break p;
        }
        assert!(began.elapsed() < Duration::from_secs(90), "the hot tenant was not grown");
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    // Grown once, effective only after the delay: nothing written before then moves.
    assert_eq!(grown.shards.epochs().len(), 2, "{:?}", grown.shards);
    let epoch = grown.shards.epochs()[1];
    assert!(epoch.count >= 2);
    assert!(epoch.since_ms >= started + GROWTH_DELAY_MS, "{epoch:?}");
    let first = events(&aws, &queue).await;
    assert_eq!(first.len(), 1, "{first:#?}");
    assert_eq!(first[0]["tenant_id"], "hot-tenant");
    assert_eq!(first[0]["from_shards"], 1);
    assert_eq!(first[0]["to_shards"], epoch.count);
    assert!(first[0]["shard_write_units_per_s"].as_f64().unwrap() >= 5.0);
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(format!(
            "{}/../../schemas/events/tenant-shards-grown.schema.json",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap(),
    )
    .unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    assert!(validator.is_valid(&first[0]), "{}", first[0]);
    let fixture: Value = serde_json::from_str(
        &std::fs::read_to_string(format!(
            "{}/../../schemas/fixtures/events/tenant-shards-grown/valid/grown.json",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap(),
    )
    .unwrap();
    assert!(validator.is_valid(&fixture));

    // A second aggregator reads the same burst (its own consumer group, from the start): the
    // tenant was grown a moment ago, so it is left alone.
    let b = {
        let (aws, stop, c) = (aws.clone(), stop.clone(), config(&names, "hot-b"));
        tokio::spawn(async move { formbridge_aggregator::run(c, aws, stop).await.unwrap() })
    };
    tokio::time::sleep(Duration::from_secs(5)).await;
    stop.cancel();
    a.await.unwrap();
    b.await.unwrap();
    assert_eq!(store.get_tenant(&profile.tenant_id).await.unwrap().unwrap().shards, grown.shards);
    assert!(events(&aws, &queue).await.is_empty());
    formbridge_shared::testing::assert_role_allows("aggregator", "AggregatorRole");
}

//! Cost alerts: a tenant's month and the whole system's crossing thresholds publish
//! `CostThresholdCrossed` once per threshold and kind, though two aggregators (separate consumer
//! groups, each reading every record) see the same cost items and a third replays the stream
//! from the start. The events match their schema and the crossings recorded.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::AttributeValue;
use formbridge_shared::aws::{AwsClients, ResourceNames};
use formbridge_shared::{costs, keys, TenantId};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

async fn drain(aws: &AwsClients, url: &str) -> Vec<Value> {
    let events = formbridge_shared::testing::drain_events(aws, url).await;
    assert!(events.iter().all(|(t, _)| t == costs::COST_THRESHOLD_CROSSED), "{events:?}");
    events.into_iter().map(|(_, d)| d).collect()
}

/// Adds `usd` worth of submission writes to a cost day item, as a flusher does.
async fn add_cost(aws: &AwsClients, names: &ResourceNames, key: keys::ItemKey, usd: f64) {
    let milli = (usd / 0.625 * 1e6 * 1000.0) as u64;
    aws.dynamodb
        .update_item()
        .table_name(&names.table)
        .key(keys::PK, AttributeValue::S(key.pk))
        .key(keys::SK, AttributeValue::S(key.sk))
        .update_expression("ADD w_sub :m")
        .expression_attribute_values(":m", AttributeValue::N(milli.to_string()))
        .send()
        .await
        .unwrap();
}

fn aggregator(names: &ResourceNames, group: &str) -> formbridge_aggregator::Config {
    let mut c = formbridge_aggregator::Config::for_resources(names.clone());
    c.group = group.into();
    c.cost_alert_thresholds_usd = vec![1.0, 100.0];
    c.cost_alert_check_seconds = 0;
    c.linger_ms = 0;
    c.stream.idle_min_ms = 50;
    c.stream.idle_max_ms = 200;
    c
}

async fn run_for(aws: &AwsClients, config: formbridge_aggregator::Config, queue: &str, want: usize) -> Vec<Value> {
    let stop = CancellationToken::new();
    let task = {
        let (aws, stop) = (aws.clone(), stop.clone());
        tokio::spawn(async move { formbridge_aggregator::run(config, aws, stop).await.unwrap() })
    };
    let began = Instant::now();
    let mut seen = Vec::new();
    // Until the expected events are in, then a little longer for any duplicate.
    while seen.len() < want && began.elapsed() < Duration::from_secs(60) {
        seen.extend(drain(aws, queue).await);
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    seen.extend(drain(aws, queue).await);
    stop.cancel();
    task.await.unwrap();
    seen
}

#[tokio::test]
async fn cost_thresholds_are_published_once_each() {
    let (aws, names, _) = formbridge_shared::testing::fresh_stack().await;
    let queue = formbridge_shared::testing::events_queue(&aws, &names, "cost-events", costs::EVENT_SOURCE).await;
    let tenant = TenantId::parse("big-spender").unwrap();
    let today = time::OffsetDateTime::now_utc().date();
    add_cost(&aws, &names, keys::tenant_cost_day(&tenant, today), 0.9).await;
    add_cost(&aws, &names, keys::system_cost_day(today), 0.9).await;
    add_cost(&aws, &names, keys::tenant_cost_day(&tenant, today), 0.6).await;
    add_cost(&aws, &names, keys::system_cost_day(today), 0.6).await;

    // $1.50 so far for both: the month so far and its projection cross $1, the month so far not
    // $100 (the projection may, early in a month).
    let first = run_for(&aws, aggregator(&names, "cost-a"), &queue, 4).await;
    let second = run_for(&aws, aggregator(&names, "cost-b"), &queue, 0).await;
    assert!(second.is_empty(), "a second aggregator published again: {second:#?}");

    let ids: Vec<&str> = first.iter().map(|d| d["alert_id"].as_str().unwrap()).collect();
    let unique: BTreeSet<&str> = ids.iter().copied().collect();
    assert_eq!(ids.len(), unique.len(), "published twice: {first:#?}");
    let has = |scope: &str, kind: &str, t: f64| {
        first.iter().any(|d| d["scope"] == scope && d["kind"] == kind && d["threshold_usd"].as_f64() == Some(t))
    };
    for scope in ["tenant", "system"] {
        assert!(has(scope, "month_to_date", 1.0) && has(scope, "projected", 1.0), "{first:#?}");
        assert!(!has(scope, "month_to_date", 100.0), "{first:#?}");
    }
    for d in &first {
        assert!((d["so_far_usd"].as_f64().unwrap() - 1.5).abs() < 1e-6, "{d}");
        if d["scope"] == "tenant" {
            assert_eq!(d["tenant_id"], "big-spender");
        }
    }

    // The events are the crossings recorded, and match the schema.
    let mut recorded = BTreeSet::new();
    for pk in [keys::metrics_pk(&tenant), keys::SYSTEM_COST_PK.to_owned()] {
        let out = aws
            .dynamodb
            .query()
            .table_name(&names.table)
            .key_condition_expression("PK = :pk AND begins_with(SK, :a)")
            .expression_attribute_values(":pk", AttributeValue::S(pk.clone()))
            .expression_attribute_values(":a", AttributeValue::S("ALERT#".into()))
            .send()
            .await
            .unwrap();
        for i in out.items() {
            assert_eq!(i["published"], AttributeValue::Bool(true));
            recorded.insert(format!("{pk}|{}", i["SK"].as_s().unwrap()));
        }
    }
    assert_eq!(recorded, unique.iter().map(|s| (*s).to_owned()).collect::<BTreeSet<_>>());
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(format!(
            "{}/../../schemas/events/cost-threshold-crossed.schema.json",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap(),
    )
    .unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    for d in &first {
        assert!(validator.is_valid(d), "{d}");
    }
    for f in std::fs::read_dir(format!(
        "{}/../../schemas/fixtures/events/cost-threshold-crossed/valid",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
    {
        let v: Value = serde_json::from_str(&std::fs::read_to_string(f.unwrap().path()).unwrap()).unwrap();
        assert!(validator.is_valid(&v), "{v}");
        let mut wrong = v.clone();
        wrong["scope"] = Value::from(if v["scope"] == "tenant" { "system" } else { "tenant" });
        assert!(!validator.is_valid(&wrong), "tenant_id must go with scope tenant only: {wrong}");
    }

    // More cost the same month: no threshold is crossed again; a replay of the whole stream by a
    // new group publishes nothing either.
    add_cost(&aws, &names, keys::tenant_cost_day(&tenant, today), 0.1).await;
    let replay = run_for(&aws, aggregator(&names, "cost-replay"), &queue, 0).await;
    assert!(replay.is_empty(), "{replay:#?}");
    formbridge_shared::testing::assert_role_allows("aggregator", "AggregatorRole");
}

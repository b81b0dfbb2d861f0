//! Metrics come from the aggregator's items: the real aggregator folds submissions and delivery
//! records from the stream, and the API's buckets, totals, success rates and latency quantiles
//! per destination match what was written. An agency key sees its tenants' days through GSI3.

use std::time::{Duration, Instant};

use formbridge_shared::clock::now_ms;
use formbridge_shared::delivery::model::Status;
use formbridge_shared::sharding::ShardHistory;
use formbridge_shared::DestinationId;
use serde_json::Value;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use crate::helpers::start;

#[tokio::test]
async fn buckets_totals_and_latency_quantiles_come_from_the_aggregates() {
    let api = start(|_| {}).await;
    let a = api.tenant("met-a", ShardHistory::new(2, 0).unwrap()).await;
    let b = api.tenant("met-b", ShardHistory::new(1, 0).unwrap()).await;
    let c = api.tenant("met-c", ShardHistory::new(1, 0).unwrap()).await;
    let key_a = api.key(&[&a.tenant_id], "a").await;
    let agency = api.key(&[&a.tenant_id, &b.tenant_id], "agency").await;

    let stop = CancellationToken::new();
    let mut cfg = formbridge_aggregator::Config::for_resources(api.names.clone());
    cfg.linger_ms = 200;
    let agg = tokio::spawn(formbridge_aggregator::run(cfg, api.aws.clone(), stop.clone()));

    let now = OffsetDateTime::now_utc();
    let mut subs = Vec::new();
    for i in 0..12 {
        let form = if i < 8 { "contact" } else { "quote" };
        subs.push(api.submission(&a, form, now_ms(), now).await);
    }
    for _ in 0..5 {
        api.submission(&b, "contact", now_ms(), now).await;
    }
    for _ in 0..7 {
        api.submission(&c, "contact", now_ms(), now).await;
    }
    // One destination: 18 of 20 fast (30 ms), 2 slow (700 ms) and failed.
    let dest = DestinationId::new();
    for (i, s) in subs.iter().enumerate().take(10) {
        api.delivery(&a, s, &dest, Status::Succeeded, 30, now_ms()).await;
        let _ = i;
    }
    let other = DestinationId::new();
    for (i, s) in subs.iter().enumerate().take(10) {
        let (st, lat) = if i < 2 { (Status::Failed, 700) } else { (Status::Succeeded, 30) };
        api.delivery(&a, s, &other, st, lat, now_ms()).await;
    }

    let q = |g: &str| {
        let from = (now - time::Duration::hours(1)).format(&time::format_description::well_known::Rfc3339).unwrap();
        let to = (now + time::Duration::hours(1)).format(&time::format_description::well_known::Rfc3339).unwrap();
        format!("/v1/metrics?granularity={g}&from={}&to={}", from.replace('+', "%2B"), to.replace('+', "%2B"))
    };
    // Wait for the aggregator to have folded everything.
    let began = Instant::now();
    let body = loop {
        let (s, body) = api.get(&key_a, &q("hour")).await;
        assert_eq!(s, 200, "{body}");
        let t = &body["totals"];
        if t["submissions"] == 12
            && t["deliveries"][other.to_string()]["attempts"] == 10
            && t["deliveries"][dest.to_string()]["attempts"] == 10
        {
            break body;
        }
        assert!(began.elapsed() < Duration::from_secs(90), "aggregates never reached the written counts: {body}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let t = &body["totals"];
    assert_eq!(t["forms"]["contact"], 8);
    assert_eq!(t["forms"]["quote"], 4);
    assert!(t["raw_bytes"].as_u64().unwrap() > t["stored_bytes"].as_u64().unwrap() / 4);
    let sum: u64 = body["buckets"].as_array().unwrap().iter().map(|b| b["submissions"].as_u64().unwrap()).sum();
    assert_eq!(sum, 12, "totals are the sum of the buckets");
    let fast = &t["deliveries"][dest.to_string()];
    assert_eq!(fast["success_rate"], 1.0);
    let p95 = fast["latency_p95_ms"].as_u64().unwrap();
    assert!((25..=50).contains(&p95), "p95 {p95} must lie in 30 ms's bucket");
    let mixed = &t["deliveries"][other.to_string()];
    assert_eq!((mixed["succeeded"].as_u64(), mixed["failed"].as_u64()), (Some(8), Some(2)));
    assert_eq!(mixed["success_rate"], 0.8);
    let p50 = mixed["latency_p50_ms"].as_u64().unwrap();
    let p95 = mixed["latency_p95_ms"].as_u64().unwrap();
    assert!((25..=50).contains(&p50), "p50 {p50}");
    assert!((500..=1_000).contains(&p95), "p95 {p95} must lie in 700 ms's bucket");

    // One form's view.
    let (_, body) = api.get(&key_a, &format!("{}&form=quote", q("hour"))).await;
    assert_eq!(body["totals"]["submissions"], 4);

    // The agency's days: its two tenants, not the third.
    let began = Instant::now();
    loop {
        let (s, body): (u16, Value) = api.get(&agency, &q("day")).await;
        assert_eq!(s, 200, "{body}");
        if body["totals"]["submissions"] == 17 {
            assert_eq!(body["per_tenant"]["met-a"], 12);
            assert_eq!(body["per_tenant"]["met-b"], 5);
            assert!(body["per_tenant"].get("met-c").is_none());
            break;
        }
        assert!(body["totals"]["submissions"].as_u64().unwrap_or(0) <= 17, "another tenant leaked in: {body}");
        assert!(began.elapsed() < Duration::from_secs(60), "{body}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // An agency key asks for hours of one tenant at a time.
    assert_eq!(api.get(&agency, &q("hour")).await.1["error"]["code"], "tenant_required");

    // Cost so far this month, from the tenant's cost items (written here by one flush, as each
    // process's flusher would) and the submissions from the aggregates.
    formbridge_shared::costs::flush(&api.aws.dynamodb, &api.names.table).await.unwrap();
    let (s, cost) = api.get(&key_a, "/v1/cost").await;
    assert_eq!(s, 200, "{cost}");
    assert_eq!(cost["submissions"], 12);
    assert!(cost["so_far_usd"].as_f64().unwrap() > 0.0, "{cost}");
    let items = cost["items"].as_array().unwrap();
    assert!(items.iter().any(|i| i["line"] == "write_submission" && i["units"].as_f64().unwrap() >= 12.0), "{cost}");
    assert!(cost["projected_usd"].as_f64().unwrap() >= cost["so_far_usd"].as_f64().unwrap());
    assert_eq!(api.get(&key_a, "/v1/cost?month=2026-13").await.1["error"]["code"], "invalid_parameter");

    // Recommendations from the same items: this tenant's usage is small and healthy.
    let (s, rec) = api.get(&key_a, "/v1/recommendations").await;
    assert_eq!(s, 200, "{rec}");
    assert_eq!(rec["tenant"], "met-a");
    assert!(rec["recommendations"].is_array(), "{rec}");

    // Live: the current hour's bucket arrives as a server-sent event.
    let mut resp = api.http.get(format!("{}/v1/metrics/live", api.base)).bearer_auth(&key_a).send().await.unwrap();
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut seen = String::new();
    while !(seen.contains("event: bucket") && seen.contains("\"bucket\":") && seen.ends_with("\n\n")) {
        let chunk = tokio::time::timeout(Duration::from_secs(30), resp.chunk()).await.unwrap().unwrap().unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    drop(resp);

    stop.cancel();
    agg.await.unwrap().unwrap();
}

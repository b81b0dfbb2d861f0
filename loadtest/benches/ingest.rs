//! Ingest's pure per-request work on a typical ~2 KiB contact form: the Standard Webhooks
//! signature check with the site's secret (`ResolvedSite::verifies`, what `accept` calls), the
//! strict parse and the envelope validation, and all of an accepted request's pure CPU together,
//! so each check can be quoted as a share of the request measured in the same run.
//!
//! Never measured here: HTTP, the site cache, the rate limiter and the SQS send.

use std::hint::black_box;
use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use formbridge_ingest::envelope::{parse_strict, site_of, validate};
use formbridge_ingest::sites::ResolvedSite;
use formbridge_ingest::submission_id;
use formbridge_shared::secrets::SigningSecret;
use formbridge_shared::sharding::ShardHistory;
use formbridge_shared::submission::QueueMessage;
use formbridge_shared::tenant::TenantProfile;
use formbridge_shared::{domain, sample};
use serde_json::Value;
use standardwebhooks::Webhook;
use time::OffsetDateTime;

/// The body a WordPress site posts: the sample contact form plus `site` and `form_id`, ~2 KiB.
fn envelope_body() -> Vec<u8> {
    let Value::Object(mut body) = sample::text_heavy_payload(2000, 42) else { unreachable!() };
    body.insert("site".into(), "www.example.com".into());
    body.insert("form_id".into(), "contact".into());
    serde_json::to_vec(&body).expect("serialisable")
}

fn tenant() -> TenantProfile {
    TenantProfile {
        tenant_id: "bench-tenant".parse().expect("valid"),
        name: "bench".into(),
        created_at: "2026-11-25T08:00:00Z".into(),
        retention_days: 365,
        form_retention: Default::default(),
        shards: ShardHistory::new(8, 0).expect("valid"),
    }
}

/// A site with one secret, and the headers of `body` signed with it now (the verifier checks the
/// timestamp against its own clock with a 5-minute tolerance, so sign just before measuring).
fn signed(body: &[u8]) -> (ResolvedSite, HeaderMap) {
    let secret = SigningSecret::generate();
    let verifier = Webhook::new(secret.expose()).expect("a whsec_ secret");
    let id = "msg_2pXkq7bG3fN9cVwLmT4yRz";
    let ts = OffsetDateTime::now_utc().unix_timestamp();
    let signature = verifier.sign(id, ts, body).expect("signs");
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    headers.insert("webhook-id", HeaderValue::from_static(id));
    headers.insert("webhook-timestamp", HeaderValue::from_str(&ts.to_string()).expect("ascii"));
    headers.insert("webhook-signature", HeaderValue::from_str(&signature).expect("ascii"));
    (ResolvedSite { tenant: tenant(), verifiers: vec![(verifier, None)] }, headers)
}

fn now_ms() -> u64 {
    u64::try_from(OffsetDateTime::now_utc().unix_timestamp()).unwrap_or(0) * 1000
}

/// What `accept` computes for a request that is let in, in its order, minus the I/O.
fn accept_pure(site: &ResolvedSite, headers: &HeaderMap, body: &[u8]) -> String {
    let parsed = parse_strict(body).expect("valid JSON");
    let domain = domain::normalize(site_of(&parsed).expect("names its site")).expect("a domain");
    assert!(site.verifies(body, headers, now_ms()), "signature rejected");
    let env = validate(parsed).expect("a valid envelope");
    let time_ms = env.submitted_at.map_or(0, |t| u64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(0));
    let webhook_id = headers.get("webhook-id").and_then(|v| v.to_str().ok()).expect("present");
    let payload = env.payload();
    let canonical = serde_json::to_vec(&payload).expect("serialisable");
    let id = submission_id(&domain, webhook_id, time_ms, &canonical);
    let message = QueueMessage::new(&site.tenant, domain, env.form_id.clone(), id, OffsetDateTime::now_utc(), payload);
    serde_json::to_string(&message).expect("serialisable")
}

fn ingest(c: &mut Criterion) {
    let body = envelope_body();
    let (site, headers) = signed(&body);
    assert!(site.verifies(&body, &headers, now_ms()), "the bench must measure the accepting path");
    let parsed = parse_strict(&body).expect("valid JSON");
    validate(parsed.clone()).expect("a valid envelope");
    println!("ingest body: {} B (sample::text_heavy_payload(2000, 42) with site and form_id)", body.len());

    let mut group = c.benchmark_group("ingest");
    group.throughput(Throughput::Elements(1));
    group.bench_function("verify_signature", |b| {
        b.iter(|| black_box(site.verifies(black_box(&body), &headers, now_ms())))
    });
    group.bench_function("parse_strict", |b| b.iter(|| black_box(parse_strict(black_box(&body)))));
    // `validate` consumes the parsed value: clone it outside the timed part.
    group.bench_function("validate", |b| {
        b.iter_batched(|| parsed.clone(), |v| black_box(validate(v)), BatchSize::SmallInput)
    });
    group.bench_function("parse_and_validate", |b| {
        b.iter(|| black_box(parse_strict(black_box(&body)).and_then(validate)))
    });
    group.bench_function("accept_pure", |b| b.iter(|| black_box(accept_pure(&site, &headers, black_box(&body)))));
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    targets = ingest
}
criterion_main!(benches);

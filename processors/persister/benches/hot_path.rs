//! The persister's pure hot path, per submission: parse and validate the queue message, compress
//! the payload and build the DynamoDB item, against brotli alone on the same payload bytes.
//! Goal: everything around the compressor costs at most 20% on top of compression itself.
//!
//! Also prints, per size, the space saved (stored item vs raw payload), and a quality sweep that
//! backs the choice of `DEFAULT_QUALITY`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use formbridge_shared::capacity::{item_size, write_units};
use formbridge_shared::codec::{
    brotli_compress, brotli_compress_with_dictionary, PayloadCodec, DEFAULT_LGWIN, DEFAULT_QUALITY, DICTIONARY_V1,
};
use formbridge_shared::sharding::ShardHistory;
use formbridge_shared::submission::{QueueMessage, Submission};
use formbridge_shared::tenant::TenantProfile;
use formbridge_shared::{sample, SubmissionId};

const SIZES: [usize; 4] = [1024, 2048, 4096, 12 * 1024];

fn message_body(size: usize) -> String {
    let profile = TenantProfile {
        tenant_id: "bench-tenant".parse().expect("valid"),
        name: "bench".into(),
        created_at: "2026-11-25T08:00:00Z".into(),
        retention_days: 365,
        shards: ShardHistory::new(8, 0).expect("valid"),
    };
    let serde_json::Value::Object(payload) = sample::text_heavy_payload(size, 42) else { unreachable!() };
    let m = QueueMessage::new(
        &profile,
        "www.example.com".parse().expect("valid"),
        "contact".parse().expect("valid"),
        SubmissionId::from_ulid(ulid::Ulid::from_parts(1_795_593_600_000, 7)),
        time::OffsetDateTime::from_unix_timestamp(1_795_593_600).expect("valid"),
        payload,
    );
    serde_json::to_string(&m).expect("serialisable")
}

fn hot_path(c: &mut Criterion) {
    let codec = PayloadCodec::default();
    let mut group = c.benchmark_group("persister_hot_path");
    for size in SIZES {
        let body = message_body(size);
        let sub = Submission::from_message_body(&body).expect("valid");
        let raw = sub.raw_payload.clone();
        let item = sub.to_item(&codec);
        let stored = item_size(&item);
        let uncompressed = item_size(&sub.to_item(&PayloadCodec { threshold: usize::MAX, ..codec }));
        let plain = brotli_compress(&raw, DEFAULT_QUALITY, DEFAULT_LGWIN).len();
        let brotli_only = brotli_compress_with_dictionary(&raw, DEFAULT_QUALITY, DEFAULT_LGWIN, DICTIONARY_V1).len();
        println!(
            "size {size:>5} B: raw payload {} B, stored item {stored} B ({:.0}% saved, {} WCU vs {} WCU raw), brotli+dict alone {brotli_only} B ({:.0}% saved), plain brotli {plain} B ({:.0}% saved)",
            raw.len(),
            100.0 * (1.0 - stored as f64 / raw.len() as f64),
            write_units(stored),
            write_units(uncompressed),
            100.0 * (1.0 - brotli_only as f64 / raw.len() as f64),
            100.0 * (1.0 - plain as f64 / raw.len() as f64),
        );
        group.throughput(Throughput::Elements(1));
        group.bench_with_input(BenchmarkId::new("pipeline", size), &body, |b, body| {
            b.iter(|| {
                let sub = Submission::from_message_body(black_box(body)).expect("valid");
                black_box(sub.to_item(&codec))
            })
        });
        group.bench_with_input(BenchmarkId::new("brotli_alone", size), &raw, |b, raw| {
            b.iter(|| {
                black_box(brotli_compress_with_dictionary(
                    black_box(raw),
                    DEFAULT_QUALITY,
                    DEFAULT_LGWIN,
                    DICTIONARY_V1,
                ))
            })
        });
    }
    group.finish();
}

fn quality_sweep(c: &mut Criterion) {
    let mut group = c.benchmark_group("brotli_quality");
    for size in [2048, 4096] {
        let raw = serde_json::to_vec(&sample::text_heavy_payload(size, 42)).expect("serialisable");
        for q in [3, 4, 5, 6, 7, 9, 11] {
            let out = brotli_compress(&raw, q, DEFAULT_LGWIN).len();
            let dict = brotli_compress_with_dictionary(&raw, q, DEFAULT_LGWIN, DICTIONARY_V1).len();
            println!(
                "quality {q:>2} on {size:>5} B: {:.1}% saved plain, {:.1}% with dictionary v1",
                100.0 * (1.0 - out as f64 / raw.len() as f64),
                100.0 * (1.0 - dict as f64 / raw.len() as f64)
            );
            group.bench_with_input(BenchmarkId::new(format!("q{q}"), size), &raw, |b, raw| {
                b.iter(|| black_box(brotli_compress(black_box(raw), q, DEFAULT_LGWIN)))
            });
        }
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    targets = hot_path, quality_sweep
}
criterion_main!(benches);

//! The persister's pure hot path, per submission: parse and validate the queue message, compress
//! the payload and build the DynamoDB item, against brotli alone on the same payload bytes.
//! Goal: everything around the compressor costs at most 20% on top of compression itself.
//!
//! Also prints, per size, the space saved (stored item vs raw payload), and a quality sweep that
//! backs the choice of `DEFAULT_QUALITY`.
//!
//! The sizes above are one synthetic form; the realistic mix runs the same pipeline over 500
//! submissions from the load generator (`formbridge_loadtest::gen::Traffic`, Zipf prose from
//! 0.5 to 16 KiB) and prints stored bytes as a share of raw payload bytes, the load report's
//! storage figure.
//!
//! `real_text` is the one that counts: the held-out part of the real-text corpus
//! (`target/corpus/heldout.jsonl` from `python3 loadtest/corpus/build.py`, or the committed
//! sample when it has not been built), never used to train dictionary v2. Per size band it prints
//! payload and whole-item savings and write units per item, beside plain brotli at the same
//! quality and at q11 and dictionary v1 on the same bytes; and it times the pipeline against the
//! codec alone, and the codec against today's compressor (dictionary v1 at q5).

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput};
use formbridge_loadtest::gen::Traffic;
use formbridge_shared::capacity::{item_size, write_units};
use formbridge_shared::codec::{
    brotli_compress, brotli_compress_with_dictionary, Codec, PayloadCodec, DEFAULT_LGWIN, DEFAULT_QUALITY,
    DICTIONARY_V1, DICTIONARY_V2,
};
use formbridge_shared::sharding::ShardHistory;
use formbridge_shared::submission::{QueueMessage, Submission};
use formbridge_shared::tenant::TenantProfile;
use formbridge_shared::{sample, SubmissionId};

const SIZES: [usize; 4] = [1024, 2048, 4096, 12 * 1024];

/// Submissions in the realistic mix.
const MIX_COUNT: usize = 500;

fn profile(tenant: &str) -> TenantProfile {
    TenantProfile {
        tenant_id: tenant.parse().expect("valid"),
        name: "bench".into(),
        created_at: "2026-11-25T08:00:00Z".into(),
        retention_days: 365,
        form_retention: Default::default(),
        shards: ShardHistory::new(8, 0).expect("valid"),
    }
}

fn queue_message(profile: &TenantProfile, site: &str, form: &str, n: u128, payload: serde_json::Value) -> String {
    let serde_json::Value::Object(payload) = payload else { unreachable!() };
    let m = QueueMessage::new(
        profile,
        site.parse().expect("valid"),
        form.parse().expect("valid"),
        SubmissionId::from_ulid(ulid::Ulid::from_parts(1_795_593_600_000, n)),
        time::OffsetDateTime::from_unix_timestamp(1_795_593_600).expect("valid"),
        payload,
    );
    serde_json::to_string(&m).expect("serialisable")
}

fn message_body(size: usize) -> String {
    queue_message(&profile("bench-tenant"), "www.example.com", "contact", 7, sample::text_heavy_payload(size, 42))
}

/// Queue messages for `n` submissions of the load generator with `formbridge-loadtest run`'s
/// defaults (10 tenants, 2 sites each, skew 1.1, seed 1), as its queue target builds them.
fn generated_bodies(n: usize) -> Vec<String> {
    let mut traffic = Traffic::new("lt", 10, 2, 1.1, 1);
    let profiles: Vec<TenantProfile> = traffic.tenants.iter().map(|t| profile(&t.id)).collect();
    (0..n)
        .map(|i| {
            let g = traffic.next("2026-11-25T10:00:00Z");
            queue_message(&profiles[g.tenant], &g.site, g.form.id(), i as u128, g.payload)
        })
        .collect()
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
        let brotli_only = brotli_compress_with_dictionary(&raw, DEFAULT_QUALITY, DEFAULT_LGWIN, DICTIONARY_V2).len();
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
                    DICTIONARY_V2,
                ))
            })
        });
    }
    group.finish();
}

fn realistic_mix(c: &mut Criterion) {
    let codec = PayloadCodec::default();
    let bodies = generated_bodies(MIX_COUNT);
    let subs: Vec<Submission> = bodies.iter().map(|b| Submission::from_message_body(b).expect("valid")).collect();
    let raws: Vec<Vec<u8>> = subs.iter().map(|s| s.raw_payload.clone()).collect();
    let mut sizes: Vec<usize> = raws.iter().map(Vec::len).collect();
    sizes.sort_unstable();
    let raw: usize = sizes.iter().sum();
    let items: Vec<usize> = subs.iter().map(|s| item_size(&s.to_item(&codec))).collect();
    let stored: usize = items.iter().sum();
    let raw_codec = PayloadCodec { threshold: usize::MAX, ..codec };
    let uncompressed_units: u64 = subs.iter().map(|s| write_units(item_size(&s.to_item(&raw_codec)))).sum();
    let brotli_only: usize = raws
        .iter()
        .map(|r| brotli_compress_with_dictionary(r, DEFAULT_QUALITY, DEFAULT_LGWIN, DICTIONARY_V2).len())
        .sum();
    println!(
        "realistic mix, {MIX_COUNT} generated submissions (raw payload {}-{} B, median {} B, {raw} B in all): stored items {stored} B = {:.1}% of raw ({:.1}% saved), {} WCU vs {uncompressed_units} WCU uncompressed; brotli+dict alone {:.1}% of raw",
        sizes[0],
        sizes[sizes.len() - 1],
        sizes[sizes.len() / 2],
        100.0 * stored as f64 / raw as f64,
        100.0 * (1.0 - stored as f64 / raw as f64),
        items.iter().map(|s| write_units(*s)).sum::<u64>(),
        100.0 * brotli_only as f64 / raw as f64,
    );

    // One iteration is the whole mix (~50 ms): flat sampling keeps the case near the others' length.
    let mut group = c.benchmark_group("persister_mix");
    group.sample_size(10).sampling_mode(SamplingMode::Flat).measurement_time(Duration::from_secs(4));
    group.throughput(Throughput::Elements(MIX_COUNT as u64));
    group.bench_with_input(BenchmarkId::new("pipeline", MIX_COUNT), &bodies, |b, bodies| {
        b.iter(|| {
            for body in bodies {
                let sub = Submission::from_message_body(black_box(body)).expect("valid");
                black_box(sub.to_item(&codec));
            }
        })
    });
    // What the codec does to each payload (payloads under its threshold are stored as they are).
    group.bench_with_input(BenchmarkId::new("codec_alone", MIX_COUNT), &raws, |b, raws| {
        b.iter(|| {
            for raw in raws {
                black_box(codec.encode(black_box(raw)));
            }
        })
    });
    group.finish();
}

fn quality_sweep(c: &mut Criterion) {
    let mut group = c.benchmark_group("brotli_quality");
    for size in [2048, 4096] {
        let raw = serde_json::to_vec(&sample::text_heavy_payload(size, 42)).expect("serialisable");
        for q in [3, 4, 5, 6, 7, 9, 11] {
            let out = brotli_compress(&raw, q, DEFAULT_LGWIN).len();
            let dict = brotli_compress_with_dictionary(&raw, q, DEFAULT_LGWIN, DICTIONARY_V2).len();
            println!(
                "quality {q:>2} on {size:>5} B: {:.1}% saved plain, {:.1}% with dictionary v2",
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

/// The held-out real-text payloads: the built corpus when present, else the committed sample.
fn heldout() -> (String, Vec<serde_json::Value>) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let built = root.join("../target/corpus/heldout.jsonl");
    let path = if built.exists() { built } else { root.join("corpus/sample/heldout.jsonl") };
    let values = formbridge_loadtest::dictionary::read_values(&path).expect("the held-out corpus reads");
    (path.display().to_string(), values)
}

fn real_text(c: &mut Criterion) {
    use formbridge_loadtest::dictionary::{by_band, BANDS};
    let codec = PayloadCodec::default();
    let (path, values) = heldout();
    let p = profile("bench-tenant");
    let bodies: Vec<String> = values
        .into_iter()
        .enumerate()
        .map(|(i, v)| queue_message(&p, "www.riverbendvet.com", "contact", i as u128, v))
        .collect();
    let subs: Vec<Submission> = bodies.iter().map(|b| Submission::from_message_body(b).expect("valid")).collect();
    let raws: Vec<Vec<u8>> = subs.iter().map(|s| s.raw_payload.clone()).collect();
    println!("real text, held out: {} payloads from {path}", raws.len());
    // What the persister stores: the payload attribute and the whole item, per band.
    let stored: Vec<(usize, usize)> =
        subs.iter().map(|s| (s.raw_payload.len(), item_size(&s.to_item(&codec)))).collect();
    let payload_bands = by_band(&raws, |raw| codec.encode(raw).bytes.len() + 1);
    let plain = by_band(&raws, |raw| brotli_compress(raw, DEFAULT_QUALITY, DEFAULT_LGWIN).len());
    let plain11 = by_band(&raws, |raw| brotli_compress(raw, 11, DEFAULT_LGWIN).len());
    let v1 =
        by_band(&raws, |raw| brotli_compress_with_dictionary(raw, DEFAULT_QUALITY, DEFAULT_LGWIN, DICTIONARY_V1).len());
    println!("| band | payloads | payload saved (br.d2 q{DEFAULT_QUALITY}) | item saved | write units / item | plain brotli q{DEFAULT_QUALITY} | plain brotli q11 | br.d1 q{DEFAULT_QUALITY} |");
    println!("|---|---|---|---|---|---|---|---|");
    for (i, (band, lo, hi)) in BANDS.iter().enumerate() {
        let inside: Vec<&(usize, usize)> = stored.iter().filter(|(r, _)| (*lo..*hi).contains(r)).collect();
        if inside.is_empty() {
            continue;
        }
        let raw: usize = inside.iter().map(|x| x.0).sum();
        let item: usize = inside.iter().map(|x| x.1).sum();
        let units: u64 = inside.iter().map(|x| write_units(x.1)).sum();
        println!(
            "| {band} | {} | {:.1}% | {:.1}% | {:.2} | {:.1}% | {:.1}% | {:.1}% |",
            inside.len(),
            payload_bands[i].1.saved_pct(),
            100.0 * (1.0 - item as f64 / raw as f64),
            units as f64 / inside.len() as f64,
            plain[i].1.saved_pct(),
            plain11[i].1.saved_pct(),
            v1[i].1.saved_pct(),
        );
    }
    // Forms of about 2 KiB: how many fit one write unit.
    let near_2k: Vec<&(usize, usize)> = stored.iter().filter(|(r, _)| (1792..2304).contains(r)).collect();
    println!(
        "forms of 1.75-2.25 KiB: {} of {} stored in 1 write unit (items {}-{} B)",
        near_2k.iter().filter(|x| write_units(x.1) == 1).count(),
        near_2k.len(),
        near_2k.iter().map(|x| x.1).min().unwrap_or(0),
        near_2k.iter().map(|x| x.1).max().unwrap_or(0),
    );

    let mut group = c.benchmark_group("real_text");
    group.sample_size(10).sampling_mode(SamplingMode::Flat).measurement_time(Duration::from_secs(4));
    group.throughput(Throughput::Elements(bodies.len() as u64));
    group.bench_with_input(BenchmarkId::new("pipeline", bodies.len()), &bodies, |b, bodies| {
        b.iter(|| {
            for body in bodies {
                let sub = Submission::from_message_body(black_box(body)).expect("valid");
                black_box(sub.to_item(&codec));
            }
        })
    });
    group.bench_with_input(BenchmarkId::new("codec_alone", bodies.len()), &raws, |b, raws| {
        b.iter(|| {
            for raw in raws {
                black_box(codec.encode(black_box(raw)));
            }
        })
    });
    let today = PayloadCodec { codec: Codec::BrotliDictV1, ..PayloadCodec::default() };
    group.bench_with_input(BenchmarkId::new("codec_v1_q5", bodies.len()), &raws, |b, raws| {
        b.iter(|| {
            for raw in raws {
                black_box(today.encode(black_box(raw)));
            }
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    targets = real_text, hot_path, realistic_mix, quality_sweep
}
criterion_main!(benches);

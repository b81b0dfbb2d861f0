//! The aggregator's fold: records per second on one core, and how many metric writes a batch
//! of submissions turns into (coalescing: one UpdateItem per bucket per batch, never one per
//! submission).

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use formbridge_aggregator::fold::{chunks, fold};
use formbridge_shared::keys::{self, Entity};
use formbridge_shared::stream::{Change, ChangeKind};
use formbridge_shared::{SubmissionId, TenantId};

/// `n` submission INSERTs from `tenants` tenants with `forms` forms each, spread over one hour.
fn records(n: usize, tenants: usize, forms: usize) -> Vec<Change> {
    (0..n)
        .map(|i| {
            let t = TenantId::parse(&format!("tenant-{}", i % tenants)).expect("valid");
            let k = keys::submission(&t, (i % 4) as u16, &SubmissionId::new());
            let form = format!("form-{}", i % forms);
            let new = formbridge_shared::submission::SubmissionFields {
                site: "www.example.com",
                form: &form,
                received_ms: 1_795_593_600_000 + (i % 60) as u64 * 60_000,
                raw_size: 2058,
                codec: formbridge_shared::codec::Codec::BrotliDictV1,
                payload: &[7u8; 650],
                expires_at: 1_827_129_600,
            }
            .to_item(k.clone());
            Change {
                seq: format!("{:021}", i + 1),
                kind: ChangeKind::Insert,
                entity: Entity::classify(&k.pk, &k.sk),
                new: Some(new),
                old: None,
                created_s: None,
            }
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("aggregator_fold");
    for (tenants, forms) in [(1, 5), (50, 3)] {
        let recs = records(1000, tenants, forms);
        for batch in [100, 1000] {
            // As the aggregator does: group a batch by tenant, then split into transaction-sized runs.
            let writes: usize = recs
                .chunks(batch)
                .map(|b| {
                    let mut grouped = b.to_vec();
                    grouped.sort_by_key(|c| {
                        c.new
                            .as_ref()
                            .and_then(|n| n.get("PK"))
                            .and_then(|v| v.as_s().ok())
                            .map(|pk| pk.split('#').nth(1).unwrap_or("").to_owned())
                    });
                    chunks(&grouped, 99).iter().map(|run| fold(run, |_, _| false).len()).sum::<usize>()
                })
                .sum();
            println!(
                "{tenants} tenant(s) x {forms} forms, GetRecords batches of {batch}: {writes} metric writes per 1,000 submissions ({:.1} submissions per write; naive: 2,000 writes)",
                1000.0 / writes as f64
            );
        }
        group.throughput(Throughput::Elements(recs.len() as u64));
        group.bench_with_input(BenchmarkId::new("fold_1000", format!("{tenants}t_{forms}f")), &recs, |b, recs| {
            b.iter(|| black_box(fold(black_box(recs), |_, _| false)))
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    targets = bench
}
criterion_main!(benches);

//! N submissions through persister and aggregator; the aggregator is SIGKILLed mid-run several
//! times and restarted; the hourly and daily items still sum to exactly N. Then a replay of the
//! whole stream under a brand-new lease changes nothing.

use std::collections::BTreeMap;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
use formbridge_shared::aws::{AwsClients, ResourceNames};
use formbridge_shared::buckets::Granularity;
use formbridge_shared::sharding::ShardHistory;
use formbridge_shared::store::DataStore;
use formbridge_shared::stream::{Checkpoint, LeaseTable};
use formbridge_shared::submission::QueueMessage;
use formbridge_shared::tenant::TenantProfile;
use formbridge_shared::{sample, FormId, SubmissionId, TenantId};
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

const N: usize = 90;
const FORMS: [&str; 3] = ["contact", "quote", "newsletter"];

/// The aggregator binary; killed if the test fails, so it never outlives the test.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn aggregator(names: &ResourceNames) -> Proc {
    let child = Command::new(env!("CARGO_BIN_EXE_formbridge-aggregator"))
        .env("FORMBRIDGE_TABLE", &names.table)
        .env("FORMBRIDGE_CONTROL_TABLE", &names.control_table)
        .env("FORMBRIDGE_EVENT_BUS", &names.event_bus)
        .env("STREAM_FAILOVER_MS", "1000")
        .env("STREAM_TAKE_MS", "300")
        .env("STREAM_DISCOVER_MS", "300")
        .env("STREAM_BATCH_SIZE", "7")
        .env("STREAM_IDLE_MIN_MS", "50")
        .env("STREAM_IDLE_MAX_MS", "200")
        .env("RUST_LOG", "warn")
        .spawn()
        .expect("start the aggregator binary");
    Proc(child)
}

fn sigterm(p: &mut Proc) {
    let _ = Command::new("kill").args(["-TERM", &p.0.id().to_string()]).status();
    let _ = p.0.wait();
}

async fn totals(store: &DataStore, tenant: &TenantId, g: Granularity) -> (u64, u64, u64) {
    let from = OffsetDateTime::parse("2026-11-20T00:00:00Z", &time::format_description::well_known::Rfc3339).unwrap();
    let to = OffsetDateTime::parse("2026-11-30T00:00:00Z", &time::format_description::well_known::Rfc3339).unwrap();
    let b = store.metrics(tenant, None, g, from, to).await.unwrap();
    (
        b.iter().map(|b| b.submission_count).sum(),
        b.iter().map(|b| b.raw_bytes).sum(),
        b.iter().map(|b| b.stored_bytes).sum(),
    )
}

#[tokio::test]
async fn totals_are_exact_through_kills_and_replays() {
    let (aws, names, report): (AwsClients, _, _) = formbridge_shared::testing::fresh_stack().await;
    let store = DataStore::new(aws.dynamodb.clone(), names.table.clone());
    let tenant = TenantId::parse("agg").unwrap();
    let profile = TenantProfile {
        tenant_id: tenant.clone(),
        name: "agg".into(),
        created_at: "2026-11-25T08:00:00Z".into(),
        retention_days: 30,
        form_retention: Default::default(),
        shards: ShardHistory::new(3, 0).unwrap(),
    };
    store.create_tenant(&profile).await.unwrap();

    // N submissions over three forms and two days, through the queue and the persister.
    let base = OffsetDateTime::parse("2026-11-25T22:00:00Z", &time::format_description::well_known::Rfc3339).unwrap();
    let mut per_form: BTreeMap<String, u64> = BTreeMap::new();
    let bodies: Vec<String> = (0..N)
        .map(|i| {
            let form = FORMS[i % 3];
            *per_form.entry(form.into()).or_default() += 1;
            let serde_json::Value::Object(p) = sample::text_heavy_payload(600 + 50 * (i % 40), i as u64) else {
                panic!()
            };
            let at = base + time::Duration::minutes(i as i64 * 3);
            let m = QueueMessage::new(
                &profile,
                "agg.example".parse().unwrap(),
                FormId::parse(form).unwrap(),
                SubmissionId::new(),
                at,
                p,
            );
            serde_json::to_string(&m).unwrap()
        })
        .collect();
    for chunk in bodies.chunks(10) {
        let entries = chunk
            .iter()
            .enumerate()
            .map(|(i, b)| SendMessageBatchRequestEntry::builder().id(i.to_string()).message_body(b).build().unwrap())
            .collect();
        aws.sqs
            .send_message_batch()
            .queue_url(&report.ingest_queue_url)
            .set_entries(Some(entries))
            .send()
            .await
            .unwrap();
    }
    let token = CancellationToken::new();
    let mut pc = formbridge_persister::Config::for_resources(names.clone());
    pc.wait_seconds = 1;
    let persister = tokio::spawn(formbridge_persister::run(pc, aws.clone(), token.clone()));

    // The aggregator, killed with SIGKILL while it works, three times.
    for round in 0..3 {
        let mut child = aggregator(&names);
        tokio::time::sleep(Duration::from_millis(1500 + 700 * round)).await;
        child.0.kill().unwrap(); // SIGKILL: no shutdown, no lease release
        child.0.wait().unwrap();
    }
    let mut child = aggregator(&names);
    let deadline = Instant::now() + Duration::from_secs(120);
    while totals(&store, &tenant, Granularity::Day).await.0 < N as u64 {
        assert!(
            Instant::now() < deadline,
            "aggregation did not finish: {:?}",
            totals(&store, &tenant, Granularity::Day).await
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    token.cancel();
    persister.await.unwrap().unwrap();

    // The stored submissions are the ground truth for the bytes.
    let stored = store.recent_submissions(&tenant, &profile, 10_000).await.unwrap();
    assert_eq!(stored.len(), N);
    let raw: u64 = stored.iter().map(|s| s.raw_size as u64).sum();
    let kept: u64 = stored.iter().map(|s| s.stored_size as u64).sum();

    tokio::time::sleep(Duration::from_secs(2)).await; // anything in flight lands
    let day = totals(&store, &tenant, Granularity::Day).await;
    let hour = totals(&store, &tenant, Granularity::Hour).await;
    assert_eq!(day, (N as u64, raw, kept), "daily totals");
    assert_eq!(hour, (N as u64, raw, kept), "hourly totals");
    let from = base - time::Duration::days(1);
    let to = base + time::Duration::days(2);
    for (form, want) in &per_form {
        let f = FormId::parse(form).unwrap();
        let got: u64 = store
            .metrics(&tenant, Some(&f), Granularity::Hour, from, to)
            .await
            .unwrap()
            .iter()
            .map(|b| b.submission_count)
            .sum();
        assert_eq!(got, *want, "hourly count of form {form}");
    }
    // Each form's bytes live in the tenant's items, and add up to the stored truth.
    let mut form_bytes = (0u64, 0u64);
    for form in per_form.keys() {
        for b in store.metrics(&tenant, Some(&FormId::parse(form).unwrap()), Granularity::Day, from, to).await.unwrap()
        {
            assert!(b.write_units >= b.submission_count, "{form}: {b:?}");
            form_bytes = (form_bytes.0 + b.raw_bytes, form_bytes.1 + b.stored_bytes);
        }
    }
    assert_eq!(form_bytes, (raw, kept), "per-form bytes sum to the tenant's");
    let days = store.metrics(&tenant, None, Granularity::Day, from, to).await.unwrap();
    assert_eq!(days.len(), 2, "the submissions span two UTC days");
    let form_stats: BTreeMap<String, u64> =
        days.iter().flat_map(|d| d.form_stats.clone()).fold(BTreeMap::new(), |mut m, (k, v)| {
            *m.entry(k).or_default() += v;
            m
        });
    assert_eq!(form_stats, per_form, "form_stats on the daily items");

    // GSI3: the operator view of a day across tenants.
    let g3 = aws
        .dynamodb
        .query()
        .table_name(&names.table)
        .index_name("GSI3")
        .key_condition_expression("GSI3PK = :d")
        .expression_attribute_values(":d", aws_sdk_dynamodb::types::AttributeValue::S(format!("DAY#{}", base.date())))
        .send()
        .await
        .unwrap();
    assert_eq!(g3.items().len(), 1);
    assert!(g3.items()[0].contains_key("submission_count") && g3.items()[0].contains_key("form_stats"));

    // Replay: forget the lease, so a new one starts from TRIM_HORIZON and reads everything again.
    sigterm(&mut child);
    let leases =
        LeaseTable { client: aws.dynamodb.clone(), table: names.control_table.clone(), group: "aggregator".into() };
    let before = leases.list().await.unwrap();
    assert!(before.iter().all(|l| l.owner.is_none()), "SIGTERM releases leases: {before:?}");
    for l in &before {
        leases.delete(&l.shard).await.unwrap();
    }
    let mut child = aggregator(&names);
    let seq_of = |c: &Checkpoint| match c {
        Checkpoint::At(s) => formbridge_shared::stream::record::padded_seq(s),
        Checkpoint::ShardEnd => "~".into(),
        Checkpoint::TrimHorizon => String::new(),
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let now = leases.list().await.unwrap();
        // Caught up once every new lease is at least where the old one was.
        let caught_up = !now.is_empty()
            && now
                .iter()
                .all(|l| before.iter().any(|b| b.shard == l.shard && seq_of(&l.checkpoint) >= seq_of(&b.checkpoint)));
        if caught_up {
            break;
        }
        assert!(Instant::now() < deadline, "the replay did not catch up: {now:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    sigterm(&mut child);
    assert_eq!(totals(&store, &tenant, Granularity::Day).await, (N as u64, raw, kept), "a replay changed the totals");
    assert_eq!(totals(&store, &tenant, Granularity::Hour).await, (N as u64, raw, kept));
}

//! Isolation from a hanging destination, a killed worker, replay after recovery, and the
//! circuit breaker.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use formbridge_shared::delivery::replay::{ReplayFilter, Replayer};
use formbridge_shared::delivery::{FailureReason, Records, Status};
use formbridge_shared::destination::DeliveryPolicy;
use formbridge_shared::queue::Queue;
use formbridge_shared::SubmissionId;

use crate::harness::*;

const LIMIT: Duration = Duration::from_secs(90);

fn percentile(mut v: Vec<f64>, p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// Latency (s) from writing each submission to the healthy receiver getting it.
async fn healthy_latencies(stack: &Stack, rx: &Receiver, n: usize) -> Vec<f64> {
    let mut sent = HashMap::new();
    for _ in 0..n {
        let t = Instant::now();
        let id = stack.submit(1).await[0];
        sent.insert(id.to_string(), t);
    }
    let started = Instant::now();
    loop {
        let got = rx.received();
        let mine: Vec<_> = got.iter().filter(|r| sent.contains_key(&r.submission_id)).collect();
        if mine.len() >= n {
            return mine.iter().map(|r| (r.at - sent[&r.submission_id]).as_secs_f64()).collect();
        }
        assert!(started.elapsed() < LIMIT, "healthy destination got {} of {n}", mine.len());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_hanging_destination_does_not_slow_a_healthy_one() {
    const N: usize = 20;
    let stack = Stack::new("isolation").await;
    let healthy = Receiver::start(None, always(200)).await;
    stack.destination(&healthy.url, fast_policy(&[1]), 5_000).await;
    // The second destination never answers: 3 s timeout, 2 attempts at a time.
    let hang = Receiver::start(None, Arc::new(|_| (200, vec![], Duration::from_secs(600)))).await;
    let policy = DeliveryPolicy { max_in_flight: 2, ..fast_policy(&[30]) };
    let (hang_dest, _) = stack.destination(&hang.url, policy, 3_000).await;
    let mut config = stack.config();
    config.breaker_threshold = 1000;
    let (stop, worker) = stack.start(config);

    let with_hang = healthy_latencies(&stack, &healthy, N).await;
    // The order of events, on one clock: every delivery to the healthy destination arrived
    // before the first attempt at the hanging one ended (it ends at its 3 s timeout, recorded).
    let ids: Vec<SubmissionId> =
        healthy.received().iter().map(|r| SubmissionId::parse(&r.submission_id).unwrap()).collect();
    let ended = |h: &[formbridge_shared::delivery::history::DeliveryHistory]| {
        h.iter().any(|d| d.destination == hang_dest.id && !d.attempts.is_empty())
    };
    let all = stack.wait_for(&ids[..1], LIMIT, ended).await;
    let first_hang_end = all
        .values()
        .flatten()
        .filter(|d| d.destination == hang_dest.id)
        .flat_map(|d| d.attempts.iter().map(|a| a.at_ms + a.latency_ms))
        .min()
        .unwrap();
    let last_healthy = healthy.received().iter().map(|r| r.wall_ms).max().unwrap();
    println!(
        "healthy destination beside a hanging one, {N} submissions: p50 {:.3} s, max {:.3} s; last healthy delivery {} ms before the first hanging attempt ended",
        percentile(with_hang.clone(), 0.5),
        percentile(with_hang.clone(), 1.0),
        first_hang_end.saturating_sub(last_healthy),
    );
    assert!(
        last_healthy < first_hang_end,
        "a healthy delivery waited for the hanging destination: last healthy at {last_healthy}, first hanging attempt ended at {first_hang_end}"
    );
    stop.cancel();
    worker.await.unwrap();
}

/// The delivery binary; killed if the test fails.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn worker_binary(stack: &Stack) -> Proc {
    let n = &stack.names;
    let child = Command::new(env!("CARGO_BIN_EXE_formbridge-delivery"))
        .env("FORMBRIDGE_TABLE", &n.table)
        .env("FORMBRIDGE_CONTROL_TABLE", &n.control_table)
        .env("FORMBRIDGE_DELIVERY_QUEUE", &n.delivery_queue)
        .env("FORMBRIDGE_DELIVERY_DLQ", &n.delivery_dlq)
        .env("FORMBRIDGE_EVENT_BUS", &n.event_bus)
        .env("FORMBRIDGE_MASTER_KEYS", &stack.keys_spec)
        .env("DELIVERY_ALLOW_LOOPBACK", "true")
        .env("DELIVERY_POLLERS", "1")
        .env("STREAM_FAILOVER_MS", "1000")
        .env("DELIVERY_FANOUT_CHECKPOINT_MS", "300")
        .env("STREAM_TAKE_MS", "300")
        .env("STREAM_DISCOVER_MS", "300")
        .env("STREAM_BATCH_SIZE", "5")
        .env("STREAM_IDLE_MIN_MS", "50")
        .env("STREAM_IDLE_MAX_MS", "200")
        .env("RUST_LOG", "warn")
        .spawn()
        .expect("start the delivery binary");
    Proc(child)
}

#[tokio::test]
async fn killing_the_worker_loses_nothing_and_duplicates_keep_their_webhook_id() {
    const N: usize = 40;
    let stack = Stack::new("crash").await;
    let (dest, secret) = stack.destination("http://placeholder.invalid/", fast_policy(&[1, 1, 1]), 5_000).await;
    let rx = Receiver::start(Some(&secret), Arc::new(|_| (200, vec![], Duration::from_millis(150)))).await;
    stack
        .store
        .update_destination(stack.tenant(), &dest.id, &stack.keyring, time::OffsetDateTime::now_utc(), "t", |d, _| {
            d.url = rx.url.clone()
        })
        .await
        .unwrap();
    // Messages a killed worker had received come back after the queue's visibility timeout
    // (90 s in production); shortened here so the test does not wait that long.
    let queue = Queue::open(stack.aws.sqs.clone(), &stack.names.delivery_queue, "test").await.unwrap();
    stack
        .aws
        .sqs
        .set_queue_attributes()
        .queue_url(queue.url())
        .attributes(aws_sdk_sqs::types::QueueAttributeName::VisibilityTimeout, "10")
        .send()
        .await
        .unwrap();
    let ids = stack.submit(N).await;
    let mut kills = 0;
    for _ in 0..3 {
        let mut p = worker_binary(&stack);
        let before = rx.received().len();
        let started = Instant::now();
        while rx.received().len() < before + 6 && started.elapsed() < LIMIT {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        p.0.kill().unwrap(); // SIGKILL, mid-send
        p.0.wait().unwrap();
        kills += 1;
    }
    let _last = worker_binary(&stack);
    let all = stack.wait_for(&ids, LIMIT, all_are(Status::Succeeded)).await;

    let got = rx.received();
    let mut per_id: HashMap<&str, usize> = HashMap::new();
    for r in &got {
        assert!(r.verified);
        *per_id.entry(r.webhook_id.as_str()).or_default() += 1;
    }
    for id in &ids {
        let wid = &all[id][0].webhook_id;
        assert!(per_id.contains_key(wid.as_str()), "submission {id} never arrived");
    }
    assert_eq!(per_id.len(), N, "only our webhook-ids, one per submission: {per_id:?}");
    let dups: usize = per_id.values().map(|c| c - 1).sum();
    println!(
        "{kills} SIGKILLs: {N} submissions delivered, {} requests, {dups} duplicates (same webhook-id)",
        got.len()
    );
}

#[tokio::test]
async fn failed_deliveries_are_replayed_after_the_destination_recovers() {
    const N: usize = 4;
    let stack = Stack::new("replay").await;
    let up = Arc::new(AtomicBool::new(false));
    let u = up.clone();
    let script: Script = Arc::new(move |_| (if u.load(Ordering::SeqCst) { 200 } else { 503 }, vec![], Duration::ZERO));
    let rx = Receiver::start(None, script).await;
    let (dest, _) = stack.destination(&rx.url, fast_policy(&[1]), 5_000).await;
    let mut config = stack.config();
    config.breaker_threshold = 1000;
    let (stop, worker) = stack.start(config);
    let ids = stack.submit(N).await;
    let failed = stack.wait_for(&ids, LIMIT, all_are(Status::Failed)).await;
    let first_ids: Vec<String> = failed.values().map(|h| h[0].webhook_id.clone()).collect();
    assert!(failed
        .values()
        .all(|h| h[0].record.as_ref().unwrap().reason == Some(FailureReason::Exhausted) && h[0].attempts.len() == 2));

    let queue = Queue::open(stack.aws.sqs.clone(), &stack.names.delivery_queue, "test").await.unwrap();
    let replayer = Replayer { records: Records::new(stack.store.clone(), "test"), queue };
    let filter = ReplayFilter {
        tenant: stack.tenant().clone(),
        destination: Some(dest.id),
        status: Status::Failed,
        since_ms: 0,
        until_ms: u64::MAX / 2,
    };
    let dry = replayer.matching(&filter).await.unwrap();
    assert_eq!(dry.len(), N, "dry run counts every failed delivery");
    let other = ReplayFilter { destination: Some(formbridge_shared::DestinationId::new()), ..filter.clone() };
    assert_eq!(replayer.matching(&other).await.unwrap().len(), 0, "the destination filter applies");
    assert_eq!(rx.received().len(), 2 * N, "a dry run sends nothing");

    up.store(true, Ordering::SeqCst);
    let report = replayer.replay_all(&dry, NonZeroU32::new(20).unwrap()).await.unwrap();
    assert_eq!(report.replayed, N);
    let done = stack.wait_for(&ids, LIMIT, all_are(Status::Succeeded)).await;
    for h in done.values() {
        let d = &h[0];
        assert_eq!(d.attempts.len(), 3);
        assert_eq!(d.attempts[2].trigger, formbridge_shared::delivery::Trigger::Replay);
        assert_eq!(d.attempts[2].status_code, 200);
        assert!(first_ids.contains(&d.webhook_id), "a replay keeps the webhook-id");
    }
    assert!(replayer.matching(&filter).await.unwrap().is_empty(), "nothing failed is left");
    let events = stack.events().await;
    let failed_events: Vec<_> = events.iter().filter(|(t, _)| t == "DeliveryFailed").collect();
    assert_eq!(failed_events.len(), N);
    stop.cancel();
    worker.await.unwrap();
}

#[tokio::test]
async fn the_breaker_pauses_a_failing_destination_and_a_probe_reopens_it() {
    const N: usize = 6;
    let stack = Stack::new("breaker").await;
    let up = Arc::new(AtomicBool::new(false));
    let u = up.clone();
    let script: Script = Arc::new(move |_| (if u.load(Ordering::SeqCst) { 200 } else { 500 }, vec![], Duration::ZERO));
    let rx = Receiver::start(None, script).await;
    let (dest, _) = stack.destination(&rx.url, fast_policy(&[1, 1, 1, 1, 1, 1, 1, 1]), 5_000).await;
    let mut config = stack.config();
    config.breaker_threshold = 3;
    config.breaker_cooldown_s = 3;
    let (stop, worker) = stack.start(config);
    let ids = stack.submit(N).await;

    // Wait for the pause, then check that it holds attempts back.
    let started = Instant::now();
    let paused = loop {
        let events = stack.events().await;
        if let Some((_, d)) = events.into_iter().find(|(t, _)| t == "DestinationPaused") {
            break d;
        }
        assert!(started.elapsed() < LIMIT, "the destination was never paused");
    };
    assert_eq!(paused["destination_id"], dest.id.to_string());
    assert_schema("destination-paused.schema.json", &paused);
    up.store(true, Ordering::SeqCst);
    let all = stack.wait_for(&ids, LIMIT, all_are(Status::Succeeded)).await;
    let attempts: usize = all.values().map(|h| h[0].attempts.len()).sum();
    // Without the breaker each of the N deliveries keeps retrying every ~1 s while the
    // destination fails; with it, they wait out the pause without spending attempts.
    assert!(attempts < N * 4, "{attempts} attempts for {N} deliveries");
    let events = stack.events().await;
    let recovered: Vec<_> = events.iter().filter(|(t, _)| t == "DestinationRecovered").collect();
    assert_eq!(recovered.len(), 1, "{events:?}");
    assert_schema("destination-recovered.schema.json", &recovered[0].1);
    let h = formbridge_shared::delivery::health::HealthStore {
        client: stack.aws.dynamodb.clone(),
        table: stack.names.table.clone(),
    }
    .get(stack.tenant(), &dest.id)
    .await
    .unwrap();
    assert_eq!(h.state, formbridge_shared::delivery::health::BreakerState::Closed);
    assert_eq!(h.consecutive_failures, 0);
    stop.cancel();
    worker.await.unwrap();
}

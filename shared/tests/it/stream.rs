//! The stream consumer: lineage, leases and checkpoints against a fake stream with many shards
//! (leases live in the local engine's control table), and the real path against the engine.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use formbridge_shared::keys::Entity;
use formbridge_shared::stream::fake::FakeStream;
use formbridge_shared::stream::{
    run, Alarms, BatchProcessor, Change, ChangeKind, Checkpoint, Committer, ConsumerConfig, DynamoStreams, LeaseTable,
    ProcessError,
};
use formbridge_shared::testing::fresh_stack;
use tokio_util::sync::CancellationToken;

/// Records every record it handles, with the worker that handled it.
#[derive(Default)]
struct Recorder {
    log: Mutex<Vec<(String, String)>>,
    /// Workers that are "frozen": their processor never returns.
    frozen: Mutex<Vec<String>>,
    /// Workers whose next batch never returns (once): a request left unanswered.
    hang_once: Mutex<Vec<String>>,
    delay: Duration,
    batches: std::sync::atomic::AtomicUsize,
    /// The most records handed over in one batch.
    largest: std::sync::atomic::AtomicUsize,
    /// (worker, seq, may_repeat) of every record handled.
    repeats: Mutex<Vec<(String, String, bool)>>,
}

impl BatchProcessor for Recorder {
    async fn process(&self, records: &[Change], committer: &mut Committer<'_>) -> Result<(), ProcessError> {
        let me = committer.owner().to_owned();
        if self.frozen.lock().unwrap().contains(&me) {
            std::future::pending::<()>().await;
        }
        let hang = {
            let mut once = self.hang_once.lock().unwrap();
            let hang = once.contains(&me);
            once.retain(|w| *w != me);
            hang
        };
        if hang {
            std::future::pending::<()>().await;
        }
        tokio::time::sleep(self.delay).await;
        self.batches.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.largest.fetch_max(records.len(), std::sync::atomic::Ordering::Relaxed);
        let mut log = self.log.lock().unwrap();
        let mut repeats = self.repeats.lock().unwrap();
        for r in records {
            log.push((me.clone(), r.seq.clone()));
            repeats.push((me.clone(), r.seq.clone(), committer.may_repeat(r)));
        }
        Ok(())
    }
}

impl Recorder {
    fn seqs(&self) -> Vec<String> {
        self.log.lock().unwrap().iter().map(|(_, s)| s.clone()).collect()
    }
    fn by(&self, worker: &str) -> usize {
        self.log.lock().unwrap().iter().filter(|(w, _)| w == worker).count()
    }
}

fn change() -> Change {
    Change {
        seq: String::new(),
        kind: ChangeKind::Insert,
        entity: Entity::Unknown,
        new: None,
        old: None,
        created_s: None,
    }
}

fn fast(group: &str, worker: &str) -> ConsumerConfig {
    let mut c = ConsumerConfig::new(group);
    c.worker_id = worker.to_owned();
    c.failover = Duration::from_millis(1500);
    c.renew_every = Duration::from_millis(300);
    c.take_every = Duration::from_millis(400);
    c.discover_every = Duration::from_millis(400);
    c.idle_min = Duration::from_millis(20);
    c.idle_max = Duration::from_millis(100);
    c.batch_size = 3;
    c
}

async fn leases() -> LeaseTable {
    let (aws, names, _) = fresh_stack().await;
    LeaseTable { client: aws.dynamodb, table: names.control_table, group: "test".into() }
}

async fn until(what: &str, secs: u64, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn start(
    stream: &FakeStream,
    table: &LeaseTable,
    p: &Arc<Recorder>,
    config: ConsumerConfig,
) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let token = CancellationToken::new();
    let h = tokio::spawn(run(stream.clone(), table.clone(), p.clone(), config, Alarms::default(), token.clone()));
    (token, h)
}

#[tokio::test]
async fn lingering_gathers_a_trickle_of_records_into_few_batches() {
    let stream = FakeStream::new();
    stream.add_shard("only", None);
    let table = leases().await;
    let p = Arc::new(Recorder::default());
    let mut config = fast("test", "w1");
    config.batch_size = 1000;
    config.linger = Duration::from_millis(800);
    let (token, h) = start(&stream, &table, &p, config);
    // 40 records, one every 50 ms: read at once, nearly every record would be its own batch.
    for _ in 0..40 {
        stream.push("only", change());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    until("all records", 30, || p.seqs().len() >= 40).await;
    token.cancel();
    h.await.unwrap();
    let batches = p.batches.load(std::sync::atomic::Ordering::Relaxed);
    assert!(batches <= 10, "{batches} batches for 40 records with an 800 ms linger");
    assert_eq!(p.seqs().len(), 40, "every record exactly once");
}

#[tokio::test]
async fn a_lingering_reader_reads_small_and_often_and_hands_over_together() {
    // The aggregator lingers 10 s between commits. One read of everything that arrived in those
    // 10 s holds the local engine for the whole answer (every other process waits behind it), so
    // the reader gathers the records from small reads instead.
    let stream = FakeStream::new();
    stream.add_shard("only", None);
    let table = leases().await;
    let p = Arc::new(Recorder::default());
    let mut config = fast("test", "w1");
    config.batch_size = 1000;
    config.linger = Duration::from_millis(1500);
    config.read_every = Duration::from_millis(100);
    let (token, h) = start(&stream, &table, &p, config);
    // Reading has begun (the lease is held) before the first record arrives.
    until("the first read", 30, || stream.calls("only") >= 1).await;
    // 60 records, two at a time, each pair once the reader has read since the last: paced by the
    // reader, not by the clock, so a loaded machine changes how long this takes, not what it shows.
    for _ in 0..30 {
        let calls = stream.calls("only");
        stream.push("only", change());
        stream.push("only", change());
        until("a read after the push", 30, || stream.calls("only") > calls).await;
    }
    until("all records", 30, || p.seqs().len() >= 60).await;
    token.cancel();
    h.await.unwrap();
    let batches = p.batches.load(std::sync::atomic::Ordering::Relaxed);
    let largest_batch = p.largest.load(std::sync::atomic::Ordering::Relaxed);
    let largest_read = stream.largest_read("only");
    // A reader that waited out the linger and read once would hand over 30 batches of 2.
    assert!(batches <= 10, "{batches} batches for 60 records with a 1.5 s linger");
    assert!(largest_read <= 4, "a read returned {largest_read} records though at most 4 arrived between reads");
    assert!(
        largest_read * 2 < largest_batch,
        "reads stay small while a batch gathers ({largest_read}-record read, {largest_batch}-record batch)"
    );
    assert_eq!(p.seqs().len(), 60, "every record exactly once");
}

#[tokio::test]
async fn a_parent_is_finished_before_its_children_are_read() {
    let stream = FakeStream::new();
    stream.add_shard("A", None);
    let parent: Vec<String> = (0..7).map(|_| stream.push("A", change())).collect();
    stream.split("A", &["B", "C"]);
    let children: Vec<String> = (0..4).flat_map(|_| [stream.push("B", change()), stream.push("C", change())]).collect();
    let table = leases().await;
    let p = Arc::new(Recorder { delay: Duration::from_millis(30), ..Recorder::default() });
    let (token, h) = start(&stream, &table, &p, fast("test", "w1"));
    until("all records", 30, || p.seqs().len() >= 15).await;
    token.cancel();
    h.await.unwrap();

    let seqs = p.seqs();
    let last_parent = parent.iter().map(|s| seqs.iter().position(|x| x == s).unwrap()).max().unwrap();
    let first_child = children.iter().map(|s| seqs.iter().position(|x| x == s).unwrap()).min().unwrap();
    assert!(last_parent < first_child, "a child record was read before the parent was finished: {seqs:?}");
    let l: HashMap<_, _> = table.list().await.unwrap().into_iter().map(|l| (l.shard.clone(), l)).collect();
    assert_eq!(l["A"].checkpoint, Checkpoint::ShardEnd);
    assert_eq!(l["B"].parent.as_deref(), Some("A"));
    assert_eq!(l["B"].checkpoint, Checkpoint::At(children[6].clone()));
}

#[tokio::test]
async fn two_live_workers_split_the_shards_and_a_dead_ones_leases_are_taken_over() {
    let stream = FakeStream::new();
    for s in ["s1", "s2", "s3", "s4"] {
        stream.add_shard(s, None);
    }
    let table = leases().await;
    let p = Arc::new(Recorder::default());
    let (t1, h1) = start(&stream, &table, &p, fast("test", "w1"));
    let (t2, h2) = start(&stream, &table, &p, fast("test", "w2"));
    let owners =
        |ls: &[formbridge_shared::stream::Lease], w: &str| ls.iter().filter(|l| l.owner.as_deref() == Some(w)).count();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ls = table.list().await.unwrap();
        if owners(&ls, "w1") == 2 && owners(&ls, "w2") == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "leases never balanced: {ls:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Once balanced, every shard's records go to its lease holder.
    for s in ["s1", "s2", "s3", "s4"] {
        for _ in 0..3 {
            stream.push(s, change());
        }
    }
    until("the initial records", 30, || p.seqs().len() >= 12).await;
    assert!(p.by("w1") > 0 && p.by("w2") > 0, "both workers must work");

    // w2 freezes (its processor never returns, it stops renewing): w1 takes its shards over.
    p.frozen.lock().unwrap().push("w2".into());
    h2.abort();
    let before = p.seqs().len();
    let added: Vec<String> = ["s1", "s2", "s3", "s4"].iter().map(|s| stream.push(s, change())).collect();
    until("w1 to handle every new record", 30, || {
        let log = p.log.lock().unwrap();
        added.iter().all(|s| log.iter().any(|(w, x)| x == s && w == "w1"))
    })
    .await;
    assert!(p.seqs().len() >= before + 4);
    let ls = table.list().await.unwrap();
    assert_eq!(owners(&ls, "w1"), 4, "w1 should hold every lease: {ls:?}");
    t1.cancel();
    h1.await.unwrap();
    t2.cancel();
    // Released at shutdown, so the next worker starts at once.
    assert!(table.list().await.unwrap().iter().all(|l| l.owner.is_none()));
}

/// A reader whose batch never returns while its worker lives on (renewing its leases) is
/// aborted once it has made no progress for `stall`: the lease lapses, the shard is read again
/// from the checkpoint, and every record is handled. Without it, the shard is held for good.
#[tokio::test]
async fn a_reader_stuck_in_a_batch_is_aborted_and_its_shard_read_again() {
    let stream = FakeStream::new();
    stream.add_shard("only", None);
    let table = leases().await;
    let p = Arc::new(Recorder::default());
    p.hang_once.lock().unwrap().push("w1".into());
    let mut config = fast("test", "w1");
    config.stall = Duration::from_secs(2);
    let (token, h) = start(&stream, &table, &p, config);
    let added: Vec<String> = (0..3).map(|_| stream.push("only", change())).collect();
    until("every record, after the stuck batch", 60, || {
        let seqs = p.seqs();
        added.iter().all(|s| seqs.contains(s))
    })
    .await;
    assert!(p.hang_once.lock().unwrap().is_empty(), "the first batch hung");
    assert_eq!(p.seqs().len(), 3, "the stuck batch handled nothing: {:?}", p.seqs());
    token.cancel();
    h.await.unwrap();
}

#[tokio::test]
async fn a_busy_readers_checkpoints_are_its_heartbeat() {
    let stream = FakeStream::new();
    stream.add_shard("only", None);
    let table = leases().await;
    let p = Arc::new(Recorder::default());
    // A failover of 3 s (the other tests use 1.5 s): a loaded engine slows renewals, and this test is
    // about what stands in for them, not about how soon a silent worker is replaced.
    let slow = |w: &str| ConsumerConfig { failover: Duration::from_secs(3), ..fast("test", w) };
    let (t1, h1) = start(&stream, &table, &p, slow("w1"));
    stream.push("only", change());
    until("the first record", 30, || p.seqs().len() == 1).await;
    let counter = |ls: Vec<formbridge_shared::stream::Lease>| ls[0].counter;
    let before = counter(table.list().await.unwrap());
    // A second worker watches: it would take a lease whose counter stood still for the failover
    // time (3 s), unless the checkpoint moved.
    let (t2, h2) = start(&stream, &table, &p, slow("w2"));
    // 4 s of steady records: w1 checkpoints every batch, more often than it would renew.
    for _ in 0..40 {
        stream.push("only", change());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    until("every record", 30, || p.seqs().len() == 41).await;
    let ls = table.list().await.unwrap();
    assert_eq!(ls[0].owner.as_deref(), Some("w1"), "{ls:?}");
    assert_eq!(p.by("w2"), 0, "the live worker's lease was taken over");
    // Renewing every 300 ms would have moved the counter about 13 times; the commits stood in.
    let moved = counter(ls) - before;
    assert!(moved <= 3, "the counter moved {moved} times while the checkpoint was moving");
    // Idle again, w1 renews as before and keeps the lease.
    let idle_from = counter(table.list().await.unwrap());
    let deadline = Instant::now() + Duration::from_secs(30);
    let ls = loop {
        let ls = table.list().await.unwrap();
        if ls[0].counter >= idle_from + 3 {
            break ls;
        }
        assert!(Instant::now() < deadline, "an idle reader must renew: {ls:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(ls[0].owner.as_deref(), Some("w1"), "the idle reader kept its lease by renewing: {ls:?}");
    assert_eq!(p.by("w2"), 0, "the watching worker took nothing over");
    for (t, h) in [(t1, h1), (t2, h2)] {
        t.cancel();
        h.await.unwrap();
    }
}

#[tokio::test]
async fn a_deferred_checkpoint_trails_a_busy_reader_and_lands_when_it_goes_quiet_or_stops() {
    let stream = FakeStream::new();
    stream.add_shard("only", None);
    let table = leases().await;
    let p = Arc::new(Recorder::default());
    let mut config = fast("test", "w1");
    config.checkpoint_every = Duration::from_millis(700);
    let (token, h) = start(&stream, &table, &p, config);
    // 1.5 s of records, one every 50 ms, read in batches of at most 3: a checkpoint per batch
    // would move it more than ten times; deferred, it moves every 700 ms.
    let pusher = {
        let stream = stream.clone();
        tokio::spawn(async move {
            let mut last = String::new();
            for _ in 0..30 {
                last = stream.push("only", change());
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            last
        })
    };
    let mut seen_checkpoints = std::collections::HashSet::new();
    while !pusher.is_finished() || p.seqs().len() < 30 {
        if let Some(l) = table.list().await.unwrap().pop() {
            seen_checkpoints.insert(format!("{:?}", l.checkpoint));
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let last = pusher.await.unwrap();
    let batches = p.batches.load(std::sync::atomic::Ordering::Relaxed);
    assert!(batches >= 10, "{batches} batches");
    assert!(
        seen_checkpoints.len() <= 5,
        "the checkpoint moved through {} values over {batches} batches: {seen_checkpoints:?}",
        seen_checkpoints.len()
    );
    // Quiet: the deferred checkpoint lands on the last record.
    let at_last = Checkpoint::At(last);
    let deadline = Instant::now() + Duration::from_secs(10);
    while table.list().await.unwrap()[0].checkpoint != at_last {
        assert!(Instant::now() < deadline, "the deferred checkpoint never landed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A reader that stops writes what it deferred.
    let last = stream.push("only", change());
    until("the last record", 30, || p.seqs().len() == 31).await;
    token.cancel();
    h.await.unwrap();
    assert_eq!(p.seqs().len(), 31, "every record once, none replayed");
    let lease = table.list().await.unwrap().pop().unwrap();
    assert_eq!(lease.checkpoint, Checkpoint::At(last), "stopping wrote the deferred checkpoint");
}

#[tokio::test]
async fn a_lease_taken_from_a_dead_worker_marks_what_it_may_have_handled_as_repeats() {
    let stream = FakeStream::new();
    stream.add_shard("only", None);
    let table = leases().await;
    let p = Arc::new(Recorder::default());
    let stamped = || Change { created_s: Some(formbridge_shared::clock::now_ms() as i64 / 1000), ..change() };
    // w1 defers its checkpoint long past the test: it handles 12 records and dies (its task is
    // dropped: no stop, no deferred checkpoint, no release).
    let mut c1 = fast("test", "w1");
    c1.checkpoint_every = Duration::from_secs(60);
    c1.failover = Duration::from_secs(60);
    let (_t1, h1) = start(&stream, &table, &p, c1);
    for _ in 0..12 {
        stream.push("only", stamped());
    }
    until("w1 handles every record", 30, || p.by("w1") == 12).await;
    let w1_saw: Vec<(String, String, bool)> = p.repeats.lock().unwrap().clone();
    assert!(w1_saw.iter().all(|(_, _, r)| !r), "a new lease repeats nothing: {w1_saw:?}");
    h1.abort();
    let _ = h1.await;
    // w2 takes the expired lease and reads from the old checkpoint: every record w1 handled is
    // a possible repeat, however many batches past the first; records that arrive well after
    // w2 began are not.
    let (t2, h2) = start(&stream, &table, &p, fast("test", "w2"));
    until("w2 re-handles w1's records", 30, || p.by("w2") >= 12).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let late: Vec<String> = (0..3).map(|_| stream.push("only", stamped())).collect();
    until("w2 handles the late records", 30, || p.by("w2") == 15).await;
    t2.cancel();
    h2.await.unwrap();
    let w2: Vec<(String, bool)> =
        p.repeats.lock().unwrap().iter().filter(|(w, _, _)| w == "w2").map(|(_, s, r)| (s.clone(), *r)).collect();
    for (seq, repeat) in &w2 {
        if late.contains(seq) {
            assert!(!repeat, "{seq} arrived after w2 began: {w2:?}");
        } else {
            assert!(repeat, "{seq} may have been handled by w1: {w2:?}");
        }
    }
}

#[tokio::test]
async fn a_worker_that_lost_its_lease_checkpoints_nothing_more() {
    let stream = FakeStream::new();
    stream.add_shard("only", None);
    for _ in 0..3 {
        stream.push("only", change());
    }
    let table = leases().await;
    let p = Arc::new(Recorder { delay: Duration::from_millis(200), ..Recorder::default() });
    let mut config = fast("test", "w1");
    config.failover = Duration::from_secs(120); // no legitimate re-take during the test
    let (token, h) = start(&stream, &table, &p, config);
    until("the first records", 30, || p.seqs().len() >= 3).await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Another worker steals the lease behind w1's back (again if w1 renewed it between the
    // thief's read and its take: the take is conditional on the counter it read).
    let mut tries = 0;
    let stolen = loop {
        let lease = table.list().await.unwrap().pop().unwrap();
        match table.take(&lease, "thief").await {
            Ok(l) => break l,
            Err(e) => {
                tries += 1;
                assert!(tries < 20, "the lease could not be taken: {e}");
            }
        }
    };
    let checkpoint = stolen.checkpoint.clone();
    for _ in 0..6 {
        stream.push("only", change());
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let now = table.list().await.unwrap().pop().unwrap();
    assert_eq!(now.owner.as_deref(), Some("thief"));
    assert_eq!(now.checkpoint, checkpoint, "the worker that lost its lease moved the checkpoint");
    token.cancel();
    h.await.unwrap();
}

#[tokio::test]
async fn trimmed_records_raise_an_alarm_and_reading_goes_on() {
    let (aws, names, _) = fresh_stack().await;
    let table = LeaseTable { client: aws.dynamodb.clone(), table: names.control_table.clone(), group: "test".into() };
    // The alarm's audience: an EventBridge rule on the bus, delivering to a queue we can read.
    let q = aws
        .sqs
        .create_queue()
        .queue_name(format!("alarms-{}", &names.table[15..]))
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let arn = aws
        .sqs
        .get_queue_attributes()
        .queue_url(&q)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap()[&aws_sdk_sqs::types::QueueAttributeName::QueueArn]
        .clone();
    aws.eventbridge
        .put_rule()
        .name("trimmed")
        .event_bus_name(&names.event_bus)
        .event_pattern(r#"{"source":["formbridge.stream"],"detail-type":["StreamRecordsTrimmed"]}"#)
        .send()
        .await
        .unwrap();
    aws.eventbridge
        .put_targets()
        .rule("trimmed")
        .event_bus_name(&names.event_bus)
        .targets(aws_sdk_eventbridge::types::Target::builder().id("q").arn(arn).build().unwrap())
        .send()
        .await
        .unwrap();

    let stream = FakeStream::new();
    stream.add_shard("t", None);
    let seqs: Vec<String> = (0..8).map(|_| stream.push("t", change())).collect();
    // A previous worker had handled the first two records; the next three were trimmed since.
    table.ensure("t", None).await.unwrap();
    let l = table.list().await.unwrap().pop().unwrap();
    let l = table.take(&l, "old").await.unwrap();
    let mut c = Committer::for_tests(&table, "t", "old", Checkpoint::TrimHorizon);
    c.commit(Checkpoint::At(seqs[1].clone()), vec![]).await.unwrap();
    table.release(&l.shard, "old").await.unwrap();
    stream.trim("t", 5);

    let p = Arc::new(Recorder::default());
    let token = CancellationToken::new();
    let alarms = Alarms { eventbridge: Some((aws.eventbridge.clone(), names.event_bus.clone())) };
    let h = tokio::spawn(run(stream.clone(), table.clone(), p.clone(), fast("test", "w1"), alarms, token.clone()));
    until("the records still in the stream", 30, || p.seqs().len() >= 3).await;
    token.cancel();
    h.await.unwrap();
    assert_eq!(p.seqs(), seqs[5..].to_vec(), "reading goes on from the oldest record left");

    let got = aws.sqs.receive_message().queue_url(&q).wait_time_seconds(2).send().await.unwrap();
    let body = got.messages().first().and_then(|m| m.body()).expect("an alarm event on the bus");
    let event: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(event["detail-type"], "StreamRecordsTrimmed");
    assert_eq!(event["detail"]["shard"], "t");
    assert_eq!(event["detail"]["checkpoint"], format!("SEQ#{}", seqs[1]));
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../schemas/events/stream-records-trimmed.schema.json"
        ))
        .unwrap(),
    )
    .unwrap();
    assert!(
        jsonschema::validator_for(&schema).unwrap().is_valid(&event["detail"]),
        "the event matches its published schema"
    );
}

#[tokio::test]
async fn an_expired_iterator_is_reacquired_from_the_last_handled_record() {
    // Also when the checkpoint is deferred: the last handled record is then ahead of it.
    for defer in [Duration::ZERO, Duration::from_secs(60)] {
        let stream = FakeStream::new();
        stream.add_shard("e", None);
        let mut seqs: Vec<String> = (0..5).map(|_| stream.push("e", change())).collect();
        let table = leases().await;
        let p = Arc::new(Recorder::default());
        let mut config = fast("test", "w1");
        config.checkpoint_every = defer;
        let (token, h) = start(&stream, &table, &p, config);
        until("the first records", 30, || p.seqs().len() >= 5).await;
        for round in 0..3 {
            stream.expire_iterators();
            seqs.extend((0..4).map(|_| stream.push("e", change())));
            let want = 5 + 4 * (round + 1);
            until("the records after the expiry", 30, || p.seqs().len() >= want).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        token.cancel();
        h.await.unwrap();
        // Neither skipped (LATEST) nor repeated (TRIM_HORIZON): exactly the stream, in order.
        assert_eq!(p.seqs(), seqs, "checkpoint deferred {defer:?}");
    }
}

#[tokio::test]
async fn the_real_stream_is_read_and_resumed_from_the_checkpoint() {
    let (aws, names, _) = fresh_stack().await;
    let table = LeaseTable { client: aws.dynamodb.clone(), table: names.control_table.clone(), group: "real".into() };
    let stream = DynamoStreams::for_table(&aws.dynamodb, aws.streams.clone(), &names.table).await.unwrap();
    let put = |i: usize| {
        aws.dynamodb
            .put_item()
            .table_name(&names.table)
            .item("PK", aws_sdk_dynamodb::types::AttributeValue::S("TENANT#real".into()))
            .item("SK", aws_sdk_dynamodb::types::AttributeValue::S(format!("DEST#{}", ulid::Ulid::new())))
            .item("n", aws_sdk_dynamodb::types::AttributeValue::N(i.to_string()))
            .send()
    };
    for i in 0..5 {
        put(i).await.unwrap();
    }
    let p = Arc::new(Recorder::default());
    let token = CancellationToken::new();
    let h = tokio::spawn(run(
        stream.clone(),
        table.clone(),
        p.clone(),
        fast("real", "w1"),
        Alarms::default(),
        token.clone(),
    ));
    until("5 records from the engine's stream", 30, || p.seqs().len() >= 5).await;
    token.cancel();
    h.await.unwrap();
    assert_eq!(p.seqs().len(), 5);

    // A restart resumes after the checkpoint: only the new records are handled.
    for i in 5..8 {
        put(i).await.unwrap();
    }
    let token = CancellationToken::new();
    let h = tokio::spawn(run(stream, table.clone(), p.clone(), fast("real", "w2"), Alarms::default(), token.clone()));
    until("3 more records", 30, || p.seqs().len() >= 8).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    token.cancel();
    h.await.unwrap();
    assert_eq!(p.seqs().len(), 8, "records before the checkpoint were handled again");
    assert_eq!(p.by("w2"), 3);
}

/// The local engine under concurrent writes: a cancelled transaction (a destination update
/// refused by its version condition) must lose no other write, leave open stream iterators
/// reading, and keep sequence numbers unique and increasing, as DynamoDB does. Unpatched moto
/// restores a deep copy of the table on a cancelled transaction, which drops writes made
/// meanwhile and strands every iterator on the replaced stream (see
/// `deploy/local/formbridge_moto_patches.py`).
#[tokio::test]
async fn a_cancelled_transaction_loses_no_concurrent_write_and_strands_no_stream_reader() {
    use aws_sdk_dynamodb::types::{AttributeValue as Av, Put, TransactWriteItem};
    use formbridge_shared::stream::{Position, StreamShards};

    let (aws, names, _) = fresh_stack().await;
    let stream = DynamoStreams::for_table(&aws.dynamodb, aws.streams.clone(), &names.table).await.unwrap();
    let shard = stream.shards().await.unwrap().remove(0).id;
    let mut it = stream.iterator(&shard, &Position::TrimHorizon).await.unwrap();
    let put = |sk: String| {
        aws.dynamodb
            .put_item()
            .table_name(&names.table)
            .item("PK", Av::S("TENANT#tx".into()))
            .item("SK", Av::S(sk))
            .send()
    };
    put("DEST#anchor".into()).await.unwrap();

    // 8 writers of 25 items each, while 5 transactions are cancelled by their condition.
    let writers: Vec<_> = (0..8)
        .map(|w| async move {
            for i in 0..25 {
                put(format!("DEST#w{w}-{i:02}")).await.unwrap();
            }
        })
        .collect();
    let cancelled = async {
        for t in 0..5 {
            let item = |sk: String| HashMap::from([("PK".into(), Av::S("TENANT#tx".into())), ("SK".into(), Av::S(sk))]);
            let r = aws
                .dynamodb
                .transact_write_items()
                .transact_items(
                    TransactWriteItem::builder()
                        .put(
                            Put::builder()
                                .table_name(&names.table)
                                .set_item(Some(item(format!("DEST#rolled-back-{t}"))))
                                .build()
                                .unwrap(),
                        )
                        .build(),
                )
                .transact_items(
                    TransactWriteItem::builder()
                        .put(
                            Put::builder()
                                .table_name(&names.table)
                                .set_item(Some(item("DEST#anchor".into())))
                                .condition_expression("attribute_not_exists(PK)")
                                .build()
                                .unwrap(),
                        )
                        .build(),
                )
                .send()
                .await;
            assert!(r.is_err(), "the transaction's condition holds: it must be cancelled");
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    };
    tokio::join!(futures::future::join_all(writers), cancelled);
    put("DEST#last".into()).await.unwrap();

    // Every write is stored.
    let stored = aws
        .dynamodb
        .query()
        .table_name(&names.table)
        .key_condition_expression("PK = :pk")
        .expression_attribute_values(":pk", Av::S("TENANT#tx".into()))
        .select(aws_sdk_dynamodb::types::Select::Count)
        .send()
        .await
        .unwrap();
    assert_eq!(stored.count, 202, "writes made during a cancelled transaction were lost");

    // The iterator taken before it all reads every INSERT once, in increasing order, and no
    // record of a cancelled transaction.
    let mut seen: Vec<(String, String)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !seen.iter().any(|(_, sk)| sk == "DEST#last") {
        assert!(
            Instant::now() < deadline,
            "an iterator opened before the transactions stopped reading after {} records",
            seen.len()
        );
        let page = stream.records(&it, 1000).await.unwrap();
        for c in &page.records {
            let sk = c.new.as_ref().and_then(|n| n.get("SK")).and_then(|v| v.as_s().ok()).cloned().unwrap_or_default();
            seen.push((c.seq.clone(), sk));
        }
        it = page.next.expect("an open shard");
    }
    assert_eq!(seen.len(), 202, "{seen:?}");
    assert!(!seen.iter().any(|(_, sk)| sk.contains("rolled-back")), "a cancelled write reached the stream");
    let seqs: Vec<String> = seen.iter().map(|(s, _)| formbridge_shared::stream::record::padded_seq(s)).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "sequence numbers repeat or go back");
}

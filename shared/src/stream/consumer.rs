//! The stream consumer: one worker of a consumer group. It discovers shards, keeps leases
//! balanced across the group's live workers, runs one reader per leased shard, and hands each
//! batch of typed records to a `BatchProcessor` together with a `Committer` that writes the
//! processor's side effects and the checkpoint in one transaction.
//!
//! What it must never do: read a child shard before its parent is checkpointed at SHARD_END;
//! checkpoint anything it has not handled; keep working on a shard whose lease it lost; read
//! from LATEST; skip trimmed data silently.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::lease::{Checkpoint, CommitError, Committer, Lease, LeaseError, LeaseTable};
use super::record::Change;
use super::shards::{Position, ShardError, StreamShards};

/// Intervals and sizes, with KCL-like defaults.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// The consumer group: each group reads every record once (aggregator, delivery, ...).
    pub group: String,
    /// This worker's identity in the lease table.
    pub worker_id: String,
    /// A lease whose counter and checkpoint have not moved for this long (on our clock) is expired.
    pub failover: Duration,
    pub renew_every: Duration,
    pub take_every: Duration,
    pub discover_every: Duration,
    /// GetRecords limit (at most 1,000).
    pub batch_size: i32,
    /// Idle back-off between empty GetRecords calls: from `idle_min`, doubling to `idle_max`.
    pub idle_min: Duration,
    pub idle_max: Duration,
    /// Leases stolen from busier workers per balancing round.
    pub max_steals: usize,
    /// The least time between two batches handed to the processor (and so between two commits).
    /// Records that arrive sooner are gathered from further reads, `read_every` apart, and handed
    /// over together once the linger has passed or `batch_size` is reached: fewer commits (each
    /// one metric write per bucket for the aggregator), and no single large read that would hold
    /// the engine. The first records after a quiet spell are handed over at once.
    pub linger: Duration,
    /// While gathering within a linger, read the shard this often.
    pub read_every: Duration,
    /// Move the checkpoint at most this often (zero: after every batch). Only for a processor
    /// whose work is idempotent when replayed (the delivery fan-out: its queue messages are
    /// deduplicated by the delivery records), since a worker that dies replays up to this much;
    /// each skipped checkpoint is a write spared. A deferred checkpoint is written once the
    /// time has passed, when the shard goes quiet, and when the reader stops. Keep it well under
    /// `failover`: a moving checkpoint is the lease's heartbeat.
    pub checkpoint_every: Duration,
    /// A reader that has not come round its loop for this long is stuck (an await that never
    /// ends): its task is aborted and its lease no longer renewed, so it lapses and is read
    /// again from its checkpoint, by this worker or another, as after a crash. Without it, a
    /// worker whose renewals go on while its reader hangs holds the shard for good. Keep it well
    /// above the longest batch (the SDK's three attempts of 30 s and the processor's retries).
    pub stall: Duration,
}

impl ConsumerConfig {
    pub fn new(group: &str) -> Self {
        Self {
            group: group.to_owned(),
            worker_id: ulid::Ulid::new().to_string(),
            failover: Duration::from_secs(10),
            renew_every: Duration::from_millis(3_333),
            take_every: Duration::from_secs(20),
            discover_every: Duration::from_secs(30),
            batch_size: 1000,
            idle_min: Duration::from_millis(250),
            idle_max: Duration::from_secs(2),
            max_steals: 1,
            linger: Duration::ZERO,
            read_every: Duration::from_secs(1),
            checkpoint_every: Duration::ZERO,
            stall: Duration::from_secs(300),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("lease lost")]
    LeaseLost,
    #[error("{0}")]
    Failed(String),
}

impl From<CommitError> for ProcessError {
    fn from(e: CommitError) -> Self {
        match e {
            CommitError::LeaseLost(_) => ProcessError::LeaseLost,
            other => ProcessError::Failed(other.to_string()),
        }
    }
}

/// What a consumer group does with records. It may commit as it goes (`Committer::commit`,
/// with its side effects); whatever it leaves uncommitted when it returns `Ok` is checkpointed
/// by the consumer, with no side effects, since the processor said it is handled.
pub trait BatchProcessor: Send + Sync + 'static {
    fn process(
        &self,
        records: &[Change],
        committer: &mut Committer<'_>,
    ) -> impl Future<Output = Result<(), ProcessError>> + Send;
}

/// How often a reader writes its stream-lag log line while it handles records (the metric
/// filter's resolution; a minute-long CloudWatch period sees several).
const LAG_LOG_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// Where data-loss alarms go besides the error log and the `stream_trimmed_total` metric.
#[derive(Debug, Clone, Default)]
pub struct Alarms {
    pub eventbridge: Option<(aws_sdk_eventbridge::Client, String)>,
}

impl Alarms {
    async fn trimmed(&self, group: &str, shard: &str, checkpoint: &Checkpoint) {
        metrics::counter!("stream_trimmed_total", "group" => group.to_owned()).increment(1);
        crate::telemetry::log_metric::emit(crate::telemetry::log_metric::STREAM_TRIMMED, 1);
        tracing::error!(group, shard, checkpoint = %checkpoint.encode(), "stream records were trimmed before they were read: DATA LOSS; continuing from the oldest record still in the stream");
        if let Some((client, bus)) = &self.eventbridge {
            let detail = serde_json::json!({ "group": group, "shard": shard, "checkpoint": checkpoint.encode() });
            let entry = aws_sdk_eventbridge::types::PutEventsRequestEntry::builder()
                .event_bus_name(bus)
                .source("formbridge.stream")
                .detail_type("StreamRecordsTrimmed")
                .detail(detail.to_string())
                .build();
            if let Err(e) = client.put_events().entries(entry).send().await {
                tracing::error!(error = %aws_sdk_eventbridge::Error::from(e), "could not publish the trimmed-data alarm");
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReaderEnd {
    ShardEnd,
    Lost,
    Stopped,
}

struct Held {
    lease: Lease,
    cancel: CancellationToken,
    task: JoinHandle<ReaderEnd>,
    /// When the reader last moved the checkpoint (see [`Heartbeat`]).
    beat: Arc<Heartbeat>,
    /// When the reader last came round its loop (see [`ConsumerConfig::stall`]).
    alive: Arc<Heartbeat>,
}

/// A moved checkpoint is a heartbeat: other workers judge a lease alive when its counter *or*
/// its checkpoint has moved within the failover time, so while a reader is committing, the
/// lease needs no separate renewal write. A busy shard then costs one conditional write per
/// batch instead of one per batch plus one every renewal interval; an idle one is renewed as
/// before.
#[derive(Debug)]
struct Heartbeat {
    since: Instant,
    /// Milliseconds after `since` of the last commit; 0 before the first.
    last_ms: std::sync::atomic::AtomicU64,
}

impl Heartbeat {
    fn new() -> Self {
        Self { since: Instant::now(), last_ms: std::sync::atomic::AtomicU64::new(0) }
    }

    fn beat(&self) {
        let ms = u64::try_from(self.since.elapsed().as_millis()).unwrap_or(u64::MAX).max(1);
        self.last_ms.store(ms, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether a commit happened within `window`.
    fn within(&self, window: Duration) -> bool {
        match self.last_ms.load(std::sync::atomic::Ordering::Relaxed) {
            0 => false,
            ms => self.since.elapsed().saturating_sub(Duration::from_millis(ms)) < window,
        }
    }
}

struct Shared<S, P> {
    stream: S,
    leases: LeaseTable,
    processor: Arc<P>,
    config: ConsumerConfig,
    alarms: Alarms,
}

/// Runs one worker until `shutdown`; then stops its readers after their current batch and
/// releases its leases, so another worker takes over at once rather than after `failover`.
pub async fn run<S, P>(
    stream: S,
    leases: LeaseTable,
    processor: Arc<P>,
    config: ConsumerConfig,
    alarms: Alarms,
    shutdown: CancellationToken,
) where
    S: StreamShards + Clone,
    P: BatchProcessor,
{
    let shared = Arc::new(Shared { stream, leases, processor, config, alarms });
    let mut worker = Worker {
        shared: shared.clone(),
        held: HashMap::new(),
        seen: HashMap::new(),
        listed: HashSet::new(),
        ensured: HashSet::new(),
    };
    let c = &shared.config;
    let (mut discover, mut renew, mut take) = (
        tokio::time::interval(c.discover_every),
        tokio::time::interval(c.renew_every),
        tokio::time::interval(c.take_every),
    );
    for i in [&mut discover, &mut renew, &mut take] {
        i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    }
    tracing::info!(group = %c.group, worker = %c.worker_id, "stream consumer started");
    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            _ = discover.tick() => worker.discover().await,
            _ = renew.tick() => worker.renew().await,
            _ = take.tick() => worker.balance().await,
        }
        worker.reap().await;
    }
    worker.stop().await;
}

struct Worker<S, P> {
    shared: Arc<Shared<S, P>>,
    held: HashMap<String, Held>,
    /// Last counter and checkpoint seen per lease, and when either last moved, on our own clock.
    seen: HashMap<String, (u64, Checkpoint, Instant)>,
    /// Shards in the latest listing.
    listed: HashSet<String>,
    /// Shards whose lease this worker has made sure exists (a conditional put each would be a
    /// billed write at every discovery).
    ensured: HashSet<String>,
}

impl<S: StreamShards + Clone, P: BatchProcessor> Worker<S, P> {
    fn me(&self) -> &str {
        &self.shared.config.worker_id
    }

    async fn discover(&mut self) {
        let shards = match self.shared.stream.shards().await {
            Ok(s) => s,
            Err(e) => return tracing::warn!(error = %e, "shard discovery failed"),
        };
        self.listed = shards.iter().map(|s| s.id.clone()).collect();
        for s in shards {
            if self.ensured.contains(&s.id) {
                continue;
            }
            match self.shared.leases.ensure(&s.id, s.parent.as_deref()).await {
                Ok(_) => {
                    self.ensured.insert(s.id.clone());
                }
                Err(e) => tracing::warn!(shard = %s.id, error = %e, "could not create lease"),
            }
        }
        // Forget shards no longer listed (trimmed away), so the set stays small.
        let listed = &self.listed;
        self.ensured.retain(|s| listed.contains(s));
    }

    async fn renew(&mut self) {
        let me = self.me().to_owned();
        let mut lost = Vec::new();
        let window = self.shared.config.renew_every;
        let stall = self.shared.config.stall;
        let stuck: Vec<String> =
            self.held.iter().filter(|(_, h)| !h.alive.within(stall)).map(|(s, _)| s.clone()).collect();
        for shard in stuck {
            // As if this reader had crashed: nothing more is checkpointed, and the lease lapses
            // (or is retaken here, "ours on paper but not running"), read again from its checkpoint.
            tracing::error!(shard = %shard, stall_s = stall.as_secs(), "a stream reader made no progress; aborting it and letting its lease go");
            metrics::counter!("stream_readers_stuck_total", "group" => self.shared.config.group.clone()).increment(1);
            if let Some(h) = self.held.remove(&shard) {
                h.task.abort();
            }
        }
        for (shard, h) in &mut self.held {
            if h.beat.within(window) {
                // Its checkpoint moved within the interval: that write was the heartbeat.
                metrics::counter!("stream_lease_renewals_skipped_total", "group" => self.shared.config.group.clone())
                    .increment(1);
                continue;
            }
            match self.shared.leases.renew(&h.lease, &me).await {
                Ok(l) => h.lease = l,
                // An ambiguous failure (the write applied, the answer lost, the retry refused)
                // looks like a lost lease: check who owns it before giving it up.
                Err(LeaseError::Lost(_)) => match self.shared.leases.get(shard).await {
                    Ok(Some(l)) if l.owner.as_deref() == Some(me.as_str()) => h.lease = l,
                    _ => lost.push(shard.clone()),
                },
                Err(e) => tracing::warn!(shard, error = %e, "lease renewal failed; will retry"),
            }
        }
        for shard in lost {
            // Stop at once: the reader's next commit would fail its condition anyway.
            tracing::warn!(shard = %shard, "lease lost; stopping the reader");
            if let Some(h) = self.held.remove(&shard) {
                h.cancel.cancel();
            }
        }
    }

    async fn balance(&mut self) {
        let leases = match self.shared.leases.list().await {
            Ok(l) => l,
            Err(e) => return tracing::warn!(error = %e, "could not list leases"),
        };
        // A lease deleted by an operator is made again at the next discovery.
        self.ensured.retain(|s| leases.iter().any(|l| &l.shard == s));
        let now = Instant::now();
        for l in &leases {
            let e = self.seen.entry(l.shard.clone()).or_insert((l.counter, l.checkpoint.clone(), now));
            if e.0 != l.counter || e.1 != l.checkpoint {
                *e = (l.counter, l.checkpoint.clone(), now);
            }
        }
        let by_shard: HashMap<&str, &Lease> = leases.iter().map(|l| (l.shard.as_str(), l)).collect();
        let parent_done = |p: &Option<String>| match p {
            None => true,
            Some(p) => {
                by_shard.get(p.as_str()).map_or(!self.listed.contains(p), |l| l.checkpoint == Checkpoint::ShardEnd)
            }
        };
        let eligible: Vec<&Lease> =
            leases.iter().filter(|l| l.checkpoint != Checkpoint::ShardEnd && parent_done(&l.parent)).collect();
        let failover = self.shared.config.failover;
        let me = self.me().to_owned();
        let held = &self.held;
        let expired = |l: &Lease| match &l.owner {
            None => true,
            // Ours on paper but not running here (e.g. a take whose answer was lost): free to retake.
            Some(o) if *o == me => !held.contains_key(&l.shard),
            Some(_) => self.seen.get(&l.shard).is_some_and(|(_, _, t)| now.duration_since(*t) >= failover),
        };
        let mut owners: HashMap<String, Vec<&Lease>> = HashMap::new();
        for l in eligible.iter().filter(|l| !expired(l)) {
            if let Some(o) = &l.owner {
                owners.entry(o.clone()).or_default().push(l);
            }
        }
        owners.entry(me.clone()).or_default();
        let target = eligible.len().div_ceil(owners.len().max(1));
        let mut mine = self.held.len();
        let free: Vec<Lease> =
            eligible.iter().filter(|l| expired(l) && !self.held.contains_key(&l.shard)).map(|l| (*l).clone()).collect();
        for l in free {
            if mine >= target {
                break;
            }
            if self.acquire(&l).await {
                mine += 1;
            }
        }
        let mut steals = 0;
        while mine < target && steals < self.shared.config.max_steals {
            let victim = owners
                .iter()
                .filter(|(o, ls)| **o != me && ls.len() > target)
                .max_by_key(|(_, ls)| ls.len())
                .and_then(|(_, ls)| ls.first().map(|l| (*l).clone()));
            let Some(l) = victim else { break };
            tracing::info!(shard = %l.shard, from = ?l.owner, "stealing a lease to balance load");
            steals += 1;
            if self.acquire(&l).await {
                mine += 1;
            }
            if let Some(ls) = l.owner.as_ref().and_then(|o| owners.get_mut(o)) {
                ls.retain(|x| x.shard != l.shard);
            }
        }
    }

    async fn acquire(&mut self, l: &Lease) -> bool {
        let me = self.me().to_owned();
        let taken = match self.shared.leases.take(l, &me).await {
            // As with renewals, a refused retry of a take that did apply still leaves it ours.
            Err(LeaseError::Lost(shard)) => match self.shared.leases.get(&shard).await {
                Ok(Some(now)) if now.owner.as_deref() == Some(me.as_str()) => Ok(now),
                _ => Err(LeaseError::Lost(shard)),
            },
            other => other,
        };
        match taken {
            Ok(lease) => {
                tracing::info!(shard = %lease.shard, checkpoint = %lease.checkpoint.encode(), "lease taken");
                let cancel = CancellationToken::new();
                let beat = Arc::new(Heartbeat::new());
                let alive = Arc::new(Heartbeat::new());
                alive.beat();
                // A lease that had an owner may have had records handled past its checkpoint
                // (a deferred checkpoint that never landed); a free one was released after its
                // owner wrote what it had deferred, or is new.
                let inherited = l.owner.is_some();
                let task = tokio::spawn(read_shard(
                    self.shared.clone(),
                    lease.clone(),
                    inherited,
                    cancel.clone(),
                    beat.clone(),
                    alive.clone(),
                ));
                self.held.insert(lease.shard.clone(), Held { lease, cancel, task, beat, alive });
                true
            }
            Err(e) => {
                tracing::debug!(shard = %l.shard, error = %e, "lease not taken");
                false
            }
        }
    }

    /// Forgets readers that ended: finished shards stay checkpointed at SHARD_END.
    async fn reap(&mut self) {
        let ended: Vec<String> =
            self.held.iter().filter(|(_, h)| h.task.is_finished()).map(|(s, _)| s.clone()).collect();
        for shard in ended {
            if let Some(h) = self.held.remove(&shard) {
                let end = h.task.await.unwrap_or(ReaderEnd::Stopped);
                tracing::info!(shard = %shard, ?end, "reader ended");
                if end == ReaderEnd::Stopped {
                    let _ = self.shared.leases.release(&shard, self.me()).await;
                }
            }
        }
    }

    async fn stop(mut self) {
        for h in self.held.values() {
            h.cancel.cancel();
        }
        let me = self.me().to_owned();
        for (shard, h) in self.held.drain() {
            let end = h.task.await.unwrap_or(ReaderEnd::Stopped);
            if end != ReaderEnd::Lost {
                if let Err(e) = self.shared.leases.release(&shard, &me).await {
                    tracing::warn!(shard = %shard, error = %e, "could not release lease");
                }
            }
        }
        tracing::info!(group = %self.shared.config.group, "stream consumer stopped; leases released");
    }
}

fn position(c: &Checkpoint) -> Position {
    match c {
        Checkpoint::At(seq) => Position::After(seq.clone()),
        _ => Position::TrimHorizon,
    }
}

/// Where a reader resumes: after the last record it handled, which is the deferred checkpoint
/// when there is one.
fn from_handled(committed: &Checkpoint, deferred: &Option<String>) -> Checkpoint {
    deferred.clone().map_or_else(|| committed.clone(), Checkpoint::At)
}

async fn pause(cancel: &CancellationToken, d: Duration) {
    tokio::select! {
        _ = tokio::time::sleep(d) => {}
        _ = cancel.cancelled() => {}
    }
}

async fn read_shard<S: StreamShards, P: BatchProcessor>(
    shared: Arc<Shared<S, P>>,
    lease: Lease,
    inherited: bool,
    cancel: CancellationToken,
    beat: Arc<Heartbeat>,
    alive: Arc<Heartbeat>,
) -> ReaderEnd {
    let c = &shared.config;
    let mut committer = Committer {
        leases: &shared.leases,
        shard: &lease.shard,
        owner: &c.worker_id,
        checkpoint: lease.checkpoint.clone(),
        commits: 0,
        reading_since_s: inherited.then(|| crate::clock::now_ms() as i64 / 1000),
    };
    let shard = lease.shard.as_str();
    let mut iterator: Option<String> = None;
    let mut idle = c.idle_min;
    let retry_pause = Duration::from_secs(1);
    // Records read but not yet handed to the processor (see `ConsumerConfig::linger`), and when
    // the last batch was handed over.
    let mut gathered: Vec<Change> = Vec::new();
    let mut last_handed: Option<tokio::time::Instant> = None;
    // A handled record whose checkpoint is deferred (`ConsumerConfig::checkpoint_every`), and
    // when the checkpoint last moved.
    let mut deferred: Option<String> = None;
    let mut last_commit = tokio::time::Instant::now();
    // The stream-lag log line (a CloudWatch metric), at most one per reader every LAG_LOG_EVERY.
    let mut last_lag_log: Option<tokio::time::Instant> = None;
    loop {
        alive.beat();
        if cancel.is_cancelled() {
            if let Some(seq) = deferred.take() {
                if let Err(e) = committer.commit(Checkpoint::At(seq), Vec::new()).await {
                    // Not released, then: the next owner takes it over as inherited and
                    // rechecks what this reader handled past the checkpoint.
                    tracing::warn!(shard, error = %e, "could not write the deferred checkpoint on stopping");
                    return ReaderEnd::Lost;
                }
            }
            return ReaderEnd::Stopped;
        }
        let it = match iterator.take() {
            Some(it) => it,
            // Always from the last handled record (or the shard's start), never LATEST: a
            // deferred checkpoint is ahead of the committed one.
            None => {
                match shared.stream.iterator(shard, &position(&from_handled(committer.checkpoint(), &deferred))).await {
                    Ok(it) => it,
                    Err(ShardError::Trimmed) => {
                        shared.alarms.trimmed(&c.group, shard, committer.checkpoint()).await;
                        match shared.stream.iterator(shard, &Position::TrimHorizon).await {
                            Ok(it) => it,
                            Err(_) => {
                                pause(&cancel, retry_pause).await;
                                continue;
                            }
                        }
                    }
                    Err(e) => {
                        tracing::warn!(shard, error = %e, "could not get a shard iterator");
                        pause(&cancel, retry_pause).await;
                        continue;
                    }
                }
            }
        };
        let limit = (c.batch_size.max(1) as usize).saturating_sub(gathered.len()).max(1);
        let page = match shared.stream.records(&it, limit as i32).await {
            Ok(p) => p,
            Err(ShardError::ExpiredIterator) => {
                // A fresh iterator starts at the checkpoint: what was gathered is read again.
                gathered.clear();
                continue;
            }
            Err(ShardError::Trimmed) => {
                gathered.clear();
                shared.alarms.trimmed(&c.group, shard, committer.checkpoint()).await;
                match shared.stream.iterator(shard, &Position::TrimHorizon).await {
                    Ok(it) => iterator = Some(it),
                    Err(_) => pause(&cancel, retry_pause).await,
                }
                continue;
            }
            Err(e) => {
                tracing::warn!(shard, error = %e, "GetRecords failed");
                iterator = Some(it);
                pause(&cancel, retry_pause).await;
                continue;
            }
        };
        let read = page.records.len();
        tracing::trace!(shard, read, gathered = gathered.len(), end = page.next.is_none(), "records read");
        if read > 0 {
            metrics::counter!("stream_records_total", "group" => c.group.clone()).increment(read as u64);
            gathered.extend(page.records);
        }
        let since_last = last_handed.map(|t| t.elapsed());
        let due = c.linger.is_zero()
            || gathered.len() >= c.batch_size.max(1) as usize
            || page.next.is_none()
            || since_last.is_none_or(|d| d >= c.linger);
        if let (Some(last), true) = (gathered.last().map(|r| r.seq.clone()), due) {
            let commits = committer.commits;
            tracing::debug!(shard, records = gathered.len(), first = %gathered[0].seq, %last, "handing a batch over");
            let handled = match shared.processor.process(&gathered, &mut committer).await {
                Ok(()) if *committer.checkpoint() == Checkpoint::At(last.clone()) => Ok(()),
                Ok(()) if last_commit.elapsed() < c.checkpoint_every && page.next.is_some() => {
                    deferred = Some(last);
                    Ok(())
                }
                Ok(()) => committer.commit(Checkpoint::At(last), Vec::new()).await.map_err(ProcessError::from),
                Err(e) => Err(e),
            };
            let committed = committer.commits != commits;
            tracing::debug!(shard, ok = handled.is_ok(), committed, deferred = deferred.is_some(), "batch handled");
            if committed {
                deferred = None;
                last_commit = tokio::time::Instant::now();
            }
            let newest_created = gathered.last().and_then(|r| r.created_s);
            let handed = std::mem::take(&mut gathered).len();
            match handled {
                Ok(()) => {
                    if last_lag_log.is_none_or(|t| t.elapsed() >= LAG_LOG_EVERY) {
                        if let Some(lag) = crate::telemetry::log_metric::lag_of(newest_created) {
                            crate::telemetry::log_metric::stream_lag(&c.group, lag);
                            last_lag_log = Some(tokio::time::Instant::now());
                        }
                    }
                    if committed {
                        beat.beat();
                    }
                    idle = c.idle_min;
                    last_handed = Some(tokio::time::Instant::now());
                    if !c.linger.is_zero() && handed < c.batch_size.max(1) as usize && page.next.is_some() {
                        pause(&cancel, c.read_every.min(c.linger)).await;
                    }
                }
                Err(ProcessError::LeaseLost) => {
                    tracing::warn!(shard, "lease lost while committing; stopping without checkpointing");
                    return ReaderEnd::Lost;
                }
                Err(ProcessError::Failed(e)) => {
                    // Re-read from the checkpoint: whatever was not committed is handled again.
                    tracing::error!(shard, error = %e, "batch failed; retrying from the checkpoint");
                    deferred = None;
                    pause(&cancel, retry_pause).await;
                    continue;
                }
            }
        } else if !gathered.is_empty() {
            // Gathering: read again within the linger, never past it.
            let left = c.linger.saturating_sub(since_last.unwrap_or_default());
            pause(&cancel, c.read_every.min(left)).await;
        } else if page.next.is_some() && read == 0 {
            // Quiet: a deferred checkpoint is written now (once its time has passed).
            if let Some(seq) = deferred.take_if(|_| last_commit.elapsed() >= c.checkpoint_every) {
                match committer.commit(Checkpoint::At(seq.clone()), Vec::new()).await {
                    Ok(()) => {
                        last_commit = tokio::time::Instant::now();
                        beat.beat();
                    }
                    Err(CommitError::LeaseLost(_)) => return ReaderEnd::Lost,
                    Err(e) => {
                        tracing::warn!(shard, error = %e, "could not write a deferred checkpoint; retrying");
                        deferred = Some(seq);
                    }
                }
            }
            pause(&cancel, idle).await;
            idle = (idle * 2).min(c.idle_max);
        }
        match page.next {
            Some(next) => iterator = Some(next),
            None => match committer.commit(Checkpoint::ShardEnd, Vec::new()).await {
                Ok(()) => return ReaderEnd::ShardEnd,
                Err(CommitError::LeaseLost(_)) => return ReaderEnd::Lost,
                Err(e) => {
                    tracing::warn!(shard, error = %e, "could not checkpoint SHARD_END; retrying");
                    pause(&cancel, retry_pause).await;
                }
            },
        }
    }
}

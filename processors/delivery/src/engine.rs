//! The delivery engine: what the fan-out and the queue workers share, and the handling of one
//! delivery message, in typed phases, each inside the message's `tracing` span:
//!
//! 1. **load**: the delivery record, if the attempt needs it. A first attempt reads it
//!    eventually consistent (half a read unit) only to drop a duplicate message; later attempts
//!    read it consistently.
//! 2. **admit**: the destination, the submission (carried in the message when it fits), the
//!    circuit breaker, and for attempts after the first a claim, so one worker sends each attempt.
//! 3. **send**: sign and send, within the destination's concurrency slots.
//! 4. **decide**: a pure function of the outcome, the policy and the round ([`decide`]).
//! 5. **queue** the next attempt's message, if there is one, then **record**: a first attempt
//!    writes the record once, with the attempt inside it (one write unit); later attempts write
//!    their own item, then the record, conditioned on the claim.
//! 6. **after**: destination health and bus events.
//!
//! The message is deleted only after 5. A crash anywhere before re-delivers the message and the
//! attempt is sent again with the same `webhook-id` (at least once). A next-attempt message that
//! arrives before its predecessor is recorded waits (`early`), so the history has no gaps.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use formbridge_shared::attrs::Item;
use formbridge_shared::clock::now_ms;
use formbridge_shared::delivery::health::{Gate, Health, HealthStore, Transition};
use formbridge_shared::delivery::message::VERSION;
use formbridge_shared::delivery::model::MAX_SUCCESS_RESPONSE_BYTES;
use formbridge_shared::delivery::{
    Attempt, DeliveryMessage, DeliveryRecord, FailureReason, RecordError, Records, Status, Trigger,
};
use formbridge_shared::destination::{DeliveryPolicy, Destination};
use formbridge_shared::keys;
use formbridge_shared::queue::{Outgoing, Queue, QueueError};
use formbridge_shared::secrets::Keyring;
use formbridge_shared::store::DataStore;
use formbridge_shared::submission::StoredSubmission;
use formbridge_shared::{usage, DestinationId, FormId, TenantId};
use rand::Rng;
use serde_json::json;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::Instrument;

use crate::events::{self, AttemptSent, Bus, DeferReason, Deferred, DuplicateSend, InternalEvent, StaleMessage};
use crate::schedule::{honour_retry_after, Schedule};
use crate::send::{self, Outcome, Sender, Verdict};

/// What delivery is metered as in [`formbridge_shared::usage`].
pub const COMPONENT: &str = "delivery";

/// How long a next-attempt message waits when its predecessor is not recorded yet.
const EARLY_WAIT: Duration = Duration::from_secs(15);

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Record(#[from] RecordError),
    #[error("DynamoDB: {0}")]
    Dynamo(#[from] aws_sdk_dynamodb::Error),
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error("destination {0}: {1}")]
    Destination(DestinationId, String),
    #[error("stored submission is unreadable: {0}")]
    Submission(String),
    #[error("the submission is not readable yet (it is not expired); trying again later")]
    SubmissionMissing,
    #[error("cannot list the tenant's destinations: {0}")]
    Destinations(String),
    #[error("cannot read the destination's health: {0}")]
    Health(String),
}

/// Settings the engine needs (a subset of `Config`).
#[derive(Debug, Clone)]
pub struct EngineSettings {
    pub breaker_threshold: u32,
    pub breaker_cooldown: Duration,
    pub breaker_max_cooldown: Duration,
    pub retry_after_cap: Duration,
    pub busy_defer: Duration,
    pub destination_cache: Duration,
}

impl EngineSettings {
    pub fn from_config(c: &crate::Config) -> Self {
        Self {
            breaker_threshold: c.breaker_threshold,
            breaker_cooldown: Duration::from_secs(c.breaker_cooldown_s.into()),
            breaker_max_cooldown: Duration::from_secs(c.breaker_max_cooldown_s.into()),
            retry_after_cap: Duration::from_secs(c.retry_after_cap_s.into()),
            busy_defer: Duration::from_millis(c.busy_defer_ms),
            destination_cache: Duration::from_millis(c.destination_cache_ms),
        }
    }

    fn cooldown(&self, trips: u32) -> Duration {
        self.breaker_cooldown.saturating_mul(1u32 << trips.min(20)).min(self.breaker_max_cooldown)
    }
}

type StampKey = (TenantId, DestinationId);

/// The health a success is judged against: `read`, with the last success this process stamped
/// (or is stamping) when that is newer. When `read` shows a healthy destination whose stamp is
/// stale, the call claims the stamp, so the deliveries of a pack that succeed together write it
/// once instead of once each.
fn stamp_success(stamps: &Mutex<HashMap<StampKey, u64>>, key: StampKey, now_ms: u64, read: &Health) -> Health {
    use formbridge_shared::delivery::health::{BreakerState, STAMP_FRESH_MS};
    let mut stamps = stamps.lock().unwrap_or_else(|e| e.into_inner());
    let newest = read.last_success_ms.max(stamps.get(&key).copied());
    let healthy = read.state == BreakerState::Closed && read.consecutive_failures == 0;
    if healthy && newest.is_none_or(|t| now_ms.saturating_sub(t) >= STAMP_FRESH_MS) {
        stamps.insert(key, now_ms);
    }
    Health { last_success_ms: newest, ..read.clone() }
}

/// A stored submission's receive time, in ms since the epoch.
pub fn received_ms(item: &Item) -> Option<u64> {
    formbridge_shared::submission::SubmissionFields::read(item).ok().map(|f| f.received_ms)
}

/// A tenant's destinations as read at `fetched_ms`.
#[derive(Debug)]
pub struct DestinationList {
    /// The list is at least as new as this moment (a strongly consistent read began after it).
    pub fetched_ms: u64,
    /// The tenant's destination-set version read before the list, when it was.
    pub version: Option<u64>,
    pub list: Vec<Destination>,
}

pub struct Engine {
    pub store: DataStore,
    pub records: Records,
    pub queue: Queue,
    pub bus: Bus,
    pub keyring: Keyring,
    pub sender: Sender,
    pub health: HealthStore,
    pub settings: EngineSettings,
    destinations: moka::future::Cache<TenantId, Arc<DestinationList>>,
    /// One revalidation of a tenant's list at a time: the deliveries of a pack that find it
    /// stale together wait for one read instead of each making its own.
    revalidating: moka::future::Cache<TenantId, Arc<tokio::sync::Mutex<()>>>,
    health_cache: moka::future::Cache<(TenantId, DestinationId), Health>,
    /// When this process last stamped (or began stamping) a healthy destination's last success:
    /// the deliveries of a pack that succeed together write the stamp once, not once each.
    success_stamps: Mutex<HashMap<(TenantId, DestinationId), u64>>,
    slots: Mutex<HashMap<DestinationId, Arc<Semaphore>>>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("table", &self.store.table()).field("queue", &self.queue.name()).finish()
    }
}

fn jitter(d: Duration) -> Duration {
    d.mul_f64(rand::rng().random_range(1.0..=1.2))
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Phase 1's answer.
enum Loaded {
    /// Go on; the record when there is one (none before a first attempt ends).
    Current(Option<Box<DeliveryRecord>>),
    /// The record has passed this attempt, or it is final: drop the message.
    Stale,
    /// The previous attempt is not recorded yet.
    Early,
}

/// Phase 2's answer.
enum Admitted {
    Send(Box<Ready>),
    /// Settled without a send (failed, or deferred): the message may go.
    Settled,
}

/// Everything a send needs.
struct Ready {
    dest: Destination,
    sub: StoredSubmission,
    /// The record as claimed (attempts after the first), or as read.
    record: Option<DeliveryRecord>,
    probing: bool,
    health: Health,
}

/// What one send came to.
struct Sent {
    outcome: Outcome,
    verdict: Verdict,
    started_ms: u64,
    done_ms: u64,
}

/// Phase 4's answer: where the delivery goes next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub status: Status,
    pub next_ms: u64,
    pub reason: Option<FailureReason>,
}

/// The decision after an attempt, as a pure function: the verdict on the outcome, the
/// destination's policy, which retry of the current round this was, and when it ended.
pub fn decide(
    verdict: Verdict,
    retry_after: Option<Duration>,
    policy: &DeliveryPolicy,
    retry_in_round: usize,
    retry_after_cap: Duration,
    done_ms: u64,
) -> Decision {
    let fail = |reason| Decision { status: Status::Failed, next_ms: done_ms, reason: Some(reason) };
    let (list, exhausted) = match verdict {
        Verdict::Succeeded => return Decision { status: Status::Succeeded, next_ms: done_ms, reason: None },
        Verdict::Gone => return fail(FailureReason::Gone),
        Verdict::Fail(r) => return fail(r),
        Verdict::RetryTransient => (&policy.retry_schedule, FailureReason::Exhausted),
        Verdict::RetryClientError => (&policy.client_error_schedule, FailureReason::ClientError),
    };
    match Schedule::new(list).delay(retry_in_round) {
        Some(d) => {
            let d = honour_retry_after(d, retry_after, retry_after_cap);
            Decision { status: Status::Retrying, next_ms: done_ms + ms(d), reason: None }
        }
        None => fail(exhausted),
    }
}

fn is_first_send(m: &DeliveryMessage) -> bool {
    m.attempt == 1 && m.trigger == Trigger::Scheduled
}

impl Engine {
    pub fn new(
        store: DataStore,
        queue: Queue,
        bus: Bus,
        keyring: Keyring,
        sender: Sender,
        settings: EngineSettings,
    ) -> Self {
        let health = HealthStore { client: store.client().clone(), table: store.table().to_owned() };
        Self {
            // Kept past their freshness: a stale list is revalidated by its destination-set
            // version (one small read) and listed again only when the version moved.
            destinations: moka::future::Cache::builder()
                .max_capacity(100_000)
                .time_to_idle(Duration::from_secs(600).max(settings.destination_cache))
                .build(),
            revalidating: moka::future::Cache::builder()
                .max_capacity(100_000)
                .time_to_idle(Duration::from_secs(60))
                .build(),
            health_cache: moka::future::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(Duration::from_secs(5))
                .build(),
            success_stamps: Mutex::new(HashMap::new()),
            slots: Mutex::new(HashMap::new()),
            records: Records::new(store.clone(), COMPONENT),
            store,
            queue,
            bus,
            keyring,
            sender,
            health,
            settings,
        }
    }

    /// A tenant's destinations, as read no earlier than `fresh_since_ms` (a submission's
    /// receive time: a destination created before it must be seen) and no older than
    /// `DELIVERY_DESTINATION_CACHE_MS`, else from the cache. A list too old is revalidated by
    /// its destination-set version ([`Self::refresh_destinations`]): a Query only when the
    /// tenant's destinations changed.
    pub async fn destinations(
        &self,
        tenant: &TenantId,
        fresh_since_ms: u64,
    ) -> Result<Arc<DestinationList>, EngineError> {
        let max_age = u64::try_from(self.settings.destination_cache.as_millis()).unwrap_or(u64::MAX);
        let need = fresh_since_ms.max(now_ms().saturating_sub(max_age));
        let fresh = |c: &Option<Arc<DestinationList>>| c.as_ref().filter(|c| c.fetched_ms >= need).cloned();
        if let Some(cached) = fresh(&self.destinations.get(tenant).await) {
            return Ok(cached);
        }
        let lock = self.revalidating.get_with(tenant.clone(), async { Arc::default() }).await;
        let _one_at_a_time = lock.lock().await;
        // Another delivery may have revalidated it while this one waited.
        if let Some(cached) = fresh(&self.destinations.get(tenant).await) {
            return Ok(cached);
        }
        self.refresh_destinations(&HashMap::from([(tenant.clone(), need)])).await?;
        self.destinations
            .get(tenant)
            .await
            .ok_or_else(|| EngineError::Destinations("the refreshed list was evicted at once".into()))
    }

    /// Makes every cached list fresh for submissions received up to the given times (tenant ->
    /// newest receive time in a stream batch) with one batched read of the tenants'
    /// destination-set versions: a list whose version has not moved is current as of that read;
    /// only tenants whose destinations changed are listed again. One request per stream batch
    /// instead of one Query per tenant.
    pub async fn refresh_destinations(&self, wanted: &HashMap<TenantId, u64>) -> Result<(), EngineError> {
        let mut stale = Vec::new();
        for (tenant, received_ms) in wanted {
            match self.destinations.get(tenant).await {
                Some(c) if c.fetched_ms >= *received_ms => {}
                _ => stale.push(tenant.clone()),
            }
        }
        if stale.is_empty() {
            return Ok(());
        }
        let fetched_ms = now_ms();
        let versions =
            self.store.destination_set_versions(&stale).await.map_err(|e| EngineError::Destinations(e.to_string()))?;
        // One strongly consistent read of a small item per tenant, in the delivery's budget.
        for _ in &stale {
            usage::read(COMPONENT, 0, true);
        }
        for tenant in stale {
            let version = versions.get(&tenant).copied().unwrap_or(0);
            let list = match self.destinations.get(&tenant).await {
                Some(c) if c.version == Some(version) => c.list.clone(),
                _ => {
                    let list = self
                        .store
                        .list_destinations(&tenant)
                        .await
                        .map_err(|e| EngineError::Destinations(e.to_string()))?;
                    usage::read(COMPONENT, 0, true);
                    list
                }
            };
            let fresh = Arc::new(DestinationList { fetched_ms, version: Some(version), list });
            self.destinations.insert(tenant, fresh).await;
        }
        Ok(())
    }

    async fn destination(&self, m: &DeliveryMessage) -> Result<Option<Destination>, EngineError> {
        let find = |l: &DestinationList| l.list.iter().find(|d| d.id == m.destination).cloned();
        if let Some(d) = find(&*self.destinations(&m.tenant, 0).await?) {
            return Ok(Some(d));
        }
        // Not in the cached list: it may be newer than the cache. Look once more, fresh.
        Ok(find(&*self.destinations(&m.tenant, now_ms()).await?))
    }

    async fn health_of(&self, tenant: &TenantId, dest: &DestinationId) -> Result<Health, EngineError> {
        // One read per destination when the cached health expires, however many deliveries of
        // a pack ask at once (the cache coalesces them).
        let key = (tenant.clone(), *dest);
        self.health_cache
            .try_get_with(key, async {
                let h = self.health.get(tenant, dest).await?;
                usage::read(COMPONENT, 0, false);
                Ok::<_, aws_sdk_dynamodb::Error>(h)
            })
            .await
            .map_err(|e| EngineError::Health(e.to_string()))
    }

    fn slot(&self, d: &Destination) -> Arc<Semaphore> {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        slots.entry(d.id).or_insert_with(|| Arc::new(Semaphore::new(d.policy.max_in_flight as usize))).clone()
    }

    /// Puts the message back on the queue, due at `due_ms` (the caller then deletes the original:
    /// a fresh message, so deferrals never count toward the dead-letter limit).
    async fn defer(&self, m: &DeliveryMessage, due_ms: u64, why: DeferReason) -> Result<(), EngineError> {
        let now = now_ms();
        let later = DeliveryMessage { due_ms, ..m.clone() };
        self.queue.send_all(&[Outgoing::new(later.body()).due(due_ms, now)]).await?;
        Deferred { why, wait: Duration::from_millis(due_ms.saturating_sub(now)) }.emit();
        Ok(())
    }

    /// Handles one message. `Ok` means it may be deleted; `Err` leaves it for another try.
    /// `receive_count` is how many times SQS has handed this message out.
    pub async fn handle(&self, m: &DeliveryMessage, receive_count: u32) -> Result<(), EngineError> {
        let span = tracing::info_span!(
            "delivery",
            tenant = %m.tenant,
            submission = %m.submission,
            destination = %m.destination,
            attempt = m.attempt,
        );
        self.handle_in_span(m, receive_count).instrument(span).await
    }

    async fn handle_in_span(&self, m: &DeliveryMessage, receive_count: u32) -> Result<(), EngineError> {
        let now = now_ms();
        if m.due_ms > now + 1_000 {
            return self.defer(m, m.due_ms, DeferReason::Chained).await;
        }
        let record = match self.load(m, receive_count).instrument(tracing::debug_span!("load")).await? {
            Loaded::Current(r) => r.map(|r| *r),
            Loaded::Stale => {
                StaleMessage.emit();
                return Ok(());
            }
            Loaded::Early => return self.defer(m, now + ms(EARLY_WAIT), DeferReason::Early).await,
        };
        let ready = match self.admit(m, record, now).instrument(tracing::debug_span!("admit")).await? {
            Admitted::Send(r) => *r,
            Admitted::Settled => return Ok(()),
        };
        let Some(_permit) = self.acquire_slot(&ready.dest).await else {
            // Its slots are held by slow attempts: come back when one of them must be over.
            let wait = self.settings.busy_defer.max(Duration::from_millis(ready.dest.timeout_ms));
            return self.defer(m, now_ms() + ms(jitter(wait)), DeferReason::Busy).await;
        };
        let sent = self.send(m, &ready).instrument(tracing::debug_span!("send")).await?;
        let in_round = usize::from(m.attempt.saturating_sub(ready.record.as_ref().map_or(0, |r| r.round_start)));
        let decision = decide(
            sent.verdict,
            sent.outcome.retry_after,
            &ready.dest.policy,
            in_round,
            self.settings.retry_after_cap,
            sent.done_ms,
        );
        if decision.status == Status::Retrying {
            let next = m.next(m.attempt + 1, decision.next_ms, m.trigger);
            self.queue.send_all(&[Outgoing::new(next.body()).due(decision.next_ms, now_ms())]).await?;
        }
        let recorded = self.record(m, &ready, &sent, &decision).instrument(tracing::debug_span!("record")).await?;
        if let Some(after) = recorded {
            self.after(m, &ready, &sent, &after).instrument(tracing::debug_span!("after")).await;
        }
        Ok(())
    }

    /// Phase 1: the record, and whether this message is still wanted.
    ///
    /// A first attempt has no record unless its message is a duplicate. Duplicates come from a
    /// redelivery (SQS hands the message out again: `receive_count` > 1) or from a fan-out that
    /// repeats a batch (it marks those `recheck`); only then is the record read, eventually
    /// consistent, at half a read unit. A fresh first attempt reads nothing.
    async fn load(&self, m: &DeliveryMessage, receive_count: u32) -> Result<Loaded, EngineError> {
        if is_first_send(m) && !m.recheck && receive_count <= 1 {
            return Ok(Loaded::Current(None));
        }
        let key = keys::delivery(&m.tenant, m.shard, &m.submission, &m.destination);
        let record = self.records.get(&key, !is_first_send(m)).await?;
        Ok(match record {
            None if m.attempt == 1 => Loaded::Current(None),
            None => Loaded::Early,
            Some(r) if r.status.is_final() || r.attempts >= m.attempt => Loaded::Stale,
            Some(r) if r.attempts + 1 < m.attempt => Loaded::Early,
            Some(r) => Loaded::Current(Some(Box::new(r))),
        })
    }

    /// Phase 2: destination, submission, breaker and claim.
    async fn admit(
        &self,
        m: &DeliveryMessage,
        record: Option<DeliveryRecord>,
        now: u64,
    ) -> Result<Admitted, EngineError> {
        let Some(dest) = self.destination(m).await? else {
            self.fail_unsent(m, record.as_ref(), FailureReason::DestinationDeleted).await?;
            return Ok(Admitted::Settled);
        };
        if !dest.enabled {
            self.fail_unsent(m, record.as_ref(), FailureReason::DestinationDisabled).await?;
            return Ok(Admitted::Settled);
        }
        let expired = m.expires_at.is_some_and(|e| i64::try_from(now / 1000).unwrap_or(i64::MAX) >= e);
        if expired {
            self.fail_unsent(m, record.as_ref(), FailureReason::SubmissionExpired).await?;
            return Ok(Admitted::Settled);
        }
        let Some(sub) = self.submission(m).await? else {
            self.fail_unsent(m, record.as_ref(), FailureReason::SubmissionExpired).await?;
            return Ok(Admitted::Settled);
        };
        let health = self.health_of(&m.tenant, &dest.id).await?;
        let probe_for = Duration::from_millis(dest.timeout_ms) + Duration::from_secs(30);
        let probing = match self.health.gate(&m.tenant, &dest.id, &health, now, probe_for).await? {
            Gate::Wait(d) => {
                self.defer(m, now + ms(jitter(d)), DeferReason::Paused).await?;
                return Ok(Admitted::Settled);
            }
            Gate::Probe => true,
            Gate::Send => false,
        };
        let record = match record {
            // Attempts after the first are claimed, so two messages (a replay and a retry, or a
            // duplicate) never send the same attempt.
            Some(r) if !is_first_send(m) => {
                let until = now + ms(probe_for);
                match self.records.claim(&r, m.attempt, now, until).await? {
                    Some(claimed) => Some(claimed),
                    None => {
                        let held_until = r.claim.map_or(until, |(_, u)| u).max(now + 1_000);
                        self.defer(m, held_until + 1_000, DeferReason::Claimed).await?;
                        return Ok(Admitted::Settled);
                    }
                }
            }
            other => other,
        };
        Ok(Admitted::Send(Box::new(Ready { dest, sub, record, probing, health })))
    }

    /// The submission: from the message when it carries it, else one consistent read. `None`
    /// when it is gone for good (expired); an error when it should be there but is not (yet).
    async fn submission(&self, m: &DeliveryMessage) -> Result<Option<StoredSubmission>, EngineError> {
        if let Some(inline) = &m.sub {
            return inline.decode(m).map(Some).map_err(|e| EngineError::Submission(e.to_string()));
        }
        let key = keys::submission(&m.tenant, m.shard, &m.submission);
        let out = self
            .store
            .client()
            .get_item()
            .table_name(self.store.table())
            .key(keys::PK, aws_sdk_dynamodb::types::AttributeValue::S(key.pk))
            .key(keys::SK, aws_sdk_dynamodb::types::AttributeValue::S(key.sk))
            .consistent_read(true)
            .send()
            .await
            .map_err(aws_sdk_dynamodb::Error::from)?;
        usage::read(COMPONENT, out.item.as_ref().map_or(0, formbridge_shared::capacity::item_size), true);
        match out.item {
            Some(item) => {
                StoredSubmission::from_item(&item).map(Some).map_err(|e| EngineError::Submission(e.to_string()))
            }
            // Messages of version 1 carry no expiry: a missing submission there has expired.
            None if m.expires_at.is_none() => Ok(None),
            None => Err(EngineError::SubmissionMissing),
        }
    }

    /// A free slot of this destination, waiting for one at most `busy_defer`.
    async fn acquire_slot(&self, dest: &Destination) -> Option<OwnedSemaphorePermit> {
        let slot = self.slot(dest);
        if let Ok(p) = slot.clone().try_acquire_owned() {
            return Some(p);
        }
        tokio::time::timeout(self.settings.busy_defer, slot.acquire_owned()).await.ok()?.ok()
    }

    /// Phase 3: sign and send.
    async fn send(&self, m: &DeliveryMessage, r: &Ready) -> Result<Sent, EngineError> {
        let dest = &r.dest;
        let (outcome, started_ms) = send::attempt(&self.sender, dest, &self.keyring, &m.webhook_id(), &r.sub)
            .await
            .map_err(|e| EngineError::Destination(dest.id, e))?;
        let verdict = send::verdict(&outcome);
        AttemptSent { outcome: verdict_label(verdict), status: outcome.status, latency: outcome.latency }.emit();
        Ok(Sent { outcome, verdict, started_ms, done_ms: now_ms() })
    }

    /// Phase 5: record the attempt. Returns the record as written, or `None` when another
    /// worker recorded first (this send is still recorded, as an attempt item).
    async fn record(
        &self,
        m: &DeliveryMessage,
        r: &Ready,
        sent: &Sent,
        d: &Decision,
    ) -> Result<Option<DeliveryRecord>, EngineError> {
        let o = &sent.outcome;
        let succeeded = d.status == Status::Succeeded;
        let response = if succeeded {
            formbridge_shared::delivery::truncate_body(o.body.as_bytes(), MAX_SUCCESS_RESPONSE_BYTES)
        } else {
            o.body.clone()
        };
        let error_text = send::error_text(o);
        let attempt = Attempt {
            attempt: m.attempt,
            at_ms: sent.started_ms,
            status_code: o.status,
            error_class: o.error,
            error: error_text.clone(),
            latency_ms: ms(o.latency),
            response,
            trigger: m.trigger,
            sends: 1,
        };
        let before = r.record.clone().unwrap_or_else(|| self.new_record(m, &r.sub.form_id, sent.done_ms));
        let inline = m.attempt == 1 && before.first_attempt.is_none();
        let after = DeliveryRecord {
            status: d.status,
            attempts: m.attempt,
            next_attempt_ms: d.next_ms,
            updated_ms: sent.done_ms,
            last_status: Some(o.status),
            last_error: error_text,
            last_latency_ms: Some(attempt.latency_ms),
            reason: d.reason,
            claim: None,
            first_attempt: if inline { Some(attempt.clone()) } else { before.first_attempt.clone() },
            ..before.clone()
        };
        if r.record.is_none() {
            if self.records.create(&after).await? {
                return Ok(Some(after));
            }
            // A duplicate first-attempt message raced the original: both sends are recorded.
            DuplicateSend.emit();
            self.records.put_attempt(&after, &attempt).await?;
            return Ok(None);
        }
        if !inline {
            self.records.put_attempt(&before, &attempt).await?;
        }
        if self.records.replace(&before, &after).await? {
            Ok(Some(after))
        } else {
            tracing::info!("another worker recorded this attempt first");
            Ok(None)
        }
    }

    fn new_record(&self, m: &DeliveryMessage, form_id: &str, now: u64) -> DeliveryRecord {
        DeliveryRecord {
            tenant: m.tenant.clone(),
            shard: m.shard,
            submission: m.submission,
            destination: m.destination,
            status: Status::Pending,
            attempts: 0,
            round_start: 0,
            next_attempt_ms: now,
            form_id: m.form_id.clone().unwrap_or_else(|| form_id.to_owned()),
            created_ms: now,
            updated_ms: now,
            last_status: None,
            last_error: None,
            last_latency_ms: None,
            reason: None,
            claim: None,
            first_attempt: None,
            expires_at: m.expires_at.unwrap_or(0),
        }
    }

    /// Phase 6: health, breaker and bus events.
    async fn after(&self, m: &DeliveryMessage, r: &Ready, sent: &Sent, rec: &DeliveryRecord) {
        let (dest, done) = (&r.dest, sent.done_ms);
        let health = match sent.verdict {
            Verdict::RetryTransient => {
                let cooldown = |trips| self.settings.cooldown(trips);
                let threshold = self.settings.breaker_threshold;
                self.health
                    .failure(&m.tenant, &dest.id, done, threshold, cooldown, r.probing)
                    .await
                    .map(|(h, t)| (h, t.map(|t| (t, rec.last_error.clone()))))
            }
            Verdict::Succeeded | Verdict::RetryClientError => {
                let known = stamp_success(&self.success_stamps, (m.tenant.clone(), dest.id), done, &r.health);
                let out = self.health.success(&m.tenant, &dest.id, done, &known).await;
                if out.is_err() {
                    self.success_stamps.lock().unwrap_or_else(|e| e.into_inner()).remove(&(m.tenant.clone(), dest.id));
                }
                out.map(|(h, t)| (h, t.map(|t| (t, None))))
            }
            Verdict::Gone | Verdict::Fail(_) => Ok((r.health.clone(), None)),
        };
        match health {
            Ok((h, transition)) => {
                self.health_cache.insert((m.tenant.clone(), dest.id), h).await;
                if let Some((t, last_error)) = transition {
                    self.publish_transition(&m.tenant, &dest.id, t, last_error, done).await;
                }
            }
            Err(e) => tracing::warn!(error = %e, "could not update destination health"),
        }
        if sent.verdict == Verdict::Gone {
            self.disable_gone(dest, sent.outcome.status, done).await;
        }
        if rec.status == Status::Failed {
            self.failed(rec, done).await;
        }
    }

    async fn failed(&self, rec: &DeliveryRecord, at_ms: u64) {
        if let Some(reason) = rec.reason {
            events::DeliveryFailed { reason }.emit();
        }
        // Every submission reaching a disabled destination fails this way; its one
        // `DestinationDisabled` event (or the operator's own change) already said so, and a bus
        // event per submission would only flood the tenant's rules.
        if rec.reason != Some(FailureReason::DestinationDisabled) {
            self.bus.delivery_failed(rec, at_ms).await;
        }
    }

    /// Fails a delivery without sending (destination gone or disabled, submission expired, its
    /// message dead-lettered), publishing `DeliveryFailed`. Returns false when the record moved
    /// on meanwhile (then nothing changed).
    pub(crate) async fn fail_unsent(
        &self,
        m: &DeliveryMessage,
        existing: Option<&DeliveryRecord>,
        reason: FailureReason,
    ) -> Result<bool, EngineError> {
        let done = now_ms();
        let base = existing.cloned().unwrap_or_else(|| self.new_record(m, "", done));
        let why = match reason {
            FailureReason::DestinationDeleted => "the destination was deleted",
            FailureReason::DestinationDisabled => "the destination is disabled",
            FailureReason::SubmissionExpired => "the submission is no longer stored",
            FailureReason::DeadLettered => "its delivery message was dead-lettered: handling it failed repeatedly",
            _ => "the delivery could not be attempted",
        };
        let failed = DeliveryRecord {
            status: Status::Failed,
            next_attempt_ms: done,
            updated_ms: done,
            last_error: Some(why.to_owned()),
            reason: Some(reason),
            claim: None,
            ..base
        };
        let changed = self.records.fail(existing, &failed).await?;
        if changed {
            self.failed(&failed, done).await;
        }
        Ok(changed)
    }

    async fn publish_transition(
        &self,
        tenant: &TenantId,
        dest: &DestinationId,
        t: Transition,
        last_error: Option<String>,
        at: u64,
    ) {
        use formbridge_shared::clock::rfc3339_ms;
        match t {
            Transition::Paused { consecutive_failures, first_failure_ms, paused_until_ms } => {
                tracing::warn!(consecutive_failures, "destination paused");
                let detail = json!({
                    "tenant_id": tenant,
                    "destination_id": dest,
                    "consecutive_failures": consecutive_failures,
                    "first_failure_at": rfc3339_ms(first_failure_ms),
                    "paused_until": rfc3339_ms(paused_until_ms),
                    "last_error": last_error,
                });
                self.bus.publish(events::DESTINATION_PAUSED, detail).await;
            }
            Transition::Recovered { failures_before, paused_at_ms } => {
                tracing::info!("destination recovered");
                let detail = json!({
                    "tenant_id": tenant,
                    "destination_id": dest,
                    "failures_before": failures_before,
                    "paused_at": paused_at_ms.map(rfc3339_ms),
                    "recovered_at": rfc3339_ms(at),
                });
                self.bus.publish(events::DESTINATION_RECOVERED, detail).await;
            }
        }
    }

    /// 410 Gone: the receiver asked us to stop. The destination is disabled (audited) and later
    /// deliveries to it fail as `destination_disabled`, kept for replay once it is re-enabled.
    async fn disable_gone(&self, dest: &Destination, status: u16, at: u64) {
        let now = time::OffsetDateTime::now_utc();
        let r = self
            .store
            .update_destination(&dest.tenant, &dest.id, &self.keyring, now, "destination.disabled_gone", |d, _| {
                d.enabled = false
            })
            .await;
        self.destinations.invalidate(&dest.tenant).await;
        match r {
            Ok(_) => {
                tracing::warn!("destination answered 410 Gone: disabled");
                let detail = json!({
                    "tenant_id": dest.tenant,
                    "destination_id": dest.id,
                    "reason": FailureReason::Gone,
                    "last_status": status,
                    "disabled_at": formbridge_shared::clock::rfc3339_ms(at),
                });
                self.bus.publish(events::DESTINATION_DISABLED, detail).await;
            }
            Err(e) => tracing::error!(error = %e, "could not disable a destination after 410"),
        }
    }

    /// The first-attempt messages of a new submission (the stream's fan-out): one per matching
    /// destination, enabled or not (a disabled one's delivery is failed by the worker without a
    /// send, and kept for replay), each carrying the stored submission when it fits. The
    /// destination list is read fresh when the cached one is older than the submission.
    pub async fn fan_out(
        &self,
        new: &Item,
        tenant: &TenantId,
        shard: u16,
        submission: formbridge_shared::SubmissionId,
        recheck: bool,
    ) -> Result<Vec<DeliveryMessage>, EngineError> {
        let f = formbridge_shared::submission::SubmissionFields::read(new)
            .map_err(|e| EngineError::Submission(e.to_string()))?;
        let (form_id, site, received_ms, expires_at) = (f.form, f.site, f.received_ms, f.expires_at);
        let inline = formbridge_shared::delivery::message::InlineSubmission::from_item(new)
            .map_err(|e| EngineError::Submission(e.to_string()))?;
        let form = FormId::parse(form_id).ok();
        let dests = self.destinations(tenant, received_ms).await?;
        let now = now_ms();
        Ok(dests
            .list
            .iter()
            .filter(|d| form.as_ref().is_some_and(|f| d.matches(f, site)))
            .map(|d| DeliveryMessage {
                v: VERSION,
                tenant: tenant.clone(),
                shard,
                submission,
                destination: d.id,
                attempt: 1,
                due_ms: now,
                trigger: Trigger::Scheduled,
                form_id: Some(form_id.to_owned()),
                expires_at: Some(expires_at),
                sub: inline.clone(),
                recheck,
            })
            .collect())
    }
}

fn verdict_label(v: Verdict) -> &'static str {
    match v {
        Verdict::Succeeded => "succeeded",
        Verdict::Gone => "gone",
        Verdict::RetryTransient => "transient",
        Verdict::RetryClientError => "client_error",
        Verdict::Fail(_) => "failed",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> DeliveryPolicy {
        DeliveryPolicy { retry_schedule: vec![5, 300], client_error_schedule: vec![60], ..DeliveryPolicy::default() }
    }

    const CAP: Duration = Duration::from_secs(3600);

    #[test]
    fn a_pack_of_successes_stamps_a_healthy_destination_once() {
        use formbridge_shared::delivery::health::{BreakerState, STAMP_FRESH_MS};
        let stamps = Mutex::new(HashMap::new());
        let key = (TenantId::parse("t1").unwrap(), DestinationId::new());
        let stale = Health { last_success_ms: Some(1_000), ..Health::default() };
        let now = 1_000 + STAMP_FRESH_MS;
        // Fifty deliveries of one pack succeed together, each having read the same stale health:
        // the first writes the stamp, the others see it fresh and skip their writes.
        let writes = (0..50)
            .filter(|i| {
                let known = stamp_success(&stamps, key.clone(), now + i, &stale);
                known.last_success_ms.is_none_or(|t| now + i - t >= STAMP_FRESH_MS)
            })
            .count();
        assert_eq!(writes, 1);
        // A minute later the stamp is stale again: one more write.
        let later = now + STAMP_FRESH_MS;
        let known = stamp_success(&stamps, key.clone(), later, &stale);
        assert_eq!(known.last_success_ms, Some(now));
        let known = stamp_success(&stamps, key.clone(), later + 1, &stale);
        assert_eq!(known.last_success_ms, Some(later));
        // A destination with failures is never skipped: its success closes the breaker.
        let failing = Health { consecutive_failures: 2, state: BreakerState::Closed, ..stale.clone() };
        let k2 = (TenantId::parse("t2").unwrap(), DestinationId::new());
        let first = stamp_success(&stamps, k2.clone(), now, &failing);
        let second = stamp_success(&stamps, k2, now + 1, &failing);
        assert_eq!((first.consecutive_failures, second.consecutive_failures), (2, 2));
    }

    #[test]
    fn success_and_permanent_failures_end_the_delivery() {
        let d = decide(Verdict::Succeeded, None, &policy(), 1, CAP, 1_000);
        assert_eq!(d, Decision { status: Status::Succeeded, next_ms: 1_000, reason: None });
        let d = decide(Verdict::Gone, None, &policy(), 1, CAP, 1_000);
        assert_eq!((d.status, d.reason), (Status::Failed, Some(FailureReason::Gone)));
        let d = decide(Verdict::Fail(FailureReason::Redirect), None, &policy(), 1, CAP, 1_000);
        assert_eq!(d.reason, Some(FailureReason::Redirect));
    }

    #[test]
    fn transient_failures_follow_the_schedule_then_exhaust() {
        let d = decide(Verdict::RetryTransient, None, &policy(), 1, CAP, 10_000);
        assert_eq!(d.status, Status::Retrying);
        assert!((14_000..=16_000).contains(&d.next_ms), "5 s ± 20%: {}", d.next_ms);
        let d = decide(Verdict::RetryTransient, None, &policy(), 2, CAP, 10_000);
        assert!(d.next_ms >= 10_000 + 240_000);
        let d = decide(Verdict::RetryTransient, None, &policy(), 3, CAP, 10_000);
        assert_eq!((d.status, d.reason), (Status::Failed, Some(FailureReason::Exhausted)));
    }

    #[test]
    fn client_errors_use_the_short_schedule_and_retry_after_is_honoured() {
        let d = decide(Verdict::RetryClientError, None, &policy(), 2, CAP, 0);
        assert_eq!((d.status, d.reason), (Status::Failed, Some(FailureReason::ClientError)));
        let d = decide(Verdict::RetryTransient, Some(Duration::from_secs(120)), &policy(), 1, CAP, 0);
        assert_eq!(d.next_ms, 120_000, "a longer Retry-After wins over the 5 s step");
    }
}

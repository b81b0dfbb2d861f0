//! The delivery engine: what the fan-out and the queue workers share, and the handling of one
//! delivery message from receipt to the point where it may be deleted.
//!
//! Order of effects for one attempt, chosen so a crash anywhere loses nothing:
//! 1. send the HTTP request;
//! 2. if another attempt is due, put its message on the queue;
//! 3. record the attempt item, then the delivery record (conditioned on the attempt count read);
//! 4. update health, publish events;
//! 5. only then is the message deleted.
//!
//! A crash before 3 re-delivers the message: the attempt is repeated with the same
//! `webhook-id` (at least once), and any message queued in 2 turns stale, because a message
//! whose attempt number the record has already passed is dropped unread.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes};
use formbridge_shared::destination::Destination;
use formbridge_shared::keys;
use formbridge_shared::secrets::Keyring;
use formbridge_shared::store::DataStore;
use formbridge_shared::submission::StoredSubmission;
use formbridge_shared::{DestinationId, TenantId};
use rand::Rng;
use serde_json::json;
use tokio::sync::Semaphore;

use crate::events::{self, rfc3339_ms, Events};
use crate::health::{Gate, Health, HealthStore, Transition};
use crate::message::{DeliveryMessage, Trigger};
use crate::queue::DeliveryQueue;
use crate::record::{Attempt, DeliveryRecord, Records, Status};
use crate::schedule::{honour_retry_after, Schedule};
use crate::send::{self, Sender, Verdict};

type DynErr = aws_sdk_dynamodb::Error;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("DynamoDB: {0}")]
    Dynamo(#[from] aws_sdk_dynamodb::Error),
    #[error("SQS: {0}")]
    Sqs(#[from] aws_sdk_sqs::Error),
    #[error("SQS refused {0} of a batch of messages")]
    SqsPartial(usize),
    #[error("destination {0}: {1}")]
    Destination(DestinationId, String),
    #[error("stored submission is unreadable: {0}")]
    Submission(String),
    #[error("cannot list the tenant's destinations: {0}")]
    Destinations(String),
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

pub struct Engine {
    pub store: DataStore,
    pub records: Records,
    pub queue: DeliveryQueue,
    pub events: Events,
    pub keyring: Keyring,
    pub sender: Sender,
    pub health: HealthStore,
    pub settings: EngineSettings,
    destinations: moka::future::Cache<TenantId, Arc<Vec<Destination>>>,
    health_cache: moka::future::Cache<(TenantId, DestinationId), Health>,
    slots: Mutex<HashMap<DestinationId, Arc<Semaphore>>>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("table", &self.store.table()).field("queue_url", &self.queue.url).finish()
    }
}

pub fn now_ms() -> u64 {
    u64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000).unwrap_or(0)
}

fn jitter(d: Duration) -> Duration {
    let f = rand::rng().random_range(1.0..=1.2);
    d.mul_f64(f)
}

impl Engine {
    pub fn new(
        store: DataStore,
        queue: DeliveryQueue,
        events: Events,
        keyring: Keyring,
        sender: Sender,
        settings: EngineSettings,
    ) -> Self {
        let health = HealthStore { client: store.client().clone(), table: store.table().to_owned() };
        Self {
            destinations: moka::future::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(settings.destination_cache.max(Duration::from_millis(1)))
                .build(),
            health_cache: moka::future::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(Duration::from_secs(1))
                .build(),
            slots: Mutex::new(HashMap::new()),
            records: Records { store: store.clone() },
            store,
            queue,
            events,
            keyring,
            sender,
            health,
            settings,
        }
    }

    /// A tenant's destinations, cached for `destination_cache`.
    pub async fn destinations(&self, tenant: &TenantId) -> Result<Arc<Vec<Destination>>, EngineError> {
        if self.settings.destination_cache.is_zero() {
            return self.load_destinations(tenant).await;
        }
        self.destinations
            .try_get_with(tenant.clone(), self.load_destinations(tenant))
            .await
            .map_err(|e| EngineError::Destinations(e.to_string()))
    }

    async fn load_destinations(&self, tenant: &TenantId) -> Result<Arc<Vec<Destination>>, EngineError> {
        let list = self.store.list_destinations(tenant).await.map_err(|e| EngineError::Destinations(e.to_string()))?;
        Ok(Arc::new(list))
    }

    async fn health_of(&self, tenant: &TenantId, dest: &DestinationId) -> Result<Health, EngineError> {
        let key = (tenant.clone(), *dest);
        if let Some(h) = self.health_cache.get(&key).await {
            return Ok(h);
        }
        let h = self.health.get(tenant, dest).await?;
        self.health_cache.insert(key, h.clone()).await;
        Ok(h)
    }

    fn slot(&self, d: &Destination) -> Arc<Semaphore> {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        slots.entry(d.id).or_insert_with(|| Arc::new(Semaphore::new(d.policy.max_in_flight as usize))).clone()
    }

    /// The submission and its delivery record, in one consistent BatchGetItem.
    async fn load(
        &self,
        m: &DeliveryMessage,
    ) -> Result<(Option<HashMap<String, AttributeValue>>, Option<DeliveryRecord>), EngineError> {
        let sub_key = keys::submission(&m.tenant, m.shard, &m.submission);
        let rec_key = keys::delivery(&m.tenant, m.shard, &m.submission, &m.destination);
        let key = |k: &keys::ItemKey| {
            HashMap::from([
                (keys::PK.to_owned(), AttributeValue::S(k.pk.clone())),
                (keys::SK.to_owned(), AttributeValue::S(k.sk.clone())),
            ])
        };
        let mut request = KeysAndAttributes::builder().keys(key(&sub_key)).keys(key(&rec_key)).consistent_read(true);
        let mut items = Vec::new();
        for _ in 0..5 {
            let out = self
                .store
                .client()
                .batch_get_item()
                .request_items(self.store.table(), request.build().expect("keys are set"))
                .send()
                .await
                .map_err(DynErr::from)?;
            if let Some(mut r) = out.responses {
                items.extend(r.remove(self.store.table()).unwrap_or_default());
            }
            match out.unprocessed_keys.and_then(|mut u| u.remove(self.store.table())) {
                Some(rest) if !rest.keys.is_empty() => {
                    request = KeysAndAttributes::builder().set_keys(Some(rest.keys)).consistent_read(true);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                _ => break,
            }
        }
        let mut sub = None;
        let mut rec = None;
        for item in items {
            let sk = item.get(keys::SK).and_then(|v| v.as_s().ok()).cloned().unwrap_or_default();
            if sk == sub_key.sk {
                sub = Some(item);
            } else if sk == rec_key.sk {
                rec = DeliveryRecord::from_item(&item);
            }
        }
        Ok((sub, rec))
    }

    /// Puts the message back on the queue for later (paused, busy, or a long wait chained in
    /// 15-minute hops). The caller then deletes the original.
    async fn defer(&self, m: &DeliveryMessage, due_ms: u64) -> Result<(), EngineError> {
        let mut later = m.clone();
        later.due_ms = due_ms;
        self.queue.enqueue(std::slice::from_ref(&later)).await
    }

    /// Handles one message. `Ok` means it may be deleted; `Err` leaves it for another try.
    pub async fn handle(&self, m: &DeliveryMessage) -> Result<(), EngineError> {
        let now = now_ms();
        if m.due_ms > now + 1_000 {
            metrics::counter!("delivery_deferred_total", "why" => "chained").increment(1);
            return self.defer(m, m.due_ms).await;
        }
        let (sub_item, rec) = self.load(m).await?;
        let Some(rec) = rec else {
            tracing::warn!(submission = %m.submission, destination = %m.destination, "delivery message without a record; dropped");
            return Ok(());
        };
        if rec.status.is_final() || rec.attempts >= m.attempt {
            metrics::counter!("delivery_stale_messages_total").increment(1);
            return Ok(());
        }
        let dest = self.destinations(&m.tenant).await?.iter().find(|d| d.id == m.destination).cloned();
        let Some(dest) = dest else {
            return self.fail_without_attempt(&rec, "destination_deleted", "the destination was deleted").await;
        };
        if !dest.enabled {
            return self.fail_without_attempt(&rec, "destination_disabled", "the destination is disabled").await;
        }
        let Some(sub_item) = sub_item else {
            return self.fail_without_attempt(&rec, "submission_expired", "the submission is no longer stored").await;
        };
        let sub = StoredSubmission::from_item(&sub_item).map_err(|e| EngineError::Submission(e.to_string()))?;

        let h = self.health_of(&m.tenant, &dest.id).await?;
        let probe_for = Duration::from_millis(dest.timeout_ms) + Duration::from_secs(30);
        let gate = self.health.gate(&m.tenant, &dest.id, &h, now, probe_for).await?;
        let probing = match gate {
            Gate::Wait(d) => {
                metrics::counter!("delivery_deferred_total", "why" => "paused").increment(1);
                return self.defer(m, now + jitter(d).as_millis() as u64).await;
            }
            Gate::Probe => true,
            Gate::Send => false,
        };
        // A free slot of this destination, waiting for one at most `busy_defer`; after that the
        // message goes back to the queue (for the destination's timeout) rather than holding a
        // worker that others could use.
        let slot = self.slot(&dest);
        let _permit = match slot.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => match tokio::time::timeout(self.settings.busy_defer, slot.acquire_owned()).await {
                Ok(Ok(p)) => p,
                _ => {
                    metrics::counter!("delivery_deferred_total", "why" => "busy").increment(1);
                    // Its slots are held by slow attempts: come back when one of them must be over.
                    let wait = self.settings.busy_defer.max(Duration::from_millis(dest.timeout_ms));
                    let due = now_ms() + jitter(wait).as_millis() as u64;
                    return self.defer(m, due).await;
                }
            },
        };

        // Sign and send.
        let err = |e: String| EngineError::Destination(dest.id, e);
        let secret = dest.signing_secret(&self.keyring).map_err(|e| err(e.to_string()))?;
        let auth = dest.auth(&self.keyring).map_err(|e| err(e.to_string()))?;
        let body = send::body_for(dest.kind, &sub);
        let ts = i64::try_from(now / 1000).unwrap_or(0);
        let signature = standardwebhooks::Webhook::new(secret.expose())
            .and_then(|w| w.sign(&rec.webhook_id, ts, &body))
            .map_err(|e| err(format!("cannot sign: {e}")))?;
        let headers = send::headers(&rec.webhook_id, ts, &signature, auth.as_ref()).map_err(err)?;
        let outcome = self.sender.send(&dest.url, headers, body, Duration::from_millis(dest.timeout_ms)).await;
        let done = now_ms();
        let verdict = send::verdict(&outcome);
        metrics::counter!("delivery_attempts_total", "outcome" => verdict_label(verdict)).increment(1);
        metrics::histogram!("delivery_attempt_seconds").record(outcome.latency.as_secs_f64());

        // Decide what comes next.
        let in_round = usize::from(m.attempt.saturating_sub(rec.round_start));
        let (status, next_ms, reason) = match verdict {
            Verdict::Succeeded => (Status::Succeeded, done, None),
            Verdict::Gone => (Status::Failed, done, Some("gone")),
            Verdict::Fail(r) => (Status::Failed, done, Some(r)),
            Verdict::RetryTransient | Verdict::RetryClientError => {
                let transient = verdict == Verdict::RetryTransient;
                let list = if transient { &dest.policy.retry_schedule } else { &dest.policy.client_error_schedule };
                match Schedule::new(list).delay(in_round) {
                    Some(d) => {
                        let d = honour_retry_after(d, outcome.retry_after, self.settings.retry_after_cap);
                        (Status::Retrying, done + d.as_millis() as u64, None)
                    }
                    None => (Status::Failed, done, Some(if transient { "exhausted" } else { "client_error" })),
                }
            }
        };
        if status == Status::Retrying {
            let next = DeliveryMessage { attempt: m.attempt + 1, due_ms: next_ms, trigger: m.trigger, ..m.clone() };
            self.queue.enqueue(std::slice::from_ref(&next)).await?;
        }
        let error_text = send::error_text(&outcome);
        let attempt = Attempt {
            attempt: m.attempt,
            at: rfc3339_ms(now),
            at_ms: now,
            status_code: outcome.status,
            error_class: outcome.error.map(|c| c.as_str().to_owned()),
            error: error_text.clone(),
            latency_ms: outcome.latency.as_millis() as u64,
            response: outcome.body.clone(),
            trigger: m.trigger.as_str().to_owned(),
        };
        self.put_attempt(&rec, &attempt).await?;
        let after = DeliveryRecord {
            status,
            attempts: m.attempt,
            next_attempt_ms: next_ms,
            updated_at: rfc3339_ms(done),
            last_status: Some(outcome.status),
            last_error: error_text.clone(),
            reason: reason.map(str::to_owned),
            ..rec.clone()
        };
        if !self.records.replace(&rec, &after).await? {
            tracing::info!(webhook_id = %rec.webhook_id, "another worker recorded this attempt first");
            return Ok(());
        }

        // Health, breaker, events.
        let transition = match verdict {
            Verdict::RetryTransient => {
                let cooldown = |trips| self.settings.cooldown(trips);
                let (h, t) = self
                    .health
                    .failure(&m.tenant, &dest.id, done, self.settings.breaker_threshold, cooldown, probing)
                    .await?;
                self.health_cache.insert((m.tenant.clone(), dest.id), h).await;
                t.map(|t| (t, error_text.clone()))
            }
            Verdict::Succeeded | Verdict::RetryClientError => {
                let (h, t) = self.health.success(&m.tenant, &dest.id, done, &h).await?;
                self.health_cache.insert((m.tenant.clone(), dest.id), h).await;
                t.map(|t| (t, None))
            }
            Verdict::Gone | Verdict::Fail(_) => None,
        };
        if let Some((t, last_error)) = transition {
            self.publish_transition(&m.tenant, &dest.id, t, last_error, done).await;
        }
        if verdict == Verdict::Gone {
            self.disable_gone(&dest, outcome.status, done).await;
        }
        if status == Status::Failed {
            self.publish_failed(&after, done).await;
        }
        Ok(())
    }

    async fn put_attempt(&self, rec: &DeliveryRecord, a: &Attempt) -> Result<(), EngineError> {
        let put = self
            .store
            .client()
            .put_item()
            .table_name(self.store.table())
            .set_item(Some(a.to_item(rec)))
            .condition_expression("attribute_not_exists(PK)")
            .send()
            .await
            .map_err(DynErr::from);
        match put {
            Ok(_) | Err(DynErr::ConditionalCheckFailedException(_)) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn fail_without_attempt(&self, rec: &DeliveryRecord, reason: &str, why: &str) -> Result<(), EngineError> {
        let done = now_ms();
        let after = DeliveryRecord {
            status: Status::Failed,
            next_attempt_ms: done,
            updated_at: rfc3339_ms(done),
            last_error: Some(why.to_owned()),
            reason: Some(reason.to_owned()),
            ..rec.clone()
        };
        if self.records.replace(rec, &after).await? {
            self.publish_failed(&after, done).await;
        }
        Ok(())
    }

    async fn publish_failed(&self, r: &DeliveryRecord, at: u64) {
        metrics::counter!("delivery_failed_total", "reason" => r.reason.clone().unwrap_or_default()).increment(1);
        let detail = json!({
            "tenant_id": r.tenant,
            "destination_id": r.destination,
            "submission_id": r.submission,
            "webhook_id": r.webhook_id,
            "attempts": r.attempts,
            "last_status": r.last_status.unwrap_or(0),
            "last_error": r.last_error,
            "reason": r.reason,
            "failed_at": rfc3339_ms(at),
        });
        self.events.publish(events::DELIVERY_FAILED, detail).await;
    }

    async fn publish_transition(
        &self,
        tenant: &TenantId,
        dest: &DestinationId,
        t: Transition,
        last_error: Option<String>,
        at: u64,
    ) {
        match t {
            Transition::Paused { consecutive_failures, first_failure_ms, paused_until_ms } => {
                tracing::warn!(tenant = %tenant, destination = %dest, consecutive_failures, "destination paused");
                let detail = json!({
                    "tenant_id": tenant,
                    "destination_id": dest,
                    "consecutive_failures": consecutive_failures,
                    "first_failure_at": rfc3339_ms(first_failure_ms),
                    "paused_until": rfc3339_ms(paused_until_ms),
                    "last_error": last_error,
                });
                self.events.publish(events::DESTINATION_PAUSED, detail).await;
            }
            Transition::Recovered { failures_before, paused_at_ms } => {
                tracing::info!(tenant = %tenant, destination = %dest, "destination recovered");
                let detail = json!({
                    "tenant_id": tenant,
                    "destination_id": dest,
                    "failures_before": failures_before,
                    "paused_at": paused_at_ms.map(rfc3339_ms),
                    "recovered_at": rfc3339_ms(at),
                });
                self.events.publish(events::DESTINATION_RECOVERED, detail).await;
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
                tracing::warn!(tenant = %dest.tenant, destination = %dest.id, "destination answered 410 Gone: disabled");
                let detail = json!({
                    "tenant_id": dest.tenant,
                    "destination_id": dest.id,
                    "reason": "gone",
                    "last_status": status,
                    "disabled_at": rfc3339_ms(at),
                });
                self.events.publish(events::DESTINATION_DISABLED, detail).await;
            }
            Err(e) => tracing::error!(destination = %dest.id, error = %e, "could not disable a destination after 410"),
        }
    }

    /// Records and enqueues the first attempt of every matching destination of a new
    /// submission (the stream's fan-out). Returns how many deliveries were created.
    pub async fn fan_out(
        &self,
        tenant: &TenantId,
        shard: u16,
        submission: formbridge_shared::SubmissionId,
        form_id: &str,
        site: &str,
        expires_at: i64,
    ) -> Result<Vec<(DeliveryRecord, DeliveryMessage)>, EngineError> {
        let form = formbridge_shared::FormId::parse(form_id).ok();
        let now = now_ms();
        let dests = self.destinations(tenant).await?;
        Ok(dests
            .iter()
            .filter(|d| form.as_ref().is_some_and(|f| d.wants(f, site)))
            .map(|d| {
                let rec = DeliveryRecord {
                    tenant: tenant.clone(),
                    shard,
                    submission,
                    destination: d.id,
                    status: Status::Pending,
                    attempts: 0,
                    round_start: 0,
                    next_attempt_ms: now,
                    webhook_id: crate::record::webhook_id(&submission, &d.id),
                    form_id: form_id.to_owned(),
                    created_at: rfc3339_ms(now),
                    updated_at: rfc3339_ms(now),
                    last_status: None,
                    last_error: None,
                    reason: None,
                    expires_at,
                };
                let msg = DeliveryMessage {
                    v: 1,
                    tenant: tenant.clone(),
                    shard,
                    submission,
                    destination: d.id,
                    attempt: 1,
                    due_ms: now,
                    trigger: Trigger::Scheduled,
                };
                (rec, msg)
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

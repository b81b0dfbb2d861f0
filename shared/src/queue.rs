//! The one SQS queue type every process uses: open a queue by name (failing loudly when it is
//! missing), send batches with a per-entry outcome, receive, change visibility, and acknowledge
//! in lingering batches.
//!
//! Partial failures are handled one way everywhere: a batch call answers each entry on its own,
//! and a call that fails as a whole answers every entry of it with the same error. Nothing here
//! retries on its own; callers decide (a message that is not acknowledged comes back).
//!
//! Every request is counted against the queue's component in [`crate::usage`].

use std::future::Future;
use std::time::Duration;

use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, DeleteMessageBatchRequestEntry, Message, MessageAttributeValue,
    MessageSystemAttributeName, SendMessageBatchRequestEntry,
};
use tokio::sync::{mpsc, oneshot};

use crate::usage::{self, Unit};

/// The most entries one batch call takes.
pub const MAX_BATCH: usize = 10;
/// The most bytes of message bodies one SendMessageBatch takes.
pub const MAX_BATCH_BYTES: usize = 1024 * 1024;
/// The longest `DelaySeconds` SQS accepts.
pub const MAX_DELAY_S: u64 = 900;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueueError {
    #[error("the SQS queue {0:?} does not exist (run `formbridge-admin bootstrap`, or check the queue name setting)")]
    Missing(String),
    #[error("SQS is unreachable or failed: {0}")]
    Unavailable(String),
    #[error("SQS refused the message ({code}): {message}")]
    Refused { code: String, message: String },
    #[error("the queue's batcher has stopped")]
    Closed,
}

fn sdk<E, R>(e: aws_sdk_sqs::error::SdkError<E, R>) -> QueueError
where
    aws_sdk_sqs::Error: From<aws_sdk_sqs::error::SdkError<E, R>>,
{
    QueueError::Unavailable(aws_sdk_sqs::Error::from(e).to_string())
}

/// A message to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    pub body: String,
    pub delay_s: i32,
    pub attributes: Vec<(&'static str, String)>,
}

impl Outgoing {
    pub fn new(body: impl Into<String>) -> Self {
        Self { body: body.into(), delay_s: 0, attributes: Vec::new() }
    }

    /// Delivered after `due_ms` (the whole wait when it fits in SQS's 15 minutes, else the cap).
    pub fn due(mut self, due_ms: u64, now_ms: u64) -> Self {
        self.delay_s = delay_seconds(due_ms, now_ms);
        self
    }

    pub fn attribute(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.attributes.push((name, value.into()));
        self
    }
}

/// What [`redrive`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Redriven {
    /// Messages sent back to the target queue and deleted from the dead-letter queue.
    pub moved: usize,
    /// Messages left in the dead-letter queue, by the reason they carry.
    pub left: std::collections::BTreeMap<String, usize>,
}

/// How long a message [`redrive`] is looking at stays hidden from other readers: long enough
/// that one run never sees it twice.
const REDRIVE_HOLD: Duration = Duration::from_secs(300);

/// Moves dead letters back to the queue they came from, at least once: each message `pick`
/// chooses (by its reason, `reason_of`) is sent to `to`, with its body unchanged, and deleted
/// from `from` only once the send is answered, so a crash in between leaves a copy in both,
/// which idempotent consumers absorb; it never loses one. Messages not picked are made visible
/// again at the end, untouched. Stops after `max` moves or when `from` has nothing more to hand
/// out.
pub async fn redrive(
    from: &Queue,
    to: &Queue,
    reason_of: impl Fn(&Received) -> String,
    pick: impl Fn(&str) -> bool,
    max: usize,
) -> Result<Redriven, QueueError> {
    let from = from.clone().with_lease(REDRIVE_HOLD);
    let mut done = Redriven::default();
    let mut seen = std::collections::HashSet::new();
    let mut skipped = Vec::new();
    let outcome = async {
        while done.moved < max {
            let got = from.receive(MAX_BATCH.min(max - done.moved), Duration::from_secs(1)).await?;
            if got.is_empty() {
                break;
            }
            let mut moving = Vec::new();
            for m in got {
                let reason = reason_of(&m);
                if pick(&reason) {
                    moving.push(m);
                } else {
                    if seen.insert(m.id.clone()) {
                        *done.left.entry(reason).or_default() += 1;
                    }
                    skipped.push((m.receipt, 0));
                }
            }
            if moving.is_empty() {
                continue;
            }
            let sent = to.send(&moving.iter().map(|m| Outgoing::new(m.body.clone())).collect::<Vec<_>>()).await;
            let (mut receipts, mut failed) = (Vec::new(), None);
            for (m, r) in moving.into_iter().zip(sent) {
                match r {
                    Ok(()) => receipts.push(m.receipt),
                    Err(e) => {
                        skipped.push((m.receipt, 0));
                        failed.get_or_insert(e);
                    }
                }
            }
            // A sent message whose delete fails stays in both queues: a duplicate, never a loss.
            for r in from.delete(&receipts).await {
                r?;
            }
            done.moved += receipts.len();
            if let Some(e) = failed {
                return Err(e);
            }
        }
        Ok::<_, QueueError>(())
    }
    .await;
    // What was looked at and not moved goes back to the dead-letter queue's readers now, not in
    // five minutes (best effort: its hold ends by itself otherwise).
    for r in from.change_visibilities(&skipped).await {
        if let Err(e) = r {
            tracing::warn!(error = %e, "a dead letter stays hidden until its hold ends");
        }
    }
    outcome.map(|()| done)
}

/// The `DelaySeconds` for a message due at `due_ms`: the whole wait when it fits, else the cap
/// (the consumer chains the rest).
pub fn delay_seconds(due_ms: u64, now_ms: u64) -> i32 {
    let wait = due_ms.saturating_sub(now_ms).div_ceil(1000);
    i32::try_from(wait.min(MAX_DELAY_S)).unwrap_or(900)
}

/// A received message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// SQS's message id (not a secret, unlike the receipt).
    pub id: String,
    pub body: String,
    pub receipt: String,
    /// How many times SQS has handed this message out, this time included.
    pub receive_count: u32,
    pub attributes: Vec<(String, String)>,
}

impl Received {
    fn from_sdk(m: Message) -> Option<Received> {
        let receive_count = m
            .attributes
            .as_ref()
            .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
            .and_then(|v| v.parse().ok())
            .unwrap_or(1);
        let attributes = m
            .message_attributes
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(k, v)| v.string_value.map(|s| (k, s)))
            .collect();
        Some(Received {
            id: m.message_id.unwrap_or_default(),
            body: m.body?,
            receipt: m.receipt_handle?,
            receive_count,
            attributes,
        })
    }

    pub fn attribute(&self, name: &str) -> Option<&str> {
        self.attributes.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Clone)]
pub struct Queue {
    sqs: aws_sdk_sqs::Client,
    url: String,
    name: String,
    component: &'static str,
    /// The visibility timeout asked for at receive (see [`LeaseKeeper`]); the queue's own when
    /// `None`.
    lease_s: Option<i32>,
}

impl Queue {
    /// Opens a queue by name. A missing queue is [`QueueError::Missing`], naming it.
    pub async fn open(sqs: aws_sdk_sqs::Client, name: &str, component: &'static str) -> Result<Queue, QueueError> {
        usage::record(component, Unit::SqsRequests, 1);
        match sqs.get_queue_url().queue_name(name).send().await.map_err(aws_sdk_sqs::Error::from) {
            Ok(out) => Ok(Queue {
                sqs,
                url: out.queue_url.unwrap_or_default(),
                name: name.to_owned(),
                component,
                lease_s: None,
            }),
            Err(aws_sdk_sqs::Error::QueueDoesNotExist(_)) => Err(QueueError::Missing(name.to_owned())),
            Err(e) => Err(QueueError::Unavailable(format!("looking up queue {name:?}: {e}"))),
        }
    }

    /// [`Queue::open`] for a long-running process: an unreachable or failing engine is waited
    /// for ([`crate::retry::at_startup`]); a queue that does not exist fails at once.
    pub async fn open_patiently(
        sqs: aws_sdk_sqs::Client,
        name: &str,
        component: &'static str,
    ) -> Result<Queue, QueueError> {
        crate::retry::at_startup(
            &format!("SQS queue {name}"),
            |e: &QueueError| matches!(e, QueueError::Unavailable(_)),
            || Queue::open(sqs.clone(), name, component),
        )
        .await
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Receives with this visibility timeout instead of the queue's: a short lease, kept alive
    /// by a [`LeaseKeeper`] while the work lasts, so a crashed consumer's messages come back soon.
    pub fn with_lease(mut self, lease: Duration) -> Self {
        self.lease_s = Some(i32::try_from(lease.as_secs().clamp(1, 43_200)).unwrap_or(30));
        self
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn client(&self) -> &aws_sdk_sqs::Client {
        &self.sqs
    }

    fn count(&self) {
        usage::record(self.component, Unit::SqsRequests, 1);
    }

    /// Sends messages in as few SendMessageBatch calls as the limits allow (10 entries, 1 MiB),
    /// answering each message on its own, in order.
    pub async fn send(&self, messages: &[Outgoing]) -> Vec<Result<(), QueueError>> {
        let mut out = Vec::with_capacity(messages.len());
        for chunk in batches(messages) {
            out.extend(self.send_chunk(chunk).await);
        }
        out
    }

    /// Sends every message; the first failure is the error (those before it are sent).
    pub async fn send_all(&self, messages: &[Outgoing]) -> Result<(), QueueError> {
        self.send(messages).await.into_iter().collect()
    }

    async fn send_chunk(&self, chunk: &[Outgoing]) -> Vec<Result<(), QueueError>> {
        let entries: Vec<_> = chunk
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let mut e = SendMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message_body(&m.body)
                    .delay_seconds(m.delay_s);
                for (k, v) in &m.attributes {
                    let value =
                        MessageAttributeValue::builder().data_type("String").string_value(v).build().expect("typed");
                    e = e.message_attributes(*k, value);
                }
                e.build().expect("id and body are set")
            })
            .collect();
        self.count();
        let sent = self.sqs.send_message_batch().queue_url(&self.url).set_entries(Some(entries)).send().await;
        let out = match sent {
            Ok(out) => out,
            Err(e) => {
                let e = sdk(e);
                return chunk.iter().map(|_| Err(e.clone())).collect();
            }
        };
        let mut results: Vec<Result<(), QueueError>> = chunk.iter().map(|_| Ok(())).collect();
        for f in out.failed {
            if let Some(slot) = f.id.parse::<usize>().ok().and_then(|i| results.get_mut(i)) {
                *slot = Err(QueueError::Refused { code: f.code, message: f.message.unwrap_or_default() });
            }
        }
        results
    }

    /// Long-polls for up to `max` (at most 10) messages.
    pub async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<Received>, QueueError> {
        self.count();
        let out = self
            .sqs
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(max.clamp(1, MAX_BATCH) as i32)
            .wait_time_seconds(wait.as_secs().min(20) as i32)
            .set_visibility_timeout(self.lease_s)
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .message_attribute_names("All")
            .send()
            .await
            .map_err(sdk)?;
        Ok(out.messages.unwrap_or_default().into_iter().filter_map(Received::from_sdk).collect())
    }

    /// Looks at up to `max` messages without taking them: they stay visible to everyone else.
    pub async fn peek(&self, max: usize) -> Result<Vec<Received>, QueueError> {
        self.count();
        let out = self
            .sqs
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(max.clamp(1, MAX_BATCH) as i32)
            .visibility_timeout(0)
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .message_attribute_names("All")
            .send()
            .await
            .map_err(sdk)?;
        Ok(out.messages.unwrap_or_default().into_iter().filter_map(Received::from_sdk).collect())
    }

    /// Makes one message visible again after `seconds` (0: now).
    pub async fn change_visibility(&self, receipt: &str, seconds: i32) -> Result<(), QueueError> {
        self.count();
        self.sqs
            .change_message_visibility()
            .queue_url(&self.url)
            .receipt_handle(receipt)
            .visibility_timeout(seconds)
            .send()
            .await
            .map_err(sdk)?;
        Ok(())
    }

    /// Deletes messages (up to 10 per call), answering each.
    pub async fn delete(&self, receipts: &[String]) -> Vec<Result<(), QueueError>> {
        let mut out = Vec::with_capacity(receipts.len());
        for chunk in receipts.chunks(MAX_BATCH) {
            let entries: Vec<_> = chunk
                .iter()
                .enumerate()
                .map(|(i, r)| DeleteMessageBatchRequestEntry::builder().id(i.to_string()).receipt_handle(r).build())
                .collect::<Result<_, _>>()
                .expect("id and receipt are set");
            self.count();
            let r = self.sqs.delete_message_batch().queue_url(&self.url).set_entries(Some(entries)).send().await;
            out.extend(per_entry(chunk.len(), r.map(|o| o.failed.into_iter().map(|f| (f.id, f.code, f.message)))));
        }
        out
    }

    /// Changes the visibility of messages (up to 10 per call), answering each.
    pub async fn change_visibilities(&self, items: &[(String, i32)]) -> Vec<Result<(), QueueError>> {
        let mut out = Vec::with_capacity(items.len());
        for chunk in items.chunks(MAX_BATCH) {
            let entries: Vec<_> = chunk
                .iter()
                .enumerate()
                .map(|(i, (r, s))| {
                    ChangeMessageVisibilityBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(r)
                        .visibility_timeout(*s)
                        .build()
                })
                .collect::<Result<_, _>>()
                .expect("id and receipt are set");
            self.count();
            let r =
                self.sqs.change_message_visibility_batch().queue_url(&self.url).set_entries(Some(entries)).send().await;
            out.extend(per_entry(chunk.len(), r.map(|o| o.failed.into_iter().map(|f| (f.id, f.code, f.message)))));
        }
        out
    }

    /// Messages waiting (visible), as SQS approximates it.
    pub async fn backlog(&self) -> Result<u64, QueueError> {
        use aws_sdk_sqs::types::QueueAttributeName;
        self.count();
        let out = self
            .sqs
            .get_queue_attributes()
            .queue_url(&self.url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .send()
            .await
            .map_err(sdk)?;
        Ok(out
            .attributes
            .and_then(|a| a.get(&QueueAttributeName::ApproximateNumberOfMessages).and_then(|v| v.parse().ok()))
            .unwrap_or(0))
    }

    /// A lingering batcher of acknowledgements for this queue: see [`Acker`].
    pub fn acker(&self, linger: Duration) -> Acker {
        let q = self.clone();
        let deletes = Lingering::start(MAX_BATCH, linger, move |receipts: Vec<String>| {
            let q = q.clone();
            async move { q.delete(&receipts).await }
        });
        let q = self.clone();
        let nacks = Lingering::start(MAX_BATCH, linger, move |items: Vec<(String, i32)>| {
            let q = q.clone();
            async move { q.change_visibilities(&items).await }
        });
        Acker { deletes, nacks }
    }

    /// A lingering batcher of sends for this queue: each caller waits for its own entry's outcome.
    pub fn sender(&self, linger: Duration) -> Lingering<Outgoing, Result<(), QueueError>> {
        let q = self.clone();
        Lingering::start(MAX_BATCH, linger, move |messages: Vec<Outgoing>| {
            let q = q.clone();
            async move { q.send(&messages).await }
        })
    }
}

/// Answers for a batch call's entries: the call's own failure for all, or each entry's.
fn per_entry<E, R>(
    len: usize,
    r: Result<impl Iterator<Item = (String, String, Option<String>)>, aws_sdk_sqs::error::SdkError<E, R>>,
) -> Vec<Result<(), QueueError>>
where
    aws_sdk_sqs::Error: From<aws_sdk_sqs::error::SdkError<E, R>>,
{
    match r {
        Err(e) => {
            let e = sdk(e);
            (0..len).map(|_| Err(e.clone())).collect()
        }
        Ok(failed) => {
            let mut out: Vec<Result<(), QueueError>> = (0..len).map(|_| Ok(())).collect();
            for (id, code, message) in failed {
                if let Some(slot) = id.parse::<usize>().ok().and_then(|i| out.get_mut(i)) {
                    *slot = Err(QueueError::Refused { code, message: message.unwrap_or_default() });
                }
            }
            out
        }
    }
}

/// Splits messages into runs that fit one SendMessageBatch.
fn batches(messages: &[Outgoing]) -> Vec<&[Outgoing]> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, m) in messages.iter().enumerate() {
        let size = m.body.len() + m.attributes.iter().map(|(k, v)| k.len() + v.len() + 6).sum::<usize>();
        if i > start && (i - start == MAX_BATCH || bytes + size > MAX_BATCH_BYTES) {
            out.push(&messages[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += size;
    }
    if start < messages.len() {
        out.push(&messages[start..]);
    }
    out
}

/// Acknowledges received messages in batches: `ack` deletes (the work is durable), `nack` makes
/// the message visible again after a delay (try again later). A lost acknowledgement is
/// harmless by design: the message comes back and is handled idempotently.
#[derive(Debug, Clone)]
pub struct Acker {
    deletes: Lingering<String, Result<(), QueueError>>,
    nacks: Lingering<(String, i32), Result<(), QueueError>>,
}

impl Acker {
    pub fn ack(&self, receipt: String) {
        self.deletes.push(receipt);
    }

    pub fn nack(&self, receipt: String, retry_after_s: i32) {
        self.nacks.push((receipt, retry_after_s));
    }

    /// Deletes and waits for the answer.
    pub async fn ack_now(&self, receipt: String) -> Result<(), QueueError> {
        self.deletes.submit(receipt).await.unwrap_or(Err(QueueError::Closed))
    }

    /// Deletes, trying again through a passing outage ([`crate::retry::ack_backoff`]), and
    /// answers once the message is gone or cannot be deleted. A consumer holds the message's
    /// lease until then: released earlier, a slow or failed delete let the message come back
    /// while its work was already done, and the work ran twice.
    pub async fn ack_durably(&self, receipt: String) -> Result<(), QueueError> {
        let mut delays = crate::retry::ack_backoff();
        loop {
            match self.ack_now(receipt.clone()).await {
                Ok(()) => return Ok(()),
                // The receipt is no longer valid (the lease ended and someone else received the
                // message) or the batcher is closed: trying again cannot help.
                Err(e @ (QueueError::Refused { .. } | QueueError::Closed)) => return Err(e),
                Err(e) => match delays.next() {
                    Some(d) => {
                        tracing::debug!(error = %e, "delete failed; trying again");
                        tokio::time::sleep(d).await;
                    }
                    None => return Err(e),
                },
            }
        }
    }

    /// Flushes what is waiting and stops. Clones still held elsewhere keep their batchers alive.
    pub async fn close(self) {
        self.deletes.close().await;
        self.nacks.close().await;
    }
}

type Job<I, O> = (I, Option<oneshot::Sender<O>>);

/// How many flushes of one batcher may be in flight at once. One slow call (a struggling queue
/// answers in seconds) must not hold back every batch behind it: with flushes one at a time,
/// ingest's sends drained at ten messages per call's latency, its waiting senders timed out and
/// retried, and the retries made the backlog longer (the chaos run's retry storm).
pub const FLUSHES_IN_FLIGHT: usize = 8;

/// How long the flushes in flight may run before a partial batch takes another slot. A call
/// that has taken this long is struggling; until then a partial batch waits for one of them to
/// answer, so a healthy queue sees as few, full batches as with one flush at a time.
pub const FLUSH_STALLED_AFTER: Duration = Duration::from_millis(500);

/// A batcher: items submitted from anywhere are gathered until `max` are waiting or the first
/// has waited `linger`, then flushed together; each submitter gets its own item's answer.
///
/// Up to [`FLUSHES_IN_FLIGHT`] batches are flushed at a time, but only a full batch, or one
/// that has waited [`FLUSH_STALLED_AFTER`] behind the flushes in flight, takes a second slot;
/// otherwise a partial batch goes out when nothing is in flight or a flush answers. So while
/// calls answer quickly, items gather behind the one in flight (batches fill up under load, and
/// requests stay few), and one hung call holds back the others for half a second, not for good.
#[derive(Debug)]
pub struct Lingering<I, O> {
    tx: mpsc::UnboundedSender<Job<I, O>>,
    done: std::sync::Arc<tokio::sync::Notify>,
    finished: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Items submitted and not answered yet.
    waiting: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl<I, O> Clone for Lingering<I, O> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
            done: self.done.clone(),
            finished: self.finished.clone(),
            waiting: self.waiting.clone(),
        }
    }
}

impl<I: Send + 'static, O: Send + 'static> Lingering<I, O> {
    /// Starts the batcher task. `flush` must answer every item of its batch, in order. The task
    /// ends, after flushing, when every handle is dropped or closed.
    pub fn start<F, Fut>(max: usize, linger: Duration, flush: F) -> Self
    where
        F: Fn(Vec<I>) -> Fut + Send + 'static,
        Fut: Future<Output = Vec<O>> + Send + 'static,
    {
        Self::start_with(max, linger, FLUSHES_IN_FLIGHT, flush)
    }

    /// [`Lingering::start`] with at most `in_flight` flushes at a time.
    pub fn start_with<F, Fut>(max: usize, linger: Duration, in_flight: usize, flush: F) -> Self
    where
        F: Fn(Vec<I>) -> Fut + Send + 'static,
        Fut: Future<Output = Vec<O>> + Send + 'static,
    {
        let (tx, rx) = mpsc::unbounded_channel();
        let done = std::sync::Arc::new(tokio::sync::Notify::new());
        let finished = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let waiting = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (d, f, w) = (done.clone(), finished.clone(), waiting.clone());
        tokio::spawn(async move {
            gather(rx, max.max(1), linger, in_flight.max(1), flush, w).await;
            f.store(true, std::sync::atomic::Ordering::SeqCst);
            d.notify_waiters();
        });
        Self { tx, done, finished, waiting }
    }

    /// Submits an item and waits for its answer (`None` when the batcher has stopped). A
    /// submitter that stops waiting (its future dropped: a client that hung up) withdraws its
    /// item if it has not been flushed yet.
    pub async fn submit(&self, item: I) -> Option<O> {
        let (answer, wait) = oneshot::channel();
        self.waiting.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if self.tx.send((item, Some(answer))).is_err() {
            self.waiting.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            return None;
        }
        wait.await.ok()
    }

    /// Submits an item without waiting for its answer.
    pub fn push(&self, item: I) {
        self.waiting.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if self.tx.send((item, None)).is_err() {
            self.waiting.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Items submitted and not answered (or withdrawn) yet: what a caller may shed load by.
    pub fn waiting(&self) -> usize {
        self.waiting.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Drops this handle and, once no other handle remains, waits until everything is flushed.
    pub async fn close(self) {
        let Self { tx, done, finished, .. } = self;
        let notified = done.notified();
        drop(tx);
        if std::sync::Arc::strong_count(&finished) <= 2 && !finished.load(std::sync::atomic::Ordering::SeqCst) {
            notified.await;
        }
    }
}

async fn gather<I, O, F, Fut>(
    mut rx: mpsc::UnboundedReceiver<Job<I, O>>,
    max: usize,
    linger: Duration,
    in_flight: usize,
    flush: F,
    waiting: std::sync::Arc<std::sync::atomic::AtomicUsize>,
) where
    I: Send + 'static,
    O: Send + 'static,
    F: Fn(Vec<I>) -> Fut,
    Fut: Future<Output = Vec<O>> + Send + 'static,
{
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(in_flight));
    // Signalled by each flush that answers (a stored permit, so none is missed).
    let answered = std::sync::Arc::new(tokio::sync::Notify::new());
    let mut flushing = tokio::task::JoinSet::new();
    let mut batch: Vec<Job<I, O>> = Vec::with_capacity(max);
    loop {
        while flushing.try_join_next().is_some() {}
        if rx.recv_many(&mut batch, max).await == 0 {
            break;
        }
        let fill_by = tokio::time::Instant::now() + linger;
        while batch.len() < max {
            match tokio::time::timeout_at(fill_by, rx.recv()).await {
                Ok(Some(job)) => batch.push(job),
                Ok(None) | Err(_) => break,
            }
        }
        // A partial batch goes out at once only when nothing is in flight; otherwise it keeps
        // gathering until a flush answers, it fills up, or the flushes in flight have stalled.
        // A full batch takes any free slot, and waits for one when every slot is busy.
        let stalled_at = tokio::time::Instant::now() + FLUSH_STALLED_AFTER;
        let mut may_go = slots.available_permits() == in_flight;
        let slot = loop {
            if batch.len() >= max {
                break slots.clone().acquire_owned().await.expect("never closed");
            }
            if may_go || tokio::time::Instant::now() >= stalled_at {
                if let Ok(slot) = slots.clone().try_acquire_owned() {
                    break slot;
                }
            }
            tokio::select! {
                () = answered.notified() => may_go = true,
                () = tokio::time::sleep_until(stalled_at), if !may_go && tokio::time::Instant::now() < stalled_at => {}
                job = rx.recv() => match job {
                    Some(job) => batch.push(job),
                    None => break slots.clone().acquire_owned().await.expect("never closed"),
                },
            }
        };
        // Items whose submitter stopped waiting are withdrawn: when the flush is slow (a
        // struggling queue), senders time out and retry, and sending their abandoned copies too
        // would only add to what is already late.
        let before = batch.len();
        batch.retain(|(_, answer)| answer.as_ref().is_none_or(|a| !a.is_closed()));
        waiting.fetch_sub(before - batch.len(), std::sync::atomic::Ordering::Relaxed);
        if batch.is_empty() {
            continue;
        }
        let n = batch.len();
        let (items, answers): (Vec<I>, Vec<_>) = batch.drain(..).unzip();
        let (sent, waiting, answered) = (flush(items), waiting.clone(), answered.clone());
        flushing.spawn(async move {
            let results = sent.await;
            drop(slot);
            answered.notify_one();
            for (answer, result) in answers.into_iter().zip(results) {
                if let Some(a) = answer {
                    let _ = a.send(result);
                }
            }
            waiting.fetch_sub(n, std::sync::atomic::Ordering::Relaxed);
        });
    }
    while flushing.join_next().await.is_some() {}
}

/// Keeps the short leases of received messages alive while they are being worked on.
///
/// A consumer receives with a short visibility timeout ([`Queue::with_lease`]), holds each
/// message here from receipt to acknowledgement, and releases it after. Every sixth of a lease the
/// keeper extends (ChangeMessageVisibilityBatch, 10 a call) the held messages whose lease is more
/// than a third gone, by another lease. A consumer that dies stops extending, so its messages
/// come back within one lease instead of the queue's long visibility timeout; work that finishes
/// within a third of a lease (nearly all of it) costs no extra request.
#[derive(Debug, Clone)]
pub struct LeaseKeeper {
    held: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, std::time::Instant>>>,
}

impl LeaseKeeper {
    /// Starts extending on `queue` (whose lease it uses) until `stop`.
    pub fn start(queue: Queue, stop: tokio_util::sync::CancellationToken) -> LeaseKeeper {
        let keeper = LeaseKeeper { held: Default::default() };
        let Some(lease_s) = queue.lease_s else { return keeper };
        let lease = Duration::from_secs(u64::try_from(lease_s).unwrap_or(30));
        let held = keeper.held.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    // Often enough that an extension failing (the engine hung for a few
                    // seconds) is tried again several times before the lease runs out.
                    () = tokio::time::sleep((lease / 6).max(Duration::from_millis(500))) => {}
                    () = stop.cancelled() => return,
                }
                let due: Vec<String> = {
                    let h = held.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    h.iter().filter(|(_, t)| t.elapsed() >= lease / 3).map(|(r, _)| r.clone()).collect()
                };
                if due.is_empty() {
                    continue;
                }
                let asks: Vec<(String, i32)> = due.iter().map(|r| (r.clone(), lease_s)).collect();
                let results = queue.change_visibilities(&asks).await;
                let now = std::time::Instant::now();
                let mut h = held.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                for (receipt, r) in due.into_iter().zip(results) {
                    match r {
                        Ok(()) => {
                            if let Some(t) = h.get_mut(&receipt) {
                                *t = now;
                            }
                            metrics::counter!("queue_leases_extended_total", "queue" => queue.name.clone())
                                .increment(1);
                        }
                        // Deleted meanwhile, or its receipt expired: nothing left to keep.
                        Err(QueueError::Refused { .. }) => {
                            h.remove(&receipt);
                        }
                        Err(e) => tracing::warn!(error = %e, "could not extend a message's lease; will retry"),
                    }
                }
            }
        });
        keeper
    }

    /// Holds a message just received.
    pub fn hold(&self, receipt: &str) {
        self.held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(receipt.to_owned(), std::time::Instant::now());
    }

    /// Lets a message go: acknowledged, or left to come back when its lease ends.
    pub fn release(&self, receipt: &str) {
        self.held.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(receipt);
    }

    /// Messages held now.
    pub fn held(&self) -> usize {
        self.held.lock().unwrap_or_else(std::sync::PoisonError::into_inner).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[test]
    fn batches_respect_count_and_bytes() {
        let small: Vec<_> = (0..25).map(|i| Outgoing::new(format!("m{i}"))).collect();
        let sizes: Vec<usize> = batches(&small).iter().map(|b| b.len()).collect();
        assert_eq!(sizes, [10, 10, 5]);
        let big: Vec<_> = (0..4).map(|_| Outgoing::new("x".repeat(400 * 1024))).collect();
        let sizes: Vec<usize> = batches(&big).iter().map(|b| b.len()).collect();
        assert_eq!(sizes, [2, 2]);
        assert!(batches(&[]).is_empty());
    }

    #[test]
    fn delays_are_capped_at_15_minutes() {
        assert_eq!(delay_seconds(1_000, 5_000), 0);
        assert_eq!(delay_seconds(5_001, 0), 6);
        assert_eq!(delay_seconds(36_000_000, 0), 900);
    }

    /// While a slow flush runs, submitters that stop waiting withdraw their items: the next
    /// flush sends only the items still awaited, and the count of waiting items follows.
    #[tokio::test]
    async fn items_whose_submitter_gave_up_are_not_flushed() {
        let flushed = Arc::new(Mutex::new(Vec::new()));
        let seen = flushed.clone();
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let g = gate.clone();
        let b = Lingering::start_with(10, Duration::from_millis(20), 1, move |items: Vec<u32>| {
            seen.lock().unwrap().push(items.clone());
            let g = g.clone();
            async move {
                // The first flush waits until the test lets it go.
                if items.contains(&0) {
                    g.acquire().await.unwrap().forget();
                }
                items
            }
        });
        let first = tokio::spawn({
            let b = b.clone();
            async move { b.submit(0).await }
        });
        while flushed.lock().unwrap().is_empty() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Three submit while the first flush hangs; two of them give up.
        let keep = tokio::spawn({
            let b = b.clone();
            async move { b.submit(1).await }
        });
        let gone: Vec<_> = [2, 3]
            .into_iter()
            .map(|i| {
                let b = b.clone();
                tokio::spawn(async move { b.submit(i).await })
            })
            .collect();
        while b.waiting() < 4 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        for g in gone {
            g.abort();
            let _ = g.await;
        }
        gate.add_permits(1);
        assert_eq!(first.await.unwrap(), Some(0));
        assert_eq!(keep.await.unwrap(), Some(1));
        assert_eq!(*flushed.lock().unwrap(), vec![vec![0], vec![1]], "the abandoned items were never sent");
        assert_eq!(b.waiting(), 0);
    }

    /// A flush that hangs holds one slot, not the batcher: once it has stalled, later items are
    /// flushed and answered meanwhile, and once every slot is busy, what arrives gathers into full batches.
    #[tokio::test]
    async fn a_hung_flush_does_not_hold_back_the_next_batches() {
        let flushed = Arc::new(Mutex::new(Vec::new()));
        let seen = flushed.clone();
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let g = gate.clone();
        let b = Lingering::start_with(3, Duration::from_millis(10), 2, move |items: Vec<u32>| {
            seen.lock().unwrap().push(items.clone());
            let g = g.clone();
            async move {
                // Batches holding an item under 100 hang until the test lets them go.
                if items.iter().any(|&i| i < 100) {
                    g.acquire_many(u32::try_from(items.len()).unwrap()).await.unwrap().forget();
                }
                items
            }
        });
        let hung = tokio::spawn({
            let b = b.clone();
            async move { b.submit(1).await }
        });
        while flushed.lock().unwrap().is_empty() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // The first flush hangs; the second slot still flushes and answers.
        assert_eq!(b.submit(100).await, Some(100));
        assert!(!hung.is_finished());
        // Both slots busy: items arriving meanwhile wait, and go out as full batches.
        let second = tokio::spawn({
            let b = b.clone();
            async move { b.submit(2).await }
        });
        while flushed.lock().unwrap().len() < 3 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let rest: Vec<_> = (200..206)
            .map(|i| {
                let b = b.clone();
                tokio::spawn(async move { b.submit(i).await })
            })
            .collect();
        while b.waiting() < 8 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(flushed.lock().unwrap().len(), 3, "no slot was free");
        gate.add_permits(2);
        assert_eq!(hung.await.unwrap(), Some(1));
        assert_eq!(second.await.unwrap(), Some(2));
        for (r, i) in rest.into_iter().zip(200..) {
            assert_eq!(r.await.unwrap(), Some(i));
        }
        let batches = flushed.lock().unwrap().clone();
        assert_eq!(batches[..3], [vec![1], vec![100], vec![2]]);
        assert_eq!(batches[3..].iter().map(Vec::len).collect::<Vec<_>>(), [3, 3], "full batches: {batches:?}");
        assert_eq!(b.waiting(), 0);
    }

    /// While the flush in flight is answering in time, a partial batch waits behind it instead
    /// of taking another slot: items that trickle in meanwhile go out together when it answers,
    /// as few requests as with one flush at a time (the delivery worker's deletes, one every few
    /// milliseconds, were each their own DeleteMessageBatch once slots were free for the taking).
    #[tokio::test]
    async fn partial_batches_wait_behind_a_flush_that_is_answering_in_time() {
        let flushed = Arc::new(Mutex::new(Vec::new()));
        let seen = flushed.clone();
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let g = gate.clone();
        let b = Lingering::start(10, Duration::from_millis(1), move |items: Vec<u32>| {
            seen.lock().unwrap().push(items.clone());
            let g = g.clone();
            async move {
                if items.contains(&0) {
                    g.acquire().await.unwrap().forget();
                }
                items
            }
        });
        let first = tokio::spawn({
            let b = b.clone();
            async move { b.submit(0).await }
        });
        while flushed.lock().unwrap().is_empty() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        // One at a time, each after the last one's linger has passed.
        let mut rest = Vec::new();
        for i in 1..=5 {
            let b2 = b.clone();
            rest.push(tokio::spawn(async move { b2.submit(i).await }));
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        while b.waiting() < 6 && flushed.lock().unwrap().len() == 1 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        // Seven slots are free, and none was taken for a partial batch.
        let so_far = flushed.lock().unwrap().clone();
        assert_eq!(so_far.len(), 1, "a partial batch took a slot: {so_far:?}");
        gate.add_permits(1);
        assert_eq!(first.await.unwrap(), Some(0));
        for (r, i) in rest.into_iter().zip(1..) {
            assert_eq!(r.await.unwrap(), Some(i));
        }
        assert_eq!(*flushed.lock().unwrap(), vec![vec![0], vec![1, 2, 3, 4, 5]]);
    }

    #[tokio::test]
    async fn lingering_gathers_a_batch_and_answers_each_item() {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let seen = calls.clone();
        let b = Lingering::start(10, Duration::from_millis(200), move |items: Vec<u32>| {
            seen.lock().unwrap().push(items.len());
            async move { items.into_iter().map(|i| i * 2).collect() }
        });
        let answers = futures_join(&b, 1..=4).await;
        assert_eq!(answers, [2, 4, 6, 8]);
        assert_eq!(*calls.lock().unwrap(), [4], "four items that arrive together go in one call");
        b.push(9);
        b.close().await;
        assert_eq!(*calls.lock().unwrap(), [4, 1], "close flushes what is waiting");
    }

    async fn futures_join(b: &Lingering<u32, u32>, items: std::ops::RangeInclusive<u32>) -> Vec<u32> {
        let mut tasks = tokio::task::JoinSet::new();
        for i in items {
            let b = b.clone();
            tasks.spawn(async move { b.submit(i).await.unwrap() });
        }
        let mut out = Vec::new();
        while let Some(r) = tasks.join_next().await {
            out.push(r.unwrap());
        }
        out.sort();
        out
    }
}

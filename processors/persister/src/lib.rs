//! The persister: long-polls the ingest queue and writes each submission into `FormBridgeData`.
//!
//! Shape: `pollers` tasks receive up to 10 messages each and push them into a bounded channel;
//! the consumer takes whatever is ready (up to 25, one BatchWriteItem) and runs up to `writers`
//! batches at once. A batch is: validate and encode every message (pure), send poison messages
//! to the DLQ with their reason, write the items, and only then delete the messages.
//!
//! It must never delete a message whose item is not durably written, and never drop a message
//! silently: a message it cannot parse goes to the DLQ with a reason; a message it cannot write
//! stays on the queue and comes back after the visibility timeout (the redrive policy moves it
//! to the DLQ after repeated failures).

pub mod config;
pub mod writer;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_dynamodb::types::{PutRequest, WriteRequest};
use backon::BackoffBuilder;
use futures::{SinkExt, StreamExt};
use tokio_util::sync::CancellationToken;

use formbridge_shared::aws::AwsClients;
use formbridge_shared::codec::PayloadCodec;
use formbridge_shared::keys::ItemKey;
use formbridge_shared::queue::{Outgoing, Queue, QueueError, Received};
use formbridge_shared::submission::Submission;

pub use config::Config;
use writer::{write_all, DynamoBatchWrite, MAX_BATCH};

pub use formbridge_shared::submission::{REJECT_DETAIL_ATTRIBUTE, REJECT_REASON_ATTRIBUTE};

#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    #[error(transparent)]
    Queue(#[from] QueueError),
}

/// What the persister is metered as in `formbridge_shared::usage`.
const COMPONENT: &str = "persister";

/// What a run did, in messages, for logs and tests.
#[derive(Debug, Default)]
pub struct Counters {
    pub received: AtomicU64,
    pub written: AtomicU64,
    pub deleted: AtomicU64,
    pub rejected: AtomicU64,
    pub write_failures: AtomicU64,
    pub batch_write_calls: AtomicU64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct RunSummary {
    pub received: u64,
    pub written: u64,
    pub deleted: u64,
    pub rejected: u64,
    pub write_failures: u64,
    pub batch_write_calls: u64,
}

impl Counters {
    fn summary(&self) -> RunSummary {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        RunSummary {
            received: g(&self.received),
            written: g(&self.written),
            deleted: g(&self.deleted),
            rejected: g(&self.rejected),
            write_failures: g(&self.write_failures),
            batch_write_calls: g(&self.batch_write_calls),
        }
    }
}

struct Ctx {
    queue: Queue,
    /// Keeps the leases of messages received and not yet acknowledged.
    leases: formbridge_shared::queue::LeaseKeeper,
    /// Deletes from the ingest queue, gathered across concurrent batches into full
    /// DeleteMessageBatch calls (up to 10 each).
    acker: formbridge_shared::queue::Acker,
    core: Core,
}

/// What stores a batch, in either mode: the long-running pollers delete what it stored; in
/// Lambda mode the event source mapping does.
struct Core {
    dlq: Queue,
    table: DynamoBatchWrite,
    codec: PayloadCodec,
    write_retries: u16,
    counters: Arc<Counters>,
}

impl Core {
    async fn open(config: &Config, aws: &AwsClients, counters: Arc<Counters>) -> Result<Core, PersistError> {
        Ok(Core {
            dlq: Queue::open_patiently(aws.sqs.clone(), &config.resources.ingest_dlq, COMPONENT).await?,
            table: DynamoBatchWrite { client: aws.dynamodb.clone(), table: config.resources.table.clone() },
            codec: PayloadCodec {
                threshold: config.compress_threshold,
                quality: config.brotli_quality,
                ..PayloadCodec::default()
            },
            write_retries: config.write_retries,
            counters,
        })
    }
}

/// How long a delete waits for company from other batches before its DeleteMessageBatch goes.
const DELETE_LINGER: Duration = Duration::from_millis(50);

/// Runs until `shutdown` is cancelled, then finishes every message already received and returns.
pub async fn run(config: Config, aws: AwsClients, shutdown: CancellationToken) -> Result<RunSummary, PersistError> {
    let aws = aws.for_component("persister");
    let costs = formbridge_shared::costs::start(&aws.dynamodb, &config.resources, &shutdown);
    let counters = Arc::new(Counters::default());
    let mut queue = Queue::open_patiently(aws.sqs.clone(), &config.resources.ingest_queue, COMPONENT).await?;
    if config.lease_seconds > 0 {
        queue = queue.with_lease(Duration::from_secs(config.lease_seconds));
    }
    let acker = queue.acker(DELETE_LINGER);
    let core = Core::open(&config, &aws, counters.clone()).await?;
    // Stops only after every message is handled (below), so no lease lapses during shutdown.
    let lease_stop = CancellationToken::new();
    let leases = formbridge_shared::queue::LeaseKeeper::start(queue.clone(), lease_stop.clone());
    let ctx = Arc::new(Ctx { queue, leases, acker: acker.clone(), core });
    tracing::info!(queue = %ctx.queue.name(), table = %ctx.core.table.table, pollers = config.pollers, writers = config.writers, "persister started");

    let (tx, rx) = futures::channel::mpsc::channel::<Received>(usize::from(config.pollers) * 10);
    let pollers: Vec<_> = (0..config.pollers)
        .map(|i| {
            tokio::spawn(poll(
                ctx.clone(),
                tx.clone(),
                shutdown.clone(),
                config.wait_seconds,
                config.receive_linger(),
                i,
            ))
        })
        .collect();
    drop(tx);

    // The stream ends when every poller has stopped and dropped its sender, so everything that
    // was received is handled before `run` returns.
    rx.ready_chunks(MAX_BATCH)
        .map(|batch| handle_batch(ctx.clone(), batch))
        .buffer_unordered(usize::from(config.writers))
        .for_each(|()| async {})
        .await;
    for p in pollers {
        let _ = p.await;
    }
    drop(ctx);
    lease_stop.cancel();
    acker.close().await;
    formbridge_shared::costs::finish(costs).await;
    let summary = counters.summary();
    tracing::info!(?summary, "persister stopped");
    Ok(summary)
}

async fn poll(
    ctx: Arc<Ctx>,
    mut tx: futures::channel::mpsc::Sender<Received>,
    shutdown: CancellationToken,
    wait_seconds: u8,
    linger: Duration,
    poller: u16,
) {
    // Receive failures (the queue unreachable, throttling) back off with jitter, from 200 ms up
    // to 20 s, and start over after the next success.
    let fresh = || {
        backon::ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(200))
            .with_max_delay(Duration::from_secs(20))
            .without_max_times()
            .with_jitter()
            .build()
    };
    let mut backoff = fresh();
    while !shutdown.is_cancelled() {
        // A receive in flight is allowed to finish (at most `wait_seconds`): aborting it could
        // leave messages invisible until their visibility timeout.
        let out = ctx.queue.receive(10, Duration::from_secs(u64::from(wait_seconds))).await;
        match out {
            Ok(messages) => {
                backoff = fresh();
                // A receive that did not fill its batch: let messages gather before the next one,
                // so that at low rates one receive (and one write, one delete) carries several.
                let partial = messages.len() < 10;
                for m in messages {
                    ctx.leases.hold(&m.receipt);
                    ctx.core.counters.received.fetch_add(1, Ordering::Relaxed);
                    if tx.send(m).await.is_err() {
                        return;
                    }
                }
                if partial && !linger.is_zero() {
                    tokio::select! {
                        _ = tokio::time::sleep(linger) => {}
                        _ = shutdown.cancelled() => {}
                    }
                }
            }
            Err(e) => {
                let delay = backoff.next().unwrap_or(Duration::from_secs(20));
                tracing::warn!(poller, error = %e, ?delay, "receive failed");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shutdown.cancelled() => {}
                }
            }
        }
    }
}

/// Messages whose items share one key (redeliveries of one submission, or duplicates sent by
/// a replay) are written once and all deleted after that write.
struct Prepared {
    items: BTreeMap<ItemKey, (HashMap<String, aws_sdk_dynamodb::types::AttributeValue>, Vec<String>)>,
    rejected: Vec<(Received, formbridge_shared::submission::MessageError)>,
}

fn prepare(codec: &PayloadCodec, batch: Vec<Received>) -> Prepared {
    let mut items: BTreeMap<ItemKey, (HashMap<_, _>, Vec<String>)> = BTreeMap::new();
    let mut rejected = Vec::new();
    for m in batch {
        let handle = m.receipt.clone();
        // A submission that cannot be stored (bad message, or an item over DynamoDB's limit) goes
        // to the DLQ on its own; the rest of the batch is written.
        let parsed = Submission::from_message_body(&m.body)
            .and_then(|sub| sub.to_checked_item(codec).map(|item| (sub.key(), item)));
        match parsed {
            Ok((key, item)) => items.entry(key).or_insert_with(|| (item, Vec::new())).1.push(handle),
            Err(e) => rejected.push((m, e)),
        }
    }
    Prepared { items, rejected }
}

async fn handle_batch(ctx: Arc<Ctx>, batch: Vec<Received>) {
    let receipts: Vec<String> = batch.iter().map(|m| m.receipt.clone()).collect();
    let deletable = store_batch(&ctx.core, batch).await;
    delete(&ctx, deletable).await;
    // Deleted, or left to come back when the lease ends (a failed write).
    for r in &receipts {
        ctx.leases.release(r);
    }
}

/// Stores a batch: poison messages go to the DLQ with their reason, the rest are written.
/// Returns the receipt handles of the messages now durable (written, or in the DLQ), which may
/// be deleted from the ingest queue; the others must come back.
async fn store_batch(ctx: &Core, batch: Vec<Received>) -> Vec<String> {
    let Prepared { items, rejected } = prepare(&ctx.codec, batch);
    let mut deletable = Vec::new();
    if !rejected.is_empty() {
        deletable.extend(dead_letter(ctx, rejected).await);
    }
    if !items.is_empty() {
        let n = items.len() as u64;
        let (requests, handles): (Vec<_>, Vec<_>) = items
            .into_values()
            .map(|(item, handles)| {
                let put = PutRequest::builder().set_item(Some(item)).build().expect("item is set");
                (WriteRequest::builder().put_request(put).build(), handles)
            })
            .unzip();
        // Counters count messages (several may carry one item); the metric counts items.
        let messages = handles.iter().map(Vec::len).sum::<usize>() as u64;
        match write_all(&ctx.table, requests, writer::unprocessed_backoff(ctx.write_retries)).await {
            Ok(calls) => {
                ctx.counters.written.fetch_add(messages, Ordering::Relaxed);
                ctx.counters.batch_write_calls.fetch_add(u64::from(calls), Ordering::Relaxed);
                metrics::counter!("persister_items_written_total").increment(n);
                deletable.extend(handles.into_iter().flatten());
            }
            Err(e) => {
                // Not deleted: SQS redelivers after the visibility timeout, and the rewrite is
                // idempotent. After maxReceiveCount failures the redrive policy moves them to the DLQ.
                ctx.counters.write_failures.fetch_add(messages, Ordering::Relaxed);
                metrics::counter!("persister_write_failures_total").increment(n);
                tracing::error!(error = %e, items = n, "batch not written; messages left for redelivery");
            }
        }
    }
    deletable
}

/// Sends rejected messages to the DLQ with their reason; returns the receipt handles that may
/// now be deleted from the ingest queue (those the DLQ accepted).
async fn dead_letter(
    ctx: &Core,
    rejected: Vec<(Received, formbridge_shared::submission::MessageError)>,
) -> Vec<String> {
    let outgoing: Vec<Outgoing> = rejected
        .iter()
        .map(|(m, e)| {
            let body = if m.body.is_empty() { "(empty)" } else { m.body.as_str() };
            Outgoing::new(body)
                .attribute(REJECT_REASON_ATTRIBUTE, e.code())
                .attribute(REJECT_DETAIL_ATTRIBUTE, e.to_string().chars().take(512).collect::<String>())
        })
        .collect();
    let sent = ctx.dlq.send(&outgoing).await;
    let mut deletable = Vec::new();
    for ((m, e), moved) in rejected.into_iter().zip(sent) {
        // The body is not logged: it may carry personal data.
        match moved {
            Ok(()) => {
                tracing::warn!(reason = e.code(), detail = %e, "rejected queue message moved to the DLQ");
                ctx.counters.rejected.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("persister_messages_rejected_total", "reason" => e.code()).increment(1);
                deletable.push(m.receipt);
            }
            Err(why) => {
                tracing::error!(reason = e.code(), error = %why, "could not move a rejected message to the DLQ; it stays queued and the redrive policy will move it")
            }
        }
    }
    deletable
}

async fn delete(ctx: &Ctx, handles: Vec<String>) {
    for r in futures::future::join_all(handles.into_iter().map(|h| ctx.acker.ack_durably(h))).await {
        match r {
            Ok(()) => {
                ctx.core.counters.deleted.fetch_add(1, Ordering::Relaxed);
            }
            // Harmless: the message comes back and rewrites the same item.
            Err(e) => tracing::warn!(error = %e, "delete failed; message will be redelivered"),
        }
    }
}

/// The persister as a Lambda function behind an SQS event source mapping on the ingest queue
/// (with `ReportBatchItemFailures`): the same preparation and writes as the long-running
/// pollers. The mapping deletes what the function reports done.
#[derive(Debug)]
pub struct LambdaHandler {
    core: Core,
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core").field("table", &self.table.table).finish_non_exhaustive()
    }
}

impl LambdaHandler {
    pub async fn new(config: &Config, aws: &AwsClients) -> Result<Self, PersistError> {
        let aws = aws.for_component(COMPONENT);
        Ok(Self { core: Core::open(config, &aws, Arc::new(Counters::default())).await? })
    }

    /// Stores the event's messages; the response names (by message id) every message that is
    /// not durable yet, so that it stays on the queue and comes back.
    pub async fn handle(
        &self,
        event: formbridge_shared::lambda::SqsEvent,
    ) -> formbridge_shared::lambda::SqsBatchResponse {
        let batch = formbridge_shared::lambda::received(&event);
        let by_receipt: HashMap<String, String> = batch.iter().map(|m| (m.receipt.clone(), m.id.clone())).collect();
        let mut pending: std::collections::BTreeSet<String> = batch.iter().map(|m| m.id.clone()).collect();
        self.core.counters.received.fetch_add(batch.len() as u64, Ordering::Relaxed);
        for receipt in store_batch(&self.core, batch).await {
            if let Some(id) = by_receipt.get(&receipt) {
                pending.remove(id);
            }
        }
        if !pending.is_empty() {
            tracing::warn!(pending = pending.len(), "messages not stored; reported as batch item failures");
        }
        formbridge_shared::lambda::sqs_response(pending)
    }

    /// What this instance did so far.
    pub fn summary(&self) -> RunSummary {
        self.core.counters.summary()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(body: &str, handle: &str) -> Received {
        Received { id: handle.into(), body: body.into(), receipt: handle.into(), receive_count: 1, attributes: vec![] }
    }

    /// A queue message body for one submission whose only field is `message`.
    fn message(text: &str) -> String {
        let serde_json::Value::Object(payload) = serde_json::json!({ "fields": { "message": text } }) else {
            unreachable!()
        };
        serde_json::to_string(&formbridge_shared::submission::QueueMessage {
            v: 1,
            submission_id: formbridge_shared::SubmissionId::new(),
            tenant_id: formbridge_shared::TenantId::parse("acme").unwrap(),
            site: formbridge_shared::SiteDomain::parse("example.com").unwrap(),
            form_id: formbridge_shared::FormId::parse("contact").unwrap(),
            received_at: "2026-11-25T08:00:00Z".into(),
            shard_count: 2,
            expires_at: 1_900_000_000,
            payload,
        })
        .unwrap()
    }

    #[test]
    fn duplicates_in_a_batch_become_one_item_and_every_copy_is_deleted() {
        let body = message("b");
        let p = prepare(&PayloadCodec::default(), vec![msg(&body, "h1"), msg(&body, "h2"), msg("{oops", "h3")]);
        assert_eq!(p.items.len(), 1);
        assert_eq!(p.items.values().next().unwrap().1, vec!["h1".to_string(), "h2".to_string()]);
        assert_eq!(p.rejected.len(), 1);
        assert_eq!(p.rejected[0].1.code(), "malformed_json");
    }

    #[test]
    fn an_item_over_the_limit_is_rejected_alone_and_the_batch_is_written() {
        let big = message(&formbridge_shared::sample::incompressible_text(700 * 1024, 7));
        let batch = vec![msg(&message("hello"), "ok1"), msg(&big, "big"), msg(&message("again"), "ok2")];
        let p = prepare(&PayloadCodec::default(), batch);
        assert_eq!(p.items.len(), 2, "the good messages of the batch are written");
        assert_eq!(p.rejected.len(), 1);
        assert_eq!(p.rejected[0].0.receipt, "big");
        assert_eq!(p.rejected[0].1.code(), "item_too_large");
    }
}

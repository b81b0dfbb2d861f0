//! Micro-batched sends to the ingest queue. Requests hand their message to one batcher task,
//! which sends up to 10 at once with SendMessageBatch after at most `linger`, and answers each
//! request with its own entry's outcome. Under load this cuts SQS requests per submission about
//! tenfold; with `linger` 0 each request still shares a call with whatever is already waiting.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
use tokio::sync::{mpsc, oneshot};

#[derive(Debug, Clone, thiserror::Error)]
pub enum EnqueueError {
    #[error("the queue is unreachable: {0}")]
    Unavailable(String),
    #[error("the queue refused the message: {0}")]
    Refused(String),
}

type Job = (String, oneshot::Sender<Result<(), EnqueueError>>);

/// How well batching works: SendMessageBatch calls against messages sent.
#[derive(Debug, Default)]
pub struct EnqueueStats {
    pub batches: AtomicU64,
    pub messages: AtomicU64,
}

/// Handle used by request handlers.
#[derive(Debug, Clone)]
pub struct Enqueuer {
    tx: mpsc::Sender<Job>,
    pub stats: Arc<EnqueueStats>,
}

impl Enqueuer {
    /// Starts the batcher task. It ends when every `Enqueuer` clone is dropped, after sending
    /// what it holds.
    pub fn start(sqs: aws_sdk_sqs::Client, queue_url: String, linger: Duration) -> Self {
        let (tx, rx) = mpsc::channel::<Job>(1024);
        let stats = Arc::new(EnqueueStats::default());
        tokio::spawn(batcher(sqs, queue_url, linger, rx, stats.clone()));
        Self { tx, stats }
    }

    /// Resolves once SQS holds the message (or says why not).
    pub async fn enqueue(&self, body: String) -> Result<(), EnqueueError> {
        let (done, wait) = oneshot::channel();
        self.tx.send((body, done)).await.map_err(|_| EnqueueError::Unavailable("ingest is shutting down".into()))?;
        wait.await.map_err(|_| EnqueueError::Unavailable("batcher stopped".into()))?
    }
}

async fn batcher(
    sqs: aws_sdk_sqs::Client,
    url: String,
    linger: Duration,
    mut rx: mpsc::Receiver<Job>,
    stats: Arc<EnqueueStats>,
) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + linger;
        while batch.len() < 10 {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) if linger.is_zero() => break,
                Err(_) => match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some(job)) => batch.push(job),
                    _ => break,
                },
            }
        }
        stats.batches.fetch_add(1, Ordering::Relaxed);
        stats.messages.fetch_add(batch.len() as u64, Ordering::Relaxed);
        send(&sqs, &url, batch).await;
    }
}

async fn send(sqs: &aws_sdk_sqs::Client, url: &str, batch: Vec<Job>) {
    metrics::histogram!("ingest_enqueue_batch_size").record(batch.len() as f64);
    let entries: Vec<_> = batch
        .iter()
        .enumerate()
        .map(|(i, (body, _))| {
            SendMessageBatchRequestEntry::builder()
                .id(i.to_string())
                .message_body(body)
                .build()
                .expect("id and body set")
        })
        .collect();
    match sqs.send_message_batch().queue_url(url).set_entries(Some(entries)).send().await {
        Ok(out) => {
            let mut results: Vec<Result<(), EnqueueError>> =
                vec![Err(EnqueueError::Unavailable("no answer for this entry".into())); batch.len()];
            for ok in out.successful {
                if let Some(r) = ok.id.parse::<usize>().ok().and_then(|i| results.get_mut(i)) {
                    *r = Ok(());
                }
            }
            for failed in out.failed {
                if let Some(r) = failed.id.parse::<usize>().ok().and_then(|i| results.get_mut(i)) {
                    let why = failed.message.unwrap_or(failed.code);
                    *r = Err(if failed.sender_fault {
                        EnqueueError::Refused(why)
                    } else {
                        EnqueueError::Unavailable(why)
                    });
                }
            }
            for ((_, done), r) in batch.into_iter().zip(results) {
                let _ = done.send(r);
            }
        }
        Err(e) => {
            let e = EnqueueError::Unavailable(aws_sdk_sqs::Error::from(e).to_string());
            tracing::error!(error = %e, messages = batch.len(), "SendMessageBatch failed");
            for (_, done) in batch {
                let _ = done.send(Err(e.clone()));
            }
        }
    }
}

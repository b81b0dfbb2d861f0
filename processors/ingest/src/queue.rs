//! Micro-batched sends to the ingest queue, on the shared queue type's lingering batcher:
//! requests hand their message over, it goes out with up to nine others in one SendMessageBatch
//! after at most `linger`, and each request is answered with its own entry's outcome. Under load
//! this cuts SQS requests per submission about tenfold; with `linger` 0 each request still shares
//! a call with whatever is already waiting.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use formbridge_shared::queue::{Lingering, Outgoing, Queue, QueueError, MAX_BATCH};

#[derive(Debug, Clone, thiserror::Error)]
pub enum EnqueueError {
    #[error("the queue is unreachable: {0}")]
    Unavailable(String),
    #[error("the queue refused the message: {0}")]
    Refused(String),
}

/// How well batching works: SendMessageBatch calls against messages sent.
#[derive(Debug, Default)]
pub struct EnqueueStats {
    pub batches: AtomicU64,
    pub messages: AtomicU64,
}

/// SendMessageBatch calls in flight at once per instance.
pub const SENDS_IN_FLIGHT: usize = 2;

/// Handle used by request handlers.
#[derive(Debug, Clone)]
pub struct Enqueuer {
    sender: Lingering<Outgoing, Result<(), QueueError>>,
    pub stats: Arc<EnqueueStats>,
}

impl Enqueuer {
    /// Starts the batcher. It ends when every `Enqueuer` clone is dropped, after sending what it
    /// holds.
    pub fn start(queue: Queue, linger: Duration) -> Self {
        let stats = Arc::new(EnqueueStats::default());
        let counted = stats.clone();
        // Two sends in flight, not the batcher's default eight: a send that lands after its
        // request's deadline answered 503 becomes a duplicate when the sender retries, and on a
        // saturated engine more sends in flight only make each one slower (the chaos run's
        // retry storm). One slow call still does not hold back the rest.
        let sender = Lingering::start_with(MAX_BATCH, linger, SENDS_IN_FLIGHT, move |messages: Vec<Outgoing>| {
            let (queue, stats) = (queue.clone(), counted.clone());
            async move {
                stats.batches.fetch_add(1, Ordering::Relaxed);
                stats.messages.fetch_add(messages.len() as u64, Ordering::Relaxed);
                metrics::histogram!("ingest_enqueue_batch_size").record(messages.len() as f64);
                let results = queue.send(&messages).await;
                if let Some(Err(e)) = results.iter().find(|r| r.is_err()) {
                    tracing::error!(error = %e, messages = messages.len(), "some submissions were not queued");
                }
                results
            }
        });
        Self { sender, stats }
    }

    /// Resolves once SQS holds the message (or says why not).
    /// Submissions waiting for a SendMessageBatch (or in one).
    pub fn waiting(&self) -> usize {
        self.sender.waiting()
    }

    pub async fn enqueue(&self, body: String) -> Result<(), EnqueueError> {
        match self.sender.submit(Outgoing::new(body)).await {
            None => Err(EnqueueError::Unavailable("ingest is shutting down".into())),
            Some(Ok(())) => Ok(()),
            Some(Err(QueueError::Refused { code, message })) => {
                Err(EnqueueError::Refused(format!("{code}: {message}")))
            }
            Some(Err(e)) => Err(EnqueueError::Unavailable(e.to_string())),
        }
    }
}

//! The stream half: a consumer group on the `FormBridgeData` stream. Each new submission (an
//! INSERT, never a rewrite) gets a message on the delivery queue for its first attempt to each
//! matching destination (a disabled one's is failed by the worker without a send, so a replay
//! after re-enabling it recovers the gap), carrying the stored submission when it fits. Nothing is written
//! to the table here: a delivery's record is written once, when its first attempt ends. The
//! checkpoint moves only after the messages are queued; the sending happens off the stream, so a
//! slow destination never holds a shard.
//!
//! A re-read batch (crash, lease hand-over) queues the first attempts again; the worker drops
//! each as a duplicate when its record exists.

use std::collections::HashMap;
use std::sync::Arc;

use formbridge_shared::delivery::DeliveryMessage;
use formbridge_shared::keys::Entity;
use formbridge_shared::queue::Outgoing;
use formbridge_shared::stream::{BatchProcessor, Change, ChangeKind, Committer, ProcessError};
use formbridge_shared::TenantId;

use crate::engine::{received_ms, Engine, EngineError};

#[derive(Debug)]
pub struct FanOut {
    pub engine: Arc<Engine>,
    /// Shards whose last batch failed part-way: their next batch may repeat messages.
    pub failed: std::sync::Mutex<std::collections::HashSet<String>>,
}

impl FanOut {
    pub fn new(engine: Arc<Engine>) -> Self {
        Self { engine, failed: Default::default() }
    }

    /// Whether `shard`'s last batch failed; records the outcome of this one when given.
    fn failed_before(&self, shard: &str, now_failed: Option<bool>) -> bool {
        let mut f = self.failed.lock().unwrap_or_else(|e| e.into_inner());
        let before = f.contains(shard);
        match now_failed {
            Some(true) => {
                f.insert(shard.to_owned());
            }
            Some(false) => {
                f.remove(shard);
            }
            None => {}
        }
        before
    }
}

fn failed(e: EngineError) -> ProcessError {
    ProcessError::Failed(e.to_string())
}

impl BatchProcessor for FanOut {
    async fn process(&self, records: &[Change], committer: &mut Committer<'_>) -> Result<(), ProcessError> {
        let shard = committer.shard().to_owned();
        // Records that may have been handled before (by a worker that died past its deferred
        // checkpoint, or by this one when its last batch failed part-way) mark their messages
        // for the worker's duplicate check.
        let recheck_all = self.failed_before(&shard, None);
        let r = self.fan_out(records, |c| recheck_all || committer.may_repeat(c)).await;
        self.failed_before(&shard, Some(r.is_err()));
        r
    }
}

impl FanOut {
    pub(crate) async fn fan_out(
        &self,
        records: &[Change],
        recheck: impl Fn(&Change) -> bool,
    ) -> Result<(), ProcessError> {
        // Destination lists current for every submission in the batch, in one batched read.
        let mut wanted: HashMap<TenantId, u64> = HashMap::new();
        for c in records {
            if let (Entity::Submission { tenant, .. }, ChangeKind::Insert, Some(new)) = (&c.entity, c.kind, &c.new) {
                let received = received_ms(new).unwrap_or(u64::MAX);
                let e = wanted.entry(tenant.clone()).or_default();
                *e = (*e).max(received);
            }
        }
        self.engine.refresh_destinations(&wanted).await.map_err(failed)?;
        tracing::debug!(records = records.len(), tenants = wanted.len(), "destination lists current");
        let mut messages = Vec::new();
        for c in records {
            let (Entity::Submission { tenant, shard, id }, ChangeKind::Insert, Some(new)) = (&c.entity, c.kind, &c.new)
            else {
                continue;
            };
            messages.extend(self.engine.fan_out(new, tenant, *shard, *id, recheck(c)).await.map_err(failed)?);
        }
        if messages.is_empty() {
            return Ok(());
        }
        let now = formbridge_shared::clock::now_ms();
        // The batch's first attempts share packs: one queue message (one billed request to send,
        // receive and delete) for up to 50 deliveries.
        let outgoing: Vec<_> = DeliveryMessage::pack(&messages, now)
            .into_iter()
            .map(|(body, due)| Outgoing::new(body).due(due, now))
            .collect();
        tracing::debug!(deliveries = messages.len(), packs = outgoing.len(), "queueing first attempts");
        self.engine.queue.send_all(&outgoing).await.map_err(|e| ProcessError::Failed(e.to_string()))?;
        metrics::counter!("delivery_messages_enqueued_total").increment(messages.len() as u64);
        metrics::counter!("delivery_queue_messages_sent_total").increment(outgoing.len() as u64);
        Ok(())
    }
}

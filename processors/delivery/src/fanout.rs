//! The stream half: a consumer group on the `FormBridgeData` stream. Each new submission (an
//! INSERT, never a rewrite) gets one delivery record per matching enabled destination, and a
//! message on the delivery queue for its first attempt. The checkpoint moves only after both
//! are durable; the sending happens off the stream, so a slow destination never holds a shard.
//!
//! A re-read batch (crash, lease hand-over) finds its records already there (conditional put)
//! and queues the first attempt again; the queue worker drops it as stale if the delivery has
//! moved on.

use std::sync::Arc;

use formbridge_shared::keys::Entity;
use formbridge_shared::stream::{BatchProcessor, Change, ChangeKind, Committer, ProcessError};
use futures::{StreamExt, TryStreamExt};

use crate::engine::{Engine, EngineError};

#[derive(Debug)]
pub struct FanOut {
    pub engine: Arc<Engine>,
}

fn failed(e: EngineError) -> ProcessError {
    ProcessError::Failed(e.to_string())
}

impl BatchProcessor for FanOut {
    async fn process(&self, records: &[Change], _committer: &mut Committer<'_>) -> Result<(), ProcessError> {
        let mut planned = Vec::new();
        for c in records {
            let (Entity::Submission { tenant, shard, id }, ChangeKind::Insert, Some(new)) = (&c.entity, c.kind, &c.new)
            else {
                continue;
            };
            let form = new.get("form_id").and_then(|v| v.as_s().ok()).cloned().unwrap_or_default();
            let site = new.get("site").and_then(|v| v.as_s().ok()).cloned().unwrap_or_default();
            let expires_at = new
                .get(formbridge_shared::keys::TTL)
                .and_then(|v| v.as_n().ok())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            planned.extend(self.engine.fan_out(tenant, *shard, *id, &form, &site, expires_at).await.map_err(failed)?);
        }
        if planned.is_empty() {
            return Ok(());
        }
        let engine = &self.engine;
        let puts: Vec<_> = planned
            .iter()
            .map(|(rec, _)| {
                let (records, rec) = (engine.records.clone(), rec.clone());
                async move { records.create(&rec).await }
            })
            .collect();
        let created: Vec<bool> = futures::stream::iter(puts)
            .buffer_unordered(32)
            .try_collect()
            .await
            .map_err(|e| ProcessError::Failed(e.to_string()))?;
        let fresh = created.iter().filter(|c| **c).count();
        metrics::counter!("delivery_records_created_total").increment(fresh as u64);
        let messages: Vec<_> = planned.into_iter().map(|(_, m)| m).collect();
        engine.queue.enqueue(&messages).await.map_err(failed)?;
        Ok(())
    }
}

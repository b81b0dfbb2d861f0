//! Replay: redeliver one submission to one destination, or every delivery of a tenant that
//! matches a destination, a status and a time range, after a dry-run count. A replay starts a
//! new round of the destination's schedule with the original `webhook-id`, so receivers that
//! already have the submission recognise it. Bulk replays are paced (a token bucket) so they
//! never flood the delivery queue ahead of live traffic.
//!
//! Replaying a pending or retrying delivery is safe while its own message is still queued: both
//! messages ask for the same attempt number, and only the worker that claims it sends.
//!
//! The bulk filter reads the tenant's GSI1 worklist (`DLV#<tenant>#<status>`), which holds
//! every delivery that is pending, retrying or failed, sorted by its due or failure time: no
//! scan. Succeeded deliveries are not on it; replay those one at a time.

use std::num::NonZeroU32;

use aws_sdk_dynamodb::types::AttributeValue;
use serde::Serialize;

use crate::clock::now_ms;
use crate::delivery::message::{DeliveryMessage, VERSION};
use crate::delivery::model::{DeliveryRecord, Status, Trigger};
use crate::delivery::records::{RecordError, Records};
use crate::keys;
use crate::queue::{Outgoing, Queue, QueueError};
use crate::tenant::TenantProfile;
use crate::{DestinationId, SubmissionId, TenantId};

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Record(#[from] RecordError),
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error("status {0} is not on the worklist: bulk replay takes pending, retrying or failed")]
    Status(Status),
}

#[derive(Debug, Clone)]
pub struct ReplayFilter {
    pub tenant: TenantId,
    pub destination: Option<DestinationId>,
    pub status: Status,
    /// Bounds (epoch ms, inclusive) on the time the delivery reached its status (failed) or is
    /// due (pending, retrying).
    pub since_ms: u64,
    pub until_ms: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ReplayReport {
    pub matched: usize,
    pub replayed: usize,
    /// Changed by a worker between the read and the replay; left as they are.
    pub skipped: usize,
}

#[derive(Debug, Clone)]
pub struct Replayer {
    pub records: Records,
    pub queue: Queue,
}

/// The message that performs a delivery's next attempt as a replay.
pub fn replay_message(rec: &DeliveryRecord, now: u64) -> DeliveryMessage {
    DeliveryMessage {
        v: VERSION,
        tenant: rec.tenant.clone(),
        shard: rec.shard,
        submission: rec.submission,
        destination: rec.destination,
        attempt: rec.attempts + 1,
        due_ms: now,
        trigger: Trigger::Replay,
        form_id: Some(rec.form_id.clone()),
        expires_at: Some(rec.expires_at),
        sub: None,
        recheck: false,
    }
}

impl Replayer {
    /// The deliveries a bulk replay would touch (the dry run).
    pub async fn matching(&self, f: &ReplayFilter) -> Result<Vec<DeliveryRecord>, ReplayError> {
        if !f.status.on_worklist() {
            return Err(ReplayError::Status(f.status));
        }
        let store = &self.records.store;
        let items: Vec<_> = store
            .client()
            .query()
            .table_name(store.table())
            .index_name("GSI1")
            .key_condition_expression("GSI1PK = :pk AND GSI1SK BETWEEN :lo AND :hi")
            .expression_attribute_values(":pk", AttributeValue::S(format!("DLV#{}#{}", f.tenant, f.status)))
            .expression_attribute_values(":lo", AttributeValue::S(format!("{:013}#", f.since_ms)))
            .expression_attribute_values(":hi", AttributeValue::S(format!("{:013}#~", f.until_ms)))
            .into_paginator()
            .items()
            .send()
            .collect::<Result<Vec<_>, _>>()
            .await
            .map_err(|e| RecordError::Dynamo(e.into()))?;
        let records =
            items.iter().map(DeliveryRecord::from_item).collect::<Result<Vec<_>, _>>().map_err(RecordError::from)?;
        Ok(records.into_iter().filter(|r| f.destination.is_none_or(|d| d == r.destination)).collect())
    }

    /// One submission's delivery to one destination, wherever its shard is.
    pub async fn find(
        &self,
        profile: &TenantProfile,
        submission: &SubmissionId,
        destination: &DestinationId,
    ) -> Result<Option<DeliveryRecord>, ReplayError> {
        for shard in profile.shards.candidate_shards(submission) {
            let k = keys::delivery(&profile.tenant_id, shard, submission, destination);
            if let Some(r) = self.records.get(&k, true).await? {
                return Ok(Some(r));
            }
        }
        Ok(None)
    }

    /// Replays one delivery: mark it pending in a new round, then queue its next attempt.
    /// Returns false when a worker changed it in between (then nothing is queued). Should the
    /// process die between the two steps, the delivery waits on the `pending` worklist, and
    /// replaying status `pending` queues it.
    pub async fn replay_one(&self, rec: &DeliveryRecord) -> Result<bool, ReplayError> {
        // An erased submission is gone: its closed delivery has nothing left to send.
        if rec.reason == Some(crate::delivery::model::FailureReason::Erased) {
            return Ok(false);
        }
        let now = now_ms();
        let after = DeliveryRecord {
            status: Status::Pending,
            round_start: rec.attempts,
            next_attempt_ms: now,
            updated_ms: now,
            reason: None,
            // An attempt in flight keeps its claim and absorbs the replay: its message and the
            // replay's ask for the same attempt number.
            ..rec.clone()
        };
        if rec.status != Status::Pending && !self.records.replace(rec, &after).await? {
            return Ok(false);
        }
        let msg = replay_message(rec, now);
        self.queue.send_all(&[Outgoing::new(msg.body())]).await?;
        Ok(true)
    }

    /// Replays `records` at most `per_second` at a time.
    pub async fn replay_all(
        &self,
        records: &[DeliveryRecord],
        per_second: NonZeroU32,
    ) -> Result<ReplayReport, ReplayError> {
        let limiter = governor::RateLimiter::direct(governor::Quota::per_second(per_second));
        let mut report = ReplayReport { matched: records.len(), ..ReplayReport::default() };
        for r in records {
            limiter.until_ready().await;
            if self.replay_one(r).await? {
                report.replayed += 1;
            } else {
                report.skipped += 1;
            }
        }
        Ok(report)
    }
}

//! Replay: redeliver one submission to one destination, or every delivery of a tenant that
//! matches a destination, a status and a time range, after a dry-run count. A replay starts a
//! new round of the destination's schedule with the original `webhook-id`, so receivers that
//! already have the submission recognise it. Bulk replays are paced (a token bucket) so they
//! never flood the delivery queue ahead of live traffic.
//!
//! The bulk filter reads the tenant's GSI1 worklist (`DLV#<tenant>#<status>`), which holds
//! every delivery that is pending, retrying or failed, sorted by its due or failure time: no
//! scan. Succeeded deliveries are not on it; replay those one at a time.

use std::num::NonZeroU32;

use aws_sdk_dynamodb::types::AttributeValue;
use formbridge_shared::keys;
use formbridge_shared::store::DataStore;
use formbridge_shared::tenant::TenantProfile;
use formbridge_shared::{DestinationId, SubmissionId, TenantId};
use serde::Serialize;

use crate::engine::now_ms;
use crate::events::rfc3339_ms;
use crate::message::{DeliveryMessage, Trigger};
use crate::queue::DeliveryQueue;
use crate::record::{DeliveryRecord, Records, Status};

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("DynamoDB: {0}")]
    Dynamo(#[from] aws_sdk_dynamodb::Error),
    #[error(transparent)]
    Queue(#[from] crate::engine::EngineError),
    #[error("{0}")]
    Store(#[from] formbridge_shared::store::StoreError),
    #[error("status {0:?} is not on the worklist: bulk replay takes pending, retrying or failed")]
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
    pub queue: DeliveryQueue,
}

impl Replayer {
    pub fn new(store: DataStore, queue: DeliveryQueue) -> Self {
        Self { records: Records { store }, queue }
    }

    fn store(&self) -> &DataStore {
        &self.records.store
    }

    /// The deliveries a bulk replay would touch (the dry run).
    pub async fn matching(&self, f: &ReplayFilter) -> Result<Vec<DeliveryRecord>, ReplayError> {
        if f.status == Status::Succeeded {
            return Err(ReplayError::Status(f.status));
        }
        let pk = format!("DLV#{}#{}", f.tenant, f.status.as_str());
        let mut q = self
            .store()
            .client()
            .query()
            .table_name(self.store().table())
            .index_name("GSI1")
            .key_condition_expression("GSI1PK = :pk AND GSI1SK BETWEEN :lo AND :hi")
            .expression_attribute_values(":pk", AttributeValue::S(pk))
            .expression_attribute_values(":lo", AttributeValue::S(format!("{:013}#", f.since_ms)))
            .expression_attribute_values(":hi", AttributeValue::S(format!("{:013}#~", f.until_ms)));
        if let Some(d) = f.destination {
            q = q.filter_expression("dest = :d").expression_attribute_values(":d", AttributeValue::S(d.to_string()));
        }
        let items: Vec<_> = q
            .into_paginator()
            .items()
            .send()
            .collect::<Result<Vec<_>, _>>()
            .await
            .map_err(aws_sdk_dynamodb::Error::from)?;
        Ok(items.iter().filter_map(DeliveryRecord::from_item).collect())
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
            let out = self
                .store()
                .client()
                .get_item()
                .table_name(self.store().table())
                .key(keys::PK, AttributeValue::S(k.pk))
                .key(keys::SK, AttributeValue::S(k.sk))
                .consistent_read(true)
                .send()
                .await
                .map_err(aws_sdk_dynamodb::Error::from)?;
            if let Some(r) = out.item.as_ref().and_then(DeliveryRecord::from_item) {
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
        let now = now_ms();
        let after = DeliveryRecord {
            status: Status::Pending,
            round_start: rec.attempts,
            next_attempt_ms: now,
            updated_at: rfc3339_ms(now),
            reason: None,
            ..rec.clone()
        };
        if rec.status != Status::Pending && !self.records.replace(rec, &after).await? {
            return Ok(false);
        }
        let msg = DeliveryMessage {
            v: 1,
            tenant: rec.tenant.clone(),
            shard: rec.shard,
            submission: rec.submission,
            destination: rec.destination,
            attempt: rec.attempts + 1,
            due_ms: now,
            trigger: Trigger::Replay,
        };
        self.queue.enqueue(std::slice::from_ref(&msg)).await?;
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

/// A submission's delivery records with their attempts (one Query of its partition family).
pub async fn history(
    store: &DataStore,
    profile: &TenantProfile,
    submission: &SubmissionId,
) -> Result<Vec<crate::record::DeliveryHistory>, ReplayError> {
    for shard in profile.shards.candidate_shards(submission) {
        let items: Vec<_> = store
            .client()
            .query()
            .table_name(store.table())
            .key_condition_expression("PK = :pk AND begins_with(SK, :p)")
            .expression_attribute_values(":pk", AttributeValue::S(keys::submission_pk(&profile.tenant_id, shard)))
            .expression_attribute_values(
                ":p",
                AttributeValue::S(format!("{}#DLV#", keys::submission_family_prefix(submission))),
            )
            .consistent_read(true)
            .into_paginator()
            .items()
            .send()
            .collect::<Result<Vec<_>, _>>()
            .await
            .map_err(aws_sdk_dynamodb::Error::from)?;
        if !items.is_empty() {
            return Ok(crate::record::histories(&items));
        }
    }
    Ok(Vec::new())
}

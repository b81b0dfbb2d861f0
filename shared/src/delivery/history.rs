//! The history reader: a submission with its whole delivery history from one Query of its item
//! family (`begins_with(SK, "SUB#<id>")`): the submission, each delivery record with its first
//! attempt inside it, and the attempt items from the second on.
//!
//! A destination that matches the submission but has no record yet is shown as `queued`: its
//! first attempt has not ended (records are written when it does).

use aws_sdk_dynamodb::types::AttributeValue;
use serde::Serialize;

use crate::attrs::{AttrError, Item};
use crate::delivery::model::{Attempt, DeliveryRecord, Status};
use crate::delivery::records::RecordError;
use crate::destination::Destination;
use crate::keys::{self, Entity};
use crate::store::DataStore;
use crate::submission::{ItemError, StoredSubmission};
use crate::tenant::TenantProfile;
use crate::{DestinationId, FormId, SubmissionId};

/// One destination's part of a submission's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeliveryHistory {
    pub destination: DestinationId,
    pub webhook_id: String,
    pub status: Status,
    /// None while queued.
    pub record: Option<DeliveryRecord>,
    /// Every recorded attempt, in order (the first from inside the record).
    pub attempts: Vec<Attempt>,
}

/// A submission and where each of its deliveries stands.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SubmissionHistory {
    pub submission: Option<StoredSubmission>,
    pub deliveries: Vec<DeliveryHistory>,
}

#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error(transparent)]
    Record(#[from] RecordError),
    #[error("the stored submission is unreadable: {0}")]
    Submission(#[from] ItemError),
}

impl From<AttrError> for HistoryError {
    fn from(e: AttrError) -> Self {
        HistoryError::Record(RecordError::Decode(e))
    }
}

/// Sorts the items of one submission family (as a Query returns them, by sort key) into a
/// history. `destinations` (the tenant's, when known) adds the ones still queued.
pub fn assemble(items: &[Item], destinations: &[Destination]) -> Result<SubmissionHistory, HistoryError> {
    let mut submission = None;
    let mut deliveries: Vec<DeliveryHistory> = Vec::new();
    for item in items {
        let a = crate::attrs::Attrs(item);
        match Entity::classify(a.s(keys::PK)?, a.s(keys::SK)?) {
            Entity::Submission { .. } => submission = Some(StoredSubmission::from_item(item)?),
            Entity::Delivery { dest, .. } => {
                let record = DeliveryRecord::from_item(item)?;
                deliveries.push(DeliveryHistory {
                    destination: dest,
                    webhook_id: record.webhook_id(),
                    status: record.status,
                    attempts: record.first_attempt.iter().cloned().collect(),
                    record: Some(record),
                });
            }
            Entity::DeliveryAttempt { dest, .. } => {
                if let Some(h) = deliveries.iter_mut().rev().find(|h| h.destination == dest) {
                    h.attempts.push(Attempt::from_item(item)?);
                }
            }
            _ => {}
        }
    }
    if let Some(sub) = &submission {
        let form = FormId::parse(&sub.form_id).ok();
        for d in destinations {
            let matches = form.as_ref().is_some_and(|f| d.matches(f, &sub.site)) && existed_at(d, &sub.received_at);
            if matches && !deliveries.iter().any(|h| h.destination == d.id) {
                deliveries.push(DeliveryHistory {
                    destination: d.id,
                    webhook_id: crate::delivery::webhook_id(&sub.submission_id, &d.id),
                    status: Status::Queued,
                    record: None,
                    attempts: Vec::new(),
                });
            }
        }
    }
    Ok(SubmissionHistory { submission, deliveries })
}

/// Whether a destination existed when a submission was received (so fan-out gave it one).
fn existed_at(d: &Destination, received_at: &str) -> bool {
    use time::format_description::well_known::Rfc3339;
    match (time::OffsetDateTime::parse(&d.created_at, &Rfc3339), time::OffsetDateTime::parse(received_at, &Rfc3339)) {
        (Ok(created), Ok(received)) => created <= received,
        _ => false,
    }
}

/// Reads a submission and its history: one Query in the partition its id maps to (older
/// partitions of the tenant's shard history only if it is not there).
pub async fn read(
    store: &DataStore,
    profile: &TenantProfile,
    submission: &SubmissionId,
    destinations: &[Destination],
) -> Result<Option<SubmissionHistory>, HistoryError> {
    for shard in profile.shards.candidate_shards(submission) {
        let items: Vec<Item> = store
            .client()
            .query()
            .table_name(store.table())
            .key_condition_expression("PK = :pk AND begins_with(SK, :p)")
            .expression_attribute_values(":pk", AttributeValue::S(keys::submission_pk(&profile.tenant_id, shard)))
            .expression_attribute_values(":p", AttributeValue::S(keys::submission_family_prefix(submission)))
            .consistent_read(true)
            .into_paginator()
            .items()
            .send()
            .collect::<Result<Vec<_>, _>>()
            .await
            .map_err(|e| RecordError::Dynamo(e.into()))?;
        if !items.is_empty() {
            return assemble(&items, destinations).map(Some);
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::model::Trigger;

    #[test]
    fn records_attempts_and_queued_destinations_make_one_history() {
        let rec = crate::delivery::model::tests::record(Status::Retrying);
        let second = Attempt {
            attempt: 2,
            at_ms: rec.created_ms + 5_000,
            status_code: 503,
            error_class: None,
            error: Some("HTTP 503".into()),
            latency_ms: 40,
            response: String::new(),
            trigger: Trigger::Scheduled,
            sends: 1,
        };
        let items = vec![rec.to_item(), second.to_item(&rec)];
        let h = assemble(&items, &[]).unwrap();
        assert_eq!(h.deliveries.len(), 1);
        let d = &h.deliveries[0];
        assert_eq!((d.status, d.attempts.len()), (Status::Retrying, 2));
        assert_eq!(d.attempts[1], second);
        assert_eq!(d.webhook_id, format!("fb_{}_{}", rec.submission, rec.destination));
    }
}

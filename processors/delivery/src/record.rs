//! Delivery records and attempt items, in the submission's partition:
//!
//! - `SUB#<id>#DLV#<dest>`: one per (submission, destination), with its status (pending,
//!   retrying, succeeded, failed), attempt count and next attempt time. While not succeeded it
//!   is also on the tenant's GSI1 worklist `DLV#<tenant>#<status>`, sorted by due time, which is
//!   what replay and operators query.
//! - `SUB#<id>#DLV#<dest>#ATT#<nnnn>`: one per attempt, never rewritten.
//!
//! So one Query (`begins_with(SK, "SUB#<id>")`) returns a submission with its whole history.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use formbridge_shared::keys::{self, ItemKey};
use formbridge_shared::{DestinationId, SubmissionId, TenantId};
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Pending,
    Retrying,
    Succeeded,
    Failed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Retrying => "retrying",
            Status::Succeeded => "succeeded",
            Status::Failed => "failed",
        }
    }
    pub fn parse(s: &str) -> Option<Status> {
        Some(match s {
            "pending" => Status::Pending,
            "retrying" => Status::Retrying,
            "succeeded" => Status::Succeeded,
            "failed" => Status::Failed,
            _ => return None,
        })
    }
    pub fn is_final(self) -> bool {
        matches!(self, Status::Succeeded | Status::Failed)
    }
}

/// Where a delivery stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeliveryRecord {
    pub tenant: TenantId,
    pub shard: u16,
    pub submission: SubmissionId,
    pub destination: DestinationId,
    pub status: Status,
    /// Attempts made over the delivery's life.
    pub attempts: u16,
    /// `attempts` when the current round began (0, or the count at the last replay); the
    /// schedule restarts with each round.
    pub round_start: u16,
    pub next_attempt_ms: u64,
    pub webhook_id: String,
    pub form_id: String,
    pub created_at: String,
    pub updated_at: String,
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
    /// Why it failed, when it did (see the DeliveryFailed event's `reason`).
    pub reason: Option<String>,
    /// The submission's expiry: history goes when the submission does.
    pub expires_at: i64,
}

/// The `webhook-id` of every send of this submission to this destination: stable across
/// retries and replays, so receivers can deduplicate.
pub fn webhook_id(submission: &SubmissionId, destination: &DestinationId) -> String {
    format!("fb_{submission}_{destination}")
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}
fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

impl DeliveryRecord {
    pub fn key(&self) -> ItemKey {
        keys::delivery(&self.tenant, self.shard, &self.submission, &self.destination)
    }

    pub fn to_item(&self) -> HashMap<String, AttributeValue> {
        let k = self.key();
        let mut item = HashMap::from([
            (keys::PK.to_owned(), s(k.pk)),
            (keys::SK.to_owned(), s(k.sk)),
            ("status".to_owned(), s(self.status.as_str())),
            ("attempts".to_owned(), n(self.attempts)),
            ("round_start".to_owned(), n(self.round_start)),
            ("next_attempt_ms".to_owned(), n(self.next_attempt_ms)),
            ("webhook_id".to_owned(), s(&self.webhook_id)),
            ("form_id".to_owned(), s(&self.form_id)),
            ("dest".to_owned(), s(self.destination.to_string())),
            ("created_at".to_owned(), s(&self.created_at)),
            ("updated_at".to_owned(), s(&self.updated_at)),
            (keys::TTL.to_owned(), n(self.expires_at)),
        ]);
        if self.status != Status::Succeeded {
            let g = keys::delivery_worklist(
                &self.tenant,
                self.status.as_str(),
                self.next_attempt_ms,
                &self.submission,
                &self.destination,
            );
            item.insert(keys::GSI1PK.into(), s(g.pk));
            item.insert(keys::GSI1SK.into(), s(g.sk));
        }
        if let Some(v) = self.last_status {
            item.insert("last_status".into(), n(v));
        }
        if let Some(v) = &self.last_error {
            item.insert("last_error".into(), s(v));
        }
        if let Some(v) = &self.reason {
            item.insert("reason".into(), s(v));
        }
        item
    }

    pub fn from_item(item: &HashMap<String, AttributeValue>) -> Option<DeliveryRecord> {
        let st = |k: &str| item.get(k).and_then(|v| v.as_s().ok()).cloned();
        let num = |k: &str| item.get(k).and_then(|v| v.as_n().ok()).and_then(|v| v.parse::<i64>().ok());
        let (tenant, shard, submission, destination) = match keys::Entity::classify(&st(keys::PK)?, &st(keys::SK)?) {
            keys::Entity::Delivery { tenant, shard, id, dest } => (tenant, shard, id, dest),
            _ => return None,
        };
        Some(DeliveryRecord {
            tenant,
            shard,
            submission,
            destination,
            status: Status::parse(&st("status")?)?,
            attempts: u16::try_from(num("attempts")?).ok()?,
            round_start: u16::try_from(num("round_start").unwrap_or(0)).ok()?,
            next_attempt_ms: u64::try_from(num("next_attempt_ms")?).ok()?,
            webhook_id: st("webhook_id")?,
            form_id: st("form_id")?,
            created_at: st("created_at")?,
            updated_at: st("updated_at")?,
            last_status: num("last_status").and_then(|v| u16::try_from(v).ok()),
            last_error: st("last_error"),
            reason: st("reason"),
            expires_at: num(keys::TTL)?,
        })
    }
}

/// Reads and writes of delivery records.
#[derive(Debug, Clone)]
pub struct Records {
    pub store: formbridge_shared::store::DataStore,
}

type DynErr = aws_sdk_dynamodb::Error;

impl Records {
    /// Creates a delivery record unless it exists (a re-read stream record).
    pub async fn create(&self, rec: &DeliveryRecord) -> Result<bool, DynErr> {
        let put = self
            .store
            .client()
            .put_item()
            .table_name(self.store.table())
            .set_item(Some(rec.to_item()))
            .condition_expression("attribute_not_exists(PK)")
            .send()
            .await
            .map_err(DynErr::from);
        match put {
            Ok(_) => Ok(true),
            Err(DynErr::ConditionalCheckFailedException(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Replaces a record, on the condition that it is still as `before` was read.
    pub async fn replace(&self, before: &DeliveryRecord, after: &DeliveryRecord) -> Result<bool, DynErr> {
        let put = self
            .store
            .client()
            .put_item()
            .table_name(self.store.table())
            .set_item(Some(after.to_item()))
            .condition_expression("attempts = :a AND #s = :s")
            .expression_attribute_names("#s", "status")
            .expression_attribute_values(":a", AttributeValue::N(before.attempts.to_string()))
            .expression_attribute_values(":s", AttributeValue::S(before.status.as_str().into()))
            .send()
            .await
            .map_err(DynErr::from);
        match put {
            Ok(_) => Ok(true),
            Err(DynErr::ConditionalCheckFailedException(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// One attempt, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Attempt {
    pub attempt: u16,
    pub at: String,
    pub at_ms: u64,
    /// The HTTP status, or 0 when no response came.
    pub status_code: u16,
    /// For status 0 (and blocked or redirected sends): timeout, connection_refused, dns, tls, ...
    pub error_class: Option<String>,
    pub error: Option<String>,
    pub latency_ms: u64,
    /// The response body, at most 4 KiB.
    pub response: String,
    pub trigger: String,
}

/// Response bodies kept per attempt.
pub const MAX_RESPONSE_BYTES: usize = 4096;

impl Attempt {
    pub fn to_item(&self, rec: &DeliveryRecord) -> HashMap<String, AttributeValue> {
        let k = keys::delivery_attempt(&rec.tenant, rec.shard, &rec.submission, &rec.destination, self.attempt);
        let mut item = HashMap::from([
            (keys::PK.to_owned(), s(k.pk)),
            (keys::SK.to_owned(), s(k.sk)),
            ("attempt".to_owned(), n(self.attempt)),
            ("at".to_owned(), s(&self.at)),
            ("at_ms".to_owned(), n(self.at_ms)),
            ("status_code".to_owned(), n(self.status_code)),
            ("latency_ms".to_owned(), n(self.latency_ms)),
            ("trigger".to_owned(), s(&self.trigger)),
            (keys::TTL.to_owned(), n(rec.expires_at)),
        ]);
        if !self.response.is_empty() {
            item.insert("response".into(), s(&self.response));
        }
        if let Some(v) = &self.error_class {
            item.insert("error_class".into(), s(v));
        }
        if let Some(v) = &self.error {
            item.insert("error".into(), s(v));
        }
        item
    }

    pub fn from_item(item: &HashMap<String, AttributeValue>) -> Option<Attempt> {
        let st = |k: &str| item.get(k).and_then(|v| v.as_s().ok()).cloned();
        let num = |k: &str| item.get(k).and_then(|v| v.as_n().ok()).and_then(|v| v.parse::<u64>().ok());
        Some(Attempt {
            attempt: u16::try_from(num("attempt")?).ok()?,
            at: st("at")?,
            at_ms: num("at_ms")?,
            status_code: u16::try_from(num("status_code")?).ok()?,
            error_class: st("error_class"),
            error: st("error"),
            latency_ms: num("latency_ms")?,
            response: st("response").unwrap_or_default(),
            trigger: st("trigger").unwrap_or_default(),
        })
    }
}

/// A submission's delivery history: every delivery record with its attempts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeliveryHistory {
    pub record: DeliveryRecord,
    pub attempts: Vec<Attempt>,
}

/// Sorts the items of one submission family (as a Query returns them) into histories.
pub fn histories(items: &[HashMap<String, AttributeValue>]) -> Vec<DeliveryHistory> {
    let mut out: Vec<DeliveryHistory> = Vec::new();
    for item in items {
        let pk = item.get(keys::PK).and_then(|v| v.as_s().ok());
        let sk = item.get(keys::SK).and_then(|v| v.as_s().ok());
        let (Some(pk), Some(sk)) = (pk, sk) else { continue };
        match keys::Entity::classify(pk, sk) {
            keys::Entity::Delivery { .. } => {
                if let Some(record) = DeliveryRecord::from_item(item) {
                    out.push(DeliveryHistory { record, attempts: Vec::new() });
                }
            }
            keys::Entity::DeliveryAttempt { dest, .. } => {
                if let (Some(h), Some(a)) =
                    (out.iter_mut().rev().find(|h| h.record.destination == dest), Attempt::from_item(item))
                {
                    h.attempts.push(a);
                }
            }
            _ => {}
        }
    }
    out
}

/// Cuts a response body to at most `MAX_RESPONSE_BYTES`, on a character boundary.
pub fn truncate_body(bytes: &[u8]) -> String {
    let cut = &bytes[..bytes.len().min(MAX_RESPONSE_BYTES)];
    let text = String::from_utf8_lossy(cut);
    let mut t = text.into_owned();
    while t.len() > MAX_RESPONSE_BYTES {
        t.pop();
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(status: Status) -> DeliveryRecord {
        let submission = SubmissionId::new();
        let destination = DestinationId::new();
        DeliveryRecord {
            tenant: TenantId::parse("acme").unwrap(),
            shard: 3,
            submission,
            destination,
            status,
            attempts: 2,
            round_start: 0,
            next_attempt_ms: 1_764_000_000_000,
            webhook_id: webhook_id(&submission, &destination),
            form_id: "contact".into(),
            created_at: "2026-11-25T10:00:00Z".into(),
            updated_at: "2026-11-25T10:00:05Z".into(),
            last_status: Some(500),
            last_error: None,
            reason: None,
            expires_at: 1_800_000_000,
        }
    }

    #[test]
    fn records_round_trip_and_leave_the_worklist_when_succeeded() {
        let r = rec(Status::Retrying);
        let item = r.to_item();
        assert_eq!(DeliveryRecord::from_item(&item).unwrap(), r);
        assert_eq!(item[keys::GSI1PK].as_s().unwrap(), "DLV#acme#retrying");
        let done = rec(Status::Succeeded).to_item();
        assert!(!done.contains_key(keys::GSI1PK));
    }

    #[test]
    fn bodies_are_cut_at_4_kib_on_a_char_boundary() {
        assert_eq!(truncate_body(b"ok"), "ok");
        let long = "é".repeat(5000);
        let t = truncate_body(long.as_bytes());
        assert!(t.len() <= MAX_RESPONSE_BYTES && t.len() >= MAX_RESPONSE_BYTES - 4);
    }

    #[test]
    fn webhook_ids_are_stable_per_submission_and_destination() {
        let (s, d) = (SubmissionId::new(), DestinationId::new());
        assert_eq!(webhook_id(&s, &d), webhook_id(&s, &d));
        assert_ne!(webhook_id(&s, &d), webhook_id(&s, &DestinationId::new()));
    }
}

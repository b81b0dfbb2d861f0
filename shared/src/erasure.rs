//! Erasure of one person's submissions within a tenant (a GDPR request).
//!
//! The search reads the tenant's own partitions only (every shard of its shard history, by
//! Query, in key order, never a scan of the table) and decodes each payload. A submission matches
//! when any string in its payload contains the address, ignoring case, so an address typed into
//! a message field is found as well as one in an email field.
//!
//! For each match, in its partition:
//! - the submission item is deleted;
//! - every attempt item is deleted;
//! - every delivery record is replaced by a marker (`status` failed, `reason` erased) that keeps
//!   only ids, the form id, counts and times: no payload, no response body, no error text. The
//!   marker is what makes erasure stick: a retry already in the delivery queue finds its delivery
//!   closed and is dropped instead of sending the payload it carries, and the aggregator counts
//!   nothing for it. It is off the worklist index, so no replay picks it up, and it expires after
//!   [`MARKER_TTL_DAYS`].
//!
//! Metric counts stay: they hold no personal data. Copies already delivered to destinations are
//! beyond reach; the receipt lists the destinations that received each erased submission, so
//! the tenant can follow up there.
//!
//! Running it again finds nothing more (the submissions are gone), so an interrupted erasure is
//! finished by asking again.

use std::collections::BTreeSet;

use aws_sdk_dynamodb::types::{AttributeValue, DeleteRequest, PutRequest, WriteRequest};
use serde::Serialize;
use time::OffsetDateTime;

use crate::attrs::Item;
use crate::audit::AuditEvent;
use crate::delivery::model::{DeliveryRecord, FailureReason, Status};
use crate::keys::{self, Entity};
use crate::secrets::Keyring;
use crate::store::{DataStore, StoreError};
use crate::submission::{ItemError, SubmissionFields};
use crate::tenant::TenantProfile;
use crate::DestinationId;

/// How long an erasure marker outlives the erasure: past the delivery queue's longest message
/// retention (14 days) and any retry schedule.
pub const MARKER_TTL_DAYS: u64 = 15;
const RECEIPT_PURPOSE: &str = "erasure-receipt";

/// What an erasure did. Ids and the address appear only as keyed hashes (HMAC under the master
/// key), so the receipt and the audit event can be kept without keeping the personal data.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ErasureReceipt {
    pub submissions_scanned: u64,
    pub submissions_erased: u64,
    pub deliveries_closed: u64,
    pub attempts_deleted: u64,
    /// HMAC-SHA256 (first 16 bytes, hex) of `<tenant>/<submission id>`, one per erased submission.
    pub submission_hashes: Vec<String>,
    /// HMAC of the lower-cased address, to match a receipt to a request later.
    pub email_hash: String,
    /// Destinations that received at least one erased submission: erasure cannot reach the
    /// copies there.
    pub delivered_to: BTreeSet<DestinationId>,
}

#[derive(Debug, thiserror::Error)]
pub enum ErasureError {
    #[error("the address must be an email address (something@domain, at most 254 characters)")]
    Email,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("a stored item is unreadable: {0}")]
    Item(#[from] ItemError),
    #[error("a stored delivery record is unreadable: {0}")]
    Record(#[from] crate::attrs::AttrError),
}

fn hash(keyring: &Keyring, data: &str) -> String {
    keyring.mac(RECEIPT_PURPOSE, data.as_bytes())[..16].iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether any string in `v` contains `needle` (already lower-case), ignoring case.
fn mentions(v: &serde_json::Value, needle: &str) -> bool {
    match v {
        serde_json::Value::String(s) => s.to_lowercase().contains(needle),
        serde_json::Value::Array(a) => a.iter().any(|x| mentions(x, needle)),
        serde_json::Value::Object(o) => o.values().any(|x| mentions(x, needle)),
        _ => false,
    }
}

fn key_of(item: &Item) -> Option<(String, String)> {
    Some((item.get(keys::PK)?.as_s().ok()?.clone(), item.get(keys::SK)?.as_s().ok()?.clone()))
}

fn delete(pk: String, sk: String) -> WriteRequest {
    let key = std::collections::HashMap::from([
        (keys::PK.to_owned(), AttributeValue::S(pk)),
        (keys::SK.to_owned(), AttributeValue::S(sk)),
    ]);
    WriteRequest::builder()
        .delete_request(DeleteRequest::builder().set_key(Some(key)).build().expect("key is set"))
        .build()
}

/// The marker that replaces a delivery record: closed, off the worklist, nothing personal.
fn marker(rec: &DeliveryRecord, now_ms: u64) -> Item {
    let closed = DeliveryRecord {
        status: Status::Failed,
        reason: Some(FailureReason::Erased),
        next_attempt_ms: now_ms,
        updated_ms: now_ms,
        last_status: None,
        last_error: None,
        last_latency_ms: None,
        claim: None,
        first_attempt: None,
        expires_at: i64::try_from(now_ms / 1000 + MARKER_TTL_DAYS * 86_400).unwrap_or(i64::MAX),
        ..rec.clone()
    };
    let mut item = closed.to_item();
    item.remove(keys::GSI1PK);
    item.remove(keys::GSI1SK);
    item
}

impl DataStore {
    /// Erases every submission of `profile`'s tenant that mentions `email`, with its delivery
    /// history, and audits it. See the module documentation.
    pub async fn erase_person(
        &self,
        profile: &TenantProfile,
        email: &str,
        keyring: &Keyring,
        actor: &str,
        now: OffsetDateTime,
    ) -> Result<ErasureReceipt, ErasureError> {
        let needle = email.trim().to_lowercase();
        let valid = needle.len() <= 254
            && needle.split_once('@').is_some_and(|(l, d)| !l.is_empty() && d.contains('.') && !d.ends_with('.'))
            && !needle.chars().any(char::is_whitespace);
        if !valid {
            return Err(ErasureError::Email);
        }
        let now_ms = u64::try_from(now.unix_timestamp_nanos() / 1_000_000).unwrap_or(0);
        let tenant = &profile.tenant_id;
        let mut receipt = ErasureReceipt { email_hash: hash(keyring, &needle), ..ErasureReceipt::default() };
        let mut writes: Vec<WriteRequest> = Vec::new();
        // The submissions themselves go last, after every marker and attempt deletion is
        // written: an erasure cut short then leaves the submissions findable, so asking again
        // finishes it (deleted first, their still-open deliveries would never be found again).
        let mut submissions: Vec<WriteRequest> = Vec::new();
        for shard in profile.shards.read_shards() {
            // Ascending key order: a submission, then its delivery records and attempts.
            let mut erasing: Option<crate::SubmissionId> = None;
            let mut start = None;
            loop {
                let page = self
                    .client()
                    .query()
                    .table_name(self.table())
                    .key_condition_expression("PK = :pk AND begins_with(SK, :sub)")
                    .expression_attribute_values(":pk", AttributeValue::S(keys::submission_pk(tenant, shard)))
                    .expression_attribute_values(":sub", AttributeValue::S("SUB#".into()))
                    .set_exclusive_start_key(start.take())
                    .send()
                    .await
                    .map_err(|e| StoreError::Dynamo(e.into()))?;
                for item in page.items() {
                    let Some((pk, sk)) = key_of(item) else { continue };
                    match Entity::classify(&pk, &sk) {
                        Entity::Submission { id, .. } => {
                            receipt.submissions_scanned += 1;
                            let f = SubmissionFields::read(item)?;
                            let raw = crate::codec::decode(f.codec, f.payload).map_err(ItemError::from)?;
                            let payload: serde_json::Value = serde_json::from_slice(&raw).map_err(ItemError::from)?;
                            erasing = mentions(&payload, &needle).then_some(id);
                            if erasing.is_some() {
                                receipt.submissions_erased += 1;
                                receipt.submission_hashes.push(hash(keyring, &format!("{tenant}/{id}")));
                                submissions.push(delete(pk, sk));
                            }
                        }
                        Entity::Delivery { id, .. } if erasing == Some(id) => {
                            let rec = DeliveryRecord::from_item(item)?;
                            if rec.reason == Some(FailureReason::Erased) {
                                continue;
                            }
                            if rec.status == Status::Succeeded || rec.attempts > 0 {
                                receipt.delivered_to.insert(rec.destination);
                            }
                            receipt.deliveries_closed += 1;
                            let put = PutRequest::builder().set_item(Some(marker(&rec, now_ms))).build().expect("item");
                            writes.push(WriteRequest::builder().put_request(put).build());
                        }
                        Entity::DeliveryAttempt { id, .. } if erasing == Some(id) => {
                            receipt.attempts_deleted += 1;
                            writes.push(delete(pk, sk));
                        }
                        _ => {}
                    }
                }
                // Bounded memory: write as the read goes.
                if writes.len() >= 100 {
                    self.batch_write(std::mem::take(&mut writes)).await?;
                }
                match page.last_evaluated_key {
                    Some(k) => start = Some(k),
                    None => break,
                }
            }
        }
        self.batch_write(writes).await?;
        self.batch_write(submissions).await?;
        let detail = serde_json::json!({
            "actor": actor,
            "email_hash": receipt.email_hash,
            "submissions_erased": receipt.submissions_erased,
            "deliveries_closed": receipt.deliveries_closed,
            "attempts_deleted": receipt.attempts_deleted,
            "submission_hashes": receipt.submission_hashes,
            "delivered_to": receipt.delivered_to,
        });
        self.record_audit(&AuditEvent::api(tenant, now, "submissions.erased", detail)).await?;
        Ok(receipt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_address_is_found_anywhere_in_the_payload_ignoring_case() {
        let p = json!({"fields": {"name": "Ann", "note": ["call", "Me at ANN@Example.com please"]}, "meta": {}});
        assert!(mentions(&p, "ann@example.com"));
        assert!(!mentions(&p, "bob@example.com"));
        assert!(!mentions(&json!({"fields": {"n": 5}}), "5"));
    }
}

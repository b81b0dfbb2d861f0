//! The delivery queue's message: which delivery, which attempt, when, and (for payloads that
//! fit) the stored submission itself, so the worker sends without reading the table.
//!
//! The fan-out already holds the submission's new image from the stream; carrying its stored
//! (compressed) payload costs nothing in DynamoDB and keeps a first attempt to one write. Payloads
//! over [`MAX_INLINE_BYTES`] are read from the table when sent.

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::attrs::{submission as sb, Item};
use crate::codec::Codec;
use crate::delivery::model::Trigger;
use crate::keys;
use crate::submission::{epoch_ms, ItemError, StoredSubmission, SubmissionFields};
use crate::{DestinationId, SubmissionId, TenantId};

/// The version this code writes. Version 1 (no inline submission) is still read.
pub const VERSION: u8 = 2;

/// Stored payloads up to this size travel in the message.
pub const MAX_INLINE_BYTES: usize = 48 * 1024;

/// The stored submission's attributes, as the persister wrote them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InlineSubmission {
    pub site: String,
    pub form_id: String,
    pub received_at: String,
    pub raw_size: u64,
    pub codec: String,
    /// The stored payload bytes, base64.
    pub payload: String,
}

impl InlineSubmission {
    /// From a stored submission item (the stream's new image); `None` when its payload is too
    /// big to carry.
    pub fn from_item(item: &Item) -> Result<Option<InlineSubmission>, ItemError> {
        let f = SubmissionFields::read(item)?;
        if f.payload.len() > MAX_INLINE_BYTES {
            return Ok(None);
        }
        Ok(Some(InlineSubmission {
            site: f.site.to_owned(),
            form_id: f.form.to_owned(),
            received_at: f.received_at(),
            raw_size: f.raw_size,
            codec: f.codec.marker().to_owned(),
            payload: base64::engine::general_purpose::STANDARD.encode(f.payload),
        }))
    }

    /// The submission, decoded, as if read from the table.
    pub fn decode(&self, m: &DeliveryMessage) -> Result<StoredSubmission, ItemError> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(&self.payload)
            .map_err(|_| crate::attrs::AttrError::Invalid(sb::PAYLOAD))?;
        let received = time::OffsetDateTime::parse(&self.received_at, &time::format_description::well_known::Rfc3339)
            .map_err(|_| crate::attrs::AttrError::Invalid(sb::RECEIVED_MS))?;
        let fields = SubmissionFields {
            site: &self.site,
            form: &self.form_id,
            received_ms: epoch_ms(received),
            raw_size: self.raw_size,
            codec: Codec::from_marker(&self.codec)?,
            payload: &bytes,
            expires_at: m.expires_at.unwrap_or(0),
        };
        StoredSubmission::from_item(&fields.to_item(keys::submission(&m.tenant, m.shard, &m.submission)))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryMessage {
    pub v: u8,
    pub tenant: TenantId,
    pub shard: u16,
    pub submission: SubmissionId,
    pub destination: DestinationId,
    /// The attempt this message performs (1-based, over the delivery's whole life). A message
    /// whose attempt the delivery record has already passed is stale and dropped.
    pub attempt: u16,
    /// Epoch ms when the attempt is due; the queue's delay is at most 15 minutes, so longer
    /// waits are chained.
    pub due_ms: u64,
    #[serde(default)]
    pub trigger: Trigger,
    /// The submission's form (so a record can be written without reading the submission).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub form_id: Option<String>,
    /// The submission's expiry (epoch seconds): a delivery due after it fails as expired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
    /// The submission, when it fits; otherwise the worker reads it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<InlineSubmission>,
    /// Set by a fan-out that may be repeating a batch (the first after taking a lease, or a retry
    /// after an error): the worker checks for an existing record before a first attempt.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub recheck: bool,
}

impl DeliveryMessage {
    pub fn body(&self) -> String {
        serde_json::to_string(self).expect("message serialises")
    }

    pub fn parse(body: &str) -> Result<Self, serde_json::Error> {
        let m: Self = serde_json::from_str(body)?;
        if !(1..=VERSION).contains(&m.v) {
            return Err(serde::de::Error::custom(format!("unsupported version {}", m.v)));
        }
        Ok(m)
    }

    /// The message for the next attempt of the same delivery.
    pub fn next(&self, attempt: u16, due_ms: u64, trigger: Trigger) -> DeliveryMessage {
        DeliveryMessage { v: VERSION, attempt, due_ms, trigger, ..self.clone() }
    }

    pub fn webhook_id(&self) -> String {
        crate::delivery::webhook_id(&self.submission, &self.destination)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::PayloadCodec;
    use crate::submission::Submission;

    fn stored_item() -> (Submission, Item) {
        let body = r#"{"v":1,"submission_id":"01JDQ7Z8X0000000000000000A","tenant_id":"acme","site":"www.example.com","form_id":"contact","received_at":"2026-11-25T08:00:00.123Z","shard_count":4,"expires_at":1800000000,"payload":{"fields":{"message":"hello there, a question about prices"},"meta":{}}}"#;
        let s = Submission::from_message_body(body).unwrap();
        let item = s.to_item(&PayloadCodec::default());
        (s, item)
    }

    #[test]
    fn an_inline_submission_decodes_like_the_stored_item() {
        let (s, item) = stored_item();
        let inline = InlineSubmission::from_item(&item).unwrap().unwrap();
        let m = DeliveryMessage {
            v: VERSION,
            tenant: s.tenant.clone(),
            shard: s.shard,
            submission: s.id,
            destination: DestinationId::new(),
            attempt: 1,
            due_ms: 42,
            trigger: Trigger::Scheduled,
            form_id: Some("contact".into()),
            expires_at: Some(s.expires_at),
            sub: Some(inline),
            recheck: true,
        };
        let back = DeliveryMessage::parse(&m.body()).unwrap();
        assert_eq!(back, m);
        let decoded = back.sub.as_ref().unwrap().decode(&back).unwrap();
        let direct = StoredSubmission::from_item(&item).unwrap();
        assert_eq!(decoded.payload, direct.payload);
        assert_eq!(decoded, direct, "the same submission, down to its stored size");
        assert_eq!(direct.received_at, "2026-11-25T08:00:00.123Z");
    }

    #[test]
    fn big_payloads_stay_in_the_table_and_versions_are_checked() {
        let (_, mut item) = stored_item();
        item.insert(
            sb::PAYLOAD.into(),
            // The codec byte (identity), then one byte more than travels inline.
            aws_sdk_dynamodb::types::AttributeValue::B(aws_sdk_dynamodb::primitives::Blob::new(vec![
                0;
                MAX_INLINE_BYTES
                    + 2
            ])),
        );
        assert_eq!(InlineSubmission::from_item(&item).unwrap(), None);
        let v1 = format!(
            r#"{{"v":1,"tenant":"acme","shard":0,"submission":"{}","destination":"{}","attempt":1,"due_ms":5}}"#,
            SubmissionId::new(),
            DestinationId::new()
        );
        let m = DeliveryMessage::parse(&v1).unwrap();
        assert_eq!((m.sub, m.trigger), (None, Trigger::Scheduled));
        assert!(DeliveryMessage::parse(&v1.replace("\"v\":1", "\"v\":3")).is_err());
    }
}

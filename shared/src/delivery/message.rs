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

/// A pack (several delivery messages in one queue message) stays under this many bytes, so one
/// pack is one billed SQS request (SQS bills per 64 KiB) however many deliveries it carries.
pub const MAX_PACK_BYTES: usize = 60 * 1024;
/// And carries at most this many deliveries (they are attempted together, and a pack whose work
/// fails is received again whole).
pub const MAX_PACK: usize = 50;

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
        serde_json::from_str::<Self>(body)?.supported()
    }

    fn supported(self) -> Result<Self, serde_json::Error> {
        if !(1..=VERSION).contains(&self.v) {
            return Err(serde::de::Error::custom(format!("unsupported version {}", self.v)));
        }
        Ok(self)
    }

    /// Every delivery in a queue message's body: one message, or a pack (`{"pack":[...]}`).
    pub fn parse_all(body: &str) -> Result<Vec<Self>, serde_json::Error> {
        #[derive(Deserialize)]
        struct Pack {
            pack: Vec<DeliveryMessage>,
        }
        if body.trim_start().starts_with("{\"pack\"") {
            let p: Pack = serde_json::from_str(body)?;
            if p.pack.is_empty() {
                return Err(serde::de::Error::custom("an empty pack"));
            }
            return p.pack.into_iter().map(Self::supported).collect();
        }
        Ok(vec![Self::parse(body)?])
    }

    /// Queue message bodies for `messages`, each with the time it is due: messages already due at
    /// `now_ms` share packs of at most [`MAX_PACK`] deliveries and [`MAX_PACK_BYTES`]; one due
    /// later, or too big to share, travels alone. A pack of one is a plain message.
    ///
    /// SQS bills each send, receive and delete per request (per 64 KiB), and takes at most 10
    /// messages a call: one delivery per message costs at least 0.3 requests a delivery, a
    /// pack of 25 about 0.01.
    pub fn pack(messages: &[DeliveryMessage], now_ms: u64) -> Vec<(String, u64)> {
        const WRAPPER: usize = r#"{"pack":[]}"#.len();
        let mut out = Vec::new();
        let mut open: Vec<String> = Vec::new();
        let mut open_bytes = WRAPPER;
        let mut open_due = 0;
        let close = |open: &mut Vec<String>, due: u64, out: &mut Vec<(String, u64)>| match open.len() {
            0 => {}
            1 => out.push((open.pop().expect("one"), due)),
            _ => {
                out.push((format!(r#"{{"pack":[{}]}}"#, open.join(",")), due));
                open.clear();
            }
        };
        for m in messages {
            let body = m.body();
            if m.due_ms > now_ms || body.len() + WRAPPER > MAX_PACK_BYTES {
                out.push((body, m.due_ms));
                continue;
            }
            if open.len() == MAX_PACK || open_bytes + body.len() + 1 > MAX_PACK_BYTES {
                close(&mut open, open_due, &mut out);
                open_bytes = WRAPPER;
                open_due = 0;
            }
            open_bytes += body.len() + 1;
            open_due = open_due.max(m.due_ms);
            open.push(body);
        }
        close(&mut open, open_due, &mut out);
        out
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

    fn message(i: u16, due_ms: u64, inline: Option<InlineSubmission>) -> DeliveryMessage {
        DeliveryMessage {
            v: VERSION,
            tenant: TenantId::parse("acme").unwrap(),
            shard: i % 4,
            submission: SubmissionId::parse("01JDQ7Z8X0000000000000000A").unwrap(),
            destination: DestinationId::parse(&format!("01JDQ7Z8X00000000000000{:03}", i)).unwrap(),
            attempt: 1,
            due_ms,
            trigger: Trigger::Scheduled,
            form_id: Some("contact".into()),
            expires_at: None,
            sub: inline,
            recheck: false,
        }
    }

    #[test]
    fn due_messages_share_packs_within_the_size_and_count_bounds() {
        let now = 1_000_000;
        let (_, item) = stored_item();
        let inline = InlineSubmission::from_item(&item).unwrap();
        let mut ms: Vec<DeliveryMessage> = (0..120).map(|i| message(i, now, inline.clone())).collect();
        // Due later (a paused destination's): alone, with its own delay.
        ms.push(message(500, now + 30_000, inline.clone()));
        let packed = DeliveryMessage::pack(&ms, now);
        let mut back = Vec::new();
        for (body, due) in &packed {
            assert!(body.len() <= MAX_PACK_BYTES, "{}", body.len());
            let jobs = DeliveryMessage::parse_all(body).unwrap();
            assert!(jobs.len() <= MAX_PACK);
            assert!(jobs.iter().all(|j| j.due_ms <= *due));
            back.extend(jobs);
        }
        let ids = |v: &[DeliveryMessage]| {
            let mut d: Vec<String> = v.iter().map(|m| m.destination.to_string()).collect();
            d.sort();
            d
        };
        assert!(back.len() == ms.len() && ids(&back) == ids(&ms), "every delivery exactly once");
        // 120 due now: three packs (50, 50, 20); the one due later alone, as a plain message.
        let shape: Vec<(usize, u64)> =
            packed.iter().map(|(b, d)| (DeliveryMessage::parse_all(b).unwrap().len(), *d)).collect();
        assert_eq!(shape.len(), 4, "{shape:?}");
        assert!(shape.contains(&(1, now + 30_000)) && shape.iter().filter(|(n, _)| *n == 50).count() == 2, "{shape:?}");
        let alone = packed.iter().find(|(_, d)| *d == now + 30_000).unwrap();
        assert!(DeliveryMessage::parse(&alone.0).is_ok(), "a message alone is a plain message");
    }

    #[test]
    fn a_pack_of_one_is_a_plain_message_and_a_bad_pack_is_refused() {
        let m = message(1, 5, None);
        let packed = DeliveryMessage::pack(std::slice::from_ref(&m), 10);
        assert_eq!(packed, vec![(m.body(), 5)]);
        assert_eq!(DeliveryMessage::parse_all(&m.body()).unwrap(), vec![m.clone()]);
        assert!(DeliveryMessage::parse_all(r#"{"pack":[]}"#).is_err());
        let bad = format!(r#"{{"pack":[{},{}]}}"#, m.body(), m.body().replace("\"v\":2", "\"v\":9"));
        assert!(DeliveryMessage::parse_all(&bad).is_err(), "one unreadable delivery refuses the pack");
    }

    #[test]
    fn a_message_too_big_to_share_travels_alone() {
        let (_, item) = stored_item();
        let mut inline = InlineSubmission::from_item(&item).unwrap().unwrap();
        inline.payload = "A".repeat(MAX_PACK_BYTES);
        let ms = vec![message(1, 0, None), message(2, 0, Some(inline)), message(3, 0, None)];
        let packed = DeliveryMessage::pack(&ms, 0);
        assert_eq!(packed.len(), 2, "the big one alone, the two small ones together");
        let sizes: Vec<usize> = packed.iter().map(|(b, _)| DeliveryMessage::parse_all(b).unwrap().len()).collect();
        assert_eq!(sizes.iter().sum::<usize>(), 3);
    }

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

//! A submission's two wire forms: the queue message that ingest enqueues (schema:
//! `schemas/queue-submission.schema.json`) and the DynamoDB item the persister writes.
//!
//! Every attribute of the item is fixed by the message (ids, shard count, received-at, TTL), and
//! encoding is deterministic, so a redelivered message rewrites a byte-identical item. Nothing in
//! here may consult the clock.

use std::collections::HashMap;

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::attrs::{submission as sb, Attrs};
use crate::codec::{self, Codec, PayloadCodec};
use crate::ids::{FormId, SiteDomain, SubmissionId, TenantId};
use crate::keys::{self, ItemKey};
use crate::sharding::{shard_of, MAX_SHARDS};

/// The queue message format version this code writes and reads.
pub const MESSAGE_VERSION: u8 = 1;

/// The largest payload accepted: what one SQS message holds.
pub const MAX_PAYLOAD_BYTES: usize = 1024 * 1024;

/// DynamoDB's limit on one item (attribute names and values, after compression).
pub const MAX_ITEM_BYTES: usize = 400 * 1024;

/// SQS message attribute naming why the persister moved a message to the DLQ (a stable code).
pub const REJECT_REASON_ATTRIBUTE: &str = "formbridge-reject-reason";
/// SQS message attribute with the human-readable detail of the rejection.
pub const REJECT_DETAIL_ATTRIBUTE: &str = "formbridge-reject-detail";
/// The reason of a dead letter that carries none: SQS's redrive policy moved it after it failed
/// to be written `maxReceiveCount` times (the engine was failing; see the persister's logs). It
/// is the one worth sending back once the cause is gone.
pub const REPEATED_FAILURES: &str = "redriven_after_repeated_failures";

/// Why a message of the ingest DLQ is there: the persister's reject reason, or
/// [`REPEATED_FAILURES`].
pub fn dead_letter_reason(m: &crate::queue::Received) -> String {
    m.attribute(REJECT_REASON_ATTRIBUTE).unwrap_or(REPEATED_FAILURES).to_owned()
}

/// The queue message. Field names are the public contract between ingest (and replays) and the
/// persister; the JSON Schema in `schemas/` says the same.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueMessage {
    pub v: u8,
    pub submission_id: SubmissionId,
    pub tenant_id: TenantId,
    pub site: SiteDomain,
    pub form_id: FormId,
    /// When ingest accepted it, RFC 3339 UTC.
    pub received_at: String,
    /// The tenant's shard count in force at the submission id's time.
    pub shard_count: u16,
    /// When the stored submission expires (DynamoDB TTL, epoch seconds).
    pub expires_at: i64,
    /// `{"fields": {...}, "meta": {...}, "submitted_at": ...}` as the site sent it.
    pub payload: Map<String, Value>,
}

impl QueueMessage {
    /// Builds the message ingest enqueues: every attribute of the future item is fixed here,
    /// from the tenant profile in force at `received_at`, so redelivery rewrites the same item.
    pub fn new(
        profile: &crate::tenant::TenantProfile,
        site: SiteDomain,
        form_id: FormId,
        submission_id: SubmissionId,
        received_at: OffsetDateTime,
        payload: Map<String, Value>,
    ) -> QueueMessage {
        // Stored as epoch milliseconds: what is finer would not survive the round trip.
        let received_at = received_at.to_offset(time::UtcOffset::UTC);
        let received_at =
            received_at.replace_nanosecond(received_at.nanosecond() / 1_000_000 * 1_000_000).unwrap_or(received_at);
        // A form's own retention, when the tenant set one for it, from this submission on.
        let retention_days = profile.retention_for(form_id.as_str());
        QueueMessage {
            v: MESSAGE_VERSION,
            submission_id,
            tenant_id: profile.tenant_id.clone(),
            site,
            form_id,
            received_at: received_at.format(&Rfc3339).unwrap_or_default(),
            // The count in force at the id's time, not now: a retry after a growth lands where
            // the first attempt did.
            shard_count: profile.shards.count_at(submission_id.timestamp_ms()),
            expires_at: received_at.unix_timestamp() + i64::from(retention_days) * 86_400,
            payload,
        }
    }
}

/// Why a queue message was rejected. The persister sends it to the DLQ with this reason.
#[derive(Debug, thiserror::Error)]
pub enum MessageError {
    #[error("message is not valid JSON for the queue schema: {0}")]
    Json(#[from] serde_json::Error),
    #[error("unsupported message version {0} (this build reads {MESSAGE_VERSION})")]
    Version(u8),
    #[error("shard_count must be between 1 and {MAX_SHARDS}, got {0}")]
    ShardCount(u16),
    #[error("received_at {0:?} is not an RFC 3339 timestamp")]
    ReceivedAt(String),
    #[error("expires_at must be after received_at")]
    ExpiresAt,
    #[error("payload.fields must be a JSON object")]
    Fields,
    #[error("payload.meta must be an object and payload.submitted_at a string")]
    Envelope,
    #[error("payload is {0} bytes, over the {MAX_PAYLOAD_BYTES}-byte limit")]
    TooLarge(usize),
    #[error("the stored item would be {0} bytes after compression, over DynamoDB's 400 KB item limit")]
    ItemTooLarge(usize),
}

impl MessageError {
    /// A stable code for the DLQ reason attribute and metrics labels.
    pub fn code(&self) -> &'static str {
        match self {
            MessageError::Json(_) => "malformed_json",
            MessageError::Version(_) => "unsupported_version",
            MessageError::ShardCount(_) => "bad_shard_count",
            MessageError::ReceivedAt(_) => "bad_received_at",
            MessageError::ExpiresAt => "bad_expires_at",
            MessageError::Fields => "bad_fields",
            MessageError::Envelope => "bad_envelope",
            MessageError::TooLarge(_) => "payload_too_large",
            MessageError::ItemTooLarge(_) => "item_too_large",
        }
    }
}

/// A validated submission, ready to become an item.
#[derive(Debug, Clone, PartialEq)]
pub struct Submission {
    pub id: SubmissionId,
    pub tenant: TenantId,
    pub site: SiteDomain,
    pub form: FormId,
    pub received_at: OffsetDateTime,
    pub shard: u16,
    pub expires_at: i64,
    /// The payload serialised canonically (object keys sorted), so it is stable across retries.
    pub raw_payload: Vec<u8>,
}

impl Submission {
    /// Parses and validates a queue message body.
    pub fn from_message_body(body: &str) -> Result<Submission, MessageError> {
        Self::from_message(serde_json::from_str(body)?)
    }

    pub fn from_message(m: QueueMessage) -> Result<Submission, MessageError> {
        if m.v != MESSAGE_VERSION {
            return Err(MessageError::Version(m.v));
        }
        if m.shard_count == 0 || m.shard_count > MAX_SHARDS {
            return Err(MessageError::ShardCount(m.shard_count));
        }
        let received_at = OffsetDateTime::parse(&m.received_at, &Rfc3339)
            .map_err(|_| MessageError::ReceivedAt(m.received_at.chars().take(40).collect()))?;
        if m.expires_at <= received_at.unix_timestamp() {
            return Err(MessageError::ExpiresAt);
        }
        if !m.payload.get("fields").is_some_and(Value::is_object) {
            return Err(MessageError::Fields);
        }
        if m.payload.get("meta").is_some_and(|v| !v.is_object())
            || m.payload.get("submitted_at").is_some_and(|v| !v.is_string())
        {
            return Err(MessageError::Envelope);
        }
        let raw_payload = serde_json::to_vec(&m.payload)?;
        if raw_payload.len() > MAX_PAYLOAD_BYTES {
            return Err(MessageError::TooLarge(raw_payload.len()));
        }
        Ok(Submission {
            shard: shard_of(&m.submission_id, m.shard_count),
            id: m.submission_id,
            tenant: m.tenant_id,
            site: m.site,
            form: m.form_id,
            received_at,
            expires_at: m.expires_at,
            raw_payload,
        })
    }

    pub fn key(&self) -> ItemKey {
        keys::submission(&self.tenant, self.shard, &self.id)
    }

    /// The item, or [`MessageError::ItemTooLarge`] when it cannot be stored.
    pub fn to_checked_item(&self, codec: &PayloadCodec) -> Result<HashMap<String, AttributeValue>, MessageError> {
        let item = self.to_item(codec);
        match crate::capacity::item_size(&item) {
            size if size > MAX_ITEM_BYTES => Err(MessageError::ItemTooLarge(size)),
            _ => Ok(item),
        }
    }

    /// The DynamoDB item (layout 2, see [`crate::attrs::submission`]).
    pub fn to_item(&self, codec: &PayloadCodec) -> HashMap<String, AttributeValue> {
        let encoded = codec.encode(&self.raw_payload);
        let fields = SubmissionFields {
            site: self.site.as_str(),
            form: self.form.as_str(),
            received_ms: epoch_ms(self.received_at),
            raw_size: self.raw_payload.len() as u64,
            codec: encoded.codec,
            payload: &encoded.bytes,
            expires_at: self.expires_at,
        };
        fields.to_item(self.key())
    }
}

/// Milliseconds since the epoch (0 before it).
pub fn epoch_ms(t: OffsetDateTime) -> u64 {
    u64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(0)
}

/// RFC 3339 of an epoch-milliseconds time, as exact as the milliseconds.
pub fn rfc3339_ms(ms: u64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}

/// A stored submission's own attributes, read from either item layout: what the aggregator, the
/// fan-out and the readers need without decoding the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubmissionFields<'a> {
    pub site: &'a str,
    pub form: &'a str,
    pub received_ms: u64,
    pub raw_size: u64,
    pub codec: Codec,
    /// The encoded payload (without the codec byte).
    pub payload: &'a [u8],
    /// DynamoDB TTL, epoch seconds.
    pub expires_at: i64,
}

impl<'a> SubmissionFields<'a> {
    pub fn read(item: &'a HashMap<String, AttributeValue>) -> Result<SubmissionFields<'a>, ItemError> {
        let a = Attrs(item);
        let expires_at = a.n(keys::TTL)?;
        if item.contains_key(sb::PAYLOAD) {
            let (&id, payload) =
                a.b(sb::PAYLOAD)?.split_first().ok_or(crate::attrs::AttrError::Invalid(sb::PAYLOAD))?;
            return Ok(SubmissionFields {
                site: a.s(sb::SITE)?,
                form: a.s(sb::FORM)?,
                received_ms: a.n(sb::RECEIVED_MS)?,
                raw_size: a.n(sb::RAW_SIZE)?,
                codec: Codec::from_id(id)?,
                payload,
                expires_at,
            });
        }
        let received_at = a.s(sb::v1::RECEIVED_AT)?;
        let received = OffsetDateTime::parse(received_at, &Rfc3339)
            .map_err(|_| crate::attrs::AttrError::Invalid(sb::v1::RECEIVED_AT))?;
        Ok(SubmissionFields {
            site: a.s(sb::v1::SITE)?,
            form: a.s(sb::v1::FORM)?,
            received_ms: epoch_ms(received),
            raw_size: a.n(sb::v1::RAW_SIZE)?,
            codec: Codec::from_marker(a.s(sb::v1::CODEC)?)?,
            payload: a.b(sb::v1::PAYLOAD)?,
            expires_at,
        })
    }

    /// The item of layout 2 under `key`.
    pub fn to_item(&self, key: ItemKey) -> HashMap<String, AttributeValue> {
        let mut payload = Vec::with_capacity(self.payload.len() + 1);
        payload.push(self.codec.id());
        payload.extend_from_slice(self.payload);
        HashMap::from([
            (keys::PK.to_owned(), AttributeValue::S(key.pk)),
            (keys::SK.to_owned(), AttributeValue::S(key.sk)),
            (sb::SITE.to_owned(), AttributeValue::S(self.site.to_owned())),
            (sb::FORM.to_owned(), AttributeValue::S(self.form.to_owned())),
            (sb::RECEIVED_MS.to_owned(), AttributeValue::N(self.received_ms.to_string())),
            (keys::TTL.to_owned(), AttributeValue::N(self.expires_at.to_string())),
            (sb::RAW_SIZE.to_owned(), AttributeValue::N(self.raw_size.to_string())),
            (sb::PAYLOAD.to_owned(), AttributeValue::B(Blob::new(payload))),
        ])
    }

    /// The receive time as RFC 3339.
    pub fn received_at(&self) -> String {
        rfc3339_ms(self.received_ms)
    }
}

/// A submission read back from the table, payload decoded.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoredSubmission {
    pub tenant_id: TenantId,
    pub submission_id: SubmissionId,
    pub shard: u16,
    pub site: String,
    pub form_id: String,
    pub received_at: String,
    pub expires_at: i64,
    pub raw_size: usize,
    pub stored_size: usize,
    pub codec: &'static str,
    pub payload: Value,
}

#[derive(Debug, thiserror::Error)]
pub enum ItemError {
    #[error("item key is not a submission key")]
    NotASubmission,
    #[error(transparent)]
    Attr(#[from] crate::attrs::AttrError),
    #[error(transparent)]
    Codec(#[from] codec::CodecError),
    #[error("stored payload is not JSON: {0}")]
    Json(#[from] serde_json::Error),
}

impl StoredSubmission {
    pub fn from_item(item: &HashMap<String, AttributeValue>) -> Result<StoredSubmission, ItemError> {
        let a = Attrs(item);
        let (tenant, shard, id) = match keys::Entity::classify(a.s(keys::PK)?, a.s(keys::SK)?) {
            keys::Entity::Submission { tenant, shard, id } => (tenant, shard, id),
            _ => return Err(ItemError::NotASubmission),
        };
        let f = SubmissionFields::read(item)?;
        let raw = codec::decode(f.codec, f.payload)?;
        Ok(StoredSubmission {
            tenant_id: tenant,
            submission_id: id,
            shard,
            site: f.site.to_owned(),
            form_id: f.form.to_owned(),
            received_at: f.received_at(),
            expires_at: f.expires_at,
            raw_size: usize::try_from(f.raw_size).unwrap_or(usize::MAX),
            stored_size: crate::capacity::item_size(item),
            codec: f.codec.marker(),
            payload: serde_json::from_slice(&raw)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::text_heavy_payload;

    pub(crate) fn message(size: usize) -> QueueMessage {
        let Value::Object(payload) = text_heavy_payload(size, 3) else { unreachable!() };
        QueueMessage {
            v: 1,
            submission_id: SubmissionId::parse("01JDQ7Z8X0000000000000000A").unwrap(),
            tenant_id: TenantId::parse("acme").unwrap(),
            site: SiteDomain::parse("www.example.com").unwrap(),
            form_id: FormId::parse("contact").unwrap(),
            received_at: "2026-11-25T08:00:00.123Z".into(),
            shard_count: 4,
            expires_at: 1_800_000_000,
            payload,
        }
    }

    #[test]
    fn item_round_trips_through_decode() {
        for size in [200, 2048, 12 * 1024] {
            let m = message(size);
            let sub = Submission::from_message(m.clone()).unwrap();
            let item = sub.to_item(&PayloadCodec::default());
            let back = StoredSubmission::from_item(&item).unwrap();
            assert_eq!(back.payload, Value::Object(m.payload.clone()));
            assert_eq!(back.submission_id, m.submission_id);
            assert_eq!(back.tenant_id, m.tenant_id);
            assert_eq!(back.expires_at, m.expires_at);
            assert_eq!(back.codec, if back.raw_size > codec::DEFAULT_THRESHOLD { "br.d2" } else { "id" });
            assert!(back.shard < 4);
        }
    }

    /// Found by the `queue_message` fuzz target: serde_json's default float parser is not
    /// correctly rounded for long literals, so a number of many digits a form sent could read back
    /// one unit in the last place off after storage (the item is built from the parsed message,
    /// and re-parsing its JSON gave another f64). The workspace enables `float_roundtrip`.
    #[test]
    fn numbers_in_a_payload_survive_storage_exactly() {
        let long = "98888888888088888888808888888088888888888808888888088888888888888888888888888888888888888888880888888888888888888888888888888600";
        let mut m = message(200);
        m.payload.insert("placeholder".into(), serde_json::json!(0));
        let body = serde_json::to_string(&m)
            .unwrap()
            .replace(r#""placeholder":0"#, &format!(r#""long":{long},"sum":0.30000000000000004"#));
        let parsed: f64 = long.parse().unwrap();
        let sent: QueueMessage = serde_json::from_str(&body).unwrap();
        let sub = Submission::from_message_body(&body).unwrap();
        let back = StoredSubmission::from_item(&sub.to_item(&PayloadCodec::default())).unwrap();
        assert_eq!(back.payload, Value::Object(sent.payload), "storage changes nothing");
        assert_eq!(back.payload["long"].as_f64(), Some(parsed), "the correctly rounded value");
        assert_eq!(back.payload["sum"].as_f64(), Some(0.1 + 0.2));
    }

    /// Items written before layout 2 (long names, RFC 3339, the codec marker apart) keep
    /// reading, payloads compressed with dictionary v1 included.
    #[test]
    fn a_layout_1_item_still_reads() {
        let m = message(2048);
        let sub = Submission::from_message(m.clone()).unwrap();
        let key = sub.key();
        let compressed = codec::brotli_compress_with_dictionary(&sub.raw_payload, 5, 18, codec::DICTIONARY_V1);
        let item = HashMap::from([
            (keys::PK.to_owned(), AttributeValue::S(key.pk)),
            (keys::SK.to_owned(), AttributeValue::S(key.sk)),
            ("site".to_owned(), AttributeValue::S("www.example.com".into())),
            ("form_id".to_owned(), AttributeValue::S("contact".into())),
            ("received_at".to_owned(), AttributeValue::S("2026-11-25T08:00:00.123Z".into())),
            ("ttl".to_owned(), AttributeValue::N("1800000000".into())),
            ("raw_size".to_owned(), AttributeValue::N(sub.raw_payload.len().to_string())),
            ("codec".to_owned(), AttributeValue::S("br.d1".into())),
            ("payload".to_owned(), AttributeValue::B(Blob::new(compressed))),
        ]);
        let old = StoredSubmission::from_item(&item).unwrap();
        let new = StoredSubmission::from_item(&sub.to_item(&PayloadCodec::default())).unwrap();
        assert_eq!(old.codec, "br.d1");
        assert_eq!(old.payload, Value::Object(m.payload));
        assert_eq!(
            (&old.site, &old.form_id, &old.received_at, old.expires_at, old.raw_size, &old.payload),
            (&new.site, &new.form_id, &new.received_at, new.expires_at, new.raw_size, &new.payload)
        );
        assert!(new.stored_size < old.stored_size, "layout 2 is smaller: {} vs {}", new.stored_size, old.stored_size);
        let fields = SubmissionFields::read(&item).unwrap();
        assert_eq!(fields.received_ms, 1_795_593_600_123);
    }

    #[test]
    fn a_payload_with_an_unknown_codec_byte_is_an_error() {
        let sub = Submission::from_message(message(300)).unwrap();
        let mut item = sub.to_item(&PayloadCodec::default());
        item.insert(sb::PAYLOAD.into(), AttributeValue::B(Blob::new(vec![200, 1, 2])));
        assert!(matches!(StoredSubmission::from_item(&item), Err(ItemError::Codec(_))));
        item.insert(sb::PAYLOAD.into(), AttributeValue::B(Blob::new(vec![])));
        assert!(matches!(StoredSubmission::from_item(&item), Err(ItemError::Attr(_))));
    }

    #[test]
    fn the_same_message_builds_the_same_item() {
        let body = serde_json::to_string(&message(4096)).unwrap();
        let a = Submission::from_message_body(&body).unwrap().to_item(&PayloadCodec::default());
        let b = Submission::from_message_body(&body).unwrap().to_item(&PayloadCodec::default());
        assert_eq!(a, b);
    }

    #[test]
    fn bad_messages_name_their_problem() {
        let mut m = message(100);
        m.v = 2;
        assert_eq!(Submission::from_message(m).unwrap_err().code(), "unsupported_version");
        let mut m = message(100);
        m.shard_count = 0;
        assert_eq!(Submission::from_message(m).unwrap_err().code(), "bad_shard_count");
        let mut m = message(100);
        m.received_at = "yesterday".into();
        assert_eq!(Submission::from_message(m).unwrap_err().code(), "bad_received_at");
        let mut m = message(100);
        m.expires_at = 0;
        assert_eq!(Submission::from_message(m).unwrap_err().code(), "bad_expires_at");
        let mut m = message(100);
        m.payload.insert("fields".into(), Value::String("x".into()));
        assert_eq!(Submission::from_message(m).unwrap_err().code(), "bad_fields");
        let forged = serde_json::to_string(&message(100)).unwrap().replace("\"acme\"", "\"acme#SUB\"");
        assert_eq!(Submission::from_message_body(&forged).unwrap_err().code(), "malformed_json");
        assert_eq!(Submission::from_message_body("{not json").unwrap_err().code(), "malformed_json");
    }
}

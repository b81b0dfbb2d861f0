//! The delivery record and its attempts, and the closed sets that describe them: `Status`,
//! `ErrorClass`, `Trigger` and `FailureReason`. Strings stand for these only inside the item
//! codec and the JSON views.
//!
//! Items, in the submission's partition:
//! - `SUB#<id>#DLV#<dest>`: the delivery record, written once when the first attempt ends, with
//!   that attempt inside it (`a1`). While not succeeded it is on the tenant's GSI1 worklist
//!   `DLV#<tenant>#<status>`, sorted by due time.
//! - `SUB#<id>#DLV#<dest>#ATT#<nnnn>`: attempts from the second on, one item each.
//!
//! Before its first attempt ends a delivery has no item: the history shows it as queued.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use serde::{Deserialize, Serialize};

use crate::attrs::{self, attempt as at, delivery as dv, AttrError, Attrs, Item};
use crate::keys::{self, Entity, ItemKey};
use crate::{DestinationId, SubmissionId, TenantId};

/// Declares a closed set of values with its stable lower-case names.
macro_rules! named_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $v:ident => $s:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($(#[$vm])* $v),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$v),+];
            pub fn as_str(self) -> &'static str {
                match self { $($name::$v => $s),+ }
            }
            pub fn parse(s: &str) -> Option<$name> {
                match s { $($s => Some($name::$v),)+ _ => None }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

named_enum! {
    /// Where a delivery stands. `Queued` is never stored: it is what the history shows for a
    /// matching destination whose first attempt has not ended yet.
    Status {
        Queued => "queued",
        Pending => "pending",
        Retrying => "retrying",
        Succeeded => "succeeded",
        Failed => "failed",
    }
}

impl Status {
    pub fn is_final(self) -> bool {
        matches!(self, Status::Succeeded | Status::Failed)
    }

    /// Whether the delivery waits on the GSI1 worklist in this status.
    pub fn on_worklist(self) -> bool {
        matches!(self, Status::Pending | Status::Retrying | Status::Failed)
    }
}

named_enum! {
    /// What kind of failure a send without an HTTP answer ended in.
    ErrorClass {
        Timeout => "timeout",
        ConnectionRefused => "connection_refused",
        Dns => "dns",
        Tls => "tls",
        BlockedAddress => "blocked_address",
        Connection => "connection",
        Redirect => "redirect",
        Other => "other",
    }
}

impl ErrorClass {
    /// Whether sending again later might succeed. A refused address or a refused redirect will
    /// be refused again until the tenant changes the destination.
    pub fn retryable(self) -> bool {
        !matches!(self, Self::BlockedAddress | Self::Redirect)
    }
}

named_enum! {
    /// Why an attempt happens.
    Trigger {
        /// The first attempt after fan-out, or a retry on the schedule.
        Scheduled => "scheduled",
        /// Asked for by an operator or the API (replay).
        Replay => "replay",
    }
}

#[allow(clippy::derivable_impls)] // the enum comes from `named_enum!`, which derives no Default
impl Default for Trigger {
    fn default() -> Self {
        Trigger::Scheduled
    }
}

named_enum! {
    /// Why a delivery failed (the DeliveryFailed event's `reason`).
    FailureReason {
        /// The destination answered 410 Gone and was disabled.
        Gone => "gone",
        /// The retry schedule ran out on transient failures.
        Exhausted => "exhausted",
        /// The short schedule for 4xx answers ran out.
        ClientError => "client_error",
        /// The destination redirected; redirects are not followed.
        Redirect => "redirect",
        /// The destination's address is not allowed (private, loopback, ...).
        BlockedAddress => "blocked_address",
        DestinationDeleted => "destination_deleted",
        DestinationDisabled => "destination_disabled",
        /// The submission expired (retention) before it could be sent.
        SubmissionExpired => "submission_expired",
        /// The delivery's message was dead-lettered after repeated errors in the worker.
        DeadLettered => "dead_lettered",
        /// The submission was erased at the person's request; the record is a marker that holds
        /// no personal data and closes the delivery, so a queued retry never sends.
        Erased => "erased",
    }
}

/// The `webhook-id` of every send of this submission to this destination: stable across
/// retries and replays, so receivers can deduplicate.
pub fn webhook_id(submission: &SubmissionId, destination: &DestinationId) -> String {
    format!("fb_{submission}_{destination}")
}

/// One attempt, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Attempt {
    pub attempt: u16,
    pub at_ms: u64,
    /// The HTTP status, or 0 when no response came.
    pub status_code: u16,
    /// For status 0 (and blocked or redirected sends).
    pub error_class: Option<ErrorClass>,
    pub error: Option<String>,
    pub latency_ms: u64,
    /// The response body: at most 4 KiB, and at most 256 bytes for a success.
    pub response: String,
    pub trigger: Trigger,
    /// Times this attempt number was sent (above 1 after a crash between send and record).
    pub sends: u16,
}

/// Response bodies kept per attempt.
pub const MAX_RESPONSE_BYTES: usize = 4096;
/// Response bodies kept for a successful attempt: receivers rarely say anything useful in
/// them, and the record must stay within one write unit.
pub const MAX_SUCCESS_RESPONSE_BYTES: usize = 256;

/// Cuts a response body to at most `max` bytes, on a character boundary.
pub fn truncate_body(bytes: &[u8], max: usize) -> String {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(max)]).into_owned();
    let mut cut = text.len().min(max);
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    text[..cut].to_owned()
}

impl Attempt {
    fn attributes(&self) -> Item {
        let mut m = Item::from([
            (at::NUMBER.to_owned(), attrs::n(self.attempt)),
            (at::AT_MS.to_owned(), attrs::n(self.at_ms)),
            (at::STATUS.to_owned(), attrs::n(self.status_code)),
            (at::LATENCY_MS.to_owned(), attrs::n(self.latency_ms)),
        ]);
        if self.trigger != Trigger::Scheduled {
            m.insert(at::TRIGGER.into(), attrs::s(self.trigger.as_str()));
        }
        if self.sends > 1 {
            m.insert(at::SENDS.into(), attrs::n(self.sends));
        }
        if !self.response.is_empty() {
            m.insert(at::RESPONSE.into(), attrs::s(&self.response));
        }
        if let Some(c) = self.error_class {
            m.insert(at::ERROR_CLASS.into(), attrs::s(c.as_str()));
        }
        if let Some(e) = &self.error {
            m.insert(at::ERROR.into(), attrs::s(e));
        }
        m
    }

    fn from_attributes(item: &Item) -> Result<Attempt, AttrError> {
        let a = Attrs(item);
        Ok(Attempt {
            attempt: a.n(at::NUMBER)?,
            at_ms: a.n(at::AT_MS)?,
            status_code: a.n(at::STATUS)?,
            error_class: a.opt_s(at::ERROR_CLASS)?.map(|s| ErrorClass::parse(s).unwrap_or(ErrorClass::Other)),
            error: a.opt_s(at::ERROR)?.map(str::to_owned),
            latency_ms: a.n(at::LATENCY_MS)?,
            response: a.opt_s(at::RESPONSE)?.unwrap_or_default().to_owned(),
            trigger: match a.opt_s(at::TRIGGER)? {
                None => Trigger::Scheduled,
                Some(t) => Trigger::parse(t).ok_or(AttrError::Invalid(at::TRIGGER))?,
            },
            sends: a.opt_n(at::SENDS)?.unwrap_or(1),
        })
    }

    /// The attempt's own item (attempts from the second on).
    pub fn to_item(&self, rec: &DeliveryRecord) -> Item {
        let k = keys::delivery_attempt(&rec.tenant, rec.shard, &rec.submission, &rec.destination, self.attempt);
        let mut item = self.attributes();
        item.insert(keys::PK.into(), attrs::s(k.pk));
        item.insert(keys::SK.into(), attrs::s(k.sk));
        item.insert(keys::TTL.into(), attrs::n(rec.expires_at));
        item
    }

    pub fn from_item(item: &Item) -> Result<Attempt, AttrError> {
        Self::from_attributes(item)
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
    pub form_id: String,
    pub created_ms: u64,
    pub updated_ms: u64,
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
    pub last_latency_ms: Option<u64>,
    pub reason: Option<FailureReason>,
    /// The attempt a worker has claimed, and until when (attempts after the first).
    pub claim: Option<(u16, u64)>,
    /// The first attempt (none when the delivery failed before any send).
    pub first_attempt: Option<Attempt>,
    /// The submission's expiry: history goes when the submission does.
    pub expires_at: i64,
}

impl DeliveryRecord {
    pub fn key(&self) -> ItemKey {
        keys::delivery(&self.tenant, self.shard, &self.submission, &self.destination)
    }

    pub fn webhook_id(&self) -> String {
        webhook_id(&self.submission, &self.destination)
    }

    pub fn to_item(&self) -> Item {
        let k = self.key();
        let mut item = HashMap::from([
            (keys::PK.to_owned(), attrs::s(k.pk)),
            (keys::SK.to_owned(), attrs::s(k.sk)),
            (dv::STATUS.to_owned(), attrs::s(self.status.as_str())),
            (dv::ATTEMPTS.to_owned(), attrs::n(self.attempts)),
            (dv::NEXT_ATTEMPT_MS.to_owned(), attrs::n(self.next_attempt_ms)),
            (dv::FORM.to_owned(), attrs::s(&self.form_id)),
            (dv::CREATED_MS.to_owned(), attrs::n(self.created_ms)),
            (dv::UPDATED_MS.to_owned(), attrs::n(self.updated_ms)),
            (keys::TTL.to_owned(), attrs::n(self.expires_at)),
        ]);
        if self.status.on_worklist() {
            let g = keys::delivery_worklist(
                &self.tenant,
                self.status.as_str(),
                self.next_attempt_ms,
                &self.submission,
                &self.destination,
            );
            item.insert(keys::GSI1PK.into(), attrs::s(g.pk));
            item.insert(keys::GSI1SK.into(), attrs::s(g.sk));
        }
        let mut opt = |name: &str, v: Option<AttributeValue>| {
            if let Some(v) = v {
                item.insert(name.to_owned(), v);
            }
        };
        opt(dv::ROUND_START, (self.round_start > 0).then(|| attrs::n(self.round_start)));
        opt(dv::LAST_STATUS, self.last_status.map(attrs::n));
        opt(dv::LAST_ERROR, self.last_error.as_deref().map(attrs::s));
        opt(dv::LAST_LATENCY_MS, self.last_latency_ms.map(attrs::n));
        opt(dv::REASON, self.reason.map(|r| attrs::s(r.as_str())));
        opt(dv::CLAIM, self.claim.map(|(a, _)| attrs::n(a)));
        opt(dv::CLAIM_UNTIL_MS, self.claim.map(|(_, u)| attrs::n(u)));
        opt(dv::FIRST_ATTEMPT, self.first_attempt.as_ref().map(|a| AttributeValue::M(a.attributes())));
        item
    }

    pub fn from_item(item: &Item) -> Result<DeliveryRecord, AttrError> {
        let a = Attrs(item);
        let (tenant, shard, submission, destination) = match Entity::classify(a.s(keys::PK)?, a.s(keys::SK)?) {
            Entity::Delivery { tenant, shard, id, dest } => (tenant, shard, id, dest),
            _ => return Err(AttrError::Key("delivery record")),
        };
        let claim = match (a.opt_n(dv::CLAIM)?, a.opt_n(dv::CLAIM_UNTIL_MS)?) {
            (Some(c), Some(u)) => Some((c, u)),
            _ => None,
        };
        Ok(DeliveryRecord {
            tenant,
            shard,
            submission,
            destination,
            status: a.parsed(dv::STATUS, Status::parse)?,
            attempts: a.n(dv::ATTEMPTS)?,
            round_start: a.opt_n(dv::ROUND_START)?.unwrap_or(0),
            next_attempt_ms: a.n(dv::NEXT_ATTEMPT_MS)?,
            form_id: a.s(dv::FORM)?.to_owned(),
            created_ms: a.n(dv::CREATED_MS)?,
            updated_ms: a.n(dv::UPDATED_MS)?,
            last_status: a.opt_n(dv::LAST_STATUS)?,
            last_error: a.opt_s(dv::LAST_ERROR)?.map(str::to_owned),
            last_latency_ms: a.opt_n(dv::LAST_LATENCY_MS)?,
            reason: match a.opt_s(dv::REASON)? {
                None => None,
                Some(r) => Some(FailureReason::parse(r).ok_or(AttrError::Invalid(dv::REASON))?),
            },
            claim,
            first_attempt: a.opt_map(dv::FIRST_ATTEMPT)?.map(Attempt::from_attributes).transpose()?,
            expires_at: a.n(keys::TTL)?,
        })
    }
}

/// What the aggregator reads from a change of a delivery record: its status and attempt count
/// before and after, and the latency of the attempt that changed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordChange {
    pub before: Option<(Status, u16)>,
    pub after: (Status, u16),
    pub latency_ms: u64,
    /// The change is an erasure closing the delivery: no outcome, no attempt.
    pub erased: bool,
}

impl RecordChange {
    pub fn read(old: Option<&Item>, new: &Item) -> Result<RecordChange, AttrError> {
        let state = |i: &Item| -> Result<(Status, u16), AttrError> {
            let a = Attrs(i);
            Ok((a.parsed(dv::STATUS, Status::parse)?, a.n(dv::ATTEMPTS)?))
        };
        Ok(RecordChange {
            before: old.map(state).transpose()?,
            after: state(new)?,
            latency_ms: Attrs(new).opt_n(dv::LAST_LATENCY_MS)?.unwrap_or(0),
            erased: Attrs(new).opt_s(dv::REASON)? == Some(FailureReason::Erased.as_str()),
        })
    }

    /// The status the delivery reached with this change, if it newly became final.
    pub fn outcome(&self) -> Option<Status> {
        if self.erased {
            return None;
        }
        let (status, _) = self.after;
        (status.is_final() && self.before.map(|(s, _)| s) != Some(status)).then_some(status)
    }

    /// Attempts this change records.
    pub fn new_attempts(&self) -> u16 {
        if self.erased {
            return 0;
        }
        self.after.1.saturating_sub(self.before.map_or(0, |(_, n)| n))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn record(status: Status) -> DeliveryRecord {
        DeliveryRecord {
            tenant: TenantId::parse("acme").unwrap(),
            shard: 3,
            submission: SubmissionId::new(),
            destination: DestinationId::new(),
            status,
            attempts: 1,
            round_start: 0,
            next_attempt_ms: 1_764_000_000_000,
            form_id: "contact".into(),
            created_ms: 1_764_000_000_000,
            updated_ms: 1_764_000_000_120,
            last_status: Some(200),
            last_error: None,
            last_latency_ms: Some(120),
            reason: None,
            claim: None,
            first_attempt: Some(Attempt {
                attempt: 1,
                at_ms: 1_764_000_000_000,
                status_code: 200,
                error_class: None,
                error: None,
                latency_ms: 120,
                response: "ok".into(),
                trigger: Trigger::Scheduled,
                sends: 1,
            }),
            expires_at: 1_800_000_000,
        }
    }

    #[test]
    fn records_round_trip_and_leave_the_worklist_when_succeeded() {
        let mut r = record(Status::Retrying);
        r.reason = Some(FailureReason::Exhausted);
        r.claim = Some((2, 99));
        r.round_start = 1;
        let item = r.to_item();
        assert_eq!(DeliveryRecord::from_item(&item).unwrap(), r);
        assert_eq!(item[keys::GSI1PK].as_s().unwrap(), "DLV#acme#retrying");
        assert!(!record(Status::Succeeded).to_item().contains_key(keys::GSI1PK));
    }

    #[test]
    fn a_successful_first_attempt_fits_one_write_unit() {
        let mut r = record(Status::Succeeded);
        if let Some(a) = r.first_attempt.as_mut() {
            a.response = "x".repeat(MAX_SUCCESS_RESPONSE_BYTES);
        }
        let size = crate::capacity::item_size(&r.to_item());
        assert!(size <= 1024, "a succeeded record is {size} bytes");
    }

    #[test]
    fn decoding_names_the_attribute_that_is_wrong() {
        let mut item = record(Status::Pending).to_item();
        item.insert(dv::STATUS.into(), attrs::s("delivered"));
        assert_eq!(DeliveryRecord::from_item(&item), Err(AttrError::Invalid(dv::STATUS)));
        item.remove(dv::STATUS);
        assert_eq!(DeliveryRecord::from_item(&item), Err(AttrError::Missing(dv::STATUS)));
    }

    #[test]
    fn bodies_are_cut_on_a_char_boundary() {
        assert_eq!(truncate_body(b"ok", 10), "ok");
        let t = truncate_body("é".repeat(5000).as_bytes(), MAX_RESPONSE_BYTES);
        assert!(t.len() <= MAX_RESPONSE_BYTES && t.len() >= MAX_RESPONSE_BYTES - 4);
    }

    #[test]
    fn changes_count_outcomes_once_and_attempts_by_difference() {
        let pending = record(Status::Retrying).to_item();
        let mut done = record(Status::Succeeded);
        done.attempts = 2;
        let done = done.to_item();
        let c = RecordChange::read(Some(&pending), &done).unwrap();
        assert_eq!((c.outcome(), c.new_attempts()), (Some(Status::Succeeded), 1));
        let first = RecordChange::read(None, &done).unwrap();
        assert_eq!((first.outcome(), first.new_attempts()), (Some(Status::Succeeded), 2));
        let again = RecordChange::read(Some(&done), &done).unwrap();
        assert_eq!((again.outcome(), again.new_attempts()), (None, 0));
        let names: Vec<_> = Status::ALL.iter().map(|s| Status::parse(s.as_str())).collect();
        assert!(names.iter().all(Option::is_some));
    }
}

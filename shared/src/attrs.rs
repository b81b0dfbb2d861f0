//! Attribute names of every item type in `FormBridgeData`, beside `keys.rs` which builds the
//! keys, and a reader that decodes items with errors naming the attribute.
//!
//! Codecs, the aggregator's fold and the fan-out all read through these names, so renaming an
//! attribute is one edit here, and an item missing an attribute is an error that says which,
//! never a silent zero.

use std::collections::HashMap;
use std::str::FromStr;

use aws_sdk_dynamodb::types::AttributeValue;

/// A tenant's profile (`TENANT#<t>` / `PROFILE`).
pub mod tenant {
    pub const NAME: &str = "name";
    pub const CREATED_AT: &str = "created_at";
    pub const RETENTION_DAYS: &str = "retention_days";
    /// A map of form id to retention days, for forms whose retention differs from the tenant's.
    pub const FORM_RETENTION: &str = "form_retention";
    /// The newest count, the condition of the next growth.
    pub const SHARD_COUNT: &str = "shard_count";
    /// A list of maps of `SINCE_MS` and `COUNT`.
    pub const SHARD_HISTORY: &str = "shard_history";
    pub const SINCE_MS: &str = "since_ms";
    pub const COUNT: &str = "count";
}

/// A tenant's destination-set version (`TENANT#<t>` / `DESTSET`).
pub mod destination_set {
    pub const VERSION: &str = "version";
}

/// A site (`SITE#<domain>` / `SITE`): its tenant and its sealed signing secrets.
pub mod site {
    pub const TENANT: &str = "tenant_id";
    pub const CREATED_AT: &str = "created_at";
    pub const VERSION: &str = "version";
    /// A list of maps of `SEALED`, `CREATED_MS` and (during a rotation's grace) `EXPIRES_MS`.
    pub const SECRETS: &str = "secrets";
    pub const SEALED: &str = "sealed";
    pub const CREATED_MS: &str = "created_ms";
    pub const EXPIRES_MS: &str = "expires_ms";
}

/// An audit event (`AUDIT#<t>#<yyyy-mm>` / `EVT#…`) and the auth-failure counters beside it.
pub mod audit {
    pub const KIND: &str = "kind";
    pub const ACTOR: &str = "actor";
    pub const AT: &str = "at";
    pub const DETAIL: &str = "detail";
    /// Auth-failure counters: the total, and one counter per reason code.
    pub const TOTAL: &str = "total";
}

/// A stored submission (`SUB#<tenant>#<shard>` / `SUB#<id>`). Every byte of a name counts
/// toward the item's size, and a 2 KiB form must fit one write unit, so the names are one
/// letter (layout 2, written since 2026-12). Items of layout 1 ([`submission::v1`]) stay
/// readable: `submission::SubmissionFields` reads both.
pub mod submission {
    pub const SITE: &str = "s";
    pub const FORM: &str = "f";
    /// When ingest accepted it, epoch milliseconds (a number: 8 bytes against 24 for RFC 3339).
    pub const RECEIVED_MS: &str = "t";
    pub const RAW_SIZE: &str = "n";
    /// One byte naming the codec (`codec::Codec::id`), then the encoded payload.
    pub const PAYLOAD: &str = "p";

    /// Layout 1 (until 2026-12): long names, the receive time as RFC 3339, the codec marker in
    /// its own attribute.
    pub mod v1 {
        pub const SITE: &str = "site";
        pub const FORM: &str = "form_id";
        pub const RECEIVED_AT: &str = "received_at";
        pub const RAW_SIZE: &str = "raw_size";
        pub const CODEC: &str = "codec";
        pub const PAYLOAD: &str = "payload";
    }
}

/// A delivery record (`SUB#<id>#DLV#<dest>`): where one submission's delivery to one
/// destination stands, with its first attempt inside it.
pub mod delivery {
    pub const STATUS: &str = "status";
    pub const ATTEMPTS: &str = "attempts";
    pub const ROUND_START: &str = "round_start";
    pub const NEXT_ATTEMPT_MS: &str = "next_ms";
    pub const FORM: &str = "form_id";
    pub const CREATED_MS: &str = "created_ms";
    pub const UPDATED_MS: &str = "updated_ms";
    pub const LAST_STATUS: &str = "last_code";
    pub const LAST_ERROR: &str = "last_error";
    pub const LAST_LATENCY_MS: &str = "last_ms";
    pub const REASON: &str = "reason";
    /// The attempt a worker has claimed (attempts after the first, and replays), and until when.
    pub const CLAIM: &str = "claim";
    pub const CLAIM_UNTIL_MS: &str = "claim_until";
    /// The first attempt, as a map of the `attempt` attributes.
    pub const FIRST_ATTEMPT: &str = "a1";
}

/// One attempt: inside the record for the first (`a1`), its own item
/// (`SUB#<id>#DLV#<dest>#ATT#<nnnn>`) from the second on.
pub mod attempt {
    pub const NUMBER: &str = "attempt";
    pub const AT_MS: &str = "at_ms";
    pub const STATUS: &str = "code";
    pub const LATENCY_MS: &str = "latency_ms";
    pub const ERROR_CLASS: &str = "class";
    pub const ERROR: &str = "error";
    pub const RESPONSE: &str = "response";
    pub const TRIGGER: &str = "trigger";
    /// How many times this attempt number was sent (more than 1 only after a crash between
    /// sending and recording).
    pub const SENDS: &str = "sends";
}

/// An hourly or daily metric item (`METRIC#<t>` / `HOUR#…`, `DAY#…`): the tenant's counters and,
/// inside the same item, each form's, added by the aggregator; and per-shard high-water marks of
/// the stream records it holds.
pub mod metrics {
    pub const SUBMISSIONS: &str = "submission_count";
    pub const RAW_BYTES: &str = "raw_bytes";
    pub const STORED_BYTES: &str = "stored_bytes";
    pub const WRITE_UNITS: &str = "write_units";
    /// A map of form id to submissions.
    pub const FORM_STATS: &str = "form_stats";
    /// A form's other counters: `frm#<form>#<field>` (field: raw_bytes, stored_bytes,
    /// write_units), top-level so that an ADD creates them.
    pub const FORM_PREFIX: &str = "frm#";
    /// Delivery counters per destination: `dlv#<destination>#<field>`.
    pub const DELIVERY_PREFIX: &str = "dlv#";
    pub const SUCCEEDED: &str = "succeeded";
    pub const FAILED: &str = "failed";
    pub const ATTEMPTS: &str = "attempts";
    pub const LATENCY_MS: &str = "latency_ms";
    /// Upper bounds (ms, inclusive) of the latency histogram kept per destination: attempts
    /// whose latency fell in bucket `i` are counted in `dlv#<destination>#l<i>`; the last bucket
    /// (index `LATENCY_BOUNDS_MS.len()`) holds everything slower.
    pub const LATENCY_BOUNDS_MS: [u64; 11] = [25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 20_000, 30_000];
    /// Buckets of the latency histogram (the bounds and the overflow).
    pub const LATENCY_BUCKETS: usize = LATENCY_BOUNDS_MS.len() + 1;

    /// The histogram bucket a latency falls in.
    pub fn latency_bucket(latency_ms: u64) -> usize {
        LATENCY_BOUNDS_MS.iter().position(|b| latency_ms <= *b).unwrap_or(LATENCY_BOUNDS_MS.len())
    }

    /// The field name of histogram bucket `i` (inside `dlv#<destination>#...`).
    pub fn latency_field(i: usize) -> String {
        format!("l{i}")
    }

    /// The attribute of one form's counter.
    pub fn form(form: &str, field: &str) -> String {
        format!("{FORM_PREFIX}{form}#{field}")
    }

    /// The attribute of one destination's delivery counter.
    pub fn delivery(destination: &str, field: &str) -> String {
        format!("{DELIVERY_PREFIX}{destination}#{field}")
    }

    /// The attribute of a stream shard's high-water mark.
    pub fn high_water(shard: &str) -> String {
        format!("hw#{shard}")
    }
}

/// A destination (`TENANT#<t>` / `DEST#<dest>`).
pub mod destination {
    pub const NAME: &str = "name";
    pub const URL: &str = "url";
    pub const KIND: &str = "kind";
    pub const ENABLED: &str = "enabled";
    pub const TIMEOUT_MS: &str = "timeout_ms";
    pub const SECRET_SEALED: &str = "secret_sealed";
    pub const CREATED_AT: &str = "created_at";
    pub const VERSION: &str = "version";
    pub const RETRY_SCHEDULE: &str = "retry_schedule";
    pub const CLIENT_ERROR_SCHEDULE: &str = "client_error_schedule";
    pub const MAX_IN_FLIGHT: &str = "max_in_flight";
    pub const FORMS: &str = "forms";
    pub const SITES: &str = "sites";
    pub const AUTH_SEALED: &str = "auth_sealed";
    pub const AUTH_SUMMARY: &str = "auth_summary";
}

/// A destination's health (`TENANT#<t>` / `HEALTH#<dest>`).
pub mod health {
    pub const STATE: &str = "state";
    pub const CONSECUTIVE_FAILURES: &str = "consecutive_failures";
    pub const FIRST_FAILURE_MS: &str = "first_failure_ms";
    pub const LAST_FAILURE_MS: &str = "last_failure_ms";
    pub const LAST_SUCCESS_MS: &str = "last_success_ms";
    pub const OPEN_UNTIL_MS: &str = "open_until_ms";
    pub const PROBE_UNTIL_MS: &str = "probe_until_ms";
    pub const PAUSED_AT_MS: &str = "paused_at_ms";
    pub const TRIPS: &str = "trips";
}

/// An item that could not be decoded, naming the attribute.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttrError {
    #[error("attribute {0:?} is missing")]
    Missing(&'static str),
    #[error("attribute {0:?} has the wrong type or an unreadable value")]
    Invalid(&'static str),
    #[error("the item's key is not a {0} key")]
    Key(&'static str),
}

pub type Item = HashMap<String, AttributeValue>;

/// Typed access to one item's attributes.
#[derive(Debug, Clone, Copy)]
pub struct Attrs<'a>(pub &'a Item);

impl<'a> Attrs<'a> {
    pub fn s(&self, name: &'static str) -> Result<&'a str, AttrError> {
        self.opt_s(name)?.ok_or(AttrError::Missing(name))
    }

    pub fn opt_s(&self, name: &'static str) -> Result<Option<&'a str>, AttrError> {
        match self.0.get(name) {
            None => Ok(None),
            Some(v) => v.as_s().map(|s| Some(s.as_str())).map_err(|_| AttrError::Invalid(name)),
        }
    }

    pub fn n<T: FromStr>(&self, name: &'static str) -> Result<T, AttrError> {
        self.opt_n(name)?.ok_or(AttrError::Missing(name))
    }

    pub fn opt_n<T: FromStr>(&self, name: &'static str) -> Result<Option<T>, AttrError> {
        match self.0.get(name) {
            None => Ok(None),
            Some(v) => {
                let n = v.as_n().map_err(|_| AttrError::Invalid(name))?;
                n.parse().map(Some).map_err(|_| AttrError::Invalid(name))
            }
        }
    }

    pub fn b(&self, name: &'static str) -> Result<&'a [u8], AttrError> {
        match self.0.get(name) {
            None => Err(AttrError::Missing(name)),
            Some(v) => v.as_b().map(|b| b.as_ref()).map_err(|_| AttrError::Invalid(name)),
        }
    }

    pub fn opt_bool(&self, name: &'static str) -> Result<Option<bool>, AttrError> {
        match self.0.get(name) {
            None => Ok(None),
            Some(v) => v.as_bool().map(|b| Some(*b)).map_err(|_| AttrError::Invalid(name)),
        }
    }

    /// A string set (absent: empty).
    pub fn string_set(&self, name: &'static str) -> Result<&'a [String], AttrError> {
        match self.0.get(name) {
            None => Ok(&[]),
            Some(v) => v.as_ss().map(Vec::as_slice).map_err(|_| AttrError::Invalid(name)),
        }
    }

    pub fn opt_map(&self, name: &'static str) -> Result<Option<&'a Item>, AttrError> {
        match self.0.get(name) {
            None => Ok(None),
            Some(v) => v.as_m().map(Some).map_err(|_| AttrError::Invalid(name)),
        }
    }

    /// A string attribute parsed into a typed value (an enum, an id).
    pub fn parsed<T>(&self, name: &'static str, parse: impl FnOnce(&str) -> Option<T>) -> Result<T, AttrError> {
        parse(self.s(name)?).ok_or(AttrError::Invalid(name))
    }
}

/// Builders for attribute values.
pub fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

pub fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_attribute() {
        let item = Item::from([("a".into(), s("x")), ("b".into(), n(7))]);
        let a = Attrs(&item);
        assert_eq!(a.s("a").unwrap(), "x");
        assert_eq!(a.n::<u16>("b").unwrap(), 7);
        assert_eq!(a.s("zz"), Err(AttrError::Missing("zz")));
        assert_eq!(a.n::<u16>("a"), Err(AttrError::Invalid("a")));
        assert_eq!(a.s("b"), Err(AttrError::Invalid("b")));
        assert_eq!(a.opt_n::<u16>("zz"), Ok(None));
        assert!(AttrError::Missing("status").to_string().contains("\"status\""));
    }
}

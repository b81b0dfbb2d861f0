//! Typed identifiers. Each id is built only through `parse`, which rejects anything that could
//! smuggle a key separator (`#`) or another tenant's prefix into a DynamoDB key. Code that holds a
//! `TenantId` can therefore format keys without re-checking it.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Why an identifier was rejected. The message names the kind of id and the rule it broke.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} {value:?}: {rule}")]
pub struct IdError {
    pub kind: &'static str,
    pub value: String,
    pub rule: &'static str,
}

fn reject(kind: &'static str, value: &str, rule: &'static str) -> IdError {
    // Cap what we echo back: ids come from untrusted input and end up in logs and HTTP answers.
    let value: String = value.chars().take(80).collect();
    IdError { kind, value, rule }
}

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $check:path) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub fn parse(value: &str) -> Result<Self, IdError> {
                $check(value).map_err(|rule| reject($kind, value, rule))?;
                Ok(Self(value.to_owned()))
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::parse(s)
            }
        }
        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                Self::parse(&s)
            }
        }
        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }
    };
}

fn check_tenant(v: &str) -> Result<(), &'static str> {
    if v.is_empty() || v.len() > 63 {
        return Err("must be 1 to 63 characters");
    }
    if !v.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
        return Err("may hold only a-z, 0-9 and '-'");
    }
    if v.starts_with('-') || v.ends_with('-') {
        return Err("must start and end with a letter or digit");
    }
    Ok(())
}

fn check_form(v: &str) -> Result<(), &'static str> {
    if v.is_empty() || v.len() > 64 {
        return Err("must be 1 to 64 characters");
    }
    if !v.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')) {
        return Err("may hold only A-Z, a-z, 0-9, '-', '_' and '.'");
    }
    Ok(())
}

/// A host name in the normalised form the site registry stores: lower-case ASCII (IDN already
/// punycode-encoded), no port, no trailing dot. Normalising raw input is the ingest layer's job.
fn check_domain(v: &str) -> Result<(), &'static str> {
    if v.is_empty() || v.len() > 253 {
        return Err("must be 1 to 253 characters");
    }
    for label in v.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err("each dot-separated label must be 1 to 63 characters");
        }
        if !label.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
            return Err("must be a normalised host name: a-z, 0-9, '-' and '.'");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("a label must not start or end with '-'");
        }
    }
    Ok(())
}

string_id!(
    /// A tenant: one agency customer. Lower-case slug, e.g. `acme-agency`.
    TenantId,
    "tenant id",
    check_tenant
);
string_id!(
    /// A migration run from a legacy table (`formbridge-admin migrate`): everything it creates
    /// is listed under it, so a rollback removes exactly that. Same rules as a tenant id.
    MigrationId,
    "migration id",
    check_tenant
);

string_id!(
    /// The form's identifier as the WordPress plugin reports it, e.g. `contact` or `42`.
    FormId,
    "form id",
    check_form
);
string_id!(
    /// A registered site, named by its normalised domain, e.g. `shop.example.com`.
    SiteDomain,
    "site domain",
    check_domain
);

macro_rules! ulid_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(ulid::Ulid);

        impl $name {
            /// Accepts the 26-character Crockford base32 form, in either case.
            pub fn parse(value: &str) -> Result<Self, IdError> {
                if value.len() != 26 {
                    return Err(reject($kind, value, "must be a 26-character ULID"));
                }
                ulid::Ulid::from_string(value)
                    .map(Self)
                    .map_err(|_| reject($kind, value, "must be a ULID (Crockford base32)"))
            }
            pub fn new() -> Self {
                Self(ulid::Ulid::new())
            }
            pub fn from_ulid(ulid: ulid::Ulid) -> Self {
                Self(ulid)
            }
            pub fn ulid(&self) -> ulid::Ulid {
                self.0
            }
            /// Milliseconds since the Unix epoch encoded in the id.
            pub fn timestamp_ms(&self) -> u64 {
                self.0.timestamp_ms()
            }
        }
        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                // Ulid's Display is the canonical upper-case form, so keys are stable.
                fmt::Display::fmt(&self.0, f)
            }
        }
        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::parse(s)
            }
        }
        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                Self::parse(&s)
            }
        }
        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.to_string()
            }
        }
    };
}

ulid_id!(
    /// A submission. Time-sortable, so a partition's sort key orders submissions by arrival.
    SubmissionId,
    "submission id"
);
ulid_id!(
    /// A delivery destination (webhook) of a tenant.
    DestinationId,
    "destination id"
);

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn tenant_ids_reject_separators_and_case() {
        for bad in ["", "a#b", "TENANT", "a b", "-a", "a-", "tenant#x#SUB", "é", &"a".repeat(64)] {
            assert!(TenantId::parse(bad).is_err(), "{bad:?} must be rejected");
        }
        for good in ["a", "acme", "acme-agency-01", &"a".repeat(63)] {
            assert!(TenantId::parse(good).is_ok(), "{good:?} must be accepted");
        }
    }

    #[test]
    fn error_names_the_kind_and_rule() {
        let err = TenantId::parse("a#b").unwrap_err();
        assert_eq!(err.kind, "tenant id");
        assert!(err.to_string().contains("a-z, 0-9"), "{err}");
    }

    #[test]
    fn domains_must_be_normalised() {
        for bad in ["Example.com", "example.com.", "example.com:443", "a..b", "-a.com", "a_b.com", "x#y.com", ""] {
            assert!(SiteDomain::parse(bad).is_err(), "{bad:?} must be rejected");
        }
        for good in ["example.com", "xn--bcher-kva.example", "a.b.c.d", "localhost"] {
            assert!(SiteDomain::parse(good).is_ok(), "{good:?} must be accepted");
        }
    }

    #[test]
    fn form_ids_allow_plugin_styles() {
        for good in ["42", "contact-form_1", "wpforms.7"] {
            assert!(FormId::parse(good).is_ok());
        }
        for bad in ["", "a#b", "a/b", "a b", &"f".repeat(65)] {
            assert!(FormId::parse(bad).is_err());
        }
    }

    #[test]
    fn submission_ids_are_canonical_ulids() {
        let id = SubmissionId::parse("01arz3ndektsv4rrffq69g5fav").unwrap();
        assert_eq!(id.to_string(), "01ARZ3NDEKTSV4RRFFQ69G5FAV");
        assert!(SubmissionId::parse("01ARZ3NDEKTSV4RRFFQ69G5FA#").is_err());
        assert!(SubmissionId::parse("short").is_err());
    }

    proptest! {
        #[test]
        fn accepted_ids_never_contain_a_separator(s in "\\PC{0,70}") {
            if let Ok(t) = TenantId::parse(&s) { prop_assert!(!t.as_str().contains('#')); }
            if let Ok(f) = FormId::parse(&s) { prop_assert!(!f.as_str().contains('#')); }
            if let Ok(d) = SiteDomain::parse(&s) { prop_assert!(!d.as_str().contains('#')); }
        }

        #[test]
        fn ulid_ids_round_trip(n in any::<u128>()) {
            let id = SubmissionId::from_ulid(ulid::Ulid(n));
            prop_assert_eq!(SubmissionId::parse(&id.to_string()).unwrap(), id);
            let json = serde_json::to_string(&id).unwrap();
            prop_assert_eq!(serde_json::from_str::<SubmissionId>(&json).unwrap(), id);
        }

        #[test]
        fn tenant_ids_round_trip_through_serde(s in "[a-z0-9][a-z0-9-]{0,30}[a-z0-9]") {
            let t = TenantId::parse(&s).unwrap();
            let json = serde_json::to_string(&t).unwrap();
            prop_assert_eq!(serde_json::from_str::<TenantId>(&json).unwrap(), t);
        }
    }
}

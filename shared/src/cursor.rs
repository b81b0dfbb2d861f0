//! Opaque, signed page cursors for the read API. A cursor carries a position (for a listing
//! merged across shards newest first, the last id returned) and an expiry, and is signed with a
//! key derived from the master key over the tenant and the request's filter as well. So a cursor
//! that was tampered with, that comes from another tenant, or that is replayed with another
//! filter is refused, and the position inside it is never trusted unsigned.
//!
//! Format: `base64url(json {"p": position, "e": expires_ms}) "." base64url(16-byte tag)`.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::ids::TenantId;
use crate::secrets::Keyring;

const PURPOSE: &str = "page-cursor v1";
const TAG_BYTES: usize = 16;
/// Cursors longer than this are refused before any work.
pub const MAX_LEN: usize = 512;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CursorError {
    #[error("the cursor is malformed")]
    Malformed,
    /// Tampered with, or issued for another tenant or another filter.
    #[error("the cursor was not issued for this request")]
    Foreign,
    #[error("the cursor has expired; start again from the first page")]
    Expired,
}

impl CursorError {
    /// A stable code for API errors.
    pub fn code(&self) -> &'static str {
        match self {
            CursorError::Malformed => "cursor_malformed",
            CursorError::Foreign => "cursor_invalid",
            CursorError::Expired => "cursor_expired",
        }
    }
}

#[derive(Serialize, Deserialize)]
struct Body {
    p: String,
    e: u64,
}

fn signed_bytes(tenant: &TenantId, filter: &str, body: &str) -> Vec<u8> {
    // Lengths first, so no choice of filter can make two different triples sign the same bytes.
    let t = tenant.as_str();
    format!("{}:{}:{}:{t}{filter}{body}", t.len(), filter.len(), body.len()).into_bytes()
}

/// A cursor for `position` within `tenant`'s listing under `filter` (a canonical string of the
/// request's filters), valid until `expires_ms`.
pub fn issue(keyring: &Keyring, tenant: &TenantId, filter: &str, position: &str, expires_ms: u64) -> String {
    let body =
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&Body { p: position.to_owned(), e: expires_ms }).expect("plain"));
    let tag = keyring.mac(PURPOSE, &signed_bytes(tenant, filter, &body));
    format!("{body}.{}", URL_SAFE_NO_PAD.encode(&tag[..TAG_BYTES]))
}

/// The position inside `cursor`, if it was issued for this tenant and filter and is not expired.
pub fn open(
    keyring: &Keyring,
    tenant: &TenantId,
    filter: &str,
    cursor: &str,
    now_ms: u64,
) -> Result<String, CursorError> {
    if cursor.len() > MAX_LEN {
        return Err(CursorError::Malformed);
    }
    let (body, tag) = cursor.split_once('.').ok_or(CursorError::Malformed)?;
    let tag = URL_SAFE_NO_PAD.decode(tag).map_err(|_| CursorError::Malformed)?;
    if tag.len() != TAG_BYTES {
        return Err(CursorError::Malformed);
    }
    if !keyring.verify_mac(PURPOSE, &signed_bytes(tenant, filter, body), &tag) {
        return Err(CursorError::Foreign);
    }
    let raw = URL_SAFE_NO_PAD.decode(body).map_err(|_| CursorError::Malformed)?;
    let b: Body = serde_json::from_slice(&raw).map_err(|_| CursorError::Malformed)?;
    if b.e <= now_ms {
        return Err(CursorError::Expired);
    }
    Ok(b.p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring() -> Keyring {
        Keyring::parse(&Keyring::generate_spec("k1"), "test").unwrap()
    }

    #[test]
    fn a_cursor_opens_only_for_its_tenant_filter_and_lifetime() {
        let k = ring();
        let (a, b) = (TenantId::parse("acme").unwrap(), TenantId::parse("other").unwrap());
        let c = issue(&k, &a, "form=contact", "01JF0000000000000000000000", 2_000);
        assert_eq!(open(&k, &a, "form=contact", &c, 1_000).unwrap(), "01JF0000000000000000000000");
        assert_eq!(open(&k, &b, "form=contact", &c, 1_000), Err(CursorError::Foreign), "another tenant's");
        assert_eq!(open(&k, &a, "form=other", &c, 1_000), Err(CursorError::Foreign), "another filter's");
        assert_eq!(open(&k, &a, "form=contact", &c, 2_000), Err(CursorError::Expired));
        assert_eq!(open(&ring(), &a, "form=contact", &c, 1_000), Err(CursorError::Foreign), "another master key's");
        // Tampering with the position (a valid body, re-encoded) or the tag is refused.
        let forged_body = URL_SAFE_NO_PAD.encode(br#"{"p":"01JZ0000000000000000000000","e":2000}"#);
        let tag = c.split_once('.').unwrap().1;
        assert_eq!(open(&k, &a, "form=contact", &format!("{forged_body}.{tag}"), 1_000), Err(CursorError::Foreign));
        let mut flipped = c.clone().into_bytes();
        let last = flipped.len() - 1;
        flipped[last] = if flipped[last] == b'A' { b'B' } else { b'A' };
        let flipped = String::from_utf8(flipped).unwrap();
        assert!(matches!(
            open(&k, &a, "form=contact", &flipped, 1_000),
            Err(CursorError::Foreign | CursorError::Malformed)
        ));
        for bad in ["", "abc", "abc.def", &"x".repeat(MAX_LEN + 1)] {
            assert_eq!(open(&k, &a, "form=contact", bad, 1_000), Err(CursorError::Malformed), "{bad}");
        }
    }

    #[test]
    fn a_cursor_survives_a_master_key_rotation() {
        let old = Keyring::generate_spec("k1");
        let before = Keyring::parse(&old, "t").unwrap();
        let after = Keyring::parse(&format!("{},{old}", Keyring::generate_spec("k2")), "t").unwrap();
        let t = TenantId::parse("acme").unwrap();
        let c = issue(&before, &t, "", "pos", 10);
        assert_eq!(open(&after, &t, "", &c, 1).unwrap(), "pos");
    }
}

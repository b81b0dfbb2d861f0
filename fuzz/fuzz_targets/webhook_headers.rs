//! Standard Webhooks headers, both directions.
//!
//! Input: an HTTP header block (`name: value` lines), a blank line, then the body. Directives
//! make valid requests reachable for the fuzzer:
//!
//! - `webhook-timestamp: now`, `now+N`, `now-N`: the current time, N seconds off;
//! - `{sign}`, `{sign-old}`, `{sign-next}` in `webhook-signature`: replaced by the signature (`v1,...`)
//!   of the body under the request's first `webhook-id` and `webhook-timestamp`, with the site's
//!   current secret, a secret whose grace period has ended, and a rotated-in secret still valid;
//! - `x-secret: ...` is given to `SigningSecret::parse`.
//!
//! Incoming (ingest): `ResolvedSite::verifies`, which runs the official verifier over the
//! headers, with secret expiry. Invariants: a request properly signed with a valid secret,
//! within the tolerance, verifies; one signed only with the expired secret, or not signed at all,
//! never does. Every secret `SigningSecret::parse` accepts builds a verifier.
//!
//! Outgoing (delivery): `delivery::send::headers`, with the header block as a destination's
//! custom headers (tenant-controlled): it may refuse a header, never panic, and a custom header
//! never overrides ours.
#![no_main]

use std::collections::BTreeMap;

use http::HeaderMap;
use libfuzzer_sys::fuzz_target;
use standardwebhooks::Webhook;

use formbridge_ingest::sites::ResolvedSite;
use formbridge_shared::delivery::send::{self, USER_AGENT};
use formbridge_shared::destination::DestinationAuth;
use formbridge_shared::secrets::SigningSecret;
use formbridge_shared::sharding::ShardHistory;
use formbridge_shared::tenant::TenantProfile;
use formbridge_shared::TenantId;

const CURRENT: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const EXPIRED: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
const NEXT: &str = "whsec_dGhpcyBpcyBhIHRlc3Qgc2VjcmV0IGtleSEhISE=";
/// Clearly inside (or outside) the verifier's five minutes, whatever the clock does meanwhile.
const SURELY_FRESH_S: i64 = 290;

fn webhook(secret: &str) -> Webhook {
    Webhook::new(secret).expect("a test secret")
}

/// `now`, `now+N`, `now-N` as an offset from now.
fn offset(v: &str) -> Option<i64> {
    let rest = v.strip_prefix("now")?;
    let (sign, digits) = match (rest.strip_prefix('+'), rest.strip_prefix('-')) {
        _ if rest.is_empty() => return Some(0),
        (Some(d), _) => (1, d),
        (_, Some(d)) => (-1, d),
        _ => return None,
    };
    let n: i64 = digits.parse().ok().filter(|_| digits.len() <= 10)?;
    Some(sign * n)
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (block, body) = text.split_once("\n\n").unwrap_or((text, ""));
    let body = body.as_bytes();
    let now_s = time::OffsetDateTime::now_utc().unix_timestamp();
    let now_ms = u64::try_from(now_s).unwrap_or(0) * 1000;

    let mut lines: Vec<(String, String)> = Vec::new();
    let mut fresh = None;
    for line in block.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        let Some((name, value)) = line.split_once(':') else { continue };
        let (name, mut value) = (name.trim().to_owned(), value.trim_start().to_owned());
        if name.eq_ignore_ascii_case("webhook-timestamp") {
            let first_ts = !lines.iter().any(|(k, _)| k.eq_ignore_ascii_case("webhook-timestamp"));
            if let Some(off) = offset(&value) {
                value = now_s.saturating_add(off).to_string();
                if first_ts {
                    fresh = Some(off.abs() <= SURELY_FRESH_S);
                }
            }
        }
        if name.eq_ignore_ascii_case("x-secret") {
            if let Ok(s) = SigningSecret::parse(&value) {
                assert!(Webhook::new(s.expose()).is_ok(), "an accepted secret builds no verifier");
            }
        }
        lines.push((name, value));
    }

    // Signing needs the id and timestamp the verifier will read: the first of each.
    let first = |n: &str| lines.iter().find(|(k, _)| k.eq_ignore_ascii_case(n)).map(|(_, v)| v.clone());
    let (id, ts) = (first("webhook-id"), first("webhook-timestamp").and_then(|t| t.parse::<i64>().ok()));
    let sign = |secret: &str| match (&id, ts) {
        (Some(id), Some(ts)) => webhook(secret).sign(id, ts, body).ok(),
        _ => None,
    };
    let (current, expired, next) = (sign(CURRENT), sign(EXPIRED), sign(NEXT));
    let mut headers = HeaderMap::new();
    for (name, value) in &lines {
        let mut value = value.clone();
        if name.eq_ignore_ascii_case("webhook-signature") {
            for (token, sig) in [("{sign}", &current), ("{sign-old}", &expired), ("{sign-next}", &next)] {
                value = value.replace(token, sig.as_deref().unwrap_or("v1,"));
            }
        }
        // What hyper would refuse never reaches the handler.
        let (Ok(n), Ok(v)) = (http::HeaderName::from_bytes(name.as_bytes()), http::HeaderValue::from_str(&value))
        else {
            continue;
        };
        headers.append(n, v);
    }

    let site = ResolvedSite {
        tenant: TenantProfile {
            tenant_id: TenantId::parse("acme").expect("a tenant id"),
            name: "Acme".into(),
            created_at: "2026-01-01T00:00:00Z".into(),
            retention_days: 30,
            form_retention: BTreeMap::new(),
            shards: ShardHistory::new(1, 0).expect("a shard history"),
        },
        verifiers: vec![
            (webhook(NEXT), Some(now_ms + 3_600_000)),
            (webhook(CURRENT), None),
            (webhook(EXPIRED), Some(now_ms.saturating_sub(1))),
        ],
    };
    let verified = site.verifies(body, &headers, now_ms);

    // What the verifier reads: the first signature header, a space-separated list.
    let presented: Vec<String> = headers
        .get("webhook-signature")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(' ').map(str::to_owned).collect())
        .unwrap_or_default();
    let carries = |sig: &Option<String>| sig.as_ref().is_some_and(|s| presented.contains(s));
    let ids_intact = headers.get("webhook-id").and_then(|v| v.to_str().ok()) == id.as_deref()
        && headers.get("webhook-timestamp").and_then(|v| v.to_str().ok()).and_then(|t| t.parse().ok()) == ts;
    let valid_sig = carries(&current) || carries(&next);
    if valid_sig && ids_intact && fresh == Some(true) {
        assert!(verified, "a properly signed, fresh request must verify");
    }
    if !valid_sig {
        assert!(!verified, "a request without a valid secret's signature verified (expired: {})", carries(&expired));
    }

    // Outgoing: the header block as a destination's custom headers.
    let custom: BTreeMap<String, String> = lines.iter().cloned().collect();
    let (wid, wts, wsig) =
        (id.as_deref().unwrap_or("msg_1"), ts.unwrap_or(now_s), current.as_deref().unwrap_or("v1,x"));
    for auth in [
        DestinationAuth::Headers { headers: custom },
        DestinationAuth::Bearer { token: String::from_utf8_lossy(body).into_owned() },
        DestinationAuth::Basic { username: wid.to_owned(), password: String::from_utf8_lossy(body).into_owned() },
    ] {
        let Ok(h) = send::headers(wid, wts, wsig, Some(&auth)) else { continue };
        // Bytes, not `to_str`: a header value may be any visible byte, UTF-8 beyond ASCII included.
        let get = |n: &str| h.get(n).map(|v| v.as_bytes().to_vec());
        let want = |v: &str| Some(v.as_bytes().to_vec());
        assert_eq!(get("webhook-id"), want(wid), "a custom header overrode webhook-id");
        assert_eq!(get("webhook-timestamp"), want(&wts.to_string()), "a custom header overrode webhook-timestamp");
        assert_eq!(get("webhook-signature"), want(wsig), "a custom header overrode webhook-signature");
        assert_eq!(get("content-type"), want("application/json"));
        assert_eq!(get("user-agent"), want(USER_AGENT));
        assert_eq!(h.get_all("webhook-signature").iter().count(), 1);
    }
});

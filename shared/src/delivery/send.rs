//! Building, signing and sending one attempt, and reading what came back.
//!
//! The body is built once from the stored submission and sent exactly as signed: Standard
//! Webhooks headers (`webhook-id`, `webhook-timestamp`, `webhook-signature`) over
//! `id.timestamp.body`. Redirects are never followed, every address the name resolves to is
//! vetted by the SSRF guard, and at most 4 KiB of the response is read.

use std::time::{Duration, Instant};

use crate::destination::{DestinationAuth, DestinationKind};
use crate::submission::StoredSubmission;
use base64::Engine;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{json, Value};

use crate::delivery::model::MAX_RESPONSE_BYTES;
use crate::delivery::ssrf::{self, AddressPolicy, ErrorClass, GuardedResolver};
use crate::delivery::{truncate_body, FailureReason};

/// The JSON a generic webhook destination receives. The same bytes for every attempt.
pub fn webhook_body(sub: &StoredSubmission) -> Vec<u8> {
    let body = json!({
        "type": "submission.created",
        "timestamp": sub.received_at,
        "data": {
            "submission_id": sub.submission_id,
            "tenant_id": sub.tenant_id,
            "site": sub.site,
            "form_id": sub.form_id,
            "received_at": sub.received_at,
            "payload": sub.payload,
        }
    });
    serde_json::to_vec(&body).expect("JSON serialises")
}

const SLACK_MAX_VALUE: usize = 300;
const SLACK_MAX_FIELDS: usize = 20;

fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        format!("{}…", s.chars().take(max).collect::<String>())
    }
}

/// A readable Slack message: the form, the site and the fields, clipped.
pub fn slack_body(sub: &StoredSubmission) -> Vec<u8> {
    let fields = sub.payload.get("fields").and_then(Value::as_object).or_else(|| sub.payload.as_object());
    let mut lines = vec![format!("*New submission* on form `{}` from {}", sub.form_id, sub.site)];
    if let Some(fields) = fields {
        for (name, value) in fields.iter().take(SLACK_MAX_FIELDS) {
            let v = match value {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            lines.push(format!("• *{}*: {}", clip(name, 60), clip(&v, SLACK_MAX_VALUE)));
        }
        if fields.len() > SLACK_MAX_FIELDS {
            lines.push(format!("…and {} more fields", fields.len() - SLACK_MAX_FIELDS));
        }
    }
    lines.push(format!("_submission {}_", sub.submission_id));
    serde_json::to_vec(&json!({ "text": lines.join("\n") })).expect("JSON serialises")
}

pub fn body_for(kind: DestinationKind, sub: &StoredSubmission) -> Vec<u8> {
    match kind {
        DestinationKind::Webhook => webhook_body(sub),
        DestinationKind::Slack => slack_body(sub),
    }
}

/// The request headers: credentials first, then ours, which a custom header cannot override.
pub fn headers(
    webhook_id: &str,
    timestamp: i64,
    signature: &str,
    auth: Option<&DestinationAuth>,
) -> Result<HeaderMap, String> {
    let mut h = HeaderMap::new();
    match auth {
        None => {}
        Some(DestinationAuth::Bearer { token }) => {
            h.insert(reqwest::header::AUTHORIZATION, value(&format!("Bearer {token}"))?);
        }
        Some(DestinationAuth::Basic { username, password }) => {
            let b = base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
            h.insert(reqwest::header::AUTHORIZATION, value(&format!("Basic {b}"))?);
        }
        Some(DestinationAuth::Headers { headers }) => {
            for (k, v) in headers {
                let name = HeaderName::from_bytes(k.as_bytes()).map_err(|_| format!("bad header name {k:?}"))?;
                h.insert(name, value(v)?);
            }
        }
    }
    h.insert(reqwest::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(reqwest::header::USER_AGENT, HeaderValue::from_static(USER_AGENT));
    h.insert("webhook-id", value(webhook_id)?);
    h.insert("webhook-timestamp", value(&timestamp.to_string())?);
    h.insert("webhook-signature", value(signature)?);
    Ok(h)
}

fn value(v: &str) -> Result<HeaderValue, String> {
    // Never echo the value: it may be a credential.
    HeaderValue::from_str(v).map_err(|_| "a header value is not valid".to_owned())
}

/// Parses `Retry-After`: delay-seconds or an HTTP date.
pub fn parse_retry_after(value: &str, now: time::OffsetDateTime) -> Option<Duration> {
    let v = value.trim();
    if let Ok(s) = v.parse::<u64>() {
        return Some(Duration::from_secs(s));
    }
    let fmt = time::format_description::well_known::Rfc2822;
    let at = time::OffsetDateTime::parse(&v.replace("GMT", "+0000"), &fmt).ok()?;
    let d = at - now;
    Some(Duration::from_secs(u64::try_from(d.whole_seconds()).unwrap_or(0)))
}

pub const USER_AGENT: &str = concat!("Form-Bridge-Webhooks/", env!("CARGO_PKG_VERSION"));

/// One attempt: the body for the destination's kind, signed (Standard Webhooks) under
/// `webhook_id` with the destination's secret, its credentials added, sent within its timeout.
/// Returns the outcome and when the attempt started (epoch ms); an error names what could not be
/// opened or signed (never a secret).
pub async fn attempt(
    sender: &Sender,
    dest: &crate::destination::Destination,
    keyring: &crate::secrets::Keyring,
    webhook_id: &str,
    sub: &StoredSubmission,
) -> Result<(Outcome, u64), String> {
    let secret = dest.signing_secret(keyring).map_err(|e| e.to_string())?;
    let auth = dest.auth(keyring).map_err(|e| e.to_string())?;
    let body = body_for(dest.kind, sub);
    let started_ms = crate::clock::now_ms();
    let ts = i64::try_from(started_ms / 1000).unwrap_or(0);
    let signature = standardwebhooks::Webhook::new(secret.expose())
        .and_then(|w| w.sign(webhook_id, ts, &body))
        .map_err(|e| format!("cannot sign: {e}"))?;
    let headers = headers(webhook_id, ts, &signature, auth.as_ref())?;
    Ok((sender.send(&dest.url, headers, body, Duration::from_millis(dest.timeout_ms)).await, started_ms))
}

/// What one attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The HTTP status, 0 when none came.
    pub status: u16,
    pub error: Option<ErrorClass>,
    pub detail: Option<String>,
    pub latency: Duration,
    pub body: String,
    pub retry_after: Option<Duration>,
    pub location: Option<String>,
}

/// The sending half: one HTTP client for every destination (connection pools per host).
#[derive(Debug, Clone)]
pub struct Sender {
    client: reqwest::Client,
    policy: AddressPolicy,
}

impl Sender {
    pub fn new(policy: AddressPolicy) -> Self {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .dns_resolver(std::sync::Arc::new(GuardedResolver::new(policy)))
            .no_proxy()
            .connect_timeout(Duration::from_secs(5))
            .pool_idle_timeout(Duration::from_secs(60))
            .build()
            .expect("the HTTP client builds");
        Self { client, policy }
    }

    pub async fn send(&self, url: &str, headers: HeaderMap, body: Vec<u8>, timeout: Duration) -> Outcome {
        let started = Instant::now();
        let fail = |class: ErrorClass, detail: String| Outcome {
            status: 0,
            error: Some(class),
            detail: Some(detail),
            latency: started.elapsed(),
            body: String::new(),
            retry_after: None,
            location: None,
        };
        let parsed = match reqwest::Url::parse(url) {
            Ok(u) => u,
            Err(_) => return fail(ErrorClass::Other, "the destination URL does not parse".into()),
        };
        if let Err(blocked) = ssrf::check_url(&parsed, self.policy) {
            return fail(ErrorClass::BlockedAddress, blocked.to_string());
        }
        let sent = self.client.post(parsed).headers(headers).body(body).timeout(timeout).send();
        let mut resp = match sent.await {
            Ok(r) => r,
            Err(e) => return fail(ssrf::classify(&e), ssrf::describe(&e)),
        };
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, time::OffsetDateTime::now_utc()));
        let location =
            resp.headers().get(reqwest::header::LOCATION).and_then(|v| v.to_str().ok()).map(|v| clip(v, 500));
        let mut buf = Vec::new();
        let mut body_error = None;
        while buf.len() < MAX_RESPONSE_BYTES {
            match resp.chunk().await {
                Ok(Some(c)) => buf.extend_from_slice(&c),
                Ok(None) => break,
                Err(e) => {
                    body_error = Some(e);
                    break;
                }
            }
        }
        let mut out = Outcome {
            status,
            error: None,
            detail: None,
            latency: started.elapsed(),
            body: truncate_body(&buf, MAX_RESPONSE_BYTES),
            retry_after,
            location,
        };
        // A 2xx whose body never finished (timeout mid-body) still counts: the receiver has
        // the request. Anything else keeps its status and notes the error.
        if let Some(e) = body_error {
            if !(200..300).contains(&status) {
                out.detail = Some(format!("reading the response: {}", ssrf::describe(&e)));
            }
        }
        out
    }
}

/// What to do after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Succeeded,
    /// 410 Gone: the receiver asked to be disabled.
    Gone,
    /// 408, 429, 5xx, timeouts and network errors: the full schedule.
    RetryTransient,
    /// Other 4xx: the short schedule.
    RetryClientError,
    /// Never retried: redirects (update the URL), blocked addresses.
    Fail(FailureReason),
}

pub fn verdict(o: &Outcome) -> Verdict {
    match (o.status, o.error) {
        (0, Some(class)) if !class.retryable() => Verdict::Fail(if class == ErrorClass::Redirect {
            FailureReason::Redirect
        } else {
            FailureReason::BlockedAddress
        }),
        (0, _) => Verdict::RetryTransient,
        (200..=299, _) => Verdict::Succeeded,
        (410, _) => Verdict::Gone,
        (300..=399, _) => Verdict::Fail(FailureReason::Redirect),
        (408 | 429, _) => Verdict::RetryTransient,
        (400..=499, _) => Verdict::RetryClientError,
        _ => Verdict::RetryTransient,
    }
}

/// The error text recorded for an attempt that did not succeed.
pub fn error_text(o: &Outcome) -> Option<String> {
    match verdict(o) {
        Verdict::Succeeded => None,
        Verdict::Fail(FailureReason::Redirect) => Some(format!(
            "the destination answered {} redirecting to {}; redirects are not followed: update the destination's URL",
            o.status,
            o.location.as_deref().unwrap_or("(no Location)")
        )),
        _ => o.detail.clone().or_else(|| Some(format!("HTTP {}", o.status))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_parses_seconds_and_dates() {
        let now = time::macros::datetime!(2026-11-25 10:00:00 UTC);
        assert_eq!(parse_retry_after("120", now), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after("Wed, 25 Nov 2026 10:01:30 GMT", now), Some(Duration::from_secs(90)));
        assert_eq!(parse_retry_after("Wed, 25 Nov 2026 09:00:00 GMT", now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
    }

    fn outcome(status: u16, error: Option<ErrorClass>) -> Outcome {
        Outcome {
            status,
            error,
            detail: None,
            latency: Duration::ZERO,
            body: String::new(),
            retry_after: None,
            location: None,
        }
    }

    #[test]
    fn verdicts_follow_the_retry_policy() {
        assert_eq!(verdict(&outcome(200, None)), Verdict::Succeeded);
        assert_eq!(verdict(&outcome(204, None)), Verdict::Succeeded);
        assert_eq!(verdict(&outcome(410, None)), Verdict::Gone);
        for s in [408, 429, 500, 502, 503, 504] {
            assert_eq!(verdict(&outcome(s, None)), Verdict::RetryTransient, "{s}");
        }
        for s in [400, 401, 403, 404, 422] {
            assert_eq!(verdict(&outcome(s, None)), Verdict::RetryClientError, "{s}");
        }
        assert_eq!(verdict(&outcome(301, None)), Verdict::Fail(FailureReason::Redirect));
        assert_eq!(verdict(&outcome(0, Some(ErrorClass::Timeout))), Verdict::RetryTransient);
        assert_eq!(verdict(&outcome(0, Some(ErrorClass::ConnectionRefused))), Verdict::RetryTransient);
        assert_eq!(
            verdict(&outcome(0, Some(ErrorClass::BlockedAddress))),
            Verdict::Fail(FailureReason::BlockedAddress)
        );
    }

    fn stored(payload: Value) -> StoredSubmission {
        StoredSubmission {
            tenant_id: crate::TenantId::parse("acme").unwrap(),
            submission_id: crate::SubmissionId::new(),
            shard: 0,
            site: "www.example.com".into(),
            form_id: "contact".into(),
            received_at: "2026-11-25T10:00:00Z".into(),
            expires_at: 0,
            raw_size: 0,
            stored_size: 0,
            codec: "id",
            payload,
        }
    }

    #[test]
    fn slack_gets_a_readable_clipped_message() {
        let long = "x".repeat(1000);
        let sub = stored(json!({ "fields": { "name": "Ada", "message": long }, "meta": {} }));
        let v: Value = serde_json::from_slice(&slack_body(&sub)).unwrap();
        let text = v["text"].as_str().unwrap();
        assert!(text.starts_with("*New submission* on form `contact` from www.example.com"));
        assert!(text.contains("• *name*: Ada"));
        assert!(text.contains(&format!("{}…", "x".repeat(SLACK_MAX_VALUE))));
        assert!(!text.contains(&"x".repeat(SLACK_MAX_VALUE + 1)));
    }

    #[test]
    fn the_webhook_body_does_not_depend_on_the_order_fields_arrived_in() {
        let a: Value =
            serde_json::from_str(r#"{"fields":{"name":"Ada","email":"ada@example.com"},"meta":{"ua":"x"}}"#).unwrap();
        let b: Value =
            serde_json::from_str(r#"{"meta":{"ua":"x"},"fields":{"email":"ada@example.com","name":"Ada"}}"#).unwrap();
        let (sa, mut sb) = (stored(a), stored(b));
        sb.submission_id = sa.submission_id;
        assert_eq!(webhook_body(&sa), webhook_body(&sb), "a retry re-decoded from storage signs the same bytes");
        let sub = sa;
        let v: Value = serde_json::from_slice(&webhook_body(&sub)).unwrap();
        assert_eq!(v["type"], "submission.created");
        assert_eq!(v["data"]["payload"]["fields"]["name"], "Ada");
        assert_eq!(v["data"]["submission_id"], sub.submission_id.to_string());
    }

    #[test]
    fn custom_headers_cannot_override_the_signature() {
        let auth = DestinationAuth::Headers {
            headers: [("webhook-signature".to_owned(), "forged".to_owned()), ("X-Key".into(), "k".into())].into(),
        };
        let h = headers("id", 1, "v1,abc", Some(&auth)).unwrap();
        assert_eq!(h["webhook-signature"], "v1,abc");
        assert_eq!(h["x-key"], "k");
        let basic = DestinationAuth::Basic { username: "u".into(), password: "p".into() };
        assert_eq!(headers("id", 1, "s", Some(&basic)).unwrap()["authorization"], "Basic dTpw");
    }
}

//! `demo receive`: a stand-in for a customer's webhook endpoint, so a demo (or a test) can watch
//! the delivery worker end to end. It checks each request's Standard Webhooks signature with the
//! official crate, counts `webhook-id`s so retries show up as duplicates, and prints one JSON line
//! per request.
//!
//! It must never print or log the signing secret. Everything it knows lives in memory: it is a
//! demo receiver, not a store, and forgets all on exit.

use std::collections::HashSet;
use std::future::Future;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use serde_json::{json, Value};
use standardwebhooks::{Webhook, WebhookError, HEADER_WEBHOOK_ID};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use formbridge_shared::secrets::SigningSecret;

/// What `GET /stats` answers. Only verified requests count towards ids, so a forged request
/// cannot make a real delivery look like a duplicate.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Stats {
    pub received: u64,
    pub verified: u64,
    pub rejected: u64,
    pub unique_ids: u64,
    pub duplicates: u64,
}

struct Receiver {
    verifier: Webhook,
    tally: Mutex<Tally>,
    /// Appended to under its lock so concurrent requests never interleave within a line. The
    /// writes are a single short line each, so a blocking write inside the handler is fine for a demo.
    log: Option<Mutex<std::fs::File>>,
}

#[derive(Default)]
struct Tally {
    stats: Stats,
    seen: HashSet<String>,
}

impl Receiver {
    /// Fails, naming the setting but never echoing it, unless `secret` is a `whsec_` secret.
    fn new(secret: &str, log: Option<&Path>) -> Result<Self> {
        let secret = SigningSecret::parse(secret.trim()).context("--secret-file does not hold a whsec_ secret")?;
        let verifier = Webhook::new(secret.expose()).context("--secret-file does not hold a whsec_ secret")?;
        let log = match log {
            Some(path) => Some(Mutex::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .with_context(|| format!("--log {}", path.display()))?,
            )),
            None => None,
        };
        Ok(Self { verifier, tally: Mutex::new(Tally::default()), log })
    }

    /// Counts one request; answers whether it repeats a verified `webhook-id` seen before.
    fn count(&self, webhook_id: Option<&str>, verified: bool) -> bool {
        let mut tally = self.tally.lock().unwrap_or_else(|e| e.into_inner());
        tally.stats.received += 1;
        if !verified {
            tally.stats.rejected += 1;
            return false;
        }
        tally.stats.verified += 1;
        // A verified request always has an id: the signature covers it.
        let Some(id) = webhook_id else { return false };
        if tally.seen.insert(id.to_owned()) {
            tally.stats.unique_ids += 1;
            false
        } else {
            tally.stats.duplicates += 1;
            true
        }
    }

    fn stats(&self) -> Stats {
        self.tally.lock().unwrap_or_else(|e| e.into_inner()).stats
    }

    fn emit(&self, line: &Value) {
        let line = line.to_string();
        println!("{line}");
        if let Some(log) = &self.log {
            let mut file = log.lock().unwrap_or_else(|e| e.into_inner());
            if let Err(e) = writeln!(file, "{line}") {
                eprintln!("formbridge-admin: --log: {e}");
            }
        }
    }
}

/// The line printed for each request. `submission_id` and `form_id` come from the body the
/// delivery worker sends (`{"type", "timestamp", "data": {"submission_id", "form_id", ...}}`).
fn request_line(at: OffsetDateTime, webhook_id: Option<&str>, verified: bool, duplicate: bool, body: &[u8]) -> Value {
    let parsed: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let data = |field: &str| parsed.get("data").and_then(|d| d.get(field)).cloned().unwrap_or(Value::Null);
    json!({
        "at": at.format(&Rfc3339).unwrap_or_default(),
        "webhook_id": webhook_id,
        "verified": verified,
        "duplicate": duplicate,
        "submission_id": data("submission_id"),
        "form_id": data("form_id"),
        "bytes": body.len(),
    })
}

/// A stable code per reason a request was refused, for the JSON error answer.
fn rejection_code(e: &WebhookError) -> &'static str {
    match e {
        WebhookError::MissingHeader(_) => "missing_header",
        WebhookError::InvalidHeader(_) => "invalid_header",
        WebhookError::InvalidTimestamp => "invalid_timestamp",
        WebhookError::TimestampTooOldError => "timestamp_too_old",
        WebhookError::FutureTimestampError => "timestamp_in_future",
        WebhookError::InvalidPayload => "invalid_payload",
        WebhookError::InvalidSignature | WebhookError::InvalidSecret(_) => "invalid_signature",
    }
}

async fn receive(State(receiver): State<Arc<Receiver>>, headers: HeaderMap, body: Bytes) -> Response {
    let webhook_id = headers.get(HEADER_WEBHOOK_ID).and_then(|v| v.to_str().ok());
    let outcome = receiver.verifier.verify(&body, &headers);
    let duplicate = receiver.count(webhook_id, outcome.is_ok());
    receiver.emit(&request_line(OffsetDateTime::now_utc(), webhook_id, outcome.is_ok(), duplicate, &body));
    match outcome {
        // Duplicates are acknowledged too: a receiver that refused them would make the sender retry forever.
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => {
            let error = json!({ "error": { "code": rejection_code(&e), "message": e.to_string() } });
            (StatusCode::UNAUTHORIZED, Json(error)).into_response()
        }
    }
}

async fn stats(State(receiver): State<Arc<Receiver>>) -> Json<Stats> {
    Json(receiver.stats())
}

fn router(receiver: Arc<Receiver>) -> Router {
    Router::new()
        .route("/stats", get(stats).post(receive))
        .route("/", post(receive))
        .route("/{*path}", post(receive))
        .with_state(receiver)
}

/// Serves the receiver on `listener` until `shutdown` completes. `secret` is the destination's
/// `whsec_` signing secret (surrounding whitespace is ignored); `log`, when given, gets a copy
/// of every request line appended.
pub async fn serve(
    listener: tokio::net::TcpListener,
    secret: String,
    log: Option<PathBuf>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let receiver = Arc::new(Receiver::new(&secret, log.as_deref())?);
    axum::serve(listener, router(receiver)).with_graceful_shutdown(shutdown).await.context("webhook receiver")
}

/// `demo receive`: binds `listen` and serves until SIGINT or SIGTERM. The counts are on
/// `GET /stats` while it runs.
pub async fn run(listen: SocketAddr, secret_file: &Path, log: Option<PathBuf>) -> Result<Value> {
    let secret =
        std::fs::read_to_string(secret_file).with_context(|| format!("--secret-file {}", secret_file.display()))?;
    let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("--listen {listen}"))?;
    let addr = listener.local_addr()?;
    eprintln!("formbridge-admin: receiving webhooks on http://{addr}/ (GET /stats for counts; Ctrl-C to stop)");
    serve(listener, secret, log, formbridge_shared::shutdown::on_signal().cancelled_owned()).await?;
    Ok(json!({ "stopped": true, "listen": addr.to_string() }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";

    fn body() -> Vec<u8> {
        serde_json::to_vec(&json!({
            "type": "submission.created",
            "timestamp": "2026-11-25T08:00:01Z",
            "data": {
                "submission_id": "01JDQ8Z4M6W1XGZ5N3Q2T7V9KA",
                "tenant_id": "demo",
                "site": "demo.example.com",
                "form_id": "contact",
                "received_at": "2026-11-25T08:00:00Z",
                "payload": { "fields": { "email": "ada@example.com" } }
            }
        }))
        .unwrap()
    }

    async fn post(http: &reqwest::Client, url: &str, id: &str, signature: &str, ts: i64, body: &[u8]) -> u16 {
        http.post(url)
            .header("content-type", "application/json")
            .header("webhook-id", id)
            .header("webhook-timestamp", ts.to_string())
            .header("webhook-signature", signature)
            .body(body.to_vec())
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    #[tokio::test]
    async fn counts_verified_rejected_and_duplicate_deliveries() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let log =
            std::env::temp_dir().join(format!("formbridge-receiver-{}.jsonl", formbridge_shared::SubmissionId::new()));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, format!("  {SECRET}\n"), Some(log.clone()), async move {
            let _ = stopped.await;
        }));

        let http = reqwest::Client::new();
        let (id, ts, body) = ("msg_01JDQ8Z4M6W1XGZ5N3Q2T7V9KA", OffsetDateTime::now_utc().unix_timestamp(), body());
        let signature = Webhook::new(SECRET).unwrap().sign(id, ts, &body).unwrap();
        assert_eq!(post(&http, &format!("{base}/"), id, &signature, ts, &body).await, 204);
        assert_eq!(post(&http, &format!("{base}/hooks/formbridge"), id, &signature, ts, &body).await, 204, "a retry");
        let forged = Webhook::new(SigningSecret::generate().expose()).unwrap().sign(id, ts, &body).unwrap();
        let refused = http
            .post(format!("{base}/"))
            .header("webhook-id", id)
            .header("webhook-timestamp", ts.to_string())
            .header("webhook-signature", forged)
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status().as_u16(), 401);
        let error: Value = refused.json().await.unwrap();
        assert_eq!(error["error"]["code"], "invalid_signature");

        let stats: Value = http.get(format!("{base}/stats")).send().await.unwrap().json().await.unwrap();
        assert_eq!(stats, json!({ "received": 3, "verified": 2, "rejected": 1, "unique_ids": 1, "duplicates": 1 }));

        stop.send(()).unwrap();
        server.await.unwrap().unwrap();
        let written = std::fs::read_to_string(&log).unwrap();
        std::fs::remove_file(&log).unwrap();
        assert!(!written.contains(&SECRET["whsec_".len()..]), "the secret is never logged");
        let lines: Vec<Value> = written.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 3);
        let flags: Vec<_> = lines.iter().map(|l| (l["verified"].clone(), l["duplicate"].clone())).collect();
        assert_eq!(flags, [(json!(true), json!(false)), (json!(true), json!(true)), (json!(false), json!(false))]);
        for l in &lines {
            assert_eq!(l["webhook_id"], id);
            assert_eq!(l["submission_id"], "01JDQ8Z4M6W1XGZ5N3Q2T7V9KA");
            assert_eq!(l["form_id"], "contact");
            assert_eq!(l["bytes"], body.len());
            OffsetDateTime::parse(l["at"].as_str().unwrap(), &Rfc3339).unwrap();
        }
    }

    #[tokio::test]
    async fn refuses_to_start_without_a_whsec_secret() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let err = serve(listener, "not-a-secret".into(), None, async {}).await.unwrap_err();
        assert!(format!("{err:#}").contains("--secret-file"), "{err:#}");
        assert!(!format!("{err:#}").contains("not-a-secret"), "the secret is never echoed");
    }
}

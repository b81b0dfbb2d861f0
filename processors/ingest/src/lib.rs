//! The ingest endpoint: `POST /v1/submissions`, signed with Standard Webhooks by the site's
//! secret. It answers 202 only once SQS holds the submission, and never enqueues anything it has
//! not authenticated and validated.
//!
//! Order of checks (each failure answers at once, with nothing queued): content type (415), body
//! size (413), signature headers and timestamp (401), strict JSON (400), site lookup and
//! signature (401, one answer for "unknown site" and "bad signature"), envelope limits (422),
//! tenant rate limit (429), queue (503).

pub mod config;
pub mod envelope;
pub mod error;
pub mod failures;
pub mod queue;
pub mod server;
pub mod sites;

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use governor::{DefaultKeyedRateLimiter, RateLimiter};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use formbridge_shared::audit::AuthFailure;
use formbridge_shared::aws::AwsClients;
use formbridge_shared::queue::Queue;
use formbridge_shared::store::DataStore;
use formbridge_shared::submission::{MessageError, QueueMessage, Submission, MAX_ITEM_BYTES};
use formbridge_shared::{domain, SiteDomain, SubmissionId, TenantId};

pub use config::Config;
use error::ApiError;
use failures::FailureLog;
use queue::{EnqueueError, Enqueuer};
use sites::SiteResolver;

/// Everything a request needs.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    sites: SiteResolver,
    enqueuer: Enqueuer,
    limiter: DefaultKeyedRateLimiter<TenantId>,
    failures: FailureLog,
    tolerance_s: i64,
    /// Sends waiting for the queue beyond which requests get a 503 at once.
    max_waiting_sends: usize,
    deadline: std::time::Duration,
    /// Ids this instance queued lately (see [`Config::recent_ids`]); concurrent copies of one
    /// submission share a single send.
    recent: moka::future::Cache<SubmissionId, ()>,
    metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("invalid configuration: {0}")]
    Config(#[from] formbridge_shared::aws::ConfigError),
    #[error(transparent)]
    Queue(#[from] formbridge_shared::queue::QueueError),
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: std::net::SocketAddr, source: std::io::Error },
}

/// The parts of a running endpoint that outlive the router: what to flush at shutdown.
#[derive(Debug)]
pub struct Endpoint {
    pub router: Router,
    pub failures: FailureLog,
    pub store: DataStore,
    pub enqueue_stats: Arc<queue::EnqueueStats>,
    /// Timeouts and the connection limit the server applies (`server::serve`).
    pub limits: server::ConnLimits,
}

/// Builds the router and its state (tests serve it on a random port).
pub async fn endpoint(
    config: &Config,
    aws: &AwsClients,
    metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
) -> Result<Endpoint, IngestError> {
    let aws = &aws.for_component("ingest");
    let keyring = config.keyring.load()?;
    let store = DataStore::new(bounded_dynamodb(&aws.dynamodb), config.resources.table.clone());
    let queue = Queue::open_patiently(bounded_sqs(&aws.sqs), &config.resources.ingest_queue, "ingest").await?;
    let quota = config.instance_quota();
    let failures = FailureLog::default();
    let enqueuer = Enqueuer::start(queue, config.linger());
    let enqueue_stats = enqueuer.stats.clone();
    let state = AppState {
        inner: Arc::new(Inner {
            sites: SiteResolver::new(
                store.clone(),
                keyring,
                std::time::Duration::from_secs(config.site_cache_seconds.max(1))
                    .min(std::time::Duration::from_secs(60)),
            ),
            enqueuer,
            limiter: RateLimiter::keyed(quota),
            failures: failures.clone(),
            tolerance_s: i64::try_from(config.timestamp_tolerance_seconds).unwrap_or(300),
            max_waiting_sends: usize::try_from(config.max_waiting_sends).unwrap_or(usize::MAX),
            deadline: std::time::Duration::from_millis(config.request_deadline_ms),
            recent: moka::future::Cache::builder()
                .max_capacity(config.recent_ids)
                .time_to_live(std::time::Duration::from_secs(config.recent_seconds))
                .build(),
            metrics,
        }),
    };
    let limits = config.conn_limits();
    let body_limits = Arc::new(limits);
    let router = Router::new()
        .route(
            "/v1/submissions",
            post(submit).route_layer(axum::middleware::from_fn(move |req, next| {
                server::body_within(body_limits.clone(), req, next)
            })),
        )
        .route("/healthz", get(|| async { Json(serde_json::json!({"status": "ok"})) }))
        .route("/metrics", get(render_metrics))
        .layer(DefaultBodyLimit::max(config.max_body_bytes))
        .with_state(state);
    Ok(Endpoint { router, failures, store, enqueue_stats, limits })
}

/// The endpoint as a Lambda function behind a Function URL: the same router, with two changes
/// for an instance that serves one request at a time and is frozen between them. Sends do not
/// linger for company (no other request can join them), and the authentication-failure counts
/// are written after a request (at most every `INGEST_AUDIT_FLUSH_SECONDS` per environment)
/// instead of by a background timer that a frozen function would never run.
pub async fn lambda_app(config: &Config, aws: &AwsClients) -> Result<Router, IngestError> {
    let mut config = config.clone();
    config.batch_linger_ms = 0;
    let ep = endpoint(&config, aws, None).await?;
    let (failures, store) = (ep.failures, ep.store);
    let every = std::time::Duration::from_secs(config.audit_flush_seconds);
    Ok(ep.router.layer(axum::middleware::from_fn(move |req: axum::extract::Request, next: axum::middleware::Next| {
        let (failures, store) = (failures.clone(), store.clone());
        async move {
            let response = next.run(req).await;
            failures.flush_if_due(&store, every).await;
            response
        }
    })))
}

/// The queue client for the request path: a hung queue must turn into a 503 within seconds, not
/// hold the sender's connection. The SDK's standard retries still apply within that bound.
fn bounded_sqs(sqs: &aws_sdk_sqs::Client) -> aws_sdk_sqs::Client {
    aws_sdk_sqs::Client::from_conf(sqs.config().to_builder().timeout_config(request_path_timeouts()).build())
}

/// The site lookups' client, bounded the same way: a hung engine (the chaos run's SIGSTOP) made a
/// lookup that missed the cache wait with no limit, and the sender with it; now it is a 503
/// `lookup_unavailable` with `Retry-After` within seconds.
fn bounded_dynamodb(ddb: &aws_sdk_dynamodb::Client) -> aws_sdk_dynamodb::Client {
    aws_sdk_dynamodb::Client::from_conf(ddb.config().to_builder().timeout_config(request_path_timeouts()).build())
}

fn request_path_timeouts() -> aws_config::timeout::TimeoutConfig {
    aws_config::timeout::TimeoutConfig::builder()
        .connect_timeout(std::time::Duration::from_secs(2))
        .operation_attempt_timeout(std::time::Duration::from_secs(3))
        .operation_timeout(std::time::Duration::from_secs(8))
        .build()
}

/// Serves until `shutdown`, then stops accepting, finishes requests in flight and flushes the
/// audit counters.
pub async fn run(
    config: Config,
    aws: AwsClients,
    metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    shutdown: CancellationToken,
) -> Result<(), IngestError> {
    config.validate()?;
    let ep = endpoint(&config, &aws, metrics).await?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| IngestError::Listen { addr: config.listen, source })?;
    tracing::info!(addr = %config.listen, "ingest listening");
    let costs = formbridge_shared::costs::start(ep.store.client(), &config.resources, &shutdown);
    serve(listener, ep, std::time::Duration::from_secs(config.audit_flush_seconds), shutdown).await;
    formbridge_shared::costs::finish(costs).await;
    Ok(())
}

pub async fn serve(
    listener: tokio::net::TcpListener,
    ep: Endpoint,
    audit_every: std::time::Duration,
    shutdown: CancellationToken,
) {
    let flusher = tokio::spawn(ep.failures.clone().run(ep.store.clone(), audit_every, shutdown.clone()));
    server::serve(listener, ep.router, ep.limits, shutdown.clone()).await;
    let _ = flusher.await;
    tracing::info!("ingest stopped");
}

async fn render_metrics(State(state): State<AppState>) -> impl IntoResponse {
    let body = state.inner.metrics.as_ref().map(|h| h.render()).unwrap_or_default();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body)
}

/// The answer to a copy of a submission this instance has queued already: the same 202 as the
/// first time, so the sender stops retrying, and no second SQS message.
fn already_queued(tenant: &TenantId, site: &SiteDomain, id: SubmissionId) -> (StatusCode, Json<serde_json::Value>) {
    metrics::counter!("ingest_duplicates_total").increment(1);
    tracing::info!(tenant = %tenant, site = %site, submission_id = %id, "submission queued already");
    (StatusCode::ACCEPTED, Json(serde_json::json!({"submission_id": id, "status": "queued", "duplicate": true})))
}

/// The id of a submission: the same site, `webhook-id` and content always give the same id, so a
/// sender's retry rewrites the same item instead of adding one, at no extra DynamoDB cost. The
/// content is the canonical payload (keys sorted, no whitespace), so a retry that re-serialises
/// the same JSON differently is still the same submission; a `webhook-id` reused for different
/// content is a new submission, stored, counted and delivered as such (never an overwrite).
/// The ULID's time part is the submission time the site reports (stable across retries), so ids
/// sort by submission time; a body without `submitted_at` gets time 0 and sorts before dated ones.
pub fn submission_id(site: &SiteDomain, webhook_id: &str, time_ms: u64, canonical_payload: &[u8]) -> SubmissionId {
    let content = Sha256::digest(canonical_payload);
    let h = Sha256::new()
        .chain_update(site.as_str())
        .chain_update([0])
        .chain_update(webhook_id)
        .chain_update([0])
        .chain_update(content)
        .finalize();
    let mut random = [0u8; 16];
    random[6..].copy_from_slice(&h[..10]);
    let random = u128::from_be_bytes(random);
    SubmissionId::from_ulid(ulid::Ulid::from_parts(time_ms.min((1 << 48) - 1), random))
}

fn now_s() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

/// Refuses a submission whose stored item would be over DynamoDB's 400 KB limit (413), so it is
/// never accepted only to be dead-lettered by the persister. Only large bodies are compressed
/// here to find out: anything under half the limit fits whatever the codec does.
fn check_item_fits(message: &QueueMessage, payload_len: usize) -> Result<(), ApiError> {
    if payload_len < MAX_ITEM_BYTES / 2 {
        return Ok(());
    }
    let checked = Submission::from_message(message.clone())
        .and_then(|s| s.to_checked_item(&formbridge_shared::codec::PayloadCodec::default()));
    match checked {
        Err(e @ MessageError::ItemTooLarge(_)) => {
            Err(ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "item_too_large", e.to_string()))
        }
        Err(e) => Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_submission", e.to_string())),
        Ok(_) => Ok(()),
    }
}

/// The id and timestamp, when all three Standard Webhooks headers are present and readable.
fn signature_headers(h: &HeaderMap) -> Option<(&str, i64)> {
    let get = |n: &str| h.get(n).and_then(|v| v.to_str().ok()).filter(|v| !v.is_empty());
    let id = get("webhook-id").filter(|v| v.len() <= 256)?;
    let ts = get("webhook-timestamp")?.parse().ok()?;
    get("webhook-signature")?;
    Some((id, ts))
}

async fn submit(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<impl IntoResponse, ApiError> {
    // Past the deadline the request is dropped where it stands: a send still gathering for its
    // batch is withdrawn (`Lingering::submit`); one already in a SendMessageBatch may still land,
    // and the sender's retry then makes the same submission id, stored once.
    let result = match tokio::time::timeout(state.inner.deadline, accept(&state, &headers, body)).await {
        Ok(r) => r,
        Err(_) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "deadline_exceeded",
            "the submission could not be queued in time; try again shortly",
        )
        .retry_after(2)),
    };
    let code = match &result {
        Ok(_) => "accepted",
        Err(e) => e.code,
    };
    if result.as_ref().is_err_and(|e| e.status.is_server_error()) {
        formbridge_shared::telemetry::log_metric::emit(formbridge_shared::telemetry::log_metric::INGEST_5XX, 1);
    }
    metrics::counter!("ingest_requests_total", "outcome" => code).increment(1);
    result
}

async fn accept(
    state: &AppState,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let s = &state.inner;
    let json_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"));
    if !json_type {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "Content-Type must be application/json",
        ));
    }
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", "the body is over the size limit")
        } else {
            ApiError::new(StatusCode::BAD_REQUEST, "unreadable_body", "the body could not be read")
        }
    })?;

    let now = now_s();
    let Some((webhook_id, ts)) = signature_headers(headers) else {
        s.failures.record(None, None, AuthFailure::MissingHeaders, now);
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing_signature",
            "webhook-id, webhook-timestamp and webhook-signature headers are required",
        ));
    };
    if now.abs_diff(ts) > s.tolerance_s.unsigned_abs() {
        let reason = if ts < now { AuthFailure::StaleTimestamp } else { AuthFailure::FutureTimestamp };
        s.failures.record(None, None, reason, now);
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "timestamp_out_of_tolerance",
            format!("webhook-timestamp is more than {} seconds from the server's clock", s.tolerance_s),
        ));
    }

    let parsed = envelope::parse_strict(&body)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "malformed_json", e.to_string()))?;
    let raw_site = envelope::site_of(&parsed).ok_or_else(|| {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_submission", "site is required and must be a string")
    })?;

    // Authenticate before looking at anything else in the body.
    let Ok(site) = domain::normalize(raw_site) else {
        s.failures.record(None, None, AuthFailure::UnknownSite, now);
        return Err(ApiError::invalid_signature());
    };
    let resolved = s.sites.resolve(&site).await.map_err(|e| {
        tracing::error!(error = %e, "site lookup failed");
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "lookup_unavailable", "the site registry is unreachable")
            .retry_after(5)
    })?;
    let Some(resolved) = resolved else {
        s.failures.record(None, Some(site), AuthFailure::UnknownSite, now);
        return Err(ApiError::invalid_signature());
    };
    let tenant = resolved.tenant.tenant_id.clone();
    let now_ms = u64::try_from(now).unwrap_or(0) * 1000;
    if !resolved.verifies(&body, headers, now_ms) {
        s.failures.record(Some(tenant), Some(site), AuthFailure::BadSignature, now);
        return Err(ApiError::invalid_signature());
    }

    let env = envelope::validate(parsed).map_err(|e| match e {
        envelope::EnvelopeError::Malformed(m) => ApiError::new(StatusCode::BAD_REQUEST, "malformed_json", m),
        envelope::EnvelopeError::Invalid(m) => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_submission", m),
    })?;

    let received = OffsetDateTime::now_utc();
    // Identity must survive a retry, so the time part comes only from the signed body: the
    // submission time the site reports, or 0 ("undated") when it sends none.
    let time_ms = env.submitted_at.map_or(0, |t| u64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(0));
    let payload = env.payload();
    let canonical = serde_json::to_vec(&payload)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    let id = submission_id(&site, webhook_id, time_ms, &canonical);
    // A retry of a submission this instance queued lately: SQS holds it already.
    if s.recent.contains_key(&id) {
        return Ok(already_queued(&tenant, &site, id));
    }

    if let Err(not_until) = s.limiter.check_key(&tenant) {
        let wait = not_until.wait_time_from(governor::clock::Clock::now(&governor::clock::DefaultClock::default()));
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "this tenant is over its submission rate",
        )
        .retry_after(wait.as_secs_f64().ceil() as u64));
    }

    let message = QueueMessage::new(&resolved.tenant, site.clone(), env.form_id.clone(), id, received, payload);
    check_item_fits(&message, canonical.len())?;
    let body = serde_json::to_string(&message)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    // Shed load rather than queue without bound behind a struggling queue: the senders' retries
    // would only add to it (see `Lingering::submit`).
    if s.enqueuer.waiting() >= s.max_waiting_sends {
        metrics::counter!("ingest_shed_total").increment(1);
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "queue_busy",
            "too many submissions are waiting for the queue; try again shortly",
        )
        .retry_after(2));
    }
    // Copies of one submission arriving together (a sender retrying while its first request
    // still waits) share one send; only a queued id is remembered.
    let sent_here = std::sync::atomic::AtomicBool::new(false);
    let queued = s
        .recent
        .try_get_with(id, async {
            sent_here.store(true, std::sync::atomic::Ordering::Relaxed);
            s.enqueuer.enqueue(body).await
        })
        .await;
    match queued.map_err(|e| (*e).clone()) {
        Ok(()) if !sent_here.load(std::sync::atomic::Ordering::Relaxed) => Ok(already_queued(&tenant, &site, id)),
        Ok(()) => {
            tracing::info!(tenant = %tenant, site = %site, submission_id = %id, "submission queued");
            Ok((StatusCode::ACCEPTED, Json(serde_json::json!({"submission_id": id, "status": "queued"}))))
        }
        Err(EnqueueError::Refused(why)) => {
            tracing::error!(tenant = %tenant, submission_id = %id, error = %why, "queue refused a submission");
            Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "queue_unavailable",
                "the submission could not be queued",
            )
            .retry_after(5))
        }
        Err(EnqueueError::Unavailable(why)) => {
            tracing::error!(tenant = %tenant, submission_id = %id, error = %why, "queue unavailable");
            Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "queue_unavailable",
                "the submission could not be queued",
            )
            .retry_after(5))
        }
    }
}

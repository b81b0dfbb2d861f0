//! `formbridge-api`: the tenant read API and the dashboard, one process.
//!
//! Everything it reads goes through the `shared` data layer, by key or by Query, never by scan:
//! submissions by a k-way merge across the tenant's shards ([`formbridge_shared::listing`]), one
//! submission with its delivery history from one Query, metrics from the aggregator's items only,
//! deliveries waiting on the worklist index. It writes only what a tenant changes: destinations,
//! replays (a record update and a queue message), sessions.
//!
//! Routes are listed in [`ROUTES`] and documented in `openapi.json` (served at
//! `/v1/openapi.json`); a test keeps the two in step.

pub mod auth;
pub mod config;
pub mod destinations;
pub mod error;
pub mod exports;
pub mod metrics_api;
pub mod pages;
pub mod privacy;
pub mod readers;
pub mod submissions;

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use moka::future::Cache;
use tokio_util::sync::CancellationToken;

use formbridge_shared::aws::AwsClients;
use formbridge_shared::delivery::health::HealthStore;
use formbridge_shared::delivery::replay::Replayer;
use formbridge_shared::delivery::Records;
use formbridge_shared::queue::Queue;
use formbridge_shared::secrets::Keyring;
use formbridge_shared::store::DataStore;
use formbridge_shared::tenant::TenantProfile;
use formbridge_shared::TenantId;

pub use config::Config;
use error::ApiError;

/// Every route: method and path, as the OpenAPI document names them.
pub const ROUTES: &[(&str, &str)] = &[
    ("get", "/v1/session"),
    ("post", "/v1/session/logout"),
    ("post", "/v1/portal/exchange"),
    ("get", "/v1/submissions"),
    ("get", "/v1/submissions/{id}"),
    ("post", "/v1/submissions/{id}/deliveries/{destination_id}/replay"),
    ("get", "/v1/deliveries"),
    ("post", "/v1/replays"),
    ("get", "/v1/destinations"),
    ("post", "/v1/destinations"),
    ("get", "/v1/destinations/{id}"),
    ("patch", "/v1/destinations/{id}"),
    ("delete", "/v1/destinations/{id}"),
    ("post", "/v1/destinations/{id}/enable"),
    ("post", "/v1/destinations/{id}/disable"),
    ("post", "/v1/destinations/{id}/test"),
    ("get", "/v1/metrics"),
    ("get", "/v1/metrics/live"),
    ("get", "/v1/cost"),
    ("get", "/v1/recommendations"),
    ("get", "/v1/exports"),
    ("post", "/v1/erasure"),
    ("get", "/v1/retention"),
    ("put", "/v1/forms/{form}/retention"),
    ("get", "/v1/openapi.json"),
];

/// Everything a request needs.
#[derive(Clone)]
pub struct AppState {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub store: DataStore,
    /// Reads of one tenant's data, under the tenant-scoped role when one is configured.
    pub readers: readers::TenantReaders,
    pub keyring: Keyring,
    pub limiter: DefaultKeyedRateLimiter<String>,
    pub auth_cache: Cache<[u8; 32], auth::Authenticated>,
    pub profiles: Cache<TenantId, Option<TenantProfile>>,
    /// A tenant's destinations, for the history view (which shows the ones still queued).
    pub destinations: Cache<TenantId, Arc<Vec<formbridge_shared::destination::Destination>>>,
    pub replayer: Replayer,
    pub health: HealthStore,
    /// Sends destination tests, with the delivery worker's address guard.
    pub sender: formbridge_shared::delivery::send::Sender,
    pub live: Arc<tokio::sync::Semaphore>,
    pub config: Config,
    /// The cost figures' prices (`FORMBRIDGE_PRICE_REGION`, `FORMBRIDGE_PRICES_FILE`).
    pub prices: formbridge_shared::billing::Prices,
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    /// Ends live connections when the process stops.
    pub shutdown: CancellationToken,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").finish_non_exhaustive()
    }
}

impl AppState {
    /// The store to read `tenant`'s submissions, deliveries and metrics with.
    pub(crate) async fn reader(&self, tenant: &TenantId) -> DataStore {
        self.inner.readers.store(tenant, &self.inner.store).await
    }

    /// A tenant's profile (shard history), cached like credentials. Caching is safe: a shard
    /// count change takes effect `GROWTH_DELAY_MS` (minutes) after it is written, and reads
    /// cover every shard of the history.
    pub(crate) async fn profile(&self, tenant: &TenantId) -> Result<TenantProfile, ApiError> {
        let store = self.inner.store.clone();
        let t = tenant.clone();
        self.inner
            .profiles
            .try_get_with(tenant.clone(), async move { store.get_tenant(&t).await })
            .await
            .map_err(ApiError::unavailable)?
            .ok_or_else(ApiError::not_found)
    }
}

impl AppState {
    /// A tenant's destinations, cached like profiles (a change made here clears it at once).
    pub(crate) async fn destinations(
        &self,
        tenant: &TenantId,
    ) -> Result<Arc<Vec<formbridge_shared::destination::Destination>>, ApiError> {
        let store = self.inner.store.clone();
        let t = tenant.clone();
        self.inner
            .destinations
            .try_get_with(tenant.clone(), async move { store.list_destinations(&t).await.map(Arc::new) })
            .await
            .map_err(ApiError::unavailable)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("invalid configuration: {0}")]
    Config(#[from] formbridge_shared::aws::ConfigError),
    #[error(transparent)]
    Queue(#[from] formbridge_shared::queue::QueueError),
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: std::net::SocketAddr, source: std::io::Error },
}

/// Builds the router and its state (tests serve it on a random port).
pub async fn router(
    config: &Config,
    aws: &AwsClients,
    metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    shutdown: CancellationToken,
) -> Result<Router, RunError> {
    let aws = &aws.for_component("api");
    let keyring = config.keyring.load()?;
    let store = DataStore::new(aws.dynamodb.clone(), config.resources.table.clone());
    let queue = Queue::open_patiently(aws.sqs.clone(), &config.resources.delivery_queue, "api").await?;
    let quota = Quota::per_second(NonZeroU32::new(config.key_rate).unwrap_or(NonZeroU32::MIN))
        .allow_burst(NonZeroU32::new(config.key_burst).unwrap_or(NonZeroU32::MIN));
    let ttl = config.auth_cache().max(Duration::from_millis(1));
    let state = AppState {
        inner: Arc::new(Inner {
            keyring,
            limiter: RateLimiter::keyed(quota),
            auth_cache: Cache::builder().max_capacity(100_000).time_to_live(ttl).build(),
            profiles: Cache::builder().max_capacity(100_000).time_to_live(ttl).build(),
            destinations: Cache::builder().max_capacity(10_000).time_to_live(ttl).build(),
            replayer: Replayer { records: Records::new(store.clone(), "api"), queue },
            health: HealthStore { client: aws.dynamodb.clone(), table: config.resources.table.clone() },
            sender: formbridge_shared::delivery::send::Sender::new(formbridge_shared::delivery::ssrf::AddressPolicy {
                allow_loopback: config.allow_loopback,
            }),
            live: Arc::new(tokio::sync::Semaphore::new(config.live_max_connections as usize)),
            readers: readers::TenantReaders::new(
                aws.clone(),
                config.resources.table.clone(),
                config.tenant_read_role_arn.clone(),
            ),
            store,
            prices: config.prices.load()?,
            config: config.clone(),
            metrics,
            shutdown,
        }),
    };
    Ok(Router::new()
        .route("/v1/session", get(pages::session))
        .route("/v1/session/logout", post(pages::logout))
        .route("/v1/portal/exchange", post(pages::exchange))
        .route("/v1/submissions", get(submissions::list))
        .route("/v1/submissions/{id}", get(submissions::one))
        .route("/v1/submissions/{id}/deliveries/{destination_id}/replay", post(submissions::replay))
        .route("/v1/deliveries", get(submissions::deliveries))
        .route("/v1/replays", post(submissions::bulk_replay))
        .route("/v1/destinations", get(destinations::list).post(destinations::create))
        .route("/v1/destinations/{id}", get(destinations::one).patch(destinations::update).delete(destinations::delete))
        .route("/v1/destinations/{id}/enable", post(destinations::enable))
        .route("/v1/destinations/{id}/disable", post(destinations::disable))
        .route("/v1/destinations/{id}/test", post(destinations::test_send))
        .route("/v1/metrics", get(metrics_api::metrics))
        .route("/v1/metrics/live", get(metrics_api::live))
        .route("/v1/cost", get(metrics_api::cost))
        .route("/v1/recommendations", get(metrics_api::recommendations))
        .route("/v1/exports", get(exports::export))
        .route("/v1/erasure", post(privacy::erase))
        .route("/v1/retention", get(privacy::retention))
        .route("/v1/forms/{form}/retention", axum::routing::put(privacy::set_retention))
        .route("/v1/openapi.json", get(pages::openapi))
        .route("/", get(pages::dashboard))
        .route("/portal", get(pages::portal))
        .route("/assets/{file}", get(pages::asset))
        .route("/healthz", get(|| async { Json(serde_json::json!({"status": "ok"})) }))
        .route("/metrics", get(render_metrics))
        .fallback(|| async { ApiError::not_found() })
        .layer(axum::middleware::from_fn(log_request))
        .layer(axum::extract::DefaultBodyLimit::max(64 * 1024))
        .with_state(state))
}

/// Serves until `shutdown`, then stops accepting and finishes requests in flight (live
/// connections end at once).
pub async fn run(
    config: Config,
    aws: AwsClients,
    metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    shutdown: CancellationToken,
) -> Result<(), RunError> {
    config.validate()?;
    let app = router(&config, &aws, metrics, shutdown.clone()).await?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| RunError::Listen { addr: config.listen, source })?;
    tracing::info!(addr = %config.listen, "api listening");
    let costs = formbridge_shared::costs::start(&aws.dynamodb, &config.resources, &shutdown);
    serve(listener, app, shutdown).await;
    formbridge_shared::costs::finish(costs).await;
    Ok(())
}

pub async fn serve(listener: tokio::net::TcpListener, app: Router, shutdown: CancellationToken) {
    let s = shutdown.clone();
    if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(async move { s.cancelled().await }).await {
        tracing::error!(error = %e, "server error");
    }
    tracing::info!("api stopped");
}

/// One log line per request: the method, the route template (never the path's ids, the query
/// with its cursor, or any header, so no key, token or cookie reaches a log), status and time.
async fn log_request(req: axum::extract::Request, next: axum::middleware::Next) -> axum::response::Response {
    let method = req.method().clone();
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let started = std::time::Instant::now();
    let resp = next.run(req).await;
    let status = resp.status().as_u16();
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    metrics::histogram!("api_request_seconds", "route" => route.clone()).record(ms / 1000.0);
    tracing::info!(%method, route, status, ms, "api request");
    resp
}

async fn render_metrics(axum::extract::State(state): axum::extract::State<AppState>) -> impl IntoResponse {
    let body = state.inner.metrics.as_ref().map(|h| h.render()).unwrap_or_default();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_openapi_document_lists_every_route_and_only_those() {
        let doc: serde_json::Value = serde_json::from_str(pages::OPENAPI).expect("openapi.json is JSON");
        let mut documented = std::collections::BTreeSet::new();
        for (path, ops) in doc["paths"].as_object().expect("paths") {
            for method in ops.as_object().expect("operations").keys() {
                documented.insert((method.clone(), path.clone()));
            }
        }
        let served: std::collections::BTreeSet<(String, String)> =
            ROUTES.iter().map(|(m, p)| ((*m).to_owned(), (*p).to_owned())).collect();
        assert_eq!(documented, served);
    }
}

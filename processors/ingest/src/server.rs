//! The HTTP server around the router, bounded against slow and greedy clients:
//! - a client has `INGEST_HEADER_TIMEOUT_SECONDS` to send a request's headers, from the moment
//!   the connection opens or goes idle after an answer; a slower or silent one is disconnected
//!   (so an idle keep-alive connection is closed after the same time);
//! - once its headers are in, it has `INGEST_BODY_TIMEOUT_SECONDS` to send the whole body, or it
//!   gets a 408 `body_timeout` and the connection is closed;
//! - at most `INGEST_MAX_CONNECTIONS` connections are open at once; further clients wait in the
//!   listen backlog until one closes (the two timeouts above make sure one does).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio_util::sync::CancellationToken;

use crate::error::ApiError;

/// How long a graceful stop waits for requests in progress.
const DRAIN: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnLimits {
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    pub max_connections: usize,
    pub max_body_bytes: usize,
}

/// Reads the whole body within the body timeout before the handler runs: a client that trickles
/// its body gets a 408 instead of holding a task and a connection for as long as it likes.
pub async fn body_within(limits: Arc<ConnLimits>, req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    match tokio::time::timeout(limits.body_timeout, axum::body::to_bytes(body, limits.max_body_bytes)).await {
        Ok(Ok(bytes)) => next.run(Request::from_parts(parts, Body::from(bytes))).await,
        Ok(Err(e)) => {
            let too_large = std::error::Error::source(&e).is_some_and(|s| s.is::<http_body_util::LengthLimitError>())
                || e.to_string().contains("length limit");
            let err = if too_large {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", "the body is over the size limit")
            } else {
                ApiError::new(StatusCode::BAD_REQUEST, "unreadable_body", "the body could not be read")
            };
            metrics::counter!("ingest_requests_total", "outcome" => err.code).increment(1);
            closing(err.into_response())
        }
        Err(_) => {
            metrics::counter!("ingest_requests_total", "outcome" => "body_timeout").increment(1);
            let err = ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                format!(
                    "the body did not arrive within {} seconds (INGEST_BODY_TIMEOUT_SECONDS)",
                    limits.body_timeout.as_secs()
                ),
            );
            closing(err.into_response())
        }
    }
}

/// The answer, and the connection closed after it (the rest of the body is never read).
fn closing(mut r: Response) -> Response {
    r.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}

/// Serves `router` on `listener` within `limits` until `shutdown`, then lets requests in progress
/// finish (up to 10 s).
pub async fn serve(listener: tokio::net::TcpListener, router: Router, limits: ConnLimits, shutdown: CancellationToken) {
    // HTTP/1.1 only (what WordPress and load balancers send): an auto-detecting server would first
    // wait, without a timeout, for bytes telling HTTP/1 from HTTP/2.
    let mut builder = Builder::new(TokioExecutor::new()).http1_only();
    builder.http1().timer(TokioTimer::new()).header_read_timeout(limits.header_timeout);
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    let open = metrics::gauge!("ingest_open_connections");
    loop {
        // A free slot first: at the limit, new clients wait in the kernel's backlog.
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => p.expect("the semaphore is never closed"),
            () = shutdown.cancelled() => break,
        };
        let stream = tokio::select! {
            a = listener.accept() => match a {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: wait a moment rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        open.increment(1.0);
        let service = TowerToHyperService::new(router.clone());
        let conn = builder.serve_connection(TokioIo::new(stream), service).into_owned();
        let conn = graceful.watch(conn);
        let open = open.clone();
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            open.decrement(1.0);
            drop(permit);
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN, graceful.shutdown()).await.is_err() {
        tracing::warn!("requests still in progress after {DRAIN:?}; stopping anyway");
    }
}

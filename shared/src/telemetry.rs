//! Logging and metrics set-up shared by every process. Logging: `tracing` with JSON lines when stdout is not a
//! terminal (so log shippers get structured fields), human-readable output otherwise.
//! `RUST_LOG` filters as usual; the default is `info`.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    // A second init (tests start several processes in one binary) is harmless: keep the first.
    let _ = if std::io::stderr().is_terminal() {
        builder.try_init()
    } else {
        builder.json().flatten_event(true).try_init()
    };
}

/// Serves Prometheus metrics on `addr` when set (the processes' `*_METRICS_ADDR` setting, named
/// by `setting` in the error).
pub fn serve_metrics(addr: Option<std::net::SocketAddr>, setting: &str) -> Result<(), String> {
    let Some(addr) = addr else { return Ok(()) };
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_http_listener(addr)
        .install()
        .map_err(|e| format!("cannot serve metrics on {setting}={addr}: {e}"))
}

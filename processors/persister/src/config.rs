//! The persister's settings: flags, each with an environment variable, validated at start-up.

use std::net::SocketAddr;

use clap::Parser;
use formbridge_shared::aws::{ConfigError, ResourceNames};

/// Consumes the ingest queue and writes compressed, write-sharded submissions into
/// FormBridgeData. AWS region, credentials and endpoint come from the SDK's standard settings
/// (AWS_REGION, AWS_PROFILE, AWS_ENDPOINT_URL, ...).
#[derive(Debug, Clone, Parser)]
#[command(name = "formbridge-persister", version)]
pub struct Config {
    #[command(flatten)]
    pub resources: ResourceNames,

    /// Concurrent long-polling receivers (each takes up to 10 messages per receive).
    #[arg(long, env = "PERSISTER_POLLERS", default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub pollers: u16,

    /// After a receive that did not fill its batch (10), a poller waits this long (ms) before
    /// the next, so that at low rates one receive carries several messages; another poller's
    /// long poll picks up what arrives meanwhile. 0 turns it off.
    #[arg(long, env = "PERSISTER_RECEIVE_LINGER_MS", default_value_t = 200, value_parser = clap::value_parser!(u64).range(0..=5_000))]
    pub receive_linger_ms: u64,

    /// Concurrent BatchWriteItem calls (each up to 25 items).
    #[arg(long, env = "PERSISTER_WRITERS", default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=32))]
    pub writers: u16,

    /// Long-poll wait per receive, seconds (0-20). Shutdown waits for receives in flight.
    #[arg(long, env = "PERSISTER_WAIT_SECONDS", default_value_t = 20, value_parser = clap::value_parser!(u8).range(0..=20))]
    pub wait_seconds: u8,

    /// The lease on a received message, seconds: received with this visibility timeout and
    /// extended while it is being stored, so a persister that dies mid-batch hands its messages
    /// back within this time instead of the queue's 60 s. 0 keeps the queue's own timeout.
    #[arg(long, env = "PERSISTER_LEASE_SECONDS", default_value_t = 15, value_parser = clap::value_parser!(u64).range(0..=600))]
    pub lease_seconds: u64,

    /// Retries of BatchWriteItem's UnprocessedItems (jittered exponential backoff, 50 ms to 5 s)
    /// before the batch is left to SQS redelivery.
    #[arg(long, env = "PERSISTER_WRITE_RETRIES", default_value_t = 8, value_parser = clap::value_parser!(u16).range(0..=30))]
    pub write_retries: u16,

    /// Payloads larger than this many bytes are brotli-compressed.
    #[arg(long, env = "PERSISTER_COMPRESS_THRESHOLD", default_value_t = formbridge_shared::codec::DEFAULT_THRESHOLD)]
    pub compress_threshold: usize,

    /// Brotli quality (0-11).
    #[arg(long, env = "PERSISTER_BROTLI_QUALITY", default_value_t = formbridge_shared::codec::DEFAULT_QUALITY, value_parser = clap::value_parser!(u32).range(0..=11))]
    pub brotli_quality: u32,

    /// Serve Prometheus metrics on this address (e.g. 127.0.0.1:9464). Off when unset.
    #[arg(long, env = "PERSISTER_METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,
}

impl Config {
    /// Checks what clap cannot: resource names.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.resources.validate()
    }

    pub fn receive_linger(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.receive_linger_ms)
    }

    /// Settings for tests and embedding: defaults with the given resource names.
    pub fn for_resources(resources: ResourceNames) -> Self {
        let mut c = Config::parse_from(["formbridge-persister"]);
        c.resources = resources;
        c
    }
}

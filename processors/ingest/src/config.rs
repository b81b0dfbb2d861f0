//! The ingest endpoint's settings: flags, each with an environment variable, validated at start.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use formbridge_shared::aws::{ConfigError, ResourceNames};
use formbridge_shared::secrets::KeyringArgs;

/// The most a body may be: what one SQS message holds, less room for the queue envelope.
pub const MAX_BODY_LIMIT: usize = 1024 * 1024 - 16 * 1024;

/// The signed HTTP endpoint sites post submissions to. AWS region, credentials and endpoint come
/// from the SDK's standard settings (AWS_REGION, AWS_PROFILE, AWS_ENDPOINT_URL, ...).
#[derive(Debug, Clone, Parser)]
#[command(name = "formbridge-ingest", version)]
pub struct Config {
    #[command(flatten)]
    pub resources: ResourceNames,
    #[command(flatten)]
    pub keyring: KeyringArgs,

    /// Address to listen on.
    #[arg(long, env = "INGEST_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Largest accepted body in bytes (at most 1,032,192: one SQS message less envelope room).
    #[arg(long, env = "INGEST_MAX_BODY_BYTES", default_value_t = 256 * 1024)]
    pub max_body_bytes: usize,

    /// Accepted clock difference of `webhook-timestamp`, both ways, in seconds (at most 300, the
    /// Standard Webhooks tolerance).
    #[arg(long, env = "INGEST_TIMESTAMP_TOLERANCE_SECONDS", default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=300))]
    pub timestamp_tolerance_seconds: u64,

    /// How long a domain lookup (hit or miss) is cached: the bound for a site change to take
    /// effect. At most 60.
    #[arg(long, env = "INGEST_SITE_CACHE_SECONDS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(0..=60))]
    pub site_cache_seconds: u64,

    /// Sustained submissions per second per tenant (token bucket refill).
    #[arg(long, env = "INGEST_TENANT_RATE", default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub tenant_rate: u32,

    /// Burst per tenant (token bucket size).
    #[arg(long, env = "INGEST_TENANT_BURST", default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub tenant_burst: u32,

    /// How long a send waits for others to share its SendMessageBatch, in milliseconds (0 = no
    /// wait). A full batch (10) goes at once, so this delays answers only when traffic is light.
    #[arg(long, env = "INGEST_BATCH_LINGER_MS", default_value_t = 50, value_parser = clap::value_parser!(u64).range(0..=1000))]
    pub batch_linger_ms: u64,

    /// How often aggregated authentication failures are written to the audit log, seconds.
    #[arg(long, env = "INGEST_AUDIT_FLUSH_SECONDS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=60))]
    pub audit_flush_seconds: u64,
}

impl Config {
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.resources.validate()?;
        if self.max_body_bytes < 1024 || self.max_body_bytes > MAX_BODY_LIMIT {
            return Err(ConfigError {
                setting: "INGEST_MAX_BODY_BYTES",
                value: self.max_body_bytes.to_string(),
                rule: "must be between 1024 and 1032192 (an SQS message less envelope room)",
            });
        }
        self.keyring.load().map(|_| ())
    }

    pub fn linger(&self) -> Duration {
        Duration::from_millis(self.batch_linger_ms)
    }

    /// Defaults with the given names and keys (tests, embedding).
    pub fn for_resources(resources: ResourceNames, master_keys: String) -> Self {
        let mut c = Config::parse_from(["formbridge-ingest"]);
        c.resources = resources;
        c.keyring.master_keys = Some(master_keys);
        c
    }
}

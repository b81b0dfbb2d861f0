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

    /// Seconds a client has to send a request's headers, from the moment its connection opens or
    /// goes idle after an answer; a slower or silent connection is closed.
    #[arg(long, env = "INGEST_HEADER_TIMEOUT_SECONDS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=300))]
    pub header_timeout_seconds: u64,

    /// Seconds a client has to send the whole body once its headers are in; else 408 body_timeout.
    #[arg(long, env = "INGEST_BODY_TIMEOUT_SECONDS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=600))]
    pub body_timeout_seconds: u64,

    /// Connections open at once; further clients wait in the listen backlog until one closes.
    #[arg(long, env = "INGEST_MAX_CONNECTIONS", default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_connections: u64,

    /// Submissions waiting for the queue at most; beyond, requests get a 503 `queue_busy` with
    /// `Retry-After` at once instead of joining a backlog that only grows while SQS is slow.
    #[arg(long, env = "INGEST_MAX_WAITING_SENDS", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_waiting_sends: u64,

    /// Milliseconds a request may take from its body to its answer (the site lookup and the
    /// send to SQS together); past it, a 503 `deadline_exceeded` with `Retry-After`. Keep it under
    /// the senders' own timeout (the WordPress plugin waits 15 s): a sender that times out cannot
    /// tell a submission queued from one lost and must retry blind, while a 503 says "not taken,
    /// try again".
    #[arg(long, env = "INGEST_REQUEST_DEADLINE_MS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(100..=120_000))]
    pub request_deadline_ms: u64,

    /// Ingest instances behind the load balancer: each enforces 1/N of the tenant rate and
    /// burst, so together they allow the configured rate, not N times it (see the README).
    #[arg(long, env = "INGEST_INSTANCES", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub instances: u32,

    /// Submission ids this instance queued in the last `INGEST_RECENT_SECONDS` that it
    /// remembers: a sender's retry of one (its answer was lost) is answered 202 again without a
    /// second SQS message. 0 remembers none.
    #[arg(long, env = "INGEST_RECENT_IDS", default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(0..=10_000_000))]
    pub recent_ids: u64,

    /// How long a queued submission id is remembered, seconds.
    #[arg(long, env = "INGEST_RECENT_SECONDS", default_value_t = 900, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub recent_seconds: u64,

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

    /// This instance's share of the tenant rate and burst (`INGEST_INSTANCES`): one token every
    /// N / rate seconds, a bucket of burst / N (rounded up, at least 1).
    pub fn instance_quota(&self) -> governor::Quota {
        let n = self.instances.max(1);
        let period = Duration::from_secs_f64(f64::from(n) / f64::from(self.tenant_rate.max(1)));
        let burst = std::num::NonZeroU32::new(self.tenant_burst.div_ceil(n)).unwrap_or(std::num::NonZeroU32::MIN);
        governor::Quota::with_period(period).unwrap_or_else(|| governor::Quota::per_second(burst)).allow_burst(burst)
    }

    pub fn conn_limits(&self) -> crate::server::ConnLimits {
        crate::server::ConnLimits {
            header_timeout: Duration::from_secs(self.header_timeout_seconds),
            body_timeout: Duration::from_secs(self.body_timeout_seconds),
            max_connections: usize::try_from(self.max_connections).unwrap_or(usize::MAX),
            max_body_bytes: self.max_body_bytes,
        }
    }

    /// Defaults with the given names and keys (tests, embedding).
    pub fn for_resources(resources: ResourceNames, master_keys: String) -> Self {
        let mut c = Config::parse_from(["formbridge-ingest"]);
        c.resources = resources;
        c.keyring.master_keys = Some(master_keys);
        c
    }
}

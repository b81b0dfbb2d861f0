//! The aggregator's settings: flags, each with an environment variable, validated at start.

use std::time::Duration;

use clap::Parser;
use formbridge_shared::aws::{ConfigError, ResourceNames};
use formbridge_shared::stream::ConsumerConfig;

/// Keeps hourly and daily metric items from the FormBridgeData stream. AWS settings come from
/// the SDK's standard configuration (AWS_REGION, AWS_PROFILE, AWS_ENDPOINT_URL, ...).
#[derive(Debug, Clone, Parser)]
#[command(name = "formbridge-aggregator", version)]
pub struct Config {
    #[command(flatten)]
    pub resources: ResourceNames,
    /// Consumer group name in the control table.
    #[arg(long, env = "AGGREGATOR_GROUP", default_value = "aggregator")]
    pub group: String,
    /// Days an hourly item is kept (TTL).
    #[arg(long, env = "AGGREGATOR_HOURLY_TTL_DAYS", default_value_t = 35, value_parser = clap::value_parser!(u32).range(1..=3650))]
    pub hourly_ttl_days: u32,
    /// Days a daily item is kept (TTL).
    #[arg(long, env = "AGGREGATOR_DAILY_TTL_DAYS", default_value_t = 400, value_parser = clap::value_parser!(u32).range(1..=3650))]
    pub daily_ttl_days: u32,
    /// A lease not renewed for this long (ms, on this worker's clock) is taken over.
    #[arg(long, env = "STREAM_FAILOVER_MS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(500..=600_000))]
    pub failover_ms: u64,
    /// Lease renewal interval (ms); default a third of the failover time.
    #[arg(long, env = "STREAM_RENEW_MS")]
    pub renew_ms: Option<u64>,
    /// How often leases are balanced and expired ones taken (ms).
    #[arg(long, env = "STREAM_TAKE_MS", default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(100..=600_000))]
    pub take_ms: u64,
    /// How often shards are re-discovered (ms).
    #[arg(long, env = "STREAM_DISCOVER_MS", default_value_t = 30_000, value_parser = clap::value_parser!(u64).range(100..=3_600_000))]
    pub discover_ms: u64,
    /// Records per GetRecords (1-1000).
    #[arg(long, env = "STREAM_BATCH_SIZE", default_value_t = 1000, value_parser = clap::value_parser!(i32).range(1..=1000))]
    pub batch_size: i32,
    /// Idle back-off between empty polls: first wait (ms).
    #[arg(long, env = "STREAM_IDLE_MIN_MS", default_value_t = 250, value_parser = clap::value_parser!(u64).range(10..=60_000))]
    pub idle_min_ms: u64,
    /// Idle back-off: longest wait (ms). Every GetRecords call is billed.
    #[arg(long, env = "STREAM_IDLE_MAX_MS", default_value_t = 2_000, value_parser = clap::value_parser!(u64).range(10..=60_000))]
    pub idle_max_ms: u64,
    /// Serve Prometheus metrics on this address. Off when unset.
    #[arg(long, env = "AGGREGATOR_METRICS_ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,
}

impl Config {
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.resources.validate()?;
        if self.idle_max_ms < self.idle_min_ms {
            return Err(ConfigError {
                setting: "STREAM_IDLE_MAX_MS",
                value: self.idle_max_ms.to_string(),
                rule: "must be at least STREAM_IDLE_MIN_MS",
            });
        }
        if self.renew_ms.is_some_and(|r| r == 0 || r >= self.failover_ms) {
            return Err(ConfigError {
                setting: "STREAM_RENEW_MS",
                value: format!("{:?}", self.renew_ms),
                rule: "must be above 0 and below STREAM_FAILOVER_MS",
            });
        }
        Ok(())
    }

    pub fn consumer(&self) -> ConsumerConfig {
        let mut c = ConsumerConfig::new(&self.group);
        c.failover = Duration::from_millis(self.failover_ms);
        c.renew_every = Duration::from_millis(self.renew_ms.unwrap_or(self.failover_ms / 3));
        c.take_every = Duration::from_millis(self.take_ms);
        c.discover_every = Duration::from_millis(self.discover_ms);
        c.batch_size = self.batch_size;
        c.idle_min = Duration::from_millis(self.idle_min_ms);
        c.idle_max = Duration::from_millis(self.idle_max_ms);
        c
    }

    pub fn for_resources(resources: ResourceNames) -> Self {
        let mut c = Config::parse_from(["formbridge-aggregator"]);
        c.resources = resources;
        c
    }
}

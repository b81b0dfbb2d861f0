//! The stream settings every consumer-group process shares: flags, each with an environment
//! variable, validated at start.

use std::time::Duration;

use crate::aws::ConfigError;

use super::ConsumerConfig;

/// How a worker reads the stream and holds its leases.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct StreamArgs {
    /// A lease neither renewed nor checkpointed for this long (ms, on this worker's clock) is taken over.
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
    /// A reader that has not come round its loop for this long (ms) is aborted and its lease let
    /// go (see `ConsumerConfig::stall`).
    #[arg(long, env = "STREAM_STALL_MS", default_value_t = 300_000, value_parser = clap::value_parser!(u64).range(1_000..=3_600_000))]
    pub stall_ms: u64,
}

impl StreamArgs {
    pub fn validate(&self) -> Result<(), ConfigError> {
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

    /// The consumer settings of `group`.
    pub fn consumer(&self, group: &str) -> ConsumerConfig {
        let mut c = ConsumerConfig::new(group);
        c.failover = Duration::from_millis(self.failover_ms);
        c.renew_every = Duration::from_millis(self.renew_ms.unwrap_or(self.failover_ms / 3));
        c.take_every = Duration::from_millis(self.take_ms);
        c.discover_every = Duration::from_millis(self.discover_ms);
        c.batch_size = self.batch_size;
        c.idle_min = Duration::from_millis(self.idle_min_ms);
        c.idle_max = Duration::from_millis(self.idle_max_ms);
        c.stall = Duration::from_millis(self.stall_ms);
        c
    }
}

//! The delivery worker's settings: flags, each with an environment variable, validated at start.

use clap::Parser;
use formbridge_shared::aws::{ConfigError, ResourceNames};
use formbridge_shared::secrets::KeyringArgs;
use formbridge_shared::stream::{ConsumerConfig, StreamArgs};

/// Delivers each stored submission to its tenant's destinations. AWS settings come from the
/// SDK's standard configuration (AWS_REGION, AWS_PROFILE, AWS_ENDPOINT_URL, ...).
#[derive(Debug, Clone, Parser)]
#[command(name = "formbridge-delivery", version)]
pub struct Config {
    #[command(flatten)]
    pub resources: ResourceNames,
    #[command(flatten)]
    pub keyring: KeyringArgs,
    #[command(flatten)]
    pub stream: StreamArgs,
    /// Consumer group name in the control table.
    #[arg(long, env = "DELIVERY_GROUP", default_value = "delivery")]
    pub group: String,
    /// Allow destinations on loopback addresses (127.0.0.0/8, ::1). For local development and
    /// tests only; private, link-local and metadata addresses stay refused.
    #[arg(long, env = "DELIVERY_ALLOW_LOOPBACK", default_value_t = false, action = clap::ArgAction::Set)]
    pub allow_loopback: bool,
    /// Concurrent long polls of the delivery queue.
    #[arg(long, env = "DELIVERY_POLLERS", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub pollers: u32,
    /// After a receive that did not fill its batch, a poller waits this long (ms) before the
    /// next, so that at low rates one request fetches several messages. 0 turns it off.
    #[arg(long, env = "DELIVERY_RECEIVE_LINGER_MS", default_value_t = 400, value_parser = clap::value_parser!(u64).range(0..=5_000))]
    pub receive_linger_ms: u64,
    /// After a stream read that did not fill its batch, the fan-out waits this long (ms) before
    /// reading again, so one read, one checkpoint and one SendMessageBatch carry several
    /// submissions: fewer requests per submission, first attempts up to this much later.
    #[arg(long, env = "DELIVERY_FANOUT_LINGER_MS", default_value_t = 500, value_parser = clap::value_parser!(u64).range(0..=10_000))]
    pub fanout_linger_ms: u64,
    /// The fan-out moves its stream checkpoint at most this often (ms; 0: after every read).
    /// Its queue messages are deduplicated by the delivery records, so a worker that dies
    /// replays at most this much of the stream, harmlessly; each checkpoint skipped is a write
    /// unit spared. Below half of STREAM_FAILOVER_MS, since a moving checkpoint is the lease's
    /// heartbeat.
    #[arg(long, env = "DELIVERY_FANOUT_CHECKPOINT_MS", default_value_t = 2_000, value_parser = clap::value_parser!(u64).range(0..=60_000))]
    pub fanout_checkpoint_ms: u64,
    /// The lease on a received delivery message, seconds: received with this visibility
    /// timeout and extended while its attempts are in flight, so a worker that dies hands its
    /// messages back within this time instead of the queue's 90 s. 0 keeps the queue's own.
    #[arg(long, env = "DELIVERY_LEASE_SECONDS", default_value_t = 20, value_parser = clap::value_parser!(u64).range(0..=600))]
    pub lease_seconds: u64,
    /// Attempts in flight at once in this process, over all destinations.
    #[arg(long, env = "DELIVERY_MAX_IN_FLIGHT", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub max_in_flight: u32,
    /// How long a tenant's destination list is cached (ms). Changes reach running workers
    /// within this time.
    #[arg(long, env = "DELIVERY_DESTINATION_CACHE_MS", default_value_t = 5_000, value_parser = clap::value_parser!(u64).range(0..=600_000))]
    pub destination_cache_ms: u64,
    /// Consecutive failed attempts that pause a destination (circuit breaker opens).
    #[arg(long, env = "DELIVERY_BREAKER_THRESHOLD", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub breaker_threshold: u32,
    /// How long a paused destination rests before one probe attempt (s); doubles after each
    /// failed probe, up to DELIVERY_BREAKER_MAX_COOLDOWN_S.
    #[arg(long, env = "DELIVERY_BREAKER_COOLDOWN_S", default_value_t = 60, value_parser = clap::value_parser!(u32).range(1..=86_400))]
    pub breaker_cooldown_s: u32,
    #[arg(long, env = "DELIVERY_BREAKER_MAX_COOLDOWN_S", default_value_t = 3_600, value_parser = clap::value_parser!(u32).range(1..=86_400))]
    pub breaker_max_cooldown_s: u32,
    /// The longest `Retry-After` a destination can ask for (s).
    #[arg(long, env = "DELIVERY_RETRY_AFTER_CAP_S", default_value_t = 3_600, value_parser = clap::value_parser!(u32).range(1..=86_400))]
    pub retry_after_cap_s: u32,
    /// When a destination already has its maximum attempts in flight here, its next message
    /// waits this long (ms) in the queue instead of holding a worker slot.
    #[arg(long, env = "DELIVERY_BUSY_DEFER_MS", default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(1_000..=900_000))]
    pub busy_defer_ms: u64,
    /// Serve Prometheus metrics on this address. Off when unset.
    #[arg(long, env = "DELIVERY_METRICS_ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,
}

impl Config {
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.resources.validate()?;
        self.stream.validate()?;
        self.keyring.load()?;
        if self.fanout_checkpoint_ms * 2 >= self.stream.failover_ms {
            return Err(ConfigError {
                setting: "DELIVERY_FANOUT_CHECKPOINT_MS",
                value: self.fanout_checkpoint_ms.to_string(),
                rule: "must be below half of STREAM_FAILOVER_MS",
            });
        }
        if self.breaker_max_cooldown_s < self.breaker_cooldown_s {
            return Err(ConfigError {
                setting: "DELIVERY_BREAKER_MAX_COOLDOWN_S",
                value: self.breaker_max_cooldown_s.to_string(),
                rule: "must be at least DELIVERY_BREAKER_COOLDOWN_S",
            });
        }
        Ok(())
    }

    pub fn consumer(&self) -> ConsumerConfig {
        let mut c = self.stream.consumer(&self.group);
        c.linger = std::time::Duration::from_millis(self.fanout_linger_ms);
        c.checkpoint_every = std::time::Duration::from_millis(self.fanout_checkpoint_ms);
        c
    }

    /// Defaults for `resources` (tests and embedding).
    pub fn for_resources(resources: ResourceNames, master_keys: &str) -> Self {
        let mut c = Config::parse_from(["formbridge-delivery"]);
        c.resources = resources;
        c.keyring = KeyringArgs { master_keys: Some(master_keys.to_owned()), master_keys_file: None };
        c
    }
}

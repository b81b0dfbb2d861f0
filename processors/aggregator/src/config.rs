//! The aggregator's settings: flags, each with an environment variable, validated at start.

use clap::Parser;
use formbridge_shared::aws::{ConfigError, ResourceNames};
use formbridge_shared::stream::{ConsumerConfig, StreamArgs};

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
    /// After a partial batch, wait this long (ms) before reading the stream again, so each
    /// write of a metric item folds more records: fewer metric writes and GetRecords calls,
    /// metrics up to this much later. 0 reads again at once. The default, 10 s, halves the metric
    /// writes of 5 s (each flush writes every active tenant's hour and day item) and keeps a
    /// dashboard within about ten seconds of its submissions.
    #[arg(long, env = "AGGREGATOR_LINGER_MS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(0..=60_000))]
    pub linger_ms: u64,
    #[command(flatten)]
    pub stream: StreamArgs,
    /// Cost thresholds in USD (comma-separated): a tenant's or the whole system's month so far,
    /// or its projection, crossing one publishes a `CostThresholdCrossed` event, once a month.
    #[arg(long, env = "COST_ALERT_THRESHOLDS_USD", value_delimiter = ',', default_value = "10,15,20")]
    pub cost_alert_thresholds_usd: Vec<f64>,
    /// At most one check of a tenant's (or the system's) month per this many seconds, when its
    /// cost items change (0-3600).
    #[arg(long, env = "COST_ALERT_CHECK_SECONDS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(0..=3600))]
    pub cost_alert_check_seconds: u64,
    #[command(flatten)]
    pub prices: formbridge_shared::billing::PriceSettings,
    /// Write units a second per shard, averaged over HOT_WINDOW_SECONDS, that make a partition
    /// hot (1-1000; default half of a partition's 1,000).
    #[arg(long, env = "HOT_SHARD_WCU_PER_S", default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub hot_shard_wcu_per_s: u32,
    /// The window a shard's write rate is averaged over, seconds (1-3600).
    #[arg(long, env = "HOT_WINDOW_SECONDS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub hot_window_seconds: u64,
    /// Raise a hot tenant's shard count by itself (else only warn).
    #[arg(long, env = "HOT_AUTO_GROW", default_value_t = true, action = clap::ArgAction::Set)]
    pub hot_auto_grow: bool,
    /// Serve Prometheus metrics on this address. Off when unset.
    #[arg(long, env = "AGGREGATOR_METRICS_ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,
}

impl Config {
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.resources.validate()?;
        self.stream.validate()?;
        self.prices.load()?;
        let t = &self.cost_alert_thresholds_usd;
        if t.is_empty() || t.len() > 10 || t.iter().any(|x| !x.is_finite() || *x <= 0.0) {
            return Err(ConfigError {
                setting: "COST_ALERT_THRESHOLDS_USD",
                value: t.iter().map(f64::to_string).collect::<Vec<_>>().join(","),
                rule: "1 to 10 positive amounts in USD, comma-separated",
            });
        }
        Ok(())
    }

    pub fn consumer(&self) -> ConsumerConfig {
        let mut c = self.stream.consumer(&self.group);
        c.linger = std::time::Duration::from_millis(self.linger_ms);
        c
    }

    /// The hot-partition settings.
    pub fn hot(&self) -> crate::hot::HotSettings {
        crate::hot::HotSettings {
            shard_wcu_per_s: f64::from(self.hot_shard_wcu_per_s),
            window: std::time::Duration::from_secs(self.hot_window_seconds),
            auto_grow: self.hot_auto_grow,
            bus: self.resources.event_bus.clone(),
        }
    }

    /// The cost alerts' settings.
    pub fn alerts(&self) -> formbridge_shared::costs::AlertSettings {
        let mut thresholds = self.cost_alert_thresholds_usd.clone();
        thresholds.sort_by(f64::total_cmp);
        thresholds.dedup();
        formbridge_shared::costs::AlertSettings {
            thresholds_usd: thresholds,
            prices: self.prices.load().unwrap_or_default(),
            region: self.prices.region.clone(),
            bus: self.resources.event_bus.clone(),
            every: std::time::Duration::from_secs(self.cost_alert_check_seconds),
        }
    }

    pub fn for_resources(resources: ResourceNames) -> Self {
        let mut c = Config::parse_from(["formbridge-aggregator"]);
        c.resources = resources;
        c
    }
}

//! The API's settings: flags, each with an environment variable, validated at start.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use formbridge_shared::aws::{ConfigError, ResourceNames};
use formbridge_shared::secrets::KeyringArgs;

/// The tenant read API and dashboard. AWS region, credentials and endpoint come from the SDK's
/// standard settings (AWS_REGION, AWS_PROFILE, AWS_ENDPOINT_URL, ...).
#[derive(Debug, Clone, Parser)]
#[command(name = "formbridge-api", version)]
pub struct Config {
    #[command(flatten)]
    pub resources: ResourceNames,
    #[command(flatten)]
    pub keyring: KeyringArgs,
    #[command(flatten)]
    pub prices: formbridge_shared::billing::PriceSettings,

    /// Address to listen on.
    #[arg(long, env = "API_LISTEN", default_value = "127.0.0.1:8090")]
    pub listen: SocketAddr,

    /// Sustained requests per second per API key (or per dashboard session's tenant).
    #[arg(long, env = "API_KEY_RATE", default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub key_rate: u32,

    /// Burst per key (token bucket size).
    #[arg(long, env = "API_KEY_BURST", default_value_t = 60, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub key_burst: u32,

    /// How long an authenticated key, session or tenant profile is cached, seconds: the bound
    /// for a revocation or sign-out to take effect on every instance. At most 30.
    #[arg(long, env = "API_AUTH_CACHE_SECONDS", default_value_t = 5, value_parser = clap::value_parser!(u64).range(0..=30))]
    pub auth_cache_seconds: u64,

    /// How long a page cursor stays valid, seconds.
    #[arg(long, env = "API_CURSOR_TTL_SECONDS", default_value_t = 3600, value_parser = clap::value_parser!(u64).range(60..=86_400))]
    pub cursor_ttl_seconds: u64,

    /// How often a live dashboard connection polls the current hour's bucket, seconds (one
    /// read of one item per tick per connection).
    #[arg(long, env = "API_LIVE_POLL_SECONDS", default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=60))]
    pub live_poll_seconds: u64,

    /// Live connections at once per process (each polls).
    #[arg(long, env = "API_LIVE_MAX_CONNECTIONS", default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub live_max_connections: u32,

    /// Mark the session cookie `Secure`. On by default; turn off only when the dashboard is
    /// served over plain HTTP on loopback (the local stack).
    #[arg(long, env = "API_SECURE_COOKIES", default_value_t = true, action = clap::ArgAction::Set)]
    pub secure_cookies: bool,

    /// The origin the dashboard is served from (e.g. `https://dash.example.com`). The portal
    /// exchange refuses a request whose `Origin` header names another. Unset: this listener's.
    #[arg(long, env = "API_PUBLIC_ORIGIN")]
    pub public_origin: Option<String>,

    /// Let a destination test send reach 127.0.0.0/8 and ::1 (development only), as
    /// DELIVERY_ALLOW_LOOPBACK does for deliveries.
    #[arg(long, env = "API_ALLOW_LOOPBACK", default_value_t = false, action = clap::ArgAction::Set)]
    pub allow_loopback: bool,

    /// Deliveries one bulk replay may queue.
    #[arg(long, env = "API_BULK_REPLAY_MAX", default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub bulk_replay_max: u32,

    /// A role to read each tenant's data with (`ApiTenantReadRole` in the CloudFormation stack),
    /// assumed with the session tag `tenant=<id>`: IAM then refuses any read outside that
    /// tenant's partitions. Unset: the API's own credentials read.
    #[arg(long, env = "API_TENANT_READ_ROLE_ARN")]
    pub tenant_read_role_arn: Option<String>,
}

impl Config {
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.resources.validate()?;
        if let Some(o) = &self.public_origin {
            let ok = (o.starts_with("https://") || o.starts_with("http://"))
                && !o.trim_end_matches('/').contains(['?', '#'])
                && o.trim_end_matches('/').matches('/').count() == 2;
            if !ok {
                return Err(ConfigError {
                    setting: "API_PUBLIC_ORIGIN",
                    value: o.clone(),
                    rule: "must be an origin: scheme://host[:port], nothing after",
                });
            }
        }
        self.prices.load()?;
        self.keyring.load().map(|_| ())
    }

    pub fn origin(&self) -> String {
        match &self.public_origin {
            Some(o) => o.trim_end_matches('/').to_owned(),
            None => format!("http://{}", self.listen),
        }
    }

    pub fn auth_cache(&self) -> Duration {
        Duration::from_secs(self.auth_cache_seconds)
    }

    /// Defaults with the given names and keys (tests, embedding).
    pub fn for_resources(resources: ResourceNames, master_keys: String) -> Self {
        let mut c = Config::parse_from(["formbridge-api"]);
        c.resources = resources;
        c.keyring.master_keys = Some(master_keys);
        c.secure_cookies = false;
        c
    }
}

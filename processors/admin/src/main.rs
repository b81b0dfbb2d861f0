//! `formbridge-admin`: operator commands. Every command prints JSON on stdout so scripts and
//! tests can drive it; errors go to stderr with a non-zero exit.

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use serde_json::{json, Value};
use time::OffsetDateTime;

use formbridge_shared::aws::{AwsClients, ResourceNames};
use formbridge_shared::destination::{replace_auth, DeliveryPolicy, DestinationAuth, DestinationKind, DestinationSpec};
use formbridge_shared::secrets::KeyringArgs;
use formbridge_shared::sharding::ShardHistory;
use formbridge_shared::store::DataStore;
use formbridge_shared::submission::{QueueMessage, REJECT_DETAIL_ATTRIBUTE};
use formbridge_shared::tenant::{TenantProfile, DEFAULT_RETENTION_DAYS};
use formbridge_shared::{bootstrap, domain, sample, DestinationId, FormId, SiteDomain, SubmissionId, TenantId};

mod migrate;
mod receiver;

/// Form-Bridge admin CLI. AWS region, credentials and endpoint come from the SDK's standard
/// settings (AWS_REGION, AWS_PROFILE, AWS_ENDPOINT_URL, ...).
#[derive(Debug, Parser)]
#[command(name = "formbridge-admin", version)]
struct Cli {
    #[command(flatten)]
    resources: ResourceNames,
    #[command(flatten)]
    keyring: KeyringArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create or check every AWS resource (idempotent; reports created/updated/unchanged).
    Bootstrap,
    /// Tenants.
    #[command(subcommand)]
    Tenant(TenantCommand),
    /// Sites (domains) of tenants and their signing secrets.
    #[command(subcommand)]
    Site(SiteCommand),
    /// Delivery destinations of tenants (webhooks, Slack).
    #[command(subcommand)]
    Destination(DestinationCommand),
    /// API keys of the tenant API: one key covers the tenants listed on it (an agency's).
    #[command(subcommand, name = "api-key")]
    ApiKey(ApiKeyCommand),
    /// A one-time dashboard sign-in link for a tenant (like Svix's and Convoy's portal links):
    /// opening it exchanges the token for a session cookie.
    #[command(name = "portal-link")]
    PortalLink {
        #[arg(long)]
        tenant: TenantId,
        /// How long the link can be opened, e.g. 15m (at most 24h). It works once.
        #[arg(long, default_value = "15m", value_parser = ttl_parser)]
        ttl: std::time::Duration,
        /// How long the session it opens lasts, e.g. 8h (1m to 7 days).
        #[arg(long, default_value = "8h", value_parser = ttl_parser)]
        session_ttl: std::time::Duration,
        /// Where the API serves the dashboard.
        #[arg(long, env = "FORMBRIDGE_DASHBOARD_URL", default_value = "http://127.0.0.1:8090")]
        base_url: String,
    },
    /// Deliveries: history, destination health, replay.
    #[command(subcommand)]
    Delivery(DeliveryCommand),
    /// Stored submissions.
    #[command(subcommand)]
    Submissions(SubmissionsCommand),
    /// Pre-aggregated metrics of a tenant (one Query; never reads submissions).
    Metrics {
        #[arg(long)]
        tenant: TenantId,
        /// Only this form's buckets.
        #[arg(long)]
        form: Option<FormId>,
        #[arg(long, value_enum, default_value = "hour")]
        granularity: GranularityArg,
        /// How many hours or days back from now.
        #[arg(long, default_value_t = 24)]
        last: i64,
    },
    /// The ingest dead-letter queue.
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// The monthly AWS bill of a deployment, item by item (no AWS access needed): requests,
    /// storage, compute, logs, CloudWatch and idle polling, at list price and after the
    /// always-free tier. Prices: the load test's table and the platform's list prices.
    CostModel {
        /// Submissions a month.
        #[arg(long, default_value_t = 1000)]
        submissions: u64,
        /// Sites sending them.
        #[arg(long, default_value_t = 10)]
        sites: u32,
        /// Destinations per site (each submission is delivered to each).
        #[arg(long, default_value_t = 1)]
        destinations_per_site: u32,
        #[arg(long, value_enum, default_value = "lambda")]
        mode: formbridge_shared::cost_model::Mode,
        /// Days submissions are kept.
        #[arg(long, default_value_t = 30)]
        retention_days: u32,
        /// The template's LogRetentionDays.
        #[arg(long, default_value_t = 14)]
        log_retention_days: u32,
        /// Lambda: the functions' memory (MB) and mean billed duration (ms).
        #[arg(long, default_value_t = 256)]
        lambda_memory_mb: u32,
        #[arg(long, default_value_t = 60.0)]
        lambda_ms: f64,
        /// Long polls each polled queue keeps open while idle (default: 5 for Lambda's SQS
        /// event source mappings, 2 for the processes).
        #[arg(long)]
        pollers_per_queue: Option<u32>,
        /// Take write units, read units and SQS requests per submission from a load run's report
        /// (`loadtest/results/*.json`, its `per_submission`) instead of the design's low-rate counts.
        #[arg(long)]
        from_report: Option<std::path::PathBuf>,
        /// A table for people instead of JSON.
        #[arg(long)]
        table: bool,
    },
    /// What a tenant (or, without --tenant, every tenant and the whole system) cost in a month:
    /// every billed unit it caused, by line and day, at the region's prices, and the month
    /// projected at the rate so far. From the cost items the processes write.
    Cost {
        #[arg(long)]
        tenant: Option<TenantId>,
        /// YYYY-MM (default: this month).
        #[arg(long)]
        month: Option<String>,
        #[command(flatten)]
        prices: formbridge_shared::billing::PriceSettings,
    },
    /// Recommendations from the last 30 days' usage (shard counts, failing destinations,
    /// retention nobody reads, idle polling, compression that does not pay), each with its
    /// numbers and the saving a month, largest first.
    Recommend {
        /// Only this tenant's (default: every tenant's and the system's).
        #[arg(long)]
        tenant: Option<TenantId>,
        #[command(flatten)]
        prices: formbridge_shared::billing::PriceSettings,
    },
    /// Moves sites from a legacy WordPress authentication table (a DynamoDB table, only read)
    /// to tenants, sites (the legacy keys re-sealed) and default destinations; idempotent, with an
    /// integrity report, tagged with a migration id that `--rollback` undoes. Schema:
    /// schemas/legacy-auth-row.schema.json.
    Migrate {
        /// The legacy table.
        #[arg(long, required_unless_present = "rollback")]
        from_table: Option<String>,
        /// Print what would be created and every problem found; write nothing.
        #[arg(long)]
        dry_run: bool,
        /// The migration id (default: the legacy table's name as a slug).
        #[arg(long)]
        id: Option<formbridge_shared::MigrationId>,
        /// The destination of tenants whose rows name no webhook_url (`{tenant}` is replaced).
        #[arg(long)]
        default_destination_url: Option<String>,
        /// Remove what this migration id created, and nothing else.
        #[arg(long, conflicts_with_all = ["from_table", "dry_run", "id", "default_destination_url"])]
        rollback: Option<formbridge_shared::MigrationId>,
    },
    /// Creates a legacy authentication table from a JSON array of rows, to try `migrate` on
    /// (e.g. schemas/fixtures/legacy-auth/wp-auth-200.json).
    #[command(name = "legacy-fixture")]
    LegacyFixture {
        #[arg(long)]
        table: String,
        #[arg(long)]
        file: std::path::PathBuf,
    },
    /// Demo traffic: signed posts to ingest, messages straight onto the ingest queue, and a
    /// webhook receiver standing in for a destination.
    #[command(subcommand)]
    Demo(DemoCommand),
}

#[derive(Debug, Subcommand)]
enum ApiKeyCommand {
    /// Create a key covering these tenants, printed once (stored only as a keyed hash).
    Create {
        /// A tenant the key covers (repeat for an agency key).
        #[arg(long = "tenant", required = true)]
        tenants: Vec<TenantId>,
        /// What the key is for, shown in listings and audit events.
        #[arg(long)]
        name: String,
    },
    /// The keys covering a tenant (ids, names, state; never a key).
    List {
        #[arg(long)]
        tenant: TenantId,
    },
    /// Revoke a key at once, for every tenant it covers.
    Revoke {
        #[arg(long)]
        tenant: TenantId,
        #[arg(long)]
        id: String,
    },
    /// Replace a key with a new one (printed once); the old one keeps working for the grace period.
    Rotate {
        #[arg(long)]
        tenant: TenantId,
        #[arg(long)]
        id: String,
        /// How long the old key keeps working, e.g. 24h, 30m, 0s.
        #[arg(long, default_value = "24h", value_parser = grace_parser)]
        grace: std::time::Duration,
    },
}

fn grace_parser(s: &str) -> Result<std::time::Duration, String> {
    let d = humantime::parse_duration(s.trim()).map_err(|e| format!("{s:?}: {e}"))?;
    if d > std::time::Duration::from_secs(30 * 86_400) {
        return Err(format!("{s:?}: at most 30 days"));
    }
    Ok(d)
}

fn ttl_parser(s: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(s.trim()).map_err(|e| format!("{s:?}: {e}"))
}

async fn portal_link(
    store: &DataStore,
    keyring: &KeyringArgs,
    tenant: TenantId,
    ttl: std::time::Duration,
    session_ttl: std::time::Duration,
    base_url: &str,
) -> Result<Value> {
    let base = base_url.trim_end_matches('/');
    if !(base.starts_with("http://") || base.starts_with("https://")) {
        bail!("--base-url {base_url:?}: must start with http:// or https://");
    }
    let now = OffsetDateTime::now_utc();
    let (token, expires_ms) = store.create_portal_token(&tenant, ttl, session_ttl, &keyring.load()?, now).await?;
    Ok(json!({
        "tenant": tenant,
        "link": format!("{base}/portal#{}", token.expose()),
        "expires_at": formbridge_shared::clock::rfc3339_ms(expires_ms),
        "note": "the link works once; anyone holding it can sign in as this tenant until then",
    }))
}

async fn api_key_command(store: &DataStore, keyring: &KeyringArgs, cmd: ApiKeyCommand) -> Result<Value> {
    let now = OffsetDateTime::now_utc();
    let rfc3339 = |ms: u64| {
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
            .ok()
            .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
    };
    Ok(match cmd {
        ApiKeyCommand::Create { tenants, name } => {
            let (key, info) = store.create_api_key(&tenants, &name, &keyring.load()?, now).await?;
            json!({ "api_key": key.expose(), "key": info, "note": "the key is shown only now; it is stored only as a keyed hash" })
        }
        ApiKeyCommand::List { tenant } => {
            let now_ms = formbridge_shared::site::ms(now);
            let keys: Vec<Value> = store
                .list_api_keys(&tenant)
                .await?
                .into_iter()
                .map(|k| {
                    let active = k.active_at(now_ms);
                    let mut v = serde_json::to_value(k).unwrap_or(Value::Null);
                    v["active"] = json!(active);
                    v
                })
                .collect();
            json!({ "tenant": tenant, "api_keys": keys })
        }
        ApiKeyCommand::Revoke { tenant, id } => {
            store.revoke_api_key(&tenant, &id, now).await?;
            json!({ "revoked": id })
        }
        ApiKeyCommand::Rotate { tenant, id, grace } => {
            let (key, info) = store.rotate_api_key(&tenant, &id, grace, &keyring.load()?, now).await?;
            let until = formbridge_shared::site::ms(now) + u64::try_from(grace.as_millis()).unwrap_or(0);
            json!({
                "api_key": key.expose(),
                "key": info,
                "previous_key": id,
                "previous_key_valid_until": rfc3339(until),
                "note": "the new key is shown only now"
            })
        }
    })
}

#[derive(Debug, Subcommand)]
enum TenantCommand {
    /// Create a tenant.
    Create {
        #[arg(long)]
        id: TenantId,
        #[arg(long)]
        name: Option<String>,
        /// Write shards for its submissions (1-256); can only grow later.
        #[arg(long, default_value_t = 4)]
        shards: u16,
        /// Days a stored submission is kept (DynamoDB TTL).
        #[arg(long, default_value_t = DEFAULT_RETENTION_DAYS, value_parser = clap::value_parser!(u32).range(1..=3650))]
        retention_days: u32,
    },
    /// Show one tenant's profile.
    Show {
        #[arg(long)]
        id: TenantId,
    },
    /// List tenants.
    List,
    /// Grow a tenant's shard count (history is kept so older items stay readable).
    GrowShards {
        #[arg(long)]
        id: TenantId,
        #[arg(long)]
        count: u16,
    },
}

#[derive(Debug, Subcommand)]
enum SiteCommand {
    /// Register domains for a tenant (all or none). Prints each new signing secret, once.
    Add {
        #[arg(long)]
        tenant: TenantId,
        /// A domain; repeat for several (up to 50). Normalised: lower-case, no port, punycode.
        #[arg(long = "domain", required = true)]
        domains: Vec<String>,
    },
    /// Remove domains of a tenant (all or none).
    Remove {
        #[arg(long)]
        tenant: TenantId,
        #[arg(long = "domain", required = true)]
        domains: Vec<String>,
    },
    /// Give a site a new signing secret, printed once. The old one keeps verifying for the grace period.
    Rotate {
        #[arg(long)]
        tenant: TenantId,
        #[arg(long)]
        domain: String,
        /// Hours the previous secret stays valid.
        #[arg(long, default_value_t = 24, value_parser = clap::value_parser!(u64).range(0..=720))]
        grace_hours: u64,
    },
    /// Status of one or more sites (never their secrets).
    Show {
        #[arg(long = "domain", required = true)]
        domains: Vec<String>,
    },
    /// A tenant's domains.
    List {
        #[arg(long)]
        tenant: TenantId,
    },
}

/// Credentials for a destination, read from files so they stay out of shell history and `ps`.
#[derive(Debug, Clone, clap::Args)]
struct AuthArgs {
    /// A file holding a bearer token.
    #[arg(long, conflicts_with_all = ["basic_user", "headers_file"])]
    bearer_token_file: Option<std::path::PathBuf>,
    /// Basic-auth user name (with --basic-password-file).
    #[arg(long, requires = "basic_password_file", conflicts_with = "headers_file")]
    basic_user: Option<String>,
    #[arg(long, requires = "basic_user")]
    basic_password_file: Option<std::path::PathBuf>,
    /// A file of custom headers, one `Name: value` per line.
    #[arg(long)]
    headers_file: Option<std::path::PathBuf>,
}

impl AuthArgs {
    fn load(&self) -> Result<Option<DestinationAuth>> {
        let read = |p: &std::path::Path, flag: &str| {
            std::fs::read_to_string(p).map(|s| s.trim().to_owned()).with_context(|| format!("{flag} {}", p.display()))
        };
        if let Some(p) = &self.bearer_token_file {
            return Ok(Some(DestinationAuth::Bearer { token: read(p, "--bearer-token-file")? }));
        }
        if let (Some(u), Some(p)) = (&self.basic_user, &self.basic_password_file) {
            return Ok(Some(DestinationAuth::Basic {
                username: u.clone(),
                password: read(p, "--basic-password-file")?,
            }));
        }
        if let Some(p) = &self.headers_file {
            let mut headers = std::collections::BTreeMap::new();
            for line in read(p, "--headers-file")?.lines().filter(|l| !l.trim().is_empty()) {
                let (k, v) = line.split_once(':').with_context(|| "--headers-file: each line is `Name: value`")?;
                headers.insert(k.trim().to_owned(), v.trim().to_owned());
            }
            return Ok(Some(DestinationAuth::Headers { headers }));
        }
        Ok(None)
    }
}

#[derive(Debug, Subcommand)]
enum DestinationCommand {
    /// Create a destination for one or more tenants (each gets its own id and signing secret, printed once).
    Create {
        /// A tenant to add the destination to; repeat for several.
        #[arg(long = "tenant", required_unless_present = "sites")]
        tenants: Vec<TenantId>,
        /// A site to add the destination to (its tenant gets the destination, limited to that
        /// site's submissions); repeat for several. Combines with --tenant.
        #[arg(long = "site")]
        sites: Vec<SiteDomain>,
        #[arg(long)]
        url: String,
        #[arg(long, value_enum, default_value = "webhook")]
        kind: KindArg,
        #[arg(long)]
        name: Option<String>,
        /// Only submissions of this form; repeat for several. Default: every form.
        #[arg(long = "form")]
        forms: Vec<FormId>,
        /// Per-attempt timeout in milliseconds.
        #[arg(long, default_value_t = formbridge_shared::destination::DEFAULT_TIMEOUT_MS, value_parser = clap::value_parser!(u64).range(1000..=30_000))]
        timeout_ms: u64,
        #[command(flatten)]
        auth: AuthArgs,
        #[command(flatten)]
        policy: PolicyArgs,
    },
    /// Change a destination's URL, name, forms, timeout or credentials.
    Update {
        #[arg(long)]
        tenant: TenantId,
        #[arg(long)]
        id: DestinationId,
        #[arg(long)]
        url: Option<String>,
        #[arg(long)]
        name: Option<String>,
        #[arg(long = "form")]
        forms: Vec<FormId>,
        /// Deliver every form again.
        #[arg(long, conflicts_with = "forms")]
        all_forms: bool,
        /// Only submissions from these sites of the tenant; repeat for several.
        #[arg(long = "site")]
        sites: Vec<SiteDomain>,
        /// Deliver every site again.
        #[arg(long, conflicts_with = "sites")]
        all_sites: bool,
        #[arg(long, value_parser = clap::value_parser!(u64).range(1000..=30_000))]
        timeout_ms: Option<u64>,
        #[command(flatten)]
        auth: AuthArgs,
        /// Remove the credentials.
        #[arg(long)]
        no_auth: bool,
        #[command(flatten)]
        policy: PolicyArgs,
    },
    /// Enable one destination, or all of a tenant's.
    Enable {
        #[arg(long)]
        tenant: TenantId,
        #[arg(long, required_unless_present = "all")]
        id: Option<DestinationId>,
        #[arg(long)]
        all: bool,
    },
    /// Disable one destination, or all of a tenant's.
    Disable {
        #[arg(long)]
        tenant: TenantId,
        #[arg(long, required_unless_present = "all")]
        id: Option<DestinationId>,
        #[arg(long)]
        all: bool,
    },
    /// Delete a destination.
    Delete {
        #[arg(long)]
        tenant: TenantId,
        #[arg(long)]
        id: DestinationId,
    },
    /// A tenant's destinations (never their secrets or credentials).
    List {
        #[arg(long)]
        tenant: TenantId,
    },
}

/// How a destination is retried and paced.
#[derive(Debug, clap::Args)]
struct PolicyArgs {
    /// Delays before each retry after 408, 429, 5xx, timeouts and network errors, e.g.
    /// `5s,5m,30m,2h,5h,10h,10h` (the default). The count is the number of retries.
    #[arg(long, value_parser = parse_schedule)]
    retry_schedule: Option<ScheduleArg>,
    /// Delays before each retry after any other 4xx. Default `5s,1m,5m`.
    #[arg(long, value_parser = parse_schedule)]
    client_error_schedule: Option<ScheduleArg>,
    /// Attempts in flight at once to this destination, per worker process (1-64, default 16).
    #[arg(long)]
    max_in_flight: Option<u32>,
}

impl PolicyArgs {
    fn apply(self, p: &mut DeliveryPolicy) {
        if let Some(ScheduleArg(s)) = self.retry_schedule {
            p.retry_schedule = s;
        }
        if let Some(ScheduleArg(s)) = self.client_error_schedule {
            p.client_error_schedule = s;
        }
        if let Some(m) = self.max_in_flight {
            p.max_in_flight = m;
        }
    }
}

/// A retry schedule in seconds.
#[derive(Debug, Clone)]
struct ScheduleArg(Vec<u32>);

/// `5s,5m,30m` -> seconds.
fn parse_schedule(s: &str) -> std::result::Result<ScheduleArg, String> {
    s.split(',')
        .map(|d| {
            let d = humantime::parse_duration(d.trim()).map_err(|e| format!("{d:?}: {e}"))?;
            u32::try_from(d.as_secs()).map_err(|_| format!("{d:?} is too long"))
        })
        .collect::<std::result::Result<Vec<u32>, String>>()
        .map(ScheduleArg)
}

#[derive(Debug, Subcommand)]
enum DeliveryCommand {
    /// A submission's deliveries, each with every attempt (one Query).
    History {
        #[arg(long)]
        tenant: TenantId,
        #[arg(long)]
        submission: SubmissionId,
    },
    /// A destination's health and circuit-breaker state.
    Health {
        #[arg(long)]
        tenant: TenantId,
        #[arg(long)]
        destination: DestinationId,
    },
    /// Redeliver with the original webhook-id: one submission to one destination
    /// (`--submission`), or in bulk every delivery with `--status` (default failed), optionally
    /// of one `--destination`, whose status time lies in [`--since`, `--until`]. Bulk replays
    /// need `--dry-run` (count only) or `--yes`.
    Replay {
        #[arg(long)]
        tenant: TenantId,
        #[arg(long)]
        destination: Option<DestinationId>,
        #[arg(long, requires = "destination")]
        submission: Option<SubmissionId>,
        #[arg(long, value_enum, default_value = "failed")]
        status: ReplayStatusArg,
        /// RFC 3339 time, or a duration back from now (`24h`). Default: 14 days ago.
        #[arg(long)]
        since: Option<String>,
        /// RFC 3339 time, or a duration back from now. Default: now.
        #[arg(long)]
        until: Option<String>,
        /// Count what would be replayed; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Confirm a bulk replay.
        #[arg(long, conflicts_with = "dry_run")]
        yes: bool,
        /// Replays queued per second, so live traffic keeps its share of the workers.
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1000))]
        rate: u32,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum ReplayStatusArg {
    Failed,
    Retrying,
    Pending,
}

/// A point in time: RFC 3339, or a duration back from now.
fn when(arg: Option<&str>, default: OffsetDateTime) -> Result<u64> {
    let t = match arg {
        None => default,
        Some(s) => match OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339) {
            Ok(t) => t,
            Err(_) => {
                let d = humantime::parse_duration(s)
                    .with_context(|| format!("--since/--until {s:?}: neither RFC 3339 nor a duration"))?;
                OffsetDateTime::now_utc() - d
            }
        },
    };
    Ok(u64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(0))
}

async fn delivery_command(
    aws: &AwsClients,
    cli_resources: &ResourceNames,
    store: &DataStore,
    cmd: DeliveryCommand,
) -> Result<Value> {
    use formbridge_shared::delivery::history;
    use formbridge_shared::delivery::replay::{ReplayFilter, Replayer};
    use formbridge_shared::delivery::{Records, Status};
    Ok(match cmd {
        DeliveryCommand::History { tenant, submission } => {
            let p = profile(store, &tenant).await?;
            let destinations = store.list_destinations(&tenant).await?;
            let Some(h) = history::read(store, &p, &submission, &destinations).await? else {
                bail!("no submission {submission} for tenant {tenant}")
            };
            json!({ "submission": submission, "deliveries": h.deliveries })
        }
        DeliveryCommand::Health { tenant, destination } => {
            let hs = formbridge_shared::delivery::health::HealthStore {
                client: aws.dynamodb.clone(),
                table: cli_resources.table.clone(),
            };
            serde_json::to_value(hs.get(&tenant, &destination).await?.view(&tenant, &destination))?
        }
        DeliveryCommand::Replay { tenant, destination, submission, status, since, until, dry_run, yes, rate } => {
            let queue = formbridge_shared::queue::Queue::open(aws.sqs.clone(), &cli_resources.delivery_queue, "admin")
                .await
                .context("the delivery queue")?;
            let replayer = Replayer { records: Records::new(store.clone(), "admin"), queue };
            if let (Some(sub), Some(dest)) = (submission, destination) {
                let p = profile(store, &tenant).await?;
                let Some(rec) = replayer.find(&p, &sub, &dest).await? else {
                    bail!("no delivery of submission {sub} to destination {dest}")
                };
                if dry_run {
                    return Ok(json!({ "dry_run": true, "matched": 1, "delivery": rec }));
                }
                let ok = replayer.replay_one(&rec).await?;
                return Ok(json!({ "replayed": u8::from(ok), "webhook_id": rec.webhook_id() }));
            }
            let now = OffsetDateTime::now_utc();
            let filter = ReplayFilter {
                tenant,
                destination,
                status: match status {
                    ReplayStatusArg::Failed => Status::Failed,
                    ReplayStatusArg::Retrying => Status::Retrying,
                    ReplayStatusArg::Pending => Status::Pending,
                },
                since_ms: when(since.as_deref(), now - time::Duration::days(14))?,
                until_ms: when(until.as_deref(), now)?,
            };
            let matched = replayer.matching(&filter).await?;
            if dry_run || !yes {
                json!({ "dry_run": true, "matched": matched.len(), "note": if dry_run { "nothing changed" } else { "add --yes to replay these" } })
            } else {
                let per_second = std::num::NonZeroU32::new(rate).unwrap_or(std::num::NonZeroU32::MIN);
                serde_json::to_value(replayer.replay_all(&matched, per_second).await?)?
            }
        }
    })
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum KindArg {
    Webhook,
    Slack,
}

async fn destination_command(store: &DataStore, keyring: &KeyringArgs, cmd: DestinationCommand) -> Result<Value> {
    let now = OffsetDateTime::now_utc();
    let views = |ds: Vec<formbridge_shared::destination::Destination>| -> Vec<Value> {
        ds.iter().map(|d| serde_json::to_value(d.view()).unwrap_or(Value::Null)).collect()
    };
    Ok(match cmd {
        DestinationCommand::Create { tenants, sites, url, kind, name, forms, timeout_ms, auth, policy } => {
            let mut delivery_policy = DeliveryPolicy::default();
            policy.apply(&mut delivery_policy);
            let keyring = keyring.load()?;
            // Whole tenants first, then each remaining site under its tenant.
            let mut targets: Vec<(TenantId, Vec<SiteDomain>)> = tenants.iter().map(|t| (t.clone(), vec![])).collect();
            let found = store.get_sites(&sites).await?;
            for domain in &sites {
                let Some(site) = found.iter().find(|s| &s.domain == domain) else {
                    bail!("--site {domain}: no such site")
                };
                match targets.iter_mut().find(|(t, _)| *t == site.tenant) {
                    Some((_, list)) if list.is_empty() && tenants.contains(&site.tenant) => {}
                    Some((_, list)) => list.push(domain.clone()),
                    None => targets.push((site.tenant.clone(), vec![domain.clone()])),
                }
            }
            let spec = DestinationSpec {
                name: name.unwrap_or_else(|| url.clone()),
                url,
                kind: match kind {
                    KindArg::Webhook => DestinationKind::Webhook,
                    KindArg::Slack => DestinationKind::Slack,
                },
                forms,
                timeout_ms,
                auth: auth.load()?,
                policy: delivery_policy,
            };
            let created = store.create_destinations_for(&targets, &spec, &keyring, now).await?;
            let out: Vec<Value> = created
                .iter()
                .map(|(d, secret)| json!({ "destination": d.view(), "signing_secret": secret.expose() }))
                .collect();
            json!({ "created": out, "note": "signing secrets are shown only now" })
        }
        DestinationCommand::Update {
            tenant,
            id,
            url,
            name,
            forms,
            all_forms,
            sites,
            all_sites,
            timeout_ms,
            auth,
            no_auth,
            policy,
        } => {
            let keyring = keyring.load()?;
            let new_auth = auth.load()?;
            let found = store.get_sites(&sites).await?;
            for domain in &sites {
                if !found.iter().any(|s| &s.domain == domain && s.tenant == tenant) {
                    bail!("--site {domain}: not a site of tenant {tenant}");
                }
            }
            let d = store
                .update_destination(&tenant, &id, &keyring, now, "destination.updated", |d, k| {
                    if let Some(u) = url {
                        d.url = u;
                    }
                    if let Some(n) = name {
                        d.name = n;
                    }
                    if all_forms {
                        d.forms.clear();
                    } else if !forms.is_empty() {
                        d.forms = forms;
                    }
                    if all_sites {
                        d.sites.clear();
                    } else if !sites.is_empty() {
                        d.sites = sites;
                    }
                    if let Some(t) = timeout_ms {
                        d.timeout_ms = t;
                    }
                    policy.apply(&mut d.policy);
                    if no_auth {
                        replace_auth(d, k, None);
                    } else if new_auth.is_some() {
                        replace_auth(d, k, new_auth);
                    }
                })
                .await?;
            serde_json::to_value(d.view())?
        }
        DestinationCommand::Enable { tenant, id, .. } => set_enabled(store, keyring, tenant, id, true, now).await?,
        DestinationCommand::Disable { tenant, id, .. } => set_enabled(store, keyring, tenant, id, false, now).await?,
        DestinationCommand::Delete { tenant, id } => {
            store.delete_destination(&tenant, &id, now).await?;
            json!({ "deleted": id, "tenant": tenant })
        }
        DestinationCommand::List { tenant } => {
            json!({ "tenant": tenant, "destinations": views(store.list_destinations(&tenant).await?) })
        }
    })
}

/// Enables or disables one destination (`id`) or, without one, all of the tenant's.
async fn set_enabled(
    store: &DataStore,
    keyring: &KeyringArgs,
    tenant: TenantId,
    id: Option<DestinationId>,
    enabled: bool,
    now: OffsetDateTime,
) -> Result<Value> {
    let keyring = keyring.load()?;
    let changed = match id {
        Some(id) => {
            let kind = if enabled { "destination.enabled" } else { "destination.disabled" };
            store.update_destination(&tenant, &id, &keyring, now, kind, |d, _| d.enabled = enabled).await?;
            vec![id]
        }
        None => store.set_all_destinations_enabled(&tenant, enabled, &keyring, now).await?,
    };
    Ok(json!({ "tenant": tenant, "enabled": enabled, "changed": changed }))
}

#[derive(Debug, Subcommand)]
enum SubmissionsCommand {
    /// The newest submissions of a tenant, gathered across its shards, decoded.
    List {
        #[arg(long)]
        tenant: TenantId,
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// One submission by id.
    Get {
        #[arg(long)]
        tenant: TenantId,
        #[arg(long)]
        id: SubmissionId,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum GranularityArg {
    Hour,
    Day,
}

#[derive(Debug, Subcommand)]
enum DlqCommand {
    /// Show up to 10 dead-lettered messages with the reason they were rejected, leaving them
    /// on the queue (they are received with a zero visibility timeout).
    Peek {
        /// Characters of each body to show.
        #[arg(long, default_value_t = 200)]
        body_chars: usize,
    },
    /// Send dead letters back to the ingest queue, once what failed them is fixed. By default
    /// only those SQS's redrive policy moved after repeated failures to write (an engine outage);
    /// messages the persister rejected stay unless named with --reason. Each is deleted from the
    /// DLQ only after the ingest queue holds it (a crash between leaves a copy in both, which the
    /// persister's idempotent write absorbs).
    Redrive {
        /// Reasons to send back (repeatable; `dlq peek` shows each message's), instead of
        /// redriven_after_repeated_failures.
        #[arg(long = "reason")]
        reasons: Vec<String>,
        /// Send back every dead letter, whatever its reason.
        #[arg(long, conflicts_with = "reasons")]
        all: bool,
        /// Send back at most this many.
        #[arg(long, default_value_t = usize::MAX, hide_default_value = true)]
        max: usize,
    },
}

#[derive(Debug, Subcommand)]
enum DemoCommand {
    /// Post signed demo submissions to the ingest endpoint, as a WordPress site would.
    Post {
        /// The ingest endpoint's base URL.
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        url: String,
        #[arg(long, default_value = "demo.example.com")]
        site: String,
        /// A file holding the site's whsec_ signing secret.
        #[arg(long)]
        secret_file: std::path::PathBuf,
        #[arg(long, default_value_t = 5)]
        count: usize,
        /// Approximate payload size in bytes.
        #[arg(long, default_value_t = 1500)]
        size: usize,
    },
    /// Enqueue synthetic text-heavy submissions for a tenant.
    Enqueue {
        #[arg(long)]
        tenant: TenantId,
        #[arg(long, default_value_t = 10)]
        count: usize,
        /// Approximate payload size in bytes.
        #[arg(long, default_value_t = 2048)]
        size: usize,
        #[arg(long, default_value = "demo.example.com")]
        site: SiteDomain,
        #[arg(long, default_value = "contact")]
        form: FormId,
    },
    /// Receive webhooks as a destination would, until Ctrl-C: verifies each Standard Webhooks
    /// signature, prints one JSON line per request and serves counts on GET /stats.
    Receive {
        #[arg(long, default_value = "127.0.0.1:9000")]
        listen: std::net::SocketAddr,
        /// A file holding the destination's whsec_ signing secret.
        #[arg(long)]
        secret_file: std::path::PathBuf,
        /// Also append every request line to this file.
        #[arg(long)]
        log: Option<std::path::PathBuf>,
    },
}

use formbridge_shared::clock::now_ms;

async fn profile(store: &DataStore, tenant: &TenantId) -> Result<TenantProfile> {
    store.get_tenant(tenant).await?.with_context(|| format!("tenant {tenant} not found"))
}

async fn execute(cli: Cli) -> Result<Value> {
    // The receiver stands in for a customer's endpoint: it needs no AWS settings, so it starts
    // before they are loaded.
    if let Command::Demo(DemoCommand::Receive { listen, secret_file, log }) = cli.command {
        return receiver::run(listen, &secret_file, log).await;
    }
    if let Command::CostModel { .. } = cli.command {
        return cost_model(cli.command);
    }
    cli.resources.validate()?;
    let aws = AwsClients::from_env().await;
    let store = DataStore::new(aws.dynamodb.clone(), cli.resources.table.clone());
    let out = match cli.command {
        Command::Bootstrap => serde_json::to_value(bootstrap::bootstrap(&aws, &cli.resources).await?)?,
        Command::Tenant(TenantCommand::Create { id, name, shards, retention_days }) => {
            let profile = TenantProfile {
                name: name.unwrap_or_else(|| id.to_string()),
                created_at: OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339)?,
                retention_days,
                form_retention: Default::default(),
                shards: ShardHistory::new(shards, now_ms()).context("--shards")?,
                tenant_id: id,
            };
            store.create_tenant(&profile).await?;
            serde_json::to_value(profile)?
        }
        Command::Tenant(TenantCommand::Show { id }) => serde_json::to_value(profile(&store, &id).await?)?,
        Command::Tenant(TenantCommand::List) => json!({ "tenants": store.list_tenants().await? }),
        Command::Tenant(TenantCommand::GrowShards { id, count }) => {
            serde_json::to_value(store.grow_shards(&id, count, now_ms()).await.context("--count")?)?
        }
        Command::Site(cmd) => site_command(&store, &cli.keyring, cmd).await?,
        Command::ApiKey(cmd) => api_key_command(&store, &cli.keyring, cmd).await?,
        Command::PortalLink { tenant, ttl, session_ttl, base_url } => {
            portal_link(&store, &cli.keyring, tenant, ttl, session_ttl, &base_url).await?
        }
        Command::Destination(cmd) => destination_command(&store, &cli.keyring, cmd).await?,
        Command::Metrics { tenant, form, granularity, last } => {
            let now = OffsetDateTime::now_utc();
            let (g, span) = match granularity {
                GranularityArg::Hour => (formbridge_shared::buckets::Granularity::Hour, time::Duration::hours(last)),
                GranularityArg::Day => (formbridge_shared::buckets::Granularity::Day, time::Duration::days(last)),
            };
            let buckets = store.metrics(&tenant, form.as_ref(), g, now - span, now).await?;
            json!({ "tenant": tenant, "form": form, "granularity": g, "buckets": buckets })
        }
        Command::Delivery(cmd) => delivery_command(&aws, &cli.resources, &store, cmd).await?,
        Command::Submissions(SubmissionsCommand::List { tenant, limit }) => {
            let p = profile(&store, &tenant).await?;
            json!({ "submissions": store.recent_submissions(&tenant, &p, limit).await? })
        }
        Command::Submissions(SubmissionsCommand::Get { tenant, id }) => {
            let p = profile(&store, &tenant).await?;
            match store.get_submission(&p, &id).await? {
                Some(s) => serde_json::to_value(s)?,
                None => bail!("submission {id} of tenant {tenant} not found"),
            }
        }
        Command::Dlq(DlqCommand::Peek { body_chars }) => {
            let dlq =
                formbridge_shared::queue::Queue::open(aws.sqs.clone(), &cli.resources.ingest_dlq, "admin").await?;
            let messages: Vec<Value> = dlq
                .peek(10)
                .await?
                .iter()
                .map(|m| {
                    json!({
                        "message_id": m.id,
                        // Messages moved by the redrive policy carry no reason: they failed to be
                        // written maxReceiveCount times (see the persister's error logs).
                        "reason": formbridge_shared::submission::dead_letter_reason(m),
                        "detail": m.attribute(REJECT_DETAIL_ATTRIBUTE),
                        "body_bytes": m.body.len(),
                        "body": m.body.chars().take(body_chars).collect::<String>(),
                    })
                })
                .collect();
            json!({ "queue": cli.resources.ingest_dlq, "messages": messages })
        }
        Command::Dlq(DlqCommand::Redrive { reasons, all, max }) => {
            let dlq =
                formbridge_shared::queue::Queue::open(aws.sqs.clone(), &cli.resources.ingest_dlq, "admin").await?;
            let ingest =
                formbridge_shared::queue::Queue::open(aws.sqs.clone(), &cli.resources.ingest_queue, "admin").await?;
            let reasons = if reasons.is_empty() {
                vec![formbridge_shared::submission::REPEATED_FAILURES.to_owned()]
            } else {
                reasons
            };
            let pick = |r: &str| all || reasons.iter().any(|x| x == r);
            let done = formbridge_shared::queue::redrive(
                &dlq,
                &ingest,
                formbridge_shared::submission::dead_letter_reason,
                pick,
                max,
            )
            .await?;
            json!({ "from": cli.resources.ingest_dlq, "to": cli.resources.ingest_queue, "moved": done.moved, "left_by_reason": done.left })
        }
        Command::Demo(DemoCommand::Post { url, site, secret_file, count, size }) => {
            let secret = std::fs::read_to_string(&secret_file)
                .with_context(|| format!("--secret-file {}", secret_file.display()))?;
            let signer =
                standardwebhooks::Webhook::new(secret.trim()).context("--secret-file does not hold a whsec_ secret")?;
            let http = reqwest::Client::new();
            let seed = now_ms();
            let mut answers = Vec::with_capacity(count);
            for i in 0..count {
                let mut body = sample::text_heavy_payload(size, seed + i as u64);
                body["site"] = Value::String(site.clone());
                body["form_id"] = Value::String("contact".into());
                body["submitted_at"] =
                    Value::String(OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339)?);
                let bytes = serde_json::to_vec(&body)?;
                let id = format!("msg_{}", SubmissionId::new());
                let ts = OffsetDateTime::now_utc().unix_timestamp();
                let signature = signer.sign(&id, ts, &bytes)?;
                let resp = http
                    .post(format!("{}/v1/submissions", url.trim_end_matches('/')))
                    .header("content-type", "application/json")
                    .header("webhook-id", &id)
                    .header("webhook-timestamp", ts.to_string())
                    .header("webhook-signature", signature)
                    .body(bytes)
                    .send()
                    .await
                    .with_context(|| format!("--url {url}"))?;
                let status = resp.status().as_u16();
                answers.push(json!({ "status": status, "answer": resp.json::<Value>().await.unwrap_or(Value::Null) }));
            }
            json!({ "posted": count, "answers": answers })
        }
        Command::Demo(DemoCommand::Enqueue { tenant, count, size, site, form }) => {
            let p = profile(&store, &tenant).await?;
            let queue =
                formbridge_shared::queue::Queue::open(aws.sqs.clone(), &cli.resources.ingest_queue, "admin").await?;
            let seed = now_ms();
            let mut ids = Vec::with_capacity(count);
            let messages: Vec<QueueMessage> = (0..count)
                .map(|i| {
                    let Value::Object(payload) = sample::text_heavy_payload(size, seed + i as u64) else {
                        unreachable!()
                    };
                    let id = SubmissionId::new();
                    ids.push(id);
                    QueueMessage::new(&p, site.clone(), form.clone(), id, OffsetDateTime::now_utc(), payload)
                })
                .collect();
            let outgoing: Vec<_> = messages
                .iter()
                .map(|m| formbridge_shared::queue::Outgoing::new(serde_json::to_string(m).expect("serialisable")))
                .collect();
            queue.send_all(&outgoing).await?;
            json!({ "enqueued": count, "tenant": tenant, "submission_ids": ids })
        }
        Command::Cost { tenant, month, prices } => cost(&aws, &cli.resources, tenant, month, &prices).await?,
        Command::Recommend { tenant, prices } => {
            use formbridge_shared::recommend;
            let price_table = prices.load()?;
            let now = OffsetDateTime::now_utc();
            let ids = match tenant {
                Some(t) => vec![t],
                None => store.list_tenants().await?,
            };
            let mut usage = Vec::new();
            for t in &ids {
                usage.push(recommend::tenant_usage(&store, &profile(&store, t).await?, now).await?);
            }
            let system = if ids.len() == 1 {
                recommend::SystemUsage::default()
            } else {
                recommend::system_usage(&store, now).await?
            };
            let recs = recommend::recommend(&usage, &system, &price_table);
            let total: f64 = recs.iter().map(|r| r.saving_usd_month).sum();
            json!({ "recommendations": recs, "saving_usd_month": total, "tenants": ids.len(), "region": prices.region })
        }
        Command::Migrate { rollback: Some(id), .. } => migrate::rollback(&store, &id).await?,
        Command::Migrate { from_table, dry_run, id, default_destination_url, rollback: None } => {
            let table = from_table.context("--from-table is required")?;
            migrate::migrate(&aws, &store, &cli.keyring, &table, id, dry_run, default_destination_url).await?
        }
        Command::LegacyFixture { table, file } => migrate::fixture(&aws, &table, &file).await?,
        Command::Demo(DemoCommand::Receive { .. }) | Command::CostModel { .. } => {
            unreachable!("handled before AWS is configured")
        }
    };
    // What this command made AWS bill goes to the tenants' cost items like every process's.
    if cli.resources.cost_flush_seconds > 0 {
        if let Err(e) = formbridge_shared::costs::flush(&aws.dynamodb, &cli.resources.table).await {
            eprintln!("formbridge-admin: the cost counts of this command were not written: {e}");
        }
    }
    Ok(out)
}

fn domains(raw: &[String]) -> Result<Vec<SiteDomain>> {
    raw.iter().map(|d| domain::normalize(d).with_context(|| format!("--domain {d:?}"))).collect()
}

async fn site_command(store: &DataStore, keyring: &KeyringArgs, cmd: SiteCommand) -> Result<Value> {
    let now = OffsetDateTime::now_utc();
    Ok(match cmd {
        SiteCommand::Add { tenant, domains: raw } => {
            let keyring = keyring.load()?;
            profile(store, &tenant).await?;
            let added = store.add_sites(&tenant, &domains(&raw)?, &keyring, now).await?;
            let sites: Vec<Value> =
                added.iter().map(|(d, secret)| json!({ "domain": d, "signing_secret": secret.expose() })).collect();
            json!({ "tenant": tenant, "sites": sites, "note": "signing secrets are shown only now; store them in each site's plugin" })
        }
        SiteCommand::Remove { tenant, domains: raw } => {
            let removed = domains(&raw)?;
            store.remove_sites(&tenant, &removed, now).await?;
            json!({ "tenant": tenant, "removed": removed })
        }
        SiteCommand::Rotate { tenant, domain: raw, grace_hours } => {
            let keyring = keyring.load()?;
            let d = domain::normalize(&raw).with_context(|| format!("--domain {raw:?}"))?;
            let grace = std::time::Duration::from_secs(grace_hours * 3600);
            let secret = store.rotate_site_secret(&tenant, &d, grace, &keyring, now).await?;
            json!({
                "domain": d,
                "signing_secret": secret.expose(),
                "previous_secrets_valid_until": (now + grace).format(&time::format_description::well_known::Rfc3339)?,
                "note": "the new secret is shown only now"
            })
        }
        SiteCommand::Show { domains: raw } => {
            let wanted = domains(&raw)?;
            let found = store.get_sites(&wanted).await?;
            let now_ms = formbridge_shared::site::ms(now);
            let sites: Vec<Value> = wanted
                .iter()
                .map(|d| match found.iter().find(|r| &r.domain == d) {
                    Some(r) => serde_json::to_value(r.status(now_ms)).unwrap_or(Value::Null),
                    None => json!({ "domain": d, "registered": false }),
                })
                .collect();
            json!({ "sites": sites })
        }
        SiteCommand::List { tenant } => json!({ "tenant": tenant, "domains": store.list_sites(&tenant).await? }),
    })
}

/// `cost`: a month's bill of one tenant, or of all of them and the system.
async fn cost(
    aws: &AwsClients,
    resources: &ResourceNames,
    tenant: Option<TenantId>,
    month: Option<String>,
    prices: &formbridge_shared::billing::PriceSettings,
) -> Result<Value> {
    use formbridge_shared::costs;
    let price_table = prices.load()?;
    let now = OffsetDateTime::now_utc();
    let month = month.unwrap_or_else(|| format!("{}-{:02}", now.year(), now.month() as u8));
    let (first, last) = costs::month_bounds(&month).map_err(|why| anyhow::anyhow!("--month {month:?}: {why}"))?;
    let bill = |days: &[(time::Date, costs::CostItem)]| {
        costs::month_cost(&month, days, &price_table, &prices.region, now)
            .map_err(|why| anyhow::anyhow!("--month: {why}"))
    };
    if let Some(t) = tenant {
        let days = costs::days(&aws.dynamodb, &resources.table, Some(&t), first, last).await?;
        return Ok(json!({ "tenant": t, "cost": bill(&days)? }));
    }
    let store = DataStore::new(aws.dynamodb.clone(), resources.table.clone());
    let mut tenants = Vec::new();
    for t in store.list_tenants().await? {
        let days = costs::days(&aws.dynamodb, &resources.table, Some(&t), first, last).await?;
        let b = bill(&days)?;
        tenants.push(json!({ "tenant": t, "so_far_usd": b.so_far_usd, "projected_usd": b.projected_usd }));
    }
    tenants.sort_by(|a, b| b["so_far_usd"].as_f64().unwrap_or(0.0).total_cmp(&a["so_far_usd"].as_f64().unwrap_or(0.0)));
    let system_days = costs::days(&aws.dynamodb, &resources.table, None, first, last).await?;
    let system = bill(&system_days)?;
    let mut unattributed = costs::Units::default();
    for (_, c) in &system_days {
        unattributed.merge(&c.unattributed);
    }
    Ok(json!({
        "month": month,
        "system": system,
        "unattributed_usd": unattributed.dollars(&price_table),
        "tenants": tenants,
    }))
}

/// `cost-model`: the bill, as JSON, or as a table when asked (printed here; `Value::Null` back).
fn cost_model(command: Command) -> Result<Value> {
    use formbridge_shared::cost_model::{monthly, Idle, PerSubmission, PlatformPrices, TemplateCounts, Workload};
    let Command::CostModel {
        submissions,
        sites,
        destinations_per_site,
        mode,
        retention_days,
        log_retention_days,
        lambda_memory_mb,
        lambda_ms,
        pollers_per_queue,
        from_report,
        table,
    } = command
    else {
        unreachable!("called for cost-model only")
    };
    if sites == 0 {
        bail!("--sites must be at least 1");
    }
    let mut per = PerSubmission::design(f64::from(destinations_per_site));
    if let Some(path) = &from_report {
        let text = std::fs::read_to_string(path).with_context(|| format!("--from-report {}", path.display()))?;
        let report: Value = serde_json::from_str(&text).with_context(|| format!("--from-report {}", path.display()))?;
        let measured = &report["per_submission"];
        let field = |name: &str| {
            measured[name]
                .as_f64()
                .with_context(|| format!("--from-report {}: no per_submission.{name}", path.display()))
        };
        per.write_units = field("write_units")?;
        per.read_units = field("read_units")?;
        per.sqs_requests = field("sqs_requests")?;
    }
    // What the template creates in this mode (alarms, dashboards, metric filters, pollers).
    let template = include_str!("../../../deploy/aws/formbridge.yaml");
    let counts = TemplateCounts::from_template(template, mode).map_err(anyhow::Error::msg)?;
    let mut idle = Idle::from_template(mode, counts);
    idle.lambda_memory_mb = lambda_memory_mb;
    idle.lambda_ms = lambda_ms;
    if let Some(p) = pollers_per_queue {
        idle.pollers_per_queue = p;
    }
    let workload = Workload { submissions, sites, destinations_per_site, retention_days, log_retention_days };
    let bill = monthly(mode, workload, per, idle, &Default::default(), &PlatformPrices::default());
    if !table {
        let mut v = serde_json::to_value(&bill)?;
        v["dominant"] = json!(bill.dominant().iter().map(|i| i.item).collect::<Vec<_>>());
        return Ok(v);
    }
    println!("{submissions} submissions a month from {sites} sites, {destinations_per_site} destination(s) each, {mode:?} mode (us-east-1 list prices)\n");
    println!("{:<58} {:>14} {:<12} {:>10} {:>12}", "item", "quantity", "unit", "$/month", "after free");
    for i in &bill.items {
        println!("{:<58} {:>14.1} {:<12} {:>10.4} {:>12.4}", i.item, i.quantity, i.unit, i.dollars, i.after_free_tier);
    }
    println!("{:<58} {:>14} {:<12} {:>10.2} {:>12.2}", "total", "", "", bill.total, bill.total_after_free_tier);
    let dominant: Vec<&str> = bill.dominant().iter().map(|i| i.item).collect();
    println!("\nmost of it: {}", dominant.join("; "));
    Ok(Value::Null)
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    match execute(cli).await {
        Ok(Value::Null) => {}
        Ok(v) => println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default()),
        Err(e) => {
            eprintln!("formbridge-admin: {e:#}");
            std::process::exit(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_cli_definition_is_consistent() {
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from([
            "formbridge-admin",
            "destination",
            "update",
            "--tenant",
            "acme",
            "--id",
            "01JDQ7Z8X0000000000000000A",
            "--retry-schedule",
            "5s,5m,2h",
            "--max-in-flight",
            "8",
        ])
        .unwrap();
        let Command::Destination(DestinationCommand::Update { policy, .. }) = cli.command else { panic!() };
        let mut p = DeliveryPolicy::default();
        policy.apply(&mut p);
        assert_eq!(p.retry_schedule, vec![5, 300, 7200]);
        assert_eq!(p.max_in_flight, 8);
        assert_eq!(p.client_error_schedule, DeliveryPolicy::default().client_error_schedule);
        assert!(parse_schedule("5s,soon").unwrap_err().contains("soon"));
    }
}

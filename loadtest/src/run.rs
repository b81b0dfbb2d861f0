//! A load run: set up a generated population (tenants, sites, one destination each pointing at
//! the built-in receiver), send submissions through the signed HTTP endpoint or straight onto the
//! ingest queue at a fixed rate, watch them arrive in the table (a consumer group of our own on
//! the table's stream) and at the receiver, and report.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use formbridge_shared::aws::{AwsClients, ResourceNames};
use formbridge_shared::destination::{DeliveryPolicy, DestinationKind, DestinationSpec};
use formbridge_shared::keys::Entity;
use formbridge_shared::queue::{Outgoing, Queue};
use formbridge_shared::secrets::Keyring;
use formbridge_shared::sharding::ShardHistory;
use formbridge_shared::store::DataStore;
use formbridge_shared::stream::{self, BatchProcessor, Change, ChangeKind, Committer, ProcessError};
use formbridge_shared::submission::QueueMessage;
use formbridge_shared::tenant::TenantProfile;
use formbridge_shared::{FormId, SiteDomain, SubmissionId, TenantId};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::gen::{Generated, Traffic};
use crate::rate::{RateSpec, Schedule};
use crate::report::{Observations, Report};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Target {
    /// Signed POSTs to the ingest endpoint: the real path.
    Http,
    /// Queue messages straight onto the ingest queue.
    Queue,
}

#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    #[arg(long, value_enum, default_value = "queue")]
    pub target: Target,
    /// The ingest endpoint, for `--target http`.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub ingest_url: String,
    /// Submissions per second: `20` (fixed), `10..200` (a linear ramp over --duration-s), `50%`
    /// (of the engine's BatchWriteItem ceiling, measured first) or `max` (as fast as the pipeline
    /// holds up: sends while fewer than --max-backlog submissions wait to be delivered).
    #[arg(long, default_value = "20")]
    pub rate: RateSpec,
    /// Stop after this many submissions...
    #[arg(long, default_value_t = 200)]
    pub count: usize,
    /// ...or after this many seconds, whichever comes first.
    #[arg(long, default_value_t = 60)]
    pub duration_s: u64,
    /// For `--rate max`: sent-but-not-yet-delivered submissions allowed at once.
    #[arg(long, default_value_t = 300)]
    pub max_backlog: usize,
    /// Send calls in flight at once (each carries up to 10 submissions).
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    #[arg(long, default_value_t = 10)]
    pub tenants: usize,
    #[arg(long, default_value_t = 2)]
    pub sites_per_tenant: usize,
    /// Zipf exponent of tenant volume (0 = uniform).
    #[arg(long, default_value_t = 1.1)]
    pub skew: f64,
    /// Write shards of each generated tenant.
    #[arg(long, default_value_t = 4)]
    pub shards: u16,
    /// Where the built-in webhook receiver listens (the generated destinations point here).
    #[arg(long, default_value = "127.0.0.1:9100")]
    pub receiver: SocketAddr,
    /// How long to wait, after the last send, for persistence and delivery.
    #[arg(long, default_value_t = 60)]
    pub settle_s: u64,
    /// Seconds spent measuring each of the engine's ceilings (raw BatchWriteItem, raw
    /// SendMessageBatch); 0 skips them. Measured after the load, or first for `--rate P%`.
    #[arg(long, default_value_t = 3.0)]
    pub ceiling_s: f64,
    /// Calls in flight while measuring the ceilings.
    #[arg(long, default_value_t = 4)]
    pub ceiling_concurrency: usize,
    /// Prometheus endpoints of the pipeline's processes (repeatable): their
    /// `aws_requests_total` counters are read before and after the run, so the report meters
    /// AWS requests by API. Processes running inside this one are metered without it.
    #[arg(long = "metrics-url")]
    pub metrics_urls: Vec<String>,
    /// No progress bar (a line every 5 s instead).
    #[arg(long)]
    pub quiet: bool,
    /// Write the JSON report here.
    #[arg(long, default_value = "loadtest-report.json")]
    pub report: std::path::PathBuf,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Send these payloads (JSON Lines of `{"fields", "meta", "submitted_at"}`) instead of
    /// generated ones, e.g. the held-out real text: `loadtest/corpus/sample/heldout.jsonl`, or
    /// `target/corpus/heldout.jsonl` after `python3 loadtest/corpus/build.py`.
    #[arg(long)]
    pub corpus: Option<std::path::PathBuf>,
}

impl RunArgs {
    /// The settings of a small run against `receiver`, for tests and the demo.
    pub fn small(receiver: SocketAddr, report: std::path::PathBuf) -> RunArgs {
        RunArgs {
            target: Target::Queue,
            ingest_url: "http://127.0.0.1:8080".into(),
            rate: RateSpec::Fixed(20.0),
            count: 200,
            duration_s: 60,
            max_backlog: 300,
            concurrency: 16,
            tenants: 10,
            sites_per_tenant: 2,
            skew: 1.1,
            shards: 4,
            receiver,
            settle_s: 60,
            ceiling_s: 3.0,
            ceiling_concurrency: 4,
            metrics_urls: vec![],
            quiet: true,
            report,
            seed: 1,
            corpus: None,
        }
    }

    fn validate(&self) -> Result<(), RunError> {
        let bad = |k: &'static str, v: String| Err(RunError::Setting(k, v));
        if self.tenants == 0 || self.tenants > 999 {
            return bad("--tenants", format!("{} (1 to 999)", self.tenants));
        }
        if self.count == 0 {
            return bad("--count", "0 (at least 1)".into());
        }
        if self.duration_s == 0 {
            return bad("--duration-s", "0 (at least 1)".into());
        }
        if self.concurrency == 0 || self.concurrency > 1024 {
            return bad("--concurrency", format!("{} (1 to 1024)", self.concurrency));
        }
        if self.max_backlog < 10 {
            return bad("--max-backlog", format!("{} (at least 10)", self.max_backlog));
        }
        if !(self.ceiling_s >= 0.0 && self.ceiling_s <= 600.0) {
            return bad("--ceiling-s", format!("{} (0 to 600)", self.ceiling_s));
        }
        if matches!(self.rate, RateSpec::OfCeiling(_)) && self.ceiling_s == 0.0 {
            return bad("--rate", format!("{} needs the ceiling measured (--ceiling-s > 0)", self.rate));
        }
        if !(self.skew >= 0.0 && self.skew.is_finite()) {
            return bad("--skew", self.skew.to_string());
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("invalid setting {0}: {1}")]
    Setting(&'static str, String),
    #[error("setup: {0}")]
    Setup(String),
    #[error("stream: {0}")]
    Stream(#[from] stream::ShardError),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("measuring the engine's ceiling: {0}")]
    Ceiling(#[from] crate::ceiling::CeilingError),
}

/// What the generated tenants need at send time.
struct Population {
    tenants: Vec<TenantId>,
    site_secrets: HashMap<String, String>,
    dest_secrets: HashMap<String, String>,
}

async fn setup(
    store: &DataStore,
    keyring: &Keyring,
    traffic: &Traffic,
    shards: u16,
    receiver: SocketAddr,
) -> Result<Population, RunError> {
    let now = time::OffsetDateTime::now_utc();
    let err = |e: String| RunError::Setup(e);
    let mut pop = Population { tenants: vec![], site_secrets: HashMap::new(), dest_secrets: HashMap::new() };
    for plan in &traffic.tenants {
        let tenant = TenantId::parse(&plan.id).map_err(|e| err(e.to_string()))?;
        let profile = TenantProfile {
            tenant_id: tenant.clone(),
            name: plan.id.clone(),
            created_at: now.format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
            retention_days: 30,
            form_retention: Default::default(),
            shards: ShardHistory::new(shards, 0).map_err(|e| err(e.to_string()))?,
        };
        store.create_tenant(&profile).await.map_err(|e| err(e.to_string()))?;
        let domains: Vec<SiteDomain> = plan.sites.iter().map(|s| SiteDomain::parse(s).expect("generated")).collect();
        for (d, secret) in store.add_sites(&tenant, &domains, keyring, now).await.map_err(|e| err(e.to_string()))? {
            pop.site_secrets.insert(d.to_string(), secret.expose().to_owned());
        }
        let spec = DestinationSpec {
            name: "loadtest receiver".into(),
            url: format!("http://{receiver}/hook"),
            kind: DestinationKind::Webhook,
            forms: vec![],
            timeout_ms: 15_000,
            auth: None,
            policy: DeliveryPolicy { retry_schedule: vec![1, 2, 5, 10, 30], ..DeliveryPolicy::default() },
        };
        for (d, secret) in store
            .create_destinations(std::slice::from_ref(&tenant), &spec, keyring, now)
            .await
            .map_err(|e| err(e.to_string()))?
        {
            pop.dest_secrets.insert(d.id.to_string(), secret.expose().to_owned());
        }
        pop.tenants.push(tenant);
    }
    Ok(pop)
}

/// Shared observations, keyed by submission id.
#[derive(Debug, Default)]
pub struct Seen {
    pub sent: HashMap<String, Instant>,
    pub persisted: HashMap<String, Instant>,
    pub delivered: HashMap<String, Instant>,
    pub webhook_ids: HashMap<String, u64>,
    pub unverified: u64,
    /// Submissions the target refused (HTTP non-2xx, SQS batch failures, transport errors).
    pub rejected: u64,
    /// Ceiling items seen on the stream (to wait until consumers are past them).
    pub ceiling_items_seen: u64,
    pub raw_bytes: u64,
    pub stored_bytes: u64,
    pub stored_sizes: Vec<u64>,
    /// Each stored submission's sizes, for the storage figures by band.
    pub samples: Vec<crate::report::StoredSample>,
    /// Decoded payloads kept so far, by band.
    pub kept_by_band: [usize; 5],
    /// Every stored submission's (shard, id time in ms, write units), by tenant: the per-shard
    /// load before and after a tenant's shard count grows.
    pub shard_writes: HashMap<String, Vec<(u16, u64, u64)>>,
}

/// The storage band of a payload size (the overlapping 1-4 KiB band aside; 4: larger).
fn band_of(raw: u64) -> usize {
    crate::dictionary::BANDS[..4].iter().position(|(_, lo, hi)| (*lo as u64..*hi as u64).contains(&raw)).unwrap_or(4)
}

/// Our own consumer group on the table's stream: notes when each submission was persisted.
struct Tracker {
    prefix: String,
    ceiling_pk: String,
    seen: Arc<Mutex<Seen>>,
}

impl std::fmt::Debug for Tracker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tracker")
    }
}

impl BatchProcessor for Tracker {
    async fn process(&self, records: &[Change], _c: &mut Committer<'_>) -> Result<(), ProcessError> {
        let now = Instant::now();
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        for r in records {
            let pk = r.new.as_ref().and_then(|n| n.get(formbridge_shared::keys::PK)).and_then(|v| v.as_s().ok());
            if r.kind == ChangeKind::Insert && pk.is_some_and(|pk| pk.starts_with(&self.ceiling_pk)) {
                seen.ceiling_items_seen += 1;
                continue;
            }
            let (Entity::Submission { tenant, id, shard }, ChangeKind::Insert, Some(new)) = (&r.entity, r.kind, &r.new)
            else {
                continue;
            };
            if !tenant.as_str().starts_with(&self.prefix) {
                continue;
            }
            if seen.persisted.insert(id.to_string(), now).is_none() {
                let fields = formbridge_shared::submission::SubmissionFields::read(new).ok();
                let raw = fields.map(|f| f.raw_size).unwrap_or(0);
                let stored = formbridge_shared::capacity::item_size(new) as u64;
                // The payload is kept (decoded) for the first few per band only: the plain
                // brotli comparison after the run needs no more.
                let band = band_of(raw);
                let raw_payload = fields
                    .filter(|_| seen.kept_by_band[band] < crate::report::PLAIN_SAMPLE)
                    .and_then(|f| formbridge_shared::codec::decode(f.codec, f.payload).ok());
                if raw_payload.is_some() {
                    seen.kept_by_band[band] += 1;
                }
                seen.samples.push(crate::report::StoredSample {
                    raw,
                    payload: fields.map(|f| f.payload.len() as u64 + 1).unwrap_or(0),
                    item: stored,
                    raw_payload,
                });
                seen.shard_writes.entry(tenant.to_string()).or_default().push((
                    *shard,
                    id.timestamp_ms(),
                    formbridge_shared::capacity::write_units(stored as usize),
                ));
                seen.raw_bytes += raw;
                seen.stored_bytes += stored;
                seen.stored_sizes.push(stored);
            }
        }
        Ok(())
    }
}

/// The built-in receiver: verifies each delivery with its destination's secret, counts unique
/// and duplicate webhook-ids, notes arrival times.
async fn receiver(
    listener: tokio::net::TcpListener,
    secrets: HashMap<String, String>,
    seen: Arc<Mutex<Seen>>,
    shutdown: CancellationToken,
) {
    let hooks: Arc<HashMap<String, standardwebhooks::Webhook>> = Arc::new(
        secrets.into_iter().filter_map(|(d, s)| standardwebhooks::Webhook::new(&s).ok().map(|w| (d, w))).collect(),
    );
    let handler = move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
        let (hooks, seen) = (hooks.clone(), seen.clone());
        async move {
            let now = Instant::now();
            let wid = headers.get("webhook-id").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
            let dest = wid.rsplit('_').next().unwrap_or("");
            let ok = hooks.get(dest).is_some_and(|w| w.verify(&body, &headers).is_ok());
            let mut s = seen.lock().unwrap_or_else(|e| e.into_inner());
            if !ok {
                s.unverified += 1;
                return axum::http::StatusCode::UNAUTHORIZED;
            }
            *s.webhook_ids.entry(wid).or_default() += 1;
            let v: Value = serde_json::from_slice(&body).unwrap_or_default();
            if let Some(id) = v["data"]["submission_id"].as_str() {
                s.delivered.entry(id.to_owned()).or_insert(now);
            }
            axum::http::StatusCode::NO_CONTENT
        }
    };
    let app = axum::Router::new().route("/hook", axum::routing::post(handler));
    let _ = axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned()).await;
}

/// What sends one batch: straight onto the ingest queue, or as signed POSTs to ingest.
struct Sender {
    target: Target,
    queue: Queue,
    http: reqwest::Client,
    ingest_url: String,
    pop: Population,
    shards: u16,
    seen: Arc<Mutex<Seen>>,
}

/// The queue message ingest would build for a generated submission.
pub fn queue_message(g: &Generated, tenant: &TenantId, shards: u16, now: time::OffsetDateTime) -> Option<QueueMessage> {
    let Value::Object(payload) = g.payload.clone() else { return None };
    Some(QueueMessage {
        v: 1,
        submission_id: SubmissionId::new(),
        tenant_id: tenant.clone(),
        site: SiteDomain::parse(&g.site).ok()?,
        form_id: FormId::parse(g.form.id()).ok()?,
        received_at: now.format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
        shard_count: shards,
        expires_at: now.unix_timestamp() + 30 * 86_400,
        payload,
    })
}

impl Sender {
    /// Sends one batch (≤ 10) and notes each accepted submission with the instant the send began.
    async fn send(&self, batch: Vec<Generated>) {
        let now = time::OffsetDateTime::now_utc();
        let accepted: Vec<(String, Instant)> = match self.target {
            Target::Queue => self.to_queue(&batch, now).await,
            Target::Http => self.to_ingest(&batch, now).await,
        };
        let mut s = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        s.rejected += (batch.len() - accepted.len()) as u64;
        for (id, t) in accepted {
            s.sent.insert(id, t);
        }
    }

    async fn to_queue(&self, batch: &[Generated], now: time::OffsetDateTime) -> Vec<(String, Instant)> {
        let (ids, outgoing): (Vec<String>, Vec<Outgoing>) = batch
            .iter()
            .filter_map(|g| queue_message(g, &self.pop.tenants[g.tenant], self.shards, now))
            .map(|m| (m.submission_id.to_string(), Outgoing::new(serde_json::to_string(&m).expect("serialises"))))
            .unzip();
        let t = Instant::now();
        let results = self.queue.send(&outgoing).await;
        if let Some(Err(e)) = results.iter().find(|r| r.is_err()) {
            tracing::warn!(error = %e, "some messages were not accepted");
        }
        ids.into_iter().zip(results).filter(|(_, r)| r.is_ok()).map(|(id, _)| (id, t)).collect()
    }

    async fn to_ingest(&self, batch: &[Generated], now: time::OffsetDateTime) -> Vec<(String, Instant)> {
        let now_s = now.format(&time::format_description::well_known::Rfc3339).unwrap_or_default();
        let posts = batch.iter().map(|g| {
            let secret = &self.pop.site_secrets[&g.site];
            let body = serde_json::to_vec(&serde_json::json!({
                "site": g.site, "form_id": g.form.id(), "submitted_at": now_s,
                "fields": g.payload["fields"], "meta": g.payload["meta"],
            }))
            .expect("serialises");
            let url = format!("{}/v1/submissions", self.ingest_url);
            async move {
                let wid = format!("msg_{}", ulid::Ulid::new());
                let ts = time::OffsetDateTime::now_utc().unix_timestamp();
                let sig = standardwebhooks::Webhook::new(secret).and_then(|w| w.sign(&wid, ts, &body)).ok()?;
                let t = Instant::now();
                let r = self
                    .http
                    .post(url)
                    .header("content-type", "application/json")
                    .header("webhook-id", &wid)
                    .header("webhook-timestamp", ts.to_string())
                    .header("webhook-signature", sig)
                    .body(body)
                    .send()
                    .await
                    .ok()?;
                if !r.status().is_success() {
                    tracing::warn!(status = %r.status(), "a submission was refused");
                    return None;
                }
                let v: Value = r.json().await.ok()?;
                Some((v["submission_id"].as_str()?.to_owned(), t))
            }
        });
        futures::future::join_all(posts).await.into_iter().flatten().collect()
    }
}

/// Progress: a bar on a terminal, a line every 5 s otherwise.
struct Progress {
    bar: indicatif::ProgressBar,
    lines: bool,
    last_line: Instant,
    started: Instant,
}

impl Progress {
    fn new(count: usize, quiet: bool) -> Self {
        use std::io::IsTerminal;
        let lines = quiet || !std::io::stderr().is_terminal();
        let bar = if lines { indicatif::ProgressBar::hidden() } else { indicatif::ProgressBar::new(count as u64) };
        bar.set_style(
            indicatif::ProgressStyle::with_template("{elapsed_precise} [{wide_bar}] {pos}/{len} sent  {msg}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        Progress { bar, lines, last_line: Instant::now(), started: Instant::now() }
    }

    fn update(&mut self, phase: &str, seen: &Seen) {
        let msg = format!(
            "{phase}: accepted {}  persisted {}  delivered {}",
            seen.sent.len(),
            seen.persisted.len(),
            seen.delivered.len()
        );
        self.bar.set_position((seen.sent.len() as u64 + seen.rejected).min(self.bar.length().unwrap_or(u64::MAX)));
        if self.lines && self.last_line.elapsed() >= Duration::from_secs(5) {
            self.last_line = Instant::now();
            eprintln!("[{:>6.1} s] {msg}", self.started.elapsed().as_secs_f64());
        }
        self.bar.set_message(msg);
    }
}

/// What the pipeline's counters said at one moment: AWS requests by `service:Operation`, usage by
/// `component:unit`, billed units by unit, and CPU seconds by process. Processes running in this
/// one count through the process-wide tallies; others through their Prometheus pages.
#[derive(Debug, Default)]
struct Counters {
    requests: BTreeMap<String, u64>,
    usage: BTreeMap<String, u64>,
    billed: BTreeMap<String, u64>,
    cpu_s: BTreeMap<String, f64>,
}

/// What ingest waits for company in a SendMessageBatch by default (`INGEST_BATCH_LINGER_MS`).
const INGEST_LINGER: Duration = Duration::from_millis(50);

/// Name under which the CPU of this process is reported when the pipeline runs inside it.
const IN_PROCESS: &str = "in-process (every stage and the load generator)";

async fn read_counters(http: &reqwest::Client, urls: &[String]) -> Counters {
    let mut c = Counters {
        requests: formbridge_shared::aws::request_counts(),
        usage: formbridge_shared::usage::snapshot()
            .into_iter()
            .map(|((c, u), v)| (format!("{c}:{}", u.as_str()), v))
            .collect(),
        billed: formbridge_shared::billing::snapshot(),
        cpu_s: BTreeMap::new(),
    };
    if urls.is_empty() {
        if let Some(s) = formbridge_shared::telemetry::cpu_seconds() {
            c.cpu_s.insert(IN_PROCESS.to_owned(), s);
        }
    }
    for url in urls {
        let Ok(text) = async { http.get(url).send().await?.error_for_status()?.text().await }.await else {
            tracing::warn!(%url, "cannot read metrics");
            continue;
        };
        let add = |into: &mut BTreeMap<String, u64>, from: BTreeMap<String, u64>| {
            for (k, v) in from {
                *into.entry(k).or_default() += v;
            }
        };
        add(&mut c.requests, crate::report::aws_request_counters(&text));
        add(&mut c.usage, crate::report::usage_counters(&text));
        add(&mut c.billed, crate::report::billed_counters(&text));
        if let Some((name, s)) = crate::report::process_cpu(&text) {
            *c.cpu_s.entry(name).or_default() += s;
        }
    }
    c
}

fn diff(after: &BTreeMap<String, u64>, before: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v.saturating_sub(before.get(k).copied().unwrap_or(0))))
        .filter(|(_, v)| *v > 0)
        .collect()
}

fn lock(seen: &Mutex<Seen>) -> std::sync::MutexGuard<'_, Seen> {
    seen.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs a load test against the stack named by `names`; the processes (ingest for `--target
/// http`, persister, delivery) must be running, here or elsewhere.
pub async fn run(
    args: &RunArgs,
    aws: &AwsClients,
    names: &ResourceNames,
    keyring: &Keyring,
) -> Result<Report, RunError> {
    args.validate()?;
    let prefix = format!("lt{}", &ulid::Ulid::new().to_string().to_lowercase()[20..]);
    let corpus = match &args.corpus {
        None => Vec::new(),
        Some(path) => crate::dictionary::read_values(path)
            .map_err(|e| RunError::Setting("--corpus", format!("{}: {e}", path.display())))?,
    };
    if args.corpus.is_some() && corpus.is_empty() {
        return Err(RunError::Setting("--corpus", "the file holds no payloads".into()));
    }
    let mut traffic = Traffic::new(&prefix, args.tenants, args.sites_per_tenant.max(1), args.skew, args.seed)
        .with_corpus(corpus.clone());
    let store = DataStore::new(aws.dynamodb.clone(), names.table.clone());
    let pop = setup(&store, keyring, &traffic, args.shards, args.receiver).await?;
    let seen: Arc<Mutex<Seen>> = Arc::default();
    let stop = CancellationToken::new();

    let listener = tokio::net::TcpListener::bind(args.receiver).await?;
    let rx = tokio::spawn(receiver(listener, pop.dest_secrets.clone(), seen.clone(), stop.clone()));
    // The run's own stream reader is an observer: its requests are not the pipeline's.
    let observer = AwsClients::observer(&formbridge_shared::aws::sdk_config().await);
    let streams = stream::DynamoStreams::for_table(&observer.dynamodb, observer.streams.clone(), &names.table).await?;
    let leases = stream::LeaseTable {
        client: observer.dynamodb.clone(),
        table: names.control_table.clone(),
        // One group per receiver port, kept across runs: a run starts where the last run on this
        // engine stopped reading, instead of re-reading the whole stream (which would both load
        // the engine and stamp this run's first records late). Two runs at once cannot share a
        // receiver port, so they never share the group.
        group: format!("loadtest-observer-{}", args.receiver.port()),
    };
    let mut consumer = stream::ConsumerConfig::new(&leases.group);
    consumer.idle_min = Duration::from_millis(50);
    consumer.idle_max = Duration::from_millis(200);
    consumer.take_every = Duration::from_millis(500);
    consumer.discover_every = Duration::from_secs(2);
    let ceiling_pk = format!("{}{prefix}#", crate::ceiling::PK_PREFIX);
    let tracker = Arc::new(Tracker { prefix: prefix.clone(), ceiling_pk, seen: seen.clone() });
    let track = tokio::spawn(stream::run(streams, leases, tracker, consumer, stream::Alarms::default(), stop.clone()));

    // A sample of the run's traffic, for the ceiling: the items the persister would store and
    // the messages ingest would send.
    let tenants = pop.tenants.clone();
    let measure_ceiling = || async {
        let mut sample = Traffic::new(&prefix, args.tenants, args.sites_per_tenant.max(1), args.skew, args.seed + 1)
            .with_corpus(corpus.clone());
        let codec = formbridge_shared::codec::PayloadCodec::default();
        let now = time::OffsetDateTime::now_utc();
        let (mut sizes, mut bodies) = (vec![], vec![]);
        for _ in 0..200 {
            let g = sample.next("2026-01-01T00:00:00Z");
            let Some(m) = queue_message(&g, &tenants[g.tenant], args.shards, now) else { continue };
            let body = serde_json::to_string(&m).expect("serialises");
            if let Ok(sub) = formbridge_shared::submission::Submission::from_message_body(&body) {
                sizes.push(formbridge_shared::capacity::item_size(&sub.to_item(&codec)));
            }
            bodies.push(body);
        }
        crate::ceiling::measure(aws, &names.table, &prefix, &sizes, &bodies, args.ceiling_s, args.ceiling_concurrency)
            .await
    };
    let mut ceiling = None;
    if let RateSpec::OfCeiling(_) = args.rate {
        eprintln!("measuring the engine's ceiling ({} s each)...", args.ceiling_s);
        let c = measure_ceiling().await?;
        // The stream's consumers read past the ceiling's items before the load begins.
        let until = Instant::now() + Duration::from_secs(120);
        while lock(&seen).ceiling_items_seen < c.items_written && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        ceiling = Some(c);
    }
    let schedule = match args.rate {
        RateSpec::Fixed(r) => Some(Schedule::fixed(r, Duration::from_secs(args.duration_s))),
        RateSpec::Ramp { from, to } => Some(Schedule { from, to, duration: Duration::from_secs(args.duration_s) }),
        RateSpec::OfCeiling(p) => {
            let r = p * ceiling.as_ref().map_or(0.0, |c| c.batch_write_items_per_s);
            if r <= 0.0 {
                return Err(RunError::Setting("--rate", format!("{} of a ceiling of 0", args.rate)));
            }
            Some(Schedule::fixed(r, Duration::from_secs(args.duration_s)))
        }
        RateSpec::Max => None,
    };

    let queue = Queue::open(aws.sqs.clone(), &names.ingest_queue, "loadtest")
        .await
        .map_err(|e| RunError::Setup(e.to_string()))?;
    let http = reqwest::Client::new();
    let before = read_counters(&http, &args.metrics_urls).await;
    let sender = Arc::new(Sender {
        target: args.target,
        queue,
        http: http.clone(),
        ingest_url: args.ingest_url.clone(),
        pop,
        shards: args.shards,
        seen: seen.clone(),
    });
    let slots = Arc::new(tokio::sync::Semaphore::new(args.concurrency));
    let mut tasks = tokio::task::JoinSet::new();
    let mut progress = Progress::new(args.count, args.quiet);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.duration_s);
    let mut dispatched = 0usize;
    let mut last_dispatch = Instant::now();
    while dispatched < args.count && Instant::now() < deadline {
        let want = match &schedule {
            Some(s) => (s.due(started.elapsed()).ceil() as usize).min(args.count),
            None => {
                // Closed loop: keep at most --max-backlog submissions between send and delivered,
                // so no stage of the pipeline builds up a backlog.
                let s = lock(&seen);
                let waiting = dispatched.saturating_sub(s.rejected as usize + s.delivered.len());
                (dispatched + args.max_backlog.saturating_sub(waiting)).min(args.count)
            }
        };
        // Straight onto the queue, the run stands in for ingest, so it batches as ingest does:
        // a full SendMessageBatch at once, a partial one after ingest's default linger.
        let batch_due = args.target == Target::Http
            || want >= dispatched + 10
            || want >= args.count
            || last_dispatch.elapsed() >= INGEST_LINGER;
        if want > dispatched && batch_due {
            last_dispatch = Instant::now();
            let permit = slots.clone().acquire_owned().await.expect("never closed");
            let now_s = time::OffsetDateTime::now_utc()
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default();
            let n = (want - dispatched).min(10);
            let batch: Vec<Generated> = (0..n).map(|_| traffic.next(&now_s)).collect();
            let sender = sender.clone();
            tasks.spawn(async move {
                sender.send(batch).await;
                drop(permit);
            });
            dispatched += n;
        } else {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        while tasks.try_join_next().is_some() {}
        progress.update("sending", &lock(&seen));
    }
    while tasks.join_next().await.is_some() {}
    let send_time = started.elapsed();

    // Settle: wait for every accepted submission to be persisted and delivered.
    let settle_until = Instant::now() + Duration::from_secs(args.settle_s);
    loop {
        let done = {
            let s = lock(&seen);
            progress.update("settling", &s);
            s.sent.keys().all(|id| s.persisted.contains_key(id) && s.delivered.contains_key(id))
        };
        if done || Instant::now() > settle_until {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A moment for late duplicates to show.
    tokio::time::sleep(Duration::from_secs(1)).await;
    progress.bar.finish_and_clear();
    let after = read_counters(&http, &args.metrics_urls).await;
    let cpu_s = after
        .cpu_s
        .iter()
        .map(|(k, v)| (k.clone(), (v - before.cpu_s.get(k).copied().unwrap_or(0.0)).max(0.0)))
        .collect();
    if ceiling.is_none() && args.ceiling_s > 0.0 {
        eprintln!("measuring the engine's ceiling ({} s each)...", args.ceiling_s);
        ceiling = Some(measure_ceiling().await?);
    }
    stop.cancel();
    let _ = rx.await;
    let _ = track.await;
    // Each tenant's shard history as it stands now: a hot tenant may have grown during the run.
    let mut shard_epochs = BTreeMap::new();
    for t in &sender.pop.tenants {
        match store.get_tenant(t).await {
            Ok(Some(p)) => {
                shard_epochs.insert(t.to_string(), p.shards.epochs().to_vec());
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(tenant = %t, error = %e, "cannot read the tenant's shard history"),
        }
    }

    let seen = std::mem::take(&mut *lock(&seen));
    let obs = Observations {
        target: match args.target {
            Target::Http => "http",
            Target::Queue => "queue",
        },
        tenants: traffic.tenants.iter().map(|t| t.id.clone()).collect(),
        rate: args.rate.to_string(),
        sent: dispatched,
        send_time,
        accepted: seen.sent.keys().cloned().collect(),
        seen,
        metered: diff(&after.requests, &before.requests),
        metered_in_process: args.metrics_urls.is_empty(),
        usage: diff(&after.usage, &before.usage),
        billed: diff(&after.billed, &before.billed),
        cpu_s,
        ceiling,
        shard_epochs,
    };
    let report = Report::from(&obs);
    std::fs::write(&args.report, serde_json::to_vec_pretty(&report).expect("serialises"))?;
    Ok(report)
}

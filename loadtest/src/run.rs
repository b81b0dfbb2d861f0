//! A load run: set up a generated population (tenants, sites, one destination each pointing at
//! the built-in receiver), send submissions through the signed HTTP endpoint or straight onto the
//! ingest queue at a fixed rate, watch them arrive in the table (a consumer group of our own on
//! the table's stream) and at the receiver, and report.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
use formbridge_shared::aws::{AwsClients, ResourceNames};
use formbridge_shared::destination::{DeliveryPolicy, DestinationKind, DestinationSpec};
use formbridge_shared::keys::Entity;
use formbridge_shared::secrets::Keyring;
use formbridge_shared::sharding::ShardHistory;
use formbridge_shared::store::DataStore;
use formbridge_shared::stream::{self, BatchProcessor, Change, ChangeKind, Committer, ProcessError};
use formbridge_shared::submission::QueueMessage;
use formbridge_shared::tenant::TenantProfile;
use formbridge_shared::{FormId, SiteDomain, SubmissionId, TenantId};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::gen::Traffic;
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
    /// Submissions per second.
    #[arg(long, default_value_t = 20.0)]
    pub rate: f64,
    /// Stop after this many submissions...
    #[arg(long, default_value_t = 200)]
    pub count: usize,
    /// ...or after this many seconds, whichever comes first.
    #[arg(long, default_value_t = 60)]
    pub duration_s: u64,
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
    /// Write the JSON report here.
    #[arg(long, default_value = "loadtest-report.json")]
    pub report: std::path::PathBuf,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
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
    pub raw_bytes: u64,
    pub stored_bytes: u64,
    pub stored_sizes: Vec<u64>,
}

/// Our own consumer group on the table's stream: notes when each submission was persisted.
struct Tracker {
    prefix: String,
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
            let (Entity::Submission { tenant, id, .. }, ChangeKind::Insert, Some(new)) = (&r.entity, r.kind, &r.new)
            else {
                continue;
            };
            if !tenant.as_str().starts_with(&self.prefix) {
                continue;
            }
            if seen.persisted.insert(id.to_string(), now).is_none() {
                let raw: u64 =
                    new.get("raw_size").and_then(|v| v.as_n().ok()).and_then(|v| v.parse().ok()).unwrap_or(0);
                let stored = formbridge_shared::capacity::item_size(new) as u64;
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

/// Runs a load test against the stack named by `names`; the processes (ingest for `--target
/// http`, persister, delivery) must be running.
pub async fn run(
    args: &RunArgs,
    aws: &AwsClients,
    names: &ResourceNames,
    keyring: &Keyring,
) -> Result<Report, RunError> {
    if !(args.rate > 0.0 && args.rate.is_finite()) {
        return Err(RunError::Setting("--rate", args.rate.to_string()));
    }
    if args.tenants == 0 || args.tenants > 999 {
        return Err(RunError::Setting("--tenants", args.tenants.to_string()));
    }
    let prefix = format!("lt{}", &ulid::Ulid::new().to_string().to_lowercase()[20..]);
    let mut traffic = Traffic::new(&prefix, args.tenants, args.sites_per_tenant.max(1), args.skew.max(0.0), args.seed);
    let store = DataStore::new(aws.dynamodb.clone(), names.table.clone());
    let pop = setup(&store, keyring, &traffic, args.shards, args.receiver).await?;
    let seen: Arc<Mutex<Seen>> = Arc::default();
    let stop = CancellationToken::new();

    let listener = tokio::net::TcpListener::bind(args.receiver).await?;
    let rx = tokio::spawn(receiver(listener, pop.dest_secrets.clone(), seen.clone(), stop.clone()));
    let streams = stream::DynamoStreams::for_table(&aws.dynamodb, aws.streams.clone(), &names.table).await?;
    let leases = stream::LeaseTable {
        client: aws.dynamodb.clone(),
        table: names.control_table.clone(),
        group: format!("loadtest-{prefix}"),
    };
    let mut consumer = stream::ConsumerConfig::new(&leases.group);
    consumer.idle_min = Duration::from_millis(50);
    consumer.idle_max = Duration::from_millis(200);
    consumer.take_every = Duration::from_millis(500);
    consumer.discover_every = Duration::from_secs(2);
    let tracker = Arc::new(Tracker { prefix: prefix.clone(), seen: seen.clone() });
    let track = tokio::spawn(stream::run(streams, leases, tracker, consumer, stream::Alarms::default(), stop.clone()));

    let queue_url = aws
        .sqs
        .get_queue_url()
        .queue_name(&names.ingest_queue)
        .send()
        .await
        .map_err(|e| RunError::Setup(aws_sdk_sqs::Error::from(e).to_string()))?
        .queue_url
        .unwrap_or_default();
    let http = reqwest::Client::new();
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.duration_s);
    let interval = Duration::from_secs_f64(1.0 / args.rate);
    let mut sent = 0usize;
    let mut accepted_ids: HashSet<String> = HashSet::new();
    let mut api_calls: HashMap<&'static str, u64> = HashMap::new();
    let mut progress = Instant::now();
    while sent < args.count && Instant::now() < deadline {
        // Everything due by now goes out together (up to 10 per SendMessageBatch).
        let due = ((started.elapsed().as_secs_f64() / interval.as_secs_f64()) as usize + 1).min(args.count) - sent;
        let n = due.clamp(1, 10);
        let now = time::OffsetDateTime::now_utc();
        let now_s = now.format(&time::format_description::well_known::Rfc3339).unwrap_or_default();
        let batch: Vec<_> = (0..n).map(|_| traffic.next(&now_s)).collect();
        match args.target {
            Target::Queue => {
                let mut entries = Vec::new();
                let mut ids = Vec::new();
                for (i, g) in batch.iter().enumerate() {
                    let Value::Object(payload) = g.payload.clone() else { continue };
                    let m = QueueMessage {
                        v: 1,
                        submission_id: SubmissionId::new(),
                        tenant_id: pop.tenants[g.tenant].clone(),
                        site: SiteDomain::parse(&g.site).expect("generated"),
                        form_id: FormId::parse(g.form.id()).expect("generated"),
                        received_at: now_s.clone(),
                        shard_count: args.shards,
                        expires_at: now.unix_timestamp() + 30 * 86_400,
                        payload,
                    };
                    ids.push(m.submission_id.to_string());
                    entries.push(
                        SendMessageBatchRequestEntry::builder()
                            .id(i.to_string())
                            .message_body(serde_json::to_string(&m).expect("serialises"))
                            .build()
                            .expect("set"),
                    );
                }
                let t = Instant::now();
                *api_calls.entry("sqs:SendMessageBatch").or_default() += 1;
                match aws.sqs.send_message_batch().queue_url(&queue_url).set_entries(Some(entries)).send().await {
                    Ok(out) => {
                        let failed: HashSet<String> = out.failed.iter().map(|f| f.id.clone()).collect();
                        let mut s = seen.lock().unwrap_or_else(|e| e.into_inner());
                        for (i, id) in ids.into_iter().enumerate() {
                            if !failed.contains(&i.to_string()) {
                                s.sent.insert(id.clone(), t);
                                accepted_ids.insert(id);
                            }
                        }
                    }
                    Err(e) => tracing::warn!(error = %aws_sdk_sqs::Error::from(e), "a batch was not accepted"),
                }
            }
            Target::Http => {
                let posts = batch.iter().map(|g| {
                    let site = g.site.clone();
                    let secret = pop.site_secrets[&site].clone();
                    let body = serde_json::to_vec(&serde_json::json!({
                        "site": site, "form_id": g.form.id(), "submitted_at": now_s, "fields": g.payload["fields"], "meta": g.payload["meta"],
                    }))
                    .expect("serialises");
                    let (http, url) = (http.clone(), format!("{}/v1/submissions", args.ingest_url));
                    async move {
                        let wid = format!("msg_{}", ulid::Ulid::new());
                        let ts = time::OffsetDateTime::now_utc().unix_timestamp();
                        let sig = standardwebhooks::Webhook::new(&secret).and_then(|w| w.sign(&wid, ts, &body)).ok()?;
                        let t = Instant::now();
                        let r = http
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
                            return None;
                        }
                        let v: Value = r.json().await.ok()?;
                        Some((v["submission_id"].as_str()?.to_owned(), t))
                    }
                });
                *api_calls.entry("http:POST /v1/submissions").or_default() += n as u64;
                for (id, t) in futures::future::join_all(posts).await.into_iter().flatten() {
                    seen.lock().unwrap_or_else(|e| e.into_inner()).sent.insert(id.clone(), t);
                    accepted_ids.insert(id);
                }
            }
        }
        sent += n;
        if progress.elapsed() > Duration::from_secs(5) {
            progress = Instant::now();
            let s = seen.lock().unwrap_or_else(|e| e.into_inner());
            eprintln!(
                "[{:>5.1} s] sent {sent}/{}  persisted {}  delivered {}",
                started.elapsed().as_secs_f64(),
                args.count,
                s.persisted.len(),
                s.delivered.len()
            );
        }
        let next = started + interval.mul_f64(sent as f64);
        tokio::time::sleep_until(next.into()).await;
    }
    let send_time = started.elapsed();

    // Settle: wait for every accepted submission to be persisted and delivered.
    let settle_until = Instant::now() + Duration::from_secs(args.settle_s);
    loop {
        let done = {
            let s = seen.lock().unwrap_or_else(|e| e.into_inner());
            accepted_ids.iter().all(|id| s.persisted.contains_key(id) && s.delivered.contains_key(id))
        };
        if done || Instant::now() > settle_until {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A moment for late duplicates to show.
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.cancel();
    let _ = rx.await;
    let _ = track.await;

    let seen = std::mem::take(&mut *seen.lock().unwrap_or_else(|e| e.into_inner()));
    let obs = Observations {
        target: match args.target {
            Target::Http => "http",
            Target::Queue => "queue",
        },
        rate: args.rate,
        sent,
        send_time,
        accepted: accepted_ids,
        seen,
        api_calls: api_calls.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
    };
    let report = Report::from(&obs);
    std::fs::write(&args.report, serde_json::to_vec_pretty(&report).expect("serialises"))?;
    Ok(report)
}

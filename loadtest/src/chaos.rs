//! `formbridge-loadtest chaos`: the whole pipeline, two instances of every process, on an engine
//! of its own, while faults are injected at seeded random times; then it checks that nothing was
//! lost or counted twice and reports how long the pipeline took to converge after the last fault.
//!
//! Faults:
//! - **kill**: SIGKILL one process (ingest, persister, aggregator or delivery, either instance)
//!   and start it again a moment later;
//! - **engine-stop**: SIGSTOP the engine for `--outage-s`, then SIGCONT (a hung engine);
//! - **engine-down**: the loopback proxy every process reaches the engine through refuses
//!   connections and cuts the open ones for `--outage-s` (an engine that is down);
//! - **destination**: one destination hangs, answers 500, 410, 429 with `Retry-After`, refuses
//!   connections, or flaps between 500 and success, for `--outage-s` to twice that. After a 410
//!   the delivery worker disables the destination (as documented); the run then does what its
//!   operator would: enables it again and replays what was parked.
//!
//! Senders behave like the WordPress plugin behind a load balancer: a refused connection, a 5xx
//! or a 429 is retried with the same `webhook-id` (on the other ingest instance), after the
//! answer's `Retry-After` if it gave one.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use formbridge_shared::aws::{AwsClients, ResourceNames};
use formbridge_shared::buckets::Granularity;
use formbridge_shared::destination::{DeliveryPolicy, DestinationKind, DestinationSpec};
use formbridge_shared::secrets::{Keyring, KeyringArgs};
use formbridge_shared::sharding::ShardHistory;
use formbridge_shared::store::DataStore;
use formbridge_shared::tenant::TenantProfile;
use formbridge_shared::{DestinationId, SiteDomain, TenantId};
use rand::{Rng, SeedableRng};
use serde::Serialize;
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

use crate::gen::Traffic;

#[derive(Debug, Clone, clap::Args)]
pub struct ChaosArgs {
    /// Submissions to send (signed HTTP, through the two ingest instances).
    #[arg(long, default_value_t = 5000)]
    pub count: usize,
    /// Submissions per second.
    #[arg(long, default_value_t = 20.0)]
    pub rate: f64,
    /// Faults to inject, at random times while sending.
    #[arg(long, default_value_t = 30)]
    pub faults: usize,
    /// Seed of every random choice (fault times, kinds, targets; the traffic).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// How long an engine outage or a destination's misbehaviour lasts, seconds.
    #[arg(long, default_value_t = 10)]
    pub outage_s: u64,
    /// Fault kinds to choose from (comma-separated): kill, engine-stop, engine-down, destination.
    #[arg(long, value_delimiter = ',', default_value = "kill,engine-stop,engine-down,destination")]
    pub kinds: Vec<FaultKind>,
    #[arg(long, default_value_t = 4)]
    pub tenants: usize,
    /// Where the process binaries are (default: beside this one).
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
    /// The engine to start (moto server), its own for this run.
    #[arg(long, env = "FORMBRIDGE_MOTO_SERVER", default_value = ".venv/bin/moto_server")]
    pub moto_server: PathBuf,
    /// Logs of every process, the engine's and the fault log go here.
    #[arg(long, default_value = "target/chaos")]
    pub workdir: PathBuf,
    /// The longest wait for convergence after the last fault, seconds.
    #[arg(long, default_value_t = 900)]
    pub settle_s: u64,
    /// Write the JSON report here.
    #[arg(long, default_value = "chaos-report.json")]
    pub report: PathBuf,
    /// Extra environment for every process (repeatable, `NAME=value`), e.g. a shorter
    /// `STREAM_FAILOVER_MS` to compare convergence.
    #[arg(long = "env", value_parser = parse_env)]
    pub env: Vec<(String, String)>,
}

fn parse_env(s: &str) -> Result<(String, String), String> {
    let (k, v) = s.split_once('=').ok_or_else(|| format!("{s:?} is not NAME=value"))?;
    if k.is_empty() || !k.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_') {
        return Err(format!("{k:?} is not an environment variable name"));
    }
    Ok((k.to_owned(), v.to_owned()))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    Kill,
    EngineStop,
    EngineDown,
    Destination,
}

#[derive(Debug, thiserror::Error)]
pub enum ChaosError {
    #[error("invalid setting {0}: {1}")]
    Setting(&'static str, String),
    #[error("setup: {0}")]
    Setup(String),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

impl ChaosArgs {
    fn validate(&self) -> Result<(), ChaosError> {
        let bad = |k, v: String| Err(ChaosError::Setting(k, v));
        if self.count == 0 {
            return bad("--count", "0 (at least 1)".into());
        }
        if !(self.rate > 0.0 && self.rate <= 1000.0) {
            return bad("--rate", format!("{} (above 0, at most 1000)", self.rate));
        }
        if self.tenants == 0 || self.tenants > 50 {
            return bad("--tenants", format!("{} (1 to 50)", self.tenants));
        }
        if self.kinds.is_empty() && self.faults > 0 {
            return bad("--kinds", "empty while --faults > 0".into());
        }
        if self.outage_s == 0 || self.outage_s > 300 {
            return bad("--outage-s", format!("{} (1 to 300)", self.outage_s));
        }
        if !self.moto_server.exists() {
            return bad("--moto-server", format!("{} does not exist", self.moto_server.display()));
        }
        Ok(())
    }
}

// ---- the engine and its proxy ---------------------------------------------------------------

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A listener on a fixed loopback port that can be closed (connections refused) and opened again.
struct Switchable {
    port: u16,
    listener: Option<TcpListener>,
}

impl Switchable {
    /// The next connection while `up()` holds; `None` once `stop` is cancelled. While `up()` does
    /// not hold, the port is closed; `on_close` runs each time it closes.
    async fn accept(
        &mut self,
        up: impl Fn() -> bool,
        mut on_close: impl FnMut(),
        stop: &CancellationToken,
    ) -> Option<TcpStream> {
        loop {
            if stop.is_cancelled() {
                return None;
            }
            if !up() {
                if self.listener.take().is_some() {
                    on_close();
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
            if self.listener.is_none() {
                match TcpListener::bind(("127.0.0.1", self.port)).await {
                    Ok(l) => self.listener = Some(l),
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                }
            }
            let Some(l) = &self.listener else { continue };
            tokio::select! {
                a = l.accept() => if let Ok((stream, _)) = a { return Some(stream) },
                () = tokio::time::sleep(Duration::from_millis(50)) => {}
                () = stop.cancelled() => return None,
            }
        }
    }
}

/// A loopback TCP proxy in front of the engine. Down, it refuses new connections (its listener
/// is closed) and cuts the open ones.
struct Proxy {
    port: u16,
    down: AtomicBool,
    /// Bumped when going down: connections of an older generation end.
    generation: AtomicU64,
}

impl Proxy {
    async fn start(target: SocketAddr, stop: CancellationToken) -> std::io::Result<Arc<Proxy>> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let proxy = Arc::new(Proxy { port: listener.local_addr()?.port(), down: false.into(), generation: 0.into() });
        let p = proxy.clone();
        tokio::spawn(async move {
            let mut listener = Switchable { port: p.port, listener: Some(listener) };
            while let Some(mut inbound) = listener.accept(|| !p.down.load(Ordering::SeqCst), || {}, &stop).await {
                let generation = p.generation.load(Ordering::SeqCst);
                let p2 = p.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(target).await else { return };
                    let cut = async {
                        while p2.generation.load(Ordering::SeqCst) == generation {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        () = cut => {}
                    }
                });
            }
        });
        Ok(proxy)
    }

    fn set_down(&self, down: bool) {
        if down {
            self.generation.fetch_add(1, Ordering::SeqCst);
        }
        self.down.store(down, Ordering::SeqCst);
    }
}

async fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill").arg(format!("-{sig}")).arg(pid.to_string()).status().await;
}

// ---- the receiver -----------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DestState {
    Ok,
    Hang,
    Error500,
    Gone410,
    Throttle429,
    Refuse,
    Flap,
}

const MISBEHAVIOURS: [DestState; 6] = [
    DestState::Hang,
    DestState::Error500,
    DestState::Gone410,
    DestState::Throttle429,
    DestState::Refuse,
    DestState::Flap,
];

#[derive(Debug, Default)]
struct Received {
    /// webhook-id → deliveries carrying it.
    webhook_ids: HashMap<String, u64>,
    /// submission id → the webhook-ids it came with.
    by_submission: HashMap<String, HashSet<String>>,
    unverified: u64,
    answered: BTreeMap<String, u64>,
}

/// One destination's listener: answers by its state, verifies and records what it accepts.
struct Receiver {
    port: u16,
    state: Mutex<DestState>,
    flip: AtomicBool,
    hook: standardwebhooks::Webhook,
    received: Arc<Mutex<Received>>,
}

impl Receiver {
    async fn start(
        secret: &str,
        received: Arc<Mutex<Received>>,
        stop: CancellationToken,
    ) -> Result<Arc<Receiver>, ChaosError> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let r = Arc::new(Receiver {
            port: listener.local_addr()?.port(),
            state: Mutex::new(DestState::Ok),
            flip: false.into(),
            hook: standardwebhooks::Webhook::new(secret).map_err(|e| ChaosError::Setup(e.to_string()))?,
            received,
        });
        let me = r.clone();
        tokio::spawn(async move {
            let mut listener = Switchable { port: me.port, listener: Some(listener) };
            let mut served = tokio::task::JoinSet::new();
            loop {
                let up = || me.state() != DestState::Refuse;
                let Some(stream) = listener.accept(up, || served.abort_all(), &stop).await else { return };
                let me2 = me.clone();
                served.spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let me3 = me2.clone();
                        async move { Ok::<_, std::convert::Infallible>(me3.answer(req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                        .await;
                });
                while served.try_join_next().is_some() {}
            }
        });
        Ok(r)
    }

    fn state(&self) -> DestState {
        *self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set(&self, s: DestState) {
        *self.state.lock().unwrap_or_else(|e| e.into_inner()) = s;
    }

    async fn answer(&self, req: hyper::Request<hyper::body::Incoming>) -> hyper::Response<String> {
        use http_body_util::BodyExt;
        let (parts, body) = req.into_parts();
        let Ok(body) = body.collect().await.map(|b| b.to_bytes()) else {
            return respond(400, "");
        };
        let state = match self.state() {
            DestState::Flap => {
                if self.flip.fetch_xor(true, Ordering::SeqCst) {
                    DestState::Error500
                } else {
                    DestState::Ok
                }
            }
            s => s,
        };
        let note = |what: &str| {
            *self.received.lock().unwrap_or_else(|e| e.into_inner()).answered.entry(what.to_owned()).or_default() += 1;
        };
        match state {
            DestState::Hang => {
                note("hung");
                // Until the delivery worker gives up (its timeout) and drops the connection.
                tokio::time::sleep(Duration::from_secs(3600)).await;
                respond(504, "")
            }
            DestState::Error500 => {
                note("500");
                respond(500, "chaos")
            }
            DestState::Gone410 => {
                note("410");
                respond(410, "gone")
            }
            DestState::Throttle429 => {
                note("429");
                let mut r = respond(429, "slow down");
                r.headers_mut().insert("retry-after", hyper::header::HeaderValue::from_static("3"));
                r
            }
            DestState::Ok | DestState::Refuse | DestState::Flap => {
                let mut headers = axum::http::HeaderMap::new();
                for (k, v) in &parts.headers {
                    headers.insert(k.clone(), v.clone());
                }
                let mut rec = self.received.lock().unwrap_or_else(|e| e.into_inner());
                if self.hook.verify(&body, &headers).is_err() {
                    rec.unverified += 1;
                    return respond(401, "");
                }
                let wid = headers.get("webhook-id").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
                *rec.webhook_ids.entry(wid.clone()).or_default() += 1;
                let v: Value = serde_json::from_slice(&body).unwrap_or_default();
                if let Some(id) = v["data"]["submission_id"].as_str() {
                    rec.by_submission.entry(id.to_owned()).or_default().insert(wid);
                }
                *rec.answered.entry("204".into()).or_default() += 1;
                respond(204, "")
            }
        }
    }
}

fn respond(status: u16, body: &str) -> hyper::Response<String> {
    let mut r = hyper::Response::new(body.to_owned());
    *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    r
}

// ---- the processes ----------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
enum Stage {
    Ingest,
    Persister,
    Aggregator,
    Delivery,
}

impl Stage {
    fn binary(self) -> &'static str {
        match self {
            Stage::Ingest => "formbridge-ingest",
            Stage::Persister => "formbridge-persister",
            Stage::Aggregator => "formbridge-aggregator",
            Stage::Delivery => "formbridge-delivery",
        }
    }
}

struct Process {
    stage: Stage,
    instance: usize,
    env: Vec<(String, String)>,
    child: Option<Child>,
    log: PathBuf,
    restarts: u32,
}

impl Process {
    fn name(&self) -> String {
        format!("{:?}-{}", self.stage, self.instance).to_lowercase()
    }

    fn spawn(&mut self, bin_dir: &Path) -> std::io::Result<()> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log)?;
        let child = Command::new(bin_dir.join(self.stage.binary()))
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()?;
        self.child = Some(child);
        Ok(())
    }

    async fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.start_kill();
            let _ = c.wait().await;
        }
    }

    /// Asks the process to stop (SIGTERM) and waits for it.
    async fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            if let Some(pid) = c.id() {
                signal(pid, "TERM").await;
            }
            if tokio::time::timeout(Duration::from_secs(20), c.wait()).await.is_err() {
                let _ = c.start_kill();
                let _ = c.wait().await;
            }
        }
    }
}

// ---- the senders ------------------------------------------------------------------------------

#[derive(Debug, Default)]
struct Sent {
    /// submission id → when its first 2xx came.
    accepted: HashMap<String, Instant>,
    /// Logical submissions given up on (a 4xx other than 429, or out of attempts).
    given_up: u64,
    /// Answers by `status code` (`refused` for a connection that failed), with `+retry-after`.
    answers: BTreeMap<String, u64>,
}

/// How often the run's timeline is sampled.
const TIMELINE_EVERY: Duration = Duration::from_secs(5);

async fn queue_url(sqs: &aws_sdk_sqs::Client, name: &str) -> Option<String> {
    let r = tokio::time::timeout(Duration::from_secs(3), sqs.get_queue_url().queue_name(name).send()).await;
    r.ok()?.ok()?.queue_url
}

/// A queue's messages waiting and in flight; `None` when the engine does not answer in time
/// (it may be stopped: that is one of the faults).
async fn queue_counts(sqs: &aws_sdk_sqs::Client, url: &str) -> (Option<u64>, Option<u64>) {
    use aws_sdk_sqs::types::QueueAttributeName as A;
    let ask = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(A::ApproximateNumberOfMessages)
        .attribute_names(A::ApproximateNumberOfMessagesNotVisible)
        .send();
    let Ok(Ok(out)) = tokio::time::timeout(Duration::from_secs(3), ask).await else { return (None, None) };
    let get = |a: A| out.attributes().and_then(|m| m.get(&a)).and_then(|v| v.parse().ok());
    (get(A::ApproximateNumberOfMessages), get(A::ApproximateNumberOfMessagesNotVisible))
}

/// How long a sender waits for ingest's answer.
const SENDER_TIMEOUT: Duration = Duration::from_secs(15);

/// One logical submission: what a sender posts, and retries as it is.
struct Post {
    secret: String,
    body: Vec<u8>,
    webhook_id: String,
}

async fn send_one(
    http: &reqwest::Client,
    ingest: &[u16],
    first: usize,
    post: Post,
    sent: &Mutex<Sent>,
    deadline: Instant,
) {
    let Post { secret, body, webhook_id: wid } = post;
    let mut attempt = 0usize;
    loop {
        let port = ingest[(first + attempt) % ingest.len()];
        attempt += 1;
        let ts = time::OffsetDateTime::now_utc().unix_timestamp();
        let Ok(sig) = standardwebhooks::Webhook::new(&secret).and_then(|w| w.sign(&wid, ts, &body)) else { return };
        let r = http
            .post(format!("http://127.0.0.1:{port}/v1/submissions"))
            .header("content-type", "application/json")
            .header("webhook-id", &wid)
            .header("webhook-timestamp", ts.to_string())
            .header("webhook-signature", sig)
            .body(body.clone())
            // Ingest bounds every request it makes (8 s at most): an answer slower than this is a
            // hang, reported as `timeout`.
            .timeout(SENDER_TIMEOUT)
            .send()
            .await;
        let (label, wait) = match r {
            Err(e) => (if e.is_timeout() { "timeout".to_owned() } else { "refused".to_owned() }, 1),
            Ok(resp) => {
                let status = resp.status().as_u16();
                let retry_after =
                    resp.headers().get("retry-after").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
                let label = format!("{status}{}", if retry_after.is_some() { "+retry-after" } else { "" });
                if (200..300).contains(&status) {
                    let v: Value = resp.json().await.unwrap_or_default();
                    let mut s = sent.lock().unwrap_or_else(|e| e.into_inner());
                    *s.answers.entry(label).or_default() += 1;
                    if let Some(id) = v["submission_id"].as_str() {
                        s.accepted.entry(id.to_owned()).or_insert_with(Instant::now);
                    }
                    return;
                }
                if status != 429 && (400..500).contains(&status) {
                    let mut s = sent.lock().unwrap_or_else(|e| e.into_inner());
                    *s.answers.entry(label).or_default() += 1;
                    s.given_up += 1;
                    tracing::warn!(status, "a submission was refused");
                    return;
                }
                (label, retry_after.unwrap_or(1).min(30))
            }
        };
        *sent.lock().unwrap_or_else(|e| e.into_inner()).answers.entry(label).or_default() += 1;
        if Instant::now() > deadline {
            sent.lock().unwrap_or_else(|e| e.into_inner()).given_up += 1;
            return;
        }
        tokio::time::sleep(Duration::from_secs(wait)).await;
    }
}

// ---- the report ---------------------------------------------------------------------------------

#[derive(Debug, Clone, Serialize)]
pub struct FaultRecord {
    pub at_s: f64,
    pub kind: FaultKind,
    pub target: String,
    pub detail: String,
    pub lasted_s: f64,
}

/// Where the work was at one moment of the run: what was sent, queued and delivered. A run's
/// timeline shows where a backlog sits and how fast it drains once the faults stop.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    pub at_s: f64,
    /// Logical submissions whose sender is still waiting or retrying.
    pub senders_waiting: usize,
    /// Logical submissions answered 2xx so far.
    pub accepted: usize,
    /// Submissions delivered at least once so far.
    pub delivered: usize,
    pub duplicate_deliveries: u64,
    /// The ingest queue: messages waiting, and received but not yet deleted (in flight).
    pub ingest_waiting: Option<u64>,
    pub ingest_in_flight: Option<u64>,
    /// The delivery queue, likewise (due later with `DelaySeconds` counts as neither).
    pub delivery_waiting: Option<u64>,
    pub delivery_in_flight: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ChaosReport {
    pub seed: u64,
    pub sent: usize,
    pub accepted: usize,
    pub stored: usize,
    pub delivered: usize,
    /// Accepted (answered 2xx) but not stored at the end: must be 0.
    pub lost: usize,
    /// Stored but never delivered at the end: must be 0.
    pub undelivered: usize,
    /// Up to 20 of them, each with its deliveries' status, record and attempts, and the
    /// stream's records naming it.
    pub undelivered_detail: Vec<serde_json::Value>,
    /// Records in the table's stream at the end, and how many of them had a sequence number not
    /// above the one before (0 on DynamoDB; see `deploy/local/formbridge_moto_patches.py`).
    pub stream_records: usize,
    pub stream_out_of_order: usize,
    pub given_up_by_senders: u64,
    /// Deliveries beyond the first of a submission, each with the same webhook-id.
    pub duplicate_deliveries: u64,
    /// Submissions delivered under more than one webhook-id: must be 0.
    pub submissions_with_two_ids: usize,
    /// Stored though no sender was answered 2xx for it (an attempt queued just before its
    /// answer was lost, then given up on): allowed, and counted.
    pub stored_without_2xx: usize,
    pub unverified_deliveries: u64,
    /// Per tenant: (stored submissions, submissions in its daily metric items).
    pub metrics_vs_stored: BTreeMap<String, (u64, u64)>,
    pub metrics_exact: bool,
    /// What senders were answered, by status (`+retry-after` when the answer carried one).
    pub answers: BTreeMap<String, u64>,
    /// What the destinations answered.
    pub destination_answers: BTreeMap<String, u64>,
    pub faults: Vec<FaultRecord>,
    pub faults_by_kind: BTreeMap<String, usize>,
    pub restarts: BTreeMap<String, u32>,
    pub send_s: f64,
    pub last_fault_end_s: f64,
    /// From the later of the last fault's end and the last send to everything stored,
    /// delivered and counted.
    pub convergence_s: Option<f64>,
    /// Which of stored / delivered / counted came last, and the settings that bound it.
    pub converged_last: String,
    pub bounds: BTreeMap<String, String>,
    /// Every `TIMELINE_EVERY` from the start until convergence.
    pub timeline: Vec<Sample>,
    pub ok: bool,
}

impl ChaosReport {
    pub fn table(&self) -> String {
        let mut t = String::new();
        let mut line = |k: &str, v: String| t.push_str(&format!("  {k:<38} {v}\n"));
        line("sent / accepted (2xx)", format!("{} / {}", self.sent, self.accepted));
        line("stored / delivered", format!("{} / {}", self.stored, self.delivered));
        line("LOST (accepted, not stored)", self.lost.to_string());
        line("undelivered (stored, not delivered)", self.undelivered.to_string());
        line("given up by senders", self.given_up_by_senders.to_string());
        line("duplicate deliveries (same id)", self.duplicate_deliveries.to_string());
        line("submissions under two webhook-ids", self.submissions_with_two_ids.to_string());
        line("stored without a 2xx answer", self.stored_without_2xx.to_string());
        line("metrics equal to stored, per tenant", format!("{}", self.metrics_exact));
        line(
            "stream records out of order",
            format!("{} of {} (the engine's numbering)", self.stream_out_of_order, self.stream_records),
        );
        for (k, (s, m)) in &self.metrics_vs_stored {
            line(&format!("  {k}"), format!("stored {s}, counted {m}"));
        }
        line(
            "answers to senders",
            self.answers.iter().map(|(k, v)| format!("{k}: {v}")).collect::<Vec<_>>().join(", "),
        );
        line(
            "destination answers",
            self.destination_answers.iter().map(|(k, v)| format!("{k}: {v}")).collect::<Vec<_>>().join(", "),
        );
        line(
            "faults",
            format!(
                "{} ({})",
                self.faults.len(),
                self.faults_by_kind.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", ")
            ),
        );
        line("sending took", format!("{:.0} s (the last fault ended at {:.0} s)", self.send_s, self.last_fault_end_s));
        line(
            "convergence after faults and sends",
            self.convergence_s.map_or("did not converge".into(), |s| format!("{s:.1} s ({})", self.converged_last)),
        );
        for (k, v) in &self.bounds {
            line(&format!("  bound: {k}"), v.clone());
        }
        if !self.timeline.is_empty() {
            t.push_str("  timeline      s  waiting accepted delivered  dup  ingest q/flight  delivery q/flight\n");
            let q = |v: Option<u64>| v.map_or("-".to_owned(), |v| v.to_string());
            // At most about 40 lines: every n-th sample, and always the last.
            let every = self.timeline.len().div_ceil(40).max(1);
            for (i, x) in self.timeline.iter().enumerate() {
                if i % every == 0 || i + 1 == self.timeline.len() {
                    t.push_str(&format!(
                        "  {:>14.0} {:>8} {:>8} {:>9} {:>4} {:>8}/{:<7} {:>8}/{:<7}\n",
                        x.at_s,
                        x.senders_waiting,
                        x.accepted,
                        x.delivered,
                        x.duplicate_deliveries,
                        q(x.ingest_waiting),
                        q(x.ingest_in_flight),
                        q(x.delivery_waiting),
                        q(x.delivery_in_flight)
                    ));
                }
            }
        }
        let mut line = |k: &str, v: String| t.push_str(&format!("  {k:<38} {v}\n"));
        line("verdict", if self.ok { "OK: nothing lost, metrics exact".into() } else { "FAILED".into() });
        t
    }
}

// ---- the run ------------------------------------------------------------------------------------

struct Population {
    tenants: Vec<TenantId>,
    site_secrets: HashMap<String, String>,
    destinations: Vec<(TenantId, DestinationId, Arc<Receiver>)>,
}

async fn setup(
    store: &DataStore,
    keyring: &Keyring,
    traffic: &Traffic,
    received: &Arc<Mutex<Received>>,
    stop: &CancellationToken,
) -> Result<Population, ChaosError> {
    let err = |e: String| ChaosError::Setup(e);
    let now = time::OffsetDateTime::now_utc();
    let mut pop = Population { tenants: vec![], site_secrets: HashMap::new(), destinations: vec![] };
    for plan in &traffic.tenants {
        let tenant = TenantId::parse(&plan.id).map_err(|e| err(e.to_string()))?;
        store
            .create_tenant(&TenantProfile {
                tenant_id: tenant.clone(),
                name: plan.id.clone(),
                created_at: now.format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
                retention_days: 30,
                form_retention: Default::default(),
                shards: ShardHistory::new(2, 0).map_err(|e| err(e.to_string()))?,
            })
            .await
            .map_err(|e| err(e.to_string()))?;
        let domains: Vec<SiteDomain> = plan.sites.iter().map(|s| SiteDomain::parse(s).expect("generated")).collect();
        for (d, secret) in store.add_sites(&tenant, &domains, keyring, now).await.map_err(|e| err(e.to_string()))? {
            pop.site_secrets.insert(d.to_string(), secret.expose().to_owned());
        }
        // The receiver's port is known only once it listens, and its secret only once the
        // destination exists: a placeholder port first, then the real one.
        let port = free_port()?;
        let spec = DestinationSpec {
            name: "chaos receiver".into(),
            url: format!("http://127.0.0.1:{port}/hook"),
            kind: DestinationKind::Webhook,
            forms: vec![],
            timeout_ms: 5_000,
            auth: None,
            // About 10 minutes of retries: longer than any fault here.
            policy: DeliveryPolicy {
                retry_schedule: vec![1, 2, 5, 10, 20, 30, 60, 60, 120, 120, 180],
                ..DeliveryPolicy::default()
            },
        };
        let created = store
            .create_destinations(std::slice::from_ref(&tenant), &spec, keyring, now)
            .await
            .map_err(|e| err(e.to_string()))?;
        let Some((dest, secret)) = created.into_iter().next() else { return Err(err("no destination".into())) };
        let r = Receiver::start(secret.expose(), received.clone(), stop.clone()).await?;
        store
            .update_destination(&tenant, &dest.id, keyring, now, "destination.updated", |d, _| {
                d.url = format!("http://127.0.0.1:{}/hook", r.port);
            })
            .await
            .map_err(|e| err(e.to_string()))?;
        pop.destinations.push((tenant.clone(), dest.id, r));
        pop.tenants.push(tenant);
    }
    Ok(pop)
}

/// A fault kind at random: kills most often, then destinations, then the engine's outages.
fn weighted(kinds: &[FaultKind], rng: &mut impl Rng) -> FaultKind {
    let weight = |k: &FaultKind| match k {
        FaultKind::Kill => 5,
        FaultKind::Destination => 3,
        FaultKind::EngineStop | FaultKind::EngineDown => 1,
    };
    let total: u32 = kinds.iter().map(weight).sum();
    let mut pick = rng.random_range(0..total.max(1));
    for k in kinds {
        if pick < weight(k) {
            return *k;
        }
        pick -= weight(k);
    }
    kinds[0]
}

/// Runs the chaos test; the engine and every process are its own and stopped at the end.
pub async fn chaos(args: &ChaosArgs) -> Result<ChaosReport, ChaosError> {
    args.validate()?;
    let bin_dir = match &args.bin_dir {
        Some(d) => d.clone(),
        None => std::env::current_exe()?.parent().map(Path::to_path_buf).unwrap_or_default(),
    };
    for stage in [Stage::Ingest, Stage::Persister, Stage::Aggregator, Stage::Delivery] {
        if !bin_dir.join(stage.binary()).exists() {
            return Err(ChaosError::Setting(
                "--bin-dir",
                format!("{} has no {} (cargo build --workspace --bins)", bin_dir.display(), stage.binary()),
            ));
        }
    }
    std::fs::create_dir_all(&args.workdir)?;
    let workdir = args.workdir.canonicalize()?;
    let stop = CancellationToken::new();
    let mut rng = rand::rngs::StdRng::seed_from_u64(args.seed);

    // The engine, its own, and the proxy every process reaches it through.
    let engine_port = free_port()?;
    let mut engine = Command::new(&args.moto_server)
        .args(["-H", "127.0.0.1", "-p", &engine_port.to_string()])
        .stdout(std::fs::File::create(workdir.join("engine.log"))?)
        .stderr(std::fs::File::create(workdir.join("engine.err"))?)
        .kill_on_drop(true)
        .spawn()?;
    let engine_pid = engine.id().ok_or_else(|| ChaosError::Setup("the engine exited at once".into()))?;
    let engine_url = format!("http://127.0.0.1:{engine_port}");
    let http = reqwest::Client::new();
    let started = Instant::now();
    while http.get(format!("{engine_url}/moto-api/")).send().await.is_err() {
        if started.elapsed() > Duration::from_secs(30) {
            return Err(ChaosError::Setup(format!("the engine did not answer on {engine_url}")));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let proxy = Proxy::start(SocketAddr::from(([127, 0, 0, 1], engine_port)), stop.clone()).await?;

    // Our own clients talk to the engine directly: what we check is not what we break.
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(&engine_url)
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new("testing", "testing", None, None, "chaos"))
        .load()
        .await;
    let aws = AwsClients::observer(&config);
    let names = ResourceNames::default();
    formbridge_shared::bootstrap::bootstrap(&aws, &names).await.map_err(|e| ChaosError::Setup(e.to_string()))?;
    let keys_file = workdir.join("master.keys");
    {
        use base64::Engine;
        let key: [u8; 32] = rng.random();
        std::fs::write(&keys_file, format!("chaos1:{}", base64::engine::general_purpose::STANDARD.encode(key)))?;
    }
    let keyring = KeyringArgs { master_keys: None, master_keys_file: Some(keys_file.clone()) }
        .load()
        .map_err(|e| ChaosError::Setup(e.to_string()))?;
    let store = DataStore::new(aws.dynamodb.clone(), names.table.clone());
    let mut traffic = Traffic::new("chaos", args.tenants, 1, 0.5, args.seed);
    let received: Arc<Mutex<Received>> = Arc::default();
    let pop = setup(&store, &keyring, &traffic, &received, &stop).await?;

    // Two instances of every process.
    let common: Vec<(String, String)> = [
        ("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{}", proxy.port)),
        ("AWS_REGION", "us-east-1".into()),
        ("AWS_ACCESS_KEY_ID", "testing".into()),
        ("AWS_SECRET_ACCESS_KEY", "testing".into()),
        ("FORMBRIDGE_MASTER_KEYS_FILE", keys_file.display().to_string()),
        ("DELIVERY_ALLOW_LOOPBACK", "true".into()),
        ("INGEST_INSTANCES", "2".into()),
        ("INGEST_TENANT_RATE", "1000".into()),
        ("INGEST_TENANT_BURST", "2000".into()),
        ("RUST_LOG", "warn".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .chain(args.env.iter().cloned())
    .collect();
    let mut procs = Vec::new();
    let mut ingest_ports = Vec::new();
    for stage in [Stage::Persister, Stage::Aggregator, Stage::Delivery, Stage::Ingest] {
        for instance in 0..2 {
            let mut env = common.clone();
            if stage == Stage::Ingest {
                let port = free_port()?;
                ingest_ports.push(port);
                env.push(("INGEST_LISTEN".into(), format!("127.0.0.1:{port}")));
            }
            let mut p = Process {
                stage,
                instance,
                env,
                child: None,
                log: workdir.join(format!("{stage:?}-{instance}.log").to_lowercase()),
                restarts: 0,
            };
            let _ = std::fs::remove_file(&p.log);
            p.spawn(&bin_dir)?;
            procs.push(p);
        }
    }
    for port in &ingest_ports {
        let until = Instant::now() + Duration::from_secs(60);
        while http.get(format!("http://127.0.0.1:{port}/healthz")).send().await.is_err() {
            if Instant::now() > until {
                return Err(ChaosError::Setup(format!("ingest on port {port} did not start")));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    // The schedule: fault times spread over the sending time, kinds and targets at random.
    let send_s = args.count as f64 / args.rate;
    let mut times: Vec<f64> =
        (0..args.faults).map(|_| rng.random_range(2.0..(send_s - 2.0).max(3.0))).collect::<Vec<_>>();
    times.sort_by(f64::total_cmp);
    // Every kind at least once (in a random order), then at random; destinations misbehave in
    // each way in turn.
    let mut kinds: Vec<FaultKind> = args.kinds.clone();
    for i in (1..kinds.len()).rev() {
        kinds.swap(i, rng.random_range(0..=i));
    }
    let mut destination_faults = 0;
    let plan: Vec<(f64, FaultKind, usize, DestState)> = times
        .into_iter()
        .enumerate()
        .map(|(i, t)| {
            let kind = kinds.get(i).copied().unwrap_or_else(|| weighted(&args.kinds, &mut rng));
            let target = rng.random_range(0..procs.len().max(pop.destinations.len()));
            let how = MISBEHAVIOURS[destination_faults % MISBEHAVIOURS.len()];
            if kind == FaultKind::Destination {
                destination_faults += 1;
            }
            (t, kind, target, how)
        })
        .collect();
    let faults: Arc<Mutex<Vec<FaultRecord>>> = Arc::default();
    // Destinations that answered 410 (disabled by the worker, enabled again by the run).
    let gone: Arc<Mutex<HashSet<usize>>> = Arc::default();
    let procs = Arc::new(tokio::sync::Mutex::new(procs));
    let last_fault_end = Arc::new(Mutex::new(Instant::now()));
    let t0 = Instant::now();
    let injector = {
        let (procs, faults, last_fault_end, proxy) =
            (procs.clone(), faults.clone(), last_fault_end.clone(), proxy.clone());
        let gone = gone.clone();
        let bin_dir = bin_dir.clone();
        let outage = Duration::from_secs(args.outage_s);
        let dests: Vec<(TenantId, DestinationId, Arc<Receiver>)> = pop.destinations.clone();
        let (store, keyring, aws, names) = (store.clone(), keyring.clone(), aws.clone(), names.clone());
        let mut rng = rand::rngs::StdRng::seed_from_u64(args.seed ^ 0x5eed);
        tokio::spawn(async move {
            let engine_busy_until = Arc::new(Mutex::new(Instant::now()));
            let mut pending = tokio::task::JoinSet::new();
            for (at, kind, target, misbehaviour) in plan {
                let when = t0 + Duration::from_secs_f64(at);
                tokio::time::sleep_until(when.into()).await;
                let started = t0.elapsed().as_secs_f64();
                match kind {
                    FaultKind::Kill => {
                        let mut ps = procs.lock().await;
                        let n = ps.len();
                        let p = &mut ps[target % n];
                        p.kill().await;
                        let pause = Duration::from_millis(rng.random_range(0..2000));
                        let name = p.name();
                        drop(ps);
                        tokio::time::sleep(pause).await;
                        let mut ps = procs.lock().await;
                        let p = &mut ps[target % n];
                        if let Err(e) = p.spawn(&bin_dir) {
                            tracing::error!(error = %e, "could not restart {name}");
                        }
                        p.restarts += 1;
                        faults.lock().unwrap_or_else(|e| e.into_inner()).push(FaultRecord {
                            at_s: started,
                            kind,
                            target: name,
                            detail: format!("SIGKILL, restarted after {} ms", pause.as_millis()),
                            lasted_s: pause.as_secs_f64(),
                        });
                        *last_fault_end.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
                    }
                    FaultKind::EngineStop | FaultKind::EngineDown => {
                        // One engine outage at a time; the schedule goes on meanwhile.
                        let begin = {
                            let mut busy = engine_busy_until.lock().unwrap_or_else(|e| e.into_inner());
                            let begin = (*busy).max(Instant::now());
                            *busy = begin + outage + Duration::from_secs(1);
                            begin
                        };
                        let (faults, last_fault_end, proxy) = (faults.clone(), last_fault_end.clone(), proxy.clone());
                        pending.spawn(async move {
                            tokio::time::sleep_until(begin.into()).await;
                            let started = t0.elapsed().as_secs_f64();
                            if kind == FaultKind::EngineStop {
                                signal(engine_pid, "STOP").await;
                                tokio::time::sleep(outage).await;
                                signal(engine_pid, "CONT").await;
                            } else {
                                proxy.set_down(true);
                                tokio::time::sleep(outage).await;
                                proxy.set_down(false);
                            }
                            let detail = if kind == FaultKind::EngineStop {
                                "SIGSTOP, then SIGCONT"
                            } else {
                                "connections refused"
                            };
                            faults.lock().unwrap_or_else(|e| e.into_inner()).push(FaultRecord {
                                at_s: started,
                                kind,
                                target: "engine".into(),
                                detail: detail.into(),
                                lasted_s: outage.as_secs_f64(),
                            });
                            *last_fault_end.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
                        });
                    }
                    FaultKind::Destination => {
                        // The drawn destination, or the next one behaving well.
                        let free = (0..dests.len())
                            .map(|k| (target + k) % dests.len())
                            .find(|&i| dests[i].2.state() == DestState::Ok);
                        let Some(index) = free else {
                            tracing::warn!("every destination is misbehaving already: a destination fault skipped");
                            continue;
                        };
                        let (tenant, dest, r) = dests[index].clone();
                        let lasting = outage.mul_f64(rng.random_range(1.0..2.0));
                        r.set(misbehaviour);
                        if misbehaviour == DestState::Gone410 {
                            gone.lock().unwrap_or_else(|e| e.into_inner()).insert(index);
                        }
                        let (faults, last_fault_end) = (faults.clone(), last_fault_end.clone());
                        let (store, keyring, aws, names) = (store.clone(), keyring.clone(), aws.clone(), names.clone());
                        pending.spawn(async move {
                            tokio::time::sleep(lasting).await;
                            r.set(DestState::Ok);
                            let mut detail = format!("{misbehaviour:?}");
                            if misbehaviour == DestState::Gone410 {
                                // The worker disabled it: its operator enables it and replays.
                                match reenable_and_replay(&store, &keyring, &aws, &names, &tenant, &dest).await {
                                    Ok(n) => detail.push_str(&format!(", re-enabled, {n} replayed")),
                                    Err(e) => detail.push_str(&format!(", re-enable failed: {e}")),
                                }
                            }
                            faults.lock().unwrap_or_else(|e| e.into_inner()).push(FaultRecord {
                                at_s: started,
                                kind,
                                target: format!("destination of {tenant}"),
                                detail,
                                lasted_s: lasting.as_secs_f64(),
                            });
                            *last_fault_end.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
                        });
                    }
                }
            }
            while pending.join_next().await.is_some() {}
        })
    };

    // Senders: at --rate, each logical submission retried until answered for good.
    let sent: Arc<Mutex<Sent>> = Arc::default();
    let waiting = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let timeline_stop = stop.child_token();
    let sampler = {
        let (sent, received, waiting, stop) = (sent.clone(), received.clone(), waiting.clone(), timeline_stop.clone());
        let sqs = aws.sqs.clone();
        let urls = [names.ingest_queue.clone(), names.delivery_queue.clone()];
        tokio::spawn(async move {
            let mut urls_found: [Option<String>; 2] = [None, None];
            let mut timeline = Vec::new();
            loop {
                for (found, name) in urls_found.iter_mut().zip(&urls) {
                    if found.is_none() {
                        *found = queue_url(&sqs, name).await;
                    }
                }
                let mut counts = [(None, None), (None, None)];
                for (c, url) in counts.iter_mut().zip(&urls_found) {
                    if let Some(url) = url {
                        *c = queue_counts(&sqs, url).await;
                    }
                }
                let accepted = sent.lock().unwrap_or_else(|e| e.into_inner()).accepted.len();
                let (delivered, duplicate_deliveries) = {
                    let r = received.lock().unwrap_or_else(|e| e.into_inner());
                    (r.by_submission.len(), r.webhook_ids.values().map(|n| n.saturating_sub(1)).sum())
                };
                timeline.push(Sample {
                    at_s: t0.elapsed().as_secs_f64(),
                    senders_waiting: waiting.load(std::sync::atomic::Ordering::Relaxed),
                    accepted,
                    delivered,
                    duplicate_deliveries,
                    ingest_waiting: counts[0].0,
                    ingest_in_flight: counts[0].1,
                    delivery_waiting: counts[1].0,
                    delivery_in_flight: counts[1].1,
                });
                tokio::select! {
                    () = tokio::time::sleep(TIMELINE_EVERY) => {}
                    () = stop.cancelled() => return timeline,
                }
            }
        })
    };
    let client = reqwest::Client::builder().pool_max_idle_per_host(8).build().unwrap_or_default();
    let mut tasks = tokio::task::JoinSet::new();
    // Senders retrying through an outage keep their slot: room for a minute of them at 20/s.
    let slots = Arc::new(tokio::sync::Semaphore::new(1024));
    let deadline = t0 + Duration::from_secs_f64(send_s) + Duration::from_secs(600);
    let ports = Arc::new(ingest_ports.clone());
    for i in 0..args.count {
        let due = t0 + Duration::from_secs_f64(i as f64 / args.rate);
        tokio::time::sleep_until(due.into()).await;
        let now_s =
            time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap_or_default();
        let g = traffic.next(&now_s);
        let secret = pop.site_secrets[&g.site].clone();
        let body = serde_json::to_vec(&json!({
            "site": g.site, "form_id": g.form.id(), "submitted_at": now_s,
            "fields": g.payload["fields"], "meta": g.payload["meta"],
        }))
        .expect("serialises");
        let permit = slots.clone().acquire_owned().await.expect("never closed");
        let (client, sent, ports, waiting) = (client.clone(), sent.clone(), ports.clone(), waiting.clone());
        waiting.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tasks.spawn(async move {
            let post = Post { secret, body, webhook_id: format!("msg_chaos_{i}") };
            send_one(&client, &ports, i, post, &sent, deadline).await;
            waiting.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            drop(permit);
        });
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    let send_took = t0.elapsed();
    let _ = injector.await;
    let last_fault = *last_fault_end.lock().unwrap_or_else(|e| e.into_inner());
    // Convergence is timed from the moment nothing disturbs the pipeline any more: the last
    // fault over and the last submission accepted (senders retrying through outages may finish
    // after the last fault).
    let quiet_from = last_fault.max(t0 + send_took);

    // Convergence: everything accepted is stored, delivered and counted.
    let accepted: HashSet<String> = sent.lock().unwrap_or_else(|e| e.into_inner()).accepted.keys().cloned().collect();
    let settle_until = Instant::now() + Duration::from_secs(args.settle_s);
    let mut done_at: BTreeMap<&str, Instant> = BTreeMap::new();
    let mut replayed_at = Instant::now();
    // Reading every stored item decodes it: once everything accepted is stored, the set is kept.
    let mut stored: HashMap<String, TenantId> = HashMap::new();
    let metrics_vs_stored = loop {
        // A delivery failed by a worker that still saw its destination disabled after a 410 is
        // replayed again, as an operator would after checking.
        if replayed_at.elapsed() > Duration::from_secs(20) {
            replayed_at = Instant::now();
            let gone: Vec<usize> = gone.lock().unwrap_or_else(|e| e.into_inner()).iter().copied().collect();
            for i in gone {
                let (tenant, dest, _) = &pop.destinations[i];
                let _ = replay_failed(&store, &aws, &names, tenant, dest).await;
            }
        }
        if !accepted.iter().all(|id| stored.contains_key(id)) {
            stored = stored_ids(&store, &pop.tenants).await;
        }
        let metrics = counted(&store, &pop.tenants, &stored).await;
        let delivered: HashSet<String> = {
            let r = received.lock().unwrap_or_else(|e| e.into_inner());
            r.by_submission.keys().cloned().collect()
        };
        let all_stored = accepted.iter().all(|id| stored.contains_key(id));
        let all_delivered = stored.keys().all(|id| delivered.contains(id));
        let all_counted = metrics.values().all(|(s, m)| s == m);
        for (name, ok) in [("stored", all_stored), ("delivered", all_delivered), ("counted", all_counted)] {
            if ok {
                done_at.entry(name).or_insert_with(Instant::now);
            } else {
                done_at.remove(name);
            }
        }
        if all_stored && all_delivered && all_counted {
            // Read once more, for anything stored without a 2xx (its sender gave up on an answer).
            let fresh = stored_ids(&store, &pop.tenants).await;
            if fresh.len() == stored.len() {
                break metrics;
            }
            stored = fresh;
            continue;
        }
        if Instant::now() > settle_until {
            stored = stored_ids(&store, &pop.tenants).await;
            break counted(&store, &pop.tenants, &stored).await;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    let converged = done_at.len() == 3;
    let (last_name, last_at) = done_at
        .iter()
        .max_by_key(|(_, t)| **t)
        .map(|(n, t)| (n.to_string(), *t))
        .unwrap_or(("none".into(), Instant::now()));

    timeline_stop.cancel();
    let timeline = sampler.await.unwrap_or_default();
    // Where each undelivered submission stands (up to 20), read while the engine still runs.
    let undelivered_detail = {
        let delivered = received.lock().unwrap_or_else(|e| e.into_inner()).by_submission.keys().cloned().collect();
        undelivered_histories(&store, &stored, &delivered, 20).await
    };
    // The whole stream, read once more: what it holds for each undelivered submission (one the
    // fan-out never saw is missing from it or was skipped), and whether the engine numbered its
    // records as DynamoDB does.
    let scan = {
        let ids: Vec<String> =
            undelivered_detail.iter().filter_map(|d| d["submission_id"].as_str().map(str::to_owned)).collect();
        scan_stream(&aws, &names.table, &ids).await
    };
    let mut undelivered_detail = undelivered_detail;
    for d in &mut undelivered_detail {
        let id = d["submission_id"].as_str().unwrap_or_default().to_owned();
        d["stream_records"] = scan.naming.get(&id).cloned().unwrap_or_default().into();
    }

    // Stop everything.
    stop.cancel();
    {
        let mut ps = procs.lock().await;
        for p in ps.iter_mut() {
            p.stop().await;
        }
    }
    let _ = engine.start_kill();
    let _ = engine.wait().await;

    let s = std::mem::take(&mut *sent.lock().unwrap_or_else(|e| e.into_inner()));
    let r = std::mem::take(&mut *received.lock().unwrap_or_else(|e| e.into_inner()));
    let faults = std::mem::take(&mut *faults.lock().unwrap_or_else(|e| e.into_inner()));
    let restarts = procs.lock().await.iter().map(|p| (p.name(), p.restarts)).collect();
    let lost = accepted.iter().filter(|id| !stored.contains_key(*id)).count();
    let undelivered = stored.keys().filter(|id| !r.by_submission.contains_key(*id)).count();
    let metrics_exact = metrics_vs_stored.values().all(|(a, b)| a == b);
    let mut faults_by_kind = BTreeMap::new();
    for f in &faults {
        *faults_by_kind
            .entry(serde_json::to_value(f.kind).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default())
            .or_insert(0) += 1;
    }
    let setting = |name: &str, default: &str| {
        args.env.iter().rev().find(|(k, _)| k == name).map_or(default.to_owned(), |(_, v)| v.clone())
    };
    let lease = |name: &str, default: &str, queue: u32| match setting(name, default).as_str() {
        "0" => format!("{name}=0: the queue's visibility timeout, {queue} s"),
        v => format!("{name}={v}: a dead consumer's messages come back within {v} s"),
    };
    let bounds = BTreeMap::from([
        (
            "ingest queue (persister)".to_owned(),
            lease("PERSISTER_LEASE_SECONDS", "15", formbridge_shared::bootstrap::VISIBILITY_TIMEOUT_SECS),
        ),
        (
            "delivery queue (worker)".to_owned(),
            lease("DELIVERY_LEASE_SECONDS", "20", formbridge_shared::bootstrap::DELIVERY_VISIBILITY_TIMEOUT_SECS),
        ),
        (
            "stream leases (aggregator, fan-out)".to_owned(),
            format!(
                "a dead reader's shards are taken after STREAM_FAILOVER_MS={} ms, at the next STREAM_TAKE_MS={} ms; a stuck one's after STREAM_STALL_MS={} ms",
                setting("STREAM_FAILOVER_MS", "10000"),
                setting("STREAM_TAKE_MS", "20000"),
                setting("STREAM_STALL_MS", "300000")
            ),
        ),
        (
            "destinations".to_owned(),
            format!(
                "the retry schedule (1, 2, 5, 10, 20, 30, 60 ... s) and the breaker's cooldown (DELIVERY_BREAKER_COOLDOWN_S={} s)",
                setting("DELIVERY_BREAKER_COOLDOWN_S", "60")
            ),
        ),
        ("metrics".to_owned(), format!("the aggregator's linger (AGGREGATOR_LINGER_MS={} ms)", setting("AGGREGATOR_LINGER_MS", "10000"))),
    ]);
    let report = ChaosReport {
        seed: args.seed,
        sent: args.count,
        accepted: accepted.len(),
        stored: stored.len(),
        delivered: r.by_submission.len(),
        lost,
        undelivered,
        undelivered_detail,
        stream_records: scan.records,
        stream_out_of_order: scan.out_of_order,
        given_up_by_senders: s.given_up,
        duplicate_deliveries: r.webhook_ids.values().map(|n| n.saturating_sub(1)).sum(),
        submissions_with_two_ids: r.by_submission.values().filter(|ids| ids.len() > 1).count(),
        stored_without_2xx: stored.keys().filter(|id| !accepted.contains(*id)).count(),
        unverified_deliveries: r.unverified,
        metrics_vs_stored: metrics_vs_stored.into_iter().map(|(t, v)| (t.to_string(), v)).collect(),
        metrics_exact,
        answers: s.answers,
        destination_answers: r.answered,
        faults_by_kind,
        faults,
        restarts,
        send_s: send_took.as_secs_f64(),
        last_fault_end_s: last_fault.saturating_duration_since(t0).as_secs_f64(),
        convergence_s: converged.then(|| last_at.saturating_duration_since(quiet_from).as_secs_f64()),
        converged_last: last_name,
        bounds,
        timeline,
        ok: lost == 0 && undelivered == 0 && metrics_exact && converged && r.unverified == 0 && scan.out_of_order == 0,
    };
    std::fs::write(&args.report, serde_json::to_vec_pretty(&report).expect("serialises"))?;
    Ok(report)
}

/// Every stored submission id of `tenants`, with its tenant.
/// The delivery histories of up to `max` stored submissions the receiver never saw.
async fn undelivered_histories(
    store: &DataStore,
    stored: &HashMap<String, TenantId>,
    delivered: &HashSet<String>,
    max: usize,
) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    for (id, tenant) in stored.iter().filter(|(id, _)| !delivered.contains(*id)).take(max) {
        let history = async {
            let p = store.get_tenant(tenant).await.ok()??;
            let sid = formbridge_shared::SubmissionId::parse(id).ok()?;
            let dests = store.list_destinations(tenant).await.unwrap_or_default();
            let h = formbridge_shared::delivery::history::read(store, &p, &sid, &dests).await.ok()??;
            serde_json::to_value(&h.deliveries).ok()
        }
        .await;
        out.push(serde_json::json!({ "tenant": tenant, "submission_id": id, "deliveries": history }));
    }
    out
}

#[derive(Debug, Default)]
struct StreamScan {
    /// Per id: "sequence kind entity keys" of every record whose image has a key naming it.
    naming: HashMap<String, Vec<String>>,
    records: usize,
    /// Records whose sequence number is not above the one before it in its shard.
    out_of_order: usize,
}

/// Reads the table's stream from each shard's start (see [`StreamScan`]).
async fn scan_stream(aws: &AwsClients, table: &str, ids: &[String]) -> StreamScan {
    use formbridge_shared::stream::record::padded_seq;
    use formbridge_shared::stream::{DynamoStreams, Position, StreamShards};
    let mut out = StreamScan::default();
    let Ok(streams) = DynamoStreams::for_table(&aws.dynamodb, aws.streams.clone(), table).await else { return out };
    let Ok(shards) = streams.shards().await else { return out };
    for shard in shards {
        let Ok(mut it) = streams.iterator(&shard.id, &Position::TrimHorizon).await else { continue };
        let mut last: Option<String> = None;
        loop {
            let Ok(page) = streams.records(&it, 1000).await else { break };
            let empty = page.records.is_empty();
            for c in &page.records {
                out.records += 1;
                let seq = padded_seq(&c.seq);
                if last.as_ref().is_some_and(|l| *l >= seq) {
                    out.out_of_order += 1;
                }
                last = Some(seq);
                let keys = [c.new.as_ref(), c.old.as_ref()]
                    .into_iter()
                    .flatten()
                    .flat_map(|i| ["PK", "SK"].into_iter().filter_map(|k| i.get(k)?.as_s().ok().cloned()))
                    .collect::<Vec<_>>();
                for id in ids.iter().filter(|id| keys.iter().any(|k| k.contains(id.as_str()))) {
                    out.naming.entry(id.clone()).or_default().push(format!(
                        "{} {:?} {:?} {}",
                        c.seq,
                        c.kind,
                        c.entity,
                        keys.join(" ")
                    ));
                }
            }
            match page.next {
                Some(next) if !empty => it = next,
                _ => break,
            }
        }
    }
    out
}

async fn stored_ids(store: &DataStore, tenants: &[TenantId]) -> HashMap<String, TenantId> {
    let mut out = HashMap::new();
    for t in tenants {
        let Ok(Some(p)) = store.get_tenant(t).await else { continue };
        if let Ok(subs) = store.recent_submissions(t, &p, 1_000_000).await {
            for s in subs {
                out.insert(s.submission_id.to_string(), t.clone());
            }
        }
    }
    out
}

/// Per tenant: (stored submissions, submissions counted in its daily metric items).
async fn counted(
    store: &DataStore,
    tenants: &[TenantId],
    stored: &HashMap<String, TenantId>,
) -> BTreeMap<TenantId, (u64, u64)> {
    let now = time::OffsetDateTime::now_utc();
    let mut out = BTreeMap::new();
    for t in tenants {
        let s = stored.values().filter(|x| *x == t).count() as u64;
        let m = store
            .metrics(t, None, Granularity::Day, now - time::Duration::days(2), now + time::Duration::days(1))
            .await
            .map(|b| b.iter().map(|b| b.submission_count).sum())
            .unwrap_or(u64::MAX);
        out.insert(t.clone(), (s, m));
    }
    out
}

/// After a 410 the destination is disabled: enable it and replay what failed meanwhile.
async fn reenable_and_replay(
    store: &DataStore,
    keyring: &Keyring,
    aws: &AwsClients,
    names: &ResourceNames,
    tenant: &TenantId,
    dest: &DestinationId,
) -> Result<usize, String> {
    // Let the worker finish disabling it (and failing what was in flight) first.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let now = time::OffsetDateTime::now_utc();
    store
        .update_destination(tenant, dest, keyring, now, "destination.enabled", |d, _| d.enabled = true)
        .await
        .map_err(|e| e.to_string())?;
    // Workers cache destinations briefly; replay once they can see it enabled.
    tokio::time::sleep(Duration::from_secs(6)).await;
    replay_failed(store, aws, names, tenant, dest).await
}

/// Replays the destination's failed deliveries.
async fn replay_failed(
    store: &DataStore,
    aws: &AwsClients,
    names: &ResourceNames,
    tenant: &TenantId,
    dest: &DestinationId,
) -> Result<usize, String> {
    use formbridge_shared::delivery::replay::{ReplayFilter, Replayer};
    use formbridge_shared::delivery::{Records, Status};
    let queue = formbridge_shared::queue::Queue::open(aws.sqs.clone(), &names.delivery_queue, "chaos")
        .await
        .map_err(|e| e.to_string())?;
    let replayer = Replayer { records: Records::new(store.clone(), "chaos"), queue };
    let filter = ReplayFilter {
        tenant: tenant.clone(),
        destination: Some(*dest),
        status: Status::Failed,
        since_ms: 0,
        until_ms: u64::try_from(time::OffsetDateTime::now_utc().unix_timestamp()).unwrap_or(0) * 1000,
    };
    let matched = replayer.matching(&filter).await.map_err(|e| e.to_string())?;
    let r = replayer
        .replay_all(&matched, std::num::NonZeroU32::new(200).unwrap_or(std::num::NonZeroU32::MIN))
        .await
        .map_err(|e| e.to_string())?;
    Ok(r.replayed)
}

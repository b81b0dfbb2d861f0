//! A stack of our own, a tenant, destinations, submissions written as the persister writes
//! them, programmable webhook receivers, and an EventBridge rule that copies delivery events
//! to a queue the test reads.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use formbridge_delivery::Config;
use formbridge_shared::aws::{AwsClients, ResourceNames};
use formbridge_shared::codec::PayloadCodec;
use formbridge_shared::delivery::history::{self, DeliveryHistory};
use formbridge_shared::delivery::{DeliveryMessage, Status, Trigger};
use formbridge_shared::destination::{DeliveryPolicy, Destination, DestinationKind, DestinationSpec};
use formbridge_shared::queue::{Outgoing, Queue};
use formbridge_shared::secrets::{Keyring, SigningSecret};
use formbridge_shared::sharding::ShardHistory;
use formbridge_shared::store::DataStore;
use formbridge_shared::submission::{QueueMessage, Submission};
use formbridge_shared::tenant::TenantProfile;
use formbridge_shared::{sample, FormId, SiteDomain, SubmissionId, TenantId};
use tokio_util::sync::CancellationToken;

pub struct Stack {
    pub aws: AwsClients,
    pub names: ResourceNames,
    pub store: DataStore,
    pub keys_spec: String,
    pub keyring: Keyring,
    pub profile: TenantProfile,
    pub events_queue: String,
}

impl Stack {
    pub async fn new(tenant: &str) -> Stack {
        let (aws, names, _) = formbridge_shared::testing::fresh_stack().await;
        let store = DataStore::new(aws.dynamodb.clone(), names.table.clone());
        let keys_spec = Keyring::generate_spec("t1");
        let keyring = Keyring::parse(&keys_spec, "test").unwrap();
        let profile = TenantProfile {
            tenant_id: TenantId::parse(tenant).unwrap(),
            name: tenant.into(),
            created_at: "2026-11-25T08:00:00Z".into(),
            retention_days: 30,
            form_retention: Default::default(),
            shards: ShardHistory::new(2, 0).unwrap(),
        };
        store.create_tenant(&profile).await.unwrap();
        let events_queue =
            formbridge_shared::testing::events_queue(&aws, &names, "delivery-events", "formbridge.delivery").await;
        Stack { aws, names, store, keys_spec, keyring, profile, events_queue }
    }

    pub fn tenant(&self) -> &TenantId {
        &self.profile.tenant_id
    }

    /// Settings for a worker in this process: loopback allowed, fast stream polling, no
    /// destination cache, one poller (moto may hand one message to two concurrent receivers).
    pub fn config(&self) -> Config {
        let mut c = Config::for_resources(self.names.clone(), &self.keys_spec);
        c.allow_loopback = true;
        c.pollers = 1;
        c.destination_cache_ms = 0;
        c.stream.failover_ms = 1_000;
        c.stream.take_ms = 300;
        c.stream.discover_ms = 300;
        c.stream.idle_min_ms = 50;
        c.stream.idle_max_ms = 200;
        c.fanout_linger_ms = 50;
        c.fanout_checkpoint_ms = 300;
        c
    }

    /// Runs a worker until the returned token is cancelled.
    pub fn start(&self, config: Config) -> (CancellationToken, tokio::task::JoinHandle<()>) {
        let token = CancellationToken::new();
        let aws = self.aws.clone();
        let t = token.clone();
        let h = tokio::spawn(async move {
            formbridge_delivery::run(config, aws, t).await.expect("delivery worker runs");
        });
        (token, h)
    }

    pub async fn destination(
        &self,
        url: &str,
        policy: DeliveryPolicy,
        timeout_ms: u64,
    ) -> (Destination, SigningSecret) {
        let spec = DestinationSpec {
            name: "test".into(),
            url: url.into(),
            kind: DestinationKind::Webhook,
            forms: vec![],
            timeout_ms,
            auth: None,
            policy: Default::default(),
        };
        let now = time::OffsetDateTime::now_utc();
        let (d, secret) = self
            .store
            .create_destinations(&[self.tenant().clone()], &spec, &self.keyring, now)
            .await
            .unwrap()
            .remove(0);
        let d = self
            .store
            .update_destination(self.tenant(), &d.id, &self.keyring, now, "destination.updated", |d, _| {
                d.policy = policy
            })
            .await
            .unwrap();
        (d, secret)
    }

    /// Writes `n` submissions as the persister does (each a stream INSERT).
    pub async fn submit(&self, n: usize) -> Vec<SubmissionId> {
        let ids: Vec<SubmissionId> = (0..n).map(|_| SubmissionId::new()).collect();
        for (i, id) in ids.iter().enumerate() {
            self.submit_as(*id, i as u64).await;
        }
        ids
    }

    /// Writes one submission with this id as the persister does.
    pub async fn submit_as(&self, id: SubmissionId, seed: u64) {
        let item = self.stored_item(id, seed);
        self.aws.dynamodb.put_item().table_name(&self.names.table).set_item(Some(item)).send().await.unwrap();
    }

    /// The item the persister would store for a submission with this id.
    pub fn stored_item(&self, id: SubmissionId, seed: u64) -> formbridge_shared::attrs::Item {
        let serde_json::Value::Object(payload) = sample::text_heavy_payload(600, seed) else { unreachable!() };
        let m = QueueMessage {
            v: 1,
            submission_id: id,
            tenant_id: self.tenant().clone(),
            site: SiteDomain::parse("www.example.com").unwrap(),
            form_id: FormId::parse("contact").unwrap(),
            received_at: time::OffsetDateTime::now_utc()
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap(),
            shard_count: 2,
            expires_at: 1_900_000_000,
            payload,
        };
        Submission::from_message(m).unwrap().to_item(&PayloadCodec::default())
    }

    /// Writes a stored submission again, unchanged (a persister retry): a MODIFY, or nothing.
    pub async fn rewrite(&self, id: &SubmissionId) {
        for shard in self.profile.shards.candidate_shards(id) {
            let k = formbridge_shared::keys::submission(self.tenant(), shard, id);
            let out = self
                .aws
                .dynamodb
                .get_item()
                .table_name(&self.names.table)
                .key("PK", aws_sdk_dynamodb::types::AttributeValue::S(k.pk))
                .key("SK", aws_sdk_dynamodb::types::AttributeValue::S(k.sk))
                .send()
                .await
                .unwrap();
            if let Some(item) = out.item {
                self.aws.dynamodb.put_item().table_name(&self.names.table).set_item(Some(item)).send().await.unwrap();
                return;
            }
        }
        panic!("submission {id} not found");
    }

    pub async fn history(&self, id: &SubmissionId) -> Vec<DeliveryHistory> {
        history::read(&self.store, &self.profile, id, &[]).await.unwrap().map(|h| h.deliveries).unwrap_or_default()
    }

    /// Waits until every submission's delivery records satisfy `done` (or panics after `limit`).
    pub async fn wait_for(
        &self,
        ids: &[SubmissionId],
        limit: Duration,
        done: impl Fn(&[DeliveryHistory]) -> bool,
    ) -> HashMap<SubmissionId, Vec<DeliveryHistory>> {
        let started = Instant::now();
        loop {
            let mut all = HashMap::new();
            for id in ids {
                all.insert(*id, self.history(id).await);
            }
            if all.values().all(|h| done(h)) {
                return all;
            }
            assert!(started.elapsed() < limit, "deliveries did not settle: {all:#?}");
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// Delivery events received so far: (detail-type, detail).
    pub async fn events(&self) -> Vec<(String, serde_json::Value)> {
        formbridge_shared::testing::drain_events(&self.aws, &self.events_queue).await
    }

    /// A delivery message for `attempt` of `id` to `dest`, as the fan-out or a retry makes it
    /// (without the submission inline: the worker reads it).
    pub fn message(&self, id: &SubmissionId, dest: &Destination, attempt: u16) -> DeliveryMessage {
        DeliveryMessage {
            v: formbridge_shared::delivery::message::VERSION,
            tenant: self.tenant().clone(),
            shard: formbridge_shared::sharding::shard_of(id, 2),
            submission: *id,
            destination: dest.id,
            attempt,
            due_ms: 0,
            trigger: Trigger::Scheduled,
            form_id: Some("contact".into()),
            expires_at: Some(1_900_000_000),
            sub: None,
            recheck: false,
        }
    }

    pub async fn enqueue(&self, queue: &str, m: &DeliveryMessage) {
        let q = Queue::open(self.aws.sqs.clone(), queue, "test").await.unwrap();
        q.send_all(&[Outgoing::new(m.body())]).await.unwrap();
    }

    pub async fn destination_enabled(&self, d: &Destination) -> bool {
        self.store.get_destination(self.tenant(), &d.id).await.unwrap().unwrap().enabled
    }
}

pub fn all_are(status: Status) -> impl Fn(&[DeliveryHistory]) -> bool {
    move |h| !h.is_empty() && h.iter().all(|d| d.status == status)
}

/// Checks an event's detail against its schema in `schemas/events/`.
pub fn assert_schema(file: &str, detail: &serde_json::Value) {
    let path = format!("{}/../../schemas/events/{file}", env!("CARGO_MANIFEST_DIR"));
    let schema: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let v = jsonschema::validator_for(&schema).unwrap();
    let errors: Vec<String> = v.iter_errors(detail).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "{file}: {errors:?} in {detail}");
}

/// One request a receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub webhook_id: String,
    pub verified: bool,
    pub at: Instant,
    /// Wall-clock epoch ms, to order against times the worker records.
    pub wall_ms: u64,
    pub submission_id: String,
    pub authorization: Option<String>,
}

/// What a receiver answers to its n-th request (0-based): status, extra headers, delay first.
pub type Script = Arc<dyn Fn(usize) -> (u16, Vec<(&'static str, String)>, Duration) + Send + Sync>;

/// A webhook receiver on 127.0.0.1 that verifies every request with `secret`.
#[derive(Clone)]
pub struct Receiver {
    pub url: String,
    pub got: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    pub async fn start(secret: Option<&SigningSecret>, script: Script) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::on(listener, secret, script).await
    }

    pub async fn on(listener: tokio::net::TcpListener, secret: Option<&SigningSecret>, script: Script) -> Receiver {
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let got: Arc<Mutex<Vec<Received>>> = Arc::default();
        let wh = secret.map(|s| Arc::new(standardwebhooks::Webhook::new(s.expose()).unwrap()));
        let (g, count) = (got.clone(), Arc::new(Mutex::new(0usize)));
        let handler = move |headers: HeaderMap, body: axum::body::Bytes| {
            let (g, wh, script, count) = (g.clone(), wh.clone(), script.clone(), count.clone());
            async move {
                let n = {
                    let mut c = count.lock().unwrap();
                    *c += 1;
                    *c - 1
                };
                let verified = wh.as_ref().is_some_and(|w| w.verify(&body, &headers).is_ok());
                let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                g.lock().unwrap().push(Received {
                    webhook_id: headers.get("webhook-id").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned(),
                    verified,
                    at: Instant::now(),
                    wall_ms: formbridge_shared::clock::now_ms(),
                    submission_id: v["data"]["submission_id"].as_str().unwrap_or("").to_owned(),
                    authorization: headers.get("authorization").and_then(|v| v.to_str().ok()).map(str::to_owned),
                });
                let (status, extra, delay) = script(n);
                tokio::time::sleep(delay).await;
                let mut h = HeaderMap::new();
                for (k, v) in extra {
                    h.insert(k, v.parse().unwrap());
                }
                (StatusCode::from_u16(status).unwrap(), h, "receiver says hi").into_response()
            }
        };
        let app = axum::Router::new().route("/hook", axum::routing::post(handler));
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver { url, got }
    }

    pub fn received(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }
}

pub fn always(status: u16) -> Script {
    Arc::new(move |_| (status, vec![], Duration::ZERO))
}

pub fn fast_policy(retry: &[u32]) -> DeliveryPolicy {
    DeliveryPolicy { retry_schedule: retry.to_vec(), client_error_schedule: vec![1], max_in_flight: 4 }
}

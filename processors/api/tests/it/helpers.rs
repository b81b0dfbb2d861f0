//! An API served on a random port over a fresh stack, and ways to put data in front of it.

use std::time::Duration;

use formbridge_api::Config;
use formbridge_shared::aws::{AwsClients, ResourceNames};
use formbridge_shared::codec::PayloadCodec;
use formbridge_shared::delivery::model::{DeliveryRecord, Status};
use formbridge_shared::secrets::Keyring;
use formbridge_shared::sharding::ShardHistory;
use formbridge_shared::store::DataStore;
use formbridge_shared::submission::{QueueMessage, Submission};
use formbridge_shared::tenant::TenantProfile;
use formbridge_shared::testing::fresh_stack;
use formbridge_shared::{sample, DestinationId, FormId, SiteDomain, SubmissionId, TenantId};
use serde_json::Value;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

pub struct Api {
    pub base: String,
    pub http: reqwest::Client,
    pub store: DataStore,
    pub keyring: Keyring,
    pub aws: AwsClients,
    pub names: ResourceNames,
    stop: CancellationToken,
}

impl Drop for Api {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

pub async fn start(tweak: impl FnOnce(&mut Config)) -> Api {
    let (aws, names, _) = fresh_stack().await;
    let spec = Keyring::generate_spec("k1");
    let keyring = Keyring::parse(&spec, "test").unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut config = Config::for_resources(names.clone(), spec);
    config.listen = addr;
    tweak(&mut config);
    let stop = CancellationToken::new();
    let app = formbridge_api::router(&config, &aws, None, stop.clone()).await.unwrap();
    tokio::spawn(formbridge_api::serve(listener, app, stop.clone()));
    Api {
        base: format!("http://{addr}"),
        http: reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap(),
        store: DataStore::new(aws.dynamodb.clone(), names.table.clone()),
        keyring,
        aws,
        names,
        stop,
    }
}

impl Api {
    pub async fn tenant(&self, name: &str, shards: ShardHistory) -> TenantProfile {
        let p = TenantProfile {
            tenant_id: TenantId::parse(name).unwrap(),
            name: name.into(),
            created_at: "2026-11-25T08:00:00Z".into(),
            retention_days: 30,
            form_retention: Default::default(),
            shards,
        };
        self.store.create_tenant(&p).await.unwrap();
        p
    }

    pub async fn key(&self, tenants: &[&TenantId], name: &str) -> String {
        let ts: Vec<TenantId> = tenants.iter().map(|t| (*t).clone()).collect();
        let (k, _) = self.store.create_api_key(&ts, name, &self.keyring, OffsetDateTime::now_utc()).await.unwrap();
        k.expose().to_owned()
    }

    /// Writes a submission as the persister does, with an id at `id_ms` and received `received`.
    pub async fn submission(
        &self,
        p: &TenantProfile,
        form: &str,
        id_ms: u64,
        received: OffsetDateTime,
    ) -> SubmissionId {
        let Value::Object(payload) = sample::text_heavy_payload(600, 3) else { unreachable!() };
        self.submission_with(p, form, id_ms, received, payload).await
    }

    /// Like `submission`, with this payload.
    pub async fn submission_with(
        &self,
        p: &TenantProfile,
        form: &str,
        id_ms: u64,
        received: OffsetDateTime,
        payload: serde_json::Map<String, Value>,
    ) -> SubmissionId {
        let id = SubmissionId::from_ulid(ulid::Ulid::from_parts(id_ms, rand::random::<u128>()));
        let m = QueueMessage::new(
            p,
            SiteDomain::parse("www.example.com").unwrap(),
            FormId::parse(form).unwrap(),
            id,
            received,
            payload,
        );
        let item = Submission::from_message(m).unwrap().to_item(&PayloadCodec::default());
        self.store.client().put_item().table_name(self.store.table()).set_item(Some(item)).send().await.unwrap();
        id
    }

    /// Writes a delivery record as the delivery worker does after an attempt.
    pub async fn delivery(
        &self,
        p: &TenantProfile,
        id: &SubmissionId,
        dest: &DestinationId,
        status: Status,
        latency_ms: u64,
        at_ms: u64,
    ) -> DeliveryRecord {
        let shard = p.shards.candidate_shards(id)[0];
        let rec = DeliveryRecord {
            tenant: p.tenant_id.clone(),
            shard,
            submission: *id,
            destination: *dest,
            status,
            attempts: 1,
            round_start: 0,
            next_attempt_ms: at_ms,
            form_id: "contact".into(),
            created_ms: at_ms,
            updated_ms: at_ms,
            last_status: Some(if status == Status::Succeeded { 200 } else { 500 }),
            last_error: None,
            last_latency_ms: Some(latency_ms),
            reason: (status == Status::Failed).then_some(formbridge_shared::delivery::model::FailureReason::Exhausted),
            claim: None,
            first_attempt: None,
            expires_at: (at_ms / 1000 + 86_400) as i64,
        };
        self.store
            .client()
            .put_item()
            .table_name(self.store.table())
            .set_item(Some(rec.to_item()))
            .send()
            .await
            .unwrap();
        rec
    }

    pub async fn get(&self, key: &str, path: &str) -> (u16, Value) {
        let r = self.http.get(format!("{}{path}", self.base)).bearer_auth(key).send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn send(&self, method: reqwest::Method, key: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.base)).bearer_auth(key);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }
}

pub fn ms(t: OffsetDateTime) -> u64 {
    (t.unix_timestamp_nanos() / 1_000_000) as u64
}

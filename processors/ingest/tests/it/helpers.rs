use std::net::SocketAddr;
use std::time::{Duration, Instant};

use aws_sdk_sqs::types::QueueAttributeName;
use formbridge_ingest::Config;
use formbridge_shared::aws::{AwsClients, ResourceNames};
use formbridge_shared::secrets::{Keyring, SigningSecret};
use formbridge_shared::sharding::ShardHistory;
use formbridge_shared::store::DataStore;
use formbridge_shared::tenant::TenantProfile;
use formbridge_shared::{SiteDomain, TenantId};
use standardwebhooks::Webhook;
use tokio_util::sync::CancellationToken;

pub struct Stack {
    pub aws: AwsClients,
    pub names: ResourceNames,
    pub queue_url: String,
    pub store: DataStore,
    pub keys: String,
    pub keyring: Keyring,
}

impl Stack {
    pub async fn new() -> Self {
        let (aws, names, report) = formbridge_shared::testing::fresh_stack().await;
        Self::from_parts(aws, names, report.ingest_queue_url)
    }

    pub fn from_parts(aws: AwsClients, names: ResourceNames, queue_url: String) -> Self {
        let store = DataStore::new(aws.dynamodb.clone(), names.table.clone());
        let keys = Keyring::generate_spec("k1");
        let keyring = Keyring::parse(&keys, "test").unwrap();
        Self { aws, names, queue_url, store, keys, keyring }
    }

    /// A tenant with one site; returns the site's secret.
    pub async fn tenant_with_site(&self, tenant: &str, domain: &str) -> SigningSecret {
        let profile = TenantProfile {
            tenant_id: TenantId::parse(tenant).unwrap(),
            name: tenant.into(),
            created_at: "2026-11-25T08:00:00Z".into(),
            retention_days: 30,
            form_retention: Default::default(),
            shards: ShardHistory::new(2, 0).unwrap(),
        };
        if self.store.get_tenant(&profile.tenant_id).await.unwrap().is_none() {
            self.store.create_tenant(&profile).await.unwrap();
        }
        let added = self
            .store
            .add_sites(
                &profile.tenant_id,
                &[SiteDomain::parse(domain).unwrap()],
                &self.keyring,
                time::OffsetDateTime::now_utc(),
            )
            .await
            .unwrap();
        added.into_iter().next().unwrap().1
    }

    pub fn config(&self) -> Config {
        let mut c = Config::for_resources(self.names.clone(), self.keys.clone());
        c.batch_linger_ms = 0;
        c.site_cache_seconds = 1;
        c
    }

    pub async fn start(&self, config: Config) -> App {
        let ep = formbridge_ingest::endpoint(&config, &self.aws, None).await.unwrap();
        let failures = ep.failures.clone();
        let enqueue_stats = ep.enqueue_stats.clone();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let token = CancellationToken::new();
        tokio::spawn(formbridge_ingest::serve(listener, ep, Duration::from_secs(3600), token.clone()));
        App { addr, token, failures, enqueue_stats, http: reqwest::Client::new() }
    }

    /// Messages on the ingest queue, visible or in flight.
    pub async fn queued(&self) -> u64 {
        let a = self
            .aws
            .sqs
            .get_queue_attributes()
            .queue_url(&self.queue_url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
            .unwrap()
            .attributes
            .unwrap();
        a.values().filter_map(|v| v.parse::<u64>().ok()).sum()
    }
}

pub struct App {
    pub addr: SocketAddr,
    pub token: CancellationToken,
    pub failures: formbridge_ingest::failures::FailureLog,
    pub enqueue_stats: std::sync::Arc<formbridge_ingest::queue::EnqueueStats>,
    pub http: reqwest::Client,
}

pub struct Answer {
    pub status: u16,
    pub body: serde_json::Value,
    pub retry_after: Option<String>,
}

impl Answer {
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }
}

pub fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// Standard Webhooks headers for `body`, signed with `secret` by the official library (which
/// signs only UTF-8: an invalid body is signed as its lossy decoding, and must fail before any
/// signature check anyway).
pub fn signed(secret: &str, id: &str, ts: i64, body: &[u8]) -> Vec<(String, String)> {
    let text = String::from_utf8_lossy(body);
    let sig = Webhook::new(secret).unwrap().sign(id, ts, text.as_bytes()).unwrap();
    vec![
        ("content-type".into(), "application/json".into()),
        ("webhook-id".into(), id.into()),
        ("webhook-timestamp".into(), ts.to_string()),
        ("webhook-signature".into(), sig),
    ]
}

impl App {
    pub async fn post(&self, headers: &[(String, String)], body: Vec<u8>) -> Answer {
        let mut req = self.http.post(format!("http://{}/v1/submissions", self.addr)).body(body);
        for (k, v) in headers {
            req = req.header(k, v);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let retry_after = resp.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned());
        let body = resp.json().await.unwrap_or(serde_json::Value::Null);
        Answer { status, body, retry_after }
    }

    pub async fn post_signed(&self, secret: &SigningSecret, id: &str, body: &serde_json::Value) -> Answer {
        let bytes = serde_json::to_vec(body).unwrap();
        self.post(&signed(secret.expose(), id, now(), &bytes), bytes).await
    }
}

pub fn envelope(site: &str) -> serde_json::Value {
    serde_json::json!({
        "site": site,
        "form_id": "contact",
        "fields": {"name": "Anna", "email": "anna@example.com", "message": "Hello there"},
        "submitted_at": "2026-11-25T08:00:00Z",
        "meta": {"ip": "203.0.113.9", "plugin": "form-bridge-wp", "plugin_version": "1.4.2"}
    })
}

/// Waits until `check` holds; fails the test after a generous deadline.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(60);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

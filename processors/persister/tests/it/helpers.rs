use std::time::{Duration, Instant};

use aws_sdk_sqs::types::{QueueAttributeName, SendMessageBatchRequestEntry};
use formbridge_persister::{run, Config, RunSummary};
use formbridge_shared::aws::{AwsClients, ResourceNames};
use formbridge_shared::sharding::ShardHistory;
use formbridge_shared::store::DataStore;
use formbridge_shared::submission::{QueueMessage, StoredSubmission};
use formbridge_shared::tenant::TenantProfile;
use formbridge_shared::{sample, SubmissionId, TenantId};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub struct TestStack {
    pub aws: AwsClients,
    pub names: ResourceNames,
    pub queue_url: String,
    pub dlq_url: String,
    pub store: DataStore,
    pub tenant: TenantProfile,
}

impl TestStack {
    pub async fn new(shards: u16) -> Self {
        let (aws, names, report) = formbridge_shared::testing::fresh_stack().await;
        let store = DataStore::new(aws.dynamodb.clone(), names.table.clone());
        let tenant = TenantProfile {
            tenant_id: TenantId::parse("acme").unwrap(),
            name: "Acme".into(),
            created_at: "2026-11-25T08:00:00Z".into(),
            retention_days: 30,
            form_retention: Default::default(),
            shards: ShardHistory::new(shards, 0).unwrap(),
        };
        store.create_tenant(&tenant).await.unwrap();
        Self { aws, names, queue_url: report.ingest_queue_url, dlq_url: report.ingest_dlq_url, store, tenant }
    }

    pub fn message(&self, size: usize, seed: u64) -> QueueMessage {
        let serde_json::Value::Object(payload) = sample::text_heavy_payload(size, seed) else { panic!() };
        QueueMessage::new(
            &self.tenant,
            "www.example.com".parse().unwrap(),
            "contact".parse().unwrap(),
            SubmissionId::new(),
            time::OffsetDateTime::now_utc(),
            payload,
        )
    }

    pub async fn send_bodies(&self, bodies: &[String]) {
        for chunk in bodies.chunks(10) {
            let entries = chunk
                .iter()
                .enumerate()
                .map(|(i, b)| {
                    SendMessageBatchRequestEntry::builder().id(i.to_string()).message_body(b).build().unwrap()
                })
                .collect();
            let out = self
                .aws
                .sqs
                .send_message_batch()
                .queue_url(&self.queue_url)
                .set_entries(Some(entries))
                .send()
                .await
                .unwrap();
            assert!(out.failed.is_empty());
        }
    }

    pub fn config(&self) -> Config {
        let mut c = Config::for_resources(self.names.clone());
        c.wait_seconds = 1;
        c
    }

    pub fn start(&self, config: Config) -> Running {
        let token = CancellationToken::new();
        let handle = tokio::spawn(run(config, self.aws.clone(), token.clone()));
        Running { token, handle }
    }

    pub async fn stored(&self) -> Vec<StoredSubmission> {
        let mut all = Vec::new();
        for shard in self.tenant.shards.read_shards() {
            all.extend(self.store.shard_submissions(&self.tenant.tenant_id, shard, usize::MAX).await.unwrap());
        }
        all
    }

    /// Waits until `n` submissions are stored; fails the test after a generous deadline.
    pub async fn wait_for_stored(&self, n: usize) -> Vec<StoredSubmission> {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let stored = self.stored().await;
            if stored.len() >= n || Instant::now() > deadline {
                return stored;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub async fn queue_depth(&self, url: &str) -> (u64, u64) {
        let a = self
            .aws
            .sqs
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
            .unwrap()
            .attributes
            .unwrap();
        let n = |k| a.get(&k).and_then(|v: &String| v.parse().ok()).unwrap_or(0);
        (
            n(QueueAttributeName::ApproximateNumberOfMessages),
            n(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
        )
    }

    /// Waits until the ingest queue holds nothing, visible or in flight.
    pub async fn wait_queue_drained(&self) -> (u64, u64) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let d = self.queue_depth(&self.queue_url).await;
            if d == (0, 0) || Instant::now() > deadline {
                return d;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

pub struct Running {
    pub token: CancellationToken,
    pub handle: JoinHandle<Result<RunSummary, formbridge_persister::PersistError>>,
}

impl Running {
    pub async fn stop(self) -> RunSummary {
        self.token.cancel();
        self.handle.await.unwrap().unwrap()
    }
}

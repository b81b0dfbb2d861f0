//! The one place AWS clients are built. Everything comes from the SDK's standard configuration:
//! region, the credential chain, and `AWS_ENDPOINT_URL` / `AWS_ENDPOINT_URL_<SERVICE>` for the
//! local engine. There are deliberately no endpoint flags of our own.
//!
//! Retry ownership: the SDK's standard retry mode (3 attempts, jittered) owns retrying failed
//! *requests* (throttling, 5xx, timeouts). Our `backon` policies own only what the SDK treats as
//! success: BatchWriteItem's `UnprocessedItems`. The two never wrap each other.
//!
//! Request metering: every client carries a [`RequestMeter`], so every request attempt any process
//! sends is counted by service and operation (see [`request_counts`]). This module must never build
//! a client without it: AWS bills per request, retries included, and an unmetered client would
//! make the counts lie.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};

use aws_config::{BehaviorVersion, SdkConfig};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::context::{
    AfterDeserializationInterceptorContextRef, BeforeSerializationInterceptorContextRef,
    BeforeTransmitInterceptorContextRef,
};
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;

/// The longest one request attempt may take: above SQS's longest long poll (20 s) and a hung
/// engine's pause, far above any answer AWS gives. The SDK's default has no limit on waiting
/// for an answer, so a request the engine never answered on a live connection would hold its
/// task for good (and a stream reader's lease with it). Now the attempt fails, and the SDK's
/// retries and ours take over.
pub const ATTEMPT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Timeouts for every client: 3 s to connect (the SDK's default), [`ATTEMPT_TIMEOUT`] per
/// attempt. The ingest request path narrows them further.
pub fn default_timeouts() -> aws_config::timeout::TimeoutConfig {
    aws_config::timeout::TimeoutConfig::builder()
        .connect_timeout(std::time::Duration::from_secs(3))
        .operation_attempt_timeout(ATTEMPT_TIMEOUT)
        .build()
}

/// Loads the SDK's standard configuration from the environment, with [`default_timeouts`].
pub async fn sdk_config() -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest()).timeout_config(default_timeouts()).load().await
}

/// Every client a Form-Bridge process may need, built from one `SdkConfig`.
#[derive(Debug, Clone)]
pub struct AwsClients {
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub streams: aws_sdk_dynamodbstreams::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub eventbridge: aws_sdk_eventbridge::Client,
    config: SdkConfig,
    scope: Scope,
}

impl AwsClients {
    /// Builds every client from `config`, each with a [`RequestMeter`] for its service.
    pub fn new(config: &SdkConfig) -> Self {
        Self::metered(config, Scope::Pipeline)
    }

    /// Clients for an observer of the pipeline (the load run's own stream reader): their requests
    /// are counted under `scope="observer"`, apart from the pipeline's, and bill nothing in
    /// [`crate::billing`], so a load run in the same process meters only the pipeline.
    pub fn observer(config: &SdkConfig) -> Self {
        Self::metered(config, Scope::Observer)
    }

    /// The same clients, their requests also counted for `component` (e.g. `persister`), so
    /// that the operations each process calls are known even when several run in one test
    /// process ([`component_operations`]). Each process's `run` calls this first.
    pub fn for_component(&self, component: &'static str) -> Self {
        Self::metered_as(&self.config, self.scope, Some(component))
    }

    /// The same clients signing with other credentials (e.g. a role assumed for one tenant),
    /// metered for `component`.
    pub fn with_credentials(
        &self,
        credentials: aws_credential_types::provider::SharedCredentialsProvider,
        component: &'static str,
    ) -> Self {
        let config = self.config.to_builder().credentials_provider(credentials).build();
        Self::metered_as(&config, self.scope, Some(component))
    }

    /// The SDK configuration these clients were made from.
    pub fn sdk_config(&self) -> &SdkConfig {
        &self.config
    }

    fn metered(config: &SdkConfig, scope: Scope) -> Self {
        Self::metered_as(config, scope, None)
    }

    fn metered_as(config: &SdkConfig, scope: Scope, component: Option<&'static str>) -> Self {
        use {
            aws_sdk_dynamodb as ddb, aws_sdk_dynamodbstreams as streams, aws_sdk_eventbridge as eb, aws_sdk_sqs as sqs,
        };
        let meter = |service| RequestMeter { service, scope, component };
        Self {
            dynamodb: ddb::Client::from_conf(ddb::config::Builder::from(config).interceptor(meter("dynamodb")).build()),
            streams: streams::Client::from_conf(
                streams::config::Builder::from(config).interceptor(meter("dynamodbstreams")).build(),
            ),
            sqs: sqs::Client::from_conf(sqs::config::Builder::from(config).interceptor(meter("sqs")).build()),
            eventbridge: eb::Client::from_conf(
                eb::config::Builder::from(config).interceptor(meter("eventbridge")).build(),
            ),
            config: config.clone(),
            scope,
        }
    }

    pub async fn from_env() -> Self {
        Self::new(&sdk_config().await)
    }
}

/// Every request attempt this process has sent, by `"service:Operation"` (e.g.
/// `"dynamodb:BatchWriteItem"`, `"sqs:SendMessageBatch"`), since start-up. Retries count: each
/// attempt is a billed request. Counts only grow, so an in-process load test diffs two snapshots.
pub fn request_counts() -> BTreeMap<String, u64> {
    REQUEST_TALLY.lock().unwrap_or_else(PoisonError::into_inner).clone()
}

/// The process-wide tally behind [`request_counts`]. A plain lock is enough: it is held for one
/// map update per request, and a request takes milliseconds.
static REQUEST_TALLY: Mutex<BTreeMap<String, u64>> = Mutex::new(BTreeMap::new());

/// Counts each request attempt just before it goes on the wire (the SDK's `read_before_transmit`
/// hook runs once per attempt, so retries are counted; an attempt that fails before sending, e.g.
/// on signing, is not).
///
/// # Metric
///
/// `aws_requests_total` (counter): request attempts sent to AWS, labelled
/// - `service`: `dynamodb`, `dynamodbstreams`, `sqs` or `eventbridge` (one per client in
///   [`AwsClients`]);
/// - `operation`: the API's name as AWS spells it, e.g. `BatchWriteItem`, `SendMessageBatch`,
///   `GetRecords`, `PutEvents`.
///
/// Both label sets are closed (the SDKs' operations), so cardinality stays low. The same counts
/// are readable in-process through [`request_counts`].
///
/// `aws_request_seconds` (histogram, same labels): each attempt's time on the wire, from just
/// before it is sent to its response read. It shows where a stage's time goes: on the local
/// engine, which serves one request at a time, a slow operation delays every other process.
#[derive(Debug, Clone, Copy)]
pub struct RequestMeter {
    service: &'static str,
    scope: Scope,
    /// The process whose clients these are, when known ([`AwsClients::for_component`]).
    component: Option<&'static str>,
}

/// Whose requests a meter counts: the pipeline's (every process) or an observer's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Pipeline,
    Observer,
}

impl RequestMeter {
    /// A meter for one service's client; `service` becomes the `service` label.
    pub fn new(service: &'static str) -> Self {
        Self { service, scope: Scope::Pipeline, component: None }
    }
}

impl Intercept for RequestMeter {
    fn name(&self) -> &'static str {
        "RequestMeter"
    }

    /// Remembers what the request will bill if it succeeds (see [`crate::billing`]).
    fn read_before_execution(
        &self,
        context: &BeforeSerializationInterceptorContextRef<'_>,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if self.scope == Scope::Observer {
            return Ok(());
        }
        let input = context.input();
        if let (Some(c), "dynamodb") = (self.component, self.service) {
            record_transaction_items(c, input);
        }
        let pending = match self.service {
            "dynamodb" => crate::billing::dynamodb_request(input, self.component),
            "sqs" => Some(crate::billing::sqs_request(input, self.component)),
            "eventbridge" => Some(crate::billing::eventbridge_request(input)),
            _ => None,
        };
        if let Some(p) = pending {
            cfg.interceptor_state().store_put(p);
        }
        Ok(())
    }

    /// Bills each attempt that AWS carried out: a success, or a write refused by its condition.
    /// Throttled and failed attempts bill nothing.
    fn read_after_deserialization(
        &self,
        context: &AfterDeserializationInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if self.scope == Scope::Observer {
            return Ok(());
        }
        if let Some(Sent(at)) = cfg.load::<Sent>() {
            let operation = cfg.load::<Metadata>().map_or("unknown", Metadata::name);
            metrics::histogram!("aws_request_seconds", "service" => self.service, "operation" => operation.to_owned())
                .record(at.elapsed().as_secs_f64());
        }
        let output = context.output_or_error().ok();
        if self.service == "dynamodbstreams" {
            if output.is_some() {
                crate::billing::stream_response(cfg.load::<Metadata>().map_or("unknown", Metadata::name), output);
            }
            return Ok(());
        }
        let Some(p) = cfg.load::<crate::billing::Pending>() else { return Ok(()) };
        match self.service {
            "dynamodb" => {
                let r = context.response();
                let refused = output.is_none()
                    && r.status().as_u16() == 400
                    && r.body().bytes().is_some_and(|b| {
                        let b = String::from_utf8_lossy(b);
                        b.contains("ConditionalCheckFailed") || b.contains("TransactionCanceled")
                    });
                crate::billing::dynamodb_response(p, output, refused);
            }
            "sqs" if output.is_some() => crate::billing::sqs_response(p, output),
            "eventbridge" if output.is_some() => crate::billing::eventbridge_response(p),
            _ => {}
        }
        Ok(())
    }

    fn read_before_transmit(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        // Every generated operation stores its Metadata; "unknown" only guards a future SDK change.
        let operation = cfg.load::<Metadata>().map_or("unknown", Metadata::name);
        if self.scope == Scope::Observer {
            metrics::counter!("aws_requests_total", "service" => self.service, "operation" => operation.to_owned(), "scope" => "observer")
                .increment(1);
            return Ok(());
        }
        record_request(self.service, operation, self.component);
        cfg.interceptor_state().store_put(Sent(std::time::Instant::now()));
        Ok(())
    }
}

/// When the current attempt went on the wire.
#[derive(Debug, Clone, Copy)]
struct Sent(std::time::Instant);

impl aws_smithy_types::config_bag::Storable for Sent {
    type Storer = aws_smithy_types::config_bag::StoreReplace<Self>;
}

fn record_request(service: &'static str, operation: &str, component: Option<&'static str>) {
    metrics::counter!("aws_requests_total", "service" => service, "operation" => operation.to_owned()).increment(1);
    let key = format!("{service}:{operation}");
    if let Some(c) = component {
        COMPONENT_OPERATIONS.lock().unwrap_or_else(PoisonError::into_inner).entry(c).or_default().insert(key.clone());
    }
    *REQUEST_TALLY.lock().unwrap_or_else(PoisonError::into_inner).entry(key).or_insert(0) += 1;
}

/// A transaction needs the permission of each kind of item in it, so its item kinds are
/// recorded as operations of their own: `dynamodb:TransactWriteItems+PutItem`, and so on.
fn record_transaction_items(
    component: &'static str,
    input: &aws_smithy_runtime_api::client::interceptors::context::Input,
) {
    use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsInput;
    let Some(t) = input.downcast_ref::<TransactWriteItemsInput>() else { return };
    let mut ops = COMPONENT_OPERATIONS.lock().unwrap_or_else(PoisonError::into_inner);
    let set = ops.entry(component).or_default();
    for item in t.transact_items.iter().flatten() {
        let kind = if item.put.is_some() {
            "PutItem"
        } else if item.update.is_some() {
            "UpdateItem"
        } else if item.delete.is_some() {
            "DeleteItem"
        } else {
            "ConditionCheckItem"
        };
        set.insert(format!("dynamodb:TransactWriteItems+{kind}"));
    }
}

/// Which operations each component has called (see [`AwsClients::for_component`]).
static COMPONENT_OPERATIONS: Mutex<BTreeMap<&'static str, std::collections::BTreeSet<String>>> =
    Mutex::new(BTreeMap::new());

/// The operations (`"service:Operation"`) `component`'s clients have sent since start-up: what
/// its IAM role must allow (`deploy/aws/`; the test that compares them is in `shared::testing`).
pub fn component_operations(component: &str) -> std::collections::BTreeSet<String> {
    COMPONENT_OPERATIONS.lock().unwrap_or_else(PoisonError::into_inner).get(component).cloned().unwrap_or_default()
}

/// Names of the AWS resources, shared by every process. Defaults are the production names;
/// tests add a random suffix so they can run side by side on one engine.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct ResourceNames {
    /// The single data table.
    #[arg(long = "table", env = "FORMBRIDGE_TABLE", default_value = "FormBridgeData")]
    pub table: String,
    /// Stream leases and checkpoints (kept out of the data table so renewals don't flood its stream).
    #[arg(long = "control-table", env = "FORMBRIDGE_CONTROL_TABLE", default_value = "FormBridgeControl")]
    pub control_table: String,
    /// The queue ingest writes and the persister reads.
    #[arg(long = "ingest-queue", env = "FORMBRIDGE_INGEST_QUEUE", default_value = "formbridge-ingest")]
    pub ingest_queue: String,
    /// Where poison messages end up.
    #[arg(long = "ingest-dlq", env = "FORMBRIDGE_INGEST_DLQ", default_value = "formbridge-ingest-dlq")]
    pub ingest_dlq: String,
    /// Delivery attempts due now or later (DelaySeconds): the delivery worker's work queue.
    #[arg(long = "delivery-queue", env = "FORMBRIDGE_DELIVERY_QUEUE", default_value = "formbridge-deliveries")]
    pub delivery_queue: String,
    /// Where delivery messages that keep crashing a worker end up.
    #[arg(long = "delivery-dlq", env = "FORMBRIDGE_DELIVERY_DLQ", default_value = "formbridge-deliveries-dlq")]
    pub delivery_dlq: String,
    /// The custom EventBridge bus for Form-Bridge events.
    #[arg(long = "event-bus", env = "FORMBRIDGE_EVENT_BUS", default_value = "formbridge")]
    pub event_bus: String,
    /// How often a process writes the units it counted per tenant (cost per tenant, see
    /// `costs`), seconds; 0 keeps them in memory only.
    #[arg(long = "cost-flush-seconds", env = "FORMBRIDGE_COST_FLUSH_SECONDS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(0..=3600))]
    pub cost_flush_seconds: u64,
}

impl Default for ResourceNames {
    fn default() -> Self {
        Self {
            table: "FormBridgeData".into(),
            control_table: "FormBridgeControl".into(),
            ingest_queue: "formbridge-ingest".into(),
            ingest_dlq: "formbridge-ingest-dlq".into(),
            delivery_queue: "formbridge-deliveries".into(),
            delivery_dlq: "formbridge-deliveries-dlq".into(),
            event_bus: "formbridge".into(),
            cost_flush_seconds: 60,
        }
    }
}

/// A setting that failed validation; the message names the setting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid setting {setting} = {value:?}: {rule}")]
pub struct ConfigError {
    pub setting: &'static str,
    pub value: String,
    pub rule: &'static str,
}

impl ResourceNames {
    /// The default names with `-{suffix}` appended (for tests and side-by-side stacks).
    pub fn with_suffix(suffix: &str) -> Self {
        let d = Self::default();
        Self {
            table: format!("{}-{suffix}", d.table),
            control_table: format!("{}-{suffix}", d.control_table),
            ingest_queue: format!("{}-{suffix}", d.ingest_queue),
            ingest_dlq: format!("{}-{suffix}", d.ingest_dlq),
            delivery_queue: format!("{}-{suffix}", d.delivery_queue),
            delivery_dlq: format!("{}-{suffix}", d.delivery_dlq),
            event_bus: format!("{}-{suffix}", d.event_bus),
            // Side-by-side stacks share one process in tests: only a test that reads costs
            // turns the flusher on (it would write every stack's counts to its own table).
            cost_flush_seconds: 0,
        }
    }

    /// Checks every name against the AWS naming rules, naming the offending setting.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let table_ok = |s: &str| {
            (3..=255).contains(&s.len())
                && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        };
        let queue_ok = |s: &str| {
            (1..=80).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
        };
        let bus_ok = |s: &str| {
            (1..=256).contains(&s.len())
                && s != "default"
                && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        };
        let checks: [(&'static str, &str, bool, &'static str); 7] = [
            ("FORMBRIDGE_TABLE", &self.table, table_ok(&self.table), "3-255 of A-Z a-z 0-9 _ - ."),
            (
                "FORMBRIDGE_CONTROL_TABLE",
                &self.control_table,
                table_ok(&self.control_table),
                "3-255 of A-Z a-z 0-9 _ - .",
            ),
            ("FORMBRIDGE_INGEST_QUEUE", &self.ingest_queue, queue_ok(&self.ingest_queue), "1-80 of A-Z a-z 0-9 _ -"),
            ("FORMBRIDGE_INGEST_DLQ", &self.ingest_dlq, queue_ok(&self.ingest_dlq), "1-80 of A-Z a-z 0-9 _ -"),
            (
                "FORMBRIDGE_DELIVERY_QUEUE",
                &self.delivery_queue,
                queue_ok(&self.delivery_queue),
                "1-80 of A-Z a-z 0-9 _ -",
            ),
            ("FORMBRIDGE_DELIVERY_DLQ", &self.delivery_dlq, queue_ok(&self.delivery_dlq), "1-80 of A-Z a-z 0-9 _ -"),
            (
                "FORMBRIDGE_EVENT_BUS",
                &self.event_bus,
                bus_ok(&self.event_bus),
                "1-256 of A-Z a-z 0-9 _ - ., not 'default'",
            ),
        ];
        for (setting, value, ok, rule) in checks {
            if !ok {
                return Err(ConfigError { setting, value: value.to_owned(), rule });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_names_the_setting() {
        assert!(ResourceNames::default().validate().is_ok());
        assert!(ResourceNames::with_suffix("abc123").validate().is_ok());
        let bad = ResourceNames { ingest_queue: "has space".into(), ..Default::default() };
        assert_eq!(bad.validate().unwrap_err().setting, "FORMBRIDGE_INGEST_QUEUE");
        let bad = ResourceNames { table: "x".into(), ..Default::default() };
        assert_eq!(bad.validate().unwrap_err().setting, "FORMBRIDGE_TABLE");
    }

    #[test]
    fn a_request_is_exported_as_aws_requests_total() {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            record_request("sqs", "MeterProbe", None);
            record_request("sqs", "MeterProbe", None);
        });
        let text = handle.render();
        assert!(text.contains(r#"aws_requests_total{service="sqs",operation="MeterProbe"} 2"#), "{text}");
    }

    /// Every client built from the standard configuration bounds each request attempt, so no
    /// request can hold its task for good (an unanswered request held a stream reader in the
    /// chaos run).
    #[tokio::test]
    async fn every_client_bounds_each_attempt() {
        let clients = AwsClients::new(&sdk_config().await);
        assert_eq!(
            clients.sqs.config().timeout_config().and_then(|t| t.operation_attempt_timeout()),
            Some(ATTEMPT_TIMEOUT)
        );
        assert_eq!(
            clients.dynamodb.config().timeout_config().and_then(|t| t.operation_attempt_timeout()),
            Some(ATTEMPT_TIMEOUT)
        );
        assert_eq!(
            clients.streams.config().timeout_config().and_then(|t| t.operation_attempt_timeout()),
            Some(ATTEMPT_TIMEOUT)
        );
        assert_eq!(
            clients.eventbridge.config().timeout_config().and_then(|t| t.operation_attempt_timeout()),
            Some(ATTEMPT_TIMEOUT)
        );
        // Long polls (20 s) fit within an attempt.
        assert!(ATTEMPT_TIMEOUT > std::time::Duration::from_secs(20));
    }

    /// Retries are billed, so each attempt must count. The engine can't be made to fail on demand,
    /// so a stand-in endpoint answers every request with a 500, which the SDK's standard mode retries.
    #[tokio::test]
    async fn every_retry_attempt_is_counted() {
        let (endpoint, served) = always_failing_endpoint().await;
        let config = aws_config::defaults(BehaviorVersion::latest())
            .endpoint_url(endpoint)
            .region(aws_config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_sqs::config::Credentials::new("test", "test", None, None, "test"))
            .retry_config(
                aws_config::retry::RetryConfig::standard()
                    .with_max_attempts(3)
                    .with_initial_backoff(std::time::Duration::from_millis(1)),
            )
            .load()
            .await;
        // An operation no other test in this binary sends, so the global tally's difference is ours.
        let key = "sqs:ListQueues";
        let before = request_counts().get(key).copied().unwrap_or(0);
        let result = AwsClients::new(&config).sqs.list_queues().send().await;
        assert!(result.is_err(), "the stand-in endpoint only fails");
        let counted = request_counts().get(key).copied().unwrap_or(0) - before;
        assert_eq!(served.load(std::sync::atomic::Ordering::SeqCst), 3, "the SDK should have tried 3 times");
        assert_eq!(counted, 3, "every attempt the endpoint saw is counted");
    }

    /// An HTTP endpoint on 127.0.0.1 that reads each request whole and answers 500; returns its URL
    /// and how many requests it has served.
    async fn always_failing_endpoint() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use tokio::io::AsyncWriteExt;

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let served = std::sync::Arc::new(AtomicUsize::new(0));
        let counter = served.clone();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                if read_request(&mut conn).await.is_ok() {
                    counter.fetch_add(1, Ordering::SeqCst);
                    let reply = b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
                    let _ = conn.write_all(reply).await;
                }
            }
        });
        (url, served)
    }

    /// Reads one request: the head, then `content-length` bytes of body.
    async fn read_request(conn: &mut tokio::net::TcpStream) -> std::io::Result<()> {
        use tokio::io::AsyncReadExt;

        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = conn.read(&mut chunk).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            buf.extend_from_slice(&chunk[..n]);
            let Some(head_end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else { continue };
            let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
            let body_len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse().unwrap_or(0));
            if buf.len() >= head_end + 4 + body_len {
                return Ok(());
            }
        }
    }
}

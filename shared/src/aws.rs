//! The one place AWS clients are built. Everything comes from the SDK's standard configuration:
//! region, the credential chain, and `AWS_ENDPOINT_URL` / `AWS_ENDPOINT_URL_<SERVICE>` for the
//! local engine. There are deliberately no endpoint flags of our own.
//!
//! Retry ownership: the SDK's standard retry mode (3 attempts, jittered) owns retrying failed
//! *requests* (throttling, 5xx, timeouts). Our `backon` policies own only what the SDK treats as
//! success: BatchWriteItem's `UnprocessedItems`. The two never wrap each other.

use aws_config::{BehaviorVersion, SdkConfig};

/// Loads the SDK's standard configuration from the environment.
pub async fn sdk_config() -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest()).load().await
}

/// Every client a Form-Bridge process may need, built from one `SdkConfig`.
#[derive(Debug, Clone)]
pub struct AwsClients {
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub streams: aws_sdk_dynamodbstreams::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub eventbridge: aws_sdk_eventbridge::Client,
}

impl AwsClients {
    pub fn new(config: &SdkConfig) -> Self {
        Self {
            dynamodb: aws_sdk_dynamodb::Client::new(config),
            streams: aws_sdk_dynamodbstreams::Client::new(config),
            sqs: aws_sdk_sqs::Client::new(config),
            eventbridge: aws_sdk_eventbridge::Client::new(config),
        }
    }

    pub async fn from_env() -> Self {
        Self::new(&sdk_config().await)
    }
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
}

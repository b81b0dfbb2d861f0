//! Idempotent creation of every AWS resource Form-Bridge needs. Each step reads what exists,
//! creates what is missing, fixes what drifted where that is safe, and reports what it did. A
//! second run reports `unchanged` for everything. The same code runs against AWS (no endpoint
//! override) and against the local engine.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType,
    PointInTimeRecoverySpecification, PointInTimeRecoveryStatus, Projection, ProjectionType, ScalarAttributeType,
    StreamSpecification, StreamViewType, TableStatus, TimeToLiveSpecification, TimeToLiveStatus,
};
use aws_sdk_sqs::types::QueueAttributeName;
use serde::Serialize;

use crate::aws::{AwsClients, ResourceNames};
use crate::keys;

/// Largest SQS message; set explicitly because some tools still default to 256 KiB.
pub const MAX_MESSAGE_BYTES: u32 = 1024 * 1024;
/// A message received this many times without being deleted goes to the DLQ. Messages the
/// persister cannot store (unreadable, too large) are dead-lettered by the persister itself at
/// once, with their reason; this count is only the backstop for a message that keeps a persister
/// from finishing (a crash, an engine that keeps failing). Its time matters, not its count: with
/// 15 s leases (`PERSISTER_LEASE_SECONDS`), 20 receives are at least 5 minutes, as 5 receives of
/// the queue's 60 s were. At 5, a saturated engine in the 5,000-submission chaos run moved 41
/// messages to the DLQ within minutes, 3 of them never stored otherwise.
pub const MAX_RECEIVE_COUNT: u32 = 20;
/// Long enough for a receive-write-delete round under load.
pub const VISIBILITY_TIMEOUT_SECS: u32 = 60;
/// 14 days, SQS's maximum: a stopped persister loses nothing for two weeks.
pub const RETENTION_SECS: u32 = 1_209_600;
/// Delivery messages are invisible this long while a worker handles them: the longest attempt
/// timeout (30 s) plus reading, recording and re-queueing.
pub const DELIVERY_VISIBILITY_TIMEOUT_SECS: u32 = 90;
/// A delivery message received this often without being deleted moves to the delivery DLQ.
/// Deferrals (paused destination, busy destination, long delays) re-send instead, so they
/// never count towards it.
pub const DELIVERY_MAX_RECEIVE_COUNT: u32 = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Created,
    Updated,
    Unchanged,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Step {
    pub resource: String,
    pub name: String,
    pub outcome: Outcome,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BootstrapReport {
    pub steps: Vec<Step>,
    pub ingest_queue_url: String,
    pub ingest_dlq_url: String,
    pub delivery_queue_url: String,
    pub delivery_dlq_url: String,
}

impl BootstrapReport {
    pub fn changed(&self) -> bool {
        self.steps.iter().any(|s| s.outcome != Outcome::Unchanged)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error("DynamoDB: {0}")]
    Dynamo(#[from] aws_sdk_dynamodb::Error),
    #[error("SQS: {0}")]
    Sqs(#[from] aws_sdk_sqs::Error),
    #[error("EventBridge: {0}")]
    EventBridge(#[from] aws_sdk_eventbridge::Error),
    #[error("table {table} exists but differs from the expected layout: {detail}. Migrate it by hand; bootstrap never drops data")]
    Drift { table: String, detail: String },
    #[error("table {0} did not become ACTIVE in time")]
    NotActive(String),
}

fn step(resource: &str, name: &str, outcome: Outcome, detail: Option<String>) -> Step {
    Step { resource: resource.into(), name: name.into(), outcome, detail }
}

/// Creates or checks every resource.
pub async fn bootstrap(aws: &AwsClients, names: &ResourceNames) -> Result<BootstrapReport, BootstrapError> {
    let mut steps = Vec::new();
    steps.extend(ensure_table(aws, &names.table, TableKind::Data).await?);
    steps.extend(ensure_table(aws, &names.control_table, TableKind::Control).await?);
    let (dlq_url, dlq_step) = ensure_queue(aws, &names.ingest_dlq, dlq_attributes()).await?;
    steps.push(dlq_step);
    let dlq_arn = queue_arn(aws, &dlq_url).await?;
    let (queue_url, q_step) = ensure_queue(aws, &names.ingest_queue, ingest_attributes(&dlq_arn)).await?;
    steps.push(q_step);
    let (ddlq_url, ddlq_step) = ensure_queue(aws, &names.delivery_dlq, dlq_attributes()).await?;
    steps.push(ddlq_step);
    let ddlq_arn = queue_arn(aws, &ddlq_url).await?;
    let (dq_url, dq_step) = ensure_queue(aws, &names.delivery_queue, delivery_attributes(&ddlq_arn)).await?;
    steps.push(dq_step);
    steps.push(ensure_bus(aws, &names.event_bus).await?);
    Ok(BootstrapReport {
        steps,
        ingest_queue_url: queue_url,
        ingest_dlq_url: dlq_url,
        delivery_queue_url: dq_url,
        delivery_dlq_url: ddlq_url,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TableKind {
    Data,
    Control,
}

fn s_attr(name: &str) -> AttributeDefinition {
    AttributeDefinition::builder()
        .attribute_name(name)
        .attribute_type(ScalarAttributeType::S)
        .build()
        .expect("name and type are set")
}

fn key_schema(hash: &str, range: &str) -> Vec<KeySchemaElement> {
    [(hash, KeyType::Hash), (range, KeyType::Range)]
        .into_iter()
        .map(|(n, t)| KeySchemaElement::builder().attribute_name(n).key_type(t).build().expect("set"))
        .collect()
}

/// The roadmap's three indexes, with their projections.
fn data_indexes() -> Vec<GlobalSecondaryIndex> {
    let gsi = |name: &str, pk: &str, sk: &str, projection: Projection| {
        GlobalSecondaryIndex::builder()
            .index_name(name)
            .set_key_schema(Some(key_schema(pk, sk)))
            .projection(projection)
            .build()
            .expect("set")
    };
    vec![
        gsi("GSI1", keys::GSI1PK, keys::GSI1SK, Projection::builder().projection_type(ProjectionType::All).build()),
        gsi(
            "GSI2",
            keys::GSI2PK,
            keys::GSI2SK,
            Projection::builder().projection_type(ProjectionType::KeysOnly).build(),
        ),
        gsi(
            "GSI3",
            keys::GSI3PK,
            keys::GSI3SK,
            Projection::builder()
                .projection_type(ProjectionType::Include)
                .non_key_attributes("submission_count")
                .non_key_attributes("form_stats")
                .build(),
        ),
    ]
}

async fn ensure_table(aws: &AwsClients, name: &str, kind: TableKind) -> Result<Vec<Step>, BootstrapError> {
    let ddb = &aws.dynamodb;
    let mut steps = Vec::new();
    let existing = match ddb.describe_table().table_name(name).send().await {
        Ok(out) => out.table,
        Err(e) => match aws_sdk_dynamodb::Error::from(e) {
            aws_sdk_dynamodb::Error::ResourceNotFoundException(_) => None,
            other => return Err(other.into()),
        },
    };
    match existing {
        None => {
            let mut req = ddb
                .create_table()
                .table_name(name)
                .billing_mode(BillingMode::PayPerRequest)
                .set_key_schema(Some(key_schema(keys::PK, keys::SK)));
            if kind == TableKind::Data {
                for a in [
                    keys::PK,
                    keys::SK,
                    keys::GSI1PK,
                    keys::GSI1SK,
                    keys::GSI2PK,
                    keys::GSI2SK,
                    keys::GSI3PK,
                    keys::GSI3SK,
                ] {
                    req = req.attribute_definitions(s_attr(a));
                }
                req = req.set_global_secondary_indexes(Some(data_indexes())).stream_specification(
                    StreamSpecification::builder()
                        .stream_enabled(true)
                        .stream_view_type(StreamViewType::NewAndOldImages)
                        .build()
                        .expect("set"),
                );
            } else {
                req = req.attribute_definitions(s_attr(keys::PK)).attribute_definitions(s_attr(keys::SK));
            }
            req.send().await.map_err(aws_sdk_dynamodb::Error::from)?;
            steps.push(step("dynamodb_table", name, Outcome::Created, None));
        }
        Some(table) => {
            if kind == TableKind::Data {
                check_data_table_layout(name, &table)?;
                let stream_ok = table.stream_specification().is_some_and(|s| {
                    s.stream_enabled() && s.stream_view_type() == Some(&StreamViewType::NewAndOldImages)
                });
                if stream_ok {
                    steps.push(step("dynamodb_table", name, Outcome::Unchanged, None));
                } else {
                    ddb.update_table()
                        .table_name(name)
                        .stream_specification(
                            StreamSpecification::builder()
                                .stream_enabled(true)
                                .stream_view_type(StreamViewType::NewAndOldImages)
                                .build()
                                .expect("set"),
                        )
                        .send()
                        .await
                        .map_err(aws_sdk_dynamodb::Error::from)?;
                    steps.push(step(
                        "dynamodb_table",
                        name,
                        Outcome::Updated,
                        Some("enabled stream NEW_AND_OLD_IMAGES".into()),
                    ));
                }
            } else {
                steps.push(step("dynamodb_table", name, Outcome::Unchanged, None));
            }
        }
    }
    wait_active(aws, name).await?;
    steps.push(ensure_ttl(aws, name).await?);
    if kind == TableKind::Data {
        steps.push(ensure_point_in_time_recovery(aws, name).await?);
    }
    Ok(steps)
}

fn check_data_table_layout(
    name: &str,
    table: &aws_sdk_dynamodb::types::TableDescription,
) -> Result<(), BootstrapError> {
    let want: HashMap<String, (String, Option<Vec<String>>)> = data_indexes()
        .into_iter()
        .map(|g| {
            let p = g.projection().cloned().unwrap_or_else(|| Projection::builder().build());
            let name = g.index_name().to_owned();
            let t = p.projection_type().map(|t| t.as_str().to_owned()).unwrap_or_default();
            let mut attrs = p.non_key_attributes().to_vec();
            attrs.sort();
            (name, (t, Some(attrs)))
        })
        .collect();
    let have: HashMap<String, (String, Option<Vec<String>>)> = table
        .global_secondary_indexes()
        .iter()
        .map(|g| {
            let p = g.projection();
            let t = p.and_then(|p| p.projection_type()).map(|t| t.as_str().to_owned()).unwrap_or_default();
            let mut attrs = p.map(|p| p.non_key_attributes().to_vec()).unwrap_or_default();
            attrs.sort();
            (g.index_name().unwrap_or_default().to_owned(), (t, Some(attrs)))
        })
        .collect();
    if want != have {
        let mut names: Vec<_> = have.keys().cloned().collect();
        names.sort();
        return Err(BootstrapError::Drift {
            table: name.into(),
            detail: format!("global secondary indexes are {names:?} with other projections than GSI1 ALL, GSI2 KEYS_ONLY, GSI3 INCLUDE"),
        });
    }
    Ok(())
}

async fn wait_active(aws: &AwsClients, name: &str) -> Result<(), BootstrapError> {
    // CreateTable is asynchronous on AWS (seconds to a minute); the local engine is immediate.
    for _ in 0..120 {
        let out = aws.dynamodb.describe_table().table_name(name).send().await.map_err(aws_sdk_dynamodb::Error::from)?;
        if out.table().and_then(|t| t.table_status()) == Some(&TableStatus::Active) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    Err(BootstrapError::NotActive(name.into()))
}

async fn ensure_ttl(aws: &AwsClients, table: &str) -> Result<Step, BootstrapError> {
    let out =
        aws.dynamodb.describe_time_to_live().table_name(table).send().await.map_err(aws_sdk_dynamodb::Error::from)?;
    let desc = out.time_to_live_description();
    let status = desc.and_then(|d| d.time_to_live_status());
    let attr = desc.and_then(|d| d.attribute_name());
    let enabled = matches!(status, Some(TimeToLiveStatus::Enabled | TimeToLiveStatus::Enabling));
    if enabled && attr == Some(keys::TTL) {
        return Ok(step("dynamodb_ttl", table, Outcome::Unchanged, None));
    }
    aws.dynamodb
        .update_time_to_live()
        .table_name(table)
        .time_to_live_specification(
            TimeToLiveSpecification::builder().enabled(true).attribute_name(keys::TTL).build().expect("set"),
        )
        .send()
        .await
        .map_err(aws_sdk_dynamodb::Error::from)?;
    Ok(step("dynamodb_ttl", table, Outcome::Updated, Some(format!("TTL on attribute {:?}", keys::TTL))))
}

/// Point-in-time recovery on the data table: 35 days of restorable history, so an operator
/// mistake or a bad deploy never loses submissions.
async fn ensure_point_in_time_recovery(aws: &AwsClients, table: &str) -> Result<Step, BootstrapError> {
    let out = aws
        .dynamodb
        .describe_continuous_backups()
        .table_name(table)
        .send()
        .await
        .map_err(aws_sdk_dynamodb::Error::from)?;
    let enabled = out
        .continuous_backups_description()
        .and_then(|d| d.point_in_time_recovery_description())
        .and_then(|p| p.point_in_time_recovery_status())
        == Some(&PointInTimeRecoveryStatus::Enabled);
    if enabled {
        return Ok(step("dynamodb_pitr", table, Outcome::Unchanged, None));
    }
    aws.dynamodb
        .update_continuous_backups()
        .table_name(table)
        .point_in_time_recovery_specification(
            PointInTimeRecoverySpecification::builder().point_in_time_recovery_enabled(true).build().expect("set"),
        )
        .send()
        .await
        .map_err(aws_sdk_dynamodb::Error::from)?;
    Ok(step("dynamodb_pitr", table, Outcome::Updated, Some("point-in-time recovery enabled".into())))
}

fn dlq_attributes() -> Vec<(QueueAttributeName, String)> {
    vec![
        (QueueAttributeName::MaximumMessageSize, MAX_MESSAGE_BYTES.to_string()),
        (QueueAttributeName::MessageRetentionPeriod, RETENTION_SECS.to_string()),
    ]
}

fn ingest_attributes(dlq_arn: &str) -> Vec<(QueueAttributeName, String)> {
    let redrive = serde_json::json!({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": MAX_RECEIVE_COUNT});
    vec![
        (QueueAttributeName::MaximumMessageSize, MAX_MESSAGE_BYTES.to_string()),
        (QueueAttributeName::MessageRetentionPeriod, RETENTION_SECS.to_string()),
        (QueueAttributeName::VisibilityTimeout, VISIBILITY_TIMEOUT_SECS.to_string()),
        (QueueAttributeName::ReceiveMessageWaitTimeSeconds, "20".into()),
        (QueueAttributeName::RedrivePolicy, redrive.to_string()),
    ]
}

/// The delivery work queue. Its messages are small (keys, attempt number, due time). The
/// visibility timeout covers the longest attempt (30 s) plus recording it; a message that keeps
/// failing to be handled (a worker crash loop) moves to the delivery DLQ.
fn delivery_attributes(dlq_arn: &str) -> Vec<(QueueAttributeName, String)> {
    let redrive = serde_json::json!({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": DELIVERY_MAX_RECEIVE_COUNT});
    vec![
        (QueueAttributeName::MessageRetentionPeriod, RETENTION_SECS.to_string()),
        (QueueAttributeName::VisibilityTimeout, DELIVERY_VISIBILITY_TIMEOUT_SECS.to_string()),
        (QueueAttributeName::ReceiveMessageWaitTimeSeconds, "20".into()),
        (QueueAttributeName::RedrivePolicy, redrive.to_string()),
    ]
}

/// Redrive policies come back with numbers as strings on some engines; compare them as JSON
/// with every scalar turned into a string.
fn same_attribute(name: &QueueAttributeName, want: &str, have: &str) -> bool {
    if *name != QueueAttributeName::RedrivePolicy {
        return want == have;
    }
    let norm = |s: &str| -> Option<HashMap<String, String>> {
        let v: serde_json::Map<String, serde_json::Value> = serde_json::from_str(s).ok()?;
        Some(v.into_iter().map(|(k, v)| (k, v.as_str().map(str::to_owned).unwrap_or_else(|| v.to_string()))).collect())
    };
    norm(want).is_some() && norm(want) == norm(have)
}

async fn ensure_queue(
    aws: &AwsClients,
    name: &str,
    attributes: Vec<(QueueAttributeName, String)>,
) -> Result<(String, Step), BootstrapError> {
    let sqs = &aws.sqs;
    let url = match sqs.get_queue_url().queue_name(name).send().await {
        Ok(out) => out.queue_url,
        Err(e) => match aws_sdk_sqs::Error::from(e) {
            aws_sdk_sqs::Error::QueueDoesNotExist(_) => None,
            other => return Err(other.into()),
        },
    };
    let Some(url) = url else {
        let out = sqs
            .create_queue()
            .queue_name(name)
            .set_attributes(Some(attributes.into_iter().collect()))
            .send()
            .await
            .map_err(aws_sdk_sqs::Error::from)?;
        let url = out.queue_url.unwrap_or_default();
        return Ok((url, step("sqs_queue", name, Outcome::Created, None)));
    };
    let have = sqs
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(QueueAttributeName::All)
        .send()
        .await
        .map_err(aws_sdk_sqs::Error::from)?
        .attributes
        .unwrap_or_default();
    let drift: HashMap<QueueAttributeName, String> =
        attributes.into_iter().filter(|(k, v)| !have.get(k).is_some_and(|h| same_attribute(k, v, h))).collect();
    if drift.is_empty() {
        return Ok((url, step("sqs_queue", name, Outcome::Unchanged, None)));
    }
    let mut changed: Vec<String> = drift.keys().map(|k| k.as_str().to_owned()).collect();
    changed.sort();
    sqs.set_queue_attributes()
        .queue_url(&url)
        .set_attributes(Some(drift))
        .send()
        .await
        .map_err(aws_sdk_sqs::Error::from)?;
    Ok((url, step("sqs_queue", name, Outcome::Updated, Some(format!("set {}", changed.join(", "))))))
}

async fn queue_arn(aws: &AwsClients, url: &str) -> Result<String, BootstrapError> {
    let out = aws
        .sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .map_err(aws_sdk_sqs::Error::from)?;
    Ok(out.attributes().and_then(|a| a.get(&QueueAttributeName::QueueArn)).cloned().unwrap_or_default())
}

async fn ensure_bus(aws: &AwsClients, name: &str) -> Result<Step, BootstrapError> {
    match aws.eventbridge.describe_event_bus().name(name).send().await {
        Ok(_) => return Ok(step("event_bus", name, Outcome::Unchanged, None)),
        Err(e) => match aws_sdk_eventbridge::Error::from(e) {
            aws_sdk_eventbridge::Error::ResourceNotFoundException(_) => {}
            other => return Err(other.into()),
        },
    }
    aws.eventbridge.create_event_bus().name(name).send().await.map_err(aws_sdk_eventbridge::Error::from)?;
    Ok(step("event_bus", name, Outcome::Created, None))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redrive_policies_compare_by_meaning() {
        let n = QueueAttributeName::RedrivePolicy;
        assert!(same_attribute(
            &n,
            r#"{"deadLetterTargetArn":"a","maxReceiveCount":5}"#,
            r#"{"maxReceiveCount":"5","deadLetterTargetArn":"a"}"#
        ));
        assert!(!same_attribute(
            &n,
            r#"{"deadLetterTargetArn":"a","maxReceiveCount":5}"#,
            r#"{"deadLetterTargetArn":"a","maxReceiveCount":3}"#
        ));
        assert!(same_attribute(&QueueAttributeName::VisibilityTimeout, "60", "60"));
    }
}

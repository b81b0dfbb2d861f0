//! Request metering against the local engine: every client `AwsClients` builds counts its
//! requests by service and operation.

use std::collections::BTreeMap;

use formbridge_shared::aws::request_counts;
use formbridge_shared::testing::fresh_stack;

/// Operations no other test in this binary sends, so the shared process-wide tally's difference
/// is this test's alone.
#[tokio::test]
async fn every_client_counts_its_requests_by_operation() {
    let (aws, names, report) = fresh_stack().await;
    let before = request_counts();

    aws.dynamodb.list_tables().send().await.unwrap();
    for n in 0..2 {
        aws.sqs
            .send_message()
            .queue_url(&report.ingest_queue_url)
            .message_body(format!("probe {n}"))
            .send()
            .await
            .unwrap();
    }
    aws.streams.list_streams().table_name(&names.table).send().await.unwrap();
    aws.eventbridge.list_event_buses().name_prefix(&names.event_bus).send().await.unwrap();

    let after = request_counts();
    let grew = |key: &str| count(&after, key) - count(&before, key);
    assert_eq!(grew("dynamodb:ListTables"), 1);
    assert_eq!(grew("sqs:SendMessage"), 2);
    assert_eq!(grew("dynamodbstreams:ListStreams"), 1);
    assert_eq!(grew("eventbridge:ListEventBuses"), 1);
}

fn count(tally: &BTreeMap<String, u64>, key: &str) -> u64 {
    tally.get(key).copied().unwrap_or(0)
}

/// Clients made for a component count its operations apart from every other component's, while
/// still counting in the process-wide tally, once.
#[tokio::test]
async fn each_components_operations_are_known_apart() {
    use formbridge_shared::aws::component_operations;
    let (aws, names, report) = fresh_stack().await;
    let before = request_counts();
    let reader = aws.for_component("probe-reader");
    let sender = aws.for_component("probe-sender");
    let table = reader.dynamodb.describe_table().table_name(&names.table).send().await.unwrap();
    // Not ListStreams: the test above counts that one process-wide, and the two run at once.
    let arn = table.table.and_then(|t| t.latest_stream_arn).unwrap();
    reader.streams.describe_stream().stream_arn(arn).send().await.unwrap();
    // An operation no other test in this binary sends, so the process-wide difference is ours.
    sender.sqs.list_queue_tags().queue_url(&report.ingest_queue_url).send().await.unwrap();
    // The plain clients are nobody's.
    aws.dynamodb.describe_time_to_live().table_name(&names.table).send().await.unwrap();

    let r = component_operations("probe-reader");
    let s = component_operations("probe-sender");
    assert_eq!(r.into_iter().collect::<Vec<_>>(), ["dynamodb:DescribeTable", "dynamodbstreams:DescribeStream"]);
    assert_eq!(s.into_iter().collect::<Vec<_>>(), ["sqs:ListQueueTags"]);
    assert!(component_operations("nobody").is_empty());
    let after = request_counts();
    assert_eq!(count(&after, "sqs:ListQueueTags") - count(&before, "sqs:ListQueueTags"), 1, "counted once");
}

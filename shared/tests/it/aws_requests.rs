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

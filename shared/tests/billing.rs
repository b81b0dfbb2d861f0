//! Billed units against the local engine: each client built by `AwsClients` bills what AWS would,
//! worked out from the typed requests and responses. A binary of its own, so the process-wide
//! tally's differences are this test's alone.

use std::collections::{BTreeMap, HashMap};

use aws_sdk_dynamodb::types::{AttributeValue, PutRequest, WriteRequest};
use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
use formbridge_shared::billing::snapshot;
use formbridge_shared::testing::fresh_stack;

fn item(pk: &str, filler: usize) -> HashMap<String, AttributeValue> {
    HashMap::from([
        ("PK".to_owned(), AttributeValue::S(pk.to_owned())),
        ("SK".to_owned(), AttributeValue::S("x".to_owned())),
        ("blob".to_owned(), AttributeValue::S("a".repeat(filler))),
    ])
}

#[tokio::test]
async fn every_call_bills_the_units_aws_would() {
    let (aws, names, report) = fresh_stack().await;
    let t = &names.table;
    let mut last = snapshot();
    let mut grew = move || {
        let now = snapshot();
        let d: BTreeMap<String, u64> = now
            .iter()
            .map(|(k, v)| (k.clone(), v - last.get(k).copied().unwrap_or(0)))
            .filter(|(_, v)| *v > 0)
            .collect();
        last = now;
        d
    };
    let units = |pairs: &[(&str, u64)]| pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect::<BTreeMap<_, _>>();

    // A 2,500-byte item: 3 write units; read back strongly (1 unit) and eventually (half).
    aws.dynamodb.put_item().table_name(t).set_item(Some(item("bill#1", 2_500))).send().await.unwrap();
    assert_eq!(grew(), units(&[("write_units", 3)]));
    let key = |pk: &str| {
        HashMap::from([
            ("PK".to_owned(), AttributeValue::S(pk.into())),
            ("SK".to_owned(), AttributeValue::S("x".into())),
        ])
    };
    aws.dynamodb.get_item().table_name(t).set_key(Some(key("bill#1"))).consistent_read(true).send().await.unwrap();
    assert_eq!(grew(), units(&[("read_units_tenths", 10)]));
    aws.dynamodb.get_item().table_name(t).set_key(Some(key("bill#1"))).send().await.unwrap();
    assert_eq!(grew(), units(&[("read_units_tenths", 5)]));

    // A write refused by its condition is billed; 1 KB or less is one unit.
    let refused = aws
        .dynamodb
        .put_item()
        .table_name(t)
        .set_item(Some(item("bill#1", 10)))
        .condition_expression("attribute_not_exists(PK)")
        .send()
        .await;
    assert!(refused.is_err());
    assert_eq!(grew(), units(&[("write_units", 1)]));

    // A batch of three items of 1, 2 and 5 units.
    let puts = [("bill#2", 100), ("bill#3", 1_500), ("bill#4", 4_500)]
        .iter()
        .map(|(pk, n)| {
            WriteRequest::builder()
                .put_request(PutRequest::builder().set_item(Some(item(pk, *n))).build().unwrap())
                .build()
        })
        .collect();
    aws.dynamodb.batch_write_item().request_items(t, puts).send().await.unwrap();
    assert_eq!(grew(), units(&[("write_units", 8)]));

    // A Query bills the returned items' total size: 2.5 KB strongly consistent, one unit.
    aws.dynamodb
        .query()
        .table_name(t)
        .key_condition_expression("PK = :pk")
        .expression_attribute_values(":pk", AttributeValue::S("bill#1".into()))
        .consistent_read(true)
        .send()
        .await
        .unwrap();
    assert_eq!(grew(), units(&[("read_units_tenths", 10)]));

    // SQS: a batch of ten 10 KB bodies is 100 KB, two 64 KiB requests; a receive of them is
    // billed by what it returns; an empty receive is one request.
    let entries = (0..10)
        .map(|i| {
            SendMessageBatchRequestEntry::builder()
                .id(format!("m{i}"))
                .message_body("b".repeat(10_000))
                .build()
                .unwrap()
        })
        .collect();
    aws.sqs.send_message_batch().queue_url(&report.ingest_queue_url).set_entries(Some(entries)).send().await.unwrap();
    assert_eq!(grew(), units(&[("sqs_requests", 2)]));
    let got =
        aws.sqs.receive_message().queue_url(&report.ingest_queue_url).max_number_of_messages(10).send().await.unwrap();
    let n = got.messages().len() as u64;
    assert!(n > 0);
    assert_eq!(grew(), units(&[("sqs_requests", (n * 10_000).div_ceil(65_536))]));

    // Streams: each GetRecords is one read request; describing the stream is free.
    let arn =
        aws.dynamodb.describe_table().table_name(t).send().await.unwrap().table.unwrap().latest_stream_arn.unwrap();
    let shard = aws
        .streams
        .describe_stream()
        .stream_arn(&arn)
        .send()
        .await
        .unwrap()
        .stream_description
        .unwrap()
        .shards
        .unwrap()[0]
        .shard_id
        .clone()
        .unwrap();
    let it = aws
        .streams
        .get_shard_iterator()
        .stream_arn(&arn)
        .shard_id(shard)
        .shard_iterator_type(aws_sdk_dynamodbstreams::types::ShardIteratorType::TrimHorizon)
        .send()
        .await
        .unwrap()
        .shard_iterator
        .unwrap();
    aws.streams.get_records().shard_iterator(it).send().await.unwrap();
    assert_eq!(grew(), units(&[("stream_reads", 1)]));

    // EventBridge: one entry, one event.
    aws.eventbridge
        .put_events()
        .entries(
            aws_sdk_eventbridge::types::PutEventsRequestEntry::builder()
                .event_bus_name(&names.event_bus)
                .source("formbridge.test")
                .detail_type("probe")
                .detail("{}")
                .build(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(grew(), units(&[("events", 1)]));
}

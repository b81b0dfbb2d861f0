//! Lambda mode, persister and aggregator: each handler invoked with the events Lambda's event
//! source mappings would build from what the local engine really holds (ReceiveMessage output
//! for the persister, GetRecords output for the aggregator), the results checked in the table.
//! A batch delivered twice, and batches re-cut as a bisecting mapping re-cuts them, leave the
//! metric totals exact: the high-water marks refuse what is already counted.

use std::collections::BTreeMap;

use aws_sdk_sqs::types::{MessageSystemAttributeName, SendMessageBatchRequestEntry};
use formbridge_shared::buckets::Granularity;
use formbridge_shared::sharding::ShardHistory;
use formbridge_shared::store::DataStore;
use formbridge_shared::submission::QueueMessage;
use formbridge_shared::tenant::TenantProfile;
use formbridge_shared::testing::{sqs_event, stream_event, stream_records};
use formbridge_shared::{sample, FormId, SubmissionId, TenantId};
use time::OffsetDateTime;

const N: usize = 45;
const FORMS: [&str; 3] = ["contact", "quote", "newsletter"];

async fn receive_all(aws: &formbridge_shared::aws::AwsClients, url: &str) -> Vec<aws_sdk_sqs::types::Message> {
    let r = aws
        .sqs
        .receive_message()
        .queue_url(url)
        .max_number_of_messages(10)
        .wait_time_seconds(1)
        .message_system_attribute_names(MessageSystemAttributeName::All)
        .message_attribute_names("All")
        .send()
        .await
        .unwrap();
    r.messages.unwrap_or_default()
}

async fn day_totals(store: &DataStore, tenant: &TenantId, form: Option<&FormId>) -> (u64, u64, u64) {
    let from = OffsetDateTime::parse("2026-11-20T00:00:00Z", &time::format_description::well_known::Rfc3339).unwrap();
    let to = OffsetDateTime::parse("2026-11-30T00:00:00Z", &time::format_description::well_known::Rfc3339).unwrap();
    let b = store.metrics(tenant, form, Granularity::Day, from, to).await.unwrap();
    (
        b.iter().map(|b| b.submission_count).sum(),
        b.iter().map(|b| b.raw_bytes).sum(),
        b.iter().map(|b| b.stored_bytes).sum(),
    )
}

/// A tenant with `shards` write shards.
async fn tenant(store: &DataStore, name: &str, shards: u16) -> (TenantId, TenantProfile) {
    let id = TenantId::parse(name).unwrap();
    let profile = TenantProfile {
        tenant_id: id.clone(),
        name: name.into(),
        created_at: "2026-11-25T08:00:00Z".into(),
        retention_days: 30,
        form_retention: Default::default(),
        shards: ShardHistory::new(shards, 0).unwrap(),
    };
    store.create_tenant(&profile).await.unwrap();
    (id, profile)
}

#[tokio::test]
async fn lambda_handlers_store_and_count_exactly_once_through_repeated_batches() {
    let (aws, names, report) = formbridge_shared::testing::fresh_stack().await;
    let store = DataStore::new(aws.dynamodb.clone(), names.table.clone());
    let (tenant, profile) = tenant(&store, "lam", 3).await;

    // N submissions over three forms and two days, and one poison message.
    let base = OffsetDateTime::parse("2026-11-25T22:00:00Z", &time::format_description::well_known::Rfc3339).unwrap();
    let mut per_form: BTreeMap<String, u64> = BTreeMap::new();
    let mut bodies: Vec<String> = (0..N)
        .map(|i| {
            let form = FORMS[i % 3];
            *per_form.entry(form.into()).or_default() += 1;
            let serde_json::Value::Object(p) = sample::text_heavy_payload(600 + 50 * (i % 40), i as u64) else {
                panic!()
            };
            let at = base + time::Duration::minutes(i as i64 * 5);
            let m = QueueMessage::new(
                &profile,
                "lam.example".parse().unwrap(),
                FormId::parse(form).unwrap(),
                SubmissionId::new(),
                at,
                p,
            );
            serde_json::to_string(&m).unwrap()
        })
        .collect();
    bodies.push("{not json".into());
    for chunk in bodies.chunks(10) {
        let entries = chunk
            .iter()
            .enumerate()
            .map(|(i, b)| SendMessageBatchRequestEntry::builder().id(i.to_string()).message_body(b).build().unwrap())
            .collect();
        aws.sqs
            .send_message_batch()
            .queue_url(&report.ingest_queue_url)
            .set_entries(Some(entries))
            .send()
            .await
            .unwrap();
    }
    let queue_arn = format!("arn:aws:sqs:us-east-1:123456789012:{}", names.ingest_queue);

    // A persister whose table does not exist stores nothing and says so, message by message.
    let mut broken = formbridge_persister::Config::for_resources(names.clone());
    broken.resources.table = format!("{}-missing", names.table);
    broken.write_retries = 0;
    let failing = formbridge_persister::LambdaHandler::new(&broken, &aws).await.unwrap();
    let messages = receive_all(&aws, &report.ingest_queue_url).await;
    assert!(!messages.is_empty());
    let response = failing.handle(sqs_event(&messages, &queue_arn)).await;
    let good = messages.iter().filter(|m| m.body() != Some("{not json")).count();
    assert_eq!(response.batch_item_failures.len(), good, "every message it could not write is named");
    let named: Vec<String> = response.batch_item_failures.iter().map(|f| f.item_identifier.clone()).collect();
    for m in &messages {
        let h = m.receipt_handle().unwrap();
        if named.iter().any(|id| Some(id.as_str()) == m.message_id()) {
            // Back on the queue at once (the mapping would leave it for its visibility timeout).
            let q = &report.ingest_queue_url;
            aws.sqs
                .change_message_visibility()
                .queue_url(q)
                .receipt_handle(h)
                .visibility_timeout(0)
                .send()
                .await
                .unwrap();
        } else {
            // Done (the poison message, now in the DLQ): the mapping deletes it.
            aws.sqs.delete_message().queue_url(&report.ingest_queue_url).receipt_handle(h).send().await.unwrap();
        }
    }

    // The real one: each batch stored; the mapping deletes what the response does not name.
    let persister =
        formbridge_persister::LambdaHandler::new(&formbridge_persister::Config::for_resources(names.clone()), &aws)
            .await
            .unwrap();
    loop {
        let messages = receive_all(&aws, &report.ingest_queue_url).await;
        if messages.is_empty() {
            break;
        }
        let response = persister.handle(sqs_event(&messages, &queue_arn)).await;
        assert!(response.batch_item_failures.is_empty(), "{:?}", response.batch_item_failures);
        for m in &messages {
            aws.sqs
                .delete_message()
                .queue_url(&report.ingest_queue_url)
                .receipt_handle(m.receipt_handle().unwrap())
                .send()
                .await
                .unwrap();
        }
    }
    let summary = persister.summary();
    assert_eq!(summary.written, N as u64, "{summary:?}");
    let dlq = receive_all(&aws, &report.ingest_dlq_url).await;
    assert_eq!(dlq.len(), 1, "the poison message is in the DLQ with its reason");
    assert_eq!(dlq[0].body(), Some("{not json"));
    let stored = store.recent_submissions(&tenant, &profile, 10_000).await.unwrap();
    assert_eq!(stored.len(), N);
    let raw: u64 = stored.iter().map(|s| s.raw_size as u64).sum();
    let kept: u64 = stored.iter().map(|s| s.stored_size as u64).sum();

    // The aggregator, fed the stream in batches of 7, each batch handed over twice (a mapping
    // retrying after a timeout), then the whole stream again re-cut into batches of 4 (a
    // bisecting retry, and a replay from the horizon).
    let aggregator =
        formbridge_aggregator::LambdaHandler::new(&formbridge_aggregator::Config::for_resources(names.clone()), &aws);
    let (stream_arn, records) = stream_records(&aws, &names.table).await;
    let submissions: Vec<_> = records
        .iter()
        .filter(|r| {
            let pk = r.dynamodb().and_then(|d| d.keys()).and_then(|k| k.get("PK")).and_then(|v| v.as_s().ok());
            pk.is_some_and(|pk| pk.starts_with("SUB#"))
        })
        .cloned()
        .collect();
    assert_eq!(submissions.len(), N, "one INSERT per stored submission (besides the tenant's own items)");
    for batch in records.chunks(7) {
        for _ in 0..2 {
            let response = aggregator.handle(stream_event(batch, &stream_arn)).await;
            assert!(response.batch_item_failures.is_empty(), "{:?}", response.batch_item_failures);
        }
    }
    assert_eq!(day_totals(&store, &tenant, None).await, (N as u64, raw, kept), "daily totals after repeated batches");
    for batch in records.chunks(4) {
        let response = aggregator.handle(stream_event(batch, &stream_arn)).await;
        assert!(response.batch_item_failures.is_empty());
    }
    assert_eq!(day_totals(&store, &tenant, None).await, (N as u64, raw, kept), "daily totals after a full replay");
    for (form, want) in &per_form {
        let f = FormId::parse(form).unwrap();
        assert_eq!(day_totals(&store, &tenant, Some(&f)).await.0, *want, "daily count of form {form}");
    }

    // An aggregator that cannot write names the first record it did not fold, for the retry.
    let mut broken = formbridge_aggregator::Config::for_resources(names.clone());
    broken.resources.table = format!("{}-missing", names.table);
    let failing = formbridge_aggregator::LambdaHandler::new(&broken, &aws);
    let response = failing.handle(stream_event(&submissions[..5], &stream_arn)).await;
    let first = submissions[..5]
        .iter()
        .map(|r| r.dynamodb().unwrap().sequence_number().unwrap().to_owned())
        .min_by_key(|s| formbridge_shared::stream::record::padded_seq(s));
    assert_eq!(response.batch_item_failures.len(), 1);
    assert_eq!(response.batch_item_failures[0].item_identifier, first);

    formbridge_shared::testing::assert_role_allows("persister", "PersisterRole");
    formbridge_shared::testing::assert_role_allows("aggregator", "AggregatorRole");
}

/// The binary itself, run as Lambda runs it (a stand-in for the Runtime API), handed the same
/// stream event twice: the totals count each submission once.
#[tokio::test]
async fn the_lambda_binary_counts_a_repeated_event_once() {
    use formbridge_shared::testing::{FakeLambdaRuntime, LambdaProcess};
    let (aws, names, _) = formbridge_shared::testing::fresh_stack().await;
    let store = DataStore::new(aws.dynamodb.clone(), names.table.clone());
    let (tenant, profile) = tenant(&store, "lambin", 2).await;
    let base = OffsetDateTime::parse("2026-11-25T10:00:00Z", &time::format_description::well_known::Rfc3339).unwrap();
    for i in 0..4u64 {
        let serde_json::Value::Object(p) = sample::text_heavy_payload(700, i) else { panic!() };
        let m = QueueMessage::new(
            &profile,
            "lambin.example".parse().unwrap(),
            FormId::parse("contact").unwrap(),
            SubmissionId::new(),
            base,
            p,
        );
        let item = formbridge_shared::submission::Submission::from_message(m)
            .unwrap()
            .to_item(&formbridge_shared::codec::PayloadCodec::default());
        aws.dynamodb.put_item().table_name(&names.table).set_item(Some(item)).send().await.unwrap();
    }
    let (arn, records) = stream_records(&aws, &names.table).await;
    let mut runtime = FakeLambdaRuntime::start().await;
    let binary = env!("CARGO_BIN_EXE_formbridge-aggregator-lambda");
    let _function = LambdaProcess::spawn(binary, &runtime, "aggregator", &names, &[]);
    for _ in 0..2 {
        let event = serde_json::to_value(stream_event(&records, &arn)).unwrap();
        let answer = runtime.invoke(event, std::time::Duration::from_secs(60)).await;
        assert_eq!(answer, Ok(serde_json::json!({ "batchItemFailures": [] })));
    }
    assert_eq!(day_totals(&store, &tenant, None).await.0, 4);
}

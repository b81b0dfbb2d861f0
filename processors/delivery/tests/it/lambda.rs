//! Lambda mode: the fan-out, worker and dead-letter handlers invoked with the events Lambda's
//! event source mappings would build from what the local engine really holds (GetRecords and
//! ReceiveMessage output), the results checked at a real receiver and in the table. A stream
//! batch handed over twice still sends each submission once.

use aws_sdk_sqs::types::MessageSystemAttributeName;
use formbridge_shared::delivery::{FailureReason, Records, Status};
use formbridge_shared::testing::{sqs_event, stream_event, stream_records};
use formbridge_shared::SubmissionId;

use crate::harness::*;

async fn receive(stack: &Stack, queue: &str) -> (String, Vec<aws_sdk_sqs::types::Message>) {
    let url = stack.aws.sqs.get_queue_url().queue_name(queue).send().await.unwrap().queue_url.unwrap();
    let r = stack
        .aws
        .sqs
        .receive_message()
        .queue_url(&url)
        .max_number_of_messages(10)
        .wait_time_seconds(1)
        .message_system_attribute_names(MessageSystemAttributeName::All)
        .message_attribute_names("All")
        .send()
        .await
        .unwrap();
    (url, r.messages.unwrap_or_default())
}

/// What the mapping does after an invocation: deletes every message the response did not name.
async fn settle_batch(stack: &Stack, url: &str, messages: &[aws_sdk_sqs::types::Message], named: &[String]) {
    for m in messages.iter().filter(|m| !named.iter().any(|n| Some(n.as_str()) == m.message_id())) {
        stack.aws.sqs.delete_message().queue_url(url).receipt_handle(m.receipt_handle().unwrap()).send().await.unwrap();
    }
}

#[tokio::test]
async fn lambda_handlers_deliver_each_submission_once_and_settle_dead_letters() {
    let stack = Stack::new("lamdlv").await;
    let rx = Receiver::start(None, always(200)).await;
    let (dest, _) = stack.destination(&rx.url, fast_policy(&[1]), 5_000).await;
    let handler = formbridge_delivery::LambdaHandler::new(&stack.config(), &stack.aws).await.unwrap();
    let ids = stack.submit(6).await;

    // The fan-out gets the stream's records twice (a mapping retrying a batch), and both packs
    // reach the worker in one batch; then a third time after the worker is done (a late retry).
    let (arn, records) = stream_records(&stack.aws, &stack.names.table).await;
    let queue = stack.names.delivery_queue.clone();
    let queue_arn = format!("arn:aws:sqs:us-east-1:123456789012:{queue}");
    for rounds in [2, 1] {
        for _ in 0..rounds {
            let response = handler.fan_out(stream_event(&records, &arn)).await;
            assert!(response.batch_item_failures.is_empty(), "{:?}", response.batch_item_failures);
        }
        // The worker drains the delivery queue, batch by batch, as its mapping would.
        for _ in 0..20 {
            let (url, messages) = receive(&stack, &queue).await;
            if messages.is_empty() {
                break;
            }
            let response = handler.work(sqs_event(&messages, &queue_arn)).await;
            let named: Vec<String> = response.batch_item_failures.iter().map(|f| f.item_identifier.clone()).collect();
            assert!(named.is_empty(), "{named:?}");
            settle_batch(&stack, &url, &messages, &named).await;
        }
    }
    let all = stack.wait_for(&ids, std::time::Duration::from_secs(30), all_are(Status::Succeeded)).await;
    let got = rx.received();
    assert_eq!(got.len(), ids.len(), "each submission sent once, though the fan-out ran three times: {got:?}");
    assert!(all.values().all(|h| h.len() == 1 && h[0].attempts.len() == 1));

    // An unreadable delivery message is named, so it stays for the redrive policy.
    let q = formbridge_shared::queue::Queue::open(stack.aws.sqs.clone(), &queue, "test").await.unwrap();
    q.send_all(&[formbridge_shared::queue::Outgoing::new("not a delivery message")]).await.unwrap();
    let mut named_total = 0;
    for _ in 0..5 {
        let (url, messages) = receive(&stack, &queue).await;
        if messages.is_empty() {
            break;
        }
        let response = handler.work(sqs_event(&messages, &queue_arn)).await;
        let named: Vec<String> = response.batch_item_failures.iter().map(|f| f.item_identifier.clone()).collect();
        named_total += named.len();
        settle_batch(&stack, &url, &messages, &named).await;
        if named_total > 0 {
            break;
        }
    }
    assert_eq!(named_total, 1, "the unreadable message, and only it, is reported not done");

    // The dead-letter handler settles a dead letter as a failed delivery.
    let lost = SubmissionId::new();
    stack.enqueue(&stack.names.delivery_dlq, &stack.message(&lost, &dest, 1)).await;
    let dlq = stack.names.delivery_dlq.clone();
    let (url, messages) = receive(&stack, &dlq).await;
    assert_eq!(messages.len(), 1);
    let response = handler.settle(sqs_event(&messages, &format!("arn:aws:sqs:us-east-1:123456789012:{dlq}"))).await;
    assert!(response.batch_item_failures.is_empty());
    settle_batch(&stack, &url, &messages, &[]).await;
    let key = formbridge_shared::keys::delivery(stack.tenant(), stack.message(&lost, &dest, 1).shard, &lost, &dest.id);
    let rec = Records::new(stack.store.clone(), "test").get(&key, true).await.unwrap().expect("a failed record");
    assert_eq!((rec.status, rec.reason), (Status::Failed, Some(FailureReason::DeadLettered)));

    formbridge_shared::testing::assert_role_allows("delivery", "DeliveryRole");
}

/// The binary itself: a handler that is not one of the three stops it at start, naming the
/// setting; the fan-out, run as Lambda runs it, queues the first attempts of a stream event.
#[tokio::test]
async fn the_lambda_binary_serves_its_handler_and_refuses_an_unknown_one() {
    use formbridge_shared::testing::{resource_env, FakeLambdaRuntime, LambdaProcess};
    let stack = Stack::new("lambin").await;
    let binary = env!("CARGO_BIN_EXE_formbridge-delivery-lambda");
    let runtime = FakeLambdaRuntime::start().await;
    let out = std::process::Command::new(binary)
        .envs(runtime.env("delivery"))
        .envs(resource_env(&stack.names))
        .env("FORMBRIDGE_MASTER_KEYS", &stack.keys_spec)
        .env("DELIVERY_LAMBDA_HANDLER", "everything")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("DELIVERY_LAMBDA_HANDLER"));

    let rx = Receiver::start(None, always(200)).await;
    let _ = stack.destination(&rx.url, fast_policy(&[1]), 5_000).await;
    let ids = stack.submit(3).await;
    let (arn, records) = stream_records(&stack.aws, &stack.names.table).await;
    let mut runtime = runtime;
    let extra = [
        ("FORMBRIDGE_MASTER_KEYS", stack.keys_spec.clone()),
        ("DELIVERY_LAMBDA_HANDLER", "fanout".to_string()),
        ("DELIVERY_ALLOW_LOOPBACK", "true".to_string()),
    ];
    let _function = LambdaProcess::spawn(binary, &runtime, "delivery-fanout", &stack.names, &extra);
    let event = serde_json::to_value(stream_event(&records, &arn)).unwrap();
    let answer = runtime.invoke(event, std::time::Duration::from_secs(60)).await;
    assert_eq!(answer, Ok(serde_json::json!({ "batchItemFailures": [] })));
    let (_, queued) = receive(&stack, &stack.names.delivery_queue).await;
    let packed: usize = queued
        .iter()
        .map(|m| formbridge_shared::delivery::DeliveryMessage::parse_all(m.body().unwrap()).unwrap().len())
        .sum();
    assert_eq!(packed, ids.len(), "one first attempt per submission, queued by the binary");
}

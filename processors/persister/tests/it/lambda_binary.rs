//! The persister's Lambda binary run as Lambda runs it: against a stand-in for the Runtime API,
//! handed the SQS event its mapping would build from the local engine's ReceiveMessage output.

use std::time::Duration;

use aws_sdk_sqs::types::MessageSystemAttributeName;
use formbridge_shared::testing::{sqs_event, FakeLambdaRuntime, LambdaProcess};

use crate::helpers::TestStack;

/// What the ingest queue hands out now, as a mapping receives it (with the system attributes).
async fn receive(stack: &TestStack) -> Vec<aws_sdk_sqs::types::Message> {
    let r = stack.aws.sqs.receive_message().queue_url(&stack.queue_url).max_number_of_messages(10).wait_time_seconds(1);
    let r = r.message_system_attribute_names(MessageSystemAttributeName::All).send().await.unwrap();
    r.messages.unwrap_or_default()
}

#[tokio::test]
async fn the_lambda_binary_stores_what_its_runtime_hands_it() {
    let stack = TestStack::new(2).await;
    let bodies: Vec<String> = (0..3).map(|i| serde_json::to_string(&stack.message(800, i)).unwrap()).collect();
    stack.send_bodies(&bodies).await;
    let received = receive(&stack).await;
    assert_eq!(received.len(), 3);

    let mut runtime = FakeLambdaRuntime::start().await;
    let binary = env!("CARGO_BIN_EXE_formbridge-persister-lambda");
    let _function = LambdaProcess::spawn(binary, &runtime, "persister", &stack.names, &[]);
    let event = serde_json::to_value(sqs_event(&received, "arn:aws:sqs:us-east-1:123456789012:ingest")).unwrap();
    let answer = runtime.invoke(event, Duration::from_secs(60)).await;
    assert_eq!(answer, Ok(serde_json::json!({ "batchItemFailures": [] })));
    assert_eq!(stack.stored().await.len(), 3, "every message of the event is stored");

    // A poison message alone: moved to the DLQ, so reported done.
    stack.send_bodies(&["{not json".to_string()]).await;
    let poison = receive(&stack).await;
    let event = serde_json::to_value(sqs_event(&poison, "arn:aws:sqs:us-east-1:123456789012:ingest")).unwrap();
    assert_eq!(
        runtime.invoke(event, Duration::from_secs(60)).await,
        Ok(serde_json::json!({ "batchItemFailures": [] }))
    );
    assert_eq!(stack.queue_depth(&stack.dlq_url).await.0, 1, "the poison message is in the DLQ");
}

//! The delivery worker as Lambda functions: `DELIVERY_LAMBDA_HANDLER` = `fanout` (DynamoDB
//! Streams mapping), `worker` (the delivery queue) or `dead-letters` (the delivery DLQ).
//! Otherwise configured by the same environment variables as the process.

use clap::{Parser, ValueEnum};
use formbridge_delivery::{Config, LambdaHandler, LambdaRole};
use formbridge_shared::aws::AwsClients;
use lambda_runtime::{service_fn, LambdaEvent};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    let config = Config::parse_from(["formbridge-delivery-lambda"]);
    if let Err(e) = config.validate() {
        eprintln!("formbridge-delivery-lambda: {e}");
        std::process::exit(2);
    }
    let role = std::env::var("DELIVERY_LAMBDA_HANDLER").unwrap_or_default();
    let Ok(role) = LambdaRole::from_str(&role, true) else {
        eprintln!(
            "formbridge-delivery-lambda: DELIVERY_LAMBDA_HANDLER must be fanout, worker or dead-letters (got {role:?})"
        );
        std::process::exit(2);
    };
    formbridge_shared::telemetry::init();
    let aws = AwsClients::from_env().await;
    let handler = LambdaHandler::new(&config, &aws).await?;
    let (handler, dynamo, resources) = (&handler, &aws.dynamodb, &config.resources);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<serde_json::Value>| async move {
        let answer = handler.invoke(role, event.payload).await;
        formbridge_shared::costs::flush_if_due(dynamo, resources).await;
        Ok::<_, lambda_runtime::Error>(answer?)
    }))
    .await
}

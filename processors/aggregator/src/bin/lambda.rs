//! The aggregator as a Lambda function (DynamoDB Streams event source mapping on the data
//! table's stream). Configured by the same environment variables as the process.

use clap::Parser;
use formbridge_aggregator::{Config, LambdaHandler};
use formbridge_shared::aws::AwsClients;
use formbridge_shared::lambda::StreamEvent;
use lambda_runtime::{service_fn, LambdaEvent};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    let config = Config::parse_from(["formbridge-aggregator-lambda"]);
    if let Err(e) = config.validate() {
        eprintln!("formbridge-aggregator-lambda: {e}");
        std::process::exit(2);
    }
    formbridge_shared::telemetry::init();
    let aws = AwsClients::from_env().await;
    let handler = LambdaHandler::new(&config, &aws);
    let (handler, dynamo, resources) = (&handler, &aws.dynamodb, &config.resources);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<StreamEvent>| async move {
        let answer = handler.handle(event.payload).await;
        formbridge_shared::costs::flush_if_due(dynamo, resources).await;
        Ok::<_, lambda_runtime::Error>(answer)
    }))
    .await
}

//! The persister as a Lambda function (SQS event source mapping on the ingest queue, with
//! `ReportBatchItemFailures`). Configured by the same environment variables as the process.

use clap::Parser;
use formbridge_persister::{Config, LambdaHandler};
use formbridge_shared::aws::AwsClients;
use formbridge_shared::lambda::SqsEvent;
use lambda_runtime::{service_fn, LambdaEvent};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    let config = Config::parse_from(["formbridge-persister-lambda"]);
    if let Err(e) = config.validate() {
        eprintln!("formbridge-persister-lambda: {e}");
        std::process::exit(2);
    }
    formbridge_shared::telemetry::init();
    let aws = AwsClients::from_env().await;
    let handler = LambdaHandler::new(&config, &aws).await?;
    let (handler, dynamo, resources) = (&handler, &aws.dynamodb, &config.resources);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        let answer = handler.handle(event.payload).await;
        formbridge_shared::costs::flush_if_due(dynamo, resources).await;
        Ok::<_, lambda_runtime::Error>(answer)
    }))
    .await
}

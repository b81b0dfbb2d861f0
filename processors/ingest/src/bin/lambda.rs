//! The ingest endpoint as a Lambda function behind a Function URL (or an HTTP API), configured by
//! the same environment variables as the process. See `formbridge_ingest::lambda_app`.

use clap::Parser;
use formbridge_ingest::{lambda_app, Config};
use formbridge_shared::aws::AwsClients;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    let config = Config::parse_from(["formbridge-ingest-lambda"]);
    if let Err(e) = config.validate() {
        eprintln!("formbridge-ingest-lambda: {e}");
        std::process::exit(2);
    }
    formbridge_shared::telemetry::init();
    let aws = AwsClients::from_env().await;
    let app = lambda_app(&config, &aws).await?;
    // Frozen between invocations: the units counted per tenant are written after a request
    // once the flush interval has passed.
    let (dynamo, resources) = (aws.dynamodb.clone(), config.resources.clone());
    let app = app.layer(axum::middleware::from_fn(move |req: axum::extract::Request, next: axum::middleware::Next| {
        let (dynamo, resources) = (dynamo.clone(), resources.clone());
        async move {
            let response = next.run(req).await;
            formbridge_shared::costs::flush_if_due(&dynamo, &resources).await;
            response
        }
    }));
    lambda_http::run(app).await
}

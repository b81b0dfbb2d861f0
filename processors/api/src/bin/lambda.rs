//! The tenant API and dashboard as a Lambda function behind a Function URL in
//! `RESPONSE_STREAM` mode (so the dashboard's live updates stream, up to the function's
//! timeout, after which the browser reconnects). Configured by the same environment variables
//! as the process.

use clap::Parser;
use formbridge_api::{router, Config};
use formbridge_shared::aws::AwsClients;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    let config = Config::parse_from(["formbridge-api-lambda"]);
    if let Err(e) = config.validate() {
        eprintln!("formbridge-api-lambda: {e}");
        std::process::exit(2);
    }
    formbridge_shared::telemetry::init();
    let aws = AwsClients::from_env().await;
    let app = router(&config, &aws, None, tokio_util::sync::CancellationToken::new()).await?;
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
    lambda_http::run_with_streaming_response(app).await
}

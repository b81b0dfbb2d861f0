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
    let app = lambda_app(&config, &AwsClients::from_env().await).await?;
    lambda_http::run(app).await
}

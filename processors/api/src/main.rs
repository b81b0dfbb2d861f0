use anyhow::Context;
use clap::Parser;
use formbridge_api::{run, Config};
use formbridge_shared::{aws::AwsClients, shutdown, telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    if let Err(e) = config.validate() {
        eprintln!("formbridge-api: {e}");
        std::process::exit(2);
    }
    telemetry::init();
    let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .context("cannot install the metrics recorder")?;
    telemetry::process_metrics("api");
    let aws = AwsClients::from_env().await;
    run(config, aws, Some(handle), shutdown::on_signal()).await?;
    Ok(())
}

use clap::Parser;
use formbridge_aggregator::{run, Config};
use formbridge_shared::{aws::AwsClients, shutdown, telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    if let Err(e) = config.validate() {
        eprintln!("formbridge-aggregator: {e}");
        std::process::exit(2);
    }
    telemetry::init();
    telemetry::serve_metrics(config.metrics_addr, "AGGREGATOR_METRICS_ADDR", "aggregator")
        .map_err(anyhow::Error::msg)?;
    let aws = AwsClients::from_env().await;
    run(config, aws, shutdown::on_signal()).await?;
    Ok(())
}

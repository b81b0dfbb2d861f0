use clap::Parser;
use formbridge_persister::{run, Config};
use formbridge_shared::{aws::AwsClients, shutdown, telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    if let Err(e) = config.validate() {
        eprintln!("formbridge-persister: {e}");
        std::process::exit(2);
    }
    telemetry::init();
    telemetry::serve_metrics(config.metrics_addr, "PERSISTER_METRICS_ADDR", "persister").map_err(anyhow::Error::msg)?;
    let aws = AwsClients::from_env().await;
    let summary = run(config, aws, shutdown::on_signal()).await?;
    tracing::info!(?summary, "exiting");
    Ok(())
}

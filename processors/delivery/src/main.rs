use anyhow::Context;
use clap::Parser;
use formbridge_delivery::{run, Config};
use formbridge_shared::{aws::AwsClients, shutdown, telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    if let Err(e) = config.validate() {
        eprintln!("formbridge-delivery: {e}");
        std::process::exit(2);
    }
    telemetry::init();
    if let Some(addr) = config.metrics_addr {
        metrics_exporter_prometheus::PrometheusBuilder::new()
            .with_http_listener(addr)
            .install()
            .with_context(|| format!("cannot serve metrics on DELIVERY_METRICS_ADDR={addr}"))?;
    }
    let aws = AwsClients::from_env().await;
    run(config, aws, shutdown::on_signal()).await?;
    Ok(())
}

use std::io::BufWriter;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use formbridge_loadtest::queue_io::{self, Mode, Pace};

/// Form-Bridge load tooling. AWS settings come from the SDK's standard configuration
/// (AWS_REGION, AWS_ENDPOINT_URL, ...).
#[derive(Debug, Parser)]
#[command(name = "formbridge-loadtest", version)]
struct Cli {
    #[command(flatten)]
    resources: formbridge_shared::aws::ResourceNames,
    #[command(flatten)]
    keyring: formbridge_shared::secrets::KeyringArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// A load run: generated tenants, sites and destinations (pointing at the built-in
    /// receiver), submissions at a fixed, ramping or closed-loop rate, the engine's own ceiling,
    /// then a report (table on stdout, JSON file) with the goals met or missed. Ingest (for
    /// --target http), the persister and the delivery worker must be running.
    Run(formbridge_loadtest::run::RunArgs),
    /// Record a queue's messages into a JSON Lines file.
    Record {
        /// Queue name (e.g. formbridge-ingest, formbridge-ingest-dlq).
        #[arg(long)]
        queue: String,
        #[arg(long)]
        out: PathBuf,
        /// Leave the messages on the queue (default: drain, deleting each once it is written).
        #[arg(long)]
        peek: bool,
        #[arg(long, default_value_t = 1_000_000)]
        max: usize,
    },
    /// Put a recording back onto a queue.
    Replay {
        #[arg(long)]
        queue: String,
        #[arg(long = "in")]
        input: PathBuf,
        /// 1 = the recorded pace, 10 = ten times faster, 0 = as fast as the backlog allows.
        #[arg(long, default_value_t = 1.0)]
        speed: f64,
        /// Wait while the queue holds more than this many visible messages.
        #[arg(long, default_value_t = 200)]
        max_backlog: u64,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let aws = formbridge_shared::aws::AwsClients::from_env().await;
    match cli.command {
        Command::Run(args) => {
            let keyring = match cli.resources.validate().and_then(|_| cli.keyring.load()) {
                Ok(k) => k,
                Err(e) => {
                    eprintln!("formbridge-loadtest: {e}");
                    std::process::exit(2);
                }
            };
            let report = match formbridge_loadtest::run::run(&args, &aws, &cli.resources, &keyring).await {
                Ok(r) => r,
                Err(e @ formbridge_loadtest::run::RunError::Setting(..)) => {
                    eprintln!("formbridge-loadtest: {e}");
                    std::process::exit(2);
                }
                Err(e) => return Err(e.into()),
            };
            print!("{}", report.table());
            println!("  report written to {}", args.report.display());
        }
        Command::Record { queue, out, peek, max } => {
            let url = queue_io::queue_url(&aws.sqs, &queue).await?;
            let file = std::fs::File::create(&out).with_context(|| format!("--out {}", out.display()))?;
            let mode = if peek { Mode::Peek } else { Mode::Drain };
            let n = queue_io::record(&aws.sqs, &url, mode, max, &mut BufWriter::new(file)).await?;
            println!("{}", serde_json::json!({ "queue": queue, "recorded": n, "file": out, "drained": !peek }));
        }
        Command::Replay { queue, input, speed, max_backlog } => {
            if speed.is_nan() || speed < 0.0 {
                eprintln!("formbridge-loadtest: invalid setting --speed = {speed}: must be 0 or more");
                std::process::exit(2);
            }
            let file = std::fs::File::open(&input).with_context(|| format!("--in {}", input.display()))?;
            let messages = queue_io::read(std::io::BufReader::new(file))?;
            let url = queue_io::queue_url(&aws.sqs, &queue).await?;
            let speed = if speed == 0.0 { f64::INFINITY } else { speed };
            let waited = queue_io::replay(&aws.sqs, &url, &messages, Pace { speed, max_backlog }).await?;
            println!(
                "{}",
                serde_json::json!({ "queue": queue, "replayed": messages.len(), "backlog_wait_ms": waited.as_millis() as u64 })
            );
        }
    }
    Ok(())
}

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
    /// Time the read API's 50-item page against the engine's raw Query of the same partition,
    /// in one run (a running formbridge-api is needed; the tenant is seeded here).
    ApiBench(formbridge_loadtest::api_bench::ApiBenchArgs),
    /// Two instances of every process on an engine of the run's own, under seeded random faults
    /// (SIGKILL and restart, a hung or unreachable engine, misbehaving destinations) while signed
    /// submissions flow; then lost / stored / delivered / counted, answers to senders, and the
    /// time to converge after the last fault (table, and JSON at --report). Exits 1 unless
    /// nothing was lost and the metrics are exact.
    Chaos(formbridge_loadtest::chaos::ChaosArgs),
    /// Train a shared compression dictionary from a corpus of payloads, or sweep dictionary size
    /// and brotli quality over held-out payloads (the corpus: loadtest/corpus/).
    Dictionary {
        #[command(subcommand)]
        command: DictionaryCommand,
    },
}

#[derive(Debug, Subcommand)]
enum DictionaryCommand {
    /// Train with COVER and write the dictionary's bytes.
    Train {
        /// JSON Lines of payload objects (e.g. target/corpus/train.jsonl).
        #[arg(long)]
        corpus: PathBuf,
        /// Dictionary size in bytes.
        #[arg(long, default_value_t = 32 * 1024)]
        size: usize,
        /// COVER segment length.
        #[arg(long, default_value_t = 512)]
        k: usize,
        /// COVER d-mer length (4 to 8).
        #[arg(long, default_value_t = 8)]
        d: usize,
        #[arg(long)]
        out: PathBuf,
    },
    /// Space saved by band and time per payload, for dictionaries of several sizes trained on
    /// --train, at several brotli qualities, measured on each --heldout file; plain brotli and
    /// dictionary v1 beside them on the same bytes.
    Sweep {
        #[arg(long)]
        train: PathBuf,
        /// Held-out JSON Lines files, never used for training (repeatable).
        #[arg(long, required = true)]
        heldout: Vec<PathBuf>,
        /// Dictionary sizes in bytes (comma-separated).
        #[arg(long, value_delimiter = ',', default_value = "8192,16384,32768,65536,131072")]
        sizes: Vec<usize>,
        /// Brotli qualities (comma-separated).
        #[arg(long, value_delimiter = ',', default_value = "4,5,6,7,9,11")]
        qualities: Vec<u32>,
        #[arg(long, default_value_t = 512)]
        k: usize,
        #[arg(long, default_value_t = 8)]
        d: usize,
        /// Also write each trained dictionary into this folder.
        #[arg(long)]
        keep: Option<PathBuf>,
    },
}

fn bad_setting(name: &str, value: impl std::fmt::Display, why: &str) -> ! {
    eprintln!("formbridge-loadtest: invalid setting {name} = {value}: {why}");
    std::process::exit(2);
}

fn check_cover(size: usize, k: usize, d: usize) -> formbridge_loadtest::dictionary::CoverParams {
    if !(4..=8).contains(&d) {
        bad_setting("--d", d, "must be 4 to 8");
    }
    if k < d || k > size {
        bad_setting("--k", k, "must be at least --d and at most the dictionary size");
    }
    formbridge_loadtest::dictionary::CoverParams { size, k, d }
}

/// A corpus that cannot be read or holds nothing is a bad setting: exit 2, naming the flag.
fn read_corpus(path: &std::path::Path, flag: &str) -> Vec<Vec<u8>> {
    match formbridge_loadtest::dictionary::read_payloads(path) {
        Err(e) => bad_setting(flag, path.display(), &e.to_string()),
        Ok(p) if p.is_empty() => bad_setting(flag, path.display(), "holds no payloads"),
        Ok(p) => p,
    }
}

fn dictionary(command: DictionaryCommand) -> anyhow::Result<()> {
    use formbridge_loadtest::dictionary::{by_band, train_cover};
    use formbridge_shared::codec::{brotli_compress, brotli_compress_with_dictionary, DICTIONARY_V1};
    match command {
        DictionaryCommand::Train { corpus, size, k, d, out } => {
            let params = check_cover(size, k, d);
            let samples = read_corpus(&corpus, "--corpus");
            let dict = train_cover(&samples, params);
            std::fs::write(&out, &dict).with_context(|| format!("--out {}", out.display()))?;
            println!("{}", serde_json::json!({ "samples": samples.len(), "bytes": dict.len(), "out": out }));
        }
        DictionaryCommand::Sweep { train, heldout, sizes, qualities, k, d, keep } => {
            for q in &qualities {
                if *q > 11 {
                    bad_setting("--qualities", q, "brotli qualities are 0 to 11");
                }
            }
            let samples = read_corpus(&train, "--train");
            let sets: Vec<(PathBuf, Vec<Vec<u8>>)> =
                heldout.iter().map(|p| (p.clone(), read_corpus(p, "--heldout"))).collect();
            let mut dicts: Vec<(String, Vec<u8>)> =
                vec![("none".into(), Vec::new()), ("v1".into(), DICTIONARY_V1.to_vec())];
            for size in &sizes {
                let t = std::time::Instant::now();
                let dict = train_cover(&samples, check_cover(*size, k.min(*size), d));
                eprintln!(
                    "trained {size} B (k {k}, d {d}) on {} samples in {:.1} s",
                    samples.len(),
                    t.elapsed().as_secs_f64()
                );
                if let Some(dir) = &keep {
                    std::fs::create_dir_all(dir).with_context(|| format!("--keep {}", dir.display()))?;
                    std::fs::write(dir.join(format!("cover-{size}.bin")), &dict)?;
                }
                dicts.push((format!("{}K", size / 1024), dict));
            }
            println!(
                "| set | dictionary | quality | < 1 KiB | 1-2 KiB | 2-4 KiB | 4-16 KiB | 1-4 KiB | µs per payload |"
            );
            println!("|---|---|---|---|---|---|---|---|---|");
            for (path, set) in &sets {
                let name = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
                for (label, dict) in &dicts {
                    for q in &qualities {
                        // The window must reach back over the dictionary and the whole payload.
                        let need = dict.len() + set.iter().map(Vec::len).max().unwrap_or(0);
                        let lgwin = (need.next_power_of_two().trailing_zeros()).clamp(18, 24);
                        let t = std::time::Instant::now();
                        let bands = by_band(set, |raw| {
                            if dict.is_empty() {
                                brotli_compress(raw, *q, lgwin).len()
                            } else {
                                brotli_compress_with_dictionary(raw, *q, lgwin, dict).len()
                            }
                        });
                        let us = t.elapsed().as_secs_f64() * 1e6 / set.len() as f64;
                        let cells: Vec<String> = bands.iter().map(|(_, f)| format!("{:.1}%", f.saved_pct())).collect();
                        println!("| {name} | {label} | q{q} (w{lgwin}) | {} | {us:.0} |", cells.join(" | "));
                    }
                }
            }
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Command::Dictionary { command } = cli.command {
        return dictionary(command);
    }
    if let Command::Chaos(args) = &cli.command {
        return match formbridge_loadtest::chaos::chaos(args).await {
            Ok(report) => {
                print!("{}", report.table());
                println!("  report written to {}", args.report.display());
                if !report.ok {
                    std::process::exit(1);
                }
                Ok(())
            }
            Err(e @ formbridge_loadtest::chaos::ChaosError::Setting(..)) => {
                eprintln!("formbridge-loadtest: {e}");
                std::process::exit(2);
            }
            Err(e) => Err(e.into()),
        };
    }
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
        Command::ApiBench(args) => {
            let keyring = match cli.resources.validate().and_then(|_| cli.keyring.load()) {
                Ok(k) => k,
                Err(e) => {
                    eprintln!("formbridge-loadtest: {e}");
                    std::process::exit(2);
                }
            };
            let store = formbridge_shared::store::DataStore::new(aws.dynamodb.clone(), cli.resources.table.clone());
            let out = args.report.clone();
            let report = formbridge_loadtest::api_bench::run(store, keyring, args).await?;
            let json = serde_json::to_string_pretty(&report)?;
            println!("{json}");
            if let Some(path) = out {
                std::fs::write(&path, json + "\n").with_context(|| format!("writing {}", path.display()))?;
            }
        }
        Command::Dictionary { .. } | Command::Chaos(_) => unreachable!("handled before the AWS clients are built"),
    }
    Ok(())
}

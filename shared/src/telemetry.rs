//! Logging and metrics set-up shared by every process. Logging: `tracing` with JSON lines when stdout is not a
//! terminal (so log shippers get structured fields), human-readable output otherwise.
//! `RUST_LOG` filters as usual; the default is `info`.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    // A second init (tests start several processes in one binary) is harmless: keep the first.
    let _ = if std::io::stderr().is_terminal() {
        builder.try_init()
    } else {
        builder.json().flatten_event(true).try_init()
    };
}

/// Metrics carried by log lines, for CloudWatch: the template's metric filters
/// (`deploy/aws/formbridge.yaml`, `AWS::Logs::MetricFilter`) match `{ $.metric = "<name>" }` on
/// the JSON log lines and publish `$.value` in the `FormBridge` namespace. This works the same
/// for Lambda functions and ECS tasks, needs no permission, and costs only the log bytes. A test
/// checks that every name here has its filter in the template.
pub mod log_metric {
    /// Seconds between a stream record's creation and its handling; field `group` too.
    pub const STREAM_LAG_SECONDS: &str = "stream_lag_seconds";
    /// A delivery that ended failed (value 1).
    pub const DELIVERY_FAILED: &str = "delivery_failed";
    /// Stream records trimmed before they were read: data loss (value 1).
    pub const STREAM_TRIMMED: &str = "stream_trimmed";
    /// A 5xx answer of the ingest endpoint (value 1).
    pub const INGEST_5XX: &str = "ingest_5xx";
    pub const ALL: [&str; 4] = [STREAM_LAG_SECONDS, DELIVERY_FAILED, STREAM_TRIMMED, INGEST_5XX];

    /// Writes one metric line.
    pub fn emit(name: &'static str, value: u64) {
        tracing::info!(metric = name, value, "metric");
    }

    /// Writes one stream-lag line for a consumer group.
    pub fn stream_lag(group: &str, lag_s: u64) {
        tracing::info!(metric = STREAM_LAG_SECONDS, value = lag_s, group, "metric");
    }

    /// The lag of the newest record of a batch (epoch seconds of its creation), if known.
    pub fn lag_of(created_s: Option<i64>) -> Option<u64> {
        let now = crate::clock::now_ms() / 1000;
        created_s.and_then(|c| u64::try_from(c).ok()).map(|c| now.saturating_sub(c))
    }
}

/// Serves Prometheus metrics on `addr` when set (the processes' `*_METRICS_ADDR` setting, named
/// by `setting` in the error), with this process's CPU time (see [`process_metrics`]).
pub fn serve_metrics(addr: Option<std::net::SocketAddr>, setting: &str, process: &'static str) -> Result<(), String> {
    let Some(addr) = addr else { return Ok(()) };
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_http_listener(addr)
        .install()
        .map_err(|e| format!("cannot serve metrics on {setting}={addr}: {e}"))?;
    process_metrics(process);
    Ok(())
}

/// How often the CPU gauge is refreshed: a scrape sees CPU time at most this old.
const CPU_SAMPLE_EVERY: std::time::Duration = std::time::Duration::from_millis(200);

/// Publishes, from a background task, `process_cpu_seconds_total` (user + system CPU time of the
/// whole process, all threads, from `/proc/self/stat`) and `formbridge_process_info{process}`,
/// which names the process so that a load run can report CPU per process. Call inside a Tokio
/// runtime. Nothing is published where `/proc` is missing.
pub fn process_metrics(process: &'static str) {
    metrics::gauge!("formbridge_process_info", "process" => process).set(1.0);
    tokio::spawn(async move {
        loop {
            if let Some(s) = cpu_seconds() {
                metrics::gauge!("process_cpu_seconds_total").set(s);
            }
            tokio::time::sleep(CPU_SAMPLE_EVERY).await;
        }
    });
}

/// User + system CPU seconds of this process (every thread), from `/proc/self/stat`.
pub fn cpu_seconds() -> Option<f64> {
    parse_stat_cpu(&std::fs::read_to_string("/proc/self/stat").ok()?)
}

/// `utime` and `stime` (fields 14 and 15, in clock ticks of 1/100 s, Linux's fixed `USER_HZ`)
/// of a `/proc/<pid>/stat` line. The command name (field 2) may hold spaces and parentheses, so
/// fields are counted after its last `)`.
pub fn parse_stat_cpu(stat: &str) -> Option<f64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the name: field 3 is f[0], so field 14 is f[11] and field 15 is f[12].
    let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

#[cfg(test)]
mod tests {
    /// Every metric the code writes as a log line has its metric filter in the CloudFormation
    /// template, and every filter reads a metric the code writes.
    #[test]
    fn every_log_metric_has_its_filter_in_the_template_and_back() {
        let text = include_str!("../../deploy/aws/formbridge.yaml");
        let docs = yaml_rust2::YamlLoader::load_from_str(text).unwrap();
        let filtered: std::collections::BTreeSet<String> = docs[0]["Resources"]
            .as_hash()
            .unwrap()
            .values()
            .filter(|r| r["Type"].as_str() == Some("AWS::Logs::MetricFilter"))
            .map(|r| {
                let pattern = r["Properties"]["FilterPattern"].as_str().unwrap();
                let name = pattern.strip_prefix("{ $.metric = \"").and_then(|p| p.strip_suffix("\" }"));
                name.unwrap_or_else(|| panic!("a filter pattern of another shape: {pattern}")).to_owned()
            })
            .collect();
        let written: std::collections::BTreeSet<String> =
            super::log_metric::ALL.iter().map(|s| s.to_string()).collect();
        assert_eq!(filtered, written);
    }

    #[test]
    fn cpu_time_is_read_after_the_command_name() {
        let line = "4242 (formbridge (x) y) S 1 2 3 4 5 6 7 8 9 10 250 130 0 0 20 0 8 0 100 2000 30";
        assert_eq!(super::parse_stat_cpu(line), Some(3.8));
        assert_eq!(super::parse_stat_cpu("garbage"), None);
        assert!(super::cpu_seconds().is_some_and(|s| s >= 0.0));
    }
}

//! The monthly bill of a deployment, item by item, before it runs: `formbridge-admin cost-model`.
//!
//! Request prices come from [`crate::billing::Prices`], the table the load test and the API's cost
//! figures use; the platform's own prices (Lambda, Fargate, the load balancer, CloudWatch, Secrets
//! Manager, storage) from [`PlatformPrices`]. Both are us-east-1 on-demand list prices.
//!
//! What one submission costs in requests is [`PerSubmission`]: the counts of the pipeline's
//! design at a low rate, where every submission travels alone (no batch to share a call with).
//! A measured load run can replace them (`--from-report`). What a deployment costs while idle is
//! [`Idle`]: the polling each compute mode does whether or not anything arrives.
//!
//! Two totals are given: at list price, and after AWS's always-free tier (not the 12-month one),
//! which an account shares with everything else it runs.

use serde::Serialize;

use crate::billing::Prices;

/// Where the processes run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Lambda,
    Ecs,
}

/// The platform's prices (us-east-1, on demand, x86_64; check them before quoting).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PlatformPrices {
    pub lambda_per_million_requests: f64,
    pub lambda_per_gb_second: f64,
    pub fargate_per_vcpu_hour: f64,
    pub fargate_per_gb_hour: f64,
    /// An Application Load Balancer's hour, plus one LCU-hour (the least it bills).
    pub alb_per_hour: f64,
    pub logs_ingest_per_gb: f64,
    pub logs_storage_per_gb_month: f64,
    pub alarm_per_month: f64,
    pub dashboard_per_month: f64,
    pub custom_metric_per_month: f64,
    pub secret_per_month: f64,
    pub dynamodb_storage_per_gb_month: f64,
    pub pitr_per_gb_month: f64,
}

impl Default for PlatformPrices {
    fn default() -> Self {
        Self {
            lambda_per_million_requests: 0.20,
            lambda_per_gb_second: 0.000_016_666_7,
            fargate_per_vcpu_hour: 0.040_48,
            fargate_per_gb_hour: 0.004_445,
            alb_per_hour: 0.0225 + 0.008,
            logs_ingest_per_gb: 0.50,
            logs_storage_per_gb_month: 0.03,
            alarm_per_month: 0.10,
            dashboard_per_month: 3.00,
            custom_metric_per_month: 0.30,
            secret_per_month: 0.40,
            dynamodb_storage_per_gb_month: 0.25,
            pitr_per_gb_month: 0.20,
        }
    }
}

/// What one submission with `destinations` destinations costs in requests, at a low rate.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PerSubmission {
    /// The submission item (a 2 KiB form compresses to about 1.8 units), one delivery record per
    /// destination, and the aggregator's hourly and daily metric updates (about 2 units each:
    /// the item is returned and billed whole) for the submission and for each delivery.
    pub write_units: f64,
    /// Ingest's site and tenant look-ups (a cold cache at this rate), the fan-out's destination
    /// list, and the worker's duplicate check before each first send (Lambda mode).
    pub read_units: f64,
    /// Enqueue and delete at ingest and persister; the delivery pack's send and delete. The
    /// receives are the pollers', counted in [`Idle`].
    pub sqs_requests: f64,
    /// Lambda invocations: ingest, persister, aggregator (the submission and each delivery
    /// record), fan-out, worker.
    pub lambda_invocations: f64,
    /// Log bytes written (the runtime's three lines per invocation, and ours).
    pub log_bytes: f64,
    /// Bytes stored per submission (item and its delivery record, compressed).
    pub stored_bytes: f64,
}

impl PerSubmission {
    pub fn design(destinations: f64) -> Self {
        Self {
            write_units: 1.8 + destinations * 1.0 + 4.0 + destinations * 4.0,
            read_units: 1.5 + 1.0 + destinations * 0.5,
            sqs_requests: 2.0 + 2.0,
            lambda_invocations: 3.0 + 2.0 * destinations + 1.0,
            log_bytes: 900.0 * (4.0 + 2.0 * destinations),
            stored_bytes: 1_400.0 + 300.0 * destinations,
        }
    }
}

/// The workload.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Workload {
    pub submissions: u64,
    pub sites: u32,
    pub destinations_per_site: u32,
    pub retention_days: u32,
    pub log_retention_days: u32,
}

/// Settings that move the idle bill.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Idle {
    /// SQS queues read by a poller: ingest, delivery and the delivery DLQ.
    pub polled_queues: u32,
    /// Long polls in flight per queue. Lambda's SQS event source mapping keeps 5 open while idle
    /// (AWS's documented starting point); the processes run 2 (persister, delivery worker).
    pub pollers_per_queue: u32,
    /// Seconds a long poll waits when nothing arrives.
    pub wait_seconds: u32,
    /// ECS mode: how often an idle stream reader calls GetRecords (`STREAM_IDLE_MAX_MS`), per
    /// consumer group (2) and open shard.
    pub stream_idle_poll_seconds: f64,
    /// ECS mode: lease renewals (conditional writes to the control table), per group and shard.
    pub lease_renew_seconds: f64,
    pub open_shards: u32,
    /// CloudWatch: the template's alarms, dashboards and metric-filter metrics.
    pub alarms: u32,
    pub dashboards: u32,
    pub custom_metrics: u32,
    /// Lambda: memory and the mean billed duration of an invocation.
    pub lambda_memory_mb: u32,
    pub lambda_ms: f64,
    /// ECS: tasks (one per process) and the size of each.
    pub ecs_tasks: u32,
    pub ecs_vcpu: f64,
    pub ecs_gb: f64,
}

/// What the CloudFormation template creates in a mode, for the bill: CloudWatch alarms,
/// dashboards, the metrics its log metric filters make (`metric_filters`), and SQS event source
/// mappings (each an idle poller in Lambda mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct TemplateCounts {
    pub alarms: u32,
    pub dashboards: u32,
    pub metric_filters: u32,
    pub sqs_mappings: u32,
}

impl TemplateCounts {
    /// Counts the resources of `template` (`deploy/aws/formbridge.yaml`) created in `mode`: those
    /// without a condition, or with `IsLambda` / `IsEcs` matching it.
    pub fn from_template(template: &str, mode: Mode) -> Result<Self, String> {
        use yaml_rust2::YamlLoader;
        let docs = YamlLoader::load_from_str(template).map_err(|e| format!("the template is not YAML: {e}"))?;
        let resources = docs.first().and_then(|d| d["Resources"].as_hash()).ok_or("the template has no Resources")?;
        let wanted = match mode {
            Mode::Lambda => "IsLambda",
            Mode::Ecs => "IsEcs",
        };
        let mut c = TemplateCounts { alarms: 0, dashboards: 0, metric_filters: 0, sqs_mappings: 0 };
        let sqs_queues: Vec<String> = resources
            .iter()
            .filter(|(_, r)| r["Type"].as_str() == Some("AWS::SQS::Queue"))
            .filter_map(|(k, _)| k.as_str().map(str::to_owned))
            .collect();
        // (metric name, has dimensions) of each metric filter: a metric made by several filters
        // is one metric, unless its dimension tells them apart (a filter per consumer group).
        let mut metrics: Vec<(String, bool)> = Vec::new();
        for (_, r) in resources {
            match r["Condition"].as_str() {
                None => {}
                Some(cond) if cond == wanted => {}
                Some(_) => continue,
            }
            match r["Type"].as_str() {
                Some("AWS::CloudWatch::Alarm") => c.alarms += 1,
                Some("AWS::CloudWatch::Dashboard") => c.dashboards += 1,
                Some("AWS::Logs::MetricFilter") => {
                    for t in r["Properties"]["MetricTransformations"].as_vec().into_iter().flatten() {
                        let name = t["MetricName"].as_str().unwrap_or_default().to_owned();
                        let dimensioned = !t["Dimensions"].is_badvalue();
                        metrics.push((name, dimensioned));
                    }
                }
                Some("AWS::Lambda::EventSourceMapping") => {
                    // `!GetAtt Queue.Arn` reads as the string "Queue.Arn".
                    let source = r["Properties"]["EventSourceArn"].as_str().unwrap_or_default();
                    if sqs_queues.iter().any(|q| source.split('.').next() == Some(q.as_str())) {
                        c.sqs_mappings += 1;
                    }
                }
                _ => {}
            }
        }
        let distinct: std::collections::BTreeSet<&String> = metrics.iter().map(|(n, _)| n).collect();
        c.metric_filters = distinct
            .iter()
            .map(|n| {
                let of: Vec<_> = metrics.iter().filter(|(m, _)| m == *n).collect();
                if of.iter().any(|(_, d)| *d) {
                    of.len() as u32
                } else {
                    1
                }
            })
            .sum();
        Ok(c)
    }
}

impl Idle {
    /// The idle settings of `mode` for what the template creates.
    pub fn from_template(mode: Mode, counts: TemplateCounts) -> Self {
        let mut idle = Self::for_mode(mode);
        idle.alarms = counts.alarms;
        idle.dashboards = counts.dashboards;
        idle.custom_metrics = counts.metric_filters;
        if mode == Mode::Lambda {
            idle.polled_queues = counts.sqs_mappings;
        }
        idle
    }

    pub fn for_mode(mode: Mode) -> Self {
        let lambda = mode == Mode::Lambda;
        Self {
            polled_queues: 3,
            pollers_per_queue: if lambda { 5 } else { 2 },
            wait_seconds: 20,
            stream_idle_poll_seconds: 2.0,
            lease_renew_seconds: 10.0 / 3.0,
            open_shards: 1,
            alarms: if lambda { 12 } else { 11 },
            dashboards: 1,
            custom_metrics: 5,
            lambda_memory_mb: 256,
            lambda_ms: 60.0,
            ecs_tasks: 5,
            ecs_vcpu: 0.25,
            ecs_gb: 0.5,
        }
    }
}

/// One line of the bill.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LineItem {
    pub item: &'static str,
    pub quantity: f64,
    pub unit: &'static str,
    pub dollars: f64,
    /// Dollars after the always-free tier.
    pub after_free_tier: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Bill {
    pub mode: Mode,
    pub workload: Workload,
    pub per_submission: PerSubmission,
    pub idle: Idle,
    pub items: Vec<LineItem>,
    pub total: f64,
    pub total_after_free_tier: f64,
}

const SECONDS_PER_MONTH: f64 = 730.0 * 3600.0;

fn line(item: &'static str, quantity: f64, unit: &'static str, price_each: f64, free: f64) -> LineItem {
    LineItem {
        item,
        quantity,
        unit,
        dollars: quantity * price_each,
        after_free_tier: (quantity - free).max(0.0) * price_each,
    }
}

/// The monthly bill of `workload` in `mode`.
pub fn monthly(
    mode: Mode,
    workload: Workload,
    per: PerSubmission,
    idle: Idle,
    prices: &Prices,
    platform: &PlatformPrices,
) -> Bill {
    let n = workload.submissions as f64;
    let m = 1e-6;
    let mut items = Vec::new();
    let polls =
        f64::from(idle.polled_queues * idle.pollers_per_queue) * SECONDS_PER_MONTH / f64::from(idle.wait_seconds);
    let sqs = n * per.sqs_requests + polls;
    // The always-free tiers used below: SQS 1M requests, Lambda 1M requests and 400,000 GB-s,
    // DynamoDB 25 GB of storage, CloudWatch 10 alarms, 3 dashboards, 10 metrics, 5 GB of logs.
    items.push(line(
        "DynamoDB write units (submissions, deliveries, metrics)",
        n * per.write_units,
        "write units",
        prices.per_million_write_units * m,
        0.0,
    ));
    items.push(line("DynamoDB read units", n * per.read_units, "read units", prices.per_million_read_units * m, 0.0));
    items.push(line(
        "SQS requests (sends and deletes, and idle long polls)",
        sqs,
        "requests",
        prices.per_million_sqs_requests * m,
        1e6,
    ));
    let stored_gb = n * per.stored_bytes * f64::from(workload.retention_days) / 30.0 / 1e9;
    items.push(line("DynamoDB storage", stored_gb, "GB-month", platform.dynamodb_storage_per_gb_month, 25.0));
    items.push(line("DynamoDB point-in-time recovery", stored_gb, "GB-month", platform.pitr_per_gb_month, 0.0));
    match mode {
        Mode::Lambda => {
            let invocations = n * per.lambda_invocations;
            items.push(line(
                "Lambda requests",
                invocations,
                "invocations",
                platform.lambda_per_million_requests * m,
                1e6,
            ));
            let gb_s = invocations * idle.lambda_ms / 1000.0 * f64::from(idle.lambda_memory_mb) / 1024.0;
            items.push(line("Lambda compute", gb_s, "GB-seconds", platform.lambda_per_gb_second, 400_000.0));
            // Lambda reads the stream for free: no idle stream cost in this mode.
            items.push(line("DynamoDB Streams reads (Lambda reads them free)", 0.0, "requests", 0.0, 0.0));
        }
        Mode::Ecs => {
            let hours = 730.0 * f64::from(idle.ecs_tasks);
            items.push(line("Fargate vCPU", hours * idle.ecs_vcpu, "vCPU-hours", platform.fargate_per_vcpu_hour, 0.0));
            items.push(line("Fargate memory", hours * idle.ecs_gb, "GB-hours", platform.fargate_per_gb_hour, 0.0));
            items.push(line("Application Load Balancer (ingest and API)", 730.0, "hours", platform.alb_per_hour, 0.0));
            let readers = 2.0 * f64::from(idle.open_shards);
            let reads = readers * SECONDS_PER_MONTH / idle.stream_idle_poll_seconds;
            items.push(line(
                "DynamoDB Streams GetRecords (idle polling, 2 groups)",
                reads,
                "requests",
                prices.per_million_stream_reads * m,
                0.0,
            ));
            let renewals = readers * SECONDS_PER_MONTH / idle.lease_renew_seconds;
            items.push(line(
                "Lease renewals (control table writes)",
                renewals,
                "write units",
                prices.per_million_write_units * m,
                0.0,
            ));
        }
    }
    let log_gb = n * per.log_bytes / 1e9 + if mode == Mode::Ecs { 0.05 } else { 0.0 };
    items.push(line("CloudWatch Logs ingestion", log_gb, "GB", platform.logs_ingest_per_gb, 5.0));
    let kept = log_gb * f64::from(workload.log_retention_days) / 30.0;
    items.push(line("CloudWatch Logs storage", kept, "GB-month", platform.logs_storage_per_gb_month, 5.0));
    items.push(line("CloudWatch alarms", f64::from(idle.alarms), "alarms", platform.alarm_per_month, 10.0));
    items.push(line(
        "CloudWatch dashboard",
        f64::from(idle.dashboards),
        "dashboards",
        platform.dashboard_per_month,
        3.0,
    ));
    items.push(line(
        "CloudWatch metrics from log filters",
        f64::from(idle.custom_metrics),
        "metrics",
        platform.custom_metric_per_month,
        10.0,
    ));
    items.push(line("Secrets Manager (the master keys)", 1.0, "secrets", platform.secret_per_month, 0.0));
    items.push(line("AWS Budgets (three, without actions)", 3.0, "budgets", 0.0, 0.0));
    let total = items.iter().map(|i| i.dollars).sum();
    let total_after_free_tier = items.iter().map(|i| i.after_free_tier).sum();
    Bill { mode, workload, per_submission: per, idle, items, total, total_after_free_tier }
}

impl Bill {
    /// The items, largest first, that make up at least 80% of the total.
    pub fn dominant(&self) -> Vec<&LineItem> {
        let mut sorted: Vec<&LineItem> = self.items.iter().filter(|i| i.dollars > 0.0).collect();
        sorted.sort_by(|a, b| b.dollars.total_cmp(&a.dollars));
        let mut out = Vec::new();
        let mut sum = 0.0;
        for i in sorted {
            if sum >= 0.8 * self.total {
                break;
            }
            sum += i.dollars;
            out.push(i);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bill(mode: Mode, submissions: u64) -> Bill {
        let w =
            Workload { submissions, sites: 10, destinations_per_site: 1, retention_days: 30, log_retention_days: 14 };
        monthly(
            mode,
            w,
            PerSubmission::design(1.0),
            Idle::for_mode(mode),
            &Prices::default(),
            &PlatformPrices::default(),
        )
    }

    #[test]
    fn the_template_is_counted_per_mode() {
        let t = include_str!("../../deploy/aws/formbridge.yaml");
        let lambda = TemplateCounts::from_template(t, Mode::Lambda).unwrap();
        let ecs = TemplateCounts::from_template(t, Mode::Ecs).unwrap();
        assert!(lambda.alarms > 0 && ecs.alarms > 0 && lambda.dashboards == 1 && ecs.dashboards == 1);
        assert!(lambda.metric_filters > 0 && ecs.metric_filters > 0);
        assert_eq!(ecs.sqs_mappings, 0, "no event source mappings in ECS mode");
        assert_eq!(lambda.sqs_mappings, 3, "the ingest queue, the delivery queue and its DLQ");
        let mini = "Resources:\n  A:\n    Type: AWS::CloudWatch::Alarm\n  B:\n    Type: AWS::CloudWatch::Alarm\n    Condition: IsEcs\n";
        assert_eq!(TemplateCounts::from_template(mini, Mode::Lambda).unwrap().alarms, 1);
        assert_eq!(TemplateCounts::from_template(mini, Mode::Ecs).unwrap().alarms, 2);
    }

    #[test]
    fn the_totals_are_the_sums_of_their_items_and_the_free_tier_only_lowers_them() {
        for mode in [Mode::Lambda, Mode::Ecs] {
            let b = bill(mode, 1000);
            let sum: f64 = b.items.iter().map(|i| i.dollars).sum();
            assert!((b.total - sum).abs() < 1e-9);
            assert!(b.items.iter().all(|i| i.after_free_tier <= i.dollars + 1e-12 && i.after_free_tier >= 0.0));
            assert!(b.total_after_free_tier <= b.total);
        }
    }

    #[test]
    fn traffic_moves_only_the_per_submission_items_and_idle_costs_stay() {
        let (small, big) = (bill(Mode::Lambda, 1000), bill(Mode::Lambda, 1_000_000));
        let item = |b: &Bill, name: &str| b.items.iter().find(|i| i.item.starts_with(name)).unwrap().dollars;
        let writes = "DynamoDB write units";
        assert!(
            (item(&big, writes) / item(&small, writes) - 1000.0).abs() < 1e-6,
            "write units scale with submissions"
        );
        assert_eq!(item(&big, "CloudWatch alarms"), item(&small, "CloudWatch alarms"));
        // ECS idles at its tasks' hours whatever the traffic.
        let (e_small, e_big) = (bill(Mode::Ecs, 1000), bill(Mode::Ecs, 10_000));
        assert_eq!(item(&e_small, "Fargate vCPU"), item(&e_big, "Fargate vCPU"));
    }

    #[test]
    fn the_smallest_deployment_is_dominated_by_fixed_costs_in_both_modes() {
        let lambda = bill(Mode::Lambda, 1000);
        let ecs = bill(Mode::Ecs, 1000);
        assert!(ecs.total > 10.0 * lambda.total, "ECS idles at its tasks: {} vs {}", ecs.total, lambda.total);
        assert!(ecs.dominant().iter().any(|i| i.item.starts_with("Fargate")));
        assert!(lambda.dominant().iter().all(|i| !i.item.starts_with("DynamoDB write")), "{:?}", lambda.dominant());
    }
}

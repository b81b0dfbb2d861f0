//! The aggregator: a consumer group on the `FormBridgeData` stream that keeps hourly and daily
//! metric items per tenant and per form.
//!
//! Exactly once, by the high-water marks alone: each metric item remembers, per stream shard, the
//! last sequence number folded into it (`hw#<shard>`), and every update of it is one plain
//! conditional UpdateItem, applied only if its records start after that mark, and moving the
//! mark in the same write. The checkpoint moves after every bucket of the batch is written.
//!
//! - A crash between the bucket writes and the checkpoint re-reads the batch: each bucket that was
//!   written refuses the replay (its mark is past the records), the aggregator reads the marks,
//!   drops record by record what each bucket already holds, and writes the rest.
//! - A worker that lost its lease and still writes is refused the same way, bucket by bucket,
//!   whichever of the two writes first; and it cannot move the checkpoint.
//!
//! No transaction is needed (TransactWriteItems costs twice the write units, and the local
//! engine copies the table for every item of one): a single item's update is atomic, and the
//! marks make every update idempotent.

pub mod config;
pub mod fold;
pub mod hot;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use futures::StreamExt;

use aws_sdk_dynamodb::types::{AttributeValue, Update};
use formbridge_shared::attrs::metrics as mt;
use formbridge_shared::keys::{self, ItemKey};
use formbridge_shared::stream::{
    self, BatchProcessor, Change, Committer, ConsumerConfig, DynamoStreams, LeaseTable, ProcessError,
};
use tokio_util::sync::CancellationToken;

pub use config::Config;
use fold::{Bucket, Delta, Granularity};

/// Buckets written per run of records (runs bound the memory of one fold, nothing else).
pub const MAX_BUCKETS_PER_RUN: usize = 99;

/// Bucket writes in flight at once. Few: on the local engine, which serves one request at a
/// time, a burst of metric updates would queue every other process's requests behind it.
const CONCURRENT_WRITES: usize = 4;

/// Keeps metric items up to date from stream records.
#[derive(Debug)]
pub struct Aggregator {
    pub client: aws_sdk_dynamodb::Client,
    pub table: String,
    pub hourly_ttl_days: i64,
    pub daily_ttl_days: i64,
    /// Tenant buckets known to already hold a `form_stats` map.
    with_form_stats: Mutex<HashSet<ItemKey>>,
    /// Cost alerts, checked when a batch changes cost items (see `formbridge_shared::costs`).
    alerts: Option<(aws_sdk_eventbridge::Client, formbridge_shared::costs::AlertSettings)>,
    /// Hot partitions: measured from the submissions, answered by growing the tenant.
    hot: Option<(aws_sdk_eventbridge::Client, hot::HotDetector)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FormStats {
    None,
    Exists,
    Missing,
}

fn n(v: u64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

impl Aggregator {
    pub fn new(client: aws_sdk_dynamodb::Client, table: String, hourly_ttl_days: i64, daily_ttl_days: i64) -> Self {
        Self {
            client,
            table,
            hourly_ttl_days,
            daily_ttl_days,
            with_form_stats: Mutex::new(HashSet::new()),
            alerts: None,
            hot: None,
        }
    }

    /// Checks cost thresholds too.
    #[must_use]
    pub fn with_alerts(
        mut self,
        events: aws_sdk_eventbridge::Client,
        settings: formbridge_shared::costs::AlertSettings,
    ) -> Self {
        self.alerts = Some((events, settings));
        self
    }

    /// Measures shards' write rates and grows hot tenants too.
    #[must_use]
    pub fn with_hot(mut self, events: aws_sdk_eventbridge::Client, settings: hot::HotSettings) -> Self {
        self.hot = Some((events, hot::HotDetector::new(settings)));
        self
    }

    /// Adds a batch's submissions to the shards' write rates, and grows a tenant whose shard
    /// runs hot (see [`hot`]).
    pub async fn check_hot_partitions(&self, records: &[Change]) -> Result<Vec<serde_json::Value>, ProcessError> {
        let Some((events, detector)) = &self.hot else { return Ok(Vec::new()) };
        let now_ms = formbridge_shared::clock::now_ms();
        let hot = detector.observe(records, i64::try_from(now_ms / 1000).unwrap_or(i64::MAX));
        if hot.is_empty() {
            return Ok(Vec::new());
        }
        let store =
            formbridge_shared::store::DataStore::new(self.client.clone(), self.table.clone()).acting_as("aggregator");
        detector
            .respond(&store, events, &hot, now_ms)
            .await
            .map_err(|e| ProcessError::Failed(format!("hot partitions: {e}")))
    }

    /// Checks the cost thresholds of the tenants (and the system) whose cost items `records`
    /// changed. Idempotent: each crossing is recorded once, under a condition.
    pub async fn check_cost_alerts(&self, records: &[Change]) -> Result<(), ProcessError> {
        let Some((events, settings)) = &self.alerts else { return Ok(()) };
        let scopes = formbridge_shared::costs::touched(records);
        if scopes.is_empty() {
            return Ok(());
        }
        formbridge_shared::costs::check_alerts(
            &self.client,
            events,
            &self.table,
            settings,
            &scopes,
            time::OffsetDateTime::now_utc(),
        )
        .await
        .map(|_| ())
        .map_err(|e| ProcessError::Failed(format!("cost alerts: {e}")))
    }

    fn form_stats_mode(&self, bucket: &Bucket, delta: &Delta) -> FormStats {
        if delta.forms.is_empty() {
            FormStats::None
        } else if self.with_form_stats.lock().unwrap_or_else(|e| e.into_inner()).contains(&bucket.key()) {
            FormStats::Exists
        } else {
            FormStats::Missing
        }
    }

    /// The UpdateItem of one bucket: ADD the counters, remember the shard's high-water mark.
    fn update(&self, shard: &str, bucket: &Bucket, delta: &Delta, form_stats: FormStats) -> Update {
        let key = bucket.key();
        let ttl_days = match bucket.granularity {
            Granularity::Hour => self.hourly_ttl_days,
            Granularity::Day => self.daily_ttl_days,
        };
        let mut set = vec!["#ttl = if_not_exists(#ttl, :ttl)".to_owned(), "#hw = :last".to_owned()];
        let mut add = vec![
            format!("{} :subs", mt::SUBMISSIONS),
            format!("{} :raw", mt::RAW_BYTES),
            format!("{} :stored", mt::STORED_BYTES),
            format!("{} :wcu", mt::WRITE_UNITS),
        ];
        let mut cond = vec!["(attribute_not_exists(#hw) OR #hw < :first)".to_owned()];
        let mut u = Update::builder()
            .table_name(&self.table)
            .key(keys::PK, AttributeValue::S(key.pk.clone()))
            .key(keys::SK, AttributeValue::S(key.sk.clone()))
            .expression_attribute_names("#ttl", keys::TTL)
            .expression_attribute_names("#hw", mt::high_water(shard))
            .expression_attribute_values(":ttl", n(u64::try_from(bucket.start + ttl_days * 86_400).unwrap_or(0)))
            .expression_attribute_values(":last", AttributeValue::S(delta.last_seq.clone()))
            .expression_attribute_values(":first", AttributeValue::S(delta.first_seq.clone()))
            .expression_attribute_values(":subs", n(delta.submissions))
            .expression_attribute_values(":raw", n(delta.raw_bytes))
            .expression_attribute_values(":stored", n(delta.stored_bytes))
            .expression_attribute_values(":wcu", n(delta.write_units));
        if bucket.granularity == Granularity::Day {
            // GSI3: every tenant's day, for operator dashboards.
            let idx = keys::daily_metrics_by_day(&bucket.tenant, at(bucket.start).date());
            set.push("GSI3PK = :g3pk, GSI3SK = :g3sk".into());
            u = u
                .expression_attribute_values(":g3pk", AttributeValue::S(idx.pk))
                .expression_attribute_values(":g3sk", AttributeValue::S(idx.sk));
        }
        match form_stats {
            FormStats::None => {}
            FormStats::Exists => {
                cond.push(format!("attribute_exists({})", mt::FORM_STATS));
                u = u.expression_attribute_values(":zero", n(0));
                for (i, (form, fd)) in delta.forms.iter().enumerate() {
                    let fs = mt::FORM_STATS;
                    set.push(format!("{fs}.#f{i} = if_not_exists({fs}.#f{i}, :zero) + :f{i}"));
                    u = u
                        .expression_attribute_names(format!("#f{i}"), form)
                        .expression_attribute_values(format!(":f{i}"), n(fd.submissions));
                }
            }
            FormStats::Missing => {
                cond.push(format!("attribute_not_exists({})", mt::FORM_STATS));
                let m = delta.forms.iter().map(|(f, fd)| (f.clone(), n(fd.submissions))).collect();
                set.push(format!("{} = :fs", mt::FORM_STATS));
                u = u.expression_attribute_values(":fs", AttributeValue::M(m));
            }
        }
        // Each form's bytes and write units: top-level counters, which ADD creates.
        for (i, (form, fd)) in delta.forms.iter().enumerate() {
            for (field, v) in
                [(mt::RAW_BYTES, fd.raw_bytes), (mt::STORED_BYTES, fd.stored_bytes), (mt::WRITE_UNITS, fd.write_units)]
            {
                add.push(format!("#g{i}{field} :g{i}{field}"));
                u = u
                    .expression_attribute_names(format!("#g{i}{field}"), mt::form(form, field))
                    .expression_attribute_values(format!(":g{i}{field}"), n(v));
            }
        }
        for (i, (dest, d)) in delta.deliveries.iter().enumerate() {
            let histogram = d.latency_histogram.iter().enumerate().map(|(i, v)| (mt::latency_field(i), *v));
            let counters = [
                (mt::SUCCEEDED, d.succeeded),
                (mt::FAILED, d.failed),
                (mt::ATTEMPTS, d.attempts),
                (mt::LATENCY_MS, d.latency_ms),
            ]
            .map(|(f, v)| (f.to_owned(), v));
            for (field, v) in counters.into_iter().chain(histogram) {
                if v > 0 {
                    add.push(format!("#d{i}{field} :d{i}{field}"));
                    u = u
                        .expression_attribute_names(format!("#d{i}{field}"), mt::delivery(dest, &field))
                        .expression_attribute_values(format!(":d{i}{field}"), n(v));
                }
            }
        }
        let expr = format!("SET {} ADD {}", set.join(", "), add.join(", "));
        u.update_expression(expr)
            .condition_expression(cond.join(" AND "))
            .build()
            .expect("table, key and expression set")
    }

    /// Writes one bucket. `Ok(false)` when its conditions refused the write (its mark is past
    /// these records, or its `form_stats` is not as assumed).
    async fn write(&self, update: Update) -> Result<bool, ProcessError> {
        let r = self
            .client
            .update_item()
            .table_name(update.table_name)
            .set_key(Some(update.key))
            .update_expression(update.update_expression)
            .set_condition_expression(update.condition_expression)
            .set_expression_attribute_names(update.expression_attribute_names)
            .set_expression_attribute_values(update.expression_attribute_values)
            // The whole item back, so the meter bills what AWS bills for an update: the item's
            // size, not only the values this write sets.
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllNew)
            .send()
            .await
            .map_err(aws_sdk_dynamodb::Error::from);
        match r {
            Ok(_) => Ok(true),
            Err(aws_sdk_dynamodb::Error::ConditionalCheckFailedException(_)) => Ok(false),
            Err(e) => Err(ProcessError::Failed(e.to_string())),
        }
    }

    /// What a bucket already holds: its high-water mark for `shard` and whether it has form_stats.
    async fn inspect(&self, shard: &str, bucket: &Bucket) -> Result<(Option<String>, bool), ProcessError> {
        let key = bucket.key();
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(keys::PK, AttributeValue::S(key.pk))
            .key(keys::SK, AttributeValue::S(key.sk))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| ProcessError::Failed(aws_sdk_dynamodb::Error::from(e).to_string()))?;
        let item = out.item.unwrap_or_default();
        let hw = item.get(&mt::high_water(shard)).and_then(|v| v.as_s().ok()).cloned();
        Ok((hw, item.contains_key(mt::FORM_STATS)))
    }

    /// Writes the buckets of one run of records, each once. A bucket that refuses its write is
    /// inspected (mark, form_stats) and its delta folded again without the records it holds.
    async fn write_run(&self, run: &[Change], shard: &str) -> Result<(), ProcessError> {
        let mut marks: HashMap<Bucket, String> = HashMap::new();
        let mut left: Option<HashSet<Bucket>> = None;
        for _attempt in 0..6 {
            let deltas: Vec<(Bucket, Delta)> =
                fold::fold(run, |b, seq| marks.get(b).is_some_and(|hw| seq <= hw.as_str()))
                    .into_iter()
                    .filter(|(b, _)| left.as_ref().is_none_or(|l| l.contains(b)))
                    .collect();
            if deltas.is_empty() {
                return Ok(());
            }
            let planned: Vec<(Bucket, FormStats, Update)> = deltas
                .into_iter()
                .map(|(b, d)| {
                    let mode = self.form_stats_mode(&b, &d);
                    let update = self.update(shard, &b, &d, mode);
                    (b, mode, update)
                })
                .collect();
            let writes: Vec<_> = planned
                .into_iter()
                .map(|(b, mode, update)| async move { (b, mode, self.write(update).await) })
                .collect();
            let outcomes: Vec<_> = futures::stream::iter(writes).buffer_unordered(CONCURRENT_WRITES).collect().await;
            let mut refused = HashSet::new();
            for (b, mode, outcome) in outcomes {
                let b = &b;
                if outcome? {
                    metrics::counter!("aggregator_metric_writes_total").increment(1);
                    if mode != FormStats::None {
                        self.with_form_stats.lock().unwrap_or_else(|e| e.into_inner()).insert(b.key());
                    }
                    continue;
                }
                // Learn what the bucket holds, then fold its records again.
                let (hw, has_stats) = self.inspect(shard, b).await?;
                let mut known = self.with_form_stats.lock().unwrap_or_else(|e| e.into_inner());
                if has_stats {
                    known.insert(b.key());
                } else {
                    known.remove(&b.key());
                }
                if let Some(hw) = hw {
                    marks.insert(b.clone(), hw);
                }
                refused.insert(b.clone());
            }
            if refused.is_empty() {
                return Ok(());
            }
            left = Some(refused);
        }
        Err(ProcessError::Failed("metric updates kept conflicting".into()))
    }
}

fn at(s: i64) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp(s).unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

fn tenant_of(c: &Change) -> Option<&formbridge_shared::TenantId> {
    match &c.entity {
        keys::Entity::Submission { tenant, .. }
        | keys::Entity::Delivery { tenant, .. }
        | keys::Entity::DeliveryAttempt { tenant, .. } => Some(tenant),
        _ => None,
    }
}

impl BatchProcessor for Aggregator {
    /// Records are grouped by tenant (keeping stream order within a tenant, which is all the
    /// high-water marks need), so a tenant's buckets are written once per batch even when many
    /// tenants interleave. The consumer moves the checkpoint after this returns, that is after
    /// every bucket is written. A crash in between re-reads the batch, and the marks drop what
    /// the written buckets already hold.
    async fn process(&self, records: &[Change], committer: &mut Committer<'_>) -> Result<(), ProcessError> {
        let shard = committer.shard().to_owned();
        self.apply(records, &shard).await
    }
}

impl Aggregator {
    /// Folds records that all come, in order, from one source whose high-water marks are named
    /// `mark`: a stream shard (the long-running consumer), or one partition key (Lambda mode).
    pub async fn apply(&self, records: &[Change], mark: &str) -> Result<(), ProcessError> {
        let mut grouped: Vec<Change> = records.to_vec();
        grouped.sort_by(|a, b| tenant_of(a).cmp(&tenant_of(b)));
        for run in fold::chunks(&grouped, MAX_BUCKETS_PER_RUN) {
            self.write_run(run, mark).await?;
        }
        self.check_hot_partitions(records).await?;
        self.check_cost_alerts(records).await
    }
}

/// The aggregator as a Lambda function behind a DynamoDB Streams event source mapping
/// (`ParallelizationFactor` 1, `BisectBatchOnFunctionError`, `ReportBatchItemFailures`).
///
/// There is no lease or checkpoint of ours here, and Lambda's events do not name their shard, so
/// the high-water marks are kept per source partition key instead (`hw#pk:<PK>`): every record
/// of one partition key comes from one shard at a time, in order, and a child shard is read
/// only after its parent. A retried or repeated batch is refused bucket by bucket exactly as a
/// re-read batch is in the long-running consumer, so metrics stay exact. The price: a bucket fed
/// by several of a tenant's write shards in one batch is updated once per shard.
#[derive(Debug)]
pub struct LambdaHandler {
    pub aggregator: Aggregator,
}

/// The mark name of a partition key, in Lambda mode.
pub fn partition_mark(pk: &str) -> String {
    format!("pk:{pk}")
}

impl LambdaHandler {
    pub fn new(config: &Config, aws: &formbridge_shared::aws::AwsClients) -> Self {
        let aws = aws.for_component("aggregator");
        Self {
            aggregator: Aggregator::new(
                aws.dynamodb.clone(),
                config.resources.table.clone(),
                i64::from(config.hourly_ttl_days),
                i64::from(config.daily_ttl_days),
            )
            .with_alerts(aws.eventbridge.clone(), config.alerts())
            .with_hot(aws.eventbridge.clone(), config.hot()),
        }
    }

    /// Folds the event's records. On a failure the response names the earliest record not yet
    /// folded; the mapping retries from it (what was folded after it is refused by its marks).
    pub async fn handle(
        &self,
        event: formbridge_shared::lambda::StreamEvent,
    ) -> formbridge_shared::lambda::DynamoDbEventResponse {
        let changes = formbridge_shared::lambda::changes(&event);
        let all = changes.clone();
        if let Some(lag) = formbridge_shared::telemetry::log_metric::lag_of(changes.last().and_then(|c| c.created_s)) {
            formbridge_shared::telemetry::log_metric::stream_lag("aggregator", lag);
        }
        // Group by source partition, keeping stream order within each.
        let mut groups: Vec<(String, Vec<Change>)> = Vec::new();
        for c in changes {
            let Some((tenant, shard)) = source_of(&c) else { continue };
            let pk = keys::submission_pk(tenant, shard);
            match groups.iter_mut().find(|(p, _)| *p == pk) {
                Some((_, g)) => g.push(c),
                None => groups.push((pk, vec![c])),
            }
        }
        for (i, (pk, records)) in groups.iter().enumerate() {
            if let Err(e) = self.aggregator.apply(records, &partition_mark(pk)).await {
                let first = groups[i..]
                    .iter()
                    .flat_map(|(_, g)| g.iter().map(|c| &c.seq))
                    .min_by_key(|s| stream::record::padded_seq(s))
                    .cloned();
                tracing::error!(error = %e, partition = %pk, "metric updates failed; the batch is retried from its first record not folded");
                return formbridge_shared::lambda::stream_response(first.as_deref());
            }
        }
        // Only cost items: retried from the batch's start (the marks refuse what was folded).
        if let Err(e) = self.aggregator.check_cost_alerts(&all).await {
            tracing::error!(error = %e, "cost alert check failed; the batch is retried");
            return formbridge_shared::lambda::stream_response(all.first().map(|c| c.seq.as_str()));
        }
        formbridge_shared::lambda::stream_response(None)
    }
}

fn source_of(c: &Change) -> Option<(&formbridge_shared::TenantId, u16)> {
    match &c.entity {
        keys::Entity::Submission { tenant, shard, .. }
        | keys::Entity::Delivery { tenant, shard, .. }
        | keys::Entity::DeliveryAttempt { tenant, shard, .. } => Some((tenant, *shard)),
        _ => None,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AggregatorError {
    #[error("cannot open the table's stream: {0}")]
    Stream(#[from] stream::ShardError),
}

/// Runs the aggregator until `shutdown`; leases are released on the way out.
pub async fn run(
    config: Config,
    aws: formbridge_shared::aws::AwsClients,
    shutdown: CancellationToken,
) -> Result<(), AggregatorError> {
    let aws = aws.for_component("aggregator");
    let costs = formbridge_shared::costs::start(&aws.dynamodb, &config.resources, &shutdown);
    let streams =
        DynamoStreams::for_table_patiently(&aws.dynamodb, aws.streams.clone(), &config.resources.table).await?;
    let leases = LeaseTable {
        client: aws.dynamodb.clone(),
        table: config.resources.control_table.clone(),
        group: config.group.clone(),
    };
    let processor = Arc::new(
        Aggregator::new(
            aws.dynamodb.clone(),
            config.resources.table.clone(),
            i64::from(config.hourly_ttl_days),
            i64::from(config.daily_ttl_days),
        )
        .with_alerts(aws.eventbridge.clone(), config.alerts())
        .with_hot(aws.eventbridge.clone(), config.hot()),
    );
    let alarms = stream::Alarms { eventbridge: Some((aws.eventbridge.clone(), config.resources.event_bus.clone())) };
    let consumer: ConsumerConfig = config.consumer();
    stream::run(streams, leases, processor, consumer, alarms, shutdown).await;
    formbridge_shared::costs::finish(costs).await;
    Ok(())
}

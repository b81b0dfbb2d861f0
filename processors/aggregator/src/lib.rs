//! The aggregator: a consumer group on the `FormBridgeData` stream that keeps hourly and daily
//! metric items per tenant and per form.
//!
//! Exactly once, by two guards in one transaction per run of records:
//! 1. the shard checkpoint moves in the same TransactWriteItems as the metric deltas, on the
//!    condition that this worker still owns the lease and the checkpoint is where it read from:
//!    a crash before the commit leaves nothing written and the records are read again; a worker
//!    that lost its lease cannot commit;
//! 2. each metric item remembers, per stream shard, the last sequence number folded into it
//!    (`hw#<shard>`), and every update is conditioned on the batch starting after it. So even a
//!    replay under a brand-new lease (say, from TRIM_HORIZON after the lease table was lost)
//!    cannot count a record twice: the transaction fails, the aggregator reads the marks,
//!    drops what each bucket already holds and commits the rest.

pub mod config;
pub mod fold;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use aws_sdk_dynamodb::types::{AttributeValue, TransactWriteItem, Update};
use formbridge_shared::attrs::metrics as mt;
use formbridge_shared::keys::{self, ItemKey};
use formbridge_shared::stream::{
    self, BatchProcessor, Change, Checkpoint, CommitError, Committer, ConsumerConfig, DynamoStreams, LeaseTable,
    ProcessError,
};
use tokio_util::sync::CancellationToken;

pub use config::Config;
use fold::{Bucket, Delta, Granularity};

/// Transaction items per commit left for metric updates (one goes to the checkpoint).
pub const MAX_BUCKETS_PER_COMMIT: usize = 99;

/// Keeps metric items up to date from stream records.
#[derive(Debug)]
pub struct Aggregator {
    pub client: aws_sdk_dynamodb::Client,
    pub table: String,
    pub hourly_ttl_days: i64,
    pub daily_ttl_days: i64,
    /// Tenant buckets known to already hold a `form_stats` map.
    with_form_stats: Mutex<HashSet<ItemKey>>,
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
        Self { client, table, hourly_ttl_days, daily_ttl_days, with_form_stats: Mutex::new(HashSet::new()) }
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
    fn update(&self, shard: &str, bucket: &Bucket, delta: &Delta, form_stats: FormStats) -> TransactWriteItem {
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
        if bucket.form.is_none() && bucket.granularity == Granularity::Day {
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
                for (i, (form, count)) in delta.forms.iter().enumerate() {
                    let fs = mt::FORM_STATS;
                    set.push(format!("{fs}.#f{i} = if_not_exists({fs}.#f{i}, :zero) + :f{i}"));
                    u = u
                        .expression_attribute_names(format!("#f{i}"), form)
                        .expression_attribute_values(format!(":f{i}"), n(*count));
                }
            }
            FormStats::Missing => {
                cond.push(format!("attribute_not_exists({})", mt::FORM_STATS));
                let m = delta.forms.iter().map(|(f, c)| (f.clone(), n(*c))).collect();
                set.push(format!("{} = :fs", mt::FORM_STATS));
                u = u.expression_attribute_values(":fs", AttributeValue::M(m));
            }
        }
        for (i, (dest, d)) in delta.deliveries.iter().enumerate() {
            for (field, v) in [
                (mt::SUCCEEDED, d.succeeded),
                (mt::FAILED, d.failed),
                (mt::ATTEMPTS, d.attempts),
                (mt::LATENCY_MS, d.latency_ms),
            ] {
                if v > 0 {
                    add.push(format!("#d{i}{field} :d{i}{field}"));
                    u = u
                        .expression_attribute_names(format!("#d{i}{field}"), mt::delivery(dest, field))
                        .expression_attribute_values(format!(":d{i}{field}"), n(v));
                }
            }
        }
        let expr = format!("SET {} ADD {}", set.join(", "), add.join(", "));
        let update = u
            .update_expression(expr)
            .condition_expression(cond.join(" AND "))
            .build()
            .expect("table, key and expression set");
        TransactWriteItem::builder().update(update).build()
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

    async fn commit_run(
        &self,
        run: &[Change],
        next: Checkpoint,
        committer: &mut Committer<'_>,
    ) -> Result<(), ProcessError> {
        let shard = committer.shard().to_owned();
        let mut marks: HashMap<Bucket, String> = HashMap::new();
        for _attempt in 0..6 {
            let deltas: Vec<(Bucket, Delta)> =
                fold::fold(run, |b, seq| marks.get(b).is_some_and(|hw| seq <= hw.as_str())).into_iter().collect();
            if deltas.is_empty() {
                return Ok(());
            }
            let modes: Vec<FormStats> = deltas.iter().map(|(b, d)| self.form_stats_mode(b, d)).collect();
            let items = deltas.iter().zip(&modes).map(|((b, d), m)| self.update(&shard, b, d, *m)).collect();
            match committer.commit(next.clone(), items).await {
                Ok(()) => {
                    metrics::counter!("aggregator_metric_writes_total").increment(deltas.len() as u64);
                    let mut known = self.with_form_stats.lock().unwrap_or_else(|e| e.into_inner());
                    for ((b, _), m) in deltas.iter().zip(&modes) {
                        if *m != FormStats::None {
                            known.insert(b.key());
                        }
                    }
                    return Ok(());
                }
                Err(CommitError::Conflict(failed)) => {
                    // Learn what the failed buckets hold, then rebuild and retry.
                    for i in failed {
                        let Some((b, _)) = deltas.get(i) else { continue };
                        let (hw, has_stats) = self.inspect(&shard, b).await?;
                        let mut known = self.with_form_stats.lock().unwrap_or_else(|e| e.into_inner());
                        if has_stats {
                            known.insert(b.key());
                        } else {
                            known.remove(&b.key());
                        }
                        if let Some(hw) = hw {
                            marks.insert(b.clone(), hw);
                        }
                    }
                }
                Err(e) => return Err(e.into()),
            }
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
    /// tenants interleave. Runs that fit a transaction are committed in turn; only the last moves
    /// the checkpoint. A crash in between re-reads the batch, and the marks drop what the
    /// committed runs already hold.
    async fn process(&self, records: &[Change], committer: &mut Committer<'_>) -> Result<(), ProcessError> {
        let Some(last) = records.last().map(|r| r.seq.clone()) else { return Ok(()) };
        let mut grouped: Vec<Change> = records.to_vec();
        grouped.sort_by(|a, b| tenant_of(a).cmp(&tenant_of(b)));
        let runs = fold::chunks(&grouped, MAX_BUCKETS_PER_COMMIT);
        let n = runs.len();
        for (i, run) in runs.into_iter().enumerate() {
            let next = if i + 1 == n { Checkpoint::At(last.clone()) } else { committer.checkpoint().clone() };
            self.commit_run(run, next, committer).await?;
        }
        Ok(())
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
    let streams = DynamoStreams::for_table(&aws.dynamodb, aws.streams.clone(), &config.resources.table).await?;
    let leases = LeaseTable {
        client: aws.dynamodb.clone(),
        table: config.resources.control_table.clone(),
        group: config.group.clone(),
    };
    let processor = Arc::new(Aggregator::new(
        aws.dynamodb.clone(),
        config.resources.table.clone(),
        i64::from(config.hourly_ttl_days),
        i64::from(config.daily_ttl_days),
    ));
    let alarms = stream::Alarms { eventbridge: Some((aws.eventbridge.clone(), config.resources.event_bus.clone())) };
    let consumer: ConsumerConfig = config.consumer();
    stream::run(streams, leases, processor, consumer, alarms, shutdown).await;
    Ok(())
}

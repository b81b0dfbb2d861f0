//! Reading the aggregator's metric items: one Query per tenant and granularity over a time
//! range, never a scan and never a submission read.

use std::collections::BTreeMap;

use aws_sdk_dynamodb::types::AttributeValue;
use serde::Serialize;
use time::OffsetDateTime;

use crate::attrs::metrics as mt;
use crate::ids::{FormId, TenantId};
use crate::keys;
use crate::store::{DataStore, StoreError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Granularity {
    Hour,
    Day,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DeliveryStats {
    pub succeeded: u64,
    pub failed: u64,
    pub attempts: u64,
    /// Sum of the latencies of the attempts counted in the histogram.
    pub latency_ms: u64,
    /// Attempts per latency bucket ([`mt::LATENCY_BOUNDS_MS`], then the overflow).
    pub latency_histogram: [u64; mt::LATENCY_BUCKETS],
}

impl DeliveryStats {
    /// Adds another bucket's figures (a sum across hours, days or tenants).
    pub fn add(&mut self, o: &DeliveryStats) {
        self.succeeded += o.succeeded;
        self.failed += o.failed;
        self.attempts += o.attempts;
        self.latency_ms += o.latency_ms;
        for (a, b) in self.latency_histogram.iter_mut().zip(o.latency_histogram) {
            *a += b;
        }
    }

    /// Succeeded over finished deliveries, when any finished.
    pub fn success_rate(&self) -> Option<f64> {
        let done = self.succeeded + self.failed;
        (done > 0).then(|| self.succeeded as f64 / done as f64)
    }

    /// The `q` quantile (0..=1) of attempt latency from the histogram, interpolated linearly
    /// inside the bucket it falls in (so within that bucket's width of the truth). The overflow
    /// bucket answers its lower bound. None when no attempt was counted.
    pub fn latency_quantile_ms(&self, q: f64) -> Option<u64> {
        let total: u64 = self.latency_histogram.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = (q.clamp(0.0, 1.0) * total as f64).max(1.0);
        let mut seen = 0u64;
        for (i, &count) in self.latency_histogram.iter().enumerate() {
            if count == 0 {
                continue;
            }
            let lo = if i == 0 { 0 } else { mt::LATENCY_BOUNDS_MS[i - 1] };
            if seen as f64 + count as f64 >= rank {
                let Some(&hi) = mt::LATENCY_BOUNDS_MS.get(i) else { return Some(lo) };
                let frac = (rank - seen as f64) / count as f64;
                return Some(lo + ((hi - lo) as f64 * frac).round() as u64);
            }
            seen += count;
        }
        Some(*mt::LATENCY_BOUNDS_MS.last().expect("bounds"))
    }
}

/// One hourly or daily bucket.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MetricBucket {
    /// `2026-11-25T08` (hour) or `2026-11-25` (day), UTC.
    pub bucket: String,
    pub submission_count: u64,
    pub raw_bytes: u64,
    pub stored_bytes: u64,
    pub write_units: u64,
    /// Submissions per form (tenant buckets).
    pub form_stats: BTreeMap<String, u64>,
    /// Delivery outcomes per destination (tenant buckets).
    pub deliveries: BTreeMap<String, DeliveryStats>,
}

fn num(v: Option<&AttributeValue>) -> u64 {
    v.and_then(|v| v.as_n().ok()).and_then(|n| n.parse().ok()).unwrap_or(0)
}

impl MetricBucket {
    fn from_item(prefix: &str, item: &std::collections::HashMap<String, AttributeValue>) -> Option<MetricBucket> {
        let sk = item.get(keys::SK)?.as_s().ok()?;
        let mut b = MetricBucket {
            bucket: sk.strip_prefix(prefix)?.to_owned(),
            submission_count: num(item.get(mt::SUBMISSIONS)),
            raw_bytes: num(item.get(mt::RAW_BYTES)),
            stored_bytes: num(item.get(mt::STORED_BYTES)),
            write_units: num(item.get(mt::WRITE_UNITS)),
            ..MetricBucket::default()
        };
        if let Some(m) = item.get(mt::FORM_STATS).and_then(|v| v.as_m().ok()) {
            b.form_stats = m.iter().map(|(k, v)| (k.clone(), num(Some(v)))).collect();
        }
        for (k, v) in item {
            let Some(rest) = k.strip_prefix(mt::DELIVERY_PREFIX) else { continue };
            let Some((dest, field)) = rest.rsplit_once('#') else { continue };
            let d = b.deliveries.entry(dest.to_owned()).or_default();
            match field {
                mt::SUCCEEDED => d.succeeded = num(Some(v)),
                mt::FAILED => d.failed = num(Some(v)),
                mt::ATTEMPTS => d.attempts = num(Some(v)),
                mt::LATENCY_MS => d.latency_ms = num(Some(v)),
                f => {
                    let slot = f.strip_prefix('l').and_then(|i| i.parse::<usize>().ok());
                    if let Some(slot) = slot.and_then(|i| d.latency_histogram.get_mut(i)) {
                        *slot = num(Some(v));
                    }
                }
            }
        }
        Some(b)
    }
}

impl DataStore {
    /// Buckets of a tenant (or one of its forms) from `from` to `to` inclusive, oldest first: one
    /// Query of the tenant's metric items. A form's figures live inside the tenant's items.
    pub async fn metrics(
        &self,
        tenant: &TenantId,
        form: Option<&FormId>,
        granularity: Granularity,
        from: OffsetDateTime,
        to: OffsetDateTime,
    ) -> Result<Vec<MetricBucket>, StoreError> {
        let (lo, hi) = match granularity {
            Granularity::Hour => (keys::hourly_metrics(tenant, from).sk, keys::hourly_metrics(tenant, to).sk),
            Granularity::Day => {
                (keys::daily_metrics(tenant, from.date()).sk, keys::daily_metrics(tenant, to.date()).sk)
            }
        };
        let prefix = lo.rsplit_once('#').map(|(p, _)| format!("{p}#")).unwrap_or_default();
        let items = self
            .client()
            .query()
            .table_name(self.table())
            .key_condition_expression("PK = :pk AND SK BETWEEN :lo AND :hi")
            .expression_attribute_values(":pk", AttributeValue::S(keys::metrics_pk(tenant)))
            .expression_attribute_values(":lo", AttributeValue::S(lo))
            .expression_attribute_values(":hi", AttributeValue::S(hi))
            .into_paginator()
            .items()
            .send()
            .collect::<Result<Vec<_>, _>>()
            .await
            .map_err(|e| StoreError::Dynamo(e.into()))?;
        let mut out = Vec::new();
        for item in &items {
            let Some(b) = MetricBucket::from_item(&prefix, item) else { continue };
            match form {
                None => out.push(b),
                Some(f) => out.extend(form_bucket(item, b, &f.to_string())),
            }
        }
        Ok(out)
    }
}

/// One form's view of a tenant bucket: its own counters, nothing of other forms or deliveries.
/// None when the form had nothing in that bucket.
fn form_bucket(
    item: &std::collections::HashMap<String, AttributeValue>,
    tenant_bucket: MetricBucket,
    form: &str,
) -> Option<MetricBucket> {
    let submissions = *tenant_bucket.form_stats.get(form)?;
    Some(MetricBucket {
        bucket: tenant_bucket.bucket,
        submission_count: submissions,
        raw_bytes: num(item.get(&mt::form(form, mt::RAW_BYTES))),
        stored_bytes: num(item.get(&mt::form(form, mt::STORED_BYTES))),
        write_units: num(item.get(&mt::form(form, mt::WRITE_UNITS))),
        form_stats: BTreeMap::from([(form.to_owned(), submissions)]),
        deliveries: BTreeMap::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(latencies: &[u64]) -> DeliveryStats {
        let mut d = DeliveryStats::default();
        for l in latencies {
            d.latency_histogram[mt::latency_bucket(*l)] += 1;
            d.latency_ms += l;
        }
        d
    }

    #[test]
    fn quantiles_fall_inside_the_bucket_of_the_true_value() {
        // 90 fast answers around 40 ms, 10 slow ones around 700 ms.
        let mut l = vec![40; 90];
        l.extend([700; 10]);
        let d = stats(&l);
        let p50 = d.latency_quantile_ms(0.5).unwrap();
        let p95 = d.latency_quantile_ms(0.95).unwrap();
        assert!((25..=50).contains(&p50), "p50 {p50} outside 40 ms's bucket");
        assert!((500..=1_000).contains(&p95), "p95 {p95} outside 700 ms's bucket");
        assert_eq!(DeliveryStats::default().latency_quantile_ms(0.5), None);
        assert_eq!(stats(&[90_000]).latency_quantile_ms(0.99), Some(30_000), "overflow answers its floor");
    }

    #[test]
    fn sums_keep_the_histogram_and_the_rate() {
        let mut a = stats(&[10, 20]);
        a.succeeded = 3;
        let mut b = stats(&[5_000]);
        b.failed = 1;
        a.add(&b);
        assert_eq!(a.latency_histogram.iter().sum::<u64>(), 3);
        assert_eq!(a.success_rate(), Some(0.75));
    }
}

/// One tenant's day as the operator index (GSI3) holds it: submissions, in all and per form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TenantDay {
    pub day: String,
    pub tenant: TenantId,
    pub submission_count: u64,
    pub form_stats: BTreeMap<String, u64>,
}

impl DataStore {
    /// The days `from..=to` of several tenants (an agency's), from the operator index: one Query
    /// per day, narrowed to those tenants by a filter (the index holds every tenant's day; the
    /// filter keeps the others out of the answer, not out of the read).
    pub async fn tenant_days(
        &self,
        tenants: &[TenantId],
        from: time::Date,
        to: time::Date,
    ) -> Result<Vec<TenantDay>, StoreError> {
        let mut out = Vec::new();
        if tenants.is_empty() || tenants.len() > 99 {
            return Ok(out);
        }
        let mut day = from;
        while day <= to {
            let any = keys::daily_metrics_by_day(&tenants[0], day);
            let mut q = self
                .client()
                .query()
                .table_name(self.table())
                .index_name(any.index)
                .key_condition_expression("#pk = :pk")
                .expression_attribute_names("#pk", keys::GSI3PK)
                .expression_attribute_names("#sk", keys::GSI3SK)
                .expression_attribute_values(":pk", AttributeValue::S(any.pk));
            let mut names = Vec::new();
            for (i, t) in tenants.iter().enumerate() {
                names.push(format!(":t{i}"));
                q = q.expression_attribute_values(
                    format!(":t{i}"),
                    AttributeValue::S(keys::daily_metrics_by_day(t, day).sk),
                );
            }
            let items = q
                .filter_expression(format!("#sk IN ({})", names.join(", ")))
                .into_paginator()
                .items()
                .send()
                .collect::<Result<Vec<_>, _>>()
                .await
                .map_err(|e| StoreError::Dynamo(e.into()))?;
            for item in &items {
                let Some(t) = item
                    .get(keys::GSI3SK)
                    .and_then(|v| v.as_s().ok())
                    .and_then(|s| s.strip_prefix("TENANT#"))
                    .and_then(|t| TenantId::parse(t).ok())
                else {
                    continue;
                };
                let form_stats = item
                    .get(mt::FORM_STATS)
                    .and_then(|v| v.as_m().ok())
                    .map(|m| m.iter().map(|(k, v)| (k.clone(), num(Some(v)))).collect())
                    .unwrap_or_default();
                out.push(TenantDay {
                    day: day.to_string(),
                    tenant: t,
                    submission_count: num(item.get(mt::SUBMISSIONS)),
                    form_stats,
                });
            }
            match day.next_day() {
                Some(d) => day = d,
                None => break,
            }
        }
        Ok(out)
    }
}

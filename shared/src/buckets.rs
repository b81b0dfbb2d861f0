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
    pub latency_ms: u64,
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
                _ => {}
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

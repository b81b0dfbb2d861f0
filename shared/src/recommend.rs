//! Recommendations from real usage (`formbridge-admin recommend`, `GET /v1/recommendations`):
//! each with the numbers behind it and the saving it should bring a month.
//!
//! They read only what the pipeline keeps anyway, by key: each tenant's profile, its daily
//! metric items over the last 30 days and hourly ones over the last 7 (submissions, bytes, write
//! units, delivery outcomes per destination), its cost items ([`crate::costs`]) and the
//! system's. [`recommend`] is pure; [`gather`] reads.
//!
//! | kind | when | saving |
//! |---|---|---|
//! | `shards_too_low` | the busiest hour averaged more than [`SHARD_WCU_PER_S`] write units a second per shard (bursts inside an hour run several times the mean, towards a partition's 1,000) | none in dollars: it avoids throttled writes |
//! | `shards_too_high` | more than twice the shards the busiest hour needs: each listing page queries every shard | the API reads of the surplus shards |
//! | `failing_destination` | at least [`FAILING_MIN`] deliveries failed in 7 days and none succeeded | its attempts: a write unit and three SQS requests each |
//! | `retention_unread` | retention over 30 days and no API read in 30 days | the storage of the days past 30 |
//! | `idle_polling` | unattributed polling (empty long polls and stream reads) is over 30% of the bill and over $0.10 a month | stream reads (free from Lambda's event source mappings) and half the empty polls |
//! | `compression_not_paying` | forms average under 1 KiB and compression saves under 10% | the compression's CPU time, at Lambda prices |

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{json, Value};
use time::OffsetDateTime;

use crate::billing::Prices;
use crate::buckets::{DeliveryStats, Granularity, MetricBucket};
use crate::costs::{self, Line, Units};
use crate::ids::TenantId;
use crate::store::DataStore;

/// Write units per second per shard, averaged over the busiest hour, above which a tenant needs
/// more shards (a tenth of a partition's 1,000: the mean of an hour hides its bursts).
pub const SHARD_WCU_PER_S: f64 = 100.0;
/// Failed deliveries in 7 days, with none succeeded, that make a destination "always failing".
pub const FAILING_MIN: u64 = 5;
/// DynamoDB standard storage, $ per GB-month (us-east-1; the first 25 GB of an account are free).
pub const STORAGE_USD_PER_GB_MONTH: f64 = 0.25;
/// Brotli with the dictionary, per payload, as measured by the persister bench (about 0.2 ms),
/// and Lambda's price per GB-second at 256 MB.
const COMPRESS_S: f64 = 0.000_2;
const LAMBDA_USD_PER_GB_S: f64 = 0.000_016_666_7;

/// One tenant's usage, as read.
#[derive(Debug, Clone, Default)]
pub struct TenantUsage {
    pub tenant: Option<TenantId>,
    pub shards: u16,
    pub retention_days: u32,
    /// The last 30 days, one bucket a day.
    pub days: Vec<MetricBucket>,
    /// The busiest hour of the last 7 days, by write units.
    pub peak_hour: Option<MetricBucket>,
    /// Delivery outcomes per destination over the last 7 days.
    pub destinations_7d: BTreeMap<String, DeliveryStats>,
    /// Billed units over the last 30 days.
    pub cost_30d: Units,
}

/// The system's billed units over the last 30 days.
#[derive(Debug, Clone, Default)]
pub struct SystemUsage {
    pub cost_30d: Units,
    pub unattributed_30d: Units,
}

#[derive(Debug, Clone, Serialize)]
pub struct Recommendation {
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant: Option<TenantId>,
    pub finding: String,
    pub action: String,
    /// The figures it rests on.
    pub numbers: Value,
    pub saving_usd_month: f64,
}

fn usd(units: f64, price_per_million: f64) -> f64 {
    units * price_per_million / 1e6
}

fn line_units(u: &Units, l: Line) -> f64 {
    u.get(l) as f64 / 1000.0
}

/// Shards the busiest hour needs.
fn shards_needed(peak_wcu_per_s: f64) -> u16 {
    ((peak_wcu_per_s / SHARD_WCU_PER_S).ceil() as u16).max(1)
}

pub fn recommend(tenants: &[TenantUsage], system: &SystemUsage, prices: &Prices) -> Vec<Recommendation> {
    let mut out = Vec::new();
    for t in tenants {
        let tenant = t.tenant.clone();
        // Shards: from the busiest hour.
        if let Some(peak) = &t.peak_hour {
            let per_s = peak.write_units as f64 / 3600.0;
            let per_shard = per_s / f64::from(t.shards.max(1));
            let needed = shards_needed(per_s);
            if per_shard > SHARD_WCU_PER_S {
                out.push(Recommendation {
                    kind: "shards_too_low",
                    tenant: tenant.clone(),
                    finding: format!(
                        "the busiest hour ({}) averaged {per_shard:.0} write units a second on each of {} shards",
                        peak.bucket, t.shards
                    ),
                    action: format!("grow to {needed} shards: formbridge-admin tenant grow-shards --count {needed}"),
                    numbers: json!({ "peak_hour": peak.bucket, "peak_write_units_per_s": per_s, "shards": t.shards, "per_shard": per_shard, "limit_per_partition": 1000, "recommended_shards": needed }),
                    saving_usd_month: 0.0,
                });
            } else if t.shards > 2 * needed {
                let reads = line_units(&t.cost_30d, Line::ReadApi);
                let surplus = 1.0 - f64::from(needed) / f64::from(t.shards);
                out.push(Recommendation {
                    kind: "shards_too_high",
                    tenant: tenant.clone(),
                    finding: format!(
                        "{} shards, while the busiest hour ({}) needs {needed}: every listing page queries all {}",
                        t.shards, peak.bucket, t.shards
                    ),
                    action: format!(
                        "grow no further, and give tenants like this one {needed} shard(s) at creation (a shard count only grows)"
                    ),
                    numbers: json!({ "shards": t.shards, "needed": needed, "peak_write_units_per_s": per_s, "api_read_units_30d": reads }),
                    saving_usd_month: usd(reads * surplus, prices.per_million_read_units),
                });
            }
        }
        // Destinations that always fail.
        for (dest, s) in &t.destinations_7d {
            if s.failed >= FAILING_MIN && s.succeeded == 0 {
                let month_attempts = s.attempts as f64 * 30.0 / 7.0;
                out.push(Recommendation {
                    kind: "failing_destination",
                    tenant: tenant.clone(),
                    finding: format!("destination {dest}: {} deliveries failed in 7 days, none succeeded ({} attempts)", s.failed, s.attempts),
                    action: format!("fix its endpoint or disable it: formbridge-admin destination disable --id {dest}"),
                    numbers: json!({ "destination": dest, "failed_7d": s.failed, "succeeded_7d": 0, "attempts_7d": s.attempts }),
                    saving_usd_month: usd(month_attempts, prices.per_million_write_units)
                        + usd(3.0 * month_attempts, prices.per_million_sqs_requests),
                });
            }
        }
        // Retention nobody reads.
        let stored: u64 = t.days.iter().map(|d| d.stored_bytes).sum();
        let days_seen = t.days.iter().filter(|d| d.submission_count > 0).count().max(1) as f64;
        let api_reads = line_units(&t.cost_30d, Line::ReadApi);
        if t.retention_days > 30 && api_reads == 0.0 && stored > 0 {
            let per_day = stored as f64 / days_seen;
            let gb = per_day * f64::from(t.retention_days - 30) / 1e9;
            out.push(Recommendation {
                kind: "retention_unread",
                tenant: tenant.clone(),
                finding: format!("submissions are kept {} days, and nothing read them through the API in 30 days", t.retention_days),
                action: "keep 30 days (PUT /v1/forms/{form}/retention, or the tenant's retention), after exporting what must be archived".into(),
                numbers: json!({ "retention_days": t.retention_days, "stored_bytes_per_day": per_day, "api_read_units_30d": 0, "gb_beyond_30_days": gb }),
                saving_usd_month: gb * STORAGE_USD_PER_GB_MONTH,
            });
        }
        // Compression that does not pay.
        let subs: u64 = t.days.iter().map(|d| d.submission_count).sum();
        let raw: u64 = t.days.iter().map(|d| d.raw_bytes).sum();
        if subs >= 100 && raw > 0 {
            let avg = raw as f64 / subs as f64;
            let saved = 1.0 - stored as f64 / raw as f64;
            if avg < 1024.0 && saved < 0.10 {
                out.push(Recommendation {
                    kind: "compression_not_paying",
                    tenant: tenant.clone(),
                    finding: format!("forms average {avg:.0} bytes and compression saves {:.1}%: each fits one write unit either way", saved * 100.0),
                    action: "raise PERSISTER_COMPRESS_THRESHOLD above these forms' size (1024): small payloads are stored as they are".into(),
                    numbers: json!({ "submissions_30d": subs, "average_raw_bytes": avg, "saved_pct": saved * 100.0 }),
                    saving_usd_month: subs as f64 * COMPRESS_S * 0.25 * LAMBDA_USD_PER_GB_S,
                });
            }
        }
    }
    // Idle polling, for the whole system.
    let total = system.cost_30d.dollars(prices);
    let idle_sqs = line_units(&system.unattributed_30d, Line::SqsPersister)
        + line_units(&system.unattributed_30d, Line::SqsDelivery)
        + line_units(&system.unattributed_30d, Line::SqsIngest)
        + line_units(&system.unattributed_30d, Line::SqsOther);
    let idle_streams = line_units(&system.unattributed_30d, Line::StreamReads);
    let idle = usd(idle_sqs, prices.per_million_sqs_requests) + usd(idle_streams, prices.per_million_stream_reads);
    if idle > 0.10 && idle > 0.3 * total {
        out.push(Recommendation {
            kind: "idle_polling",
            tenant: None,
            finding: format!("${idle:.2} of the last 30 days' ${total:.2} went to polling that found nothing"),
            action: "raise STREAM_IDLE_MAX_MS and the long polls' wait, or run in Lambda mode, whose stream event source mappings read for free".into(),
            numbers: json!({ "empty_sqs_requests_30d": idle_sqs, "idle_stream_reads_30d": idle_streams, "idle_usd_30d": idle, "total_usd_30d": total }),
            saving_usd_month: usd(idle_streams, prices.per_million_stream_reads) + usd(idle_sqs / 2.0, prices.per_million_sqs_requests),
        });
    }
    out.sort_by(|a, b| b.saving_usd_month.total_cmp(&a.saving_usd_month));
    out
}

/// Reads one tenant's usage (Queries of its metric partition only, so a tenant-scoped reader
/// can): 30 days of daily metrics and cost, 7 days of hours.
pub async fn tenant_usage(
    store: &DataStore,
    profile: &crate::tenant::TenantProfile,
    now: OffsetDateTime,
) -> Result<TenantUsage, crate::store::StoreError> {
    let tenant = &profile.tenant_id;
    let days = store.metrics(tenant, None, Granularity::Day, now - time::Duration::days(29), now).await?;
    let hours = store.metrics(tenant, None, Granularity::Hour, now - time::Duration::days(7), now).await?;
    let week_start = (now - time::Duration::days(6)).date().to_string();
    let mut destinations_7d: BTreeMap<String, DeliveryStats> = BTreeMap::new();
    for d in days.iter().filter(|d| d.bucket >= week_start) {
        for (dest, s) in &d.deliveries {
            destinations_7d.entry(dest.clone()).or_default().add(s);
        }
    }
    let mut cost_30d = Units::default();
    let cost_days =
        costs::days(store.client(), store.table(), Some(tenant), (now - time::Duration::days(29)).date(), now.date())
            .await
            .map_err(crate::store::StoreError::Dynamo)?;
    for (_, c) in &cost_days {
        cost_30d.merge(&c.units);
    }
    Ok(TenantUsage {
        tenant: Some(tenant.clone()),
        shards: profile.shards.current(),
        retention_days: profile.retention_days,
        peak_hour: hours.into_iter().max_by_key(|h| h.write_units),
        days,
        destinations_7d,
        cost_30d,
    })
}

/// The system's last 30 days.
pub async fn system_usage(store: &DataStore, now: OffsetDateTime) -> Result<SystemUsage, crate::store::StoreError> {
    let days = costs::days(store.client(), store.table(), None, (now - time::Duration::days(29)).date(), now.date())
        .await
        .map_err(crate::store::StoreError::Dynamo)?;
    let mut s = SystemUsage::default();
    for (_, c) in &days {
        s.cost_30d.merge(&c.units);
        s.unattributed_30d.merge(&c.unattributed);
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(bucket: &str, subs: u64, raw: u64, stored: u64) -> MetricBucket {
        MetricBucket {
            bucket: bucket.into(),
            submission_count: subs,
            raw_bytes: raw,
            stored_bytes: stored,
            write_units: subs,
            ..Default::default()
        }
    }

    fn tenant(name: &str) -> TenantUsage {
        TenantUsage {
            tenant: Some(TenantId::parse(name).unwrap()),
            shards: 4,
            retention_days: 30,
            ..Default::default()
        }
    }

    fn kinds(r: &[Recommendation]) -> Vec<&'static str> {
        r.iter().map(|r| r.kind).collect()
    }

    #[test]
    fn a_hot_tenant_is_told_to_grow_and_an_idle_one_not_to() {
        let prices = Prices::default();
        let mut hot = tenant("hot");
        hot.peak_hour =
            Some(MetricBucket { bucket: "2026-12-05T10".into(), write_units: 3600 * 900, ..Default::default() });
        let r = recommend(&[hot], &SystemUsage::default(), &prices);
        assert_eq!(kinds(&r), ["shards_too_low"]);
        assert_eq!(r[0].numbers["recommended_shards"], 9);

        let mut wide = tenant("wide");
        wide.shards = 16;
        wide.peak_hour = Some(MetricBucket { bucket: "2026-12-05T10".into(), write_units: 3600, ..Default::default() });
        wide.cost_30d.add(Line::ReadApi, 2_000_000_000);
        let r = recommend(&[wide], &SystemUsage::default(), &prices);
        assert_eq!(kinds(&r), ["shards_too_high"]);
        // 2M read units, 15 of 16 shards surplus.
        assert!((r[0].saving_usd_month - 2e6 * 15.0 / 16.0 * 0.125 / 1e6).abs() < 1e-9);

        let mut fine = tenant("fine");
        fine.peak_hour =
            Some(MetricBucket { bucket: "2026-12-05T10".into(), write_units: 3600 * 250, ..Default::default() });
        assert!(recommend(&[fine], &SystemUsage::default(), &prices).is_empty());
    }

    #[test]
    fn failing_destinations_unread_retention_tiny_forms_and_idle_polls() {
        let prices = Prices::default();
        let mut t = tenant("acme");
        t.destinations_7d.insert(
            "01JDQ7Z8X0000000000000000A".into(),
            DeliveryStats { failed: 12, attempts: 96, ..Default::default() },
        );
        t.destinations_7d.insert(
            "01JDQ7Z8X0000000000000000B".into(),
            DeliveryStats { failed: 12, succeeded: 1, attempts: 90, ..Default::default() },
        );
        t.retention_days = 365;
        t.days = (1..=30).map(|d| day(&format!("2026-11-{d:02}"), 10, 5_000, 4_900)).collect();
        let system = SystemUsage {
            cost_30d: {
                let mut u = Units::default();
                u.add(Line::StreamReads, 1_000_000_000_000);
                u
            },
            unattributed_30d: {
                let mut u = Units::default();
                u.add(Line::StreamReads, 900_000_000_000);
                u
            },
        };
        let r = recommend(&[t], &system, &prices);
        let mut k = kinds(&r);
        k.sort_unstable();
        assert_eq!(k, ["compression_not_paying", "failing_destination", "idle_polling", "retention_unread"]);
        let failing = r.iter().find(|r| r.kind == "failing_destination").unwrap();
        assert_eq!(failing.numbers["destination"], "01JDQ7Z8X0000000000000000A");
        let retention = r.iter().find(|r| r.kind == "retention_unread").unwrap();
        // 4,900 bytes a day kept 335 days longer than needed.
        assert!((retention.numbers["gb_beyond_30_days"].as_f64().unwrap() - 4900.0 * 335.0 / 1e9).abs() < 1e-12);
        let idle = r.iter().find(|r| r.kind == "idle_polling").unwrap();
        assert!((idle.saving_usd_month - 900_000_000.0 * 0.20 / 1e6).abs() < 1e-6);
        // Sorted by saving.
        assert!(r.windows(2).all(|w| w[0].saving_usd_month >= w[1].saving_usd_month));
    }

    #[test]
    fn reads_through_the_api_keep_retention_and_compression_that_pays_stays() {
        let mut t = tenant("acme");
        t.retention_days = 365;
        t.cost_30d.add(Line::ReadApi, 1000);
        t.days = (1..=30).map(|d| day(&format!("2026-11-{d:02}"), 10, 30_000, 12_000)).collect();
        assert!(recommend(&[t], &SystemUsage::default(), &Prices::default()).is_empty());
    }
}

//! Metrics from the aggregator's items only (never a submission read): hourly and daily buckets
//! per tenant and form, delivery success and latency quantiles per destination, an agency's view
//! across its tenants through the operator index (GSI3), live updates, and the month's cost.
//!
//! Live updates poll, they do not read the stream: a DynamoDB stream shard serves at most two
//! readers at full speed, and the aggregator and the delivery fan-out are those two. Each live
//! connection reads the current hour's item (one eventually consistent GetItem, 0.5 read unit
//! for an item up to 4 KB) every `API_LIVE_POLL_SECONDS` and sends it when it changed: at the
//! default 2 s that is 1,800 reads an hour per open dashboard, about $0.0001 an hour.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::Json;
use futures::Stream;
use serde::Deserialize;
use serde_json::{json, Value};
use time::{OffsetDateTime, Time};

use formbridge_shared::buckets::{DeliveryStats, Granularity, MetricBucket};
use formbridge_shared::costs;
use formbridge_shared::FormId;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::submissions::parse_time;
use crate::AppState;

/// Longest range of one metrics request: 62 days of hours, or 400 days.
const MAX_HOURS: i64 = 62 * 24;
const MAX_DAYS: i64 = 400;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsParams {
    pub granularity: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub form: Option<String>,
}

fn stats_json(d: &DeliveryStats) -> Value {
    let counted: u64 = d.latency_histogram.iter().sum();
    json!({
        "succeeded": d.succeeded,
        "failed": d.failed,
        "attempts": d.attempts,
        "success_rate": d.success_rate().map(|r| (r * 10_000.0).round() / 10_000.0),
        "latency_p50_ms": d.latency_quantile_ms(0.50),
        "latency_p95_ms": d.latency_quantile_ms(0.95),
        "latency_mean_ms": (counted > 0).then(|| d.latency_ms / counted),
    })
}

/// A bucket's figures (without its label).
fn figures(b: &MetricBucket) -> Value {
    json!({
        "submissions": b.submission_count,
        "raw_bytes": b.raw_bytes,
        "stored_bytes": b.stored_bytes,
        "bytes_saved": b.raw_bytes.saturating_sub(b.stored_bytes),
        "write_units": b.write_units,
        "forms": b.form_stats,
        "deliveries": b.deliveries.iter().map(|(k, v)| (k.clone(), stats_json(v))).collect::<BTreeMap<_, _>>(),
    })
}

/// The start of a bucket label (`2026-12-04T08` or `2026-12-04`) as RFC 3339.
fn start_of(label: &str) -> String {
    if label.len() == 13 {
        format!("{label}:00:00Z")
    } else {
        format!("{label}T00:00:00Z")
    }
}

pub(crate) fn bucket_json(b: &MetricBucket) -> Value {
    let mut v = figures(b);
    v["bucket"] = json!(b.bucket);
    v["start"] = json!(start_of(&b.bucket));
    v
}

fn add_into(total: &mut MetricBucket, b: &MetricBucket) {
    total.submission_count += b.submission_count;
    total.raw_bytes += b.raw_bytes;
    total.stored_bytes += b.stored_bytes;
    total.write_units += b.write_units;
    for (f, n) in &b.form_stats {
        *total.form_stats.entry(f.clone()).or_default() += n;
    }
    for (d, s) in &b.deliveries {
        total.deliveries.entry(d.clone()).or_default().add(s);
    }
}

fn granularity(v: Option<&str>) -> Result<Granularity, ApiError> {
    match v.unwrap_or("hour") {
        "hour" => Ok(Granularity::Hour),
        "day" => Ok(Granularity::Day),
        _ => Err(ApiError::bad_request("invalid_parameter", "granularity must be hour or day")),
    }
}

/// `[from, to)`, defaulting to the last 48 hours or 30 days.
fn range(g: Granularity, p: &MetricsParams) -> Result<(OffsetDateTime, OffsetDateTime), ApiError> {
    let now = OffsetDateTime::now_utc();
    let to = p.to.as_deref().map(|v| parse_time("to", v)).transpose()?.unwrap_or(now);
    let from = match p.from.as_deref() {
        Some(v) => parse_time("from", v)?,
        None => to - if g == Granularity::Hour { time::Duration::hours(48) } else { time::Duration::days(30) },
    };
    if from >= to {
        return Err(ApiError::bad_request("invalid_parameter", "from must be before to"));
    }
    let span = to - from;
    let too_long = match g {
        Granularity::Hour => span > time::Duration::hours(MAX_HOURS),
        Granularity::Day => span > time::Duration::days(MAX_DAYS),
    };
    if too_long {
        return Err(ApiError::bad_request(
            "range_too_long",
            format!("one request covers at most {MAX_HOURS} hours or {MAX_DAYS} days"),
        ));
    }
    Ok((from, to))
}

/// `GET /v1/metrics?granularity=hour|day&from=&to=&form=` (`to` excluded).
pub async fn metrics(
    State(state): State<AppState>,
    caller: Caller,
    Query(p): Query<MetricsParams>,
) -> Result<Json<Value>, ApiError> {
    let g = granularity(p.granularity.as_deref())?;
    let (from, to) = range(g, &p)?;
    let form = p
        .form
        .as_deref()
        .map(|f| FormId::parse(f).map_err(|e| ApiError::bad_request("invalid_parameter", format!("form: {e}"))))
        .transpose()?;
    // `to` is excluded: the last bucket read is the one holding the instant before it.
    let last = to - time::Duration::milliseconds(1);
    let Some(tenant) = caller.selected.as_ref() else {
        return agency(&state, &caller, g, from, last, form.as_ref()).await;
    };
    let buckets = state.reader(tenant).await.metrics(tenant, form.as_ref(), g, from, last).await?;
    let mut total = MetricBucket::default();
    for b in &buckets {
        add_into(&mut total, b);
    }
    Ok(Json(json!({
        "tenant": tenant,
        "granularity": g,
        "from": rfc3339(from),
        "to": rfc3339(to),
        "buckets": buckets.iter().map(bucket_json).collect::<Vec<_>>(),
        "totals": figures(&total),
    })))
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

/// An agency key without a tenant named: every covered tenant's days, from the operator index.
async fn agency(
    state: &AppState,
    caller: &Caller,
    g: Granularity,
    from: OffsetDateTime,
    last: OffsetDateTime,
    form: Option<&FormId>,
) -> Result<Json<Value>, ApiError> {
    if g != Granularity::Day {
        return Err(ApiError::bad_request(
            "tenant_required",
            "the view across an agency's tenants is daily: ask for granularity=day, or name a tenant with FormBridge-Tenant",
        ));
    }
    let days = state.inner.store.tenant_days(&caller.tenants, from.date(), last.date()).await?;
    let mut buckets: BTreeMap<String, MetricBucket> = BTreeMap::new();
    let mut per_tenant: BTreeMap<String, u64> = BTreeMap::new();
    for d in &days {
        let n = match form {
            Some(f) => d.form_stats.get(f.as_str()).copied().unwrap_or(0),
            None => d.submission_count,
        };
        if n == 0 {
            continue;
        }
        let b = buckets
            .entry(d.day.clone())
            .or_insert_with(|| MetricBucket { bucket: d.day.clone(), ..MetricBucket::default() });
        b.submission_count += n;
        for (f, c) in &d.form_stats {
            if form.is_none_or(|x| x.as_str() == f) {
                *b.form_stats.entry(f.clone()).or_default() += c;
            }
        }
        *per_tenant.entry(d.tenant.to_string()).or_default() += n;
    }
    let mut total = MetricBucket::default();
    for b in buckets.values() {
        add_into(&mut total, b);
    }
    let slim = |b: &MetricBucket| json!({ "submissions": b.submission_count, "forms": b.form_stats });
    Ok(Json(json!({
        "tenants": caller.tenants.as_slice(),
        "granularity": g,
        "from": rfc3339(from),
        "to": rfc3339(last + time::Duration::milliseconds(1)),
        "buckets": buckets.values().map(|b| { let mut v = slim(b); v["bucket"] = json!(b.bucket); v["start"] = json!(start_of(&b.bucket)); v }).collect::<Vec<_>>(),
        "per_tenant": per_tenant,
        "totals": slim(&total),
    })))
}

/// `GET /v1/metrics/live`: server-sent events, one `bucket` event with the current hour's bucket
/// whenever it changes (and once at the start).
pub async fn live(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let tenant = caller.tenant()?.clone();
    let permit = state.inner.live.clone().try_acquire_owned().map_err(|_| {
        let mut e = ApiError::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "too_many_live_connections",
            "this server has as many live connections as it allows; retry later",
        );
        e.retry_after = Some(30);
        e
    })?;
    let every = Duration::from_secs(state.inner.config.live_poll_seconds);
    let stop = state.inner.shutdown.clone();
    let stream = async_stream(state, tenant, every, stop, permit);
    // A comment straight away, so the browser counts the stream as open before the first read.
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

fn async_stream(
    state: AppState,
    tenant: formbridge_shared::TenantId,
    every: Duration,
    stop: tokio_util::sync::CancellationToken,
    permit: tokio::sync::OwnedSemaphorePermit,
) -> impl Stream<Item = Result<Event, Infallible>> {
    struct S {
        state: AppState,
        tenant: formbridge_shared::TenantId,
        every: Duration,
        stop: tokio_util::sync::CancellationToken,
        last: Option<MetricBucket>,
        first: bool,
        _permit: tokio::sync::OwnedSemaphorePermit,
    }
    let s = S { state, tenant, every, stop, last: None, first: true, _permit: permit };
    futures::stream::unfold(s, |mut s| async move {
        if s.first {
            s.first = false;
            return Some((Ok(Event::default().comment("live")), s));
        }
        loop {
            let now = OffsetDateTime::now_utc();
            match s.state.reader(&s.tenant).await.metrics(&s.tenant, None, Granularity::Hour, now, now).await {
                Ok(mut bs) => {
                    let b = bs.pop().unwrap_or_else(|| MetricBucket {
                        bucket: format!("{}T{:02}", now.date(), now.hour()),
                        ..MetricBucket::default()
                    });
                    if s.last.as_ref() != Some(&b) {
                        let ev = Event::default().event("bucket").json_data(bucket_json(&b)).unwrap_or_default();
                        s.last = Some(b);
                        return Some((Ok(ev), s));
                    }
                }
                Err(e) => tracing::warn!(error = %e, "live poll failed; trying again"),
            }
            tokio::select! {
                () = s.stop.cancelled() => return None,
                () = tokio::time::sleep(s.every) => {}
            }
        }
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CostParams {
    /// `2026-12`; the current month when left out.
    pub month: Option<String>,
}

/// `GET /v1/cost?month=2026-12`: what the tenant cost so far this month, every billed unit it
/// caused (its cost items, see `formbridge_shared::costs`), at the configured region's prices,
/// by line and by day, and the month projected at the rate so far.
pub async fn cost(
    State(state): State<AppState>,
    caller: Caller,
    Query(p): Query<CostParams>,
) -> Result<Json<Value>, ApiError> {
    let tenant = caller.tenant()?;
    let now = OffsetDateTime::now_utc();
    let month = p.month.unwrap_or_else(|| format!("{}-{:02}", now.year(), now.month() as u8));
    let (first, last) = costs::month_bounds(&month).map_err(|why| ApiError::bad_request("invalid_parameter", why))?;
    let reader = state.reader(tenant).await;
    let days = costs::days(reader.client(), reader.table(), Some(tenant), first, last)
        .await
        .map_err(|e| ApiError::from(formbridge_shared::store::StoreError::Dynamo(e)))?;
    let prices = &state.inner.prices;
    let bill = costs::month_cost(&month, &days, prices, &state.inner.config.prices.region, now)
        .map_err(|why| ApiError::bad_request("invalid_parameter", why))?;
    // Submissions from the aggregates, for the cost of one.
    let start = first.with_time(Time::MIDNIGHT).assume_utc();
    let end = last.with_time(Time::MIDNIGHT).assume_utc();
    let buckets = reader.metrics(tenant, None, Granularity::Day, start, end).await?;
    let submissions: u64 = buckets.iter().map(|b| b.submission_count).sum();
    Ok(Json(json!({
        "tenant": tenant,
        "month": bill.month,
        "so_far_usd": bill.so_far_usd,
        "projected_usd": bill.projected_usd,
        "submissions": submissions,
        "usd_per_submission": (submissions > 0).then(|| bill.so_far_usd / submissions as f64),
        "items": bill.lines,
        "days": bill.days,
        "units": bill.units,
        "region": bill.region,
        "prices": format!("{} on-demand", bill.region),
    })))
}

/// `GET /v1/recommendations`: the tenant's recommendations from its last 30 days (shard count,
/// failing destinations, retention nobody reads, compression that does not pay), each with its
/// numbers and the saving a month, largest first.
pub async fn recommendations(State(state): State<AppState>, caller: Caller) -> Result<Json<Value>, ApiError> {
    let tenant = caller.tenant()?;
    let profile = state.profile(tenant).await?;
    let reader = state.reader(tenant).await;
    let usage = formbridge_shared::recommend::tenant_usage(&reader, &profile, OffsetDateTime::now_utc()).await?;
    let recs = formbridge_shared::recommend::recommend(
        &[usage],
        &formbridge_shared::recommend::SystemUsage::default(),
        &state.inner.prices,
    );
    let total: f64 = recs.iter().map(|r| r.saving_usd_month).sum();
    Ok(Json(json!({ "tenant": tenant, "recommendations": recs, "saving_usd_month": total })))
}

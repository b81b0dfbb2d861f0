//! Submissions and deliveries: the merged listing, one submission with its history, the
//! worklist of deliveries, and replays.

use std::num::NonZeroU32;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use formbridge_shared::clock::{now_ms, rfc3339_ms};
use formbridge_shared::cursor;
use formbridge_shared::delivery::history;
use formbridge_shared::delivery::model::{DeliveryRecord, Status};
use formbridge_shared::delivery::replay::ReplayFilter;
use formbridge_shared::listing::{ListFilter, MAX_PAGE};
use formbridge_shared::{DestinationId, FormId, SubmissionId, TenantId};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::AppState;

pub const DEFAULT_PAGE: usize = 50;

/// Query parameters of the listings.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    pub form: Option<String>,
    pub since: Option<String>,
    pub until: Option<String>,
    pub status: Option<String>,
    pub destination: Option<String>,
    pub limit: Option<usize>,
    pub cursor: Option<String>,
}

pub(crate) fn parse_time(name: &'static str, v: &str) -> Result<OffsetDateTime, ApiError> {
    OffsetDateTime::parse(v, &Rfc3339).map_err(|_| {
        ApiError::bad_request(
            "invalid_parameter",
            format!("{name} must be an RFC 3339 time, e.g. 2026-12-04T08:00:00Z"),
        )
    })
}

fn ms(t: OffsetDateTime) -> u64 {
    u64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(0)
}

fn status_param(v: Option<&str>) -> Result<Option<Status>, ApiError> {
    v.map(|s| match Status::parse(s) {
        Some(st) if st != Status::Queued => Ok(st),
        _ => Err(ApiError::bad_request(
            "invalid_parameter",
            "status must be one of pending, retrying, succeeded, failed",
        )),
    })
    .transpose()
}

/// A status that waits on the worklist (what the worklist reads and bulk replays take).
fn worklist_status(s: Option<Status>) -> Result<Status, ApiError> {
    s.filter(|s| s.on_worklist())
        .ok_or_else(|| ApiError::bad_request("invalid_parameter", "status must be pending, retrying or failed"))
}

fn destination_param(v: Option<&str>) -> Result<Option<DestinationId>, ApiError> {
    v.map(|d| {
        DestinationId::parse(d).map_err(|e| ApiError::bad_request("invalid_parameter", format!("destination: {e}")))
    })
    .transpose()
}

impl ListParams {
    fn filter(&self) -> Result<ListFilter, ApiError> {
        let form = self
            .form
            .as_deref()
            .map(|f| FormId::parse(f).map_err(|e| ApiError::bad_request("invalid_parameter", format!("form: {e}"))))
            .transpose()?;
        let since_ms = self.since.as_deref().map(|v| parse_time("since", v)).transpose()?.map(ms);
        let until_ms = self.until.as_deref().map(|v| parse_time("until", v)).transpose()?.map(ms);
        if let (Some(a), Some(b)) = (since_ms, until_ms) {
            if a > b {
                return Err(ApiError::bad_request("invalid_parameter", "since is after until"));
            }
        }
        Ok(ListFilter { form, since_ms, until_ms, status: status_param(self.status.as_deref())? })
    }

    fn limit(&self) -> Result<usize, ApiError> {
        match self.limit {
            None => Ok(DEFAULT_PAGE),
            Some(n) if (1..=MAX_PAGE).contains(&n) => Ok(n),
            Some(_) => Err(ApiError::bad_request("invalid_parameter", format!("limit must be 1 to {MAX_PAGE}"))),
        }
    }

    /// The position inside the cursor, checked against this tenant and filter.
    fn position(&self, state: &AppState, tenant: &TenantId, bound: &str) -> Result<Option<String>, ApiError> {
        self.cursor
            .as_deref()
            .map(|c| cursor::open(&state.inner.keyring, tenant, bound, c, now_ms()))
            .transpose()
            .map_err(Into::into)
    }

    fn next_cursor(&self, state: &AppState, tenant: &TenantId, bound: &str, next: Option<String>) -> Option<String> {
        let expires = now_ms() + state.inner.config.cursor_ttl_seconds * 1000;
        next.map(|p| cursor::issue(&state.inner.keyring, tenant, bound, &p, expires))
    }
}

/// `GET /v1/submissions`
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(p): Query<ListParams>,
) -> Result<Json<Value>, ApiError> {
    if p.destination.is_some() {
        return Err(ApiError::bad_request("invalid_parameter", "destination filters /v1/deliveries, not submissions"));
    }
    let tenant = caller.tenant()?;
    let filter = p.filter()?;
    let limit = p.limit()?;
    let bound = format!("submissions;{}", filter.canonical());
    let position = p.position(&state, tenant, &bound)?;
    let profile = state.profile(tenant).await?;
    let page = state.reader(tenant).await.list_submissions(&profile, &filter, position.as_deref(), limit).await?;
    Ok(Json(json!({
        "submissions": page.items,
        "next_cursor": p.next_cursor(&state, tenant, &bound, page.next),
    })))
}

fn parse_id<T>(v: &str, parse: impl Fn(&str) -> Result<T, formbridge_shared::IdError>) -> Result<T, ApiError> {
    // A malformed id names nothing that exists: the same answer as a missing one.
    parse(v).map_err(|_| ApiError::not_found())
}

/// `GET /v1/submissions/{id}`: the decoded payload and every delivery's history.
pub async fn one(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let tenant = caller.tenant()?;
    let id = parse_id(&id, SubmissionId::parse)?;
    let profile = state.profile(tenant).await?;
    let destinations = state.destinations(tenant).await?;
    let h = history::read(&state.reader(tenant).await, &profile, &id, &destinations)
        .await
        .map_err(|e| match e {
            history::HistoryError::Record(formbridge_shared::delivery::RecordError::Dynamo(_)) => {
                ApiError::unavailable(e)
            }
            other => ApiError::internal(other),
        })?
        .ok_or_else(ApiError::not_found)?;
    let Some(s) = h.submission else { return Err(ApiError::not_found()) };
    let deliveries: Vec<Value> = h
        .deliveries
        .iter()
        .map(|d| {
            json!({
                "destination_id": d.destination,
                "webhook_id": d.webhook_id,
                "status": d.status,
                "reason": d.record.as_ref().and_then(|r| r.reason),
                "next_attempt_at": d.record.as_ref().filter(|r| !r.status.is_final()).map(|r| rfc3339_ms(r.next_attempt_ms)),
                "attempts": d.attempts.iter().map(|a| json!({
                    "attempt": a.attempt,
                    "at": rfc3339_ms(a.at_ms),
                    "status_code": a.status_code,
                    "response": a.response,
                    "error": a.error,
                    "error_class": a.error_class,
                    "latency_ms": a.latency_ms,
                    "trigger": a.trigger,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    Ok(Json(json!({
        "submission": {
            "submission_id": s.submission_id,
            "form_id": s.form_id,
            "site": s.site,
            "received_at": s.received_at,
            "raw_size": s.raw_size,
            "stored_size": s.stored_size,
            "codec": s.codec,
            "expires_at": rfc3339_ms(u64::try_from(s.expires_at).unwrap_or(0) * 1000),
            "payload": s.payload,
        },
        "deliveries": deliveries,
    })))
}

fn record_json(r: &DeliveryRecord) -> Value {
    json!({
        "submission_id": r.submission,
        "destination_id": r.destination,
        "webhook_id": r.webhook_id(),
        "status": r.status,
        "attempts": r.attempts,
        "last_status": r.last_status,
        "last_error": r.last_error,
        "reason": r.reason,
        "form_id": r.form_id,
        "next_attempt_at": (!r.status.is_final()).then(|| rfc3339_ms(r.next_attempt_ms)),
        "updated_at": rfc3339_ms(r.updated_ms),
    })
}

/// `GET /v1/deliveries?status=pending|retrying|failed`: the worklist, newest status time first.
pub async fn deliveries(
    State(state): State<AppState>,
    caller: Caller,
    Query(p): Query<ListParams>,
) -> Result<Json<Value>, ApiError> {
    let tenant = caller.tenant()?;
    let filter = p.filter()?;
    let status = worklist_status(filter.status)?;
    let destination = destination_param(p.destination.as_deref())?;
    let limit = p.limit()?;
    let bound = format!("deliveries;{};destination={}", filter.canonical(), p.destination.as_deref().unwrap_or(""));
    let position = p.position(&state, tenant, &bound)?;
    let reader = state.reader(tenant).await;
    let page = reader.list_worklist(tenant, status, destination, &filter, position.as_deref(), limit).await?;
    Ok(Json(json!({
        "deliveries": page.items.iter().map(record_json).collect::<Vec<_>>(),
        "next_cursor": p.next_cursor(&state, tenant, &bound, page.next),
    })))
}

fn replay_error(e: formbridge_shared::delivery::replay::ReplayError) -> ApiError {
    use formbridge_shared::delivery::replay::ReplayError;
    match e {
        ReplayError::Status(s) => {
            ApiError::bad_request("invalid_parameter", format!("status {s} cannot be replayed in bulk"))
        }
        ReplayError::Record(formbridge_shared::delivery::RecordError::Dynamo(_)) | ReplayError::Queue(_) => {
            ApiError::unavailable(e)
        }
        other => ApiError::internal(other),
    }
}

/// Records a change in the tenant's audit log, naming the key (or session) that made it. The
/// change has happened by now; a failed audit write is logged and counted, not answered as a
/// failure of the change.
pub(crate) async fn audit(state: &AppState, tenant: &TenantId, caller: &Caller, kind: &'static str, detail: Value) {
    let mut detail = detail;
    detail["key_id"] = json!(caller.key_id);
    let event = formbridge_shared::audit::AuditEvent::api(tenant, OffsetDateTime::now_utc(), kind, detail);
    if let Err(e) = state.inner.store.record_audit(&event).await {
        metrics::counter!("api_audit_failures_total").increment(1);
        tracing::warn!(error = %e, kind, "audit event not written");
    }
}

/// `POST /v1/submissions/{id}/deliveries/{destination_id}/replay`
pub async fn replay(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, dest)): Path<(String, String)>,
) -> Result<impl IntoResponse, ApiError> {
    let tenant = caller.tenant()?;
    let id = parse_id(&id, SubmissionId::parse)?;
    let dest = parse_id(&dest, DestinationId::parse)?;
    let profile = state.profile(tenant).await?;
    let rec =
        state.inner.replayer.find(&profile, &id, &dest).await.map_err(replay_error)?.ok_or_else(ApiError::not_found)?;
    let replayed = state.inner.replayer.replay_one(&rec).await.map_err(replay_error)?;
    audit(
        &state,
        tenant,
        &caller,
        "delivery.replayed",
        json!({ "submission": id, "destination": dest, "queued": replayed }),
    )
    .await;
    Ok((StatusCode::ACCEPTED, Json(json!({ "replayed": replayed, "webhook_id": rec.webhook_id() }))))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BulkReplay {
    pub status: String,
    pub destination: Option<String>,
    pub since: Option<String>,
    pub until: Option<String>,
    /// True unless set: count first, replay only when asked again with `false`.
    #[serde(default)]
    pub dry_run: Option<bool>,
}

/// `POST /v1/replays`: bulk replay by destination, status and time range; a dry run (the
/// default) answers how many deliveries would be replayed.
pub async fn bulk_replay(
    State(state): State<AppState>,
    caller: Caller,
    body: Result<Json<BulkReplay>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let Json(b) = body.map_err(|e| ApiError::bad_request("invalid_body", e.body_text()))?;
    let tenant = caller.tenant()?;
    let status = worklist_status(status_param(Some(&b.status))?)?;
    let destination = destination_param(b.destination.as_deref())?;
    let since_ms = b.since.as_deref().map(|v| parse_time("since", v)).transpose()?.map(ms).unwrap_or(0);
    let until_ms = b.until.as_deref().map(|v| parse_time("until", v)).transpose()?.map(ms).unwrap_or_else(now_ms);
    let f = ReplayFilter { tenant: tenant.clone(), destination, status, since_ms, until_ms };
    let matching = state.inner.replayer.matching(&f).await.map_err(replay_error)?;
    let max = state.inner.config.bulk_replay_max as usize;
    if b.dry_run.unwrap_or(true) {
        return Ok(Json(json!({ "dry_run": true, "matched": matching.len(), "max_per_request": max })));
    }
    if matching.len() > max {
        return Err(ApiError::bad_request(
            "too_many",
            format!("{} deliveries match; narrow the time range to at most {max} per request", matching.len()),
        ));
    }
    let report = state
        .inner
        .replayer
        .replay_all(&matching, NonZeroU32::new(100).expect("non-zero"))
        .await
        .map_err(replay_error)?;
    audit(
        &state,
        tenant,
        &caller,
        "delivery.bulk_replayed",
        json!({ "status": status, "destination": destination, "matched": report.matched, "replayed": report.replayed }),
    )
    .await;
    Ok(Json(
        json!({ "dry_run": false, "matched": report.matched, "replayed": report.replayed, "skipped": report.skipped }),
    ))
}

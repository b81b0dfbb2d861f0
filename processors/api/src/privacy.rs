//! A person's erasure, and retention per form.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use time::OffsetDateTime;

use formbridge_shared::erasure::ErasureError;
use formbridge_shared::store::StoreError;
use formbridge_shared::tenant::MAX_RETENTION_DAYS;
use formbridge_shared::FormId;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::AppState;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Erasure {
    pub email: String,
}

fn body<T>(b: Result<Json<T>, axum::extract::rejection::JsonRejection>) -> Result<T, ApiError> {
    b.map(|Json(b)| b).map_err(|e| ApiError::bad_request("invalid_body", e.body_text()))
}

/// `POST /v1/erasure` `{"email": ...}`: erases the person's submissions within the tenant and
/// answers with the receipt (counts and keyed hashes, never the ids or the address).
pub async fn erase(
    State(state): State<AppState>,
    caller: Caller,
    b: Result<Json<Erasure>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let b = body(b)?;
    let tenant = caller.tenant()?;
    let profile = state.profile(tenant).await?;
    let actor = format!("api:{}", caller.key_id);
    let receipt = state
        .inner
        .store
        .erase_person(&profile, &b.email, &state.inner.keyring, &actor, OffsetDateTime::now_utc())
        .await
        .map_err(|e| match e {
            ErasureError::Email => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_email", e.to_string()),
            ErasureError::Store(s) => s.into(),
            other => ApiError::internal(other),
        })?;
    Ok(Json(json!({
        "receipt": receipt,
        "note": "metric counts are kept (they hold no personal data); copies already delivered to the destinations in delivered_to are beyond reach",
    })))
}

/// `GET /v1/retention`: the tenant's retention and each form's own.
pub async fn retention(State(state): State<AppState>, caller: Caller) -> Result<Json<Value>, ApiError> {
    let tenant = caller.tenant()?;
    let p = state.inner.store.get_tenant(tenant).await?.ok_or_else(ApiError::not_found)?;
    Ok(Json(json!({ "retention_days": p.retention_days, "forms": p.form_retention })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    /// Days; `null` goes back to the tenant's retention.
    pub days: Option<u32>,
}

/// `PUT /v1/forms/{form}/retention` `{"days": 30}`: applies to submissions received from then on
/// (each one's expiry is fixed when it is accepted; ingest sees the change within its profile
/// cache time).
pub async fn set_retention(
    State(state): State<AppState>,
    caller: Caller,
    Path(form): Path<String>,
    b: Result<Json<Retention>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let b = body(b)?;
    let tenant = caller.tenant()?;
    let form = FormId::parse(&form).map_err(|e| ApiError::bad_request("invalid_parameter", format!("form: {e}")))?;
    if b.days.is_some_and(|d| !(1..=MAX_RETENTION_DAYS).contains(&d)) {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_retention",
            format!("days is 1 to {MAX_RETENTION_DAYS}, or null for the tenant's retention"),
        ));
    }
    let actor = format!("api:{}", caller.key_id);
    let p =
        state.inner.store.set_form_retention(tenant, &form, b.days, &actor, OffsetDateTime::now_utc()).await.map_err(
            |e| match e {
                StoreError::Conflict(_) => {
                    ApiError::new(StatusCode::CONFLICT, "conflict", "changed concurrently; try again")
                }
                StoreError::TenantNotFound(_) => ApiError::not_found(),
                other => other.into(),
            },
        )?;
    state.inner.profiles.invalidate(tenant).await;
    Ok(Json(json!({
        "form": form,
        "retention_days": p.retention_for(form.as_str()),
        "applies_to": "submissions received from now on",
    })))
}

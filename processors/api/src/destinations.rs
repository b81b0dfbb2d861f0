//! A tenant's destinations over HTTP: list (with health), create (the signing secret is shown
//! once), read, update, enable, disable, delete. Every change is audited by the shared data
//! layer in the same transaction as the change.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use time::OffsetDateTime;

use formbridge_shared::delivery::health::{BreakerState, Health};
use formbridge_shared::destination::{
    replace_auth, DeliveryPolicy, Destination, DestinationAuth, DestinationError, DestinationKind, DestinationSpec,
    DEFAULT_TIMEOUT_MS,
};
use formbridge_shared::{DestinationId, FormId, TenantId};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::AppState;

fn dest_error(e: DestinationError) -> ApiError {
    match e {
        DestinationError::NotFound(_) | DestinationError::TenantNotFound(_) => ApiError::not_found(),
        DestinationError::Url(..) => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_url", e.to_string()),
        DestinationError::Policy(_) => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_policy", e.to_string()),
        DestinationError::Conflict(_) => ApiError::new(StatusCode::CONFLICT, "conflict", e.to_string()),
        DestinationError::Store(s) => s.into(),
        other => ApiError::internal(other),
    }
}

/// `healthy`, `failing` (failures since the last success), `paused` (breaker open or probing)
/// or `disabled`.
fn health_json(d: &Destination, h: &Health) -> Value {
    let state = if !d.enabled {
        "disabled"
    } else if h.state != BreakerState::Closed {
        "paused"
    } else if h.consecutive_failures > 0 {
        "failing"
    } else {
        "healthy"
    };
    let v = h.view(&d.tenant, &d.id);
    json!({
        "state": state,
        "consecutive_failures": v.consecutive_failures,
        "first_failure_at": v.first_failure_at,
        "last_success_at": v.last_success_at,
        "paused_until": v.paused_until,
    })
}

fn view_json(d: &Destination, health: Option<&Health>) -> Value {
    let v = d.view();
    let mut out = json!({
        "destination_id": v.destination_id,
        "name": v.name,
        "url": v.url,
        "kind": v.kind,
        "enabled": v.enabled,
        "forms": v.forms,
        "sites": v.sites,
        "timeout_ms": v.timeout_ms,
        "auth": v.auth,
        "policy": v.policy,
        "created_at": v.created_at,
    });
    if let Some(h) = health {
        out["health"] = health_json(d, h);
    }
    out
}

async fn healths(state: &AppState, tenant: &TenantId, ds: &[Destination]) -> Result<Vec<Health>, ApiError> {
    let reads = ds.iter().map(|d| state.inner.health.get(tenant, &d.id));
    futures::future::join_all(reads).await.into_iter().map(|r| r.map_err(ApiError::unavailable)).collect()
}

/// `GET /v1/destinations`
pub async fn list(State(state): State<AppState>, caller: Caller) -> Result<Json<Value>, ApiError> {
    let tenant = caller.tenant()?;
    let ds = state.inner.store.list_destinations(tenant).await.map_err(dest_error)?;
    let hs = healths(&state, tenant, &ds).await?;
    Ok(Json(json!({ "destinations": ds.iter().zip(&hs).map(|(d, h)| view_json(d, Some(h))).collect::<Vec<_>>() })))
}

/// The store, auditing changes as this key (or `api:session`).
fn actor_store(state: &AppState, caller: &Caller) -> formbridge_shared::store::DataStore {
    state.inner.store.acting_as(&format!("api:{}", caller.key_id))
}

fn dest_id(v: &str) -> Result<DestinationId, ApiError> {
    DestinationId::parse(v).map_err(|_| ApiError::not_found())
}

/// `GET /v1/destinations/{id}`
pub async fn one(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let tenant = caller.tenant()?;
    let id = dest_id(&id)?;
    let d =
        state.inner.store.get_destination(tenant, &id).await.map_err(dest_error)?.ok_or_else(ApiError::not_found)?;
    let h = state.inner.health.get(tenant, &id).await.map_err(ApiError::unavailable)?;
    Ok(Json(view_json(&d, Some(&h))))
}

/// The body of a create or an update. On an update every field is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DestinationBody {
    pub name: Option<String>,
    pub url: Option<String>,
    pub kind: Option<DestinationKind>,
    /// Only these forms; an empty list means every form.
    pub forms: Option<Vec<String>>,
    pub timeout_ms: Option<u64>,
    /// `{"type":"bearer","token":...}`, `{"type":"basic","username":...,"password":...}` or
    /// `{"type":"headers","headers":{...}}`; `null` on an update removes it. Never shown back.
    #[serde(default, deserialize_with = "some_or_null")]
    pub auth: Option<Option<DestinationAuth>>,
    pub retry_schedule: Option<Vec<u32>>,
    pub client_error_schedule: Option<Vec<u32>>,
    pub max_in_flight: Option<u32>,
}

/// Tells a field set to `null` (Some(None)) from one left out (None).
fn some_or_null<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<DestinationAuth>>, D::Error> {
    Option::<DestinationAuth>::deserialize(d).map(Some)
}

impl DestinationBody {
    fn forms(&self) -> Result<Option<Vec<FormId>>, ApiError> {
        self.forms
            .as_ref()
            .map(|fs| {
                fs.iter()
                    .map(|f| {
                        FormId::parse(f)
                            .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_form", e.to_string()))
                    })
                    .collect()
            })
            .transpose()
    }

    fn check(&self) -> Result<(), ApiError> {
        if let Some(n) = &self.name {
            if n.trim().is_empty() || n.chars().count() > 100 {
                return Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_name",
                    "a name is 1 to 100 characters",
                ));
            }
        }
        if let Some(t) = self.timeout_ms {
            if !(1_000..=30_000).contains(&t) {
                return Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_timeout",
                    "timeout_ms is 1000 to 30000",
                ));
            }
        }
        Ok(())
    }

    fn apply_policy(&self, p: &mut DeliveryPolicy) {
        if let Some(s) = &self.retry_schedule {
            p.retry_schedule = s.clone();
        }
        if let Some(s) = &self.client_error_schedule {
            p.client_error_schedule = s.clone();
        }
        if let Some(m) = self.max_in_flight {
            p.max_in_flight = m;
        }
    }
}

fn json_body<T>(body: Result<Json<T>, axum::extract::rejection::JsonRejection>) -> Result<T, ApiError> {
    body.map(|Json(b)| b).map_err(|e| ApiError::bad_request("invalid_body", e.body_text()))
}

/// `POST /v1/destinations`: answers 201 with the destination and its signing secret, shown only
/// this once.
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    body: Result<Json<DestinationBody>, axum::extract::rejection::JsonRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let b = json_body(body)?;
    let tenant = caller.tenant()?;
    b.check()?;
    let Some(url) = b.url.clone() else {
        return Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_url", "url is required"));
    };
    let mut policy = DeliveryPolicy::default();
    b.apply_policy(&mut policy);
    let spec = DestinationSpec {
        name: b.name.clone().unwrap_or_else(|| url.clone()),
        url,
        kind: b.kind.unwrap_or(DestinationKind::Webhook),
        forms: b.forms()?.unwrap_or_default(),
        timeout_ms: b.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS),
        auth: b.auth.clone().flatten(),
        policy,
    };
    let created = actor_store(&state, &caller)
        .create_destinations(std::slice::from_ref(tenant), &spec, &state.inner.keyring, OffsetDateTime::now_utc())
        .await
        .map_err(dest_error)?;
    state.inner.destinations.invalidate(tenant).await;
    let (d, secret) = created.into_iter().next().ok_or_else(|| ApiError::internal("no destination created"))?;
    let mut out = view_json(&d, None);
    out["signing_secret"] = json!(secret.expose());
    Ok((StatusCode::CREATED, Json(out)))
}

/// `PATCH /v1/destinations/{id}`
pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Result<Json<DestinationBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let b = json_body(body)?;
    let tenant = caller.tenant()?;
    let id = dest_id(&id)?;
    b.check()?;
    let forms = b.forms()?;
    let d = actor_store(&state, &caller)
        .update_destination(
            tenant,
            &id,
            &state.inner.keyring,
            OffsetDateTime::now_utc(),
            "destination.updated",
            |d, k| {
                if let Some(u) = &b.url {
                    d.url = u.clone();
                }
                if let Some(n) = &b.name {
                    d.name = n.clone();
                }
                if let Some(kind) = b.kind {
                    d.kind = kind;
                }
                if let Some(f) = forms {
                    d.forms = f;
                }
                if let Some(t) = b.timeout_ms {
                    d.timeout_ms = t;
                }
                b.apply_policy(&mut d.policy);
                if let Some(auth) = b.auth.clone() {
                    replace_auth(d, k, auth);
                }
            },
        )
        .await
        .map_err(dest_error)?;
    state.inner.destinations.invalidate(tenant).await;
    Ok(Json(view_json(&d, None)))
}

async fn set_enabled(state: &AppState, caller: &Caller, id: &str, enabled: bool) -> Result<Json<Value>, ApiError> {
    let tenant = caller.tenant()?;
    let id = dest_id(id)?;
    let kind = if enabled { "destination.enabled" } else { "destination.disabled" };
    let d = actor_store(state, caller)
        .update_destination(tenant, &id, &state.inner.keyring, OffsetDateTime::now_utc(), kind, |d, _| {
            d.enabled = enabled
        })
        .await
        .map_err(dest_error)?;
    state.inner.destinations.invalidate(tenant).await;
    Ok(Json(view_json(&d, None)))
}

/// `POST /v1/destinations/{id}/enable`
pub async fn enable(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    set_enabled(&state, &caller, &id, true).await
}

/// `POST /v1/destinations/{id}/disable`
pub async fn disable(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    set_enabled(&state, &caller, &id, false).await
}

/// `DELETE /v1/destinations/{id}`
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let tenant = caller.tenant()?;
    let id = dest_id(&id)?;
    actor_store(&state, &caller)
        .delete_destination(tenant, &id, OffsetDateTime::now_utc())
        .await
        .map_err(dest_error)?;
    state.inner.destinations.invalidate(tenant).await;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/destinations/{id}/test`: sends an example submission to the destination now, signed
/// with its secret and with its credentials, through the same address guard as deliveries, and
/// answers with what came back. Nothing is stored but an audit event; the example's
/// `webhook-id` starts with `fb_test_` so a receiver can tell it apart.
pub async fn test_send(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    use formbridge_shared::delivery::send;
    let tenant = caller.tenant()?;
    let id = dest_id(&id)?;
    let d =
        state.inner.store.get_destination(tenant, &id).await.map_err(dest_error)?.ok_or_else(ApiError::not_found)?;
    let now = OffsetDateTime::now_utc();
    let example_id = formbridge_shared::SubmissionId::new();
    let example = formbridge_shared::submission::StoredSubmission {
        tenant_id: tenant.clone(),
        submission_id: example_id,
        shard: 0,
        site: "example.com".into(),
        form_id: d.forms.first().map_or_else(|| "contact".to_owned(), ToString::to_string),
        received_at: formbridge_shared::clock::rfc3339_ms(formbridge_shared::clock::now_ms()),
        expires_at: now.unix_timestamp(),
        raw_size: 0,
        stored_size: 0,
        codec: "id",
        payload: json!({
            "fields": { "name": "Test Person", "email": "test@example.com", "message": "A test submission from Form-Bridge." },
            "meta": { "test": true },
            "submitted_at": formbridge_shared::clock::rfc3339_ms(formbridge_shared::clock::now_ms()),
        }),
    };
    let webhook_id = format!("fb_test_{example_id}");
    let (o, _) = send::attempt(&state.inner.sender, &d, &state.inner.keyring, &webhook_id, &example)
        .await
        .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "destination_unusable", e))?;
    let verdict = send::verdict(&o);
    crate::submissions::audit(
        &state,
        tenant,
        &caller,
        "destination.tested",
        json!({ "destination": id, "status_code": o.status }),
    )
    .await;
    Ok(Json(json!({
        "webhook_id": webhook_id,
        "delivered": matches!(verdict, send::Verdict::Succeeded),
        "status_code": (o.status > 0).then_some(o.status),
        "error_class": o.error,
        "error": send::error_text(&o),
        "latency_ms": u64::try_from(o.latency.as_millis()).unwrap_or(u64::MAX),
        "response": formbridge_shared::delivery::truncate_body(o.body.as_bytes(), 1024),
    })))
}

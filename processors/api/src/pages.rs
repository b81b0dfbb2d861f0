//! Sign-in, the session, the OpenAPI document and the dashboard's files.
//!
//! A portal link is `<origin>/portal#<token>`: the token travels in the fragment, which a browser
//! never sends to a server, so it stays out of access logs and proxies. The page's script posts
//! it to `/v1/portal/exchange`, which answers with the session cookie (`fb_session`: HttpOnly,
//! SameSite=Strict, Secure unless turned off for plain-HTTP loopback) and the session's CSRF
//! token. The exchange takes JSON only and refuses a foreign `Origin`, so another site cannot
//! sign a visitor into someone else's tenant.

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use time::OffsetDateTime;

use formbridge_shared::clock::rfc3339_ms;
use formbridge_shared::portal::{self, PortalError};

use crate::auth::{Caller, SESSION_COOKIE};
use crate::error::ApiError;
use crate::AppState;

const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'";

pub const OPENAPI: &str = include_str!("../openapi.json");

/// `GET /v1/openapi.json`
pub async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI)
}

fn html(body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}

/// `GET /`
pub async fn dashboard() -> Response {
    html(include_str!("../assets/index.html"))
}

/// `GET /portal`
pub async fn portal() -> Response {
    html(include_str!("../assets/portal.html"))
}

/// `GET /assets/{file}`: the dashboard's own files and the vendored chart library.
pub async fn asset(Path(file): Path<String>) -> Result<Response, ApiError> {
    let (body, kind): (&'static str, &'static str) = match file.as_str() {
        "app.js" => (include_str!("../assets/app.js"), "text/javascript; charset=utf-8"),
        "app.css" => (include_str!("../assets/app.css"), "text/css; charset=utf-8"),
        "uplot.iife.min.js" => (include_str!("../assets/uplot.iife.min.js"), "text/javascript; charset=utf-8"),
        "uPlot.min.css" => (include_str!("../assets/uPlot.min.css"), "text/css; charset=utf-8"),
        _ => return Err(ApiError::not_found()),
    };
    Ok((
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response())
}

/// `GET /v1/session`: who the caller is (a session or a key), with the CSRF token for a session.
pub async fn session(State(state): State<AppState>, caller: Caller) -> Json<Value> {
    let csrf = caller.session_cookie.as_deref().and_then(|c| {
        formbridge_shared::portal::Credential::parse_session(c).map(|s| portal::csrf_token(&state.inner.keyring, &s))
    });
    Json(json!({
        "tenant": caller.selected,
        "tenants": caller.tenants.as_slice(),
        "key_id": caller.key_id,
        "key_name": caller.key_name,
        "csrf_token": csrf,
        "expires_at": caller.session_expires_ms.map(rfc3339_ms),
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Exchange {
    pub token: String,
}

fn session_cookie(state: &AppState, value: &str, max_age_s: u64) -> HeaderValue {
    let secure = if state.inner.config.secure_cookies { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age_s}{secure}"
    ))
    .expect("the cookie is ASCII")
}

/// `POST /v1/portal/exchange` `{"token": "fbp_..."}`: signs in, once per token.
pub async fn exchange(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<Exchange>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    if let Some(origin) = headers.get(header::ORIGIN) {
        if origin.to_str().ok() != Some(state.inner.config.origin().as_str()) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "origin_refused",
                "sign in from the dashboard's own page",
            ));
        }
    }
    let Json(b) = body.map_err(|e| match e {
        axum::extract::rejection::JsonRejection::MissingJsonContentType(_) => {
            ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", "send application/json")
        }
        other => ApiError::bad_request("invalid_body", other.body_text()),
    })?;
    let (cookie, session) = state
        .inner
        .store
        .exchange_portal_token(&b.token, &state.inner.keyring, OffsetDateTime::now_utc())
        .await
        .map_err(|e| match e {
            PortalError::TokenInvalid => ApiError::new(StatusCode::UNAUTHORIZED, "portal_token_invalid", e.to_string()),
            PortalError::Store(s) => s.into(),
            other => ApiError::internal(other),
        })?;
    let max_age = session.expires_ms.saturating_sub(formbridge_shared::clock::now_ms()) / 1000;
    let mut resp = Json(json!({
        "tenant": session.tenant,
        "csrf_token": portal::csrf_token(&state.inner.keyring, &cookie),
        "expires_at": rfc3339_ms(session.expires_ms),
    }))
    .into_response();
    resp.headers_mut().insert(header::SET_COOKIE, session_cookie(&state, cookie.expose(), max_age));
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

/// `POST /v1/session/logout`: ends the session (CSRF-checked like every change).
pub async fn logout(State(state): State<AppState>, caller: Caller) -> Result<Response, ApiError> {
    if let Some(c) = &caller.session_cookie {
        state.inner.store.end_session(c, &state.inner.keyring).await.map_err(ApiError::unavailable)?;
        state.inner.auth_cache.invalidate(&crate::auth::cache_key("session", c)).await;
    }
    let mut resp = StatusCode::NO_CONTENT.into_response();
    resp.headers_mut().insert(header::SET_COOKIE, session_cookie(&state, "", 0));
    Ok(resp)
}

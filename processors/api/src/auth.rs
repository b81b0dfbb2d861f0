//! Who is calling, and for which tenant.
//!
//! A request authenticates with `Authorization: Bearer fbk_...` (an API key) or with the
//! dashboard's `fb_session` cookie. Each costs one GetItem, cached for a few seconds
//! (`API_AUTH_CACHE_SECONDS`, the bound for a revocation to reach every instance). A session's
//! state-changing requests must carry `X-CSRF-Token`; API keys need none (a browser never sends
//! them on its own).
//!
//! The tenant comes only from the credential. A key that covers one tenant reads that tenant; an
//! agency key that covers several names one with `FormBridge-Tenant`, which must be one of its
//! own: any other answers exactly as a tenant that does not exist (404 `not_found`).

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, Method, StatusCode};
use sha2::{Digest, Sha256};

use formbridge_shared::apikey::ApiKeyError;
use formbridge_shared::clock::now_ms;
use formbridge_shared::portal::{self, PortalError};
use formbridge_shared::TenantId;

use crate::error::ApiError;
use crate::AppState;

pub const SESSION_COOKIE: &str = "fb_session";
pub const CSRF_HEADER: &str = "x-csrf-token";
pub const TENANT_HEADER: &str = "formbridge-tenant";

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Every tenant the credential covers.
    pub tenants: Arc<Vec<TenantId>>,
    /// The tenant this request is for, when it names or implies one.
    pub selected: Option<TenantId>,
    /// The key's id, or `session`.
    pub key_id: String,
    pub key_name: String,
    /// Set when the request came with a session cookie (then its expiry).
    pub session_expires_ms: Option<u64>,
    /// The session cookie itself (to derive its CSRF token); never logged.
    pub(crate) session_cookie: Option<String>,
}

impl Caller {
    /// The one tenant this request reads or changes.
    pub fn tenant(&self) -> Result<&TenantId, ApiError> {
        self.selected.as_ref().ok_or_else(|| {
            ApiError::bad_request(
                "tenant_required",
                "this key covers several tenants: name one with the FormBridge-Tenant header",
            )
        })
    }
}

/// What the auth cache holds per credential.
#[derive(Debug, Clone)]
pub(crate) struct Authenticated {
    tenants: Arc<Vec<TenantId>>,
    key_id: String,
    key_name: String,
    session_expires_ms: Option<u64>,
}

fn cookie<'a>(parts: &'a Parts, name: &str) -> Option<&'a str> {
    parts
        .headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix(name)?.strip_prefix('='))
}

pub(crate) fn cache_key(kind: &str, secret: &str) -> [u8; 32] {
    Sha256::new().chain_update(kind).chain_update([0]).chain_update(secret).finalize().into()
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let s = &state.inner;
        let bearer =
            parts.headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).map(|v| {
                v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")).unwrap_or(v).trim().to_owned()
            });
        let session = if bearer.is_none() { cookie(parts, SESSION_COOKIE).map(str::to_owned) } else { None };
        let now = now_ms();
        let auth = match (&bearer, &session) {
            (Some(key), _) => {
                let store = s.store.clone();
                let keyring = s.keyring.clone();
                let k = key.clone();
                s.auth_cache
                    .try_get_with(cache_key("key", key), async move {
                        let p = store.authenticate_api_key(&k, &keyring, now).await?;
                        Ok::<_, ApiKeyError>(Authenticated {
                            tenants: Arc::new(p.tenants),
                            key_id: p.key_id,
                            key_name: p.name,
                            session_expires_ms: None,
                        })
                    })
                    .await
                    .map_err(|e| match e.as_ref() {
                        ApiKeyError::Malformed | ApiKeyError::Invalid => ApiError::new(
                            StatusCode::UNAUTHORIZED,
                            "invalid_api_key",
                            "the API key is not valid (unknown, revoked or expired)",
                        ),
                        other => ApiError::unavailable(other),
                    })?
            }
            (None, Some(cookie)) => {
                let store = s.store.clone();
                let keyring = s.keyring.clone();
                let c = cookie.clone();
                s.auth_cache
                    .try_get_with(cache_key("session", cookie), async move {
                        let session = store.authenticate_session(&c, &keyring, now).await?;
                        Ok::<_, PortalError>(Authenticated {
                            tenants: Arc::new(vec![session.tenant]),
                            key_id: "session".into(),
                            key_name: "dashboard session".into(),
                            session_expires_ms: Some(session.expires_ms),
                        })
                    })
                    .await
                    .map_err(|e| match e.as_ref() {
                        PortalError::SessionInvalid => ApiError::new(
                            StatusCode::UNAUTHORIZED,
                            "session_expired",
                            "the dashboard session has ended; open a new portal link",
                        ),
                        other => ApiError::unavailable(other),
                    })?
            }
            (None, None) => return Err(ApiError::unauthenticated()),
        };
        if auth.session_expires_ms.is_some_and(|e| e <= now) {
            return Err(ApiError::new(StatusCode::UNAUTHORIZED, "session_expired", "the dashboard session has ended"));
        }
        // CSRF before anything that could tell the caller whether a resource exists.
        if let Some(cookie) = &session {
            let unsafe_method = !matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS);
            let presented = parts.headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok()).unwrap_or("");
            if unsafe_method && !portal::verify_csrf(&s.keyring, cookie, presented) {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "csrf_failed",
                    "a state-changing request from the dashboard needs its X-CSRF-Token header",
                ));
            }
        }
        let rate_key = if session.is_some() { format!("session:{}", auth.tenants[0]) } else { auth.key_id.clone() };
        if let Err(not_until) = s.limiter.check_key(&rate_key) {
            let wait = not_until.wait_time_from(governor::clock::Clock::now(&governor::clock::DefaultClock::default()));
            metrics::counter!("api_rate_limited_total").increment(1);
            let mut e = ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", "too many requests for this key");
            e.retry_after = Some(wait.as_secs().max(1));
            return Err(e);
        }
        let named = parts.headers.get(TENANT_HEADER).map(|v| v.to_str().ok().and_then(|t| TenantId::parse(t).ok()));
        let selected = match named {
            // A tenant the credential does not cover is one that does not exist, for this caller.
            Some(Some(t)) if auth.tenants.contains(&t) => Some(t),
            Some(_) => return Err(ApiError::not_found()),
            None if auth.tenants.len() == 1 => Some(auth.tenants[0].clone()),
            None => None,
        };
        Ok(Caller {
            tenants: auth.tenants,
            selected,
            key_id: auth.key_id,
            key_name: auth.key_name,
            session_expires_ms: auth.session_expires_ms,
            session_cookie: session,
        })
    }
}

//! API errors: `{"error": {"code", "message"}}` with a stable code, and `Retry-After` where the
//! caller should come back. The codes are listed in the OpenAPI document.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), retry_after: None }
    }

    /// The one answer for anything the caller may not see and anything that does not exist.
    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", "no such resource")
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn unauthenticated() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "send `Authorization: Bearer <API key>`, or sign in to the dashboard with a portal link",
        )
    }

    /// The engine failed or is unreachable: the caller may retry.
    pub fn unavailable(what: impl std::fmt::Display) -> Self {
        tracing::warn!(error = %what, "request failed on the data store");
        let mut e = Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "the data store is unavailable; retry");
        e.retry_after = Some(2);
        e
    }

    /// Data we wrote but cannot read back: a bug or a damaged item, never the caller's fault.
    pub fn internal(what: impl std::fmt::Display) -> Self {
        tracing::error!(error = %what, "unreadable data");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "an item could not be read; this is logged")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": { "code": self.code, "message": self.message } });
        let mut resp = (self.status, Json(body)).into_response();
        if let Some(s) = self.retry_after {
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        resp
    }
}

impl From<formbridge_shared::store::StoreError> for ApiError {
    fn from(e: formbridge_shared::store::StoreError) -> Self {
        use formbridge_shared::store::StoreError;
        match e {
            StoreError::Dynamo(_) | StoreError::Exhausted(_) => ApiError::unavailable(e),
            other => ApiError::internal(other),
        }
    }
}

impl From<formbridge_shared::listing::ListError> for ApiError {
    fn from(e: formbridge_shared::listing::ListError) -> Self {
        use formbridge_shared::listing::ListError;
        match e {
            ListError::Store(s) => s.into(),
            ListError::Position => {
                ApiError::bad_request("cursor_invalid", "the cursor was not issued for this request")
            }
            other => ApiError::internal(other),
        }
    }
}

impl From<formbridge_shared::cursor::CursorError> for ApiError {
    fn from(e: formbridge_shared::cursor::CursorError) -> Self {
        ApiError::bad_request(e.code(), e.to_string())
    }
}

//! The one error type of the API: a status, a stable machine code, a message
//! naming the offending field, and the request id, as
//! `{"error": code, "message": "...", "requestId": "..."}`. Code and status
//! come together from an error kind of the catalogue (`error_codes`).
//!
//! Internal failures are logged here with their detail and answered with a
//! generic 500: no stack trace, SQL or file path ever reaches a client.
use crate::error_codes::{self, ErrorCode};
use axum::{
    Json,
    response::{IntoResponse, Response},
};
use http::{HeaderName, HeaderValue, StatusCode};

use crate::{accounts::AccountsError, faces::FacesError, inputs::InputError};

tokio::task_local! {
    /// The id of the request being served; set by the request-id middleware
    /// (and re-entered in tasks spawned for a request).
    pub static REQUEST_ID: String;
}

/// The current request's id, or `-` outside a request.
pub fn current_request_id() -> String {
    REQUEST_ID
        .try_with(Clone::clone)
        .unwrap_or_else(|_| "-".to_string())
}

#[derive(Debug)]
pub struct ApiError {
    /// The kind's status (`ApiError::new`).
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Extra response headers (`Retry-After`); a Vec keeps the error small.
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl ApiError {
    pub fn new(kind: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            status: kind.http_status(),
            code: kind.code,
            message: message.into(),
            headers: Vec::new(),
        }
    }

    /// `Retry-After`: the client may come back after `secs` seconds.
    pub fn retry_after(self, secs: u64) -> Self {
        self.with_header(http::header::RETRY_AFTER, secs)
    }

    pub fn with_header(mut self, name: HeaderName, value: impl ToString) -> Self {
        if let Ok(v) = HeaderValue::from_str(&value.to_string()) {
            self.headers.push((name, v));
        }
        self
    }

    /// 400 for an image the engine could not use, named by the request
    /// field that carried it. The engine's message may already start with its
    /// own side's name (`engine_field`): that prefix is replaced, not doubled.
    pub fn bad_image(field: &str, engine_field: &str, kind: ErrorCode, message: &str) -> Self {
        let message = message
            .strip_prefix(&format!("{engine_field}:"))
            .map_or(message, str::trim_start);
        Self::new(kind, format!("{field}: {message}"))
    }

    /// 500: logs `detail` (never sent) and answers a generic message.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!(error = %detail, "internal error");
        Self::new(
            error_codes::INTERNAL_ERROR,
            "unexpected server error; it is safe to retry with backoff",
        )
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(error_codes::UNAUTHORIZED, message)
    }

    pub fn insufficient_balance(message: impl Into<String>) -> Self {
        Self::new(error_codes::INSUFFICIENT_BALANCE, message)
    }

    pub fn rate_limited(limit_text: &str, retry_after_secs: u64) -> Self {
        let secs = retry_after_secs.max(1);
        Self::new(
            error_codes::RATE_LIMITED,
            format!("rate limit of {limit_text} exceeded; retry in {secs} s"),
        )
        .retry_after(secs)
    }

    /// The request passed its deadline (`FACECOMPARE_REQUEST_TIMEOUT_S`); nothing was charged.
    pub fn timed_out() -> Self {
        Self::new(
            error_codes::REQUEST_TIMEOUT,
            "the request took too long; retry later",
        )
        .retry_after(1)
    }

    pub fn not_found() -> Self {
        Self::new(error_codes::NOT_FOUND, "no such route; see /openapi.json")
    }

    pub fn method_not_allowed() -> Self {
        Self::new(
            error_codes::METHOD_NOT_ALLOWED,
            "method not allowed on this route",
        )
    }
}

/// Seconds a client should wait after `s3_unavailable`.
pub const S3_RETRY_AFTER_SECS: u64 = 2;

impl From<InputError> for ApiError {
    fn from(e: InputError) -> Self {
        let error = Self::new(e.kind(), e.to_string());
        match e {
            InputError::S3Unavailable { .. } => error.retry_after(S3_RETRY_AFTER_SECS),
            InputError::BodyBudgetSpent => error.retry_after(1),
            _ => error,
        }
    }
}

impl From<FacesError> for ApiError {
    fn from(e: FacesError) -> Self {
        match e {
            FacesError::BadImage {
                side,
                kind,
                message,
            } => Self::bad_image(side.field(), side.field(), kind, &message),
            FacesError::Overloaded => Self::new(
                error_codes::OVERLOADED,
                "the server is busy comparing faces; retry shortly",
            )
            .retry_after(1),
            FacesError::Internal(detail) => Self::internal(format!("face engine: {detail}")),
        }
    }
}

/// Seconds a client should wait after `database_unavailable`: long enough
/// for a restart or failover to make progress, short enough to notice it.
pub const DATABASE_RETRY_AFTER_SECS: u64 = 2;

impl From<AccountsError> for ApiError {
    fn from(e: AccountsError) -> Self {
        if e.is_transient() {
            // An outage is expected and retryable, not a bug: 503, logged as a warning.
            tracing::warn!(error = %e, "database unavailable");
            return Self::new(
                error_codes::DATABASE_UNAVAILABLE,
                "the database is unavailable; nothing was charged, retry shortly",
            )
            .retry_after(DATABASE_RETRY_AFTER_SECS);
        }
        Self::internal(format!("accounts: {e}"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "error": self.code,
            "message": self.message,
            "requestId": current_request_id(),
        });
        let mut response = (self.status, Json(body)).into_response();
        for (name, value) in self.headers {
            response.headers_mut().insert(name, value);
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::faces::Side;

    async fn body_of(r: Response) -> serde_json::Value {
        let bytes = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn renders_code_message_and_request_id() {
        let r = REQUEST_ID
            .scope("req-1".into(), async {
                ApiError::from(InputError::ImageTooLarge {
                    field: "target".into(),
                    size: Some(18_035_507),
                })
                .into_response()
            })
            .await;
        assert_eq!(r.status(), 400);
        let v = body_of(r).await;
        assert_eq!(v["error"], "image_too_large");
        assert_eq!(v["message"], "target: image is 17.2 MB; the limit is 15 MB");
        assert_eq!(v["requestId"], "req-1");
    }

    #[tokio::test]
    async fn internal_errors_do_not_leak_details() {
        let r = ApiError::from(FacesError::Internal("/secret/path.onnx: bad tensor".into()))
            .into_response();
        assert_eq!(r.status(), 500);
        let v = body_of(r).await;
        assert_eq!(v["error"], "internal_error");
        assert!(!v.to_string().contains("secret"));
    }

    #[tokio::test]
    async fn maps_engine_and_retryable_errors() {
        let e = ApiError::from(FacesError::BadImage {
            side: Side::Target,
            kind: error_codes::IMAGE_DECODE_FAILED,
            message: "truncated JPEG".into(),
        });
        assert_eq!(
            (e.status.as_u16(), e.code, e.message.as_str()),
            (400, "image_decode_failed", "target: truncated JPEG")
        );
        let r = ApiError::from(FacesError::Overloaded).into_response();
        assert_eq!(r.status(), 503);
        assert_eq!(r.headers()["retry-after"], "1");
        let r = ApiError::from(AccountsError::Db(sqlx::Error::PoolTimedOut)).into_response();
        assert_eq!(r.status(), 503);
        assert_eq!(r.headers()["retry-after"], "2");
        assert_eq!(body_of(r).await["error"], "database_unavailable");
        let r = ApiError::from(AccountsError::Db(sqlx::Error::RowNotFound)).into_response();
        assert_eq!(r.status(), 500);
        let r = ApiError::rate_limited("2/min", 0).into_response();
        assert_eq!(
            (r.status().as_u16(), &r.headers()["retry-after"]),
            (429, &HeaderValue::from_static("1"))
        );
    }
}

//! `POST /v1/face/compare`: the native transport of the compare operation.
//!
//! Order (each step refuses before the more expensive ones run):
//! auth → rate limit (every authenticated request counts) → parse the body →
//! [`operations::compare`](crate::operations::compare): `Idempotency-Key`
//! (replay / mismatch / in progress) → balance check (402 before heavy work)
//! → fetch S3 inputs → engine → charge → response. This module maps the
//! operation's result and errors to the native API (`error_codes`).
//!
//! The work runs in its own task: a client that disconnects cannot cut it
//! between the charge and the idempotency record, and a panic becomes a 500.
use crate::error_codes;
use std::sync::Arc;

use axum::{
    body::Body,
    extract::{Request, State},
    response::{IntoResponse, Response},
};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use tokio::{sync::oneshot, time::timeout_at};

use super::{
    AppState,
    error::{ApiError, current_request_id},
    exchange,
};
use crate::{
    accounts::Org,
    faces::Comparison,
    inputs::{self, MAX_BODY_BYTES},
    operations::compare::{self as operation, CompareError, CompareRequest, Outcome},
};

pub async fn compare(State(state): State<Arc<AppState>>, req: Request) -> Response {
    exchange::in_own_task(
        |client_gone| run(state, req, client_gone),
        |e| ApiError::internal(e).into_response(),
    )
    .await
}

async fn run(
    state: Arc<AppState>,
    req: Request,
    mut client_gone: oneshot::Receiver<()>,
) -> Response {
    let work = async |org: &Org, headers: &HeaderMap, body: &mut Option<Body>| {
        process(&state, org, headers, body, &mut client_gone).await
    };
    exchange::with_api_key(&state, req, work).await
}

/// The `Idempotency-Key` header: absent, or 1–255 visible ASCII characters.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(v) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let bad = || {
        ApiError::new(
            error_codes::INVALID_IDEMPOTENCY_KEY,
            "Idempotency-Key: must be 1 to 255 visible ASCII characters",
        )
    };
    let key = v.to_str().map_err(|_| bad())?.trim();
    if key.is_empty() || key.len() > 255 || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(bad());
    }
    Ok(Some(key.to_string()))
}

async fn process(
    state: &AppState,
    org: &Org,
    headers: &HeaderMap,
    body: &mut Option<Body>,
    client_gone: &mut oneshot::Receiver<()>,
) -> Result<Response, ApiError> {
    let deadline = state.deadline();
    let idem_key = idempotency_key(headers)?;
    let admitted = exchange::admit_body(state, &org.id, headers, body, MAX_BODY_BYTES)?;
    // Held until the compare ends: the images live as long as it does.
    let _body_share = admitted.share;
    let inputs = timeout_at(
        deadline,
        inputs::body::read_body(admitted.kind, admitted.body),
    )
    .await
    .map_err(|_| ApiError::timed_out())??;

    let request = CompareRequest {
        inputs,
        idempotency_key: idem_key,
        deadline,
        request_id: current_request_id(),
        threshold: None,
    };
    let render = |comparison: &Comparison, threshold: f64| {
        serde_json::to_string(&comparison.response(threshold))
            .map_err(|e| CompareError::Internal(e.to_string()))
    };
    match operation::compare(&state.app, org, request, client_gone, render).await {
        Ok(Outcome::Done { body, .. }) => Ok(json_response(StatusCode::OK, body)),
        Ok(Outcome::Replay { status, body }) => Ok(replay(status, body)),
        Err(e) => Err(api_error(e)),
    }
}

/// The native API's answer to a failed compare.
fn api_error(e: CompareError) -> ApiError {
    match e {
        CompareError::Input(e) => e.into(),
        CompareError::Faces(e) => e.into(),
        CompareError::Accounts(e) => e.into(),
        CompareError::InsufficientBalance { balance, cost } => insufficient(balance, cost),
        CompareError::IdempotencyMismatch => ApiError::new(
            error_codes::IDEMPOTENCY_KEY_MISMATCH,
            "Idempotency-Key: already used with other source/target inputs; use a new key",
        ),
        CompareError::IdempotencyInProgress => ApiError::new(
            error_codes::IDEMPOTENCY_IN_PROGRESS,
            "Idempotency-Key: a request with this key is still running; retry shortly",
        )
        .retry_after(1),
        CompareError::TimedOut => ApiError::timed_out(),
        CompareError::ClientGone => ApiError::new(
            error_codes::CLIENT_CLOSED_REQUEST,
            "the client closed the connection before the answer; nothing was charged",
        ),
        // The native answer never refuses a result; kept total for the compiler.
        CompareError::NoSourceFace => ApiError::internal("unexpected NoSourceFace"),
        CompareError::Internal(detail) => ApiError::internal(detail),
    }
}

fn insufficient(balance: Option<i64>, cost: i64) -> ApiError {
    let has = balance.map_or_else(|| "less".to_string(), |b| b.to_string());
    let s = if cost == 1 { "" } else { "s" };
    ApiError::insufficient_balance(format!(
        "token balance too low: a compare costs {cost} token{s}, the organisation has {has}; nothing was charged"
    ))
}

fn json_response(status: StatusCode, body: String) -> Response {
    let mut r = (status, body).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn replay(status: u16, body: String) -> Response {
    let mut r = json_response(StatusCode::from_u16(status).unwrap_or(StatusCode::OK), body);
    r.headers_mut()
        .insert("idempotent-replayed", HeaderValue::from_static("true"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_has_exactly_five_fields_and_plain_numbers() {
        let r = crate::faces::CompareResponse {
            is_match: true,
            confidence: 96.4,
            threshold: 80.0,
            source_face_detected: true,
            target_face_detected: true,
        };
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"isMatch":true,"confidence":96.4,"threshold":80,"sourceFaceDetected":true,"targetFaceDetected":true}"#
        );
    }

    #[test]
    fn validates_idempotency_keys() {
        let mut h = HeaderMap::new();
        assert!(idempotency_key(&h).unwrap().is_none());
        h.insert("idempotency-key", HeaderValue::from_static("order-42"));
        assert_eq!(idempotency_key(&h).unwrap().as_deref(), Some("order-42"));
        h.insert(
            "idempotency-key",
            HeaderValue::from_str(&"x".repeat(256)).unwrap(),
        );
        assert_eq!(
            idempotency_key(&h).unwrap_err().code,
            "invalid_idempotency_key"
        );
    }
}

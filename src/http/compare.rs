//! `POST /v1/face/compare`.
//!
//! Order (each step refuses before the more expensive ones run):
//! auth → rate limit (every authenticated request counts) → parse the body →
//! `Idempotency-Key` (replay / mismatch / in progress) → balance check (402
//! before heavy work) → fetch S3 inputs → engine → charge → response.
//!
//! The work runs in its own task: a client that disconnects cannot cut it
//! between the charge and the idempotency record, and a panic becomes a 500.
use std::{sync::Arc, time::Instant};

use axum::{
    body::Body,
    extract::{Request, State},
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use futures_util::StreamExt;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use tokio::{sync::oneshot, time::timeout_at};
use tracing::Instrument;

use super::{
    AppState, OrgId,
    auth::{authenticate, rate_limit_headers},
    body_budget::BodyBudget,
    error::{ApiError, REQUEST_ID, current_request_id},
};
use crate::{
    accounts::{Accounts, IdempotencyBegin, Org},
    faces::FacesError,
    inputs::{self, CompareInputs, ImageInput, InputError, MAX_BODY_BYTES},
};

pub async fn compare(State(state): State<Arc<AppState>>, req: Request) -> Response {
    let id = current_request_id();
    // Dropped with this future when the connection goes away: the task then
    // stops waiting for S3 and the engine (its queued images are dropped),
    // unless it has reached the charge.
    let (_client_here, client_gone) = oneshot::channel::<()>();
    let work = REQUEST_ID
        .scope(id, run(state, req, client_gone))
        .instrument(tracing::Span::current());
    match tokio::spawn(work).await {
        Ok(response) => response,
        Err(e) => ApiError::internal(format!("compare task failed: {e}")).into_response(),
    }
}

async fn run(
    state: Arc<AppState>,
    req: Request,
    mut client_gone: oneshot::Receiver<()>,
) -> Response {
    let (parts, body) = req.into_parts();
    let mut body = Some(body);
    let org = match authenticate(&state, &parts.headers).await {
        Ok(org) => org,
        Err(e) => return answer_early(e, body).await,
    };
    let decision = match state.accounts.rate_check(&org).await {
        Ok(d) => d,
        Err(e) => return with_org(answer_early(e.into(), body).await, &org),
    };
    let mut response = if decision.allowed {
        match process(&state, &org, &parts.headers, &mut body, &mut client_gone).await {
            Ok(r) => r,
            Err(e) => answer_early(e, body).await,
        }
    } else {
        answer_early(
            ApiError::rate_limited(&org.rate_limit, decision.retry_after_secs),
            body,
        )
        .await
    };
    response.headers_mut().extend(rate_limit_headers(&decision));
    with_org(response, &org)
}

/// An error answer; a body not read yet is read and discarded first (within
/// the body limit and a few seconds), so that a client still sending gets
/// the answer instead of a reset connection.
async fn answer_early(e: ApiError, body: Option<Body>) -> Response {
    if let Some(body) = body {
        let mut stream = body.into_data_stream();
        let drain = async {
            let mut total = 0usize;
            while let Some(Ok(chunk)) = stream.next().await {
                total += chunk.len();
                if total > MAX_BODY_BYTES {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(DRAIN_TIMEOUT, drain).await;
    }
    e.into_response()
}

fn with_org(mut response: Response, org: &Org) -> Response {
    response.extensions_mut().insert(OrgId(org.id.clone()));
    response
}

/// The `Idempotency-Key` header: absent, or 1–255 visible ASCII characters.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(v) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let bad = || {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_idempotency_key",
            "Idempotency-Key: must be 1 to 255 visible ASCII characters",
        )
    };
    let key = v.to_str().map_err(|_| bad())?.trim();
    if key.is_empty() || key.len() > 255 || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(bad());
    }
    Ok(Some(key.to_string()))
}

/// A reserved idempotency key: released (so a retry runs again) unless the
/// request finished, also when the task fails or panics.
struct Reservation {
    accounts: Accounts,
    org_id: String,
    key: String,
    armed: bool,
}

impl Reservation {
    async fn finish(mut self, status: u16, body: &str) {
        self.armed = false;
        if let Err(e) = self
            .accounts
            .idempotency_finish(&self.org_id, &self.key, status, body)
            .await
        {
            // The compare is done and charged; answering it beats failing it.
            tracing::error!(error = %e, "could not store the idempotent response");
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let (accounts, org_id, key) = (
            self.accounts.clone(),
            std::mem::take(&mut self.org_id),
            std::mem::take(&mut self.key),
        );
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                if let Err(e) = accounts.idempotency_abandon(&org_id, &key).await {
                    tracing::error!(error = %e, "could not release an idempotency key");
                }
            });
        }
    }
}

/// How long an early error waits for the rest of an unread body.
const DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

fn timed_out() -> ApiError {
    ApiError::unavailable(
        "request_timeout",
        "the request took too long; retry later",
        1,
    )
}

async fn process(
    state: &AppState,
    org: &Org,
    headers: &HeaderMap,
    body: &mut Option<Body>,
    client_gone: &mut oneshot::Receiver<()>,
) -> Result<Response, ApiError> {
    let deadline = tokio::time::Instant::now() + state.config.request_timeout;
    let idem_key = idempotency_key(headers)?;
    let declared_len = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared_len.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        // Not worth reading: the connection is closed after this answer.
        body.take();
        return Err(InputError::BodyTooLarge {
            limit: MAX_BODY_BYTES,
        }
        .into());
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let kind = inputs::body::body_kind(content_type)?;
    let cost = BodyBudget::cost(declared_len, matches!(kind, inputs::body::BodyKind::Json));
    // Held until the compare ends: the images live as long as it does.
    let Some(_body_share) = state.body_budget.try_reserve(cost) else {
        state.metrics.bodies_refused.inc();
        return Err(FacesError::Overloaded.into());
    };
    let body = body.take().unwrap_or_default();
    let inputs = timeout_at(deadline, inputs::body::read_body(kind, body))
        .await
        .map_err(|_| timed_out())??;

    let reservation = match idem_key {
        None => None,
        Some(key) => match state
            .accounts
            .idempotency_begin_leased(
                &org.id,
                &key,
                &inputs.fingerprint(),
                state.config.request_timeout + crate::accounts::IDEMPOTENCY_LEASE_MARGIN,
            )
            .await?
        {
            IdempotencyBegin::New => Some(Reservation {
                accounts: state.accounts.clone(),
                org_id: org.id.clone(),
                key,
                armed: true,
            }),
            IdempotencyBegin::Replay { status, body } => return Ok(replay(status, body)),
            IdempotencyBegin::Mismatch => {
                return Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "idempotency_key_mismatch",
                    "Idempotency-Key: already used with other source/target inputs; use a new key",
                ));
            }
            IdempotencyBegin::InProgress => {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "idempotency_in_progress",
                    "Idempotency-Key: a request with this key is still running; retry shortly",
                )
                .with_header(header::RETRY_AFTER, 1));
            }
        },
    };

    let cost = state.config.token_cost;
    if cost > 0 {
        let balance = state.accounts.balance(&org.id).await?;
        if balance < cost {
            return Err(insufficient(Some(balance), cost));
        }
    }

    let (source, target) = until(deadline, client_gone, resolve_both(state, org, inputs)).await??;
    let comparison = until(deadline, client_gone, state.engine.compare(source, target)).await??;
    let t = &comparison.timings;
    for (stage, d) in [
        ("queue", t.queue),
        ("decode", t.decode),
        ("detect", t.detect),
        ("embed", t.embed),
    ] {
        state.metrics.observe_stage(stage, d.as_secs_f64());
    }
    if !comparison.confidence.is_finite() {
        return Err(ApiError::internal(
            "the engine returned a non-finite confidence",
        ));
    }
    let threshold = org.threshold.unwrap_or(state.config.threshold);
    let body =
        serde_json::to_string(&comparison.response(threshold)).map_err(ApiError::internal)?;

    if cost > 0 {
        let request_id = current_request_id();
        match state.accounts.charge(&org.id, cost, &request_id).await? {
            Some(_) => {
                state.metrics.tokens_charged.inc_by(cost as u64);
            }
            None => return Err(insufficient(None, cost)),
        }
    }
    if let Some(r) = reservation {
        r.finish(200, &body).await;
    }
    Ok(json_response(StatusCode::OK, body))
}

/// `work` unless the deadline passes or the client goes first (then `work`
/// is dropped: its queued images are skipped, a running one stops at its
/// next stage).
async fn until<F: std::future::Future>(
    deadline: tokio::time::Instant,
    client_gone: &mut oneshot::Receiver<()>,
    work: F,
) -> Result<F::Output, ApiError> {
    tokio::select! {
        out = timeout_at(deadline, work) => out.map_err(|_| timed_out()),
        _ = client_gone => Err(ApiError::new(
            StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
            "client_closed_request",
            "the client closed the connection before the answer; nothing was charged",
        )),
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

/// Turns both inputs into bytes, fetching S3 references concurrently.
async fn resolve_both(
    state: &AppState,
    org: &Org,
    inputs: CompareInputs,
) -> Result<(Bytes, Bytes), ApiError> {
    let (source, target) = tokio::join!(
        resolve(state, org, "source", inputs.source),
        resolve(state, org, "target", inputs.target)
    );
    Ok((source?, target?))
}

async fn resolve(
    state: &AppState,
    org: &Org,
    field: &str,
    input: ImageInput,
) -> Result<Bytes, ApiError> {
    match input {
        ImageInput::Bytes(b) => Ok(b),
        ImageInput::S3(reference) => {
            let Some(s3) = &state.s3 else {
                return Err(InputError::S3NotConfigured {
                    field: field.into(),
                }
                .into());
            };
            let started = Instant::now();
            let fetched = s3.fetch(&org.s3_prefix, field, &reference).await;
            state
                .metrics
                .observe_stage("s3", started.elapsed().as_secs_f64());
            let bytes = fetched?;
            inputs::check_image_bytes(field, &bytes)?;
            Ok(bytes)
        }
    }
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

//! What every API route does around its own work, whatever its protocol:
//! run it in a task of its own, let a body in (or not) on its headers,
//! answer early errors without resetting a client that is still sending,
//! and tag the answer with its organisation (for the access log and
//! metrics); for the native API also the key and the rate limit.
use std::future::Future;

use axum::{
    body::Body,
    extract::Request,
    response::{IntoResponse, Response},
};
use futures_util::StreamExt;
use http::{HeaderMap, header};
use tokio::sync::oneshot;
use tracing::Instrument;

use super::{
    AppState, OrgId,
    auth::{authenticate, rate_limit_headers},
    body_budget::{BodyBudget, BodyShare},
    error::{ApiError, REQUEST_ID, current_request_id},
};
use crate::{
    accounts::Org,
    faces::FacesError,
    inputs::{
        InputError,
        body::{BodyKind, body_kind},
    },
};

/// How long an early answer waits for the rest of an unread body.
const DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Runs `work` in its own task: a client that disconnects cannot cut it
/// between the charge and the idempotency record, and a panic becomes
/// `failed`'s answer. `work` gets a receiver that resolves when the
/// connection has gone (this future dropped): it then stops waiting for S3
/// and the engine (queued images are dropped) unless it has reached the charge.
pub async fn in_own_task<W, F>(work: W, failed: impl FnOnce(String) -> Response) -> Response
where
    W: FnOnce(oneshot::Receiver<()>) -> F,
    F: Future<Output = Response> + Send + 'static,
{
    let (_client_here, client_gone) = oneshot::channel::<()>();
    let task = REQUEST_ID
        .scope(current_request_id(), work(client_gone))
        .instrument(tracing::Span::current());
    match tokio::spawn(task).await {
        Ok(response) => response,
        Err(e) => failed(format!("request task failed: {e}")),
    }
}

/// Reads and discards an unread body (at most `limit` bytes, a few seconds),
/// so that a client still sending gets the answer instead of a reset.
pub async fn drain(body: Option<Body>, limit: usize) {
    let Some(body) = body else { return };
    let mut stream = body.into_data_stream();
    let discard = async {
        let mut total = 0usize;
        while let Some(Ok(chunk)) = stream.next().await {
            total += chunk.len();
            if total > limit {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, discard).await;
}

/// A request body let in to be read: its encoding, the body, and its share
/// of the body budget (hold it until the answer: the images live that long).
pub struct AdmittedBody {
    pub kind: BodyKind,
    pub body: Body,
    pub share: BodyShare,
}

/// Judges a body on its headers alone, before a byte is read: a declared
/// length over `limit` (413; the body is dropped, the connection closed), its
/// `Content-Type`, then a share of the body budget (503 `overloaded`).
pub fn admit_body(
    state: &AppState,
    headers: &HeaderMap,
    body: &mut Option<Body>,
    limit: usize,
) -> Result<AdmittedBody, ApiError> {
    let declared_len = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared_len.is_some_and(|n| n > limit as u64) {
        // Not worth reading: the connection is closed after this answer.
        body.take();
        return Err(InputError::BodyTooLarge { limit }.into());
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let kind = body_kind(content_type)?;
    let cost = BodyBudget::cost(declared_len, matches!(kind, BodyKind::Json));
    let Some(share) = state.body_budget.try_reserve(cost) else {
        state.metrics.bodies_refused.inc();
        return Err(FacesError::Overloaded.into());
    };
    Ok(AdmittedBody {
        kind,
        body: body.take().unwrap_or_default(),
        share,
    })
}

/// The native API's frame around a route's `work`: `x-api-key`, then the
/// organisation's rate limit (every authenticated request counts), then the
/// work. Any error is answered after the unread body (at most `limit` bytes)
/// is drained; every answer to a known organisation carries the rate-limit
/// headers and its org tag.
pub async fn with_api_key(
    state: &AppState,
    req: Request,
    limit: usize,
    work: impl AsyncFnOnce(&Org, &HeaderMap, &mut Option<Body>) -> Result<Response, ApiError>,
) -> Response {
    let answer_early = async |e: ApiError, body: Option<Body>| {
        drain(body, limit).await;
        e.into_response()
    };
    let (parts, body) = req.into_parts();
    let mut body = Some(body);
    let org = match authenticate(state, &parts.headers).await {
        Ok(org) => org,
        Err(e) => return answer_early(e, body).await,
    };
    let decision = match state.accounts.rate_check(&org).await {
        Ok(d) => d,
        Err(e) => return with_org(answer_early(e.into(), body).await, &org),
    };
    let mut response = if decision.allowed {
        match work(&org, &parts.headers, &mut body).await {
            Ok(r) => r,
            Err(e) => answer_early(e, body).await,
        }
    } else {
        let e = ApiError::rate_limited(&org.rate_limit, decision.retry_after_secs);
        answer_early(e, body).await
    };
    response.headers_mut().extend(rate_limit_headers(&decision));
    with_org(response, &org)
}

pub fn with_org(mut response: Response, org: &Org) -> Response {
    response.extensions_mut().insert(OrgId(org.id.clone()));
    response
}

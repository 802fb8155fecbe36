//! What every API route does around its own work, whatever its protocol:
//! run it in a task of its own, let a body in (or not) on its headers,
//! answer early errors without resetting a client that is still sending,
//! and tag the answer with its organisation (for the access log and
//! metrics); for the native API also the key and the rate limit.
use std::future::Future;

use axum::body::HttpBody;
use axum::{
    body::Body,
    extract::Request,
    response::{IntoResponse, Response},
};
use futures_util::StreamExt;
use http::{HeaderMap, HeaderValue, header};
use tokio::sync::oneshot;
use tracing::Instrument;

use super::{
    AppState, OrgId,
    auth::{authenticate, rate_limit_headers},
    body_budget::{BodyBudget, BodyShare},
    error::{ApiError, REQUEST_ID, current_request_id},
    upload,
};
use crate::{
    accounts::Org,
    inputs::{
        InputError,
        body::{BodyKind, body_kind},
    },
};

/// An early answer keeps the connection for the next request only when the
/// unread rest of the body is this small...
const DRAIN_MAX_BYTES: u64 = 64 * 1024;
/// ...and arrives within this long. Longer rests are still read and dropped
/// for this long after the answer (so that a client still sending reads the
/// answer instead of a reset), on a connection marked `close`.
const DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

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

/// Answers at once a request whose body may be unread; the rest is read
/// and dropped in the background (the connection has no request in flight
/// meanwhile, so the connection cap may evict it), for at most
/// [`DRAIN_TIMEOUT`]. A rest over [`DRAIN_MAX_BYTES`] or of unknown length
/// gets `Connection: close`; a client waiting for `100 Continue` gets the
/// answer with `Connection: close` and never a `100` (the body is not
/// polled). Nobody, keyed or not, holds a connection in flight by sending a
/// body the server will not use.
pub fn answer_unread(
    response: Response,
    parts: &http::request::Parts,
    body: Option<Body>,
) -> Response {
    let Some(body) = body else { return response };
    if body.is_end_stream() {
        return response;
    }
    let expects_continue = parts
        .headers
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if expects_continue {
        return close(response);
    }
    let small = HttpBody::size_hint(&body)
        .upper()
        .is_some_and(|n| n <= DRAIN_MAX_BYTES);
    tokio::spawn(async move {
        let mut stream = body.into_data_stream();
        let discard = async { while let Some(Ok(_)) = stream.next().await {} };
        let _ = tokio::time::timeout(DRAIN_TIMEOUT, discard).await;
    });
    if small { response } else { close(response) }
}

/// An answer after which the connection is closed (its body may be unread).
pub fn close(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// A request body let in to be read: its encoding, the body, and its share
/// of the body budget (hold it until the answer: the images live that long).
pub struct AdmittedBody {
    pub kind: BodyKind,
    pub body: Body,
    pub share: BodyShare,
}

/// Judges a body on its headers alone, before a byte is read: a declared
/// length over `limit` (400 `body_too_large`, answered without reading the
/// body, the connection closed), its `Content-Type`, then `holder`'s share of the body
/// budget (503 `overloaded`): a declared length reserves its cost now, a
/// chunked body as it arrives. The body is [`upload::metered`].
pub fn admit_body(
    state: &AppState,
    holder: &str,
    headers: &HeaderMap,
    body: &mut Option<Body>,
    limit: usize,
) -> Result<AdmittedBody, ApiError> {
    let declared_len = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared_len.is_some_and(|n| n > limit as u64) {
        // Not worth reading: answer_unread closes the connection.
        return Err(InputError::BodyTooLarge { limit }.into());
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let kind = body_kind(content_type)?;
    let json = matches!(kind, BodyKind::Json);
    let cost = BodyBudget::cost(declared_len.unwrap_or(0), json);
    let Some(share) = state.body_budget.try_reserve(holder, cost) else {
        state.metrics.bodies_refused.inc();
        return Err(InputError::BodyBudgetSpent.into());
    };
    Ok(AdmittedBody {
        kind,
        body: upload::metered(body.take().unwrap_or_default(), share.clone(), json),
        share,
    })
}

/// The native API's frame around a route's `work`: `x-api-key`, then the
/// organisation's rate limit (every authenticated request counts), then the
/// work. Any error is answered by [`answer_unread`]; a 408 (the body came
/// too slowly) always closes the connection. Every answer to a known
/// organisation carries the rate-limit headers and its org tag.
pub async fn with_api_key(
    state: &AppState,
    req: Request,
    work: impl AsyncFnOnce(&Org, &HeaderMap, &mut Option<Body>) -> Result<Response, ApiError>,
) -> Response {
    let (parts, body) = req.into_parts();
    let answer_early = |e: ApiError, body: Option<Body>| {
        let response = answer_unread(e.into_response(), &parts, body);
        if response.status() == http::StatusCode::REQUEST_TIMEOUT {
            close(response)
        } else {
            response
        }
    };
    let mut body = Some(body);
    let org = match authenticate(state, &parts.headers).await {
        Ok(org) => org,
        Err(e) => return answer_early(e, body),
    };
    let decision = match state.accounts.rate_check(&org).await {
        Ok(d) => d,
        Err(e) => return with_org(answer_early(e.into(), body), &org),
    };
    let mut response = if decision.allowed {
        match work(&org, &parts.headers, &mut body).await {
            Ok(r) => r,
            Err(e) => answer_early(e, body),
        }
    } else {
        let e = ApiError::rate_limited(&org.rate_limit, decision.retry_after_secs);
        answer_early(e, body)
    };
    response.headers_mut().extend(rate_limit_headers(&decision));
    with_org(response, &org)
}

pub fn with_org(mut response: Response, org: &Org) -> Response {
    response.extensions_mut().insert(OrgId(org.id.clone()));
    response
}

//! `POST /`: the AWS Rekognition JSON protocol (`X-Amz-Target:
//! RekognitionService.CompareFaces`, `application/x-amz-json-1.1`), so that
//! AWS SDKs work with `endpoint_url` pointed here.
//!
//! Order: SigV4 header, date and access key (before any body byte is read)
//! → declared size → rate limit (every request with a known key id counts,
//! before any byte is reserved) → body (the organisation's share of the body
//! budget, the minimum upload rate, the deadline) → signature (it covers the
//! body's hash) → target → parse → the shared compare operation (balance, S3,
//! engine, charge) → Rekognition response.
//!
//! - [`sigv4`]: signature verification.
//! - [`model`]: request/response shapes and the mapping from a comparison.
//! - [`errors`]: AWS error types.
use std::sync::Arc;

use axum::{
    body::Body,
    extract::{Request, State},
    response::{IntoResponse, Response},
};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use http::{HeaderValue, StatusCode, header};
use tokio::{sync::oneshot, time::timeout_at};

use super::{
    AppState, auth::rate_limit_headers, body_budget::BodyBudget, error::current_request_id,
    exchange, upload,
};
use crate::{
    accounts::{Org, SigningKeys},
    faces::Comparison,
    inputs::{CompareInputs, InputError},
    operations::compare::{self as operation, CompareError, CompareRequest, Outcome},
};

pub mod errors;
pub mod model;
pub mod sigv4;

use errors::AwsError;

pub const COMPARE_FACES: &str = "RekognitionService.CompareFaces";

pub async fn handle(State(state): State<Arc<AppState>>, req: Request) -> Response {
    exchange::in_own_task(
        |client_gone| run(state, req, client_gone),
        |e| AwsError::internal(e).into_response(),
    )
    .await
}

async fn run(
    state: Arc<AppState>,
    req: Request,
    mut client_gone: oneshot::Receiver<()>,
) -> Response {
    let deadline = state.deadline();
    let (parts, body) = req.into_parts();
    // Signature header, date and access key first: only a known key gets to
    // hold a body in memory. The signature itself needs the body's hash.
    let (org, auth) = match known_key(&state, &parts).await {
        Ok(found) => found,
        Err(e) => return exchange::answer_unread(e.into_response(), &parts, Some(body)),
    };
    let answer_early = |e: AwsError, body: Option<Body>| {
        let response = exchange::answer_unread(e.into_response(), &parts, body);
        exchange::with_org(response, &org)
    };
    let declared_len = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared_len.is_some_and(|n| n > model::MAX_AWS_BODY_BYTES as u64) {
        // Not worth reading: answer_unread closes the connection.
        let e = AwsError::image_too_large(format!(
            "the request body is larger than {} bytes (two 5 MB images in base64)",
            model::MAX_AWS_BODY_BYTES
        ));
        return answer_early(e, Some(body));
    }
    // The rate limit before any byte is reserved: whoever knows an access key
    // id (with or without its secret) spends that organisation's requests and
    // its share of the body budget, never the others'.
    let decision = match state.accounts.rate_check(&org).await {
        Ok(d) => d,
        Err(e) => return answer_early(AwsError::from(e), Some(body)),
    };
    let with_rate = |mut response: Response| {
        response.headers_mut().extend(rate_limit_headers(&decision));
        response
    };
    if !decision.allowed {
        let e = AwsError::throttling(
            format!(
                "Rate exceeded: the organisation's limit is {}",
                org.rate_limit
            ),
            decision.retry_after_secs,
        );
        return with_rate(answer_early(e, Some(body)));
    }
    // Held until the compare ends: the images live as long as it does.
    let cost = BodyBudget::cost(declared_len.unwrap_or(0), true);
    let Some(body_share) = state.body_budget.try_reserve(&org.id, cost) else {
        state.metrics.bodies_refused.inc();
        return with_rate(answer_early(InputError::BodyBudgetSpent.into(), Some(body)));
    };
    let body = upload::metered(body, body_share.clone(), true);
    let body = match timeout_at(deadline, read_body(body)).await {
        Ok(Ok(b)) => b,
        // The body is half read: the connection cannot be reused.
        Ok(Err(e)) => return exchange::close(with_rate(answer_early(e, None))),
        Err(_) => return with_rate(answer_early(CompareError::TimedOut.into(), None)),
    };

    if let Err(e) = verify_signature(&state, &parts, &auth, &body) {
        return with_rate(answer_early(e, None));
    }
    let target = parts
        .headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok());
    if target != Some(COMPARE_FACES) {
        let e = AwsError::unknown_operation(format!(
            "X-Amz-Target: {} is not supported; this server implements {COMPARE_FACES}",
            target.map_or("(missing)".to_string(), |t| format!(
                "{:?}",
                t.chars().take(80).collect::<String>()
            ))
        ));
        return with_rate(answer_early(e, None));
    }
    let response = match compare(
        &state,
        &org,
        &parts.headers,
        body,
        deadline,
        &mut client_gone,
    )
    .await
    {
        Ok(r) => r,
        Err(e) => e.into_response(),
    };
    drop(body_share);
    with_rate(exchange::with_org(response, &org))
}

async fn read_body(body: Body) -> Result<Bytes, AwsError> {
    let mut stream = body.into_data_stream();
    let mut buf = BytesMut::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| match InputError::read_failed(&e) {
            InputError::InvalidBody { .. } => {
                AwsError::serialization("the request body could not be read")
            }
            stopped => AwsError::from(stopped),
        })?;
        if buf.len() + chunk.len() > model::MAX_AWS_BODY_BYTES {
            return Err(AwsError::image_too_large(format!(
                "the request body is larger than {} bytes (two 5 MB images in base64)",
                model::MAX_AWS_BODY_BYTES
            )));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

/// The organisation of a live access key whose `Authorization` header, scope
/// and date pass; the signature is checked once the body is read.
async fn known_key(
    state: &AppState,
    parts: &http::request::Parts,
) -> Result<(Org, sigv4::Authorization), AwsError> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let auth = sigv4::check_headers(&parts.headers, parts.uri.query(), now)?;
    match state.accounts.authenticate_aws(&auth.access_key_id).await? {
        // A known id with no signing key to verify it: say so before any body is read.
        Some(org) => signing_keys(state).map(|_| (org, auth)),
        None => Err(sigv4::SigError::UnknownKey.into()),
    }
}

fn verify_signature(
    state: &AppState,
    parts: &http::request::Parts,
    auth: &sigv4::Authorization,
    body: &[u8],
) -> Result<(), AwsError> {
    let req = sigv4::SignedRequest {
        method: parts.method.as_str(),
        raw_path: parts.uri.path(),
        raw_query: parts.uri.query(),
        headers: &parts.headers,
        body,
    };
    let string_to_sign = sigv4::string_to_sign_of(&req, auth)?;
    let keys = signing_keys(state)?;
    let secrets = keys.candidate_secrets(&auth.access_key_id);
    if sigv4::matches(auth, &string_to_sign, &secrets) {
        Ok(())
    } else {
        Err(sigv4::SigError::Invalid(String::new()).into())
    }
}

/// The server signing keys ([`crate::app::App::signing_keys`]).
fn signing_keys(state: &AppState) -> Result<SigningKeys, AwsError> {
    match state.signing_keys() {
        Ok(Some(keys)) => Ok(keys),
        // The key id is live but its secret cannot be derived: an operator's
        // error (a lost key file), never a client's "unknown key".
        Ok(None) => Err(AwsError::signing_key_missing(
            &state.config.aws_signing.file,
        )),
        Err(e) => Err(AwsError::internal(format!("AWS signing key: {e:#}"))),
    }
}

async fn compare(
    state: &AppState,
    org: &Org,
    headers: &http::HeaderMap,
    body: Bytes,
    deadline: tokio::time::Instant,
    client_gone: &mut oneshot::Receiver<()>,
) -> Result<Response, AwsError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = content_type.split(';').next().unwrap_or("").trim();
    if !essence.eq_ignore_ascii_case(errors::CONTENT_TYPE)
        && !essence.eq_ignore_ascii_case("application/json")
    {
        return Err(AwsError::serialization(format!(
            "Content-Type: expected {}, got {:?}",
            errors::CONTENT_TYPE,
            content_type.chars().take(80).collect::<String>()
        )));
    }
    let bucket = state.config.s3.as_ref().map(|s| s.bucket.clone());
    // Base64 of up to 10 MB: decoded off the async workers.
    let parsed = tokio::task::spawn_blocking(move || model::parse(&body, bucket.as_deref()))
        .await
        .map_err(|e| AwsError::internal(format!("parsing task failed: {e}")))??;
    let (threshold, quality) = (parsed.threshold, parsed.quality);
    let request = CompareRequest {
        inputs: CompareInputs {
            source: parsed.source,
            target: parsed.target,
        },
        idempotency_key: None,
        deadline,
        request_id: current_request_id(),
        threshold: Some(threshold),
    };
    let render = move |c: &Comparison, _threshold: f64| {
        // Rekognition's threshold is the request's, not the organisation's
        // (passed down above, so the age pass ran where it matters at it).
        let r = model::response(c, threshold, quality).ok_or(CompareError::NoSourceFace)?;
        serde_json::to_string(&r).map_err(|e| CompareError::Internal(e.to_string()))
    };
    match operation::compare(&state.app, org, request, client_gone, render).await? {
        Outcome::Done { body, .. } | Outcome::Replay { body, .. } => {
            let mut r = (StatusCode::OK, body).into_response();
            let h = r.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(errors::CONTENT_TYPE),
            );
            if let Ok(v) = HeaderValue::from_str(&current_request_id()) {
                h.insert("x-amzn-requestid", v);
            }
            Ok(r)
        }
    }
}

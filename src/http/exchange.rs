//! What every API route does around its own work, whatever its protocol:
//! run it in a task of its own, answer early errors without resetting a
//! client that is still sending, and tag the answer with its organisation
//! (for the access log and metrics).
use std::future::Future;

use axum::{body::Body, response::Response};
use futures_util::StreamExt;
use tokio::sync::oneshot;
use tracing::Instrument;

use super::{
    OrgId,
    error::{REQUEST_ID, current_request_id},
};
use crate::accounts::Org;

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

pub fn with_org(mut response: Response, org: &Org) -> Response {
    response.extensions_mut().insert(OrgId(org.id.clone()));
    response
}

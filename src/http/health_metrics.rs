//! Health and metrics routes: `/healthz`, `/readyz`, `/metrics`, and the
//! API description `/openapi.json`.
use std::{sync::Arc, time::Duration};

use axum::{
    Json,
    extract::State,
    response::{IntoResponse, Response},
};
use http::{HeaderValue, StatusCode, header};
use serde_json::json;

use super::AppState;

/// The hand-written OpenAPI 3.1 description of the API.
pub const OPENAPI_JSON: &str = include_str!("openapi.json");

/// The process is up and serving HTTP.
pub async fn healthz() -> Response {
    Json(json!({"status": "ok"})).into_response()
}

/// Ready for traffic: the database answers and the model pack is loaded
/// (the engine is started before the listener binds).
pub async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    let database = match tokio::time::timeout(Duration::from_secs(2), state.accounts.ping()).await {
        Ok(Ok(())) => "ok",
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readiness: database ping failed");
            "unreachable"
        }
        Err(_) => "timeout",
    };
    let ready = database == "ok";
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "status": if ready { "ready" } else { "not_ready" },
        "database": database,
        "models": state.engine.pack(),
        "pack": state.engine.pack_info(),
        "queueDepth": state.engine.queue_depth(),
    });
    (status, Json(body)).into_response()
}

pub async fn metrics(State(state): State<Arc<AppState>>, headers: http::HeaderMap) -> Response {
    if let Some(token) = &state.config.metrics_token {
        let sent = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if !sent.is_some_and(|s| constant_time_eq(s.trim().as_bytes(), token.as_bytes())) {
            return super::error::ApiError::unauthorized(
                "Authorization: /metrics needs `Bearer <FACECOMPARE_METRICS_TOKEN>`",
            )
            .with_header(header::WWW_AUTHENTICATE, "Bearer")
            .into_response();
        }
    }
    state
        .metrics
        .queue_depth
        .set(state.engine.queue_depth() as i64);
    let skipped = state.engine.skipped_jobs();
    let seen = state.metrics.jobs_skipped.get();
    state
        .metrics
        .jobs_skipped
        .inc_by(skipped.saturating_sub(seen));
    let mut r = state.metrics.render().into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    r
}

pub async fn openapi() -> Response {
    let mut r = OPENAPI_JSON.into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// Compares without an early exit, so timing does not reveal the token.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openapi_is_valid_json_and_lists_every_error_status() {
        let v: serde_json::Value = serde_json::from_str(OPENAPI_JSON).expect("openapi.json parses");
        assert_eq!(v["openapi"], "3.1.0");
        let op = &v["paths"]["/v1/face/compare"]["post"];
        for status in [
            "200", "400", "401", "402", "403", "409", "422", "429", "500", "503",
        ] {
            assert!(
                op["responses"][status].is_object(),
                "status {status} undocumented"
            );
        }
        let content = &op["requestBody"]["content"];
        assert!(
            content["multipart/form-data"].is_object() && content["application/json"].is_object()
        );
        assert!(v["components"]["securitySchemes"]["apiKey"].is_object());
        let props = v["components"]["schemas"]["CompareResponse"]["properties"]
            .as_object()
            .unwrap();
        assert_eq!(props.len(), 5);
    }
}

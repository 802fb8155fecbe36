//! HTTP layer: router, errors, auth, the API routes, the health and metrics
//! routes and the accept loop, over the application core ([`crate::app`]).
//!
//! - [`error`]: the one API error type and its JSON body.
//! - [`exchange`]: what every API route does around its work (own task, draining, org tag).
//! - [`body_budget`], [`upload`]: the bytes bodies may hold (a fair share per
//!   organisation) and the body reader (reservation as bytes arrive, minimum rate).
//! - [`auth`]: `x-api-key` and the rate-limit headers.
//! - [`compare`]: `POST /v1/face/compare`.
//! - [`detect`]: `POST /v1/face/detect` (face boxes of one image, uncharged).
//! - [`try_page`]: `GET /try` and `GET /` (the browser page; can be turned off).
//! - [`rekognition`]: `POST /`, the AWS Rekognition `CompareFaces` protocol.
//! - [`health_metrics`]: `/healthz`, `/readyz`, `/metrics`, `/openapi.json`.
//! - [`accept`]: the accept loop (connection cap, timeouts, graceful shutdown).
use std::{
    io::Write as _,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context;
use axum::{
    Router,
    extract::{Request, State},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use http::HeaderValue;
use tower_http::catch_panic::CatchPanicLayer;
use tracing::Instrument;

use crate::{app::App, config::Config, telemetry};

pub mod accept;
pub mod auth;
pub mod body_budget;
pub mod compare;
pub mod detect;
pub mod error;
pub mod exchange;
pub mod health_metrics;
pub mod rekognition;
pub mod try_page;
pub mod upload;

use error::{ApiError, REQUEST_ID};

/// Everything a handler needs, shared behind an `Arc`: the application core
/// (reached through `Deref`, so `state.config`, `state.accounts`, ... read
/// the core's) and what only HTTP has, the budget of request bodies held.
pub struct AppState {
    pub app: App,
    pub body_budget: body_budget::BodyBudget,
}

impl AppState {
    pub fn new(app: App) -> Self {
        let body_budget = body_budget::BodyBudget::new(app.config.body_budget_bytes);
        Self { app, body_budget }
    }
}

impl std::ops::Deref for AppState {
    type Target = App;

    fn deref(&self) -> &App {
        &self.app
    }
}

/// The organisation a response was for (a response extension, for the access log).
#[derive(Clone, Debug)]
pub struct OrgId(pub String);

/// Routes known to the metrics (anything else is `other`, keeping label cardinality bounded).
const ROUTES: [&str; 8] = [
    "/v1/face/compare",
    "/v1/face/detect",
    "/try",
    "/",
    "/healthz",
    "/readyz",
    "/metrics",
    "/openapi.json",
];

pub fn router(state: Arc<AppState>) -> Router {
    let mut routes = Router::new()
        .route("/v1/face/compare", post(compare::compare))
        .route("/v1/face/detect", post(detect::detect))
        // The AWS Rekognition JSON protocol; it dispatches on X-Amz-Target.
        .route("/", post(rekognition::handle))
        .route("/healthz", get(health_metrics::healthz))
        .route("/readyz", get(health_metrics::readyz))
        .route("/openapi.json", get(health_metrics::openapi));
    if metrics_on_api_port(&state.config) {
        routes = routes.route("/metrics", get(health_metrics::metrics));
    }
    if state.config.try_page {
        routes = routes.merge(try_page::routes());
    }
    with_layers(routes, state)
}

/// Whether the API port serves `/metrics`: not when it has its own address,
/// and on a non-loopback API address only behind `FACECOMPARE_METRICS_TOKEN`
/// (what the process does and holds is not for the public).
pub fn metrics_on_api_port(config: &Config) -> bool {
    config.metrics_listen.is_none()
        && (config.metrics_token.is_some() || config.listen.ip().is_loopback())
}

/// `/metrics` alone, for `FACECOMPARE_METRICS_LISTEN`.
pub fn metrics_router(state: Arc<AppState>) -> Router {
    with_layers(
        Router::new().route("/metrics", get(health_metrics::metrics)),
        state,
    )
}

fn with_layers(routes: Router<Arc<AppState>>, state: Arc<AppState>) -> Router {
    routes
        .fallback(|| async { ApiError::not_found() })
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        // Inner to outer: a panic becomes a JSON 500 inside the request-id scope.
        .layer(CatchPanicLayer::custom(|_| {
            ApiError::internal("handler panicked").into_response()
        }))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// A client-supplied `x-request-id` is kept when it is short and plain
/// (so it can be correlated across services); anything else gets a fresh UUID.
fn request_id(req: &Request) -> String {
    req.headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            (1..=128).contains(&v.len())
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
        })
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
}

/// Outermost layer: request id (scope, span, response header), access log, metrics.
async fn observe(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let id = request_id(&req);
    let method = req.method().clone();
    let path = req.uri().path();
    let route = ROUTES
        .iter()
        .find(|r| **r == path)
        .copied()
        .unwrap_or("other");
    let span = tracing::info_span!("request", request_id = %id);
    // Dropped unanswered when the client goes away first (hyper drops this
    // future): that request is still logged and counted, as 499.
    let mut unanswered = Unanswered {
        state: Some(state.clone()),
        route,
        method: method.clone(),
        started,
        span: span.clone(),
    };
    let mut response = REQUEST_ID
        .scope(id.clone(), next.run(req))
        .instrument(span.clone())
        .await;
    unanswered.state = None;
    if let Ok(v) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-request-id", v);
    }
    let status = response.status().as_u16();
    let elapsed = started.elapsed();
    state
        .metrics
        .observe_request(route, status, elapsed.as_secs_f64());
    let org = response
        .extensions()
        .get::<OrgId>()
        .map(|o| o.0.as_str())
        .unwrap_or("-");
    let latency_ms = (elapsed.as_secs_f64() * 1000.0 * 10.0).round() / 10.0;
    span.in_scope(|| {
        if status >= 500 {
            tracing::warn!(%method, route, status, latency_ms, org, "request");
        } else if route == "/healthz" || route == "/readyz" || route == "/metrics" {
            tracing::debug!(%method, route, status, latency_ms, org, "request");
        } else {
            tracing::info!(%method, route, status, latency_ms, org, "request");
        }
    });
    response
}

/// Logs and counts a request whose client closed the connection before the
/// answer (status 499, `client_closed_request`), unless disarmed.
struct Unanswered {
    state: Option<Arc<AppState>>,
    route: &'static str,
    method: http::Method,
    started: Instant,
    span: tracing::Span,
}

impl Drop for Unanswered {
    fn drop(&mut self) {
        let Some(state) = self.state.take() else {
            return;
        };
        let elapsed = self.started.elapsed();
        let (route, method) = (self.route, &self.method);
        state
            .metrics
            .observe_request(route, 499, elapsed.as_secs_f64());
        let latency_ms = (elapsed.as_secs_f64() * 1000.0 * 10.0).round() / 10.0;
        self.span.in_scope(|| {
            tracing::warn!(
                %method,
                route,
                status = 499,
                latency_ms,
                error = crate::error_codes::CLIENT_CLOSED_REQUEST.code,
                "request: the client closed the connection before the answer"
            );
        });
    }
}

/// `facecompare serve`: load the core ([`App`]), bind, open the database
/// (migrations, the embedded default org), serve until SIGTERM/SIGINT, then
/// drain in-flight requests.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    crate::memory::tune_allocator();
    telemetry::init(&config);
    // Models, S3 settings and the port first: a server that cannot start
    // must fail before the embedded default prints its one-time key.
    let loaded = App::load(config).await?;
    let config = loaded.config();

    let fd_limit = accept::raise_fd_limit();
    let limits = accept::ConnLimits {
        max_connections: config
            .max_connections
            .unwrap_or_else(|| accept::default_max_connections(fd_limit)),
        header_timeout: config.header_timeout,
        idle_timeout: config.idle_timeout,
    };
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let metrics_listener = match config.metrics_listen {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding FACECOMPARE_METRICS_LISTEN {addr}"))?,
        ),
        None => None,
    };
    let app = loaded.open().await?;

    let addr = listener.local_addr()?;
    let drain_timeout = app.config.request_timeout + Duration::from_secs(5);
    let state = Arc::new(AppState::new(app));
    let routes = router(state.clone());

    let metrics_url = match &metrics_listener {
        Some(l) => Some(format!("http://{}/metrics", l.local_addr()?)),
        None if metrics_on_api_port(&state.config) => Some(format!("http://{addr}/metrics")),
        None => {
            tracing::warn!(
                "/metrics is not served: the API listens on a non-loopback address; set \
                 FACECOMPARE_METRICS_LISTEN (its own address) or FACECOMPARE_METRICS_TOKEN"
            );
            None
        }
    };
    // Plain lines for scripts that wait for them, unless logs are JSON: a
    // JSON stream stays JSON, and the `listening` event carries the same URLs.
    if !state.config.log_json {
        let mut out = std::io::stdout().lock();
        // Before "listening on": whoever waits for that line can read both.
        if metrics_listener.is_some()
            && let Some(url) = &metrics_url
        {
            writeln!(out, "metrics on {url}")?;
        }
        writeln!(out, "listening on http://{addr}")?;
        out.flush()?;
    }
    tracing::info!(
        url = %format!("http://{addr}"),
        metrics_url = metrics_url.as_deref().unwrap_or("-"),
        fd_limit,
        max_connections = limits.max_connections,
        "listening"
    );

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let metrics = metrics_listener.map(|l| {
        tokio::spawn(accept::run(
            l,
            metrics_router(state.clone()),
            limits,
            stopped(),
            drain_timeout,
        ))
    });
    let main = accept::run(listener, routes, limits, stopped(), drain_timeout);
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop_tx.send(true);
    });
    main.await;
    if let Some(m) = metrics {
        let _ = m.await;
    }
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

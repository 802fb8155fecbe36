//! HTTP layer: router, errors, auth, the compare endpoint, operations routes.
//!
//! - [`error`]: the one API error type and its JSON body.
//! - [`exchange`]: what every API route does around its work (own task, draining, org tag).
//! - [`auth`]: `x-api-key` and the rate-limit headers.
//! - [`compare`]: `POST /v1/face/compare`.
//! - [`detect`]: `POST /v1/face/detect` (face boxes of one image, uncharged).
//! - [`try_page`]: `GET /try` and `GET /` (the browser page; can be turned off).
//! - [`rekognition`]: `POST /`, the AWS Rekognition `CompareFaces` protocol.
//! - [`ops`]: `/healthz`, `/readyz`, `/metrics`, `/openapi.json`.
//! - [`server`]: the accept loop (connection cap, timeouts, graceful shutdown).
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

use crate::{
    accounts::Accounts,
    config::Config,
    faces::{Engine, EngineConfig},
    inputs::s3::S3Store,
    telemetry::{self, Metrics},
};

pub mod auth;
pub mod body_budget;
pub mod compare;
pub mod detect;
pub mod error;
pub mod exchange;
pub mod ops;
pub mod rekognition;
pub mod server;
pub mod try_page;

use error::{ApiError, REQUEST_ID};

/// Everything a handler needs; shared behind an `Arc`.
pub struct AppState {
    pub config: Config,
    pub accounts: Accounts,
    pub engine: Engine,
    pub s3: Option<S3Store>,
    pub metrics: Metrics,
    pub body_budget: body_budget::BodyBudget,
    /// The AWS signing keys, once loaded (`rekognition::signing_keys`).
    pub aws_signing: std::sync::OnceLock<crate::accounts::SigningKeys>,
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
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/openapi.json", get(ops::openapi));
    if metrics_on_api_port(&state.config) {
        routes = routes.route("/metrics", get(ops::metrics));
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
    with_layers(Router::new().route("/metrics", get(ops::metrics)), state)
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
    let mut response = REQUEST_ID
        .scope(id.clone(), next.run(req))
        .instrument(span.clone())
        .await;
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

/// `facecompare serve`: connect and migrate the database, bootstrap the
/// embedded default org, load the models, bind, serve until SIGTERM/SIGINT,
/// then drain in-flight requests.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    crate::memory::tune_allocator();
    telemetry::init(&config);
    // Models, S3 settings and the port first: a server that cannot start
    // must fail before the embedded default prints its one-time key.
    let engine_config = EngineConfig::from_config(&config);
    let engine = tokio::task::spawn_blocking(move || Engine::start(engine_config))
        .await
        .context("starting the face engine")?
        .context("loading the face models")?;
    let s3 = config
        .s3
        .as_ref()
        .map(S3Store::connect)
        .transpose()
        .context("S3 configuration")?;

    // A configured key that cannot be used fails the start; a key file that
    // does not exist yet is looked for again on the first signed request.
    let aws_signing = std::sync::OnceLock::new();
    if let Some(keys) = crate::accounts::SigningKeys::load(&config.aws_signing, false)
        .context("FACECOMPARE_AWS_SIGNING_KEY(_FILE)")?
    {
        let _ = aws_signing.set(keys);
    }

    let fd_limit = server::raise_fd_limit();
    let limits = server::ConnLimits {
        max_connections: config
            .max_connections
            .unwrap_or_else(|| server::default_max_connections(fd_limit)),
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
    let accounts = Accounts::connect(&config.database_url)
        .await
        .context("connecting to the database")?;
    accounts
        .migrate()
        .await
        .context("applying database migrations")?;
    if aws_signing.get().is_none() {
        // Generated now (in the data directory, a volume in compose) so that
        // every process that shares the directory derives the same secrets.
        match accounts.signing_keys_or_generate(&config.aws_signing).await {
            Ok(keys) => {
                tracing::info!(file = %config.aws_signing.file.display(), "AWS signing key ready");
                let _ = aws_signing.set(keys);
            }
            Err(e) => tracing::error!(
                error = %format!("{e:#}"),
                "no AWS signing key: Rekognition requests are refused until one is configured"
            ),
        }
    }
    if config.embedded_default
        && let Some(created) = accounts
            .ensure_default_org(config.default_org_tokens, config.rate_limit)
            .await
            .context("creating the default organisation")?
    {
        // Printed once, on stdout only: logs never carry keys.
        let mut out = std::io::stdout().lock();
        writeln!(
            out,
            "\n================================================================\n\
             Created organisation `default` with {} tokens.\n\
             Its API key (shown only this once; store it now):\n\n    {}\n\n\
             Use it as:  curl -H 'x-api-key: {}' ...\n\
             ================================================================\n",
            config.default_org_tokens, created.key, created.key
        )?;
        out.flush()?;
    }

    let addr = listener.local_addr()?;
    let drain_timeout = config.request_timeout + Duration::from_secs(5);
    let body_budget = body_budget::BodyBudget::new(config.body_budget_bytes);
    let state = Arc::new(AppState {
        body_budget,
        config,
        accounts,
        engine,
        s3,
        metrics: Metrics::new(),
        aws_signing,
    });
    let app = router(state.clone());

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
        tokio::spawn(server::run(
            l,
            metrics_router(state.clone()),
            limits,
            stopped(),
            drain_timeout,
        ))
    });
    let main = server::run(listener, app, limits, stopped(), drain_timeout);
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

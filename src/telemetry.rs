//! Logging setup and Prometheus metrics.
//!
//! Logs go to stderr (stdout carries the one-time default key banner and the
//! `listening on` line). They carry request id, org id, status and latency;
//! never API keys or image bytes.
use std::sync::atomic::AtomicI64;

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};
use tracing_subscriber::{EnvFilter, fmt, prelude::*};

use crate::config::Config;

/// Installs the global tracing subscriber: `RUST_LOG` filter (default
/// `info`), JSON lines when `FACECOMPARE_LOG_FORMAT=json`. Safe to call twice.
pub fn init(config: &Config) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    let result = if config.log_json {
        registry
            .with(
                fmt::layer()
                    .json()
                    .with_current_span(false)
                    .with_writer(std::io::stderr),
            )
            .try_init()
    } else {
        let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
        registry
            .with(fmt::layer().with_ansi(ansi).with_writer(std::io::stderr))
            .try_init()
    };
    // Already installed (tests, or a CLI command that set it up): keep that one.
    let _ = result;
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StageLabels {
    pub stage: &'static str,
}

/// Pairs decided with a pack's child calibration (one face estimated under
/// the pack's `child_age_limit`, the other under it plus `child_age_margin`). Global because the engine counts it, not HTTP.
pub static CHILD_CALIBRATION_PAIRS: std::sync::LazyLock<Counter> =
    std::sync::LazyLock::new(Counter::default);

/// Compares (both faces found, pack with an age model) that ran the age
/// pass: the ages could change a decision at the request's threshold.
pub static AGE_PASSES_RUN: std::sync::LazyLock<Counter> =
    std::sync::LazyLock::new(Counter::default);

/// Compares (both faces found, pack with an age model) answered without the
/// age pass: both calibrations decide every target face alike.
pub static AGE_PASSES_SKIPPED: std::sync::LazyLock<Counter> =
    std::sync::LazyLock::new(Counter::default);

/// Requests refused 503 `overloaded` because their organisation held its
/// share of the inference queue (the queue itself had room for others).
pub static QUEUE_ORG_SHARE_REFUSED: std::sync::LazyLock<Counter> =
    std::sync::LazyLock::new(Counter::default);

/// Image decodes that waited for the process-wide decode-memory budget.
pub static DECODE_MEMORY_WAITS: std::sync::LazyLock<Counter> =
    std::sync::LazyLock::new(Counter::default);

/// The server's metrics; encode with [`Metrics::render`].
pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub latency: Family<RouteLabels, Histogram>,
    pub stages: Family<StageLabels, Histogram>,
    pub queue_depth: Gauge<i64, AtomicI64>,
    pub tokens_charged: Counter,
    pub jobs_skipped: Counter,
    pub bodies_refused: Counter,
    pub pack_info: Family<PackLabels, Gauge>,
}

/// `facecompare_model_pack_info`: always 1; the labels say which pack serves.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PackLabels {
    pub pack: String,
    pub embedder_sha256: String,
    pub licence: String,
    pub commercial: String,
}

fn buckets() -> impl Iterator<Item = f64> {
    [
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    ]
    .into_iter()
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("facecompare");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "HTTP requests by route and status",
            requests.clone(),
        );
        let latency =
            Family::<RouteLabels, Histogram>::new_with_constructor(|| Histogram::new(buckets()));
        registry.register(
            "request_duration_seconds",
            "HTTP request latency by route",
            latency.clone(),
        );
        let stages =
            Family::<StageLabels, Histogram>::new_with_constructor(|| Histogram::new(buckets()));
        registry.register(
            "stage_seconds",
            "Compare latency per stage (decode, detect, embed, queue, s3), both images summed",
            stages.clone(),
        );
        let queue_depth = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "inference_queue_depth",
            "Compares waiting for an inference worker",
            queue_depth.clone(),
        );
        let tokens_charged = Counter::default();
        registry.register(
            "tokens_charged",
            "Tokens debited for successful compares",
            tokens_charged.clone(),
        );
        let jobs_skipped = Counter::default();
        registry.register(
            "inference_jobs_skipped",
            "Images dropped unanalysed because their request had given up (deadline passed, other image failed)",
            jobs_skipped.clone(),
        );
        registry.register(
            "child_calibration_pairs",
            "Compares decided with the child calibration (a pair of estimated children)",
            CHILD_CALIBRATION_PAIRS.clone(),
        );
        registry.register(
            "age_passes_run",
            "Compares that ran the age pass (the ages could change a decision at the threshold)",
            AGE_PASSES_RUN.clone(),
        );
        registry.register(
            "age_passes_skipped",
            "Compares answered without the age pass (both calibrations decide alike at the threshold)",
            AGE_PASSES_SKIPPED.clone(),
        );
        registry.register(
            "inference_org_share_refused",
            "Requests refused with 503 overloaded because their organisation held its share of the inference queue",
            QUEUE_ORG_SHARE_REFUSED.clone(),
        );
        registry.register(
            "decode_memory_waits",
            "Image decodes that waited for the process-wide decode-memory budget",
            DECODE_MEMORY_WAITS.clone(),
        );
        let bodies_refused = Counter::default();
        registry.register(
            "bodies_refused",
            "Requests refused with 503 overloaded because the request-body byte budget (or the organisation's share of it) was spent",
            bodies_refused.clone(),
        );
        let pack_info = Family::<PackLabels, Gauge>::default();
        registry.register(
            "model_pack_info",
            "The model pack in use (always 1): name, embedder sha256, recorded licence and commercial use",
            pack_info.clone(),
        );
        Self {
            pack_info,
            bodies_refused,
            registry,
            requests,
            latency,
            stages,
            queue_depth,
            tokens_charged,
            jobs_skipped,
        }
    }

    pub fn observe_request(&self, route: &str, status: u16, seconds: f64) {
        self.requests
            .get_or_create(&RequestLabels {
                route: route.to_string(),
                status,
            })
            .inc();
        self.latency
            .get_or_create(&RouteLabels {
                route: route.to_string(),
            })
            .observe(seconds);
    }

    pub fn observe_stage(&self, stage: &'static str, seconds: f64) {
        self.stages
            .get_or_create(&StageLabels { stage })
            .observe(seconds);
    }

    pub fn set_pack(&self, labels: PackLabels) {
        self.pack_info.get_or_create(&labels).set(1);
    }

    /// Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_documented_names() {
        let m = Metrics::new();
        m.observe_request("/v1/face/compare", 200, 0.2);
        m.observe_stage("detect", 0.05);
        m.queue_depth.set(3);
        m.tokens_charged.inc_by(2);
        m.set_pack(PackLabels {
            pack: "mine".into(),
            embedder_sha256: "ab".repeat(32),
            licence: "research only".into(),
            commercial: "no".into(),
        });
        let text = m.render();
        for needle in [
            "facecompare_requests_total{route=\"/v1/face/compare\",status=\"200\"} 1",
            "facecompare_request_duration_seconds_bucket",
            "facecompare_stage_seconds_count{stage=\"detect\"} 1",
            "facecompare_inference_queue_depth 3",
            "facecompare_tokens_charged_total 2",
            "facecompare_child_calibration_pairs_total",
            "facecompare_age_passes_run_total",
            "facecompare_age_passes_skipped_total",
            "facecompare_model_pack_info{pack=\"mine\",embedder_sha256=\"abab",
            "licence=\"research only\",commercial=\"no\"} 1",
            "facecompare_inference_org_share_refused_total",
            "facecompare_decode_memory_waits_total",
        ] {
            assert!(text.contains(needle), "{needle} missing in\n{text}");
        }
    }
}

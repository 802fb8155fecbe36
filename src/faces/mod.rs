//! Face engine: decode → orient → detect → align → embed → cosine → calibrated 0–100.
//!
//! The HTTP side only sees [`Engine`]: a cloneable handle to a bounded queue
//! ([`pool`]) feeding worker threads that each own their ONNX Runtime sessions,
//! fair across organisations ([`fair_queue`], weighted by [`cost`]).
pub mod age;
pub mod age_pass;
pub mod calibration;
pub mod cost;
pub mod decode;
pub mod detect;
pub mod embed;
pub mod fair_queue;
pub mod geometry;
pub mod model_zip;
pub mod pack;
pub mod pipeline;
pub mod pool;
pub mod probe;
pub mod quality;
pub mod reencode;
pub mod report;
pub mod runtime;

use std::{path::PathBuf, sync::Arc, time::Duration};

use bytes::Bytes;

use crate::config::Config;
use age_pass::{AgePass, PairAges, Plan};
use calibration::{Map, Policy};
use decode::budget::DecodeBudget;
use pack::Pack;
use pipeline::{Analysis, AnalyzeError, Depth, MAX_TARGET_FACES, Models};
use pool::{Limits, Pool, SubmitError};
use report::ImageReport;

/// What the engine needs to start: where the packs are, which one, and pool sizes.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub models_dir: PathBuf,
    pub pack: String,
    pub workers: usize,
    pub intra_threads: usize,
    pub queue_capacity: usize,
    /// Percent of the queue one organisation may hold.
    pub queue_org_share_percent: u32,
    /// Bytes all decodes may hold at once.
    pub decode_budget_bytes: u64,
}

impl EngineConfig {
    pub fn from_config(c: &Config) -> Self {
        Self {
            models_dir: c.models_dir.clone(),
            pack: c.pack.clone(),
            workers: c.workers,
            intra_threads: c.intra_threads,
            queue_capacity: c.queue_capacity,
            queue_org_share_percent: c.queue_org_share_percent,
            decode_budget_bytes: c.decode_budget_bytes,
        }
    }
}

/// Which input an error or result refers to; its name is the request field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Source,
    Target,
}

impl Side {
    pub fn field(self) -> &'static str {
        match self {
            Side::Source => "source",
            Side::Target => "target",
        }
    }
}

/// The outcome of one compare, before the organisation's threshold is applied.
#[derive(Debug, Clone)]
pub struct Comparison {
    /// Calibrated similarity 0–100, rounded to 2 decimals; 0 when either side
    /// has no face. The adult map's number unless the ages decided (see
    /// [`age_pass`]): the decision at the threshold is the same either way.
    pub confidence: f64,
    /// Raw best cosine similarity (None when either side has no face).
    pub cosine: Option<f32>,
    pub source_face_detected: bool,
    pub target_face_detected: bool,
    /// Which calibration decided (None when either side has no face).
    pub map: Option<Map>,
    /// Estimated ages of the source face and of the target face that decided
    /// (`None` where the age pass did not run).
    pub ages: (Option<f32>, Option<f32>),
    /// Whether the age pass ran, on which faces, and why.
    pub age_pass: AgePass,
    /// Index of the target face that decided.
    pub target_face: Option<usize>,
    /// The faces found (source: the largest only, the one compared).
    pub source: ImageReport,
    pub target: ImageReport,
    /// Calibrated similarity of each target face (same order) to the source
    /// face; empty when the source has no face.
    pub target_confidences: Vec<f64>,
    pub timings: StageTimings,
}

/// The API's 200 body: exactly these five fields.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CompareResponse {
    pub is_match: bool,
    #[serde(serialize_with = "plain_number")]
    pub confidence: f64,
    #[serde(serialize_with = "plain_number")]
    pub threshold: f64,
    pub source_face_detected: bool,
    pub target_face_detected: bool,
}

/// Whole numbers as `80`, not `80.0`, like the hosted API.
fn plain_number<S: serde::Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        s.serialize_i64(*v as i64)
    } else {
        s.serialize_f64(*v)
    }
}

impl Comparison {
    /// `isMatch` is decided on the very number returned.
    pub fn response(&self, threshold: f64) -> CompareResponse {
        let confidence = if self.confidence.is_finite() {
            self.confidence.clamp(0.0, 100.0)
        } else {
            0.0
        };
        CompareResponse {
            is_match: confidence >= threshold,
            confidence,
            threshold,
            source_face_detected: self.source_face_detected,
            target_face_detected: self.target_face_detected,
        }
    }
}

/// Wall time per pipeline stage, summed over both images.
#[derive(Debug, Clone, Default)]
pub struct StageTimings {
    pub queue: Duration,
    pub decode: Duration,
    pub detect: Duration,
    pub embed: Duration,
    pub age: Duration,
}

impl StageTimings {
    fn add(&mut self, a: &Analysis, queued: Duration) {
        self.queue += queued;
        self.decode += a.decode;
        self.detect += a.detect;
        self.embed += a.embed;
        self.age += a.age;
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FacesError {
    /// The bytes are not an image we can use: `kind` is the API's error kind
    /// (`unsupported_image_format`, `image_decode_failed`, `image_dimensions_too_large`, ...).
    #[error("{}: {message}", side.field())]
    BadImage {
        side: Side,
        kind: crate::error_codes::ErrorCode,
        message: String,
    },
    /// The inference queue is full: the client may retry.
    #[error("the inference queue is full")]
    Overloaded,
    #[error("face engine failure: {0}")]
    Internal(String),
}

/// Handle to the inference pool. Cloning is cheap.
#[derive(Clone)]
pub struct Engine {
    pool: Arc<Pool>,
    pack: Arc<pack::PackInfo>,
    policy: Arc<Policy>,
}

impl Engine {
    /// Loads ONNX Runtime and the pack, and starts the workers.
    pub fn start(cfg: EngineConfig) -> anyhow::Result<Engine> {
        let pack = Pack::load(&cfg.models_dir, &cfg.pack)?;
        let models = (0..cfg.workers.max(1))
            .map(|_| Models::new(&pack, cfg.intra_threads.max(1)))
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Engine {
            pool: Arc::new(Pool::start(
                models,
                Limits::new(cfg.queue_capacity, cfg.queue_org_share_percent),
                Arc::new(DecodeBudget::new(cfg.decode_budget_bytes)),
            )),
            pack: Arc::new(pack.manifest.info()),
            policy: Arc::new(Policy::new(
                pack.manifest.calibration.clone(),
                pack.manifest.age.as_ref(),
            )),
        })
    }

    /// Analyses one image on a held queue place (up to `max_faces` faces).
    async fn analyze_on(
        &self,
        place: &mut pool::Reservation<'_>,
        side: Side,
        bytes: Bytes,
        max_faces: usize,
        depth: Depth,
    ) -> Result<(Analysis, Duration), FacesError> {
        let (result, queued) = self
            .pool
            .analyze(place, bytes, max_faces, depth)
            .await
            .map_err(submit_error)?;
        match result {
            Ok(a) => Ok((a, queued)),
            Err(AnalyzeError::Decode(e)) => Err(FacesError::BadImage {
                side,
                kind: e.kind(),
                message: e.to_string(),
            }),
            Err(AnalyzeError::Engine(e)) => Err(FacesError::Internal(format!("{e:#}"))),
            // Only set once this future is gone: nobody reads this.
            Err(e @ AnalyzeError::Abandoned) => Err(FacesError::Internal(e.to_string())),
        }
    }

    /// Compares `source` (largest face) with every face of `target` for a
    /// decision at `threshold`, as work of organisation `tenant` (the queue's
    /// fairness key); both images are analysed in parallel on the pool
    /// without the age pass, which then runs (a follow-up job on the faces
    /// kept from the analyses) only when the ages can change a target face's
    /// decision at `threshold` ([`age_pass`]).
    pub async fn compare(
        &self,
        tenant: &str,
        source: Bytes,
        target: Bytes,
        threshold: f64,
    ) -> Result<Comparison, FacesError> {
        // Both places at once: a compare is never half queued.
        let mut tp = self.pool.reserve(tenant, 2).map_err(submit_error)?;
        let mut sp = tp.split_one();
        // A failed source ends the compare at once (the target's job, if not
        // started, is dropped); a failed target still waits for the source,
        // whose error is the one reported when both are bad.
        let s_fut = self.analyze_on(&mut sp, Side::Source, source, 1, Depth::Embeddings);
        let t_fut = self.analyze_on(
            &mut tp,
            Side::Target,
            target,
            MAX_TARGET_FACES,
            Depth::Embeddings,
        );
        tokio::pin!(s_fut, t_fut);
        let ((s, sq), (t, tq)) = tokio::select! {
            s = &mut s_fut => { let s = s?; (s, t_fut.await?) }
            t = &mut t_fut => { let s = s_fut.await?; (s, t?) }
        };
        let mut timings = StageTimings::default();
        timings.add(&s, sq);
        timings.add(&t, tq);
        let (ages, pass) = match age_pass::plan(&self.policy, &s, &t, threshold) {
            Plan::Skip(pass) => (PairAges::default(), pass),
            Plan::Run(job) => {
                let mut place = self.pool.reserve_follow_up(tenant);
                let (result, queued) = self
                    .pool
                    .run(&mut place, cost::AGE_PASS_US, move |models, _| {
                        let started = std::time::Instant::now();
                        let r = job.run(models).map_err(AnalyzeError::Engine)?;
                        Ok((r, started.elapsed()))
                    })
                    .await
                    .map_err(submit_error)?;
                let ((ages, pass), took) =
                    result.map_err(|e| FacesError::Internal(format!("age pass: {e}")))?;
                timings.queue += queued;
                timings.age += took;
                (ages, pass)
            }
        };
        if let Some(ran) = pass.ran() {
            let counter = if ran {
                &crate::telemetry::AGE_PASSES_RUN
            } else {
                &crate::telemetry::AGE_PASSES_SKIPPED
            };
            counter.inc();
        }
        let c = score_with(&self.policy, &s, &t, &ages, pass, timings);
        if c.map == Some(Map::Child) {
            crate::telemetry::CHILD_CALIBRATION_PAIRS.inc();
        }
        Ok(c)
    }

    /// The faces of one image (up to [`MAX_TARGET_FACES`], largest first),
    /// through the same queue (as work of organisation `tenant`) and the
    /// same decode and detection as a compare; no embedding or age pass
    /// (boxes only).
    pub async fn faces(
        &self,
        tenant: &str,
        side: Side,
        bytes: Bytes,
    ) -> Result<ImageReport, FacesError> {
        let mut place = self.pool.reserve(tenant, 1).map_err(submit_error)?;
        let (a, _) = self
            .analyze_on(&mut place, side, bytes, MAX_TARGET_FACES, Depth::Boxes)
            .await?;
        Ok(ImageReport::from_analysis(&a))
    }

    /// Images dropped unanalysed because their request had given up.
    pub fn skipped_jobs(&self) -> u64 {
        self.pool.skipped()
    }

    /// Requests waiting for a worker right now.
    pub fn queue_depth(&self) -> usize {
        self.pool.depth()
    }

    /// Name of the model pack in use.
    pub fn pack(&self) -> &str {
        &self.pack.name
    }

    /// The pack in use: name, embedder sha256 and recorded licence.
    pub fn pack_info(&self) -> &pack::PackInfo {
        &self.pack
    }
}

fn submit_error(e: SubmitError) -> FacesError {
    match e {
        SubmitError::Full | SubmitError::OrgShareFull => FacesError::Overloaded,
        SubmitError::Stopped => FacesError::Internal(e.to_string()),
    }
}

/// One target face through the policy: cosine, confidence, map, (source age, target age).
type Scored = (f32, f64, Map, (Option<f32>, Option<f32>));

/// The API's rule on two full analyses (every face's age estimated): see [`score_with`].
pub fn score(
    policy: &Policy,
    source: &Analysis,
    target: &Analysis,
    timings: StageTimings,
) -> Comparison {
    let ages = PairAges::of(source, target);
    let pass = if policy.child.is_none() {
        AgePass::NoAgeModel
    } else if source.embeddings.is_empty() || target.embeddings.is_empty() {
        AgePass::NoFace
    } else {
        AgePass::Full
    };
    score_with(policy, source, target, &ages, pass, timings)
}

/// The API's rule: the largest source face against every target face, each
/// pair through the policy with the ages known (child map when the child
/// rule applies to both faces' estimates), the highest confidence wins; 0
/// when either side has no face, at least [`calibration::FLOOR`] when both
/// have one.
pub fn score_with(
    policy: &Policy,
    source: &Analysis,
    target: &Analysis,
    ages: &PairAges,
    age_pass: AgePass,
    timings: StageTimings,
) -> Comparison {
    // Every target face through the policy, in target order.
    let scored: Vec<Scored> = match source.embeddings.first() {
        None => Vec::new(),
        Some(s) => target
            .embeddings
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let cos = embed::cosine(s, t);
                let pair = (ages.source, ages.target.get(i).copied().flatten());
                let (conf, map) = policy.confidence(cos, pair);
                (cos, conf, map, pair)
            })
            .collect(),
    };
    // highest confidence; among equals, the higher cosine
    let best = scored
        .iter()
        .enumerate()
        .max_by(|(_, a), (_, b)| a.1.total_cmp(&b.1).then(a.0.total_cmp(&b.0)));
    let mut source_report = ImageReport::from_analysis(source);
    let mut target_report = ImageReport::from_analysis(target);
    if let Some(f) = source_report.faces.first_mut() {
        f.age = ages.source;
    }
    for (f, a) in target_report.faces.iter_mut().zip(&ages.target) {
        f.age = *a;
    }
    Comparison {
        confidence: best.map(|b| b.1.1).unwrap_or(0.0),
        cosine: best.map(|b| b.1.0),
        source_face_detected: !source.embeddings.is_empty(),
        target_face_detected: !target.embeddings.is_empty(),
        map: best.map(|b| b.1.2),
        ages: best.map(|b| b.1.3).unwrap_or((None, None)),
        age_pass,
        target_face: best.map(|b| b.0),
        source: source_report,
        target: target_report,
        target_confidences: scored.iter().map(|s| s.1).collect(),
        timings,
    }
}

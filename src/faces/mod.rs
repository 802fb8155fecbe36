//! Face engine: decode → orient → detect → align → embed → cosine → calibrated 0–100.
//!
//! The HTTP side only sees [`Engine`]: a cloneable handle to a bounded queue
//! feeding worker threads that each own their ONNX Runtime sessions.
use std::{path::PathBuf, time::Duration};

use bytes::Bytes;

use crate::config::Config;

/// What the engine needs to start: where the packs are, which one, and pool sizes.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub models_dir: PathBuf,
    pub pack: String,
    pub workers: usize,
    pub intra_threads: usize,
    pub queue_capacity: usize,
}

impl EngineConfig {
    pub fn from_config(c: &Config) -> Self {
        Self {
            models_dir: c.models_dir.clone(),
            pack: c.pack.clone(),
            workers: c.workers,
            intra_threads: c.intra_threads,
            queue_capacity: c.queue_capacity,
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
    /// Calibrated similarity 0–100, rounded to 2 decimals; 0 when either side has no face.
    pub confidence: f64,
    /// Raw best cosine similarity (None when either side has no face).
    pub cosine: Option<f32>,
    pub source_face_detected: bool,
    pub target_face_detected: bool,
    pub timings: StageTimings,
}

/// Wall time per pipeline stage, summed over both images.
#[derive(Debug, Clone, Default)]
pub struct StageTimings {
    pub queue: Duration,
    pub decode: Duration,
    pub detect: Duration,
    pub embed: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum FacesError {
    /// The bytes are not an image we can use: `code` is the stable API error code
    /// (`unsupported_image_format`, `image_decode_failed`, `image_dimensions_too_large`).
    #[error("{}: {message}", side.field())]
    BadImage { side: Side, code: &'static str, message: String },
    /// The inference queue is full: the client may retry.
    #[error("the inference queue is full")]
    Overloaded,
    #[error("face engine failure: {0}")]
    Internal(String),
}

/// Handle to the inference pool. Cloning is cheap.
#[derive(Clone)]
pub struct Engine {
    _private: (),
}

impl Engine {
    /// Loads ONNX Runtime and the pack, and starts the workers.
    pub fn start(_cfg: EngineConfig) -> anyhow::Result<Engine> {
        todo!("faces engine")
    }

    /// Compares `source` (largest face) with every face of `target`.
    pub async fn compare(&self, _source: Bytes, _target: Bytes) -> Result<Comparison, FacesError> {
        todo!("faces engine")
    }

    /// Requests waiting for a worker right now.
    pub fn queue_depth(&self) -> usize {
        0
    }

    /// Name of the model pack in use.
    pub fn pack(&self) -> &str {
        "mobilefacenet"
    }
}

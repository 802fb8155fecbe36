//! One worker's models and the per-image pipeline: decode → orient → detect
//! → align → embed.
use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use image::RgbImage;

use super::{
    age::AgeEstimator,
    decode::{
        self, DecodeError,
        budget::{DecodeBudget, Gate},
    },
    detect::{Detector, Face},
    embed::Embedder,
    pack::Pack,
    quality::{self, Quality},
    runtime,
};

/// Most target faces compared (largest first).
pub const MAX_TARGET_FACES: usize = 10;

/// What one image yielded.
#[derive(Debug, Clone, Default)]
pub struct Analysis {
    /// Normalised embeddings, largest face first.
    pub embeddings: Vec<Vec<f32>>,
    pub faces: Vec<Face>,
    /// Brightness, sharpness, size and pose of each face, same order.
    pub qualities: Vec<Quality>,
    /// Estimated age in years of each embedded face (empty when the pack has
    /// no age model or the age pass was left for later).
    pub ages: Vec<f32>,
    /// What a later age pass needs (analyses at [`Depth::Embeddings`] with an
    /// age model and a face): the image is not decoded again for it.
    pub age_input: Option<Arc<AgeInput>>,
    /// Image size after decode and orientation, and how far it was turned to find a face.
    pub size: (u32, u32),
    pub rotation: u16,
    /// Original pixels per analysed pixel (JPEGs decoded at reduced scale).
    pub scale_denominator: u32,
    pub decode: Duration,
    pub detect: Duration,
    pub embed: Duration,
    pub age: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum AnalyzeError {
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error("{0:#}")]
    Engine(#[from] anyhow::Error),
    /// Stopped at a stage boundary: nobody waits for the result any more.
    #[error("abandoned: the request gave up on this image")]
    Abandoned,
}

/// Kept from an analysis for an age pass that may run later.
#[derive(Debug)]
pub enum AgeInput {
    /// The decoded image (upright as the detector saw it).
    Image(RgbImage),
    /// The age crop of every face, in face order: a large image (PNGs are
    /// decoded at full size) is not held for the whole compare.
    Crops(Vec<Vec<f32>>),
}

/// Images up to this many pixels are kept whole for a later age pass
/// (≈ 7.5 MB; JPEGs are decoded at reduced scale and stay under it); larger
/// ones keep their faces' crops (≈ 0.6 MB each).
pub const AGE_IMAGE_KEPT_MAX_PIXELS: u64 = 2_560_000;

/// How far an image goes down the pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Depth {
    /// Decode and detect: face boxes only (no embeddings, no ages).
    Boxes,
    /// Boxes and embeddings; the age pass is left for later (a compare runs
    /// it only when the ages can change the decision), with what it needs
    /// kept in [`Analysis::age_input`].
    Embeddings,
    /// Everything a compare needs: embeddings and ages too.
    Compare,
}

pub struct Models {
    pub detector: Detector,
    pub embedder: Embedder,
    /// `None` when the pack has no age model (or a benchmark turned it off).
    pub age: Option<AgeEstimator>,
}

impl Models {
    pub fn new(pack: &Pack, intra_threads: usize) -> anyhow::Result<Self> {
        let m = &pack.manifest;
        Ok(Self {
            detector: Detector::new(
                runtime::session(&pack.detector_bytes, intra_threads)?,
                m.detector.clone(),
            ),
            embedder: Embedder::new(
                runtime::session(&pack.embedder_bytes, intra_threads)?,
                m.embedder.clone(),
            ),
            age: match (&m.age, &pack.age_bytes) {
                (Some(spec), Some(bytes)) => Some(AgeEstimator::new(
                    runtime::session(bytes, intra_threads)?,
                    spec.clone(),
                )),
                _ => None,
            },
        })
    }

    /// Embeds up to `max_faces` faces of the image, largest first.
    pub fn analyze(&mut self, bytes: &[u8], max_faces: usize) -> Result<Analysis, AnalyzeError> {
        self.analyze_at(bytes, max_faces, decode::WORKING_SIDE)
    }

    /// Decode and detect only: the faces (largest first), no embeddings.
    pub fn faces(&mut self, bytes: &[u8], max_faces: usize) -> Result<Analysis, AnalyzeError> {
        let idle = AtomicBool::new(false);
        self.run(
            bytes,
            max_faces,
            decode::WORKING_SIDE,
            Depth::Boxes,
            &idle,
            None,
        )
    }

    /// As [`Models::analyze`], stopping at the next stage boundary once
    /// `abandoned` is set (the request has given up on this image); with
    /// `memory` (the server's workers), the decode's buffers are taken from
    /// that process-wide budget and a wait for it ends when `abandoned` is set.
    pub fn analyze_unless(
        &mut self,
        bytes: &[u8],
        max_faces: usize,
        depth: Depth,
        abandoned: &AtomicBool,
        memory: Option<&DecodeBudget>,
    ) -> Result<Analysis, AnalyzeError> {
        let gate = memory.map(|budget| Gate { budget, abandoned });
        self.run(
            bytes,
            max_faces,
            decode::WORKING_SIDE,
            depth,
            abandoned,
            gate,
        )
    }

    /// As [`Models::analyze`], decoding JPEGs at reduced scale down to
    /// `working_side` (0: full resolution).
    pub fn analyze_at(
        &mut self,
        bytes: &[u8],
        max_faces: usize,
        working_side: u32,
    ) -> Result<Analysis, AnalyzeError> {
        let idle = AtomicBool::new(false);
        self.run(bytes, max_faces, working_side, Depth::Compare, &idle, None)
    }

    fn run(
        &mut self,
        bytes: &[u8],
        max_faces: usize,
        working_side: u32,
        depth: Depth,
        abandoned: &AtomicBool,
        memory: Option<Gate<'_>>,
    ) -> Result<Analysis, AnalyzeError> {
        let checkpoint = || {
            if abandoned.load(Ordering::Relaxed) {
                Err(AnalyzeError::Abandoned)
            } else {
                Ok(())
            }
        };
        let t0 = Instant::now();
        let decoded = decode::decode_within(bytes, working_side, memory).map_err(|e| match e {
            DecodeError::Abandoned => AnalyzeError::Abandoned,
            e => AnalyzeError::Decode(e),
        })?;
        let scale_denominator = decoded.scale_denominator;
        checkpoint()?;
        let t1 = Instant::now();
        let (img, mut faces, rotation) = self.detector.faces_any_rotation(decoded.image)?;
        faces.truncate(max_faces.max(1));
        // ~140 µs a face (the aligned crop's face region, sampled once): every depth.
        let qualities = faces
            .iter()
            .map(|f| quality::measure(&img, f, scale_denominator as f32, rotation))
            .collect();
        if depth == Depth::Boxes {
            return Ok(Analysis {
                faces,
                qualities,
                size: img.dimensions(),
                rotation,
                scale_denominator,
                decode: t1 - t0,
                detect: t1.elapsed(),
                ..Default::default()
            });
        }
        checkpoint()?;
        let t2 = Instant::now();
        let crops: Vec<_> = faces.iter().map(|f| self.embedder.crop(&img, f)).collect();
        let embeddings = self.embedder.embed(&crops)?;
        checkpoint()?;
        let t3 = Instant::now();
        // Every embedded face: the child rule needs the age of whichever pair scores best.
        let size = img.dimensions();
        let (mut ages, mut age_input) = (Vec::new(), None);
        match &mut self.age {
            Some(age) if depth == Depth::Compare => ages = age.ages(&img, &faces)?,
            Some(age) if !faces.is_empty() => {
                age_input = Some(Arc::new(
                    if img.width() as u64 * img.height() as u64 <= AGE_IMAGE_KEPT_MAX_PIXELS {
                        AgeInput::Image(img)
                    } else {
                        AgeInput::Crops(faces.iter().map(|f| age.crop(&img, f)).collect())
                    },
                ))
            }
            _ => {}
        }
        let t4 = Instant::now();
        Ok(Analysis {
            embeddings,
            faces,
            qualities,
            ages,
            age_input,
            size,
            rotation,
            scale_denominator,
            decode: t1 - t0,
            detect: t2 - t1,
            embed: t3 - t2,
            age: t4 - t3,
        })
    }

    /// The age pass on some faces of an analysed image (`faces`: indices into
    /// the analysis' faces, with the faces themselves).
    pub fn ages_of(
        &mut self,
        input: &AgeInput,
        faces: &[(usize, Face)],
    ) -> anyhow::Result<Vec<f32>> {
        let age = self
            .age
            .as_mut()
            .ok_or_else(|| anyhow::anyhow!("the pack has no age model"))?;
        let crops: Vec<Vec<f32>> = match input {
            AgeInput::Image(img) => faces.iter().map(|(_, f)| age.crop(img, f)).collect(),
            AgeInput::Crops(all) => faces
                .iter()
                .map(|(i, _)| {
                    all.get(*i)
                        .cloned()
                        .ok_or_else(|| anyhow::anyhow!("no age crop for face {i}"))
                })
                .collect::<anyhow::Result<_>>()?,
        };
        Ok(age
            .probabilities(&crops)?
            .iter()
            .map(|p| super::age::expected_age(p))
            .collect())
    }
}

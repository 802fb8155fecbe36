//! Model packs: `models/<pack>/manifest.json` describes the ONNX files, their
//! input contracts, the alignment template and the calibration. Any pack with
//! the same kind of contract loads without code changes.
use std::path::{Path, PathBuf};

use anyhow::{Context, bail, ensure};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::calibration::Calibration;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DetectorSpec {
    pub file: String,
    pub sha256: String,
    pub input: String,
    pub outputs: DetectorOutputs,
    pub size: u32,
    pub mean: [f32; 3],
    pub std: [f32; 3],
    pub score_threshold: f32,
    pub iou_threshold: f32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DetectorOutputs {
    pub regressors: String,
    pub classificators: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EmbedderSpec {
    pub file: String,
    pub sha256: String,
    pub input: String,
    pub output: String,
    pub size: u32,
    pub mean: [f32; 3],
    pub std: [f32; 3],
    pub dim: usize,
    /// Eye (image-left), eye, nose tip, mouth corner, mouth corner, in crop pixels.
    pub template: [[f32; 2]; 5],
    /// Area-downscale the face region before warping when it is much larger than the crop.
    #[serde(default)]
    pub antialias: bool,
}

/// The age estimator and the child policy (issue 8). Optional: a pack without
/// it scores every pair with the adult calibration.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AgeSpec {
    pub file: String,
    pub sha256: String,
    pub input: String,
    /// Softmax over one-year classes; class k is read as k years (as `human` does).
    pub output: String,
    pub size: u32,
    /// The crop is a square this many times the detector box's longer side.
    pub box_scale: f32,
    /// One face estimated under this age and the other under it plus
    /// `child_age_margin`: the child calibration applies.
    pub child_age_limit: f32,
    /// Years above the limit the older face of a child pair may be estimated
    /// (the estimator's error near the limit; 0 when absent: both under the limit).
    #[serde(default)]
    pub child_age_margin: f32,
    /// The child map puts 80 at the cosine where the adult map gives this.
    pub child_80_at_adult: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub detector: DetectorSpec,
    pub embedder: EmbedderSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub age: Option<AgeSpec>,
    pub calibration: Calibration,
    /// Everything else (licence, provenance, notes) is kept verbatim on rewrite.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// A loaded, verified pack.
#[derive(Debug, Clone)]
pub struct Pack {
    pub dir: PathBuf,
    pub manifest: Manifest,
    pub detector_bytes: std::sync::Arc<Vec<u8>>,
    pub embedder_bytes: std::sync::Arc<Vec<u8>>,
    pub age_bytes: Option<std::sync::Arc<Vec<u8>>>,
}

impl Pack {
    pub fn manifest_path(models_dir: &Path, name: &str) -> PathBuf {
        models_dir.join(name).join("manifest.json")
    }

    /// Reads the manifest and both model files, refusing files whose sha256 differs.
    pub fn load(models_dir: &Path, name: &str) -> anyhow::Result<Self> {
        ensure!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
            "pack name {name:?}: use letters, digits, '-' or '_'"
        );
        let dir = models_dir.join(name);
        let path = Self::manifest_path(models_dir, name);
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "model pack {name:?}: cannot read {} (set FACECOMPARE_MODELS_DIR to the folder holding the packs)",
                path.display()
            )
        })?;
        let manifest: Manifest = serde_json::from_str(&text).with_context(|| {
            format!(
                "model pack {name:?}: {} is not a valid manifest",
                path.display()
            )
        })?;
        manifest
            .calibration
            .validate()
            .with_context(|| format!("model pack {name:?}: calibration"))?;
        let detector_bytes =
            read_verified(&dir, &manifest.detector.file, &manifest.detector.sha256)?;
        let embedder_bytes =
            read_verified(&dir, &manifest.embedder.file, &manifest.embedder.sha256)?;
        let age_bytes = match &manifest.age {
            Some(a) => {
                ensure!(
                    a.child_age_limit > 0.0
                        && a.child_age_margin >= 0.0
                        && a.child_age_margin.is_finite()
                        && a.child_80_at_adult > 80.0
                        && a.child_80_at_adult < 100.0,
                    "model pack {name:?}: age: child_age_limit must be > 0, child_age_margin >= 0 and child_80_at_adult between 80 and 100"
                );
                Some(read_verified(&dir, &a.file, &a.sha256)?.into())
            }
            None => None,
        };
        Ok(Self {
            dir,
            manifest,
            detector_bytes: detector_bytes.into(),
            embedder_bytes: embedder_bytes.into(),
            age_bytes,
        })
    }

    /// Rewrites the calibration in the manifest, keeping everything else.
    pub fn write_calibration(
        models_dir: &Path,
        name: &str,
        calibration: &Calibration,
    ) -> anyhow::Result<PathBuf> {
        let path = Self::manifest_path(models_dir, name);
        let text = std::fs::read_to_string(&path)?;
        let mut value: serde_json::Value = serde_json::from_str(&text)?;
        value["calibration"] = serde_json::to_value(calibration)?;
        std::fs::write(&path, serde_json::to_string_pretty(&value)? + "\n")?;
        Ok(path)
    }
}

fn read_verified(dir: &Path, file: &str, sha256: &str) -> anyhow::Result<Vec<u8>> {
    if file.contains("..") || file.starts_with('/') {
        bail!("manifest names {file:?}: model files must lie inside the pack folder");
    }
    let path = dir.join(file);
    let bytes = std::fs::read(&path)
        .with_context(|| format!("cannot read model file {}", path.display()))?;
    let got = hex::encode(Sha256::digest(&bytes));
    if !got.eq_ignore_ascii_case(sha256) {
        bail!(
            "{} has sha256 {got}, the manifest expects {sha256}: refusing it",
            path.display()
        );
    }
    Ok(bytes)
}

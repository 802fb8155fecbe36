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
    /// Tensor layout of the input: `NHWC` (the shipped packs) or `NCHW`
    /// (InsightFace's ArcFace models).
    #[serde(default)]
    pub layout: Layout,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Layout {
    #[default]
    NHWC,
    NCHW,
}

impl std::fmt::Display for Layout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Layout::NHWC => "NHWC",
            Layout::NCHW => "NCHW",
        })
    }
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

/// What the manifest's `licence.commercial` says about commercial use of the
/// pack (the shipped packs: `yes`; an imported pack: what its operator stated).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Commercial {
    Yes,
    No,
    Unknown,
}

impl Commercial {
    pub fn as_str(self) -> &'static str {
        match self {
            Commercial::Yes => "yes",
            Commercial::No => "no",
            Commercial::Unknown => "unknown",
        }
    }
}

impl std::str::FromStr for Commercial {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "yes" => Ok(Commercial::Yes),
            "no" => Ok(Commercial::No),
            "unknown" => Ok(Commercial::Unknown),
            other => Err(format!("{other:?}: use yes, no or unknown")),
        }
    }
}

/// The pack's identity as start-up, `/readyz` and the info metric show it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PackInfo {
    pub name: String,
    pub embedder_sha256: String,
    /// The embedder's licence as recorded (`licence.embedder`).
    pub licence: String,
    pub commercial: Commercial,
}

impl Manifest {
    /// The recorded licence; a manifest that states no `licence.commercial`
    /// reads as `unknown` (only a stated `yes` loads without acknowledgement).
    pub fn info(&self) -> PackInfo {
        let licence = self.extra.get("licence");
        let field = |k: &str| licence.and_then(|l| l.get(k)).and_then(|v| v.as_str());
        PackInfo {
            name: self.name.clone(),
            embedder_sha256: self.embedder.sha256.to_ascii_lowercase(),
            licence: field("embedder").unwrap_or("not recorded").to_string(),
            commercial: field("commercial")
                .and_then(|c| c.parse().ok())
                .unwrap_or(Commercial::Unknown),
        }
    }

    /// Refuses a pack not cleared for commercial use unless `ack`
    /// (`FACECOMPARE_PACK_LICENCE_ACK`, names separated by commas) names it.
    pub fn licence_gate(&self, ack: Option<&str>) -> anyhow::Result<()> {
        let info = self.info();
        if info.commercial == Commercial::Yes
            || ack.is_some_and(|a| a.split(',').any(|n| n.trim() == info.name))
        {
            return Ok(());
        }
        bail!(
            "model pack {:?}: its manifest records the embedder licence {:?} and commercial use {:?}; \
             it loads only when the operator acknowledges that licence: set \
             FACECOMPARE_PACK_LICENCE_ACK={} (docs/packs.md)",
            info.name,
            info.licence,
            info.commercial.as_str(),
            info.name
        )
    }
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

    /// Reads and checks a pack's manifest only (no model file).
    pub fn read_manifest(models_dir: &Path, name: &str) -> anyhow::Result<Manifest> {
        check_name(name)?;
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
        Ok(manifest)
    }

    /// Reads the manifest and both model files, refusing files whose sha256 differs.
    pub fn load(models_dir: &Path, name: &str) -> anyhow::Result<Self> {
        let manifest = Self::read_manifest(models_dir, name)?;
        let dir = models_dir.join(name);
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

/// A pack name is one folder name: letters, digits, `-`, `_`.
pub fn check_name(name: &str) -> anyhow::Result<()> {
    ensure!(
        !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
        "pack name {name:?}: use letters, digits, '-' or '_'"
    );
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(licence: serde_json::Value) -> Manifest {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/mobilefacenet/manifest.json");
        let mut v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        v["name"] = "mine".into();
        v["licence"] = licence;
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn the_shipped_packs_load_without_acknowledgement() {
        for name in ["mobilefacenet", "dlib"] {
            let m = Pack::read_manifest(
                Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("models")
                    .as_path(),
                name,
            )
            .unwrap();
            assert_eq!(m.info().commercial, Commercial::Yes, "{name}");
            m.licence_gate(None).unwrap();
        }
    }

    #[test]
    fn a_pack_not_cleared_for_commercial_use_needs_its_name_acknowledged() {
        for commercial in [Some("no"), Some("unknown"), None] {
            let mut licence = serde_json::json!({"embedder": "research only"});
            if let Some(c) = commercial {
                licence["commercial"] = c.into();
            }
            let m = manifest(licence);
            let e = m.licence_gate(None).unwrap_err().to_string();
            assert!(
                e.contains("\"research only\"") && e.contains("FACECOMPARE_PACK_LICENCE_ACK=mine"),
                "{e}"
            );
            let want = commercial.unwrap_or("unknown");
            assert!(e.contains(&format!("commercial use \"{want}\"")), "{e}");
            assert!(m.licence_gate(Some("other")).is_err());
            assert!(m.licence_gate(Some("mine-2")).is_err());
            m.licence_gate(Some("mine")).unwrap();
            m.licence_gate(Some("other, mine")).unwrap();
        }
        let m = manifest(serde_json::json!({"embedder": "MIT", "commercial": "yes"}));
        m.licence_gate(None).unwrap();
        let info = m.info();
        assert_eq!(info.licence, "MIT");
        assert_eq!(info.embedder_sha256.len(), 64);
    }
}

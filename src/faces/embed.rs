//! Aligned face crops → L2-normalised embeddings.
use anyhow::{Context, anyhow, ensure};
use image::RgbImage;
use ort::{session::Session, value::TensorRef};

use super::{
    detect::Face,
    geometry::{self, Affine},
    pack::{EmbedderSpec, Layout},
};

pub struct Embedder {
    session: Session,
    spec: EmbedderSpec,
}

impl Embedder {
    pub fn new(session: Session, spec: EmbedderSpec) -> Self {
        Self { session, spec }
    }

    /// The similarity transform taking the face's keypoints onto the template.
    pub fn alignment(&self, face: &Face) -> Affine {
        align_to(
            &self.spec.template.map(|p| [p[0] as f64, p[1] as f64]),
            face,
        )
    }

    pub fn crop(&self, img: &RgbImage, face: &Face) -> RgbImage {
        let m = self.alignment(face);
        if self.spec.antialias {
            geometry::warp_antialiased(img, &m, self.spec.size)
        } else {
            geometry::warp(img, &m, self.spec.size)
        }
    }

    /// One normalised embedding per crop, in order.
    pub fn embed(&mut self, crops: &[RgbImage]) -> anyhow::Result<Vec<Vec<f32>>> {
        if crops.is_empty() {
            return Ok(Vec::new());
        }
        let size = self.spec.size as usize;
        let mut input = Vec::with_capacity(crops.len() * size * size * 3);
        for crop in crops {
            ensure!(
                crop.dimensions() == (size as u32, size as u32),
                "crop has the wrong size"
            );
            push_normalised(&mut input, crop, &self.spec);
        }
        let shape = match self.spec.layout {
            Layout::NHWC => [crops.len(), size, size, 3],
            Layout::NCHW => [crops.len(), 3, size, size],
        };
        let tensor =
            TensorRef::from_array_view((shape, input.as_slice())).context("embedder input")?;
        let outputs = self
            .session
            .run(ort::inputs![self.spec.input.as_str() => tensor])
            .map_err(|e| anyhow!("embedder run: {e}"))?;
        let (_, raw) = outputs[self.spec.output.as_str()]
            .try_extract_tensor::<f32>()
            .context("embedder output")?;
        ensure!(
            raw.len() == crops.len() * self.spec.dim,
            "embedder returned {} values for {} faces",
            raw.len(),
            crops.len()
        );
        Ok(raw.chunks_exact(self.spec.dim).map(normalise).collect())
    }
}

/// Appends one crop as `(x - mean) / std` per channel, in the spec's layout.
fn push_normalised(out: &mut Vec<f32>, crop: &RgbImage, spec: &EmbedderSpec) {
    let (mean, std) = (spec.mean, spec.std);
    let raw = crop.as_raw();
    match spec.layout {
        Layout::NHWC => out.extend(
            raw.iter()
                .enumerate()
                .map(|(i, &v)| (v as f32 - mean[i % 3]) / std[i % 3]),
        ),
        Layout::NCHW => {
            for c in 0..3 {
                out.extend(
                    raw.iter()
                        .skip(c)
                        .step_by(3)
                        .map(|&v| (v as f32 - mean[c]) / std[c]),
                );
            }
        }
    }
}

pub fn normalise(v: &[f32]) -> Vec<f32> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    v.iter().map(|x| x / n).collect()
}

pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// The similarity taking `face`'s keypoints onto a five-point template.
/// BlazeFace gives the mouth centre, so it meets the mean of the template's
/// two mouth corners.
pub fn align_to(t: &[[f64; 2]; 5], face: &Face) -> Affine {
    let dst = [
        t[0],
        t[1],
        t[2],
        [(t[3][0] + t[4][0]) / 2.0, (t[3][1] + t[4][1]) / 2.0],
    ];
    let src: Vec<[f64; 2]> = face.keypoints[..4]
        .iter()
        .map(|k| [k[0] as f64, k[1] as f64])
        .collect();
    geometry::similarity(&src, &dst)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nchw_puts_each_channel_in_its_own_plane() {
        let mut spec: EmbedderSpec = serde_json::from_value(serde_json::json!({
            "file": "x.onnx", "sha256": "", "input": "i", "output": "o", "size": 2,
            "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 2.0], "dim": 4,
            "template": [[0.0, 0.0], [1.0, 0.0], [0.5, 0.5], [0.0, 1.0], [1.0, 1.0]]
        }))
        .unwrap();
        assert_eq!(spec.layout, Layout::NHWC, "absent layout reads as NHWC");
        let crop = RgbImage::from_fn(2, 2, |x, y| {
            let p = (y * 2 + x) as u8;
            image::Rgb([p, 10 + p, 20 + p])
        });
        let mut hwc = Vec::new();
        push_normalised(&mut hwc, &crop, &spec);
        assert_eq!(&hwc[..6], &[0.0, 10.0, 10.0, 1.0, 11.0, 10.5]);
        spec.layout = Layout::NCHW;
        let mut chw = Vec::new();
        push_normalised(&mut chw, &crop, &spec);
        assert_eq!(
            chw,
            [
                0.0, 1.0, 2.0, 3.0, 10.0, 11.0, 12.0, 13.0, 10.0, 10.5, 11.0, 11.5
            ]
        );
    }

    #[test]
    fn cosine_of_normalised_vectors() {
        let a = normalise(&[3.0, 4.0]);
        assert!((a[0] - 0.6).abs() < 1e-6);
        assert!((cosine(&a, &a) - 1.0).abs() < 1e-6);
        assert!((cosine(&a, &normalise(&[-4.0, 3.0]))).abs() < 1e-6);
    }
}

//! Aligned face crops → L2-normalised embeddings.
use anyhow::{Context, anyhow, ensure};
use image::RgbImage;
use ort::{session::Session, value::TensorRef};

use super::{
    detect::Face,
    geometry::{self, Affine},
    pack::EmbedderSpec,
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
        let (mean, std) = (self.spec.mean, self.spec.std);
        let mut input = Vec::with_capacity(crops.len() * size * size * 3);
        for crop in crops {
            ensure!(
                crop.dimensions() == (size as u32, size as u32),
                "crop has the wrong size"
            );
            input.extend(
                crop.as_raw()
                    .iter()
                    .enumerate()
                    .map(|(i, &v)| (v as f32 - mean[i % 3]) / std[i % 3]),
            );
        }
        let tensor = TensorRef::from_array_view(([crops.len(), size, size, 3], input.as_slice()))
            .context("embedder input")?;
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
    fn cosine_of_normalised_vectors() {
        let a = normalise(&[3.0, 4.0]);
        assert!((a[0] - 0.6).abs() < 1e-6);
        assert!((cosine(&a, &a) - 1.0).abs() < 1e-6);
        assert!((cosine(&a, &normalise(&[-4.0, 3.0]))).abs() < 1e-6);
    }
}

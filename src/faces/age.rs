//! Age estimate of a detected face (human's `faceres`, HSE-FaceRes): a square
//! crop 1.4× the detector box around its centre, as `human` cuts it, resampled
//! to 224 in float (area average when shrinking, bilinear when enlarging; no
//! rounding, so the crop is the same to ~1e-4 grey levels on any machine),
//! raw 0..255 RGB in, 100 one-year classes out, read as the expected value.
use anyhow::{Context, anyhow, ensure};
use image::RgbImage;
use ort::{session::Session, value::TensorRef};

use super::{detect::Face, pack::AgeSpec};

pub struct AgeEstimator {
    session: Session,
    spec: AgeSpec,
}

/// Per output index, the source indices and weights it reads: output `i`
/// covers `[start + i step, start + (i + 1) step]` (area average) when
/// `step >= 1`, else samples `start + (i + 0.5) step − 0.5` bilinearly.
/// Pixels outside the image count as black.
fn taps(start: f64, step: f64, n: u32, limit: u32) -> Vec<Vec<(usize, f32)>> {
    (0..n)
        .map(|i| {
            let mut out = Vec::new();
            if step >= 1.0 {
                let (lo, hi) = (start + i as f64 * step, start + (i + 1) as f64 * step);
                let first = lo.floor().max(0.0) as i64;
                let last = (hi.ceil() as i64).min(limit as i64);
                for j in first..last {
                    let ov = ((j + 1) as f64).min(hi) - (j as f64).max(lo);
                    if ov > 0.0 {
                        out.push((j as usize, (ov / step) as f32));
                    }
                }
            } else {
                let s = start + (i as f64 + 0.5) * step - 0.5;
                let j0 = s.floor() as i64;
                let f = s - j0 as f64;
                for (j, w) in [(j0, 1.0 - f), (j0 + 1, f)] {
                    if j >= 0 && j < limit as i64 {
                        out.push((j as usize, w as f32));
                    }
                }
            }
            out
        })
        .collect()
}

/// The model input for one face: `size`×`size`×3 floats, 0..255, NHWC.
pub fn crop(img: &RgbImage, bbox: [f32; 4], box_scale: f32, size: u32) -> Vec<f32> {
    let [x1, y1, x2, y2] = bbox.map(|v| v as f64);
    let side = box_scale as f64 * (x2 - x1).max(y2 - y1).max(1.0);
    let (left, top) = ((x1 + x2) / 2.0 - side / 2.0, (y1 + y2) / 2.0 - side / 2.0);
    let step = side / size as f64;
    let (xs, ys) = (
        taps(left, step, size, img.width()),
        taps(top, step, size, img.height()),
    );
    let (w, raw, n) = (img.width() as usize, img.as_raw(), size as usize);
    // Columns first over the rows the crop reads, then rows.
    let mut out = vec![0f32; n * n * 3];
    let mut row = vec![0f32; n * 3];
    for (v, yt) in ys.iter().enumerate() {
        let dst = &mut out[v * n * 3..(v + 1) * n * 3];
        for &(y, wy) in yt {
            let line = &raw[y * w * 3..(y + 1) * w * 3];
            for (u, xt) in xs.iter().enumerate() {
                let mut acc = [0f32; 3];
                for &(x, wx) in xt {
                    for c in 0..3 {
                        acc[c] += line[x * 3 + c] as f32 * wx;
                    }
                }
                row[u * 3..u * 3 + 3].copy_from_slice(&acc);
            }
            for (d, r) in dst.iter_mut().zip(&row) {
                *d += r * wy;
            }
        }
    }
    out
}

/// Expected value over one-year classes, class k read as k years.
pub fn expected_age(probabilities: &[f32]) -> f32 {
    probabilities
        .iter()
        .enumerate()
        .map(|(k, p)| k as f64 * *p as f64)
        .sum::<f64>() as f32
}

impl AgeEstimator {
    pub fn new(session: Session, spec: AgeSpec) -> Self {
        Self { session, spec }
    }

    pub fn spec(&self) -> &AgeSpec {
        &self.spec
    }

    pub fn crop(&self, img: &RgbImage, face: &Face) -> Vec<f32> {
        crop(img, face.bbox, self.spec.box_scale, self.spec.size)
    }

    /// The age probabilities of each crop, in order.
    pub fn probabilities(&mut self, crops: &[Vec<f32>]) -> anyhow::Result<Vec<Vec<f32>>> {
        if crops.is_empty() {
            return Ok(Vec::new());
        }
        let size = self.spec.size as usize;
        let input: Vec<f32> = crops.iter().flatten().copied().collect();
        ensure!(
            input.len() == crops.len() * size * size * 3,
            "age crop has the wrong size"
        );
        let tensor = TensorRef::from_array_view(([crops.len(), size, size, 3], input.as_slice()))
            .context("age model input")?;
        let outputs = self
            .session
            .run(ort::inputs![self.spec.input.as_str() => tensor])
            .map_err(|e| anyhow!("age model run: {e}"))?;
        let (_, raw) = outputs[self.spec.output.as_str()]
            .try_extract_tensor::<f32>()
            .context("age model output")?;
        ensure!(
            !raw.is_empty() && raw.len() % crops.len() == 0,
            "age model returned {} values for {} faces",
            raw.len(),
            crops.len()
        );
        Ok(raw
            .chunks_exact(raw.len() / crops.len())
            .map(<[f32]>::to_vec)
            .collect())
    }

    /// Estimated age in years of each face.
    pub fn ages(&mut self, img: &RgbImage, faces: &[Face]) -> anyhow::Result<Vec<f32>> {
        let crops: Vec<_> = faces.iter().map(|f| self.crop(img, f)).collect();
        Ok(self
            .probabilities(&crops)?
            .iter()
            .map(|p| expected_age(p))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;

    #[test]
    fn crop_of_flat_image_is_flat_inside_and_black_outside() {
        let img = RgbImage::from_pixel(400, 300, Rgb([10, 20, 30]));
        // shrinking (side 280 → 224) and enlarging (side 70 → 224)
        for bbox in [[100.0, 50.0, 300.0, 250.0], [200.0, 100.0, 250.0, 150.0]] {
            let c = crop(&img, bbox, 1.4, 224);
            let mid = (112 * 224 + 112) * 3;
            for (k, want) in [10.0, 20.0, 30.0].iter().enumerate() {
                assert!((c[mid + k] - want).abs() < 1e-3, "{bbox:?}: {}", c[mid + k]);
            }
        }
        // box at the top edge: the crop's first rows lie above the image
        let c = crop(&img, [100.0, 0.0, 300.0, 200.0], 1.4, 224);
        assert_eq!(c[(224 + 112) * 3], 0.0);
    }

    #[test]
    fn expected_age_reads_class_k_as_k_years() {
        let mut p = vec![0.0; 100];
        p[10] = 0.5;
        p[20] = 0.5;
        assert!((expected_age(&p) - 15.0).abs() < 1e-6);
    }
}

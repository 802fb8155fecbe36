//! Faces as clients see them: boxes and landmarks as ratios (0–1) of the
//! image as displayed (EXIF orientation applied), whatever scale the JPEG was
//! decoded at and however far the detector had to turn the image to find a
//! face. Both protocols and the try page draw from this, never from pixels.
use serde::Serialize;

use super::{pipeline::Analysis, quality::Quality};

/// One detected face.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FaceReport {
    pub left: f32,
    pub top: f32,
    pub width: f32,
    pub height: f32,
    /// Detector score 0–1.
    pub score: f32,
    /// Eye on the image's left, other eye, nose tip, mouth centre, two ears: (x, y) ratios.
    pub landmarks: [[f32; 2]; 6],
    /// Estimated age in years (packs with an age model).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub age: Option<f32>,
    /// Brightness, sharpness, size and pose (see [`super::quality`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quality: Option<Quality>,
}

/// One analysed image: its displayed size (at the scale analysed) and its
/// faces, largest first (the order the compare rule uses).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageReport {
    /// Upright size of the image as displayed, in original pixels (approximate
    /// for JPEGs decoded at reduced scale).
    pub width: u32,
    pub height: u32,
    pub faces: Vec<FaceReport>,
}

impl ImageReport {
    pub fn from_analysis(a: &Analysis) -> Self {
        let (w, h) = (a.size.0.max(1) as f32, a.size.1.max(1) as f32);
        let turn = a.rotation;
        // Back from the turned frame the detector worked in to the upright one.
        let upright =
            |x: f32, y: f32| unturn(turn, (x / w).clamp(0.0, 1.0), (y / h).clamp(0.0, 1.0));
        let faces = a
            .faces
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let (ax, ay) = upright(f.bbox[0], f.bbox[1]);
                let (bx, by) = upright(f.bbox[2], f.bbox[3]);
                let (left, top) = (ax.min(bx), ay.min(by));
                let mut landmarks = [[0.0; 2]; 6];
                for (out, k) in landmarks.iter_mut().zip(&f.keypoints) {
                    let (x, y) = upright(k[0], k[1]);
                    *out = [x, y];
                }
                FaceReport {
                    left,
                    top,
                    width: ax.max(bx) - left,
                    height: ay.max(by) - top,
                    score: f.score,
                    landmarks,
                    age: a.ages.get(i).copied(),
                    quality: a.qualities.get(i).copied(),
                }
            })
            .collect();
        let d = a.scale_denominator.max(1);
        let (aw, ah) = (a.size.0 * d, a.size.1 * d);
        let (width, height) = if turn % 180 == 90 { (ah, aw) } else { (aw, ah) };
        ImageReport {
            width,
            height,
            faces,
        }
    }
}

/// A point (ratios) of the image turned `degrees` clockwise, in the upright image.
fn unturn(degrees: u16, u: f32, v: f32) -> (f32, f32) {
    match degrees {
        90 => (v, 1.0 - u),
        180 => (1.0 - u, 1.0 - v),
        270 => (1.0 - v, u),
        _ => (u, v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::faces::detect::Face;

    fn analysis(size: (u32, u32), rotation: u16, bbox: [f32; 4]) -> Analysis {
        Analysis {
            faces: vec![Face {
                bbox,
                score: 0.9,
                keypoints: [[bbox[0], bbox[1]]; 6],
            }],
            size,
            rotation,
            scale_denominator: 2,
            ..Default::default()
        }
    }

    #[test]
    fn upright_boxes_are_ratios_of_the_image() {
        let r = ImageReport::from_analysis(&analysis((200, 100), 0, [20.0, 10.0, 60.0, 50.0]));
        assert_eq!((r.width, r.height), (400, 200));
        let f = &r.faces[0];
        let got = [f.left, f.top, f.width, f.height];
        for (g, want) in got.iter().zip([0.1, 0.1, 0.2, 0.4]) {
            assert!((g - want).abs() < 1e-6, "{got:?}");
        }
        assert_eq!(f.landmarks[0], [0.1, 0.1]);
    }

    #[test]
    fn boxes_found_in_a_turned_image_map_back_to_the_upright_one() {
        // Upright 100×200 (w×h), turned 90° clockwise → 200×100. A face near
        // the turned image's top-left corner sits at the upright bottom-left.
        let r = ImageReport::from_analysis(&analysis((200, 100), 90, [0.0, 0.0, 20.0, 10.0]));
        assert_eq!((r.width, r.height), (200, 400));
        let f = &r.faces[0];
        assert!((f.left - 0.0).abs() < 1e-6 && (f.top - 0.9).abs() < 1e-6);
        assert!((f.width - 0.1).abs() < 1e-6 && (f.height - 0.1).abs() < 1e-6);
        // 270° is the inverse turn: the same corner is the upright top-right.
        let r = ImageReport::from_analysis(&analysis((200, 100), 270, [0.0, 0.0, 20.0, 10.0]));
        let f = &r.faces[0];
        assert!((f.left - 0.9).abs() < 1e-6 && (f.top - 0.0).abs() < 1e-6);
        let r = ImageReport::from_analysis(&analysis((200, 100), 180, [0.0, 0.0, 20.0, 10.0]));
        let f = &r.faces[0];
        assert!((f.left - 0.9).abs() < 1e-6 && (f.top - 0.9).abs() < 1e-6);
    }
}

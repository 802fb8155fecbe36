//! Face quality: brightness, sharpness, size and pose of one detected face,
//! measured on the aligned crop the default pack embeds (the ArcFace
//! template at 112×112), so the figures do not depend on the photo's
//! resolution or on the pack. docs/quality.md states each measure, its
//! mapping to 0–100, its limits and the measured errors.
use image::RgbImage;
use serde::Serialize;

use super::{
    detect::Face,
    geometry::{self, Affine},
};

/// The crop the measures read: the default pack's (mobilefacenet) geometry.
pub const CROP: u32 = 112;
/// ArcFace's five-point template at 112 px: eyes, nose tip, mouth corners.
const TEMPLATE: [[f64; 2]; 5] = [
    [38.2946, 51.6963],
    [73.5318, 51.5014],
    [56.0252, 71.7366],
    [41.5493, 92.3655],
    [70.7299, 92.2041],
];
/// The part of the crop that is face (brows to chin, cheek to cheek), in
/// crop pixels: the background and hair at the crop's edges are left out.
const REGION: (u32, u32, u32, u32) = (28, 36, 84, 104);

/// Sharpness: the ratio r = std(Laplacian) / std(luma) on the face region
/// (scale-free: a darker or flatter copy of the same crop has the same r),
/// mapped linearly from [`SHARP_FLOOR`] (0) to [`SHARP_CEIL`] (100).
const SHARP_FLOOR: f64 = 0.05;
const SHARP_CEIL: f64 = 0.60;
/// Added to the luma variance so that a flat (or black) crop reads as blurred,
/// not as the ratio of two tiny numbers.
const FLAT_VARIANCE: f64 = 4.0;

/// The measures of one face.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Quality {
    /// Mean luma (BT.601) of the face region, 0 (black) – 100 (white).
    pub brightness: f32,
    /// High-frequency content of the face region, 0 (blurred) – 100 (sharp).
    pub sharpness: f32,
    /// The face box's longer side in pixels of the original image.
    pub size: f32,
    pub pose: Pose,
}

/// Head pose in degrees, in the image as displayed.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Pose {
    /// In-plane tilt of the eye line; positive when the face is turned
    /// clockwise (the eye on the image's right is lower). −180…180.
    pub roll: f32,
    /// Turn left/right; positive when the face looks towards the image's
    /// right (its nose moves right of the ears). −90…90, estimated.
    pub yaw: f32,
    /// Nod; positive when the chin is raised. −90…90, estimated.
    pub pitch: f32,
}

/// The measures of `face` in `img` (the analysed frame). `scale` is original
/// pixels per analysed pixel; `turn` how far the analysed frame was turned
/// clockwise from the displayed image (degrees), so that roll is the
/// displayed image's.
pub fn measure(img: &RgbImage, face: &Face, scale: f32, turn: u16) -> Quality {
    let crop = aligned_crop(img, face);
    let (brightness, sharpness) = brightness_sharpness(&crop);
    let mut pose = pose(&face.keypoints);
    pose.roll = wrap_degrees(pose.roll - turn as f32);
    Quality {
        brightness,
        sharpness,
        size: face.width().max(face.height()).max(0.0) * scale,
        pose,
    }
}

/// The face warped onto the ArcFace template (four points: BlazeFace gives
/// the mouth centre, which meets the mean of the two corners).
pub fn aligned_crop(img: &RgbImage, face: &Face) -> RgbImage {
    let t = TEMPLATE;
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
    let m: Affine = geometry::similarity(&src, &dst);
    geometry::warp(img, &m, CROP)
}

/// Brightness and sharpness (0–100) of a [`CROP`]-sized aligned crop.
pub fn brightness_sharpness(crop: &RgbImage) -> (f32, f32) {
    let (x0, y0, x1, y1) = REGION;
    let w = crop.width() as usize;
    let raw = crop.as_raw();
    let luma = |x: u32, y: u32| -> f64 {
        let i = (y as usize * w + x as usize) * 3;
        0.299 * raw[i] as f64 + 0.587 * raw[i + 1] as f64 + 0.114 * raw[i + 2] as f64
    };
    let (mut n, mut sum, mut sum2) = (0.0, 0.0, 0.0);
    let (mut lsum, mut lsum2) = (0.0, 0.0);
    for y in y0..y1 {
        for x in x0..x1 {
            let v = luma(x, y);
            n += 1.0;
            sum += v;
            sum2 += v * v;
            // 4-neighbour Laplacian; the region stays 1 px inside the crop.
            let lap = luma(x - 1, y) + luma(x + 1, y) + luma(x, y - 1) + luma(x, y + 1) - 4.0 * v;
            lsum += lap;
            lsum2 += lap * lap;
        }
    }
    let mean = sum / n;
    let var = (sum2 / n - mean * mean).max(0.0);
    let lvar = (lsum2 / n - (lsum / n).powi(2)).max(0.0);
    let ratio = (lvar / (var + FLAT_VARIANCE)).sqrt();
    let sharpness = ((ratio - SHARP_FLOOR) / (SHARP_CEIL - SHARP_FLOOR)).clamp(0.0, 1.0) * 100.0;
    ((mean / 255.0 * 100.0) as f32, sharpness as f32)
}

/// The raw sharpness ratio (before the 0–100 mapping), for calibration.
pub fn sharpness_ratio(sharpness: f32) -> f64 {
    SHARP_FLOOR + sharpness as f64 / 100.0 * (SHARP_CEIL - SHARP_FLOOR)
}

/// Mean-face positions of BlazeFace's six keypoints in millimetres: x to the
/// face's left as seen in the image (subject's right), y up, z towards the
/// camera, origin midway between the ears (tragions). From adult
/// anthropometric means (interpupillary 64 mm, bitragion 144 mm, pupil to
/// nose tip 45 mm and to the mouth 72 mm, nose tip 110 mm and eyes 85 mm in
/// front of the ears).
const HEAD: [[f64; 3]; 6] = [
    [-32.0, 0.0, 85.0],
    [32.0, 0.0, 85.0],
    [0.0, -45.0, 110.0],
    [0.0, -72.0, 92.0],
    [-72.0, -20.0, 0.0],
    [72.0, -20.0, 0.0],
];

/// Roll from the eye line (exact for the keypoints); yaw and pitch by fitting
/// the mean face under scaled orthographic projection to the keypoints with
/// the roll removed (least squares, a coarse then a fine grid).
pub fn pose(k: &[[f32; 2]; 6]) -> Pose {
    let p: Vec<[f64; 2]> = k.iter().map(|p| [p[0] as f64, p[1] as f64]).collect();
    let (dx, dy) = (p[1][0] - p[0][0], p[1][1] - p[0][1]);
    let roll = dy.atan2(dx);
    // Undo the roll (image y points down: turn by −roll), flip y to point up.
    let (c, s) = (roll.cos(), roll.sin());
    let q: Vec<[f64; 2]> = p
        .iter()
        .map(|v| [c * v[0] + s * v[1], -(-s * v[0] + c * v[1])])
        .collect();
    let best_of = |yaws: &[f64], pitches: &[f64]| {
        let mut best = (f64::INFINITY, 0.0, 0.0);
        for &yaw in yaws {
            for &pitch in pitches {
                let e = fit_error(&q, yaw, pitch);
                if e < best.0 {
                    best = (e, yaw, pitch);
                }
            }
        }
        best
    };
    let coarse: Vec<f64> = (-18..=18).map(|i| i as f64 * 5.0).collect();
    let (_, y0, p0) = best_of(&coarse, &coarse[4..33]);
    let around = |c: f64| (-10..=10).map(|i| c + i as f64 * 0.5).collect::<Vec<_>>();
    let best = best_of(&around(y0), &around(p0));
    Pose {
        roll: roll.to_degrees() as f32,
        yaw: best.1.clamp(-90.0, 90.0) as f32,
        pitch: best.2.clamp(-90.0, 90.0) as f32,
    }
}

/// Residual of the best scale and shift mapping the mean face, turned by
/// `yaw` then `pitch` (degrees), onto the keypoints `q` (roll removed, y up).
fn fit_error(q: &[[f64; 2]], yaw: f64, pitch: f64) -> f64 {
    let (sy, cy) = yaw.to_radians().sin_cos();
    let (sp, cp) = pitch.to_radians().sin_cos();
    let proj: Vec<[f64; 2]> = HEAD
        .iter()
        .map(|&[x, y, z]| {
            // Yaw about the vertical axis (positive: nose to the image's right),
            // then pitch about the horizontal one (positive: chin up, so the
            // face's front moves up).
            let (x1, z1) = (x * cy + z * sy, -x * sy + z * cy);
            let y1 = y * cp + z1 * sp;
            [x1, y1]
        })
        .collect();
    let n = q.len() as f64;
    let mean = |v: &[[f64; 2]]| {
        let s = v.iter().fold([0.0, 0.0], |a, p| [a[0] + p[0], a[1] + p[1]]);
        [s[0] / n, s[1] / n]
    };
    let (mq, mp) = (mean(q), mean(&proj));
    // Best similarity (scale and a small in-plane turn: a turned and nodded
    // head tilts its eye line a little) as a complex regression a ≈ z·b.
    let (mut re, mut im, mut den, mut qq) = (0.0, 0.0, 0.0, 0.0);
    for (a, b) in q.iter().zip(&proj) {
        let (ax, ay) = (a[0] - mq[0], a[1] - mq[1]);
        let (bx, by) = (b[0] - mp[0], b[1] - mp[1]);
        re += ax * bx + ay * by;
        im += ay * bx - ax * by;
        den += bx * bx + by * by;
        qq += ax * ax + ay * ay;
    }
    let explained = if den > 0.0 { (re * re + im * im) / den } else { 0.0 };
    (qq - explained) / qq.max(1e-12)
}

fn wrap_degrees(d: f32) -> f32 {
    let mut d = d % 360.0;
    if d > 180.0 {
        d -= 360.0;
    } else if d <= -180.0 {
        d += 360.0;
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The mean face's keypoints seen at a known pose, in image pixels.
    fn project(yaw: f64, pitch: f64, roll: f64) -> [[f32; 2]; 6] {
        let (sy, cy) = yaw.to_radians().sin_cos();
        let (sp, cp) = pitch.to_radians().sin_cos();
        let (sr, cr) = roll.to_radians().sin_cos();
        HEAD.map(|[x, y, z]| {
            let (x1, z1) = (x * cy + z * sy, -x * sy + z * cy);
            let y1 = y * cp + z1 * sp;
            // to image pixels (y down), 1.5 px/mm, turned clockwise by roll
            let (u, v) = (x1 * 1.5, -y1 * 1.5);
            [(400.0 + cr * u - sr * v) as f32, (300.0 + sr * u + cr * v) as f32]
        })
    }

    #[test]
    fn pose_of_the_mean_face_is_recovered() {
        for (yaw, pitch, roll) in [
            (0.0, 0.0, 0.0),
            (30.0, 0.0, 0.0),
            (-45.0, 10.0, 0.0),
            (20.0, -15.0, 25.0),
            (-10.0, 20.0, -40.0),
            (60.0, 5.0, 170.0),
        ] {
            let p = pose(&project(yaw, pitch, roll));
            // The eye line tilts a little when the head is both turned and nodded.
            let tol = if yaw * pitch == 0.0 { 0.01 } else { 12.0 };
            assert!((p.roll as f64 - roll).abs() < tol, "{p:?} vs roll {roll}");
            assert!((p.yaw as f64 - yaw).abs() <= 0.5, "{p:?} vs yaw {yaw}");
            assert!((p.pitch as f64 - pitch).abs() <= 0.5, "{p:?} vs pitch {pitch}");
        }
    }

    #[test]
    fn roll_is_the_displayed_images() {
        assert_eq!(wrap_degrees(10.0 - 90.0), -80.0);
        assert_eq!(wrap_degrees(-170.0 - 90.0), 100.0);
        assert_eq!(wrap_degrees(180.0), 180.0);
    }

    #[test]
    fn flat_and_dark_crops_read_blurred_and_dark() {
        let grey = RgbImage::from_pixel(CROP, CROP, image::Rgb([128, 128, 128]));
        let (b, s) = brightness_sharpness(&grey);
        assert!((b - 50.2).abs() < 0.1, "{b}");
        assert_eq!(s, 0.0);
        let checks = RgbImage::from_fn(CROP, CROP, |x, y| {
            image::Rgb(if (x + y) % 2 == 0 { [200; 3] } else { [40; 3] })
        });
        let (b, s) = brightness_sharpness(&checks);
        assert!((b - 47.1).abs() < 0.5, "{b}");
        assert_eq!(s, 100.0);
        let black = RgbImage::new(CROP, CROP);
        assert_eq!(brightness_sharpness(&black), (0.0, 0.0));
    }
}

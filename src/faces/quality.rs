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
/// (scale-free: a darker or flatter copy of the same crop has nearly the same
/// r, until clipping or the [`FLAT_VARIANCE`] term matter), mapped linearly
/// from [`SHARP_FLOOR`] (0) to [`SHARP_CEIL`] (100). Fitted on tests/quality.rs:
/// unblurred faces read r 0.45–1.4, a Gaussian blur of σ 1 crop pixel 0.2–0.45.
const SHARP_FLOOR: f64 = 0.10;
const SHARP_CEIL: f64 = 1.20;
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
    let (brightness, sharpness) = stats(&region_luma(img, &alignment(face)));
    let mut pose = pose(&face.keypoints);
    pose.roll = wrap_degrees(pose.roll - turn as f32);
    Quality {
        brightness,
        sharpness,
        size: face.width().max(face.height()).max(0.0) * scale,
        pose,
    }
}

/// The similarity taking the face onto the ArcFace template.
fn alignment(face: &Face) -> Affine {
    super::embed::align_to(&TEMPLATE, face)
}

/// The whole aligned crop (what the default pack embeds), for looking at.
pub fn aligned_crop(img: &RgbImage, face: &Face) -> RgbImage {
    geometry::warp(img, &alignment(face), CROP)
}

/// Brightness and sharpness (0–100) of a [`CROP`]-sized aligned crop.
pub fn brightness_sharpness(crop: &RgbImage) -> (f32, f32) {
    let (x0, y0, x1, y1) = REGION;
    let w = crop.width() as usize;
    let raw = crop.as_raw();
    let luma = (y0 - 1..y1 + 1)
        .flat_map(|y| (x0 - 1..x1 + 1).map(move |x| (y as usize * w + x as usize) * 3))
        .map(|i| luma(raw[i] as f64, raw[i + 1] as f64, raw[i + 2] as f64))
        .collect::<Vec<_>>();
    stats(&luma)
}

fn luma(r: f64, g: f64, b: f64) -> f64 {
    0.299 * r + 0.587 * g + 0.114 * b
}

/// Luma of the crop's face [`REGION`] and a 1-px border (for the Laplacian),
/// row-major, sampled straight from the image as [`geometry::warp`] samples
/// it (bilinear, black outside): only the third of the crop that is read.
fn region_luma(img: &RgbImage, m: &Affine) -> Vec<f64> {
    let inv = m.invert().unwrap_or(Affine([0.0; 6]));
    let (w, h) = (img.width() as i64, img.height() as i64);
    let raw = img.as_raw();
    let px = |x: i64, y: i64| -> f64 {
        if x < 0 || y < 0 || x >= w || y >= h {
            return 0.0;
        }
        let i = ((y * w + x) * 3) as usize;
        luma(raw[i] as f64, raw[i + 1] as f64, raw[i + 2] as f64)
    };
    let (x0, y0, x1, y1) = REGION;
    let mut out = Vec::with_capacity(((x1 - x0 + 2) * (y1 - y0 + 2)) as usize);
    for v in y0 - 1..y1 + 1 {
        for u in x0 - 1..x1 + 1 {
            let [sx, sy] = inv.apply([u as f64, v as f64]);
            if !(sx > -1.0 && sy > -1.0 && sx < w as f64 && sy < h as f64) {
                out.push(0.0);
                continue;
            }
            let (xi, yi) = (sx.floor() as i64, sy.floor() as i64);
            let (fx, fy) = (sx - xi as f64, sy - yi as f64);
            let top = px(xi, yi) + (px(xi + 1, yi) - px(xi, yi)) * fx;
            let bottom = px(xi, yi + 1) + (px(xi + 1, yi + 1) - px(xi, yi + 1)) * fx;
            out.push(top + (bottom - top) * fy);
        }
    }
    out
}

/// Mean luma and the sharpness ratio of [`region_luma`]'s layout, on 0–100.
fn stats(luma: &[f64]) -> (f32, f32) {
    let (x0, y0, x1, y1) = REGION;
    let lw = (x1 - x0 + 2) as usize;
    let at = |x: usize, y: usize| luma[y * lw + x];
    let (mut n, mut sum, mut sum2) = (0.0, 0.0, 0.0);
    let (mut lsum, mut lsum2) = (0.0, 0.0);
    for y in 1..=(y1 - y0) as usize {
        for x in 1..=(x1 - x0) as usize {
            let v = at(x, y);
            n += 1.0;
            sum += v;
            sum2 += v * v;
            let lap = at(x - 1, y) + at(x + 1, y) + at(x, y - 1) + at(x, y + 1) - 4.0 * v;
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

/// What a level asks of a face (Rekognition's QualityFilter; the try page's
/// retake hints use [`HIGH`]). docs/quality.md gives the table and why.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Level {
    pub brightness: (f32, f32),
    pub min_sharpness: f32,
    pub min_size: f32,
    pub max_yaw: f32,
    pub max_pitch: f32,
}

pub const LOW: Level = Level {
    brightness: (8.0, 98.0),
    min_sharpness: 5.0,
    min_size: 30.0,
    max_yaw: 65.0,
    max_pitch: 50.0,
};
pub const MEDIUM: Level = Level {
    brightness: (16.0, 95.0),
    min_sharpness: 12.0,
    min_size: 50.0,
    max_yaw: 50.0,
    max_pitch: 40.0,
};
pub const HIGH: Level = Level {
    brightness: (25.0, 90.0),
    min_sharpness: 22.0,
    min_size: 80.0,
    max_yaw: 35.0,
    max_pitch: 30.0,
};

/// Why a face falls short of a level, as stable codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Problem {
    TooDark,
    TooBright,
    Blurred,
    TooSmall,
    Turned,
}

impl Quality {
    pub fn problems(&self, level: &Level) -> Vec<Problem> {
        let mut out = Vec::new();
        if self.brightness < level.brightness.0 {
            out.push(Problem::TooDark);
        }
        if self.brightness > level.brightness.1 {
            out.push(Problem::TooBright);
        }
        if self.sharpness < level.min_sharpness {
            out.push(Problem::Blurred);
        }
        if self.size < level.min_size {
            out.push(Problem::TooSmall);
        }
        if self.pose.yaw.abs() > level.max_yaw || self.pose.pitch.abs() > level.max_pitch {
            out.push(Problem::Turned);
        }
        out
    }

    pub fn passes(&self, level: &Level) -> bool {
        self.problems(level).is_empty()
    }
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
    let q: [[f64; 2]; 6] = std::array::from_fn(|i| q[i]);
    // Coarse to fine: 10° over the whole range, then 1° and 0.25° around the best.
    let mut best = (f64::INFINITY, 0.0, 0.0);
    for (step, reach, yaw_max, pitch_max) in [
        (10.0, 9, 90.0, 60.0),
        (1.0, 10, 90.0, 90.0),
        (0.25, 4, 90.0, 90.0),
    ] {
        let (y0, p0) = (best.1, best.2);
        for i in -reach..=reach {
            let yaw = y0 + i as f64 * step;
            if yaw.abs() > yaw_max {
                continue;
            }
            for j in -reach..=reach {
                let pitch = p0 + j as f64 * step;
                if pitch.abs() > pitch_max {
                    continue;
                }
                let e = fit_error(&q, yaw, pitch);
                if e < best.0 {
                    best = (e, yaw, pitch);
                }
            }
        }
    }
    Pose {
        roll: roll.to_degrees() as f32,
        yaw: best.1.clamp(-90.0, 90.0) as f32,
        pitch: best.2.clamp(-90.0, 90.0) as f32,
    }
}

/// Residual of the best scale and shift mapping the mean face, turned by
/// `yaw` then `pitch` (degrees), onto the keypoints `q` (roll removed, y up).
fn fit_error(q: &[[f64; 2]; 6], yaw: f64, pitch: f64) -> f64 {
    let (sy, cy) = yaw.to_radians().sin_cos();
    let (sp, cp) = pitch.to_radians().sin_cos();
    let proj: [[f64; 2]; 6] = HEAD.map(|[x, y, z]| {
        // Yaw about the vertical axis (positive: nose to the image's right),
        // then pitch about the horizontal one (positive: chin up, so the
        // face's front moves up).
        let (x1, z1) = (x * cy + z * sy, -x * sy + z * cy);
        let y1 = y * cp + z1 * sp;
        [x1, y1]
    });
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
    let explained = if den > 0.0 {
        (re * re + im * im) / den
    } else {
        0.0
    };
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
            [
                (400.0 + cr * u - sr * v) as f32,
                (300.0 + sr * u + cr * v) as f32,
            ]
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
            assert!(
                (p.pitch as f64 - pitch).abs() <= 0.5,
                "{p:?} vs pitch {pitch}"
            );
        }
    }

    #[test]
    fn the_region_sampled_from_the_image_is_the_crops() {
        let img = RgbImage::from_fn(300, 260, |x, y| {
            let v = ((x as f32 / 7.0).sin() * 60.0 + (y as f32 / 5.0).cos() * 50.0 + 128.0) as u8;
            image::Rgb([v, v / 2 + 40, 255 - v])
        });
        let face = Face {
            bbox: [100.0, 80.0, 200.0, 190.0],
            score: 0.9,
            keypoints: [
                [130.0, 120.0],
                [172.0, 124.0],
                [150.0, 145.0],
                [149.0, 168.0],
                [105.0, 125.0],
                [195.0, 130.0],
            ],
        };
        let (b, s) = brightness_sharpness(&aligned_crop(&img, &face));
        let q = measure(&img, &face, 2.0, 0);
        assert!((q.brightness - b).abs() < 0.3, "{q:?} vs {b}");
        assert!((q.sharpness - s).abs() < 2.0, "{q:?} vs {s}");
        assert_eq!(q.size, 220.0);
    }

    #[test]
    fn levels_name_what_falls_short() {
        let good = Quality {
            brightness: 55.0,
            sharpness: 60.0,
            size: 300.0,
            pose: Pose {
                roll: 20.0,
                yaw: 10.0,
                pitch: -5.0,
            },
        };
        for level in [LOW, MEDIUM, HIGH] {
            assert!(good.passes(&level));
        }
        let dark_blurred = Quality {
            brightness: 20.0,
            sharpness: 15.0,
            ..good
        };
        assert_eq!(
            dark_blurred.problems(&HIGH),
            [Problem::TooDark, Problem::Blurred]
        );
        assert!(dark_blurred.passes(&MEDIUM));
        let turned = Quality {
            pose: Pose {
                yaw: -40.0,
                ..good.pose
            },
            ..good
        };
        assert_eq!(turned.problems(&HIGH), [Problem::Turned]);
        assert!(turned.passes(&MEDIUM));
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

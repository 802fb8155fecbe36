//! Pixel geometry: resizing (area / bilinear, as OpenCV), padded crops,
//! rotations, the similarity transform onto an embedder's template and the
//! bilinear warp that produces the aligned face crop.
use image::{Rgb, RgbImage};

/// Area averaging when shrinking, bilinear when enlarging (OpenCV's
/// INTER_AREA / INTER_LINEAR choice, which the models were validated with).
pub fn resize(img: &RgbImage, width: u32, height: u32) -> RgbImage {
    let (width, height) = (width.max(1), height.max(1));
    if (width, height) == img.dimensions() {
        return img.clone();
    }
    if width < img.width() && height < img.height() {
        return area_resize(img, width, height);
    }
    bilinear_resize(img, width, height)
}

/// [`resize`] of the `ww`×`wh` window at (x0, y0), black where it leaves the
/// image: shrinking reads the image in place ([`area_resize_window`]); an
/// enlarged window is small, and is cut out first.
pub fn resize_window(
    img: &RgbImage,
    (x0, y0, ww, wh): (i64, i64, u32, u32),
    width: u32,
    height: u32,
) -> RgbImage {
    if (x0, y0, ww, wh) == (0, 0, img.width(), img.height()) {
        resize(img, width, height)
    } else if width < ww && height < wh {
        area_resize_window(img, x0, y0, ww, wh, width, height)
    } else {
        resize(&crop_padded(img, x0, y0, ww, wh), width, height)
    }
}

/// Bilinear interpolation with half-pixel centres and edge clamping, as
/// OpenCV's INTER_LINEAR.
pub fn bilinear_resize(img: &RgbImage, width: u32, height: u32) -> RgbImage {
    let taps = |src: u32, dst: u32| -> Vec<(usize, usize, f32)> {
        let scale = src as f64 / dst as f64;
        (0..dst)
            .map(|i| {
                let s = ((i as f64 + 0.5) * scale - 0.5).max(0.0);
                let i0 = (s.floor() as usize).min(src as usize - 1);
                let i1 = (i0 + 1).min(src as usize - 1);
                (i0, i1, (s - i0 as f64).clamp(0.0, 1.0) as f32)
            })
            .collect()
    };
    let (xs, ys) = (taps(img.width(), width), taps(img.height(), height));
    let (sw, src) = (img.width() as usize, img.as_raw());
    let mut out = Vec::with_capacity(width as usize * height as usize * 3);
    for &(y0, y1, fy) in &ys {
        for &(x0, x1, fx) in &xs {
            for c in 0..3 {
                let p = |x: usize, y: usize| src[(y * sw + x) * 3 + c] as f32;
                let top = p(x0, y0) + (p(x1, y0) - p(x0, y0)) * fx;
                let bottom = p(x0, y1) + (p(x1, y1) - p(x0, y1)) * fx;
                out.push((top + (bottom - top) * fy).round().clamp(0.0, 255.0) as u8);
            }
        }
    }
    RgbImage::from_raw(width, height, out).expect("sized above")
}

/// For each output index, the source pixels it covers and by how much.
fn area_weights(src: u32, dst: u32) -> Vec<(usize, Vec<f32>)> {
    let scale = src as f64 / dst as f64;
    (0..dst)
        .map(|i| {
            let (lo, hi) = (i as f64 * scale, ((i + 1) as f64 * scale).min(src as f64));
            let first = lo.floor() as usize;
            let last = (hi.ceil() as usize).min(src as usize);
            let w = (first..last)
                .map(|j| (((j + 1) as f64).min(hi) - (j as f64).max(lo)) as f32 / scale as f32)
                .collect();
            (first, w)
        })
        .collect()
}

/// Exact area averaging (each output pixel is the mean of the source area it
/// covers, fractional pixels weighted), separable: columns of each output row
/// first (whole source rows weighted and summed, which vectorises), then
/// along the one reduced row. Row by row, so the only buffers are one row of
/// sums and the output.
pub fn area_resize(img: &RgbImage, width: u32, height: u32) -> RgbImage {
    area_resize_window(img, 0, 0, img.width(), img.height(), width, height)
}

/// [`area_resize`] of the `ww`×`wh` window at (x0, y0), black where it leaves
/// the image, without cutting the window out first: the same sums as
/// resizing [`crop_padded`]'s copy (its black pixels only ever add zeros),
/// minus the copy, which for a face's second detection pass was megabytes.
pub fn area_resize_window(
    img: &RgbImage,
    x0: i64,
    y0: i64,
    ww: u32,
    wh: u32,
    width: u32,
    height: u32,
) -> RgbImage {
    let (iw, ih) = (img.width() as i64, img.height() as i64);
    // The image columns the window covers; the rest of a row is black.
    let (cx0, cx1) = (x0.clamp(0, iw), (x0 + ww as i64).clamp(0, iw));
    let cols = (cx1 - cx0) as usize;
    let (xw, yw) = (area_weights(ww, width), area_weights(wh, height));
    let dw = width as usize;
    let src = img.as_raw();
    let mut out = vec![0u8; dw * 3 * height as usize];
    let mut acc = vec![0f32; cols * 3];
    for (y, (first, w)) in yw.iter().enumerate() {
        acc.iter_mut().for_each(|a| *a = 0.0);
        for (k, &wk) in w.iter().enumerate() {
            let sy = y0 + (first + k) as i64;
            if !(0..ih).contains(&sy) {
                continue;
            }
            let start = (sy * iw + cx0) as usize * 3;
            let line = &src[start..start + cols * 3];
            for (a, &p) in acc.iter_mut().zip(line) {
                *a += p as f32 * wk;
            }
        }
        let row = &mut out[y * dw * 3..(y + 1) * dw * 3];
        for (x, (first, w)) in xw.iter().enumerate() {
            let mut px = [0f32; 3];
            for (k, &wk) in w.iter().enumerate() {
                let sx = x0 + (first + k) as i64;
                if !(cx0..cx1).contains(&sx) {
                    continue;
                }
                let at = (sx - cx0) as usize * 3;
                let a = &acc[at..at + 3];
                px[0] += a[0] * wk;
                px[1] += a[1] * wk;
                px[2] += a[2] * wk;
            }
            for c in 0..3 {
                row[x * 3 + c] = round_u8(px[c]);
            }
        }
    }
    RgbImage::from_raw(width, height, out).expect("sized above")
}

/// `v.round().clamp(0, 255)` for the non-negative sums above, without the
/// libm call `round` is on baseline x86-64 (it was 1.3 % of a compare).
/// Exact: for v ≥ 0.5, v + 0.5 is exact in f32; below, it can round up.
#[inline]
fn round_u8(v: f32) -> u8 {
    if v < 0.5 { 0 } else { (v + 0.5) as u8 }
}

/// The `w`×`h` window at (x0, y0), zero (black) where it leaves the image.
pub fn crop_padded(img: &RgbImage, x0: i64, y0: i64, w: u32, h: u32) -> RgbImage {
    let mut out = RgbImage::new(w, h);
    let (iw, ih) = (img.width() as i64, img.height() as i64);
    let (sx0, sy0) = (x0.max(0), y0.max(0));
    let (sx1, sy1) = ((x0 + w as i64).min(iw), (y0 + h as i64).min(ih));
    if sx1 <= sx0 || sy1 <= sy0 {
        return out;
    }
    let row = ((sx1 - sx0) * 3) as usize;
    for y in sy0..sy1 {
        let src = ((y * iw + sx0) * 3) as usize;
        let dst = (((y - y0) * w as i64 + (sx0 - x0)) * 3) as usize;
        out.as_mut()[dst..dst + row].copy_from_slice(&img.as_raw()[src..src + row]);
    }
    out
}

/// A 2×3 affine map `[a, b, c; d, e, f]`: (x, y) → (a x + b y + c, d x + e y + f).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Affine(pub [f64; 6]);

impl Affine {
    pub fn apply(&self, p: [f64; 2]) -> [f64; 2] {
        let m = &self.0;
        [
            m[0] * p[0] + m[1] * p[1] + m[2],
            m[3] * p[0] + m[4] * p[1] + m[5],
        ]
    }

    /// Pixels of the destination per pixel of the source.
    pub fn scale(&self) -> f64 {
        self.0[0].hypot(self.0[3])
    }

    pub fn invert(&self) -> Option<Affine> {
        let [a, b, c, d, e, f] = self.0;
        let det = a * e - b * d;
        if det.abs() < 1e-12 {
            return None;
        }
        let (ia, ib, id, ie) = (e / det, -b / det, -d / det, a / det);
        Some(Affine([
            ia,
            ib,
            -(ia * c + ib * f),
            id,
            ie,
            -(id * c + ie * f),
        ]))
    }

    /// `self` after `first`.
    pub fn then_after(&self, first: &Affine) -> Affine {
        let [a, b, c, d, e, f] = self.0;
        let [p, q, r, s, t, u] = first.0;
        Affine([
            a * p + b * s,
            a * q + b * t,
            a * r + b * u + c,
            d * p + e * s,
            d * q + e * t,
            d * r + e * u + f,
        ])
    }
}

/// Least-squares similarity (rotation, uniform scale, translation; no
/// reflection) mapping `src` onto `dst` — Umeyama's solution, which in 2-D
/// is the complex-number regression `dst ≈ a·src + t`.
pub fn similarity(src: &[[f64; 2]], dst: &[[f64; 2]]) -> Affine {
    let n = src.len().min(dst.len()) as f64;
    let mean = |pts: &[[f64; 2]]| {
        let s = pts
            .iter()
            .fold([0.0, 0.0], |acc, p| [acc[0] + p[0], acc[1] + p[1]]);
        [s[0] / n, s[1] / n]
    };
    let (ms, md) = (mean(src), mean(dst));
    let (mut re, mut im, mut norm) = (0.0, 0.0, 0.0);
    for (s, d) in src.iter().zip(dst) {
        let (sx, sy) = (s[0] - ms[0], s[1] - ms[1]);
        let (dx, dy) = (d[0] - md[0], d[1] - md[1]);
        // conj(s) * d
        re += sx * dx + sy * dy;
        im += sx * dy - sy * dx;
        norm += sx * sx + sy * sy;
    }
    let (a, b) = if norm > 0.0 {
        (re / norm, im / norm)
    } else {
        (1.0, 0.0)
    };
    let tx = md[0] - (a * ms[0] - b * ms[1]);
    let ty = md[1] - (b * ms[0] + a * ms[1]);
    Affine([a, -b, tx, b, a, ty])
}

/// Bilinear warp of `img` by `m` (image → output) into a `size`×`size` crop;
/// pixel centres at integer coordinates and black outside, as OpenCV's
/// `warpAffine(INTER_LINEAR, BORDER_CONSTANT)`.
pub fn warp(img: &RgbImage, m: &Affine, size: u32) -> RgbImage {
    let inv = m.invert().unwrap_or(Affine([0.0; 6]));
    let (w, h) = (img.width() as i64, img.height() as i64);
    let raw = img.as_raw();
    let px = |x: i64, y: i64| -> [f32; 3] {
        if x < 0 || y < 0 || x >= w || y >= h {
            return [0.0; 3];
        }
        let i = ((y * w + x) * 3) as usize;
        [raw[i] as f32, raw[i + 1] as f32, raw[i + 2] as f32]
    };
    let mut out = RgbImage::new(size, size);
    for v in 0..size {
        for u in 0..size {
            let [sx, sy] = inv.apply([u as f64, v as f64]);
            if !(sx > -1.0 && sy > -1.0 && sx < w as f64 && sy < h as f64) {
                continue;
            }
            let (x0, y0) = (sx.floor() as i64, sy.floor() as i64);
            let (fx, fy) = ((sx - x0 as f64) as f32, (sy - y0 as f64) as f32);
            let (p00, p10, p01, p11) = (
                px(x0, y0),
                px(x0 + 1, y0),
                px(x0, y0 + 1),
                px(x0 + 1, y0 + 1),
            );
            let mut c = [0u8; 3];
            for k in 0..3 {
                let top = p00[k] + (p10[k] - p00[k]) * fx;
                let bottom = p01[k] + (p11[k] - p01[k]) * fx;
                c[k] = (top + (bottom - top) * fy).round().clamp(0.0, 255.0) as u8;
            }
            out.put_pixel(u, v, Rgb(c));
        }
    }
    out
}

/// Like [`warp`], but when the face is much larger than the crop the covered
/// region is first area-downscaled, so bilinear sampling does not alias
/// (what dlib's pyramid does for its chips).
pub fn warp_antialiased(img: &RgbImage, m: &Affine, size: u32) -> RgbImage {
    let s = 1.0 / m.scale();
    let Some(inv) = m.invert() else {
        return warp(img, m, size);
    };
    if s <= 1.5 {
        return warp(img, m, size);
    }
    let last = (size - 1) as f64;
    let corners = [[0.0, 0.0], [last, 0.0], [0.0, last], [last, last]].map(|p| inv.apply(p));
    let (w, h) = (img.width() as f64, img.height() as f64);
    let min_x = corners.iter().map(|c| c[0]).fold(f64::INFINITY, f64::min);
    let max_x = corners
        .iter()
        .map(|c| c[0])
        .fold(f64::NEG_INFINITY, f64::max);
    let min_y = corners.iter().map(|c| c[1]).fold(f64::INFINITY, f64::min);
    let max_y = corners
        .iter()
        .map(|c| c[1])
        .fold(f64::NEG_INFINITY, f64::max);
    let x0 = (min_x.floor() - 2.0 * s).max(0.0) as i64;
    let x1 = (max_x.ceil() + 2.0 * s + 1.0).min(w) as i64;
    let y0 = (min_y.floor() - 2.0 * s).max(0.0) as i64;
    let y1 = (max_y.ceil() + 2.0 * s + 1.0).min(h) as i64;
    if x1 - x0 < 2 || y1 - y0 < 2 {
        return warp(img, m, size);
    }
    let (rw, rh) = ((x1 - x0) as u32, (y1 - y0) as u32);
    let nw = ((rw as f64 / s).round() as u32).max(1);
    let nh = ((rh as f64 / s).round() as u32).max(1);
    let small = resize(&crop_padded(img, x0, y0, rw, rh), nw, nh);
    // small pixel (j, i) has its centre at image (x0 + (j + 0.5) sx - 0.5, ...)
    let (sx, sy) = (rw as f64 / nw as f64, rh as f64 / nh as f64);
    let to_image = Affine([
        sx,
        0.0,
        x0 as f64 + 0.5 * sx - 0.5,
        0.0,
        sy,
        y0 as f64 + 0.5 * sy - 0.5,
    ]);
    warp(&small, &m.then_after(&to_image), size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn similarity_recovers_a_known_transform() {
        let truth = Affine([0.8 * 0.6, -0.8 * 0.8, 5.0, 0.8 * 0.8, 0.8 * 0.6, -3.0]);
        let src = [[10.0, 20.0], [40.0, 22.0], [25.0, 35.0], [26.0, 50.0]];
        let dst: Vec<[f64; 2]> = src.iter().map(|p| truth.apply(*p)).collect();
        let m = similarity(&src, &dst);
        for (a, b) in m.0.iter().zip(truth.0) {
            assert!((a - b).abs() < 1e-9, "{m:?} vs {truth:?}");
        }
        assert!((m.scale() - 0.8).abs() < 1e-9);
        let back = m.invert().unwrap().then_after(&m);
        assert!((back.0[0] - 1.0).abs() < 1e-9 && back.0[1].abs() < 1e-9 && back.0[2].abs() < 1e-9);
    }

    #[test]
    fn warp_identity_copies_and_pads_black() {
        let img = RgbImage::from_fn(8, 8, |x, y| Rgb([(x * 10) as u8, (y * 10) as u8, 7]));
        let out = warp(&img, &Affine([1.0, 0.0, 0.0, 0.0, 1.0, 0.0]), 10);
        assert_eq!(out.get_pixel(3, 4), img.get_pixel(3, 4));
        assert_eq!(out.get_pixel(9, 9).0, [0, 0, 0]);
        let shifted = warp(&img, &Affine([1.0, 0.0, 2.0, 0.0, 1.0, 0.0]), 8);
        assert_eq!(shifted.get_pixel(5, 1), img.get_pixel(3, 1));
    }

    #[test]
    fn crop_padded_fills_outside_with_black() {
        let img = RgbImage::from_pixel(4, 4, Rgb([9, 9, 9]));
        let c = crop_padded(&img, -2, 2, 4, 4);
        assert_eq!(c.get_pixel(0, 0).0, [0, 0, 0]);
        assert_eq!(c.get_pixel(2, 0).0, [9, 9, 9]);
        assert_eq!(c.get_pixel(2, 2).0, [0, 0, 0]);
    }

    #[test]
    fn area_resize_averages_covered_pixels() {
        let img = RgbImage::from_fn(4, 2, |x, _| Rgb([(x * 40) as u8, 0, 0]));
        let half = area_resize(&img, 2, 1);
        assert_eq!(half.get_pixel(0, 0).0[0], 20);
        assert_eq!(half.get_pixel(1, 0).0[0], 100);
        // 3 → 2: output 0 covers pixel 0 fully and half of pixel 1.
        let img = RgbImage::from_fn(3, 1, |x, _| Rgb([[0u8, 90, 180][x as usize], 0, 0]));
        let two = area_resize(&img, 2, 1);
        assert_eq!(two.get_pixel(0, 0).0[0], 30);
        assert_eq!(two.get_pixel(1, 0).0[0], 150);
    }

    #[test]
    fn rounding_matches_round() {
        for v in [
            0.0f32, 0.25, 0.4999999, 0.5, 0.5000001, 1.4999999, 1.5, 2.5, 127.49999, 127.5, 254.5,
            254.99, 255.0, 255.4, 255.5, 300.0,
        ] {
            assert_eq!(round_u8(v), v.round().clamp(0.0, 255.0) as u8, "{v}");
        }
    }

    #[test]
    fn window_resize_equals_resizing_the_padded_crop() {
        let img = RgbImage::from_fn(97, 61, |x, y| {
            Rgb([(x * 7 + y * 3) as u8, (x * y) as u8, (255 - x - y) as u8])
        });
        // Inside, across each edge, across a corner, and larger than the image.
        for (x0, y0, w, h) in [
            (10, 5, 60, 40),
            (-20, 10, 70, 30),
            (50, -9, 80, 50),
            (-13, -17, 140, 100),
        ] {
            let want = area_resize(&crop_padded(&img, x0, y0, w, h), 23, 17);
            let got = area_resize_window(&img, x0, y0, w, h, 23, 17);
            assert_eq!(got, want, "window ({x0}, {y0}) {w}x{h}");
        }
    }

    #[test]
    fn area_resize_matches_the_two_dimensional_mean() {
        let img = RgbImage::from_fn(97, 61, |x, y| {
            Rgb([(x * 7 + y * 3) as u8, (x * y) as u8, (255 - x - y) as u8])
        });
        let (w, h) = (23u32, 17u32);
        let out = area_resize(&img, w, h);
        let (sx, sy) = (97.0 / w as f64, 61.0 / h as f64);
        for (u, v) in [(0, 0), (5, 9), (22, 16), (11, 3)] {
            let (x0, x1, y0, y1) = (
                u as f64 * sx,
                (u + 1) as f64 * sx,
                v as f64 * sy,
                (v + 1) as f64 * sy,
            );
            let mut want = [0f64; 3];
            for y in y0.floor() as u32..(y1.ceil() as u32).min(61) {
                let wy = ((y + 1) as f64).min(y1) - (y as f64).max(y0);
                for x in x0.floor() as u32..(x1.ceil() as u32).min(97) {
                    let wx = ((x + 1) as f64).min(x1) - (x as f64).max(x0);
                    for (w, p) in want.iter_mut().zip(img.get_pixel(x, y).0) {
                        *w += p as f64 * wx * wy / (sx * sy);
                    }
                }
            }
            for (c, (got, want)) in out.get_pixel(u, v).0.iter().zip(want).enumerate() {
                let got = *got as f64;
                assert!(
                    (got - want).abs() <= 0.5 + 1e-3,
                    "({u}, {v}) channel {c}: {got} vs {want}"
                );
            }
        }
    }

    #[test]
    fn resize_keeps_flat_colour() {
        let img = RgbImage::from_pixel(100, 60, Rgb([50, 100, 150]));
        let small = resize(&img, 25, 15);
        assert_eq!(small.dimensions(), (25, 15));
        assert_eq!(small.get_pixel(10, 7).0, [50, 100, 150]);
        let big = resize(&img, 200, 120);
        assert_eq!(big.get_pixel(100, 60).0, [50, 100, 150]);
    }
}

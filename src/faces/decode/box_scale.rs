//! Box averaging of 8-bit rows into RGB at 1/2, 1/4 or 1/8 (1: a plain
//! copy): how PNGs, while streaming, reach the same reduced scale as a
//! JPEG's DCT decode, so detection and everything after it see a small image.
use image::RgbImage;

use super::DecodeError;

/// Averages `denom`×`denom` blocks of 8-bit rows into RGB (alpha dropped,
/// grey repeated, as `to_rgb8` does). Edge blocks average what they cover.
pub struct BoxScaler {
    width: u32,
    height: u32,
    denom: u32,
    channels: usize,
    out_w: u32,
    out_h: u32,
    sums: Vec<u32>,
    rows_in_block: u32,
    rows_seen: u32,
    out: Vec<u8>,
}

impl BoxScaler {
    pub fn new(width: u32, height: u32, denom: u32, channels: usize) -> Self {
        let out_w = width.div_ceil(denom);
        let out_h = height.div_ceil(denom);
        Self {
            width,
            height,
            denom,
            channels,
            out_w,
            out_h,
            sums: vec![0; out_w as usize * 3],
            rows_in_block: 0,
            rows_seen: 0,
            out: Vec::with_capacity(out_w as usize * out_h as usize * 3),
        }
    }

    pub fn output_bytes(&self) -> u64 {
        self.out_w as u64 * self.out_h as u64 * 3
    }

    pub fn push_row(&mut self, row: &[u8]) {
        if self.rows_seen >= self.height {
            return;
        }
        let (c, d) = (self.channels, self.denom as usize);
        for (x, px) in row.chunks_exact(c).take(self.width as usize).enumerate() {
            let rgb = if c < 3 {
                [px[0]; 3]
            } else {
                [px[0], px[1], px[2]]
            };
            let o = (x / d) * 3;
            for (sum, v) in self.sums[o..o + 3].iter_mut().zip(rgb) {
                *sum += v as u32;
            }
        }
        self.rows_seen += 1;
        self.rows_in_block += 1;
        if self.rows_in_block == self.denom || self.rows_seen == self.height {
            self.flush();
        }
    }

    fn flush(&mut self) {
        let d = self.denom;
        for ox in 0..self.out_w {
            let cols = d.min(self.width - ox * d);
            let n = cols * self.rows_in_block;
            for i in 0..3 {
                let s = &mut self.sums[ox as usize * 3 + i];
                self.out.push(((*s + n / 2) / n) as u8);
                *s = 0;
            }
        }
        self.rows_in_block = 0;
    }

    pub fn finish(self) -> Result<RgbImage, DecodeError> {
        if self.rows_seen < self.height {
            return Err(DecodeError::Corrupt(format!(
                "image ended after {} of {} rows",
                self.rows_seen, self.height
            )));
        }
        RgbImage::from_raw(self.out_w, self.out_h, self.out)
            .ok_or_else(|| DecodeError::Corrupt("image decoded to a short buffer".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn odd_edges_average_what_they_cover() {
        let mut s = BoxScaler::new(3, 3, 2, 1);
        for row in [[10u8, 20, 30], [10, 20, 30], [50, 60, 70]] {
            s.push_row(&row);
        }
        let img = s.finish().unwrap();
        assert_eq!(img.dimensions(), (2, 2));
        assert_eq!(img.get_pixel(0, 0).0[0], 15);
        assert_eq!(img.get_pixel(1, 0).0[0], 30);
        assert_eq!(img.get_pixel(0, 1).0[0], 55);
        assert_eq!(img.get_pixel(1, 1).0[0], 70);
    }
}

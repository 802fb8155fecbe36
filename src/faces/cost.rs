//! What one job is expected to cost, in estimated CPU microseconds, from the
//! image header alone: the weight the engine queue shares work by
//! ([`super::fair_queue`]). Only the order of service depends on it; limits
//! are enforced by the decoder itself.
//!
//! Figures measured with `facecompare bench` on the 2-core development
//! machine (docs/performance.md, "Decode cost by format"): detection ~20 ms
//! on the reduced image, embedding ~10 ms, age ~12 ms; decode per stored
//! megapixel: JPEG ~2–3 ms (DCT-domain reduced scale), PNG ~17–28 ms
//! (every row inflated, then averaged), WebP ~28 ms (always full
//! resolution).
use super::{
    decode::{Format, header},
    pipeline::Depth,
};

/// Detection on a reduced image (faces found at the first orientation).
pub const DETECT_US: u64 = 20_000;
/// Embedding and quality of the faces found.
pub const EMBED_US: u64 = 10_000;
/// A compare's age pass on kept faces (no decode).
pub const AGE_PASS_US: u64 = 12_000;

/// Decode cost per stored megapixel, by format.
pub const fn decode_us_per_megapixel(format: Format) -> u64 {
    match format {
        Format::Jpeg => 3_000,
        Format::Png => 20_000,
        Format::WebP => 28_000,
    }
}

/// One image through the pipeline to `depth`.
pub fn image(bytes: &[u8], depth: Depth) -> u64 {
    let stages = match depth {
        Depth::Boxes => DETECT_US,
        Depth::Embeddings | Depth::Compare => DETECT_US + EMBED_US,
    };
    let decode = header::size(bytes).map_or(0, |(format, w, h)| {
        (w as u64 * h as u64).saturating_mul(decode_us_per_megapixel(format)) / 1_000_000
    });
    stages + decode
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{ImageFormat, RgbImage};
    use std::io::Cursor;

    fn encoded(w: u32, h: u32, format: ImageFormat) -> Vec<u8> {
        let mut out = Vec::new();
        RgbImage::new(w, h)
            .write_to(&mut Cursor::new(&mut out), format)
            .unwrap();
        out
    }

    #[test]
    fn a_large_webp_weighs_more_than_a_jpeg_of_the_same_size() {
        let jpeg = image(&encoded(2000, 2000, ImageFormat::Jpeg), Depth::Boxes);
        let webp = image(&encoded(2000, 2000, ImageFormat::WebP), Depth::Boxes);
        assert_eq!(jpeg, DETECT_US + 12_000);
        assert_eq!(webp, DETECT_US + 112_000);
        assert!(image(b"not an image", Depth::Embeddings) == DETECT_US + EMBED_US);
    }
}

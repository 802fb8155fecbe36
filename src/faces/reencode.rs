//! Test and bench images at a chosen size: one helper for `facecompare bench
//! --megapixels`, the HTTP bench (`examples/bench_http.rs`) and the suites.

use image::{DynamicImage, imageops::FilterType};

/// `img` resized (triangle filter) to about `megapixels` MP, aspect ratio
/// kept, as a quality-90 baseline JPEG.
pub fn scaled_jpeg(img: &DynamicImage, megapixels: f64) -> image::ImageResult<Vec<u8>> {
    let scale = (megapixels * 1e6 / (img.width() as f64 * img.height() as f64)).sqrt();
    let (w, h) = (
        ((img.width() as f64 * scale) as u32).max(1),
        ((img.height() as f64 * scale) as u32).max(1),
    );
    let resized = img.resize_exact(w, h, FilterType::Triangle).to_rgb8();
    let mut out = Vec::new();
    resized.write_with_encoder(image::codecs::jpeg::JpegEncoder::new_with_quality(
        &mut out, 90,
    ))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lands_near_the_asked_size() {
        let img = DynamicImage::ImageRgb8(image::RgbImage::new(400, 300));
        let bytes = scaled_jpeg(&img, 0.03).unwrap();
        let out = image::load_from_memory(&bytes).unwrap();
        assert_eq!((out.width(), out.height()), (200, 150));
    }
}

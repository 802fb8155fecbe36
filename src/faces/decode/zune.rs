//! The full-resolution JPEG path: zune-jpeg (SIMD IDCT, upsampling and
//! colour conversion, one thread), for images small enough to be analysed at
//! full resolution (long side under twice the working side).
//!
//! Why: at full scale jpeg-decoder starts a thread per colour component for
//! every image and its progressive path is slower; zune-jpeg decodes the
//! 1536×1152 progressive phone photo of the speed issue in about a quarter
//! less time, on one thread. Larger images keep jpeg-decoder's reduced-scale
//! IDCT: zune-jpeg has no scaled decode, and full resolution plus a box
//! reduction measured slower (and would hold the full-size pixels, which is
//! what the budget exists to avoid for 64 MP).
use image::{RgbImage, metadata::Orientation};
use zune_jpeg::{
    JpegDecoder,
    zune_core::{bytestream::ZCursor, colorspace::ColorSpace, options::DecoderOptions},
};

use super::{
    DecodeError, Decoded, MAX_DECODE_BYTES, MAX_SIDE, check_size,
    jpeg::{MAX_SCANS, Survey},
    orient,
};

/// Bytes this path holds for a surveyed JPEG: a progressive file's
/// coefficients (2 bytes per sample), the component planes and the RGB image.
pub fn decoded_bytes(s: &Survey) -> u64 {
    let pixels = s.width as u64 * s.height as u64;
    let samples = (pixels as f64 * s.samples_per_pixel) as u64;
    let coefficients = if s.progressive { samples * 2 } else { 0 };
    coefficients + samples + pixels * 3
}

/// Whether this path takes the image: decoded at full scale, colour or grey
/// (CMYK stays with jpeg-decoder, which undoes Adobe's inversion) and within
/// the budget.
pub fn fits(s: &Survey, components: u8, denom: u32) -> bool {
    denom == 1 && matches!(components, 1 | 3) && decoded_bytes(s) <= MAX_DECODE_BYTES
}

/// Decodes at full resolution; `None` when the decoder reads another frame
/// size or component count than the survey budgeted for (a file with several
/// frame headers): nothing is decoded then, and the caller takes the path
/// that budgets for itself.
pub fn decode(bytes: &[u8], s: &Survey) -> Result<Option<Decoded>, DecodeError> {
    let corrupt = |e: zune_jpeg::errors::DecodeErrors| DecodeError::Corrupt(e.to_string());
    let options = DecoderOptions::default()
        .set_max_width(MAX_SIDE as usize)
        .set_max_height(MAX_SIDE as usize)
        .jpeg_set_max_scans(MAX_SCANS)
        .jpeg_set_out_colorspace(ColorSpace::RGB)
        // A truncated or corrupt stream is an error, not grey filler (zune's
        // browser-like default): jpeg-decoder then judges the file, as before.
        .set_strict_mode(true);
    let mut dec = JpegDecoder::new_with_options(ZCursor::new(bytes), options);
    dec.decode_headers().map_err(corrupt)?;
    let (w, h) = dec
        .dimensions()
        .map(|(w, h)| (w as u32, h as u32))
        .ok_or_else(|| DecodeError::Corrupt("missing JPEG header".into()))?;
    check_size(w as u64, h as u64)?;
    let components = dec.info().map(|i| i.components).unwrap_or(0);
    if (w, h) != (s.width, s.height) || components != s.components || !fits(s, components, 1) {
        return Ok(None);
    }
    let orientation = dec
        .exif()
        .and_then(|e| Orientation::from_exif_chunk(e))
        .unwrap_or(Orientation::NoTransforms);
    let pixels = dec.decode().map_err(corrupt)?;
    if pixels.len() != w as usize * h as usize * 3 {
        return Err(DecodeError::Corrupt(
            "JPEG decoded to a short buffer".into(),
        ));
    }
    let image = RgbImage::from_raw(w, h, pixels)
        .ok_or_else(|| DecodeError::Corrupt("JPEG decoded to a short buffer".into()))?;
    Ok(Some(Decoded {
        image: orient(image, orientation),
        original_size: (w, h),
        scale_denominator: 1,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{ImageFormat, Rgb};
    use std::io::Cursor;

    fn encode(img: image::DynamicImage) -> Vec<u8> {
        let mut out = Vec::new();
        img.write_to(&mut Cursor::new(&mut out), ImageFormat::Jpeg)
            .unwrap();
        out
    }

    #[test]
    fn decodes_colour_and_grey_close_to_jpeg_decoder() {
        let colour = RgbImage::from_fn(300, 200, |x, y| {
            Rgb([(x % 256) as u8, (y % 256) as u8, ((x + y) / 3) as u8])
        });
        let grey =
            image::GrayImage::from_fn(300, 200, |x, y| image::Luma([((x + 2 * y) % 256) as u8]));
        for bytes in [encode(colour.into()), encode(grey.into())] {
            let s = super::super::jpeg::survey(&bytes).unwrap();
            let full = decode(&bytes, &s).unwrap().unwrap().image;
            let reference = super::super::jpeg::decode_scaled(&bytes, s, 0)
                .unwrap()
                .image;
            assert_eq!(full.dimensions(), reference.dimensions());
            let worst = full
                .as_raw()
                .iter()
                .zip(reference.as_raw())
                .map(|(a, b)| a.abs_diff(*b))
                .max()
                .unwrap();
            assert!(
                worst <= 8,
                "zune and jpeg-decoder differ by {worst} grey levels"
            );
        }
    }

    #[test]
    fn a_truncated_stream_is_an_error_not_grey_filler() {
        let img = RgbImage::from_fn(300, 200, |x, y| Rgb([(x % 256) as u8, (y % 256) as u8, 7]));
        let bytes = encode(img.into());
        let cut = &bytes[..bytes.len() / 3];
        let s = super::super::jpeg::survey(cut).unwrap();
        assert!(decode(cut, &s).is_err());
        // And the decoder as a whole refuses it too (jpeg-decoder's verdict).
        assert!(super::super::decode_with(cut, 0).is_err());
    }

    #[test]
    fn only_full_scale_colour_or_grey_within_budget() {
        let s = Survey {
            width: 8000,
            height: 8000,
            progressive: false,
            scans: 1,
            markers: 6,
            samples_per_pixel: 1.5,
            components: 3,
        };
        // 64 MP at full resolution is over the budget: the reduced-scale path decodes it.
        assert!(!fits(&s, 3, 1));
        let phone = Survey {
            width: 1536,
            height: 1152,
            progressive: true,
            ..s
        };
        assert!(fits(&phone, 3, 1));
        assert!(!fits(&phone, 3, 2), "reduced scale stays with jpeg-decoder");
        assert!(!fits(&phone, 4, 1), "CMYK stays with jpeg-decoder");
    }
}

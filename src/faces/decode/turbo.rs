//! libjpeg-turbo (through the `turbojpeg` crate, built from its vendored
//! sources with SIMD): the decode path of colour and grey JPEGs, at the
//! reduced DCT scale the working side allows.
//!
//! Why: decode was the largest stage of a compare on phone photos. On the
//! 1382×1868 baseline photo of the speed issue (2.3 MB, decoded at 1/2)
//! libjpeg-turbo takes about three quarters of jpeg-decoder's time; its
//! scaled IDCT also serves progressive files, which jpeg-decoder decodes at
//! full cost. What remains is entropy decoding, which no scale avoids.
//! CMYK stays with jpeg-decoder (libjpeg-turbo hands out raw ink values).
use image::RgbImage;
use turbojpeg::{Colorspace, Decompressor, Image, PixelFormat, ScalingFactor};

use super::{
    DecodeError, Decoded,
    jpeg::{MAX_SCANS, Survey},
    orient,
};

/// Decodes at 1/`denom` scale (1, 2, 4 or 8); `None` when the header
/// libjpeg-turbo reads is not the frame the survey budgeted for (a file with
/// several frame headers) or is CMYK: nothing is decoded then, and the caller
/// takes the path that budgets for itself.
pub fn decode(bytes: &[u8], s: &Survey, denom: u32) -> Result<Option<Decoded>, DecodeError> {
    let corrupt = |e: turbojpeg::Error| DecodeError::Corrupt(e.to_string());
    let mut dec = Decompressor::new().map_err(corrupt)?;
    let header = dec.read_header(bytes).map_err(corrupt)?;
    if (header.width, header.height) != (s.width as usize, s.height as usize)
        || matches!(header.colorspace, Colorspace::CMYK | Colorspace::YCCK)
    {
        return Ok(None);
    }
    let scale = ScalingFactor::new(1, denom as usize);
    dec.set_scaling_factor(scale).map_err(corrupt)?;
    // The survey refused more scans already; this keeps the decoder to it.
    dec.set_scan_limit(MAX_SCANS as u32).map_err(corrupt)?;
    let out = header.scaled(scale);
    let (w, h) = (out.width, out.height);
    let mut pixels = vec![0u8; w * h * 3];
    let image = Image {
        pixels: pixels.as_mut_slice(),
        width: w,
        pitch: w * 3,
        height: h,
        format: PixelFormat::RGB,
    };
    dec.decompress(bytes, image).map_err(corrupt)?;
    let image = RgbImage::from_raw(w as u32, h as u32, pixels)
        .ok_or_else(|| DecodeError::Corrupt("JPEG decoded to a short buffer".into()))?;
    Ok(Some(Decoded {
        image: orient(image, s.orientation(bytes)),
        original_size: (s.width, s.height),
        scale_denominator: denom,
    }))
}

#[cfg(test)]
mod tests {
    use super::super::jpeg;
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
    fn decodes_colour_and_grey_close_to_jpeg_decoder_at_every_scale() {
        let colour = RgbImage::from_fn(300, 200, |x, y| {
            Rgb([(x % 256) as u8, (y % 256) as u8, ((x + y) / 3) as u8])
        });
        let grey =
            image::GrayImage::from_fn(300, 200, |x, y| image::Luma([((x + 2 * y) % 256) as u8]));
        for bytes in [encode(colour.into()), encode(grey.into())] {
            let s = jpeg::survey(&bytes).unwrap();
            for (denom, side) in [(1, 0), (2, 150), (4, 75)] {
                let d = decode(&bytes, &s, denom).unwrap().unwrap();
                let reference = jpeg::decode_scaled(&bytes, s.clone(), side, None).unwrap();
                assert_eq!(d.scale_denominator, reference.scale_denominator);
                assert_eq!(d.image.dimensions(), reference.image.dimensions());
                let diffs: Vec<u8> = d
                    .image
                    .as_raw()
                    .iter()
                    .zip(reference.image.as_raw())
                    .map(|(a, b)| a.abs_diff(*b))
                    .collect();
                let mean = diffs.iter().map(|&v| v as f64).sum::<f64>() / diffs.len() as f64;
                let worst = *diffs.iter().max().unwrap();
                eprintln!("1/{denom}: mean {mean:.3}, worst {worst}");
                // At reduced scale the two scaled IDCTs ring differently at
                // the patterns' wrap-around edges (grey: up to 24 levels).
                let worst_allowed = if denom == 1 { 8 } else { 32 };
                assert!(
                    mean <= 1.0 && worst <= worst_allowed,
                    "1/{denom}: libjpeg-turbo and jpeg-decoder differ by {mean:.2} grey levels on average, {worst} at most"
                );
            }
        }
    }

    #[test]
    fn a_truncated_stream_is_an_error_not_grey_filler() {
        let img = RgbImage::from_fn(300, 200, |x, y| Rgb([(x % 256) as u8, (y % 256) as u8, 7]));
        let bytes = encode(img.into());
        let cut = &bytes[..bytes.len() / 3];
        let s = jpeg::survey(cut).unwrap();
        assert!(decode(cut, &s, 1).is_err());
        // And the decoder as a whole refuses it too (jpeg-decoder's verdict).
        assert!(super::super::decode_with(cut, 0).is_err());
    }

    #[test]
    fn a_frame_other_than_the_surveyed_one_is_left_to_jpeg_decoder() {
        let img = RgbImage::from_fn(64, 48, |x, y| Rgb([x as u8, y as u8, 7]));
        let bytes = encode(img.into());
        let mut s = jpeg::survey(&bytes).unwrap();
        s.width = 640;
        assert!(decode(&bytes, &s, 1).unwrap().is_none());
    }

    #[test]
    fn exif_orientation_is_applied() {
        // 40×20, left half black, right half white; EXIF says "rotate 90° clockwise".
        let img = RgbImage::from_fn(40, 20, |x, _| {
            if x < 20 {
                Rgb([0, 0, 0])
            } else {
                Rgb([255; 3])
            }
        });
        let plain = encode(img.into());
        let tiff: &[u8] = &[
            b'M', b'M', 0, 42, 0, 0, 0, 8, // header, IFD at 8
            0, 1, // one entry
            0x01, 0x12, 0, 3, 0, 0, 0, 1, 0, 6, 0, 0, // Orientation = 6
            0, 0, 0, 0, // no next IFD
        ];
        let mut app1 = vec![0xFF, 0xE1];
        app1.extend_from_slice(&((2 + 6 + tiff.len()) as u16).to_be_bytes());
        app1.extend_from_slice(b"Exif\0\0");
        app1.extend_from_slice(tiff);
        let mut bytes = plain[..2].to_vec();
        bytes.extend_from_slice(&app1);
        bytes.extend_from_slice(&plain[2..]);
        let s = jpeg::survey(&bytes).unwrap();
        assert!(s.exif.is_some());
        let d = decode(&bytes, &s, 1).unwrap().unwrap();
        assert_eq!(d.image.dimensions(), (20, 40), "turned upright");
        // The left (black) half is now on top.
        assert!(d.image.get_pixel(10, 5).0[0] < 40);
        assert!(d.image.get_pixel(10, 35).0[0] > 215);
    }
}

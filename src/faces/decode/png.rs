//! PNG, streamed: rows are decoded one at a time, 16-bit samples cut to 8,
//! and large images box-averaged while reading (the same 1/2, 1/4, 1/8 steps
//! as the JPEG DCT scale), so an 8000×8000 16-bit RGBA file that would take
//! 512 MB decoded whole holds a few MB. Interlaced files cannot be read row
//! by row in image order: they are decoded whole at 8 bits, within the budget.
use std::io::Cursor;

use image::metadata::Orientation;
use png::{ColorType, Transformations};

use super::{
    DecodeError, Decoded, MAX_DECODE_BYTES, box_scale::BoxScaler, budget, budget::Gate, check_size,
    orient, scale_for,
};

pub fn decode(
    bytes: &[u8],
    working_side: u32,
    memory: Option<Gate<'_>>,
) -> Result<Decoded, DecodeError> {
    let corrupt = |e: png::DecodingError| match e {
        png::DecodingError::LimitsExceeded => DecodeError::TooMuchMemory {
            what: "PNG".into(),
            bytes: 0,
        },
        e => DecodeError::Corrupt(e.to_string()),
    };
    let mut decoder = png::Decoder::new_with_limits(
        Cursor::new(bytes),
        png::Limits {
            bytes: MAX_DECODE_BYTES as usize,
        },
    );
    // Palette and low bit depths expanded, 16-bit cut to 8: every row is
    // 8-bit grey, grey+alpha, RGB or RGBA.
    decoder.set_transformations(Transformations::EXPAND | Transformations::STRIP_16);
    let header = decoder.read_header_info().map_err(corrupt)?;
    let (w, h) = (header.width, header.height);
    check_size(w as u64, h as u64)?;
    let interlaced = header.interlaced;
    let mut reader = decoder.read_info().map_err(corrupt)?;
    let orientation = reader
        .info()
        .exif_metadata
        .as_deref()
        .and_then(Orientation::from_exif_chunk)
        .unwrap_or(Orientation::NoTransforms);
    let channels = match reader.output_color_type().0 {
        ColorType::Grayscale => 1,
        ColorType::GrayscaleAlpha => 2,
        ColorType::Rgb => 3,
        ColorType::Rgba => 4,
        ColorType::Indexed => {
            return Err(DecodeError::Corrupt("PNG palette was not expanded".into()));
        }
    };
    let denom = scale_for(w, h, working_side);
    let mut scaler = BoxScaler::new(w, h, denom, channels);

    // Streamed: the output and a few rows (the decoder keeps two, at up to
    // 8 bytes a pixel before the transformations).
    let streamed = scaler.output_bytes() + 3 * w as u64 * 8;
    if interlaced {
        let need = w as u64 * h as u64 * channels as u64;
        if need + scaler.output_bytes() > MAX_DECODE_BYTES {
            return Err(DecodeError::TooMuchMemory {
                what: format!("{w}×{h} pixels, interlaced PNG"),
                bytes: need,
            });
        }
        let _held = budget::take(memory, need + streamed)?;
        let mut buf = vec![0; reader.output_buffer_size().unwrap_or(need as usize)];
        reader.next_frame(&mut buf).map_err(corrupt)?;
        let stride = w as usize * channels;
        for row in buf.chunks_exact(stride).take(h as usize) {
            scaler.push_row(row);
        }
        drop(buf);
    } else {
        let _held = budget::take(memory, streamed)?;
        while let Some(row) = reader.next_row().map_err(corrupt)? {
            scaler.push_row(row.data());
        }
    }
    let image = scaler.finish()?;
    Ok(Decoded {
        image: orient(image, orientation),
        original_size: (w, h),
        scale_denominator: denom,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(w: u32, h: u32, color: png::ColorType, depth: png::BitDepth, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut enc = png::Encoder::new(&mut out, w, h);
        enc.set_color(color);
        enc.set_depth(depth);
        enc.write_header().unwrap().write_image_data(data).unwrap();
        out
    }

    #[test]
    fn sixteen_bit_rgba_is_cut_to_eight_bit_rgb() {
        // One pixel 0x1234 0x5678 0x9ABC alpha 0xFFFF.
        let data = [0x12, 0x34, 0x56, 0x78, 0x9A, 0xBC, 0xFF, 0xFF];
        let bytes = encode(1, 1, ColorType::Rgba, png::BitDepth::Sixteen, &data);
        let d = decode(&bytes, 0, None).unwrap();
        assert_eq!(d.image.get_pixel(0, 0).0, [0x12, 0x56, 0x9A]);
    }

    #[test]
    fn large_images_are_box_averaged_while_streaming() {
        // 2000×1000 grey: left half 0, right half 200; scale 1/2 keeps ≥ 800.
        let (w, h) = (2000u32, 1000u32);
        let data: Vec<u8> = (0..h)
            .flat_map(|_| (0..w).map(|x| if x < w / 2 { 0 } else { 200 }))
            .collect();
        let bytes = encode(w, h, ColorType::Grayscale, png::BitDepth::Eight, &data);
        let d = decode(&bytes, 800, None).unwrap();
        assert_eq!(d.scale_denominator, 2);
        assert_eq!(d.image.dimensions(), (1000, 500));
        assert_eq!(d.image.get_pixel(10, 10).0, [0, 0, 0]);
        assert_eq!(d.image.get_pixel(990, 499).0, [200, 200, 200]);
        assert_eq!(d.original_size, (w, h));
    }
}

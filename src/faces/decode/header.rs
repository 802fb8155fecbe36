//! Image size from the first bytes of the header, in microseconds, for the
//! engine queue's cost estimate: read on the request's thread before the
//! image is queued, so it never walks the file (the JPEG survey does that,
//! on a worker). A header it cannot read gives `None`; the decoder then says
//! what is wrong with the file.
use super::{Format, sniff};

/// Format and stored width × height, as the header declares them.
pub fn size(bytes: &[u8]) -> Option<(Format, u32, u32)> {
    let format = sniff(bytes).ok()?;
    let (w, h) = match format {
        Format::Jpeg => jpeg_frame(bytes)?,
        Format::Png => (be32(bytes, 16)?, be32(bytes, 20)?),
        Format::WebP => webp(bytes)?,
    };
    Some((format, w, h))
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn le24(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at + 3)?;
    Some(s[0] as u32 | (s[1] as u32) << 8 | (s[2] as u32) << 16)
}

/// The first frame header (SOFn) before the first scan; marker segments
/// before it are few (APPn, DQT, DHT), each skipped by its length.
fn jpeg_frame(b: &[u8]) -> Option<(u32, u32)> {
    let mut pos = 2;
    for _ in 0..super::jpeg::MAX_MARKERS {
        if *b.get(pos)? != 0xFF {
            return None;
        }
        let marker = *b.get(pos + 1)?;
        pos += 2;
        match marker {
            0xFF => pos -= 1,
            0x01 | 0xD0..=0xD7 => {}
            0xD9 | 0xDA => return None,
            _ => {
                let len = u16::from_be_bytes([*b.get(pos)?, *b.get(pos + 1)?]) as usize;
                if (0xC0..=0xCF).contains(&marker) && !matches!(marker, 0xC4 | 0xC8 | 0xCC) {
                    let h = u16::from_be_bytes([*b.get(pos + 3)?, *b.get(pos + 4)?]);
                    let w = u16::from_be_bytes([*b.get(pos + 5)?, *b.get(pos + 6)?]);
                    return Some((w as u32, h as u32));
                }
                pos += len;
            }
        }
    }
    None
}

/// The first chunk after `RIFF....WEBP`: a simple lossy (`VP8 `) or
/// lossless (`VP8L`) image, or an extended one (`VP8X`, canvas size).
fn webp(b: &[u8]) -> Option<(u32, u32)> {
    let chunk = b.get(12..16)?;
    let data = 20;
    match chunk {
        b"VP8 " => {
            // 3-byte frame tag, start code 9D 01 2A, then 14-bit sizes.
            if b.get(data + 3..data + 6)? != [0x9D, 0x01, 0x2A] {
                return None;
            }
            let w = u16::from_le_bytes([*b.get(data + 6)?, *b.get(data + 7)?]) & 0x3FFF;
            let h = u16::from_le_bytes([*b.get(data + 8)?, *b.get(data + 9)?]) & 0x3FFF;
            Some((w as u32, h as u32))
        }
        b"VP8L" => {
            if *b.get(data)? != 0x2F {
                return None;
            }
            let bits = u32::from_le_bytes(b.get(data + 1..data + 5)?.try_into().ok()?);
            Some(((bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1))
        }
        b"VP8X" => Some((le24(b, data + 4)? + 1, le24(b, data + 7)? + 1)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{ImageFormat, RgbImage, RgbaImage};
    use std::io::Cursor;

    fn encoded(w: u32, h: u32, format: ImageFormat) -> Vec<u8> {
        let mut out = Vec::new();
        RgbImage::from_pixel(w, h, image::Rgb([1, 2, 3]))
            .write_to(&mut Cursor::new(&mut out), format)
            .unwrap();
        out
    }

    #[test]
    fn reads_the_declared_size_of_each_format() {
        assert_eq!(
            size(&encoded(321, 123, ImageFormat::Jpeg)),
            Some((Format::Jpeg, 321, 123))
        );
        assert_eq!(
            size(&encoded(321, 123, ImageFormat::Png)),
            Some((Format::Png, 321, 123))
        );
        // image writes lossless WebP (VP8L).
        assert_eq!(
            size(&encoded(321, 123, ImageFormat::WebP)),
            Some((Format::WebP, 321, 123))
        );
        let mut rgba = Vec::new();
        RgbaImage::from_pixel(5, 7, image::Rgba([1, 2, 3, 4]))
            .write_to(&mut Cursor::new(&mut rgba), ImageFormat::WebP)
            .unwrap();
        assert_eq!(size(&rgba), Some((Format::WebP, 5, 7)));
    }

    #[test]
    fn reads_lossy_and_extended_webp_headers() {
        let riff = |chunk: &[u8; 4], body: &[u8]| {
            let mut b = b"RIFF\0\0\0\0WEBP".to_vec();
            b.extend_from_slice(chunk);
            b.extend_from_slice(&(body.len() as u32).to_le_bytes());
            b.extend_from_slice(body);
            b
        };
        // VP8: frame tag, start code, 5200 and 5200 (scale bits set: ignored).
        let mut vp8 = vec![0x10, 0x02, 0x00, 0x9D, 0x01, 0x2A];
        vp8.extend_from_slice(&(5200u16 | 0x4000).to_le_bytes());
        vp8.extend_from_slice(&5200u16.to_le_bytes());
        assert_eq!(size(&riff(b"VP8 ", &vp8)), Some((Format::WebP, 5200, 5200)));
        // VP8X: flags, then canvas width − 1 and height − 1 on 24 bits.
        let mut vp8x = vec![0x10, 0, 0, 0];
        vp8x.extend_from_slice(&(9999u32).to_le_bytes()[..3]);
        vp8x.extend_from_slice(&(4999u32).to_le_bytes()[..3]);
        assert_eq!(
            size(&riff(b"VP8X", &vp8x)),
            Some((Format::WebP, 10_000, 5_000))
        );
        assert_eq!(size(&riff(b"VP8 ", &[0; 10])), None, "no start code");
    }

    #[test]
    fn unreadable_headers_are_none() {
        assert_eq!(size(b"hello"), None);
        assert_eq!(size(&[0xFF, 0xD8, 0xFF]), None);
        let jpeg = encoded(64, 48, ImageFormat::Jpeg);
        let sof = jpeg.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
        assert_eq!(size(&jpeg[..sof + 4]), None, "cut inside the frame header");
        assert_eq!(size(&encoded(4, 4, ImageFormat::Png)[..20]), None);
    }
}

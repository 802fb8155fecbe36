//! JPEG: a marker survey that bounds the work before any pixel is decoded,
//! then a decode: libjpeg-turbo ([`super::turbo`]) for colour and grey
//! files, at the reduced DCT scale; jpeg-decoder for CMYK and for whatever
//! libjpeg-turbo refuses.
//!
//! Why the survey: a progressive JPEG's decode cost grows with scans × blocks,
//! and a scan that is one end-of-band run costs a few bytes. A 1 MB file with
//! 10,000 scans over 8000×8000 kept a worker busy for minutes; the survey
//! refuses it in a millisecond.
use std::io::Cursor;

use image::{RgbImage, metadata::Orientation};

use super::{
    DecodeError, Decoded, MAX_DECODE_BYTES, budget, budget::Gate, check_size, orient, turbo,
};

/// Most scans accepted. Encoders write 1 (baseline), 6–12 (libjpeg and
/// mozjpeg progressive); 100 leaves room for unusual scan scripts.
pub const MAX_SCANS: usize = 100;
/// Most scans × pixels: full-image passes of the entropy decoder. A 64 MP
/// image may have 31 scans; a 12 MP photo the full 100.
pub const MAX_SCAN_PIXELS: u64 = 2_000_000_000;
/// Most marker segments (APPn, COM, DHT, DQT, SOS, ...); real files have tens.
pub const MAX_MARKERS: usize = 1_000;

/// What the markers say about a JPEG, read without decoding.
#[derive(Debug, Clone, PartialEq)]
pub struct Survey {
    pub width: u32,
    pub height: u32,
    pub progressive: bool,
    pub scans: usize,
    pub markers: usize,
    /// Samples stored per image pixel over all components (4:2:0 colour: 1.5).
    pub samples_per_pixel: f64,
    /// Colour components in the frame (1 grey, 3 colour, 4 CMYK).
    pub components: u8,
    /// Where the first EXIF block's TIFF data lies in the file.
    pub exif: Option<std::ops::Range<usize>>,
}

impl Survey {
    /// The EXIF orientation (none when the file has no EXIF block or it does not say).
    pub fn orientation(&self, bytes: &[u8]) -> Orientation {
        self.exif
            .clone()
            .and_then(|r| bytes.get(r))
            .and_then(Orientation::from_exif_chunk)
            .unwrap_or(Orientation::NoTransforms)
    }
}

/// Walks the marker segments (skipping entropy-coded data) and counts them.
/// A truncated or odd file is left to the decoder to report; only the counts
/// and the frame header matter here.
pub fn survey(bytes: &[u8]) -> Result<Survey, DecodeError> {
    let mut s = Survey {
        width: 0,
        height: 0,
        progressive: false,
        scans: 0,
        markers: 0,
        samples_per_pixel: 3.0,
        components: 0,
        exif: None,
    };
    let mut pos = 2; // after SOI
    while pos + 1 < bytes.len() {
        if bytes[pos] != 0xFF {
            break; // not a marker where one belongs: the decoder will say why
        }
        let marker = bytes[pos + 1];
        pos += 2;
        match marker {
            0xFF => {
                pos -= 1; // fill byte
                continue;
            }
            0xD9 => break,                  // EOI
            0x01 | 0xD0..=0xD7 => continue, // standalone
            _ => {}
        }
        s.markers += 1;
        if s.markers > MAX_MARKERS {
            return Err(DecodeError::TooComplex(format!(
                "JPEG has more than {MAX_MARKERS} marker segments"
            )));
        }
        let Some(len) = bytes.get(pos..pos + 2) else {
            break;
        };
        let len = u16::from_be_bytes([len[0], len[1]]) as usize;
        let segment = bytes
            .get(pos + 2..(pos + len).min(bytes.len()))
            .unwrap_or(&[]);
        match marker {
            // SOFn, except DHT (C4), JPG (C8) and DAC (CC).
            0xC0..=0xCF if !matches!(marker, 0xC4 | 0xC8 | 0xCC) => {
                frame(&mut s, marker, segment);
            }
            0xE1 if s.exif.is_none() && segment.starts_with(b"Exif\0\0") => {
                s.exif = Some(pos + 2 + 6..pos + 2 + segment.len());
            }
            0xDA => {
                s.scans += 1;
                check_scans(&s)?;
                pos = skip_entropy_data(bytes, pos + len);
                continue;
            }
            _ => {}
        }
        pos += len;
    }
    Ok(s)
}

fn frame(s: &mut Survey, marker: u8, seg: &[u8]) {
    if seg.len() < 6 {
        return;
    }
    s.progressive = matches!(marker, 0xC2 | 0xC6 | 0xCA | 0xCE);
    s.height = u16::from_be_bytes([seg[1], seg[2]]) as u32;
    s.width = u16::from_be_bytes([seg[3], seg[4]]) as u32;
    let n = seg[5] as usize;
    s.components = seg[5];
    let comps: Vec<(u32, u32)> = (0..n)
        .filter_map(|i| seg.get(6 + i * 3 + 1))
        .map(|&hv| ((hv >> 4) as u32, (hv & 0x0F) as u32))
        .filter(|&(h, v)| h > 0 && v > 0)
        .collect();
    let hmax = comps.iter().map(|c| c.0).max().unwrap_or(1);
    let vmax = comps.iter().map(|c| c.1).max().unwrap_or(1);
    if !comps.is_empty() {
        s.samples_per_pixel = comps
            .iter()
            .map(|&(h, v)| (h * v) as f64 / (hmax * vmax) as f64)
            .sum();
    }
}

fn check_scans(s: &Survey) -> Result<(), DecodeError> {
    if s.scans > MAX_SCANS {
        return Err(DecodeError::TooComplex(format!(
            "JPEG has more than {MAX_SCANS} scans; the limit is {MAX_SCANS}"
        )));
    }
    if s.scans as u64 * s.width as u64 * s.height as u64 > MAX_SCAN_PIXELS {
        return Err(DecodeError::TooComplex(format!(
            "JPEG has {} scans over {}×{} pixels; the limit is {} megapixel-scans",
            s.scans,
            s.width,
            s.height,
            MAX_SCAN_PIXELS / 1_000_000
        )));
    }
    Ok(())
}

/// The position of the next marker after entropy-coded data (`FF 00` is a
/// stuffed byte, `FF D0`–`FF D7` restart markers belong to the data).
fn skip_entropy_data(bytes: &[u8], mut pos: usize) -> usize {
    // memchr: a byte-at-a-time walk over a 2 MB photo cost 2 ms.
    while let Some(at) = bytes.get(pos..).and_then(|rest| memchr::memchr(0xFF, rest)) {
        pos += at;
        let Some(&next) = bytes.get(pos + 1) else {
            break;
        };
        if next != 0x00 && !(0xD0..=0xD7).contains(&next) && next != 0xFF {
            return pos;
        }
        pos += if next == 0xFF { 1 } else { 2 };
    }
    bytes.len()
}

/// Bytes the decoder will hold: a progressive JPEG keeps every DCT
/// coefficient (2 bytes per sample) until its last scan; both kinds hold the
/// output planes and the RGB image at the reduced scale.
pub fn decoded_bytes(s: &Survey, denom: u32) -> u64 {
    let pixels = s.width as u64 * s.height as u64;
    let coefficients = if s.progressive {
        (pixels as f64 * s.samples_per_pixel * 2.0) as u64
    } else {
        0
    };
    let out = pixels / (denom as u64 * denom as u64).max(1);
    coefficients + out * 3 * 2
}

/// The reduced scale (1, 2, 4 or 8) jpeg-decoder picks: the smallest image
/// whose long side is still at least `working_side` (0: full resolution).
pub fn scale_for(width: u32, height: u32, working_side: u32) -> u32 {
    let long = width.max(height);
    let mut denom = 1;
    while working_side > 0 && denom < 8 && long.div_ceil(denom * 2) >= working_side {
        denom *= 2;
    }
    denom
}

pub fn decode(
    bytes: &[u8],
    working_side: u32,
    memory: Option<Gate<'_>>,
) -> Result<Decoded, DecodeError> {
    let s = survey(bytes)?;
    let denom = scale_for(s.width, s.height, working_side);
    if s.width > 0 && s.height > 0 && matches!(s.components, 1 | 3) {
        check_size(s.width as u64, s.height as u64)?;
        let need = check_budget(&s, denom)?;
        let _held = budget::take(memory, need)?;
        // A file libjpeg-turbo refuses (it also stops at what it only warns
        // about, such as stray bytes before the end marker, which browsers
        // show) still gets jpeg-decoder's answer; both decodes are within
        // the survey's bounds.
        if let Ok(Some(d)) = turbo::decode(bytes, &s, denom) {
            return Ok(d);
        }
    }
    decode_scaled(bytes, s, working_side, memory)
}

/// Refuses a file whose decode would hold more than [`MAX_DECODE_BYTES`];
/// else the bytes it will hold.
fn check_budget(s: &Survey, denom: u32) -> Result<u64, DecodeError> {
    let need = decoded_bytes(s, denom);
    if need > MAX_DECODE_BYTES {
        return Err(DecodeError::TooMuchMemory {
            what: format!(
                "{}×{} pixels, {}",
                s.width,
                s.height,
                if s.progressive {
                    "progressive JPEG"
                } else {
                    "JPEG"
                }
            ),
            bytes: need,
        });
    }
    Ok(need)
}

/// jpeg-decoder, at the reduced DCT scale that keeps the long side at least
/// `working_side` (0: full resolution).
pub fn decode_scaled(
    bytes: &[u8],
    mut survey: Survey,
    working_side: u32,
    memory: Option<Gate<'_>>,
) -> Result<Decoded, DecodeError> {
    let corrupt = |e: jpeg_decoder::Error| DecodeError::Corrupt(e.to_string());
    let mut dec = jpeg_decoder::Decoder::new(Cursor::new(bytes));
    dec.read_info().map_err(corrupt)?;
    let info = dec
        .info()
        .ok_or_else(|| DecodeError::Corrupt("missing JPEG header".into()))?;
    let (w, h) = (info.width as u32, info.height as u32);
    check_size(w as u64, h as u64)?;
    let long = w.max(h);
    let mut denom = 1;
    if working_side > 0 && long > working_side {
        // jpeg-decoder picks the smallest scale whose output is at least the request.
        let (rw, rh) = (
            (w as u64 * working_side as u64 / long as u64).max(1) as u16,
            (h as u64 * working_side as u64 / long as u64).max(1) as u16,
        );
        let (sw, _) = dec.scale(rw, rh).map_err(corrupt)?;
        denom = (w as f32 / sw as f32).round() as u32;
    }
    // The frame jpeg-decoder reads is the one it will decode.
    (survey.width, survey.height) = (w, h);
    let need = check_budget(&survey, denom)?;
    let _held = budget::take(memory, need)?;
    let pixels = dec.decode().map_err(corrupt)?;
    let info = dec
        .info()
        .ok_or_else(|| DecodeError::Corrupt("missing JPEG header".into()))?;
    let (dw, dh) = (info.width as u32, info.height as u32);
    let rgb = match info.pixel_format {
        jpeg_decoder::PixelFormat::RGB24 => pixels,
        jpeg_decoder::PixelFormat::L8 => pixels.iter().flat_map(|&v| [v, v, v]).collect(),
        jpeg_decoder::PixelFormat::L16 => pixels.chunks_exact(2).flat_map(|p| [p[0]; 3]).collect(),
        jpeg_decoder::PixelFormat::CMYK32 => cmyk_to_rgb(&pixels),
    };
    let image = RgbImage::from_raw(dw, dh, rgb)
        .ok_or_else(|| DecodeError::Corrupt("JPEG decoded to a short buffer".into()))?;
    Ok(Decoded {
        image: orient(image, survey.orientation(bytes)),
        original_size: (w, h),
        scale_denominator: denom,
    })
}

/// jpeg-decoder hands out ink amounts (Adobe's inversion already undone).
fn cmyk_to_rgb(cmyk: &[u8]) -> Vec<u8> {
    cmyk.chunks_exact(4)
        .flat_map(|p| {
            let k = 255 - p[3] as u32;
            [0, 1, 2].map(|i| ((255 - p[i] as u32) * k / 255) as u8)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::ImageFormat;

    fn jpeg(w: u32, h: u32) -> Vec<u8> {
        let img = RgbImage::from_fn(w, h, |x, y| {
            image::Rgb([(x % 256) as u8, (y % 256) as u8, 9])
        });
        let mut out = Vec::new();
        img.write_to(&mut Cursor::new(&mut out), ImageFormat::Jpeg)
            .unwrap();
        out
    }

    #[test]
    fn survey_reads_frame_and_counts_one_scan() {
        let s = survey(&jpeg(64, 48)).unwrap();
        assert_eq!((s.width, s.height, s.scans), (64, 48, 1));
        assert!(!s.progressive);
        assert!(s.markers >= 4, "DQT, SOF, DHT, SOS at least: {}", s.markers);
    }

    #[test]
    fn refuses_too_many_scans_before_decoding() {
        // A baseline file whose scan is repeated: the survey stops at the limit.
        let good = jpeg(16, 16);
        let sos = good.windows(2).position(|w| w == [0xFF, 0xDA]).unwrap();
        let eoi = good.len() - 2;
        let mut bad = good[..sos].to_vec();
        for _ in 0..(MAX_SCANS + 5) {
            bad.extend_from_slice(&good[sos..eoi]);
        }
        bad.extend_from_slice(&[0xFF, 0xD9]);
        let err = survey(&bad).unwrap_err();
        assert_eq!(err.code(), "image_too_complex");
        assert!(err.to_string().contains("more than 100 scans"), "{err}");
        assert_eq!(
            decode(&bad, 0, None).err().unwrap().code(),
            "image_too_complex"
        );
    }

    #[test]
    fn progressive_memory_counts_coefficients() {
        let s = Survey {
            width: 8000,
            height: 8000,
            progressive: true,
            scans: 10,
            markers: 20,
            samples_per_pixel: 3.0,
            components: 3,
            exif: None,
        };
        // 64 MP × 3 samples × 2 bytes of coefficients, more than the budget.
        assert!(decoded_bytes(&s, 8) > MAX_DECODE_BYTES);
        assert!(
            decoded_bytes(
                &Survey {
                    progressive: false,
                    ..s
                },
                8
            ) < MAX_DECODE_BYTES
        );
    }

    #[test]
    fn cmyk_white_and_black() {
        assert_eq!(
            cmyk_to_rgb(&[0, 0, 0, 0, 0, 0, 0, 255]),
            vec![255, 255, 255, 0, 0, 0]
        );
    }
}

//! Image bytes → upright RGB pixels: format sniffed from the bytes, size
//! checked from the header before any pixel is decoded (decompression bombs),
//! work and memory bounded per image (JPEG scans, decoded bytes at the real
//! bit depth and channel count), large images decoded at reduced scale (JPEG
//! in the DCT domain, PNG while streaming rows), EXIF orientation applied.
use crate::{
    error_codes::{self, ErrorCode},
    image_format::{self, ImageFormat as ImageKind},
};
use std::io::Cursor;

mod box_scale;
pub mod budget;
pub mod header;
mod jpeg;
mod png;
mod turbo;

use budget::Gate;

use image::{
    ColorType, DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits, RgbImage, RgbaImage,
    imageops, metadata::Orientation,
};

/// Largest image accepted, in pixels and per side.
pub const MAX_PIXELS: u64 = 64_000_000;
pub const MAX_SIDE: u32 = 20_000;
/// JPEGs are decoded at the smallest DCT scale (1/2, 1/4, 1/8) that keeps the
/// long side at least this big: plenty for detection and 112-px face crops
/// (a face at 15% of the long side keeps ≥ 120 px), and 12 MP decodes at 1/4.
pub const WORKING_SIDE: u32 = 800;
/// Most bytes one image may hold while it is decoded (pixels × channels ×
/// bytes per sample, plus a progressive JPEG's coefficients). Two workers
/// decoding the worst accepted images stay under 400 MB.
pub const MAX_DECODE_BYTES: u64 = 192 << 20;
/// Largest WebP accepted, in pixels (4096×4096). WebP has no reduced-scale
/// decode (the decoder reconstructs every pixel, then the image is
/// area-averaged down), so its cost grows with the full pixel count: ~28 ms
/// a megapixel against JPEG's 2–3 at reduced scale (docs/performance.md).
/// At this limit a WebP decodes in about 0.5 s, under the costliest JPEG
/// the work budget accepts (~1 s).
pub const MAX_WEBP_PIXELS: u64 = 16_777_216;
/// Bytes a WebP decode holds per pixel: the output (RGB or RGBA), the
/// lossy decoder's YUV planes and alpha plane, or the lossless decoder's
/// ARGB buffer.
const WEBP_BYTES_PER_PIXEL: u64 = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Jpeg,
    Png,
    WebP,
}

/// Why bytes could not become pixels; `code()` is the stable API error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("unsupported image format{}; send JPEG, PNG or WebP", .0.map(|f| format!(" ({f})")).unwrap_or_default())]
    Unsupported(Option<&'static str>),
    #[error("image is {}; the limit is {MAX_SIDE} pixels per side and {} megapixels", size_text(*.width, *.height), MAX_PIXELS / 1_000_000)]
    TooLarge { width: u64, height: u64 },
    #[error("image is {width}×{height} pixels, WebP; WebP is decoded at full resolution, and its limit is {} megapixels (JPEG and PNG: {})", MAX_WEBP_PIXELS / 1_000_000, MAX_PIXELS / 1_000_000)]
    WebPTooLarge { width: u64, height: u64 },
    #[error("image would need {} MB to decode ({what}); the limit is {} MB", .bytes.div_ceil(1 << 20), MAX_DECODE_BYTES >> 20)]
    TooMuchMemory { what: String, bytes: u64 },
    #[error("image is too complex to decode: {0}")]
    TooComplex(String),
    #[error("image could not be decoded: {0}")]
    Corrupt(String),
    /// The caller gave up while the decode waited for memory (server
    /// workers only; the pipeline turns it into its own `Abandoned`).
    #[error("the request gave up before the image was decoded")]
    Abandoned,
}

/// `0×0` stands for "declared larger than the decoder accepts".
fn size_text(width: u64, height: u64) -> String {
    if width == 0 || height == 0 {
        "larger than the decoder accepts".into()
    } else {
        format!("{width}×{height} pixels")
    }
}

impl DecodeError {
    /// The error kind of the catalogue.
    pub fn kind(&self) -> ErrorCode {
        match self {
            DecodeError::Unsupported(_) => error_codes::UNSUPPORTED_IMAGE_FORMAT,
            DecodeError::TooLarge { .. }
            | DecodeError::WebPTooLarge { .. }
            | DecodeError::TooMuchMemory { .. } => error_codes::IMAGE_DIMENSIONS_TOO_LARGE,
            DecodeError::TooComplex(_) => error_codes::IMAGE_TOO_COMPLEX,
            DecodeError::Corrupt(_) => error_codes::IMAGE_DECODE_FAILED,
            // Never answered: nobody is waiting for this image any more.
            DecodeError::Abandoned => error_codes::REQUEST_TIMEOUT,
        }
    }

    /// The stable machine-readable error code of the API.
    pub fn code(&self) -> &'static str {
        self.kind().code
    }
}

/// The format to decode, from the bytes ([`crate::image_format`], the same
/// sniffer the inputs use); other formats are named in the error.
pub fn sniff(bytes: &[u8]) -> Result<Format, DecodeError> {
    match image_format::sniff(bytes) {
        Some(ImageKind::Jpeg) => Ok(Format::Jpeg),
        Some(ImageKind::Png) => Ok(Format::Png),
        Some(ImageKind::Webp) => Ok(Format::WebP),
        Some(other) => Err(DecodeError::Unsupported(Some(other.name()))),
        None => Err(DecodeError::Unsupported(None)),
    }
}

/// The reduced scale (1, 2, 4 or 8) that keeps the long side at least
/// `working_side` (0: full resolution).
fn scale_for(width: u32, height: u32, working_side: u32) -> u32 {
    let long = width.max(height);
    let mut denom = 1;
    while working_side > 0 && denom < 8 && long / (denom * 2) >= working_side {
        denom *= 2;
    }
    denom
}

fn check_size(width: u64, height: u64) -> Result<(), DecodeError> {
    if width == 0 || height == 0 {
        return Err(DecodeError::Corrupt(
            "image has zero width or height".into(),
        ));
    }
    if width > MAX_SIDE as u64 || height > MAX_SIDE as u64 || width * height > MAX_PIXELS {
        return Err(DecodeError::TooLarge { width, height });
    }
    Ok(())
}

/// A decoded, upright image plus what the decode did.
pub struct Decoded {
    pub image: RgbImage,
    /// Width and height as stored in the file (before scaling and orientation).
    pub original_size: (u32, u32),
    /// Original pixels per decoded pixel (1, 2, 4 or 8).
    pub scale_denominator: u32,
}

pub fn decode(bytes: &[u8]) -> Result<Decoded, DecodeError> {
    decode_with(bytes, WORKING_SIDE)
}

/// `working_side` 0 decodes at full resolution.
pub fn decode_with(bytes: &[u8], working_side: u32) -> Result<Decoded, DecodeError> {
    decode_within(bytes, working_side, None)
}

/// As [`decode_with`]; the decode's buffers are taken from `memory` (the
/// server's process-wide budget) before they are allocated.
pub fn decode_within(
    bytes: &[u8],
    working_side: u32,
    memory: Option<Gate<'_>>,
) -> Result<Decoded, DecodeError> {
    let format = sniff(bytes)?;
    // The bytes come from clients: a decoder bug on a crafted file must be a
    // 400 for that image, not a failed request.
    std::panic::catch_unwind(|| match format {
        Format::Jpeg => jpeg::decode(bytes, working_side, memory),
        Format::Png => png::decode(bytes, working_side, memory),
        Format::WebP => decode_webp(bytes, working_side, memory),
    })
    .unwrap_or_else(|_| {
        Err(DecodeError::Corrupt(
            "the decoder gave up on malformed data".into(),
        ))
    })
}

/// WebP decodes whole (RGBA or RGB, no reduced-scale decode) and is then
/// area-averaged to the scale a JPEG of that size would be decoded at; its
/// pixel count has a limit of its own ([`MAX_WEBP_PIXELS`]).
fn decode_webp(
    bytes: &[u8],
    working_side: u32,
    memory: Option<Gate<'_>>,
) -> Result<Decoded, DecodeError> {
    let corrupt = |e: image::ImageError| DecodeError::Corrupt(e.to_string());
    let mut reader = ImageReader::with_format(Cursor::new(bytes), ImageFormat::WebP);
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_DECODE_BYTES);
    reader.limits(limits);
    let mut dec = reader.into_decoder().map_err(|e| match e {
        image::ImageError::Limits(_) => DecodeError::TooLarge {
            width: 0,
            height: 0,
        },
        e => corrupt(e),
    })?;
    let (w, h) = dec.dimensions();
    check_size(w as u64, h as u64)?;
    let pixels = w as u64 * h as u64;
    if pixels > MAX_WEBP_PIXELS {
        return Err(DecodeError::WebPTooLarge {
            width: w as u64,
            height: h as u64,
        });
    }
    let channels = match dec.color_type() {
        ColorType::Rgb8 => 3,
        ColorType::Rgba8 => 4,
        other => return Err(DecodeError::Corrupt(format!("WebP decoded as {other:?}"))),
    };
    let denom = scale_for(w, h, working_side);
    let (out_w, out_h) = (w.div_ceil(denom), h.div_ceil(denom));
    let need = pixels * WEBP_BYTES_PER_PIXEL + out_w as u64 * out_h as u64 * 4;
    if need > MAX_DECODE_BYTES {
        return Err(DecodeError::TooMuchMemory {
            what: format!("{w}×{h} pixels, WebP"),
            bytes: need,
        });
    }
    let orientation = dec.orientation().unwrap_or(Orientation::NoTransforms);
    let held = budget::take(memory, need)?;
    let mut buf = vec![0u8; dec.total_bytes() as usize];
    dec.read_image(&mut buf).map_err(corrupt)?;
    // Area-averaged down by `image` (optimised even in debug builds), from
    // the decoder's own buffer: no full-size RGB copy.
    let short = || DecodeError::Corrupt("WebP decoded to a short buffer".into());
    let image = if channels == 3 {
        let full = RgbImage::from_raw(w, h, buf).ok_or_else(short)?;
        if denom == 1 {
            full
        } else {
            imageops::thumbnail(&full, out_w, out_h)
        }
    } else {
        let full = RgbaImage::from_raw(w, h, buf).ok_or_else(short)?;
        let small = if denom == 1 {
            full
        } else {
            imageops::thumbnail(&full, out_w, out_h)
        };
        DynamicImage::ImageRgba8(small).into_rgb8()
    };
    drop(held);
    Ok(Decoded {
        image: orient(image, orientation),
        original_size: (w, h),
        scale_denominator: denom,
    })
}

pub fn orient(image: RgbImage, orientation: Orientation) -> RgbImage {
    if orientation == Orientation::NoTransforms {
        return image;
    }
    let mut dynamic = DynamicImage::ImageRgb8(image);
    dynamic.apply_orientation(orientation);
    dynamic.into_rgb8()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(width: u32, height: u32) -> Vec<u8> {
        let img = RgbImage::from_pixel(width, height, image::Rgb([10, 200, 30]));
        let mut out = Vec::new();
        img.write_to(&mut Cursor::new(&mut out), ImageFormat::Png)
            .unwrap();
        out
    }

    #[test]
    fn sniffs_formats_from_bytes() {
        assert_eq!(sniff(&[0xFF, 0xD8, 0xFF, 0xE0]).unwrap(), Format::Jpeg);
        assert_eq!(sniff(&png(2, 2)).unwrap(), Format::Png);
        assert_eq!(sniff(b"RIFF\0\0\0\0WEBPVP8 ").unwrap(), Format::WebP);
        assert_eq!(
            sniff(b"GIF89a....").unwrap_err().code(),
            "unsupported_image_format"
        );
        assert_eq!(sniff(b"hello").unwrap_err(), DecodeError::Unsupported(None));
    }

    #[test]
    fn decodes_png_and_reports_truncation() {
        let bytes = png(40, 30);
        let d = decode(&bytes).unwrap();
        assert_eq!(d.image.dimensions(), (40, 30));
        assert_eq!(d.image.get_pixel(5, 5).0, [10, 200, 30]);
        let err = decode(&bytes[..bytes.len() / 2]).err().unwrap();
        assert_eq!(err.code(), "image_decode_failed");
    }

    fn crc32(data: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in data {
            crc ^= b as u32;
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    /// A valid PNG whose header declares `w`×`h` pixels, with 1×1 of data.
    pub(crate) fn png_declaring(w: u32, h: u32) -> Vec<u8> {
        let mut bytes = png(1, 1);
        bytes[16..20].copy_from_slice(&w.to_be_bytes());
        bytes[20..24].copy_from_slice(&h.to_be_bytes());
        let crc = crc32(&bytes[12..29]);
        bytes[29..33].copy_from_slice(&crc.to_be_bytes());
        bytes
    }

    #[test]
    fn refuses_bombs_from_header_alone() {
        let t = std::time::Instant::now();
        for (w, h) in [(100_000, 100_000), (19_000, 19_000), (30_000, 10)] {
            let err = decode(&png_declaring(w, h)).err().unwrap();
            assert_eq!(err.code(), "image_dimensions_too_large", "{w}x{h}: {err}");
        }
        assert!(t.elapsed().as_secs() < 5, "no pixel buffer was allocated");
        // Within limits but truncated: a decode failure, not a size one.
        assert_eq!(
            decode(&png_declaring(4000, 3000)).err().unwrap().code(),
            "image_decode_failed"
        );
    }

    #[test]
    fn large_jpeg_is_decoded_at_reduced_scale() {
        let img = RgbImage::from_fn(3300, 2000, |x, y| {
            image::Rgb([(x % 256) as u8, (y % 256) as u8, 128])
        });
        let mut out = Vec::new();
        img.write_to(&mut Cursor::new(&mut out), ImageFormat::Jpeg)
            .unwrap();
        let d = decode(&out).unwrap();
        assert_eq!(d.original_size, (3300, 2000));
        assert_eq!(d.scale_denominator, 4);
        assert_eq!(d.image.width(), 825);
        let full = decode_with(&out, 0).unwrap();
        assert_eq!(full.image.dimensions(), (3300, 2000));
    }

    #[test]
    fn corrupted_files_are_errors_or_images_never_panics() {
        let img = RgbImage::from_fn(64, 48, |x, y| {
            image::Rgb([(x * 4) as u8, (y * 5) as u8, 90])
        });
        let mut seed = 0x2545_F491_4F6C_DD1Du64;
        for format in [ImageFormat::Jpeg, ImageFormat::Png, ImageFormat::WebP] {
            let mut good = Vec::new();
            img.write_to(&mut Cursor::new(&mut good), format).unwrap();
            for len in (4..good.len()).step_by(7) {
                let _ = decode(&good[..len]);
            }
            for _ in 0..300 {
                let mut bad = good.clone();
                for _ in 0..4 {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    let at = 12 + (seed as usize) % (bad.len() - 12);
                    bad[at] = (seed >> 32) as u8;
                }
                if let Ok(d) = decode(&bad) {
                    assert!(d.image.width() > 0 && d.image.height() > 0);
                }
            }
        }
    }
}

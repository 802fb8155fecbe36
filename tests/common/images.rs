//! Images generated in the tests: non-face images, unsupported formats,
//! broken and hostile files, and synthetic variants of fetched fixtures.
use std::io::Cursor;

use image::{DynamicImage, ImageFormat, RgbImage};

/// A flat grey PNG: an image without a face.
pub fn grey_png(w: u32, h: u32) -> Vec<u8> {
    let img = RgbImage::from_pixel(w, h, image::Rgb([128, 128, 128]));
    encode(&DynamicImage::ImageRgb8(img), ImageFormat::Png)
}

pub fn encode(img: &DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, format).expect("encode");
    out.into_inner()
}

pub fn jpeg(img: &DynamicImage, quality: u8) -> Vec<u8> {
    let mut out = Vec::new();
    let enc = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality);
    img.to_rgb8().write_with_encoder(enc).expect("jpeg encode");
    out
}

pub fn decode(bytes: &[u8]) -> DynamicImage {
    image::load_from_memory(bytes).expect("decode fixture")
}

/// A 1×1 GIF89a.
pub fn gif() -> Vec<u8> {
    let mut g = b"GIF89a\x01\x00\x01\x00\x80\x00\x00".to_vec();
    g.extend_from_slice(&[0, 0, 0, 255, 255, 255]);
    g.extend_from_slice(b"\x2c\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02\x44\x01\x00\x3b");
    g
}

/// A 2×2 24-bit BMP.
pub fn bmp() -> Vec<u8> {
    let row = [0u8, 0, 255, 0, 255, 0, 0, 0]; // two BGR pixels + 2 bytes padding
    let pixels: Vec<u8> = row.iter().chain(row.iter()).copied().collect();
    let size = 14 + 40 + pixels.len() as u32;
    let mut b = Vec::new();
    b.extend_from_slice(b"BM");
    b.extend_from_slice(&size.to_le_bytes());
    b.extend_from_slice(&[0, 0, 0, 0]);
    b.extend_from_slice(&54u32.to_le_bytes());
    b.extend_from_slice(&40u32.to_le_bytes());
    b.extend_from_slice(&2i32.to_le_bytes());
    b.extend_from_slice(&2i32.to_le_bytes());
    b.extend_from_slice(&1u16.to_le_bytes());
    b.extend_from_slice(&24u16.to_le_bytes());
    b.extend_from_slice(&[0; 24]);
    b.extend_from_slice(&pixels);
    b
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &byte in data {
        crc ^= byte as u32;
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

fn png_chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let mut crc_input = kind.to_vec();
    crc_input.extend_from_slice(data);
    out.extend_from_slice(&crc_input);
    out.extend_from_slice(&crc32(&crc_input).to_be_bytes());
}

/// A decompression bomb: a ~100-byte PNG that declares `w`×`h` RGB pixels.
pub fn png_bomb(w: u32, h: u32) -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    png_chunk(&mut out, b"IHDR", &ihdr);
    // A zlib stream of a few zero bytes: far too little data, never mind the size.
    png_chunk(
        &mut out,
        b"IDAT",
        &[0x78, 0x9C, 0x63, 0x00, 0x00, 0x00, 0x01, 0x00, 0x01],
    );
    png_chunk(&mut out, b"IEND", &[]);
    out
}

/// `img` stored rotated so that EXIF orientation `6` ("rotate 90° clockwise
/// to display") restores it: what a phone writes for a portrait selfie.
pub fn exif_rotated_jpeg(img: &DynamicImage) -> Vec<u8> {
    let stored = img.rotate270();
    with_exif_orientation(&jpeg(&stored, 92), 6)
}

/// Inserts an APP1 Exif segment holding only the orientation tag after SOI.
pub fn with_exif_orientation(jpeg: &[u8], orientation: u16) -> Vec<u8> {
    assert_eq!(&jpeg[..2], b"\xFF\xD8", "not a JPEG");
    let mut tiff = Vec::new();
    tiff.extend_from_slice(b"MM\x00\x2A");
    tiff.extend_from_slice(&8u32.to_be_bytes()); // first IFD offset
    tiff.extend_from_slice(&1u16.to_be_bytes()); // one entry
    tiff.extend_from_slice(&0x0112u16.to_be_bytes()); // Orientation
    tiff.extend_from_slice(&3u16.to_be_bytes()); // SHORT
    tiff.extend_from_slice(&1u32.to_be_bytes()); // count
    tiff.extend_from_slice(&orientation.to_be_bytes());
    tiff.extend_from_slice(&[0, 0]);
    tiff.extend_from_slice(&0u32.to_be_bytes()); // no next IFD
    let mut payload = b"Exif\x00\x00".to_vec();
    payload.extend_from_slice(&tiff);
    let mut out = jpeg[..2].to_vec();
    out.extend_from_slice(&[0xFF, 0xE1]);
    out.extend_from_slice(&((payload.len() + 2) as u16).to_be_bytes());
    out.extend_from_slice(&payload);
    out.extend_from_slice(&jpeg[2..]);
    out
}

/// `img` scaled to about `megapixels` MP and encoded as JPEG.
pub fn scaled_jpeg(img: &DynamicImage, megapixels: f64) -> Vec<u8> {
    facecompare::faces::reencode::scaled_jpeg(img, megapixels).expect("jpeg encode")
}

/// A JPEG signature followed by `size` bytes in all: over the size limit
/// without being a real image.
pub fn oversized_jpeg(size: usize) -> Vec<u8> {
    let mut v = b"\xFF\xD8\xFF\xE0\x00\x10JFIF\x00".to_vec();
    v.resize(size, 0x55);
    v
}

/// A poor capture of a fixture (issue 20's degradations), as a JPEG:
/// Gaussian blur of `sigma` pixels, then pixel values × `gain` (clipped).
pub fn degraded_jpeg(bytes: &[u8], sigma: f32, gain: f32) -> Vec<u8> {
    let mut img = decode(bytes).to_rgb8();
    if sigma > 0.0 {
        img = image::imageops::blur(&img, sigma);
    }
    for p in img.pixels_mut() {
        p.0 =
            p.0.map(|c| (c as f32 * gain).round().clamp(0.0, 255.0) as u8);
    }
    jpeg(&DynamicImage::ImageRgb8(img), 92)
}

/// A lossless WebP of `w`×`h` pixels that a decoder reconstructs pixel by
/// pixel (two colours in a sparse pattern: no single-colour shortcut), a
/// few hundred KB for millions of pixels. WebP has no reduced-scale decode,
/// so it costs its full size: the costly image of the fairness tests.
pub fn costly_webp(w: u32, h: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        if (x * 7 + y * 13) % 61 == 0 {
            image::Rgb([200, 30, 30])
        } else {
            image::Rgb([90, 90, 90])
        }
    });
    encode(&DynamicImage::ImageRgb8(img), ImageFormat::WebP)
}

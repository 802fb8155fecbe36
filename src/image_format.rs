//! Image format detection from the leading bytes ("magic numbers"): the one
//! sniffer of the inputs (what a field holds) and of the decoder (what to decode).
//!
//! The format is judged from the bytes only, never from a file name or a
//! declared content type. Formats we cannot process are recognised too, so a
//! client gets `unsupported_image_format` ("this is a GIF") rather than a
//! vague decode failure or, for strings, a misreading as an S3 key.

/// Bytes needed to recognise every format below (WebP and ISO-BMFF need 12).
pub const SNIFF_LEN: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageFormat {
    Jpeg,
    Png,
    Webp,
    Gif,
    Bmp,
    Tiff,
    Heic,
    Avif,
    JpegXl,
    Ico,
}

impl ImageFormat {
    /// Formats the face engine decodes.
    pub fn is_supported(self) -> bool {
        matches!(
            self,
            ImageFormat::Jpeg | ImageFormat::Png | ImageFormat::Webp
        )
    }

    pub fn name(self) -> &'static str {
        match self {
            ImageFormat::Jpeg => "JPEG",
            ImageFormat::Png => "PNG",
            ImageFormat::Webp => "WebP",
            ImageFormat::Gif => "GIF",
            ImageFormat::Bmp => "BMP",
            ImageFormat::Tiff => "TIFF",
            ImageFormat::Heic => "HEIC/HEIF",
            ImageFormat::Avif => "AVIF",
            ImageFormat::JpegXl => "JPEG XL",
            ImageFormat::Ico => "ICO",
        }
    }
}

/// Recognises an image from its first bytes; works on a prefix of at least
/// [`SNIFF_LEN`] bytes (shorter inputs only match the short signatures).
pub fn sniff(b: &[u8]) -> Option<ImageFormat> {
    if b.starts_with(&[0xFF, 0xD8, 0xFF]) {
        return Some(ImageFormat::Jpeg);
    }
    if b.starts_with(b"\x89PNG\r\n\x1a\n") {
        return Some(ImageFormat::Png);
    }
    if b.len() >= 12 && &b[0..4] == b"RIFF" && &b[8..12] == b"WEBP" {
        return Some(ImageFormat::Webp);
    }
    if b.starts_with(b"GIF87a") || b.starts_with(b"GIF89a") {
        return Some(ImageFormat::Gif);
    }
    // "BM" alone is too weak (plenty of text starts with it): also require the
    // reserved header words to be zero, as every BMP writer leaves them.
    if b.len() >= 10 && b.starts_with(b"BM") && b[6..10] == [0, 0, 0, 0] {
        return Some(ImageFormat::Bmp);
    }
    if b.starts_with(b"II*\0") || b.starts_with(b"MM\0*") {
        return Some(ImageFormat::Tiff);
    }
    if b.starts_with(&[0xFF, 0x0A]) || b.starts_with(b"\0\0\0\x0CJXL \r\n\x87\n") {
        return Some(ImageFormat::JpegXl);
    }
    if b.len() >= 12 && &b[4..8] == b"ftyp" {
        match &b[8..12] {
            b"avif" | b"avis" => return Some(ImageFormat::Avif),
            b"heic" | b"heix" | b"hevc" | b"hevx" | b"heim" | b"heis" | b"mif1" | b"msf1" => {
                return Some(ImageFormat::Heic);
            }
            _ => {}
        }
    }
    if b.len() >= 6 && b[0..4] == [0, 0, 1, 0] && b[4..6] != [0, 0] {
        return Some(ImageFormat::Ico);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_signatures() {
        assert_eq!(
            sniff(&[0xFF, 0xD8, 0xFF, 0xE0, 0, 0x10]),
            Some(ImageFormat::Jpeg)
        );
        assert_eq!(
            sniff(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR"),
            Some(ImageFormat::Png)
        );
        assert_eq!(sniff(b"RIFF\x24\0\0\0WEBPVP8 "), Some(ImageFormat::Webp));
        assert_eq!(sniff(b"GIF89a\x01\0\x01\0"), Some(ImageFormat::Gif));
        assert_eq!(sniff(b"BM\x46\0\0\0\0\0\0\0\x36\0"), Some(ImageFormat::Bmp));
        assert_eq!(sniff(b"II*\0\x08\0\0\0"), Some(ImageFormat::Tiff));
        assert_eq!(
            sniff(b"\0\0\0\x18ftypheic\0\0\0\0"),
            Some(ImageFormat::Heic)
        );
        assert_eq!(
            sniff(b"\0\0\0\x1cftypavif\0\0\0\0"),
            Some(ImageFormat::Avif)
        );
        assert!(ImageFormat::Webp.is_supported());
        assert!(!ImageFormat::Gif.is_supported());
    }

    #[test]
    fn rejects_lookalikes() {
        assert_eq!(sniff(b""), None);
        assert_eq!(sniff(b"\xFF\xD8"), None);
        assert_eq!(sniff(b"RIFF\x24\0\0\0WAVEfmt "), None);
        assert_eq!(sniff(b"BMW is a car brand"), None);
        assert_eq!(sniff(b"orgs/acme/selfie.jpg"), None);
        assert_eq!(sniff(b"\0\0\0\x18ftypmp42\0\0\0\0"), None);
    }
}

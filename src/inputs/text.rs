//! Classifies a string input: a `data:` URI, base64 / base64url (padding
//! optional, whitespace and line breaks tolerated) or an S3 reference.
//!
//! The rule (documented in docs/api.md):
//! 1. `data:...;base64,PAYLOAD` is always an image: PAYLOAD must decode to a
//!    supported image.
//! 2. `s3://bucket/key` is always an S3 reference.
//! 3. A string made of base64 characters whose first bytes decode to a known
//!    image signature is an image (JPEG/PNG/WebP accepted; GIF, BMP, TIFF,
//!    HEIC, ... rejected as `unsupported_image_format`). Once the signature
//!    matched, a decoding error further on is `invalid_base64`, never an S3 key.
//! 4. Otherwise the string is an S3 key if it is one S3 could hold: at most
//!    1024 bytes and no control characters (line breaks included).
//! 5. Anything else (e.g. 4 KB of base64 that is not an image) is `invalid_base64`.
use base64::{
    Engine as _, alphabet,
    engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig},
};
use bytes::Bytes;

use super::{ImageInput, InputError, MAX_IMAGE_BYTES, s3::MAX_KEY_BYTES};
use crate::image_format;

const LENIENT: GeneralPurposeConfig = GeneralPurposeConfig::new()
    .with_decode_padding_mode(DecodePaddingMode::Indifferent)
    .with_decode_allow_trailing_bits(true);
const STANDARD: GeneralPurpose = GeneralPurpose::new(&alphabet::STANDARD, LENIENT);
const URL_SAFE: GeneralPurpose = GeneralPurpose::new(&alphabet::URL_SAFE, LENIENT);

fn is_b64_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'+' | b'/' | b'-' | b'_' | b'=')
}

/// Base64 text with ASCII whitespace removed (MIME line breaks, pasted indentation).
fn compact(s: &str) -> std::borrow::Cow<'_, [u8]> {
    if s.bytes().any(|c| c.is_ascii_whitespace()) {
        std::borrow::Cow::Owned(s.bytes().filter(|c| !c.is_ascii_whitespace()).collect())
    } else {
        std::borrow::Cow::Borrowed(s.as_bytes())
    }
}

/// The decoder for this text: standard or URL-safe alphabet, never both mixed.
fn engine_for(b64: &[u8]) -> Result<&'static GeneralPurpose, String> {
    let url = b64.iter().any(|c| matches!(c, b'-' | b'_'));
    let std = b64.iter().any(|c| matches!(c, b'+' | b'/'));
    match (url, std) {
        (true, true) => {
            Err("invalid base64: mixes the standard (+/) and URL-safe (-_) alphabets".into())
        }
        (true, false) => Ok(&URL_SAFE),
        _ => Ok(&STANDARD),
    }
}

/// Decoded size of base64 text, computed without decoding.
fn decoded_len(b64: &[u8]) -> u64 {
    let unpadded = b64.iter().rev().skip_while(|&&c| c == b'=').count() as u64;
    unpadded * 3 / 4
}

/// Decodes just enough leading characters to sniff the image signature.
fn sniff_prefix(b64: &[u8]) -> Option<image_format::ImageFormat> {
    let take = (image_format::SNIFF_LEN.div_ceil(3) * 4).min(b64.len() / 4 * 4);
    let prefix: Vec<u8> = b64[..take]
        .iter()
        .copied()
        .take_while(|&c| c != b'=')
        .collect();
    // The prefix alone picks the alphabet: a mixed-alphabet string with an
    // image signature must end as invalid_base64, not as an S3 key.
    let bytes = engine_for(&prefix).ok()?.decode(&prefix).ok()?;
    image_format::sniff(&bytes)
}

fn decode(field: &str, b64: &[u8]) -> Result<Vec<u8>, InputError> {
    let invalid = |message: String| InputError::InvalidBase64 {
        field: field.to_string(),
        message,
    };
    let engine = engine_for(b64).map_err(invalid)?;
    let size = decoded_len(b64);
    if size > MAX_IMAGE_BYTES as u64 {
        return Err(InputError::ImageTooLarge {
            field: field.to_string(),
            size: Some(size),
        });
    }
    engine
        .decode(b64)
        .map_err(|e| invalid(format!("invalid base64: {e}")))
}

/// Decoded bytes that must be a supported image.
fn image(field: &str, bytes: Vec<u8>) -> Result<ImageInput, InputError> {
    super::check_image_bytes(field, &bytes)?;
    Ok(ImageInput::Bytes(Bytes::from(bytes)))
}

fn plausible_s3_key(s: &str) -> bool {
    s.len() <= MAX_KEY_BYTES && !s.chars().any(char::is_control)
}

/// Classifies one string input of field `field` (see the module docs).
pub fn classify(field: &str, s: &str) -> Result<ImageInput, InputError> {
    let s = s.trim();
    if s.is_empty() {
        return Err(InputError::EmptyField {
            field: field.to_string(),
        });
    }
    if s.len() >= 5 && s[..5].eq_ignore_ascii_case("data:") {
        return data_uri(field, s);
    }
    if s.starts_with("s3://") {
        return Ok(ImageInput::S3(s.to_string()));
    }
    let b64 = compact(s);
    if b64.len() >= 4
        && b64.iter().all(|&c| is_b64_char(c))
        && let Some(format) = sniff_prefix(&b64)
    {
        if !format.is_supported() {
            return Err(InputError::UnsupportedImageFormat {
                field: field.to_string(),
                detected: Some(format.name()),
            });
        }
        return image(field, decode(field, &b64)?);
    }
    if plausible_s3_key(s) {
        return Ok(ImageInput::S3(s.to_string()));
    }
    Err(InputError::InvalidBase64 {
        field: field.to_string(),
        message: format!(
            "neither a base64-encoded JPEG, PNG or WebP image nor an S3 key \
             (S3 keys are at most {MAX_KEY_BYTES} bytes without control characters)"
        ),
    })
}

/// `data:[<media type>][;params];base64,<payload>`; the media type is not
/// trusted: the payload's bytes decide.
fn data_uri(field: &str, s: &str) -> Result<ImageInput, InputError> {
    let invalid = |message: &str| InputError::InvalidBase64 {
        field: field.to_string(),
        message: message.to_string(),
    };
    let (header, payload) = s
        .split_once(',')
        .ok_or_else(|| invalid("data URI without a comma"))?;
    if !header.to_ascii_lowercase().ends_with(";base64") {
        return Err(invalid(
            "data URI must be base64-encoded (data:image/jpeg;base64,...)",
        ));
    }
    let b64 = compact(payload);
    if b64.is_empty() {
        return Err(InputError::EmptyField {
            field: field.to_string(),
        });
    }
    if !b64.iter().all(|&c| is_b64_char(c)) {
        return Err(invalid("invalid base64 in data URI payload"));
    }
    image(field, decode(field, &b64)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    const JPEG: &[u8] =
        b"\xFF\xD8\xFF\xE0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00\xFF\xDB\xFE\xFF\xFB";
    const PNG: &[u8] =
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x02";

    fn bytes(r: Result<ImageInput, InputError>) -> Vec<u8> {
        match r.expect("classified") {
            ImageInput::Bytes(b) => b.to_vec(),
            ImageInput::S3(k) => panic!("read as S3 key {k:?}"),
        }
    }

    fn code(r: Result<ImageInput, InputError>) -> &'static str {
        r.expect_err("an error").code()
    }

    #[test]
    fn base64_alphabets_and_padding() {
        let std_padded = STANDARD.encode(JPEG);
        assert!(std_padded.contains('+') || std_padded.contains('/') || std_padded.ends_with('='));
        assert_eq!(bytes(classify("source", &std_padded)), JPEG);
        assert_eq!(
            bytes(classify("source", std_padded.trim_end_matches('='))),
            JPEG
        );
        let url = URL_SAFE.encode(JPEG).replace('=', "");
        assert!(url.contains('-') || url.contains('_'), "{url}");
        assert_eq!(bytes(classify("source", &url)), JPEG);
        assert_eq!(bytes(classify("source", &STANDARD.encode(PNG))), PNG);
    }

    #[test]
    fn whitespace_and_line_breaks_are_tolerated() {
        let b64 = STANDARD.encode(JPEG);
        let wrapped: String = b64
            .as_bytes()
            .chunks(8)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect::<Vec<_>>()
            .join("\r\n ");
        assert_eq!(bytes(classify("target", &format!("  {wrapped}\n"))), JPEG);
    }

    #[test]
    fn data_uris() {
        let b64 = STANDARD.encode(PNG);
        assert_eq!(
            bytes(classify("source", &format!("data:image/png;base64,{b64}"))),
            PNG
        );
        // The declared media type is not trusted, the bytes decide.
        assert_eq!(
            bytes(classify("source", &format!("DATA:image/gif;BASE64,{b64}"))),
            PNG
        );
        assert_eq!(
            code(classify("source", "data:image/png,abc")),
            "invalid_base64"
        );
        assert_eq!(
            code(classify("source", "data:image/png;base64,")),
            "empty_field"
        );
        assert_eq!(
            code(classify("source", "data:image/png;base64,aGVsbG8gd29ybGQ=")),
            "unsupported_image_format"
        );
        assert_eq!(
            code(classify("source", "data:image/png;base64,!!!")),
            "invalid_base64"
        );
    }

    #[test]
    fn s3_keys() {
        for key in [
            "orgs/acme/selfie.jpg",
            "s3://bucket/orgs/acme/a b.png",
            "selfie",
            "orgs/acme/../b/x.jpg",
        ] {
            assert_eq!(
                classify("target", key).unwrap(),
                ImageInput::S3(key.to_string()),
                "{key}"
            );
        }
        assert_eq!(
            classify("target", "  orgs/x.jpg \n").unwrap(),
            ImageInput::S3("orgs/x.jpg".into())
        );
        // Valid base64 of non-image bytes, short enough to be a key: an S3 key.
        assert_eq!(
            classify("target", "aGVsbG8=").unwrap(),
            ImageInput::S3("aGVsbG8=".into())
        );
    }

    #[test]
    fn neither_image_nor_key_is_invalid_base64() {
        let junk = STANDARD.encode(vec![7u8; 3000]);
        let e = classify("source", &junk).unwrap_err();
        assert_eq!(e.code(), "invalid_base64");
        assert!(e.to_string().starts_with("source: "), "{e}");
        assert_eq!(code(classify("source", "orgs/a\nb.jpg")), "invalid_base64");
    }

    #[test]
    fn corrupt_base64_after_an_image_signature_is_invalid_base64() {
        let mut b64 = STANDARD.encode(JPEG);
        b64.insert_str(20, "=A=");
        assert_eq!(code(classify("source", &b64)), "invalid_base64");
        let mixed = format!("{}-_", STANDARD.encode(JPEG).trim_end_matches('='));
        assert_eq!(code(classify("source", &mixed)), "invalid_base64");
    }

    #[test]
    fn unsupported_formats_and_empty() {
        let gif = STANDARD.encode(b"GIF89a\x01\x00\x01\x00\x80\x00\x00\xff\xff\xff\x00\x00\x00");
        let e = classify("target", &gif).unwrap_err();
        assert_eq!(
            (e.code(), e.to_string().contains("GIF")),
            ("unsupported_image_format", true)
        );
        let bmp = STANDARD.encode(b"BM\x46\x00\x00\x00\x00\x00\x00\x00\x36\x00\x00\x00\x28\x00");
        assert_eq!(code(classify("target", &bmp)), "unsupported_image_format");
        assert_eq!(code(classify("target", "   ")), "empty_field");
    }

    #[test]
    fn size_is_checked_before_decoding() {
        let mut big = STANDARD.encode(JPEG);
        big.push_str(&"A".repeat(MAX_IMAGE_BYTES / 3 * 4 + 8));
        let e = classify("target", &big).unwrap_err();
        assert_eq!(e.code(), "image_too_large");
        assert!(
            e.to_string().starts_with("target: image is 15.0 MB")
                || e.to_string().contains("limit is 15 MB"),
            "{e}"
        );
    }
}

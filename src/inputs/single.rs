//! Reads a body that carries ONE image (`POST /v1/face/detect`): the field
//! `image`, as a multipart part or a JSON string, under the same rules as a
//! compare input ([`super::body`]): format sniffed from the bytes, base64 /
//! base64url / data URI, the 15 MB limit, other fields ignored, a field sent
//! twice refused.
//!
//! An S3 key is refused (`invalid_field_type`): this endpoint is not charged,
//! and an uncharged call that makes the server download objects would be a
//! cheap way to load the store.
use axum::body::Body;
use bytes::Bytes;

use super::{
    ImageInput, InputError, MAX_TEXT_BYTES,
    body::{BodyKind, read_fields},
};

/// The one field a single-image body carries.
pub const IMAGE_FIELD: &str = "image";

/// Largest single-image body: one image in its string form plus slack for
/// multipart headers, JSON punctuation and ignored small fields.
pub const MAX_SINGLE_BODY_BYTES: usize = MAX_TEXT_BYTES + 64 * 1024;

/// Reads and parses a single-image body into the image bytes.
pub async fn read_image_body(kind: BodyKind, body: Body) -> Result<Bytes, InputError> {
    let [input] = read_fields(kind, body, [IMAGE_FIELD], MAX_SINGLE_BODY_BYTES)
        .await
        .map_err(|e| match e {
            // Said for one image, not for a compare's pair.
            InputError::MissingField { field, hint } => InputError::MissingImage { field, hint },
            other => other,
        })?;
    match input {
        ImageInput::Bytes(b) => Ok(b),
        ImageInput::S3(_) => Err(InputError::S3NotAccepted {
            field: IMAGE_FIELD.into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inputs::body::body_kind;

    const JPEG: &[u8] = b"\xFF\xD8\xFF\xE0\x00\x10JFIF\x00\x01\x01\x00\x00\x01";

    async fn parse(ct: &str, body: Vec<u8>) -> Result<Bytes, InputError> {
        read_image_body(body_kind(Some(ct)).unwrap(), Body::from(body)).await
    }

    fn multipart(parts: &[(&str, Option<&str>, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, filename, data) in parts {
            out.extend_from_slice(b"--XyZ\r\n");
            let file = filename.map_or(String::new(), |f| format!("; filename=\"{f}\""));
            out.extend_from_slice(
                format!("Content-Disposition: form-data; name=\"{name}\"{file}\r\n\r\n").as_bytes(),
            );
            out.extend_from_slice(data);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"--XyZ--\r\n");
        out
    }

    const MP: &str = "multipart/form-data; boundary=XyZ";

    #[tokio::test]
    async fn reads_the_image_field_in_either_encoding() {
        use base64::Engine;
        let got = parse(
            MP,
            multipart(&[("note", None, b"hi"), ("image", Some("a.jpg"), JPEG)]),
        )
        .await
        .unwrap();
        assert_eq!(&got[..], JPEG);
        let b64 = base64::engine::general_purpose::STANDARD.encode(JPEG);
        let body = format!(r#"{{"image": "data:image/jpeg;base64,{b64}", "x": 1}}"#);
        let got = parse("application/json", body.into_bytes()).await.unwrap();
        assert_eq!(&got[..], JPEG);
    }

    #[tokio::test]
    async fn errors_name_the_image_field() {
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            (
                MP,
                multipart(&[("source", Some("a.jpg"), JPEG)]),
                "missing_field",
            ),
            (
                MP,
                multipart(&[
                    ("image", Some("a.jpg"), JPEG),
                    ("image", Some("b.jpg"), JPEG),
                ]),
                "duplicate_field",
            ),
            (
                MP,
                multipart(&[("image", Some("a.txt"), b"hello")]),
                "unsupported_image_format",
            ),
            (
                MP,
                multipart(&[("image", None, b"orgs/acme/a.jpg")]),
                "invalid_field_type",
            ),
            (
                "application/json",
                br#"{"image": 5}"#.to_vec(),
                "invalid_field_type",
            ),
            (
                "application/json",
                br#"{"image": null}"#.to_vec(),
                "missing_field",
            ),
            (
                "application/json",
                br#"{"image": "a", "image": "b"}"#.to_vec(),
                "duplicate_field",
            ),
            (
                "application/json",
                br#"{"image": "orgs/a/b.jpg"}"#.to_vec(),
                "invalid_field_type",
            ),
            (
                "application/json",
                br#"{"image": " "}"#.to_vec(),
                "empty_field",
            ),
        ];
        for (ct, body, code) in cases {
            let e = parse(ct, body.clone()).await.unwrap_err();
            assert_eq!(
                (e.code(), e.field()),
                (code, Some("image")),
                "{}",
                String::from_utf8_lossy(&body)
            );
        }
        let e = parse(MP, multipart(&[("source", Some("a.jpg"), JPEG)]))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("(the body has: source)"), "{e}");
        let e = parse("application/json", b"{".to_vec()).await.unwrap_err();
        assert_eq!(e.code(), "invalid_body");
    }

    #[tokio::test]
    async fn a_body_over_one_image_is_refused() {
        let big = vec![b'A'; MAX_SINGLE_BODY_BYTES + 1];
        let mut body = b"{\"image\": \"".to_vec();
        body.extend_from_slice(&big);
        body.extend_from_slice(b"\"}");
        let e = parse("application/json", body).await.unwrap_err();
        assert_eq!(e.code(), "body_too_large");
    }
}

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
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};

use super::{
    ImageInput, InputError, MAX_TEXT_BYTES,
    body::{
        BodyKind, classify_owned, classify_part, disposition_param, map_multer, missing_hint,
        read_part,
    },
};

/// The one field a single-image body carries.
pub const IMAGE_FIELD: &str = "image";

/// Largest single-image body: one image in its string form plus slack for
/// multipart headers, JSON punctuation and ignored small fields.
pub const MAX_SINGLE_BODY_BYTES: usize = MAX_TEXT_BYTES + 64 * 1024;

/// Reads and parses a single-image body into the image bytes.
pub async fn read_image_body(kind: BodyKind, body: Body) -> Result<Bytes, InputError> {
    let input = match kind {
        BodyKind::Json => read_json(body).await?,
        BodyKind::Multipart { boundary } => read_multipart(boundary, body).await?,
    };
    match input {
        ImageInput::Bytes(b) => Ok(b),
        ImageInput::S3(_) => Err(InputError::S3NotAccepted {
            field: IMAGE_FIELD.into(),
        }),
    }
}

fn missing(others: &[String]) -> InputError {
    InputError::MissingImage {
        field: IMAGE_FIELD.into(),
        hint: missing_hint(others),
    }
}

async fn read_json(body: Body) -> Result<ImageInput, InputError> {
    let mut stream = body.into_data_stream();
    let mut buf = BytesMut::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|_| InputError::InvalidBody {
            message: "the request body could not be read".into(),
        })?;
        if buf.len() + chunk.len() > MAX_SINGLE_BODY_BYTES {
            return Err(InputError::BodyTooLarge {
                limit: MAX_SINGLE_BODY_BYTES,
            });
        }
        buf.extend_from_slice(&chunk);
    }
    let buf = buf.freeze();
    let buf = match buf.strip_prefix(b"\xEF\xBB\xBF") {
        Some(_) => buf.slice(3..),
        None => buf,
    };
    let image = tokio::task::spawn_blocking(move || parse_json(&buf))
        .await
        .map_err(|_| InputError::InvalidBody {
            message: "the JSON body could not be parsed".into(),
        })??;
    classify_owned(IMAGE_FIELD, image).await
}

/// What the top-level JSON object held.
#[derive(Default)]
struct Top {
    image: Option<serde_json::Value>,
    duplicate: bool,
    others: Vec<String>,
}

struct TopVisitor;

impl<'de> Visitor<'de> for TopVisitor {
    type Value = Top;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON object with a string field image")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Top, A::Error> {
        let mut top = Top::default();
        while let Some(key) = map.next_key::<String>()? {
            if key == IMAGE_FIELD {
                let value: serde_json::Value = map.next_value()?;
                top.duplicate |= top.image.is_some();
                top.image = Some(value);
            } else {
                map.next_value::<IgnoredAny>()?;
                if top.others.len() < 10 {
                    top.others.push(key.chars().take(40).collect());
                }
            }
        }
        Ok(top)
    }
}

fn parse_json(buf: &[u8]) -> Result<String, InputError> {
    let mut de = serde_json::Deserializer::from_slice(buf);
    let top = de
        .deserialize_map(TopVisitor)
        .and_then(|top| de.end().map(|()| top))
        .map_err(|e| InputError::InvalidBody {
            message: format!("invalid JSON body: {e}"),
        })?;
    if top.duplicate {
        return Err(InputError::DuplicateField {
            field: IMAGE_FIELD.into(),
        });
    }
    let found = |what: &str| InputError::InvalidFieldType {
        field: IMAGE_FIELD.into(),
        found: what.into(),
    };
    match top.image {
        Some(serde_json::Value::String(s)) => Ok(s),
        None | Some(serde_json::Value::Null) => Err(missing(&top.others)),
        Some(serde_json::Value::Bool(_)) => Err(found("a boolean")),
        Some(serde_json::Value::Number(_)) => Err(found("a number")),
        Some(serde_json::Value::Array(_)) => Err(found("an array")),
        Some(serde_json::Value::Object(_)) => Err(found("an object")),
    }
}

async fn read_multipart(boundary: String, body: Body) -> Result<ImageInput, InputError> {
    let constraints = multer::Constraints::new()
        .size_limit(multer::SizeLimit::new().whole_stream(MAX_SINGLE_BODY_BYTES as u64));
    let mut mp =
        multer::Multipart::with_constraints(body.into_data_stream(), boundary, constraints);
    let mut image: Option<(Bytes, bool)> = None;
    let mut others: Vec<String> = Vec::new();
    while let Some(mut part) = mp.next_field().await.map_err(|e| match map_multer(e) {
        // The compare limit is named by `map_multer`; this body has its own.
        InputError::BodyTooLarge { .. } => InputError::BodyTooLarge {
            limit: MAX_SINGLE_BODY_BYTES,
        },
        other => other,
    })? {
        let disposition = part
            .headers()
            .get(http::header::CONTENT_DISPOSITION)
            .map(|v| v.as_bytes().to_vec())
            .unwrap_or_default();
        let name = disposition_param(&disposition, "name");
        if name.as_deref() != Some(IMAGE_FIELD) {
            if let Some(n) = name
                && others.len() < 10
            {
                others.push(n.chars().take(40).collect());
            }
            while part.chunk().await.map_err(map_multer)?.is_some() {}
            continue;
        }
        if image.is_some() {
            return Err(InputError::DuplicateField {
                field: IMAGE_FIELD.into(),
            });
        }
        let is_file = disposition_param(&disposition, "filename").is_some()
            || disposition_param(&disposition, "filename*").is_some();
        image = Some((read_part(IMAGE_FIELD, &mut part).await?, is_file));
    }
    let (data, is_file) = image.ok_or_else(|| missing(&others))?;
    classify_part(IMAGE_FIELD, data, is_file).await
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

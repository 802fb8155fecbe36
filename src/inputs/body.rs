//! Reads a request body (multipart/form-data or JSON) into its image inputs
//! — a compare's `source` and `target` ([`CompareInputs`]), or the one image
//! of [`super::single`] — enforcing size limits while streaming.
//!
//! Decisions (docs/api.md, "Inputs"):
//! - Fields other than `source` and `target` are ignored (forward
//!   compatibility with clients that send extra metadata); a missing field's
//!   message lists the names that were sent, so a typo is easy to spot.
//! - A field sent twice is refused (`duplicate_field`): which one would win is
//!   not obvious.
//! - A multipart part with a filename is a file: raw image bytes, sniffed
//!   for a signature; anything else is `unsupported_image_format` (a text
//!   file uploaded by mistake is never read as an S3 key). A part without a
//!   filename is sniffed too: an image signature makes it an image, other
//!   UTF-8 content is classified like a JSON string (base64, data URI, S3 key).
//! - Parameter names in `Content-Disposition` are case-insensitive
//!   (`NAME=`, `FILENAME=`), as RFC 7578/6266 say; a JSON body may start
//!   with a UTF-8 byte-order mark.
use axum::body::Body;
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};

use super::{
    CompareInputs, ImageInput, InputError, MAX_BODY_BYTES, MAX_IMAGE_BYTES, MAX_TEXT_BYTES, text,
};
use crate::image_format;

/// Strings above this size are decoded on the blocking pool, off the async workers.
const BLOCKING_DECODE_BYTES: usize = 256 * 1024;

/// How a body is encoded, from its `Content-Type`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyKind {
    Json,
    Multipart { boundary: String },
}

/// Judges the `Content-Type` alone, before any byte of the body is read.
pub fn body_kind(content_type: Option<&str>) -> Result<BodyKind, InputError> {
    let ct = content_type.unwrap_or("").trim();
    let essence = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
    {
        Ok(BodyKind::Json)
    } else if essence == "multipart/form-data" {
        let boundary = multer::parse_boundary(ct).map_err(|_| InputError::InvalidBody {
            message: "multipart/form-data without a boundary parameter".into(),
        })?;
        Ok(BodyKind::Multipart { boundary })
    } else {
        Err(InputError::UnsupportedContentType {
            content_type: if ct.is_empty() {
                "(none)".into()
            } else {
                ct.chars().take(100).collect()
            },
        })
    }
}

/// Reads and parses the body according to its `Content-Type`.
pub async fn read_compare_body(
    content_type: Option<&str>,
    body: Body,
) -> Result<CompareInputs, InputError> {
    read_body(body_kind(content_type)?, body).await
}

pub async fn read_body(kind: BodyKind, body: Body) -> Result<CompareInputs, InputError> {
    let [source, target] = read_fields(kind, body, ["source", "target"], MAX_BODY_BYTES).await?;
    Ok(CompareInputs { source, target })
}

/// Reads the image inputs named `fields` (each required, at most once; other
/// fields ignored) from a body of at most `limit` bytes. The compare and the
/// one-image body ([`super::single`]) share these rules.
pub(super) async fn read_fields<const N: usize>(
    kind: BodyKind,
    body: Body,
    fields: [&'static str; N],
    limit: usize,
) -> Result<[ImageInput; N], InputError> {
    match kind {
        BodyKind::Json => read_json(body, fields, limit).await,
        BodyKind::Multipart { boundary } => read_multipart(boundary, body, fields, limit).await,
    }
}

async fn read_json<const N: usize>(
    body: Body,
    fields: [&'static str; N],
    limit: usize,
) -> Result<[ImageInput; N], InputError> {
    let mut stream = body.into_data_stream();
    let mut buf = BytesMut::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| InputError::read_failed(&e))?;
        if buf.len() + chunk.len() > limit {
            return Err(InputError::BodyTooLarge { limit });
        }
        buf.extend_from_slice(&chunk);
    }
    let buf = buf.freeze();
    // Some Windows tools prefix a byte-order mark; JSON parsers widely accept it.
    let buf = match buf.strip_prefix(b"\xEF\xBB\xBF") {
        Some(_) => buf.slice(3..),
        None => buf,
    };
    let strings = tokio::task::spawn_blocking(move || parse_json(&buf, fields))
        .await
        .map_err(|_| InputError::InvalidBody {
            message: "the JSON body could not be parsed".into(),
        })??;
    let mut inputs = Vec::with_capacity(N);
    for (field, s) in fields.into_iter().zip(strings) {
        inputs.push(classify_owned(field, s).await?);
    }
    Ok(inputs
        .try_into()
        .unwrap_or_else(|_| unreachable!("one input per field")))
}

/// What one JSON member held.
enum JsonField {
    Missing,
    Null,
    Str(String),
    Other(&'static str),
}

struct Top<const N: usize> {
    values: [JsonField; N],
    others: Vec<String>,
    duplicate: Option<&'static str>,
}

struct TopVisitor<const N: usize>([&'static str; N]);

impl<'de, const N: usize> Visitor<'de> for TopVisitor<N> {
    type Value = Top<N>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match self.0.as_slice() {
            [one] => write!(f, "a JSON object with a string field {one}"),
            all => write!(f, "a JSON object with string fields {}", all.join(" and ")),
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Top<N>, A::Error> {
        let mut top = Top {
            values: std::array::from_fn(|_| JsonField::Missing),
            others: Vec::new(),
            duplicate: None,
        };
        while let Some(key) = map.next_key::<String>()? {
            let Some(i) = self.0.iter().position(|f| *f == key) else {
                map.next_value::<IgnoredAny>()?;
                if top.others.len() < 10 {
                    top.others.push(key.chars().take(40).collect());
                }
                continue;
            };
            let value: serde_json::Value = map.next_value()?;
            if !matches!(top.values[i], JsonField::Missing) {
                top.duplicate.get_or_insert(self.0[i]);
            }
            top.values[i] = match value {
                serde_json::Value::String(s) => JsonField::Str(s),
                serde_json::Value::Null => JsonField::Null,
                serde_json::Value::Bool(_) => JsonField::Other("a boolean"),
                serde_json::Value::Number(_) => JsonField::Other("a number"),
                serde_json::Value::Array(_) => JsonField::Other("an array"),
                serde_json::Value::Object(_) => JsonField::Other("an object"),
            };
        }
        Ok(top)
    }
}

fn missing_hint(others: &[String]) -> String {
    if others.is_empty() {
        String::new()
    } else {
        format!(" (the body has: {})", others.join(", "))
    }
}

fn parse_json<const N: usize>(
    buf: &[u8],
    fields: [&'static str; N],
) -> Result<Vec<String>, InputError> {
    let mut de = serde_json::Deserializer::from_slice(buf);
    let top = de
        .deserialize_map(TopVisitor(fields))
        .and_then(|top| de.end().map(|()| top))
        .map_err(|e| InputError::InvalidBody {
            message: format!("invalid JSON body: {e}"),
        })?;
    if let Some(field) = top.duplicate {
        return Err(InputError::DuplicateField {
            field: field.into(),
        });
    }
    let others = top.others;
    fields
        .into_iter()
        .zip(top.values)
        .map(|(field, v)| match v {
            JsonField::Str(s) => Ok(s),
            JsonField::Missing | JsonField::Null => Err(InputError::MissingField {
                field: field.into(),
                hint: missing_hint(&others),
            }),
            JsonField::Other(found) => Err(InputError::InvalidFieldType {
                field: field.into(),
                found: found.into(),
            }),
        })
        .collect()
}

async fn classify_owned(field: &'static str, s: String) -> Result<ImageInput, InputError> {
    if s.len() < BLOCKING_DECODE_BYTES {
        return text::classify(field, &s);
    }
    tokio::task::spawn_blocking(move || text::classify(field, &s))
        .await
        .unwrap_or_else(|_| {
            Err(InputError::InvalidBase64 {
                field: field.into(),
                message: "could not be decoded".into(),
            })
        })
}

fn map_multer(e: multer::Error, limit: usize) -> InputError {
    match e {
        multer::Error::StreamSizeExceeded { .. } => InputError::BodyTooLarge { limit },
        multer::Error::StreamReadFailed(e) => InputError::read_failed(&*e),
        other => InputError::InvalidBody {
            message: format!("invalid multipart body: {other}"),
        },
    }
}

async fn read_multipart<const N: usize>(
    boundary: String,
    body: Body,
    fields: [&'static str; N],
    limit: usize,
) -> Result<[ImageInput; N], InputError> {
    let constraints =
        multer::Constraints::new().size_limit(multer::SizeLimit::new().whole_stream(limit as u64));
    let mut mp =
        multer::Multipart::with_constraints(body.into_data_stream(), boundary, constraints);
    let mut slots: [Option<(Bytes, bool)>; N] = std::array::from_fn(|_| None);
    let mut others: Vec<String> = Vec::new();
    let multer_error = |e| map_multer(e, limit);
    let parts = async {
        while let Some(mut part) = mp.next_field().await.map_err(multer_error)? {
            // multer matches `name=` case-sensitively: read the header ourselves.
            let disposition = part
                .headers()
                .get(http::header::CONTENT_DISPOSITION)
                .map(|v| v.as_bytes().to_vec())
                .unwrap_or_default();
            let name = disposition_param(&disposition, "name");
            let is_file = disposition_param(&disposition, "filename").is_some()
                || disposition_param(&disposition, "filename*").is_some();
            let Some(i) = fields.iter().position(|f| Some(*f) == name.as_deref()) else {
                if let Some(n) = name
                    && others.len() < 10
                {
                    others.push(n.chars().take(40).collect());
                }
                while part.chunk().await.map_err(multer_error)?.is_some() {}
                continue;
            };
            if slots[i].is_some() {
                return Err(InputError::DuplicateField {
                    field: fields[i].into(),
                });
            }
            slots[i] = Some((read_part(fields[i], &mut part, limit).await?, is_file));
        }
        Ok(())
    };
    if let Err(e) = parts.await {
        // Read the rest (within the body limit) so that the client, still
        // sending, gets this answer rather than a reset connection.
        if !matches!(
            e,
            InputError::BodyTooLarge { .. }
                | InputError::InvalidBody { .. }
                | InputError::BodyTooSlow { .. }
                | InputError::BodyBudgetSpent
        ) {
            while let Ok(Some(mut part)) = mp.next_field().await {
                while let Ok(Some(_)) = part.chunk().await {}
            }
        }
        return Err(e);
    }
    let mut inputs = Vec::with_capacity(N);
    for (field, slot) in fields.into_iter().zip(slots) {
        let (data, is_file) = slot.ok_or_else(|| InputError::MissingField {
            field: field.into(),
            hint: missing_hint(&others),
        })?;
        inputs.push((field, data, is_file));
    }
    let mut out = Vec::with_capacity(N);
    for (field, data, is_file) in inputs {
        out.push(classify_part(field, data, is_file).await?);
    }
    Ok(out
        .try_into()
        .unwrap_or_else(|_| unreachable!("one input per field")))
}

/// A `Content-Disposition` parameter, its name matched case-insensitively;
/// the value quoted (with `\` escapes) or a bare token.
fn disposition_param(header: &[u8], key: &str) -> Option<String> {
    let text = String::from_utf8_lossy(header);
    let mut rest = text.split_once(';')?.1;
    loop {
        let (k, after) = rest.split_once('=')?;
        let after = after.trim_start();
        let (value, next) = if let Some(quoted) = after.strip_prefix('"') {
            let mut value = String::new();
            let mut chars = quoted.char_indices();
            let mut end = quoted.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, e)) = chars.next() {
                            value.push(e);
                        }
                    }
                    '"' => {
                        end = i + 1;
                        break;
                    }
                    c => value.push(c),
                }
            }
            let next = quoted[end..].split_once(';').map(|(_, n)| n);
            (value, next)
        } else {
            match after.split_once(';') {
                Some((v, n)) => (v.trim().to_string(), Some(n)),
                None => (after.trim().to_string(), None),
            }
        };
        if k.trim().eq_ignore_ascii_case(key) {
            return Some(value);
        }
        rest = next?;
    }
}

/// Buffers one part up to its limit: 15 MB once its bytes show an image
/// signature, the base64 size of 15 MB otherwise. Past the limit the rest is
/// only counted (to report the size), not buffered.
async fn read_part(
    field: &str,
    part: &mut multer::Field<'_>,
    body_limit: usize,
) -> Result<Bytes, InputError> {
    let multer_error = |e| map_multer(e, body_limit);
    let mut buf = BytesMut::new();
    while let Some(chunk) = part.chunk().await.map_err(multer_error)? {
        let mut head: Vec<u8> = buf.iter().take(image_format::SNIFF_LEN).copied().collect();
        head.extend(chunk.iter().take(image_format::SNIFF_LEN - head.len()));
        let limit = if image_format::sniff(&head).is_some() {
            MAX_IMAGE_BYTES
        } else {
            MAX_TEXT_BYTES
        };
        if buf.len() + chunk.len() > limit {
            let mut size = (buf.len() + chunk.len()) as u64;
            drop(buf);
            while let Some(rest) = part.chunk().await.map_err(multer_error)? {
                size += rest.len() as u64;
            }
            let is_image = limit == MAX_IMAGE_BYTES;
            return Err(InputError::ImageTooLarge {
                field: field.into(),
                // A text part's decoded size is about 3/4 of what was sent.
                size: Some(if is_image { size } else { size / 4 * 3 }),
            });
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

async fn classify_part(
    field: &'static str,
    data: Bytes,
    is_file: bool,
) -> Result<ImageInput, InputError> {
    if data.is_empty() {
        return Err(InputError::EmptyField {
            field: field.into(),
        });
    }
    if let Some(format) = image_format::sniff(&data) {
        if !format.is_supported() {
            return Err(InputError::UnsupportedImageFormat {
                field: field.into(),
                detected: Some(format.name()),
            });
        }
        return Ok(ImageInput::Bytes(data));
    }
    if is_file {
        return Err(InputError::UnsupportedImageFormat {
            field: field.into(),
            detected: None,
        });
    }
    match String::from_utf8(data.to_vec()) {
        Ok(s) => classify_owned(field, s).await,
        Err(_) => Err(InputError::UnsupportedImageFormat {
            field: field.into(),
            detected: None,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const JPEG: &[u8] = b"\xFF\xD8\xFF\xE0\x00\x10JFIF\x00\x01\x01\x00\x00\x01";

    fn multipart(boundary: &str, parts: &[(&str, Option<&str>, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, filename, data) in parts {
            out.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
            match filename {
                Some(f) => out.extend_from_slice(
                    format!("Content-Disposition: form-data; name=\"{name}\"; filename=\"{f}\"\r\nContent-Type: text/plain\r\n\r\n")
                        .as_bytes(),
                ),
                None => out.extend_from_slice(format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n").as_bytes()),
            }
            out.extend_from_slice(data);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
        out
    }

    async fn parse(ct: &str, body: Vec<u8>) -> Result<CompareInputs, InputError> {
        read_compare_body(Some(ct), Body::from(body)).await
    }

    #[tokio::test]
    async fn json_strings() {
        let body = br#"{"source": "orgs/a/1.jpg", "target": "s3://b/orgs/a/2.jpg", "extra": [1]}"#
            .to_vec();
        let got = parse("application/json; charset=utf-8", body)
            .await
            .unwrap();
        assert_eq!(got.source, ImageInput::S3("orgs/a/1.jpg".into()));
        assert_eq!(got.target, ImageInput::S3("s3://b/orgs/a/2.jpg".into()));
    }

    #[tokio::test]
    async fn json_errors_have_codes_and_fields() {
        let cases: &[(&[u8], &str, Option<&str>)] = &[
            (b"{\"source\": \"a\"", "invalid_body", None),
            (b"[1,2]", "invalid_body", None),
            (
                b"{\"source\": \"a\", \"target\": \"b\"} x",
                "invalid_body",
                None,
            ),
            (b"{\"target\": \"b\"}", "missing_field", Some("source")),
            (
                b"{\"source\": \"a\", \"target\": null}",
                "missing_field",
                Some("target"),
            ),
            (
                b"{\"source\": \"a\", \"target\": \" \"}",
                "empty_field",
                Some("target"),
            ),
            (
                b"{\"source\": 5, \"target\": \"b\"}",
                "invalid_field_type",
                Some("source"),
            ),
            (
                b"{\"source\": \"a\", \"source\": \"b\", \"target\": \"c\"}",
                "duplicate_field",
                Some("source"),
            ),
        ];
        for (body, code, field) in cases {
            let e = parse("application/json", body.to_vec()).await.unwrap_err();
            assert_eq!(
                (e.code(), e.field()),
                (*code, *field),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        let e = parse(
            "application/json",
            b"{\"sourse\": \"a\", \"target\": \"b\"}".to_vec(),
        )
        .await
        .unwrap_err();
        assert!(e.to_string().contains("sourse"), "{e}");
    }

    #[tokio::test]
    async fn content_types() {
        let e = parse("text/plain", b"{}".to_vec()).await.unwrap_err();
        assert_eq!(e.code(), "unsupported_content_type");
        let e = read_compare_body(None, Body::from("x")).await.unwrap_err();
        assert_eq!(e.code(), "unsupported_content_type");
        let e = parse("multipart/form-data", b"x".to_vec())
            .await
            .unwrap_err();
        assert_eq!(e.code(), "invalid_body");
    }

    #[tokio::test]
    async fn multipart_file_and_text_parts_mix() {
        let b = "XyZ123";
        let body = multipart(
            b,
            &[
                ("note", None, b"hi"),
                ("source", Some("a.txt"), JPEG),
                ("target", None, b"orgs/a/b.jpg"),
            ],
        );
        let got = parse(&format!("multipart/form-data; boundary={b}"), body)
            .await
            .unwrap();
        assert_eq!(got.source, ImageInput::Bytes(Bytes::from_static(JPEG)));
        assert_eq!(got.target, ImageInput::S3("orgs/a/b.jpg".into()));
        // Same inputs under another boundary: same fingerprint.
        let b2 = "other-boundary";
        let body = multipart(
            b2,
            &[
                ("target", None, b"orgs/a/b.jpg"),
                ("source", Some("x.jpg"), JPEG),
            ],
        );
        let again = parse(&format!("multipart/form-data; boundary=\"{b2}\""), body)
            .await
            .unwrap();
        assert_eq!(got.fingerprint(), again.fingerprint());
    }

    #[tokio::test]
    async fn multipart_errors() {
        let ct = "multipart/form-data; boundary=B";
        let e = parse(ct, multipart("B", &[("source", None, b"orgs/a.jpg")]))
            .await
            .unwrap_err();
        assert_eq!((e.code(), e.field()), ("missing_field", Some("target")));
        let e = parse(
            ct,
            multipart(
                "B",
                &[("source", Some("a"), JPEG), ("source", Some("b"), JPEG)],
            ),
        )
        .await
        .unwrap_err();
        assert_eq!((e.code(), e.field()), ("duplicate_field", Some("source")));
        let e = parse(
            ct,
            multipart(
                "B",
                &[("source", Some("a"), b""), ("target", Some("b"), JPEG)],
            ),
        )
        .await
        .unwrap_err();
        assert_eq!((e.code(), e.field()), ("empty_field", Some("source")));
        let e = parse(
            ct,
            multipart(
                "B",
                &[
                    ("source", Some("a"), JPEG),
                    ("target", Some("b"), b"GIF89a\x01\x00"),
                ],
            ),
        )
        .await
        .unwrap_err();
        assert_eq!(
            (e.code(), e.field()),
            ("unsupported_image_format", Some("target"))
        );
        let e = parse(
            ct,
            multipart(
                "B",
                &[
                    ("source", Some("a"), JPEG),
                    ("target", Some("b"), b"\x00\x9f\x92\x96"),
                ],
            ),
        )
        .await
        .unwrap_err();
        assert_eq!(
            (e.code(), e.field()),
            ("unsupported_image_format", Some("target"))
        );
    }

    #[tokio::test]
    async fn a_file_part_is_raw_bytes_never_text() {
        let ct = "multipart/form-data; boundary=B";
        let e = parse(
            ct,
            multipart(
                "B",
                &[
                    ("source", Some("notes.txt"), b"orgs/a/1.jpg"),
                    ("target", None, b"orgs/a/2.jpg"),
                ],
            ),
        )
        .await
        .unwrap_err();
        assert_eq!(
            (e.code(), e.field()),
            ("unsupported_image_format", Some("source"))
        );
        // The same text without a filename keeps the string rules.
        let got = parse(
            ct,
            multipart(
                "B",
                &[
                    ("source", None, b"orgs/a/1.jpg"),
                    ("target", None, b"orgs/a/2.jpg"),
                ],
            ),
        )
        .await
        .unwrap();
        assert_eq!(got.source, ImageInput::S3("orgs/a/1.jpg".into()));
    }

    #[tokio::test]
    async fn upper_case_disposition_parameters_and_json_bom_are_accepted() {
        let body = b"--B\r\nContent-Disposition: form-data; NAME=\"source\"; FILENAME=\"a.txt\"\r\n\r\nhello\r\n\
--B\r\ncontent-disposition: FORM-DATA; Name=target\r\n\r\norgs/a/2.jpg\r\n--B--\r\n"
            .to_vec();
        let e = parse("multipart/form-data; boundary=B", body)
            .await
            .unwrap_err();
        // Found by its upper-case name, and a file (upper-case FILENAME).
        assert_eq!(
            (e.code(), e.field()),
            ("unsupported_image_format", Some("source"))
        );
        let mut json = b"\xEF\xBB\xBF".to_vec();
        json.extend_from_slice(br#"{"source": "orgs/a/1.jpg", "target": "orgs/a/2.jpg"}"#);
        let got = parse("application/json", json).await.unwrap();
        assert_eq!(got.target, ImageInput::S3("orgs/a/2.jpg".into()));
    }

    #[test]
    fn disposition_params() {
        let h = br#"form-data; name="a;b\"c"; FileName = x.jpg"#;
        assert_eq!(disposition_param(h, "name").as_deref(), Some("a;b\"c"));
        assert_eq!(disposition_param(h, "filename").as_deref(), Some("x.jpg"));
        assert_eq!(
            disposition_param(b"form-data; filename=\"f\"", "name"),
            None
        );
        assert_eq!(disposition_param(b"form-data", "name"), None);
    }

    #[tokio::test]
    async fn oversized_file_part_is_refused_with_its_size() {
        let mut big = JPEG.to_vec();
        big.resize(MAX_IMAGE_BYTES + 1000, 0);
        let body = multipart(
            "B",
            &[
                ("source", Some("a.jpg"), JPEG),
                ("target", Some("b.jpg"), &big),
            ],
        );
        let e = parse("multipart/form-data; boundary=B", body)
            .await
            .unwrap_err();
        assert_eq!((e.code(), e.field()), ("image_too_large", Some("target")));
        assert!(e.to_string().contains("15.0 MB"), "{e}");
    }
}

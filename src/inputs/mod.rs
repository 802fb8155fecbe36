//! Inputs: turns a compare request body (multipart or JSON) into two image
//! inputs, each either image bytes or an S3 reference.
//!
//! - [`body`]: reads the body (content type, streaming size limits, duplicate fields).
//! - [`single`]: the same rules for a body with one image (`POST /v1/face/detect`).
//! - [`text`]: classifies a string (data URI, base64, base64url, S3 key).
//! - [`s3`]: fetches S3 references (owned by the S3 work).
//!
//! Image formats are recognised from their magic bytes by [`crate::image_format`].
use crate::{
    error_codes::{self, ErrorCode},
    image_format,
};
use bytes::Bytes;
use sha2::{Digest, Sha256};

pub mod body;
pub mod s3;
pub mod single;
pub mod text;

/// Largest accepted image: 15 MB (15 × 1024 × 1024 bytes), judged on the
/// decoded bytes for base64 and on the object size for S3.
pub const MAX_IMAGE_BYTES: usize = 15 * 1024 * 1024;

/// Largest accepted string form of one image: base64 of [`MAX_IMAGE_BYTES`]
/// (4/3) plus room for line breaks every 76 characters and a data-URI prefix.
pub const MAX_TEXT_BYTES: usize = MAX_IMAGE_BYTES / 3 * 4 * 78 / 76 + 4096;

/// Largest accepted request body: two images in their string form plus slack
/// for multipart headers and JSON punctuation.
pub const MAX_BODY_BYTES: usize = 2 * MAX_TEXT_BYTES + 64 * 1024;
const _: () = assert!(MAX_BODY_BYTES > 2 * MAX_IMAGE_BYTES * 4 / 3);

/// One of the two compare inputs after parsing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageInput {
    /// Image bytes whose signature is JPEG, PNG or WebP (not yet decoded).
    Bytes(Bytes),
    /// An S3 reference exactly as the client sent it (trimmed): a key such as
    /// `orgs/acme/selfie.jpg` or a `s3://bucket/key` URI.
    S3(String),
}

/// Both inputs of a compare request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompareInputs {
    pub source: ImageInput,
    pub target: ImageInput,
}

impl CompareInputs {
    /// SHA-256 over the parsed inputs, so that an `Idempotency-Key` retry with
    /// another multipart boundary or other JSON spacing is the same request,
    /// while other bytes or another S3 key are not.
    pub fn fingerprint(&self) -> String {
        let mut h = Sha256::new();
        h.update(b"facecompare/v1/face/compare\0");
        for input in [&self.source, &self.target] {
            // Tag and length prefix: no two different inputs hash the same stream.
            let (tag, data): (u8, &[u8]) = match input {
                ImageInput::Bytes(b) => (b'B', b),
                ImageInput::S3(k) => (b'S', k.as_bytes()),
            };
            h.update([tag]);
            h.update((data.len() as u64).to_be_bytes());
            h.update(data);
        }
        hex::encode(h.finalize())
    }
}

/// A client error in one of the inputs (or the body that carries them).
/// Every variant has a stable [`code`](InputError::code) and, where there is
/// one, names the offending field in its message.
#[derive(Debug, Clone, thiserror::Error)]
pub enum InputError {
    #[error("{message}")]
    InvalidBody { message: String },
    #[error(
        "unsupported content type {content_type:?}: send multipart/form-data or application/json"
    )]
    UnsupportedContentType { content_type: String },
    #[error("the request body is larger than {} MB", mb(*limit as u64))]
    BodyTooLarge { limit: usize },
    /// The body arrived slower than the minimum upload rate.
    #[error(
        "the request body arrived too slowly: after {grace_secs} s it must have averaged at least {min_kib_per_s} KiB/s"
    )]
    BodyTooSlow { min_kib_per_s: u64, grace_secs: u64 },
    /// The body budget (or the organisation's share of it) is spent: retry shortly.
    #[error(
        "the server holds too many request bodies (this organisation's share or the whole budget); retry shortly"
    )]
    BodyBudgetSpent,
    #[error("{field}: missing; send both fields source and target{hint}")]
    MissingField { field: String, hint: String },
    /// The one image of a single-image body (`POST /v1/face/detect`) is missing.
    #[error("{field}: missing; send one image in the field {field}{hint}")]
    MissingImage { field: String, hint: String },
    /// A single-image endpoint got what reads as an S3 key: it takes image bytes only.
    #[error(
        "{field}: looks like an S3 key (it is not a base64 image); this endpoint takes the image itself: a file part, base64 or a data URI"
    )]
    S3NotAccepted { field: String },
    #[error("{field}: empty; send an image (file part, base64 or data URI) or an S3 key")]
    EmptyField { field: String },
    #[error("{field}: sent more than once")]
    DuplicateField { field: String },
    #[error("{field}: expected a string (base64 image or S3 key), got {found}")]
    InvalidFieldType { field: String, found: String },
    #[error("{field}: {message}")]
    InvalidBase64 { field: String, message: String },
    #[error("{field}: {}", unsupported_message(*detected))]
    UnsupportedImageFormat {
        field: String,
        detected: Option<&'static str>,
    },
    #[error("{field}: {}", too_large_message(*size))]
    ImageTooLarge { field: String, size: Option<u64> },
    #[error(
        "{field}: looks like an S3 key (it is not a base64 image), but this server has no S3 bucket configured"
    )]
    S3NotConfigured { field: String },
    /// The key is outside the organisation's prefix, in another bucket, or uses
    /// path tricks. `message` starts with the field name.
    #[error("{message}")]
    S3Forbidden { field: String, message: String },
    /// No such object (also 403: a client may not probe for existence).
    #[error("{message}")]
    S3NotFound { field: String, message: String },
    #[error("{field}: {}", too_large_message(Some(*size)))]
    S3TooLarge { field: String, size: u64 },
    /// The store did not answer (timeout, connection, 5xx): the client may retry.
    #[error("{message}")]
    S3Unavailable { field: String, message: String },
}

fn mb(bytes: u64) -> String {
    let v = bytes as f64 / (1024.0 * 1024.0);
    if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

fn too_large_message(size: Option<u64>) -> String {
    let limit = mb(MAX_IMAGE_BYTES as u64);
    match size {
        Some(s) => format!("image is {} MB; the limit is {limit} MB", mb(s)),
        None => format!("image is larger than the limit of {limit} MB"),
    }
}

fn unsupported_message(detected: Option<&'static str>) -> String {
    match detected {
        Some(f) => format!("{f} images are not supported; send JPEG, PNG or WebP"),
        None => "not a JPEG, PNG or WebP image".to_string(),
    }
}

/// The error a body stream yields when the server stops reading it (too
/// slow, budget spent): the readers turn it back into its [`InputError`].
#[derive(Debug)]
pub struct BodyStopped(pub InputError);

impl std::fmt::Display for BodyStopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for BodyStopped {}

impl InputError {
    /// What a failed body read means: the server's own [`BodyStopped`]
    /// (anywhere in the error's chain), else an unreadable body.
    pub fn read_failed(e: &(dyn std::error::Error + 'static)) -> InputError {
        let mut cur = Some(e);
        while let Some(err) = cur {
            if let Some(BodyStopped(stopped)) = err.downcast_ref::<BodyStopped>() {
                return stopped.clone();
            }
            cur = err.source();
        }
        InputError::InvalidBody {
            message: "the request body could not be read".into(),
        }
    }

    /// The error kind of the catalogue: its code and its status (400 for bad
    /// input, 403 for S3 keys the org may not read or that do not exist, 503
    /// when the store is down).
    pub fn kind(&self) -> ErrorCode {
        match self {
            InputError::InvalidBody { .. } => error_codes::INVALID_BODY,
            InputError::UnsupportedContentType { .. } => error_codes::UNSUPPORTED_CONTENT_TYPE,
            InputError::BodyTooLarge { .. } => error_codes::BODY_TOO_LARGE,
            InputError::BodyTooSlow { .. } => error_codes::BODY_TOO_SLOW,
            InputError::BodyBudgetSpent => error_codes::OVERLOADED,
            InputError::MissingField { .. } | InputError::MissingImage { .. } => {
                error_codes::MISSING_FIELD
            }
            InputError::EmptyField { .. } => error_codes::EMPTY_FIELD,
            InputError::DuplicateField { .. } => error_codes::DUPLICATE_FIELD,
            InputError::InvalidFieldType { .. } | InputError::S3NotAccepted { .. } => {
                error_codes::INVALID_FIELD_TYPE
            }
            InputError::InvalidBase64 { .. } => error_codes::INVALID_BASE64,
            InputError::UnsupportedImageFormat { .. } => error_codes::UNSUPPORTED_IMAGE_FORMAT,
            InputError::ImageTooLarge { .. } | InputError::S3TooLarge { .. } => {
                error_codes::IMAGE_TOO_LARGE
            }
            InputError::S3NotConfigured { .. } => error_codes::S3_NOT_CONFIGURED,
            InputError::S3Forbidden { .. } => error_codes::S3_FORBIDDEN,
            InputError::S3NotFound { .. } => error_codes::S3_OBJECT_NOT_FOUND,
            InputError::S3Unavailable { .. } => error_codes::S3_UNAVAILABLE,
        }
    }

    /// The stable machine-readable error code of the API.
    pub fn code(&self) -> &'static str {
        self.kind().code
    }

    /// The request field the error is about, if any.
    pub fn field(&self) -> Option<&str> {
        match self {
            InputError::InvalidBody { .. }
            | InputError::UnsupportedContentType { .. }
            | InputError::BodyTooLarge { .. }
            | InputError::BodyTooSlow { .. }
            | InputError::BodyBudgetSpent => None,
            InputError::MissingField { field, .. }
            | InputError::MissingImage { field, .. }
            | InputError::S3NotAccepted { field }
            | InputError::EmptyField { field }
            | InputError::DuplicateField { field }
            | InputError::InvalidFieldType { field, .. }
            | InputError::InvalidBase64 { field, .. }
            | InputError::UnsupportedImageFormat { field, .. }
            | InputError::ImageTooLarge { field, .. }
            | InputError::S3NotConfigured { field }
            | InputError::S3Forbidden { field, .. }
            | InputError::S3NotFound { field, .. }
            | InputError::S3TooLarge { field, .. }
            | InputError::S3Unavailable { field, .. } => Some(field),
        }
    }
}

/// Checks that fetched or uploaded bytes carry a supported image signature.
pub fn check_image_bytes(field: &str, bytes: &[u8]) -> Result<(), InputError> {
    if bytes.is_empty() {
        return Err(InputError::EmptyField {
            field: field.to_string(),
        });
    }
    if bytes.len() > MAX_IMAGE_BYTES {
        return Err(InputError::ImageTooLarge {
            field: field.to_string(),
            size: Some(bytes.len() as u64),
        });
    }
    match image_format::sniff(bytes) {
        Some(f) if f.is_supported() => Ok(()),
        other => Err(InputError::UnsupportedImageFormat {
            field: field.to_string(),
            detected: other.map(|f| f.name()),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_depends_on_content_and_kind() {
        let a = CompareInputs {
            source: ImageInput::Bytes(Bytes::from_static(b"\xFF\xD8\xFFabc")),
            target: ImageInput::S3("orgs/a/b.jpg".into()),
        };
        let same = a.clone();
        assert_eq!(a.fingerprint(), same.fingerprint());
        let other_key = CompareInputs {
            target: ImageInput::S3("orgs/a/c.jpg".into()),
            ..a.clone()
        };
        assert_ne!(a.fingerprint(), other_key.fingerprint());
        let swapped = CompareInputs {
            source: a.target.clone(),
            target: a.source.clone(),
        };
        assert_ne!(a.fingerprint(), swapped.fingerprint());
        let bytes_vs_key = CompareInputs {
            source: ImageInput::S3("\u{FF}".into()),
            target: ImageInput::S3("orgs/a/b.jpg".into()),
        };
        assert_ne!(a.fingerprint(), bytes_vs_key.fingerprint());
    }

    #[test]
    fn messages_name_the_field_and_sizes() {
        let e = InputError::ImageTooLarge {
            field: "target".into(),
            size: Some(18_035_507),
        };
        assert_eq!(
            e.to_string(),
            "target: image is 17.2 MB; the limit is 15 MB"
        );
        assert_eq!(e.code(), "image_too_large");
        assert_eq!(e.kind().status, 400);
        let e = InputError::S3NotFound {
            field: "source".into(),
            message: "source: no such object".into(),
        };
        assert_eq!(
            (e.code(), e.kind().status, e.field()),
            ("s3_object_not_found", 403, Some("source"))
        );
    }

    #[test]
    fn checks_fetched_bytes() {
        assert!(check_image_bytes("source", b"\x89PNG\r\n\x1a\n\0\0").is_ok());
        let e = check_image_bytes("source", b"GIF89a\x01\0").unwrap_err();
        assert_eq!(
            e.to_string(),
            "source: GIF images are not supported; send JPEG, PNG or WebP"
        );
        assert_eq!(
            check_image_bytes("target", b"").unwrap_err().code(),
            "empty_field"
        );
    }
}

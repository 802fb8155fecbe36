//! Errors as the AWS SDKs parse them for the JSON 1.1 protocol:
//! `{"__type": "...", "message": "..."}` with the status AWS uses. The
//! mapping from our errors (and why) is docs/aws-sdks.md.
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};

use super::sigv4::SigError;
use crate::{
    accounts::AccountsError,
    error_codes,
    faces::{FacesError, Side},
    http::error::{ApiError, DATABASE_RETRY_AFTER_SECS, S3_RETRY_AFTER_SECS, current_request_id},
    inputs::InputError,
    operations::compare::CompareError,
};

pub const CONTENT_TYPE: &str = "application/x-amz-json-1.1";

/// One AWS error type and the status it is always sent with (the table of
/// docs/aws-sdks.md): call sites name a type, never a status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AwsType {
    pub status: StatusCode,
    pub name: &'static str,
}

macro_rules! aws_types {
    ($($name:ident = $status:ident $type_name:literal;)*) => {
        $(pub const $name: AwsType = AwsType { status: StatusCode::$status, name: $type_name };)*
    };
}

aws_types! {
    INVALID_PARAMETER = BAD_REQUEST "InvalidParameterException";
    INVALID_IMAGE_FORMAT = BAD_REQUEST "InvalidImageFormatException";
    IMAGE_TOO_LARGE = BAD_REQUEST "ImageTooLargeException";
    INVALID_S3_OBJECT = BAD_REQUEST "InvalidS3ObjectException";
    THROTTLING = BAD_REQUEST "ThrottlingException";
    ACCESS_DENIED = BAD_REQUEST "AccessDeniedException";
    SERIALIZATION = BAD_REQUEST "SerializationException";
    UNKNOWN_OPERATION = BAD_REQUEST "UnknownOperationException";
    INCOMPLETE_SIGNATURE = BAD_REQUEST "IncompleteSignatureException";
    REQUEST_CANCELED = BAD_REQUEST "RequestCanceled";
    REQUEST_TIMEOUT = REQUEST_TIMEOUT "RequestTimeoutException";
    MISSING_AUTHENTICATION_TOKEN = FORBIDDEN "MissingAuthenticationTokenException";
    INVALID_SIGNATURE = FORBIDDEN "InvalidSignatureException";
    UNRECOGNIZED_CLIENT = FORBIDDEN "UnrecognizedClientException";
    INTERNAL_SERVER_ERROR = INTERNAL_SERVER_ERROR "InternalServerError";
    SERVICE_UNAVAILABLE = SERVICE_UNAVAILABLE "ServiceUnavailableException";
}

#[derive(Debug, Clone, PartialEq)]
pub struct AwsError {
    pub status: StatusCode,
    pub kind: &'static str,
    pub message: String,
    pub retry_after_secs: Option<u64>,
}

impl AwsError {
    pub fn new(ty: AwsType, message: impl Into<String>) -> Self {
        Self {
            status: ty.status,
            kind: ty.name,
            message: message.into(),
            retry_after_secs: None,
        }
    }

    fn retry_after(self, secs: u64) -> Self {
        Self {
            retry_after_secs: Some(secs.max(1)),
            ..self
        }
    }

    pub fn invalid_parameter(message: impl Into<String>) -> Self {
        Self::new(INVALID_PARAMETER, message)
    }

    pub fn serialization(message: impl Into<String>) -> Self {
        Self::new(SERIALIZATION, message)
    }

    pub fn invalid_image_format(message: impl Into<String>) -> Self {
        Self::new(INVALID_IMAGE_FORMAT, message)
    }

    pub fn image_too_large(message: impl Into<String>) -> Self {
        Self::new(IMAGE_TOO_LARGE, message)
    }

    pub fn unknown_operation(message: impl Into<String>) -> Self {
        Self::new(UNKNOWN_OPERATION, message)
    }

    /// Retryable by the SDKs' standard retry mode (an error code they know).
    pub fn throttling(message: impl Into<String>, retry_after_secs: u64) -> Self {
        Self::new(THROTTLING, message).retry_after(retry_after_secs)
    }

    /// A 503: the SDKs retry it as a transient server error.
    pub fn unavailable(message: impl Into<String>, retry_after_secs: u64) -> Self {
        Self::new(SERVICE_UNAVAILABLE, message).retry_after(retry_after_secs)
    }

    /// 500 for a live access key while the server has no signing key: logged
    /// for the operator, and named for the client instead of "unknown key".
    pub fn signing_key_missing(file: &std::path::Path) -> Self {
        tracing::error!(
            file = %file.display(),
            "a Rekognition request for a live AWS access key, but no AWS signing key is \
             configured: set FACECOMPARE_AWS_SIGNING_KEY or restore the key file"
        );
        Self::new(
            INTERNAL_SERVER_ERROR,
            "This server cannot verify AWS signatures: its signing key is not configured. \
             The operator must restore it; the access key itself is valid.",
        )
    }

    /// 500; the detail is logged (by `ApiError::internal`), never sent.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        Self::new(INTERNAL_SERVER_ERROR, ApiError::internal(detail).message)
    }
}

impl From<SigError> for AwsError {
    fn from(e: SigError) -> Self {
        match e {
            SigError::Missing => {
                Self::new(MISSING_AUTHENTICATION_TOKEN, "Missing Authentication Token")
            }
            SigError::Incomplete(m) => Self::new(INCOMPLETE_SIGNATURE, m),
            SigError::Invalid(m) => Self::new(
                INVALID_SIGNATURE,
                if m.is_empty() {
                    "The request signature we calculated does not match the signature you provided."
                        .to_string()
                } else {
                    m
                },
            ),
            SigError::UnknownKey => Self::new(
                UNRECOGNIZED_CLIENT,
                "The security token included in the request is invalid (unknown or revoked access key id).",
            ),
        }
    }
}

/// Our image field as the Rekognition request names it.
fn aws_field(side: Side) -> &'static str {
    match side {
        Side::Source => "SourceImage",
        Side::Target => "TargetImage",
    }
}

/// `message` about our `field`, with its leading `field:` (how our messages
/// name a field) given the Rekognition name instead.
fn renamed(field: &str, message: &str) -> String {
    let side = match field {
        "source" => Side::Source,
        "target" => Side::Target,
        _ => return message.to_string(),
    };
    match message
        .strip_prefix(field)
        .and_then(|m| m.strip_prefix(':'))
    {
        Some(rest) => format!("{}:{rest}", aws_field(side)),
        None => message.to_string(),
    }
}

impl From<InputError> for AwsError {
    fn from(e: InputError) -> Self {
        from_input(e)
    }
}

fn from_input(e: InputError) -> AwsError {
    let message = match e.field() {
        Some(field) => renamed(field, &e.to_string()),
        None => e.to_string(),
    };
    match e {
        InputError::ImageTooLarge { .. }
        | InputError::S3TooLarge { .. }
        | InputError::BodyTooLarge { .. } => AwsError::image_too_large(message),
        InputError::S3Forbidden { .. }
        | InputError::S3NotFound { .. }
        | InputError::S3NotConfigured { .. } => AwsError::new(INVALID_S3_OBJECT, message),
        InputError::S3Unavailable { .. } => AwsError::unavailable(message, S3_RETRY_AFTER_SECS),
        InputError::BodyBudgetSpent => AwsError::throttling(message, 1),
        InputError::BodyTooSlow { .. } => AwsError::new(REQUEST_TIMEOUT, message),
        InputError::UnsupportedImageFormat { .. }
        | InputError::EmptyField { .. }
        | InputError::InvalidBase64 { .. } => AwsError::invalid_image_format(message),
        InputError::InvalidBody { .. }
        | InputError::UnsupportedContentType { .. }
        | InputError::MissingField { .. }
        | InputError::MissingImage { .. }
        | InputError::S3NotAccepted { .. }
        | InputError::DuplicateField { .. }
        | InputError::InvalidFieldType { .. } => AwsError::invalid_parameter(message),
    }
}

fn from_accounts(e: AccountsError) -> AwsError {
    if e.is_transient() {
        tracing::warn!(error = %e, "database unavailable");
        return AwsError::unavailable(
            "the database is unavailable; nothing was charged, retry shortly",
            DATABASE_RETRY_AFTER_SECS,
        );
    }
    AwsError::internal(format!("accounts: {e}"))
}

impl From<CompareError> for AwsError {
    fn from(e: CompareError) -> Self {
        match e {
            CompareError::Input(e) => from_input(e),
            CompareError::Faces(FacesError::BadImage {
                side,
                kind,
                message,
            }) => {
                // The engine's message may already name its side: not twice.
                let message = message
                    .strip_prefix(&format!("{}:", side.field()))
                    .map_or(message.as_str(), str::trim_start);
                let message = format!("{}: {message}", aws_field(side));
                if kind == error_codes::IMAGE_DIMENSIONS_TOO_LARGE {
                    AwsError::image_too_large(message)
                } else {
                    AwsError::invalid_image_format(message)
                }
            }
            CompareError::Faces(FacesError::Overloaded) => {
                AwsError::throttling("the server is busy comparing faces; retry shortly", 1)
            }
            CompareError::Faces(FacesError::Internal(detail)) => {
                AwsError::internal(format!("face engine: {detail}"))
            }
            CompareError::Accounts(e) => from_accounts(e),
            CompareError::InsufficientBalance { balance, cost } => {
                let has = balance.map_or_else(|| "less".to_string(), |b| b.to_string());
                AwsError::new(
                    ACCESS_DENIED,
                    format!(
                        "token balance too low: a compare costs {cost}, the organisation has {has}; nothing was charged"
                    ),
                )
            }
            CompareError::NoSourceFace => AwsError::invalid_parameter(
                "Request has invalid parameters: there are no faces in the source image (SourceImage)",
            ),
            CompareError::TimedOut => {
                AwsError::unavailable("the request took too long; retry later", 1)
            }
            CompareError::ClientGone => AwsError::new(
                REQUEST_CANCELED,
                "the client closed the connection before the answer; nothing was charged",
            ),
            CompareError::IdempotencyMismatch | CompareError::IdempotencyInProgress => {
                AwsError::internal("idempotency outcome without an idempotency key")
            }
            CompareError::Internal(detail) => AwsError::internal(detail),
        }
    }
}

impl From<AccountsError> for AwsError {
    fn from(e: AccountsError) -> Self {
        from_accounts(e)
    }
}

impl IntoResponse for AwsError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "__type": self.kind, "message": self.message });
        let mut r = (self.status, body.to_string()).into_response();
        let h = r.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
        if let Ok(v) = HeaderValue::from_str(&current_request_id()) {
            h.insert("x-amzn-requestid", v);
        }
        if let Some(secs) = self.retry_after_secs {
            h.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_our_errors_to_aws_types() {
        let e = AwsError::from(CompareError::Input(InputError::S3Forbidden {
            field: "source".into(),
            message: "source: S3 key is not readable by this organisation: outside".into(),
        }));
        assert_eq!(e.kind, "InvalidS3ObjectException");
        assert!(
            e.message.starts_with("SourceImage: S3 key"),
            "{}",
            e.message
        );
        let e = AwsError::from(CompareError::NoSourceFace);
        assert_eq!(
            (e.status.as_u16(), e.kind),
            (400, "InvalidParameterException")
        );
        let e = AwsError::from(CompareError::InsufficientBalance {
            balance: Some(0),
            cost: 1,
        });
        assert_eq!(e.kind, "AccessDeniedException");
        let e = AwsError::from(CompareError::Faces(FacesError::BadImage {
            side: Side::Target,
            kind: error_codes::IMAGE_DECODE_FAILED,
            message: "truncated JPEG".into(),
        }));
        assert_eq!(
            (e.kind, e.message.as_str()),
            ("InvalidImageFormatException", "TargetImage: truncated JPEG")
        );
        assert_eq!(
            AwsError::from(SigError::UnknownKey).kind,
            "UnrecognizedClientException"
        );
    }
}

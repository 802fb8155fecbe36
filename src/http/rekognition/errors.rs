//! Errors as the AWS SDKs parse them for the JSON 1.1 protocol:
//! `{"__type": "...", "message": "..."}` with the status AWS uses. The
//! mapping from our errors (and why) is docs/aws-sdks.md.
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};

use super::sigv4::SigError;
use crate::{
    accounts::AccountsError,
    error_codes,
    faces::FacesError,
    http::error::{ApiError, current_request_id},
    inputs::InputError,
    operations::compare::CompareError,
};

pub const CONTENT_TYPE: &str = "application/x-amz-json-1.1";

#[derive(Debug, Clone, PartialEq)]
pub struct AwsError {
    pub status: StatusCode,
    pub kind: &'static str,
    pub message: String,
    pub retry_after_secs: Option<u64>,
}

impl AwsError {
    pub fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            kind,
            message: message.into(),
            retry_after_secs: None,
        }
    }

    pub fn invalid_parameter(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "InvalidParameterException",
            message,
        )
    }

    pub fn serialization(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "SerializationException", message)
    }

    pub fn invalid_image_format(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "InvalidImageFormatException",
            message,
        )
    }

    pub fn image_too_large(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "ImageTooLargeException", message)
    }

    pub fn unknown_operation(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "UnknownOperationException",
            message,
        )
    }

    /// Retryable by the SDKs' standard retry mode (an error code they know).
    pub fn throttling(message: impl Into<String>, retry_after_secs: u64) -> Self {
        Self {
            retry_after_secs: Some(retry_after_secs.max(1)),
            ..Self::new(StatusCode::BAD_REQUEST, "ThrottlingException", message)
        }
    }

    /// A 503: the SDKs retry it as a transient server error.
    pub fn unavailable(message: impl Into<String>, retry_after_secs: u64) -> Self {
        Self {
            retry_after_secs: Some(retry_after_secs.max(1)),
            ..Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailableException",
                message,
            )
        }
    }

    /// 500; the detail is logged (by `ApiError::internal`), never sent.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        let native = ApiError::internal(detail);
        Self::new(native.status, "InternalServerError", native.message)
    }
}

impl From<SigError> for AwsError {
    fn from(e: SigError) -> Self {
        match e {
            SigError::Missing => Self::new(
                StatusCode::FORBIDDEN,
                "MissingAuthenticationTokenException",
                "Missing Authentication Token",
            ),
            SigError::Incomplete(m) => {
                Self::new(StatusCode::BAD_REQUEST, "IncompleteSignatureException", m)
            }
            SigError::Invalid(m) => Self::new(
                StatusCode::FORBIDDEN,
                "InvalidSignatureException",
                if m.is_empty() {
                    "The request signature we calculated does not match the signature you provided."
                        .to_string()
                } else {
                    m
                },
            ),
            SigError::UnknownKey => Self::new(
                StatusCode::FORBIDDEN,
                "UnrecognizedClientException",
                "The security token included in the request is invalid (unknown or revoked access key id).",
            ),
        }
    }
}

/// Our field names (`source`/`target`) as the Rekognition request names them.
pub fn aws_field(message: &str) -> String {
    if let Some(rest) = message.strip_prefix("source:") {
        format!("SourceImage:{rest}")
    } else if let Some(rest) = message.strip_prefix("target:") {
        format!("TargetImage:{rest}")
    } else {
        message.to_string()
    }
}

fn from_input(e: InputError) -> AwsError {
    let message = aws_field(&e.to_string());
    match e.code() {
        error_codes::IMAGE_TOO_LARGE | error_codes::BODY_TOO_LARGE => {
            AwsError::image_too_large(message)
        }
        error_codes::S3_FORBIDDEN
        | error_codes::S3_OBJECT_NOT_FOUND
        | error_codes::S3_NOT_CONFIGURED => {
            AwsError::new(StatusCode::BAD_REQUEST, "InvalidS3ObjectException", message)
        }
        error_codes::S3_UNAVAILABLE => AwsError::unavailable(message, 2),
        error_codes::UNSUPPORTED_IMAGE_FORMAT
        | error_codes::EMPTY_FIELD
        | error_codes::INVALID_BASE64 => AwsError::invalid_image_format(message),
        _ => AwsError::invalid_parameter(message),
    }
}

fn from_accounts(e: AccountsError) -> AwsError {
    if e.is_transient() {
        tracing::warn!(error = %e, "database unavailable");
        return AwsError::unavailable(
            "the database is unavailable; nothing was charged, retry shortly",
            crate::http::error::DATABASE_RETRY_AFTER_SECS,
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
                code,
                message,
            }) => {
                let field = match side {
                    crate::faces::Side::Source => "SourceImage",
                    crate::faces::Side::Target => "TargetImage",
                };
                let message = aws_field(&message);
                let message = if message.starts_with(field) {
                    message
                } else {
                    format!("{field}: {message}")
                };
                if code == error_codes::IMAGE_DIMENSIONS_TOO_LARGE {
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
                    StatusCode::BAD_REQUEST,
                    "AccessDeniedException",
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
                StatusCode::BAD_REQUEST,
                "RequestCanceled",
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
            side: crate::faces::Side::Target,
            code: error_codes::IMAGE_DECODE_FAILED,
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

//! Every error kind of the native API (`{"error": CODE, ...}`) with its code
//! and HTTP status, in one place: call sites name a kind (`RATE_LIMITED`),
//! never a status, and `http::error::ApiError::new` takes the status from the
//! kind. The test below
//! checks that the table of `docs/errors.md` and `src/http/openapi.json` list
//! exactly these codes with these statuses. (The Rekognition protocol has its
//! own AWS error types: `http::rekognition::errors`.)

/// One error kind: its code and the status it is always sent with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorCode {
    pub status: u16,
    pub code: &'static str,
    /// Whether `openapi.json` lists it under `POST /v1/face/compare` (404/405
    /// belong to no route; 499 is logged, never received by anyone).
    pub compare_route: bool,
}

macro_rules! codes {
    ($($name:ident = $status:literal $code:literal $route:literal;)*) => {
        $(pub const $name: ErrorCode =
            ErrorCode { status: $status, code: $code, compare_route: $route };)*
        /// All kinds, in the order of docs/errors.md.
        pub const ALL: &[ErrorCode] = &[$($name,)*];
    };
}

codes! {
    UNSUPPORTED_CONTENT_TYPE = 400 "unsupported_content_type" true;
    INVALID_BODY = 400 "invalid_body" true;
    BODY_TOO_LARGE = 400 "body_too_large" true;
    MISSING_FIELD = 400 "missing_field" true;
    EMPTY_FIELD = 400 "empty_field" true;
    DUPLICATE_FIELD = 400 "duplicate_field" true;
    INVALID_FIELD_TYPE = 400 "invalid_field_type" true;
    INVALID_BASE64 = 400 "invalid_base64" true;
    UNSUPPORTED_IMAGE_FORMAT = 400 "unsupported_image_format" true;
    IMAGE_TOO_LARGE = 400 "image_too_large" true;
    IMAGE_DECODE_FAILED = 400 "image_decode_failed" true;
    IMAGE_DIMENSIONS_TOO_LARGE = 400 "image_dimensions_too_large" true;
    IMAGE_TOO_COMPLEX = 400 "image_too_complex" true;
    S3_NOT_CONFIGURED = 400 "s3_not_configured" true;
    INVALID_IDEMPOTENCY_KEY = 400 "invalid_idempotency_key" true;
    UNAUTHORIZED = 401 "unauthorized" true;
    INSUFFICIENT_BALANCE = 402 "insufficient_balance" true;
    S3_FORBIDDEN = 403 "s3_forbidden" true;
    S3_OBJECT_NOT_FOUND = 403 "s3_object_not_found" true;
    NOT_FOUND = 404 "not_found" false;
    METHOD_NOT_ALLOWED = 405 "method_not_allowed" false;
    BODY_TOO_SLOW = 408 "body_too_slow" true;
    IDEMPOTENCY_IN_PROGRESS = 409 "idempotency_in_progress" true;
    IDEMPOTENCY_KEY_MISMATCH = 422 "idempotency_key_mismatch" true;
    RATE_LIMITED = 429 "rate_limited" true;
    CLIENT_CLOSED_REQUEST = 499 "client_closed_request" false;
    INTERNAL_ERROR = 500 "internal_error" true;
    OVERLOADED = 503 "overloaded" true;
    DATABASE_UNAVAILABLE = 503 "database_unavailable" true;
    S3_UNAVAILABLE = 503 "s3_unavailable" true;
    REQUEST_TIMEOUT = 503 "request_timeout" true;
}

impl ErrorCode {
    /// The status as the HTTP types spell it (every catalogue status is valid,
    /// 499 included).
    pub fn http_status(self) -> http::StatusCode {
        http::StatusCode::from_u16(self.status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR)
    }
}

/// The status a code is sent with.
pub fn status_of(code: &str) -> Option<u16> {
    ALL.iter().find(|c| c.code == code).map(|c| c.status)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    type Pairs = BTreeSet<(u16, String)>;

    fn catalogue(only_route: bool) -> Pairs {
        ALL.iter()
            .filter(|c| c.compare_route || !only_route)
            .map(|c| (c.status, c.code.to_string()))
            .collect()
    }

    /// Backticked words of `text`.
    fn ticked(text: &str) -> Vec<String> {
        text.split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_string)
            .collect()
    }

    /// docs/errors.md table rows: `| 400 | `code` | ...` and `| 404 / 405 | `a` / `b` | ...`.
    fn documented_pairs() -> Pairs {
        let page = include_str!("../docs/errors.md");
        let section = page
            .split("\n| status |")
            .nth(1)
            .expect("docs/errors.md has the error table");
        let section = section.split("\n\n").next().unwrap_or(section);
        let mut pairs = Pairs::new();
        for line in section.lines().filter(|l| l.starts_with("| ")) {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let statuses: Vec<u16> = cells[1]
                .split('/')
                .filter_map(|s| s.trim().parse().ok())
                .collect();
            if statuses.is_empty() {
                continue; // the header row
            }
            let codes = ticked(cells[2]);
            for (i, code) in codes.iter().enumerate() {
                let status = *statuses.get(i).unwrap_or(&statuses[0]);
                pairs.insert((status, code.clone()));
            }
        }
        pairs
    }

    /// openapi.json: `Codes: `a`, `b`.` in each response of POST /v1/face/compare.
    fn openapi_pairs() -> Pairs {
        let spec: serde_json::Value =
            serde_json::from_str(include_str!("http/openapi.json")).expect("openapi.json parses");
        let responses = spec["paths"]["/v1/face/compare"]["post"]["responses"]
            .as_object()
            .expect("compare responses");
        let mut pairs = Pairs::new();
        for (status, r) in responses {
            let desc = r["description"].as_str().unwrap_or("");
            if let Some(codes) = desc.split("Codes:").nth(1) {
                for code in ticked(codes) {
                    pairs.insert((status.parse().expect("numeric status"), code));
                }
            }
        }
        pairs
    }

    #[test]
    fn errors_page_lists_exactly_the_catalogue() {
        let documented = documented_pairs();
        // 499 is never received by a client, so the page leaves it out.
        let mut expected = catalogue(false);
        expected.remove(&(499, CLIENT_CLOSED_REQUEST.code.to_string()));
        assert_eq!(documented, expected);
    }

    #[test]
    fn openapi_lists_exactly_the_catalogue() {
        assert_eq!(openapi_pairs(), catalogue(true));
    }

    #[test]
    fn codes_are_unique() {
        let codes: BTreeSet<_> = ALL.iter().map(|c| c.code).collect();
        assert_eq!(codes.len(), ALL.len());
        assert_eq!(status_of(RATE_LIMITED.code), Some(429));
        for kind in ALL {
            assert_eq!(kind.http_status().as_u16(), kind.status, "{}", kind.code);
        }
    }
}

//! API-key authentication (`x-api-key`) and the rate-limit response headers.
use http::{HeaderMap, HeaderName, HeaderValue};

use super::{AppState, error::ApiError};
use crate::accounts::{Org, RateDecision};

/// Longest key we bother looking up; real keys are far shorter.
const MAX_KEY_LEN: usize = 256;

/// The organisation of the presented key; 401 when it is missing, malformed,
/// unknown or revoked (one message for the last three: no key probing).
pub async fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<Org, ApiError> {
    let Some(raw) = headers.get("x-api-key") else {
        return Err(ApiError::unauthorized(
            "x-api-key: missing; send your API key in the x-api-key header",
        ));
    };
    let key = raw.to_str().map(str::trim).unwrap_or("");
    if key.is_empty() || key.len() > MAX_KEY_LEN || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ApiError::unauthorized(
            "x-api-key: unknown or revoked API key",
        ));
    }
    match state.accounts.authenticate(key).await? {
        Some(org) => Ok(org),
        None => Err(ApiError::unauthorized(
            "x-api-key: unknown or revoked API key",
        )),
    }
}

/// `RateLimit-Policy` and `RateLimit` (IETF httpapi-ratelimit-headers draft,
/// structured-field syntax): quota `q` per window `w` seconds; `r` requests
/// remaining, `t` seconds until the quota is fully restored.
pub fn rate_limit_headers(d: &RateDecision) -> HeaderMap {
    let mut h = HeaderMap::new();
    let policy = format!("\"default\";q={};w={}", d.limit, d.window_secs);
    let state = format!("\"default\";r={};t={}", d.remaining, d.reset_secs);
    for (name, value) in [("ratelimit-policy", policy), ("ratelimit", state)] {
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.insert(HeaderName::from_static(name), v);
        }
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_rate_limit_headers() {
        let d = RateDecision {
            allowed: true,
            limit: 60,
            remaining: 59,
            reset_secs: 1,
            retry_after_secs: 0,
            window_secs: 60,
        };
        let h = rate_limit_headers(&d);
        assert_eq!(h["ratelimit-policy"], "\"default\";q=60;w=60");
        assert_eq!(h["ratelimit"], "\"default\";r=59;t=1");
    }
}

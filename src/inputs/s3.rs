//! S3 inputs (docs/s3.md): an organisation may read objects under its own prefix
//! in the one configured bucket, nothing else.
//!
//! Order of checks, so that a refused reference never reaches the store:
//! 1. [`resolve_key`] (pure): bucket, key syntax, prefix → 403 `s3_forbidden`.
//! 2. HEAD: a missing object is 403 too (a client may not probe
//!    for existence); an object over the image limit is refused before any
//!    byte of it is downloaded.
//! 3. GET, streamed into a buffer with a hard cap, so a length that lied (or
//!    an object replaced between HEAD and GET) still never buffers more than
//!    the limit.
//!
//! Timeouts, refused connections and 5xx answers become `S3Unavailable`
//! (503, retryable) within the configured timeouts and two attempts.
use std::time::Duration;

use aws_config::{
    BehaviorVersion, meta::region::RegionProviderChain, retry::RetryConfig, timeout::TimeoutConfig,
};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use bytes::{Bytes, BytesMut};
use tokio::sync::OnceCell;

use super::{InputError, MAX_IMAGE_BYTES};
use crate::config::S3Config;

/// S3's own limit on key length, in bytes.
pub const MAX_KEY_BYTES: usize = 1024;

/// Attempts per S3 call (first try plus one retry): a flaky store gets one
/// more chance, a dead one fails fast.
const MAX_ATTEMPTS: u32 = 2;

pub struct S3Store {
    bucket: String,
    endpoint: Option<String>,
    connect_timeout: Duration,
    read_timeout: Duration,
    /// Loaded on first use: the AWS chain (profile files, IMDS) is async and can
    /// take a while on a machine without AWS settings; `serve` should not wait for it.
    client: OnceCell<aws_sdk_s3::Client>,
}

impl S3Store {
    /// Validates the configuration; the client itself is built on first fetch.
    pub fn connect(cfg: &S3Config) -> anyhow::Result<Self> {
        if cfg.bucket.trim().is_empty() || cfg.bucket.contains('/') {
            anyhow::bail!("FACECOMPARE_S3_BUCKET={:?}: not a bucket name", cfg.bucket);
        }
        if let Some(endpoint) = &cfg.endpoint
            && !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
        {
            anyhow::bail!(
                "FACECOMPARE_S3_ENDPOINT={endpoint:?}: expected an http:// or https:// URL"
            );
        }
        Ok(Self {
            bucket: cfg.bucket.clone(),
            endpoint: cfg.endpoint.clone(),
            connect_timeout: cfg.connect_timeout,
            read_timeout: cfg.read_timeout,
            client: OnceCell::new(),
        })
    }

    /// One attempt may take connect + read; the whole call, with its retry, twice that.
    fn attempt_timeout(&self) -> Duration {
        self.connect_timeout + self.read_timeout
    }

    async fn client(&self) -> &aws_sdk_s3::Client {
        self.client
            .get_or_init(|| async {
                let timeouts = TimeoutConfig::builder()
                    .connect_timeout(self.connect_timeout)
                    .read_timeout(self.read_timeout)
                    .operation_attempt_timeout(self.attempt_timeout())
                    .operation_timeout(self.attempt_timeout() * MAX_ATTEMPTS)
                    .build();
                let retries = RetryConfig::standard()
                    .with_max_attempts(MAX_ATTEMPTS)
                    .with_initial_backoff(Duration::from_millis(100))
                    .with_max_backoff(Duration::from_millis(500));
                // MinIO and s3s ignore the region, but signing needs one.
                let region = RegionProviderChain::default_provider().or_else("us-east-1");
                let shared = aws_config::defaults(BehaviorVersion::latest())
                    .region(region)
                    .timeout_config(timeouts)
                    .retry_config(retries)
                    .load()
                    .await;
                let mut builder = aws_sdk_s3::config::Builder::from(&shared);
                if let Some(endpoint) = &self.endpoint {
                    builder = builder.endpoint_url(endpoint).force_path_style(true);
                }
                aws_sdk_s3::Client::from_conf(builder.build())
            })
            .await
    }

    /// Reads `reference` (a key or `s3://bucket/key`) for the organisation whose
    /// prefix is `org_prefix`. `field` (`source`/`target`) names the input in errors.
    pub async fn fetch(
        &self,
        org_prefix: &str,
        field: &str,
        reference: &str,
    ) -> Result<Bytes, InputError> {
        let key = resolve_key(reference, &self.bucket, org_prefix).map_err(|reason| {
            InputError::S3Forbidden {
                field: field.into(),
                message: format!("{field}: S3 key is not readable by this organisation: {reason}"),
            }
        })?;
        let client = self.client().await;

        let head = client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| self.classify(field, key, e))?;
        let announced = head.content_length().and_then(|n| u64::try_from(n).ok());
        if let Some(size) = announced
            && size > MAX_IMAGE_BYTES as u64
        {
            return Err(InputError::S3TooLarge {
                field: field.into(),
                size,
            });
        }

        let got = client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| self.classify(field, key, e))?;
        if let Some(size) = got.content_length().and_then(|n| u64::try_from(n).ok())
            && size > MAX_IMAGE_BYTES as u64
        {
            return Err(InputError::S3TooLarge {
                field: field.into(),
                size,
            });
        }
        let expected = got
            .content_length()
            .and_then(|n| usize::try_from(n).ok())
            .unwrap_or(0);
        let mut body = got.body;
        let mut buf = BytesMut::with_capacity(expected.min(MAX_IMAGE_BYTES));
        let read = async {
            while let Some(chunk) = body.try_next().await? {
                if buf.len() + chunk.len() > MAX_IMAGE_BYTES {
                    // Stop here: dropping the stream closes the connection.
                    return Ok::<_, aws_sdk_s3::primitives::ByteStreamError>(Some(
                        buf.len() + chunk.len(),
                    ));
                }
                buf.extend_from_slice(&chunk);
            }
            Ok(None)
        };
        // The read timeout covers each socket read; this bounds a slow drip as a whole.
        match tokio::time::timeout(self.attempt_timeout() * MAX_ATTEMPTS, read).await {
            Ok(Ok(None)) => Ok(buf.freeze()),
            Ok(Ok(Some(at_least))) => Err(InputError::S3TooLarge {
                field: field.into(),
                size: at_least as u64,
            }),
            Ok(Err(e)) => {
                tracing::warn!(field, key, error = %DisplayErrorContext(&e), "S3 body read failed");
                Err(self.unavailable(field, "the S3 store broke off the download"))
            }
            Err(_) => {
                tracing::warn!(field, key, "S3 body read timed out");
                Err(self.unavailable(field, "the S3 store timed out"))
            }
        }
    }

    fn unavailable(&self, field: &str, what: &str) -> InputError {
        InputError::S3Unavailable {
            field: field.into(),
            message: format!("{field}: {what}; retry later"),
        }
    }

    /// Maps an SDK failure: the object's absence or a refusal is the client's
    /// 403; anything else (network, timeout, 5xx, misconfiguration) is ours, 503.
    fn classify<E>(&self, field: &str, key: &str, err: SdkError<E>) -> InputError
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        let status = err.raw_response().map(|r| r.status().as_u16());
        let code = err
            .as_service_error()
            .and_then(|e| e.code())
            .map(str::to_owned);
        match (status, code.as_deref()) {
            (Some(404), _) | (_, Some("NoSuchKey" | "NotFound")) => InputError::S3NotFound {
                field: field.into(),
                message: format!(
                    "{field}: S3 key is not readable by this organisation: no such object"
                ),
            },
            (Some(403), _) | (_, Some("AccessDenied")) => {
                // AWS answers 403 for a missing object when the credentials may not
                // list the bucket, so this is the client's 403 as well; log it in
                // case the server's own credentials are wrong.
                tracing::warn!(field, key, "S3 refused access to an in-prefix key");
                InputError::S3Forbidden {
                    field: field.into(),
                    message: format!(
                        "{field}: S3 key is not readable by this organisation: access denied"
                    ),
                }
            }
            _ => {
                tracing::warn!(field, key, ?status, error = %DisplayErrorContext(&err), "S3 request failed");
                let what = match &err {
                    SdkError::TimeoutError(_) => "the S3 store timed out",
                    SdkError::DispatchFailure(_) => "the S3 store is unreachable",
                    _ => "the S3 store failed",
                };
                self.unavailable(field, what)
            }
        }
    }
}

/// Checks `reference` against the configured bucket and the organisation's
/// prefix and returns the object key, or why it is refused. Pure: runs before
/// any request, so a refused key never reaches the store.
///
/// Any `%` is refused rather than decoded: S3 keys are literal (the SDK
/// encodes them), so `%2e%2e` is not a traversal on AWS itself, but proxies and
/// S3-compatible stores that decode again would make it one. No legitimate
/// image key needs a `%`.
pub fn resolve_key<'a>(
    reference: &'a str,
    bucket: &str,
    org_prefix: &str,
) -> Result<&'a str, String> {
    let key = match strip_scheme(reference) {
        Some(rest) => {
            let (b, key) = rest.split_once('/').unwrap_or((rest, ""));
            if b != bucket {
                return Err(format!(
                    "bucket {:?} is not the configured bucket",
                    shorten(b)
                ));
            }
            key
        }
        None => reference,
    };
    check_key_syntax(key)?;
    let prefix = org_prefix.trim_start_matches('/');
    if prefix.is_empty() {
        return Err("this organisation has no S3 prefix".into());
    }
    // `orgs/acme` must not grant `orgs/acme-evil/...`: compare whole segments.
    let under = match key.strip_prefix(prefix) {
        Some(rest) if prefix.ends_with('/') => !rest.is_empty(),
        Some(rest) => rest.len() > 1 && rest.starts_with('/'),
        None => false,
    };
    if !under {
        return Err(format!("keys must start with {prefix:?}"));
    }
    Ok(key)
}

fn strip_scheme(reference: &str) -> Option<&str> {
    let head = reference.get(..5)?;
    head.eq_ignore_ascii_case("s3://").then(|| &reference[5..])
}

fn check_key_syntax(key: &str) -> Result<(), String> {
    if key.is_empty() {
        return Err("the key is empty".into());
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(format!(
            "the key is {} bytes; the limit is {MAX_KEY_BYTES}",
            key.len()
        ));
    }
    if key.chars().any(char::is_control) {
        return Err("the key holds control characters".into());
    }
    if key.contains('\\') {
        return Err("the key holds a backslash".into());
    }
    if key.contains('%') {
        return Err("the key holds a percent escape".into());
    }
    if key.starts_with('/') {
        return Err("the key is absolute (leading /)".into());
    }
    for segment in key.split('/') {
        match segment {
            "" => return Err("the key has an empty path segment (// or a trailing /)".into()),
            "." | ".." => return Err(format!("the key has a {segment:?} path segment")),
            _ => {}
        }
    }
    Ok(())
}

/// Echoes client input in messages without letting it flood them.
fn shorten(s: &str) -> String {
    let mut out: String = s.chars().filter(|c| !c.is_control()).take(64).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: &str = "faces";
    const P: &str = "orgs/acme/";

    fn ok(r: &str) -> String {
        resolve_key(r, B, P)
            .unwrap_or_else(|e| panic!("{r:?} refused: {e}"))
            .to_string()
    }

    fn refused(r: &str) -> String {
        resolve_key(r, B, P).expect_err(&format!("{r:?} must be refused"))
    }

    #[test]
    fn accepts_keys_under_the_prefix() {
        assert_eq!(ok("orgs/acme/selfie.jpg"), "orgs/acme/selfie.jpg");
        assert_eq!(
            ok("orgs/acme/2024/05/id card.png"),
            "orgs/acme/2024/05/id card.png"
        );
        assert_eq!(
            ok("s3://faces/orgs/acme/selfie.jpg"),
            "orgs/acme/selfie.jpg"
        );
        assert_eq!(ok("S3://faces/orgs/acme/a.webp"), "orgs/acme/a.webp");
        // Dots inside a name are not traversal.
        assert_eq!(
            ok("orgs/acme/..hidden/a...jpg"),
            "orgs/acme/..hidden/a...jpg"
        );
    }

    #[test]
    fn prefix_without_trailing_slash_matches_whole_segments() {
        assert_eq!(
            resolve_key("orgs/acme/a.jpg", B, "orgs/acme").unwrap(),
            "orgs/acme/a.jpg"
        );
        assert!(resolve_key("orgs/acme-evil/a.jpg", B, "orgs/acme").is_err());
        assert!(resolve_key("orgs/acme", B, "orgs/acme").is_err());
        assert!(resolve_key("orgs/acme/", B, "orgs/acme").is_err());
        assert!(
            resolve_key("orgs/acme/a.jpg", B, "")
                .unwrap_err()
                .contains("no S3 prefix")
        );
    }

    #[test]
    fn refuses_other_buckets_and_prefixes() {
        assert!(refused("s3://other/orgs/acme/a.jpg").contains("bucket"));
        assert!(refused("s3://faces-2/orgs/acme/a.jpg").contains("bucket"));
        assert!(refused("s3://Faces/orgs/acme/a.jpg").contains("bucket"));
        assert!(refused("s3://faces").contains("empty"));
        assert!(refused("s3:///orgs/acme/a.jpg").contains("bucket"));
        assert!(refused("orgs/evil/a.jpg").contains("orgs/acme/"));
        assert!(refused("orgs/acme-evil/a.jpg").contains("orgs/acme/"));
        assert!(refused("orgs/acme/").contains("empty path segment"));
        assert!(refused("orgs/acme").contains("orgs/acme/"));
        assert!(refused("http://faces/orgs/acme/a.jpg").contains("empty path segment"));
        assert!(refused("https:/x/orgs/acme/a.jpg").contains("orgs/acme/"));
    }

    #[test]
    fn refuses_path_tricks() {
        for r in [
            "orgs/acme/../evil/a.jpg",
            "orgs/acme/..",
            "orgs/acme/./a.jpg",
            "s3://faces/orgs/acme/../evil/a.jpg",
        ] {
            assert!(refused(r).contains("path segment"), "{r:?}");
        }
        assert!(refused("orgs/acme//a.jpg").contains("empty path segment"));
        assert!(refused("/orgs/acme/a.jpg").contains("absolute"));
        assert!(refused("s3://faces//orgs/acme/a.jpg").contains("absolute"));
        assert!(refused("orgs/acme/..\\evil\\a.jpg").contains("backslash"));
        assert!(refused("orgs/acme/%2e%2e/evil/a.jpg").contains("percent"));
        assert!(refused("orgs/acme/%2E%2E%2Fevil").contains("percent"));
        assert!(refused("orgs%2facme/a.jpg").contains("percent"));
        assert!(refused("orgs/acme/a.jpg\0.png").contains("control"));
        assert!(refused("orgs/acme/a\n.jpg").contains("control"));
        assert!(refused("orgs/acme/a\u{7f}.jpg").contains("control"));
        assert!(refused("orgs/acme/a\u{85}.jpg").contains("control"));
        assert!(refused("").contains("empty"));
    }

    #[test]
    fn refuses_overlong_keys() {
        let at_limit = format!("orgs/acme/{}", "a".repeat(MAX_KEY_BYTES - P.len()));
        assert_eq!(ok(&at_limit).len(), MAX_KEY_BYTES);
        let over = format!("{at_limit}a");
        assert!(refused(&over).contains("limit is 1024"));
        // Bytes, not characters: 340 three-byte characters are 1020 bytes.
        let wide = format!("orgs/acme/{}", "界".repeat(340));
        assert!(refused(&wide).contains("bytes"));
    }

    #[test]
    fn messages_do_not_echo_floods() {
        let long_bucket = format!("s3://{}/orgs/acme/a.jpg", "x".repeat(5000));
        assert!(refused(&long_bucket).len() < 200);
    }

    #[test]
    fn connect_validates_config() {
        let cfg = |bucket: &str, endpoint: Option<&str>| S3Config {
            bucket: bucket.into(),
            endpoint: endpoint.map(Into::into),
            connect_timeout: Duration::from_secs(1),
            read_timeout: Duration::from_secs(1),
        };
        assert!(S3Store::connect(&cfg("faces", None)).is_ok());
        assert!(S3Store::connect(&cfg("faces", Some("http://127.0.0.1:9000"))).is_ok());
        assert!(S3Store::connect(&cfg("faces/x", None)).is_err());
        assert!(S3Store::connect(&cfg("faces", Some("127.0.0.1:9000"))).is_err());
    }
}

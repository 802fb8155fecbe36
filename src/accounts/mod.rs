//! Accounts: organisations, API keys, the token ledger, rate limits and
//! idempotency records, in SQLite (embedded default) or PostgreSQL, through
//! sqlx's `Any` driver. All shared state (balances, rate-limit TATs,
//! idempotency records) lives in the database so that several replicas agree.
//!
//! The methods of [`Accounts`] are spread over the submodules by topic.
use serde::Serialize;

use crate::config::RateLimit;

#[derive(Debug, thiserror::Error)]
pub enum AccountsError {
    #[error("organisation {0:?} not found")]
    OrgNotFound(String),
    #[error("API key {0:?} not found")]
    KeyNotFound(String),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

impl AccountsError {
    /// Whether the database was unreachable or busy rather than the request
    /// wrong: a retry after a pause can succeed (the API answers 503).
    pub fn is_transient(&self) -> bool {
        match self {
            AccountsError::Db(e) => transient::is_transient(e),
            _ => false,
        }
    }
}

/// An organisation as the API and CLI see it.
#[derive(Debug, Clone, Serialize)]
pub struct Org {
    pub id: String,
    pub name: String,
    pub balance: i64,
    #[serde(rename = "s3Prefix")]
    pub s3_prefix: String,
    /// e.g. `60/min`.
    #[serde(rename = "rateLimit")]
    pub rate_limit: String,
    pub threshold: Option<f64>,
}

impl Org {
    pub fn rate_limit(&self) -> RateLimit {
        // Stored limits are validated on write; a hand-edited row falls back to
        // 60/min rather than failing requests.
        RateLimit::parse(&self.rate_limit).unwrap_or(RateLimit {
            per_window: 60,
            window: std::time::Duration::from_secs(60),
        })
    }
}

/// The outcome of counting one request against an organisation's limit.
#[derive(Debug, Clone)]
pub struct RateDecision {
    pub allowed: bool,
    /// The limit (burst) N.
    pub limit: u32,
    /// Requests still admitted right now.
    pub remaining: u32,
    /// Seconds until the bucket is full again.
    pub reset_secs: u64,
    /// When refused: seconds until one request is admitted.
    pub retry_after_secs: u64,
    /// Window length in seconds (for RateLimit-Policy).
    pub window_secs: u64,
}

/// What an `Idempotency-Key` lookup found.
#[derive(Debug, Clone)]
pub enum IdempotencyBegin {
    /// First use: the key is now reserved for this request.
    New,
    /// Same key and same inputs, finished earlier: replay this response, uncharged.
    Replay { status: u16, body: String },
    /// Same key with other inputs.
    Mismatch,
    /// Same key and inputs, still running in another request.
    InProgress,
}

pub struct NewOrg {
    pub name: String,
    pub tokens: i64,
    pub s3_prefix: Option<String>,
    pub rate_limit: RateLimit,
    pub threshold: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CreatedKey {
    pub id: String,
    /// The secret, shown once.
    pub key: String,
    /// The org id.
    pub org: String,
}

/// An API key as listed for operators: never the secret.
#[derive(Debug, Clone, Serialize)]
pub struct KeyInfo {
    pub id: String,
    pub org: String,
    /// `api` (an `x-api-key` key) or `aws` (an access key id for SigV4).
    pub kind: &'static str,
    #[serde(rename = "createdAtMs")]
    pub created_at_ms: i64,
    pub revoked: bool,
}

#[derive(Clone)]
pub struct Accounts {
    pub pool: sqlx::AnyPool,
    backend: Backend,
}

mod aws_keys;
mod db;
mod idempotency;
mod keys;
mod ledger;
mod orgs;
mod rate_limit;
mod transient;

pub use aws_keys::SigningKeys;
pub use db::Backend;
pub use idempotency::IDEMPOTENCY_LEASE_MARGIN;
pub use ledger::StoredAnswer;

/// Wall-clock time as unix milliseconds (how every timestamp is stored).
fn now_ms() -> i64 {
    now_us() / 1000
}

fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// `prefix` + `bytes` random bytes in hex, from the OS generator.
fn random_id(prefix: &str, bytes: usize) -> String {
    use rand::RngCore;
    let mut buf = vec![0u8; bytes];
    rand::rngs::OsRng.fill_bytes(&mut buf);
    format!("{prefix}{}", hex::encode(buf))
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
}

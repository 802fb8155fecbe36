//! Accounts: organisations, API keys, the token ledger, rate limits and
//! idempotency records, in SQLite (embedded default) or PostgreSQL.
//!
//! STUB: the signatures below are the contract the HTTP layer and the CLI use;
//! the accounts implementation fills them in.
use serde::Serialize;

use crate::config::RateLimit;

#[derive(Debug, thiserror::Error)]
pub enum AccountsError {
    #[error("organisation {0:?} not found")]
    OrgNotFound(String),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
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
        RateLimit::parse(&self.rate_limit).expect("stored rate limits are validated on write")
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
    #[serde(rename = "createdAtMs")]
    pub created_at_ms: i64,
    pub revoked: bool,
}

#[derive(Clone)]
pub struct Accounts {
    pub pool: sqlx::AnyPool,
}

#[allow(unused_variables)]
impl Accounts {
    /// Connects (creating the SQLite file and its folder if needed).
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        todo!()
    }
    pub async fn migrate(&self) -> anyhow::Result<()> {
        todo!()
    }
    /// Cheap round trip for /readyz.
    pub async fn ping(&self) -> Result<(), AccountsError> {
        todo!()
    }
    /// The org of a live (not revoked) key, or None.
    pub async fn authenticate(&self, presented_key: &str) -> Result<Option<Org>, AccountsError> {
        todo!()
    }
    /// Counts one request against the org's limit (state shared through the database).
    pub async fn rate_check(&self, org: &Org) -> Result<RateDecision, AccountsError> {
        todo!()
    }
    pub async fn balance(&self, org_id: &str) -> Result<i64, AccountsError> {
        todo!()
    }
    /// Atomic debit plus ledger row; Ok(None) when the balance is below `cost`.
    pub async fn charge(&self, org_id: &str, cost: i64, request_id: &str) -> Result<Option<i64>, AccountsError> {
        todo!()
    }
    pub async fn idempotency_begin(
        &self,
        org_id: &str,
        key: &str,
        fingerprint: &str,
    ) -> Result<IdempotencyBegin, AccountsError> {
        todo!()
    }
    /// Stores the final response of a reserved key.
    pub async fn idempotency_finish(&self, org_id: &str, key: &str, status: u16, body: &str) -> Result<(), AccountsError> {
        todo!()
    }
    /// Releases a reserved key after a failure, so a retry runs again.
    pub async fn idempotency_abandon(&self, org_id: &str, key: &str) -> Result<(), AccountsError> {
        todo!()
    }
    pub async fn create_org(&self, new: NewOrg) -> Result<Org, AccountsError> {
        todo!()
    }
    /// By id or by name.
    pub async fn find_org(&self, id_or_name: &str) -> Result<Org, AccountsError> {
        todo!()
    }
    pub async fn list_orgs(&self) -> Result<Vec<Org>, AccountsError> {
        todo!()
    }
    pub async fn create_key(&self, org_id_or_name: &str) -> Result<CreatedKey, AccountsError> {
        todo!()
    }
    pub async fn list_keys(&self, org_id: &str) -> Result<Vec<KeyInfo>, AccountsError> {
        todo!()
    }
    pub async fn revoke_key(&self, key_id: &str) -> Result<(), AccountsError> {
        todo!()
    }
    /// Credit plus ledger row; returns the new balance.
    pub async fn add_tokens(&self, org_id_or_name: &str, amount: i64, reason: &str) -> Result<i64, AccountsError> {
        todo!()
    }
    /// Embedded default: creates the `default` org and a key on first start; Some(key) only then.
    pub async fn ensure_default_org(&self, tokens: i64, rate_limit: RateLimit) -> Result<Option<CreatedKey>, AccountsError> {
        todo!()
    }
}

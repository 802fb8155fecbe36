//! `Idempotency-Key` records, scoped per organisation and kept 24 hours.
//!
//! `begin` reserves the key with one atomic upsert that also takes over an
//! expired record or a pending one whose request died (crash, lost
//! connection), so two concurrent first uses can never both win.
//!
//! A reservation is a lease: it ends when its request releases it (`finish`
//! or `abandon`), or at `lease_until` (the request timeout plus a margin)
//! when the release never arrives, so a retry after a failure runs again.
use std::{
    sync::atomic::{AtomicI64, Ordering},
    time::Duration,
};

use sqlx::Row;

use super::{Accounts, AccountsError, IdempotencyBegin, now_ms};

/// The statement that stores a reserved key's final response (alone, or in
/// the transaction of the debit it belongs to).
pub(super) fn store_answer<'q>(
    org_id: &'q str,
    key: &'q str,
    status: u16,
    body: &'q str,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    sqlx::query(
        "UPDATE idempotency SET state = 'done', status = $1, body = $2, updated_at = $3 \
         WHERE org_id = $4 AND idem_key = $5",
    )
    .bind(i64::from(status))
    .bind(body)
    .bind(now_ms())
    .bind(org_id)
    .bind(key)
}

/// How long a finished response is replayed.
pub const RETENTION_MS: i64 = 24 * 60 * 60 * 1000;
/// A reservation older than this is treated as abandoned whatever its lease
/// says (the cap on any lease, and the rule for rows written without one).
pub const PENDING_TIMEOUT_MS: i64 = 5 * 60 * 1000;
/// Added to the request timeout for a reservation's lease: covers the charge
/// and the stored response after the deadline, and clock skew between replicas.
pub const IDEMPOTENCY_LEASE_MARGIN: Duration = Duration::from_secs(10);
/// How long a release keeps retrying while the database is unreachable; the
/// lease ends the reservation anyway by then.
const RELEASE_RETRY_FOR: Duration = Duration::from_secs(120);
/// Expired rows are deleted at most this often per process.
const PURGE_EVERY_MS: i64 = 60 * 1000;

static LAST_PURGE_MS: AtomicI64 = AtomicI64::new(0);

impl Accounts {
    /// [`Self::idempotency_begin_leased`] with the longest lease.
    pub async fn idempotency_begin(
        &self,
        org_id: &str,
        key: &str,
        fingerprint: &str,
    ) -> Result<IdempotencyBegin, AccountsError> {
        let lease = Duration::from_millis(PENDING_TIMEOUT_MS as u64);
        self.idempotency_begin_leased(org_id, key, fingerprint, lease)
            .await
    }

    /// Reserves `key` for `lease` (the request's timeout plus
    /// [`IDEMPOTENCY_LEASE_MARGIN`]), or says why not.
    pub async fn idempotency_begin_leased(
        &self,
        org_id: &str,
        key: &str,
        fingerprint: &str,
        lease: Duration,
    ) -> Result<IdempotencyBegin, AccountsError> {
        let now = now_ms();
        let lease_ms = i64::try_from(lease.as_millis())
            .unwrap_or(PENDING_TIMEOUT_MS)
            .min(PENDING_TIMEOUT_MS);
        self.purge_expired_idempotency_lazily(now).await;
        let expired_before = now - RETENTION_MS;
        let stale_before = now - PENDING_TIMEOUT_MS;
        // The row can vanish between the two statements (abandoned or purged):
        // then the reservation is simply tried again.
        for _ in 0..3 {
            // A row for this key exists already unless the upsert touched one.
            let reserved = sqlx::query(
                "INSERT INTO idempotency (org_id, idem_key, fingerprint, state, created_at, updated_at, lease_until) \
                 VALUES ($1, $2, $3, 'pending', $4, $4, $7) \
                 ON CONFLICT (org_id, idem_key) DO UPDATE \
                 SET fingerprint = $3, state = 'pending', status = NULL, body = NULL, created_at = $4, updated_at = $4, lease_until = $7 \
                 WHERE idempotency.created_at < $5 OR (idempotency.state = 'pending' AND \
                   (idempotency.updated_at < $6 OR (idempotency.lease_until > 0 AND idempotency.lease_until < $4)))",
            )
            .bind(org_id)
            .bind(key)
            .bind(fingerprint)
            .bind(now)
            .bind(expired_before)
            .bind(stale_before)
            .bind(now + lease_ms)
            .execute(&self.pool)
            .await?
            .rows_affected()
                > 0;
            if reserved {
                return Ok(IdempotencyBegin::New);
            }
            let row = sqlx::query(
                "SELECT fingerprint, state, status, body FROM idempotency WHERE org_id = $1 AND idem_key = $2",
            )
            .bind(org_id)
            .bind(key)
            .fetch_optional(&self.pool)
            .await?;
            let Some(row) = row else { continue };
            let stored_fingerprint: String = row.try_get(0)?;
            let state: String = row.try_get(1)?;
            if stored_fingerprint != fingerprint {
                return Ok(IdempotencyBegin::Mismatch);
            }
            if state != "done" {
                return Ok(IdempotencyBegin::InProgress);
            }
            let status: Option<i64> = row.try_get(2)?;
            let body: Option<String> = row.try_get(3)?;
            let status = status.and_then(|s| u16::try_from(s).ok()).unwrap_or(200);
            return Ok(IdempotencyBegin::Replay {
                status,
                body: body.unwrap_or_default(),
            });
        }
        Ok(IdempotencyBegin::InProgress)
    }

    /// Stores the final response of a reserved key.
    pub async fn idempotency_finish(
        &self,
        org_id: &str,
        key: &str,
        status: u16,
        body: &str,
    ) -> Result<(), AccountsError> {
        store_answer(org_id, key, status, body)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Releases a reserved key after a failure, so a retry runs again.
    ///
    /// While the database is unreachable (the failure was often the outage
    /// itself) it keeps retrying with backoff, so the key is free within a
    /// second or two of the database coming back rather than when the lease
    /// runs out. Only a reservation made before the release began is deleted:
    /// a later one (a takeover after the lease) belongs to another request.
    pub async fn idempotency_abandon(&self, org_id: &str, key: &str) -> Result<(), AccountsError> {
        let released_at = now_ms();
        let give_up = std::time::Instant::now() + RELEASE_RETRY_FOR;
        let mut backoff = Duration::from_millis(100);
        loop {
            let done = sqlx::query(
                "DELETE FROM idempotency WHERE org_id = $1 AND idem_key = $2 AND state = 'pending' AND created_at <= $3",
            )
            .bind(org_id)
            .bind(key)
            .bind(released_at)
            .execute(&self.pool)
            .await;
            match done {
                Ok(_) => return Ok(()),
                Err(e) => {
                    let e = AccountsError::from(e);
                    if !e.is_transient() || std::time::Instant::now() + backoff > give_up {
                        return Err(e);
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            }
        }
    }

    /// Deletes records past their retention; returns how many.
    pub async fn purge_expired_idempotency(&self) -> Result<u64, AccountsError> {
        let done = sqlx::query("DELETE FROM idempotency WHERE created_at < $1")
            .bind(now_ms() - RETENTION_MS)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    /// Purges at most once a minute per process; expired rows are ignored by
    /// `begin` anyway, so a failed purge only costs disk and is just logged.
    async fn purge_expired_idempotency_lazily(&self, now: i64) {
        let last = LAST_PURGE_MS.load(Ordering::Relaxed);
        if now - last < PURGE_EVERY_MS
            || LAST_PURGE_MS
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        if let Err(e) = self.purge_expired_idempotency().await {
            tracing::warn!(error = %e, "purging expired idempotency records failed");
        }
    }
}

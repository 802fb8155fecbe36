//! The token ledger: every debit and credit is a row, and `orgs.balance` is
//! changed in the same transaction, so the balance always equals the ledger sum.
use sqlx::{AnyConnection, Row};

use super::{Accounts, AccountsError, idempotency::store_answer, now_ms};

/// The final answer of a request with an `Idempotency-Key`, stored with its debit.
pub struct StoredAnswer<'a> {
    pub key: &'a str,
    pub status: u16,
    pub body: &'a str,
}

pub(super) async fn insert_entry(
    conn: &mut AnyConnection,
    org_id: &str,
    delta: i64,
    reason: &str,
    request_id: Option<&str>,
) -> Result<(), sqlx::Error> {
    // Never bind an Option through the Any driver: a NULL is sent typed as an
    // integer, and PostgreSQL's cached statement then rejects a later text.
    sqlx::query("INSERT INTO ledger (org_id, delta, reason, request_id, created_at) VALUES ($1, $2, $3, NULLIF($4, ''), $5)")
        .bind(org_id)
        .bind(delta)
        .bind(reason)
        .bind(request_id.unwrap_or(""))
        .bind(now_ms())
        .execute(conn)
        .await?;
    Ok(())
}

impl Accounts {
    pub async fn balance(&self, org_id: &str) -> Result<i64, AccountsError> {
        sqlx::query("SELECT balance FROM orgs WHERE id = $1")
            .bind(org_id)
            .fetch_optional(&self.pool)
            .await?
            .map(|row| row.try_get(0))
            .transpose()?
            .ok_or_else(|| AccountsError::OrgNotFound(org_id.to_string()))
    }

    /// The sum of the org's ledger rows (equals `balance` by construction; for audits and tests).
    pub async fn ledger_sum(&self, org_id: &str) -> Result<i64, AccountsError> {
        // SUM of BIGINT is NUMERIC in PostgreSQL, which the Any driver cannot decode.
        let row = sqlx::query(
            "SELECT CAST(COALESCE(SUM(delta), 0) AS BIGINT) FROM ledger WHERE org_id = $1",
        )
        .bind(org_id)
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get(0)?)
    }

    /// Atomic debit plus ledger row; Ok(None) when the balance is below `cost`.
    ///
    /// The conditional UPDATE is the whole concurrency story: the row lock (or
    /// SQLite's single writer) serialises debits, and `balance >= cost` is
    /// re-checked on the current row, so N concurrent charges on a balance of k
    /// succeed exactly min(N, k) times.
    pub async fn charge(
        &self,
        org_id: &str,
        cost: i64,
        request_id: &str,
    ) -> Result<Option<i64>, AccountsError> {
        self.charge_with_answer(org_id, cost, request_id, None)
            .await
    }

    /// [`charge`](Self::charge), storing an `Idempotency-Key`'s final answer
    /// in the same transaction: a process that died between a debit and its
    /// stored answer would leave the reservation pending, and the retry after
    /// its lease would run, and charge, a second time.
    pub async fn charge_with_answer(
        &self,
        org_id: &str,
        cost: i64,
        request_id: &str,
        answer: Option<StoredAnswer<'_>>,
    ) -> Result<Option<i64>, AccountsError> {
        if cost < 0 {
            return Err(AccountsError::Invalid(format!(
                "cost {cost}: must not be negative"
            )));
        }
        if cost == 0 {
            // Nothing moves, so nothing is written to the ledger.
            if let Some(a) = answer {
                self.idempotency_finish(org_id, a.key, a.status, a.body)
                    .await?;
            }
            return self.balance(org_id).await.map(Some);
        }
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query("UPDATE orgs SET balance = balance - $1 WHERE id = $2 AND balance >= $1 RETURNING balance")
            .bind(cost)
            .bind(org_id)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = row else {
            tx.rollback().await?;
            return Ok(None);
        };
        let balance: i64 = row.try_get(0)?;
        insert_entry(&mut tx, org_id, -cost, "compare", Some(request_id)).await?;
        if let Some(a) = answer {
            store_answer(org_id, a.key, a.status, a.body)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(Some(balance))
    }

    /// Credit plus ledger row; returns the new balance.
    pub async fn add_tokens(
        &self,
        org_id_or_name: &str,
        amount: i64,
        reason: &str,
    ) -> Result<i64, AccountsError> {
        if amount <= 0 {
            return Err(AccountsError::Invalid(format!(
                "amount {amount}: must be a positive number of tokens"
            )));
        }
        let org = self.find_org(org_id_or_name).await?;
        let too_much = || {
            AccountsError::Invalid(format!(
                "amount {amount}: the balance of {} would pass the largest one stored ({})",
                org.name,
                i64::MAX
            ))
        };
        if org.balance.checked_add(amount).is_none() {
            return Err(too_much());
        }
        let mut tx = self.pool.begin().await?;
        // The guard keeps a concurrent credit from overflowing the column,
        // which both databases would answer with a raw error.
        let row = sqlx::query(
            "UPDATE orgs SET balance = balance + $1 WHERE id = $2 AND balance <= $3 RETURNING balance",
        )
        .bind(amount)
        .bind(&org.id)
        .bind(i64::MAX - amount)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(too_much)?;
        let balance: i64 = row.try_get(0)?;
        insert_entry(&mut tx, &org.id, amount, reason, None).await?;
        tx.commit().await?;
        Ok(balance)
    }
}

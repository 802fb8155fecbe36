//! API keys: `fck_` + 256 random bits, stored only as their SHA-256 hex.
//! A fast hash is enough here: the secret is random and long, so there is
//! nothing to brute-force, and lookups stay one indexed equality.
use sha2::{Digest, Sha256};
use sqlx::{AnyConnection, Row};

use super::{
    Accounts, AccountsError, CreatedKey, KeyInfo, Org, now_ms,
    orgs::{ORG_COLUMNS, org_from_row},
    random_id,
};

const KEY_PREFIX: &str = "fck_";

/// The two key tables (fixed names: `org_of_live_key` builds its SQL from
/// them, never from input).
#[derive(Debug, Clone, Copy)]
pub(super) enum KeyTable {
    Api,
    Aws,
}

pub(super) fn hash_key(presented: &str) -> String {
    hex::encode(Sha256::digest(presented.as_bytes()))
}

pub(super) async fn insert_key(
    conn: &mut AnyConnection,
    org_id: &str,
) -> Result<CreatedKey, AccountsError> {
    let key = CreatedKey {
        id: random_id("key_", 12),
        key: random_id(KEY_PREFIX, 32),
        org: org_id.to_string(),
    };
    sqlx::query("INSERT INTO api_keys (id, org_id, key_hash, created_at) VALUES ($1, $2, $3, $4)")
        .bind(&key.id)
        .bind(org_id)
        .bind(hash_key(&key.key))
        .bind(now_ms())
        .execute(conn)
        .await?;
    Ok(key)
}

impl Accounts {
    /// The org of a live (not revoked) key, or None.
    pub async fn authenticate(&self, presented_key: &str) -> Result<Option<Org>, AccountsError> {
        // Anything that cannot be one of our keys is refused without a query.
        if !presented_key.starts_with(KEY_PREFIX) || presented_key.len() > 128 {
            return Ok(None);
        }
        self.org_of_live_key(KeyTable::Api, &hash_key(presented_key))
            .await
    }

    /// The org of the live (not revoked) key whose lookup column (an API
    /// key's hash, an AWS access key's id) equals `value`, or None.
    pub(super) async fn org_of_live_key(
        &self,
        table: KeyTable,
        value: &str,
    ) -> Result<Option<Org>, AccountsError> {
        let (table, column) = match table {
            KeyTable::Api => ("api_keys", "key_hash"),
            KeyTable::Aws => ("aws_access_keys", "id"),
        };
        let sql = format!(
            "SELECT {ORG_COLUMNS} FROM {table} k JOIN orgs o ON o.id = k.org_id \
             WHERE k.{column} = $1 AND k.revoked_at IS NULL"
        );
        let row = sqlx::query(&sql)
            .bind(value)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(org_from_row).transpose()?)
    }

    pub async fn create_key(&self, org_id_or_name: &str) -> Result<CreatedKey, AccountsError> {
        let org = self.find_org(org_id_or_name).await?;
        let mut conn = self.pool.acquire().await?;
        insert_key(&mut conn, &org.id).await
    }

    /// The org's keys (API keys, then AWS access keys), oldest first; never
    /// the secrets (they are not stored).
    pub async fn list_keys(&self, org_id: &str) -> Result<Vec<KeyInfo>, AccountsError> {
        let aws = self.list_aws_keys(org_id).await?;
        let rows = sqlx::query("SELECT id, org_id, created_at, revoked_at FROM api_keys WHERE org_id = $1 ORDER BY created_at, id")
            .bind(org_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| key_info(row, "api"))
            .collect::<Result<Vec<_>, AccountsError>>()
            .map(|mut keys| {
                keys.extend(aws);
                keys
            })
    }

    /// Revokes a key (API key or AWS access key) by id; revoking a revoked key again is not an error.
    pub async fn revoke_key(&self, key_id: &str) -> Result<(), AccountsError> {
        let done =
            sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
                .bind(now_ms())
                .bind(key_id)
                .execute(&self.pool)
                .await?;
        if done.rows_affected() == 0 {
            let exists = sqlx::query("SELECT id FROM api_keys WHERE id = $1")
                .bind(key_id)
                .fetch_optional(&self.pool)
                .await?
                .is_some();
            if !exists && !self.revoke_aws_key(key_id).await? {
                return Err(AccountsError::KeyNotFound(key_id.to_string()));
            }
        }
        Ok(())
    }
}

/// A row `id, org_id, created_at, revoked_at` of either key table.
pub(super) fn key_info(
    row: &sqlx::any::AnyRow,
    kind: &'static str,
) -> Result<KeyInfo, AccountsError> {
    Ok(KeyInfo {
        id: row.try_get(0)?,
        org: row.try_get(1)?,
        kind,
        created_at_ms: row.try_get(2)?,
        revoked: row.try_get::<Option<i64>, _>(3)?.is_some(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_long_random_and_hashed() {
        let a = random_id(KEY_PREFIX, 32);
        let b = random_id(KEY_PREFIX, 32);
        assert_ne!(a, b);
        assert!(a.starts_with("fck_") && a.len() == 4 + 64, "{a}");
        let h = hash_key(&a);
        assert_eq!(h.len(), 64);
        assert_ne!(h, a);
        assert_eq!(h, hash_key(&a));
        // Known SHA-256 vector, so the stored form stays stable across versions.
        assert_eq!(
            hash_key("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}

//! Organisations: creation (with its opening ledger credit), lookup, listing,
//! and the embedded default org.
use sqlx::{AnyConnection, Row, any::AnyRow};

use super::{Accounts, AccountsError, CreatedKey, NewOrg, Org, keys, ledger, now_ms, random_id};
use crate::config::RateLimit;

/// The org columns, in the order [`org_from_row`] reads them, qualified by `o.`.
pub(super) const ORG_COLUMNS: &str =
    "o.id, o.name, o.balance, o.s3_prefix, o.rate_limit, o.threshold";

pub(super) fn org_from_row(row: &AnyRow) -> Result<Org, sqlx::Error> {
    Ok(Org {
        id: row.try_get(0)?,
        name: row.try_get(1)?,
        balance: row.try_get(2)?,
        s3_prefix: row.try_get(3)?,
        rate_limit: row.try_get(4)?,
        threshold: row.try_get(5)?,
    })
}

pub const DEFAULT_ORG: &str = "default";

/// Names are identifiers in CLI arguments and S3 prefixes: keep them plain.
/// `org_` is reserved so that a name never looks like an id.
pub(super) fn validate_name(name: &str) -> Result<(), AccountsError> {
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if name.is_empty() || name.len() > 64 || !ok_chars || name.starts_with('.') {
        return Err(AccountsError::Invalid(format!(
            "name {name:?}: use 1-64 letters, digits, '-', '_' or '.' (not starting with '.')"
        )));
    }
    if name.starts_with("org_") {
        return Err(AccountsError::Invalid(format!(
            "name {name:?}: the prefix org_ is reserved for ids"
        )));
    }
    Ok(())
}

/// An org may read S3 keys under its prefix only, so the prefix must be a plain
/// relative folder: no `..`, no leading `/`, ending with `/`.
pub(super) fn validate_s3_prefix(prefix: &str) -> Result<(), AccountsError> {
    let problem = if prefix.contains("..") {
        Some("must not contain '..'")
    } else if prefix.starts_with('/') {
        Some("must not start with '/'")
    } else if !prefix.ends_with('/') {
        Some("must end with '/'")
    } else if prefix.contains("//") {
        Some("must not contain empty segments ('//')")
    } else if prefix.chars().any(|c| c.is_control() || c == '\\') {
        Some("must not contain control characters or '\\'")
    } else if prefix.contains('%') {
        // The API refuses keys with percent escapes: no key could ever match.
        Some("must not contain '%' (the API refuses object keys holding it)")
    } else if prefix.split('/').any(|segment| segment == ".") {
        Some("must not contain a '.' segment (the API refuses such keys)")
    } else if prefix.len() >= crate::inputs::s3::MAX_KEY_BYTES {
        Some("is as long as the longest S3 key the API accepts: no key could follow it")
    } else {
        None
    };
    match problem {
        Some(p) => Err(AccountsError::Invalid(format!("s3 prefix {prefix:?}: {p}"))),
        None => Ok(()),
    }
}

pub(super) fn validate_threshold(threshold: Option<f64>) -> Result<(), AccountsError> {
    match threshold {
        Some(t) if !crate::config::valid_threshold(t) => Err(AccountsError::Invalid(format!(
            "threshold {t}: must be between 0 and 100"
        ))),
        _ => Ok(()),
    }
}

/// The stored text form; it must parse back, since `Org::rate_limit` relies on it.
pub(super) fn rate_limit_text(limit: &RateLimit) -> Result<String, AccountsError> {
    let text = limit.to_text();
    match RateLimit::parse(&text) {
        Ok(parsed) if parsed == *limit => Ok(text),
        _ => Err(AccountsError::Invalid(format!(
            "rate limit {text:?}: use N/s, N/min or N/h"
        ))),
    }
}

/// Inserts a validated org plus its opening ledger credit. With `if_absent`, a
/// taken name yields Ok(None) instead of an error.
async fn insert_org(
    conn: &mut AnyConnection,
    new: NewOrg,
    if_absent: bool,
) -> Result<Option<Org>, AccountsError> {
    validate_name(&new.name)?;
    if new.tokens < 0 {
        return Err(AccountsError::Invalid(format!(
            "tokens {}: must not be negative",
            new.tokens
        )));
    }
    let s3_prefix = new
        .s3_prefix
        .unwrap_or_else(|| format!("orgs/{}/", new.name));
    validate_s3_prefix(&s3_prefix)?;
    validate_threshold(new.threshold)?;
    let rate_limit = rate_limit_text(&new.rate_limit)?;

    let org = Org {
        id: random_id("org_", 12),
        name: new.name,
        balance: new.tokens,
        s3_prefix,
        rate_limit,
        threshold: new.threshold,
    };
    let sql = if if_absent {
        "INSERT INTO orgs (id, name, balance, s3_prefix, rate_limit, threshold, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (name) DO NOTHING"
    } else {
        "INSERT INTO orgs (id, name, balance, s3_prefix, rate_limit, threshold, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)"
    };
    // Not a cached statement: the Any driver sends a NULL threshold typed as an
    // integer, and PostgreSQL would then reject a later float on the same statement.
    let inserted = sqlx::query(sql)
        .persistent(false)
        .bind(&org.id)
        .bind(&org.name)
        .bind(org.balance)
        .bind(&org.s3_prefix)
        .bind(&org.rate_limit)
        .bind(org.threshold)
        .bind(now_ms())
        .execute(&mut *conn)
        .await;
    match inserted {
        Ok(done) if done.rows_affected() == 0 => return Ok(None),
        Ok(_) => {}
        Err(e) if super::is_unique_violation(&e) => {
            return Err(AccountsError::Invalid(format!(
                "an organisation named {:?} already exists",
                org.name
            )));
        }
        Err(e) => return Err(e.into()),
    }
    if org.balance > 0 {
        ledger::insert_entry(conn, &org.id, org.balance, "initial balance", None).await?;
    }
    Ok(Some(org))
}

impl Accounts {
    pub async fn create_org(&self, new: NewOrg) -> Result<Org, AccountsError> {
        let mut tx = self.pool.begin().await?;
        let org = insert_org(&mut tx, new, false)
            .await?
            .ok_or_else(|| AccountsError::Invalid("organisation was not created".into()))?;
        tx.commit().await?;
        Ok(org)
    }

    /// By id or by name.
    pub async fn find_org(&self, id_or_name: &str) -> Result<Org, AccountsError> {
        let sql = format!(
            "SELECT {ORG_COLUMNS} FROM orgs o WHERE o.id = $1 OR o.name = $1 \
             ORDER BY CASE WHEN o.id = $1 THEN 0 ELSE 1 END LIMIT 1"
        );
        let row = sqlx::query(&sql)
            .bind(id_or_name)
            .fetch_optional(&self.pool)
            .await?;
        match row {
            Some(row) => Ok(org_from_row(&row)?),
            None => Err(AccountsError::OrgNotFound(id_or_name.to_string())),
        }
    }

    pub async fn list_orgs(&self) -> Result<Vec<Org>, AccountsError> {
        let sql = format!("SELECT {ORG_COLUMNS} FROM orgs o ORDER BY o.created_at, o.name");
        let rows = sqlx::query(&sql).fetch_all(&self.pool).await?;
        Ok(rows.iter().map(org_from_row).collect::<Result<_, _>>()?)
    }

    /// Embedded default: creates the `default` org and a key on first start; Some(key) only then.
    /// Org, credit and key are one transaction, and a concurrent first start
    /// (another replica) simply finds the name taken.
    pub async fn ensure_default_org(
        &self,
        tokens: i64,
        rate_limit: RateLimit,
    ) -> Result<Option<CreatedKey>, AccountsError> {
        let mut tx = self.pool.begin().await?;
        let new = NewOrg {
            name: DEFAULT_ORG.into(),
            tokens,
            s3_prefix: None,
            rate_limit,
            threshold: None,
        };
        let Some(org) = insert_org(&mut tx, new, true).await? else {
            return Ok(None);
        };
        let key = keys::insert_key(&mut tx, &org.id).await?;
        tx.commit().await?;
        Ok(Some(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates_names() {
        for ok in ["acme", "Acme-Corp_2", "a.b", "default"] {
            assert!(validate_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "a b",
            "a/b",
            ".hidden",
            "org_123",
            "ünï",
            &"x".repeat(65),
        ] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn validates_s3_prefixes() {
        for ok in ["orgs/acme/", "acme/", "a/b/c/"] {
            assert!(validate_s3_prefix(ok).is_ok(), "{ok}");
        }
        for bad in [
            "/orgs/acme/",
            "orgs/acme",
            "orgs/../x/",
            "..",
            "orgs//acme/",
            "",
            "a\\b/",
            "orgs/%2e%2e/",
            "orgs/./acme/",
            &format!("{}/", "a".repeat(crate::inputs::s3::MAX_KEY_BYTES)),
        ] {
            assert!(validate_s3_prefix(bad).is_err(), "{bad}");
        }
        let e = validate_s3_prefix("orgs/100%/").unwrap_err().to_string();
        assert!(e.contains("'%'"), "{e}");
    }

    #[test]
    fn validates_thresholds_and_limits() {
        assert!(validate_threshold(None).is_ok());
        assert!(validate_threshold(Some(0.0)).is_ok());
        assert!(validate_threshold(Some(100.0)).is_ok());
        assert!(validate_threshold(Some(100.5)).is_err());
        assert!(validate_threshold(Some(-1.0)).is_err());
        assert!(validate_threshold(Some(f64::NAN)).is_err());
        let limit = RateLimit::parse("60/min").unwrap();
        assert_eq!(rate_limit_text(&limit).unwrap(), "60/min");
        let odd = RateLimit {
            per_window: 5,
            window: std::time::Duration::from_secs(7),
        };
        assert!(rate_limit_text(&odd).is_err());
    }
}

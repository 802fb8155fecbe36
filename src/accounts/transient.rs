//! Which database errors are an outage (retryable, 503) rather than a bug (500).
use sqlx::{error::DatabaseError, postgres::PgDatabaseError, sqlite::SqliteError};

/// Connection-level failures, a pool that cannot hand out a connection in
/// time, PostgreSQL shutting down or refusing connections, and SQLite's
/// busy/locked answers. Everything else (constraint violations, SQL errors,
/// decode errors) is a bug or bad data and stays a 500.
pub(super) fn is_transient(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => {
            if let Some(pg) = db.try_downcast_ref::<PgDatabaseError>() {
                pg_code_is_transient(pg.code())
            } else if let Some(lite) = db.try_downcast_ref::<SqliteError>() {
                DatabaseError::code(lite).is_some_and(|c| sqlite_code_is_transient(&c))
            } else {
                false
            }
        }
        _ => false,
    }
}

/// SQLSTATE: class 08 (connection exception), 57P01–57P03 (admin/crash
/// shutdown, cannot connect now), 53300 (too many connections), and the
/// serialization/deadlock failures that a retry resolves.
fn pg_code_is_transient(code: &str) -> bool {
    code.starts_with("08")
        || matches!(
            code,
            "57P01" | "57P02" | "57P03" | "53300" | "40001" | "40P01"
        )
}

/// SQLite reports extended result codes; the primary code is the low byte.
/// 5 = SQLITE_BUSY, 6 = SQLITE_LOCKED.
fn sqlite_code_is_transient(code: &str) -> bool {
    code.parse::<i64>().is_ok_and(|c| matches!(c & 0xff, 5 | 6))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_postgres_codes() {
        for code in [
            "08006", "08001", "57P01", "57P02", "57P03", "53300", "40001",
        ] {
            assert!(pg_code_is_transient(code), "{code}");
        }
        for code in ["23505", "42P01", "22P02", "57014"] {
            assert!(!pg_code_is_transient(code), "{code}");
        }
    }

    #[test]
    fn classifies_sqlite_codes() {
        assert!(sqlite_code_is_transient("5"));
        assert!(sqlite_code_is_transient("517")); // SQLITE_BUSY_SNAPSHOT
        assert!(sqlite_code_is_transient("6"));
        assert!(!sqlite_code_is_transient("2067")); // SQLITE_CONSTRAINT_UNIQUE
        assert!(!sqlite_code_is_transient("1"));
    }

    #[test]
    fn classifies_connection_errors() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert!(is_transient(&sqlx::Error::Io(refused)));
        assert!(is_transient(&sqlx::Error::PoolTimedOut));
        assert!(!is_transient(&sqlx::Error::RowNotFound));
        assert!(!is_transient(&sqlx::Error::Protocol("bad".into())));
    }
}

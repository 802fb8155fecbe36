//! Connecting (backend detection, SQLite file and pragmas) and migrations.
use std::{path::Path, sync::Once, time::Duration};

use anyhow::{Context, bail};
use sqlx::{Executor, any::AnyPoolOptions, migrate::Migrator};

use super::{Accounts, AccountsError};

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("migrations/postgres");

/// How long a SQLite writer waits for the write lock before "database is locked".
const SQLITE_BUSY_TIMEOUT_MS: u32 = 15_000;
/// How long a request waits for a PostgreSQL connection (pool full, or the
/// server down and refusing connections) before it is answered 503.
const POSTGRES_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);
/// Attempts at applying migrations: a concurrent first start (another process
/// on the same empty database) makes one attempt fail on tables the other
/// just created; the next attempt finds them recorded and applies nothing.
const MIGRATE_ATTEMPTS: u32 = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn from_url(url: &str) -> anyhow::Result<Self> {
        let scheme = url.split_once(':').map(|(s, _)| s).unwrap_or("");
        match scheme {
            "sqlite" => Ok(Backend::Sqlite),
            "postgres" | "postgresql" => Ok(Backend::Postgres),
            _ => bail!(
                "database URL must start with sqlite:// or postgres:// (got scheme {scheme:?})"
            ),
        }
    }
}

/// The file path of a `sqlite:` URL, or None for an in-memory database.
fn sqlite_path(url: &str) -> Option<&str> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or("");
    (!path.is_empty() && path != ":memory:").then_some(path)
}

/// Adds `mode=rwc` (create if missing) unless the URL chooses a mode itself.
fn with_create_mode(url: &str) -> String {
    if sqlite_path(url).is_none() || url.contains("mode=") {
        url.to_string()
    } else if url.contains('?') {
        format!("{url}&mode=rwc")
    } else {
        format!("{url}?mode=rwc")
    }
}

impl Accounts {
    /// Connects (creating the SQLite file and its folder if needed).
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        static DRIVERS: Once = Once::new();
        DRIVERS.call_once(sqlx::any::install_default_drivers);

        let backend = Backend::from_url(url)?;
        let pool = match backend {
            // During an outage a request fails after POSTGRES_ACQUIRE_TIMEOUT (503
            // `database_unavailable`) instead of hanging until its own timeout; each
            // pooled connection is pinged before use, so the ones the restart broke
            // are dropped and new ones opened as soon as PostgreSQL is back.
            Backend::Postgres => AnyPoolOptions::new()
                .max_connections(16)
                .acquire_timeout(POSTGRES_ACQUIRE_TIMEOUT)
                .test_before_acquire(true)
                .idle_timeout(Duration::from_secs(300))
                .connect(url)
                .await
                .context("connecting to PostgreSQL")?,
            Backend::Sqlite => {
                let path = sqlite_path(url);
                if let Some(parent) = path.map(Path::new).and_then(Path::parent)
                    && !parent.as_os_str().is_empty()
                {
                    std::fs::create_dir_all(parent).with_context(|| {
                        format!("creating the database folder {}", parent.display())
                    })?;
                }
                // SQLite serialises writers anyway; a few connections let WAL readers
                // proceed while one writes. An in-memory database exists per
                // connection, so it must have exactly one.
                let max = if path.is_some() { 4 } else { 1 };
                let url = with_create_mode(url);
                let pool = AnyPoolOptions::new()
                    .max_connections(max)
                    .acquire_timeout(Duration::from_secs(30))
                    .after_connect(|conn, _meta| {
                        Box::pin(async move {
                            conn.execute(
                                format!(
                                    "PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}; \
                                     PRAGMA foreign_keys = ON; PRAGMA synchronous = NORMAL;"
                                )
                                .as_str(),
                            )
                            .await?;
                            Ok(())
                        })
                    })
                    .connect(&url)
                    .await
                    .with_context(|| format!("opening SQLite database {url}"))?;
                if path.is_some() {
                    // WAL lets readers run beside the writer. It is persistent in the
                    // file, and switching needs an exclusive lock, so do it once here
                    // rather than on every new connection.
                    pool.execute("PRAGMA journal_mode = WAL")
                        .await
                        .context("enabling SQLite WAL mode")?;
                }
                pool
            }
        };
        Ok(Self { pool, backend })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub async fn migrate(&self) -> anyhow::Result<()> {
        let migrator = match self.backend {
            Backend::Sqlite => &SQLITE_MIGRATIONS,
            Backend::Postgres => &POSTGRES_MIGRATIONS,
        };
        let mut attempt = 1;
        loop {
            match migrator.run(&self.pool).await {
                Ok(()) => return Ok(()),
                Err(e) if attempt < MIGRATE_ATTEMPTS => {
                    tracing::info!(error = %e, attempt, "migrations failed; retrying (concurrent first start?)");
                    tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
                    attempt += 1;
                }
                Err(e) => return Err(e).context("applying database migrations"),
            }
        }
    }

    /// Cheap round trip for /readyz.
    pub async fn ping(&self) -> Result<(), AccountsError> {
        self.pool.execute("SELECT 1").await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_backends() {
        assert_eq!(
            Backend::from_url("sqlite://data/x.db?mode=rwc").unwrap(),
            Backend::Sqlite
        );
        assert_eq!(
            Backend::from_url("sqlite::memory:").unwrap(),
            Backend::Sqlite
        );
        assert_eq!(
            Backend::from_url("postgres://u@h/db").unwrap(),
            Backend::Postgres
        );
        assert_eq!(
            Backend::from_url("postgresql://u@h/db").unwrap(),
            Backend::Postgres
        );
        assert!(Backend::from_url("mysql://u@h/db").is_err());
        assert!(Backend::from_url("data/x.db").is_err());
    }

    #[test]
    fn finds_sqlite_paths() {
        assert_eq!(
            sqlite_path("sqlite://data/facecompare.db?mode=rwc"),
            Some("data/facecompare.db")
        );
        assert_eq!(sqlite_path("sqlite:///tmp/a.db"), Some("/tmp/a.db"));
        assert_eq!(sqlite_path("sqlite::memory:"), None);
        assert_eq!(sqlite_path("sqlite://:memory:"), None);
        assert_eq!(with_create_mode("sqlite://a.db"), "sqlite://a.db?mode=rwc");
        assert_eq!(
            with_create_mode("sqlite://a.db?cache=shared"),
            "sqlite://a.db?cache=shared&mode=rwc"
        );
        assert_eq!(
            with_create_mode("sqlite://a.db?mode=ro"),
            "sqlite://a.db?mode=ro"
        );
    }
}

//! Databases for tests: a temporary SQLite file, or a fresh PostgreSQL
//! database on the one server that `FACECOMPARE_TEST_PG_URL` names. The only
//! PostgreSQL bootstrap of the suites (the HTTP harness, `accounts`,
//! `cli_admin` and `replicas` all create their databases here).
use std::{
    path::Path,
    sync::{
        OnceLock,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use facecompare::accounts::Accounts;

use super::external_base;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A new, empty database for `backend`: a temporary SQLite file, or a fresh
/// PostgreSQL database `fc_test_<pid>_<tag>_<n>` (see [`create_pg_database`]).
pub fn fresh_database(backend: Backend, tag: &str) -> String {
    match backend {
        Backend::Sqlite => {
            let dir = tempfile::Builder::new()
                .prefix("facecompare-test-")
                .tempdir()
                .expect("temp dir");
            let path = dir.keep().join("fc.db");
            format!("sqlite://{}?mode=rwc", path.display())
        }
        Backend::Postgres => create_pg_database(tag),
    }
}

const DEFAULT_PG_URL: &str = "postgres://postgres@127.0.0.1:5432/";

/// The PostgreSQL server the suites create their databases on, as
/// `scheme://user[:password]@host:port` (no database, no trailing slash):
/// `FACECOMPARE_TEST_PG_URL` (a server URL; a database or query in it is
/// ignored), default `postgres://postgres@127.0.0.1:5432/`.
/// `FACECOMPARE_TEST_PG_BASE`, the HTTP harness's old name, is still read
/// when `FACECOMPARE_TEST_PG_URL` is unset (deprecated).
pub fn pg_server() -> String {
    let set = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
    let url = match (
        set("FACECOMPARE_TEST_PG_URL"),
        set("FACECOMPARE_TEST_PG_BASE"),
    ) {
        (Some(url), _) => url,
        (None, Some(base)) => {
            static WARNED: OnceLock<()> = OnceLock::new();
            WARNED.get_or_init(|| {
                eprintln!("FACECOMPARE_TEST_PG_BASE is deprecated: set FACECOMPARE_TEST_PG_URL")
            });
            base
        }
        (None, None) => DEFAULT_PG_URL.into(),
    };
    let (scheme, rest) = url
        .trim()
        .split_once("://")
        .unwrap_or_else(|| panic!("FACECOMPARE_TEST_PG_URL must be a postgres:// URL: {url}"));
    let authority = rest.split(['/', '?']).next().unwrap_or(rest);
    format!("{scheme}://{authority}")
}

/// [`pg_server`] with a trailing slash: append a database name.
pub fn pg_base() -> String {
    format!("{}/", pg_server())
}

/// The maintenance database the suites connect to for CREATE/DROP DATABASE.
fn pg_admin_url() -> String {
    format!("{}postgres", pg_base())
}

/// Runs `f` on its own thread and runtime: callers may be inside a test's runtime.
pub(crate) fn block_on_thread<T: Send + 'static>(
    f: impl std::future::Future<Output = T> + Send + 'static,
) -> T {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f)
    })
    .join()
    .expect("helper thread")
}

/// Whether the PostgreSQL tests can run. Unreachable PostgreSQL skips them
/// (with a `SKIPPED:` message) on a developer machine and fails them under `CI`.
pub fn postgres_or_skip() -> bool {
    static AVAILABLE: OnceLock<Result<(), String>> = OnceLock::new();
    if external_base().is_some() {
        return true;
    }
    let admin_url = pg_admin_url();
    let available = AVAILABLE.get_or_init(|| {
        let url = admin_url.clone();
        block_on_thread(async move {
            use sqlx::Connection;
            let connect = sqlx::PgConnection::connect(&url);
            match tokio::time::timeout(Duration::from_secs(5), connect).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err("connect timed out".into()),
            }
        })
    });
    match available {
        Ok(()) => true,
        Err(e) if std::env::var_os("CI").is_some() => {
            panic!("PostgreSQL at {admin_url} unreachable ({e}); set FACECOMPARE_TEST_PG_URL")
        }
        Err(e) => {
            eprintln!(
                "SKIPPED: PostgreSQL at {admin_url} unreachable ({e}); set FACECOMPARE_TEST_PG_URL, or CI=1 to fail"
            );
            false
        }
    }
}

/// Creates `fc_test_<pid>_<tag>_<n>` and returns its URL. Databases of test
/// runs whose process is gone are dropped on the way; a test may drop its
/// own sooner with [`drop_pg_database`].
pub fn create_pg_database(tag: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let name = format!("fc_test_{}_{tag}_{n}", std::process::id()).to_ascii_lowercase();
    let admin_url = pg_admin_url();
    let db = name.clone();
    block_on_thread(async move {
        use sqlx::{Connection, Executor};
        let mut conn = sqlx::PgConnection::connect(&admin_url)
            .await
            .unwrap_or_else(|e| {
                panic!("PostgreSQL at {admin_url} ({e}); start it or set FACECOMPARE_TEST_PG_URL")
            });
        drop_stale_databases(&mut conn).await;
        conn.execute(format!("CREATE DATABASE \"{db}\"").as_str())
            .await
            .expect("CREATE DATABASE");
    });
    format!("{}{name}", pg_base())
}

/// Drops a database [`create_pg_database`] made (connections to it are
/// closed by force); best effort.
pub fn drop_pg_database(url: &str) {
    let name = url
        .rsplit('/')
        .next()
        .and_then(|n| n.split('?').next())
        .unwrap_or_default()
        .to_string();
    assert!(name.starts_with("fc_test_"), "not a test database: {url}");
    let admin_url = pg_admin_url();
    block_on_thread(async move {
        use sqlx::{Connection, Executor};
        if let Ok(mut conn) = sqlx::PgConnection::connect(&admin_url).await {
            let _ = conn
                .execute(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)").as_str())
                .await;
        }
    });
}

/// Drops `fc_test_<pid>_...` databases of test runs whose process is gone.
async fn drop_stale_databases(conn: &mut sqlx::PgConnection) {
    use sqlx::Executor;
    let rows: Vec<(String,)> =
        match sqlx::query_as("SELECT datname FROM pg_database WHERE datname LIKE 'fc\\_test\\_%'")
            .fetch_all(&mut *conn)
            .await
        {
            Ok(rows) => rows,
            Err(_) => return,
        };
    for (name,) in rows {
        let pid = name
            .strip_prefix("fc_test_")
            .and_then(|r| r.split('_').next())
            .and_then(|p| p.parse::<u32>().ok());
        if let Some(pid) = pid
            && pid != std::process::id()
            && !Path::new(&format!("/proc/{pid}")).exists()
        {
            let _ = conn
                .execute(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)").as_str())
                .await;
        }
    }
}

/// A migrated [`Accounts`] on a fresh database, for tests of the library
/// without a server: SQLite in a folder that does not exist yet (connect must
/// create it), or a PostgreSQL database dropped by [`AccountsDb::close`].
pub struct AccountsDb {
    pub url: String,
    pub accounts: Accounts,
    backend: Backend,
    _dir: Option<tempfile::TempDir>,
}

impl AccountsDb {
    /// None (after a `SKIPPED:` message) when PostgreSQL is unreachable outside `CI`.
    pub async fn open(backend: Backend) -> Option<Self> {
        let (url, dir) = match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let url = format!("sqlite://{}/nested/fc.db", dir.path().display());
                (url, Some(dir))
            }
            Backend::Postgres => {
                if !postgres_or_skip() {
                    return None;
                }
                (create_pg_database("accounts"), None)
            }
        };
        let accounts = Accounts::connect(&url)
            .await
            .unwrap_or_else(|e| panic!("connect {backend:?}: {e}"));
        accounts
            .migrate()
            .await
            .unwrap_or_else(|e| panic!("migrate {backend:?}: {e}"));
        Some(Self {
            url,
            accounts,
            backend,
            _dir: dir,
        })
    }

    /// Closes the pool and drops a PostgreSQL database (SQLite's folder goes on drop).
    pub async fn close(self) {
        self.accounts.pool.close().await;
        if self.backend == Backend::Postgres {
            drop_pg_database(&self.url);
        }
    }
}

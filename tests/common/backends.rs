//! `on_both_backends!`: one test per scenario and database backend.

/// Runs each scenario `async fn(Backend)` once per backend, as the tests
/// `<scenario>::sqlite` and `<scenario>::postgres` (skipped with a message
/// when PostgreSQL is unreachable, failed under `CI`). With `if GUARD;`
/// first (a `fn() -> bool` path from the test file's root), a scenario runs
/// only when the guard says so (the guard prints why not). With `accounts;`
/// first, each scenario is an `async fn(&Accounts)` on a fresh migrated
/// database of its own ([`super::AccountsDb`]), no server.
#[allow(unused_macros)]
macro_rules! on_both_backends {
    (accounts; $($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite() {
                let db = super::common::AccountsDb::open(super::common::Backend::Sqlite)
                    .await
                    .expect("SQLite always opens");
                super::$name(&db.accounts).await;
                db.close().await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres() {
                let Some(db) = super::common::AccountsDb::open(super::common::Backend::Postgres).await
                else {
                    return;
                };
                super::$name(&db.accounts).await;
                db.close().await;
            }
        }
    )*};
    (if $guard:path; $($name:ident),* $(,)?) => {$(
        mod $name {
            // The guard is named from the test file's root.
            #[allow(unused_imports)]
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                if $guard() {
                    super::$name(super::common::Backend::Sqlite).await
                }
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if $guard() && super::common::postgres_or_skip() {
                    super::$name(super::common::Backend::Postgres).await
                }
            }
        }
    )*};
    ($($name:ident),* $(,)?) => {
        on_both_backends!(if common::backends::always; $($name),*);
    };
}

/// The guard of scenarios that always run.
#[allow(dead_code)]
pub fn always() -> bool {
    true
}

#[allow(unused_imports)]
pub(crate) use on_both_backends;

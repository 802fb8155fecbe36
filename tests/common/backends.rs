//! `on_both_backends!`: one test per scenario and database backend.

/// Runs each scenario `async fn(Backend)` once per backend, as the tests
/// `<scenario>::sqlite` and `<scenario>::postgres` (skipped with a message
/// when PostgreSQL is unreachable, failed under `CI`). With `if GUARD;`
/// first (a `fn() -> bool` path from the test file's root), a scenario runs
/// only when the guard says so (the guard prints why not).
#[allow(unused_macros)]
macro_rules! on_both_backends {
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

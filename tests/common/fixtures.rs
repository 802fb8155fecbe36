//! The fetched fixture photos (`tests/fixtures/fetched/`, pinned and
//! sha256-checked by `scripts/fetch-fixtures.sh`; `FIXTURES_DIR` overrides).
//! A missing fixture fails the test, never skips it.
use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
};

use super::repo;

pub fn fixture_dir() -> PathBuf {
    std::env::var("FIXTURES_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo().join("tests/fixtures/fetched"))
}

/// The absolute path of fixture `name`; runs `scripts/fetch-fixtures.sh`
/// once if it is missing.
pub fn fixture_path(name: &str) -> PathBuf {
    static FETCHED: OnceLock<()> = OnceLock::new();
    let path = fixture_dir().join(name);
    if !path.exists() {
        FETCHED.get_or_init(|| {
            let status = Command::new("bash")
                .arg(repo().join("scripts/fetch-fixtures.sh"))
                .status();
            eprintln!("fetch-fixtures.sh: {status:?}");
        });
    }
    std::fs::canonicalize(&path).unwrap_or(path)
}

/// The bytes of fixture `name` (fetched first if missing).
pub fn fixture(name: &str) -> Vec<u8> {
    read_fixture(&fixture_path(name))
}

/// Any file the engine suites read (fixtures, `../shared/eval` images),
/// failing with a hint when it is missing.
pub fn read_fixture(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| {
        panic!(
            "fixture {} ({e}): run scripts/fetch-fixtures.sh (needs python3 and pip)",
            path.display()
        )
    })
}

/// The labelled eval sets beside the repository (`../shared/eval`,
/// third-party images read in place); None after `SKIPPED: ...` when absent
/// (a checkout without `../shared`), also under `CI`.
pub fn eval_dir() -> Option<PathBuf> {
    let dir = repo().join("../shared/eval");
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!(
            "SKIPPED: {} is absent (labelled eval sets live beside the repository)",
            dir.display()
        );
        None
    }
}

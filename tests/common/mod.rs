//! The integration-test harness, shared by every suite (`mod common;`):
//! real `facecompare serve` processes over real HTTP, real databases, the
//! real engine. Every item is re-exported here, so `common::X` works for
//! anything below; the map (also in docs/development.md):
//!
//! | file | what |
//! |---|---|
//! | `server.rs` | [`Server`]: the shared server per backend ([`server`]), servers a test owns ([`spawn_server`], [`ServerOptions`]), a running stack (`FACECOMPARE_TEST_BASE_URL`, [`own_servers_or_skip`]) |
//! | `db.rs` | [`Backend`], [`fresh_database`], the one PostgreSQL bootstrap (`FACECOMPARE_TEST_PG_URL`, [`postgres_or_skip`], [`create_pg_database`]), [`AccountsDb`] for library tests |
//! | `cli.rs` | the operator CLI: [`cli`], [`cli_json`], [`Server::org`] ([`TestOrg`]), balances |
//! | `http.rs` | [`client`], [`Resp`] and its assertions, compare requests ([`Input`], [`file`], [`b64`], [`text`]) |
//! | `engine.rs` | ONNX Runtime and models ([`ort_dylib`], [`models_dir`]); packs, models, engines in process ([`load_models`], [`start_engine`]) |
//! | `fixtures.rs` | the fetched photos ([`fixture`], [`fixture_path`]) |
//! | `images.rs` | generated images (`common::images::...`) |
//! | `backends.rs` | `on_both_backends!`: one test per scenario and backend |
//! | `s3.rs` | the s3s-fs launcher (`common::s3::S3sFs`) |
//! | `pg_cluster.rs` | a PostgreSQL cluster of a test's own, to stop and start |
//! | `browser.rs` | the WebDriver client for headless Chromium (`common::browser::Browser`) |
//!
//! Skips: a missing optional dependency (PostgreSQL, s3s-fs, Chromium, a
//! test's own servers against a running stack) prints `SKIPPED: ...` and
//! passes; with `CI` set it fails instead. Missing fixtures, models or ONNX
//! Runtime always fail.
// Each suite uses a part of the harness.
#![allow(dead_code, unused_imports, unused_macros)]

pub mod backends;
pub mod browser;
pub mod cli;
pub mod db;
pub mod engine;
pub mod fixtures;
pub mod http;
pub mod images;
pub mod onnx;
pub mod pg_cluster;
pub mod s3;
pub mod server;

pub use cli::*;
pub use db::*;
pub use engine::*;
pub use fixtures::*;
pub use http::*;
pub use server::*;

use std::path::PathBuf;

pub const BIN: &str = env!("CARGO_BIN_EXE_facecompare");

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

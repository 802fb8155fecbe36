//! The operator commands through the real binary, on a fresh SQLite file
//! (and on PostgreSQL when reachable; see tests/accounts.rs for the rules).
mod common;

use std::process::{Command, Output};

use facecompare::accounts::Accounts;
use serde_json::Value;

fn run(db_url: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_facecompare"))
        .args(args)
        .env("FACECOMPARE_DATABASE_URL", db_url)
        .env_remove("FACECOMPARE_RATE_LIMIT")
        .output()
        .expect("run facecompare")
}

/// Runs a `--json` command that must succeed and print exactly one JSON value.
fn json(db_url: &str, args: &[&str]) -> Value {
    let out = run(db_url, args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("{args:?}: stdout is not one JSON value ({e}): {stdout}"))
}

fn fails(db_url: &str, args: &[&str], message: &str) {
    let out = run(db_url, args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{args:?} should fail");
    assert!(
        stderr.contains(message),
        "{args:?}: stderr {stderr:?} should mention {message:?}"
    );
    assert!(!stderr.contains("panicked"), "{args:?} panicked: {stderr}");
    assert!(
        out.stdout.is_empty(),
        "{args:?}: nothing on stdout on failure"
    );
}

async fn operator_flow(db_url: &str) {
    let org = json(
        db_url,
        &[
            "org",
            "create",
            "acme",
            "--tokens",
            "3",
            "--rate-limit",
            "30/min",
            "--threshold",
            "85",
            "--json",
        ],
    );
    let org_id = org["id"].as_str().expect("id").to_string();
    assert!(org_id.starts_with("org_"));
    assert_eq!(org["name"], "acme");
    assert_eq!(org["balance"], 3);
    assert_eq!(org["s3Prefix"], "orgs/acme/");
    assert_eq!(org["rateLimit"], "30/min");
    assert_eq!(org["threshold"], 85.0);

    let key = json(db_url, &["key", "create", "--org", "acme", "--json"]);
    let secret = key["key"].as_str().expect("key").to_string();
    assert!(secret.starts_with("fck_"));
    assert!(key["id"].as_str().unwrap().starts_with("key_"));
    assert_eq!(key["org"], org_id.as_str());

    let credited = json(db_url, &["tokens", "add", "--org", &org_id, "4", "--json"]);
    assert_eq!(
        (credited["org"].as_str(), credited["balance"].as_i64()),
        (Some(org_id.as_str()), Some(7))
    );
    let shown = json(db_url, &["org", "show", "acme", "--json"]);
    assert_eq!(shown["balance"], 7);
    let listed = json(db_url, &["org", "list", "--json"]);
    assert_eq!(listed.as_array().map(Vec::len), Some(1));

    // Human output of key create warns that the key is shown once.
    let human = run(db_url, &["key", "create", "--org", "acme"]);
    assert!(human.status.success());
    assert!(String::from_utf8_lossy(&human.stdout).contains("cannot be shown again"));

    fails(db_url, &["org", "show", "nope"], "not found");
    fails(db_url, &["org", "create", "acme"], "already exists");
    fails(
        db_url,
        &["org", "create", "beta", "--rate-limit", "5/day"],
        "--rate-limit",
    );
    fails(
        db_url,
        &["org", "create", "beta", "--s3-prefix", "../etc/"],
        "..",
    );
    fails(db_url, &["tokens", "add", "--org", "acme", "0"], "positive");
    // Numbers and prefixes the database or the API cannot use are refused
    // by name, never answered with a raw database error.
    let max = i64::MAX.to_string();
    fails(
        db_url,
        &["tokens", "add", "--org", "acme", &max],
        "would pass the largest one stored",
    );
    fails(
        db_url,
        &["tokens", "add", "--org", "acme", "99999999999999999999"],
        "99999999999999999999",
    );
    fails(
        db_url,
        &["org", "create", "pct", "--s3-prefix", "orgs/100%/"],
        "must not contain '%'",
    );
    fails(db_url, &["key", "revoke", "key_unknown"], "not found");

    // The printed key is the one the server accepts, until it is revoked.
    let accounts = Accounts::connect(db_url).await.unwrap();
    assert_eq!(
        accounts.authenticate(&secret).await.unwrap().map(|o| o.id),
        Some(org_id.clone())
    );
    let revoked = run(db_url, &["key", "revoke", key["id"].as_str().unwrap()]);
    assert!(revoked.status.success());
    assert!(accounts.authenticate(&secret).await.unwrap().is_none());
    assert_eq!(accounts.ledger_sum(&org_id).await.unwrap(), 7);
    accounts.pool.close().await;
}

#[tokio::test]
async fn operator_commands_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    // A fresh database in a folder that does not exist yet: commands migrate first.
    let url = format!("sqlite://{}/new/fc.db", dir.path().display());
    operator_flow(&url).await;
}

#[tokio::test]
async fn operator_commands_on_postgres() {
    if !common::postgres_or_skip() {
        return;
    }
    let url = common::create_pg_database("cli");
    operator_flow(&url).await;
    common::drop_pg_database(&url);
}

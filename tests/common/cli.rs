//! The operator CLI (`facecompare org|key|tokens ...`) as the tests use it:
//! provisioning organisations and keys on a server's database.
use serde_json::Value;

use super::{BIN, Server};

/// Runs the CLI against `db_url`; returns stdout, panics (with stderr) on failure.
pub async fn cli(db_url: &str, args: &[&str]) -> String {
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.args(args)
        .env("FACECOMPARE_DATABASE_URL", db_url)
        .env("RUST_LOG", "warn");
    let out = cmd
        .output()
        .await
        .unwrap_or_else(|e| panic!("running facecompare {args:?}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "facecompare {args:?} failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

pub async fn cli_json(db_url: &str, args: &[&str]) -> Value {
    let out = cli(db_url, args).await;
    serde_json::from_str(out.trim())
        .unwrap_or_else(|e| panic!("facecompare {args:?}: not JSON ({e}): {out}"))
}

/// An organisation and one API key, made for one test.
#[derive(Clone, Debug)]
pub struct TestOrg {
    pub id: String,
    pub name: String,
    pub key: String,
    pub key_id: String,
}

pub fn unique_name(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

impl Server {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// An org with `tokens` tokens and a generous rate limit.
    pub async fn org(&self, tokens: i64) -> TestOrg {
        self.org_with(tokens, &["--rate-limit", "1000/min"]).await
    }

    /// An org with `tokens` tokens and extra `org create` flags.
    pub async fn org_with(&self, tokens: i64, extra: &[&str]) -> TestOrg {
        let name = unique_name("t");
        let tokens_s = tokens.to_string();
        let mut args = vec!["org", "create", &name, "--tokens", &tokens_s, "--json"];
        args.extend_from_slice(extra);
        let org = cli_json(&self.db_url, &args).await;
        let id = org["id"].as_str().expect("org id").to_string();
        assert_eq!(org["balance"], tokens, "{org}");
        let key = cli_json(&self.db_url, &["key", "create", "--org", &id, "--json"]).await;
        assert_eq!(key["org"], id.as_str(), "{key}");
        TestOrg {
            id,
            name,
            key: key["key"].as_str().expect("key").to_string(),
            key_id: key["id"].as_str().expect("key id").to_string(),
        }
    }

    /// The balance as the CLI reports it.
    pub async fn balance(&self, org: &TestOrg) -> i64 {
        let v = cli_json(&self.db_url, &["org", "show", &org.id, "--json"]).await;
        v["balance"]
            .as_i64()
            .unwrap_or_else(|| panic!("no balance in {v}"))
    }

    /// The ledger sum, read through the library on the same database.
    pub async fn ledger_sum(&self, org: &TestOrg) -> i64 {
        let accounts = facecompare::accounts::Accounts::connect(&self.db_url)
            .await
            .expect("connect accounts");
        accounts.ledger_sum(&org.id).await.expect("ledger sum")
    }
}

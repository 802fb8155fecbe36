//! Accounts against real databases, through the library (no server): every
//! scenario runs on SQLite (a temp file) and on PostgreSQL (a fresh database
//! per test, dropped afterwards), as `<scenario>::sqlite` and
//! `<scenario>::postgres` (`common::AccountsDb`, `on_both_backends!`).
//!
//! PostgreSQL comes from `FACECOMPARE_TEST_PG_URL` (a server URL; default
//! `postgres://postgres@127.0.0.1:5432/`). When it is unreachable the
//! PostgreSQL tests fail if `CI` is set, and otherwise skip with a message.
mod common;

use std::{collections::HashSet, sync::Arc, time::Duration};

use common::{AccountsDb, Backend, backends::on_both_backends};
use facecompare::{
    accounts::{Accounts, AccountsError, IdempotencyBegin, NewOrg, Org},
    config::RateLimit,
};

on_both_backends!(
    accounts;
    migrations_are_idempotent,
    orgs_by_id_or_name_and_validation,
    keys_authenticate_and_revoke,
    concurrent_charges_succeed_exactly_balance_times,
    rate_limit_admits_burst_then_refuses,
    idempotency_new_replay_mismatch_in_progress,
    idempotency_abandoned_stale_and_expired_records,
    default_org_created_once,
    optional_values_alternate_on_cached_statements,
);

/// NULL and non-NULL values of the same optional column, many times over on
/// every pooled connection: with the Any driver a cached PostgreSQL statement
/// first seen with a NULL used to reject the typed value later (22P03).
async fn optional_values_alternate_on_cached_statements(acc: &Accounts) {
    for i in 0..24 {
        let threshold = if i % 2 == 0 {
            None
        } else {
            Some(70.0 + i as f64)
        };
        let org = acc
            .create_org(NewOrg {
                name: format!("alt{i}"),
                tokens: 3,
                s3_prefix: None,
                rate_limit: limit("100/s"),
                threshold,
            })
            .await
            .unwrap();
        assert_eq!(org.threshold, threshold);
        acc.add_tokens(&org.id, 2, "credit without a request id")
            .await
            .unwrap();
        assert_eq!(
            acc.charge(&org.id, 1, &format!("req-{i}")).await.unwrap(),
            Some(4)
        );
        assert_ledger_consistent(acc, &org).await;
    }
}

fn limit(text: &str) -> RateLimit {
    RateLimit::parse(text).unwrap()
}

fn new_org(name: &str, tokens: i64) -> NewOrg {
    NewOrg {
        name: name.into(),
        tokens,
        s3_prefix: None,
        rate_limit: limit("60/min"),
        threshold: None,
    }
}

async fn assert_ledger_consistent(acc: &Accounts, org: &Org) {
    let balance = acc.balance(&org.id).await.unwrap();
    let sum = acc.ledger_sum(&org.id).await.unwrap();
    assert_eq!(
        balance, sum,
        "balance must equal the ledger sum for {}",
        org.name
    );
}

// ---------------------------------------------------------------- scenarios

async fn migrations_are_idempotent(acc: &Accounts) {
    acc.migrate().await.expect("second migrate is a no-op");
    acc.ping().await.expect("ping");
}

async fn orgs_by_id_or_name_and_validation(acc: &Accounts) {
    let acme = acc.create_org(new_org("acme", 7)).await.unwrap();
    assert!(acme.id.starts_with("org_"), "{}", acme.id);
    assert_eq!((acme.name.as_str(), acme.balance), ("acme", 7));
    assert_eq!(acme.s3_prefix, "orgs/acme/");
    assert_eq!(acme.rate_limit, "60/min");
    assert_eq!(acme.threshold, None);
    assert_ledger_consistent(acc, &acme).await;

    let custom = acc
        .create_org(NewOrg {
            name: "globex".into(),
            tokens: 0,
            s3_prefix: Some("tenants/globex/".into()),
            rate_limit: limit("10/s"),
            threshold: Some(92.5),
        })
        .await
        .unwrap();
    assert_eq!(custom.s3_prefix, "tenants/globex/");
    assert_eq!(custom.threshold, Some(92.5));
    assert_eq!(custom.rate_limit(), limit("10/s"));
    assert_eq!(acc.ledger_sum(&custom.id).await.unwrap(), 0);

    let by_id = acc.find_org(&acme.id).await.unwrap();
    let by_name = acc.find_org("acme").await.unwrap();
    assert_eq!(by_id.id, acme.id);
    assert_eq!(by_name.id, acme.id);
    assert_eq!(acc.find_org("globex").await.unwrap().threshold, Some(92.5));
    assert!(matches!(
        acc.find_org("nope").await,
        Err(AccountsError::OrgNotFound(_))
    ));

    let names: Vec<String> = acc
        .list_orgs()
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.name)
        .collect();
    assert_eq!(names, ["acme", "globex"]);

    // Refusals name the problem and write nothing.
    let dup = acc.create_org(new_org("acme", 1)).await.unwrap_err();
    assert!(
        matches!(&dup, AccountsError::Invalid(m) if m.contains("already exists")),
        "{dup}"
    );
    for (prefix, why) in [
        ("../x/", ".."),
        ("/abs/", "start with '/'"),
        ("no-slash", "end with '/'"),
    ] {
        let mut bad = new_org("bad-prefix", 0);
        bad.s3_prefix = Some(prefix.into());
        let err = acc.create_org(bad).await.unwrap_err();
        assert!(
            matches!(&err, AccountsError::Invalid(m) if m.contains(why)),
            "{prefix}: {err}"
        );
    }
    let mut bad = new_org("bad-threshold", 0);
    bad.threshold = Some(101.0);
    assert!(matches!(
        acc.create_org(bad).await,
        Err(AccountsError::Invalid(_))
    ));
    assert!(matches!(
        acc.create_org(new_org("negative", -1)).await,
        Err(AccountsError::Invalid(_))
    ));
    assert!(matches!(
        acc.create_org(new_org("has space", 0)).await,
        Err(AccountsError::Invalid(_))
    ));
    assert_eq!(acc.list_orgs().await.unwrap().len(), 2);

    // Credits by name or id, each a ledger row.
    assert_eq!(acc.add_tokens("acme", 5, "top-up").await.unwrap(), 12);
    assert_eq!(acc.add_tokens(&acme.id, 3, "top-up").await.unwrap(), 15);
    assert!(matches!(
        acc.add_tokens("acme", 0, "zero").await,
        Err(AccountsError::Invalid(_))
    ));
    assert!(matches!(
        acc.add_tokens("nope", 1, "x").await,
        Err(AccountsError::OrgNotFound(_))
    ));
    assert_eq!(acc.balance(&acme.id).await.unwrap(), 15);
    assert_ledger_consistent(acc, &acme).await;
}

async fn keys_authenticate_and_revoke(acc: &Accounts) {
    let acme = acc.create_org(new_org("acme", 1)).await.unwrap();
    let other = acc.create_org(new_org("other", 1)).await.unwrap();
    let k1 = acc.create_key("acme").await.unwrap();
    let k2 = acc.create_key(&acme.id).await.unwrap();
    let k3 = acc.create_key("other").await.unwrap();
    assert_eq!(k1.org, acme.id);
    assert!(k1.id.starts_with("key_"));
    assert!(
        k1.key.starts_with("fck_") && k1.key.len() >= 4 + 32,
        "at least 128 bits"
    );
    assert_ne!(k1.key, k2.key);

    assert_eq!(
        acc.authenticate(&k1.key).await.unwrap().unwrap().id,
        acme.id
    );
    assert_eq!(
        acc.authenticate(&k2.key).await.unwrap().unwrap().id,
        acme.id
    );
    assert_eq!(
        acc.authenticate(&k3.key).await.unwrap().unwrap().id,
        other.id
    );
    for wrong in [
        "",
        "fck_",
        "nonsense",
        &format!("{}x", k1.key),
        &k1.key[..k1.key.len() - 1],
        &k1.key.to_uppercase(),
    ] {
        assert!(
            acc.authenticate(wrong).await.unwrap().is_none(),
            "{wrong:?} must not authenticate"
        );
    }
    // The secret is not stored anywhere in the keys table.
    let keys = acc.list_keys(&acme.id).await.unwrap();
    assert_eq!(keys.len(), 2);
    assert!(keys.iter().all(|k| !k.revoked));
    let stored: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM api_keys WHERE key_hash = $1 OR id = $1")
            .bind(&k1.key)
            .fetch_one(&acc.pool)
            .await
            .unwrap();
    assert_eq!(stored, 0);

    acc.revoke_key(&k1.id).await.unwrap();
    assert!(
        acc.authenticate(&k1.key).await.unwrap().is_none(),
        "revoked key must fail"
    );
    assert!(
        acc.authenticate(&k2.key).await.unwrap().is_some(),
        "sibling key still works"
    );
    acc.revoke_key(&k1.id)
        .await
        .expect("revoking twice is fine");
    assert!(matches!(
        acc.revoke_key("key_missing").await,
        Err(AccountsError::KeyNotFound(_))
    ));
    let keys = acc.list_keys(&acme.id).await.unwrap();
    assert_eq!(keys.iter().filter(|k| k.revoked).count(), 1);
    assert!(matches!(
        acc.create_key("ghost").await,
        Err(AccountsError::OrgNotFound(_))
    ));
}

async fn concurrent_charges_succeed_exactly_balance_times(acc: &Accounts) {
    let org = acc.create_org(new_org("busy", 5)).await.unwrap();
    let tasks: Vec<_> = (0..12)
        .map(|i| {
            let acc = acc.clone();
            let id = org.id.clone();
            tokio::spawn(async move { acc.charge(&id, 1, &format!("req-{i}")).await })
        })
        .collect();
    let mut ok = 0;
    let mut balances = HashSet::new();
    for t in tasks {
        if let Some(balance) = t.await.unwrap().expect("charge must not error") {
            ok += 1;
            assert!(balance >= 0);
            balances.insert(balance);
        }
    }
    assert_eq!(ok, 5, "exactly min(N, k) charges succeed");
    assert_eq!(
        balances,
        HashSet::from([0, 1, 2, 3, 4]),
        "each success saw a distinct balance"
    );
    assert_eq!(acc.balance(&org.id).await.unwrap(), 0);
    assert_ledger_consistent(acc, &org).await;
    assert_eq!(acc.charge(&org.id, 1, "late").await.unwrap(), None);

    // A cost above the balance charges nothing; a zero cost writes nothing.
    acc.add_tokens(&org.id, 2, "top-up").await.unwrap();
    assert_eq!(acc.charge(&org.id, 3, "too-much").await.unwrap(), None);
    assert_eq!(acc.charge(&org.id, 0, "free").await.unwrap(), Some(2));
    assert_eq!(acc.charge(&org.id, 2, "exact").await.unwrap(), Some(0));
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM ledger WHERE org_id = $1")
        .bind(&org.id)
        .fetch_one(&acc.pool)
        .await
        .unwrap();
    assert_eq!(
        rows,
        1 + 5 + 1 + 1,
        "initial credit, 5 debits, top-up, exact debit"
    );
    assert!(matches!(
        acc.charge(&org.id, -1, "neg").await,
        Err(AccountsError::Invalid(_))
    ));
    assert_ledger_consistent(acc, &org).await;
}

async fn rate_limit_admits_burst_then_refuses(acc: &Accounts) {
    let mut spec = new_org("limited", 0);
    spec.rate_limit = limit("5/min");
    let org = acc.create_org(spec).await.unwrap();
    let other = acc.create_org(new_org("unlimited-ish", 0)).await.unwrap();

    for i in 0..5u32 {
        let d = acc.rate_check(&org).await.unwrap();
        assert!(d.allowed, "request {i} is within the burst");
        assert_eq!((d.limit, d.window_secs), (5, 60));
        assert_eq!(d.remaining, 4 - i);
        assert!(
            d.reset_secs >= 1 && d.reset_secs <= 60,
            "reset {}",
            d.reset_secs
        );
    }
    let refused = acc.rate_check(&org).await.unwrap();
    assert!(!refused.allowed);
    assert_eq!(refused.remaining, 0);
    assert!(
        (1..=12).contains(&refused.retry_after_secs),
        "retry after {}",
        refused.retry_after_secs
    );
    // Refusals do not push the next admission further away.
    let again = acc.rate_check(&org).await.unwrap();
    assert!(!again.allowed && again.retry_after_secs <= refused.retry_after_secs);
    // Limits are per organisation.
    assert!(acc.rate_check(&other).await.unwrap().allowed);
}

async fn idempotency_new_replay_mismatch_in_progress(acc: &Accounts) {
    let org = acc.create_org(new_org("idem", 0)).await.unwrap();
    let other = acc.create_org(new_org("idem-other", 0)).await.unwrap();
    assert!(matches!(
        acc.idempotency_begin(&org.id, "k1", "fp-a").await.unwrap(),
        IdempotencyBegin::New
    ));
    assert!(matches!(
        acc.idempotency_begin(&org.id, "k1", "fp-a").await.unwrap(),
        IdempotencyBegin::InProgress
    ));
    assert!(matches!(
        acc.idempotency_begin(&org.id, "k1", "fp-b").await.unwrap(),
        IdempotencyBegin::Mismatch
    ));
    // Keys are scoped to the organisation.
    assert!(matches!(
        acc.idempotency_begin(&other.id, "k1", "fp-b")
            .await
            .unwrap(),
        IdempotencyBegin::New
    ));

    let body = r#"{"isMatch":true,"confidence":97.1}"#;
    acc.idempotency_finish(&org.id, "k1", 200, body)
        .await
        .unwrap();
    match acc.idempotency_begin(&org.id, "k1", "fp-a").await.unwrap() {
        IdempotencyBegin::Replay {
            status,
            body: stored,
        } => {
            assert_eq!(status, 200);
            assert_eq!(stored, body);
        }
        other => panic!("expected a replay, got {other:?}"),
    }
    assert!(matches!(
        acc.idempotency_begin(&org.id, "k1", "fp-b").await.unwrap(),
        IdempotencyBegin::Mismatch
    ));

    // Abandoning releases the key so a retry runs again, and does not touch finished ones.
    assert!(matches!(
        acc.idempotency_begin(&org.id, "k2", "fp-a").await.unwrap(),
        IdempotencyBegin::New
    ));
    acc.idempotency_abandon(&org.id, "k2").await.unwrap();
    assert!(matches!(
        acc.idempotency_begin(&org.id, "k2", "fp-c").await.unwrap(),
        IdempotencyBegin::New
    ));
    acc.idempotency_abandon(&org.id, "k1").await.unwrap();
    assert!(matches!(
        acc.idempotency_begin(&org.id, "k1", "fp-a").await.unwrap(),
        IdempotencyBegin::Replay { .. }
    ));

    // Concurrent first uses: exactly one wins.
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let acc = acc.clone();
            let id = org.id.clone();
            tokio::spawn(async move { acc.idempotency_begin(&id, "race", "fp").await })
        })
        .collect();
    let mut new = 0;
    for t in tasks {
        match t.await.unwrap().unwrap() {
            IdempotencyBegin::New => new += 1,
            IdempotencyBegin::InProgress => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(new, 1);
}

async fn idempotency_abandoned_stale_and_expired_records(acc: &Accounts) {
    let org = acc.create_org(new_org("idem-age", 0)).await.unwrap();
    let hour_ms: i64 = 3_600_000;
    let age = |key: &'static str, column: &'static str, by_ms: i64| {
        let acc = acc.clone();
        let org_id = org.id.clone();
        async move {
            sqlx::query(&format!("UPDATE idempotency SET {column} = {column} - $1 WHERE org_id = $2 AND idem_key = $3"))
                .bind(by_ms)
                .bind(org_id)
                .bind(key)
                .execute(&acc.pool)
                .await
                .unwrap();
        }
    };

    // A reservation whose request died (no finish, no abandon) is taken over after a while.
    assert!(matches!(
        acc.idempotency_begin(&org.id, "stale", "fp").await.unwrap(),
        IdempotencyBegin::New
    ));
    age("stale", "updated_at", 60_000).await;
    assert!(matches!(
        acc.idempotency_begin(&org.id, "stale", "fp").await.unwrap(),
        IdempotencyBegin::InProgress
    ));
    age("stale", "updated_at", 10 * 60_000).await;
    assert!(matches!(
        acc.idempotency_begin(&org.id, "stale", "fp").await.unwrap(),
        IdempotencyBegin::New
    ));

    // A finished record replays for 24 h, then counts as absent.
    assert!(matches!(
        acc.idempotency_begin(&org.id, "old", "fp").await.unwrap(),
        IdempotencyBegin::New
    ));
    acc.idempotency_finish(&org.id, "old", 200, "{}")
        .await
        .unwrap();
    age("old", "created_at", 23 * hour_ms).await;
    assert!(matches!(
        acc.idempotency_begin(&org.id, "old", "fp").await.unwrap(),
        IdempotencyBegin::Replay { .. }
    ));
    age("old", "created_at", 2 * hour_ms).await;
    assert!(matches!(
        acc.idempotency_begin(&org.id, "old", "other-fp")
            .await
            .unwrap(),
        IdempotencyBegin::New
    ));

    // Purging removes only expired records.
    assert!(matches!(
        acc.idempotency_begin(&org.id, "purge-me", "fp")
            .await
            .unwrap(),
        IdempotencyBegin::New
    ));
    age("purge-me", "created_at", 25 * hour_ms).await;
    assert_eq!(acc.purge_expired_idempotency().await.unwrap(), 1);
    let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM idempotency WHERE org_id = $1")
        .bind(&org.id)
        .fetch_one(&acc.pool)
        .await
        .unwrap();
    assert_eq!(left, 2, "stale and old remain");
}

async fn default_org_created_once(acc: &Accounts) {
    let key = acc
        .ensure_default_org(250, limit("60/min"))
        .await
        .unwrap()
        .expect("first start creates it");
    let org = acc
        .authenticate(&key.key)
        .await
        .unwrap()
        .expect("the printed key works");
    assert_eq!((org.name.as_str(), org.balance), ("default", 250));
    assert_eq!(key.org, org.id);
    assert_ledger_consistent(acc, &org).await;
    assert!(
        acc.ensure_default_org(250, limit("60/min"))
            .await
            .unwrap()
            .is_none(),
        "second start creates nothing"
    );
    assert_eq!(acc.list_orgs().await.unwrap().len(), 1);
    assert_eq!(acc.list_keys(&org.id).await.unwrap().len(), 1);
}

// ---------------------------------------------------------------- several replicas

async fn sqlite() -> AccountsDb {
    AccountsDb::open(Backend::Sqlite)
        .await
        .expect("SQLite opens")
}

/// Two `Accounts` on one PostgreSQL database stand for two server replicas:
/// balances, rate limits and idempotency records must be shared.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_replicas_share_state() {
    let Some(db) = AccountsDb::open(Backend::Postgres).await else {
        return;
    };
    let a = db.accounts.clone();
    let b = Accounts::connect(&db.url).await.unwrap();
    b.migrate().await.expect("concurrent-safe, already applied");
    replicas_share_state(&a, &b).await;
    b.pool.close().await;
    db.close().await;
}

/// The same with two SQLite pools on one file (two processes on one host).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_replicas_share_state() {
    let db = sqlite().await;
    let b = Accounts::connect(&db.url).await.unwrap();
    replicas_share_state(&db.accounts, &b).await;
}

async fn replicas_share_state(a: &Accounts, b: &Accounts) {
    let mut spec = new_org("shared", 10);
    spec.rate_limit = limit("3/min");
    let org = a.create_org(spec).await.unwrap();
    let key = b.create_key("shared").await.unwrap();
    assert_eq!(a.authenticate(&key.key).await.unwrap().unwrap().id, org.id);

    // Rate limit: a burst of 3 in total, wherever the requests land.
    let mut allowed = 0;
    for i in 0..6 {
        let replica = if i % 2 == 0 { a } else { b };
        if replica.rate_check(&org).await.unwrap().allowed {
            allowed += 1;
        }
    }
    assert_eq!(allowed, 3);

    // Charges: 25 concurrent across both replicas on a balance of 10.
    let tasks: Vec<_> = (0..25)
        .map(|i| {
            let acc = if i % 2 == 0 { a.clone() } else { b.clone() };
            let id = org.id.clone();
            tokio::spawn(async move { acc.charge(&id, 1, &format!("r{i}")).await })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        if t.await.unwrap().unwrap().is_some() {
            ok += 1;
        }
    }
    assert_eq!(ok, 10);
    assert_eq!(b.balance(&org.id).await.unwrap(), 0);
    assert_eq!(a.ledger_sum(&org.id).await.unwrap(), 0);

    // Idempotency: reserved on one, seen on the other.
    assert!(matches!(
        a.idempotency_begin(&org.id, "x", "fp").await.unwrap(),
        IdempotencyBegin::New
    ));
    assert!(matches!(
        b.idempotency_begin(&org.id, "x", "fp").await.unwrap(),
        IdempotencyBegin::InProgress
    ));
    a.idempotency_finish(&org.id, "x", 200, "{\"ok\":true}")
        .await
        .unwrap();
    assert!(matches!(
        b.idempotency_begin(&org.id, "x", "fp").await.unwrap(),
        IdempotencyBegin::Replay { .. }
    ));
    // Revocation on one replica takes effect on the other.
    b.revoke_key(&key.id).await.unwrap();
    assert!(a.authenticate(&key.key).await.unwrap().is_none());
}

// ---------------------------------------------------------------- SQLite locking

/// Mixed writes from many tasks over two pools on one SQLite file: WAL plus
/// busy_timeout must absorb the contention, never "database is locked".
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_concurrent_writes_never_fail_locked() {
    let db = sqlite().await;
    let b = Accounts::connect(&db.url).await.unwrap();
    let mut spec = new_org("hammer", 40);
    spec.rate_limit = limit("1000/s");
    let org = Arc::new(db.accounts.create_org(spec).await.unwrap());
    let mut tasks = Vec::new();
    for i in 0..80 {
        let acc = if i % 2 == 0 {
            db.accounts.clone()
        } else {
            b.clone()
        };
        let org = org.clone();
        tasks.push(tokio::spawn(async move {
            let r: Result<(), AccountsError> = async {
                match i % 4 {
                    0 => acc.charge(&org.id, 1, &format!("c{i}")).await.map(drop),
                    1 => acc.rate_check(&org).await.map(drop),
                    2 => {
                        acc.idempotency_begin(&org.id, &format!("k{i}"), "fp")
                            .await?;
                        acc.idempotency_finish(&org.id, &format!("k{i}"), 200, "{}")
                            .await
                    }
                    _ => acc.add_tokens(&org.id, 1, "tick").await.map(drop),
                }
            }
            .await;
            r
        }));
    }
    for (i, t) in tasks.into_iter().enumerate() {
        if let Err(e) = tokio::time::timeout(Duration::from_secs(60), t)
            .await
            .expect("no deadlock")
            .unwrap()
        {
            panic!("task {i} failed: {e}");
        }
    }
    // 40 + 20 credits - 20 debits.
    assert_eq!(db.accounts.balance(&org.id).await.unwrap(), 40);
    assert_ledger_consistent(&db.accounts, &org).await;
    let journal: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&db.accounts.pool)
        .await
        .unwrap();
    assert_eq!(journal.to_lowercase(), "wal");
}

//! Outages: the database stopped and started under load. A PostgreSQL cluster
//! of the test's own (not the machine's: it is stopped mid-test), a real
//! `facecompare serve` on it, and clients sending compares throughout.
//!
//! Every answer must be a 200 or a 503 `database_unavailable` with
//! `Retry-After` (never a 500), only the 200s may cost a token, `/readyz`
//! must say not ready while the database is down, and an `Idempotency-Key`
//! whose request got a 503 must run again as soon as the database is back
//! (not stay "in progress" until a timeout).
mod common;

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use common::{Input, Server, ServerOptions, file, fixture, pg_cluster::PgCluster};

/// These tests start (and stop) their own processes; against a running stack
/// (`FACECOMPARE_TEST_BASE_URL`, the compose `tests` service) they are skipped.
fn own_processes_or_skip() -> bool {
    common::own_servers_or_skip("its own server and database")
}

/// One answer of the client loops: status, error code, Retry-After, and the key sent.
#[derive(Debug, Clone)]
struct Seen {
    status: u16,
    code: String,
    retry_after: Option<String>,
    key: String,
}

async fn compare(server: &Server, api_key: &str, idem: &str, a: &Input, b: &Input) -> Seen {
    let r = server
        .compare_multipart_with(api_key, a, b, &[("idempotency-key", idem)])
        .await;
    let code = if r.status == 200 {
        String::new()
    } else {
        r.json()["error"].as_str().unwrap_or("").to_string()
    };
    Seen {
        status: r.status,
        code,
        retry_after: r.header("retry-after").map(str::to_string),
        key: idem.to_string(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stopped_and_started_under_load() {
    if !own_processes_or_skip() {
        return;
    }
    let Some(pg) = PgCluster::start() else {
        return;
    };
    let server = common::spawn_server(
        ServerOptions::new(&pg.url()).env("FACECOMPARE_REQUEST_TIMEOUT_S", "10"),
    );
    let start_tokens = 1000;
    let org = server.org(start_tokens).await;
    let (a, b) = (file(&fixture("obama.jpg")), file(&fixture("obama2.jpg")));
    // Warm up (models, pool) before the clock starts.
    compare(&server, &org.key, "warm-up", &a, &b).await;

    let seen = Arc::new(Mutex::new(Vec::<Seen>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut loops = Vec::new();
    for client in 0..2 {
        let (server, key, seen, stop) = (
            server.server.clone(),
            org.key.clone(),
            seen.clone(),
            stop.clone(),
        );
        let (a, b) = (a.clone(), b.clone());
        loops.push(tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let s = compare(&server, &key, &format!("c{client}-{i}"), &a, &b).await;
                let pause = s.status != 200;
                seen.lock().unwrap().push(s);
                i += 1;
                if pause {
                    // A well-behaved client backs off a little (not the full Retry-After: keep the test short).
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }));
    }

    tokio::time::sleep(Duration::from_secs(3)).await;
    let down_at = Instant::now();
    tokio::task::block_in_place(|| pg.pg_stop());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let ready = server.get("/readyz").await;
    assert_eq!(
        ready.status, 503,
        "readyz while the database is down: {}",
        ready.text
    );
    assert_eq!(ready.json()["status"], "not_ready", "{}", ready.text);
    tokio::time::sleep(Duration::from_secs(3)).await;
    tokio::task::block_in_place(|| pg.pg_start());
    let down_for = down_at.elapsed();
    let up_at = Instant::now();
    tokio::time::sleep(Duration::from_secs(4)).await;
    stop.store(true, Ordering::Relaxed);
    for l in loops {
        l.await.unwrap();
    }
    let ready = server.get("/readyz").await;
    assert_eq!(
        ready.status, 200,
        "readyz after the database is back: {}",
        ready.text
    );

    let seen = seen.lock().unwrap().clone();
    let ok = seen.iter().filter(|s| s.status == 200).count() as i64;
    let unavailable: Vec<&Seen> = seen.iter().filter(|s| s.status == 503).collect();
    for s in &seen {
        assert!(
            s.status == 200
                || (s.status == 503 && s.code == "database_unavailable" && s.retry_after.is_some()),
            "every answer is a 200 or a 503 database_unavailable with Retry-After: {s:?}"
        );
    }
    eprintln!(
        "database down {down_for:?}: {} answers, {ok} × 200, {} × 503 database_unavailable, 0 × 500",
        seen.len(),
        unavailable.len()
    );
    assert!(
        !unavailable.is_empty(),
        "the outage was never seen: {seen:?}"
    );
    assert!(ok > 0, "no compare succeeded");

    // Each key that got a 503 runs again now: its reservation (if it had one)
    // was released when the database came back, not after a lease timeout.
    let mut retried_ok = 0;
    let mut longest_409 = Duration::ZERO;
    for s in &unavailable {
        let first = Instant::now();
        loop {
            let r = compare(&server, &org.key, &s.key, &a, &b).await;
            match r.status {
                200 => break,
                409 => {
                    assert!(
                        first.elapsed() < Duration::from_secs(10),
                        "key {} still in progress {:?} after the database came back",
                        s.key,
                        up_at.elapsed()
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                other => panic!("retry of {} after the outage: {other} {r:?}", s.key),
            }
        }
        longest_409 = longest_409.max(first.elapsed());
        retried_ok += 1;
    }
    eprintln!(
        "{retried_ok} keys that got a 503 ran again (200); the longest wait on a 409 was {longest_409:?}"
    );

    assert_eq!(
        server.balance(&org).await,
        start_tokens - 1 - ok - retried_ok,
        "only the 200s (warm-up, loops, retries) cost a token"
    );
    assert_eq!(
        server.ledger_sum(&org).await,
        start_tokens - 1 - ok - retried_ok
    );
}

/// Two first starts of the embedded default (no database URL: SQLite in
/// `data/` under the working folder) at the same moment: both serve, on one
/// database with one `default` organisation, and only one prints a key.
/// Whether the two really collide in the migrations varies from run to run
/// (about one in four here), so it is tried a few times.
#[test]
fn two_first_starts_of_the_embedded_default_at_once() {
    if !own_processes_or_skip() {
        return;
    }
    for _ in 0..4 {
        first_starts_at_once();
    }
}

fn first_starts_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let starts: Vec<_> = (0..2)
        .map(|_| {
            let opts = ServerOptions {
                db_url: None,
                cwd: Some(dir.path().to_path_buf()),
                env: Vec::new(),
                fd_limit: None,
            };
            std::thread::spawn(move || common::spawn_server(opts))
        })
        .collect();
    let servers: Vec<_> = starts.into_iter().map(|t| t.join().unwrap()).collect();
    let banners = servers
        .iter()
        .filter(|s| {
            s.stdout
                .lock()
                .unwrap()
                .iter()
                .any(|l| l.contains("Created organisation `default`"))
        })
        .count();
    assert_eq!(
        banners, 1,
        "exactly one start creates the org and prints its key"
    );
    let db = format!("sqlite://{}/data/facecompare.db", dir.path().display());
    let orgs = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(common::cli_json(&db, &["org", "list", "--json"]));
    let orgs = orgs.as_array().expect("org list");
    assert_eq!(orgs.len(), 1, "{orgs:?}");
    assert_eq!(orgs[0]["name"], "default");
}

/// A reservation whose release never arrived ends with its lease: the key is
/// in progress while the lease runs, and taken over once it has run out.
#[tokio::test]
async fn an_unreleased_idempotency_reservation_ends_with_its_lease() {
    use facecompare::accounts::{Accounts, IdempotencyBegin, NewOrg};
    let url = common::fresh_database(common::Backend::Sqlite, "lease");
    let acc = Accounts::connect(&url).await.unwrap();
    acc.migrate().await.unwrap();
    let org = acc
        .create_org(NewOrg {
            name: "lease".into(),
            tokens: 0,
            s3_prefix: None,
            rate_limit: facecompare::config::RateLimit::parse("10/s").unwrap(),
            threshold: None,
        })
        .await
        .unwrap();
    let lease = Duration::from_millis(300);
    let begin = || acc.idempotency_begin_leased(&org.id, "k", "fp", lease);
    assert!(matches!(begin().await.unwrap(), IdempotencyBegin::New));
    assert!(matches!(
        begin().await.unwrap(),
        IdempotencyBegin::InProgress
    ));
    tokio::time::sleep(lease + Duration::from_millis(50)).await;
    assert!(matches!(begin().await.unwrap(), IdempotencyBegin::New));
    // A finished key replays, lease or not.
    acc.idempotency_finish(&org.id, "k", 200, "{}")
        .await
        .unwrap();
    tokio::time::sleep(lease + Duration::from_millis(50)).await;
    assert!(matches!(
        begin().await.unwrap(),
        IdempotencyBegin::Replay { .. }
    ));
}

//! Horizontal scale: `facecompare serve` processes on one PostgreSQL
//! database behave as one service: the rate limit is shared, a race split
//! across them charges exactly the balance, and an `Idempotency-Key` sent to
//! several is charged once. With three replicas and one S3 store, a replica
//! killed mid-run loses no charge and doubles none (the client retries with
//! the same key elsewhere).
mod common;

use std::time::Duration;

use common::{Backend, OwnedServer, Resp, Server, ServerOptions, file, fixture, s3::S3sFs};

fn two_replicas() -> Option<(OwnedServer, OwnedServer)> {
    if !common::own_servers_or_skip("its own two servers") {
        return None;
    }
    if !common::postgres_or_skip() {
        return None;
    }
    let db = common::fresh_database(Backend::Postgres, "replicas");
    let a = common::spawn_server(ServerOptions::new(&db));
    let b = common::spawn_server(ServerOptions::new(&db));
    Some((a, b))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_on_one_database_act_as_one_service() {
    let Some((a, b)) = two_replicas() else {
        return;
    };
    let replicas = [&a.server, &b.server];
    let (x, y) = (file(&fixture("obama.jpg")), file(&fixture("obama2.jpg")));

    // Shared rate limit: 4/min in total, whichever replica is asked. The
    // bodies are invalid (400 after the rate check), so no face work runs.
    let limited = a.org_with(10, &["--rate-limit", "4/min"]).await;
    let mut statuses = Vec::new();
    for i in 0..8 {
        let r = replicas[i % 2]
            .post_raw(&limited.key, "application/json", b"{}".to_vec(), &[])
            .await;
        statuses.push(r.status);
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        4,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 400).count(),
        4,
        "{statuses:?}"
    );

    // Exact ledger: 12 concurrent compares, split across both, on 5 tokens.
    let org = a.org(5).await;
    let tasks: Vec<_> = (0..12)
        .map(|i| {
            let (server, key) = (replicas[i % 2].clone(), org.key.clone());
            let (x, y) = (x.clone(), y.clone());
            tokio::spawn(async move { server.compare_multipart(&key, &x, &y).await.status })
        })
        .collect();
    let mut got = Vec::new();
    for t in tasks {
        got.push(t.await.unwrap());
    }
    assert_eq!(got.iter().filter(|s| **s == 200).count(), 5, "{got:?}");
    assert_eq!(got.iter().filter(|s| **s == 402).count(), 7, "{got:?}");
    assert_eq!(b.balance(&org).await, 0);
    assert_eq!(a.ledger_sum(&org).await, 0);

    // One idempotent charge: the same key sent to both at once, then again.
    let org = a.org(10).await;
    let tasks: Vec<_> = (0..4)
        .map(|i| {
            let (server, key) = (replicas[i % 2].clone(), org.key.clone());
            let (x, y) = (x.clone(), y.clone());
            tokio::spawn(async move {
                loop {
                    let r = server
                        .compare_multipart_with(&key, &x, &y, &[("idempotency-key", "once")])
                        .await;
                    if r.status != 409 {
                        return r;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            })
        })
        .collect();
    let mut bodies = Vec::new();
    for t in tasks {
        let r = t.await.unwrap();
        bodies.push(r.assert_compare_ok());
    }
    assert!(bodies.windows(2).all(|w| w[0] == w[1]), "{bodies:?}");
    assert_eq!(a.balance(&org).await, 9, "charged exactly once");
    assert_eq!(b.ledger_sum(&org).await, 9);
}

// ------------------------------------------------------- three replicas ---

const BUCKET: &str = "faces";

/// A compare as the spreading client sends it: inline files (multipart) or
/// the organisation's S3 keys (JSON), with an optional Idempotency-Key.
/// Err when the connection fails (the replica is gone).
async fn try_compare(
    server: &Server,
    key: &str,
    s3_prefix: Option<&str>,
    idempotency_key: Option<&str>,
) -> Result<Resp, reqwest::Error> {
    let mut req = common::client()
        .post(server.url("/v1/face/compare"))
        .header("x-api-key", key);
    if let Some(k) = idempotency_key {
        req = req.header("idempotency-key", k);
    }
    req = match s3_prefix {
        Some(prefix) => req.json(&serde_json::json!({
            "source": format!("{prefix}a.jpg"),
            "target": format!("{prefix}b.jpg"),
        })),
        None => req.multipart(
            reqwest::multipart::Form::new()
                .part(
                    "source",
                    reqwest::multipart::Part::bytes(fixture("obama.jpg")).file_name("a.jpg"),
                )
                .part(
                    "target",
                    reqwest::multipart::Part::bytes(fixture("obama2.jpg")).file_name("b.jpg"),
                ),
        ),
    };
    Ok(Resp::from(req.send().await?).await)
}

/// Sends one idempotent compare until it gets an answer other than 409,
/// starting at replica `first` and moving to the next one whenever the
/// connection fails. Returns the answer and how many connection failures it met.
async fn compare_until_answered(
    replicas: &[Server],
    first: usize,
    key: &str,
    s3_prefix: Option<&str>,
    idempotency_key: &str,
) -> (Resp, usize) {
    let (mut at, mut failures) = (first, 0);
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        assert!(
            std::time::Instant::now() < deadline,
            "{idempotency_key}: no answer within 120 s"
        );
        match try_compare(&replicas[at], key, s3_prefix, Some(idempotency_key)).await {
            // Still reserved: by a live replica's run, or by the killed
            // one's until its lease (request timeout + 10 s) ends. A 503
            // (queue full or timed out on a loaded machine) is not charged
            // and releases the key: a client retries it with the same key.
            Ok(r) if r.status == 409 || r.status == 503 => {
                tokio::time::sleep(Duration::from_millis(250)).await
            }
            Ok(r) => return (r, failures),
            Err(_) => {
                failures += 1;
                at = (at + 1) % replicas.len();
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_replicas_keep_one_ledger_when_one_is_killed_mid_run() {
    if !common::own_servers_or_skip("its own three servers") || !common::postgres_or_skip() {
        return;
    }
    let Some(s3s_fs) = common::s3::s3s_fs_or_skip() else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let store = S3sFs::start(&s3s_fs, work.path(), "replicas", "replicas-secret").await;
    std::fs::create_dir_all(store.root.join(BUCKET)).unwrap();
    let db = common::fresh_database(Backend::Postgres, "replicas3");
    let opts = ServerOptions::new(&db)
        // Three replicas share this machine's cores.
        .env("FACECOMPARE_WORKERS", "1")
        // An abandoned idempotency reservation is taken over after 10 + 10 s.
        .env("FACECOMPARE_REQUEST_TIMEOUT_S", "10")
        .env("FACECOMPARE_S3_BUCKET", BUCKET)
        .env("FACECOMPARE_S3_ENDPOINT", &store.endpoint())
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "replicas")
        .env("AWS_SECRET_ACCESS_KEY", "replicas-secret")
        .env("AWS_EC2_METADATA_DISABLED", "true");
    let mut owned: Vec<OwnedServer> = (0..3).map(|_| common::spawn_server(opts.clone())).collect();
    let replicas: Vec<Server> = owned.iter().map(|o| o.server.clone()).collect();
    let admin = &replicas[0];
    let s3_org = |tokens: i64, rate: &'static str| {
        let prefix = format!("orgs/{}/", common::unique_name("r3"));
        store.put_file(BUCKET, &format!("{prefix}a.jpg"), &fixture("obama.jpg"));
        store.put_file(BUCKET, &format!("{prefix}b.jpg"), &fixture("obama2.jpg"));
        async move {
            let org = admin
                .org_with(tokens, &["--rate-limit", rate, "--s3-prefix", &prefix])
                .await;
            (org, prefix)
        }
    };

    // One rate limit across the three: 6/min in total. The bodies are
    // invalid (400 after the rate check), so no face work runs.
    let (limited, _) = s3_org(10, "6/min").await;
    let mut statuses = Vec::new();
    for i in 0..12 {
        let r = replicas[i % 3]
            .post_raw(&limited.key, "application/json", b"{}".to_vec(), &[])
            .await;
        statuses.push(r.status);
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 400).count(),
        6,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        6,
        "{statuses:?}"
    );
    assert_eq!(admin.balance(&limited).await, 10, "rejections are free");

    // Exact ledger: 15 concurrent compares on 9 tokens, spread over the
    // three, inline and from S3 alternately.
    let (org, prefix) = s3_org(9, "1000/min").await;
    let tasks: Vec<_> = (0..15)
        .map(|i| {
            let (server, key, prefix) = (replicas[i % 3].clone(), org.key.clone(), prefix.clone());
            tokio::spawn(async move {
                let s3 = (i % 2 == 0).then_some(prefix.as_str());
                try_compare(&server, &key, s3, None)
                    .await
                    .expect("all replicas are up")
                    .status
            })
        })
        .collect();
    let mut got = Vec::new();
    for t in tasks {
        got.push(t.await.unwrap());
    }
    assert_eq!(got.iter().filter(|s| **s == 200).count(), 9, "{got:?}");
    assert_eq!(got.iter().filter(|s| **s == 402).count(), 6, "{got:?}");
    assert_eq!(replicas[1].balance(&org).await, 0);
    assert_eq!(replicas[2].ledger_sum(&org).await, 0);

    // One Idempotency-Key sent to all three at once: one run, two replays
    // of the same answer, one token.
    let (org, prefix) = s3_org(10, "1000/min").await;
    let tasks: Vec<_> = (0..3)
        .map(|i| {
            let (servers, key, prefix) = (replicas.clone(), org.key.clone(), prefix.clone());
            tokio::spawn(async move {
                compare_until_answered(&servers, i, &key, Some(&prefix), "same-everywhere")
                    .await
                    .0
            })
        })
        .collect();
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await.unwrap());
    }
    let bodies: Vec<_> = answers.iter().map(Resp::assert_compare_ok).collect();
    assert!(bodies.windows(2).all(|w| w[0] == w[1]), "{bodies:?}");
    let replayed = answers
        .iter()
        .filter(|r| r.header("idempotent-replayed") == Some("true"))
        .count();
    assert_eq!(replayed, 2, "one run, two replays");
    assert_eq!(admin.balance(&org).await, 9, "charged exactly once");
    assert_eq!(admin.ledger_sum(&org).await, 9);

    // A replica killed mid-run: 30 compares, each with its own key, a third
    // of them sent to replica 2, which is SIGKILLed as soon as its first
    // answer arrives (the rest of its share is then queued or running). The
    // client retries a failed connection on the next replica with the same
    // key. Every compare ends with exactly one 200 and exactly one token:
    // none lost (a reservation the dead replica held is taken over when its
    // lease ends), none doubled (a charge it made is replayed).
    let (org, prefix) = s3_org(100, "1000/min").await;
    let (first_from_victim, mut victim_answered) = tokio::sync::oneshot::channel::<()>();
    let first_from_victim = std::sync::Mutex::new(Some(first_from_victim));
    let first_from_victim = std::sync::Arc::new(first_from_victim);
    let tasks: Vec<_> = (0..30)
        .map(|i| {
            let (servers, key, prefix) = (replicas.clone(), org.key.clone(), prefix.clone());
            let notify = first_from_victim.clone();
            tokio::spawn(async move {
                let s3 = (i % 2 == 0).then_some(prefix.as_str());
                let idem = format!("kill-{i}");
                let (r, failures) = compare_until_answered(&servers, i % 3, &key, s3, &idem).await;
                if i % 3 == 2
                    && failures == 0
                    && let Some(tx) = notify.lock().unwrap().take()
                {
                    tx.send(()).ok();
                }
                (r, failures)
            })
        })
        .collect();
    tokio::time::timeout(Duration::from_secs(120), &mut victim_answered)
        .await
        .expect("replica 2 answered within 120 s")
        .expect("notified");
    owned[2].signal(libc::SIGKILL);
    let status = owned[2].wait_exit(Duration::from_secs(10)).expect("killed");
    assert!(!status.success(), "{status:?}");

    let mut failures = 0;
    let mut replayed = 0;
    for t in tasks {
        let (r, f) = t.await.unwrap();
        r.assert_compare_ok();
        failures += f;
        replayed += usize::from(r.header("idempotent-replayed") == Some("true"));
    }
    assert!(
        failures >= 1,
        "the kill met no request in flight: the test did not test it"
    );
    eprintln!("killed replica: {failures} failed connections retried, {replayed} replays");
    assert_eq!(
        replicas[0].balance(&org).await,
        70,
        "30 compares, 30 tokens"
    );
    assert_eq!(replicas[1].ledger_sum(&org).await, 70);

    // The two survivors still serve, on the same ledger.
    let r = try_compare(&replicas[1], &org.key, None, None)
        .await
        .expect("replica 1 is up");
    r.assert_compare_ok();
    assert_eq!(replicas[0].balance(&org).await, 69);
}

/// The narrowest window of a crash: a replica dies after its compare's debit
/// and before the answer is stored under the `Idempotency-Key`. A trigger on
/// the test's own database holds the store of the answer (an advisory lock
/// the test holds), so the replica is SIGKILLed exactly there; its
/// PostgreSQL session is then ended as the dead client's would be. The
/// client's retry on another replica (after the reservation's lease) must
/// leave exactly one token charged: none lost, none doubled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_between_debit_and_stored_answer_charges_once() {
    use sqlx::{Connection, Executor};
    if !common::own_servers_or_skip("its own two servers") || !common::postgres_or_skip() {
        return;
    }
    let db = common::fresh_database(Backend::Postgres, "replicas_crash");
    let opts = ServerOptions::new(&db)
        .env("FACECOMPARE_WORKERS", "1")
        .env("FACECOMPARE_REQUEST_TIMEOUT_S", "5");
    let survivor = common::spawn_server(opts.clone());
    let mut victim = common::spawn_server(opts);
    let org = survivor.org(10).await;

    let mut conn = sqlx::PgConnection::connect(&db).await.expect("connect");
    conn.execute(
        "CREATE FUNCTION hold_answer() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
           IF NEW.state = 'done' THEN \
             PERFORM pg_advisory_lock_shared(4242); PERFORM pg_advisory_unlock_shared(4242); \
           END IF; RETURN NEW; END $$; \
         CREATE TRIGGER hold_answer BEFORE UPDATE ON idempotency \
           FOR EACH ROW EXECUTE FUNCTION hold_answer()",
    )
    .await
    .expect("trigger");
    conn.execute("SELECT pg_advisory_lock(4242)")
        .await
        .expect("lock");

    let replicas = [survivor.server.clone(), victim.server.clone()];
    let first = {
        let (servers, key) = (replicas.clone(), org.key.clone());
        tokio::spawn(async move { try_compare(&servers[1], &key, None, Some("crash")).await })
    };
    // The victim's session waiting on the lock: the compare ran, the answer
    // is being stored.
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let waiting: i32 = loop {
        let row: Option<(i32,)> = sqlx::query_as(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() \
             AND wait_event_type = 'Lock' AND wait_event = 'advisory'",
        )
        .fetch_optional(&mut conn)
        .await
        .expect("pg_stat_activity");
        if let Some((pid,)) = row {
            break pid;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the compare never reached storing its answer"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    victim.signal(libc::SIGKILL);
    assert!(victim.wait_exit(Duration::from_secs(10)).is_some());
    assert!(first.await.unwrap().is_err(), "the victim never answered");
    let (ended,): (bool,) = sqlx::query_as("SELECT pg_terminate_backend($1)")
        .bind(waiting)
        .fetch_one(&mut conn)
        .await
        .expect("terminate");
    assert!(ended);
    conn.execute("SELECT pg_advisory_unlock(4242)")
        .await
        .expect("unlock");

    // The client retries elsewhere with the same key (409 until the dead
    // replica's lease ends).
    let (r, _) = compare_until_answered(&replicas, 0, &org.key, None, "crash").await;
    r.assert_compare_ok();
    assert_eq!(survivor.balance(&org).await, 9, "one compare, one token");
    assert_eq!(survivor.ledger_sum(&org).await, 9);
    // And a further retry is a replay, not a third run.
    let (r, _) = compare_until_answered(&replicas, 0, &org.key, None, "crash").await;
    assert_eq!(r.header("idempotent-replayed"), Some("true"));
    assert_eq!(survivor.balance(&org).await, 9);
}

//! Horizontal scale: two `facecompare serve` processes on one PostgreSQL
//! database behave as one service: the rate limit is shared, a race split
//! across both charges exactly the balance, and an `Idempotency-Key` sent to
//! both is charged once.
mod common;

use common::{Backend, OwnedServer, ServerOptions, file, fixture};

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

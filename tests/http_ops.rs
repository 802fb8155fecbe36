//! Operator surface over HTTP: health, readiness, metrics, OpenAPI, the
//! embedded default, graceful shutdown, and replicas sharing one PostgreSQL.
mod common;

use std::{
    io::{Read, Write},
    net::TcpStream,
    time::Duration,
};

use common::{Backend, ServerOptions, file, fixture, server, spawn_server};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_and_openapi() {
    let s = server(Backend::Sqlite);
    let r = s.get("/healthz").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["status"], "ok");
    let r = s.get("/readyz").await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["database"], "ok");
    let r = s.get("/openapi.json").await;
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["openapi"], "3.1.0");
    assert!(v["paths"]["/v1/face/compare"]["post"]["responses"]["402"].is_object());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_stages_and_tokens() {
    let s = server(Backend::Sqlite);
    let org = s.org(3).await;
    s.compare_multipart(
        &org.key,
        &file(&fixture("obama.jpg")),
        &file(&fixture("obama2.jpg")),
    )
    .await
    .assert_compare_ok();
    let r = s.metrics().await;
    assert_eq!(r.status, 200);
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.contains("openmetrics-text"))
    );
    let m = &r.text;
    let value = |prefix: &str| -> f64 {
        m.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{prefix} missing in\n{m}"))
    };
    assert!(value("facecompare_requests_total{route=\"/v1/face/compare\",status=\"200\"}") >= 1.0);
    assert!(value("facecompare_tokens_charged_total") >= 1.0);
    for stage in ["decode", "detect", "embed", "queue"] {
        assert!(
            value(&format!(
                "facecompare_stage_seconds_count{{stage=\"{stage}\"}}"
            )) >= 1.0,
            "{stage}"
        );
    }
    assert!(m.contains("facecompare_inference_queue_depth"));
    assert!(m.contains("facecompare_request_duration_seconds_bucket"));
}

/// No configuration: SQLite under ./data, a `default` org whose key is
/// printed once on stdout and never logged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_default_prints_a_working_key_once() {
    let dir = tempfile::tempdir().unwrap();
    let opts = ServerOptions {
        db_url: None,
        cwd: Some(dir.path().to_path_buf()),
        env: Vec::new(),
        fd_limit: None,
    };
    let key = {
        let s = spawn_server(opts.clone());
        let out = s.stdout.lock().unwrap().join("\n");
        let key = out
            .split_whitespace()
            .find(|w| w.starts_with("fck_"))
            .unwrap_or_else(|| panic!("no key in the banner:\n{out}"))
            .to_string();
        let r = s
            .compare_multipart(
                &key,
                &file(&fixture("obama.jpg")),
                &file(&fixture("obama2.jpg")),
            )
            .await;
        r.assert_compare_ok();
        let log = std::fs::read_to_string(s.log.as_ref().unwrap()).unwrap();
        assert!(!log.contains(&key), "the key must never be logged");
        key
    };
    assert!(
        dir.path().join("data").is_dir(),
        "SQLite lives under ./data"
    );
    // Second start on the same data: no new key, the old one still works.
    let s = spawn_server(opts);
    let out = s.stdout.lock().unwrap().join("\n");
    assert!(
        !out.contains("fck_"),
        "a key is printed only on first start:\n{out}"
    );
    s.compare_multipart(
        &key,
        &file(&fixture("obama.jpg")),
        &file(&fixture("biden.jpg")),
    )
    .await
    .assert_compare_ok();
}

/// A first start that cannot serve (here: no ONNX Runtime) fails before the
/// embedded default creates its org, so the one-time key is printed by the
/// first start that works, not lost in a failed one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_first_start_keeps_the_default_key_for_the_next() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = std::process::Command::new(common::BIN);
    for (k, _) in std::env::vars() {
        if k.starts_with("FACECOMPARE_") {
            cmd.env_remove(&k);
        }
    }
    let out = cmd
        .arg("serve")
        .current_dir(dir.path())
        .env("FACECOMPARE_LISTEN", "127.0.0.1:0")
        .env("FACECOMPARE_MODELS_DIR", common::models_dir())
        .env(
            "ORT_DYLIB_PATH",
            dir.path().join("missing/libonnxruntime.so"),
        )
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "serve must fail without ONNX Runtime"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stdout.contains("fck_"),
        "no key printed by a failed start:\n{stdout}"
    );
    assert!(
        stderr.contains("fetch-onnxruntime.sh"),
        "the error names the fix:\n{stderr}"
    );
    let s = spawn_server(ServerOptions {
        db_url: None,
        cwd: Some(dir.path().to_path_buf()),
        env: Vec::new(),
        fd_limit: None,
    });
    let banner = s.stdout.lock().unwrap().join("\n");
    assert!(
        banner.contains("fck_"),
        "the first working start prints the key:\n{banner}"
    );
}

/// SIGTERM while a request is being received: the request completes, then
/// the server exits cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests() {
    let mut s = spawn_server(ServerOptions::new(&common::fresh_database(
        Backend::Sqlite,
        "drain",
    )));
    let org = s.org(5).await;
    let (a, b) = (fixture("obama.jpg"), fixture("obama2.jpg"));
    let boundary = "drain-test-boundary";
    let mut body = Vec::new();
    for (name, data) in [("source", &a), ("target", &b)] {
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{name}.jpg\"\r\n\r\n").as_bytes(),
        );
        body.extend_from_slice(data);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    let addr = s.base.trim_start_matches("http://").to_string();
    let key = org.key.clone();
    let mut stream = TcpStream::connect(&addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    write!(
        stream,
        "POST /v1/face/compare HTTP/1.1\r\nHost: {addr}\r\nx-api-key: {key}\r\n\
         Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    let half = body.len() / 2;
    stream.write_all(&body[..half]).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    s.signal(libc::SIGTERM);
    std::thread::sleep(Duration::from_millis(500));
    stream.write_all(&body[half..]).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("\"isMatch\":true"), "{response}");
    let status = s
        .wait_exit(Duration::from_secs(30))
        .expect("server exits after draining");
    assert!(status.success(), "exit status {status}");
    // The drained request was charged exactly once.
    let accounts = facecompare::accounts::Accounts::connect(&s.db_url)
        .await
        .unwrap();
    assert_eq!(accounts.balance(&org.id).await.unwrap(), 4);
}

/// Two replicas on one PostgreSQL database share each org's rate limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_one_rate_limit() {
    if !common::postgres_or_skip() {
        return;
    }
    let db = match common::external_base() {
        // Against the compose stack: a local replica on the stack's database.
        Some(_) => std::env::var("FACECOMPARE_DATABASE_URL").unwrap(),
        None => common::fresh_database(Backend::Postgres, "replicas"),
    };
    let a = spawn_server(ServerOptions::new(&db));
    let b = spawn_server(ServerOptions::new(&db));
    let org = a.org_with(10, &["--rate-limit", "4/min"]).await;
    let mut statuses = Vec::new();
    for i in 0..6 {
        let s = if i % 2 == 0 { &a } else { &b };
        // Cheap requests: refused after the rate check, before any inference.
        let r = s
            .post_raw(&org.key, "application/json", b"{}".to_vec(), &[])
            .await;
        statuses.push(r.status);
    }
    assert_eq!(
        statuses,
        [400, 400, 400, 400, 429, 429],
        "the limit of 4/min holds across both servers"
    );
}

/// Readiness follows the database: a dropped database makes /readyz 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_fails_when_the_database_is_gone() {
    if common::external_base().is_some() {
        eprintln!(
            "skipped against an external server: it needs a PostgreSQL it may create and drop databases on"
        );
        return;
    }
    if !common::postgres_or_skip() {
        return;
    }
    let db = common::fresh_database(Backend::Postgres, "ready");
    let s = spawn_server(ServerOptions::new(&db));
    assert_eq!(s.get("/readyz").await.status, 200);
    let (base, name) = db.rsplit_once('/').unwrap();
    let admin = format!("{base}/postgres");
    let name = name.to_string();
    {
        use sqlx::{Connection, Executor};
        let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap();
        conn.execute(format!("DROP DATABASE \"{name}\" WITH (FORCE)").as_str())
            .await
            .unwrap();
    }
    let r = s.get("/readyz").await;
    assert_eq!(r.status, 503, "{}", r.text);
    assert_eq!(r.json()["status"], "not_ready");
    // Liveness is not readiness.
    assert_eq!(s.get("/healthz").await.status, 200);
}

/// A burst beyond the inference queue is refused with a retryable 503, not
/// queued without bound, and the refused requests cost nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_is_503_retryable_and_uncharged() {
    let s = spawn_server(
        ServerOptions::new(&common::fresh_database(Backend::Sqlite, "overload"))
            .env("FACECOMPARE_WORKERS", "1")
            // Room for one compare's two images.
            .env("FACECOMPARE_QUEUE_CAPACITY", "2"),
    );
    let org = s.org(20).await;
    let big = common::images::scaled_jpeg(&common::images::decode(&fixture("obama2.jpg")), 2.6);
    let (a, b) = (file(&fixture("obama.jpg")), file(&big));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (srv, key, a, b) = (s.server.clone(), org.key.clone(), a.clone(), b.clone());
        tasks.push(tokio::spawn(async move {
            srv.compare_multipart(&key, &a, &b).await
        }));
    }
    let (mut ok, mut overloaded) = (0, 0);
    for t in tasks {
        let r = t.await.unwrap();
        if r.status == 200 {
            r.assert_compare_ok();
            ok += 1;
        } else {
            r.assert_error(503, "overloaded", None);
            assert_eq!(r.header("retry-after"), Some("1"));
            overloaded += 1;
        }
    }
    assert!(overloaded >= 1, "{ok} ok, {overloaded} overloaded");
    assert_eq!(s.balance(&org).await, 20 - ok);
    assert_eq!(s.ledger_sum(&org).await, 20 - ok);
    // Once the burst is over, the server answers again.
    s.compare_multipart(&org.key, &a, &b)
        .await
        .assert_compare_ok();
    assert_eq!(s.balance(&org).await, 20 - ok - 1);
}

/// A request that takes longer than FACECOMPARE_REQUEST_TIMEOUT_S (here: a
/// stalled upload) gets a retryable 503 and costs nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_upload_times_out() {
    let s = spawn_server(
        ServerOptions::new(&common::fresh_database(Backend::Sqlite, "timeout"))
            .env("FACECOMPARE_REQUEST_TIMEOUT_S", "1"),
    );
    let org = s.org(5).await;
    let addr = s.base.trim_start_matches("http://").to_string();
    let mut stream = TcpStream::connect(&addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(
        stream,
        "POST /v1/face/compare HTTP/1.1\r\nHost: {addr}\r\nx-api-key: {}\r\n\
         Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n{{\"source\": \"",
        org.key
    )
    .unwrap();
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    assert!(response.starts_with("HTTP/1.1 503"), "{response}");
    assert!(
        response.contains("\"error\":\"request_timeout\""),
        "{response}"
    );
    assert_eq!(s.balance(&org).await, 5);
}

/// `FACECOMPARE_METRICS_LISTEN`: `/metrics` moves to its own address and is
/// gone from the public port; the public routes stay where they were.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_can_be_served_on_a_separate_address() {
    let s = spawn_server(
        ServerOptions::new(&common::fresh_database(Backend::Sqlite, "metrics-listen"))
            .env("FACECOMPARE_METRICS_LISTEN", "127.0.0.1:0"),
    );
    let metrics_url = s
        .stdout
        .lock()
        .unwrap()
        .iter()
        .find_map(|l| l.strip_prefix("metrics on ").map(|u| u.trim().to_string()))
        .expect("the metrics address is printed");
    assert_eq!(s.get("/metrics").await.status, 404);
    assert_eq!(s.get("/healthz").await.status, 200);
    let r = common::client().get(&metrics_url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .contains("openmetrics-text")
    );
    assert!(r.text().await.unwrap().contains("facecompare_requests"));
    let other = metrics_url.replace("/metrics", "/healthz");
    let r = common::client().get(&other).send().await.unwrap();
    assert_eq!(r.status(), 404, "only /metrics on the metrics address");
}

/// `FACECOMPARE_METRICS_TOKEN`: `/metrics` answers only the bearer token;
/// the other routes are unaffected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_can_require_a_bearer_token() {
    if !common::own_servers_or_skip("its own server with its own settings") {
        return;
    }
    let token = "metrics-secret-0123456789";
    let s = spawn_server(
        ServerOptions::new(&common::fresh_database(Backend::Sqlite, "metrics-token"))
            .env("FACECOMPARE_METRICS_TOKEN", token),
    );
    let r = s.get("/metrics").await;
    assert_eq!(r.status, 401);
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    let wrong = common::client()
        .get(s.url("/metrics"))
        .bearer_auth("metrics-secret-0123456780")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let ok = common::client()
        .get(s.url("/metrics"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    assert!(ok.text().await.unwrap().contains("facecompare_requests"));
    assert_eq!(s.get("/healthz").await.status, 200);
}

/// A public API address serves `/metrics` only behind a token (or on its own
/// address): what the process does is not for whoever reaches the API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_not_on_a_public_api_port_unless_a_token_guards_them() {
    if !common::own_servers_or_skip("its own servers on a non-loopback address") {
        return;
    }
    let db = common::fresh_database(Backend::Sqlite, "metrics-public");
    let open = spawn_server(ServerOptions::new(&db).env("FACECOMPARE_LISTEN", "0.0.0.0:0"));
    assert_eq!(open.get("/healthz").await.status, 200);
    assert_eq!(open.get("/metrics").await.status, 404);
    let log = common::tail(open.log.as_ref().unwrap());
    assert!(log.contains("/metrics is not served"), "{log}");
    drop(open);

    let token = "metrics-secret-0123456789";
    let guarded = spawn_server(
        ServerOptions::new(&db)
            .env("FACECOMPARE_LISTEN", "0.0.0.0:0")
            .env("FACECOMPARE_METRICS_TOKEN", token),
    );
    assert_eq!(guarded.get("/metrics").await.status, 401);
    let ok = common::client()
        .get(guarded.url("/metrics"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
}

/// `FACECOMPARE_LOG_FORMAT=json`: every line the process writes, on stdout and
/// stderr, is one JSON object; the `listening` event carries the URL that the
/// plain format prints as `listening on`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_json_only() {
    use std::{
        io::BufRead,
        process::{Command, Stdio},
    };
    if !common::own_servers_or_skip("its own server with JSON logs") {
        return;
    }
    let db = common::fresh_database(Backend::Sqlite, "json-logs");
    let mut cmd = Command::new(common::BIN);
    cmd.arg("serve");
    common::scrub(&mut cmd);
    let mut child = cmd
        .env("FACECOMPARE_LISTEN", "127.0.0.1:0")
        .env("FACECOMPARE_DATABASE_URL", &db)
        .env("FACECOMPARE_MODELS_DIR", common::models_dir())
        .env("ORT_DYLIB_PATH", common::ort_dylib())
        .env("FACECOMPARE_WORKERS", "1")
        .env("FACECOMPARE_LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning the server");
    let read_all = |r: Box<dyn std::io::Read + Send>, tx: std::sync::mpsc::Sender<String>| {
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(r).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        })
    };
    let (tx, rx) = std::sync::mpsc::channel();
    let out = read_all(Box::new(child.stdout.take().unwrap()), tx.clone());
    let err = read_all(Box::new(child.stderr.take().unwrap()), tx);
    let mut lines = Vec::new();
    let url = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(180))
            .unwrap_or_else(|_| panic!("no `listening` event within 180 s: {lines:#?}"));
        let event: Option<serde_json::Value> = serde_json::from_str(&line).ok();
        lines.push(line);
        if let Some(e) = event
            && e["fields"]["message"] == "listening"
        {
            break e["fields"]["url"].as_str().expect("url field").to_string();
        }
    };
    let r = common::client()
        .get(format!("{url}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());
    out.join().unwrap();
    err.join().unwrap();
    lines.extend(rx.try_iter());
    assert!(lines.len() >= 2, "{lines:#?}");
    for line in lines.iter().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line:?}"));
        assert!(v.is_object(), "{line}");
    }
}

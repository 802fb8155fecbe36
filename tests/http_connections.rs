//! Connection floods (docs/operations.md, "Connections"): a server started with a low
//! descriptor limit keeps answering `/healthz` and compares while thousands
//! of idle and slow-header connections are opened against it; slow headers
//! and silent connections are closed after the header timeout; SIGTERM with
//! idle connections open exits at once.
mod common;

use std::{
    io::{ErrorKind, Read, Write},
    net::TcpStream,
    time::{Duration, Instant},
};

use common::{Backend, ServerOptions, file, fixture, spawn_server};

/// The server's descriptor limit: with the default reserve the cap is 192.
const FD_LIMIT: u64 = 256;
const FLOOD: usize = 2000;

/// Raises this test process's own soft descriptor limit: the flood needs
/// more than the usual 1024.
fn raise_own_fd_limit(need: u64) {
    // SAFETY: getrlimit/setrlimit with valid structs.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        lim.rlim_cur = lim.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
        assert!(
            lim.rlim_cur >= need,
            "this test needs {need} descriptors; the hard limit is {}",
            lim.rlim_cur
        );
    }
}

fn addr(base: &str) -> String {
    base.trim_start_matches("http://").to_string()
}

/// True when the server has closed `s` (EOF or reset), without blocking long.
fn closed(s: &mut TcpStream) -> bool {
    s.set_read_timeout(Some(Duration::from_millis(1))).unwrap();
    let mut b = [0u8; 512];
    match s.read(&mut b) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
    }
}

/// GET `path` on a fresh connection; the status line and how long it took.
fn get(addr: &str, path: &str) -> (String, Duration) {
    let started = Instant::now();
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    (
        out.lines().next().unwrap_or("").to_string(),
        started.elapsed(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floods_do_not_lock_out_health_or_compares() {
    if !common::own_servers_or_skip("its own server with a lowered fd limit") {
        return;
    }
    raise_own_fd_limit(FLOOD as u64 + 200);
    let mut s = spawn_server(
        ServerOptions::new(&common::fresh_database(Backend::Sqlite, "conns"))
            .fd_limit(FD_LIMIT)
            .env("FACECOMPARE_HEADER_TIMEOUT_MS", "1500")
            .env("FACECOMPARE_IDLE_TIMEOUT_MS", "60000"),
    );
    let org = s.org(5).await;
    let a = addr(&s.base);

    // Slow headers, silent connections, and an idle keep-alive connection.
    let mut slow: Vec<TcpStream> = (0..20)
        .map(|_| {
            let mut c = TcpStream::connect(&a).unwrap();
            c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
                .unwrap();
            c
        })
        .collect();
    let mut silent: Vec<TcpStream> = (0..20).map(|_| TcpStream::connect(&a).unwrap()).collect();
    let mut kept = TcpStream::connect(&a).unwrap();
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    kept.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut b = [0u8; 1024];
    let n = kept.read(&mut b).unwrap();
    assert!(String::from_utf8_lossy(&b[..n]).starts_with("HTTP/1.1 200"));
    std::thread::sleep(Duration::from_millis(1000));
    assert!(
        !slow.iter_mut().any(closed),
        "closed before the header timeout"
    );
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        slow.iter_mut().all(closed),
        "slow-header connections outlived the 1.5 s header timeout"
    );
    assert!(
        silent.iter_mut().all(closed),
        "silent connections outlived the 1.5 s header timeout"
    );
    assert!(
        !closed(&mut kept),
        "an idle keep-alive connection is bounded by the idle timeout (60 s), not the header timeout"
    );
    drop((slow, silent, kept));

    // A flood far above the descriptor limit.
    let started = Instant::now();
    // From several threads: on a loaded machine a dropped SYN costs a 1 s
    // retransmit, and a single thread would wait out each one in turn.
    let mut flood: Vec<TcpStream> = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let a = &a;
                scope.spawn(move || {
                    (0..FLOOD / 8)
                        .map(|i| {
                            let mut c = TcpStream::connect(a)
                                .unwrap_or_else(|e| panic!("connect #{t}/{i}: {e}"));
                            if i % 2 == 0 {
                                c.write_all(b"POST /v1/face/compare HTTP/1.1\r\n").unwrap();
                            }
                            c
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect()
    });
    let opened = started.elapsed();
    let (status, health_latency) = get(&a, "/healthz");
    assert!(status.starts_with("HTTP/1.1 200"), "{status:?}");
    let (status, _) = get(&a, "/readyz");
    assert!(status.starts_with("HTTP/1.1 200"), "{status:?}");
    let compare_started = Instant::now();
    s.compare_multipart(
        &org.key,
        &file(&fixture("obama.jpg")),
        &file(&fixture("obama2.jpg")),
    )
    .await
    .assert_compare_ok();
    let compare_latency = compare_started.elapsed();
    let open = flood.iter_mut().map(closed).filter(|c| !c).count();
    eprintln!(
        "flood: {FLOOD} connections opened in {opened:?}; /healthz {health_latency:?}, \
         compare {compare_latency:?}; {open} still open"
    );
    assert!(
        open <= 256,
        "{open} flood connections still open with a descriptor limit of {FD_LIMIT}"
    );
    assert!(
        health_latency < Duration::from_secs(5),
        "/healthz took {health_latency:?} during the flood"
    );
    let log = std::fs::read_to_string(s.log.as_ref().unwrap()).unwrap();
    assert!(
        log.contains("connection cap reached"),
        "the cap is logged:\n{}",
        common::tail(s.log.as_ref().unwrap())
    );
    drop(flood);

    // SIGTERM with idle connections open: no 35 s wait for them.
    let idle: Vec<TcpStream> = (0..150).map(|_| TcpStream::connect(&a).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(200));
    let t = Instant::now();
    s.signal(libc::SIGTERM);
    let status = s
        .wait_exit(Duration::from_secs(10))
        .expect("the server did not exit within 10 s of SIGTERM");
    eprintln!(
        "SIGTERM with {} idle connections: exited in {:?}",
        idle.len(),
        t.elapsed()
    );
    assert!(status.success(), "{status:?}");
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "SIGTERM took {:?}",
        t.elapsed()
    );
}

/// Writes `request` on a fresh connection and reads until the server closes
/// it (at most 20 s): everything it sent, and whether it closed.
fn exchange_until_close(addr: &str, request: &[u8]) -> (String, bool) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(request).unwrap();
    let mut out = Vec::new();
    let mut b = [0u8; 4096];
    let closed = loop {
        match s.read(&mut b) {
            Ok(0) => break true,
            Ok(n) => out.extend_from_slice(&b[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                break false;
            }
            Err(_) => break true,
        }
    };
    (String::from_utf8_lossy(&out).into_owned(), closed)
}

/// Reads one response (head and `content-length` body) from `s`.
fn read_response(s: &mut TcpStream) -> String {
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut out = Vec::new();
    let mut b = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&out).to_ascii_lowercase();
        if let Some(end) = text.find("\r\n\r\n") {
            let len = text[..end]
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if out.len() >= end + 4 + len {
                return String::from_utf8_lossy(&out).into_owned();
            }
        }
        match s.read(&mut b) {
            Ok(0) | Err(_) => return String::from_utf8_lossy(&out).into_owned(),
            Ok(n) => out.extend_from_slice(&b[..n]),
        }
    }
}

fn closes(head: &str) -> bool {
    head.to_ascii_lowercase()
        .contains("\r\nconnection: close\r\n")
}

/// Unread bodies (docs/operations.md, "Connections"): an early answer drains
/// only a small rest; a large one, or `Expect: 100-continue`, is answered
/// with `Connection: close` (never `100 Continue` before a 401), on the
/// native route and on `POST /`. 100 clients without a key that post 1 MB
/// bodies slowly, reconnecting, against a cap of 64 connections: `/healthz`
/// and a keyed client's compares are all answered 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unread_bodies_do_not_hold_connections() {
    if !common::own_servers_or_skip("its own server with a small connection cap") {
        return;
    }
    raise_own_fd_limit(600);
    let s = spawn_server(
        ServerOptions::new(&common::fresh_database(Backend::Sqlite, "drain"))
            .env("FACECOMPARE_MAX_CONNECTIONS", "64"),
    );
    let org = s.org(20).await;
    let a = addr(&s.base);

    // A bad key that waits for 100 Continue: the 401 at once, no 100, closed.
    let (out, closed) = exchange_until_close(
        &a,
        b"POST /v1/face/compare HTTP/1.1\r\nHost: x\r\nx-api-key: nope\r\n\
          Content-Type: application/json\r\nContent-Length: 5000000\r\n\
          Expect: 100-continue\r\n\r\n",
    );
    assert!(out.starts_with("HTTP/1.1 401"), "{out}");
    assert!(!out.contains("100 Continue"), "{out}");
    assert!(closes(&out) && closed, "{out}");

    // No key and a large body: 401 without reading it, closed.
    let (out, closed) = exchange_until_close(
        &a,
        b"POST /v1/face/compare HTTP/1.1\r\nHost: x\r\n\
          Content-Type: application/json\r\nContent-Length: 1000000\r\n\r\n{\"source\":",
    );
    assert!(out.starts_with("HTTP/1.1 401"), "{out}");
    assert!(closes(&out) && closed, "{out}");

    // The Rekognition route, an unknown access key id and a 5 MB body: the
    // 403 without reading it, closed.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let t = facecompare::utc::DateTime::from_unix(now);
    let day = format!("{:04}{:02}{:02}", t.year, t.month, t.day);
    let date = format!("{day}T{:02}{:02}{:02}Z", t.hour, t.minute, t.second);
    let req = format!(
        "POST / HTTP/1.1\r\nHost: {a}\r\nx-amz-date: {date}\r\n\
         x-amz-target: RekognitionService.CompareFaces\r\n\
         content-type: application/x-amz-json-1.1\r\nContent-Length: 5000000\r\n\
         authorization: AWS4-HMAC-SHA256 Credential=AKIANOSUCHKEY000000/{day}/us-east-1/rekognition/aws4_request, \
         SignedHeaders=host;x-amz-date;x-amz-target, Signature={}\r\n\r\n{{",
        "0".repeat(64)
    );
    let (out, closed) = exchange_until_close(&a, req.as_bytes());
    assert!(out.starts_with("HTTP/1.1 403"), "{out}");
    assert!(out.contains("UnrecognizedClientException"), "{out}");
    assert!(closes(&out) && closed, "{out}");

    // A small rest is drained and the connection kept.
    let mut c = TcpStream::connect(&a).unwrap();
    c.write_all(
        b"POST /v1/face/compare HTTP/1.1\r\nHost: x\r\n\
          Content-Type: application/json\r\nContent-Length: 10\r\n\r\n{\"a\":\"bc\"}",
    )
    .unwrap();
    let out = read_response(&mut c);
    assert!(out.starts_with("HTTP/1.1 401") && !closes(&out), "{out}");
    c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let out = read_response(&mut c);
    assert!(out.starts_with("HTTP/1.1 200"), "kept alive: {out}");
    drop(c);

    // The flood: 100 clients, no key, 1 MB declared, trickled.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let answered = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let attackers: Vec<_> = (0..100)
        .map(|_| {
            let (a, stop, answered) = (a.clone(), stop.clone(), answered.clone());
            std::thread::spawn(move || {
                use std::sync::atomic::Ordering::Relaxed;
                while !stop.load(Relaxed) {
                    let Ok(mut c) = TcpStream::connect(&a) else {
                        std::thread::sleep(Duration::from_millis(100));
                        continue;
                    };
                    let head = b"POST /v1/face/compare HTTP/1.1\r\nHost: x\r\n\
                        Content-Type: application/json\r\nContent-Length: 1000000\r\n\r\n";
                    if c.write_all(head).is_err() {
                        continue;
                    }
                    c.set_read_timeout(Some(Duration::from_millis(200)))
                        .unwrap();
                    let mut b = [0u8; 1024];
                    while !stop.load(Relaxed) {
                        match c.read(&mut b) {
                            Ok(n) if n > 0 => {
                                if b.starts_with(b"HTTP/1.1 401") {
                                    answered.fetch_add(1, Relaxed);
                                }
                                break;
                            }
                            Ok(_) => break,
                            Err(e)
                                if matches!(
                                    e.kind(),
                                    ErrorKind::WouldBlock | ErrorKind::TimedOut
                                ) =>
                            {
                                if c.write_all(&[b' '; 100]).is_err() {
                                    break;
                                }
                            }
                            Err(_) => break,
                        }
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(2));
    let mut health = Vec::new();
    for _ in 0..20 {
        health.push(get(&a, "/healthz").0);
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut compares = Vec::new();
    for _ in 0..3 {
        let r = s
            .compare_multipart(
                &org.key,
                &file(&fixture("obama.jpg")),
                &file(&fixture("obama2.jpg")),
            )
            .await;
        compares.push(r.status);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in attackers {
        t.join().unwrap();
    }
    let answered = answered.load(std::sync::atomic::Ordering::Relaxed);
    eprintln!("flood of unread bodies: {answered} attacker requests answered 401");
    let bad: Vec<_> = health
        .iter()
        .filter(|h| !h.starts_with("HTTP/1.1 200"))
        .collect();
    assert!(bad.is_empty(), "/healthz during the flood: {bad:?}");
    assert_eq!(compares, [200, 200, 200], "the keyed client's compares");
    assert!(answered >= 100, "the attackers got their 401s: {answered}");
}

/// A half-sent second request head on a keep-alive connection is closed
/// after the header timeout (not the idle timeout); a compare whose client
/// hangs up before the answer is logged and counted as 499.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_heads_time_out_and_gone_clients_are_counted() {
    if !common::own_servers_or_skip("its own server with short timeouts") {
        return;
    }
    let s = spawn_server(
        ServerOptions::new(&common::fresh_database(Backend::Sqlite, "heads"))
            .env("FACECOMPARE_HEADER_TIMEOUT_MS", "1500")
            .env("FACECOMPARE_IDLE_TIMEOUT_MS", "60000"),
    );
    let org = s.org(20).await;
    let a = addr(&s.base);

    let first = |c: &mut TcpStream| {
        c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let out = read_response(c);
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    };
    let mut half = TcpStream::connect(&a).unwrap();
    let mut idle = TcpStream::connect(&a).unwrap();
    first(&mut half);
    first(&mut idle);
    half.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(3500));
    assert!(
        closed(&mut half),
        "a half-sent second head outlived the 1.5 s header timeout"
    );
    assert!(
        !closed(&mut idle),
        "an idle keep-alive connection is bounded by the idle timeout (60 s)"
    );

    // A compare sent in full, then the client hangs up.
    let (source, target) = (fixture("obama.jpg"), fixture("obama2.jpg"));
    let boundary = "XgoneX";
    let mut body = Vec::new();
    for (name, bytes) in [("source", &source), ("target", &target)] {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{name}.jpg\"\r\n\
                 Content-Type: image/jpeg\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    let line = "facecompare_requests_total{route=\"/v1/face/compare\",status=\"499\"}";
    let mut counted = false;
    for _ in 0..3 {
        let mut c = TcpStream::connect(&a).unwrap();
        write!(
            c,
            "POST /v1/face/compare HTTP/1.1\r\nHost: x\r\nx-api-key: {}\r\n\
             Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {}\r\n\r\n",
            org.key,
            body.len()
        )
        .unwrap();
        c.write_all(&body).unwrap();
        drop(c);
        for _ in 0..40 {
            tokio::time::sleep(Duration::from_millis(250)).await;
            if s.metrics().await.text.contains(line) {
                counted = true;
                break;
            }
        }
        if counted {
            break;
        }
    }
    assert!(counted, "no {line} in /metrics");
    let log = std::fs::read_to_string(s.log.as_ref().unwrap()).unwrap();
    assert!(
        log.lines().any(
            |l| l.contains("client closed the connection before the answer") && l.contains("499")
        ),
        "the gone client is logged:\n{}",
        common::tail(s.log.as_ref().unwrap())
    );
}

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

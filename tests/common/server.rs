//! Server processes: the shared server per backend, servers a test owns
//! ([`spawn_server`]), and the external server of a running stack
//! (`FACECOMPARE_TEST_BASE_URL`).
use std::{
    io::{BufRead, BufReader, Read},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex, OnceLock, mpsc},
    time::Duration,
};

use super::{BIN, Backend, fresh_database, models_dir, ort_dylib};

/// The base URL of an external server, if the suite runs against one.
/// Tests that start their own server processes (own settings, limits or
/// databases) cannot run against a running stack (`FACECOMPARE_TEST_BASE_URL`,
/// the compose `tests` service): they say so and skip.
pub fn own_servers_or_skip(what: &str) -> bool {
    if external_base().is_some() {
        eprintln!("SKIPPED: this test starts {what}, not a running stack's");
        return false;
    }
    true
}

pub fn external_base() -> Option<String> {
    std::env::var("FACECOMPARE_TEST_BASE_URL")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .map(|v| v.trim_end_matches('/').to_string())
}

/// A running server: shared (lives as long as the test binary) or owned
/// ([`OwnedServer`], killed when dropped).
#[derive(Clone)]
pub struct Server {
    pub base: String,
    pub db_url: String,
    /// True when this is the external server of `FACECOMPARE_TEST_BASE_URL`.
    pub external: bool,
    /// True when the server has S3 configured (external servers may).
    pub s3_configured: bool,
    pub pid: Option<u32>,
    pub log: Option<PathBuf>,
    pub stdout: Arc<Mutex<Vec<String>>>,
}

/// The shared server for `backend` (the external one in external mode).
pub fn server(backend: Backend) -> &'static Server {
    static EXTERNAL: OnceLock<Server> = OnceLock::new();
    static SQLITE: OnceLock<Server> = OnceLock::new();
    static POSTGRES: OnceLock<Server> = OnceLock::new();
    if let Some(base) = external_base() {
        return EXTERNAL.get_or_init(|| {
            let db_url = std::env::var("FACECOMPARE_DATABASE_URL")
                .expect("FACECOMPARE_TEST_BASE_URL needs FACECOMPARE_DATABASE_URL (the server's database, for the CLI)");
            Server {
                base,
                db_url,
                external: true,
                s3_configured: std::env::var("FACECOMPARE_S3_BUCKET").is_ok_and(|b| !b.is_empty()),
                pid: None,
                log: None,
                stdout: Default::default(),
            }
        });
    }
    let cell = match backend {
        Backend::Sqlite => &SQLITE,
        Backend::Postgres => &POSTGRES,
    };
    cell.get_or_init(|| {
        let db_url = fresh_database(backend, "shared");
        // Spawned from a thread that never ends: the child's PDEATHSIG fires
        // when the spawning thread dies, so this keeps the shared server up
        // exactly as long as the test binary.
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name(format!("{backend:?}-server"))
            .spawn(move || {
                let spawned = start_process(&ServerOptions::new(&db_url));
                tx.send(spawned).ok();
                loop {
                    std::thread::park();
                }
            })
            .expect("spawning the server thread");
        let (child, server) = rx.recv().expect("server thread");
        // The shared child is never waited on: it dies with the test binary.
        std::mem::forget(child);
        server
    })
}

/// Options for a server process.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// None: no `FACECOMPARE_DATABASE_URL` (the embedded default).
    pub db_url: Option<String>,
    pub cwd: Option<PathBuf>,
    pub env: Vec<(String, String)>,
    /// RLIMIT_NOFILE (soft and hard) for the process, set before exec.
    pub fd_limit: Option<u64>,
}

impl ServerOptions {
    pub fn new(db_url: &str) -> Self {
        Self {
            db_url: Some(db_url.to_string()),
            cwd: None,
            env: Vec::new(),
            fd_limit: None,
        }
    }

    pub fn fd_limit(mut self, n: u64) -> Self {
        self.fd_limit = Some(n);
        self
    }

    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.push((k.into(), v.into()));
        self
    }
}

/// A server process owned by one test: SIGKILLed when dropped (unless it
/// already exited).
pub struct OwnedServer {
    pub server: Server,
    pub child: Child,
}

impl std::ops::Deref for OwnedServer {
    type Target = Server;
    fn deref(&self) -> &Server {
        &self.server
    }
}

impl OwnedServer {
    pub fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill(2) on our own child's pid.
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, sig) };
        assert_eq!(rc, 0, "kill({sig}) failed");
    }

    /// Waits for the process to exit, at most `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if std::time::Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for OwnedServer {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Spawns a server process for one test (its own port, the given database).
pub fn spawn_server(opts: ServerOptions) -> OwnedServer {
    let (child, server) = start_process(&opts);
    OwnedServer { server, child }
}

fn log_dir() -> PathBuf {
    let dir = std::env::temp_dir().join("facecompare-test-logs");
    std::fs::create_dir_all(&dir).expect("log dir");
    dir
}

/// Environment variables of the test process that must not leak into a
/// spawned server (its configuration comes only from the options).
pub fn scrub(cmd: &mut Command) {
    for (k, _) in std::env::vars() {
        if (k.starts_with("FACECOMPARE_") || k.starts_with("AWS_")) && k != "FACECOMPARE_PACK" {
            cmd.env_remove(&k);
        }
    }
}

fn start_process(opts: &ServerOptions) -> (Child, Server) {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let log = log_dir().join(format!("server-{}-{n}.log", std::process::id()));
    let log_file = std::fs::File::create(&log).expect("server log file");
    let mut cmd = Command::new(BIN);
    cmd.arg("serve");
    scrub(&mut cmd);
    cmd.env("FACECOMPARE_LISTEN", "127.0.0.1:0")
        .env("FACECOMPARE_MODELS_DIR", models_dir())
        .env("ORT_DYLIB_PATH", ort_dylib())
        .env("FACECOMPARE_WORKERS", "2")
        .env(
            "RUST_LOG",
            std::env::var("FACECOMPARE_TEST_SERVER_LOG").unwrap_or_else(|_| "info".into()),
        );
    if let Some(url) = &opts.db_url {
        cmd.env("FACECOMPARE_DATABASE_URL", url);
    }
    if let Some(cwd) = &opts.cwd {
        cmd.current_dir(cwd);
    }
    for (k, v) in &opts.env {
        cmd.env(k, v);
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log_file));
    // SAFETY: prctl and setrlimit in the forked child before exec; async-signal-safe.
    let fd_limit = opts.fd_limit;
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(move || {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            if let Some(n) = fd_limit {
                let lim = libc::rlimit {
                    rlim_cur: n as libc::rlim_t,
                    rlim_max: n as libc::rlim_t,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {BIN}: {e}"));
    let stdout_lines = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = mpsc::channel();
    {
        let stdout = child.stdout.take().expect("piped stdout");
        let lines = stdout_lines.clone();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(addr) = line.strip_prefix("listening on ")
                    && let Some(tx) = tx.take()
                {
                    tx.send(addr.trim().to_string()).ok();
                }
                lines.lock().unwrap().push(line);
            }
        });
    }
    let base = match rx.recv_timeout(Duration::from_secs(180)) {
        Ok(base) => base,
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "server did not print `listening on` within 180 s; log {}:\n{}",
                log.display(),
                tail(&log)
            );
        }
    };
    let server = Server {
        base: base.trim_end_matches('/').to_string(),
        db_url: opts.db_url.clone().unwrap_or_default(),
        external: false,
        s3_configured: opts.env.iter().any(|(k, _)| k == "FACECOMPARE_S3_BUCKET"),
        pid: Some(child.id()),
        log: Some(log),
        stdout: stdout_lines,
    };
    (child, server)
}

/// The last lines of a log file, for failure messages.
pub fn tail(path: &Path) -> String {
    let mut s = String::new();
    if let Ok(mut f) = std::fs::File::open(path) {
        let _ = f.read_to_string(&mut s);
    }
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

//! Integration-test harness: real `facecompare serve` processes over real HTTP.
//!
//! Two modes:
//! - local (default): spawns the binary (`FACECOMPARE_LISTEN=127.0.0.1:0`) on a
//!   temporary SQLite file or a fresh PostgreSQL database, and reads the port
//!   from its `listening on http://ADDR` line. One shared server per backend
//!   and test binary; tests that need their own process use [`spawn_server`].
//! - external: `FACECOMPARE_TEST_BASE_URL` names a running server (docker
//!   compose); `FACECOMPARE_DATABASE_URL` is its database. Both backends then
//!   map to that server.
//!
//! Either way organisations and keys are provisioned through the CLI
//! (`facecompare org create ... --json`, `key create --json`) on the same
//! database, and every test creates its own organisations, so tests never
//! share balances or rate limits.
#![allow(dead_code)]

pub mod backends;
pub mod images;
pub mod onnx;
pub mod pg_cluster;
pub mod s3;

use std::{
    io::{BufRead, BufReader, Read},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex, OnceLock, mpsc},
    time::Duration,
};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_facecompare");

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Backend {
    Sqlite,
    Postgres,
}

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

pub fn ort_dylib() -> String {
    std::env::var("ORT_DYLIB_PATH")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| {
            repo()
                .join(".ort")
                .join(facecompare::faces::runtime::ORT_LIB)
                .display()
                .to_string()
        })
}

pub fn models_dir() -> String {
    std::env::var("FACECOMPARE_TEST_MODELS_DIR")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| repo().join("models").display().to_string())
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

// ------------------------------------------------------------- databases ---

/// A new, empty database for `backend`: a temporary SQLite file, or a fresh
/// PostgreSQL database `fc_test_<pid>_<tag>_<n>` (see [`pg_base`]).
pub fn fresh_database(backend: Backend, tag: &str) -> String {
    match backend {
        Backend::Sqlite => {
            let dir = tempfile::Builder::new()
                .prefix("facecompare-test-")
                .tempdir()
                .expect("temp dir");
            let path = dir.keep().join("fc.db");
            format!("sqlite://{}?mode=rwc", path.display())
        }
        Backend::Postgres => create_pg_database(tag),
    }
}

/// The PostgreSQL server the suite creates its databases on:
/// `FACECOMPARE_TEST_PG_BASE` or `FACECOMPARE_TEST_PG_URL` (a server URL, as
/// `.ci/run` and docker compose set them), default `postgres://postgres@127.0.0.1:5432/`.
fn pg_base() -> String {
    let base = ["FACECOMPARE_TEST_PG_BASE", "FACECOMPARE_TEST_PG_URL"]
        .iter()
        .find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/".into());
    // A URL naming a database: keep only the server part.
    let server = match base.find("://").map(|i| i + 3) {
        Some(start) => match base[start..].find('/') {
            Some(slash) => base[..start + slash].to_string(),
            None => base.clone(),
        },
        None => base.clone(),
    };
    format!("{server}/")
}

/// Runs `f` on its own thread and runtime: callers may be inside a test's runtime.
fn block_on_thread<T: Send + 'static>(
    f: impl std::future::Future<Output = T> + Send + 'static,
) -> T {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f)
    })
    .join()
    .expect("helper thread")
}

/// Whether the PostgreSQL tests can run. Unreachable PostgreSQL skips them
/// (with a message) on a developer machine and fails them under `CI`.
pub fn postgres_or_skip() -> bool {
    static AVAILABLE: OnceLock<Result<(), String>> = OnceLock::new();
    if external_base().is_some() {
        return true;
    }
    let admin_url = format!("{}postgres", pg_base());
    let available = AVAILABLE.get_or_init(|| {
        let url = admin_url.clone();
        block_on_thread(async move {
            use sqlx::Connection;
            let connect = sqlx::PgConnection::connect(&url);
            match tokio::time::timeout(Duration::from_secs(5), connect).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err("connect timed out".into()),
            }
        })
    });
    match available {
        Ok(()) => true,
        Err(e) if std::env::var_os("CI").is_some() => {
            panic!("PostgreSQL at {admin_url} unreachable ({e}); set FACECOMPARE_TEST_PG_URL")
        }
        Err(e) => {
            eprintln!(
                "SKIPPED: PostgreSQL at {admin_url} unreachable ({e}); set FACECOMPARE_TEST_PG_URL, or CI=1 to fail"
            );
            false
        }
    }
}

fn create_pg_database(tag: &str) -> String {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let name = format!("fc_test_{}_{tag}_{n}", std::process::id()).to_ascii_lowercase();
    let base = pg_base();
    let admin_url = format!("{base}postgres");
    let db = name.clone();
    block_on_thread(async move {
        use sqlx::{Connection, Executor};
        let mut conn = sqlx::PgConnection::connect(&admin_url)
            .await
            .unwrap_or_else(|e| {
                panic!("PostgreSQL at {admin_url} ({e}); start it or set FACECOMPARE_TEST_PG_URL")
            });
        drop_stale_databases(&mut conn).await;
        conn.execute(format!("CREATE DATABASE \"{db}\"").as_str())
            .await
            .expect("CREATE DATABASE");
    });
    format!("{base}{name}")
}

/// Drops `fc_test_<pid>_...` databases of test runs whose process is gone.
async fn drop_stale_databases(conn: &mut sqlx::PgConnection) {
    use sqlx::Executor;
    let rows: Vec<(String,)> =
        match sqlx::query_as("SELECT datname FROM pg_database WHERE datname LIKE 'fc\\_test\\_%'")
            .fetch_all(&mut *conn)
            .await
        {
            Ok(rows) => rows,
            Err(_) => return,
        };
    for (name,) in rows {
        let pid = name
            .strip_prefix("fc_test_")
            .and_then(|r| r.split('_').next())
            .and_then(|p| p.parse::<u32>().ok());
        if let Some(pid) = pid
            && pid != std::process::id()
            && !Path::new(&format!("/proc/{pid}")).exists()
        {
            let _ = conn
                .execute(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)").as_str())
                .await;
        }
    }
}

// ------------------------------------------------------------------- CLI ---

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

// ------------------------------------------------------------------ HTTP ---

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .expect("reqwest client")
}

/// A response, read in full.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
}

impl Resp {
    pub async fn from(r: reqwest::Response) -> Self {
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let text = r.text().await.expect("response body");
        Self {
            status,
            headers,
            text,
        }
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts an error response: status, code, a message naming `field`, a request id.
    pub fn assert_error(&self, status: u16, code: &str, field: Option<&str>) -> Value {
        assert_eq!(
            self.status, status,
            "expected {status} {code}, got {}: {}",
            self.status, self.text
        );
        let v = self.json();
        assert_eq!(v["error"], code, "{v}");
        let message = v["message"]
            .as_str()
            .unwrap_or_else(|| panic!("no message: {v}"));
        if let Some(field) = field {
            assert!(
                message.starts_with(&format!("{field}:")),
                "message does not name {field}: {message}"
            );
        }
        let id = v["requestId"].as_str().expect("requestId");
        assert_eq!(
            Some(id),
            self.header("x-request-id"),
            "requestId matches the header"
        );
        v
    }

    /// Asserts a 200 compare answer with exactly the five fields; returns it.
    pub fn assert_compare_ok(&self) -> Value {
        assert_eq!(self.status, 200, "{}", self.text);
        let v = self.json();
        let obj = v.as_object().expect("object");
        let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "confidence",
                "isMatch",
                "sourceFaceDetected",
                "targetFaceDetected",
                "threshold"
            ],
            "{v}"
        );
        let confidence = v["confidence"].as_f64().expect("confidence");
        let threshold = v["threshold"].as_f64().expect("threshold");
        assert!((0.0..=100.0).contains(&confidence), "{v}");
        assert_eq!(
            v["isMatch"],
            confidence >= threshold,
            "isMatch is confidence >= threshold: {v}"
        );
        assert!(self.header("x-request-id").is_some());
        v
    }
}

/// One compare input as the test sends it.
#[derive(Clone, Debug)]
pub enum Input {
    /// A multipart file part.
    File(Vec<u8>),
    /// A string (multipart text part, or JSON value).
    Text(String),
}

pub fn file(bytes: &[u8]) -> Input {
    Input::File(bytes.to_vec())
}

pub fn b64(bytes: &[u8]) -> Input {
    use base64::Engine;
    Input::Text(base64::engine::general_purpose::STANDARD.encode(bytes))
}

pub fn text(s: &str) -> Input {
    Input::Text(s.to_string())
}

fn part(input: &Input, name: &str) -> reqwest::multipart::Part {
    match input {
        Input::File(b) => {
            reqwest::multipart::Part::bytes(b.clone()).file_name(format!("{name}.bin"))
        }
        Input::Text(s) => reqwest::multipart::Part::text(s.clone()),
    }
}

impl Server {
    /// POST /v1/face/compare as multipart/form-data.
    pub async fn compare_multipart(&self, key: &str, source: &Input, target: &Input) -> Resp {
        self.compare_multipart_with(key, source, target, &[]).await
    }

    pub async fn compare_multipart_with(
        &self,
        key: &str,
        source: &Input,
        target: &Input,
        headers: &[(&str, &str)],
    ) -> Resp {
        let form = reqwest::multipart::Form::new()
            .part("source", part(source, "source"))
            .part("target", part(target, "target"));
        let mut req = client()
            .post(self.url("/v1/face/compare"))
            .header("x-api-key", key)
            .multipart(form);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        Resp::from(req.send().await.expect("POST compare")).await
    }

    /// POST /v1/face/compare as JSON (file inputs are sent as base64).
    pub async fn compare_json(&self, key: &str, source: &Input, target: &Input) -> Resp {
        let s = |i: &Input| match i {
            Input::File(b) => match b64(b) {
                Input::Text(t) => t,
                Input::File(_) => unreachable!(),
            },
            Input::Text(t) => t.clone(),
        };
        let body = serde_json::json!({"source": s(source), "target": s(target)});
        self.post_raw(key, "application/json", body.to_string().into_bytes(), &[])
            .await
    }

    /// POST /v1/face/compare with a raw body.
    pub async fn post_raw(
        &self,
        key: &str,
        content_type: &str,
        body: Vec<u8>,
        headers: &[(&str, &str)],
    ) -> Resp {
        let mut req = client()
            .post(self.url("/v1/face/compare"))
            .header("x-api-key", key)
            .header("content-type", content_type)
            .body(body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        Resp::from(req.send().await.expect("POST compare")).await
    }

    pub async fn get(&self, path: &str) -> Resp {
        Resp::from(client().get(self.url(path)).send().await.expect("GET")).await
    }

    /// GET /metrics: on the API port of a server this harness started; a
    /// running stack serves it on its own address (`FACECOMPARE_TEST_METRICS_URL`).
    pub async fn metrics(&self) -> Resp {
        let url = match std::env::var("FACECOMPARE_TEST_METRICS_URL") {
            Ok(u) if self.external && !u.trim().is_empty() => u.trim().to_string(),
            _ => self.url("/metrics"),
        };
        Resp::from(client().get(url).send().await.expect("GET /metrics")).await
    }
}

// -------------------------------------------------------------- fixtures ---

/// A fetched fixture image (`tests/fixtures/fetched/NAME`); runs
/// `scripts/fetch-fixtures.sh` once if it is missing, and fails (never skips)
/// when it cannot be had.
pub fn fixture(name: &str) -> Vec<u8> {
    static FETCHED: OnceLock<()> = OnceLock::new();
    let dir = std::env::var("FIXTURES_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo().join("tests/fixtures/fetched"));
    let path = dir.join(name);
    if !path.exists() {
        FETCHED.get_or_init(|| {
            let status = Command::new("bash")
                .arg(repo().join("scripts/fetch-fixtures.sh"))
                .status();
            eprintln!("fetch-fixtures.sh: {status:?}");
        });
    }
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "fixture {} ({e}): run scripts/fetch-fixtures.sh (needs python3 and pip)",
            path.display()
        )
    })
}

//! S3 inputs end to end, over real HTTP against the real `facecompare serve`
//! binary, a real S3 server (s3s-fs) and a real PostgreSQL.
//!
//! Each test starts its own stack: a fresh database (from
//! `FACECOMPARE_TEST_PG_URL`, default `postgres://postgres@127.0.0.1:5432/`),
//! s3s-fs on a free port (binary from `S3S_FS_BIN` or PATH) behind a small TCP
//! proxy that records the requests sent to the store (so "refused without
//! downloading" is checked, not timed), and the server with its S3 endpoint at
//! the proxy. Organisations and keys come from the `facecompare` CLI.
//!
//! With `FACECOMPARE_TEST_BASE_URL` set (docker compose), the server and S3
//! store are the running stack's: objects go to `FACECOMPARE_S3_ENDPOINT`
//! with the `AWS_*` credentials, orgs are created in `FACECOMPARE_DATABASE_URL`,
//! and the checks that need to stop the store or see its requests are skipped.
//!
//! Outside CI, a missing PostgreSQL or s3s-fs skips these tests with a message;
//! with `CI` set it fails them.
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use base64::Engine as _;
use serde_json::{Value, json};
use sqlx::Connection as _;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

const BIN: &str = env!("CARGO_BIN_EXE_facecompare");
const ACCESS_KEY: &str = "facecompare-test";
const SECRET_KEY: &str = "facecompare-test-secret";
const LOCAL_BUCKET: &str = "faces";

// ---------------------------------------------------------------- harness

fn fixture(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/fetched")
        .join(name);
    std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; run scripts/fetch-fixtures.sh", path.display()))
}

fn skip_or_fail(what: String) -> Option<Stack> {
    if std::env::var_os("CI").is_some() {
        panic!("{what} (CI is set, so this fails instead of skipping)");
    }
    eprintln!("SKIPPED: {what}");
    None
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn s3s_fs_bin() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("S3S_FS_BIN") {
        return Some(PathBuf::from(p));
    }
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|dir| dir.join("s3s-fs"))
        .find(|p| p.is_file())
}

/// A TCP proxy in front of the S3 store: the server's endpoint stays put while
/// the store behind it is stopped and restarted, and what the server sends to
/// the store (request lines and headers: S3 reads have no bodies) is recorded.
struct Proxy {
    addr: SocketAddr,
    upstream: Arc<Mutex<SocketAddr>>,
    to_store: Arc<Mutex<Vec<u8>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let upstream = Arc::new(Mutex::new(upstream));
        let to_store = Arc::new(Mutex::new(Vec::new()));
        let (up, record) = (upstream.clone(), to_store.clone());
        let task = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let target = *up.lock().unwrap();
                let record = record.clone();
                tokio::spawn(async move {
                    // Store down: dropping `inbound` closes the connection at once.
                    let Ok(outbound) = TcpStream::connect(target).await else {
                        return;
                    };
                    let (ri, wi) = inbound.into_split();
                    let (ro, wo) = outbound.into_split();
                    tokio::join!(pipe(ri, wo, Some(record)), pipe(ro, wi, None));
                });
            }
        });
        Self {
            addr,
            upstream,
            to_store,
            task,
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn pipe(
    mut from: impl tokio::io::AsyncRead + Unpin,
    mut to: impl tokio::io::AsyncWrite + Unpin,
    record: Option<Arc<Mutex<Vec<u8>>>>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    while let Ok(n @ 1..) = from.read(&mut buf).await {
        if let Some(r) = &record {
            r.lock().unwrap().extend_from_slice(&buf[..n]);
        }
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

/// s3s-fs serving `work/data` (a bucket is a folder under it), logging to `work/s3s-fs.log`.
struct S3sFs {
    child: Child,
    addr: SocketAddr,
}

impl S3sFs {
    async fn start(bin: &Path, work: &Path) -> Self {
        let port = free_port();
        let root = work.join("data");
        std::fs::create_dir_all(&root).unwrap();
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(work.join("s3s-fs.log"))
            .unwrap();
        let child = Command::new(bin)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
            .arg(&root)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut s = Self { child, addr };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(addr).await.is_err() {
            assert!(
                s.child.try_wait().unwrap().is_none(),
                "s3s-fs exited at start"
            );
            assert!(Instant::now() < deadline, "s3s-fs did not listen on {addr}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        s
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for S3sFs {
    fn drop(&mut self) {
        self.stop();
    }
}

/// What a self-started stack owns (absent against a running compose stack).
struct Local {
    server: Child,
    server_log: PathBuf,
    s3s_bin: PathBuf,
    /// The store's data and both processes' logs.
    work: tempfile::TempDir,
    store: S3sFs,
    proxy: Proxy,
    pg_admin_url: String,
    db_name: String,
}

impl Drop for Local {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

struct Stack {
    base_url: String,
    db_url: String,
    bucket: String,
    /// Straight to the store (not through the proxy): the tests' own uploads.
    s3: aws_sdk_s3::Client,
    http: reqwest::Client,
    local: Option<Local>,
}

struct OrgKey {
    name: String,
    prefix: String,
    key: String,
}

fn s3_client(endpoint: &str, access_key: &str, secret_key: &str) -> aws_sdk_s3::Client {
    let config = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(
            std::env::var("AWS_REGION").unwrap_or_else(|_| "us-east-1".into()),
        ))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new(
            access_key, secret_key, None, None, "tests",
        ))
        .force_path_style(true)
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

impl Stack {
    async fn start() -> Option<Self> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        if let Ok(base_url) = std::env::var("FACECOMPARE_TEST_BASE_URL") {
            let var = |n: &str| {
                std::env::var(n)
                    .unwrap_or_else(|_| panic!("{n} must be set with FACECOMPARE_TEST_BASE_URL"))
            };
            let endpoint = var("FACECOMPARE_S3_ENDPOINT");
            return Some(Self {
                base_url: base_url.trim_end_matches('/').to_string(),
                db_url: var("FACECOMPARE_DATABASE_URL"),
                bucket: var("FACECOMPARE_S3_BUCKET"),
                s3: s3_client(
                    &endpoint,
                    &var("AWS_ACCESS_KEY_ID"),
                    &var("AWS_SECRET_ACCESS_KEY"),
                ),
                http,
                local: None,
            });
        }

        let Some(s3s_bin) = s3s_fs_bin() else {
            return skip_or_fail(
                "s3s-fs not found (set S3S_FS_BIN or put it on PATH: cargo install s3s-fs --version 0.14.1 --features binary --locked)".into(),
            );
        };
        let server_url = pg_server_url();
        let pg_admin_url = format!("{server_url}/postgres");
        let mut admin = match sqlx::PgConnection::connect(&pg_admin_url).await {
            Ok(c) => c,
            Err(e) => return skip_or_fail(format!("PostgreSQL at {server_url} unreachable ({e})")),
        };
        let db_name = format!(
            "fc_test_{}_{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        );
        sqlx::raw_sql(&format!("CREATE DATABASE {db_name}"))
            .execute(&mut admin)
            .await
            .unwrap();
        admin.close().await.ok();
        let db_url = format!("{server_url}/{db_name}");

        let work = tempfile::tempdir().unwrap();
        let store = S3sFs::start(&s3s_bin, work.path()).await;
        let proxy = Proxy::start(store.addr).await;

        let port = free_port();
        let server_log = work.path().join("server.log");
        let log = std::fs::File::create(&server_log).unwrap();
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
        let ort = std::env::var("ORT_DYLIB_PATH").unwrap_or_else(|_| {
            repo.join(".ort/libonnxruntime.so.1.32.0")
                .display()
                .to_string()
        });
        let server = Command::new(BIN)
            .arg("serve")
            .env("FACECOMPARE_LISTEN", format!("127.0.0.1:{port}"))
            .env("FACECOMPARE_DATABASE_URL", &db_url)
            .env("FACECOMPARE_MODELS_DIR", repo.join("models"))
            .env("ORT_DYLIB_PATH", ort)
            .env("FACECOMPARE_WORKERS", "1")
            .env("FACECOMPARE_S3_BUCKET", LOCAL_BUCKET)
            .env("FACECOMPARE_S3_ENDPOINT", format!("http://{}", proxy.addr))
            .env("FACECOMPARE_S3_CONNECT_TIMEOUT_MS", "1000")
            .env("FACECOMPARE_S3_READ_TIMEOUT_MS", "3000")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env_remove("FACECOMPARE_S3_REGION")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn facecompare serve");
        let stack = Self {
            base_url: format!("http://127.0.0.1:{port}"),
            db_url,
            bucket: LOCAL_BUCKET.into(),
            s3: s3_client(&format!("http://{}", store.addr), ACCESS_KEY, SECRET_KEY),
            http,
            local: Some(Local {
                server,
                server_log,
                s3s_bin,
                work,
                store,
                proxy,
                pg_admin_url,
                db_name,
            }),
        };
        stack
            .s3
            .create_bucket()
            .bucket(LOCAL_BUCKET)
            .send()
            .await
            .expect("create bucket");
        stack.wait_ready().await;
        Some(stack)
    }

    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Ok(r) = self
                .http
                .get(format!("{}/readyz", self.base_url))
                .send()
                .await
                && r.status() == 200
            {
                return;
            }
            if let Some(local) = &self.local {
                let log = std::fs::read_to_string(&local.server_log).unwrap_or_default();
                assert!(
                    Instant::now() < deadline,
                    "server not ready after 120 s; its log:\n{log}"
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Drops the test database (a failed test leaves it; CI cleans those up).
    async fn finish(mut self) {
        if let Some(local) = self.local.take() {
            let (admin_url, db) = (local.pg_admin_url.clone(), local.db_name.clone());
            drop(local);
            if let Ok(mut admin) = sqlx::PgConnection::connect(&admin_url).await {
                let _ = sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
                    .execute(&mut admin)
                    .await;
            }
        }
    }

    fn cli(&self, args: &[&str]) -> Value {
        let out = Command::new(BIN)
            .args(args)
            .env("FACECOMPARE_DATABASE_URL", &self.db_url)
            .stdin(Stdio::null())
            .output()
            .expect("run facecompare CLI");
        assert!(
            out.status.success(),
            "facecompare {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "facecompare {args:?}: not JSON ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    fn org(&self) -> OrgKey {
        let name = format!("s3-{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
        let prefix = format!("orgs/{name}/");
        self.cli(&[
            "org",
            "create",
            &name,
            "--tokens",
            "100",
            "--s3-prefix",
            &prefix,
            "--rate-limit",
            "1000/min",
            "--json",
        ]);
        let key = self.cli(&["key", "create", "--org", &name, "--json"])["key"]
            .as_str()
            .unwrap()
            .to_string();
        OrgKey { name, prefix, key }
    }

    fn balance(&self, org: &OrgKey) -> i64 {
        self.cli(&["org", "show", &org.name, "--json"])["balance"]
            .as_i64()
            .unwrap()
    }

    async fn put(&self, bucket: &str, key: &str, body: Vec<u8>) {
        self.s3
            .put_object()
            .bucket(bucket)
            .key(key)
            .body(body.into())
            .send()
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "put s3://{bucket}/{key}: {}",
                    aws_sdk_s3::error::DisplayErrorContext(e)
                )
            });
    }

    async fn compare_json(&self, org: &OrgKey, source: &str, target: &str) -> (u16, Value) {
        let resp = self
            .http
            .post(format!("{}/v1/face/compare", self.base_url))
            .header("x-api-key", &org.key)
            .json(&json!({ "source": source, "target": target }))
            .send()
            .await
            .expect("request");
        let status = resp.status().as_u16();
        (status, resp.json().await.expect("JSON body"))
    }

    /// Whether the server sent the store a request starting with `line`
    /// (e.g. `GET /bucket/key`); None against a running stack.
    fn store_saw(&self, line: &str) -> Option<bool> {
        let local = self.local.as_ref()?;
        let sent = local.proxy.to_store.lock().unwrap();
        Some(sent.windows(line.len()).any(|w| w == line.as_bytes()))
    }
}

fn pg_server_url() -> String {
    let url = std::env::var("FACECOMPARE_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/".into());
    let (scheme, rest) = url
        .split_once("://")
        .expect("FACECOMPARE_TEST_PG_URL must be a postgres:// URL");
    format!(
        "{scheme}://{}",
        rest.split(['/', '?']).next().unwrap_or(rest)
    )
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn assert_compare_ok(status: u16, body: &Value, what: &str) {
    assert_eq!(status, 200, "{what}: {body}");
    for field in [
        "isMatch",
        "confidence",
        "threshold",
        "sourceFaceDetected",
        "targetFaceDetected",
    ] {
        assert!(body.get(field).is_some(), "{what}: no {field} in {body}");
    }
    assert_eq!(body["sourceFaceDetected"], true, "{what}: {body}");
    assert_eq!(body["targetFaceDetected"], true, "{what}: {body}");
}

fn assert_error(status: u16, body: &Value, want_status: u16, want_code: &str, what: &str) {
    assert_eq!(status, want_status, "{what}: {body}");
    assert_eq!(body["error"], want_code, "{what}: {body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("target"),
        "{what}: the message must name the field: {body}"
    );
    assert!(
        body["requestId"].as_str().is_some_and(|id| !id.is_empty()),
        "{what}: no requestId: {body}"
    );
}

// ------------------------------------------------------------------ tests

/// Own-prefix keys work as a bare key, as `s3://bucket/key`, and as a multipart
/// text part next to a file part; each gives exactly what the same bytes sent
/// inline give, and each success costs one token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_prefix_keys_compare_like_inline_images() {
    let Some(stack) = Stack::start().await else {
        return;
    };
    let org = stack.org();
    let (a, b) = (fixture("obama.jpg"), fixture("obama2.jpg"));
    let (key_a, key_b) = (
        format!("{}selfie.jpg", org.prefix),
        format!("{}id/photo.jpg", org.prefix),
    );
    stack.put(&stack.bucket, &key_a, a.clone()).await;
    stack.put(&stack.bucket, &key_b, b.clone()).await;

    let (status, inline) = stack.compare_json(&org, &b64(&a), &b64(&b)).await;
    assert_compare_ok(status, &inline, "inline base64");
    let before = stack.balance(&org);

    let (status, body) = stack.compare_json(&org, &key_a, &key_b).await;
    assert_compare_ok(status, &body, "bare keys in JSON");
    assert_eq!(
        body, inline,
        "S3 inputs must give what the same bytes inline give"
    );

    let uri = format!("s3://{}/{key_b}", stack.bucket);
    let (status, body) = stack.compare_json(&org, &b64(&a), &uri).await;
    assert_compare_ok(status, &body, "s3:// URI mixed with base64");
    assert_eq!(body, inline);

    let form = reqwest::multipart::Form::new()
        .part(
            "source",
            reqwest::multipart::Part::bytes(a.clone())
                .file_name("a.jpg")
                .mime_str("image/jpeg")
                .unwrap(),
        )
        .text("target", key_b.clone());
    let resp = stack
        .http
        .post(format!("{}/v1/face/compare", stack.base_url))
        .header("x-api-key", &org.key)
        .multipart(form)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.unwrap();
    assert_compare_ok(status, &body, "multipart file part + S3 key text part");
    assert_eq!(body, inline);

    assert_eq!(
        stack.balance(&org),
        before - 3,
        "three successful compares cost three tokens"
    );
    stack.finish().await;
}

/// Other buckets, other organisations' prefixes and path tricks are refused
/// with 403 `s3_forbidden` although the objects they point at exist; a
/// missing object is 403 as well. None of it costs a token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_outside_the_org_are_forbidden_and_free() {
    let Some(stack) = Stack::start().await else {
        return;
    };
    let (acme, other) = (stack.org(), stack.org());
    let face = fixture("obama.jpg");
    let own = format!("{}face.jpg", acme.prefix);
    let theirs = format!("{}face.jpg", other.prefix);
    let other_bucket = format!("{}-other", stack.bucket);
    stack.put(&stack.bucket, &own, face.clone()).await;
    stack.put(&stack.bucket, &theirs, face.clone()).await;
    stack
        .s3
        .create_bucket()
        .bucket(&other_bucket)
        .send()
        .await
        .expect("create second bucket");
    stack.put(&other_bucket, &own, face.clone()).await;

    // The other organisation can read its own object: the refusals below are policy.
    let (status, body) = stack.compare_json(&other, &theirs, &theirs).await;
    assert_compare_ok(status, &body, "other org reading its own key");

    let before = stack.balance(&acme);
    let other_name = other.name.as_str();
    let cases = [
        (format!("s3://{other_bucket}/{own}"), "another bucket"),
        (theirs.clone(), "another org's prefix"),
        (
            format!("s3://{}/{theirs}", stack.bucket),
            "another org's prefix as s3://",
        ),
        (
            format!("{}../{other_name}/face.jpg", acme.prefix),
            "`..` out of the prefix",
        ),
        (
            format!("{}%2e%2e/{other_name}/face.jpg", acme.prefix),
            "percent-encoded `..`",
        ),
        (
            format!("{}..%2f{other_name}%2fface.jpg", acme.prefix),
            "percent-encoded slash",
        ),
        (format!("/{own}"), "absolute key"),
        (format!("{}./face.jpg", acme.prefix), "`.` segment"),
        (
            format!("{}..\\{other_name}\\face.jpg", acme.prefix),
            "backslashes",
        ),
    ];
    for (reference, what) in &cases {
        let (status, body) = stack.compare_json(&acme, &own, reference).await;
        assert_error(status, &body, 403, "s3_forbidden", what);
    }
    let (status, body) = stack
        .compare_json(&acme, &own, &format!("{}missing.jpg", acme.prefix))
        .await;
    assert_error(status, &body, 403, "s3_object_not_found", "missing object");

    assert_eq!(
        stack.balance(&acme),
        before,
        "refused requests must not cost tokens"
    );
    stack.finish().await;
}

/// An object over 15 MB is refused with 400 `image_too_large` from its size
/// alone: the server asks the store for its HEAD, never GETs it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_over_the_limit_are_refused_before_download() {
    let Some(stack) = Stack::start().await else {
        return;
    };
    let org = stack.org();
    let own = format!("{}face.jpg", org.prefix);
    let huge = format!("{}huge.jpg", org.prefix);
    stack.put(&stack.bucket, &own, fixture("obama.jpg")).await;
    // A JPEG signature, then 16 MiB of padding: only its size may matter.
    let mut big = fixture("obama.jpg");
    big.resize(16 * 1024 * 1024, 0);
    stack.put(&stack.bucket, &huge, big).await;
    let before = stack.balance(&org);

    let (status, body) = stack.compare_json(&org, &own, &huge).await;
    assert_error(status, &body, 400, "image_too_large", "16 MiB object");
    assert!(
        body["message"].as_str().unwrap().contains("15 MB"),
        "{body}"
    );
    let path = format!("/{}/{huge}", stack.bucket);
    if let Some(head) = stack.store_saw(&format!("HEAD {path}")) {
        assert!(
            head,
            "the server never asked for the object's size (the recording is broken?)"
        );
        assert_eq!(
            stack.store_saw(&format!("GET {path}")),
            Some(false),
            "the big object was downloaded"
        );
    }
    assert_eq!(stack.balance(&org), before);
    stack.finish().await;
}

/// A stopped store is a quick 503 `s3_unavailable` (retryable, free), and the
/// next request after it is back succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_outage_is_a_quick_503_and_recovers() {
    let Some(mut stack) = Stack::start().await else {
        return;
    };
    if stack.local.is_none() {
        eprintln!("SKIPPED: cannot stop the S3 store of a running stack");
        return;
    }
    let org = stack.org();
    let key = format!("{}face.jpg", org.prefix);
    stack.put(&stack.bucket, &key, fixture("obama.jpg")).await;
    let (status, body) = stack.compare_json(&org, &key, &key).await;
    assert_compare_ok(status, &body, "before the outage");
    let before = stack.balance(&org);

    stack.local.as_mut().unwrap().store.stop();
    let started = Instant::now();
    let (status, body) = stack.compare_json(&org, &key, &key).await;
    let took = started.elapsed();
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"], "s3_unavailable", "{body}");
    // Not a benchmark: a hang would run into the client's 60 s timeout instead.
    assert!(took < Duration::from_secs(15), "503 took {took:?}");
    assert_eq!(stack.balance(&org), before, "a 503 must not cost a token");

    let local = stack.local.as_mut().unwrap();
    local.store = S3sFs::start(&local.s3s_bin, local.work.path()).await;
    *local.proxy.upstream.lock().unwrap() = local.store.addr;
    let (status, body) = stack.compare_json(&org, &key, &key).await;
    assert_compare_ok(status, &body, "after the store is back");
    assert_eq!(stack.balance(&org), before - 1);
    stack.finish().await;
}

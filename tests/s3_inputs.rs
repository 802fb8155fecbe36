//! S3 inputs end to end, over real HTTP against the real `facecompare serve`
//! binary (the shared harness in `common`), a real S3 server (s3s-fs) and a
//! real PostgreSQL.
//!
//! Each test starts its own stack: s3s-fs on a free port (binary from
//! `S3S_FS_BIN` or PATH; `common::s3`) behind a small TCP proxy that records the requests
//! sent to the store (so "refused without downloading" is checked, not timed),
//! and a server on a fresh PostgreSQL database with its S3 endpoint at the
//! proxy. Organisations and keys come from the `facecompare` CLI.
//!
//! With `FACECOMPARE_TEST_BASE_URL` set (docker compose), the server and S3
//! store are the running stack's: objects go to `FACECOMPARE_S3_ENDPOINT`
//! with the `AWS_*` credentials into `FACECOMPARE_S3_BUCKET`, and the checks
//! that need to stop the store or see its requests are skipped.
//!
//! Outside CI a missing s3s-fs skips these tests with a message; with `CI` set
//! it fails them.
mod common;

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use common::{
    Backend, OwnedServer, Server, ServerOptions, TestOrg, file, fixture,
    s3::{S3sFs, s3s_fs_or_skip},
    text, unique_name,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

const ACCESS_KEY: &str = "facecompare-test";
const SECRET_KEY: &str = "facecompare-test-secret";
const LOCAL_BUCKET: &str = "faces";

// ---------------------------------------------------------------- harness

/// A TCP proxy in front of the S3 store: the server's endpoint stays put while
/// the store behind it is stopped and restarted, what the server sends to the
/// store (request lines and headers: S3 reads have no bodies) is recorded,
/// and it can hold requests back to play a store that accepts but never answers.
struct Proxy {
    addr: SocketAddr,
    upstream: Arc<Mutex<SocketAddr>>,
    to_store: Arc<Mutex<Vec<u8>>>,
    stalled: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

/// The server-to-store direction: recorded, and held while `stalled`.
#[derive(Clone)]
struct Tap {
    log: Arc<Mutex<Vec<u8>>>,
    stalled: Arc<AtomicBool>,
}

impl Proxy {
    async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let upstream = Arc::new(Mutex::new(upstream));
        let to_store = Arc::new(Mutex::new(Vec::new()));
        let stalled = Arc::new(AtomicBool::new(false));
        let up = upstream.clone();
        let tap = Tap {
            log: to_store.clone(),
            stalled: stalled.clone(),
        };
        let task = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let target = *up.lock().unwrap();
                let tap = tap.clone();
                tokio::spawn(async move {
                    // Store down: dropping `inbound` closes the connection at once.
                    let Ok(outbound) = TcpStream::connect(target).await else {
                        return;
                    };
                    let (ri, wi) = inbound.into_split();
                    let (ro, wo) = outbound.into_split();
                    tokio::join!(pipe(ri, wo, Some(tap)), pipe(ro, wi, None));
                });
            }
        });
        Self {
            addr,
            upstream,
            to_store,
            stalled,
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
    tap: Option<Tap>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    while let Ok(n @ 1..) = from.read(&mut buf).await {
        if let Some(tap) = &tap {
            while tap.stalled.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            tap.log.lock().unwrap().extend_from_slice(&buf[..n]);
        }
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

/// The S3 side of a self-started stack (absent against a running compose stack).
struct LocalS3 {
    s3s_bin: PathBuf,
    /// The store's data and its log.
    work: tempfile::TempDir,
    store: S3sFs,
    proxy: Proxy,
}

struct Stack {
    server: Server,
    /// Keeps a self-started server alive (killed on drop).
    _owned: Option<OwnedServer>,
    bucket: String,
    /// Straight to the store (not through the proxy): the tests' own uploads.
    s3: aws_sdk_s3::Client,
    local: Option<LocalS3>,
}

/// A test organisation with its own S3 prefix.
struct S3Org {
    org: TestOrg,
    prefix: String,
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
        if common::external_base().is_some() {
            let var = |n: &str| {
                std::env::var(n)
                    .unwrap_or_else(|_| panic!("{n} must be set with FACECOMPARE_TEST_BASE_URL"))
            };
            let endpoint = var("FACECOMPARE_S3_ENDPOINT");
            return Some(Self {
                server: common::server(Backend::Postgres).clone(),
                _owned: None,
                bucket: var("FACECOMPARE_S3_BUCKET"),
                s3: s3_client(
                    &endpoint,
                    &var("AWS_ACCESS_KEY_ID"),
                    &var("AWS_SECRET_ACCESS_KEY"),
                ),
                local: None,
            });
        }
        let s3s_bin = s3s_fs_or_skip()?;
        let work = tempfile::tempdir().unwrap();
        let store = S3sFs::start(&s3s_bin, work.path(), ACCESS_KEY, SECRET_KEY).await;
        let proxy = Proxy::start(store.addr).await;
        let s3 = s3_client(&format!("http://{}", store.addr), ACCESS_KEY, SECRET_KEY);
        s3.create_bucket()
            .bucket(LOCAL_BUCKET)
            .send()
            .await
            .expect("create bucket");

        let db = common::fresh_database(Backend::Postgres, "s3");
        let opts = ServerOptions::new(&db)
            .env("FACECOMPARE_S3_BUCKET", LOCAL_BUCKET)
            .env("FACECOMPARE_S3_ENDPOINT", &format!("http://{}", proxy.addr))
            .env("FACECOMPARE_S3_CONNECT_TIMEOUT_MS", "1000")
            .env("FACECOMPARE_S3_READ_TIMEOUT_MS", "3000")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
            .env("AWS_EC2_METADATA_DISABLED", "true");
        let owned = common::spawn_server(opts);
        Some(Self {
            server: owned.server.clone(),
            _owned: Some(owned),
            bucket: LOCAL_BUCKET.into(),
            s3,
            local: Some(LocalS3 {
                s3s_bin,
                work,
                store,
                proxy,
            }),
        })
    }

    async fn org(&self) -> S3Org {
        let prefix = format!("orgs/{}/", unique_name("s3"));
        let org = self
            .server
            .org_with(100, &["--rate-limit", "1000/min", "--s3-prefix", &prefix])
            .await;
        S3Org { org, prefix }
    }

    async fn balance(&self, org: &S3Org) -> i64 {
        self.server.balance(&org.org).await
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

    /// JSON compare with two strings (S3 references or base64).
    async fn compare(&self, org: &S3Org, source: &str, target: &str) -> common::Resp {
        self.server
            .compare_json(&org.org.key, &text(source), &text(target))
            .await
    }

    /// Whether the server sent the store a request starting with `line`
    /// (e.g. `GET /bucket/key`); None against a running stack.
    fn store_saw(&self, line: &str) -> Option<bool> {
        let local = self.local.as_ref()?;
        let sent = local.proxy.to_store.lock().unwrap();
        Some(sent.windows(line.len()).any(|w| w == line.as_bytes()))
    }
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
    let org = stack.org().await;
    let key = &org.org.key;
    let (a, b) = (fixture("obama.jpg"), fixture("obama2.jpg"));
    let (key_a, key_b) = (
        format!("{}selfie.jpg", org.prefix),
        format!("{}id/photo.jpg", org.prefix),
    );
    stack.put(&stack.bucket, &key_a, a.clone()).await;
    stack.put(&stack.bucket, &key_b, b.clone()).await;

    let inline = stack
        .server
        .compare_json(key, &file(&a), &file(&b))
        .await
        .assert_compare_ok();
    assert_eq!(inline["sourceFaceDetected"], true, "{inline}");
    assert_eq!(inline["targetFaceDetected"], true, "{inline}");
    let before = stack.balance(&org).await;

    let body = stack
        .compare(&org, &key_a, &key_b)
        .await
        .assert_compare_ok();
    assert_eq!(
        body, inline,
        "bare keys must give what the same bytes inline give"
    );

    let uri = format!("s3://{}/{key_b}", stack.bucket);
    let body = stack
        .server
        .compare_json(key, &file(&a), &text(&uri))
        .await
        .assert_compare_ok();
    assert_eq!(body, inline, "s3:// URI next to base64");

    let body = stack
        .server
        .compare_multipart(key, &file(&a), &text(&key_b))
        .await
        .assert_compare_ok();
    assert_eq!(
        body, inline,
        "multipart file part next to an S3 key text part"
    );

    assert_eq!(
        stack.balance(&org).await,
        before - 3,
        "three successful compares cost three tokens"
    );
}

/// Other buckets, other organisations' prefixes and path tricks are refused
/// with 403 `s3_forbidden` although the objects they point at exist; a
/// missing object is 403 as well. None of it costs a token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_outside_the_org_are_forbidden_and_free() {
    let Some(stack) = Stack::start().await else {
        return;
    };
    let (acme, other) = (stack.org().await, stack.org().await);
    let face = fixture("obama.jpg");
    let own = format!("{}face.jpg", acme.prefix);
    let theirs = format!("{}face.jpg", other.prefix);
    // Unique per run and removed at the end: a rerun against the same store
    // (the compose `tests` service) must not find it taken.
    let other_bucket = format!("{}-{}", stack.bucket, unique_name("other"));
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
    stack
        .compare(&other, &theirs, &theirs)
        .await
        .assert_compare_ok();

    let before = stack.balance(&acme).await;
    // `theirs` relative to acme's prefix: orgs/<acme>/../<other>/face.jpg names it on a file store.
    let escape = theirs.strip_prefix("orgs/").unwrap();
    let cases = [
        (format!("s3://{other_bucket}/{own}"), "another bucket"),
        (theirs.clone(), "another org's prefix"),
        (
            format!("s3://{}/{theirs}", stack.bucket),
            "another org's prefix as s3://",
        ),
        (
            format!("{}../{escape}", acme.prefix),
            "`..` out of the prefix",
        ),
        (
            format!("{}%2e%2e/{escape}", acme.prefix),
            "percent-encoded `..`",
        ),
        (
            format!("{}..%2f{}", acme.prefix, escape.replace('/', "%2f")),
            "percent-encoded slashes",
        ),
        (format!("/{own}"), "absolute key"),
        (format!("{}./face.jpg", acme.prefix), "`.` segment"),
        (
            format!("{}..\\{}", acme.prefix, escape.replace('/', "\\")),
            "backslashes",
        ),
    ];
    for (reference, what) in &cases {
        let r = stack.compare(&acme, &own, reference).await;
        assert_eq!(r.status, 403, "{what} ({reference}): {}", r.text);
        r.assert_error(403, "s3_forbidden", Some("target"));
    }
    let missing = format!("{}missing.jpg", acme.prefix);
    stack.compare(&acme, &own, &missing).await.assert_error(
        403,
        "s3_object_not_found",
        Some("target"),
    );

    assert_eq!(
        stack.balance(&acme).await,
        before,
        "refused requests must not cost tokens"
    );
    stack
        .s3
        .delete_object()
        .bucket(&other_bucket)
        .key(&own)
        .send()
        .await
        .expect("delete the object in the second bucket");
    stack
        .s3
        .delete_bucket()
        .bucket(&other_bucket)
        .send()
        .await
        .expect("delete the second bucket");
}

/// An object over 15 MB is refused with 400 `image_too_large` from its size
/// alone: the server asks the store for its HEAD, never GETs it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_over_the_limit_are_refused_before_download() {
    let Some(stack) = Stack::start().await else {
        return;
    };
    let org = stack.org().await;
    let own = format!("{}face.jpg", org.prefix);
    let huge = format!("{}huge.jpg", org.prefix);
    stack.put(&stack.bucket, &own, fixture("obama.jpg")).await;
    // A JPEG, then padding to 16 MiB: only its size may matter.
    let mut big = fixture("obama.jpg");
    big.resize(16 * 1024 * 1024, 0);
    stack.put(&stack.bucket, &huge, big).await;
    let before = stack.balance(&org).await;

    let v =
        stack
            .compare(&org, &own, &huge)
            .await
            .assert_error(400, "image_too_large", Some("target"));
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("the limit is 15 MB"),
        "{v}"
    );
    let path = format!("/{}/{huge}", stack.bucket);
    if let Some(head) = stack.store_saw(&format!("HEAD {path}")) {
        assert!(
            head,
            "the server never asked for the object's size (or the recording is broken)"
        );
        assert_eq!(
            stack.store_saw(&format!("GET {path}")),
            Some(false),
            "the big object was downloaded"
        );
    }
    assert_eq!(stack.balance(&org).await, before);
}

/// A stopped store is a quick 503 `s3_unavailable` (retryable, free), the
/// next request after it is back succeeds, and a store that stops answering is
/// a 503 after the configured timeouts, never a hang.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_outage_is_a_quick_503_and_recovers() {
    let Some(mut stack) = Stack::start().await else {
        return;
    };
    if stack.local.is_none() {
        eprintln!("SKIPPED: cannot stop the S3 store of a running stack");
        return;
    }
    let org = stack.org().await;
    let key = format!("{}face.jpg", org.prefix);
    stack.put(&stack.bucket, &key, fixture("obama.jpg")).await;
    stack.compare(&org, &key, &key).await.assert_compare_ok();
    let before = stack.balance(&org).await;

    stack.local.as_mut().unwrap().store.stop();
    let started = Instant::now();
    let r = stack.compare(&org, &key, &key).await;
    let took = started.elapsed();
    r.assert_error(503, "s3_unavailable", Some("source"));
    // Not a benchmark: a hang would run into the client's timeout instead.
    eprintln!("stopped store: 503 after {took:?}");
    assert!(took < Duration::from_secs(15), "503 took {took:?}");
    assert_eq!(
        stack.balance(&org).await,
        before,
        "a 503 must not cost a token"
    );

    let local = stack.local.as_mut().unwrap();
    local.store = S3sFs::start(&local.s3s_bin, local.work.path(), ACCESS_KEY, SECRET_KEY).await;
    *local.proxy.upstream.lock().unwrap() = local.store.addr;
    stack.compare(&org, &key, &key).await.assert_compare_ok();
    assert_eq!(stack.balance(&org).await, before - 1);

    // A store that takes the connection but never answers: the read timeout
    // (3 s in this stack, two attempts) ends it, not the client's patience.
    let stalled = stack.local.as_ref().unwrap().proxy.stalled.clone();
    stalled.store(true, Ordering::Relaxed);
    let started = Instant::now();
    let r = stack.compare(&org, &key, &key).await;
    let took = started.elapsed();
    stalled.store(false, Ordering::Relaxed);
    r.assert_error(503, "s3_unavailable", Some("source"));
    eprintln!("silent store: 503 after {took:?}");
    assert!(
        took < Duration::from_secs(30),
        "a silent store held the request for {took:?}"
    );
    assert_eq!(
        stack.balance(&org).await,
        before - 1,
        "a 503 must not cost a token"
    );
    stack.compare(&org, &key, &key).await.assert_compare_ok();
}

//! The S3 server of the tests: s3s-fs (a real S3 API over a folder), found
//! through `S3S_FS_BIN` or `PATH`, started on a free port.
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command},
    time::{Duration, Instant},
};

use tokio::net::TcpStream;

/// The s3s-fs binary; without one, prints `SKIPPED: ...` and returns None
/// (or fails when `CI` is set).
pub fn s3s_fs_or_skip() -> Option<PathBuf> {
    let found = match std::env::var_os("S3S_FS_BIN") {
        Some(p) => Some(PathBuf::from(p)),
        None => std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
            .map(|dir| dir.join("s3s-fs"))
            .find(|p| p.is_file()),
    };
    if found.is_none() {
        let what = "s3s-fs not found (set S3S_FS_BIN or put it on PATH: \
                    cargo install s3s-fs --version 0.14.1 --features binary --locked)";
        assert!(
            std::env::var_os("CI").is_none(),
            "{what}; CI is set, so this fails instead of skipping"
        );
        eprintln!("SKIPPED: {what}");
    }
    found
}

/// s3s-fs serving `work/data` (a bucket is a folder under it), logging to
/// `work/s3s-fs.log`; stopped when dropped.
pub struct S3sFs {
    child: Child,
    pub addr: SocketAddr,
    /// The served folder: `root/BUCKET/KEY` is object KEY of BUCKET.
    pub root: PathBuf,
}

impl S3sFs {
    pub async fn start(bin: &Path, work: &Path, access_key: &str, secret_key: &str) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let root = work.join("data");
        std::fs::create_dir_all(&root).unwrap();
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(work.join("s3s-fs.log"))
            .unwrap();
        let child = Command::new(bin)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", access_key, "--secret-key", secret_key])
            .arg(&root)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut s = Self { child, addr, root };
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

    /// `http://ADDR`, for `FACECOMPARE_S3_ENDPOINT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Writes an object straight into the served folder (no S3 request).
    pub fn put_file(&self, bucket: &str, key: &str, bytes: &[u8]) {
        let path = self.root.join(bucket).join(key);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for S3sFs {
    fn drop(&mut self) {
        self.stop();
    }
}

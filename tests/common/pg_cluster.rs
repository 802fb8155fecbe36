//! A throwaway PostgreSQL cluster that a test starts, stops and starts again
//! (initdb + pg_ctl into a temporary folder on a free port), for outage tests
//! that must not touch the machine's PostgreSQL.
//!
//! PostgreSQL refuses to run as root (CI runs as root), so the tools run as
//! the `postgres` user through `runuser` then, in a folder that user owns.
use std::{
    path::PathBuf,
    process::{Command, Output},
};

/// `FACECOMPARE_TEST_PG_BIN` or Debian's PostgreSQL 15.
fn bin_dir() -> PathBuf {
    std::env::var_os("FACECOMPARE_TEST_PG_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/lib/postgresql/15/bin"))
}

pub struct PgCluster {
    dir: PathBuf,
    pub port: u16,
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Runs a PostgreSQL tool (as `postgres` when we are root).
fn run(tool: &str, args: &[&str]) -> Output {
    let path = bin_dir().join(tool);
    let mut cmd = if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(&path);
        c
    } else {
        Command::new(&path)
    };
    cmd.args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", path.display()))
}

fn check(what: &str, out: Output) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl PgCluster {
    /// A new cluster, started; None (with a message) when the PostgreSQL
    /// binaries are absent outside CI. Under `CI` their absence fails.
    pub fn start() -> Option<Self> {
        if !bin_dir().join("pg_ctl").is_file() {
            let what = format!(
                "PostgreSQL binaries not found in {} (set FACECOMPARE_TEST_PG_BIN)",
                bin_dir().display()
            );
            assert!(
                std::env::var_os("CI").is_none(),
                "{what}; CI is set, so this fails instead of skipping"
            );
            eprintln!("SKIPPED: {what}");
            return None;
        }
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("fc-pg-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        // Made by the user that runs the cluster, so it owns the folder.
        check(
            "mkdir",
            if is_root() {
                Command::new("runuser")
                    .args(["-u", "postgres", "--", "mkdir", "-p"])
                    .arg(&dir)
                    .output()
                    .unwrap()
            } else {
                Command::new("mkdir").arg("-p").arg(&dir).output().unwrap()
            },
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let cluster = Self { dir, port };
        let data = cluster.data();
        check(
            "initdb",
            run(
                "initdb",
                &["-D", &data, "-A", "trust", "-U", "postgres", "--no-sync"],
            ),
        );
        cluster.pg_start();
        Some(cluster)
    }

    fn data(&self) -> String {
        self.dir.join("data").display().to_string()
    }

    /// The server's `postgres` database.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts the (stopped) cluster and waits until it accepts connections.
    pub fn pg_start(&self) {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.display()
        );
        let log = self.dir.join("postgres.log").display().to_string();
        check(
            "pg_ctl start",
            run(
                "pg_ctl",
                &["-D", &self.data(), "-o", &opts, "-l", &log, "-w", "start"],
            ),
        );
    }

    /// Stops the cluster the way an operator or a failover does: open
    /// sessions are terminated (57P01), new connections refused.
    pub fn pg_stop(&self) {
        check(
            "pg_ctl stop",
            run("pg_ctl", &["-D", &self.data(), "-m", "fast", "-w", "stop"]),
        );
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let _ = run(
            "pg_ctl",
            &["-D", &self.data(), "-m", "immediate", "-w", "stop"],
        );
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

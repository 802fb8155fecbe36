//! Configuration from the environment. Every variable has a default
//! so that `facecompare serve` runs with no configuration at all.
use std::{net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::{Context, bail};

/// Whether `t` is a usable match threshold: 0 to 100 inclusive (not NaN).
/// The one rule for the server default, organisations, the CLI and the
/// Rekognition protocol's `SimilarityThreshold`; each names its own source
/// in its message ("... must be between 0 and 100").
pub fn valid_threshold(t: f64) -> bool {
    (0.0..=100.0).contains(&t)
}

/// A per-organisation request budget: `per_window` requests per `window`,
/// admitted as a burst of `per_window` and refilled at that rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub per_window: u32,
    pub window: Duration,
}

impl RateLimit {
    /// Parses `N/s`, `N/min` or `N/h` (also `N/sec`, `N/m`, `N/hour`).
    pub fn parse(s: &str) -> anyhow::Result<Self> {
        let (n, unit) = s
            .trim()
            .split_once('/')
            .with_context(|| format!("rate limit {s:?}: expected N/s, N/min or N/h"))?;
        let per_window: u32 = n
            .trim()
            .parse()
            .with_context(|| format!("rate limit {s:?}: {n:?} is not a whole number"))?;
        if per_window == 0 {
            bail!("rate limit {s:?}: N must be at least 1");
        }
        let window = match unit.trim() {
            "s" | "sec" | "second" => Duration::from_secs(1),
            "m" | "min" | "minute" => Duration::from_secs(60),
            "h" | "hour" => Duration::from_secs(3600),
            other => bail!("rate limit {s:?}: unknown unit {other:?} (use s, min or h)"),
        };
        Ok(Self { per_window, window })
    }

    /// The canonical text form, e.g. `60/min`.
    pub fn to_text(&self) -> String {
        let unit = match self.window.as_secs() {
            1 => "s",
            60 => "min",
            3600 => "h",
            _ => return format!("{}/{}s", self.per_window, self.window.as_secs()),
        };
        format!("{}/{unit}", self.per_window)
    }
}

/// Where the server signing key of AWS access-key secrets comes from
/// (`accounts::SigningKeys` loads it).
#[derive(Debug, Clone)]
pub struct SigningKeySource {
    /// The key itself (`FACECOMPARE_AWS_SIGNING_KEY`); wins over the file.
    pub key: Option<String>,
    /// `FACECOMPARE_AWS_SIGNING_KEY_FILE` (default `data/aws-signing.key`).
    pub file: PathBuf,
    /// `FACECOMPARE_AWS_SIGNING_KEY_PREVIOUS`, during a rotation.
    pub previous: Option<String>,
}

#[derive(Debug, Clone)]
pub struct S3Config {
    pub bucket: String,
    /// Custom endpoint (MinIO, s3s); path-style addressing is used then.
    pub endpoint: Option<String>,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub database_url: String,
    /// True when no database URL was given: `serve` then bootstraps a `default` org.
    pub embedded_default: bool,
    pub threshold: f64,
    pub token_cost: i64,
    pub rate_limit: RateLimit,
    pub s3: Option<S3Config>,
    pub models_dir: PathBuf,
    pub pack: String,
    /// `FACECOMPARE_PACK_LICENCE_ACK`: the packs whose licence the operator
    /// accepted (a pack marked `commercial: no|unknown` loads only then).
    pub pack_licence_ack: Option<String>,
    /// Inference workers (one ONNX Runtime session set each).
    pub workers: usize,
    /// Intra-op threads per ONNX Runtime session.
    pub intra_threads: usize,
    /// Images that may wait for a worker before 503 (a compare queues two).
    pub queue_capacity: usize,
    /// Percent of `queue_capacity` one organisation may hold (docs/operations.md, "Fairness").
    pub queue_org_share_percent: u32,
    /// Bytes all decodes may hold at once (never below one largest decode).
    pub decode_budget_bytes: u64,
    /// Starting balance of the `default` org that the embedded default creates.
    pub default_org_tokens: i64,
    pub request_timeout: Duration,
    pub log_json: bool,
    /// Connections (docs/operations.md, "Connections"). None: sized to the descriptor limit.
    pub max_connections: Option<usize>,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    /// When set, `/metrics` is served only on this address, not on `listen`.
    pub metrics_listen: Option<SocketAddr>,
    /// When set, `/metrics` answers only `Authorization: Bearer <token>`.
    pub metrics_token: Option<String>,
    /// Request-body bytes all compares may hold at once (see `http::body_budget`).
    pub body_budget_bytes: u64,
    /// Serve the try page (`GET /try`, `GET /`); `FACECOMPARE_TRY_PAGE=off` turns it off.
    pub try_page: bool,
    /// The server key AWS access-key secrets derive from (`accounts::aws_keys`).
    pub aws_signing: SigningKeySource,
}

/// One environment variable the server reads.
pub struct Variable {
    pub name: &'static str,
    pub default: &'static str,
    pub meaning: &'static str,
}

/// Every variable [`Config::from_env`] and the process read, for
/// `facecompare serve --help`. Tests check this list against the names
/// `from_env` reads and against the table of `docs/configuration.md`.
pub const VARIABLES: &[Variable] = &[
    v(
        "FACECOMPARE_LISTEN",
        "127.0.0.1:8080",
        "address:port to serve on (:0 picks a free port, printed on stdout)",
    ),
    v(
        "FACECOMPARE_DATABASE_URL",
        "unset: embedded default, sqlite://data/facecompare.db",
        "sqlite://... or postgres://...",
    ),
    v(
        "FACECOMPARE_THRESHOLD",
        "80",
        "default match threshold, 0-100",
    ),
    v(
        "FACECOMPARE_TOKEN_COST",
        "1",
        "tokens per successful compare",
    ),
    v(
        "FACECOMPARE_RATE_LIMIT",
        "60/min",
        "default per-organisation limit: N/s, N/min or N/h",
    ),
    v(
        "FACECOMPARE_DEFAULT_ORG_TOKENS",
        "1000",
        "starting balance of the embedded default's `default` org",
    ),
    v(
        "FACECOMPARE_S3_BUCKET",
        "unset: S3 keys get 400 s3_not_configured",
        "the bucket S3 keys refer to",
    ),
    v(
        "FACECOMPARE_S3_ENDPOINT",
        "AWS",
        "custom S3 endpoint (MinIO, s3s, ...); path-style addressing then",
    ),
    v(
        "FACECOMPARE_S3_CONNECT_TIMEOUT_MS",
        "2000",
        "S3 connect timeout",
    ),
    v(
        "FACECOMPARE_S3_READ_TIMEOUT_MS",
        "10000",
        "S3 per-read timeout",
    ),
    v("FACECOMPARE_MODELS_DIR", "models", "model pack directory"),
    v(
        "FACECOMPARE_PACK",
        "mobilefacenet",
        "model pack (mobilefacenet, dlib, or one made with `pack import`)",
    ),
    v(
        "FACECOMPARE_PACK_LICENCE_ACK",
        "unset",
        "pack name(s), comma-separated, whose recorded licence the operator accepts: a pack not cleared for commercial use loads only when named here",
    ),
    v(
        "FACECOMPARE_WORKERS",
        "number of cores",
        "inference worker threads",
    ),
    v(
        "FACECOMPARE_INTRA_THREADS",
        "1",
        "ONNX Runtime threads per worker",
    ),
    v(
        "FACECOMPARE_QUEUE_CAPACITY",
        "64",
        "images that may wait for a worker before 503 overloaded",
    ),
    v(
        "FACECOMPARE_QUEUE_ORG_SHARE_PERCENT",
        "50",
        "percent of the queue one organisation may hold before its own 503 overloaded",
    ),
    v(
        "FACECOMPARE_DECODE_BUDGET_MB",
        "192",
        "image-decode megabytes all workers may hold at once (at least 192)",
    ),
    v(
        "FACECOMPARE_BODY_BUDGET_MB",
        "128",
        "request-body megabytes all compares may hold at once",
    ),
    v(
        "FACECOMPARE_REQUEST_TIMEOUT_S",
        "30",
        "limit for reading, fetching and comparing one request",
    ),
    v(
        "FACECOMPARE_MAX_CONNECTIONS",
        "descriptor limit less a reserve",
        "connections held at once",
    ),
    v(
        "FACECOMPARE_HEADER_TIMEOUT_MS",
        "10000",
        "time to send a request head",
    ),
    v(
        "FACECOMPARE_IDLE_TIMEOUT_MS",
        "75000",
        "idle keep-alive connections are closed after this",
    ),
    v(
        "FACECOMPARE_METRICS_TOKEN",
        "unset: no token",
        "/metrics requires Authorization: Bearer <token> (16+ characters)",
    ),
    v(
        "FACECOMPARE_METRICS_LISTEN",
        "unset: on the main port",
        "serve /metrics only on this address:port",
    ),
    v(
        "FACECOMPARE_TRY_PAGE",
        "on",
        "off removes the try page (/try) and the landing page (GET /)",
    ),
    v(
        "FACECOMPARE_AWS_SIGNING_KEY",
        "unset: the key file",
        "server key AWS secret access keys derive from (32+ characters)",
    ),
    v(
        "FACECOMPARE_AWS_SIGNING_KEY_FILE",
        "data/aws-signing.key",
        "file holding that key; the first `key create --aws` generates it",
    ),
    v(
        "FACECOMPARE_AWS_SIGNING_KEY_PREVIOUS",
        "unset",
        "the previous signing key during a rotation",
    ),
    v("FACECOMPARE_LOG_FORMAT", "text", "json for JSON log lines"),
    v("RUST_LOG", "info", "log filter"),
    v(
        "ORT_DYLIB_PATH",
        "./.ort/ or lib/ beside the binary",
        "ONNX Runtime shared library",
    ),
];

const fn v(name: &'static str, default: &'static str, meaning: &'static str) -> Variable {
    Variable {
        name,
        default,
        meaning,
    }
}

/// [`VARIABLES`] as `serve --help` prints them.
pub fn variables_help() -> String {
    let mut out = String::from("Environment (every variable has a default):\n");
    for v in VARIABLES {
        out.push_str(&format!(
            "  {}\n      {} [default: {}]\n",
            v.name, v.meaning, v.default
        ));
    }
    out
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn parse_var<T: std::str::FromStr>(name: &str, default: T) -> anyhow::Result<T>
where
    T::Err: std::fmt::Display,
{
    match var(name) {
        None => Ok(default),
        Some(v) => v
            .trim()
            .parse()
            .map_err(|e| anyhow::anyhow!("{name}={v:?}: {e}")),
    }
}

/// An on/off setting: `on`/`off`, `true`/`false`, `1`/`0`, `yes`/`no`.
fn switch(name: &str, default: bool) -> anyhow::Result<bool> {
    match var(name).map(|v| v.trim().to_ascii_lowercase()).as_deref() {
        None => Ok(default),
        Some("on" | "true" | "1" | "yes") => Ok(true),
        Some("off" | "false" | "0" | "no") => Ok(false),
        Some(v) => bail!("{name}={v:?}: use on or off"),
    }
}

impl Config {
    pub fn from_env() -> anyhow::Result<Self> {
        let listen = parse_var(
            "FACECOMPARE_LISTEN",
            SocketAddr::from(([127, 0, 0, 1], 8080)),
        )?;
        let (database_url, embedded_default) = match var("FACECOMPARE_DATABASE_URL") {
            Some(url) => (url, false),
            None => ("sqlite://data/facecompare.db?mode=rwc".to_string(), true),
        };
        let threshold: f64 = parse_var("FACECOMPARE_THRESHOLD", 80.0)?;
        if !valid_threshold(threshold) {
            bail!("FACECOMPARE_THRESHOLD={threshold}: must be between 0 and 100");
        }
        let token_cost: i64 = parse_var("FACECOMPARE_TOKEN_COST", 1)?;
        if token_cost < 0 {
            bail!("FACECOMPARE_TOKEN_COST={token_cost}: must not be negative");
        }
        let rate_limit = match var("FACECOMPARE_RATE_LIMIT") {
            Some(v) => RateLimit::parse(&v).context("FACECOMPARE_RATE_LIMIT")?,
            None => RateLimit {
                per_window: 60,
                window: Duration::from_secs(60),
            },
        };
        // A bad timeout is an error like any other variable, not a silent default.
        let connect_ms: u64 = parse_var("FACECOMPARE_S3_CONNECT_TIMEOUT_MS", 2000)?;
        let read_ms: u64 = parse_var("FACECOMPARE_S3_READ_TIMEOUT_MS", 10000)?;
        let s3 = var("FACECOMPARE_S3_BUCKET").map(|bucket| S3Config {
            bucket,
            endpoint: var("FACECOMPARE_S3_ENDPOINT"),
            connect_timeout: Duration::from_millis(connect_ms),
            read_timeout: Duration::from_millis(read_ms),
        });
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let workers: usize = parse_var("FACECOMPARE_WORKERS", cores)?;
        Ok(Self {
            listen,
            database_url,
            embedded_default,
            threshold,
            token_cost,
            rate_limit,
            s3,
            models_dir: PathBuf::from(
                var("FACECOMPARE_MODELS_DIR").unwrap_or_else(|| "models".into()),
            ),
            pack: var("FACECOMPARE_PACK").unwrap_or_else(|| "mobilefacenet".into()),
            pack_licence_ack: var("FACECOMPARE_PACK_LICENCE_ACK"),
            workers: workers.max(1),
            intra_threads: parse_var("FACECOMPARE_INTRA_THREADS", 1usize)?.max(1),
            queue_capacity: parse_var("FACECOMPARE_QUEUE_CAPACITY", 64usize)?.max(1),
            queue_org_share_percent: match parse_var("FACECOMPARE_QUEUE_ORG_SHARE_PERCENT", 50u32)?
            {
                p @ 1..=100 => p,
                p => bail!("FACECOMPARE_QUEUE_ORG_SHARE_PERCENT: {p} is not 1 to 100"),
            },
            // Floored at one largest decode by `DecodeBudget::new` (faces sits above config).
            decode_budget_bytes: parse_var("FACECOMPARE_DECODE_BUDGET_MB", 192u64)?
                .saturating_mul(1 << 20),
            default_org_tokens: parse_var("FACECOMPARE_DEFAULT_ORG_TOKENS", 1000i64)?,
            request_timeout: Duration::from_secs(parse_var(
                "FACECOMPARE_REQUEST_TIMEOUT_S",
                30u64,
            )?),
            log_json: matches!(var("FACECOMPARE_LOG_FORMAT").as_deref(), Some("json")),
            max_connections: match var("FACECOMPARE_MAX_CONNECTIONS") {
                None => None,
                Some(_) => Some(parse_var("FACECOMPARE_MAX_CONNECTIONS", 0usize)?.max(1)),
            },
            header_timeout: Duration::from_millis(
                parse_var("FACECOMPARE_HEADER_TIMEOUT_MS", 10_000u64)?.max(1),
            ),
            idle_timeout: Duration::from_millis(
                parse_var("FACECOMPARE_IDLE_TIMEOUT_MS", 75_000u64)?.max(1),
            ),
            body_budget_bytes: parse_var("FACECOMPARE_BODY_BUDGET_MB", 128u64)? << 20,
            aws_signing: SigningKeySource {
                key: var("FACECOMPARE_AWS_SIGNING_KEY"),
                file: PathBuf::from(
                    var("FACECOMPARE_AWS_SIGNING_KEY_FILE")
                        .unwrap_or_else(|| "data/aws-signing.key".into()),
                ),
                previous: var("FACECOMPARE_AWS_SIGNING_KEY_PREVIOUS"),
            },
            metrics_token: match var("FACECOMPARE_METRICS_TOKEN") {
                Some(t) if t.trim().len() < 16 => {
                    bail!("FACECOMPARE_METRICS_TOKEN: use at least 16 characters")
                }
                t => t.map(|t| t.trim().to_string()),
            },
            try_page: switch("FACECOMPARE_TRY_PAGE", true)?,
            metrics_listen: match var("FACECOMPARE_METRICS_LISTEN") {
                None => None,
                Some(_) => Some(parse_var(
                    "FACECOMPARE_METRICS_LISTEN",
                    SocketAddr::from(([127, 0, 0, 1], 0)),
                )?),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_are_0_to_100() {
        for ok in [0.0, 80.0, 100.0] {
            assert!(valid_threshold(ok), "{ok}");
        }
        for bad in [-0.01, 100.01, f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            assert!(!valid_threshold(bad), "{bad}");
        }
    }

    #[test]
    fn parses_switches() {
        // Process-wide environment: a variable no other test reads.
        let name = "FACECOMPARE_TEST_SWITCH_ONLY_HERE";
        assert!(switch(name, true).unwrap());
        for (v, want) in [
            ("off", false),
            (" OFF ", false),
            ("0", false),
            ("on", true),
            ("yes", true),
        ] {
            // SAFETY: only this test touches this variable.
            unsafe { std::env::set_var(name, v) };
            assert_eq!(switch(name, true).unwrap(), want, "{v}");
        }
        unsafe { std::env::set_var(name, "maybe") };
        assert!(switch(name, true).is_err());
        unsafe { std::env::remove_var(name) };
    }

    /// Names in backticks in the first cell of each row of a Markdown table.
    fn table_names(page: &str) -> std::collections::BTreeSet<String> {
        page.lines()
            .filter(|l| l.starts_with("| `"))
            .flat_map(|l| {
                let cell = l.split('|').nth(1).unwrap_or("");
                cell.split('`')
                    .skip(1)
                    .step_by(2)
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    #[test]
    fn variables_list_what_from_env_reads_and_the_docs_table() {
        let listed: std::collections::BTreeSet<String> =
            VARIABLES.iter().map(|v| v.name.to_string()).collect();
        assert_eq!(listed.len(), VARIABLES.len(), "a variable is listed twice");

        // The FACECOMPARE_ names that `from_env` reads.
        let source = include_str!("config.rs");
        let body = source
            .split("pub fn from_env()")
            .nth(1)
            .and_then(|s| s.split("#[cfg(test)]").next())
            .expect("from_env in config.rs");
        let read: std::collections::BTreeSet<String> = body
            .split('"')
            .skip(1)
            .step_by(2)
            .filter(|s| {
                s.starts_with("FACECOMPARE_")
                    && s.bytes()
                        .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
            })
            .map(str::to_string)
            .collect();
        let listed_facecompare: std::collections::BTreeSet<String> = listed
            .iter()
            .filter(|n| n.starts_with("FACECOMPARE_"))
            .cloned()
            .collect();
        assert_eq!(
            read, listed_facecompare,
            "config::VARIABLES vs Config::from_env"
        );

        let documented = table_names(include_str!("../docs/configuration.md"));
        assert_eq!(
            documented, listed,
            "docs/configuration.md vs config::VARIABLES"
        );
        assert!(variables_help().contains("FACECOMPARE_TRY_PAGE"));
    }

    #[test]
    fn parses_rate_limits() {
        assert_eq!(
            RateLimit::parse("10/s").unwrap().window,
            Duration::from_secs(1)
        );
        let r = RateLimit::parse(" 120 / min ").unwrap();
        assert_eq!((r.per_window, r.window.as_secs()), (120, 60));
        assert_eq!(RateLimit::parse("5/h").unwrap().to_text(), "5/h");
        assert!(RateLimit::parse("0/s").is_err());
        assert!(RateLimit::parse("ten/s").is_err());
        assert!(RateLimit::parse("10/day").is_err());
        assert!(RateLimit::parse("10").is_err());
    }
}

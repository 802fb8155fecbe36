//! The `facecompare` command line (docs/operations.md): `serve`, `migrate`, the operator
//! commands for organisations, keys and tokens, and the local face tools.
use std::{path::PathBuf, process::ExitCode};

use clap::{Args, Parser, Subcommand};

pub mod admin;
pub mod faces;
pub mod pack;

#[derive(Debug, Parser)]
#[command(
    name = "facecompare",
    version,
    about = "Self-hosted, drop-in face-compare server"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP server.
    #[command(after_help = crate::config::variables_help())]
    Serve,
    /// Apply database migrations.
    Migrate,
    /// Manage organisations.
    #[command(subcommand)]
    Org(OrgCommand),
    /// Manage API keys.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Credit tokens.
    #[command(subcommand)]
    Tokens(TokensCommand),
    /// Compare two local images; prints the same JSON as the API.
    Compare(CompareArgs),
    /// Refit the cosine → confidence calibration from a CSV of labelled pairs.
    Calibrate(CalibrateArgs),
    /// Measure pipeline latency on local images.
    Bench(BenchArgs),
    /// Model packs: bring a third-party embedder (docs/packs.md).
    #[command(subcommand)]
    Pack(PackCommand),
}

#[derive(Debug, Subcommand)]
pub enum PackCommand {
    /// Make a pack from an ONNX embedder (or an InsightFace model-pack .zip),
    /// calibrated on labelled pairs, with the licence the operator states.
    Import(pack::ImportArgs),
}

#[derive(Debug, Subcommand)]
pub enum OrgCommand {
    /// Create an organisation.
    Create(OrgCreateArgs),
    /// List organisations.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Show one organisation (by id or name).
    Show {
        org: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub struct OrgCreateArgs {
    pub name: String,
    /// Starting balance (a ledger credit).
    #[arg(long, default_value_t = 0)]
    pub tokens: i64,
    /// S3 key prefix this organisation may read; default `orgs/NAME/`.
    #[arg(long)]
    pub s3_prefix: Option<String>,
    /// `N/s`, `N/min` or `N/h`; default FACECOMPARE_RATE_LIMIT.
    #[arg(long)]
    pub rate_limit: Option<String>,
    /// Match threshold 0–100 overriding the server default.
    #[arg(long)]
    pub threshold: Option<f64>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Create an API key; the secret is printed once.
    Create {
        /// Organisation id or name.
        #[arg(long)]
        org: String,
        /// An AWS access key id + secret access key (SigV4, for the
        /// Rekognition-compatible endpoint) instead of an API key.
        #[arg(long)]
        aws: bool,
        #[arg(long)]
        json: bool,
    },
    /// List an organisation's keys (ids only; secrets are never stored).
    List {
        #[arg(long)]
        org: String,
        #[arg(long)]
        json: bool,
    },
    /// Revoke an API key (`key_...`) or AWS access key (`FCAK...`) by its id.
    Revoke { key_id: String },
}

#[derive(Debug, Subcommand)]
pub enum TokensCommand {
    /// Credit N tokens to an organisation (a ledger row).
    Add {
        #[arg(long)]
        org: String,
        amount: i64,
        /// Ledger reason.
        #[arg(long, default_value = "cli credit")]
        reason: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub struct CompareArgs {
    pub a: PathBuf,
    pub b: PathBuf,
    #[arg(long)]
    pub pack: Option<String>,
    #[arg(long)]
    pub threshold: Option<f64>,
    /// Also print (to stderr) the faces, boxes, estimated ages, cosine and the calibration used.
    #[arg(long)]
    pub explain: bool,
}

#[derive(Debug, Args)]
pub struct CalibrateArgs {
    pub pairs: PathBuf,
    #[arg(long)]
    pub pack: Option<String>,
    /// Base folder for relative image paths; default the CSV's folder.
    #[arg(long)]
    pub root: Option<PathBuf>,
    /// Write the fitted calibration into the pack manifest.
    #[arg(long)]
    pub write: bool,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
    #[arg(long, default_value_t = 10)]
    pub iterations: usize,
    #[arg(long)]
    pub pack: Option<String>,
    /// Re-encode each image as a JPEG of these sizes first (e.g. 0.4,2.6,12).
    #[arg(long, value_delimiter = ',')]
    pub megapixels: Vec<f64>,
    /// Leave out the age pass (to measure what it costs).
    #[arg(long)]
    pub no_age: bool,
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> anyhow::Result<()> {
    // The face tools are synchronous (they own their worker threads), so they run
    // outside any async runtime.
    match command {
        Command::Compare(args) => return faces::compare(&args),
        Command::Calibrate(args) => return faces::calibrate(&args),
        Command::Bench(args) => return faces::bench(&args),
        Command::Pack(PackCommand::Import(args)) => return pack::import(&args),
        _ => {}
    }
    let config = crate::config::Config::from_env()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        match command {
            Command::Serve => crate::http::serve(config).await,
            Command::Migrate => admin::migrate(&config).await,
            Command::Org(cmd) => admin::org(&config, cmd).await,
            Command::Key(cmd) => admin::key(&config, cmd).await,
            Command::Tokens(cmd) => admin::tokens(&config, cmd).await,
            Command::Compare(_) | Command::Calibrate(_) | Command::Bench(_) | Command::Pack(_) => {
                anyhow::bail!("internal: face tools run outside the runtime")
            }
        }
    })
}

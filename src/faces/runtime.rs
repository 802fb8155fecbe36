//! ONNX Runtime, loaded dynamically (no downloads at build time): from
//! `ORT_DYLIB_PATH`, or from the folder `scripts/fetch-onnxruntime.sh` fills.
use std::{
    path::{Path, PathBuf},
    sync::OnceLock,
};

use anyhow::{Context, anyhow};
use ort::{
    environment::Environment,
    session::{Session, builder::GraphOptimizationLevel},
};

pub const ORT_LIB: &str = "libonnxruntime.so.1.32.0";
pub const FETCH_HINT: &str = "run `scripts/fetch-onnxruntime.sh` (it extracts the pinned library into ./.ort) or set ORT_DYLIB_PATH to a libonnxruntime.so 1.24 or newer";

static ENV: OnceLock<Result<Environment, String>> = OnceLock::new();

/// Where the library is looked for, first match wins.
fn candidates() -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        out.push(PathBuf::from(p));
        return out;
    }
    out.push(PathBuf::from(".ort").join(ORT_LIB));
    if let Ok(exe) = std::env::current_exe() {
        // target/{debug,release}/facecompare → repo/.ort; /app/bin/facecompare → /app/lib
        for up in exe.ancestors().skip(1).take(4) {
            out.push(up.join(".ort").join(ORT_LIB));
            out.push(up.join("lib").join(ORT_LIB));
        }
    }
    out.push(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(".ort")
            .join(ORT_LIB),
    );
    out
}

/// Loads the library once per process and returns the shared environment.
pub fn environment() -> anyhow::Result<Environment> {
    ENV.get_or_init(|| {
        let cands = candidates();
        let Some(path) = cands.iter().find(|p| p.is_file()) else {
            let tried: Vec<String> = cands.iter().map(|p| p.display().to_string()).collect();
            return Err(format!(
                "ONNX Runtime library not found (looked at {}): {FETCH_HINT}",
                tried.join(", ")
            ));
        };
        let builder = ort::init_from(path).map_err(|e| {
            format!(
                "cannot load ONNX Runtime from {}: {e}; {FETCH_HINT}",
                path.display()
            )
        })?;
        builder
            .with_name("facecompare")
            .build()
            .map_err(|e| format!("cannot start ONNX Runtime from {}: {e}", path.display()))
    })
    .clone()
    .map_err(|e| anyhow!(e))
}

/// One CPU session; `Session::run` takes `&mut self`, so each worker owns its own.
pub fn session(model: &[u8], intra_threads: usize) -> anyhow::Result<Session> {
    let env = environment()?;
    let options = |e: ort::Error<_>| anyhow!("ONNX Runtime session options: {e}");
    let mut builder = Session::builder(&env)
        .context("ONNX Runtime session builder")?
        .with_optimization_level(GraphOptimizationLevel::All)
        .map_err(options)?
        .with_intra_threads(intra_threads)
        .map_err(options)?
        .with_inter_threads(1)
        .map_err(options)?
        // Spinning threads steal the other workers' cores on a small machine.
        .with_intra_op_spinning(false)
        .map_err(options)?;
    builder
        .commit_from_memory(model)
        .map_err(|e| anyhow!("ONNX Runtime cannot load the model: {e}"))
}

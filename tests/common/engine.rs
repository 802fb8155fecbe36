//! The face engine's parts for tests: where ONNX Runtime and the model packs
//! are (for a spawned server or CLI, and for the engine in the test process),
//! and the packs, models, policies and engines the engine suites load.
//! `ORT_DYLIB_PATH` (default `.ort/` + the pinned file name that
//! `facecompare::faces::runtime::ORT_LIB` holds) and
//! `FACECOMPARE_TEST_MODELS_DIR` (default `models/`) are read here only.
use std::{path::PathBuf, process::Command, sync::OnceLock};

use facecompare::faces::{Engine, EngineConfig, calibration::Policy, pack::Pack, pipeline::Models};

use super::repo;

/// The ONNX Runtime library the tests use.
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

/// The folder of the model packs the tests use.
pub fn models_dir() -> String {
    std::env::var("FACECOMPARE_TEST_MODELS_DIR")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| repo().join("models").display().to_string())
}

pub fn models_path() -> PathBuf {
    PathBuf::from(models_dir())
}

/// Points a child process (`facecompare calibrate`, `serve` built by hand)
/// at the tests' ONNX Runtime and models.
pub fn engine_env(cmd: &mut Command) -> &mut Command {
    cmd.env("ORT_DYLIB_PATH", ort_dylib())
        .env("FACECOMPARE_MODELS_DIR", models_dir())
}

/// Makes ONNX Runtime, loaded in this process, use [`ort_dylib`]. Call
/// before the first session (the `load_*`/`start_engine` helpers do).
pub fn use_ort() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        if std::env::var_os("ORT_DYLIB_PATH").is_none() {
            // SAFETY: runs once, before this process starts ONNX Runtime;
            // no other thread reads the variable concurrently.
            unsafe { std::env::set_var("ORT_DYLIB_PATH", ort_dylib()) };
        }
    });
}

/// Pack `name` from [`models_dir`], its files' sha256 checked.
pub fn load_pack(name: &str) -> Pack {
    use_ort();
    Pack::load(&models_path(), name).expect("pack loads and its sha256 match")
}

/// One set of ONNX Runtime sessions (one intra-op thread) for pack `name`.
pub fn load_models(name: &str) -> Models {
    Models::new(&load_pack(name), 1).expect("ONNX Runtime sessions")
}

/// The pack's policy (its calibration and, where it has one, the child rule).
pub fn pack_policy(pack: &Pack) -> Policy {
    Policy::new(
        pack.manifest.calibration.clone(),
        pack.manifest.age.as_ref(),
    )
}

/// The real engine (its pool of two workers) on pack `name`.
pub fn start_engine(name: &str, queue_capacity: usize) -> Engine {
    use_ort();
    Engine::start(EngineConfig {
        models_dir: models_path(),
        pack: name.into(),
        workers: 2,
        intra_threads: 1,
        queue_capacity,
        queue_org_share_percent: 50,
        decode_budget_bytes: 192 << 20,
    })
    .expect("engine starts")
}

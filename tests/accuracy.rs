//! Accuracy of the shipped calibration on the labelled sets in `../shared/eval`
//! (third-party images, read in place), through the real `facecompare
//! calibrate` command. Skips with a message when `../shared` is absent.
mod common;

use std::{path::Path, process::Command};

use common::{engine_env, eval_dir};

/// `facecompare calibrate CSV --pack P` (without --write): how the pack's
/// current calibration does on the pairs, plus a refit it only prints.
fn calibrate(csv: &Path, pack: &str) -> serde_json::Value {
    let out = engine_env(Command::new(common::BIN).args([
        "calibrate",
        csv.to_str().unwrap(),
        "--pack",
        pack,
    ]))
    .output()
    .expect("run facecompare calibrate");
    assert!(
        out.status.success(),
        "calibrate failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("calibrate prints JSON")
}

#[test]
fn deepface_pairs_all_decided_right_by_the_default_pack() {
    let Some(eval) = eval_dir() else { return };
    let r = calibrate(&eval.join("deepface/master.csv"), "mobilefacenet");
    eprintln!("{r}");
    assert!(r["pairs"]["genuine"].as_u64().unwrap() >= 38);
    assert_eq!(r["pairs"]["genuineNoFace"], 0);
    assert_eq!(r["current"]["falseMatchesAt80"], 0, "a No pair reached 80");
    assert_eq!(
        r["current"]["falseNonMatchesAt80"], 0,
        "a Yes pair stayed below 80"
    );
}

#[test]
fn calib_pairs_meet_the_operating_point() {
    let Some(eval) = eval_dir() else { return };
    for (pack, max_fnmr) in [("mobilefacenet", 0.03), ("dlib", 0.12)] {
        let r = calibrate(&eval.join("calib/pairs.csv"), pack);
        let genuine =
            r["pairs"]["genuine"].as_u64().unwrap() + r["pairs"]["genuineNoFace"].as_u64().unwrap();
        assert_eq!(
            r["pairs"]["impostor"].as_u64().unwrap()
                + r["pairs"]["impostorNoFace"].as_u64().unwrap(),
            1476
        );
        let fm = r["current"]["falseMatchesAt80"].as_u64().unwrap();
        let fnm = r["current"]["falseNonMatchesAt80"].as_u64().unwrap();
        eprintln!(
            "{pack}: {fm} of 1476 different-person pairs reach 80; {fnm} of {genuine} same-person pairs do not"
        );
        assert!(fm <= 1, "{pack}: {fm} different-person pairs reach 80");
        assert!(
            (fnm as f64) <= max_fnmr * genuine as f64,
            "{pack}: {fnm} of {genuine} same-person pairs below 80"
        );
    }
}

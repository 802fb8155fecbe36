//! `facecompare pack import` with a real third-party embedder (issue 18):
//! InsightFace's `w600k_mbf.onnx` (non-commercial weights, fetched by
//! `scripts/fetch-fixtures.sh` by its sha256, never committed) imported into a
//! temporary models folder, calibrated on `../shared/eval/calib`, served
//! behind the licence acknowledgement and compared over HTTP; and every
//! refusal, each naming its problem. Imports never touch the repo's models/.
mod common;

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
    sync::OnceLock,
};

use common::{
    BIN, Backend,
    onnx::{self, Dim},
};
use serde_json::Value;

const W600K_SHA256: &str = "9cc6e4a75f0e2bf0b1aed94578f144d15175f357bdc05e815e5c4a02b319eb4f";

/// The pack tests fetch a non-commercial model kept out of every image: not
/// against a running stack.
fn local_or_skip() -> bool {
    common::own_servers_or_skip("`pack import` on a fetched third-party model")
}

fn fixture_path(name: &str) -> PathBuf {
    common::fixture(name); // fetches when missing
    std::env::var("FIXTURES_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| common::repo().join("tests/fixtures/fetched"))
        .join(name)
}

fn calib_pairs() -> Option<PathBuf> {
    let p = common::repo().join("../shared/eval/calib/pairs.csv");
    if p.is_file() {
        Some(p)
    } else {
        eprintln!(
            "SKIPPED: {} is absent (the labelled calibration pairs live in ../shared beside the repo)",
            p.display()
        );
        None
    }
}

/// A temporary models folder holding the shipped `mobilefacenet` pack (by a
/// link: its detector and age model are what an import takes).
fn models_dir() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("facecompare-packs-")
        .tempdir()
        .unwrap();
    std::os::unix::fs::symlink(
        common::repo().join("models/mobilefacenet"),
        dir.path().join("mobilefacenet"),
    )
    .unwrap();
    dir
}

fn facecompare(models: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut cmd = Command::new(BIN);
    common::scrub(&mut cmd);
    cmd.args(args)
        .env_remove("FACECOMPARE_PACK")
        .env("FACECOMPARE_MODELS_DIR", models)
        .env("ORT_DYLIB_PATH", common::ort_dylib())
        .env("FACECOMPARE_WORKERS", "2")
        .env("RUST_LOG", "warn");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("running facecompare")
}

fn import(models: &Path, name: &str, embedder: &Path, pairs: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "pack",
        "import",
        "--name",
        name,
        "--embedder",
        embedder.to_str().unwrap(),
        "--calibrate",
        pairs.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    facecompare(models, &[], &args)
}

fn ok_json(out: &Output, what: &str) -> Value {
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    eprintln!("{what}:\n{stdout}{stderr}");
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {stdout}"))
}

/// Asserts a refused import: exit status 1, every needle in its error, and
/// no pack folder left behind.
fn refused(out: &Output, models: &Path, name: &str, needles: &[&str]) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(1), "expected a refusal:\n{stderr}");
    for n in needles {
        assert!(stderr.contains(n), "{n:?} missing in:\n{stderr}");
    }
    assert!(
        !models.join(name).join("manifest.json").exists(),
        "a refused import left {}",
        models.join(name).display()
    );
    stderr
}

/// Pairs over the fetched single-face photos, repeated up to the import's
/// minimum (100 same-person, 500 different-person rows over 6 images):
/// quick to analyse. `mislabel` adds one photo paired with itself as two people.
fn fixture_pairs(dir: &Path, same: usize, different: usize, mislabel: bool) -> PathBuf {
    let p = |n: &str| fixture_path(n).display().to_string();
    let obama = [p("obama.jpg"), p("obama2.jpg"), p("obama3.jpg")];
    let others = [p("biden.jpg"), p("astronaut.png"), p("Tom_Hanks_54745.png")];
    let mut csv = String::from("a,b,same\n");
    let genuine = [(0, 1), (0, 2), (1, 2)];
    for i in 0..same {
        let (a, b) = genuine[i % 3];
        csv += &format!("{},{},1\n", obama[a], obama[b]);
    }
    for i in 0..different {
        let a = &obama[i % 3];
        let b = &others[(i / 3) % 3];
        csv += &format!("{a},{b},0\n");
    }
    if mislabel {
        csv += &format!("{},{},0\n", obama[0], obama[0]);
    }
    let path = dir.join(format!("pairs-{same}-{different}-{mislabel}.csv"));
    std::fs::write(&path, csv).unwrap();
    path
}

/// `w600k_mbf` imported once per test binary on the calibration set (None
/// when `../shared` is absent): the models folder and the printed fit.
fn imported() -> Option<&'static (tempfile::TempDir, Value)> {
    static PACK: OnceLock<Option<(tempfile::TempDir, Value)>> = OnceLock::new();
    PACK.get_or_init(|| {
        let pairs = calib_pairs()?;
        let models = models_dir();
        let out = import(
            models.path(),
            "w600k",
            &fixture_path("w600k_mbf.onnx"),
            &pairs,
            &[
                "--licence",
                "InsightFace w600k_mbf (buffalo_s): non-commercial research use only",
                "--commercial",
                "no",
            ],
        );
        let fit = ok_json(&out, "pack import w600k_mbf on calib");
        Some((models, fit))
    })
    .as_ref()
}

#[test]
fn w600k_mbf_imports_and_calibrates_on_the_calibration_set() {
    if !local_or_skip() {
        return;
    }
    let Some((models, fit)) = imported() else {
        return;
    };
    let genuine = fit["pairs"]["genuine"].as_f64().unwrap();
    let genuine_all = genuine + fit["pairs"]["genuineNoFace"].as_f64().unwrap();
    let fnm = fit["falseNonMatchesAt80"].as_f64().unwrap();
    assert!(genuine >= 500.0, "{fit}");
    assert!(
        (genuine - fnm) / genuine_all >= 0.99,
        "under 99 % of same-person pairs at 80: {fit}"
    );
    assert!(fit["falseMatchesAt80"].as_u64().unwrap() <= 1, "{fit}");
    assert!(fit["tarAtFmr1e-3"].as_f64().unwrap() >= 0.99, "{fit}");

    let dir = models.path().join("w600k");
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    let e = &manifest["embedder"];
    assert_eq!(e["file"], "w600k_mbf.onnx");
    assert_eq!(e["sha256"], W600K_SHA256);
    assert_eq!(e["input"], "input.1");
    assert_eq!(e["layout"], "NCHW");
    assert_eq!(e["size"], 112);
    assert_eq!(e["dim"], 512);
    assert_eq!(e["mean"], serde_json::json!([127.5, 127.5, 127.5]));
    assert_eq!(e["template"][0], serde_json::json!([38.2946, 51.6963]));
    assert_eq!(manifest["licence"]["commercial"], "no");
    assert!(
        manifest["licence"]["embedder"]
            .as_str()
            .unwrap()
            .contains("non-commercial")
    );
    // The default pack's detector and age model, byte for byte.
    let base: Value = serde_json::from_slice(
        &std::fs::read(common::repo().join("models/mobilefacenet/manifest.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(manifest["detector"], base["detector"]);
    assert_eq!(manifest["age"], base["age"]);
    for f in ["w600k_mbf.onnx", "blazeface.onnx", "faceres.onnx"] {
        assert!(dir.join(f).is_file(), "{f} missing in {}", dir.display());
    }
    let points = manifest["calibration"]["points"].as_array().unwrap();
    assert_eq!(points.len(), 3);
    assert_eq!(
        points[1][0].as_f64().unwrap(),
        fit["cosineAt"]["80"].as_f64().unwrap()
    );
}

#[test]
fn the_imported_pack_works_with_compare_calibrate_and_bench() {
    if !local_or_skip() {
        return;
    }
    let Some((models, _)) = imported() else {
        return;
    };
    let ack = [
        ("FACECOMPARE_PACK", "w600k"),
        ("FACECOMPARE_PACK_LICENCE_ACK", "w600k"),
    ];
    let (a, b, c) = (
        fixture_path("obama.jpg"),
        fixture_path("obama2.jpg"),
        fixture_path("biden.jpg"),
    );
    let same = facecompare(
        models.path(),
        &ack,
        &[
            "compare",
            "--explain",
            a.to_str().unwrap(),
            b.to_str().unwrap(),
        ],
    );
    let v = ok_json(&same, "compare obama obama2");
    assert_eq!(v["isMatch"], true, "{v}");
    let explain = String::from_utf8_lossy(&same.stderr);
    assert!(explain.contains("\"pack\": \"w600k\""), "{explain}");
    let other = ok_json(
        &facecompare(
            models.path(),
            &ack,
            &["compare", a.to_str().unwrap(), c.to_str().unwrap()],
        ),
        "compare obama biden",
    );
    assert_eq!(other["isMatch"], false, "{other}");

    // Without the acknowledgement the CLI refuses the pack too.
    let out = facecompare(
        models.path(),
        &[("FACECOMPARE_PACK", "w600k")],
        &["compare", a.to_str().unwrap(), b.to_str().unwrap()],
    );
    refused_with_licence(&out);

    let tmp = tempfile::tempdir().unwrap();
    let pairs = fixture_pairs(tmp.path(), 6, 24, false);
    let cal = ok_json(
        &facecompare(models.path(), &ack, &["calibrate", pairs.to_str().unwrap()]),
        "calibrate w600k",
    );
    assert_eq!(cal["pack"], "w600k");
    assert_eq!(cal["current"]["falseMatchesAt80"], 0, "{cal}");
    assert_eq!(cal["current"]["falseNonMatchesAt80"], 0, "{cal}");

    let bench = facecompare(
        models.path(),
        &ack,
        &[
            "bench",
            "--iterations",
            "1",
            a.to_str().unwrap(),
            b.to_str().unwrap(),
        ],
    );
    let text = String::from_utf8_lossy(&bench.stdout);
    assert!(
        bench.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&bench.stderr)
    );
    assert!(text.starts_with("pack w600k"), "{text}");
}

fn refused_with_licence(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        !out.status.success(),
        "the pack loaded without the acknowledgement"
    );
    for n in [
        "non-commercial research use only",
        "commercial use \"no\"",
        "FACECOMPARE_PACK_LICENCE_ACK=w600k",
    ] {
        assert!(stderr.contains(n), "{n:?} missing in:\n{stderr}");
    }
    stderr
}

#[test]
fn serve_needs_the_licence_acknowledgement_then_compares_over_http() {
    if !local_or_skip() {
        return;
    }
    let Some((models, _)) = imported() else {
        return;
    };
    let models = models.path().display().to_string();
    // Without it: `serve` exits, quoting the recorded licence.
    let cwd = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(BIN);
    common::scrub(&mut cmd);
    let out = cmd
        .arg("serve")
        .current_dir(cwd.path())
        .env("FACECOMPARE_LISTEN", "127.0.0.1:0")
        .env("FACECOMPARE_MODELS_DIR", &models)
        .env("FACECOMPARE_PACK", "w600k")
        .env("FACECOMPARE_PACK_LICENCE_ACK", "mobilefacenet,other")
        .env("ORT_DYLIB_PATH", common::ort_dylib())
        .output()
        .unwrap();
    let stderr = refused_with_licence(&out);
    eprintln!("serve without the acknowledgement:\n{stderr}");
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("listening on"),
        "it listened"
    );

    // With it: the pack serves, and says so.
    let db = common::fresh_database(Backend::Sqlite, "packs");
    let server = common::spawn_server(
        common::ServerOptions::new(&db)
            .env("FACECOMPARE_MODELS_DIR", &models)
            .env("FACECOMPARE_PACK", "w600k")
            .env("FACECOMPARE_PACK_LICENCE_ACK", "w600k"),
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let ready = server.get("/readyz").await;
        assert_eq!(ready.status, 200, "{}", ready.text);
        let pack = &ready.json()["pack"];
        assert_eq!(pack["name"], "w600k", "{pack}");
        assert_eq!(pack["embedderSha256"], W600K_SHA256, "{pack}");
        assert_eq!(pack["commercial"], "no", "{pack}");
        assert!(
            pack["licence"].as_str().unwrap().contains("non-commercial"),
            "{pack}"
        );
        let metrics = server.metrics().await;
        let line = metrics
            .text
            .lines()
            .find(|l| l.starts_with("facecompare_model_pack_info{"))
            .unwrap_or_else(|| panic!("no pack info metric in\n{}", metrics.text));
        for n in [
            "pack=\"w600k\"",
            &format!("embedder_sha256=\"{W600K_SHA256}\""),
            "commercial=\"no\"",
            "non-commercial research use only",
        ] {
            assert!(line.contains(n), "{n} missing in {line}");
        }
        assert!(line.ends_with(" 1"), "{line}");

        let org = server.org(10).await;
        let (a, b, c) = (
            common::fixture("obama.jpg"),
            common::fixture("obama2.jpg"),
            common::fixture("biden.jpg"),
        );
        let r = server
            .compare_multipart(&org.key, &common::file(&a), &common::file(&b))
            .await;
        let v = r.assert_compare_ok();
        assert_eq!(v["isMatch"], true, "{v}");
        assert!(v["confidence"].as_f64().unwrap() >= 80.0, "{v}");
        let r = server
            .compare_json(&org.key, &common::b64(&a), &common::b64(&c))
            .await;
        let v = r.assert_compare_ok();
        assert_eq!(v["isMatch"], false, "{v}");

        // The Rekognition protocol, through the real AWS SDK.
        let k = common::cli_json(
            &server.db_url,
            &["key", "create", "--org", &org.id, "--aws", "--json"],
        )
        .await;
        let config = aws_sdk_rekognition::Config::builder()
            .behavior_version(aws_sdk_rekognition::config::BehaviorVersion::latest())
            .region(aws_sdk_rekognition::config::Region::new("eu-west-1"))
            .endpoint_url(&server.base)
            .credentials_provider(aws_sdk_rekognition::config::Credentials::new(
                k["accessKeyId"].as_str().unwrap(),
                k["secretAccessKey"].as_str().unwrap(),
                None,
                None,
                "facecompare",
            ))
            .build();
        let image = |b: Vec<u8>| {
            aws_sdk_rekognition::types::Image::builder()
                .bytes(aws_sdk_rekognition::primitives::Blob::new(b))
                .build()
        };
        let out = aws_sdk_rekognition::Client::from_conf(config)
            .compare_faces()
            .source_image(image(a.clone()))
            .target_image(image(b.clone()))
            .send()
            .await
            .expect("CompareFaces");
        assert_eq!(out.face_matches().len(), 1, "{out:?}");
        assert!(
            out.face_matches()[0].similarity().unwrap() >= 80.0,
            "{out:?}"
        );

        // The try page is served unchanged.
        let page = server.get("/try").await;
        assert_eq!(page.status, 200);
        assert!(page.text.contains("<html"), "{}", page.text);
    });
    let log = common::tail(server.log.as_ref().unwrap());
    assert!(
        log.contains("model pack loaded")
            && log.contains(W600K_SHA256)
            && log.contains("non-commercial"),
        "start-up log lacks the pack:\n{log}"
    );
    eprintln!(
        "serve with the acknowledgement (log):\n{}",
        log.lines()
            .filter(|l| l.contains("model pack loaded") || l.contains("listening"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn a_model_pack_zip_gives_its_recognition_model() {
    if !local_or_skip() {
        return;
    }
    let models = models_dir();
    let tmp = tempfile::tempdir().unwrap();
    let pairs = fixture_pairs(tmp.path(), 100, 500, false);
    let out = import(
        models.path(),
        "buffalo-s",
        &fixture_path("buffalo_s_subset.zip"),
        &pairs,
        &["--commercial", "unknown"],
    );
    let fit = ok_json(&out, "pack import buffalo_s_subset.zip");
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("using its recognition model buffalo_s/w600k_mbf.onnx"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(fit["embedder"]["sha256"], W600K_SHA256, "{fit}");
    assert_eq!(fit["embedder"]["file"], "w600k_mbf.onnx");
    assert_eq!(fit["falseMatchesAt80"], 0, "{fit}");
    assert_eq!(fit["falseNonMatchesAt80"], 0, "{fit}");
    let manifest: Value = serde_json::from_slice(
        &std::fs::read(models.path().join("buffalo-s/manifest.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(manifest["licence"]["commercial"], "unknown");
    assert_eq!(
        manifest["licence"]["embedder"],
        "not stated by the operator"
    );
    // `unknown` also needs the acknowledgement.
    let out = facecompare(
        models.path(),
        &[("FACECOMPARE_PACK", "buffalo-s")],
        &[
            "bench",
            "--iterations",
            "1",
            fixture_path("obama.jpg").to_str().unwrap(),
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("commercial use \"unknown\"")
            && stderr.contains("FACECOMPARE_PACK_LICENCE_ACK=buffalo-s"),
        "{stderr}"
    );
}

#[test]
fn an_existing_pack_name_is_refused_unless_forced() {
    if !local_or_skip() {
        return;
    }
    let models = models_dir();
    let tmp = tempfile::tempdir().unwrap();
    let pairs = fixture_pairs(tmp.path(), 100, 500, false);
    let w600k = fixture_path("w600k_mbf.onnx");
    // The base pack (where the detector and age model come from) is never replaced.
    let out = import(models.path(), "mobilefacenet", &w600k, &pairs, &["--force"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("is the base pack"), "{stderr}");
    assert!(
        models
            .path()
            .join("mobilefacenet/mobilefacenet.onnx")
            .is_file()
    );

    std::fs::create_dir(models.path().join("mine")).unwrap();
    std::fs::write(models.path().join("mine/old.txt"), "old").unwrap();
    let out = import(models.path(), "mine", &w600k, &pairs, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("pack \"mine\" exists") && stderr.contains("--force"),
        "{stderr}"
    );
    assert!(models.path().join("mine/old.txt").is_file());
    let fit = ok_json(
        &import(models.path(), "mine", &w600k, &pairs, &["--force"]),
        "pack import --force",
    );
    assert_eq!(fit["pack"], "mine");
    assert!(!models.path().join("mine/old.txt").exists());
    assert!(models.path().join("mine/manifest.json").is_file());
}

#[test]
fn refusals_name_the_problem() {
    if !local_or_skip() {
        return;
    }
    let models = models_dir();
    let m = models.path();
    let tmp = tempfile::tempdir().unwrap();
    let pairs = fixture_pairs(tmp.path(), 100, 500, false);
    let graph = |name: &str, bytes: Vec<u8>| {
        let p = tmp.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    };

    // Not an ONNX file.
    let text = graph("notes.onnx", b"this is a text file, not a graph".to_vec());
    refused(
        &import(m, "x", &text, &pairs, &[]),
        m,
        "x",
        &["notes.onnx", "is not an ONNX model"],
    );

    // An input that is not one 3-channel square image.
    let grey = graph(
        "grey.onnx",
        onnx::model(
            &onnx::image_input(1),
            &[("GlobalAveragePool", &["x"], "p"), ("Flatten", &["p"], "y")],
            &[],
            &[Dim::Sym("N"), Dim::N(1)],
        ),
    );
    refused(
        &import(m, "x", &grey, &pairs, &[]),
        m,
        "x",
        &[
            "grey.onnx",
            "is not one 3-channel square image",
            "[?, 1, 112, 112]",
        ],
    );
    let wide = graph(
        "wide.onnx",
        onnx::model(
            &[Dim::Sym("N"), Dim::N(3), Dim::N(112), Dim::N(96)],
            &[("GlobalAveragePool", &["x"], "p"), ("Flatten", &["p"], "y")],
            &[],
            &[Dim::Sym("N"), Dim::N(3)],
        ),
    );
    refused(
        &import(m, "x", &wide, &pairs, &[]),
        m,
        "x",
        &["wide.onnx", "not square"],
    );
    // A detector: its side is open, and with --size it has nine outputs.
    let scrfd = fixture_path("scrfd_500m_bnkps.onnx");
    refused(
        &import(m, "x", &scrfd, &pairs, &[]),
        m,
        "x",
        &[
            "scrfd_500m_bnkps.onnx",
            "is not one 3-channel square image",
            "pass --size",
        ],
    );
    refused(
        &import(m, "x", &scrfd, &pairs, &["--size", "640"]),
        m,
        "x",
        &["gives 9 outputs", "an embedder gives one vector per face"],
    );

    // An output that is not one vector.
    let map = graph(
        "map.onnx",
        onnx::model(
            &onnx::image_input(3),
            &[("GlobalAveragePool", &["x"], "y")],
            &[],
            &[Dim::Sym("N"), Dim::N(3), Dim::N(1), Dim::N(1)],
        ),
    );
    refused(
        &import(m, "x", &map, &pairs, &[]),
        m,
        "x",
        &["map.onnx", "is not one vector per face", "[?, 3, 1, 1]"],
    );

    // NaN, and constant, embeddings on the calibration faces.
    let nan = graph(
        "nan.onnx",
        onnx::on_mean_colour(
            &[
                ("Sub", &["colour", "colour"], "zero"),
                ("Div", &["zero", "zero"], "y"),
            ],
            &[],
        ),
    );
    refused(
        &import(m, "x", &nan, &pairs, &[]),
        m,
        "x",
        &["NaN or infinite values on 6 of the 6 calibration faces"],
    );
    let constant = graph(
        "constant.onnx",
        onnx::on_mean_colour(
            &[
                ("Mul", &["colour", "zero"], "z"),
                ("Add", &["z", "one"], "y"),
            ],
            &[("zero", 0.0), ("one", 1.0)],
        ),
    );
    refused(
        &import(m, "x", &constant, &pairs, &[]),
        m,
        "x",
        &["the same embedding for all 6 calibration faces"],
    );

    // A fit that does not separate the pairs: a photo paired with itself as two people.
    let w600k = fixture_path("w600k_mbf.onnx");
    let mislabelled = fixture_pairs(tmp.path(), 100, 500, true);
    refused(
        &import(m, "x", &w600k, &mislabelled, &[]),
        m,
        "x",
        &[
            "does not separate the calibration pairs",
            "the floor is 80 %",
        ],
    );

    // Too few pairs of either kind.
    let few_same = fixture_pairs(tmp.path(), 20, 500, false);
    refused(
        &import(m, "x", &w600k, &few_same, &[]),
        m,
        "x",
        &[
            "20 same-person and 500 different-person pairs",
            "at least 100 and 500",
        ],
    );
    let few_different = fixture_pairs(tmp.path(), 100, 30, false);
    refused(
        &import(m, "x", &w600k, &few_different, &[]),
        m,
        "x",
        &[
            "100 same-person and 30 different-person pairs",
            "at least 100 and 500",
        ],
    );
    // Nothing was left in the models folder (no staging folders either).
    let left: Vec<String> = std::fs::read_dir(m)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, ["mobilefacenet"], "{left:?}");
}

/// `--mean`, `--std` and `--template` are what the manifest records and
/// what the embedder is fed (the fit moves with them), and malformed values
/// are refused by flag.
#[test]
fn preprocessing_flags_are_recorded_and_used() {
    if !local_or_skip() {
        return;
    }
    let models = models_dir();
    let m = models.path();
    let tmp = tempfile::tempdir().unwrap();
    let pairs = fixture_pairs(tmp.path(), 100, 500, false);
    let w600k = fixture_path("w600k_mbf.onnx");
    let default = ok_json(&import(m, "plain", &w600k, &pairs, &[]), "default import");
    // ArcFace's template one pixel to the right; a slightly different scale.
    let template =
        "39.2946,51.6963,74.5318,51.5014,57.0252,71.7366,42.5493,92.3655,71.7299,92.2041";
    let fit = ok_json(
        &import(
            m,
            "tuned",
            &w600k,
            &pairs,
            &[
                "--mean",
                "127,127.5,128",
                "--std",
                "128",
                "--template",
                template,
            ],
        ),
        "import with preprocessing flags",
    );
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(m.join("tuned/manifest.json")).unwrap()).unwrap();
    let e = &manifest["embedder"];
    assert_eq!(e["mean"], serde_json::json!([127.0, 127.5, 128.0]), "{e}");
    assert_eq!(e["std"], serde_json::json!([128.0, 128.0, 128.0]), "{e}");
    let recorded: Vec<f64> = e["template"]
        .as_array()
        .expect("template")
        .iter()
        .flat_map(|p| p.as_array().unwrap().iter().map(|v| v.as_f64().unwrap()))
        .collect();
    let given: Vec<f64> = template.split(',').map(|v| v.parse().unwrap()).collect();
    assert_eq!(recorded.len(), 10, "{e}");
    for (r, g) in recorded.iter().zip(&given) {
        assert!((r - g).abs() < 1e-3, "template {recorded:?} != {given:?}");
    }
    // The same pairs through other preprocessing give other cosines.
    assert_ne!(
        fit["cosine"]["genuineMin"], default["cosine"]["genuineMin"],
        "the flags changed nothing: {fit} vs {default}"
    );

    for (flags, needle) in [
        (&["--template", "1,2,3"][..], "--template: give 10 numbers"),
        (&["--mean", "1,2"][..], "--mean: give 1 or 3 values"),
        (&["--std", "0"][..], "--std: must not be 0"),
    ] {
        refused(&import(m, "x", &w600k, &pairs, flags), m, "x", &[needle]);
    }
}

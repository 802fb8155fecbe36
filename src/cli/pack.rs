//! `facecompare pack import`: a third-party ONNX embedder (or the recognition
//! model of an InsightFace model-pack `.zip`) made into a pack under
//! `$FACECOMPARE_MODELS_DIR/NAME/`: the embedder block probed from the graph,
//! the base pack's detector and age model, the calibration fitted on the
//! operator's labelled pairs (as `calibrate` fits the shipped packs) and the
//! licence the operator states (docs/packs.md).
use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
};

use anyhow::{Context, bail, ensure};
use clap::Args;
use sha2::{Digest, Sha256};

use super::faces::{Pair, pairs_root, parallel_analyze, read_pairs};
use crate::{
    config::Config,
    faces::{
        StageTimings,
        calibration::{self, Policy},
        model_zip,
        pack::{self, Commercial, EmbedderSpec, Pack},
        pipeline::Depth,
        probe::{self, Probed},
        score,
    },
};

/// ArcFace's 112×112 five-point template (InsightFace `arcface_dst`).
pub const ARCFACE_112: [[f32; 2]; 5] = [
    [38.2946, 51.6963],
    [73.5318, 51.5014],
    [56.0252, 71.7366],
    [41.5493, 92.3655],
    [70.7299, 92.2041],
];

/// Fewest same-person / different-person pairs a fit is made on: 80 goes
/// just above the highest different-person cosine, so 500 of them vouch for
/// a false-match rate of about 1/500; 100 same-person pairs put the
/// false-non-match rate to within a few per cent.
pub const MIN_GENUINE: usize = 100;
pub const MIN_IMPOSTOR: usize = 500;

/// Floor of a usable fit: with 80 above every different-person pair, at
/// least this share of same-person pairs must still reach 80.
pub const MIN_TAR_AT_80: f64 = 0.80;

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The new pack's name (a folder under FACECOMPARE_MODELS_DIR).
    #[arg(long)]
    pub name: String,
    /// The embedder: an ONNX file, or an InsightFace model-pack .zip whose recognition model is used.
    #[arg(long)]
    pub embedder: PathBuf,
    /// Labelled pairs (CSV a,b,same[,child]) to fit the calibration on.
    #[arg(long)]
    pub calibrate: PathBuf,
    /// Base folder for the CSV's relative image paths; default the CSV's folder.
    #[arg(long)]
    pub root: Option<PathBuf>,
    /// The embedder's licence, as the operator holds it (recorded in the manifest).
    #[arg(long)]
    pub licence: Option<String>,
    /// Whether that licence allows commercial use: yes, no or unknown.
    #[arg(long, default_value = "unknown")]
    pub commercial: Commercial,
    /// Replace a pack of that name.
    #[arg(long)]
    pub force: bool,
    /// Pack whose detector and age model the new pack uses.
    #[arg(long, default_value = "mobilefacenet")]
    pub base: String,
    /// Image side when the graph leaves it open.
    #[arg(long)]
    pub size: Option<u32>,
    /// Per-channel mean subtracted from 0..255 RGB (1 or 3 values; InsightFace: 127.5).
    #[arg(long, value_delimiter = ',')]
    pub mean: Vec<f32>,
    /// Per-channel divisor after the mean (1 or 3 values; InsightFace: 127.5).
    #[arg(long, value_delimiter = ',')]
    pub std: Vec<f32>,
    /// Five-point template in crop pixels, x,y ×5 (eye, eye, nose, mouth corner, mouth
    /// corner); default ArcFace's 112 template scaled to the input side.
    #[arg(long, value_delimiter = ',')]
    pub template: Vec<f32>,
    /// Area-downscale large faces before the warp (as the dlib pack does).
    #[arg(long)]
    pub antialias: bool,
}

/// What the fit found on the pairs, printed as JSON.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Summary {
    pack: String,
    dir: String,
    embedder: serde_json::Value,
    pairs: serde_json::Value,
    false_matches_at_80: usize,
    false_non_matches_at_80: usize,
    fmr_at_80: f64,
    fnmr_at_80: f64,
    #[serde(rename = "tarAtFmr1e-3")]
    tar_at_fmr_1e3: f64,
    cosine_at: serde_json::Value,
    cosine: serde_json::Value,
    licence: serde_json::Value,
}

fn per_channel(flag: &str, v: &[f32], default: f32) -> anyhow::Result<[f32; 3]> {
    match v {
        [] => Ok([default; 3]),
        [x] => Ok([*x; 3]),
        [a, b, c] => Ok([*a, *b, *c]),
        _ => bail!("--{flag}: give 1 or 3 values"),
    }
}

/// TAR at the strictest cosine that lets at most `fmr` of the impostors
/// through (1e-3 of 1,476 pairs: one false match).
fn tar_at_fmr(genuine: &[f64], impostor: &[f64], fmr: f64) -> f64 {
    let mut imp = impostor.to_vec();
    imp.sort_by(|a, b| b.total_cmp(a));
    let allowed = (fmr * imp.len() as f64).floor() as usize;
    let Some(&cut) = imp.get(allowed) else {
        return 1.0;
    };
    genuine.iter().filter(|&&g| g > cut).count() as f64 / genuine.len().max(1) as f64
}

/// The embedder: the file itself, or the one recognition model of a zip.
fn read_embedder(path: &Path, size: Option<u32>) -> anyhow::Result<(String, Vec<u8>, Probed)> {
    let shown = path.display().to_string();
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {shown}"))?;
    if !model_zip::is_zip(&bytes) {
        let probed = probe::embedder(&shown, &bytes, size)?;
        let file = path
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_else(|| "embedder.onnx".into());
        return Ok((file, bytes, probed));
    }
    // A model pack: the recognition model is the one 112×112 (or --size)
    // image → vector graph; detectors, landmark and attribute models fail the probe.
    let want = size.unwrap_or(112);
    let members = model_zip::onnx_members(&bytes).with_context(|| shown.clone())?;
    let mut found = Vec::new();
    let mut why = Vec::new();
    for (name, data) in members {
        let label = format!("{shown}!{name}");
        match probe::embedder(&label, &data, size) {
            Ok(p) if p.size == want && p.dim >= 64 => found.push((name, data, p)),
            Ok(p) => why.push(format!(
                "{name}: {}x{} input, {} values (not a {want}x{want} face embedder)",
                p.size, p.size, p.dim
            )),
            Err(e) => why.push(format!("{name}: {e:#}")),
        }
    }
    match found.len() {
        1 => {
            let (name, data, p) = found.pop().expect("one");
            eprintln!("{shown}: using its recognition model {name}");
            let file = name.rsplit('/').next().unwrap_or(&name).to_string();
            Ok((file, data, p))
        }
        0 => bail!(
            "{shown}: no face recognition model in this zip; its .onnx files: {}",
            if why.is_empty() {
                "none".into()
            } else {
                why.join("; ")
            }
        ),
        _ => bail!(
            "{shown}: several recognition models ({}): extract the one you mean and pass it",
            found
                .iter()
                .map(|(n, _, _)| n.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Refuses NaN, infinite or constant embeddings on the calibration faces.
fn check_embeddings(embeddings: &[(&Path, &[f32])]) -> anyhow::Result<()> {
    let bad: Vec<&Path> = embeddings
        .iter()
        .filter(|(_, e)| e.iter().any(|x| !x.is_finite()))
        .map(|(p, _)| *p)
        .collect();
    if let Some(first) = bad.first() {
        bail!(
            "the embedder gives NaN or infinite values on {} of the {} calibration faces (the first: {})",
            bad.len(),
            embeddings.len(),
            first.display()
        );
    }
    let Some((_, first)) = embeddings.first() else {
        bail!("no face was found on any calibration image");
    };
    let spread = embeddings
        .iter()
        .map(|(_, e)| {
            e.iter()
                .zip(*first)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max)
        })
        .fold(0f32, f32::max);
    ensure!(
        spread > 1e-5,
        "the embedder gives the same embedding for all {} calibration faces (a constant output): it cannot tell faces apart",
        embeddings.len()
    );
    Ok(())
}

fn count(pairs: &[Pair]) -> (usize, usize) {
    let adult = pairs.iter().filter(|p| !p.child);
    let same = adult.clone().filter(|p| p.same).count();
    (same, adult.count() - same)
}

pub fn import(args: &ImportArgs) -> anyhow::Result<()> {
    let config = Config::from_env()?;
    pack::check_name(&args.name)?;
    ensure!(
        args.name != args.base,
        "--name {:?} is the base pack (--base) the detector and age model come from: pick another name",
        args.name
    );
    let dir = config.models_dir.join(&args.name);
    if dir.exists() && !args.force {
        bail!(
            "pack {:?} exists ({}): pick another --name, or pass --force to replace it",
            args.name,
            dir.display()
        );
    }
    // The pairs first: a file with too few is refused before any model runs.
    let pairs = read_pairs(
        &args.calibrate,
        &pairs_root(&args.calibrate, args.root.as_deref()),
    )?;
    let (same, different) = count(&pairs);
    ensure!(
        same >= MIN_GENUINE && different >= MIN_IMPOSTOR,
        "{}: {same} same-person and {different} different-person pairs (child rows aside); \
         the fit needs at least {MIN_GENUINE} and {MIN_IMPOSTOR} (docs/packs.md)",
        args.calibrate.display()
    );
    let base = Pack::load(&config.models_dir, &args.base)
        .with_context(|| format!("the base pack {:?} (its detector and age model)", args.base))?;
    let (file, bytes, probed) = read_embedder(&args.embedder, args.size)?;
    let sha256 = hex::encode(Sha256::digest(&bytes));
    let template = match &args.template[..] {
        [] => ARCFACE_112.map(|[x, y]| {
            let k = probed.size as f32 / 112.0;
            [x * k, y * k]
        }),
        t if t.len() == 10 => std::array::from_fn(|i| [t[2 * i], t[2 * i + 1]]),
        t => bail!(
            "--template: give 10 numbers (x,y of five points), not {}",
            t.len()
        ),
    };
    let embedder = EmbedderSpec {
        file: file.clone(),
        sha256: sha256.clone(),
        input: probed.input.clone(),
        output: probed.output.clone(),
        size: probed.size,
        mean: per_channel("mean", &args.mean, 127.5)?,
        std: per_channel("std", &args.std, 127.5)?,
        dim: probed.dim,
        template,
        antialias: args.antialias,
        layout: probed.layout,
    };
    ensure!(
        embedder.std.iter().all(|s| *s != 0.0),
        "--std: must not be 0"
    );
    eprintln!(
        "{}: input {:?} {} {}x{}, output {:?} {} values, sha256 {sha256}",
        args.embedder.display(),
        embedder.input,
        embedder.layout,
        embedder.size,
        embedder.size,
        embedder.output,
        embedder.dim
    );
    let mut manifest = base.manifest.clone();
    manifest.name = args.name.clone();
    manifest.embedder = embedder;
    let candidate = Pack {
        dir: dir.clone(),
        manifest,
        detector_bytes: base.detector_bytes.clone(),
        embedder_bytes: bytes.clone().into(),
        age_bytes: base.age_bytes.clone(),
    };

    let images: Vec<PathBuf> = pairs
        .iter()
        .filter(|p| !p.child)
        .flat_map(|p| [p.a.clone(), p.b.clone()])
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    eprintln!(
        "fitting on {same} same-person and {different} different-person pairs over {} images",
        images.len()
    );
    let analyses = parallel_analyze(&candidate, &images, config.workers, Depth::Embeddings)?;
    let mut faces = Vec::new();
    for path in &images {
        match &analyses[path] {
            Err(e) => bail!("{}: {e}", path.display()),
            Ok(a) => {
                if let Some(e) = a.embeddings.first() {
                    faces.push((path.as_path(), e.as_slice()));
                }
            }
        }
    }
    check_embeddings(&faces)?;
    let get = |p: &PathBuf| analyses[p].as_ref().expect("errors handled above");
    let policy = Policy::new(
        base.manifest.calibration.clone(),
        base.manifest.age.as_ref(),
    );
    let (mut genuine, mut impostor) = (Vec::new(), Vec::new());
    let (mut genuine_noface, mut impostor_noface) = (0usize, 0usize);
    for p in pairs.iter().filter(|p| !p.child) {
        let c = score(&policy, get(&p.a), get(&p.b), StageTimings::default());
        match (c.cosine, p.same) {
            (Some(x), true) => genuine.push(x as f64),
            (Some(x), false) => impostor.push(x as f64),
            (None, true) => genuine_noface += 1,
            (None, false) => impostor_noface += 1,
        }
    }
    ensure!(
        genuine.len() >= MIN_GENUINE && impostor.len() >= MIN_IMPOSTOR,
        "{}: faces were found on both photos of only {} same-person and {} different-person pairs; \
         the fit needs at least {MIN_GENUINE} and {MIN_IMPOSTOR}",
        args.calibrate.display(),
        genuine.len(),
        impostor.len()
    );
    let (mut cal, report) = calibration::fit(&genuine, &impostor)?;
    let tar = tar_at_fmr(&genuine, &impostor, 1e-3);
    let false_matches = (report.fmr_at_80 * impostor.len() as f64).round() as usize;
    let false_non_matches = (report.fnmr_at_80 * genuine.len() as f64).round() as usize;
    ensure!(
        1.0 - report.fnmr_at_80 >= MIN_TAR_AT_80,
        "the fit does not separate the calibration pairs: with 80 put above every different-person pair \
         (cosine {:.4}), only {:.1} % of same-person pairs reach 80 ({false_non_matches} of {} fall below); \
         the floor is {:.0} %. Check the template and normalisation (--template, --mean, --std) or the pairs",
        report.cosine_at_80,
        100.0 * (1.0 - report.fnmr_at_80),
        genuine.len(),
        100.0 * MIN_TAR_AT_80
    );
    cal.extra.insert(
        "fitted_on".into(),
        serde_json::json!(args.calibrate.display().to_string()),
    );
    cal.extra
        .insert("tar_at_fmr_1e3".into(), serde_json::json!(tar));

    let licence_text = args
        .licence
        .clone()
        .unwrap_or_else(|| "not stated by the operator".into());
    // Through text: f32 fields (template, mean) keep their short form (38.2946, not 38.29460144042969).
    let mut value: serde_json::Value =
        serde_json::from_str(&serde_json::to_string(&candidate.manifest)?)?;
    value["calibration"] = serde_json::to_value(&cal)?;
    value["description"] = serde_json::json!(format!(
        "Imported pack. {} detector and age model from pack {:?} + {file} ({}x{} {}, {}-d, cosine), calibrated on {}.",
        base.manifest.detector.file,
        args.base,
        candidate.manifest.embedder.size,
        candidate.manifest.embedder.size,
        candidate.manifest.embedder.layout,
        candidate.manifest.embedder.dim,
        args.calibrate.display()
    ));
    // The detector and age blocks verbatim (fields this version does not read are kept).
    let base_json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(
        Pack::manifest_path(&config.models_dir, &args.base),
    )?)?;
    for block in ["detector", "age"] {
        if let Some(b) = base_json.get(block) {
            value[block] = b.clone();
        }
    }
    let base_licence = base.manifest.extra.get("licence");
    let part = |k: &str| {
        base_licence
            .and_then(|l| l.get(k))
            .cloned()
            .unwrap_or(serde_json::Value::Null)
    };
    value["licence"] = serde_json::json!({
        "detector": part("detector"),
        "age": part("age"),
        "embedder": licence_text,
        "commercial": args.commercial.as_str(),
    });
    value["imported"] = serde_json::json!({
        "embedder_from": args.embedder.display().to_string(),
        "embedder_sha256": sha256,
        "detector_and_age_from": args.base,
    });
    if let Some(obj) = value.as_object_mut() {
        obj.remove("provenance");
    }

    // Written beside the target and renamed into place: a failed write leaves no half pack.
    let staging =
        config
            .models_dir
            .join(format!(".{}.importing-{}", args.name, std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging)
        .with_context(|| format!("cannot create {}", staging.display()))?;
    let write = |name: &str, bytes: &[u8]| {
        std::fs::write(staging.join(name), bytes)
            .with_context(|| format!("cannot write {}", staging.join(name).display()))
    };
    write(&file, &bytes)?;
    write(&base.manifest.detector.file, &base.detector_bytes)?;
    if let (Some(spec), Some(age)) = (&base.manifest.age, &base.age_bytes) {
        write(&spec.file, age)?;
    }
    write(
        "manifest.json",
        (serde_json::to_string_pretty(&value)? + "\n").as_bytes(),
    )?;
    if dir.exists() {
        std::fs::remove_dir_all(&dir)
            .with_context(|| format!("cannot replace {}", dir.display()))?;
    }
    std::fs::rename(&staging, &dir)
        .with_context(|| format!("cannot move {} to {}", staging.display(), dir.display()))?;
    // The pack as the server will read it (sha256s, calibration).
    Pack::load(&config.models_dir, &args.name)?;

    let e = &candidate.manifest.embedder;
    let summary = Summary {
        pack: args.name.clone(),
        dir: dir.display().to_string(),
        embedder: serde_json::json!({"file": file, "sha256": sha256, "input": e.input,
            "layout": e.layout.to_string(), "size": e.size, "output": e.output, "dim": e.dim,
            "mean": e.mean, "std": e.std}),
        pairs: serde_json::json!({"genuine": genuine.len(), "impostor": impostor.len(),
            "genuineNoFace": genuine_noface, "impostorNoFace": impostor_noface}),
        false_matches_at_80: false_matches,
        false_non_matches_at_80: false_non_matches,
        fmr_at_80: report.fmr_at_80,
        fnmr_at_80: report.fnmr_at_80,
        tar_at_fmr_1e3: tar,
        cosine_at: serde_json::json!({"20": report.cosine_at_20, "80": report.cosine_at_80,
            "95": report.cosine_at_95}),
        cosine: serde_json::json!({
            "genuineMin": genuine.iter().copied().fold(f64::INFINITY, f64::min),
            "impostorMax": impostor.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        }),
        licence: serde_json::json!({"embedder": value["licence"]["embedder"],
            "commercial": args.commercial.as_str()}),
    };
    println!("{}", serde_json::to_string_pretty(&summary)?);
    eprintln!(
        "at 80: {false_matches} false matches of {} different-person pairs, {false_non_matches} false non-matches of {} same-person pairs; TAR at FMR 1e-3: {:.4}",
        impostor.len(),
        genuine.len(),
        tar
    );
    eprintln!(
        "serve it with FACECOMPARE_PACK={}{}",
        args.name,
        if args.commercial == Commercial::Yes {
            String::new()
        } else {
            format!(
                " and FACECOMPARE_PACK_LICENCE_ACK={} (commercial use recorded as {:?})",
                args.name,
                args.commercial.as_str()
            )
        }
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tar_at_fmr_lets_the_allowed_impostors_through() {
        let impostor: Vec<f64> = (0..2000).map(|i| i as f64 / 4000.0).collect(); // max 0.49975
        let genuine = [0.4994, 0.4996, 0.6, 0.7];
        // 2 impostors allowed: the cut is the third highest (0.49925).
        assert_eq!(tar_at_fmr(&genuine, &impostor, 1e-3), 1.0);
        assert_eq!(tar_at_fmr(&genuine, &impostor, 0.0), 0.5);
    }

    #[test]
    fn constant_and_nan_embeddings_are_refused() {
        let (a, b) = (Path::new("a.jpg"), Path::new("b.jpg"));
        let same = [0.6f32, 0.8];
        let e = check_embeddings(&[(a, &same[..]), (b, &same[..])]).unwrap_err();
        assert!(e.to_string().contains("same embedding"), "{e}");
        let nan = [f32::NAN, 0.0];
        let e = check_embeddings(&[(a, &same[..]), (b, &nan[..])]).unwrap_err();
        assert!(
            e.to_string().contains("NaN") && e.to_string().contains("b.jpg"),
            "{e}"
        );
        check_embeddings(&[(a, &same[..]), (b, &[0.8, 0.6][..])]).unwrap();
    }
}

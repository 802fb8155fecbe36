//! Local face tools: `compare` (the API's JSON for two files), `calibrate`
//! (refit a pack's confidence map on labelled pairs) and `bench` (per-stage
//! timings). They run the same pipeline as the server, without HTTP.
use std::{
    collections::{BTreeSet, HashMap},
    io::Cursor,
    path::{Path, PathBuf},
    sync::{
        Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, bail};

use super::{BenchArgs, CalibrateArgs, CompareArgs};
use crate::{
    config::Config,
    faces::{
        StageTimings,
        calibration::{self, Map, Policy},
        pack::Pack,
        pipeline::{Analysis, AnalyzeError, MAX_TARGET_FACES, Models},
        quality, score,
    },
};

fn load_pack(pack: &Option<String>) -> anyhow::Result<(Config, Pack)> {
    let config = Config::from_env()?;
    let name = pack.clone().unwrap_or_else(|| config.pack.clone());
    let pack = Pack::load(&config.models_dir, &name)?;
    Ok((config, pack))
}

fn analyze_file(models: &mut Models, path: &Path, max_faces: usize) -> anyhow::Result<Analysis> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    models.analyze(&bytes, max_faces).map_err(|e| match e {
        AnalyzeError::Decode(d) => anyhow::anyhow!("{}: {d} ({})", path.display(), d.code()),
        AnalyzeError::Engine(e) => e.context(format!("{}", path.display())),
        e @ AnalyzeError::Abandoned => anyhow::anyhow!("{}: {e}", path.display()),
    })
}

pub fn compare(args: &CompareArgs) -> anyhow::Result<()> {
    let (config, pack) = load_pack(&args.pack)?;
    let threshold = args.threshold.unwrap_or(config.threshold);
    if !(0.0..=100.0).contains(&threshold) {
        bail!("--threshold {threshold}: must be between 0 and 100");
    }
    let mut models = Models::new(&pack, config.intra_threads)?;
    let source = analyze_file(&mut models, &args.a, 1)?;
    let target = analyze_file(&mut models, &args.b, MAX_TARGET_FACES)?;
    let policy = Policy::new(
        pack.manifest.calibration.clone(),
        pack.manifest.age.as_ref(),
    );
    let comparison = score(&policy, &source, &target, StageTimings::default());
    if args.explain {
        let faces = |a: &Analysis| {
            a.faces
                .iter()
                .enumerate()
                .map(|(i, f)| {
                    serde_json::json!({"box": f.bbox, "score": f.score, "age": a.ages.get(i)})
                })
                .collect::<Vec<_>>()
        };
        let mut explain = serde_json::json!({
            "pack": pack.manifest.name,
            "source": {"faces": faces(&source), "rotation": source.rotation},
            "target": {"faces": faces(&target), "rotation": target.rotation},
            "decidingTargetFace": comparison.target_face,
            "ages": [comparison.ages.0, comparison.ages.1],
            "cosine": comparison.cosine,
            "calibration": comparison.map,
            "childAgeLimit": pack.manifest.age.as_ref().map(|a| a.child_age_limit),
        });
        explain["quality"] = quality_explain(&source, &target);
        eprintln!("{}", serde_json::to_string_pretty(&explain)?);
    }
    println!(
        "{}",
        serde_json::to_string(&comparison.response(threshold))?
    );
    Ok(())
}

/// `--explain`'s quality part: each face's measures (docs/quality.md), the
/// QualityFilter levels it passes and what keeps it from HIGH.
fn quality_explain(source: &Analysis, target: &Analysis) -> serde_json::Value {
    let faces = |a: &Analysis| {
        a.qualities
            .iter()
            .map(|q| {
                let passes: Vec<&str> = [
                    ("LOW", &quality::LOW),
                    ("MEDIUM", &quality::MEDIUM),
                    ("HIGH", &quality::HIGH),
                ]
                .into_iter()
                .filter(|(_, l)| q.passes(l))
                .map(|(name, _)| name)
                .collect();
                let tenth = |v: f32| (v as f64 * 10.0).round() / 10.0;
                serde_json::json!({
                    "brightness": tenth(q.brightness),
                    "sharpness": tenth(q.sharpness),
                    "size": q.size.round() as f64,
                    "pose": {
                        "roll": tenth(q.pose.roll),
                        "yaw": tenth(q.pose.yaw),
                        "pitch": tenth(q.pose.pitch),
                    },
                    "passes": passes,
                    "problems": q.problems(&quality::HIGH),
                })
            })
            .collect::<Vec<_>>()
    };
    serde_json::json!({"source": faces(source), "target": faces(target)})
}

/// Analyses `paths` on `workers` threads, each with its own models.
fn parallel_analyze(
    pack: &Pack,
    paths: &[PathBuf],
    workers: usize,
) -> anyhow::Result<HashMap<PathBuf, Result<Analysis, String>>> {
    let next = AtomicUsize::new(0);
    let out = Mutex::new(HashMap::new());
    let done = AtomicUsize::new(0);
    std::thread::scope(|scope| -> anyhow::Result<()> {
        let mut handles = Vec::new();
        for _ in 0..workers.max(1) {
            let mut models = Models::new(pack, 1)?;
            let (next, out, done) = (&next, &out, &done);
            handles.push(scope.spawn(move || {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(path) = paths.get(i) else { return };
                    let r = analyze_file(&mut models, path, MAX_TARGET_FACES)
                        .map_err(|e| format!("{e:#}"));
                    out.lock().unwrap().insert(path.clone(), r);
                    let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                    if n % 25 == 0 || n == paths.len() {
                        eprintln!("  analysed {n}/{} images", paths.len());
                    }
                }
            }));
        }
        for h in handles {
            h.join()
                .map_err(|_| anyhow::anyhow!("an analysis thread panicked"))?;
        }
        Ok(())
    })?;
    Ok(out.into_inner().unwrap())
}

struct Pair {
    a: PathBuf,
    b: PathBuf,
    same: bool,
    /// The optional `child` column: 1 when both photos show children.
    child: bool,
}

fn read_pairs(csv: &Path, root: &Path) -> anyhow::Result<Vec<Pair>> {
    let text =
        std::fs::read_to_string(csv).with_context(|| format!("cannot read {}", csv.display()))?;
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<String> = lines
        .next()
        .context("empty CSV")?
        .split(',')
        .map(|h| h.trim().to_lowercase())
        .collect();
    let col = |names: &[&str]| header.iter().position(|h| names.contains(&h.as_str()));
    let (Some(ia), Some(ib), Some(is)) = (
        col(&["a", "file_x"]),
        col(&["b", "file_y"]),
        col(&["same", "decision"]),
    ) else {
        bail!(
            "{}: expected columns a,b,same (or file_x,file_y,Decision)",
            csv.display()
        );
    };
    let ic = col(&["child"]);
    let mut pairs = Vec::new();
    for (n, line) in lines.enumerate() {
        let f: Vec<&str> = line.split(',').map(str::trim).collect();
        let get = |i: usize| {
            f.get(i)
                .copied()
                .with_context(|| format!("{} line {}: too few columns", csv.display(), n + 2))
        };
        let same = match get(is)?.to_lowercase().as_str() {
            "1" | "yes" | "true" => true,
            "0" | "no" | "false" => false,
            other => bail!("{} line {}: same = {other:?}", csv.display(), n + 2),
        };
        let child = match ic.map(get).transpose()?.map(str::to_lowercase).as_deref() {
            None | Some("" | "0" | "no" | "false") => false,
            Some("1" | "yes" | "true") => true,
            Some(other) => bail!("{} line {}: child = {other:?}", csv.display(), n + 2),
        };
        pairs.push(Pair {
            a: root.join(get(ia)?),
            b: root.join(get(ib)?),
            same,
            child,
        });
    }
    Ok(pairs)
}

pub fn calibrate(args: &CalibrateArgs) -> anyhow::Result<()> {
    let (config, pack) = load_pack(&args.pack)?;
    let root = args.root.clone().unwrap_or_else(|| {
        args.pairs
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default()
    });
    let pairs = read_pairs(&args.pairs, &root)?;
    let images: Vec<PathBuf> = pairs
        .iter()
        .flat_map(|p| [p.a.clone(), p.b.clone()])
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    eprintln!(
        "pack {}: {} pairs over {} images",
        pack.manifest.name,
        pairs.len(),
        images.len()
    );
    let analyses = parallel_analyze(&pack, &images, config.workers)?;
    for (path, r) in &analyses {
        if let Err(e) = r {
            bail!("{}: {e}", path.display());
        }
    }
    let get = |p: &PathBuf| analyses[p].as_ref().expect("errors handled above");
    let (mut genuine, mut impostor) = (Vec::new(), Vec::new());
    let (mut genuine_noface, mut impostor_noface) = (0usize, 0usize);
    // How the calibration in force (before any refit) does on these pairs.
    let (mut shipped_fm, mut shipped_fnm) = (0usize, 0usize);
    // Rows marked child-vs-child, reported apart: (impostors, false matches, child map used).
    let (mut child_imp, mut child_fm, mut child_map) = (0usize, 0usize, 0usize);
    let mut under_limit = 0usize;
    let policy = Policy::new(
        pack.manifest.calibration.clone(),
        pack.manifest.age.as_ref(),
    );
    let limit = pack.manifest.age.as_ref().map(|a| a.child_age_limit);
    for p in &pairs {
        let c = score(&policy, get(&p.a), get(&p.b), StageTimings::default());
        let is_match = c.response(80.0).is_match;
        if p.child {
            child_imp += !p.same as usize;
            child_fm += (is_match && !p.same) as usize;
            child_map += (c.map == Some(Map::Child)) as usize;
            continue;
        }
        shipped_fm += (is_match && !p.same) as usize;
        shipped_fnm += (!is_match && p.same) as usize;
        match (c.cosine, p.same) {
            (Some(x), true) => genuine.push(x as f64),
            (Some(x), false) => impostor.push(x as f64),
            (None, true) => genuine_noface += 1,
            (None, false) => impostor_noface += 1,
        }
    }
    // Faces (largest per image) the age model puts under the child limit.
    let mut ages: Vec<f64> = Vec::new();
    for a in analyses.values().flatten() {
        if let Some(&age) = a.ages.first() {
            ages.push(age as f64);
            under_limit += limit.is_some_and(|l| age < l) as usize;
        }
    }
    ages.sort_by(f64::total_cmp);
    let (mut cal, report) = calibration::fit(&genuine, &impostor)?;
    cal.extra.insert(
        "fitted_on".into(),
        serde_json::json!(args.pairs.display().to_string()),
    );
    let with_noface = |fnmr: f64| {
        (fnmr * genuine.len() as f64 + genuine_noface as f64)
            / (genuine.len() + genuine_noface) as f64
    };
    let mut sorted_g = genuine.clone();
    sorted_g.sort_by(f64::total_cmp);
    let mut sorted_i = impostor.clone();
    sorted_i.sort_by(f64::total_cmp);
    let summary = serde_json::json!({
        "pack": pack.manifest.name,
        "calibration": {"kind": cal.kind, "points": cal.points},
        "pairs": {"genuine": genuine.len(), "impostor": impostor.len(),
                  "genuineNoFace": genuine_noface, "impostorNoFace": impostor_noface},
        "cosine": {
            "genuineP5": calibration::quantile(&sorted_g, 0.05), "genuineMin": sorted_g.first(),
            "impostorP99": calibration::quantile(&sorted_i, 0.99), "impostorMax": sorted_i.last(),
        },
        "current": {"falseMatchesAt80": shipped_fm, "falseNonMatchesAt80": shipped_fnm},
        "childRows": {"impostor": child_imp, "falseMatchesAt80": child_fm, "decidedWithChildMap": child_map},
        "ages": {"faces": ages.len(), "underChildLimit": under_limit, "min": ages.first(),
                 "p5": calibration::quantile(&ages, 0.05), "median": calibration::quantile(&ages, 0.5)},
        "refitAt80": {"fmr": report.fmr_at_80, "fnmr": report.fnmr_at_80, "fnmrCountingNoFace": with_noface(report.fnmr_at_80),
                  "falseMatches": (report.fmr_at_80 * impostor.len() as f64).round()},
        "confidence": {"genuineP5": report.genuine_p5_confidence, "impostorP99": report.impostor_p99_confidence,
                        "genuineAbove95": report.genuine_above_95, "impostorBelow20": report.impostor_below_20},
        "cosineAt": {"20": report.cosine_at_20, "80": report.cosine_at_80, "95": report.cosine_at_95,
                     "normalFit1e-4": report.cosine_at_normal_fmr_1e4},
    });
    println!("{}", serde_json::to_string_pretty(&summary)?);
    if args.write {
        let path = Pack::write_calibration(&config.models_dir, &pack.manifest.name, &cal)?;
        eprintln!("wrote the calibration into {}", path.display());
    }
    Ok(())
}

fn reencode(path: &Path, megapixels: f64) -> anyhow::Result<Vec<u8>> {
    let img = image::open(path)
        .with_context(|| format!("cannot open {}", path.display()))?
        .to_rgb8();
    let scale = (megapixels * 1e6 / (img.width() as f64 * img.height() as f64)).sqrt();
    let (w, h) = (
        (img.width() as f64 * scale).round() as u32,
        (img.height() as f64 * scale).round() as u32,
    );
    let resized = image::imageops::resize(&img, w, h, image::imageops::FilterType::Triangle);
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut Cursor::new(&mut out), 90)
        .encode_image(&resized)?;
    Ok(out)
}

fn median_ms(mut v: Vec<Duration>) -> f64 {
    v.sort();
    v[v.len() / 2].as_secs_f64() * 1e3
}

pub fn bench(args: &BenchArgs) -> anyhow::Result<()> {
    let (config, pack) = load_pack(&args.pack)?;
    let mut models = Models::new(&pack, config.intra_threads)?;
    if args.no_age {
        models.age = None;
    }
    let mut inputs: Vec<(String, Vec<u8>)> = Vec::new();
    for path in &args.images {
        if args.megapixels.is_empty() {
            inputs.push((path.display().to_string(), std::fs::read(path)?));
        }
        for &mp in &args.megapixels {
            inputs.push((format!("{} @ {mp} MP", path.display()), reencode(path, mp)?));
        }
    }
    println!(
        "pack {} — one worker, {} intra-op thread(s), median of {} runs (ms)",
        pack.manifest.name, config.intra_threads, args.iterations
    );
    println!(
        "{:<48} {:>11} {:>6} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "image", "pixels", "faces", "decode", "detect", "embed", "age", "total"
    );
    for (name, bytes) in &inputs {
        let first = models
            .analyze(bytes, MAX_TARGET_FACES)
            .map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
        let (mut d, mut t, mut e, mut g, mut all) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for _ in 0..args.iterations.max(1) {
            let t0 = Instant::now();
            let a = models
                .analyze(bytes, MAX_TARGET_FACES)
                .map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
            all.push(t0.elapsed());
            d.push(a.decode);
            t.push(a.detect);
            e.push(a.embed);
            g.push(a.age);
        }
        let dims = image::ImageReader::new(Cursor::new(bytes))
            .with_guessed_format()?
            .into_dimensions()?;
        println!(
            "{:<48} {:>11} {:>6} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>8.1}",
            name,
            format!("{}x{}", dims.0, dims.1),
            first.faces.len(),
            median_ms(d),
            median_ms(t),
            median_ms(e),
            median_ms(g),
            median_ms(all)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_csv_with_and_without_the_child_column() {
        let dir = std::env::temp_dir().join(format!("fc-pairs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let csv = dir.join("pairs.csv");
        std::fs::write(&csv, "a,b,same,child\nx.jpg,y.jpg,0,1\nx.jpg,z.jpg,1,0\n").unwrap();
        let p = read_pairs(&csv, &dir).unwrap();
        assert!(p[0].child && !p[0].same);
        assert!(!p[1].child && p[1].same);
        std::fs::write(&csv, "a,b,same\nx.jpg,y.jpg,0\n").unwrap();
        assert!(!read_pairs(&csv, &dir).unwrap()[0].child);
        std::fs::write(&csv, "a,b,same,child\nx.jpg,y.jpg,0,maybe\n").unwrap();
        assert!(read_pairs(&csv, &dir).is_err());
        std::fs::remove_dir_all(&dir).ok();
    }
}

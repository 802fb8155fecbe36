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
        Comparison, StageTimings,
        age_pass::{self, AgePass, PairAges, Plan},
        calibration::{self, Map, Policy},
        embed::cosine,
        pack::Pack,
        pipeline::{Analysis, AnalyzeError, Depth, MAX_TARGET_FACES, Models},
        quality, score, score_with,
    },
};

fn load_pack(pack: &Option<String>) -> anyhow::Result<(Config, Pack)> {
    let config = Config::from_env()?;
    let name = pack.clone().unwrap_or_else(|| config.pack.clone());
    let pack = Pack::load(&config.models_dir, &name)?;
    pack.manifest
        .licence_gate(config.pack_licence_ack.as_deref())?;
    Ok((config, pack))
}

fn analyze_file_at(
    models: &mut Models,
    path: &Path,
    max_faces: usize,
    depth: Depth,
) -> anyhow::Result<Analysis> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let idle = std::sync::atomic::AtomicBool::new(false);
    models
        .analyze_unless(&bytes, max_faces, depth, &idle, None)
        .map_err(|e| match e {
            AnalyzeError::Decode(d) => anyhow::anyhow!("{}: {d} ({})", path.display(), d.code()),
            AnalyzeError::Engine(e) => e.context(format!("{}", path.display())),
            e @ AnalyzeError::Abandoned => anyhow::anyhow!("{}: {e}", path.display()),
        })
}

pub fn compare(args: &CompareArgs) -> anyhow::Result<()> {
    let (config, pack) = load_pack(&args.pack)?;
    let threshold = args.threshold.unwrap_or(config.threshold);
    if !crate::config::valid_threshold(threshold) {
        bail!("--threshold {threshold}: must be between 0 and 100");
    }
    let mut models = Models::new(&pack, config.intra_threads)?;
    // As the server: embeddings first, the age pass only where it can
    // change the decision at the threshold.
    let source = analyze_file_at(&mut models, &args.a, 1, Depth::Embeddings)?;
    let target = analyze_file_at(&mut models, &args.b, MAX_TARGET_FACES, Depth::Embeddings)?;
    let policy = Policy::new(
        pack.manifest.calibration.clone(),
        pack.manifest.age.as_ref(),
    );
    let (ages, pass) = match age_pass::plan(&policy, &source, &target, threshold) {
        Plan::Skip(pass) => (PairAges::default(), pass),
        Plan::Run(job) => job.run(&mut models)?,
    };
    let comparison = score_with(
        &policy,
        &source,
        &target,
        &ages,
        pass,
        StageTimings::default(),
    );
    if args.explain {
        let faces = |r: &crate::faces::report::ImageReport, a: &Analysis| {
            r.faces
                .iter()
                .zip(&a.faces)
                .map(|(rf, f)| serde_json::json!({"box": f.bbox, "score": f.score, "age": rf.age}))
                .collect::<Vec<_>>()
        };
        let mut explain = serde_json::json!({
            "pack": pack.manifest.name,
            "threshold": threshold,
            "source": {"faces": faces(&comparison.source, &source), "rotation": source.rotation},
            "target": {"faces": faces(&comparison.target, &target), "rotation": target.rotation},
            "decidingTargetFace": comparison.target_face,
            "ages": [comparison.ages.0, comparison.ages.1],
            "cosine": comparison.cosine,
            "calibration": comparison.map,
            "childAgeLimit": pack.manifest.age.as_ref().map(|a| a.child_age_limit),
            "childAgeMargin": pack.manifest.age.as_ref().map(|a| a.child_age_margin),
            "agePass": explain_age_pass(&policy, &source, &target, &comparison, threshold),
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

/// Whether the age pass ran, why, and which faces' ages decided.
fn explain_age_pass(
    policy: &Policy,
    source: &Analysis,
    target: &Analysis,
    c: &Comparison,
    threshold: f64,
) -> serde_json::Value {
    let cosines: Vec<f32> = source
        .embeddings
        .first()
        .map(|s| target.embeddings.iter().map(|t| cosine(s, t)).collect())
        .unwrap_or_default();
    // Both maps' number for a target face: the ages decide only where they
    // fall on different sides of the threshold.
    let maps = |i: usize| {
        let cos = cosines[i];
        let child = policy
            .child
            .as_ref()
            .map(|r| r.map.confidence(cos).max(calibration::FLOOR));
        serde_json::json!({"targetFace": i, "cosine": cos,
            "adultConfidence": policy.adult_confidence(cos), "childConfidence": child})
    };
    let (ran, why, decided) = match &c.age_pass {
        AgePass::NoAgeModel => (
            false,
            "the pack has no age model: the adult map decides".to_string(),
            vec![],
        ),
        AgePass::NoFace => (
            false,
            "no face on one side: the ages have nothing to decide".into(),
            vec![],
        ),
        AgePass::Full => (true, "every face's age was estimated".into(), vec![]),
        AgePass::NotNeeded => (
            false,
            format!(
                "at threshold {threshold} the adult map and the child map decide every target face alike (see targetFaces): the ages cannot change the answer, the confidence is the adult map's"
            ),
            vec![],
        ),
        AgePass::Ran {
            target_faces,
            source_age,
            target_ages,
        } => {
            let why = format!(
                "target face(s) {target_faces:?}: their cosine is on different sides of threshold {threshold} on the adult map and on the child map, so the ages decide"
            );
            let decided = target_faces
                .iter()
                .zip(target_ages)
                .map(|(&i, &t)| {
                    let (conf, map) = policy.confidence(cosines[i], (Some(*source_age), t));
                    let mut v = maps(i);
                    v["sourceAge"] = serde_json::json!(source_age);
                    v["targetAge"] = serde_json::json!(t);
                    v["calibration"] = serde_json::json!(map);
                    v["confidence"] = serde_json::json!(conf);
                    v["isMatch"] = serde_json::json!(conf >= threshold);
                    v
                })
                .collect();
            let why = if target_ages.iter().all(Option::is_none) {
                format!(
                    "{why}; the source face is estimated {source_age:.1}, not under the child limit plus margin: no child pair is possible, so the target faces' ages were not estimated"
                )
            } else {
                why
            };
            (true, why, decided)
        }
    };
    serde_json::json!({
        "ran": ran,
        "why": why,
        "agesDecided": decided,
        "targetFaces": (0..cosines.len()).map(maps).collect::<Vec<_>>(),
    })
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
pub(super) fn parallel_analyze(
    pack: &Pack,
    paths: &[PathBuf],
    workers: usize,
    depth: Depth,
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
                    let r = analyze_file_at(&mut models, path, MAX_TARGET_FACES, depth)
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

pub(super) struct Pair {
    pub a: PathBuf,
    pub b: PathBuf,
    pub same: bool,
    /// The optional `child` column: 1 when both photos show children.
    pub child: bool,
}

/// Where a pairs file's image paths are relative to: `--root`, else the
/// file's own folder.
pub(super) fn pairs_root(csv: &Path, root: Option<&Path>) -> PathBuf {
    root.map(Path::to_path_buf)
        .or_else(|| csv.parent().map(Path::to_path_buf))
        .unwrap_or_default()
}

pub(super) fn read_pairs(csv: &Path, root: &Path) -> anyhow::Result<Vec<Pair>> {
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
    let pairs = read_pairs(&args.pairs, &pairs_root(&args.pairs, args.root.as_deref()))?;
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
    let analyses = parallel_analyze(&pack, &images, config.workers, Depth::Compare)?;
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
    // The same rule without the margin (both faces under the limit): what the margin costs here.
    let mut no_margin = policy.clone();
    if let Some(rule) = &mut no_margin.child {
        rule.margin = 0.0;
    }
    let (mut plain_fm, mut plain_fnm, mut margin_decided) = (0usize, 0usize, 0usize);
    // |age a − age b| of same-person pairs: the estimator's spread (plus the
    // years between the photos).
    let mut same_diff: Vec<f64> = Vec::new();
    for p in &pairs {
        let c = score(&policy, get(&p.a), get(&p.b), StageTimings::default());
        let is_match = c.response(80.0).is_match;
        let plain = score(&no_margin, get(&p.a), get(&p.b), StageTimings::default());
        margin_decided += (plain.map != c.map) as usize;
        if p.same
            && let (Some(a), Some(b)) = (get(&p.a).ages.first(), get(&p.b).ages.first())
        {
            same_diff.push((a - b).abs() as f64);
        }
        if p.child {
            child_imp += !p.same as usize;
            child_fm += (is_match && !p.same) as usize;
            child_map += (c.map == Some(Map::Child)) as usize;
            continue;
        }
        shipped_fm += (is_match && !p.same) as usize;
        shipped_fnm += (!is_match && p.same) as usize;
        let plain_match = plain.response(80.0).is_match;
        plain_fm += (plain_match && !p.same) as usize;
        plain_fnm += (!plain_match && p.same) as usize;
        match (c.cosine, p.same) {
            (Some(x), true) => genuine.push(x as f64),
            (Some(x), false) => impostor.push(x as f64),
            (None, true) => genuine_noface += 1,
            (None, false) => impostor_noface += 1,
        }
    }
    // Faces (largest per image) the age model puts under the child limit.
    let margin = pack.manifest.age.as_ref().map(|a| a.child_age_margin);
    let mut under_margin = 0usize;
    let mut ages: Vec<f64> = Vec::new();
    for a in analyses.values().flatten() {
        if let Some(&age) = a.ages.first() {
            ages.push(age as f64);
            under_limit += limit.is_some_and(|l| age < l) as usize;
            under_margin += limit.zip(margin).is_some_and(|(l, m)| age < l + m) as usize;
        }
    }
    ages.sort_by(f64::total_cmp);
    same_diff.sort_by(f64::total_cmp);
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
        "withoutChildAgeMargin": {"falseMatchesAt80": plain_fm, "falseNonMatchesAt80": plain_fnm,
                                  "pairsWhoseMapTheMarginChanges": margin_decided},
        "childRows": {"impostor": child_imp, "falseMatchesAt80": child_fm, "decidedWithChildMap": child_map},
        "ages": {"faces": ages.len(), "underChildLimit": under_limit,
                 "underChildLimitPlusMargin": under_margin, "min": ages.first(),
                 "p5": calibration::quantile(&ages, 0.05), "median": calibration::quantile(&ages, 0.5),
                 "samePersonAbsDifference": {"pairs": same_diff.len(),
                     "median": calibration::quantile(&same_diff, 0.5),
                     "p90": calibration::quantile(&same_diff, 0.9), "max": same_diff.last()}},
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
    let img = image::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    Ok(crate::faces::reencode::scaled_jpeg(&img, megapixels)?)
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
    if args.images.len() >= 2 && models.age.is_some() {
        bench_compares(
            &mut models,
            &pack,
            &inputs,
            args.megapixels.len().max(1),
            args.iterations,
            config.threshold,
        )?;
    }
    Ok(())
}

/// The first two images compared at each size, as the server does (the age
/// pass only where it can change the decision at `threshold`) and with the
/// age pass on every face (the rule before), one after the other on one
/// worker (the server analyses the two images in parallel).
fn bench_compares(
    models: &mut Models,
    pack: &Pack,
    inputs: &[(String, Vec<u8>)],
    per_image: usize,
    iterations: usize,
    threshold: f64,
) -> anyhow::Result<()> {
    let policy = Policy::new(
        pack.manifest.calibration.clone(),
        pack.manifest.age.as_ref(),
    );
    let idle = std::sync::atomic::AtomicBool::new(false);
    println!(
        "{:<48} {:>14} {:>14} {:>9}",
        format!("compare (threshold {threshold})"),
        "age if needed",
        "age always",
        "age ran"
    );
    for k in 0..per_image {
        let (Some((name, a)), Some((_, b))) = (inputs.get(k), inputs.get(per_image + k)) else {
            break;
        };
        let (mut lazy, mut full, mut ran) = (Vec::new(), Vec::new(), false);
        for _ in 0..iterations.max(1) {
            let t0 = Instant::now();
            let s = models.analyze_unless(a, 1, Depth::Embeddings, &idle, None)?;
            let t = models.analyze_unless(b, MAX_TARGET_FACES, Depth::Embeddings, &idle, None)?;
            ran = match age_pass::plan(&policy, &s, &t, threshold) {
                Plan::Skip(_) => false,
                Plan::Run(job) => {
                    job.run(models)?;
                    true
                }
            };
            lazy.push(t0.elapsed());
            let t0 = Instant::now();
            models.analyze(a, 1)?;
            models.analyze(b, MAX_TARGET_FACES)?;
            full.push(t0.elapsed());
        }
        println!(
            "{:<48} {:>14.1} {:>14.1} {:>9}",
            format!("{name} vs the second"),
            median_ms(lazy),
            median_ms(full),
            if ran { "yes" } else { "no" }
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

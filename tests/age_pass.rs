//! The child rule with its margin on real embeddings, and the lazy age pass
//! (ages only where they can change the decision) against the age pass on
//! every face, on every pair of `../shared/eval/calib`, `../shared/eval/deepface`
//! and the fixtures at thresholds 70, 80 and 90. Each image is analysed once
//! (embeddings and every face's age); both paths are then evaluated on those
//! numbers, so the test checks the decision logic pair by pair, fast.
mod common;

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    sync::{
        Mutex,
        atomic::{AtomicUsize, Ordering},
    },
};

use facecompare::faces::{
    Side, StageTimings,
    age_pass::{self, AgePass, PairAges, Plan},
    calibration::{Map, Policy},
    embed::cosine,
    pack::Pack,
    pipeline::{Analysis, MAX_TARGET_FACES, Models},
    score, score_with,
};

use common::{
    eval_dir, fixture_dir, load_pack as pack, pack_policy as policy, read_fixture as read,
    start_engine,
};

/// The source side of a compare: its largest face only.
fn as_source(a: &Analysis) -> Analysis {
    let mut s = a.clone();
    s.faces.truncate(1);
    s.embeddings.truncate(1);
    s.ages.truncate(1);
    s
}

fn with_ages(mut a: Analysis, age: f32) -> Analysis {
    a.ages = vec![age; a.faces.len()];
    a
}

#[test]
fn both_shipped_packs_carry_the_margin() {
    for name in ["mobilefacenet", "dlib"] {
        let age = pack(name).manifest.age.expect("age model in every pack");
        assert_eq!(age.child_age_limit, 18.0, "{name}");
        assert_eq!(age.child_age_margin, 7.0, "{name}");
    }
}

#[test]
fn child_rule_with_its_margin_on_real_embeddings() {
    let pack = pack("mobilefacenet");
    let policy = policy(&pack);
    let rule = policy.child.clone().expect("the pack defines a child map");
    let mut m = Models::new(&pack, 1).unwrap();
    let obama = m
        .analyze(&read(&fixture_dir().join("obama.jpg")), 1)
        .unwrap();
    let obama2 = m
        .analyze(&read(&fixture_dir().join("obama2.jpg")), 1)
        .unwrap();
    let same = cosine(&obama.embeddings[0], &obama2.embeddings[0]);
    // A threshold between the two maps' numbers for this pair: the ages decide.
    let (adult, child) = (
        policy.adult_confidence(same),
        rule.map.confidence(same).max(0.01),
    );
    let mid = (adult + child) / 2.0;
    assert!(
        policy.ages_matter(same, mid),
        "cosine {same}: {adult} / {child}"
    );
    let t = StageTimings::default;
    let map_for = |sa: f32, ta: f32| {
        let c = score(
            &policy,
            &with_ages(obama.clone(), sa),
            &with_ages(obama2.clone(), ta),
            t(),
        );
        (c.map.unwrap(), c.confidence)
    };
    let edge = rule.limit + rule.margin;
    // One child and one face just over 18: the child map, either way round.
    for (sa, ta) in [(9.0, 18.5), (18.5, 9.0), (12.0, 24.1), (17.9, 20.0)] {
        let (map, conf) = map_for(sa, ta);
        assert_eq!(map, Map::Child, "{sa} vs {ta}");
        assert_eq!(conf, rule.map.confidence(same).max(0.01));
        assert!(conf < mid, "{sa} vs {ta}: {conf}");
    }
    // Both over 18: the adult map, young adults are not penalised.
    for (sa, ta) in [(18.0, 18.0), (18.5, 19.0), (19.0, 24.0), (30.0, 20.0)] {
        let (map, conf) = map_for(sa, ta);
        assert_eq!(map, Map::Adult, "{sa} vs {ta}");
        assert_eq!(conf, policy.adult_confidence(same));
        assert!(conf >= mid, "{sa} vs {ta}: {conf}");
    }
    // The margin's edge: under limit + margin the child map, at it the adult.
    assert_eq!(map_for(10.0, edge - 0.01).0, Map::Child);
    assert_eq!(map_for(edge - 0.01, 10.0).0, Map::Child);
    assert_eq!(map_for(10.0, edge).0, Map::Adult);
    assert_eq!(map_for(edge, 10.0).0, Map::Adult);
    // And the limit's: the younger face must be under 18.
    assert_eq!(map_for(rule.limit - 0.01, edge - 0.01).0, Map::Child);
    assert_eq!(map_for(rule.limit, edge - 0.01).0, Map::Adult);
    // The real estimates of these adults: the adult map.
    assert_eq!(score(&policy, &obama, &obama2, t()).map, Some(Map::Adult));
}

/// What the engine does, on precomputed ages: plan on the cosines, run the
/// age pass only if planned, with `ages` standing in for the model.
fn lazy(
    policy: &Policy,
    source: &Analysis,
    target: &Analysis,
    threshold: f64,
) -> facecompare::faces::Comparison {
    let strip = |a: &Analysis| Analysis {
        ages: Vec::new(),
        ..a.clone()
    };
    let (s, t) = (strip(source), strip(target));
    let (ages, pass) = match age_pass::plan(policy, &s, &t, threshold) {
        Plan::Skip(pass) => (PairAges::default(), pass),
        Plan::Run(job) => job
            .run_with(|side, _, faces| {
                let a = if side == Side::Source { source } else { target };
                Ok(faces.iter().map(|(i, _)| a.ages[*i]).collect())
            })
            .unwrap(),
    };
    score_with(policy, &s, &t, &ages, pass, StageTimings::default())
}

/// Asserts the lazy path decides every target face as the full one does, at
/// each threshold; returns whether the age pass ran at 80 and whether the
/// child map decided at some threshold.
fn check_pair(policy: &Policy, name: &str, source: &Analysis, target: &Analysis) -> (bool, bool) {
    let (mut ran_at_80, mut child) = (false, false);
    for threshold in [70.0, 80.0, 90.0] {
        let full = score(policy, source, target, StageTimings::default());
        let lazy = lazy(policy, source, target, threshold);
        assert_eq!(
            lazy.response(threshold).is_match,
            full.response(threshold).is_match,
            "{name} at {threshold}: lazy {lazy:?}\nfull {full:?}"
        );
        assert_eq!(lazy.target_confidences.len(), full.target_confidences.len());
        for (i, (l, f)) in lazy
            .target_confidences
            .iter()
            .zip(&full.target_confidences)
            .enumerate()
        {
            assert_eq!(
                *l >= threshold,
                *f >= threshold,
                "{name} target face {i} at {threshold}: lazy {l}, full {f}"
            );
        }
        // Without the pass the number is the adult map's.
        if lazy.age_pass == AgePass::NotNeeded {
            assert_eq!(lazy.map, Some(Map::Adult), "{name}");
        }
        if threshold == 80.0 {
            ran_at_80 = matches!(lazy.age_pass, AgePass::Ran { .. });
        }
        child |= lazy.map == Some(Map::Child);
    }
    (ran_at_80, child)
}

/// Every image analysed once (all faces, their ages), on two threads.
fn analyse_all(pack: &Pack, paths: &BTreeSet<PathBuf>) -> BTreeMap<PathBuf, Analysis> {
    let paths: Vec<&PathBuf> = paths.iter().collect();
    let next = AtomicUsize::new(0);
    let out = Mutex::new(BTreeMap::new());
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| {
                let mut m = Models::new(pack, 1).unwrap();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(p) = paths.get(i) else { return };
                    let a = m
                        .analyze(&read(p), MAX_TARGET_FACES)
                        .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
                    out.lock().unwrap().insert((*p).clone(), a);
                }
            });
        }
    });
    out.into_inner().unwrap()
}

/// The (a, b) paths of a pairs CSV (`a,b,same` or deepface's `file_x,file_y,Decision`).
fn pairs(csv: &Path) -> Vec<(PathBuf, PathBuf)> {
    let dir = csv.parent().unwrap();
    std::fs::read_to_string(csv)
        .unwrap()
        .lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split(',').map(str::trim).collect();
            (dir.join(f[0]), dir.join(f[1]))
        })
        .collect()
}

/// Ages as estimated, and the same moved down 20 years (floored at 1) so
/// that children, the margin's band and adults all occur on real cosines.
fn age_variants(a: &Analysis) -> [Analysis; 2] {
    let mut young = a.clone();
    young.ages = a.ages.iter().map(|x| (x - 20.0).max(1.0)).collect();
    [a.clone(), young]
}

fn check_set(set: &str, pairs: &[(PathBuf, PathBuf)]) {
    let paths: BTreeSet<PathBuf> = pairs
        .iter()
        .flat_map(|(a, b)| [a.clone(), b.clone()])
        .collect();
    let pack = pack("mobilefacenet");
    let policy = policy(&pack);
    let analyses = analyse_all(&pack, &paths);
    let (mut ran, mut both_faces) = (0usize, 0usize);
    let mut child_young = 0usize;
    for (a, b) in pairs {
        let name = format!("{set}: {} vs {}", a.display(), b.display());
        let [src, src_young] = age_variants(&as_source(&analyses[a]));
        let [tgt, tgt_young] = age_variants(&analyses[b]);
        if !src.embeddings.is_empty() && !tgt.embeddings.is_empty() {
            both_faces += 1;
        }
        ran += check_pair(&policy, &name, &src, &tgt).0 as usize;
        let young = format!("{name} (20 years younger)");
        child_young += check_pair(&policy, &young, &src_young, &tgt_young).1 as usize;
    }
    eprintln!(
        "{set}: {} pairs ({both_faces} with a face on both sides), lazy = full at 70/80/90 on every target face; \
         age pass ran at 80 on {ran} ({:.1} %); with the ages moved 20 years down the child map decided {child_young}",
        pairs.len(),
        100.0 * ran as f64 / pairs.len().max(1) as f64
    );
    assert!(child_young > 0, "{set}: the child map never decided");
}

#[test]
fn lazy_age_pass_decides_as_the_full_one_on_calib() {
    let Some(eval) = eval_dir() else { return };
    let p = pairs(&eval.join("calib/pairs.csv"));
    assert!(p.len() > 2000, "{}", p.len());
    check_set("calib", &p);
}

#[test]
fn lazy_age_pass_decides_as_the_full_one_on_deepface() {
    let Some(eval) = eval_dir() else { return };
    let p = pairs(&eval.join("deepface/master.csv"));
    assert!(p.len() > 250, "{}", p.len());
    check_set("deepface", &p);
}

#[test]
fn lazy_age_pass_decides_as_the_full_one_on_the_fixtures() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(fixture_dir())
        .expect("tests/fixtures/fetched: run scripts/fetch-fixtures.sh first")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jpg" || e == "png"))
        .collect();
    files.sort();
    assert!(files.len() >= 10, "{files:?}");
    let all: Vec<(PathBuf, PathBuf)> = files
        .iter()
        .flat_map(|a| files.iter().map(move |b| (a.clone(), b.clone())))
        .collect();
    check_set("fixtures", &all);
}

/// The engine itself (the real pool, the follow-up job on the kept faces):
/// the same decisions and, where the pass ran, the same ages as a full
/// analysis of both images.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_runs_the_age_pass_only_where_it_decides() {
    let p = pack("mobilefacenet");
    let policy = policy(&p);
    let engine = start_engine("mobilefacenet", 8);
    let mut m = Models::new(&p, 1).unwrap();
    let dir = fixture_dir();
    let (obama, obama2, biden, t1) = (
        read(&dir.join("obama.jpg")),
        read(&dir.join("obama2.jpg")),
        read(&dir.join("biden.jpg")),
        read(&dir.join("t1.jpg")),
    );
    let mut passes = Vec::new();
    for (s, t) in [
        (&obama, &obama2),
        (&obama, &biden),
        (&obama2, &t1),
        (&t1, &obama),
    ] {
        let full_s = m.analyze(s, 1).unwrap();
        let full_t = m.analyze(t, MAX_TARGET_FACES).unwrap();
        let full = score(&policy, &full_s, &full_t, StageTimings::default());
        for threshold in [0.0, 50.0, 80.0, 95.0, 100.0] {
            let c = engine
                .compare("test", s.clone().into(), t.clone().into(), threshold)
                .await
                .unwrap();
            assert_eq!(
                c.response(threshold).is_match,
                full.response(threshold).is_match,
                "at {threshold}: {c:?}"
            );
            match &c.age_pass {
                AgePass::Ran { source_age, .. } => {
                    assert!((source_age - full_s.ages[0]).abs() < 1e-3);
                    // The kept faces give the age a full analysis gives.
                    assert_eq!(c.ages.0, Some(*source_age));
                    assert_eq!(c.confidence, full.confidence);
                }
                AgePass::NotNeeded => {
                    assert_eq!(c.map, Some(Map::Adult));
                    assert_eq!(c.ages, (None, None));
                }
                other => panic!("unexpected {other:?}"),
            }
            passes.push(matches!(c.age_pass, AgePass::Ran { .. }));
        }
    }
    // obama vs obama2 at 80 lies between the maps: the pass ran there, and
    // at 0 and 100 it never does.
    assert!(
        passes.iter().any(|r| *r) && passes.iter().any(|r| !*r),
        "{passes:?}"
    );
}

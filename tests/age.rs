//! The age model against the original runtime (tfjs outputs stored in
//! tests/fixtures/age_reference.json by tools/models/age_fixtures.py) and the
//! child policy on real embeddings of the fetched fixture photos.
mod common;

use common::{fixture, load_pack as pack, repo};

use facecompare::faces::{
    StageTimings,
    age::expected_age,
    calibration::{FLOOR, Map, Policy},
    embed::cosine,
    pipeline::{Analysis, MAX_TARGET_FACES, Models},
    score,
};

#[test]
fn age_model_matches_tfjs_on_real_faces() {
    let reference: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("tests/fixtures/age_reference.json")).unwrap(),
    )
    .unwrap();
    let pack = pack("mobilefacenet");
    let mut models = Models::new(&pack, 1).unwrap();
    let faces = reference["faces"].as_object().unwrap();
    assert!(faces.len() >= 4, "a handful of faces: {}", faces.len());
    let mut worst = 0f32;
    for (name, want) in faces {
        let img = image::load_from_memory(&fixture(name)).unwrap().to_rgb8();
        let bbox: Vec<f32> = serde_json::from_value(want["box"].clone()).unwrap();
        let probs_ref: Vec<f32> =
            serde_json::from_value(want["age_probabilities"].clone()).unwrap();
        let age = models
            .age
            .as_mut()
            .expect("the default pack has an age model");
        let spec = age.spec().clone();
        let crop = facecompare::faces::age::crop(
            &img,
            [bbox[0], bbox[1], bbox[2], bbox[3]],
            spec.box_scale,
            spec.size,
        );
        let probs = &age.probabilities(&[crop]).unwrap()[0];
        assert_eq!(probs.len(), 100);
        for (k, (a, b)) in probs.iter().zip(&probs_ref).enumerate() {
            assert!((a - b).abs() < 1e-5, "{name}: class {k}: {a} vs tfjs {b}");
            worst = worst.max((a - b).abs());
        }
        let e = expected_age(probs) as f64;
        assert!(
            (e - want["expected_age"].as_f64().unwrap()).abs() < 1e-3,
            "{name}"
        );
        // The whole pipeline (its own detection, reduced-scale decode) lands
        // near the same estimate.
        let a = models.analyze(&fixture(name), 1).unwrap();
        assert!(
            (a.ages[0] as f64 - e).abs() < 1.5,
            "{name}: pipeline age {} vs {e}",
            a.ages[0]
        );
    }
    eprintln!("max abs diff of the age probabilities vs tfjs: {worst:e}");
}

fn analyze(m: &mut Models, name: &str) -> Analysis {
    m.analyze(&fixture(name), MAX_TARGET_FACES).unwrap()
}

fn with_ages(mut a: Analysis, age: f32) -> Analysis {
    a.ages = vec![age; a.faces.len()];
    a
}

#[test]
fn adults_in_the_fixtures_are_estimated_adults() {
    let mut m = Models::new(&pack("mobilefacenet"), 1).unwrap();
    for name in ["obama.jpg", "obama2.jpg", "biden.jpg", "astronaut.png"] {
        let a = analyze(&mut m, name);
        assert!(a.ages[0] >= 18.0, "{name}: {}", a.ages[0]);
        assert_eq!(a.ages.len(), a.faces.len());
    }
}

#[test]
fn child_policy_on_real_embeddings() {
    let pack = pack("mobilefacenet");
    let policy = Policy::new(
        pack.manifest.calibration.clone(),
        pack.manifest.age.as_ref(),
    );
    let child = policy
        .child
        .clone()
        .expect("the pack defines a child map")
        .map;
    let mut m = Models::new(&pack, 1).unwrap();
    let (obama, obama2, biden) = (
        analyze(&mut m, "obama.jpg"),
        analyze(&mut m, "obama2.jpg"),
        analyze(&mut m, "biden.jpg"),
    );
    let same = cosine(&obama.embeddings[0], &obama2.embeddings[0]);
    let t = StageTimings::default;

    // Both children: the child map decides, and it is stricter.
    let c = score(
        &policy,
        &with_ages(obama.clone(), 9.0),
        &with_ages(obama2.clone(), 11.0),
        t(),
    );
    assert_eq!(c.map, Some(Map::Child));
    assert_eq!(c.confidence, child.confidence(same));
    assert!(c.confidence < policy.adult.confidence(same), "{c:?}");

    // One child: the adult map.
    for (sa, ta) in [(9.0, 40.0), (40.0, 9.0)] {
        let c = score(
            &policy,
            &with_ages(obama.clone(), sa),
            &with_ages(obama2.clone(), ta),
            t(),
        );
        assert_eq!(c.map, Some(Map::Adult));
        assert_eq!(c.confidence, policy.adult.confidence(same).max(FLOOR));
    }
    // The real estimates (adults): the adult map.
    let c = score(&policy, &obama, &obama2, t());
    assert_eq!(c.map, Some(Map::Adult));

    // Floor: two different people scored as children fall below 0.005 on the
    // map, yet both faces were found, so the confidence is 0.01.
    let diff = cosine(&obama.embeddings[0], &biden.embeddings[0]);
    assert!(child.confidence(diff) < FLOOR, "{diff}");
    let c = score(
        &policy,
        &with_ages(obama.clone(), 8.0),
        &with_ages(biden.clone(), 8.0),
        t(),
    );
    assert_eq!(c.confidence, FLOOR);
    assert!(c.response(80.0).confidence > 0.0);
    // No face on one side: still 0.
    let none = Analysis::default();
    assert_eq!(score(&policy, &obama, &none, t()).confidence, 0.0);
}

#[test]
fn every_pack_gets_a_child_map_with_80_where_the_adult_map_gives_96() {
    for name in ["mobilefacenet", "dlib"] {
        let pack = pack(name);
        let age = pack.manifest.age.as_ref().expect("age model in every pack");
        assert_eq!(age.child_age_limit, 18.0);
        let policy = Policy::new(pack.manifest.calibration.clone(), Some(age));
        let child = policy.child.unwrap().map;
        let c96 = policy.adult.cosine_at(age.child_80_at_adult);
        assert!((child.cosine_at(80.0) - c96).abs() < 1e-9, "{name}");
        assert!((policy.adult.confidence(c96 as f32) - 96.0).abs() < 0.02);
        assert!((child.confidence(c96 as f32) - 80.0).abs() < 0.02);
        eprintln!(
            "{name}: adult 80 at cosine {:.4}, child 80 at {c96:.4}",
            policy.adult.cosine_at(80.0)
        );
    }
}

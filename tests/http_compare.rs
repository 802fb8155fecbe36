//! `POST /v1/face/compare` end to end over HTTP, on SQLite and PostgreSQL:
//! real binary, real database, real ONNX models, real face images.
mod common;

use common::{
    Backend, Input, b64, backends::on_both_backends, file, fixture, images, server, text,
};

on_both_backends!(
    same_person_matches_and_costs_one_token,
    different_people_do_not_match,
    no_face_outcomes_are_told_apart,
    insufficient_balance_is_402_and_charges_nothing,
    concurrent_requests_never_overdraw,
    idempotent_retry_is_replayed_uncharged,
);

async fn same_person_matches_and_costs_one_token(b: Backend) {
    let s = server(b);
    let org = s.org(10).await;
    let r = s
        .compare_multipart(
            &org.key,
            &file(&fixture("obama.jpg")),
            &file(&fixture("obama2.jpg")),
        )
        .await;
    let v = r.assert_compare_ok();
    assert_eq!(v["isMatch"], true, "{v}");
    assert_eq!(
        v["threshold"], 80,
        "server default threshold, as an integer: {}",
        r.text
    );
    assert!(v["confidence"].as_f64().unwrap() >= 90.0, "{v}");
    assert_eq!(
        (
            v["sourceFaceDetected"].clone(),
            v["targetFaceDetected"].clone()
        ),
        (true.into(), true.into())
    );
    // Rate-limit state on a success, too.
    assert_eq!(
        r.header("ratelimit-policy"),
        Some("\"default\";q=1000;w=60")
    );
    assert!(
        r.header("ratelimit")
            .is_some_and(|h| h.starts_with("\"default\";r=999;")),
        "{:?}",
        r.headers
    );
    assert_eq!(s.balance(&org).await, 9);
    assert_eq!(s.ledger_sum(&org).await, 9);
}

async fn different_people_do_not_match(b: Backend) {
    let s = server(b);
    let org = s.org(10).await;
    let r = s
        .compare_multipart(
            &org.key,
            &file(&fixture("obama.jpg")),
            &file(&fixture("biden.jpg")),
        )
        .await;
    let v = r.assert_compare_ok();
    assert_eq!(v["isMatch"], false, "{v}");
    assert!(v["confidence"].as_f64().unwrap() < 50.0, "{v}");
    assert_eq!(
        (
            v["sourceFaceDetected"].clone(),
            v["targetFaceDetected"].clone()
        ),
        (true.into(), true.into())
    );
    assert_eq!(
        s.balance(&org).await,
        9,
        "a 200 costs a token whatever the outcome"
    );
}

async fn no_face_outcomes_are_told_apart(b: Backend) {
    let s = server(b);
    let org = s.org(10).await;
    let face = file(&fixture("obama.jpg"));
    let grey = file(&images::grey_png(640, 480));
    let rocket = file(&fixture("rocket.jpg"));
    for (source, target, sd, td) in [
        (&grey, &face, false, true),
        (&face, &rocket, true, false),
        (&grey, &rocket, false, false),
    ] {
        let v = s
            .compare_multipart(&org.key, source, target)
            .await
            .assert_compare_ok();
        assert_eq!(v["confidence"], 0, "{v}");
        assert_eq!(v["isMatch"], false, "{v}");
        assert_eq!(
            (
                v["sourceFaceDetected"].as_bool(),
                v["targetFaceDetected"].as_bool()
            ),
            (Some(sd), Some(td)),
            "{v}"
        );
    }
    assert_eq!(s.balance(&org).await, 7);
}

async fn insufficient_balance_is_402_and_charges_nothing(b: Backend) {
    let s = server(b);
    let org = s.org(1).await;
    let (a, c) = (file(&fixture("obama.jpg")), file(&fixture("obama2.jpg")));
    s.compare_multipart(&org.key, &a, &c)
        .await
        .assert_compare_ok();
    assert_eq!(s.balance(&org).await, 0);
    let r = s.compare_multipart(&org.key, &a, &c).await;
    r.assert_error(402, "insufficient_balance", None);
    assert_eq!(s.balance(&org).await, 0);
    assert_eq!(s.ledger_sum(&org).await, 0);
    // A credit through the CLI makes it work again.
    let v = common::cli_json(
        &s.db_url,
        &["tokens", "add", "--org", &org.id, "2", "--json"],
    )
    .await;
    assert_eq!(v["balance"], 2, "{v}");
    s.compare_multipart(&org.key, &a, &c)
        .await
        .assert_compare_ok();
    assert_eq!(s.balance(&org).await, 1);
    assert_eq!(s.ledger_sum(&org).await, 1);
}

/// 12 concurrent compares on a balance of 5: exactly five succeed, seven get
/// 402, and the balance ends at 0 = the ledger sum.
async fn concurrent_requests_never_overdraw(b: Backend) {
    let s = server(b);
    let org = s.org(5).await;
    let (a, c) = (file(&fixture("obama.jpg")), file(&fixture("biden.jpg")));
    let mut tasks = Vec::new();
    for _ in 0..12 {
        let (s, key, a, c) = (s.clone(), org.key.clone(), a.clone(), c.clone());
        tasks.push(tokio::spawn(async move {
            s.compare_multipart(&key, &a, &c).await
        }));
    }
    let mut statuses = Vec::new();
    for t in tasks {
        let r = t.await.unwrap();
        if r.status == 200 {
            r.assert_compare_ok();
        } else {
            r.assert_error(402, "insufficient_balance", None);
        }
        statuses.push(r.status);
    }
    assert_eq!(
        statuses.iter().filter(|&&st| st == 200).count(),
        5,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|&&st| st == 402).count(),
        7,
        "{statuses:?}"
    );
    assert_eq!(s.balance(&org).await, 0);
    assert_eq!(s.ledger_sum(&org).await, 0);
}

async fn idempotent_retry_is_replayed_uncharged(b: Backend) {
    let s = server(b);
    let org = s.org(10).await;
    let (a, c) = (fixture("obama.jpg"), fixture("obama2.jpg"));
    let key = common::unique_name("idem");
    let h = [("idempotency-key", key.as_str())];
    let first = s
        .compare_multipart_with(&org.key, &file(&a), &file(&c), &h)
        .await;
    first.assert_compare_ok();
    assert_eq!(first.header("idempotent-replayed"), None);
    // reqwest draws a new multipart boundary per request: same parsed inputs.
    let retry = s
        .compare_multipart_with(&org.key, &file(&a), &file(&c), &h)
        .await;
    retry.assert_compare_ok();
    assert_eq!(retry.text, first.text);
    assert_eq!(retry.header("idempotent-replayed"), Some("true"));
    // The same images as base64 text parts are the same inputs, too.
    let as_text = s
        .compare_multipart_with(&org.key, &b64(&a), &b64(&c), &h)
        .await;
    assert_eq!(
        (as_text.status, as_text.text.as_str()),
        (200, first.text.as_str())
    );
    assert_eq!(s.balance(&org).await, 9, "charged once");
    // Same key, other inputs: refused, nothing charged.
    let other = s
        .compare_multipart_with(&org.key, &file(&a), &file(&fixture("biden.jpg")), &h)
        .await;
    other.assert_error(422, "idempotency_key_mismatch", Some("Idempotency-Key"));
    // Swapped source and target are other inputs.
    let swapped = s
        .compare_multipart_with(&org.key, &file(&c), &file(&a), &h)
        .await;
    swapped.assert_error(422, "idempotency_key_mismatch", None);
    // Keys are scoped to the organisation: another org's same key runs afresh.
    let org2 = s.org(10).await;
    let r = s
        .compare_multipart_with(&org2.key, &file(&a), &file(&c), &h)
        .await;
    r.assert_compare_ok();
    assert_eq!(r.header("idempotent-replayed"), None);
    assert_eq!(s.balance(&org).await, 9);
    assert_eq!(s.balance(&org2).await, 9);
    assert_eq!(s.ledger_sum(&org).await, 9);
}

// ------------------------------------------------- input modes (SQLite) ---

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_input_mode_gives_the_same_answer() {
    use base64::Engine;
    let s = server(Backend::Sqlite);
    let org = s.org(20).await;
    let (a, c) = (fixture("obama.jpg"), fixture("obama2.jpg"));
    let reference = s
        .compare_multipart(&org.key, &file(&a), &file(&c))
        .await
        .assert_compare_ok();
    let url_nopad = |b: &[u8]| text(&base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b));
    let wrapped = |b: &[u8]| {
        let s = base64::engine::general_purpose::STANDARD.encode(b);
        let lines: Vec<&str> = s
            .as_bytes()
            .chunks(76)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        text(&lines.join("\r\n"))
    };
    let data_uri = |b: &[u8]| {
        text(&format!(
            "data:image/jpeg;base64,{}",
            base64::engine::general_purpose::STANDARD.encode(b)
        ))
    };
    let cases: Vec<(&str, Input, Input, bool)> = vec![
        ("json base64", b64(&a), b64(&c), true),
        (
            "json base64url unpadded",
            url_nopad(&a),
            url_nopad(&c),
            true,
        ),
        (
            "json data URI + MIME-wrapped base64",
            data_uri(&a),
            wrapped(&c),
            true,
        ),
        ("multipart text parts", b64(&a), url_nopad(&c), false),
        (
            "multipart file + data URI text part",
            file(&a),
            data_uri(&c),
            false,
        ),
    ];
    for (name, source, target, json) in cases {
        let r = if json {
            s.compare_json(&org.key, &source, &target).await
        } else {
            s.compare_multipart(&org.key, &source, &target).await
        };
        let v = r.assert_compare_ok();
        assert_eq!(v, reference, "{name}");
    }
    assert_eq!(s.balance(&org).await, 20 - 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn org_threshold_override_is_applied_and_reported() {
    let s = server(Backend::Sqlite);
    let org = s
        .org_with(5, &["--rate-limit", "100/min", "--threshold", "0"])
        .await;
    let v = s
        .compare_multipart(
            &org.key,
            &file(&fixture("obama.jpg")),
            &file(&fixture("biden.jpg")),
        )
        .await
        .assert_compare_ok();
    assert_eq!(v["threshold"], 0, "{v}");
    assert_eq!(v["isMatch"], true, "confidence >= 0 always holds: {v}");
    let strict = s
        .org_with(5, &["--rate-limit", "100/min", "--threshold", "99.99"])
        .await;
    let v = s
        .compare_multipart(
            &strict.key,
            &file(&fixture("obama.jpg")),
            &file(&fixture("biden.jpg")),
        )
        .await
        .assert_compare_ok();
    assert_eq!(
        (v["threshold"].as_f64(), v["isMatch"].as_bool()),
        (Some(99.99), Some(false)),
        "{v}"
    );
}

/// Several faces in the target: every face is compared, the best one wins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn best_face_of_a_group_target_is_used() {
    let s = server(Backend::Sqlite);
    let org = s.org(5).await;
    let obama = images::decode(&fixture("obama2.jpg"));
    let biden = images::decode(&fixture("biden.jpg"));
    let h = obama.height().max(biden.height());
    let mut canvas = image::RgbImage::from_pixel(
        obama.width() + biden.width(),
        h,
        image::Rgb([255, 255, 255]),
    );
    image::imageops::replace(&mut canvas, &biden.to_rgb8(), 0, 0);
    image::imageops::replace(&mut canvas, &obama.to_rgb8(), biden.width() as i64, 0);
    let group = images::jpeg(&image::DynamicImage::ImageRgb8(canvas), 90);
    let v = s
        .compare_multipart(&org.key, &file(&fixture("obama.jpg")), &file(&group))
        .await
        .assert_compare_ok();
    assert_eq!(v["isMatch"], true, "Obama is among the target's faces: {v}");
    // And a real six-person photo without him: faces found, no match.
    let v = s
        .compare_multipart(
            &org.key,
            &file(&fixture("obama.jpg")),
            &file(&fixture("t1.jpg")),
        )
        .await
        .assert_compare_ok();
    assert_eq!(
        (v["targetFaceDetected"].as_bool(), v["isMatch"].as_bool()),
        (Some(true), Some(false)),
        "{v}"
    );
}

/// Phone-style inputs: EXIF-rotated JPEG, RGBA PNG, a ~2.6 MP JPEG.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exif_rotation_rgba_and_large_photos_match() {
    let s = server(Backend::Sqlite);
    let org = s.org(5).await;
    let obama = fixture("obama.jpg");
    let obama2 = images::decode(&fixture("obama2.jpg"));
    let rotated = images::exif_rotated_jpeg(&obama2);
    let stored = images::decode(&rotated);
    assert_eq!(
        (stored.width(), stored.height()),
        (obama2.height(), obama2.width()),
        "stored sideways"
    );
    let big = images::scaled_jpeg(&obama2, 2.6);
    for (name, target) in [
        ("EXIF orientation 6", rotated),
        ("RGBA PNG", fixture("32bit.png")),
        ("2.6 MP JPEG", big),
    ] {
        let v = s
            .compare_multipart(&org.key, &file(&obama), &file(&target))
            .await
            .assert_compare_ok();
        assert_eq!(v["isMatch"], true, "{name}: {v}");
    }
}

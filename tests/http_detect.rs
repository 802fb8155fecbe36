//! `POST /v1/face/detect` end to end over HTTP: real binary, real database,
//! real ONNX models, real face images. Boxes for a face, none for a rocket,
//! authenticated, rate-limited like a compare, never charged.
mod common;

use common::{Backend, Resp, Server, client, fixture, images, server};
use serde_json::Value;

async fn detect(s: &Server, key: Option<&str>, image: &[u8]) -> Resp {
    let form = reqwest::multipart::Form::new().part(
        "image",
        reqwest::multipart::Part::bytes(image.to_vec()).file_name("photo.jpg"),
    );
    let mut req = client().post(s.url("/v1/face/detect")).multipart(form);
    if let Some(key) = key {
        req = req.header("x-api-key", key);
    }
    Resp::from(req.send().await.expect("POST detect")).await
}

async fn detect_json(s: &Server, key: &str, body: Value) -> Resp {
    Resp::from(
        client()
            .post(s.url("/v1/face/detect"))
            .header("x-api-key", key)
            .json(&body)
            .send()
            .await
            .expect("POST detect"),
    )
    .await
}

/// Checks the 200 shape (exactly width, height, faces; each face five
/// numbers in 0–1, its quality and its problems, largest first) and returns
/// the faces.
fn assert_detect_ok(r: &Resp) -> Vec<Value> {
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("application/json"))
    );
    let v = r.json();
    let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["faces", "height", "width"], "{v}");
    let faces = v["faces"].as_array().expect("faces").clone();
    let mut last_area = f64::INFINITY;
    for f in &faces {
        let mut keys: Vec<&str> = f.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "height", "left", "problems", "quality", "score", "top", "width"
            ],
            "{f}"
        );
        let q = &f["quality"];
        let mut qkeys: Vec<&str> = q.as_object().unwrap().keys().map(String::as_str).collect();
        qkeys.sort_unstable();
        assert_eq!(
            qkeys,
            ["brightness", "pitch", "roll", "sharpness", "size", "yaw"],
            "{f}"
        );
        let m = |k: &str| q[k].as_f64().unwrap_or_else(|| panic!("{k} in {f}"));
        for k in ["brightness", "sharpness"] {
            assert!((0.0..=100.0).contains(&m(k)), "{k} out of 0–100: {f}");
        }
        assert!(m("size") > 0.0 && m("roll").abs() <= 180.0, "{f}");
        assert!(m("yaw").abs() <= 90.0 && m("pitch").abs() <= 90.0, "{f}");
        assert!(f["problems"].is_array(), "{f}");
        let n = |k: &str| f[k].as_f64().unwrap_or_else(|| panic!("{k} in {f}"));
        for k in ["left", "top", "width", "height", "score"] {
            assert!((0.0..=1.0).contains(&n(k)), "{k} out of 0–1: {f}");
        }
        assert!(n("left") + n("width") <= 1.0001 && n("top") + n("height") <= 1.0001);
        let area =
            n("width") * n("height") * v["width"].as_f64().unwrap() * v["height"].as_f64().unwrap();
        assert!(area <= last_area * 1.0001, "largest first: {v}");
        last_area = area;
    }
    faces
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boxes_for_a_face_none_for_a_rocket_and_nothing_charged() {
    let s = server(Backend::Sqlite);
    // A balance of 0: a compare would be 402; detect is not charged at all.
    let org = s.org(0).await;
    let photo = fixture("obama.jpg");
    let r = detect(s, Some(&org.key), &photo).await;
    let faces = assert_detect_ok(&r);
    assert_eq!(faces.len(), 1, "{}", r.text);
    let v = r.json();
    let (w, h) = images::decode(&photo).to_rgb8().dimensions();
    assert_eq!(
        (v["width"].as_u64(), v["height"].as_u64()),
        (Some(w as u64), Some(h as u64))
    );
    let f = &faces[0];
    // A portrait: the face sits in the upper middle and is a sizeable part of the photo.
    let cx = f["left"].as_f64().unwrap() + f["width"].as_f64().unwrap() / 2.0;
    assert!((0.25..0.75).contains(&cx), "{f}");
    assert!(f["width"].as_f64().unwrap() > 0.1, "{f}");
    assert!(f["score"].as_f64().unwrap() > 0.5, "{f}");
    assert!(r.header("ratelimit").is_some() && r.header("x-request-id").is_some());

    // No face: an empty list, still 200.
    let r = detect(s, Some(&org.key), &fixture("rocket.jpg")).await;
    assert!(assert_detect_ok(&r).is_empty(), "{}", r.text);

    // Several faces, largest first, as JSON base64 (a data URI).
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(fixture("t1.jpg"));
    let r = detect_json(
        s,
        &org.key,
        serde_json::json!({"image": format!("data:image/jpeg;base64,{b64}")}),
    )
    .await;
    assert!(assert_detect_ok(&r).len() >= 3, "{}", r.text);

    assert_eq!(s.balance(&org).await, 0);
    assert_eq!(s.ledger_sum(&org).await, 0);
    // The same org's compare is refused for its balance: detect is the only free call.
    s.compare_multipart(&org.key, &common::file(&photo), &common::file(&photo))
        .await
        .assert_error(402, "insufficient_balance", None);

    // With tokens, detects still leave the balance alone.
    let paid = s.org(5).await;
    for _ in 0..2 {
        assert_detect_ok(&detect(s, Some(&paid.key), &photo).await);
    }
    assert_eq!(s.balance(&paid).await, 5);
}

/// The measures of docs/quality.md per face: a clear photo has no problems;
/// darker, blurred, smaller and turned copies move the right measure and
/// name the right problem.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quality_per_face_and_retake_problems() {
    let s = server(Backend::Sqlite);
    let org = s.org(0).await;
    let photo = fixture("obama.jpg");
    let first = |r: &Resp| assert_detect_ok(r).remove(0);
    let clear = first(&detect(s, Some(&org.key), &photo).await);
    assert_eq!(clear["problems"], serde_json::json!([]), "{clear}");
    let q = |f: &Value, k: &str| f["quality"][k].as_f64().unwrap();
    // Size is in pixels of the original image: the box's longer side.
    let (w, h) = images::decode(&photo).to_rgb8().dimensions();
    let side = (clear["width"].as_f64().unwrap() * w as f64)
        .max(clear["height"].as_f64().unwrap() * h as f64);
    assert!((q(&clear, "size") - side).abs() <= 2.0, "{clear} vs {side}");

    let dark = first(&detect(s, Some(&org.key), &images::degraded_jpeg(&photo, 0.0, 0.3)).await);
    assert!(
        q(&dark, "brightness") < q(&clear, "brightness") * 0.4,
        "{dark}"
    );
    assert_eq!(dark["problems"], serde_json::json!(["too_dark"]), "{dark}");
    let bright = first(&detect(s, Some(&org.key), &images::degraded_jpeg(&photo, 0.0, 2.2)).await);
    assert!(
        q(&bright, "brightness") > q(&clear, "brightness"),
        "{bright}"
    );
    let blurred = first(&detect(s, Some(&org.key), &images::degraded_jpeg(&photo, 5.0, 1.0)).await);
    assert!(
        q(&blurred, "sharpness") < q(&clear, "sharpness") / 3.0,
        "{blurred}"
    );
    assert_eq!(
        blurred["problems"],
        serde_json::json!(["blurred"]),
        "{blurred}"
    );

    // A quarter of the size: a quarter of the pixels across, and the face
    // enlarged into the crop reads softer.
    let img = images::decode(&photo);
    let small = img.resize(w / 4, h / 4, image::imageops::FilterType::Triangle);
    let small = first(&detect(s, Some(&org.key), &images::jpeg(&small, 92)).await);
    let ratio = q(&small, "size") / q(&clear, "size");
    assert!((0.2..0.3).contains(&ratio), "{small}: {ratio}");
    assert!(q(&small, "sharpness") < q(&clear, "sharpness"), "{small}");
    assert!(
        small["problems"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!("too_small")),
        "{small}"
    );

    // Turned a quarter turn: roll follows (the detector finds it turned back).
    let turned = images::jpeg(&img.rotate90(), 92);
    let turned = first(&detect(s, Some(&org.key), &turned).await);
    let roll = q(&turned, "roll") - q(&clear, "roll");
    assert!((roll - 90.0).abs() < 5.0, "{turned}: roll moved {roll}");
    assert_eq!(s.balance(&org).await, 0, "never charged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn needs_a_valid_key() {
    let s = server(Backend::Sqlite);
    let photo = fixture("obama.jpg");
    detect(s, None, &photo)
        .await
        .assert_error(401, "unauthorized", Some("x-api-key"));
    detect(s, Some("fc_not_a_real_key"), &photo)
        .await
        .assert_error(401, "unauthorized", Some("x-api-key"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_names_the_image_field() {
    let s = server(Backend::Sqlite);
    let org = s.org(0).await;
    detect(s, Some(&org.key), b"just some text")
        .await
        .assert_error(400, "unsupported_image_format", Some("image"));
    detect(s, Some(&org.key), &images::gif())
        .await
        .assert_error(400, "unsupported_image_format", Some("image"));
    // A compare-shaped body: the message names the missing field and what was sent.
    let v = detect_json(
        s,
        &org.key,
        serde_json::json!({"source": "x", "target": "y"}),
    )
    .await
    .assert_error(400, "missing_field", Some("image"));
    assert!(v["message"].as_str().unwrap().contains("source"), "{v}");
    detect_json(
        s,
        &org.key,
        serde_json::json!({"image": "orgs/acme/selfie.jpg"}),
    )
    .await
    .assert_error(400, "invalid_field_type", Some("image"));
    // Truncated JPEG: the decoder's error, named by this endpoint's field.
    let photo = fixture("obama.jpg");
    let r = detect(s, Some(&org.key), &photo[..600]).await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(
        r.json()["message"].as_str().unwrap().starts_with("image:"),
        "{}",
        r.text
    );
    assert_eq!(s.balance(&org).await, 0);
}

/// Detect counts against the organisation's limit like any request, and
/// shares the bucket with compare.
async fn rate_limited(b: Backend) {
    let s = server(b);
    let org = s.org_with(10, &["--rate-limit", "2/min"]).await;
    let photo = fixture("obama.jpg");
    let first = detect(s, Some(&org.key), &photo).await;
    assert_detect_ok(&first);
    assert_eq!(
        first.header("ratelimit-policy"),
        Some("\"default\";q=2;w=60")
    );
    s.compare_multipart(&org.key, &common::file(&photo), &common::file(&photo))
        .await
        .assert_compare_ok();
    let r = detect(s, Some(&org.key), &photo).await;
    r.assert_error(429, "rate_limited", None);
    assert!(
        r.header("retry-after")
            .is_some_and(|v| v.parse::<u64>().is_ok())
    );
    // Only the compare was charged.
    assert_eq!(s.balance(&org).await, 9);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limited_sqlite() {
    rate_limited(Backend::Sqlite).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limited_postgres() {
    if common::postgres_or_skip() {
        rate_limited(Backend::Postgres).await
    }
}

/// WebP has no reduced-scale decode: above its own pixel limit (16 MP,
/// below JPEG's 64) it is refused before a pixel is decoded, with the size
/// error naming the limit, on detect and on compare alike; a large WebP
/// within it is decoded and answered at its full size.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webp_over_its_pixel_limit_is_refused_naming_the_limit() {
    let s = server(Backend::Sqlite);
    let org = s.org(5).await;
    let big = images::costly_webp(4200, 4200);
    let v = detect(s, Some(&org.key), &big).await.assert_error(
        400,
        "image_dimensions_too_large",
        Some("image"),
    );
    let message = v["message"].as_str().unwrap();
    assert!(
        message.contains("4200×4200")
            && message.contains("WebP")
            && message.contains("16 megapixels"),
        "{v}"
    );
    let photo = fixture("obama.jpg");
    s.compare_multipart(&org.key, &common::file(&photo), &common::file(&big))
        .await
        .assert_error(400, "image_dimensions_too_large", Some("target"));
    let within = detect(s, Some(&org.key), &images::costly_webp(4000, 3000)).await;
    assert_detect_ok(&within);
    assert_eq!(
        (
            within.json()["width"].clone(),
            within.json()["height"].clone()
        ),
        (4000.into(), 3000.into())
    );
    assert_eq!(s.balance(&org).await, 5, "refusals are not charged");
}

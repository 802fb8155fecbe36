//! The try page (`GET /try`): its headers and off switch over HTTP, and the
//! real page driven in headless Chromium through chromedriver (the WebDriver
//! client is `common::browser`): paste a key, upload two photos,
//! read the outcome and count the outlines; then a photo without a face.
//!
//! The browser test needs Debian's `chromium` and `chromium-driver` (`.ci/run`
//! installs them). Without them it skips with a message, except under `CI`,
//! where it fails. Screenshots go to `target/try-page-screenshots/`.
mod common;

use std::{
    path::Path,
    time::{Duration, Instant},
};

use common::{
    Backend, Resp, Server, ServerOptions,
    browser::{Browser, browser_or_skip},
    client, fixture, fixture_path, server, spawn_server,
};
use serde_json::json;

const CSP_PARTS: [&str; 6] = [
    "default-src 'none'",
    "script-src 'self'",
    "style-src 'self'",
    "connect-src 'self'",
    "frame-ancestors 'none'",
    "form-action 'none'",
];

fn assert_hardened(r: &Resp, content_type: &str) {
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with(content_type)),
        "{:?}",
        r.headers
    );
    let csp = r.header("content-security-policy").expect("CSP header");
    for part in CSP_PARTS {
        assert!(csp.contains(part), "CSP lacks {part}: {csp}");
    }
    assert!(!csp.contains("unsafe"), "{csp}");
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(r.header("referrer-policy"), Some("no-referrer"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_and_its_assets_are_served_hardened() {
    let s = server(Backend::Sqlite);
    let page = s.get("/try").await;
    assert_hardened(&page, "text/html");
    assert!(
        page.text
            .contains("<script src=\"try/app.js\" defer></script>")
    );
    assert!(page.text.contains("href=\"try/style.css\""));
    // The page's own references, resolved as a browser does, are served.
    for (path, ct) in [
        ("/try/app.js", "text/javascript"),
        ("/try/style.css", "text/css"),
    ] {
        assert_hardened(&s.get(path).await, ct);
    }
    let landing = s.get("/").await;
    assert_hardened(&landing, "text/html");
    assert!(landing.text.contains("href=\"try\""), "{}", landing.text);
    // `/try/` would resolve relative URLs one level too deep: a relative redirect.
    let r = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(s.url("/try/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 302);
    assert_eq!(r.headers()["location"], "../try");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_can_be_turned_off() {
    if !common::own_servers_or_skip("a server with the try page off") {
        return;
    }
    let db = common::fresh_database(Backend::Sqlite, "trypage_off");
    let s = spawn_server(ServerOptions::new(&db).env("FACECOMPARE_TRY_PAGE", "off"));
    for path in ["/try", "/try/app.js", "/try/style.css"] {
        s.get(path).await.assert_error(404, "not_found", None);
    }
    // `/` keeps only the AWS Rekognition protocol (POST).
    s.get("/")
        .await
        .assert_error(405, "method_not_allowed", None);
    // The API stays: detect is an API route, not part of the page.
    let r = Resp::from(
        client()
            .post(s.url("/v1/face/detect"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    r.assert_error(401, "unauthorized", Some("x-api-key"));
}

// ----------------------------------------------------------- the browser ---

/// The page's own step (the client is `common::browser`).
impl Browser {
    /// Submits the form and waits until the page is done (answer or error shown, button back).
    async fn submit_and_wait(&self) {
        self.click("#submit").await;
        self.wait_for("#result:not([hidden]), #error:not([hidden])")
            .await;
        self.wait_for("#submit:not(:disabled)").await;
    }
}

/// A half-size copy (`match-small.png`): what `docs/try-page.png` is made from.
fn readme_copy(shot: &Path) {
    let img = image::open(shot).expect("screenshot decodes");
    let small = img.resize(
        img.width() / 2,
        img.height(),
        image::imageops::FilterType::Triangle,
    );
    small
        .save(shot.with_file_name("match-small.png"))
        .expect("write match-small.png");
}

/// The faces the API finds in a fixture (what the page should outline).
async fn faces_in(s: &Server, key: &str, name: &str) -> usize {
    let form = reqwest::multipart::Form::new().part(
        "image",
        reqwest::multipart::Part::bytes(fixture(name)).file_name(name.to_string()),
    );
    let r = Resp::from(
        client()
            .post(s.url("/v1/face/detect"))
            .header("x-api-key", key)
            .multipart(form)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.json()["faces"].as_array().unwrap().len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_tries_two_photos_in_chromium() {
    let Some((driver, chromium)) = browser_or_skip() else {
        return;
    };
    let s = server(Backend::Sqlite);
    let org = s.org(10).await;
    let browser = Browser::start(&driver, &chromium).await;
    browser.goto(&s.url("/try")).await;
    assert!(browser.text("h1").await.contains("Try face compare"));

    // A wrong key: the API's own message, nothing charged.
    browser.type_into("#key", "fc_wrong_key").await;
    browser
        .upload("#source-file", &fixture_path("obama.jpg"))
        .await;
    browser
        .upload("#target-file", &fixture_path("obama2.jpg"))
        .await;
    browser.submit_and_wait().await;
    let error = browser.text("#error").await;
    assert!(
        error.contains("unauthorized") && error.contains("x-api-key: unknown or revoked API key"),
        "{error}"
    );

    // The right key: a match, both faces outlined, the compared ones highlighted.
    browser.type_into("#key", &org.key).await;
    browser.submit_and_wait().await;
    assert_eq!(
        browser
            .attribute("#result", "data-outcome")
            .await
            .as_deref(),
        Some("match"),
        "{}",
        browser.text("body").await
    );
    let verdict = browser.text("#verdict").await;
    assert!(verdict.contains("Match: the same person"), "{verdict}");
    assert_eq!(browser.text("#f-isMatch").await, "true");
    assert_eq!(browser.text("#f-threshold").await, "80");
    assert!(
        browser
            .text("#threshold-note")
            .await
            .contains("threshold in force for your organisation is 80")
    );
    let confidence: f64 = browser.text("#f-confidence").await.parse().unwrap();
    assert!(confidence >= 80.0, "{confidence}");
    let (src, tgt) = (
        faces_in(s, &org.key, "obama.jpg").await,
        faces_in(s, &org.key, "obama2.jpg").await,
    );
    assert!(src >= 1 && tgt >= 1);
    assert_eq!(browser.find_all("#source-boxes rect").await.len(), src);
    assert_eq!(browser.find_all("#target-boxes rect").await.len(), tgt);
    assert_eq!(
        browser.find_all("#source-boxes rect.compared").await.len(),
        1
    );
    assert_eq!(
        browser.find_all("#target-boxes rect.compared").await.len(),
        tgt
    );
    assert!(browser.text("#source-faces").await.contains("compared"));
    let shot = browser.screenshot("match.png").await;
    assert!(std::fs::metadata(&shot).unwrap().len() > 10_000);
    readme_copy(&shot);
    // Only the compare was charged: the outlines are free.
    assert_eq!(s.balance(&org).await, 9);

    // Readable on a phone: one column, the same answer.
    browser.resize(390, 1700).await;
    browser.screenshot("match-phone.png").await;
    browser.resize(1200, 1600).await;

    // No face in the ID photo: the "retake the ID photo" guidance, no outline there.
    browser
        .upload("#target-file", &fixture_path("rocket.jpg"))
        .await;
    browser.submit_and_wait().await;
    assert_eq!(
        browser
            .attribute("#result", "data-outcome")
            .await
            .as_deref(),
        Some("no-face-target")
    );
    assert!(
        browser
            .text("#verdict")
            .await
            .contains("No face found in the ID photo")
    );
    assert!(
        browser
            .text("#advice")
            .await
            .contains("Retake the ID photo")
    );
    assert_eq!(browser.text("#f-targetFaceDetected").await, "false");
    assert_eq!(browser.text("#f-confidence").await, "0");
    assert_eq!(browser.find_all("#target-boxes rect").await.len(), 0);
    assert_eq!(browser.find_all("#source-boxes rect").await.len(), src);
    assert!(
        browser
            .text("#target-faces")
            .await
            .contains("No face found")
    );
    browser.screenshot("no-face-target.png").await;

    // No face in the selfie: "retake your selfie".
    browser
        .upload("#source-file", &fixture_path("rocket.jpg"))
        .await;
    browser
        .upload("#target-file", &fixture_path("obama2.jpg"))
        .await;
    browser.submit_and_wait().await;
    assert_eq!(
        browser
            .attribute("#result", "data-outcome")
            .await
            .as_deref(),
        Some("no-face-source")
    );
    assert!(browser.text("#advice").await.contains("Retake your selfie"));
    assert_eq!(s.balance(&org).await, 7);

    // The key lives in the tab (sessionStorage): a reload keeps it.
    browser.goto(&s.url("/try")).await;
    assert_eq!(browser.property("#key", "value").await, json!(org.key));

    // The camera path (Chromium's fake camera: a test pattern) makes the selfie.
    browser.click("#camera-open").await;
    browser.wait_for("#camera:not([hidden])").await;
    let since = Instant::now();
    while browser.property("#camera-video", "videoWidth").await == json!(0) {
        assert!(
            since.elapsed() < Duration::from_secs(60),
            "the camera never streamed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    browser.click("#camera-shoot").await;
    browser.wait_for("#camera[hidden]").await;
    assert!(
        browser
            .text("#source-faces")
            .await
            .contains("camera-selfie.jpg"),
        "{}",
        browser.text("#source-faces").await
    );
    browser
        .upload("#target-file", &fixture_path("obama2.jpg"))
        .await;
    browser.submit_and_wait().await;
    let outcome = browser.attribute("#result", "data-outcome").await;
    assert!(
        matches!(outcome.as_deref(), Some("no-face-source" | "no-match")),
        "a test pattern is not Obama: {outcome:?}"
    );
    assert_eq!(s.balance(&org).await, 6);

    // A poor capture gets a plain-language retake hint (docs/quality.md); a
    // clear one none.
    let dark = std::env::temp_dir().join(format!("facecompare-dark-{}.jpg", std::process::id()));
    let mut img = image::open(fixture_path("obama.jpg")).unwrap().to_rgb8();
    for p in img.pixels_mut() {
        p.0 = p.0.map(|c| (c as f32 * 0.25) as u8);
    }
    img.save(&dark).unwrap();
    browser.upload("#source-file", &dark).await;
    browser
        .upload("#target-file", &fixture_path("obama2.jpg"))
        .await;
    browser.submit_and_wait().await;
    let hint = browser.text("#source-quality").await;
    assert!(hint.contains("The selfie is too dark"), "{hint}");
    assert_eq!(browser.text("#target-quality").await, "");
    let _ = std::fs::remove_file(&dark);
    assert_eq!(s.balance(&org).await, 5);
}

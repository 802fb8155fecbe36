//! The try page (`GET /try`): its headers and off switch over HTTP, and the
//! real page driven in headless Chromium through chromedriver (the W3C
//! WebDriver protocol, spoken with `reqwest`): paste a key, upload two photos,
//! read the outcome and count the outlines; then a photo without a face.
//!
//! The browser test needs Debian's `chromium` and `chromium-driver` (`.ci/run`
//! installs them). Without them it skips with a message, except under `CI`,
//! where it fails. Screenshots go to `target/try-page-screenshots/`.
mod common;

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use common::{Backend, Resp, Server, ServerOptions, client, fixture, repo, server, spawn_server};
use serde_json::{Value, json};

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

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

/// chromedriver and the browser binary, or None (with the reason).
fn browser_tools() -> Result<(PathBuf, PathBuf), String> {
    // An explicit path must exist; otherwise look where Debian puts them.
    let given = |var: &str| -> Result<Option<PathBuf>, String> {
        match std::env::var_os(var).map(PathBuf::from) {
            Some(p) if p.is_file() => Ok(Some(p)),
            Some(p) => Err(format!("{var}={} does not exist", p.display())),
            None => Ok(None),
        }
    };
    let driver = given("FACECOMPARE_TEST_CHROMEDRIVER")?
        .or_else(|| on_path("chromedriver"))
        .ok_or("chromedriver not found (apt-get install chromium-driver)")?;
    // Debian's /usr/bin/chromium is a shell wrapper; the binary itself starts faster.
    let browser = given("FACECOMPARE_TEST_CHROMIUM")?
        .or_else(|| Some(PathBuf::from("/usr/lib/chromium/chromium")).filter(|p| p.is_file()))
        .or_else(|| on_path("chromium"))
        .or_else(|| on_path("chromium-browser"))
        .or_else(|| on_path("google-chrome"))
        .ok_or("chromium not found (apt-get install chromium)")?;
    Ok((driver, browser))
}

fn screenshots_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target"));
    let dir = target.join("try-page-screenshots");
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    dir
}

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// One chromedriver process and one browser session; both end on drop.
struct Browser {
    driver: Child,
    base: String,
    session: String,
    http: reqwest::Client,
}

impl Browser {
    async fn start(driver: &Path, browser: &Path) -> Browser {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = std::env::temp_dir().join(format!("chromedriver-{}.log", std::process::id()));
        let child = Command::new(driver)
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", driver.display()));
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(120))
            .build()
            .unwrap();
        let mut b = Browser {
            driver: child,
            base,
            session: String::new(),
            http,
        };
        // Ready when /status says so (a wait, not an assertion on speed).
        let since = Instant::now();
        loop {
            if let Ok(r) = b.http.get(format!("{}/status", b.base)).send().await
                && let Ok(v) = r.json::<Value>().await
                && v["value"]["ready"] == true
            {
                break;
            }
            assert!(
                since.elapsed() < Duration::from_secs(60),
                "chromedriver did not become ready; log {}",
                log.display()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": browser.display().to_string(),
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1200,1600",
                         "--hide-scrollbars", "--force-device-scale-factor=1",
                         // A fake camera (a test pattern), allowed without a prompt.
                         "--use-fake-device-for-media-stream",
                         "--use-fake-ui-for-media-stream"]
            }
        }}});
        let r = b
            .http
            .post(format!("{}/session", b.base))
            .json(&caps)
            .send()
            .await
            .expect("new session");
        let v: Value = r.json().await.expect("session JSON");
        b.session = v["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {v}; log {}", log.display()))
            .to_string();
        b
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let mut req = self.http.request(method.clone(), &url);
        if let Some(body) = body {
            req = req.json(&body);
        } else if method == reqwest::Method::POST {
            req = req.json(&json!({}));
        }
        let r = req.send().await.unwrap_or_else(|e| panic!("{url}: {e}"));
        let status = r.status();
        let v: Value = r.json().await.expect("WebDriver JSON");
        assert!(status.is_success(), "{method} {path}: {status} {v}");
        v["value"].clone()
    }

    async fn goto(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", Some(json!({"url": url})))
            .await;
    }

    async fn find_all(&self, css: &str) -> Vec<String> {
        let v = self
            .call(
                reqwest::Method::POST,
                "/elements",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        v.as_array()
            .unwrap()
            .iter()
            .map(|e| {
                e[ELEMENT]
                    .as_str()
                    .unwrap_or_else(|| panic!("not an element reference: {e}"))
                    .to_string()
            })
            .collect()
    }

    async fn find(&self, css: &str) -> String {
        self.find_all(css)
            .await
            .into_iter()
            .next()
            .unwrap_or_else(|| panic!("no element {css}"))
    }

    /// Waits (polling) until `css` matches; a hung page fails after two minutes.
    async fn wait_for(&self, css: &str) -> String {
        let since = Instant::now();
        loop {
            if let Some(e) = self.find_all(css).await.into_iter().next() {
                return e;
            }
            assert!(
                since.elapsed() < Duration::from_secs(120),
                "{css} never appeared; page text:\n{}",
                self.text("body").await
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn type_into(&self, css: &str, text: &str) {
        let e = self.find(css).await;
        self.call(reqwest::Method::POST, &format!("/element/{e}/clear"), None)
            .await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{e}/value"),
            Some(json!({"text": text})),
        )
        .await;
    }

    /// A file input: the path is sent as its keys (replaces the chosen file).
    async fn upload(&self, css: &str, path: &str) {
        let e = self.find(css).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{e}/value"),
            Some(json!({"text": path})),
        )
        .await;
    }

    async fn click(&self, css: &str) {
        let e = self.find(css).await;
        self.call(reqwest::Method::POST, &format!("/element/{e}/click"), None)
            .await;
    }

    async fn text(&self, css: &str) -> String {
        let e = self.find(css).await;
        self.call(reqwest::Method::GET, &format!("/element/{e}/text"), None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    async fn attribute(&self, css: &str, name: &str) -> Option<String> {
        let e = self.find(css).await;
        self.call(
            reqwest::Method::GET,
            &format!("/element/{e}/attribute/{name}"),
            None,
        )
        .await
        .as_str()
        .map(str::to_string)
    }

    async fn property(&self, css: &str, name: &str) -> Value {
        let e = self.find(css).await;
        self.call(
            reqwest::Method::GET,
            &format!("/element/{e}/property/{name}"),
            None,
        )
        .await
    }

    async fn resize(&self, width: u32, height: u32) {
        self.call(
            reqwest::Method::POST,
            "/window/rect",
            Some(json!({"width": width, "height": height})),
        )
        .await;
    }

    async fn screenshot(&self, name: &str) -> PathBuf {
        use base64::Engine;
        let v = self.call(reqwest::Method::GET, "/screenshot", None).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().expect("base64 screenshot"))
            .expect("screenshot decodes");
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        let path = screenshots_dir().join(name);
        std::fs::write(&path, png).expect("write screenshot");
        eprintln!("screenshot: {}", path.display());
        path
    }

    /// Submits the form and waits until the page is done (answer or error shown, button back).
    async fn submit_and_wait(&self) {
        self.click("#submit").await;
        self.wait_for("#result:not([hidden]), #error:not([hidden])")
            .await;
        self.wait_for("#submit:not(:disabled)").await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Best effort: end the session (closes the browser), then the driver.
        let url = format!("{}/session/{}", self.base, self.session);
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let _ = reqwest::Client::new()
                    .delete(url)
                    .timeout(Duration::from_secs(10))
                    .send()
                    .await;
            });
        })
        .join();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
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

fn fixture_path(name: &str) -> String {
    fixture(name); // fetched if missing
    let dir = std::env::var("FIXTURES_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo().join("tests/fixtures/fetched"));
    std::fs::canonicalize(dir.join(name))
        .unwrap()
        .display()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_tries_two_photos_in_chromium() {
    let (driver, chromium) = match browser_tools() {
        Ok(t) => t,
        Err(why) if std::env::var_os("CI").is_some() => panic!("{why} (CI is set: not skipping)"),
        Err(why) => {
            eprintln!("SKIPPED: {why}; set CI=1 to fail instead");
            return;
        }
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
    browser
        .upload("#source-file", &dark.display().to_string())
        .await;
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

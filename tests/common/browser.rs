//! A WebDriver client (the W3C protocol, spoken with `reqwest`) driving
//! headless Chromium through chromedriver: Debian's `chromium` and
//! `chromium-driver`, or `FACECOMPARE_TEST_CHROMIUM` /
//! `FACECOMPARE_TEST_CHROMEDRIVER`. Screenshots go to
//! `target/try-page-screenshots/`.
use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::{Value, json};

use super::repo;

/// chromedriver and the browser, or None after `SKIPPED: ...` (a failure
/// under `CI`).
pub fn browser_or_skip() -> Option<(PathBuf, PathBuf)> {
    match browser_tools() {
        Ok(t) => Some(t),
        Err(why) if std::env::var_os("CI").is_some() => panic!("{why} (CI is set: not skipping)"),
        Err(why) => {
            eprintln!("SKIPPED: {why}; set CI=1 to fail instead");
            None
        }
    }
}

pub fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

/// chromedriver and the browser binary, or None (with the reason).
pub fn browser_tools() -> Result<(PathBuf, PathBuf), String> {
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

pub fn screenshots_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target"));
    let dir = target.join("try-page-screenshots");
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    dir
}

pub const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// One chromedriver process and one browser session; both end on drop.
pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    http: reqwest::Client,
}

impl Browser {
    pub async fn start(driver: &Path, browser: &Path) -> Browser {
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

    pub async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
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

    pub async fn goto(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", Some(json!({"url": url})))
            .await;
    }

    pub async fn find_all(&self, css: &str) -> Vec<String> {
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

    pub async fn find(&self, css: &str) -> String {
        self.find_all(css)
            .await
            .into_iter()
            .next()
            .unwrap_or_else(|| panic!("no element {css}"))
    }

    /// Waits (polling) until `css` matches; a hung page fails after two minutes.
    pub async fn wait_for(&self, css: &str) -> String {
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

    pub async fn type_into(&self, css: &str, text: &str) {
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
    pub async fn upload(&self, css: &str, path: impl AsRef<std::path::Path>) {
        let e = self.find(css).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{e}/value"),
            Some(json!({"text": path.as_ref().display().to_string()})),
        )
        .await;
    }

    pub async fn click(&self, css: &str) {
        let e = self.find(css).await;
        self.call(reqwest::Method::POST, &format!("/element/{e}/click"), None)
            .await;
    }

    pub async fn text(&self, css: &str) -> String {
        let e = self.find(css).await;
        self.call(reqwest::Method::GET, &format!("/element/{e}/text"), None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    pub async fn attribute(&self, css: &str, name: &str) -> Option<String> {
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

    pub async fn property(&self, css: &str, name: &str) -> Value {
        let e = self.find(css).await;
        self.call(
            reqwest::Method::GET,
            &format!("/element/{e}/property/{name}"),
            None,
        )
        .await
    }

    pub async fn resize(&self, width: u32, height: u32) {
        self.call(
            reqwest::Method::POST,
            "/window/rect",
            Some(json!({"width": width, "height": height})),
        )
        .await;
    }

    pub async fn screenshot(&self, name: &str) -> PathBuf {
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

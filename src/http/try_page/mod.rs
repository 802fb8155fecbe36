//! The try page: `GET /try` (HTML, `try/app.js`, `try/style.css`) and a small
//! landing page at `GET /` that links to it. Everything is embedded in the
//! binary; nothing is fetched from elsewhere and there is no build step.
//!
//! Safe to expose: a strict Content-Security-Policy (scripts and styles from
//! this origin only, no inline script, no framing, no form posts), `nosniff`,
//! no referrer. Every URL in the page is relative, so it works unchanged on a
//! sub-path behind a reverse proxy (docs/try-page.md). The page calls the
//! real `POST /v1/face/compare` (charged as usual) and the uncharged
//! `POST /v1/face/detect` for the outlines. `FACECOMPARE_TRY_PAGE=off`
//! removes these routes (404).
use axum::{
    Router,
    response::{IntoResponse, Response},
    routing::get,
};
use http::{HeaderName, HeaderValue, StatusCode, header};

pub const INDEX_HTML: &str = include_str!("index.html");
pub const APP_JS: &str = include_str!("app.js");
pub const STYLE_CSS: &str = include_str!("style.css");
pub const LANDING_HTML: &str = include_str!("landing.html");

/// `media-src blob:` and `img-src blob: data:` are for the camera preview and
/// the chosen photos (object URLs); `connect-src 'self'` for the API calls.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self' blob: data:; connect-src 'self'; media-src 'self' blob:; \
    form-action 'none'; frame-ancestors 'none'; base-uri 'none'";

/// The page's routes (added to the router unless the page is off).
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route(
            "/",
            get(|| async { page("text/html; charset=utf-8", LANDING_HTML) }),
        )
        .route(
            "/try",
            get(|| async { page("text/html; charset=utf-8", INDEX_HTML) }),
        )
        // `/try/` would resolve the page's relative URLs one level too deep.
        .route("/try/", get(|| async { redirect("../try") }))
        .route(
            "/try/app.js",
            get(|| async { page("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/try/style.css",
            get(|| async { page("text/css; charset=utf-8", STYLE_CSS) }),
        )
}

fn page(content_type: &'static str, body: &'static str) -> Response {
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    secure(h);
    r
}

/// A relative `Location`, so the redirect stays under a proxy's sub-path.
fn redirect(to: &'static str) -> Response {
    let mut r = StatusCode::FOUND.into_response();
    r.headers_mut()
        .insert(header::LOCATION, HeaderValue::from_static(to));
    secure(r.headers_mut());
    r
}

fn secure(h: &mut http::HeaderMap) {
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        HeaderName::from_static("cross-origin-opener-policy"),
        HeaderValue::from_static("same-origin"),
    );
    // The camera only for this page's own origin; nothing else.
    h.insert(
        HeaderName::from_static("permissions-policy"),
        HeaderValue::from_static("camera=(self), microphone=(), geolocation=()"),
    );
    // Small and versioned with the binary: always revalidate, never stale after an upgrade.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values of `attr="..."` in `html`.
    fn attr_values<'a>(html: &'a str, attr: &str) -> Vec<&'a str> {
        let needle = format!("{attr}=\"");
        html.match_indices(&needle)
            .map(|(i, _)| {
                let rest = &html[i + needle.len()..];
                &rest[..rest.find('"').unwrap()]
            })
            .collect()
    }

    fn is_relative(url: &str) -> bool {
        !url.starts_with('/') && !url.contains("//") && !url.contains(':')
            || url == "data:,"
            || url.starts_with('#')
    }

    #[test]
    fn every_url_in_the_pages_is_relative() {
        for html in [INDEX_HTML, LANDING_HTML] {
            let urls: Vec<&str> = ["href", "src", "action"]
                .iter()
                .flat_map(|a| attr_values(html, a))
                .collect();
            assert!(!urls.is_empty());
            for url in urls {
                assert!(is_relative(url), "absolute URL {url:?} in a page");
            }
        }
        assert!(attr_values(INDEX_HTML, "src").contains(&"try/app.js"));
        assert!(attr_values(INDEX_HTML, "href").contains(&"try/style.css"));
        assert!(attr_values(LANDING_HTML, "href").contains(&"try"));
    }

    #[test]
    fn the_script_calls_the_api_by_relative_urls_only() {
        assert!(APP_JS.contains("'v1/face/compare'"));
        assert!(APP_JS.contains("'v1/face/detect'"));
        for absolute in ["'/", "\"/", "`/", "http:", "https:", "//"] {
            assert!(
                !APP_JS.contains(absolute),
                "app.js holds {absolute:?}: URLs must stay relative for a proxy sub-path"
            );
        }
        // The key stays in the tab: no localStorage, no cookies.
        assert!(!APP_JS.contains("localStorage") && !APP_JS.contains("document.cookie"));
    }

    #[test]
    fn no_inline_script_or_style() {
        for html in [INDEX_HTML, LANDING_HTML] {
            assert!(!html.contains("<script>") && !html.contains("<style"));
            assert!(!html.contains(" style=\""), "inline style");
            // No `onclick="..."` and the like.
            for (i, _) in html.match_indices(" on") {
                let name: String = html[i + 3..]
                    .chars()
                    .take_while(char::is_ascii_alphabetic)
                    .collect();
                assert!(
                    !html[i + 3 + name.len()..].starts_with('='),
                    "inline handler on{name}"
                );
            }
        }
        assert!(!CSP.contains("unsafe"));
    }
}

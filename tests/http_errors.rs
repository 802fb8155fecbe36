//! The error table (docs/errors.md) over HTTP: every refusal has its status, a stable
//! code, a message naming the field, the request id, and costs nothing.
mod common;

use std::time::{Duration, Instant};

use common::{Backend, b64, file, fixture, images, server, text};

fn s() -> &'static common::Server {
    server(Backend::Sqlite)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_errors() {
    let s = s();
    let org = s.org(5).await;
    let k = org.key.as_str();
    s.post_raw(k, "text/plain", b"hello".to_vec(), &[])
        .await
        .assert_error(400, "unsupported_content_type", None);
    s.post_raw(
        k,
        "application/x-www-form-urlencoded",
        b"source=a&target=b".to_vec(),
        &[],
    )
    .await
    .assert_error(400, "unsupported_content_type", None);
    s.post_raw(k, "application/json", b"{\"source\": ".to_vec(), &[])
        .await
        .assert_error(400, "invalid_body", None);
    s.post_raw(k, "application/json", b"[\"a\", \"b\"]".to_vec(), &[])
        .await
        .assert_error(400, "invalid_body", None);
    s.post_raw(k, "multipart/form-data", b"--x\r\n".to_vec(), &[])
        .await
        .assert_error(400, "invalid_body", None);
    s.post_raw(
        k,
        "multipart/form-data; boundary=abc",
        b"garbage".to_vec(),
        &[],
    )
    .await
    .assert_error(400, "invalid_body", None);
    let v = s
        .post_raw(
            k,
            "application/json",
            br#"{"target": "orgs/a.jpg"}"#.to_vec(),
            &[],
        )
        .await
        .assert_error(400, "missing_field", Some("source"));
    assert!(v["message"].as_str().unwrap().contains("source"));
    s.post_raw(
        k,
        "application/json",
        br#"{"source": "orgs/a.jpg", "targte": "x"}"#.to_vec(),
        &[],
    )
    .await
    .assert_error(400, "missing_field", Some("target"));
    s.post_raw(
        k,
        "application/json",
        br#"{"source": "", "target": "x"}"#.to_vec(),
        &[],
    )
    .await
    .assert_error(400, "empty_field", Some("source"));
    s.post_raw(
        k,
        "application/json",
        br#"{"source": "x", "target": 42}"#.to_vec(),
        &[],
    )
    .await
    .assert_error(400, "invalid_field_type", Some("target"));
    s.post_raw(
        k,
        "application/json",
        br#"{"source": "a", "source": "b", "target": "c"}"#.to_vec(),
        &[],
    )
    .await
    .assert_error(400, "duplicate_field", Some("source"));
    // Multipart: an empty file part, a missing part.
    s.compare_multipart(k, &file(b""), &file(&fixture("obama.jpg")))
        .await
        .assert_error(400, "empty_field", Some("source"));
    let form = reqwest::multipart::Form::new().part(
        "source",
        reqwest::multipart::Part::bytes(fixture("obama.jpg")),
    );
    let r = common::Resp::from(
        common::client()
            .post(s.url("/v1/face/compare"))
            .header("x-api-key", k)
            .multipart(form)
            .send()
            .await
            .unwrap(),
    )
    .await;
    r.assert_error(400, "missing_field", Some("target"));
    assert_eq!(s.balance(&org).await, 5, "errors cost nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn base64_and_format_errors() {
    use base64::Engine;
    let s = s();
    let org = s.org(5).await;
    let k = org.key.as_str();
    let face = file(&fixture("obama.jpg"));
    // 4 KB of valid base64 that is no image, too long for an S3 key.
    let junk = base64::engine::general_purpose::STANDARD.encode(vec![0x42u8; 3000]);
    s.compare_json(k, &text(&junk), &b64(&fixture("obama.jpg")))
        .await
        .assert_error(400, "invalid_base64", Some("source"));
    // A JPEG signature, then a character outside the alphabet.
    let mut broken = base64::engine::general_purpose::STANDARD.encode(fixture("obama.jpg"));
    broken.insert(200, '*');
    s.compare_json(k, &b64(&fixture("obama.jpg")), &text(&broken))
        .await
        .assert_error(400, "invalid_base64", Some("target"));
    // Unsupported formats, as a file part and as base64.
    let v = s
        .compare_multipart(k, &file(&images::gif()), &face)
        .await
        .assert_error(400, "unsupported_image_format", Some("source"));
    assert!(v["message"].as_str().unwrap().contains("GIF"), "{v}");
    s.compare_json(k, &face, &b64(&images::bmp()))
        .await
        .assert_error(400, "unsupported_image_format", Some("target"));
    // Bytes that are no image at all, as a file part.
    s.compare_multipart(k, &face, &file(&[0x00, 0x9f, 0x92, 0x96, 0xff, 0x00]))
        .await
        .assert_error(400, "unsupported_image_format", Some("target"));
    // A truncated JPEG: the right signature, an undecodable body.
    let jpeg = fixture("obama.jpg");
    s.compare_multipart(k, &face, &file(&jpeg[..jpeg.len() / 3]))
        .await
        .assert_error(400, "image_decode_failed", Some("target"));
    assert_eq!(s.balance(&org).await, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn size_limits_and_decompression_bombs() {
    let s = s();
    let org = s.org(5).await;
    let k = org.key.as_str();
    let face = file(&fixture("obama.jpg"));
    let big = images::oversized_jpeg(15 * 1024 * 1024 + 1);
    let v = s
        .compare_multipart(k, &face, &file(&big))
        .await
        .assert_error(400, "image_too_large", Some("target"));
    assert!(v["message"].as_str().unwrap().contains("15 MB"), "{v}");
    // The same as base64 in JSON: judged on the decoded size.
    s.compare_json(k, &b64(&big), &face)
        .await
        .assert_error(400, "image_too_large", Some("source"));
    // Just under the limit is not refused for its size (it is no valid JPEG, though).
    let at_limit = images::oversized_jpeg(15 * 1024 * 1024);
    s.compare_multipart(k, &face, &file(&at_limit))
        .await
        .assert_error(400, "image_decode_failed", Some("target"));
    // A 100-byte PNG declaring 100000×100000 pixels: refused at once, not decoded.
    let bomb = images::png_bomb(100_000, 100_000);
    let started = Instant::now();
    s.compare_multipart(k, &face, &file(&bomb))
        .await
        .assert_error(400, "image_dimensions_too_large", Some("target"));
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "bomb took {:?}",
        started.elapsed()
    );
    assert_eq!(s.balance(&org).await, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthorized() {
    let s = s();
    let org = s.org(5).await;
    let (a, c) = (file(&fixture("obama.jpg")), file(&fixture("obama2.jpg")));
    let form = reqwest::multipart::Form::new()
        .text("source", "x")
        .text("target", "y");
    let r = common::Resp::from(
        common::client()
            .post(s.url("/v1/face/compare"))
            .multipart(form)
            .send()
            .await
            .unwrap(),
    )
    .await;
    r.assert_error(401, "unauthorized", Some("x-api-key"));
    s.compare_multipart("fck_0000000000000000000000000000000000000000", &a, &c)
        .await
        .assert_error(401, "unauthorized", Some("x-api-key"));
    s.compare_multipart(&org.key, &a, &c)
        .await
        .assert_compare_ok();
    common::cli(&s.db_url, &["key", "revoke", &org.key_id]).await;
    s.compare_multipart(&org.key, &a, &c).await.assert_error(
        401,
        "unauthorized",
        Some("x-api-key"),
    );
    assert_eq!(s.balance(&org).await, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limited_with_retry_after() {
    let s = s();
    let org = s.org_with(10, &["--rate-limit", "2/min"]).await;
    let face = file(&fixture("obama.jpg"));
    let first = s.compare_multipart(&org.key, &face, &face).await;
    first.assert_compare_ok();
    assert_eq!(
        first.header("ratelimit-policy"),
        Some("\"default\";q=2;w=60")
    );
    assert!(
        first
            .header("ratelimit")
            .is_some_and(|h| h.starts_with("\"default\";r=1;")),
        "{:?}",
        first.headers
    );
    // Every request counts, a failing one too.
    s.post_raw(&org.key, "text/plain", b"x".to_vec(), &[])
        .await
        .assert_error(400, "unsupported_content_type", None);
    let r = s.compare_multipart(&org.key, &face, &face).await;
    r.assert_error(429, "rate_limited", None);
    let retry: u64 = r
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .expect("seconds");
    assert!((1..=60).contains(&retry), "Retry-After {retry}");
    assert!(
        r.header("ratelimit")
            .is_some_and(|h| h.starts_with("\"default\";r=0;")),
        "{:?}",
        r.headers
    );
    assert_eq!(r.header("ratelimit-policy"), Some("\"default\";q=2;w=60"));
    assert_eq!(s.balance(&org).await, 9);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_references_without_s3_or_outside_the_prefix() {
    let s = s();
    let org = s.org(5).await;
    let face = file(&fixture("obama.jpg"));
    let r = s
        .compare_multipart(&org.key, &face, &text("orgs/someone-else/selfie.jpg"))
        .await;
    if s.s3_configured {
        // External server with a bucket: another org's prefix is refused.
        r.assert_error(403, "s3_forbidden", Some("target"));
    } else {
        let v = r.assert_error(400, "s3_not_configured", Some("target"));
        assert!(v["message"].as_str().unwrap().contains("S3"), "{v}");
    }
    assert_eq!(s.balance(&org).await, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_key_must_be_sane() {
    let s = s();
    let org = s.org(5).await;
    let face = file(&fixture("obama.jpg"));
    let long = "k".repeat(300);
    s.compare_multipart_with(&org.key, &face, &face, &[("idempotency-key", &long)])
        .await
        .assert_error(400, "invalid_idempotency_key", Some("Idempotency-Key"));
    assert_eq!(s.balance(&org).await, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_routes_and_methods_are_json_errors() {
    let s = s();
    s.get("/v1/face/nope")
        .await
        .assert_error(404, "not_found", None);
    s.get("/v1/face/compare")
        .await
        .assert_error(405, "method_not_allowed", None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ids_are_honoured_or_generated() {
    let s = s();
    let r = common::Resp::from(
        common::client()
            .get(s.url("/healthz"))
            .header("x-request-id", "client-id-42")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.header("x-request-id"), Some("client-id-42"));
    let r = common::Resp::from(
        common::client()
            .get(s.url("/healthz"))
            .header("x-request-id", "bad id with spaces")
            .send()
            .await
            .unwrap(),
    )
    .await;
    let id = r.header("x-request-id").expect("generated id");
    assert_ne!(id, "bad id with spaces");
    assert_eq!(id.len(), 36, "a UUID: {id}");
    let r = s
        .post_raw(
            "nope",
            "application/json",
            b"{}".to_vec(),
            &[("x-request-id", "trace-7")],
        )
        .await;
    let v = r.assert_error(401, "unauthorized", None);
    assert_eq!(v["requestId"], "trace-7");
}

/// A multipart *file* part is raw image bytes: a text file uploaded as
/// `source` is `unsupported_image_format`, not an S3 key; the same text as a
/// plain field keeps the string rules. Upper-case `NAME=`/`FILENAME=` and a
/// JSON byte-order mark are accepted as common servers do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_parts_case_insensitive_dispositions_and_json_bom() {
    let s = s();
    let org = s.org(5).await;
    let k = org.key.as_str();
    let face = fixture("obama.jpg");
    let r = s
        .compare_multipart(k, &file(b"orgs/someone/else.jpg"), &file(&face))
        .await;
    r.assert_error(400, "unsupported_image_format", Some("source"));
    // As a text part the same string is an S3 key again.
    let r = s
        .compare_multipart(k, &text("orgs/someone/else.jpg"), &file(&face))
        .await;
    assert_ne!(r.json()["error"], "unsupported_image_format", "{}", r.text);

    let mut body = Vec::new();
    for (name, file_name) in [("source", "a.jpg"), ("target", "b.jpg")] {
        body.extend_from_slice(
            format!(
                "--B\r\nContent-Disposition: FORM-DATA; NAME=\"{name}\"; FILENAME=\"{file_name}\"\r\n\
                 Content-Type: image/jpeg\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(&face);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b"--B--\r\n");
    s.post_raw(k, "multipart/form-data; boundary=B", body, &[])
        .await
        .assert_compare_ok();

    let b64 = |b: &[u8]| match b64(b) {
        common::Input::Text(t) => t,
        common::Input::File(_) => unreachable!(),
    };
    let mut json = b"\xEF\xBB\xBF".to_vec();
    json.extend_from_slice(
        serde_json::json!({"source": b64(&face), "target": b64(&face)})
            .to_string()
            .as_bytes(),
    );
    s.post_raw(k, "application/json", json, &[])
        .await
        .assert_compare_ok();
    assert_eq!(s.balance(&org).await, 3, "two compares charged, no refusal");
}

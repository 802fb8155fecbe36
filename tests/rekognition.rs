//! The AWS Rekognition `CompareFaces` protocol (`POST /`) driven by the real
//! AWS SDK for Rust (`aws-sdk-rekognition`, `endpoint_url` = the test server,
//! credentials from `facecompare key create --aws`), on SQLite and
//! PostgreSQL, plus `S3Object` inputs against a real S3 server (s3s-fs).
mod common;

use aws_sdk_rekognition::{
    Client,
    config::{BehaviorVersion, Credentials, Region, retry::RetryConfig},
    error::ProvideErrorMetadata,
    primitives::Blob,
    types::{Image, QualityFilter, S3Object},
};
use common::{
    Backend, Server, ServerOptions, TestOrg, backends::on_both_backends, cli_json, fixture, images,
    server,
};

on_both_backends!(
    if keys_can_be_issued;
    same_person_is_a_face_match_and_costs_one_token,
    different_people_are_unmatched_faces,
    no_face_in_the_source_is_invalid_parameter_and_free,
    bad_signatures_and_revoked_keys_are_refused,
    the_rate_limit_is_a_throttling_exception,
    hand_signed_requests_check_target_and_date,
    insufficient_tokens_are_access_denied,
    quality_filter_levels_read_brightness_sharpness_size_and_pose,
);

/// The CLI here and the server must share the AWS signing key: a self-started
/// server and the CLI both use `data/aws-signing.key` of this directory; a
/// running stack gives its key to the tests container (the compose file mounts
/// the server's data volume and names the file). Against a stack without it the
/// suite fails, never skips: a Rekognition suite that did not run is no pass.
fn keys_can_be_issued() -> bool {
    if common::external_base().is_some() {
        let set = |v: &str| std::env::var(v).is_ok_and(|k| !k.trim().is_empty());
        let file_readable = std::env::var("FACECOMPARE_AWS_SIGNING_KEY_FILE")
            .is_ok_and(|f| std::fs::read_to_string(f.trim()).is_ok());
        assert!(
            set("FACECOMPARE_AWS_SIGNING_KEY") || file_readable,
            "against a running stack the Rekognition suite needs the server's signing key: \
             FACECOMPARE_AWS_SIGNING_KEY, or FACECOMPARE_AWS_SIGNING_KEY_FILE naming a readable \
             copy of it (docker-compose.yml mounts the server's data volume for this)"
        );
    }
    true
}

struct AwsKey {
    id: String,
    secret: String,
}

async fn aws_key(s: &Server, org: &TestOrg) -> AwsKey {
    let k = cli_json(
        &s.db_url,
        &["key", "create", "--org", &org.id, "--aws", "--json"],
    )
    .await;
    assert_eq!(k["org"], org.id.as_str(), "{k}");
    assert_eq!(k["kind"], "aws", "{k}");
    AwsKey {
        id: k["accessKeyId"].as_str().expect("accessKeyId").to_string(),
        secret: k["secretAccessKey"]
            .as_str()
            .expect("secretAccessKey")
            .to_string(),
    }
}

/// An SDK client for the server; retries off so that each call is one request.
fn client(s: &Server, id: &str, secret: &str) -> Client {
    let config = aws_sdk_rekognition::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("eu-west-1"))
        .endpoint_url(&s.base)
        .credentials_provider(Credentials::new(id, secret, None, None, "facecompare"))
        .retry_config(RetryConfig::disabled())
        .build();
    Client::from_conf(config)
}

fn bytes(b: Vec<u8>) -> Image {
    Image::builder().bytes(Blob::new(b)).build()
}

async fn same_person_is_a_face_match_and_costs_one_token(b: Backend) {
    let s = server(b);
    let org = s.org(10).await;
    let key = aws_key(s, &org).await;
    let out = client(s, &key.id, &key.secret)
        .compare_faces()
        .source_image(bytes(fixture("obama.jpg")))
        .target_image(bytes(fixture("obama2.jpg")))
        .send()
        .await
        .expect("CompareFaces");
    let source = out.source_image_face().expect("SourceImageFace");
    let sb = source.bounding_box().expect("BoundingBox");
    assert!(
        sb.width().unwrap() > 0.05 && sb.width().unwrap() <= 1.0,
        "{sb:?}"
    );
    assert!(source.confidence().unwrap() > 50.0, "{source:?}");
    let matches = out.face_matches();
    assert_eq!(matches.len(), 1, "{out:?}");
    assert!(matches[0].similarity().unwrap() >= 90.0, "{out:?}");
    let face = matches[0].face().expect("Face");
    let kinds: Vec<String> = face
        .landmarks()
        .iter()
        .map(|l| l.r#type().unwrap().as_str().to_string())
        .collect();
    assert_eq!(kinds, ["eyeLeft", "eyeRight", "nose"]);
    // Pose and Quality are measured (docs/quality.md): a frontal, sharp face.
    let (pose, quality) = (face.pose().expect("Pose"), face.quality().expect("Quality"));
    assert!(pose.roll().unwrap().abs() < 20.0, "{pose:?}");
    assert!(pose.yaw().unwrap().abs() < 35.0, "{pose:?}");
    assert!(pose.pitch().unwrap().abs() < 30.0, "{pose:?}");
    let brightness = quality.brightness().unwrap();
    assert!((25.0..=90.0).contains(&brightness), "{quality:?}");
    assert!(quality.sharpness().unwrap() >= 22.0, "{quality:?}");
    assert!(
        face.emotions().is_empty() && face.smile().is_none(),
        "{face:?}"
    );
    assert!(out.unmatched_faces().is_empty(), "{out:?}");
    assert_eq!(s.balance(&org).await, 9);
    // The native API still works for the same organisation.
    s.compare_multipart(
        &org.key,
        &common::file(&fixture("obama.jpg")),
        &common::file(&fixture("obama2.jpg")),
    )
    .await
    .assert_compare_ok();
    assert_eq!(s.balance(&org).await, 8);
    // QualityFilter and SimilarityThreshold are honoured: nothing is 100 % similar.
    let out = client(s, &key.id, &key.secret)
        .compare_faces()
        .source_image(bytes(fixture("obama.jpg")))
        .target_image(bytes(fixture("obama2.jpg")))
        .similarity_threshold(100.0)
        .quality_filter(QualityFilter::Auto)
        .send()
        .await
        .expect("CompareFaces");
    assert!(out.face_matches().is_empty(), "{out:?}");
    assert_eq!(out.unmatched_faces().len(), 1, "{out:?}");
    assert_eq!(s.balance(&org).await, 7);
    // Same metrics as the native endpoint, under the route label `/`.
    let m = s.metrics().await;
    if m.status == 200 {
        assert!(
            m.text
                .contains("facecompare_requests_total{route=\"/\",status=\"200\"}"),
            "{}",
            m.text
        );
        // SimilarityThreshold reaches the engine: at 91 this pair (adult map
        // ≈ 97, child map ≈ 85) is decided by the ages, so the age pass runs
        // (at the organisation's 80 both maps match it and it would not).
        let runs = |text: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix("facecompare_age_passes_run_total "))
                .and_then(|v| v.trim().parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        let before = runs(&m.text);
        let out = client(s, &key.id, &key.secret)
            .compare_faces()
            .source_image(bytes(fixture("obama.jpg")))
            .target_image(bytes(fixture("obama2.jpg")))
            .similarity_threshold(91.0)
            .send()
            .await
            .expect("CompareFaces");
        assert_eq!(out.face_matches().len(), 1, "{out:?}");
        let after = runs(&s.metrics().await.text);
        assert!(after > before, "age passes run: {before} -> {after}");
    }
}

async fn different_people_are_unmatched_faces(b: Backend) {
    let s = server(b);
    let org = s.org(10).await;
    let key = aws_key(s, &org).await;
    let out = client(s, &key.id, &key.secret)
        .compare_faces()
        .source_image(bytes(fixture("obama.jpg")))
        .target_image(bytes(fixture("biden.jpg")))
        .send()
        .await
        .expect("CompareFaces");
    assert!(out.face_matches().is_empty(), "{out:?}");
    assert_eq!(out.unmatched_faces().len(), 1, "{out:?}");
    // No face in the target: a success with empty lists, as on AWS.
    let out = client(s, &key.id, &key.secret)
        .compare_faces()
        .source_image(bytes(fixture("obama.jpg")))
        .target_image(bytes(fixture("rocket.jpg")))
        .send()
        .await
        .expect("CompareFaces");
    assert!(out.face_matches().is_empty() && out.unmatched_faces().is_empty());
    assert_eq!(s.balance(&org).await, 8);
}

async fn no_face_in_the_source_is_invalid_parameter_and_free(b: Backend) {
    let s = server(b);
    let org = s.org(10).await;
    let key = aws_key(s, &org).await;
    let c = client(s, &key.id, &key.secret);
    let e = c
        .compare_faces()
        .source_image(bytes(images::grey_png(640, 480)))
        .target_image(bytes(fixture("obama.jpg")))
        .send()
        .await
        .expect_err("no face in the source");
    assert_eq!(e.code(), Some("InvalidParameterException"), "{e:?}");
    let e = c
        .compare_faces()
        .source_image(bytes(images::gif()))
        .target_image(bytes(fixture("obama.jpg")))
        .send()
        .await
        .expect_err("a GIF");
    assert_eq!(e.code(), Some("InvalidImageFormatException"), "{e:?}");
    let e = c
        .compare_faces()
        .source_image(bytes(images::oversized_jpeg(5 * 1024 * 1024 + 1)))
        .target_image(bytes(fixture("obama.jpg")))
        .send()
        .await
        .expect_err("over 5 MB");
    assert_eq!(e.code(), Some("ImageTooLargeException"), "{e:?}");
    assert_eq!(s.balance(&org).await, 10, "failures are free");
}

/// QualityFilter is a floor on the capture's quality, not on the detector's
/// score (docs/quality.md): a clear photo passes HIGH; a strongly blurred or
/// darkened copy of it is no face at MEDIUM (so at HIGH too), and is still
/// compared at NONE; filtered sources are free.
async fn quality_filter_levels_read_brightness_sharpness_size_and_pose(b: Backend) {
    use aws_sdk_rekognition::types::QualityFilter as Q;
    let s = server(b);
    let org = s.org(20).await;
    let key = aws_key(s, &org).await;
    let c = client(s, &key.id, &key.secret);
    let compare = |source: Vec<u8>, target: Vec<u8>, level: Q| {
        c.compare_faces()
            .source_image(bytes(source))
            .target_image(bytes(target))
            .quality_filter(level)
            .send()
    };
    let selfie = fixture("obama.jpg");
    let out = compare(selfie.clone(), fixture("obama2.jpg"), Q::High)
        .await
        .expect("a clear selfie passes HIGH");
    assert_eq!(out.face_matches().len(), 1, "{out:?}");
    let mut charged = 1;
    // The face is ~260 px: σ 6 px is ~2.6 px of the 112-px crop.
    let blurred = images::degraded_jpeg(&selfie, 6.0, 1.0);
    let dark = images::degraded_jpeg(&selfie, 0.0, 0.2);
    for (what, poor) in [("blurred", &blurred), ("dark", &dark)] {
        for level in [Q::High, Q::Medium, Q::Auto] {
            let e = compare(poor.clone(), fixture("obama2.jpg"), level.clone())
                .await
                .expect_err(what);
            assert_eq!(
                e.code(),
                Some("InvalidParameterException"),
                "{what} {level:?}: {e:?}"
            );
        }
        // Still a face, and still Obama, when nothing is filtered.
        let out = compare(poor.clone(), fixture("obama2.jpg"), Q::None)
            .await
            .unwrap_or_else(|e| panic!("{what} at NONE: {e:?}"));
        charged += 1;
        assert_eq!(out.face_matches().len() + out.unmatched_faces().len(), 1);
        // As a target, the poor face is left out at MEDIUM, listed at NONE.
        let out = compare(selfie.clone(), poor.clone(), Q::Medium)
            .await
            .unwrap();
        charged += 1;
        assert!(
            out.face_matches().is_empty() && out.unmatched_faces().is_empty(),
            "{what} target at MEDIUM: {out:?}"
        );
        let out = compare(selfie.clone(), poor.clone(), Q::None)
            .await
            .unwrap();
        charged += 1;
        let q = out
            .face_matches()
            .iter()
            .map(|m| m.face().unwrap())
            .chain(out.unmatched_faces())
            .next()
            .and_then(|f| f.quality())
            .cloned()
            .unwrap_or_else(|| panic!("{what} target at NONE: {out:?}"));
        match what {
            "blurred" => assert!(q.sharpness().unwrap() < 12.0, "{q:?}"),
            _ => assert!(q.brightness().unwrap() < 16.0, "{q:?}"),
        }
    }
    assert_eq!(
        s.balance(&org).await,
        20 - charged,
        "filtered sources are free"
    );
    // The 2.6 MP phone selfie BlazeFace scores 0.89 (under the old 0.9 floor).
    let phone =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/eval/deepface/img1.jpg");
    match std::fs::read(&phone) {
        Ok(selfie) => {
            let out = compare(selfie.clone(), selfie, Q::High)
                .await
                .expect("a 2.6 MP phone selfie passes HIGH");
            assert_eq!(out.face_matches().len(), 1, "{out:?}");
        }
        Err(_) => {
            eprintln!("SKIPPED: ../shared/eval/deepface/img1.jpg is absent (2.6 MP selfie at HIGH)")
        }
    }
}

async fn bad_signatures_and_revoked_keys_are_refused(b: Backend) {
    let s = server(b);
    let org = s.org(10).await;
    let key = aws_key(s, &org).await;
    // The secret with its last character changed (to one it surely is not).
    let last = if key.secret.ends_with('x') { 'y' } else { 'x' };
    let wrong = format!("{}{last}", &key.secret[..key.secret.len() - 1]);
    let e = client(s, &key.id, &wrong)
        .compare_faces()
        .source_image(bytes(fixture("obama.jpg")))
        .target_image(bytes(fixture("obama2.jpg")))
        .send()
        .await
        .expect_err("wrong secret");
    assert_eq!(e.code(), Some("InvalidSignatureException"), "{e:?}");
    let e = client(s, "FCAK0000000000000000", &key.secret)
        .compare_faces()
        .source_image(bytes(fixture("obama.jpg")))
        .target_image(bytes(fixture("obama2.jpg")))
        .send()
        .await
        .expect_err("unknown key");
    assert_eq!(e.code(), Some("UnrecognizedClientException"), "{e:?}");

    let listed = cli_json(&s.db_url, &["key", "list", "--org", &org.id, "--json"]).await;
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["id"] == key.id.as_str() && k["kind"] == "aws" && k["revoked"] == false),
        "{listed}"
    );
    common::cli(&s.db_url, &["key", "revoke", &key.id]).await;
    let e = client(s, &key.id, &key.secret)
        .compare_faces()
        .source_image(bytes(fixture("obama.jpg")))
        .target_image(bytes(fixture("obama2.jpg")))
        .send()
        .await
        .expect_err("revoked key");
    assert_eq!(e.code(), Some("UnrecognizedClientException"), "{e:?}");
    assert_eq!(s.balance(&org).await, 10);

    // Plain HTTP: no signature at all, and an unknown target.
    let r = common::client()
        .post(s.url("/"))
        .header("x-amz-target", "RekognitionService.CompareFaces")
        .header("content-type", "application/x-amz-json-1.1")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["__type"], "MissingAuthenticationTokenException", "{v}");
}

async fn the_rate_limit_is_a_throttling_exception(b: Backend) {
    let s = server(b);
    let org = s.org_with(10, &["--rate-limit", "1/min"]).await;
    let key = aws_key(s, &org).await;
    let c = client(s, &key.id, &key.secret);
    c.compare_faces()
        .source_image(bytes(fixture("obama.jpg")))
        .target_image(bytes(fixture("obama2.jpg")))
        .send()
        .await
        .expect("the first request is within the limit");
    let e = c
        .compare_faces()
        .source_image(bytes(fixture("obama.jpg")))
        .target_image(bytes(fixture("obama2.jpg")))
        .send()
        .await
        .expect_err("over the limit");
    assert_eq!(e.code(), Some("ThrottlingException"), "{e:?}");
    assert_eq!(s.balance(&org).await, 9);
}

async fn insufficient_tokens_are_access_denied(b: Backend) {
    let s = server(b);
    let org = s.org(0).await;
    let key = aws_key(s, &org).await;
    let e = client(s, &key.id, &key.secret)
        .compare_faces()
        .source_image(bytes(fixture("obama.jpg")))
        .target_image(bytes(fixture("obama2.jpg")))
        .send()
        .await
        .expect_err("no tokens");
    assert_eq!(e.code(), Some("AccessDeniedException"), "{e:?}");
    assert!(e.message().unwrap_or("").contains("token"), "{e:?}");
}

/// `S3Object` inputs: the configured bucket and the organisation's prefix only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_objects_follow_the_ownership_rule() {
    if !common::own_servers_or_skip("the Rekognition S3 test") {
        return;
    }
    let Some(bin) = common::s3::s3s_fs_or_skip() else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    // s3s-fs serves a bucket as a folder: objects are written as files.
    let prefix = format!("orgs/{}/", common::unique_name("rk"));
    let own = work.path().join("data/faces").join(&prefix);
    std::fs::create_dir_all(&own).unwrap();
    std::fs::write(own.join("a.jpg"), fixture("obama.jpg")).unwrap();
    std::fs::write(own.join("b.jpg"), fixture("obama2.jpg")).unwrap();
    let theirs = work.path().join("data/faces/orgs/someone-else");
    std::fs::create_dir_all(&theirs).unwrap();
    std::fs::write(theirs.join("b.jpg"), fixture("obama2.jpg")).unwrap();
    let store = common::s3::S3sFs::start(&bin, work.path(), "rk-test", "rk-test-secret").await;
    let port = store.addr.port();

    let db = common::fresh_database(Backend::Sqlite, "rekognition-s3");
    let owned = common::spawn_server(
        ServerOptions::new(&db)
            .env("FACECOMPARE_S3_BUCKET", "faces")
            .env(
                "FACECOMPARE_S3_ENDPOINT",
                &format!("http://127.0.0.1:{port}"),
            )
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", "rk-test")
            .env("AWS_SECRET_ACCESS_KEY", "rk-test-secret")
            .env("AWS_EC2_METADATA_DISABLED", "true"),
    );
    let s = &owned.server;
    let org = s
        .org_with(10, &["--rate-limit", "1000/min", "--s3-prefix", &prefix])
        .await;
    let key = aws_key(s, &org).await;
    let c = client(s, &key.id, &key.secret);
    let obj = |bucket: &str, name: &str| {
        Image::builder()
            .s3_object(S3Object::builder().bucket(bucket).name(name).build())
            .build()
    };
    let out = c
        .compare_faces()
        .source_image(obj("faces", &format!("{prefix}a.jpg")))
        .target_image(obj("faces", &format!("{prefix}b.jpg")))
        .send()
        .await
        .expect("own objects");
    assert_eq!(out.face_matches().len(), 1, "{out:?}");
    for (bucket, name) in [
        ("faces", "orgs/someone-else/b.jpg".to_string()),
        ("other-bucket", format!("{prefix}b.jpg")),
        ("faces", format!("{prefix}../someone-else/b.jpg")),
        ("faces", format!("{prefix}missing.jpg")),
    ] {
        let e = c
            .compare_faces()
            .source_image(obj("faces", &format!("{prefix}a.jpg")))
            .target_image(obj(bucket, &name))
            .send()
            .await
            .expect_err("not the org's object");
        assert_eq!(
            e.code(),
            Some("InvalidS3ObjectException"),
            "{bucket}/{name}: {e:?}"
        );
    }
    assert_eq!(s.balance(&org).await, 9);
    drop(owned);
    drop(store);
}

/// A request signed here (with the server's own SigV4 functions, which the
/// AWS test vectors pin), to reach what an SDK never sends: another
/// `X-Amz-Target`, a date outside the 15-minute window.
async fn signed_post(
    s: &Server,
    key: &AwsKey,
    target: &str,
    amz_date: &str,
) -> (u16, serde_json::Value) {
    let signed = ["content-type", "host", "x-amz-date", "x-amz-target"];
    signed_post_with(s, key, target, amz_date, &signed).await
}

/// [`signed_post`] with only `signed` in `SignedHeaders`.
async fn signed_post_with(
    s: &Server,
    key: &AwsKey,
    target: &str,
    amz_date: &str,
    signed: &[&str],
) -> (u16, serde_json::Value) {
    use facecompare::http::rekognition::sigv4;
    use sha2::Digest;
    let body = b"{}";
    let host = s.base.trim_start_matches("http://").to_string();
    let mut h = http::HeaderMap::new();
    h.insert("host", host.parse().unwrap());
    h.insert("x-amz-date", amz_date.parse().unwrap());
    h.insert("x-amz-target", target.parse().unwrap());
    h.insert(
        "content-type",
        "application/x-amz-json-1.1".parse().unwrap(),
    );
    let signed: Vec<String> = signed.iter().map(|h| h.to_string()).collect();
    let payload = hex::encode(sha2::Sha256::digest(body));
    let creq = sigv4::canonical_request("POST", "/", None, &h, &signed, &payload).unwrap();
    let date = &amz_date[..8];
    let scope = format!("{date}/us-east-1/rekognition/aws4_request");
    let sts = sigv4::string_to_sign(amz_date, &scope, &creq);
    let sig = sigv4::signature(
        &sigv4::signing_key(&key.secret, date, "us-east-1", "rekognition"),
        &sts,
    );
    let auth = format!(
        "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={}, Signature={sig}",
        key.id,
        signed.join(";")
    );
    let r = common::client()
        .post(s.url("/"))
        .header("x-amz-date", amz_date)
        .header("x-amz-target", target)
        .header("content-type", "application/x-amz-json-1.1")
        .header("authorization", auth)
        .body(&body[..])
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

fn amz_date(offset_secs: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
        + offset_secs;
    let t = facecompare::utc::DateTime::from_unix(now);
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        t.year, t.month, t.day, t.hour, t.minute, t.second
    )
}

async fn hand_signed_requests_check_target_and_date(b: Backend) {
    let s = server(b);
    let org = s.org(10).await;
    let key = aws_key(s, &org).await;
    // Correctly signed, empty body: the signature passes, the body does not.
    let (status, v) = signed_post(s, &key, "RekognitionService.CompareFaces", &amz_date(0)).await;
    assert_eq!(
        (status, v["__type"].as_str()),
        (400, Some("InvalidParameterException")),
        "{v}"
    );
    assert!(
        v["message"].as_str().unwrap().starts_with("SourceImage"),
        "{v}"
    );
    // X-Amz-Target left out of SignedHeaders: it could be changed in transit.
    let (status, v) = signed_post_with(
        s,
        &key,
        "RekognitionService.CompareFaces",
        &amz_date(0),
        &["content-type", "host", "x-amz-date"],
    )
    .await;
    assert_eq!(
        (status, v["__type"].as_str()),
        (400, Some("IncompleteSignatureException")),
        "{v}"
    );
    assert!(
        v["message"].as_str().unwrap().contains("x-amz-target"),
        "{v}"
    );
    let (status, v) = signed_post(s, &key, "RekognitionService.DetectFaces", &amz_date(0)).await;
    assert_eq!(
        (status, v["__type"].as_str()),
        (400, Some("UnknownOperationException")),
        "{v}"
    );
    let (status, v) = signed_post(
        s,
        &key,
        "RekognitionService.CompareFaces",
        &amz_date(-16 * 60),
    )
    .await;
    assert_eq!(
        (status, v["__type"].as_str()),
        (403, Some("InvalidSignatureException")),
        "{v}"
    );
    assert!(v["message"].as_str().unwrap().contains("expired"), "{v}");
    // Within the window (clock skew of a few minutes) is accepted.
    let (_, v) = signed_post(
        s,
        &key,
        "RekognitionService.CompareFaces",
        &amz_date(-5 * 60),
    )
    .await;
    assert_eq!(v["__type"], "InvalidParameterException", "{v}");
    assert_eq!(s.balance(&org).await, 10);
}

/// A lost signing key file (a recreated container without its data volume):
/// the server says so at start, a request with a live access key gets an
/// error naming the missing signing key (not "unknown access key"), and the
/// CLI refuses to generate a new key that would invalidate the issued secrets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_signing_key_is_named_not_an_unknown_key() {
    if !common::own_servers_or_skip("a server whose signing key file is removed") {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let db = common::fresh_database(Backend::Sqlite, "lost-signing-key");
    let key_file = work.path().join("data/aws-signing.key");
    let opts = || ServerOptions {
        cwd: Some(work.path().to_path_buf()),
        ..ServerOptions::new(&db)
    };
    let cli_here = |args: &[&str]| {
        std::process::Command::new(common::BIN)
            .args(args)
            .current_dir(work.path())
            .env("FACECOMPARE_DATABASE_URL", &db)
            .env_remove("FACECOMPARE_AWS_SIGNING_KEY")
            .env_remove("FACECOMPARE_AWS_SIGNING_KEY_FILE")
            .env("RUST_LOG", "warn")
            .output()
            .expect("running the CLI")
    };
    {
        let first = common::spawn_server(opts());
        assert!(
            key_file.exists(),
            "serve generates the signing key while no access key exists"
        );
        let org = first.org(5).await;
        let out = cli_here(&["key", "create", "--org", &org.id, "--aws", "--json"]);
        assert!(out.status.success(), "{out:?}");
        let k: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let (id, secret) = (
            k["accessKeyId"].as_str().unwrap().to_string(),
            k["secretAccessKey"].as_str().unwrap().to_string(),
        );
        client(&first, &id, &secret)
            .compare_faces()
            .source_image(bytes(fixture("obama.jpg")))
            .target_image(bytes(fixture("obama2.jpg")))
            .send()
            .await
            .expect("CompareFaces with the key's secret");

        std::fs::remove_file(&key_file).unwrap();
        let second = common::spawn_server(opts());
        assert!(
            !key_file.exists(),
            "no new key may replace a lost one while access keys are live"
        );
        let log = common::tail(second.log.as_ref().unwrap());
        assert!(
            log.contains("no AWS signing key") && log.contains("restore that key"),
            "{log}"
        );
        let e = client(&second, &id, &secret)
            .compare_faces()
            .source_image(bytes(fixture("obama.jpg")))
            .target_image(bytes(fixture("obama2.jpg")))
            .send()
            .await
            .expect_err("no signing key");
        assert_eq!(e.code(), Some("InternalServerError"), "{e:?}");
        assert!(e.message().unwrap_or("").contains("signing key"), "{e:?}");
        assert_eq!(second.balance(&org).await, 4, "nothing charged for it");

        let out = cli_here(&["key", "create", "--org", &org.id, "--aws"]);
        assert!(!out.status.success(), "{out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("restore that key"), "{err}");
        assert!(!key_file.exists());
    }
}

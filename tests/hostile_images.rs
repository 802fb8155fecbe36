//! Hostile images over HTTP: files made to cost minutes of decode or
//! gigabytes of memory are refused or handled within bounds, and the server
//! keeps serving normal compares right after them.
mod common;

use std::time::{Duration, Instant};

use common::{Backend, Resp, Server, client, file, fixture, images, server};

/// A progressive grey JPEG declaring `side`×`side` pixels with `scans`
/// scans: one DC scan of zeros, then AC scans that are a few end-of-band
/// runs each (tens of bytes, but a pass over every block for a decoder).
fn many_scan_jpeg(side: u16, scans: usize) -> Vec<u8> {
    let blocks = (side as usize).div_ceil(8).pow(2);
    let mut out = vec![0xFF, 0xD8];
    let segment = |out: &mut Vec<u8>, marker: u8, body: &[u8]| {
        out.extend_from_slice(&[0xFF, marker]);
        out.extend_from_slice(&((body.len() + 2) as u16).to_be_bytes());
        out.extend_from_slice(body);
    };
    segment(&mut out, 0xDB, &[[0u8].as_slice(), &[1u8; 64]].concat());
    let [h0, h1] = side.to_be_bytes();
    segment(&mut out, 0xC2, &[8, h0, h1, h0, h1, 1, 1, 0x11, 0]);
    // DC table 0: one 1-bit code for category 0; AC table 0: one 1-bit code
    // for EOB run class 14 (runs of 16384..32767 blocks).
    let mut counts = [0u8; 16];
    counts[0] = 1;
    segment(
        &mut out,
        0xC4,
        &[[0x00].as_slice(), &counts, &[0x00]].concat(),
    );
    segment(
        &mut out,
        0xC4,
        &[[0x10].as_slice(), &counts, &[0xE0]].concat(),
    );
    segment(&mut out, 0xDA, &[1, 1, 0x00, 0, 0, 0]);
    out.extend(std::iter::repeat_n(0u8, blocks.div_ceil(8)));
    // Each AC scan: runs of 32767 blocks (code 0, 14 one-bits), padded with ones.
    let runs = blocks.div_ceil(32767);
    let mut bits = Vec::new();
    for _ in 0..runs {
        bits.push(false);
        bits.extend(std::iter::repeat_n(true, 14));
    }
    while bits.len() % 8 != 0 {
        bits.push(true);
    }
    let mut data = Vec::new();
    for byte in bits.chunks(8) {
        let b = byte.iter().fold(0u8, |acc, &bit| (acc << 1) | bit as u8);
        data.push(b);
        if b == 0xFF {
            data.push(0x00);
        }
    }
    for _ in 1..scans {
        segment(&mut out, 0xDA, &[1, 1, 0x00, 1, 63, 0]);
        out.extend_from_slice(&data);
    }
    out.extend_from_slice(&[0xFF, 0xD9]);
    out
}

/// A PNG declaring `side`×`side` 16-bit RGBA (8 bytes a pixel decoded) that
/// compresses to a few hundred KB.
fn deep_png(side: u32) -> Vec<u8> {
    let mut out = Vec::new();
    let mut enc = png::Encoder::new(&mut out, side, side);
    enc.set_color(png::ColorType::Rgba);
    enc.set_depth(png::BitDepth::Sixteen);
    let mut w = enc.write_header().unwrap();
    w.write_image_data(&vec![0x80u8; side as usize * side as usize * 8])
        .unwrap();
    w.finish().unwrap();
    out
}

/// `facecompare_inference_jobs_skipped_total` from /metrics.
async fn skipped_jobs(s: &common::Server) -> f64 {
    s.metrics()
        .await
        .text
        .lines()
        .find_map(|l| l.strip_prefix("facecompare_inference_jobs_skipped_total "))
        .expect("skipped-jobs counter in /metrics")
        .trim()
        .parse()
        .unwrap()
}

/// Held by the tests whose outcome depends on how fast the server keeps up
/// (clients that give up after a fixed time) and by the ones that load it
/// with costly WebPs: run in one binary, they would skew each other.
static LOADED: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_scans_are_refused_at_once_and_the_next_compare_is_served() {
    let s = server(Backend::Sqlite);
    let org = s.org(10).await;
    let hostile = many_scan_jpeg(8000, 10_000);
    assert!(hostile.len() < 2 << 20, "{} bytes", hostile.len());

    let started = Instant::now();
    let r = s
        .compare_multipart(&org.key, &file(&hostile), &file(&hostile))
        .await;
    let took = started.elapsed();
    let v = r.assert_error(400, "image_too_complex", Some("source"));
    assert!(v["message"].as_str().unwrap().contains("scans"), "{v}");
    // Minutes before the survey; generous for a loaded debug build.
    assert!(took < Duration::from_secs(5), "answered after {took:?}");

    let photo = fixture("obama.jpg");
    let ok = s
        .compare_multipart(&org.key, &file(&photo), &file(&fixture("obama2.jpg")))
        .await
        .assert_compare_ok();
    assert_eq!(ok["isMatch"], true, "{ok}");
    assert_eq!(s.balance(&org).await, 9, "only the good compare is charged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deep_png_is_streamed_not_refused() {
    let s = server(Backend::Sqlite);
    let org = s.org(10).await;
    // 4000×4000 16-bit RGBA: 128 MB decoded whole, a few MB streamed.
    let deep = deep_png(4000);
    let v = s
        .compare_multipart(&org.key, &file(&deep), &file(&fixture("obama.jpg")))
        .await
        .assert_compare_ok();
    assert_eq!(v["sourceFaceDetected"], false, "{v}");
    assert_eq!(v["targetFaceDetected"], true, "{v}");
}

/// A burst that outlives its deadline: the requests that gave up are
/// answered 503 `request_timeout` and uncharged, their queued images are
/// dropped unrun (counted in /metrics), and the server is free again at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_for_requests_that_gave_up_is_dropped() {
    if !common::own_servers_or_skip("its own server with its own settings") {
        return;
    }
    let _serial = LOADED.lock().await;
    let db = common::fresh_database(Backend::Sqlite, "giveup");
    let s = common::spawn_server(
        common::ServerOptions::new(&db)
            .env("FACECOMPARE_WORKERS", "1")
            .env("FACECOMPARE_REQUEST_TIMEOUT_S", "1")
            // 24 compares (48 places) from one org: all queued, none refused for its share.
            .env("FACECOMPARE_QUEUE_ORG_SHARE_PERCENT", "100"),
    );
    let s = &s.server;
    let org = s.org(100).await;
    let (a, b) = (file(&fixture("t1.jpg")), file(&fixture("obama.jpg")));
    let sends = (0..24).map(|_| s.compare_multipart(&org.key, &a, &b));
    let answers = futures_util::future::join_all(sends).await;
    let ok = answers.iter().filter(|r| r.status == 200).count();
    for r in answers.iter().filter(|r| r.status != 200) {
        r.assert_error(503, "request_timeout", None);
    }
    assert!(
        ok < 24,
        "one worker cannot serve 24 compares of 5 faces in 1 s"
    );
    // Abandoned images are dropped when the worker reaches them: the next
    // compare queues behind them, so after it they have all been seen.
    s.compare_multipart(&org.key, &b, &file(&fixture("obama2.jpg")))
        .await
        .assert_compare_ok();
    let skipped = skipped_jobs(s).await;
    assert!(
        skipped >= 1.0,
        "queued images of timed-out requests dropped: {skipped}"
    );
    assert_eq!(
        s.balance(&org).await,
        100 - ok as i64 - 1,
        "only 200s are charged"
    );
}

/// The request-body byte budget: while one client holds it (a JSON body of
/// the largest declared size, sent slowly), other compares are refused with
/// 503 `overloaded` before their bodies are read, uncharged; once that
/// client goes, compares are served again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_budget_refuses_new_bodies_when_spent() {
    use std::io::Write;
    if !common::own_servers_or_skip("its own server with its own settings") {
        return;
    }
    let db = common::fresh_database(Backend::Sqlite, "bodybudget");
    // 1 MB is raised to the floor: one largest JSON body (counted twice).
    let s = common::spawn_server(
        common::ServerOptions::new(&db).env("FACECOMPARE_BODY_BUDGET_MB", "1"),
    );
    let s = &s.server;
    let org = s.org(10).await;
    let (a, b) = (file(&fixture("obama.jpg")), file(&fixture("obama2.jpg")));

    let addr = s
        .url("")
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let mut hog = std::net::TcpStream::connect(&addr).unwrap();
    write!(
        hog,
        "POST /v1/face/compare HTTP/1.1\r\nhost: x\r\nx-api-key: {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{{\"source\": \"",
        org.key,
        facecompare::inputs::MAX_BODY_BYTES
    )
    .unwrap();
    hog.flush().unwrap();
    std::thread::sleep(Duration::from_millis(500));

    let r = s.compare_multipart(&org.key, &a, &b).await;
    r.assert_error(503, "overloaded", None);
    assert!(r.header("retry-after").is_some());

    drop(hog);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = s.compare_multipart(&org.key, &a, &b).await;
        if r.status == 200 {
            break;
        }
        r.assert_error(503, "overloaded", None);
        assert!(Instant::now() < deadline, "the budget came back");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(s.balance(&org).await, 9, "refusals are not charged");
}

/// Clients that hang up while their compares wait for a worker: the work is
/// dropped (queued images skipped) and nothing is charged for them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_for_clients_that_hung_up_is_dropped_and_uncharged() {
    if !common::own_servers_or_skip("its own server with its own settings") {
        return;
    }
    let _serial = LOADED.lock().await;
    let db = common::fresh_database(Backend::Sqlite, "hangup");
    let s = common::spawn_server(common::ServerOptions::new(&db).env("FACECOMPARE_WORKERS", "1"));
    let s = &s.server;
    let org = s.org(20).await;
    let crowd = fixture("t1.jpg");
    let impatient = (0..10).map(|_| {
        let form = reqwest::multipart::Form::new()
            .part(
                "source",
                reqwest::multipart::Part::bytes(crowd.clone()).file_name("a.jpg"),
            )
            .part(
                "target",
                reqwest::multipart::Part::bytes(crowd.clone()).file_name("b.jpg"),
            );
        common::client()
            .post(s.url("/v1/face/compare"))
            .header("x-api-key", &org.key)
            .multipart(form)
            .timeout(Duration::from_millis(300))
            .send()
    });
    let gave_up = futures_util::future::join_all(impatient)
        .await
        .into_iter()
        .filter(|r| r.as_ref().is_err_and(|e| e.is_timeout()))
        .count();
    assert!(
        gave_up >= 6,
        "one worker cannot answer 10 crowd compares in 0.3 s: {gave_up}"
    );
    // Queued behind whatever was left: after it, every abandoned image was seen.
    s.compare_multipart(
        &org.key,
        &file(&fixture("obama.jpg")),
        &file(&fixture("obama2.jpg")),
    )
    .await
    .assert_compare_ok();
    let skipped = skipped_jobs(s).await;
    assert!(
        skipped >= 4.0,
        "images of hung-up clients dropped: {skipped}"
    );
    let charged = 20 - s.balance(&org).await;
    assert!(
        charged <= 1 + (10 - gave_up as i64),
        "hung-up compares are not charged: {charged} charged, {gave_up} hung up"
    );
}

// ------------------------------------------------------------- fairness ---

async fn detect(s: &Server, key: &str, image: &[u8]) -> Resp {
    let form = reqwest::multipart::Form::new().part(
        "image",
        reqwest::multipart::Part::bytes(image.to_vec()).file_name("big.webp"),
    );
    let r = client()
        .post(s.url("/v1/face/detect"))
        .header("x-api-key", key)
        .multipart(form)
        .send()
        .await
        .expect("POST detect");
    Resp::from(r).await
}

/// Waits until at least `n` images hold queue places (`/readyz`).
async fn until_queue_holds(s: &Server, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let depth = s.get("/readyz").await.json()["queueDepth"]
            .as_u64()
            .unwrap_or(0);
        if depth >= n {
            return;
        }
        assert!(Instant::now() < deadline, "the queue never held {n} images");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One organisation floods the uncharged detect route with costly WebPs
/// (full-resolution decodes) on a one-worker server; another organisation's
/// compare, sent while that burst waits, is served next, not after it:
/// its answer arrives before most of the burst's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_orgs_compare_is_served_before_a_detect_flood_drains() {
    use std::sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    };
    if !common::own_servers_or_skip("its own one-worker server") {
        return;
    }
    let _serial = LOADED.lock().await;
    let db = common::fresh_database(Backend::Sqlite, "fairflood");
    let s = common::spawn_server(common::ServerOptions::new(&db).env("FACECOMPARE_WORKERS", "1"));
    let s = &s.server;
    let (a, b) = (s.org(0).await, s.org(10).await);
    let webp = images::costly_webp(4000, 4000);
    const FLOOD: usize = 16;
    let finished = Arc::new(AtomicUsize::new(0));
    let flood: Vec<_> = (0..FLOOD)
        .map(|_| {
            let (s, key, webp, finished) = (
                s.clone(),
                a.key.clone(),
                webp.clone(),
                Arc::clone(&finished),
            );
            tokio::spawn(async move {
                let r = detect(&s, &key, &webp).await;
                (r, finished.fetch_add(1, Ordering::SeqCst))
            })
        })
        .collect();
    until_queue_holds(s, FLOOD as u64 / 2).await;
    let v = s
        .compare_multipart(
            &b.key,
            &file(&fixture("obama.jpg")),
            &file(&fixture("obama2.jpg")),
        )
        .await
        .assert_compare_ok();
    let b_place = finished.fetch_add(1, Ordering::SeqCst);
    assert_eq!(v["isMatch"], true, "{v}");
    let mut a_places = Vec::new();
    for h in flood {
        let (r, place) = h.await.unwrap();
        assert_eq!(r.status, 200, "A's detects are all served: {}", r.text);
        assert_eq!(r.json()["width"], 4000, "{}", r.text);
        a_places.push(place);
    }
    let a_after_b = a_places.iter().filter(|&&p| p > b_place).count();
    assert!(
        a_after_b >= FLOOD / 4,
        "B's compare came {b_place}th, after {} of A's {FLOOD} detects: queued behind the burst",
        FLOOD - a_after_b
    );
    assert_eq!(s.balance(&b).await, 9, "B's compare is charged");
    assert_eq!(s.balance(&a).await, 0, "detect is never charged");
}

/// One organisation's burst beyond its share of the queue (here 50% of 8
/// places) is refused with 503 `overloaded` for that organisation, while
/// another organisation's compare still finds room and is answered 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_beyond_its_share_is_refused_for_itself_not_for_others() {
    if !common::own_servers_or_skip("its own server with a small queue") {
        return;
    }
    let _serial = LOADED.lock().await;
    let db = common::fresh_database(Backend::Sqlite, "fairshare");
    let s = common::spawn_server(
        common::ServerOptions::new(&db)
            .env("FACECOMPARE_WORKERS", "1")
            .env("FACECOMPARE_QUEUE_CAPACITY", "8")
            .env("FACECOMPARE_QUEUE_ORG_SHARE_PERCENT", "50"),
    );
    let s = &s.server;
    let (a, b) = (s.org(0).await, s.org(10).await);
    let webp = images::costly_webp(4000, 4000);
    let burst: Vec<_> = (0..12)
        .map(|_| {
            let (s, key, webp) = (s.clone(), a.key.clone(), webp.clone());
            tokio::spawn(async move { detect(&s, &key, &webp).await })
        })
        .collect();
    until_queue_holds(s, 4).await;
    s.compare_multipart(
        &b.key,
        &file(&fixture("obama.jpg")),
        &file(&fixture("obama2.jpg")),
    )
    .await
    .assert_compare_ok();
    let (mut served, mut refused) = (0, 0);
    for h in burst {
        let r = h.await.unwrap();
        if r.status == 200 {
            served += 1;
        } else {
            r.assert_error(503, "overloaded", None);
            assert!(r.header("retry-after").is_some());
            refused += 1;
        }
    }
    assert!(
        refused > 0 && served > 0,
        "{served} served, {refused} refused"
    );
    let metrics = s.metrics().await.text;
    let counted: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("facecompare_inference_org_share_refused_total "))
        .expect("org-share counter in /metrics")
        .trim()
        .parse()
        .unwrap();
    assert!(
        counted >= refused as f64,
        "{counted} counted, {refused} refused"
    );
    assert_eq!(s.balance(&b).await, 9);
}

/// Reads from `c` until the server closes it (at most 30 s): what it sent.
fn answer_of(c: &mut std::net::TcpStream) -> String {
    use std::io::Read;
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut out = Vec::new();
    let _ = c.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// A JSON compare sent chunked (no `Content-Length`), the three requests of
/// `starts` started together; the status line of the answer.
fn chunked_json_compare(addr: &str, key: &str, json: &[u8], start: &std::sync::Barrier) -> String {
    use std::io::Write;
    let mut c = std::net::TcpStream::connect(addr).unwrap();
    write!(
        c,
        "POST /v1/face/compare HTTP/1.1\r\nHost: x\r\nx-api-key: {key}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut chunks = json.chunks(16 * 1024);
    let send = |c: &mut std::net::TcpStream, chunk: &[u8]| {
        write!(c, "{:x}\r\n", chunk.len()).unwrap();
        c.write_all(chunk).unwrap();
        c.write_all(b"\r\n").unwrap();
    };
    send(&mut c, chunks.next().unwrap());
    start.wait();
    for chunk in chunks {
        send(&mut c, chunk);
    }
    c.write_all(b"0\r\n\r\n").unwrap();
    answer_of(&mut c).lines().next().unwrap_or("").to_string()
}

/// The body budget is shared fairly (docs/operations.md, "Memory"): one
/// organisation's slow uploads (native with its API key, and Rekognition
/// with its access key id and a wrong signature) hold at most its share (one
/// largest JSON body with the default 128 MB budget), so another
/// organisation's compares get 200, and so do three chunked JSON compares at
/// once (a chunked body reserves as it arrives). The uploads that fit are
/// answered 408 `body_too_slow` once the minimum rate bites.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_organisations_slow_uploads_leave_the_others_room() {
    use std::io::Write;
    if !common::own_servers_or_skip("its own server with its own settings") {
        return;
    }
    let _serial = LOADED.lock().await;
    let db = common::fresh_database(Backend::Sqlite, "fairbudget");
    let s = common::spawn_server(
        common::ServerOptions::new(&db).env("FACECOMPARE_BODY_BUDGET_MB", "128"),
    );
    let s = &s.server;
    let (greedy, victim) = (s.org(10).await, s.org(20).await);
    let aws = common::cli_json(
        &s.db_url,
        &["key", "create", "--org", &greedy.id, "--aws", "--json"],
    )
    .await;
    let key_id = aws["accessKeyId"]
        .as_str()
        .expect("accessKeyId")
        .to_string();
    let addr = s.base.trim_start_matches("http://").to_string();

    // Four native uploads of 32 MiB: the whole budget, were it not shared.
    let mut hogs: Vec<std::net::TcpStream> = (0..4)
        .map(|_| {
            let mut c = std::net::TcpStream::connect(&addr).unwrap();
            write!(
                c,
                "POST /v1/face/compare HTTP/1.1\r\nhost: x\r\nx-api-key: {}\r\n\
                 content-type: multipart/form-data; boundary=B\r\ncontent-length: {}\r\n\r\n--B\r\n",
                greedy.key,
                32 << 20
            )
            .unwrap();
            c
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    // Two Rekognition uploads with the greedy org's key id, signed with nothing.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let t = facecompare::utc::DateTime::from_unix(now);
    let day = format!("{:04}{:02}{:02}", t.year, t.month, t.day);
    for _ in 0..2 {
        let mut c = std::net::TcpStream::connect(&addr).unwrap();
        write!(
            c,
            "POST / HTTP/1.1\r\nhost: {addr}\r\nx-amz-date: {day}T{:02}{:02}{:02}Z\r\n\
             x-amz-target: RekognitionService.CompareFaces\r\n\
             content-type: application/x-amz-json-1.1\r\ncontent-length: {}\r\n\
             authorization: AWS4-HMAC-SHA256 Credential={key_id}/{day}/us-east-1/rekognition/aws4_request, \
             SignedHeaders=host;x-amz-date;x-amz-target, Signature={}\r\n\r\n{{",
            t.hour,
            t.minute,
            t.second,
            facecompare::http::rekognition::model::MAX_AWS_BODY_BYTES,
            "0".repeat(64)
        )
        .unwrap();
        hogs.push(c);
    }
    std::thread::sleep(Duration::from_millis(500));

    let (a, b) = (file(&fixture("obama.jpg")), file(&fixture("obama2.jpg")));
    for _ in 0..5 {
        s.compare_multipart(&victim.key, &a, &b)
            .await
            .assert_compare_ok();
    }
    let json = {
        use base64::Engine;
        let enc = |f| base64::engine::general_purpose::STANDARD.encode(fixture(f));
        format!(
            "{{\"source\":\"{}\",\"target\":\"{}\"}}",
            enc("obama.jpg"),
            enc("obama2.jpg")
        )
    };
    let start = std::sync::Barrier::new(3);
    let chunked: Vec<String> = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..3)
            .map(|_| {
                scope.spawn(|| chunked_json_compare(&addr, &victim.key, json.as_bytes(), &start))
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    });
    for line in &chunked {
        assert!(
            line.starts_with("HTTP/1.1 200"),
            "chunked JSON: {chunked:?}"
        );
    }

    // The greedy org: two bodies fit its share, the other four were refused;
    // the two that fit are cut off by the minimum upload rate.
    let answers: Vec<String> = hogs.iter_mut().map(answer_of).collect();
    let count = |what: &str| answers.iter().filter(|a| a.contains(what)).count();
    let refused = count("\"overloaded\"") + count("ThrottlingException");
    let too_slow = count("body_too_slow") + count("RequestTimeoutException");
    assert_eq!((refused, too_slow), (4, 2), "{answers:#?}");
    for a in &answers {
        assert!(
            a.to_ascii_lowercase().contains("\r\nconnection: close\r\n"),
            "{a}"
        );
    }
    assert_eq!(s.balance(&greedy).await, 10, "nothing charged");
}

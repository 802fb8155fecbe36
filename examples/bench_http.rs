//! HTTP load bench: `POST /v1/face/compare` of two ~2.6 MP JPEGs at a fixed
//! concurrency against a running server; prints p50/p95/p99 latency and
//! requests/s. Driven by `scripts/bench-http.sh`.
//!
//! Environment: `BASE_URL` (e.g. `http://127.0.0.1:8080`), `API_KEY`;
//! optional `CONCURRENCY` (4), `REQUESTS` (100), `WARMUP` (8), `MEGAPIXELS`
//! (2.6; 0 sends the files unchanged), `SOURCE`, `TARGET` (images to scale;
//! default the fetched fixtures `obama.jpg` / `obama2.jpg`).
use std::{
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `path` scaled to about `mp` megapixels, as a quality-90 JPEG; `mp` 0
/// sends the file as it is (a real phone photo: EXIF, progressive, ...).
fn scaled_jpeg(path: &PathBuf, mp: f64) -> Vec<u8> {
    if mp == 0.0 {
        let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        eprintln!("{}: as is, {} KB", path.display(), bytes.len() / 1024);
        return bytes;
    }
    let img = image::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let out = facecompare::faces::reencode::scaled_jpeg(&img, mp).expect("encode");
    let (w, h) =
        image::ImageReader::with_format(std::io::Cursor::new(&out), image::ImageFormat::Jpeg)
            .into_dimensions()
            .expect("dimensions");
    eprintln!(
        "{}: {}x{} ({:.2} MP), {} KB",
        path.display(),
        w,
        h,
        (w * h) as f64 / 1e6,
        out.len() / 1024
    );
    out
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[tokio::main]
async fn main() {
    let base = std::env::var("BASE_URL").expect("BASE_URL, e.g. http://127.0.0.1:8080");
    let key = std::env::var("API_KEY").expect("API_KEY");
    let concurrency: usize = env_or("CONCURRENCY", 4);
    let requests: usize = env_or("REQUESTS", 100);
    let warmup: usize = env_or("WARMUP", 8);
    let mp: f64 = env_or("MEGAPIXELS", 2.6);
    let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fetched");
    let source = std::env::var("SOURCE")
        .map(PathBuf::from)
        .unwrap_or_else(|_| fixtures.join("obama.jpg"));
    let target = std::env::var("TARGET")
        .map(PathBuf::from)
        .unwrap_or_else(|_| fixtures.join("obama2.jpg"));
    let (a, b) = (
        Arc::new(scaled_jpeg(&source, mp)),
        Arc::new(scaled_jpeg(&target, mp)),
    );
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap();
    let url = format!("{}/v1/face/compare", base.trim_end_matches('/'));

    let send = {
        let (client, url, key, a, b) = (
            client.clone(),
            url.clone(),
            key.clone(),
            a.clone(),
            b.clone(),
        );
        move || {
            let form = reqwest::multipart::Form::new()
                .part(
                    "source",
                    reqwest::multipart::Part::bytes(a.to_vec()).file_name("a.jpg"),
                )
                .part(
                    "target",
                    reqwest::multipart::Part::bytes(b.to_vec()).file_name("b.jpg"),
                );
            let req = client.post(&url).header("x-api-key", &key).multipart(form);
            async move {
                let started = Instant::now();
                let r = req.send().await.expect("request");
                let status = r.status().as_u16();
                let body = r.text().await.unwrap_or_default();
                (status, started.elapsed(), body)
            }
        }
    };

    for _ in 0..warmup {
        let (status, _, body) = send().await;
        assert_eq!(status, 200, "warm-up request failed: {body}");
    }

    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (send, next) = (send.clone(), next.clone());
        workers.push(tokio::spawn(async move {
            let mut out = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < requests {
                out.push(send().await);
            }
            out
        }));
    }
    let mut latencies = Vec::new();
    let mut failures = 0;
    // 503 answers (a full queue or body budget under overload): how cheap the refusal is.
    let mut refused = Vec::new();
    for w in workers {
        for (status, latency, body) in w.await.unwrap() {
            if status == 200 {
                latencies.push(latency);
            } else {
                failures += 1;
                if status == 503 {
                    refused.push(latency);
                } else if failures <= 3 {
                    eprintln!("HTTP {status}: {body}");
                }
            }
        }
    }
    let wall = started.elapsed();
    latencies.sort_unstable();
    assert!(!latencies.is_empty(), "no successful request");
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "requests     {} ok, {failures} failed, concurrency {concurrency}, {mp} MP JPEGs",
        latencies.len()
    );
    println!("latency p50  {:.1} ms", ms(percentile(&latencies, 0.50)));
    println!("latency p95  {:.1} ms", ms(percentile(&latencies, 0.95)));
    println!("latency p99  {:.1} ms", ms(percentile(&latencies, 0.99)));
    println!(
        "throughput   {:.2} requests/s",
        latencies.len() as f64 / wall.as_secs_f64()
    );
    if !refused.is_empty() {
        refused.sort_unstable();
        println!(
            "503 answers  {}, p50 {:.1} ms, p99 {:.1} ms",
            refused.len(),
            ms(percentile(&refused, 0.50)),
            ms(percentile(&refused, 0.99))
        );
    }
}

//! The HTTP client side: a reqwest client, read-in-full responses with
//! assertions on the error and compare shapes, and the compare request forms.
use std::time::Duration;

use serde_json::Value;

use super::Server;

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .expect("reqwest client")
}

/// A response, read in full.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
}

impl Resp {
    pub async fn from(r: reqwest::Response) -> Self {
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let text = r.text().await.expect("response body");
        Self {
            status,
            headers,
            text,
        }
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts an error response: status, code, a message naming `field`, a request id.
    pub fn assert_error(&self, status: u16, code: &str, field: Option<&str>) -> Value {
        assert_eq!(
            self.status, status,
            "expected {status} {code}, got {}: {}",
            self.status, self.text
        );
        let v = self.json();
        assert_eq!(v["error"], code, "{v}");
        let message = v["message"]
            .as_str()
            .unwrap_or_else(|| panic!("no message: {v}"));
        if let Some(field) = field {
            assert!(
                message.starts_with(&format!("{field}:")),
                "message does not name {field}: {message}"
            );
        }
        let id = v["requestId"].as_str().expect("requestId");
        assert_eq!(
            Some(id),
            self.header("x-request-id"),
            "requestId matches the header"
        );
        v
    }

    /// Asserts a 200 compare answer with exactly the five fields; returns it.
    pub fn assert_compare_ok(&self) -> Value {
        assert_eq!(self.status, 200, "{}", self.text);
        let v = self.json();
        let obj = v.as_object().expect("object");
        let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "confidence",
                "isMatch",
                "sourceFaceDetected",
                "targetFaceDetected",
                "threshold"
            ],
            "{v}"
        );
        let confidence = v["confidence"].as_f64().expect("confidence");
        let threshold = v["threshold"].as_f64().expect("threshold");
        assert!((0.0..=100.0).contains(&confidence), "{v}");
        assert_eq!(
            v["isMatch"],
            confidence >= threshold,
            "isMatch is confidence >= threshold: {v}"
        );
        assert!(self.header("x-request-id").is_some());
        v
    }
}

/// One compare input as the test sends it.
#[derive(Clone, Debug)]
pub enum Input {
    /// A multipart file part.
    File(Vec<u8>),
    /// A string (multipart text part, or JSON value).
    Text(String),
}

pub fn file(bytes: &[u8]) -> Input {
    Input::File(bytes.to_vec())
}

pub fn b64(bytes: &[u8]) -> Input {
    use base64::Engine;
    Input::Text(base64::engine::general_purpose::STANDARD.encode(bytes))
}

pub fn text(s: &str) -> Input {
    Input::Text(s.to_string())
}

fn part(input: &Input, name: &str) -> reqwest::multipart::Part {
    match input {
        Input::File(b) => {
            reqwest::multipart::Part::bytes(b.clone()).file_name(format!("{name}.bin"))
        }
        Input::Text(s) => reqwest::multipart::Part::text(s.clone()),
    }
}

impl Server {
    /// POST /v1/face/compare as multipart/form-data.
    pub async fn compare_multipart(&self, key: &str, source: &Input, target: &Input) -> Resp {
        self.compare_multipart_with(key, source, target, &[]).await
    }

    pub async fn compare_multipart_with(
        &self,
        key: &str,
        source: &Input,
        target: &Input,
        headers: &[(&str, &str)],
    ) -> Resp {
        let form = reqwest::multipart::Form::new()
            .part("source", part(source, "source"))
            .part("target", part(target, "target"));
        let mut req = client()
            .post(self.url("/v1/face/compare"))
            .header("x-api-key", key)
            .multipart(form);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        Resp::from(req.send().await.expect("POST compare")).await
    }

    /// POST /v1/face/compare as JSON (file inputs are sent as base64).
    pub async fn compare_json(&self, key: &str, source: &Input, target: &Input) -> Resp {
        let s = |i: &Input| match i {
            Input::File(b) => match b64(b) {
                Input::Text(t) => t,
                Input::File(_) => unreachable!(),
            },
            Input::Text(t) => t.clone(),
        };
        let body = serde_json::json!({"source": s(source), "target": s(target)});
        self.post_raw(key, "application/json", body.to_string().into_bytes(), &[])
            .await
    }

    /// POST /v1/face/compare with a raw body.
    pub async fn post_raw(
        &self,
        key: &str,
        content_type: &str,
        body: Vec<u8>,
        headers: &[(&str, &str)],
    ) -> Resp {
        let mut req = client()
            .post(self.url("/v1/face/compare"))
            .header("x-api-key", key)
            .header("content-type", content_type)
            .body(body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        Resp::from(req.send().await.expect("POST compare")).await
    }

    pub async fn get(&self, path: &str) -> Resp {
        Resp::from(client().get(self.url(path)).send().await.expect("GET")).await
    }

    /// GET /metrics: on the API port of a server this harness started; a
    /// running stack serves it on its own address (`FACECOMPARE_TEST_METRICS_URL`).
    pub async fn metrics(&self) -> Resp {
        let url = match std::env::var("FACECOMPARE_TEST_METRICS_URL") {
            Ok(u) if self.external && !u.trim().is_empty() => u.trim().to_string(),
            _ => self.url("/metrics"),
        };
        Resp::from(client().get(url).send().await.expect("GET /metrics")).await
    }
}

//! AWS Signature Version 4 verification, as AWS does it for JSON services:
//! canonical request (method, normalised and double-encoded path, sorted
//! query, signed headers with trimmed values, payload SHA-256), string to
//! sign with the credential scope `DATE/REGION/rekognition/aws4_request`,
//! the derived signing key, and a constant-time comparison. Any region is
//! accepted (the server has one); `x-amz-date` must be within 15 minutes.
use hmac::{Hmac, Mac};
use http::HeaderMap;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

const ALGORITHM: &str = "AWS4-HMAC-SHA256";
pub const SERVICE: &str = "rekognition";
/// How far `x-amz-date` may be from the server's clock, as AWS allows.
pub const MAX_SKEW_SECS: i64 = 15 * 60;

/// Why a request's signature was refused (each maps to the AWS error type
/// an SDK expects).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SigError {
    /// No `Authorization` header.
    Missing,
    /// The header or the date is malformed / incomplete.
    Incomplete(String),
    /// The signature does not match, or the scope / date is wrong.
    Invalid(String),
    /// Unknown or revoked access key id.
    UnknownKey,
}

/// The parsed `Authorization` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    pub access_key_id: String,
    /// `YYYYMMDD` of the scope.
    pub date: String,
    pub region: String,
    pub service: String,
    /// Lower-case names, in the order sent.
    pub signed_headers: Vec<String>,
    pub signature: String,
}

impl Authorization {
    pub fn scope(&self) -> String {
        format!(
            "{}/{}/{}/aws4_request",
            self.date, self.region, self.service
        )
    }
}

pub fn parse_authorization(value: &str) -> Result<Authorization, SigError> {
    let incomplete = |what: &str| SigError::Incomplete(format!("Authorization header: {what}"));
    let rest = value
        .trim()
        .strip_prefix(ALGORITHM)
        .ok_or_else(|| incomplete("only AWS4-HMAC-SHA256 is supported"))?;
    let (mut credential, mut signed, mut signature) = (None, None, None);
    for part in rest.split(',') {
        let Some((k, v)) = part.trim().split_once('=') else {
            continue;
        };
        match k.trim() {
            "Credential" => credential = Some(v.trim()),
            "SignedHeaders" => signed = Some(v.trim()),
            "Signature" => signature = Some(v.trim()),
            _ => {}
        }
    }
    let credential = credential.ok_or_else(|| incomplete("missing Credential"))?;
    let signed = signed.ok_or_else(|| incomplete("missing SignedHeaders"))?;
    let signature = signature.ok_or_else(|| incomplete("missing Signature"))?;
    let parts: Vec<&str> = credential.split('/').collect();
    let [id, date, region, service, terminator] = parts[..] else {
        return Err(incomplete(
            "Credential must be KEY_ID/DATE/REGION/SERVICE/aws4_request",
        ));
    };
    if terminator != "aws4_request" {
        return Err(incomplete("Credential must end with aws4_request"));
    }
    if id.is_empty() || region.is_empty() || date.len() != 8 {
        return Err(incomplete("malformed Credential"));
    }
    if signature.len() != 64 || !signature.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(incomplete("Signature must be 64 hex digits"));
    }
    let signed_headers: Vec<String> = signed.split(';').map(|h| h.to_ascii_lowercase()).collect();
    if signed_headers.iter().any(String::is_empty) {
        return Err(incomplete("malformed SignedHeaders"));
    }
    Ok(Authorization {
        access_key_id: id.to_string(),
        date: date.to_string(),
        region: region.to_string(),
        service: service.to_string(),
        signed_headers,
        signature: signature.to_ascii_lowercase(),
    })
}

/// `x-amz-date` (`YYYYMMDDTHHMMSSZ`) as unix seconds.
pub fn parse_amz_date(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        t.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| t.parse().ok())?
    };
    let (y, mo, d) = (num(0..4)?, num(4..6)?, num(6..8)?);
    let (h, mi, se) = (num(9..11)?, num(11..13)?, num(13..15)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let t = crate::utc::DateTime {
        year: y,
        month: mo,
        day: d,
        hour: h,
        minute: mi,
        second: se,
    };
    Some(t.to_unix())
}

/// RFC 3986 unreserved characters stay; every other byte is `%XX` (upper case).
fn uri_encode(out: &mut String, bytes: &[u8]) {
    for &b in bytes {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}

fn percent_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(hi), Some(lo)) = (hex_val(b[i + 1]), hex_val(b[i + 2]))
        {
            out.push(hi << 4 | lo);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

fn hex_val(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|v| v as u8)
}

/// The path as AWS canonicalises it for services other than S3: dot
/// segments and empty segments removed, then each segment of the path *as
/// sent* (already percent-encoded) encoded once more.
pub fn canonical_path(raw: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    for seg in raw.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let mut out = String::from("/");
    for (i, seg) in segments.iter().enumerate() {
        if i > 0 {
            out.push('/');
        }
        uri_encode(&mut out, seg.as_bytes());
    }
    if !segments.is_empty() && raw.ends_with('/') {
        out.push('/');
    }
    out
}

/// Query parameters decoded, re-encoded strictly and sorted by name, then value.
pub fn canonical_query(raw: Option<&str>) -> String {
    let Some(raw) = raw.filter(|q| !q.is_empty()) else {
        return String::new();
    };
    let mut pairs: Vec<(String, String)> = raw
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            let (mut ek, mut ev) = (String::new(), String::new());
            uri_encode(&mut ek, &percent_decode(k));
            uri_encode(&mut ev, &percent_decode(v));
            (ek, ev)
        })
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// `name:value\n` per signed header: values of repeated headers joined by
/// `,`, each trimmed with inner runs of spaces collapsed.
fn canonical_headers(headers: &HeaderMap, signed: &[String]) -> Result<String, SigError> {
    let mut names: Vec<&String> = signed.iter().collect();
    names.sort();
    let mut out = String::new();
    for name in names {
        let values: Vec<String> = headers
            .get_all(name.as_str())
            .iter()
            .map(|v| {
                let text = String::from_utf8_lossy(v.as_bytes());
                text.split_whitespace().collect::<Vec<_>>().join(" ")
            })
            .collect();
        if values.is_empty() {
            return Err(SigError::Invalid(format!(
                "signed header {name} is not in the request"
            )));
        }
        out.push_str(name);
        out.push(':');
        out.push_str(&values.join(","));
        out.push('\n');
    }
    Ok(out)
}

pub fn canonical_request(
    method: &str,
    raw_path: &str,
    raw_query: Option<&str>,
    headers: &HeaderMap,
    signed: &[String],
    payload_sha256_hex: &str,
) -> Result<String, SigError> {
    let mut sorted: Vec<&str> = signed.iter().map(String::as_str).collect();
    sorted.sort_unstable();
    Ok(format!(
        "{method}\n{}\n{}\n{}\n{}\n{payload_sha256_hex}",
        canonical_path(raw_path),
        canonical_query(raw_query),
        canonical_headers(headers, signed)?,
        sorted.join(";"),
    ))
}

pub fn string_to_sign(amz_date: &str, scope: &str, canonical_request: &str) -> String {
    format!(
        "{ALGORITHM}\n{amz_date}\n{scope}\n{}",
        hex::encode(Sha256::digest(canonical_request.as_bytes()))
    )
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

pub fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> [u8; 32] {
    let k_date = hmac(format!("AWS4{secret}").as_bytes(), date.as_bytes());
    let k_region = hmac(&k_date, region.as_bytes());
    let k_service = hmac(&k_region, service.as_bytes());
    hmac(&k_service, b"aws4_request")
}

pub fn signature(signing_key: &[u8; 32], string_to_sign: &str) -> String {
    hex::encode(hmac(signing_key, string_to_sign.as_bytes()))
}

/// A request as the verifier needs it.
pub struct SignedRequest<'a> {
    pub method: &'a str,
    pub raw_path: &'a str,
    pub raw_query: Option<&'a str>,
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
}

/// Checks everything that does not need the secret; returns the parsed
/// header and the string to sign.
pub fn prepare(req: &SignedRequest, now_unix: i64) -> Result<(Authorization, String), SigError> {
    let auth = check_headers(req.headers, req.raw_query, now_unix)?;
    let sts = string_to_sign_of(req, &auth)?;
    Ok((auth, sts))
}

/// The checks that need no body: the `Authorization` header, the scope, the
/// date window. Run before the body is read, so that a client without a
/// plausible signature never gets to hold a body in memory.
pub fn check_headers(
    headers: &HeaderMap,
    raw_query: Option<&str>,
    now_unix: i64,
) -> Result<Authorization, SigError> {
    let Some(auth) = headers.get(http::header::AUTHORIZATION) else {
        if raw_query.is_some_and(|q| q.contains("X-Amz-Signature")) {
            return Err(SigError::Incomplete(
                "presigned URLs are not supported; sign the Authorization header".into(),
            ));
        }
        return Err(SigError::Missing);
    };
    let auth = parse_authorization(
        auth.to_str()
            .map_err(|_| SigError::Incomplete("Authorization header: not ASCII".into()))?,
    )?;
    if auth.service != SERVICE {
        return Err(SigError::Invalid(format!(
            "Credential should be scoped to correct service: '{SERVICE}'."
        )));
    }
    for required in ["host", "x-amz-date"] {
        if !auth.signed_headers.iter().any(|h| h == required) {
            return Err(SigError::Incomplete(format!(
                "SignedHeaders must include {required}"
            )));
        }
    }
    // An unsigned `x-amz-*` header (X-Amz-Target above all) could be changed
    // in transit without breaking the signature; the SDKs sign every one.
    if let Some(unsigned) = headers
        .keys()
        .map(|k| k.as_str())
        .find(|k| k.starts_with("x-amz-") && !auth.signed_headers.iter().any(|h| h == k))
    {
        return Err(SigError::Incomplete(format!(
            "SignedHeaders must include {unsigned}: every x-amz-* header the request carries is signed"
        )));
    }
    let amz_date = amz_date(headers)?;
    let when = parse_amz_date(amz_date).ok_or_else(|| {
        SigError::Incomplete(format!(
            "x-amz-date {amz_date:?}: expected YYYYMMDDTHHMMSSZ"
        ))
    })?;
    if (now_unix - when).abs() > MAX_SKEW_SECS {
        return Err(SigError::Invalid(format!(
            "Signature expired: {amz_date} is more than 15 minutes from the server time"
        )));
    }
    if !amz_date.starts_with(&auth.date) {
        return Err(SigError::Invalid(
            "Credential date does not match x-amz-date".into(),
        ));
    }
    Ok(auth)
}

fn amz_date(headers: &HeaderMap) -> Result<&str, SigError> {
    headers
        .get("x-amz-date")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| SigError::Incomplete("x-amz-date header missing".into()))
}

/// The string to sign of a request whose headers passed [`check_headers`].
pub fn string_to_sign_of(req: &SignedRequest, auth: &Authorization) -> Result<String, SigError> {
    let payload = hex::encode(Sha256::digest(req.body));
    if let Some(claimed) = req.headers.get("x-amz-content-sha256") {
        // The SDKs may announce the payload hash; it has to be the real one.
        if !claimed.as_bytes().eq_ignore_ascii_case(payload.as_bytes()) {
            return Err(SigError::Invalid(
                "x-amz-content-sha256 does not match the payload".into(),
            ));
        }
    }
    let creq = canonical_request(
        req.method,
        req.raw_path,
        req.raw_query,
        req.headers,
        &auth.signed_headers,
        &payload,
    )?;
    Ok(string_to_sign(amz_date(req.headers)?, &auth.scope(), &creq))
}

/// Whether one of `secrets` produced the signature (constant-time comparison).
pub fn matches(auth: &Authorization, sts: &str, secrets: &[String]) -> bool {
    let mut ok = subtle::Choice::from(0);
    for secret in secrets {
        let key = signing_key(secret, &auth.date, &auth.region, &auth.service);
        let expected = signature(&key, sts);
        ok |= expected.as_bytes().ct_eq(auth.signature.as_bytes());
    }
    ok.into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    // AWS's SigV4 test suite: these credentials, date, region and service.
    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
    const DATE: &str = "20150830T123600Z";
    const EMPTY: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn sign(
        method: &str,
        path: &str,
        query: Option<&str>,
        extra: &[(&str, &str)],
        body: &[u8],
    ) -> (String, String) {
        let mut h = HeaderMap::new();
        h.insert("host", HeaderValue::from_static("example.amazonaws.com"));
        h.insert("x-amz-date", HeaderValue::from_static(DATE));
        for (k, v) in extra {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        let mut signed: Vec<String> = h.keys().map(|k| k.as_str().to_string()).collect();
        signed.sort();
        signed.dedup();
        let payload = hex::encode(Sha256::digest(body));
        let creq = canonical_request(method, path, query, &h, &signed, &payload).unwrap();
        let sts = string_to_sign(DATE, "20150830/us-east-1/service/aws4_request", &creq);
        let key = signing_key(SECRET, "20150830", "us-east-1", "service");
        (creq, signature(&key, &sts))
    }

    #[test]
    fn derives_the_signing_key_of_the_aws_documentation() {
        // docs.aws.amazon.com, "Examples of how to derive a signing key".
        let key = signing_key(SECRET, "20120215", "us-east-1", "iam");
        assert_eq!(
            hex::encode(key),
            "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d"
        );
    }

    /// name, path, query, extra headers, body, expected signature.
    type Case<'a> = (
        &'a str,
        &'a str,
        Option<&'a str>,
        &'a [(&'a str, &'a str)],
        &'a [u8],
        &'a str,
    );

    #[test]
    fn matches_the_aws_sigv4_test_suite() {
        let (creq, sig) = sign("GET", "/", None, &[], b"");
        assert_eq!(
            creq,
            format!(
                "GET\n/\n\nhost:example.amazonaws.com\nx-amz-date:{DATE}\n\nhost;x-amz-date\n{EMPTY}"
            )
        );
        assert_eq!(
            sig, "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
            "get-vanilla"
        );
        let cases: [Case; 6] = [
            (
                "post-vanilla",
                "/",
                None,
                &[],
                b"",
                "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b",
            ),
            (
                "post-vanilla-query",
                "/",
                Some("Param1=value1"),
                &[],
                b"",
                "28038455d6de14eafc1f9222cf5aa6f1a96197d7deb8263271d420d138af7f11",
            ),
            (
                "post-header-key-case",
                "/",
                None,
                &[("my-header1", "value1")],
                b"",
                "c5410059b04c1ee005303aed430f6e6645f61f4dc9e1461ec8f8916fdf18852c",
            ),
            (
                "post-x-www-form-urlencoded",
                "/",
                None,
                &[("content-type", "application/x-www-form-urlencoded")],
                b"Param1=value1",
                "ff11897932ad3f4e8b18135d722051e5ac45fc38421b1da7b9d196a0fe09473a",
            ),
            (
                "get-header-key-duplicate",
                "/",
                None,
                &[
                    ("my-header1", "value2"),
                    ("my-header1", "value2"),
                    ("my-header1", "value1"),
                ],
                b"",
                "c9d5ea9f3f72853aea855b47ea873832890dbdd183b4468f858259531a5138ea",
            ),
            (
                "get-header-value-trim",
                "/",
                None,
                &[("my-header1", " value1"), ("my-header2", " \"a   b   c\"")],
                b"",
                "acc3ed3afb60bb290fc8d2dd0098b9911fcaa05412b367055dee359757a9c736",
            ),
        ];
        for (name, path, query, extra, body, expected) in cases {
            let method = if name.starts_with("get") {
                "GET"
            } else {
                "POST"
            };
            assert_eq!(sign(method, path, query, extra, body).1, expected, "{name}");
        }
    }

    #[test]
    fn normalises_paths_and_queries_like_aws() {
        assert_eq!(canonical_path("//example//"), "/example/");
        assert_eq!(canonical_path("/example1/example2/../.."), "/");
        assert_eq!(canonical_path("/./example"), "/example");
        // Double encoding for non-S3 services (test suite get-utf8).
        assert_eq!(canonical_path("/%E1%88%B4"), "/%25E1%2588%25B4");
        assert_eq!(
            canonical_query(Some("Param2=value2&Param1=value1")),
            "Param1=value1&Param2=value2"
        );
        assert_eq!(
            canonical_query(Some("Param1=value2&Param1=Value1")),
            "Param1=Value1&Param1=value2"
        );
    }

    fn request_headers(auth: &str, date: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("host", HeaderValue::from_static("example.amazonaws.com"));
        h.insert("x-amz-date", HeaderValue::from_str(date).unwrap());
        h.insert("authorization", HeaderValue::from_str(auth).unwrap());
        h
    }

    #[test]
    fn verifies_scope_date_and_signature() {
        let now = parse_amz_date(DATE).unwrap();
        let key = signing_key(SECRET, "20150830", "eu-west-1", SERVICE);
        let mut h = request_headers("x", DATE);
        let signed = vec!["host".to_string(), "x-amz-date".to_string()];
        let creq = canonical_request(
            "POST",
            "/",
            None,
            &h,
            &signed,
            &hex::encode(Sha256::digest(b"{}")),
        )
        .unwrap();
        let sts = string_to_sign(DATE, "20150830/eu-west-1/rekognition/aws4_request", &creq);
        let sig = signature(&key, &sts);
        let auth = format!(
            "AWS4-HMAC-SHA256 Credential=FCAKX/20150830/eu-west-1/rekognition/aws4_request, SignedHeaders=host;x-amz-date, Signature={sig}"
        );
        h.insert("authorization", HeaderValue::from_str(&auth).unwrap());
        fn req<'a>(h: &'a HeaderMap, body: &'a [u8]) -> SignedRequest<'a> {
            SignedRequest {
                method: "POST",
                raw_path: "/",
                raw_query: None,
                headers: h,
                body,
            }
        }
        let (parsed, sts2) = prepare(&req(&h, b"{}"), now + 60).unwrap();
        assert!(matches(&parsed, &sts2, &[SECRET.to_string()]));
        assert!(!matches(&parsed, &sts2, &["other".to_string()]));
        // A changed body no longer matches.
        let (parsed, sts3) = prepare(&req(&h, b"{ }"), now).unwrap();
        assert!(!matches(&parsed, &sts3, &[SECRET.to_string()]));
        // Outside 15 minutes.
        assert!(
            matches!(prepare(&req(&h, b"{}"), now + 16 * 60), Err(SigError::Invalid(m)) if m.starts_with("Signature expired"))
        );
        // Another service.
        let other = auth.replace("/rekognition/", "/s3/");
        h.insert("authorization", HeaderValue::from_str(&other).unwrap());
        assert!(matches!(
            prepare(&req(&h, b"{}"), now),
            Err(SigError::Invalid(_))
        ));
        h.remove("authorization");
        assert_eq!(
            prepare(&req(&h, b"{}"), now).unwrap_err(),
            SigError::Missing
        );
    }

    #[test]
    fn every_x_amz_header_must_be_signed() {
        let now = parse_amz_date(DATE).unwrap();
        let auth = |signed: &str| {
            format!(
                "AWS4-HMAC-SHA256 Credential=FCAKX/20150830/eu-west-1/rekognition/aws4_request, SignedHeaders={signed}, Signature={}",
                "0".repeat(64)
            )
        };
        let mut h = request_headers(&auth("host;x-amz-date"), DATE);
        h.insert(
            "x-amz-target",
            HeaderValue::from_static("RekognitionService.CompareFaces"),
        );
        // Not x-amz-: the SDKs leave these unsigned.
        h.insert("x-amzn-trace-id", HeaderValue::from_static("Root=1"));
        h.insert("user-agent", HeaderValue::from_static("aws-sdk"));
        assert!(matches!(
            check_headers(&h, None, now),
            Err(SigError::Incomplete(m)) if m.starts_with("SignedHeaders must include x-amz-target")
        ));
        let signed = auth("host;x-amz-date;x-amz-target");
        h.insert("authorization", HeaderValue::from_str(&signed).unwrap());
        assert!(check_headers(&h, None, now).is_ok());
    }

    #[test]
    fn parses_amz_dates() {
        assert_eq!(parse_amz_date("19700101T000000Z"), Some(0));
        assert_eq!(parse_amz_date("20150830T123600Z"), Some(1_440_938_160));
        assert_eq!(parse_amz_date("2015-08-30T12:36:00Z"), None);
        assert_eq!(parse_amz_date("20151330T123600Z"), None);
    }
}

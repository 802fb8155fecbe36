//! Inputs: turns multipart/JSON fields into image bytes (base64, base64url,
//! data: URIs, raw file parts, S3 keys). STUB.

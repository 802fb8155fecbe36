//! facecompare: a self-hosted, drop-in `POST /v1/face/compare` server.
//!
//! One request flows through the folders in order:
//! `http` (routing, auth, errors) → `accounts` (keys, tokens, rate limits,
//! idempotency) → `inputs` (multipart/JSON/base64/S3 into image bytes) →
//! `faces` (decode, detect, align, embed, calibrate on a worker pool).
pub mod accounts;
pub mod cli;
pub mod config;
pub mod error_codes;
pub mod faces;
pub mod http;
pub mod inputs;
pub mod memory;
pub mod operations;
pub mod telemetry;

//! facecompare: a self-hosted, drop-in `POST /v1/face/compare` server.
//!
//! One request flows through the folders in order:
//! `http` (routing, auth, errors; the native API and the Rekognition
//! protocol) → `operations` (the compare transaction both protocols share) →
//! `app` (the core every transport shares: configuration, accounts, engine,
//! S3, metrics, start-up) → `accounts` (keys, tokens, rate limits,
//! idempotency), `inputs` (multipart/JSON/base64/S3 into image bytes) and
//! `faces` (decode, detect, align, embed, calibrate on a worker pool) →
//! `config`. No module imports one above it. `error_codes` lists the native
//! API's error codes.
pub mod accounts;
pub mod app;
pub mod cli;
pub mod config;
pub mod error_codes;
pub mod faces;
pub mod http;
pub mod image_format;
pub mod inputs;
pub mod memory;
pub mod operations;
pub mod telemetry;
pub mod utc;

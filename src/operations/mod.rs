//! Operations: what a request *does*, independent of the protocol that
//! carried it. Each transport (the native `POST /v1/face/compare`, the
//! Rekognition-compatible `POST /`) authenticates, parses its own request,
//! calls an operation here and maps the domain result and errors at its edge.
//!
//! - [`compare`]: rate limit, idempotency lease, balance check, S3 inputs,
//!   engine under the deadline and client-gone watch, charge, metrics.
pub mod compare;

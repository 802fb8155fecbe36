//! Logging setup and Prometheus metrics (STUB: filled in by the HTTP work).

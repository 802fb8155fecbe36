//! A byte budget for request bodies held at once, across all compares.
//!
//! Why: the queue bounds the CPU, not the memory of the bodies waiting for
//! it; 32 concurrent 15 MB uploads held 1.3 GB. A compare reserves its body's
//! share before reading it and is refused with 503 `overloaded` when the
//! budget is spent, so the bytes held stay bounded whatever the concurrency.
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::inputs::MAX_BODY_BYTES;

/// Counted in KiB (tokio's semaphore takes `u32` permits).
const UNIT: u64 = 1024;

#[derive(Clone)]
pub struct BodyBudget {
    permits: Arc<Semaphore>,
    units: u64,
}

/// Bytes reserved for one request; given back when dropped.
pub struct BodyShare(#[allow(dead_code)] OwnedSemaphorePermit);

impl BodyBudget {
    /// At least one largest JSON body always fits.
    pub fn new(bytes: u64) -> Self {
        let units = bytes.max(2 * MAX_BODY_BYTES as u64).div_ceil(UNIT);
        Self {
            permits: Arc::new(Semaphore::new(units as usize)),
            units,
        }
    }

    /// What a body holds while it is parsed: its length, twice for JSON
    /// (the text and the decoded images), the largest body when the length
    /// is not declared (chunked).
    pub fn cost(declared_len: Option<u64>, json: bool) -> u64 {
        let len = declared_len.unwrap_or(MAX_BODY_BYTES as u64);
        if json { 2 * len } else { len }
    }

    /// Reserves `bytes` now or refuses (never waits: a waiting request would
    /// hold its connection and the client's patience instead).
    pub fn try_reserve(&self, bytes: u64) -> Option<BodyShare> {
        let units = bytes.div_ceil(UNIT).clamp(1, self.units) as u32;
        self.permits
            .clone()
            .try_acquire_many_owned(units)
            .ok()
            .map(BodyShare)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserves_until_spent_and_gives_back_on_drop() {
        let budget = BodyBudget::new(3 * MAX_BODY_BYTES as u64);
        let a = budget.try_reserve(MAX_BODY_BYTES as u64).unwrap();
        let b = budget.try_reserve(MAX_BODY_BYTES as u64).unwrap();
        let _c = budget.try_reserve(MAX_BODY_BYTES as u64).unwrap();
        assert!(budget.try_reserve(MAX_BODY_BYTES as u64).is_none());
        drop((a, b));
        assert!(budget.try_reserve(2 * MAX_BODY_BYTES as u64).is_some());
    }

    #[test]
    fn json_and_chunked_bodies_cost_more() {
        assert_eq!(BodyBudget::cost(Some(1000), false), 1000);
        assert_eq!(BodyBudget::cost(Some(1000), true), 2000);
        assert_eq!(BodyBudget::cost(None, false), MAX_BODY_BYTES as u64);
        // A tiny budget still admits the largest JSON body.
        let budget = BodyBudget::new(1);
        assert!(budget.try_reserve(BodyBudget::cost(None, true)).is_some());
    }
}

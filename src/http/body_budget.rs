//! A byte budget for request bodies held at once, across all compares, with
//! a fair share per organisation.
//!
//! Why: the queue bounds the CPU, not the memory of the bodies waiting for
//! it; 32 concurrent 15 MB uploads held 1.3 GB. A body reserves its cost
//! before it is read (a declared `Content-Length`) or as its chunks arrive
//! (chunked), and is refused with 503 `overloaded` when the budget is spent.
//! One organisation may hold at most [`BodyBudget::holder_share`] of it, so
//! a tenant's slow uploads (or anyone holding its AWS access key id) cannot
//! crowd out the other organisations. Unauthenticated requests never get
//! here: they are answered before a body byte is reserved.
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use crate::inputs::MAX_BODY_BYTES;

/// What one largest native JSON compare costs (its text and its images).
const LARGEST_COST: u64 = 2 * MAX_BODY_BYTES as u64;

#[derive(Clone)]
pub struct BodyBudget(Arc<Ledger>);

struct Ledger {
    total: u64,
    per_holder: u64,
    held: Mutex<Held>,
}

#[derive(Default)]
struct Held {
    all: u64,
    by_holder: HashMap<String, u64>,
}

/// Bytes reserved for one request, grown as its body arrives; given back
/// when the last clone is dropped (the body reader holds one, the compare
/// another: the images live as long as the compare).
#[derive(Clone)]
pub struct BodyShare(Arc<Reservation>);

struct Reservation {
    ledger: Arc<Ledger>,
    holder: String,
    bytes: Mutex<u64>,
}

impl BodyBudget {
    /// At least one largest JSON body always fits.
    pub fn new(bytes: u64) -> Self {
        let total = bytes.max(LARGEST_COST);
        Self(Arc::new(Ledger {
            total,
            per_holder: Self::holder_share(total),
            held: Mutex::new(Held::default()),
        }))
    }

    /// What one organisation may hold at once: a quarter of the budget, but
    /// never less than one largest body (nor more than the whole budget).
    pub fn holder_share(total: u64) -> u64 {
        (total / 4).max(LARGEST_COST).min(total)
    }

    /// What a body holds while it is parsed: its length, twice for JSON
    /// (the text and the decoded images).
    pub fn cost(len: u64, json: bool) -> u64 {
        if json { 2 * len } else { len }
    }

    /// Reserves `bytes` for `holder` (an organisation id) now or refuses:
    /// never waits (a waiting request would hold its connection and the
    /// client's patience instead).
    pub fn try_reserve(&self, holder: &str, bytes: u64) -> Option<BodyShare> {
        let share = BodyShare(Arc::new(Reservation {
            ledger: self.0.clone(),
            holder: holder.to_string(),
            bytes: Mutex::new(0),
        }));
        share.grow_to(bytes).then_some(share)
    }
}

impl BodyShare {
    /// Raises the reservation to `bytes` (no-op when it holds that much):
    /// false, and nothing more reserved, when the holder's share or the
    /// whole budget would be exceeded.
    pub fn grow_to(&self, bytes: u64) -> bool {
        let r = &*self.0;
        let mut mine = r.bytes.lock().unwrap();
        if bytes <= *mine {
            return true;
        }
        let more = bytes - *mine;
        let mut held = r.ledger.held.lock().unwrap();
        let holder_has = held.by_holder.get(&r.holder).copied().unwrap_or(0);
        if held.all + more > r.ledger.total || holder_has + more > r.ledger.per_holder {
            return false;
        }
        held.all += more;
        *held.by_holder.entry(r.holder.clone()).or_insert(0) += more;
        *mine = bytes;
        true
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let mine = *self.bytes.get_mut().unwrap();
        if mine == 0 {
            return;
        }
        let mut held = self.ledger.held.lock().unwrap();
        held.all -= mine;
        if let Some(h) = held.by_holder.get_mut(&self.holder) {
            *h -= mine;
            if *h == 0 {
                held.by_holder.remove(&self.holder);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB: u64 = 1 << 20;

    #[test]
    fn reserves_until_spent_and_gives_back_on_drop() {
        let budget = BodyBudget::new(4 * LARGEST_COST);
        let a = budget.try_reserve("a", LARGEST_COST).unwrap();
        let b = budget.try_reserve("b", LARGEST_COST).unwrap();
        let c = budget.try_reserve("c", LARGEST_COST).unwrap();
        let _d = budget.try_reserve("d", LARGEST_COST).unwrap();
        assert!(budget.try_reserve("e", 1).is_none());
        drop((a, b));
        assert!(
            budget.try_reserve("e", 2 * LARGEST_COST).is_none(),
            "e's share"
        );
        assert!(budget.try_reserve("e", LARGEST_COST).is_some());
        // A clone keeps the bytes reserved until the last one goes.
        let c2 = c.clone();
        drop(c);
        assert!(budget.try_reserve("f", LARGEST_COST).is_some());
        assert!(budget.try_reserve("f", 2 * LARGEST_COST).is_none());
        drop(c2);
    }

    #[test]
    fn one_holder_gets_a_quarter_or_one_largest_body() {
        assert_eq!(BodyBudget::holder_share(128 * MB), LARGEST_COST);
        assert_eq!(BodyBudget::holder_share(1024 * MB), 256 * MB);
        let budget = BodyBudget::new(1024 * MB);
        let held: Vec<_> = (0..8)
            .map_while(|_| budget.try_reserve("greedy", 40 * MB))
            .collect();
        assert_eq!(held.len(), 6, "256 MB / 40 MB");
        assert!(budget.try_reserve("other", 256 * MB).is_some());
    }

    #[test]
    fn grows_as_chunks_arrive() {
        let budget = BodyBudget::new(LARGEST_COST);
        let a = budget.try_reserve("a", 0).unwrap();
        assert!(a.grow_to(10 * MB));
        assert!(
            a.grow_to(5 * MB),
            "never shrinks, never fails below what it holds"
        );
        let b = budget.try_reserve("b", LARGEST_COST - 10 * MB).unwrap();
        assert!(!a.grow_to(10 * MB + 1));
        drop(b);
        assert!(a.grow_to(LARGEST_COST));
        assert!(!a.grow_to(LARGEST_COST + 1), "the share");
    }

    #[test]
    fn json_bodies_cost_twice() {
        assert_eq!(BodyBudget::cost(1000, false), 1000);
        assert_eq!(BodyBudget::cost(1000, true), 2000);
        // A tiny budget still admits the largest JSON body.
        let budget = BodyBudget::new(1);
        assert!(
            budget
                .try_reserve("a", BodyBudget::cost(MAX_BODY_BYTES as u64, true))
                .is_some()
        );
    }
}

//! The engine queue's order: fair across organisations, weighted by each
//! job's estimated cost (start-time fair queueing).
//!
//! Why: one first-in-first-out queue let one organisation's burst of costly
//! images (a 27 MP WebP took 2 CPU-seconds) sit in front of everyone else's
//! compares. Here each organisation has its own FIFO, and a job's *start tag*
//! is the later of "now" (the start tag of the job last handed to a worker)
//! and the *finish tag* (start + cost) of the organisation's previous job.
//! Workers take the smallest start tag. So an organisation that was idle
//! starts at "now", ahead of every job a busy one queued after its first,
//! and two busy organisations are served in proportion to cost, not count:
//! one 2-second image weighs as much as thirty 60 ms photos.
use std::{
    collections::{HashMap, VecDeque},
    sync::Arc,
};

/// Who a job is for: the organisation id.
pub type Tenant = Arc<str>;

struct Tagged<T> {
    start: u64,
    seq: u64,
    item: T,
}

struct TenantQueue<T> {
    jobs: VecDeque<Tagged<T>>,
    /// Finish tag of this tenant's last queued job.
    last_finish: u64,
}

pub struct FairQueue<T> {
    tenants: HashMap<Tenant, TenantQueue<T>>,
    /// Virtual time: the start tag of the job last handed out.
    now: u64,
    /// Arrival order, the tie-break among equal start tags.
    seq: u64,
    len: usize,
}

impl<T> Default for FairQueue<T> {
    fn default() -> Self {
        Self {
            tenants: HashMap::new(),
            now: 0,
            seq: 0,
            len: 0,
        }
    }
}

impl<T> FairQueue<T> {
    /// Queues `item` for `tenant`; `cost` is its estimated work (any unit,
    /// the same for every job; 0 counts as 1).
    pub fn push(&mut self, tenant: &Tenant, cost: u64, item: T) {
        let now = self.now;
        let q = self
            .tenants
            .entry(Arc::clone(tenant))
            .or_insert_with(|| TenantQueue {
                jobs: VecDeque::new(),
                last_finish: 0,
            });
        let start = now.max(q.last_finish);
        q.last_finish = start.saturating_add(cost.max(1));
        q.jobs.push_back(Tagged {
            start,
            seq: self.seq,
            item,
        });
        self.seq += 1;
        self.len += 1;
    }

    /// The next job in fair order, with its tenant.
    pub fn pop(&mut self) -> Option<(Tenant, T)> {
        let tenant = self
            .tenants
            .iter()
            .filter_map(|(t, q)| q.jobs.front().map(|j| (t, (j.start, j.seq))))
            .min_by_key(|(_, key)| *key)
            .map(|(t, _)| Arc::clone(t))?;
        let job = self
            .tenants
            .get_mut(&tenant)
            .and_then(|q| q.jobs.pop_front())
            .expect("the tenant picked has a job");
        self.now = self.now.max(job.start);
        self.len -= 1;
        // A tenant with nothing queued whose last job has started no longer
        // weighs on anyone: forget it (its next job starts at "now" anyway).
        let now = self.now;
        self.tenants
            .retain(|_, q| !q.jobs.is_empty() || q.last_finish > now);
        Some((tenant, job.item))
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(name: &str) -> Tenant {
        Arc::from(name)
    }

    fn drain(q: &mut FairQueue<&'static str>) -> Vec<&'static str> {
        std::iter::from_fn(|| q.pop().map(|(_, item)| item)).collect()
    }

    #[test]
    fn one_tenant_is_first_in_first_out() {
        let mut q = FairQueue::default();
        for (item, cost) in [("a1", 50), ("a2", 1), ("a3", 1000)] {
            q.push(&t("a"), cost, item);
        }
        assert_eq!(q.len(), 3);
        assert_eq!(drain(&mut q), ["a1", "a2", "a3"]);
        assert!(q.is_empty());
    }

    #[test]
    fn equal_costs_take_turns() {
        let mut q = FairQueue::default();
        for item in ["a1", "a2", "a3", "a4"] {
            q.push(&t("a"), 10, item);
        }
        for item in ["b1", "b2"] {
            q.push(&t("b"), 10, item);
        }
        assert_eq!(drain(&mut q), ["a1", "b1", "a2", "b2", "a3", "a4"]);
    }

    #[test]
    fn a_newcomer_goes_ahead_of_a_burst_queued_earlier() {
        let mut q = FairQueue::default();
        for item in ["a1", "a2", "a3", "a4", "a5"] {
            q.push(&t("a"), 100, item);
        }
        assert_eq!(q.pop().unwrap().1, "a1");
        // B arrives while A's burst waits: its compare (two images) is next.
        q.push(&t("b"), 5, "b-source");
        q.push(&t("b"), 5, "b-target");
        assert_eq!(
            drain(&mut q),
            ["b-source", "b-target", "a2", "a3", "a4", "a5"]
        );
    }

    #[test]
    fn service_is_shared_by_cost_not_by_count() {
        let mut q = FairQueue::default();
        // A's images each cost what ten of B's do.
        for item in ["A1", "A2", "A3"] {
            q.push(&t("a"), 100, item);
        }
        for item in [
            "b1", "b2", "b3", "b4", "b5", "b6", "b7", "b8", "b9", "b10", "b11", "b12",
        ] {
            q.push(&t("b"), 10, item);
        }
        let order = drain(&mut q);
        let pos = |x: &str| order.iter().position(|o| *o == x).unwrap();
        // After A1, B gets about ten jobs' worth of service before A2.
        assert_eq!(pos("A1"), 0);
        let b_before_a2 = order[..pos("A2")]
            .iter()
            .filter(|o| o.starts_with('b'))
            .count();
        assert!((9..=11).contains(&b_before_a2), "{order:?}");
    }

    #[test]
    fn an_idle_tenant_earns_no_credit() {
        let mut q = FairQueue::default();
        q.push(&t("b"), 10, "b1");
        assert_eq!(q.pop().unwrap().1, "b1");
        // A long burst from A runs while B is idle...
        for item in ["a1", "a2", "a3", "a4"] {
            q.push(&t("a"), 10, item);
        }
        assert_eq!(q.pop().unwrap().1, "a1");
        assert_eq!(q.pop().unwrap().1, "a2");
        // ...then B comes back with several jobs: they interleave with A's
        // rest from now on, not all ahead as if B had saved up its share.
        for item in ["b2", "b3", "b4"] {
            q.push(&t("b"), 10, item);
        }
        assert_eq!(drain(&mut q), ["b2", "a3", "b3", "a4", "b4"]);
    }

    #[test]
    fn a_costly_job_pushes_its_tenant_back_after_it_started() {
        let mut q = FairQueue::default();
        q.push(&t("a"), 1_000, "a-huge");
        assert_eq!(q.pop().unwrap().1, "a-huge");
        // A queues again while its huge job runs; B arrives after.
        q.push(&t("a"), 10, "a-next");
        q.push(&t("b"), 10, "b1");
        q.push(&t("b"), 10, "b2");
        assert_eq!(drain(&mut q), ["b1", "b2", "a-next"]);
    }

    #[test]
    fn forgets_tenants_that_no_longer_weigh() {
        let mut q = FairQueue::default();
        for i in 0..100 {
            q.push(&Arc::from(format!("org-{i}")), 1, "x");
        }
        assert_eq!(drain(&mut q).len(), 100);
        // Once virtual time has moved past their last finish tags.
        for _ in 0..3 {
            q.push(&t("a"), 1, "a");
        }
        assert_eq!(drain(&mut q).len(), 3);
        assert!(q.tenants.len() <= 1, "{} kept", q.tenants.len());
    }
}

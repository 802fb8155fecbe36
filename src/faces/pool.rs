//! The inference pool: a bounded queue feeding worker threads that each own
//! their ONNX Runtime sessions. A burst waits in the queue instead of
//! overcommitting the CPU; a full queue is refused at once. A job whose
//! caller has stopped waiting (request deadline passed, the other image of
//! the compare failed) is dropped when a worker takes it, not run.
//!
//! Fair across organisations (docs/operations.md, "Fairness"): workers take
//! jobs in [`FairQueue`] order, weighted by each image's estimated cost
//! ([`super::cost`]), and one organisation holds at most its share of the
//! queue places, so a burst is refused for the organisation that sends it,
//! not for the others. Decodes take their memory from one process-wide
//! [`DecodeBudget`].
use std::{
    collections::HashMap,
    panic::{AssertUnwindSafe, catch_unwind},
    sync::{
        Arc, Condvar, Mutex, MutexGuard,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use tokio::sync::oneshot;

use super::{
    cost,
    decode::budget::DecodeBudget,
    fair_queue::{FairQueue, Tenant},
    pipeline::{Analysis, AnalyzeError, Depth, Models},
};

/// Work for one worker's models; given the abandon flag and the time it
/// waited, it answers its caller and says whether it stopped abandoned.
type Task<M> = Box<dyn FnOnce(&mut M, &AtomicBool, Duration) -> bool + Send>;

struct Job<M> {
    /// Set when the caller's future is dropped before the answer.
    abandoned: Arc<AtomicBool>,
    enqueued: Instant,
    task: Task<M>,
}

#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("the inference queue is full")]
    Full,
    #[error("the organisation holds its share of the inference queue")]
    OrgShareFull,
    #[error("the inference workers have stopped")]
    Stopped,
}

/// Sizes of the queue.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Images that may wait for a worker, all organisations together.
    pub capacity: usize,
    /// Of those, the most one organisation may hold.
    pub org_share: usize,
}

impl Limits {
    /// `share_percent` of `capacity` for one organisation (at least one
    /// compare's two places, at most the whole queue).
    pub fn new(capacity: usize, share_percent: u32) -> Self {
        let capacity = capacity.max(2);
        let share = (capacity as u64 * share_percent.min(100) as u64).div_ceil(100) as usize;
        Self {
            capacity,
            org_share: share.clamp(2, capacity),
        }
    }
}

struct State<M> {
    queue: FairQueue<Job<M>>,
    /// Places held: reserved or queued, not yet taken by a worker.
    depth: usize,
    /// The same, per organisation (organisations holding none are absent).
    held: HashMap<Tenant, usize>,
    closed: bool,
}

impl<M> State<M> {
    fn give_back(&mut self, tenant: &Tenant, n: usize) {
        if n == 0 {
            return;
        }
        self.depth -= n;
        if let Some(h) = self.held.get_mut(tenant) {
            *h -= n;
            if *h == 0 {
                self.held.remove(tenant);
            }
        }
    }

    fn hold(&mut self, tenant: &Tenant, n: usize) {
        self.depth += n;
        *self.held.entry(Arc::clone(tenant)).or_insert(0) += n;
    }
}

struct Shared<M> {
    state: Mutex<State<M>>,
    /// Signalled when a job is queued or the pool closes.
    ready: Condvar,
    /// Jobs dropped unrun because their caller had given up.
    skipped: AtomicU64,
}

impl<M> Shared<M> {
    fn lock(&self) -> MutexGuard<'_, State<M>> {
        // A panic never happens while the lock is held (jobs run outside it).
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Blocks until a job is queued; `None` once the pool is closed and empty.
    fn next(&self) -> Option<Job<M>> {
        let mut state = self.lock();
        loop {
            if let Some((tenant, job)) = state.queue.pop() {
                state.give_back(&tenant, 1);
                return Some(job);
            }
            if state.closed {
                return None;
            }
            state = self.ready.wait(state).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// Generic over what each worker owns (its [`Models`]; the unit tests use
/// plain values).
pub struct Pool<M: Send + 'static = Models> {
    shared: Arc<Shared<M>>,
    limits: Limits,
    memory: Arc<DecodeBudget>,
}

/// Marks a job abandoned unless disarmed (the answer arrived).
struct AbandonOnDrop(Option<Arc<AtomicBool>>);

impl Drop for AbandonOnDrop {
    fn drop(&mut self) {
        if let Some(flag) = self.0.take() {
            flag.store(true, Ordering::Relaxed);
        }
    }
}

/// Queue places held for one request of one organisation; given back if unused.
pub struct Reservation<'a, M: Send + 'static = Models> {
    pool: &'a Pool<M>,
    tenant: Tenant,
    left: usize,
}

impl<M: Send + 'static> Reservation<'_, M> {
    /// Moves one held place into a reservation of its own.
    pub fn split_one(&mut self) -> Self {
        assert!(self.left > 0, "no place left to split off");
        self.left -= 1;
        Reservation {
            pool: self.pool,
            tenant: Arc::clone(&self.tenant),
            left: 1,
        }
    }
}

impl<M: Send + 'static> Drop for Reservation<'_, M> {
    fn drop(&mut self) {
        if self.left > 0 {
            self.pool.shared.lock().give_back(&self.tenant, self.left);
        }
    }
}

impl<M: Send + 'static> Pool<M> {
    /// Starts one thread per set of models; decodes share `memory`.
    pub fn start(models: Vec<M>, limits: Limits, memory: Arc<DecodeBudget>) -> Self {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                queue: FairQueue::default(),
                depth: 0,
                held: HashMap::new(),
                closed: false,
            }),
            ready: Condvar::new(),
            skipped: AtomicU64::new(0),
        });
        for (i, mut models) in models.into_iter().enumerate() {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name(format!("faces-{i}"))
                .spawn(move || {
                    while let Some(job) = shared.next() {
                        if job.abandoned.load(Ordering::Relaxed) {
                            shared.skipped.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                        let waited = job.enqueued.elapsed();
                        if (job.task)(&mut models, &job.abandoned, waited) {
                            shared.skipped.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
                .expect("spawn inference worker");
        }
        Self {
            shared,
            limits,
            memory,
        }
    }

    /// Holds `n` queue places at once for `tenant` (a compare needs two), or
    /// refuses: the queue is full, or the organisation holds its share.
    pub fn reserve(&self, tenant: &str, n: usize) -> Result<Reservation<'_, M>, SubmitError> {
        let tenant: Tenant = Arc::from(tenant);
        let mut state = self.shared.lock();
        if state.closed {
            return Err(SubmitError::Stopped);
        }
        if state.depth + n > self.limits.capacity {
            return Err(SubmitError::Full);
        }
        if state.held.get(&tenant).copied().unwrap_or(0) + n > self.limits.org_share {
            crate::telemetry::QUEUE_ORG_SHARE_REFUSED.inc();
            return Err(SubmitError::OrgShareFull);
        }
        state.hold(&tenant, n);
        Ok(Reservation {
            pool: self,
            tenant,
            left: n,
        })
    }

    /// One place for a compare's follow-up job (its age pass): never
    /// refused, as the compare already held two places and gave them back;
    /// the queue (and the organisation's share) may run one over meanwhile.
    pub fn reserve_follow_up(&self, tenant: &str) -> Reservation<'_, M> {
        let tenant: Tenant = Arc::from(tenant);
        self.shared.lock().hold(&tenant, 1);
        Reservation {
            pool: self,
            tenant,
            left: 1,
        }
    }

    /// Queues `work` (estimated to cost `cost`, in [`cost`]'s unit) on a
    /// held place; resolves with its result (and how long it waited) when a
    /// worker has run it.
    pub async fn run<T: Send + 'static>(
        &self,
        place: &mut Reservation<'_, M>,
        cost: u64,
        work: impl FnOnce(&mut M, &AtomicBool) -> Result<T, AnalyzeError> + Send + 'static,
    ) -> Result<(Result<T, AnalyzeError>, Duration), SubmitError> {
        assert!(place.left > 0, "a queue place is held for each job");
        let (reply, rx) = oneshot::channel();
        let abandoned = Arc::new(AtomicBool::new(false));
        let task: Task<M> = Box::new(move |models, abandoned, waited| {
            let result =
                catch_unwind(AssertUnwindSafe(|| work(models, abandoned))).unwrap_or_else(|_| {
                    Err(AnalyzeError::Engine(anyhow::anyhow!(
                        "the face pipeline panicked"
                    )))
                });
            let gave_up = matches!(result, Err(AnalyzeError::Abandoned));
            let _ = reply.send((result, waited));
            gave_up
        });
        {
            let mut state = self.shared.lock();
            if state.closed {
                return Err(SubmitError::Stopped);
            }
            let job = Job {
                abandoned: Arc::clone(&abandoned),
                enqueued: Instant::now(),
                task,
            };
            state.queue.push(&place.tenant, cost, job);
            // From here the worker gives the place back when it takes the job.
            place.left -= 1;
        }
        self.shared.ready.notify_one();
        let mut guard = AbandonOnDrop(Some(abandoned));
        let answer = rx.await.map_err(|_| SubmitError::Stopped);
        guard.0 = None;
        answer
    }

    /// Jobs dropped unrun so far because their caller had given up.
    pub fn skipped(&self) -> u64 {
        self.shared.skipped.load(Ordering::Relaxed)
    }

    /// Places held now (queued images and reservations).
    pub fn depth(&self) -> usize {
        self.shared.lock().depth
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }
}

impl Pool<Models> {
    /// Queues one image on a held place; resolves when a worker has analysed it.
    pub async fn analyze(
        &self,
        place: &mut Reservation<'_>,
        bytes: Bytes,
        max_faces: usize,
        depth: Depth,
    ) -> Result<(Result<Analysis, AnalyzeError>, Duration), SubmitError> {
        let cost = cost::image(&bytes, depth);
        let memory = Arc::clone(&self.memory);
        self.run(place, cost, move |m, abandoned| {
            m.analyze_unless(&bytes, max_faces, depth, abandoned, Some(&memory))
        })
        .await
    }
}

impl<M: Send + 'static> Drop for Pool<M> {
    /// Workers finish what is queued, then exit.
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.ready.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    type Done = Arc<Mutex<Vec<&'static str>>>;

    fn pool(workers: usize, limits: Limits) -> Arc<Pool<()>> {
        Arc::new(Pool::start(
            vec![(); workers],
            limits,
            Arc::new(DecodeBudget::new(0)),
        ))
    }

    /// Queues one job for `org` that records `name` when it runs.
    fn job(
        pool: &Arc<Pool<()>>,
        org: &'static str,
        name: &'static str,
        cost: u64,
        done: &Done,
    ) -> tokio::task::JoinHandle<()> {
        let (pool, done) = (Arc::clone(pool), Arc::clone(done));
        tokio::spawn(async move {
            let mut place = pool.reserve(org, 1).unwrap();
            let (r, _) = pool
                .run(&mut place, cost, move |_, _| {
                    done.lock().unwrap().push(name);
                    Ok(())
                })
                .await
                .unwrap();
            r.unwrap();
        })
    }

    /// Occupies the one worker until the returned sender is dropped.
    async fn block_worker(pool: &Arc<Pool<()>>, org: &'static str) -> mpsc::Sender<()> {
        let (release, gate) = mpsc::channel::<()>();
        let started = Arc::new(AtomicBool::new(false));
        let (p, s) = (Arc::clone(pool), Arc::clone(&started));
        tokio::spawn(async move {
            let mut place = p.reserve(org, 1).unwrap();
            let (r, _) = p
                .run(&mut place, 1_000, move |_, _| {
                    s.store(true, Ordering::SeqCst);
                    let _ = gate.recv();
                    Ok(())
                })
                .await
                .unwrap();
            r.unwrap();
        });
        while !started.load(Ordering::SeqCst) {
            tokio::task::yield_now().await;
        }
        release
    }

    async fn until_queued(pool: &Pool<()>, n: usize) {
        while pool.shared.lock().queue.len() < n {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn another_orgs_compare_runs_before_a_queued_burst() {
        let p = pool(1, Limits::new(64, 50));
        let done = Done::default();
        let release = block_worker(&p, "a").await;
        let mut handles = Vec::new();
        for name in ["a1", "a2", "a3", "a4", "a5", "a6"] {
            handles.push(job(&p, "a", name, 2_000, &done));
        }
        until_queued(&p, 6).await;
        for name in ["b-source", "b-target"] {
            handles.push(job(&p, "b", name, 60, &done));
        }
        until_queued(&p, 8).await;
        drop(release);
        for h in handles {
            h.await.unwrap();
        }
        assert_eq!(
            *done.lock().unwrap(),
            ["b-source", "b-target", "a1", "a2", "a3", "a4", "a5", "a6"]
        );
    }

    #[tokio::test]
    async fn two_busy_orgs_are_served_in_turn() {
        let p = pool(1, Limits::new(64, 50));
        let done = Done::default();
        let release = block_worker(&p, "gate").await;
        let mut handles = Vec::new();
        for name in ["a1", "a2", "a3"] {
            handles.push(job(&p, "a", name, 100, &done));
        }
        until_queued(&p, 3).await;
        for name in ["b1", "b2", "b3"] {
            handles.push(job(&p, "b", name, 100, &done));
        }
        until_queued(&p, 6).await;
        drop(release);
        for h in handles {
            h.await.unwrap();
        }
        assert_eq!(*done.lock().unwrap(), ["a1", "b1", "a2", "b2", "a3", "b3"]);
    }

    #[test]
    fn one_org_holds_at_most_its_share_of_the_queue() {
        let p = pool(0, Limits::new(8, 50));
        assert_eq!(p.limits().org_share, 4);
        let a = p.reserve("a", 4).unwrap();
        assert!(matches!(p.reserve("a", 1), Err(SubmitError::OrgShareFull)));
        let b = p.reserve("b", 2).unwrap();
        let b2 = p.reserve("b", 2).unwrap();
        assert_eq!(p.depth(), 8);
        // The queue is full for everyone now.
        assert!(matches!(p.reserve("c", 1), Err(SubmitError::Full)));
        drop(a);
        let c = p.reserve("c", 2).unwrap();
        assert!(matches!(p.reserve("b", 1), Err(SubmitError::OrgShareFull)));
        // A follow-up (age pass) is never refused, share or not.
        let follow = p.reserve_follow_up("b");
        assert_eq!(p.depth(), 7);
        drop((b, b2, c, follow));
        assert_eq!(p.depth(), 0);
        assert!(p.shared.lock().held.is_empty());
    }

    #[test]
    fn shares_are_at_least_one_compare_and_at_most_the_queue() {
        let l = Limits::new(64, 50);
        assert_eq!((l.capacity, l.org_share), (64, 32));
        assert_eq!(Limits::new(1, 50).org_share, 2);
        assert_eq!(Limits::new(10, 1).org_share, 2);
        assert_eq!(Limits::new(10, 100).org_share, 10);
        assert_eq!(Limits::new(10, 250).org_share, 10);
        assert_eq!(Limits::new(5, 50).org_share, 3);
    }

    #[tokio::test]
    async fn a_job_whose_caller_gave_up_is_skipped_unrun() {
        let p = pool(1, Limits::new(64, 50));
        let done = Done::default();
        let release = block_worker(&p, "a").await;
        let given_up = job(&p, "a", "given-up", 10, &done);
        until_queued(&p, 1).await;
        given_up.abort();
        let _ = given_up.await;
        let next = job(&p, "a", "next", 10, &done);
        until_queued(&p, 2).await;
        drop(release);
        next.await.unwrap();
        assert_eq!(*done.lock().unwrap(), ["next"]);
        assert_eq!(p.skipped(), 1);
        assert_eq!(p.depth(), 0);
    }

    #[tokio::test]
    async fn a_panicking_job_is_an_engine_error_and_the_worker_goes_on() {
        let p = pool(1, Limits::new(64, 50));
        let mut place = p.reserve("a", 2).unwrap();
        let (r, _) = p
            .run(&mut place, 1, |_, _| -> Result<(), _> { panic!("boom") })
            .await
            .unwrap();
        assert!(matches!(r, Err(AnalyzeError::Engine(_))));
        let (r, _) = p.run(&mut place, 1, |_, _| Ok(7)).await.unwrap();
        assert_eq!(r.unwrap(), 7);
    }
}

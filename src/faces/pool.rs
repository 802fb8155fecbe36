//! The inference pool: a bounded queue feeding worker threads that each own
//! their ONNX Runtime sessions. A burst waits in the queue instead of
//! overcommitting the CPU; a full queue is refused at once. A job whose
//! caller has stopped waiting (request deadline passed, the other image of
//! the compare failed) is dropped when a worker takes it, not run.
use std::{
    panic::{AssertUnwindSafe, catch_unwind},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        mpsc::{self, Sender},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use tokio::sync::oneshot;

use super::pipeline::{Analysis, AnalyzeError, Depth, Models};

/// Work for one worker's models; given the abandon flag and the time it
/// waited, it answers its caller and says whether it stopped abandoned.
type Task = Box<dyn FnOnce(&mut Models, &AtomicBool, Duration) -> bool + Send>;

struct Job {
    /// Set when the caller's future is dropped before the answer.
    abandoned: Arc<AtomicBool>,
    enqueued: Instant,
    task: Task,
}

#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("the inference queue is full")]
    Full,
    #[error("the inference workers have stopped")]
    Stopped,
}

pub struct Pool {
    tx: Sender<Job>,
    /// Images queued and not yet taken by a worker.
    depth: Arc<AtomicUsize>,
    capacity: usize,
    /// Jobs dropped unrun because their caller had given up.
    skipped: Arc<AtomicU64>,
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

/// Queue places held for one request; given back if unused.
pub struct Reservation<'a> {
    pool: &'a Pool,
    left: usize,
}

impl Reservation<'_> {
    /// Moves one held place into a reservation of its own.
    pub fn split_one(&mut self) -> Self {
        assert!(self.left > 0, "no place left to split off");
        self.left -= 1;
        Reservation {
            pool: self.pool,
            left: 1,
        }
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.pool.depth.fetch_sub(self.left, Ordering::Relaxed);
    }
}

impl Pool {
    /// Starts one thread per set of models; at most `capacity` images wait.
    pub fn start(models: Vec<Models>, capacity: usize) -> Self {
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let depth = Arc::new(AtomicUsize::new(0));
        let skipped = Arc::new(AtomicU64::new(0));
        for (i, mut models) in models.into_iter().enumerate() {
            let rx = Arc::clone(&rx);
            let depth = Arc::clone(&depth);
            let skipped = Arc::clone(&skipped);
            std::thread::Builder::new()
                .name(format!("faces-{i}"))
                .spawn(move || {
                    loop {
                        // Hold the lock only while taking a job.
                        let job = match rx.lock().map(|r| r.recv()) {
                            Ok(Ok(job)) => job,
                            _ => return,
                        };
                        depth.fetch_sub(1, Ordering::Relaxed);
                        if job.abandoned.load(Ordering::Relaxed) {
                            skipped.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                        let waited = job.enqueued.elapsed();
                        if (job.task)(&mut models, &job.abandoned, waited) {
                            skipped.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
                .expect("spawn inference worker");
        }
        Self {
            tx,
            depth,
            capacity: capacity.max(2),
            skipped,
        }
    }

    /// Holds `n` queue places at once (a compare needs two), or refuses.
    pub fn reserve(&self, n: usize) -> Result<Reservation<'_>, SubmitError> {
        self.depth
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |d| {
                (d + n <= self.capacity).then_some(d + n)
            })
            .map_err(|_| SubmitError::Full)?;
        Ok(Reservation {
            pool: self,
            left: n,
        })
    }

    /// One place for a compare's follow-up job (its age pass): never
    /// refused, as the compare already held two places and gave them back;
    /// the queue may run one over capacity meanwhile.
    pub fn reserve_follow_up(&self) -> Reservation<'_> {
        self.depth.fetch_add(1, Ordering::Relaxed);
        Reservation {
            pool: self,
            left: 1,
        }
    }

    /// Queues one image on a held place; resolves when a worker has analysed it.
    pub async fn analyze(
        &self,
        place: &mut Reservation<'_>,
        bytes: Bytes,
        max_faces: usize,
        depth: Depth,
    ) -> Result<(Result<Analysis, AnalyzeError>, Duration), SubmitError> {
        self.run(place, move |m, abandoned| {
            m.analyze_unless(&bytes, max_faces, depth, abandoned)
        })
        .await
    }

    /// Queues `work` on a held place; resolves with its result (and how long
    /// it waited) when a worker has run it.
    pub async fn run<T: Send + 'static>(
        &self,
        place: &mut Reservation<'_>,
        work: impl FnOnce(&mut Models, &AtomicBool) -> Result<T, AnalyzeError> + Send + 'static,
    ) -> Result<(Result<T, AnalyzeError>, Duration), SubmitError> {
        assert!(place.left > 0, "a queue place is held for each job");
        let (reply, rx) = oneshot::channel();
        let abandoned = Arc::new(AtomicBool::new(false));
        let task: Task = Box::new(move |models, abandoned, waited| {
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
        self.tx
            .send(Job {
                abandoned: Arc::clone(&abandoned),
                enqueued: Instant::now(),
                task,
            })
            .map_err(|_| SubmitError::Stopped)?;
        // From here the worker gives the place back when it takes the job.
        place.left -= 1;
        let mut guard = AbandonOnDrop(Some(abandoned));
        let answer = rx.await.map_err(|_| SubmitError::Stopped);
        guard.0 = None;
        answer
    }

    /// Jobs dropped unrun so far because their caller had given up.
    pub fn skipped(&self) -> u64 {
        self.skipped.load(Ordering::Relaxed)
    }

    pub fn depth(&self) -> usize {
        self.depth.load(Ordering::Relaxed)
    }
}

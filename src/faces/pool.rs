//! The inference pool: a bounded queue feeding worker threads that each own
//! their ONNX Runtime sessions. A burst waits in the queue instead of
//! overcommitting the CPU; a full queue is refused at once.
use std::{
    panic::{AssertUnwindSafe, catch_unwind},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
        mpsc::{self, Sender},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use tokio::sync::oneshot;

use super::pipeline::{Analysis, AnalyzeError, Models};

struct Job {
    bytes: Bytes,
    max_faces: usize,
    enqueued: Instant,
    reply: oneshot::Sender<(Result<Analysis, AnalyzeError>, Duration)>,
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
        for (i, mut models) in models.into_iter().enumerate() {
            let rx = Arc::clone(&rx);
            let depth = Arc::clone(&depth);
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
                        let waited = job.enqueued.elapsed();
                        let result = catch_unwind(AssertUnwindSafe(|| {
                            models.analyze(&job.bytes, job.max_faces)
                        }))
                        .unwrap_or_else(|_| {
                            Err(AnalyzeError::Engine(anyhow::anyhow!(
                                "the face pipeline panicked"
                            )))
                        });
                        let _ = job.reply.send((result, waited));
                    }
                })
                .expect("spawn inference worker");
        }
        Self {
            tx,
            depth,
            capacity: capacity.max(2),
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

    /// Queues one image on a held place; resolves when a worker has analysed it.
    pub async fn analyze(
        &self,
        place: &mut Reservation<'_>,
        bytes: Bytes,
        max_faces: usize,
    ) -> Result<(Result<Analysis, AnalyzeError>, Duration), SubmitError> {
        assert!(place.left > 0, "a queue place is held for each image");
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Job {
                bytes,
                max_faces,
                enqueued: Instant::now(),
                reply,
            })
            .map_err(|_| SubmitError::Stopped)?;
        // From here the worker gives the place back when it takes the job.
        place.left -= 1;
        rx.await.map_err(|_| SubmitError::Stopped)
    }

    pub fn depth(&self) -> usize {
        self.depth.load(Ordering::Relaxed)
    }
}

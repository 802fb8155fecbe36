//! The inference pool: a bounded queue feeding worker threads that each own
//! their ONNX Runtime sessions. A burst waits in the queue instead of
//! overcommitting the CPU; a full queue is refused at once.
use std::{
    panic::{AssertUnwindSafe, catch_unwind},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
        mpsc::{self, SyncSender, TrySendError},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use tokio::sync::oneshot;

use super::pipeline::{AnalyzeError, Analysis, Models};

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
    tx: SyncSender<Job>,
    depth: Arc<AtomicUsize>,
}

impl Pool {
    /// Starts one thread per set of models.
    pub fn start(models: Vec<Models>, capacity: usize) -> Self {
        let (tx, rx) = mpsc::sync_channel::<Job>(capacity);
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
                        let result = catch_unwind(AssertUnwindSafe(|| models.analyze(&job.bytes, job.max_faces)))
                            .unwrap_or_else(|_| Err(AnalyzeError::Engine(anyhow::anyhow!("the face pipeline panicked"))));
                        let _ = job.reply.send((result, waited));
                    }
                })
                .expect("spawn inference worker");
        }
        Self { tx, depth }
    }

    /// Queues one image; resolves when a worker has analysed it.
    pub async fn analyze(&self, bytes: Bytes, max_faces: usize) -> Result<(Result<Analysis, AnalyzeError>, Duration), SubmitError> {
        let (reply, rx) = oneshot::channel();
        self.depth.fetch_add(1, Ordering::Relaxed);
        match self.tx.try_send(Job { bytes, max_faces, enqueued: Instant::now(), reply }) {
            Ok(()) => {}
            Err(e) => {
                self.depth.fetch_sub(1, Ordering::Relaxed);
                return Err(match e {
                    TrySendError::Full(_) => SubmitError::Full,
                    TrySendError::Disconnected(_) => SubmitError::Stopped,
                });
            }
        }
        rx.await.map_err(|_| SubmitError::Stopped)
    }

    pub fn depth(&self) -> usize {
        self.depth.load(Ordering::Relaxed)
    }
}

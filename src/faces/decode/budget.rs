//! The process-wide decode-memory budget: a semaphore of bytes that a decode
//! takes, sized from the image header, before it allocates its buffers, and
//! gives back when it returns its (reduced-scale) image.
//!
//! Why: the per-image limit ([`super::MAX_DECODE_BYTES`]) bounded one decode,
//! so peak memory grew with the worker count (two workers, two 192 MB
//! decodes). With one budget for the process, decodes that fit run side by
//! side and a large one waits for memory instead of adding to the peak.
use std::{
    sync::{
        Condvar, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use super::DecodeError;

/// How often a decode waiting for memory looks whether its caller gave up.
const ABANDON_POLL: Duration = Duration::from_millis(50);

/// The budget as one job sees it: its caller's abandon flag ends a wait, so
/// a request that has given up does not decode once for nobody.
#[derive(Clone, Copy)]
pub struct Gate<'a> {
    pub budget: &'a DecodeBudget,
    pub abandoned: &'a AtomicBool,
}

pub struct DecodeBudget {
    total: u64,
    /// Bytes not taken.
    free: Mutex<u64>,
    freed: Condvar,
    /// One waiter at a time: a large decode is not overtaken forever by
    /// small ones that keep fitting.
    turnstile: Mutex<()>,
}

/// Bytes taken from a budget; given back when dropped.
#[must_use = "the bytes are given back when this is dropped"]
pub struct Held<'a> {
    budget: Option<&'a DecodeBudget>,
    bytes: u64,
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        if let Some(b) = self.budget {
            *b.free.lock().unwrap_or_else(|e| e.into_inner()) += self.bytes;
            b.freed.notify_all();
        }
    }
}

impl DecodeBudget {
    /// A budget of `total` bytes; never below one largest accepted decode.
    pub fn new(total: u64) -> Self {
        let total = total.max(super::MAX_DECODE_BYTES);
        Self {
            total,
            free: Mutex::new(total),
            freed: Condvar::new(),
            turnstile: Mutex::new(()),
        }
    }

    pub fn total(&self) -> u64 {
        self.total
    }

    /// Bytes taken right now.
    pub fn in_use(&self) -> u64 {
        self.total - *self.free.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes `bytes` (at most the whole budget), waiting while other decodes
    /// hold too much. Only inference workers call this, at most one take
    /// each at a time, so a wait always ends when some decode returns.
    pub fn take(&self, bytes: u64) -> Held<'_> {
        static NEVER: AtomicBool = AtomicBool::new(false);
        self.take_unless(bytes, &NEVER)
            .expect("a wait that is never abandoned ends with the bytes")
    }

    /// As [`DecodeBudget::take`], but gives up (None) once `abandoned` is set
    /// while it waits.
    pub fn take_unless(&self, bytes: u64, abandoned: &AtomicBool) -> Option<Held<'_>> {
        let bytes = bytes.min(self.total);
        let _turn = self.turnstile.lock().unwrap_or_else(|e| e.into_inner());
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        if *free < bytes {
            crate::telemetry::DECODE_MEMORY_WAITS.inc();
            while *free < bytes {
                if abandoned.load(Ordering::Relaxed) {
                    return None;
                }
                free = self
                    .freed
                    .wait_timeout(free, ABANDON_POLL)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
        }
        *free -= bytes;
        Some(Held {
            budget: Some(self),
            bytes,
        })
    }
}

/// Takes from the gate's budget when there is one (the server's workers);
/// decodes outside the server (CLI, benchmarks, tests) are bounded per image
/// only. [`DecodeError::Abandoned`] when the caller gave up while it waited.
pub fn take(gate: Option<Gate<'_>>, bytes: u64) -> Result<Held<'_>, DecodeError> {
    match gate {
        Some(g) => g
            .budget
            .take_unless(bytes, g.abandoned)
            .ok_or(DecodeError::Abandoned),
        None => Ok(Held {
            budget: None,
            bytes: 0,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::{
        sync::{Arc, mpsc},
        time::Duration,
    };

    const MB: u64 = 1 << 20;

    #[test]
    fn small_takes_share_and_a_large_one_waits_for_memory() {
        let b = Arc::new(DecodeBudget::new(200 * MB));
        assert_eq!(b.total(), 200 * MB);
        let first = b.take(150 * MB);
        let small = b.take(40 * MB);
        assert_eq!(b.in_use(), 190 * MB);
        let (tx, rx) = mpsc::channel();
        let waiter = {
            let b = Arc::clone(&b);
            std::thread::spawn(move || {
                let _held = b.take(100 * MB);
                tx.send(b.in_use()).unwrap();
            })
        };
        // It cannot fit until the first decode returns its bytes.
        assert!(rx.recv_timeout(Duration::from_millis(200)).is_err());
        drop(first);
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap(), 140 * MB);
        waiter.join().unwrap();
        drop(small);
        assert_eq!(b.in_use(), 0);
    }

    #[test]
    fn never_smaller_than_one_largest_decode_and_takes_are_capped() {
        let b = DecodeBudget::new(1);
        assert_eq!(b.total(), super::super::MAX_DECODE_BYTES);
        let all = b.take(u64::MAX);
        assert_eq!(b.in_use(), b.total());
        drop(all);
        let none = take(None, u64::MAX).unwrap();
        drop(none);
        assert_eq!(b.in_use(), 0);
    }

    #[test]
    fn a_wait_ends_when_its_caller_gives_up() {
        let b = Arc::new(DecodeBudget::new(200 * MB));
        let held = b.take(150 * MB);
        let abandoned = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel();
        let waiter = {
            let (b, abandoned) = (Arc::clone(&b), Arc::clone(&abandoned));
            std::thread::spawn(move || {
                let gate = Gate {
                    budget: &b,
                    abandoned: &abandoned,
                };
                tx.send(matches!(
                    take(Some(gate), 100 * MB),
                    Err(DecodeError::Abandoned)
                ))
                .unwrap();
            })
        };
        assert!(
            rx.recv_timeout(Duration::from_millis(200)).is_err(),
            "waits"
        );
        abandoned.store(true, Ordering::Relaxed);
        assert!(rx.recv_timeout(Duration::from_secs(5)).unwrap(), "gave up");
        waiter.join().unwrap();
        assert_eq!(b.in_use(), 150 * MB, "nothing taken for the abandoned wait");
        drop(held);
        assert_eq!(b.in_use(), 0);
    }
}

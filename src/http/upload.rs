//! A request body as the server reads it: its reservation in the body
//! budget grows with the bytes that arrived (a chunked body reserves nothing
//! up front), and it must keep a minimum average rate after a grace period
//! (docs/operations.md, "Memory": slow uploads may not hold their share for
//! the whole request timeout).
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::time::{Instant, timeout_at};

use super::body_budget::{BodyBudget, BodyShare};
use crate::inputs::{BodyStopped, InputError};

/// Until this long after the head, a body may arrive at any pace...
pub const GRACE: Duration = Duration::from_secs(10);
/// ...after it, it must have averaged at least this many bytes per second
/// (32 KiB/s = 256 kbit/s, below a poor mobile uplink).
pub const MIN_RATE: u64 = 32 * 1024;

/// `body`, metered: each chunk grows `share` to the cost of what arrived
/// (`json`: twice the bytes), and the stream ends with [`BodyStopped`]
/// (`body_too_slow`, or the budget spent) instead of waiting on.
pub fn metered(body: Body, share: BodyShare, json: bool) -> Body {
    metered_with(body, share, json, GRACE, MIN_RATE)
}

fn metered_with(body: Body, share: BodyShare, json: bool, grace: Duration, rate: u64) -> Body {
    struct State {
        inner: axum::body::BodyDataStream,
        share: BodyShare,
        json: bool,
        started: Instant,
        received: u64,
        grace: Duration,
        rate: u64,
        stopped: bool,
    }
    impl State {
        /// When the bytes so far stop meeting the minimum rate.
        fn due(&self) -> Instant {
            let earned = Duration::from_secs_f64(self.received as f64 / self.rate as f64);
            self.started + self.grace.max(earned)
        }
    }
    let state = State {
        inner: body.into_data_stream(),
        share,
        json,
        started: Instant::now(),
        received: 0,
        grace,
        rate,
        stopped: false,
    };
    let stream = futures_util::stream::unfold(state, |mut st| async move {
        if st.stopped {
            return None;
        }
        let stop = |st: &mut State, e: InputError| {
            st.stopped = true;
            Err::<Bytes, axum::BoxError>(Box::new(BodyStopped(e)))
        };
        let item = match timeout_at(st.due(), st.inner.next()).await {
            Err(_) => {
                let e = InputError::BodyTooSlow {
                    min_kib_per_s: st.rate / 1024,
                    grace_secs: st.grace.as_secs(),
                };
                stop(&mut st, e)
            }
            Ok(None) => return None,
            Ok(Some(Err(e))) => Err(e.into()),
            Ok(Some(Ok(chunk))) => {
                st.received += chunk.len() as u64;
                if st.share.grow_to(BodyBudget::cost(st.received, st.json)) {
                    Ok(chunk)
                } else {
                    stop(&mut st, InputError::BodyBudgetSpent)
                }
            }
        };
        Some((item, st))
    });
    Body::from_stream(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn read_all(body: Body) -> Result<u64, InputError> {
        let mut s = body.into_data_stream();
        let mut n = 0;
        while let Some(c) = s.next().await {
            n += c.map_err(|e| InputError::read_failed(&e))?.len() as u64;
        }
        Ok(n)
    }

    fn trickle(chunks: usize, size: usize, every: Duration) -> Body {
        let s = futures_util::stream::iter(0..chunks).then(move |_| async move {
            tokio::time::sleep(every).await;
            Ok::<_, std::convert::Infallible>(Bytes::from(vec![b'x'; size]))
        });
        Body::from_stream(s)
    }

    /// The rules at a smaller scale: 200 ms of grace, then 32 KiB/s.
    fn quick(body: Body, share: BodyShare, json: bool) -> Body {
        metered_with(body, share, json, Duration::from_millis(200), 32 * 1024)
    }

    #[tokio::test]
    async fn a_slow_body_is_stopped_after_the_grace_period() {
        let budget = BodyBudget::new(0);
        let share = budget.try_reserve("a", 0).unwrap();
        // 10 KiB/s against a minimum of 32 KiB/s.
        let body = quick(trickle(100, 1024, Duration::from_millis(100)), share, false);
        let e = read_all(body).await.unwrap_err();
        assert_eq!(e.code(), "body_too_slow");
    }

    #[tokio::test]
    async fn a_body_at_the_rate_passes_and_grows_its_share() {
        let budget = BodyBudget::new(0);
        let share = budget.try_reserve("a", 0).unwrap();
        // 160 KiB/s for 1 s, JSON: reserved twice as it arrives.
        let body = quick(
            trickle(20, 8 * 1024, Duration::from_millis(50)),
            share.clone(),
            true,
        );
        let n = 20 * 8 * 1024;
        assert_eq!(read_all(body).await.unwrap(), n);
        // The share holds what arrived: the rest of the budget is free.
        let total = 2 * crate::inputs::MAX_BODY_BYTES as u64; // the floor: budget and share
        assert!(budget.try_reserve("b", total).is_none());
        assert!(budget.try_reserve("b", total - 2 * n).is_some());
    }

    #[tokio::test]
    async fn a_spent_budget_stops_the_body() {
        let budget = BodyBudget::new(0);
        let total = 2 * crate::inputs::MAX_BODY_BYTES as u64; // the floor: budget and share
        let _other = budget.try_reserve("b", total - 1000).unwrap();
        let share = budget.try_reserve("a", 0).unwrap();
        let body = metered(trickle(3, 1000, Duration::ZERO), share, false);
        assert_eq!(read_all(body).await.unwrap_err().code(), "overloaded");
    }
}

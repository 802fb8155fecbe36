//! Per-organisation rate limit: GCRA (the token bucket expressed as one
//! timestamp, the theoretical arrival time TAT) with its state in the
//! database, so every replica counts against the same budget.
//!
//! A limit of N per window W has emission interval T = W/N and tolerance
//! τ = (N-1)·T: a request at `now` is admitted when `max(TAT, now) <= now + τ`,
//! and then TAT becomes `max(TAT, now) + T`. That admits a burst of exactly N
//! and refills one request every T. Times are microseconds so that
//! `N/s` limits with large N keep their precision.
use sqlx::Row;

use super::{Accounts, AccountsError, Org, RateDecision, now_us};
use crate::config::RateLimit;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Gcra {
    /// Emission interval T, µs.
    interval: i64,
    /// Burst tolerance τ = (N-1)·T, µs.
    tolerance: i64,
    limit: u32,
    window_secs: u64,
}

impl Gcra {
    fn new(limit: &RateLimit) -> Self {
        let n = i64::from(limit.per_window.max(1));
        let window = i64::try_from(limit.window.as_micros()).unwrap_or(i64::MAX / 4);
        let interval = (window / n).max(1);
        Self {
            interval,
            tolerance: interval * (n - 1),
            limit: limit.per_window.max(1),
            window_secs: limit.window.as_secs(),
        }
    }

    /// The decision after an admission that moved the TAT to `tat`.
    fn admitted(&self, now: i64, tat: i64) -> RateDecision {
        let slack = now + self.tolerance - tat;
        let remaining = if slack < 0 {
            0
        } else {
            slack / self.interval + 1
        };
        RateDecision {
            allowed: true,
            limit: self.limit,
            remaining: remaining.clamp(0, i64::from(self.limit)) as u32,
            reset_secs: ceil_secs(tat - now),
            retry_after_secs: 0,
            window_secs: self.window_secs,
        }
    }

    /// The decision for a refusal while the TAT stands at `tat`.
    fn refused(&self, now: i64, tat: i64) -> RateDecision {
        RateDecision {
            allowed: false,
            limit: self.limit,
            remaining: 0,
            reset_secs: ceil_secs(tat - now),
            retry_after_secs: ceil_secs(tat - self.tolerance - now).max(1),
            window_secs: self.window_secs,
        }
    }
}

fn ceil_secs(us: i64) -> u64 {
    if us <= 0 {
        0
    } else {
        (us as u64).div_ceil(1_000_000)
    }
}

impl Accounts {
    /// Counts one request against the org's limit (state shared through the database).
    pub async fn rate_check(&self, org: &Org) -> Result<RateDecision, AccountsError> {
        let gcra = Gcra::new(&org.rate_limit());
        let now = now_us();
        // One atomic upsert: it advances the TAT only when the request is
        // admitted (the DO UPDATE's WHERE), and returns nothing otherwise.
        // CASE WHEN instead of GREATEST/MAX keeps it portable.
        let admitted = sqlx::query(
            "INSERT INTO rate_limits (org_id, tat_us) VALUES ($1, $2 + $3) \
             ON CONFLICT (org_id) DO UPDATE \
             SET tat_us = (CASE WHEN rate_limits.tat_us > $2 THEN rate_limits.tat_us ELSE $2 END) + $3 \
             WHERE (CASE WHEN rate_limits.tat_us > $2 THEN rate_limits.tat_us ELSE $2 END) <= $2 + $4 \
             RETURNING tat_us",
        )
        .bind(&org.id)
        .bind(now)
        .bind(gcra.interval)
        .bind(gcra.tolerance)
        .fetch_optional(&self.pool)
        .await?;
        if let Some(row) = admitted {
            return Ok(gcra.admitted(now, row.try_get(0)?));
        }
        let tat: i64 = sqlx::query("SELECT tat_us FROM rate_limits WHERE org_id = $1")
            .bind(&org.id)
            .fetch_optional(&self.pool)
            .await?
            .map(|row| row.try_get(0))
            .transpose()?
            .unwrap_or(now);
        Ok(gcra.refused(now, tat))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// The same rule as the SQL, in memory: returns the new TAT when admitted.
    fn step(g: &Gcra, tat: i64, now: i64) -> Option<i64> {
        let base = tat.max(now);
        (base <= now + g.tolerance).then_some(base + g.interval)
    }

    #[test]
    fn admits_a_burst_of_n_then_refills_at_n_per_window() {
        let g = Gcra::new(&RateLimit {
            per_window: 5,
            window: Duration::from_secs(60),
        });
        assert_eq!(g.interval, 12_000_000);
        let now = 1_000_000_000;
        let mut tat = 0;
        for i in 0..5 {
            tat = step(&g, tat, now).unwrap_or_else(|| panic!("request {i} refused"));
            let d = g.admitted(now, tat);
            assert_eq!(d.remaining, 4 - i, "remaining after request {i}");
        }
        assert!(step(&g, tat, now).is_none());
        let refused = g.refused(now, tat);
        assert!(!refused.allowed);
        assert_eq!(refused.retry_after_secs, 12);
        assert_eq!(refused.reset_secs, 60);
        // One interval later exactly one more request fits.
        let later = now + g.interval;
        tat = step(&g, tat, later).expect("refilled one");
        assert!(step(&g, tat, later).is_none());
    }

    #[test]
    fn retry_after_is_at_least_one_second() {
        let g = Gcra::new(&RateLimit {
            per_window: 100,
            window: Duration::from_secs(1),
        });
        let now = 5_000_000;
        let mut tat = 0;
        while let Some(t) = step(&g, tat, now) {
            tat = t;
        }
        let d = g.refused(now, tat);
        assert_eq!(d.retry_after_secs, 1);
        assert_eq!((d.limit, d.window_secs), (100, 1));
    }

    #[test]
    fn large_limits_keep_a_positive_interval() {
        let g = Gcra::new(&RateLimit {
            per_window: u32::MAX,
            window: Duration::from_secs(1),
        });
        assert!(g.interval >= 1);
        let fresh = g.admitted(0, g.interval);
        assert!(fresh.remaining > 0);
    }
}

//! Calls per user: a token bucket each, refilled at `per_sec` up to `burst`.
//!
//! The buckets live in one map bounded at [`MAX_TRACKED`] users: past it, full buckets
//! (users idle long enough to have their whole burst back, who lose nothing by being
//! forgotten) are dropped first, and if all are in use, all of them (a burst of fresh
//! allowance for everyone is better than memory without bound).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use taskmesh_shared::auth::UserId;

const MAX_TRACKED: usize = 100_000;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

#[derive(Debug)]
pub struct RateLimiter {
    per_sec: f64,
    burst: f64,
    buckets: Mutex<HashMap<UserId, Bucket>>,
}

impl RateLimiter {
    pub fn new(per_sec: u32, burst: u32) -> Self {
        Self {
            per_sec: f64::from(per_sec.max(1)),
            burst: f64::from(burst.max(1)),
            buckets: Mutex::default(),
        }
    }

    /// Takes one call from `user`'s allowance, or says how long until there is one.
    pub fn admit(&self, user: &UserId) -> Result<(), Duration> {
        self.admit_at(user, Instant::now())
    }

    fn admit_at(&self, user: &UserId, now: Instant) -> Result<(), Duration> {
        let Ok(mut buckets) = self.buckets.lock() else {
            return Ok(());
        };
        let refill = |bucket: &Bucket| {
            let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
            (bucket.tokens + elapsed * self.per_sec).min(self.burst)
        };
        if buckets.len() >= MAX_TRACKED && !buckets.contains_key(user) {
            buckets.retain(|_, bucket| refill(bucket) < self.burst);
            if buckets.len() >= MAX_TRACKED {
                buckets.clear();
            }
        }
        // A known user costs a lookup; only a new one is cloned into the map.
        let bucket = match buckets.get_mut(user) {
            Some(bucket) => bucket,
            None => buckets.entry(user.clone()).or_insert(Bucket {
                tokens: self.burst,
                at: now,
            }),
        };
        let tokens = refill(bucket);
        if tokens >= 1.0 {
            *bucket = Bucket {
                tokens: tokens - 1.0,
                at: now,
            };
            Ok(())
        } else {
            *bucket = Bucket { tokens, at: now };
            Err(Duration::from_secs_f64((1.0 - tokens) / self.per_sec))
        }
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.buckets.lock().map(|b| b.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn user(name: &str) -> UserId {
        UserId::try_from(name.to_owned()).unwrap()
    }

    #[test]
    fn a_burst_then_the_sustained_rate() {
        let limiter = RateLimiter::new(10, 5);
        let (alice, bob) = (user("alice"), user("bob"));
        let start = Instant::now();
        for _ in 0..5 {
            limiter.admit_at(&alice, start).unwrap();
        }
        let wait = limiter.admit_at(&alice, start).unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_millis(100),
            "{wait:?}"
        );
        // Others are not affected.
        limiter.admit_at(&bob, start).unwrap();
        // 100 ms later one more call is allowed, and only one.
        let later = start + Duration::from_millis(100);
        limiter.admit_at(&alice, later).unwrap();
        assert!(limiter.admit_at(&alice, later).is_err());
    }

    #[test]
    fn the_buckets_stay_bounded() {
        let limiter = RateLimiter::new(1, 1);
        let now = Instant::now();
        for i in 0..MAX_TRACKED + 10 {
            let _ = limiter.admit_at(&user(&format!("u{i}")), now);
        }
        assert!(limiter.tracked() <= MAX_TRACKED);
    }
}

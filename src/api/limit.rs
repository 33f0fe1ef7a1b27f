//! Per-key rate limiting for the HTTP server.
//!
//! - [`RateLimiter`]: one token bucket per key (a client address or an
//!   authenticated subject), holding up to `burst` tokens and earning
//!   `requests_per_second` of them each second. Each request takes one token.
//! - [`RetryAfter`]: the refusal, saying when one token will be available.
//!
//! A bucket is stored as the single instant at which it will be full again
//! (the GCRA form of a token bucket). Refill is then exact `Duration`
//! arithmetic with no floating-point drift, and a bucket costs 16 bytes.
//!
//! Memory is bounded by `max_keys` whatever the number of clients: keys live in
//! LRU caches and the key seen least recently is forgotten first (within each
//! of the 16 shards, which split `max_keys` between them). A forgotten
//! key comes back with a full bucket, so eviction can only make the limiter
//! more lenient, never stricter; `max_keys` should exceed the number of clients
//! active within `burst / requests_per_second` seconds.

use std::hash::BuildHasher;
use std::num::NonZeroUsize;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use hashbrown::DefaultHashBuilder;
use lru::LruCache;

/// Independently locked shards: with a thousand clients on two cores a single
/// mutex would be contended, and sixteen cost next to nothing.
const SHARDS: usize = 16;

/// One shard's buckets, the least recently seen key first to go.
type Shard = Mutex<LruCache<Box<str>, Bucket>>;

/// A refused request: one token will be available after this wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("too many requests: retry in {} seconds", self.whole_seconds())]
pub(crate) struct RetryAfter(pub(crate) Duration);

impl RetryAfter {
    /// The wait in whole seconds, as the `Retry-After` header needs it:
    /// rounded up, so a client that waits that long is admitted, and at least 1.
    pub(crate) fn whole_seconds(self) -> u64 {
        let rounded_up = self.0.as_secs() + u64::from(self.0.subsec_nanos() > 0);
        rounded_up.max(1)
    }
}

/// Token buckets for many keys, safe to share between threads.
#[derive(Debug)]
pub(crate) struct RateLimiter {
    /// Time to earn one token: one second divided by the rate.
    interval: Duration,
    /// Time to refill an empty bucket: `burst` intervals.
    capacity: Duration,
    hasher: DefaultHashBuilder,
    /// Std mutexes, held only for one cache lookup and a comparison; never
    /// held across `.await` (the limiter has no async code).
    shards: Box<[Shard]>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// When the bucket will hold `burst` tokens again if no request comes;
    /// an instant in the past means it is full.
    full_at: Instant,
}

impl RateLimiter {
    /// A limiter admitting `burst` requests at once per key, then
    /// `requests_per_second` per key, remembering at most `max_keys` keys.
    ///
    /// Each argument is raised to at least 1: the configuration validates
    /// them, and a zero would mean a limiter that refuses everything forever.
    pub(crate) fn new(requests_per_second: u32, burst: u32, max_keys: usize) -> Self {
        Self::with_shards(requests_per_second, burst, max_keys, SHARDS)
    }

    fn with_shards(requests_per_second: u32, burst: u32, max_keys: usize, shards: usize) -> Self {
        let max_keys = max_keys.max(1);
        let shard_count = shards.clamp(1, max_keys);
        let interval = Duration::from_secs(1) / requests_per_second.max(1);
        let shards = (0..shard_count)
            .map(|index| Mutex::new(LruCache::new(shard_capacity(max_keys, shard_count, index))))
            .collect();
        Self {
            interval,
            capacity: interval * burst.max(1),
            hasher: DefaultHashBuilder::default(),
            shards,
        }
    }

    /// Takes one token from `key`'s bucket, or says how long to wait for one.
    ///
    /// A refused request takes nothing, so a client retrying too early does
    /// not push its own admission further away.
    pub(crate) fn check(&self, key: &str, now: Instant) -> Result<(), RetryAfter> {
        let shard = &self.shards[self.shard_index(key)];
        let mut buckets = shard.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(bucket) = buckets.get_mut(key) {
            return bucket.take(now, self.interval, self.capacity);
        }
        let mut bucket = Bucket { full_at: now };
        let verdict = bucket.take(now, self.interval, self.capacity);
        buckets.put(key.into(), bucket);
        verdict
    }

    fn shard_index(&self, key: &str) -> usize {
        // The modulo keeps the result below the shard count, so truncating
        // the hash to usize first loses nothing that matters.
        self.hasher.hash_one(key) as usize % self.shards.len()
    }

    #[cfg(test)]
    fn tracked_keys(&self) -> usize {
        let lengths = self.shards.iter().map(|shard| shard.lock().unwrap().len());
        lengths.sum()
    }
}

impl Bucket {
    fn take(
        &mut self,
        now: Instant,
        interval: Duration,
        capacity: Duration,
    ) -> Result<(), RetryAfter> {
        let next_full_at = self.full_at.max(now) + interval;
        // At least one token is left exactly when, after taking it, the
        // bucket needs no longer to refill than an empty bucket does.
        let refill = next_full_at - now;
        if refill > capacity {
            return Err(RetryAfter(refill - capacity));
        }
        self.full_at = next_full_at;
        Ok(())
    }
}

/// Splits `max_keys` over the shards so that the capacities sum to exactly
/// `max_keys`; each is at least 1 because there are no more shards than keys.
fn shard_capacity(max_keys: usize, shard_count: usize, index: usize) -> NonZeroUsize {
    let extra = usize::from(index < max_keys % shard_count);
    NonZeroUsize::new(max_keys / shard_count + extra).unwrap_or(NonZeroUsize::MIN)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn admitted(limiter: &RateLimiter, key: &str, now: Instant, attempts: usize) -> usize {
        (0..attempts)
            .filter(|_| limiter.check(key, now).is_ok())
            .count()
    }

    #[test]
    fn burst_is_admitted_then_refused() {
        let limiter = RateLimiter::new(1, 3, 100);
        let start = Instant::now();
        assert_eq!(admitted(&limiter, "client", start, 3), 3);
        assert!(limiter.check("client", start).is_err());
    }

    #[test]
    fn tokens_refill_over_time_up_to_burst() {
        let limiter = RateLimiter::new(2, 3, 100);
        let start = Instant::now();
        assert_eq!(admitted(&limiter, "client", start, 3), 3);
        let one_second_later = start + Duration::from_secs(1);
        assert_eq!(admitted(&limiter, "client", one_second_later, 10), 2);
        let long_after = start + Duration::from_secs(60);
        assert_eq!(admitted(&limiter, "client", long_after, 10), 3);
    }

    #[test]
    fn retry_after_is_the_time_until_one_token() {
        let limiter = RateLimiter::new(1, 2, 100);
        let start = Instant::now();
        assert_eq!(admitted(&limiter, "client", start, 2), 2);
        let refusal = limiter.check("client", start).unwrap_err();
        assert_eq!(refusal, RetryAfter(Duration::from_secs(1)));
        let later = start + Duration::from_millis(400);
        let refusal = limiter.check("client", later).unwrap_err();
        assert_eq!(refusal, RetryAfter(Duration::from_millis(600)));
        assert!(
            limiter
                .check("client", start + Duration::from_secs(1))
                .is_ok()
        );
    }

    #[test]
    fn whole_seconds_round_up_and_are_at_least_one() {
        let seconds = |millis| RetryAfter(Duration::from_millis(millis)).whole_seconds();
        assert_eq!(seconds(0), 1);
        assert_eq!(seconds(1), 1);
        assert_eq!(seconds(1000), 1);
        assert_eq!(seconds(1001), 2);
        assert_eq!(seconds(2500), 3);
    }

    #[test]
    fn keys_have_independent_buckets() {
        let limiter = RateLimiter::new(1, 1, 100);
        let start = Instant::now();
        assert!(limiter.check("alice", start).is_ok());
        assert!(limiter.check("alice", start).is_err());
        assert!(limiter.check("bob", start).is_ok());
    }

    #[test]
    fn least_recently_seen_key_is_forgotten_with_a_full_bucket() {
        let limiter = RateLimiter::with_shards(1, 1, 2, 1);
        let start = Instant::now();
        assert!(limiter.check("alice", start).is_ok());
        assert!(limiter.check("bob", start).is_ok());
        // A refused request still counts as seeing alice, so bob is older.
        assert!(limiter.check("alice", start).is_err());
        assert!(limiter.check("carol", start).is_ok());
        assert!(limiter.check("alice", start).is_err());
        assert!(limiter.check("bob", start).is_ok(), "bob was evicted");
    }

    #[test]
    fn key_count_is_bounded_across_shards() {
        let limiter = RateLimiter::new(1, 1, 100);
        let start = Instant::now();
        for client in 0..10_000 {
            let _ = limiter.check(&format!("client-{client}"), start);
        }
        assert_eq!(limiter.tracked_keys(), 100);
    }

    #[test]
    fn partial_tokens_accumulate_while_refused() {
        let limiter = RateLimiter::new(4, 1, 100);
        let start = Instant::now();
        assert!(limiter.check("client", start).is_ok());
        let early = start + Duration::from_millis(100);
        let refusal = limiter.check("client", early).unwrap_err();
        assert_eq!(refusal, RetryAfter(Duration::from_millis(150)));
        assert!(
            limiter
                .check("client", start + Duration::from_millis(250))
                .is_ok()
        );
    }

    #[test]
    fn zero_settings_are_raised_to_one() {
        let limiter = RateLimiter::new(0, 0, 0);
        let start = Instant::now();
        assert!(limiter.check("client", start).is_ok());
        let refusal = limiter.check("client", start).unwrap_err();
        assert_eq!(refusal, RetryAfter(Duration::from_secs(1)));
    }

    #[test]
    fn concurrent_callers_share_one_burst() {
        let limiter = RateLimiter::new(1, 100, 1000);
        let start = Instant::now();
        let admitted_total = AtomicUsize::new(0);
        std::thread::scope(|scope| {
            for _ in 0..8 {
                scope.spawn(|| {
                    let admitted_here = admitted(&limiter, "shared", start, 50);
                    admitted_total.fetch_add(admitted_here, Ordering::Relaxed);
                });
            }
        });
        assert_eq!(admitted_total.into_inner(), 100);
    }
}

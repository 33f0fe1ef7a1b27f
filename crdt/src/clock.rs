//! Hybrid logical clocks.
//!
//! A [`Stamp`] orders writes for last-writer-wins: wall-clock milliseconds plus a
//! logical counter that keeps stamps unique and monotonic when the wall clock stalls
//! or steps back. [`HybridClock`] issues stamps and folds in stamps seen from others.
//!
//! The clock never reads time itself: every call takes the caller's wall time, so
//! the crate stays pure and tests are exact.
//!
//! # Clock skew
//!
//! A phone whose clock says 2099 must not win every last-writer-wins contest forever.
//! [`HybridClock::observe`] therefore refuses a stamp more than `max_skew_ms` ahead of
//! the local wall time with [`ClockError::TooFarAhead`], and leaves the clock
//! untouched. What the caller does next is its choice; the engine re-stamps JSON
//! writes with its own clock and refuses native changes so that the device fixes
//! its clock (see the engine documentation).

use serde::{Deserialize, Serialize};

use crate::error::ClockError;

/// Default bound on how far a writer's clock may run ahead: one minute.
pub const DEFAULT_MAX_SKEW_MS: u64 = 60_000;

/// A hybrid-logical-clock stamp: `(physical milliseconds, logical counter)`,
/// ordered lexicographically.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Stamp {
    /// Milliseconds since the Unix epoch.
    pub physical_ms: u64,
    /// Orders stamps issued within the same millisecond.
    pub logical: u32,
}

impl Stamp {
    /// A stamp at `physical_ms` with logical counter 0.
    pub const fn at(physical_ms: u64) -> Stamp {
        Stamp {
            physical_ms,
            logical: 0,
        }
    }
}

impl std::fmt::Display for Stamp {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "{}.{}", self.physical_ms, self.logical)
    }
}

/// Issues monotonic stamps from a wall time that the caller passes in.
#[derive(Clone, Debug)]
pub struct HybridClock {
    last: Stamp,
    max_skew_ms: u64,
}

impl Default for HybridClock {
    fn default() -> HybridClock {
        HybridClock::new(DEFAULT_MAX_SKEW_MS)
    }
}

impl HybridClock {
    /// A clock that refuses stamps more than `max_skew_ms` ahead of wall time.
    pub fn new(max_skew_ms: u64) -> HybridClock {
        HybridClock {
            last: Stamp::default(),
            max_skew_ms,
        }
    }

    /// The largest stamp issued or observed so far.
    pub fn last(&self) -> Stamp {
        self.last
    }

    /// The configured skew bound.
    pub fn max_skew_ms(&self) -> u64 {
        self.max_skew_ms
    }

    /// Continues after `stamp` (a stamp this clock issued or observed before a
    /// restart): every later stamp is greater, even if the wall clock went back.
    pub fn resume_after(&mut self, stamp: Stamp) {
        self.last = self.last.max(stamp);
    }

    /// A new stamp for a local event at wall time `wall_ms`: greater than every
    /// stamp issued or observed before.
    pub fn tick(&mut self, wall_ms: u64) -> Stamp {
        self.last = if wall_ms > self.last.physical_ms {
            Stamp::at(wall_ms)
        } else {
            self.successor(self.last)
        };
        self.last
    }

    /// Folds in a stamp received from another writer at local wall time `wall_ms`
    /// and returns a local stamp greater than both.
    ///
    /// # Errors
    ///
    /// [`ClockError::TooFarAhead`] when `remote` is more than `max_skew_ms` ahead of
    /// `wall_ms`; the clock is then unchanged.
    pub fn observe(&mut self, remote: Stamp, wall_ms: u64) -> Result<Stamp, ClockError> {
        self.check(remote, wall_ms)?;
        let physical = wall_ms.max(self.last.physical_ms).max(remote.physical_ms);
        let mut next = Stamp::at(physical);
        let latest_seen = self.last.max(remote);
        if latest_seen.physical_ms == physical {
            next = self.successor(latest_seen);
        }
        self.last = next;
        Ok(next)
    }

    /// Whether `remote` is within the skew bound at wall time `wall_ms`.
    ///
    /// # Errors
    ///
    /// [`ClockError::TooFarAhead`] when it is not.
    pub fn check(&self, remote: Stamp, wall_ms: u64) -> Result<(), ClockError> {
        let ahead_ms = remote.physical_ms.saturating_sub(wall_ms);
        if ahead_ms > self.max_skew_ms {
            return Err(ClockError::TooFarAhead {
                ahead_ms,
                max_skew_ms: self.max_skew_ms,
            });
        }
        Ok(())
    }

    fn successor(&self, stamp: Stamp) -> Stamp {
        match stamp.logical.checked_add(1) {
            Some(logical) => Stamp {
                physical_ms: stamp.physical_ms,
                logical,
            },
            // 4 billion events in one millisecond: borrow the next millisecond.
            None => Stamp::at(stamp.physical_ms + 1),
        }
    }
}

/// The writer of a change: a client device, a user, or a server process.
///
/// Client-priority policies rank writers by this id, and last-writer-wins breaks
/// equal stamps with it. Cheap to clone.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ClientId(std::sync::Arc<str>);

impl ClientId {
    /// A writer id.
    pub fn new(id: impl Into<std::sync::Arc<str>>) -> ClientId {
        ClientId(id.into())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for ClientId {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(&self.0)
    }
}

impl From<String> for ClientId {
    fn from(id: String) -> ClientId {
        ClientId::new(id)
    }
}

impl From<&str> for ClientId {
    fn from(id: &str) -> ClientId {
        ClientId::new(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_follow_wall_time() {
        let mut clock = HybridClock::default();
        assert_eq!(clock.tick(100), Stamp::at(100));
        assert_eq!(clock.tick(250), Stamp::at(250));
    }

    #[test]
    fn ticks_stay_monotonic_when_wall_time_steps_back() {
        let mut clock = HybridClock::default();
        let first = clock.tick(1_000);
        let second = clock.tick(900);
        let third = clock.tick(900);
        assert!(first < second && second < third);
        assert_eq!(
            third,
            Stamp {
                physical_ms: 1_000,
                logical: 2
            }
        );
    }

    #[test]
    fn observe_moves_past_a_remote_stamp_within_skew() {
        let mut clock = HybridClock::new(5_000);
        clock.tick(1_000);
        let remote = Stamp {
            physical_ms: 4_000,
            logical: 7,
        };
        let next = clock.observe(remote, 1_000).expect("within skew");
        assert_eq!(
            next,
            Stamp {
                physical_ms: 4_000,
                logical: 8
            }
        );
        assert!(clock.tick(1_001) > next);
    }

    #[test]
    fn observe_refuses_a_stamp_from_the_far_future_and_keeps_the_clock() {
        let mut clock = HybridClock::new(60_000);
        clock.tick(1_000);
        let year_2099 = Stamp::at(4_070_908_800_000);
        let error = clock.observe(year_2099, 1_000).expect_err("too far ahead");
        assert_eq!(
            error,
            ClockError::TooFarAhead {
                ahead_ms: 4_070_908_799_000,
                max_skew_ms: 60_000
            }
        );
        assert_eq!(clock.last(), Stamp::at(1_000));
    }

    #[test]
    fn a_stamp_exactly_at_the_bound_is_accepted() {
        let mut clock = HybridClock::new(10);
        assert!(clock.observe(Stamp::at(110), 100).is_ok());
        assert!(clock.observe(Stamp::at(121), 110).is_err());
    }

    #[test]
    fn logical_overflow_borrows_the_next_millisecond() {
        let mut clock = HybridClock::default();
        let remote = Stamp {
            physical_ms: 5,
            logical: u32::MAX,
        };
        assert_eq!(clock.observe(remote, 5).expect("ok"), Stamp::at(6));
    }
}

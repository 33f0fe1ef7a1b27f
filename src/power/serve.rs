//! The server's side of power profiles: what each power state gets served.
//!
//! [`PowerConfig`] (`[sync.power]` in the configuration) holds one [`ServeMode`]
//! per [`PowerState`], a [`MeteredMode`] laid over any of them on a metered
//! network, and the tables whose changes may wait. [`PowerConfig::plan`] turns a
//! reported [`PowerProfile`] into the [`ServePlan`] a pull is served by: batch
//! bounds, compression level, what is deferred, and the hint sent back (when to
//! come again, how long a long poll may wait).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::compress::Level;
use crate::config::{ConfigError, duration_secs};
use crate::power::{NetworkKind, PowerProfile, PowerState};

/// How pulls are served in one power state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeMode {
    /// Records per batch when the client asks for no bound.
    pub batch_records: usize,
    /// Bytes per batch (before compression) when the client asks for no bound.
    pub batch_bytes: usize,
    /// The compression level when the client names none.
    pub compression: Level,
    /// Changes to the low-priority tables are announced (table and id) but not
    /// sent; the client fetches them when its mode allows.
    pub defer_low_priority: bool,
    /// Records whose payload in a batch is larger than this many bytes are
    /// announced but not sent (0: never).
    pub defer_records_over_bytes: usize,
    /// The interval the server suggests between syncs, in seconds.
    #[serde(with = "duration_secs")]
    pub next_sync: Duration,
    /// The longest a long poll waits for a change, in seconds (0: answer at
    /// once, so a phone on battery is not woken by every change).
    #[serde(with = "duration_secs")]
    pub long_poll: Duration,
}

/// What a metered network changes in any mode.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MeteredMode {
    /// The compression level is at least this.
    pub min_compression: Level,
    /// Records larger than this are deferred even when the mode would send
    /// them (0: the mode decides).
    pub defer_records_over_bytes: usize,
}

impl Default for MeteredMode {
    fn default() -> MeteredMode {
        MeteredMode {
            min_compression: Level::Balanced,
            defer_records_over_bytes: 256 << 10,
        }
    }
}

/// Power-aware serving: a mode per power state. A mode given in part (say
/// `[sync.power.low]` with only `next_sync`) keeps that mode's defaults for
/// the rest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "RawPowerConfig")]
pub struct PowerConfig {
    /// Tables whose changes may wait for a better power state (for example
    /// analytics, thumbnails, history). Empty by default.
    pub low_priority_tables: Vec<String>,
    pub charging: ServeMode,
    pub normal: ServeMode,
    pub low: ServeMode,
    pub critical: ServeMode,
    pub metered: MeteredMode,
}

impl Default for PowerConfig {
    /// Charging: large batches, light compression, a sync every 5 minutes.
    /// Normal: the server's usual batches, a sync an hour, long polls of 5
    /// minutes. Low: fewer, larger sessions (every 3 hours), maximum
    /// compression, low-priority tables and records over 64 KiB deferred, no
    /// long polls. Critical: the same, every 6 hours, records over 16 KiB
    /// deferred.
    fn default() -> PowerConfig {
        PowerConfig {
            low_priority_tables: Vec::new(),
            charging: ServeMode {
                batch_records: 10_000,
                batch_bytes: 8 << 20,
                compression: Level::Fast,
                defer_low_priority: false,
                defer_records_over_bytes: 0,
                next_sync: Duration::from_secs(5 * 60),
                long_poll: Duration::from_secs(5 * 60),
            },
            normal: ServeMode {
                batch_records: 2_000,
                batch_bytes: 1 << 20,
                compression: Level::Balanced,
                defer_low_priority: false,
                defer_records_over_bytes: 0,
                next_sync: Duration::from_secs(60 * 60),
                long_poll: Duration::from_secs(5 * 60),
            },
            low: ServeMode {
                batch_records: 5_000,
                batch_bytes: 4 << 20,
                compression: Level::Max,
                defer_low_priority: true,
                defer_records_over_bytes: 64 << 10,
                next_sync: Duration::from_secs(3 * 60 * 60),
                long_poll: Duration::ZERO,
            },
            critical: ServeMode {
                batch_records: 5_000,
                batch_bytes: 4 << 20,
                compression: Level::Max,
                defer_low_priority: true,
                defer_records_over_bytes: 16 << 10,
                next_sync: Duration::from_secs(6 * 60 * 60),
                long_poll: Duration::ZERO,
            },
            metered: MeteredMode::default(),
        }
    }
}

/// [`PowerConfig`] as written: every mode in part.
#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawPowerConfig {
    low_priority_tables: Vec<String>,
    charging: PartialMode,
    normal: PartialMode,
    low: PartialMode,
    critical: PartialMode,
    metered: MeteredMode,
}

/// A [`ServeMode`] as written: what is left out keeps the mode's default.
#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct PartialMode {
    batch_records: Option<usize>,
    batch_bytes: Option<usize>,
    compression: Option<Level>,
    defer_low_priority: Option<bool>,
    defer_records_over_bytes: Option<usize>,
    next_sync: Option<u64>,
    long_poll: Option<u64>,
}

impl PartialMode {
    fn over(self, mode: ServeMode) -> ServeMode {
        ServeMode {
            batch_records: self.batch_records.unwrap_or(mode.batch_records),
            batch_bytes: self.batch_bytes.unwrap_or(mode.batch_bytes),
            compression: self.compression.unwrap_or(mode.compression),
            defer_low_priority: self.defer_low_priority.unwrap_or(mode.defer_low_priority),
            defer_records_over_bytes: self
                .defer_records_over_bytes
                .unwrap_or(mode.defer_records_over_bytes),
            next_sync: self.next_sync.map_or(mode.next_sync, Duration::from_secs),
            long_poll: self.long_poll.map_or(mode.long_poll, Duration::from_secs),
        }
    }
}

impl From<RawPowerConfig> for PowerConfig {
    fn from(raw: RawPowerConfig) -> PowerConfig {
        let defaults = PowerConfig::default();
        PowerConfig {
            low_priority_tables: raw.low_priority_tables,
            charging: raw.charging.over(defaults.charging),
            normal: raw.normal.over(defaults.normal),
            low: raw.low.over(defaults.low),
            critical: raw.critical.over(defaults.critical),
            metered: raw.metered,
        }
    }
}

/// How one pull is served, from its profile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServePlan {
    pub profile: PowerProfile,
    pub batch_records: usize,
    pub batch_bytes: usize,
    pub level: Level,
    pub defer_low_priority: bool,
    /// Records with a larger payload are deferred.
    pub defer_over_bytes: Option<usize>,
    pub next_sync: Duration,
    pub long_poll: Duration,
}

impl PowerConfig {
    /// The mode of a power state.
    pub fn mode(&self, power: PowerState) -> &ServeMode {
        match power {
            PowerState::Charging => &self.charging,
            PowerState::Normal => &self.normal,
            PowerState::Low => &self.low,
            PowerState::Critical => &self.critical,
        }
    }

    /// Whether changes to `table` may be deferred.
    pub fn is_low_priority(&self, table: &str) -> bool {
        self.low_priority_tables.iter().any(|name| name == table)
    }

    /// The plan for a pull from a phone in `profile`.
    pub fn plan(&self, profile: PowerProfile) -> ServePlan {
        let mode = self.mode(profile.power);
        let mut level = mode.compression;
        let mut defer_over = mode.defer_records_over_bytes;
        if profile.network == NetworkKind::Metered {
            level = level.max(self.metered.min_compression);
            let metered = self.metered.defer_records_over_bytes;
            if metered > 0 {
                defer_over = if defer_over == 0 {
                    metered
                } else {
                    defer_over.min(metered)
                };
            }
        }
        ServePlan {
            profile,
            batch_records: mode.batch_records,
            batch_bytes: mode.batch_bytes,
            level,
            defer_low_priority: mode.defer_low_priority,
            defer_over_bytes: (defer_over > 0).then_some(defer_over),
            next_sync: mode.next_sync,
            long_poll: mode.long_poll,
        }
    }

    /// Checks every mode against the server's batch ceilings.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Power`] naming the mode and setting.
    pub fn validate(&self, max_records: usize, max_bytes: usize) -> Result<(), ConfigError> {
        for power in PowerState::ALL {
            let mode = self.mode(power);
            let problem = |setting: &'static str, problem: String| ConfigError::Power {
                mode: power.name(),
                setting,
                problem,
            };
            if mode.batch_records == 0 || mode.batch_records > max_records {
                return Err(problem(
                    "batch_records",
                    format!(
                        "must be between 1 and sync.max_batch_records ({max_records}), got {}",
                        mode.batch_records
                    ),
                ));
            }
            if mode.batch_bytes < 1 << 10 || mode.batch_bytes > max_bytes {
                return Err(problem(
                    "batch_bytes",
                    format!(
                        "must be between 1024 and sync.max_batch_bytes ({max_bytes}), got {}",
                        mode.batch_bytes
                    ),
                ));
            }
            if mode.next_sync.is_zero() {
                return Err(problem("next_sync", "must be at least 1 second".to_owned()));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_spend_less_as_the_battery_drains() {
        let config = PowerConfig::default();
        config
            .validate(10_000, 8 << 20)
            .expect("defaults are valid");
        let plans: Vec<ServePlan> = PowerState::ALL
            .iter()
            .map(|power| config.plan(PowerProfile::new(*power, NetworkKind::Unmetered)))
            .collect();
        for pair in plans.windows(2) {
            assert!(pair[0].next_sync <= pair[1].next_sync);
            assert!(pair[0].level <= pair[1].level);
        }
        assert!(!plans[1].defer_low_priority && plans[2].defer_low_priority);
        assert_eq!(plans[3].long_poll, Duration::ZERO);
    }

    #[test]
    fn a_metered_network_raises_compression_and_defers_large_records() {
        let config = PowerConfig::default();
        let charging = config.plan(PowerProfile::new(
            PowerState::Charging,
            NetworkKind::Metered,
        ));
        assert_eq!(charging.level, Level::Balanced);
        assert_eq!(charging.defer_over_bytes, Some(256 << 10));
        // A mode that already defers smaller records keeps its own bound.
        let critical = config.plan(PowerProfile::new(
            PowerState::Critical,
            NetworkKind::Metered,
        ));
        assert_eq!(critical.level, Level::Max);
        assert_eq!(critical.defer_over_bytes, Some(16 << 10));
        let unmetered = config.plan(PowerProfile::new(
            PowerState::Charging,
            NetworkKind::Unmetered,
        ));
        assert_eq!(unmetered.defer_over_bytes, None);
    }

    #[test]
    fn out_of_range_modes_are_named() {
        let mut config = PowerConfig::default();
        config.low.batch_records = 50_000;
        let error = config.validate(10_000, 8 << 20).expect_err("too large");
        assert_eq!(
            error.to_string(),
            "`sync.power.low.batch_records` must be between 1 and sync.max_batch_records (10000), got 50000"
        );
    }
}

//! The client's side of power profiles: how each power state syncs.
//!
//! [`ClientPower`] holds one [`ModeBehaviour`] per
//! [`PowerState`](crate::power::PowerState): when to poll in the foreground
//! and in the background ([`Polling`]), how long writes wait to be coalesced
//! into one push, which tables' writes may wait, and when records the server
//! deferred are fetched. [`Client::autosync`](crate::client::Client::autosync)
//! runs them; the app reports the phone's state with
//! [`Client::set_power`](crate::client::Client::set_power) and
//! [`Client::set_foreground`](crate::client::Client::set_foreground).

use std::time::Duration;

use crate::power::{NetworkKind, PowerProfile, PowerState};

/// When a client pulls on its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Polling {
    /// Hold a pull open on the server for up to this long (a long poll): a
    /// change arrives as soon as it is made, and an idle radio is not woken
    /// until then. The server may cap the wait (its power mode's `long_poll`).
    LongPoll(Duration),
    /// Pull at this interval.
    Every(Duration),
    /// Pull at the interval the server suggests for the power state (its
    /// `next_sync` hint; an hour before the first answer).
    ServerHint,
    /// Never pull on a timer: only when the app asks, comes to the
    /// foreground, or writes are pushed.
    Never,
}

/// When records the server deferred (low-priority tables, large records)
/// are fetched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FetchDeferred {
    Never,
    /// Only on an unmetered network.
    Unmetered,
    Always,
}

/// How a client syncs in one power state. Every field is the app's to set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModeBehaviour {
    /// Polling while the app is in the foreground.
    pub foreground: Polling,
    /// Polling while it is in the background.
    pub background: Polling,
    /// Sync as soon as the app comes to the foreground.
    pub sync_on_foreground: bool,
    /// A write is pushed once no other write came for this long, so a burst of
    /// edits goes in one push (and consecutive edits of a record in one op).
    pub write_delay: Duration,
    /// ...but no later than this after the oldest waiting write.
    pub max_write_delay: Duration,
    /// Push at once when this many operations wait.
    pub flush_at_ops: usize,
    /// Push at once while the radio is still awake: when the last exchange
    /// with the server ended less than this long ago (keep it under the
    /// radio's tail: about 10 s on LTE). Zero disables it.
    pub ride_along: Duration,
    /// Push what waits as soon as the app leaves the foreground.
    pub flush_on_background: bool,
    /// Push writes to the low-priority tables; when false they wait in the
    /// queue for a better power state.
    pub push_low_priority: bool,
    /// When deferred records are fetched.
    pub fetch_deferred: FetchDeferred,
}

/// The client's power settings. [`ClientPower::default`] gives the modes
/// `docs/POWER.md` measures.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientPower {
    pub charging: ModeBehaviour,
    pub normal: ModeBehaviour,
    pub low: ModeBehaviour,
    pub critical: ModeBehaviour,
    /// Tables whose writes and deferred records may wait (name the same
    /// tables as the server's `sync.power.low_priority_tables`).
    pub low_priority_tables: Vec<String>,
}

impl Default for ClientPower {
    /// - charging: long polls in the foreground and background, writes pushed
    ///   after 1 s, deferred records fetched on unmetered networks;
    /// - normal: long polls in the foreground, the server's interval in the
    ///   background, writes pushed after a quiet minute (two at most), at
    ///   once while the radio is awake and when the app is left;
    /// - low: a pull every 5 minutes in the foreground, the server's interval
    ///   in the background, writes coalesced for a minute (10 minutes at
    ///   most), nothing deferred fetched;
    /// - critical: a pull every 15 minutes in the foreground and none in the
    ///   background, writes coalesced for 5 minutes (an hour at most), writes
    ///   to low-priority tables held back.
    fn default() -> ClientPower {
        ClientPower {
            charging: ModeBehaviour {
                foreground: Polling::LongPoll(Duration::from_secs(5 * 60)),
                background: Polling::LongPoll(Duration::from_secs(5 * 60)),
                sync_on_foreground: true,
                write_delay: Duration::from_secs(1),
                max_write_delay: Duration::from_secs(5),
                flush_at_ops: 100,
                ride_along: Duration::from_secs(8),
                flush_on_background: true,
                push_low_priority: true,
                fetch_deferred: FetchDeferred::Unmetered,
            },
            normal: ModeBehaviour {
                foreground: Polling::LongPoll(Duration::from_secs(5 * 60)),
                background: Polling::ServerHint,
                sync_on_foreground: true,
                write_delay: Duration::from_secs(60),
                max_write_delay: Duration::from_secs(2 * 60),
                flush_at_ops: 500,
                ride_along: Duration::from_secs(8),
                flush_on_background: true,
                push_low_priority: true,
                fetch_deferred: FetchDeferred::Unmetered,
            },
            low: ModeBehaviour {
                foreground: Polling::Every(Duration::from_secs(5 * 60)),
                background: Polling::ServerHint,
                sync_on_foreground: true,
                write_delay: Duration::from_secs(60),
                max_write_delay: Duration::from_secs(10 * 60),
                flush_at_ops: 1_000,
                ride_along: Duration::from_secs(8),
                flush_on_background: false,
                push_low_priority: true,
                fetch_deferred: FetchDeferred::Never,
            },
            critical: ModeBehaviour {
                foreground: Polling::Every(Duration::from_secs(15 * 60)),
                background: Polling::Never,
                sync_on_foreground: true,
                write_delay: Duration::from_secs(5 * 60),
                max_write_delay: Duration::from_secs(60 * 60),
                flush_at_ops: 1_000,
                ride_along: Duration::from_secs(8),
                flush_on_background: false,
                push_low_priority: false,
                fetch_deferred: FetchDeferred::Never,
            },
            low_priority_tables: Vec::new(),
        }
    }
}

impl ClientPower {
    /// A plain client, as a baseline: a pull every `interval` whatever the
    /// state, every write pushed at once, nothing deferred or held back.
    pub fn polling_every(interval: Duration) -> ClientPower {
        let plain = ModeBehaviour {
            foreground: Polling::Every(interval),
            background: Polling::Every(interval),
            sync_on_foreground: false,
            write_delay: Duration::ZERO,
            max_write_delay: Duration::ZERO,
            flush_at_ops: 1,
            ride_along: Duration::ZERO,
            flush_on_background: false,
            push_low_priority: true,
            fetch_deferred: FetchDeferred::Always,
        };
        ClientPower {
            charging: plain.clone(),
            normal: plain.clone(),
            low: plain.clone(),
            critical: plain,
            low_priority_tables: Vec::new(),
        }
    }

    /// The behaviour of a power state.
    pub fn mode(&self, power: PowerState) -> &ModeBehaviour {
        match power {
            PowerState::Charging => &self.charging,
            PowerState::Normal => &self.normal,
            PowerState::Low => &self.low,
            PowerState::Critical => &self.critical,
        }
    }

    /// The behaviour of a power state, to change it.
    pub fn mode_mut(&mut self, power: PowerState) -> &mut ModeBehaviour {
        match power {
            PowerState::Charging => &mut self.charging,
            PowerState::Normal => &mut self.normal,
            PowerState::Low => &mut self.low,
            PowerState::Critical => &mut self.critical,
        }
    }

    pub fn is_low_priority(&self, table: &str) -> bool {
        self.low_priority_tables.iter().any(|name| name == table)
    }

    /// Whether a push in `profile` sends writes to `table` now.
    pub fn pushes(&self, profile: PowerProfile, table: &str) -> bool {
        self.mode(profile.power).push_low_priority || !self.is_low_priority(table)
    }

    /// Whether a pull in `profile` fetches deferred records.
    pub fn fetches_deferred(&self, profile: PowerProfile) -> bool {
        match self.mode(profile.power).fetch_deferred {
            FetchDeferred::Never => false,
            FetchDeferred::Unmetered => profile.network == NetworkKind::Unmetered,
            FetchDeferred::Always => true,
        }
    }

    /// Checks every mode.
    ///
    /// # Errors
    ///
    /// A description of the first setting out of range.
    pub fn validate(&self) -> Result<(), &'static str> {
        for power in PowerState::ALL {
            let mode = self.mode(power);
            if mode.flush_at_ops == 0 {
                return Err("`power.<mode>.flush_at_ops` must be at least 1");
            }
            if mode.max_write_delay < mode.write_delay {
                return Err("`power.<mode>.max_write_delay` must not be below `write_delay`");
            }
            for polling in [mode.foreground, mode.background] {
                if matches!(polling, Polling::Every(interval) if interval.is_zero())
                    || matches!(polling, Polling::LongPoll(wait) if wait.is_zero())
                {
                    return Err("a `power.<mode>` polling interval must be above zero");
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deferred_records_wait_for_an_unmetered_network_by_default() {
        let power = ClientPower::default();
        power.validate().expect("defaults are valid");
        let on = |state, network| power.fetches_deferred(PowerProfile::new(state, network));
        assert!(on(PowerState::Charging, NetworkKind::Unmetered));
        assert!(!on(PowerState::Charging, NetworkKind::Metered));
        assert!(on(PowerState::Normal, NetworkKind::Unmetered));
        assert!(!on(PowerState::Low, NetworkKind::Unmetered));
        assert!(!on(PowerState::Critical, NetworkKind::Unmetered));
    }

    #[test]
    fn critical_holds_back_writes_to_low_priority_tables_only() {
        let power = ClientPower {
            low_priority_tables: vec!["events".to_owned()],
            ..ClientPower::default()
        };
        let critical = PowerProfile::new(PowerState::Critical, NetworkKind::Metered);
        assert!(!power.pushes(critical, "events"));
        assert!(power.pushes(critical, "todos"));
        let low = PowerProfile::new(PowerState::Low, NetworkKind::Metered);
        assert!(power.pushes(low, "events"));
    }

    #[test]
    fn a_zero_interval_is_refused() {
        let mut power = ClientPower::default();
        power.low.foreground = Polling::Every(Duration::ZERO);
        assert!(power.validate().is_err());
        let mut power = ClientPower::default();
        power.normal.max_write_delay = Duration::ZERO;
        assert!(power.validate().is_err());
    }
}

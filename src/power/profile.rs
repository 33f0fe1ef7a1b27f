//! What a phone reports of itself: its power state and the network it is on.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The phone's power state, as the app reports it (from the OS battery API).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum PowerState {
    /// Plugged in: energy is free, so sync eagerly and prefetch.
    Charging,
    /// On battery with charge to spare: the balanced default.
    #[default]
    Normal,
    /// Battery low (for example below 20 %, or the OS saver is on): fewer,
    /// larger sessions; low-priority data waits.
    Low,
    /// Battery nearly empty (for example below 5 %): essential data only.
    Critical,
}

impl PowerState {
    /// Every state, from most to least energy to spend.
    pub const ALL: [PowerState; 4] = [
        PowerState::Charging,
        PowerState::Normal,
        PowerState::Low,
        PowerState::Critical,
    ];

    pub fn name(self) -> &'static str {
        match self {
            PowerState::Charging => "charging",
            PowerState::Normal => "normal",
            PowerState::Low => "low",
            PowerState::Critical => "critical",
        }
    }
}

impl fmt::Display for PowerState {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.name())
    }
}

/// A power state or network kind name that is not one of ours.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} `{found}`; expected one of: {expected}")]
pub struct ParseProfileError {
    what: &'static str,
    found: String,
    expected: &'static str,
}

impl FromStr for PowerState {
    type Err = ParseProfileError;

    /// Accepts the names above, any case; `balanced` is `normal`.
    fn from_str(input: &str) -> Result<PowerState, ParseProfileError> {
        match input.trim().to_ascii_lowercase().as_str() {
            "charging" => Ok(PowerState::Charging),
            "normal" | "balanced" => Ok(PowerState::Normal),
            "low" => Ok(PowerState::Low),
            "critical" => Ok(PowerState::Critical),
            _ => Err(ParseProfileError {
                what: "power state",
                found: input.to_owned(),
                expected: "charging, normal, low, critical",
            }),
        }
    }
}

/// What the phone's data costs: from the OS's "metered connection" flag.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum NetworkKind {
    /// WiFi or an unlimited plan.
    #[default]
    Unmetered,
    /// Cellular data that costs money or counts against a cap.
    Metered,
}

impl NetworkKind {
    pub fn name(self) -> &'static str {
        match self {
            NetworkKind::Unmetered => "unmetered",
            NetworkKind::Metered => "metered",
        }
    }
}

impl fmt::Display for NetworkKind {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.name())
    }
}

impl FromStr for NetworkKind {
    type Err = ParseProfileError;

    fn from_str(input: &str) -> Result<NetworkKind, ParseProfileError> {
        match input.trim().to_ascii_lowercase().as_str() {
            "unmetered" => Ok(NetworkKind::Unmetered),
            "metered" => Ok(NetworkKind::Metered),
            _ => Err(ParseProfileError {
                what: "network kind",
                found: input.to_owned(),
                expected: "unmetered, metered",
            }),
        }
    }
}

/// A power state with a network kind: what a client reports on each request.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
pub struct PowerProfile {
    pub power: PowerState,
    pub network: NetworkKind,
}

impl PowerProfile {
    pub fn new(power: PowerState, network: NetworkKind) -> PowerProfile {
        PowerProfile { power, network }
    }

    /// Plugged in on an unmetered network: the one profile that prefetches.
    pub fn is_free(self) -> bool {
        self.power == PowerState::Charging && self.network == NetworkKind::Unmetered
    }

    /// The profile named on the wire: `power` and `network` as sent (either may
    /// be absent, meaning `normal` and `unmetered`).
    ///
    /// # Errors
    ///
    /// [`ParseProfileError`] for a name that is not a power state or network kind.
    pub fn from_wire(
        power: Option<&str>,
        network: Option<&str>,
    ) -> Result<PowerProfile, ParseProfileError> {
        Ok(PowerProfile {
            power: power.map(str::parse).transpose()?.unwrap_or_default(),
            network: network.map(str::parse).transpose()?.unwrap_or_default(),
        })
    }
}

impl PowerProfile {
    /// The names a request carries: `profile` (the power state) and `network`.
    pub fn to_wire(profile: Option<PowerProfile>) -> (Option<String>, Option<String>) {
        profile.map_or((None, None), |profile| {
            (
                Some(profile.power.name().to_owned()),
                Some(profile.network.name().to_owned()),
            )
        })
    }
}

impl fmt::Display for PowerProfile {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}/{}", self.power, self.network)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_are_refused() {
        for state in PowerState::ALL {
            assert_eq!(state.name().parse::<PowerState>(), Ok(state));
        }
        assert_eq!("Balanced".parse::<PowerState>(), Ok(PowerState::Normal));
        let error = "sleepy".parse::<PowerState>().expect_err("unknown");
        assert_eq!(
            error.to_string(),
            "unknown power state `sleepy`; expected one of: charging, normal, low, critical"
        );
        assert_eq!(
            PowerProfile::from_wire(Some("low"), Some("metered")),
            Ok(PowerProfile::new(PowerState::Low, NetworkKind::Metered))
        );
        assert_eq!(
            PowerProfile::from_wire(None, None),
            Ok(PowerProfile::default())
        );
        assert!(PowerProfile::from_wire(None, Some("cellular")).is_err());
    }

    #[test]
    fn only_charging_on_an_unmetered_network_is_free() {
        for state in PowerState::ALL {
            for network in [NetworkKind::Unmetered, NetworkKind::Metered] {
                let free = PowerProfile::new(state, network).is_free();
                assert_eq!(
                    free,
                    state == PowerState::Charging && network == NetworkKind::Unmetered
                );
            }
        }
    }
}

//! Battery-aware operation: power profiles, what the server serves each one,
//! and a model of what syncing costs a phone in energy.
//!
//! - [`PowerProfile`]: a [`PowerState`] (charging, normal, low, critical) with a
//!   [`NetworkKind`] (unmetered, metered). Clients report it with every pull and
//!   push.
//! - [`PowerConfig`] and [`ServePlan`] (`serve`): per power state, the server's
//!   batch bounds, compression level, deferral of low-priority tables and large
//!   records, and the hint it sends back (the interval before the next sync,
//!   the longest long poll). The client's side is
//!   [`ClientPower`](crate::client::ClientPower).
//! - `energy`: the phone's radio (LTE, 3G, WiFi: promotion, transfer, tail) and
//!   CPU as an energy model, after the AT&T ARO profiles; [`simulate`] runs a
//!   day of an app against an in-process server under each mode and radio.
//! - `chart`: the results as an SVG bar chart (`docs/POWER.md`).
//!
//! `docs/POWER.md` gives the model, its assumptions and the measured results.

pub mod chart;
pub mod energy;
mod profile;
mod serve;
pub mod simulate;

pub use profile::{NetworkKind, ParseProfileError, PowerProfile, PowerState};
pub use serve::{MeteredMode, PowerConfig, ServeMode, ServePlan};

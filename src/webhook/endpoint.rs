//! A registered webhook endpoint: where events go, which ones, and the
//! secrets deliveries are signed with. Kept as durable settings with the data.

use serde::{Deserialize, Serialize};

use crate::engine::{Event, EventKind, EventKinds};
use crate::webhook::sign::Secret;

/// The settings key prefix of endpoints (`webhook/<id>`, JSON).
pub(crate) const ENDPOINT_PREFIX: &str = "webhook/";
/// The settings key prefix of delivered positions (`webhook-cursor/<id>`).
pub(crate) const CURSOR_PREFIX: &str = "webhook-cursor/";

/// A signing secret and, once rotated out, when it stops being used.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyedSecret {
    pub secret: Secret,
    /// `None` for the current secret; a previous one signs too until then.
    pub expires_ms: Option<u64>,
}

/// A webhook endpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// `wh_` and 16 hexadecimal digits.
    pub id: String,
    pub url: String,
    /// The kinds of events it receives.
    pub events: Vec<EventKind>,
    /// Only events of these tables (events about no table always pass);
    /// empty: every table.
    #[serde(default)]
    pub tables: Vec<String>,
    #[serde(default)]
    pub description: String,
    /// The current secret first.
    pub secrets: Vec<KeyedSecret>,
    pub enabled: bool,
    /// Why it was disabled (410 Gone, failing too long, by a person).
    pub disabled_reason: Option<String>,
    pub created_ms: u64,
}

impl Endpoint {
    /// Whether `event` goes to this endpoint.
    pub fn wants(&self, event: &Event) -> bool {
        self.events.contains(&event.kind)
            && (self.tables.is_empty()
                || event
                    .table
                    .as_ref()
                    .is_none_or(|table| self.tables.contains(table)))
    }

    /// The kinds it asks for.
    pub fn kinds(&self) -> EventKinds {
        self.events.iter().copied().collect()
    }

    /// The secrets to sign with at `now_ms`: the current one and those
    /// rotated out less than the grace period ago.
    pub fn signing_secrets(&self, now_ms: u64) -> Vec<&Secret> {
        self.secrets
            .iter()
            .filter(|keyed| keyed.expires_ms.is_none_or(|expires| expires > now_ms))
            .map(|keyed| &keyed.secret)
            .collect()
    }

    /// A new random endpoint id.
    pub(crate) fn new_id() -> String {
        format!("wh_{:016x}", fastrand::u64(..))
    }
}

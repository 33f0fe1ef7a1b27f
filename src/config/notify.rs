//! The `[live]` and `[webhooks]` sections: how the server tells apps and
//! backends about changes.

use serde::{Deserialize, Serialize};

use super::{ConfigError, at_least};

/// The `[live]` section: long-poll pulls and change streams for connected
/// clients.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LiveConfig {
    /// The longest a long-poll pull waits for a change, in milliseconds
    /// (default 30,000); a longer `wait_ms` is cut to it.
    pub max_wait_ms: u64,
    /// How many change streams may be open at once; further subscribers are
    /// refused with 503 (default 1,000).
    pub max_subscribers: usize,
    /// How often an idle change stream sends a heartbeat, in milliseconds
    /// (default 15,000).
    pub heartbeat_ms: u64,
}

impl Default for LiveConfig {
    fn default() -> LiveConfig {
        LiveConfig {
            max_wait_ms: 30_000,
            max_subscribers: 1_000,
            heartbeat_ms: 15_000,
        }
    }
}

impl LiveConfig {
    /// Checks every setting.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming the first setting out of range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        at_least("live.max_wait_ms", self.max_wait_ms, 1)?;
        at_least("live.max_subscribers", self.max_subscribers as u64, 1)?;
        at_least("live.heartbeat_ms", self.heartbeat_ms, 100)
    }
}

/// The `[webhooks]` section: outgoing deliveries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookConfig {
    /// Networks (CIDR, such as `"10.1.0.0/16"` or `"127.0.0.1/32"`) webhook
    /// targets may resolve to although they are internal: loopback, private,
    /// link-local and other non-public addresses are refused otherwise
    /// (default none). A value that is not a network in CIDR form is refused
    /// when the configuration is read.
    pub allow_networks: Vec<ipnet::IpNet>,
    /// The most endpoints (default 100).
    pub max_endpoints: usize,
    /// How long one delivery may take, in milliseconds (default 10,000).
    pub timeout_ms: u64,
    /// The first retry's delay, in milliseconds; each later one doubles it, with
    /// jitter (default 1,000).
    pub retry_base_ms: u64,
    /// The longest delay between attempts, in milliseconds, also for a
    /// `Retry-After` the receiver asks for (default 3,600,000: one hour).
    pub retry_max_ms: u64,
    /// An endpoint that has failed every attempt for this long is disabled, in
    /// milliseconds (default 259,200,000: three days).
    pub disable_after_ms: u64,
    /// After a secret rotation, how long deliveries are also signed with the
    /// previous secret, in milliseconds (default 86,400,000: one day).
    pub rotation_grace_ms: u64,
    /// Delivery attempts kept per endpoint in its delivery log (default 1,000).
    pub delivery_log: usize,
}

impl Default for WebhookConfig {
    fn default() -> WebhookConfig {
        WebhookConfig {
            allow_networks: Vec::new(),
            max_endpoints: 100,
            timeout_ms: 10_000,
            retry_base_ms: 1_000,
            retry_max_ms: 3_600_000,
            disable_after_ms: 259_200_000,
            rotation_grace_ms: 86_400_000,
            delivery_log: 1_000,
        }
    }
}

impl WebhookConfig {
    /// Checks every setting.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming the first setting out of range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        at_least("webhooks.max_endpoints", self.max_endpoints as u64, 1)?;
        at_least("webhooks.timeout_ms", self.timeout_ms, 10)?;
        at_least("webhooks.retry_base_ms", self.retry_base_ms, 1)?;
        at_least(
            "webhooks.retry_max_ms",
            self.retry_max_ms,
            self.retry_base_ms,
        )?;
        at_least("webhooks.disable_after_ms", self.disable_after_ms, 1)?;
        at_least("webhooks.delivery_log", self.delivery_log as u64, 1)
    }
}

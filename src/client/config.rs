//! The client's settings, every bound with its default.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::client::error::ClientError;
use crate::client::power::ClientPower;
use crate::compress::Level;
use crate::engine::{SystemClock, WallClock};
use crate::power::PowerProfile;
use crate::sync::WireScope;

/// How the client retries a request that failed on the way (a transport error, a
/// damaged message). Retries resend the same bytes, so pushed operations keep
/// their ids and the server answers a retry from memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Tries per request, the first included (default 4; 1 disables retries).
    pub attempts: u32,
    /// The wait before the first retry, doubled after each (default 200 ms).
    pub initial_backoff: Duration,
    /// The longest wait between tries (default 5 s).
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> RetryPolicy {
        RetryPolicy {
            attempts: 4,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(5),
        }
    }
}

impl RetryPolicy {
    /// One try, no retries.
    pub fn never() -> RetryPolicy {
        RetryPolicy {
            attempts: 1,
            ..RetryPolicy::default()
        }
    }

    /// The wait before retry number `retry` (1 for the first retry).
    pub fn backoff(&self, retry: u32) -> Duration {
        let doubled = self.initial_backoff.saturating_mul(
            1_u32
                .checked_shl(retry.saturating_sub(1))
                .unwrap_or(u32::MAX),
        );
        doubled.min(self.max_backoff)
    }
}

/// A client's settings. [`ClientConfig::new`] gives the defaults below.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// The device's stable id: one sync session per device, and the writer of
    /// every local change (client-priority policies rank writers by it).
    pub device: String,
    /// The tables to replicate, each optionally filtered.
    pub tables: Vec<WireScope>,
    /// The primary key field of each table, by table name; `id` when absent.
    /// A local insert takes the record id from this field.
    pub primary_keys: BTreeMap<String, String>,
    /// Records per pull batch; the server's default when `None` (the default).
    pub batch_records: Option<u32>,
    /// Bytes per pull batch before compression; the server's default when `None`.
    pub batch_bytes: Option<u32>,
    /// The compression level asked for; the server's default when `None`.
    pub level: Option<Level>,
    /// The schema version the app was built against, sent with every pull.
    pub schema_version: Option<u32>,
    /// The phone's power state and network, reported with every pull and push
    /// so the server serves the power mode (`None`, the default: reported as
    /// nothing, served by the server's own bounds, synced as `normal`). Change
    /// it at run time with [`Client::set_power`](crate::client::Client::set_power).
    pub profile: Option<PowerProfile>,
    /// How each power state syncs under [`Client::autosync`](crate::client::Client::autosync).
    pub power: ClientPower,
    /// The most operations the offline write queue holds (default 10,000). A write
    /// beyond it is refused until a push drains the queue.
    pub max_queue: usize,
    /// Operations per push message (default 1,000, the server's default limit).
    pub push_ops: usize,
    /// The largest answer decoded, in bytes after decompression (default 64 MiB).
    pub max_message_bytes: usize,
    /// How long one exchange may take before it counts as failed (default 30 s).
    pub request_timeout: Duration,
    pub retry: RetryPolicy,
    /// Where local write stamps read wall time (default the system clock; tests
    /// pass a manual clock).
    pub wall: Arc<dyn WallClock>,
}

impl ClientConfig {
    /// The defaults for `device` replicating `tables`.
    pub fn new(device: impl Into<String>, tables: Vec<WireScope>) -> ClientConfig {
        ClientConfig {
            device: device.into(),
            tables,
            primary_keys: BTreeMap::new(),
            batch_records: None,
            batch_bytes: None,
            level: None,
            schema_version: None,
            profile: None,
            power: ClientPower::default(),
            max_queue: 10_000,
            push_ops: 1_000,
            max_message_bytes: 64 << 20,
            request_timeout: Duration::from_secs(30),
            retry: RetryPolicy::default(),
            wall: Arc::new(SystemClock),
        }
    }

    /// Names the primary key field of `table`.
    pub fn primary_key(
        mut self,
        table: impl Into<String>,
        field: impl Into<String>,
    ) -> ClientConfig {
        self.primary_keys.insert(table.into(), field.into());
        self
    }

    /// The primary key field of `table`.
    pub fn key_of(&self, table: &str) -> &str {
        self.primary_keys.get(table).map_or("id", String::as_str)
    }

    /// Whether the client replicates `table`.
    pub fn replicates(&self, table: &str) -> bool {
        self.tables.iter().any(|scope| scope.table == table)
    }

    /// Checks every setting.
    ///
    /// # Errors
    ///
    /// [`ClientError::Config`] naming the first setting out of range.
    pub fn validate(&self) -> Result<(), ClientError> {
        let problem = if self.device.is_empty() {
            "`device` is empty; give the device a stable id"
        } else if self.tables.is_empty() {
            "`tables` is empty; name the tables to replicate"
        } else if self.max_queue == 0 {
            "`max_queue` must be at least 1"
        } else if self.push_ops == 0 {
            "`push_ops` must be at least 1"
        } else if self.retry.attempts == 0 {
            "`retry.attempts` must be at least 1"
        } else if self.max_message_bytes < 1 << 16 {
            "`max_message_bytes` must be at least 64 KiB"
        } else if let Err(problem) = self.power.validate() {
            problem
        } else {
            return Ok(());
        };
        Err(ClientError::Config { problem })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_ceiling() {
        let retry = RetryPolicy::default();
        assert_eq!(retry.backoff(1), Duration::from_millis(200));
        assert_eq!(retry.backoff(2), Duration::from_millis(400));
        assert_eq!(retry.backoff(3), Duration::from_millis(800));
        assert_eq!(retry.backoff(40), Duration::from_secs(5));
    }

    #[test]
    fn a_config_without_device_or_tables_is_refused() {
        assert!(
            ClientConfig::new("", vec![WireScope::all("t")])
                .validate()
                .is_err()
        );
        assert!(ClientConfig::new("phone", Vec::new()).validate().is_err());
        assert!(
            ClientConfig::new("phone", vec![WireScope::all("t")])
                .validate()
                .is_ok()
        );
    }
}

//! Configuration: every bound the engine enforces, with its default.
//!
//! Raw settings are plain serde structs; [`EngineConfig::validate`] checks them
//! before an engine starts, so a bad value is refused with a message naming it.

use std::time::Duration;

use serde::{Deserialize, Serialize};

mod cluster;
mod load;
mod notify;
mod server;
mod storage;

pub use cluster::{ClusterAck, ClusterConfig};
pub use load::{ConfigSource, LoadError};
pub use notify::{LiveConfig, WebhookConfig};
pub use server::{
    AccessRule, AuthConfig, Config, DEV_ADMIN_KEY, DEV_JWT_SECRET, LimitsConfig, ServerConfig,
};
pub use storage::{FsyncPolicy, StorageConfig};

/// How long the change log keeps entries. A client whose cursor is older than the
/// log's horizon gets a compacted catch-up instead of the individual changes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionPolicy {
    /// At most this many entries (default 1,000,000).
    pub max_entries: usize,
    /// At most this many bytes of change data (default 256 MiB).
    pub max_bytes: usize,
    /// Entries older than this are dropped (default 30 days).
    #[serde(with = "duration_secs")]
    pub max_age: Duration,
    /// Under memory pressure the log is cut down to this many entries, never
    /// further (default 10,000).
    pub min_entries: usize,
}

impl Default for RetentionPolicy {
    fn default() -> RetentionPolicy {
        RetentionPolicy {
            max_entries: 1_000_000,
            max_bytes: 256 << 20,
            max_age: Duration::from_secs(30 * 24 * 3600),
            min_entries: 10_000,
        }
    }
}

/// The engine's settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineConfig {
    /// The most memory the engine's data may use, in bytes (default 1 GiB). Writes
    /// that would pass it are refused; reads and deletes keep working.
    pub max_memory_bytes: usize,
    /// How many loaded documents the hot-document cache keeps (default 64; a
    /// loaded document of a small record costs about 15 KB).
    pub doc_cache_docs: usize,
    /// How far ahead of the server a writer's clock may be, in ms (default 60,000).
    pub max_clock_skew_ms: u64,
    /// The largest record a write may produce, in bytes of its document (default 1 MiB).
    pub max_record_bytes: usize,
    /// The most rows one query may return (default 10,000).
    pub max_query_rows: usize,
    /// How many storage chunks a record keeps before they are compacted into one
    /// saved document (default 8).
    pub compact_after_chunks: usize,
    pub retention: RetentionPolicy,
    /// How long conflict records are kept (default 100,000 records, 30 days).
    /// Open manual conflicts are kept until resolved, whatever their age.
    pub conflicts: KeepPolicy,
    /// How long events are kept for webhook delivery and replay (default
    /// 100,000 events, 7 days). An endpoint further behind loses the oldest.
    pub events: KeepPolicy,
}

/// A bound on a kept history: the oldest entries go once there are more than
/// `max_entries` or they are older than `max_age_ms`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KeepPolicy {
    pub max_entries: usize,
    pub max_age_ms: u64,
}

impl KeepPolicy {
    const DAY_MS: u64 = 86_400_000;

    fn conflicts() -> KeepPolicy {
        KeepPolicy {
            max_entries: 100_000,
            max_age_ms: 30 * KeepPolicy::DAY_MS,
        }
    }

    fn events() -> KeepPolicy {
        KeepPolicy {
            max_entries: 100_000,
            max_age_ms: 7 * KeepPolicy::DAY_MS,
        }
    }
}

impl Default for KeepPolicy {
    fn default() -> KeepPolicy {
        KeepPolicy::events()
    }
}

impl Default for EngineConfig {
    fn default() -> EngineConfig {
        EngineConfig {
            max_memory_bytes: 1 << 30,
            doc_cache_docs: 64,
            max_clock_skew_ms: mobilesyncdb_crdt::DEFAULT_MAX_SKEW_MS,
            max_record_bytes: 1 << 20,
            max_query_rows: 10_000,
            compact_after_chunks: 8,
            retention: RetentionPolicy::default(),
            conflicts: KeepPolicy::conflicts(),
            events: KeepPolicy::events(),
        }
    }
}

/// The sync protocol's settings: sessions, batch bounds, message sizes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SyncConfig {
    /// The most sync sessions kept (default 100,000). When full, the session
    /// contacted longest ago is dropped: its device only loses the memory of its
    /// recent operation ids, since the client holds its own cursor.
    pub max_sessions: usize,
    /// A session not contacted for this long is dropped (default 30 days).
    #[serde(with = "duration_secs")]
    pub session_idle: Duration,
    /// Records per pull batch when the client asks for no bound (default 2,000).
    pub batch_records: usize,
    /// The most records a client may ask for in one batch (default 10,000).
    pub max_batch_records: usize,
    /// Bytes per batch (payloads and rows before compression) when the client asks
    /// for no bound (default 1 MiB).
    pub batch_bytes: usize,
    /// The most bytes a client may ask for in one batch (default 8 MiB).
    pub max_batch_bytes: usize,
    /// The largest message accepted or decoded, in bytes, after decompression
    /// (default 64 MiB).
    pub max_message_bytes: usize,
    /// The most operations in one push (default 1,000).
    pub max_push_ops: usize,
    /// How many operation ids each session remembers for idempotent retries
    /// (default 4,096).
    pub remembered_ops: usize,
    /// The compression level of batches when the client names none and states
    /// no power profile (default balanced).
    pub compression: crate::compress::Level,
    /// What each power profile is served (`[sync.power]`; see `docs/POWER.md`).
    pub power: crate::power::PowerConfig,
}

impl Default for SyncConfig {
    fn default() -> SyncConfig {
        SyncConfig {
            max_sessions: 100_000,
            session_idle: Duration::from_secs(30 * 24 * 3600),
            batch_records: 2_000,
            max_batch_records: 10_000,
            batch_bytes: 1 << 20,
            max_batch_bytes: 8 << 20,
            max_message_bytes: 64 << 20,
            max_push_ops: 1_000,
            remembered_ops: 4_096,
            compression: crate::compress::Level::Balanced,
            power: crate::power::PowerConfig::default(),
        }
    }
}

impl SyncConfig {
    /// Checks every setting.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming the first setting out of range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        at_least("sync.max_sessions", self.max_sessions as u64, 1)?;
        at_least("sync.batch_records", self.batch_records as u64, 1)?;
        at_least("sync.max_batch_records", self.max_batch_records as u64, 1)?;
        at_least("sync.batch_bytes", self.batch_bytes as u64, 1 << 10)?;
        at_least("sync.max_batch_bytes", self.max_batch_bytes as u64, 1 << 10)?;
        at_least(
            "sync.max_message_bytes",
            self.max_message_bytes as u64,
            1 << 16,
        )?;
        at_least("sync.max_push_ops", self.max_push_ops as u64, 1)?;
        self.power
            .validate(self.max_batch_records, self.max_batch_bytes)?;
        Ok(())
    }
}

/// A setting out of its range.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("`{setting}` must be at least {minimum}, got {value}")]
    TooSmall {
        setting: &'static str,
        minimum: u64,
        value: u64,
    },
    #[error("`retention.min_entries` ({min}) must not exceed `retention.max_entries` ({max})")]
    RetentionFloorAboveCeiling { min: usize, max: usize },
    #[error("`auth.jwt_secret` must be at least 32 bytes, got {length}")]
    WeakSecret { length: usize },
    #[error("every key in `auth.admin_keys` must be at least 16 bytes")]
    WeakAdminKey,
    #[error("`{setting}` must not be empty")]
    Empty { setting: &'static str },
    #[error("`{setting}`: {reason}")]
    Invalid { setting: String, reason: String },
    #[error(
        "the development admin key or token secret would be exposed on {listen}: set `auth.admin_keys` and `auth.jwt_secret`, or listen on a loopback address"
    )]
    DevelopmentSecretsExposed { listen: std::net::SocketAddr },
    #[error("`sync.power.{mode}.{setting}` {problem}")]
    Power {
        mode: &'static str,
        setting: &'static str,
        problem: String,
    },
}

impl EngineConfig {
    /// Checks every setting.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming the first setting out of range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        at_least("max_memory_bytes", self.max_memory_bytes as u64, 1 << 20)?;
        at_least("max_record_bytes", self.max_record_bytes as u64, 1 << 10)?;
        at_least("max_query_rows", self.max_query_rows as u64, 1)?;
        at_least("compact_after_chunks", self.compact_after_chunks as u64, 1)?;
        at_least(
            "conflicts.max_entries",
            self.conflicts.max_entries as u64,
            1,
        )?;
        at_least("events.max_entries", self.events.max_entries as u64, 1)?;
        at_least(
            "retention.max_entries",
            self.retention.max_entries as u64,
            1,
        )?;
        let retention = &self.retention;
        if retention.min_entries > retention.max_entries {
            return Err(ConfigError::RetentionFloorAboveCeiling {
                min: retention.min_entries,
                max: retention.max_entries,
            });
        }
        Ok(())
    }
}

pub(crate) fn at_least(setting: &'static str, value: u64, minimum: u64) -> Result<(), ConfigError> {
    if value < minimum {
        return Err(ConfigError::TooSmall {
            setting,
            minimum,
            value,
        });
    }
    Ok(())
}

pub(crate) mod duration_secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(duration.as_secs())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        u64::deserialize(deserializer).map(Duration::from_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert_eq!(EngineConfig::default().validate(), Ok(()));
    }

    #[test]
    fn out_of_range_settings_are_named() {
        let config = EngineConfig {
            max_memory_bytes: 10,
            ..EngineConfig::default()
        };
        let error = config.validate().expect_err("too small");
        assert_eq!(
            error.to_string(),
            "`max_memory_bytes` must be at least 1048576, got 10"
        );
        let mut config = EngineConfig::default();
        config.retention.min_entries = config.retention.max_entries + 1;
        assert!(matches!(
            config.validate(),
            Err(ConfigError::RetentionFloorAboveCeiling { .. })
        ));
    }

    #[test]
    fn partial_settings_fill_in_defaults() {
        let config: EngineConfig =
            serde_json::from_str(r#"{"doc_cache_docs": 8, "retention": {"max_age": 60}}"#)
                .expect("valid");
        assert_eq!(config.doc_cache_docs, 8);
        assert_eq!(config.retention.max_age, Duration::from_secs(60));
        assert_eq!(config.retention.min_entries, 10_000);
        assert!(serde_json::from_str::<EngineConfig>(r#"{"doc_cache": 8}"#).is_err());
    }
}

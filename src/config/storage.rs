//! Where and how the server keeps its data on disk.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{ConfigError, at_least};

/// When the journal calls `fsync`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FsyncPolicy {
    /// Before a write is acknowledged: acknowledged means on disk. Writes
    /// arriving together share one `fsync` (group commit).
    #[default]
    Always,
    /// At most every `fsync_interval_ms`: a write is acknowledged once the
    /// operating system has it, so a crash of the process loses nothing, and a
    /// crash of the machine loses at most the last interval of acknowledged writes.
    Interval,
    /// Never: the operating system writes back when it likes. A crash of the
    /// process loses nothing; a crash of the machine may lose any recent write.
    Never,
}

impl std::fmt::Display for FsyncPolicy {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(match self {
            FsyncPolicy::Always => "always",
            FsyncPolicy::Interval => "interval",
            FsyncPolicy::Never => "never",
        })
    }
}

/// The `[storage]` section.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// The data directory. Without one (the default) nothing touches disk and
    /// everything is lost when the process ends.
    pub data_dir: Option<PathBuf>,
    /// When the journal calls `fsync` (default `always`).
    pub fsync: FsyncPolicy,
    /// Under `interval`, the longest acknowledged writes wait for `fsync`; under
    /// every policy, how often frames nobody waits for are flushed (default 100).
    pub fsync_interval_ms: u64,
    /// A snapshot is taken once this many journal bytes were written since the
    /// last one (default 64 MiB); restart time is bounded by it.
    pub snapshot_after_bytes: u64,
    /// After a full disk or a failed `fsync`, how often writing is retried
    /// (default 1,000 ms).
    pub retry_interval_ms: u64,
}

impl Default for StorageConfig {
    fn default() -> StorageConfig {
        StorageConfig {
            data_dir: None,
            fsync: FsyncPolicy::Always,
            fsync_interval_ms: 100,
            snapshot_after_bytes: 64 << 20,
            retry_interval_ms: 1_000,
        }
    }
}

impl StorageConfig {
    /// Checks every setting.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming the first setting out of range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        at_least("storage.fsync_interval_ms", self.fsync_interval_ms, 1)?;
        at_least(
            "storage.snapshot_after_bytes",
            self.snapshot_after_bytes,
            1 << 16,
        )?;
        at_least("storage.retry_interval_ms", self.retry_interval_ms, 1)?;
        if self
            .data_dir
            .as_ref()
            .is_some_and(|dir| dir.as_os_str().is_empty())
        {
            return Err(ConfigError::Empty {
                setting: "storage.data_dir",
            });
        }
        Ok(())
    }
}

//! Durability: the data directory, its journal and its snapshots.
//!
//! Memory-first, like Redis: the engine keeps everything in memory and serves
//! from there. Without a data directory nothing touches disk. With one, every
//! write appends a checksummed frame to the journal (an append-only log of
//! segment files) before it is acknowledged, as the fsync policy says; a
//! snapshot of the whole state is written now and then, after which the journal
//! segments it covers are deleted, so a restart reads one snapshot and a bounded
//! journal tail.
//!
//! - [`frame`]: the frame format every file is made of (magic, length, CRC-32).
//! - [`disk`]: the file operations behind a trait ([`Disk`]), the real one
//!   ([`OsDisk`]) and one that injects faults ([`FaultyDisk`]).
//! - [`Journal`]: appends, group commit, the fsync policy, failure and retry.
//! - `entry`: what frames hold (MessagePack).
//! - [`Store`]: opening a directory (recovery), snapshots, compaction, and the
//!   offline [`check`] and [`repair`].
//!
//! This module is the only code that knows files.

use std::path::{Path, PathBuf};

pub mod disk;
pub(crate) mod entry;
pub mod frame;
mod journal;
mod recover;
mod store;

pub use crate::config::{FsyncPolicy, StorageConfig};
pub use disk::{Disk, Faults, FaultyDisk, LogFile, OsDisk};
pub use journal::{Journal, JournalStats};
pub use recover::{CheckReport, Damage, FileReport, check, repair};
pub use store::{Opened, RecoveryReport, SnapshotInfo, StorageStatus, Store, StoreOptions};

/// Why storage failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// Writes are refused for now: the disk is full or `fsync` failed. Reads go
    /// on, and writes resume by themselves once a retry succeeds.
    #[error("storage refuses writes: {reason}")]
    Unavailable { reason: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Damage that recovery must not cut by itself: it would lose acknowledged
    /// writes.
    #[error(
        "{path}: damaged at byte {offset} ({damage}){after}; the server will not start on it. Run `mobilesyncdb check --data-dir {dir}` for a report and `mobilesyncdb repair --data-dir {dir}` to cut the data at the damage (moving what follows aside)",
        dir = .dir.display(),
        path = .path.display(),
    )]
    Corrupt {
        dir: PathBuf,
        path: PathBuf,
        offset: u64,
        damage: String,
        /// What follows the damage, said as a sentence fragment.
        after: String,
    },
    /// The files are intact but say something impossible (a sequence gap, an
    /// unknown table, a missing segment).
    #[error("{path}: {problem}", path = .path.display())]
    Inconsistent { path: PathBuf, problem: String },
    /// The store could not be set up (a setting, a policy).
    #[error("{0}")]
    Setup(String),
    #[error(
        "data directory {dir} is in use by another process (its LOCK file is held)",
        dir = .dir.display()
    )]
    Locked { dir: PathBuf },
}

impl StorageError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> StorageError {
        StorageError::Io {
            path: path.to_owned(),
            source,
        }
    }

    pub(crate) fn inconsistent(path: &Path, problem: impl Into<String>) -> StorageError {
        StorageError::Inconsistent {
            path: path.to_owned(),
            problem: problem.into(),
        }
    }
}

//! The change log: every accepted change in sequence order, within a retention.
//!
//! Sequence numbers are dense and database-wide, so the log is a ring of entries
//! indexed by `seq - first_seq`: finding where a cursor starts is arithmetic, and
//! listing what changed after it costs only what changed. Entries share their
//! change bytes with the record they belong to (reference-counted chunks), so the
//! log adds a few dozen bytes per change, not a second copy of the data.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use mobilesyncdb_crdt::{ClientId, Stamp};

use crate::config::RetentionPolicy;

/// Bytes of one change (or of a saved document), shared between a record and the
/// log.
pub(crate) type Chunk = Arc<[u8]>;

/// One logged change.
#[derive(Clone, Debug)]
pub(crate) struct LogEntry {
    pub(crate) seq: u64,
    pub(crate) table: u16,
    pub(crate) slot: u32,
    pub(crate) stamp: Stamp,
    pub(crate) origin: ClientId,
    pub(crate) change: Chunk,
}

/// The cursor is older than what the log still holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "cursor {cursor} is older than the change log's horizon {horizon}; fetch a catch-up of the records changed since instead"
)]
pub struct CursorTooOld {
    pub cursor: u64,
    pub horizon: u64,
}

#[derive(Debug, Default)]
pub(crate) struct ChangeLog {
    entries: VecDeque<LogEntry>,
    /// Change bytes held by the entries (shared bytes counted in full).
    bytes: usize,
    /// The seq of the latest change ever logged (0 before the first).
    latest_seq: u64,
}

/// The bookkeeping of one entry, beyond its change bytes.
pub(crate) const ENTRY_OVERHEAD_BYTES: usize = std::mem::size_of::<LogEntry>();

impl ChangeLog {
    pub(crate) fn latest_seq(&self) -> u64 {
        self.latest_seq
    }

    /// The next sequence number to assign.
    pub(crate) fn next_seq(&self) -> u64 {
        self.latest_seq + 1
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// A cursor at or after this can be served change by change.
    pub(crate) fn horizon(&self) -> u64 {
        self.entries
            .front()
            .map_or(self.latest_seq, |first| first.seq - 1)
    }

    /// Makes an empty log continue after `latest_seq` (a restart: the entries
    /// before it are not kept).
    pub(crate) fn resume_at(&mut self, latest_seq: u64) {
        debug_assert!(self.entries.is_empty(), "only an empty log resumes");
        self.latest_seq = latest_seq;
    }

    /// Every entry, oldest first.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &LogEntry> {
        self.entries.iter()
    }

    /// Appends an entry; its seq must be [`ChangeLog::next_seq`].
    pub(crate) fn push(&mut self, entry: LogEntry) {
        debug_assert_eq!(entry.seq, self.next_seq(), "sequence numbers are dense");
        self.latest_seq = entry.seq;
        self.bytes += entry.change.len();
        self.entries.push_back(entry);
    }

    /// The entries after `cursor`, at most `limit` of them.
    pub(crate) fn after(
        &self,
        cursor: u64,
        limit: usize,
    ) -> Result<impl Iterator<Item = &LogEntry>, CursorTooOld> {
        let horizon = self.horizon();
        if cursor < horizon {
            return Err(CursorTooOld { cursor, horizon });
        }
        let skip = usize::try_from(cursor - horizon).unwrap_or(usize::MAX);
        Ok(self.entries.iter().skip(skip).take(limit))
    }

    /// Drops the oldest entries until the log fits `retention`, and returns them so
    /// that the caller can release their bytes.
    pub(crate) fn trim(&mut self, retention: &RetentionPolicy, now: Stamp) -> Vec<LogEntry> {
        let oldest_kept_ms = now
            .physical_ms
            .saturating_sub(duration_ms(retention.max_age));
        self.trim_while(|log, first| {
            log.entries.len() > retention.max_entries
                || log.bytes > retention.max_bytes
                || first.stamp.physical_ms < oldest_kept_ms
        })
    }

    /// Drops the oldest entries down to `keep` entries (memory pressure).
    pub(crate) fn trim_to(&mut self, keep: usize) -> Vec<LogEntry> {
        self.trim_while(|log, _| log.entries.len() > keep)
    }

    fn trim_while(
        &mut self,
        mut too_much: impl FnMut(&ChangeLog, &LogEntry) -> bool,
    ) -> Vec<LogEntry> {
        let mut dropped = Vec::new();
        while let Some(first) = self.entries.front() {
            if !too_much(self, first) {
                break;
            }
            if let Some(entry) = self.entries.pop_front() {
                self.bytes -= entry.change.len();
                dropped.push(entry);
            }
        }
        dropped
    }
}

fn duration_ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(seq: u64, at_ms: u64, bytes: usize) -> LogEntry {
        LogEntry {
            seq,
            table: 0,
            slot: seq as u32,
            stamp: Stamp::at(at_ms),
            origin: ClientId::from("test"),
            change: vec![0u8; bytes].into(),
        }
    }

    fn log_of(count: u64) -> ChangeLog {
        let mut log = ChangeLog::default();
        for seq in 1..=count {
            log.push(entry(seq, seq * 1_000, 10));
        }
        log
    }

    fn seqs(log: &ChangeLog, cursor: u64, limit: usize) -> Vec<u64> {
        log.after(cursor, limit)
            .expect("within horizon")
            .map(|entry| entry.seq)
            .collect()
    }

    #[test]
    fn lists_what_changed_after_a_cursor() {
        let log = log_of(10);
        assert_eq!(seqs(&log, 7, 100), vec![8, 9, 10]);
        assert_eq!(seqs(&log, 0, 2), vec![1, 2]);
        assert!(seqs(&log, 10, 5).is_empty());
        assert!(seqs(&log, 99, 5).is_empty());
    }

    #[test]
    fn retention_by_count_moves_the_horizon() {
        let mut log = log_of(10);
        let retention = RetentionPolicy {
            max_entries: 4,
            ..RetentionPolicy::default()
        };
        let dropped = log.trim(&retention, Stamp::at(10_000));
        assert_eq!(dropped.len(), 6);
        assert_eq!(log.horizon(), 6);
        assert_eq!(seqs(&log, 6, 100), vec![7, 8, 9, 10]);
        assert_eq!(
            log.after(5, 100).err(),
            Some(CursorTooOld {
                cursor: 5,
                horizon: 6
            })
        );
    }

    #[test]
    fn retention_by_bytes_and_age() {
        let mut log = log_of(10);
        let by_bytes = RetentionPolicy {
            max_bytes: 35,
            ..RetentionPolicy::default()
        };
        log.trim(&by_bytes, Stamp::at(10_000));
        assert_eq!(log.len(), 3);
        assert_eq!(log.bytes(), 30);
        let mut log = log_of(10);
        let by_age = RetentionPolicy {
            max_age: Duration::from_secs(3),
            ..RetentionPolicy::default()
        };
        log.trim(&by_age, Stamp::at(10_000));
        assert_eq!(seqs(&log, log.horizon(), 100), vec![7, 8, 9, 10]);
    }

    #[test]
    fn an_emptied_log_still_serves_the_latest_cursor() {
        let mut log = log_of(3);
        log.trim_to(0);
        assert_eq!(log.horizon(), 3);
        assert!(seqs(&log, 3, 10).is_empty());
        assert!(log.after(2, 10).is_err());
        log.push(entry(4, 5_000, 1));
        assert_eq!(seqs(&log, 3, 10), vec![4]);
    }
}

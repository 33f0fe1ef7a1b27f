//! Sync sessions: what the server remembers about each device.
//!
//! The client holds its own cursor (it is the one that knows what it stored), so a
//! session is a cache the server can lose without losing data: it records the
//! acknowledged cursor, schema version and power profile for operators and later
//! decisions, and the recent operation ids that make retried patches idempotent.
//! Sessions are bounded in number (the least recently seen goes first) and expire
//! when idle.

use std::num::NonZeroUsize;
use std::time::Duration;

use lru::LruCache;
use serde::Serialize;
use tracing::{debug, info};

use crate::sync::message::OpResult;

/// A session as a snapshot keeps it: its state and its remembered operation
/// results, oldest first.
pub(crate) type SavedSession = (SessionInfo, Vec<OpResult>);

/// What the server knows of one device.
#[derive(Debug)]
pub(crate) struct SyncSession {
    pub(crate) info: SessionInfo,
    /// Results of recent operations by id, for idempotent retries.
    ops: LruCache<String, OpResult>,
}

/// A session as operators see it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct SessionInfo {
    pub device: String,
    /// The cursor the device last said it stored.
    pub acked_cursor: u64,
    /// The end of the last batch served, and its checksum.
    pub served_cursor: u64,
    pub served_checksum: u32,
    pub schema_version: Option<u32>,
    /// The power profile last reported, as `power/network` (`low/metered`).
    pub profile: Option<String>,
    pub created_ms: u64,
    pub last_contact_ms: u64,
    pub pulls: u64,
    pub pushes: u64,
}

/// The sessions of every device, bounded and expiring.
#[derive(Debug)]
pub(crate) struct Sessions {
    sessions: LruCache<String, SyncSession>,
    idle: Duration,
    remembered_ops: NonZeroUsize,
}

impl Sessions {
    pub(crate) fn new(max_sessions: usize, idle: Duration, remembered_ops: usize) -> Sessions {
        Sessions {
            sessions: LruCache::new(NonZeroUsize::new(max_sessions).unwrap_or(NonZeroUsize::MIN)),
            idle,
            remembered_ops: NonZeroUsize::new(remembered_ops).unwrap_or(NonZeroUsize::MIN),
        }
    }

    /// The device's session, created if needed, with its contact time updated.
    pub(crate) fn touch(&mut self, device: &str, now_ms: u64) -> &mut SyncSession {
        self.expire(now_ms);
        if !self.sessions.contains(device) {
            self.insert(SessionInfo {
                device: device.to_owned(),
                acked_cursor: 0,
                served_cursor: 0,
                served_checksum: 0,
                schema_version: None,
                profile: None,
                created_ms: now_ms,
                last_contact_ms: now_ms,
                pulls: 0,
                pushes: 0,
            });
            debug!(device, "sync session created");
        }
        let session = self
            .sessions
            .get_mut(device)
            .expect("the session was just ensured");
        session.info.last_contact_ms = now_ms;
        session
    }

    /// Adds a session with nothing remembered yet, dropping the least recently
    /// seen one when full.
    fn insert(&mut self, info: SessionInfo) {
        let session = SyncSession {
            ops: LruCache::new(self.remembered_ops),
            info,
        };
        let device = session.info.device.clone();
        if let Some((evicted, _)) = self.sessions.push(device, session) {
            info!(device = %evicted, "session limit reached: dropped the least recently seen session");
        }
    }

    /// Drops sessions idle for longer than the expiry.
    pub(crate) fn expire(&mut self, now_ms: u64) {
        let idle_ms = u64::try_from(self.idle.as_millis()).unwrap_or(u64::MAX);
        while let Some((_, oldest)) = self.sessions.peek_lru() {
            if now_ms.saturating_sub(oldest.info.last_contact_ms) <= idle_ms {
                break;
            }
            if let Some((device, _)) = self.sessions.pop_lru() {
                debug!(device, "idle sync session expired");
            }
        }
    }

    pub(crate) fn list(&self) -> Vec<SessionInfo> {
        self.sessions
            .iter()
            .map(|(_, session)| session.info.clone())
            .collect()
    }

    /// A device's session, without counting as contact.
    pub(crate) fn get(&self, device: &str) -> Option<SessionInfo> {
        self.sessions
            .peek(device)
            .map(|session| session.info.clone())
    }

    /// Forgets a device's session; true when there was one.
    pub(crate) fn end(&mut self, device: &str) -> bool {
        self.sessions.pop(device).is_some()
    }

    pub(crate) fn len(&self) -> usize {
        self.sessions.len()
    }

    /// Every session with its remembered operations, least recently seen
    /// first (the order that rebuilds the same LRU), for a snapshot.
    pub(crate) fn export(&self) -> Vec<SavedSession> {
        self.sessions
            .iter()
            .rev()
            .map(|(_, session)| {
                let ops = session.ops.iter().rev().map(|(_, op)| op.clone()).collect();
                (session.info.clone(), ops)
            })
            .collect()
    }

    /// Puts back a session as it was logged (the newest contact last).
    pub(crate) fn restore(&mut self, info: SessionInfo) {
        match self.sessions.get_mut(&info.device) {
            Some(session) => session.info = info,
            None => self.insert(info),
        }
    }

    /// Puts back a remembered operation result.
    pub(crate) fn restore_op(&mut self, device: &str, result: OpResult) {
        if let Some(session) = self.sessions.get_mut(device) {
            session.remember(&result);
        }
    }
}

impl SyncSession {
    /// The remembered result of operation `op`.
    pub(crate) fn remembered(&mut self, op: &str) -> Option<OpResult> {
        self.ops.get(op).cloned()
    }

    pub(crate) fn remember(&mut self, result: &OpResult) {
        self.ops.put(result.op.clone(), result.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_least_recently_seen_session_goes_first_when_full() {
        let mut sessions = Sessions::new(2, Duration::from_secs(3600), 8);
        sessions.touch("a", 1);
        sessions.touch("b", 2);
        sessions.touch("a", 3);
        sessions.touch("c", 4);
        let mut devices: Vec<_> = sessions
            .list()
            .into_iter()
            .map(|info| info.device)
            .collect();
        devices.sort();
        assert_eq!(devices, ["a", "c"]);
    }

    #[test]
    fn idle_sessions_expire() {
        let mut sessions = Sessions::new(10, Duration::from_secs(1), 8);
        sessions.touch("old", 0);
        sessions.touch("new", 1_500);
        sessions.expire(2_000);
        assert_eq!(sessions.len(), 1);
        assert_eq!(sessions.list()[0].device, "new");
    }
}

//! Long polls: holding a pull that has nothing to send until a change comes.
//!
//! [`LongPoll`] is shared by the HTTP route and [`SyncServer::handle_waiting`]
//! (the in-process transport): both pull, and while the answer is empty, wait
//! on the database's latest sequence number and pull again.
//!
//! [`SyncServer::handle_waiting`]: crate::sync::SyncServer::handle_waiting

use std::future::Future;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::engine::Database;

/// One long poll's wait.
pub(crate) struct LongPoll {
    changes: watch::Receiver<u64>,
    started: Instant,
    until: Option<Instant>,
}

impl LongPoll {
    /// Starts a long poll before its first pull: a change made while that pull
    /// runs wakes the wait (no lost wake-up).
    pub(crate) fn start(db: &Database) -> LongPoll {
        LongPoll {
            changes: db.watch_seq(),
            started: Instant::now(),
            until: None,
        }
    }

    /// After an empty pull: waits for a change, at most `wait` from the start
    /// (the wait of the first call holds for the whole poll), or until `stop`.
    /// True when a change came: pull again. A change the caller does not get
    /// wakes it too; its pull is empty again, so it waits on.
    pub(crate) async fn changed(&mut self, wait: Duration, stop: impl Future<Output = ()>) -> bool {
        let until = *self.until.get_or_insert(self.started + wait);
        if until <= Instant::now() {
            return false;
        }
        tokio::select! {
            changed = tokio::time::timeout_at(until, self.changes.changed()) => {
                matches!(changed, Ok(Ok(())))
            }
            () = stop => false,
        }
    }
}

/// How long a long poll waits: what was asked, at most the server's bound and
/// the power mode's cap.
pub(crate) fn long_poll_wait(asked: Duration, max: Duration, cap: Option<Duration>) -> Duration {
    let wait = asked.min(max);
    cap.map_or(wait, |cap| wait.min(cap))
}

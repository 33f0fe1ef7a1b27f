//! Syncing on its own, by the power mode: [`Client::autosync`].
//!
//! One task per client decides when to push and pull from the power profile
//! the app reports ([`Client::set_power`]), whether the app is in the
//! foreground ([`Client::set_foreground`]) and the mode's [`ModeBehaviour`]:
//!
//! - writes wait `write_delay` after the last one (at most `max_write_delay`
//!   after the oldest, or until `flush_at_ops` wait) so a burst goes in one
//!   push; they go at once while the radio is still awake from the last
//!   exchange (`ride_along`) and when the app is left
//!   (`flush_on_background`), and every pull pushes what waits first: writes
//!   ride along with polls, in one radio session;
//! - pulls follow the mode's [`Polling`]: a long poll held open (a change
//!   arrives when it is made; the radio sleeps until then), a fixed interval,
//!   the server's suggested interval, or never;
//! - coming to the foreground syncs at once; a new power state or foreground
//!   state takes effect at once (a long poll in flight is given up);
//! - a failed sync is retried after a growing pause (30 s doubling to 30
//!   minutes); the queue and the replica keep everything meanwhile.
//!
//! Time is tokio's, so tests run a day in milliseconds under paused time.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use tokio::time::Instant;
use tracing::{debug, warn};

use crate::client::error::ClientError;
use crate::client::power::{ModeBehaviour, Polling};
use crate::client::transport::Transport;
use crate::client::{Client, SyncReport};

/// The interval of [`Polling::ServerHint`] before the server gave one.
const HINT_BEFORE_ANSWER: Duration = Duration::from_secs(60 * 60);

/// The first pause after a failed sync; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(30);
const MAX_BACKOFF: Duration = Duration::from_secs(30 * 60);

/// A running [`Client::autosync`]. Dropping it stops the task (a sync in
/// flight is abandoned; what it stored stays stored, the rest is sent again).
#[derive(Debug)]
pub struct Autosync {
    task: tokio::task::JoinHandle<()>,
}

impl Autosync {
    /// Stops the task and waits until it has stopped.
    pub async fn stop(mut self) {
        self.task.abort();
        // Aborted or finished: either way it no longer runs.
        let _ = (&mut self.task).await;
    }
}

impl Drop for Autosync {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl<T: Transport> Client<T> {
    /// Starts syncing on its own by the power mode (see the module
    /// documentation of `autosync`): call once, from within a tokio runtime,
    /// and keep the handle for as long as it should run. The app still may
    /// call [`Client::sync`] at any time; a long poll in flight gives way.
    pub fn autosync(&self) -> Autosync {
        let client = self.clone();
        Autosync {
            task: tokio::spawn(async move { client.run_autosync().await }),
        }
    }

    async fn run_autosync(self) {
        let mut run = Run::new(&self);
        // A long poll in flight survives wake-ups that do not concern it (a
        // local write is pushed when its delay is up, not at once).
        let mut in_flight: Option<Pin<Box<dyn Future<Output = Outcome> + Send + '_>>> = None;
        let mut in_flight_for = None;
        let mut in_flight_since = Instant::now();
        loop {
            let now = Instant::now();
            let view = run.observe(&self, now);
            let mode = self.inner.config.power.mode(view.profile.power);
            let polling = if view.foreground {
                mode.foreground
            } else {
                mode.background
            };
            // A long poll started for another state is given up.
            if in_flight.is_some() && in_flight_for != Some((view.profile, view.foreground)) {
                in_flight = None;
            }
            let write_due = run.write_due(mode, &view, now);
            let poll_due = run.poll_due(polling, &view, now);
            let due = run.retry_at.map_or_else(
                || [write_due, poll_due].into_iter().flatten().min(),
                |retry| Some(retry.max(now)),
            );
            let long_poll = match polling {
                Polling::LongPoll(wait) if run.retry_at.is_none() => Some(wait),
                _ => None,
            };
            if let Some(wait) = long_poll {
                // A step pushes before it polls: writes made before it began
                // are its own. Later writes, once due, end the long poll; the
                // next step starts with their push.
                let covered = in_flight.is_some()
                    && run
                        .last_write
                        .is_none_or(|written| written <= in_flight_since);
                let write_due = write_due.filter(|_| !covered);
                if write_due.is_some_and(|due| due <= now) {
                    in_flight = None;
                }
                let poll = in_flight.get_or_insert_with(|| {
                    in_flight_for = Some((view.profile, view.foreground));
                    in_flight_since = now;
                    Box::pin(self.sync_step(Some(wait)))
                });
                let deadline = write_due.unwrap_or_else(|| now + wait * 2);
                let (mut finished, mut interrupted) = (None, false);
                tokio::select! {
                    outcome = poll => finished = Some(outcome),
                    () = tokio::time::sleep_until(deadline) => {}
                    () = self.inner.wake.notified() => {}
                    () = self.inner.interrupt.notified() => interrupted = true,
                }
                if let Some(outcome) = finished {
                    in_flight = None;
                    run.settle(outcome, Instant::now());
                } else if interrupted {
                    in_flight = None;
                }
                continue;
            }
            in_flight = None;
            match due {
                Some(due) if due <= now => {
                    let outcome = self.sync_step(None).await;
                    run.settle(outcome, Instant::now());
                }
                Some(due) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(due) => {}
                        () = self.inner.wake.notified() => {}
                    }
                }
                None => self.inner.wake.notified().await,
            }
        }
    }

    /// Pushes what may be pushed, then pulls (holding the first pull open up
    /// to `wait` when there is nothing to send).
    async fn sync_step(&self, wait: Option<Duration>) -> Outcome {
        let _syncing = self.inner.syncing.lock().await;
        let started = Instant::now();
        let push = self.push_queue().await?;
        let pull = self.pull_from(wait).await?;
        debug!(
            device = %self.inner.config.device,
            pushed = push.answered,
            pulled = pull.records,
            cursor = pull.cursor,
            long_poll = wait.is_some(),
            millis = started.elapsed().as_millis() as u64,
            "autosync"
        );
        Ok(SyncReport { push, pull })
    }
}

type Outcome = Result<SyncReport, ClientError>;

/// What the task remembers between wake-ups.
struct Run {
    /// The end of the last sync that succeeded.
    last_sync: Option<Instant>,
    /// When the task first saw the oldest write that waits.
    oldest_write: Option<Instant>,
    last_write: Option<Instant>,
    writes_seen: u64,
    was_foreground: bool,
    /// Sync at the next turn: at the start, and when the app comes to the
    /// foreground.
    sync_now: bool,
    /// Push what waits at the next turn: the app left the foreground.
    flush_now: bool,
    failures: u32,
    retry_at: Option<Instant>,
}

/// The client's state as one turn sees it.
struct View {
    profile: crate::power::PowerProfile,
    foreground: bool,
    /// When the last exchange with the server ended.
    last_exchange: Option<Instant>,
    next_sync_hint: Option<Duration>,
    /// Operations that may be pushed in this power state.
    waiting: usize,
}

impl Run {
    fn new<T>(client: &Client<T>) -> Run {
        Run {
            last_sync: None,
            oldest_write: None,
            last_write: None,
            writes_seen: client.stats().local_writes,
            was_foreground: client.is_foreground(),
            sync_now: true,
            flush_now: false,
            failures: 0,
            retry_at: None,
        }
    }

    fn observe<T>(&mut self, client: &Client<T>, now: Instant) -> View {
        let power = &client.inner.config.power;
        let view = {
            let state = client.lock();
            let profile = state.profile.unwrap_or_default();
            let writes = state.stats.local_writes;
            if writes != self.writes_seen {
                self.writes_seen = writes;
                self.last_write = Some(now);
            }
            View {
                profile,
                foreground: state.foreground,
                last_exchange: state.last_exchange,
                next_sync_hint: state
                    .hint
                    .as_ref()
                    .map(|hint| Duration::from_millis(hint.next_sync_ms)),
                waiting: state
                    .replica
                    .queue
                    .count_where(|table| power.pushes(profile, table)),
            }
        };
        if view.waiting == 0 {
            self.oldest_write = None;
        } else if self.oldest_write.is_none() {
            self.oldest_write = Some(self.last_write.unwrap_or(now));
        }
        let mode = power.mode(view.profile.power);
        if view.foreground && !self.was_foreground && mode.sync_on_foreground {
            self.sync_now = true;
            self.retry_at = None;
        }
        if !view.foreground && self.was_foreground && mode.flush_on_background {
            self.flush_now = true;
        }
        if view.waiting == 0 {
            self.flush_now = false;
        }
        self.was_foreground = view.foreground;
        view
    }

    /// When the waiting writes are to be pushed.
    fn write_due(&self, mode: &ModeBehaviour, view: &View, now: Instant) -> Option<Instant> {
        if view.waiting == 0 {
            return None;
        }
        let radio_awake = !mode.ride_along.is_zero()
            && view
                .last_exchange
                .is_some_and(|last| now.saturating_duration_since(last) < mode.ride_along);
        if view.waiting >= mode.flush_at_ops || self.flush_now || radio_awake {
            return Some(now);
        }
        let quiet = self.last_write.unwrap_or(now) + mode.write_delay;
        let oldest = self.oldest_write.unwrap_or(now) + mode.max_write_delay;
        Some(quiet.min(oldest))
    }

    /// When the next pull is due (now for a long poll).
    fn poll_due(&self, polling: Polling, view: &View, now: Instant) -> Option<Instant> {
        if self.sync_now {
            return Some(now);
        }
        let after = |interval: Duration| Some(self.last_sync.map_or(now, |last| last + interval));
        match polling {
            Polling::LongPoll(_) => Some(now),
            Polling::Every(interval) => after(interval),
            Polling::ServerHint => after(view.next_sync_hint.unwrap_or(HINT_BEFORE_ANSWER)),
            Polling::Never => None,
        }
    }

    fn settle(&mut self, outcome: Outcome, now: Instant) {
        match outcome {
            Ok(_) => {
                self.last_sync = Some(now);
                self.sync_now = false;
                self.flush_now = false;
                self.failures = 0;
                self.retry_at = None;
            }
            Err(error) => {
                self.failures += 1;
                let pause = FIRST_BACKOFF
                    .saturating_mul(1 << (self.failures - 1).min(16))
                    .min(MAX_BACKOFF);
                warn!(%error, failures = self.failures, retry_in_s = pause.as_secs(), "autosync failed; the queue and replica keep everything");
                self.retry_at = Some(now + pause);
                self.sync_now = false;
            }
        }
    }
}

//! How far this node has applied the stream, and the outcomes of its own
//! writes for the threads waiting on them.

use std::collections::BTreeMap;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::engine::{EngineError, Held, MergeOutcome, WriteError};

/// Outcomes not picked up within this many positions are dropped (their
/// writer gave up waiting).
const KEEP_POSITIONS: u64 = 100_000;

#[derive(Debug, Default)]
pub(crate) struct Progress {
    state: Mutex<State>,
    moved: Condvar,
}

#[derive(Debug, Default)]
struct State {
    applied: u64,
    /// Outcomes of this node's writes, by position, until their writer takes
    /// them.
    outcomes: BTreeMap<u64, Result<MergeOutcome, EngineError>>,
    /// Records' turns held by writes answered before they were applied
    /// (`ack = "local"`), by position: given back once applied.
    turns: BTreeMap<u64, Held>,
}

impl Progress {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn applied(&self) -> u64 {
        self.lock().applied
    }

    /// Starts from a position restored with the data.
    pub(crate) fn resume(&self, position: u64) {
        self.lock().applied = position;
    }

    /// Records an applied batch: the outcomes of this node's writes (kept
    /// for their writers when `keep`), the new position; wakes the writers.
    pub(crate) fn record(
        &self,
        position: u64,
        own: Vec<(u64, Result<MergeOutcome, EngineError>)>,
        keep: bool,
    ) {
        let released = {
            let mut state = self.lock();
            if keep {
                state.outcomes.extend(own);
            }
            state.applied = state.applied.max(position);
            let floor = state.applied.saturating_sub(KEEP_POSITIONS);
            state.outcomes = state.outcomes.split_off(&floor);
            let next = state.applied + 1;
            let later = state.turns.split_off(&next);
            std::mem::replace(&mut state.turns, later)
        };
        drop(released);
        self.moved.notify_all();
    }

    /// Keeps a record's turn until `position` is applied.
    pub(crate) fn hold_until(&self, position: u64, held: Held) {
        let mut state = self.lock();
        if state.applied < position {
            state.turns.insert(position, held);
        }
    }

    /// Waits for the outcome of this node's write at `position`. `None` when
    /// the position was applied with no outcome kept for this node: the
    /// stream held the write already (a duplicate), so it changed nothing.
    pub(crate) fn wait(
        &self,
        position: u64,
        timeout: Duration,
    ) -> Result<Option<MergeOutcome>, EngineError> {
        let deadline = Instant::now() + timeout;
        let mut state = self.lock();
        loop {
            if let Some(outcome) = state.outcomes.remove(&position) {
                return outcome.map(Some);
            }
            if state.applied >= position {
                return Ok(None);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(EngineError::Write(WriteError::Unavailable {
                    reason: format!(
                        "the write is on the cluster's stream at position {position}, but this node has not applied it within {} ms; it will be applied, and repeating the write is harmless",
                        timeout.as_millis()
                    ),
                }));
            }
            state = self
                .moved
                .wait_timeout(state, left)
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mobilesyncdb_crdt::Causality;

    fn outcome(seq: u64) -> MergeOutcome {
        MergeOutcome {
            id: "t1".into(),
            seqs: vec![seq],
            duplicates: 0,
            causality: Causality::After,
            conflicted_fields: Vec::new(),
        }
    }

    #[test]
    fn a_writer_gets_its_outcome_whether_it_waits_before_or_after_the_apply() {
        let progress = std::sync::Arc::new(Progress::default());
        progress.record(3, vec![(3, Ok(outcome(7)))], true);
        assert_eq!(
            progress.wait(3, Duration::from_millis(1)).ok().flatten(),
            Some(outcome(7))
        );
        let waiting = std::sync::Arc::clone(&progress);
        let writer = std::thread::spawn(move || waiting.wait(5, Duration::from_secs(30)));
        std::thread::sleep(Duration::from_millis(20));
        progress.record(5, vec![(5, Ok(outcome(9)))], true);
        let got = writer.join().ok().and_then(Result::ok).flatten();
        assert_eq!(got, Some(outcome(9)));
    }

    #[test]
    fn an_applied_position_with_no_outcome_is_a_duplicate_and_a_late_one_times_out() {
        let progress = Progress::default();
        progress.record(10, Vec::new(), true);
        assert_eq!(progress.wait(4, Duration::from_millis(1)).ok(), Some(None));
        let late = progress.wait(11, Duration::from_millis(5)).unwrap_err();
        assert_eq!(late.code(), "cluster_unavailable");
        assert!(late.to_string().contains("position 11"), "{late}");
    }
}

//! How far this node has applied the stream, and the writers waiting for
//! their writes.
//!
//! Each write this node publishes carries a ticket (a header). The applier
//! answers the write's writer with the apply's outcome when it meets the
//! ticket on the stream: one wake-up per write, for that writer alone. The
//! publisher answers only what the applier cannot: a write the stream
//! refused, and one it held already (answered once its position is applied).

use std::collections::{BTreeMap, HashMap};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Mutex, MutexGuard};

use crate::engine::{EngineError, Held, MergeOutcome, WriteError};

/// What a writer is answered: the apply's outcome, `None` when the write
/// changed nothing (the stream held it already), or why it failed.
pub(crate) type Answer = Result<Option<MergeOutcome>, EngineError>;

#[derive(Debug, Default)]
pub(crate) struct Progress {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    applied: u64,
    /// Writers waiting, by ticket.
    waiting: HashMap<u64, Waiter>,
    /// Tickets of writes the stream held already, answered once the
    /// position that holds them is applied.
    after: BTreeMap<u64, Vec<u64>>,
    /// Records' turns held by writes answered before they were applied
    /// (`ack = "local"`), by position: given back once applied.
    turns: BTreeMap<u64, Held>,
}

#[derive(Debug)]
struct Waiter {
    reply: SyncSender<Answer>,
    /// Where the stream put the write, once it said.
    position: Option<u64>,
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

    /// Registers the writer of the write with `ticket`; its answer arrives
    /// on the receiver.
    pub(crate) fn register(&self, ticket: u64) -> Receiver<Answer> {
        let (reply, answer) = sync_channel(1);
        self.lock().waiting.insert(
            ticket,
            Waiter {
                reply,
                position: None,
            },
        );
        answer
    }

    /// The stream took the write with `ticket` at `position`. A write it
    /// held already (`duplicate`) is not applied again: its writer is
    /// answered once that position is applied.
    pub(crate) fn placed(&self, ticket: u64, position: u64, duplicate: bool) {
        let mut state = self.lock();
        let applied = state.applied;
        let Some(waiter) = state.waiting.get_mut(&ticket) else {
            return;
        };
        waiter.position = Some(position);
        if !duplicate {
            return;
        }
        if applied >= position {
            answer(&mut state, ticket, Ok(None));
        } else {
            state.after.entry(position).or_default().push(ticket);
        }
    }

    /// The stream refused the write with `ticket`.
    pub(crate) fn failed(&self, ticket: u64, reason: String) {
        let mut state = self.lock();
        answer(
            &mut state,
            ticket,
            Err(EngineError::Write(WriteError::Unavailable { reason })),
        );
    }

    /// The writer of `ticket` stopped waiting; where the stream put its
    /// write, if it said.
    pub(crate) fn give_up(&self, ticket: u64) -> Option<u64> {
        self.lock()
            .waiting
            .remove(&ticket)
            .and_then(|waiter| waiter.position)
    }

    /// Records an applied batch up to `position`: answers the writers of
    /// this node's writes in it (by ticket) and of writes the stream held
    /// already, and gives back the turns held until then.
    pub(crate) fn record(&self, position: u64, own: Vec<(u64, Result<MergeOutcome, EngineError>)>) {
        let released = {
            let mut state = self.lock();
            state.applied = state.applied.max(position);
            for (ticket, outcome) in own {
                answer(&mut state, ticket, outcome.map(Some));
            }
            let next = state.applied + 1;
            let later = state.after.split_off(&next);
            for ticket in std::mem::replace(&mut state.after, later)
                .into_values()
                .flatten()
            {
                answer(&mut state, ticket, Ok(None));
            }
            let later = state.turns.split_off(&next);
            std::mem::replace(&mut state.turns, later)
        };
        drop(released);
    }

    /// Keeps a record's turn until `position` is applied.
    pub(crate) fn hold_until(&self, position: u64, held: Held) {
        let mut state = self.lock();
        if state.applied < position {
            state.turns.insert(position, held);
        }
    }
}

fn answer(state: &mut State, ticket: u64, outcome: Answer) {
    if let Some(waiter) = state.waiting.remove(&ticket) {
        // A writer that gave up has dropped its receiver.
        let _ = waiter.reply.try_send(outcome);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mobilesyncdb_crdt::Causality;
    use std::time::Duration;

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
    fn a_writer_gets_its_outcome_whether_the_stream_acknowledges_before_or_after_the_apply() {
        let progress = Progress::default();
        let first = progress.register(1);
        progress.placed(1, 3, false);
        progress.record(3, vec![(1, Ok(outcome(7)))]);
        assert_eq!(
            first.try_recv().ok().and_then(Result::ok),
            Some(Some(outcome(7)))
        );

        // The apply may come before the stream's acknowledgement.
        let second = progress.register(2);
        progress.record(5, vec![(2, Ok(outcome(9)))]);
        progress.placed(2, 5, false);
        assert_eq!(
            second.try_recv().ok().and_then(Result::ok),
            Some(Some(outcome(9)))
        );
        assert_eq!(progress.applied(), 5);
    }

    #[test]
    fn a_write_the_stream_held_already_is_answered_once_its_position_is_applied() {
        let progress = Progress::default();
        progress.record(10, Vec::new());
        let early = progress.register(1);
        progress.placed(1, 4, true);
        assert_eq!(early.try_recv().ok().and_then(Result::ok), Some(None));

        let late = progress.register(2);
        progress.placed(2, 12, true);
        assert!(
            late.try_recv().is_err(),
            "answered before its position was applied"
        );
        progress.record(11, Vec::new());
        assert!(
            late.try_recv().is_err(),
            "answered before its position was applied"
        );
        progress.record(12, Vec::new());
        assert_eq!(late.try_recv().ok().and_then(Result::ok), Some(None));
    }

    #[test]
    fn a_refused_write_is_answered_with_the_reason_and_a_writer_that_gave_up_is_forgotten() {
        let progress = Progress::default();
        let refused = progress.register(1);
        progress.failed(1, "no stream".to_owned());
        let error = refused
            .recv_timeout(Duration::from_secs(5))
            .expect("an answer")
            .unwrap_err();
        assert_eq!(error.code(), "cluster_unavailable");
        assert!(error.to_string().contains("no stream"), "{error}");

        let gone = progress.register(2);
        progress.placed(2, 8, false);
        assert_eq!(progress.give_up(2), Some(8));
        drop(gone);
        // Its write is applied later: nobody is answered, nothing breaks.
        progress.record(8, vec![(2, Ok(outcome(1)))]);
        assert_eq!(progress.give_up(2), None);
    }
}

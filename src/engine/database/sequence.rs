//! Writes in a cluster: made and checked on the node that takes them, ordered
//! by a shared stream, and stored by every node (this one included) when they
//! come back from it.
//!
//! Every node applies the same stream in the same order and a change gets its
//! sequence number only when it is applied, so sequence numbers, and with them
//! cursors, mean the same on every node. The engine knows nothing of the
//! stream itself: a [`Sequencer`] (`crate::cluster`) carries the changes.

use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use mobilesyncdb_crdt::{Causality, Change, ChangeHash, ClientId, Record, Stamp};
use tracing::warn;

use super::state::{Captured, State, Update, WriteMode, same_heads};
use super::{Database, FullAccess, MergeOutcome, PatchOutcome, WriteOutcome, storage_error};
use crate::engine::changelog::Chunk;
use crate::engine::error::{EngineError, WriteError};
use crate::engine::row::Row;
use crate::storage::entry::Entry;

/// The durable setting that holds the last stream position this node applied.
pub const STREAM_POSITION_SETTING: &str = "cluster.stream_position";

/// A write's changes on their way through the stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SequencedWrite {
    pub table: String,
    pub id: String,
    /// Who made the write (the device or user): recorded with its changes.
    pub origin: ClientId,
    /// Automerge change chunks, in order.
    pub changes: Vec<Vec<u8>>,
    /// What the write shows once stored, when the node that made it could
    /// tell; `None` for writes every node merges (repairs, writes that made
    /// a conflict).
    pub shown: Option<Shown>,
}

/// What a write shows once stored, as the node that made it worked it out.
///
/// The same changes on the same record state resolve to the same row, so a
/// node whose record is in the state the write was made on stores the
/// changes with this row: it skips merging them into a document, checking
/// the record's fields for conflicts and deriving the row, which otherwise
/// every node would do again for every write. A node whose record is
/// elsewhere (another write came first) merges the changes as usual.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shown {
    /// The record's heads the write was made on: empty for a new record.
    pub base: Vec<ChangeHash>,
    /// The hash of the write's last change.
    pub hash: ChangeHash,
    /// Each change's stamp, in order.
    pub stamps: Vec<Stamp>,
    /// The visible row, encoded as the engine keeps rows.
    pub row: Vec<u8>,
    pub deleted: bool,
    /// The table layout the row is encoded in: a node whose table differs
    /// (another schema or policy) merges instead.
    pub layout: u64,
    /// How the record before the write relates to the write's history.
    pub causality: Causality,
}

/// How this node stored the writes it applied from the stream.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StreamApplies {
    /// Stored as the node that made them showed them ([`Shown`]): the record
    /// was in the state they were made on.
    pub shown: u64,
    /// Merged into the record's document: another write came first, the
    /// write made a conflict, or it is a repair.
    pub merged: u64,
}

/// A write read back from the stream, at its position.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamWrite {
    pub position: u64,
    /// Whether this node took the write: only that node makes its webhook
    /// events, so each event fires once in the cluster.
    pub own: bool,
    pub write: SequencedWrite,
}

/// Carries writes through the cluster's stream.
pub trait Sequencer: Send + Sync + std::fmt::Debug {
    /// Puts `write` on the stream and blocks until this node has applied it,
    /// giving what the apply did; or, when the cluster acknowledges writes
    /// locally, returns `None` as soon as the write is handed to the
    /// connection. `held` keeps the record's turn until the write is applied.
    ///
    /// # Errors
    ///
    /// [`WriteError::Unavailable`] when the stream could not take the write
    /// (nothing was applied anywhere), or the apply's own refusal.
    fn sequence(
        &self,
        write: SequencedWrite,
        held: Held,
    ) -> Result<Option<MergeOutcome>, EngineError>;
}

/// A write's outcome, corrected by what the apply from the stream did.
pub(super) trait Sequenced {
    fn applied(self, applied: Option<&MergeOutcome>) -> Self;
}

impl Sequenced for WriteOutcome {
    fn applied(mut self, applied: Option<&MergeOutcome>) -> Self {
        self.seq = applied.and_then(|applied| applied.seqs.first().copied());
        self
    }
}

impl Sequenced for PatchOutcome {
    fn applied(mut self, applied: Option<&MergeOutcome>) -> Self {
        self.write = self.write.applied(applied);
        if let Some(applied) = applied {
            self.causality = applied.causality;
            self.conflicted_fields
                .clone_from(&applied.conflicted_fields);
        }
        self
    }
}

/// A resolved conflict is read again once its write is applied.
impl Sequenced for crate::engine::audit::ConflictRecord {
    fn applied(self, _applied: Option<&MergeOutcome>) -> Self {
        self
    }
}

impl Sequenced for MergeOutcome {
    fn applied(self, applied: Option<&MergeOutcome>) -> Self {
        match applied {
            Some(applied) => applied.clone(),
            None => MergeOutcome {
                seqs: Vec::new(),
                ..self
            },
        }
    }
}

/// The records with a write of this node on its way through the stream: a
/// second write to one waits its turn, so the node's own changes to a record
/// form one line (its automerge actor never makes two changes with the same
/// number).
#[derive(Debug, Default)]
pub(super) struct Turns {
    held: Mutex<HashSet<(String, String)>>,
    released: Condvar,
}

impl Turns {
    fn lock(&self) -> MutexGuard<'_, HashSet<(String, String)>> {
        self.held
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Waits until no write of this node to the record is in flight, then
    /// takes the record's turn.
    fn take(self: &Arc<Self>, table: &str, id: &str) -> Held {
        let key = (table.to_owned(), id.to_owned());
        let mut held = self.lock();
        while held.contains(&key) {
            held = self
                .released
                .wait(held)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
        held.insert(key.clone());
        Held {
            turns: Some(Arc::clone(self)),
            key,
        }
    }
}

/// A record's turn, given back when dropped.
#[derive(Debug)]
pub struct Held {
    turns: Option<Arc<Turns>>,
    key: (String, String),
}

impl Held {
    /// A turn that holds nothing: for writes that need no turn.
    pub fn none() -> Held {
        Held {
            turns: None,
            key: (String::new(), String::new()),
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(turns) = self.turns.take() {
            turns.lock().remove(&self.key);
            turns.released.notify_all();
        }
    }
}

/// The cluster side of a database: its sequencer and the records' turns.
#[derive(Debug)]
pub(super) struct Sequencing {
    sequencer: Arc<dyn Sequencer>,
    turns: Arc<Turns>,
}

impl Database {
    /// Makes this database a cluster node: from now on every record write is
    /// handed to `sequencer` and stored only when it comes back from the
    /// stream ([`Database::apply_stream`]). Set once.
    ///
    /// # Errors
    ///
    /// [`WriteError::Unavailable`] when a sequencer is already attached.
    pub fn attach_sequencer(&self, sequencer: Arc<dyn Sequencer>) -> Result<(), EngineError> {
        self.sequencing
            .set(Sequencing {
                sequencer,
                turns: Arc::default(),
            })
            .map_err(|_| {
                EngineError::Write(WriteError::Unavailable {
                    reason: "this database is already a cluster node".to_owned(),
                })
            })
    }

    /// Whether writes go through a cluster's stream.
    pub fn is_clustered(&self) -> bool {
        self.sequencing.get().is_some()
    }

    /// The last stream position this node applied (0 before the first).
    pub fn stream_position(&self) -> u64 {
        self.read()
            .settings
            .get(STREAM_POSITION_SETTING)
            .and_then(|value| value.parse().ok())
            .unwrap_or(0)
    }

    /// Runs a record write. On a cluster node the write is made and checked
    /// here, then put on the stream; the outcome is the one its apply from the
    /// stream gave. `record` names the record when the caller knows it, so
    /// that a second write of this node to it waits for the first.
    pub(super) fn commit_write<T: Sequenced, E: Into<EngineError>>(
        &self,
        defer: bool,
        record: Option<(&str, &str)>,
        write: impl FnOnce(&mut State) -> Result<T, E>,
    ) -> Result<T, EngineError> {
        let Some(sequencing) = self.sequencing.get() else {
            return self.commit(defer, write);
        };
        let held = match record {
            Some((table, id)) => sequencing.turns.take(table, id),
            None => Held::none(),
        };
        let (result, captured) = {
            let mut state = self.write();
            state.mode = WriteMode::Capture;
            let result = write(&mut state);
            state.mode = WriteMode::Local;
            (result, state.captured.take())
        };
        let outcome = result.map_err(Into::into)?;
        let Some(Captured {
            table,
            id,
            origin,
            changes,
            shown,
        }) = captured
        else {
            // The write changed nothing: there is nothing to order.
            return Ok(outcome);
        };
        let write = SequencedWrite {
            table,
            id,
            origin,
            changes: changes.iter().map(|chunk| chunk.to_vec()).collect(),
            shown,
        };
        let key = write
            .shown
            .as_ref()
            .map(|_| (write.table.clone(), write.id.clone()));
        let applied = sequencing.sequencer.sequence(write, held);
        if let (Err(_), Some((table, id))) = (&applied, key) {
            // Never applied here: the document made for it is of no use.
            self.write().forget_prepared(&table, &id);
        }
        Ok(outcome.applied(applied?.as_ref()))
    }

    /// Puts changes that were made elsewhere back on the stream, unchecked:
    /// anti-entropy's repair of changes the stream lost. Nodes that have
    /// them find them duplicates.
    ///
    /// # Errors
    ///
    /// [`WriteError::Unavailable`] when this is no cluster node or the stream
    /// could not take the changes.
    pub fn republish(&self, write: SequencedWrite) -> Result<Option<MergeOutcome>, EngineError> {
        let Some(sequencing) = self.sequencing.get() else {
            return Err(EngineError::Write(WriteError::Unavailable {
                reason: "this database is no cluster node".to_owned(),
            }));
        };
        sequencing.sequencer.sequence(write, Held::none())
    }

    /// Applies writes read from the stream, in order, under one lock (writes
    /// of one stream message share its position): each stored as its node
    /// showed it, or merged, with the node's clock and memory bounds out of
    /// the way (the node that took the write checked them); then records the
    /// last position, and waits until all of it is durable. Gives each write's
    /// outcome: a refusal here is the same on every node. A write to a table
    /// this node does not have yet (tables are created on each node) stops
    /// the batch before its message: the outcomes are then fewer than the
    /// writes, and the rest is applied once the table exists.
    ///
    /// # Errors
    ///
    /// [`WriteError::Storage`] when the journal failed: the caller must stop
    /// applying, and read the stream again from [`Database::stream_position`].
    pub fn apply_stream(
        &self,
        batch: &[StreamWrite],
    ) -> Result<Vec<Result<MergeOutcome, EngineError>>, EngineError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let journal = self.journal.get();
        if let Some(journal) = journal {
            journal.check_healthy().map_err(storage_error)?;
        }
        let (outcomes, lsn, latest) = {
            let mut state = self.write();
            state.mode = WriteMode::Apply;
            let mut outcomes = Vec::with_capacity(batch.len());
            // A position (a message) is applied whole or not at all.
            for message in batch.chunk_by(|left, right| left.position == right.position) {
                let missing = message
                    .iter()
                    .map(|stream| &stream.write.table)
                    .find(|table| !table.is_empty() && !state.table_ids.contains_key(*table));
                if let Some(table) = missing {
                    warn!(position = message[0].position, table = %table, "a write from the stream is for a table this node does not have yet: holding it back until the table is created");
                    break;
                }
                for stream in message {
                    outcomes.push(apply_one(&mut state, stream));
                }
            }
            state.mode = WriteMode::Local;
            let Some(last) = batch[..outcomes.len()].last().map(|write| write.position) else {
                return Ok(Vec::new());
            };
            set_position(&mut state, last);
            let latest = (state.log.latest_seq(), state.events.latest_id());
            (outcomes, state.pending_lsn.take(), latest)
        };
        if let (Some(journal), Some(lsn)) = (journal, lsn) {
            journal.wait(lsn).map_err(storage_error)?;
        }
        self.watches.announce(latest.0, latest.1);
        Ok(outcomes)
    }

    /// Moves this node's stream position past `to`, when the stream no longer
    /// holds the writes between (removed by its age limit, or lost): they
    /// cannot be applied, and anti-entropy repairs their records. Never moves
    /// the position back.
    ///
    /// # Errors
    ///
    /// [`WriteError::Storage`] when the journal failed.
    pub fn skip_stream_to(&self, to: u64) -> Result<(), EngineError> {
        if self.stream_position() >= to {
            return Ok(());
        }
        self.commit(false, |state| {
            let current = state
                .settings
                .get(STREAM_POSITION_SETTING)
                .and_then(|value| value.parse::<u64>().ok())
                .unwrap_or(0);
            if current >= to {
                return Ok::<(), EngineError>(());
            }
            warn!(from = current + 1, to, "stream positions no longer on the stream: skipped; anti-entropy repairs their records");
            set_position(state, to);
            Ok(())
        })
    }

    /// How the writes applied from the stream since the database opened were
    /// stored.
    pub fn stream_applies(&self) -> StreamApplies {
        self.read().stream_applies
    }

    /// Blocks until this node has applied up to sequence number `seq`, or
    /// `timeout` passes; whether it has.
    pub fn wait_for_seq(&self, seq: u64, timeout: std::time::Duration) -> bool {
        self.watches.wait_for(seq, timeout)
    }
}

/// Records the last stream position applied, logged with the writes.
fn set_position(state: &mut State, position: u64) {
    let value = position.to_string();
    if let Some(journal) = &state.journal {
        let entry = Entry::Setting {
            key: Cow::Borrowed(STREAM_POSITION_SETTING),
            value: Some(Cow::Borrowed(&value)),
        };
        state.pending_lsn = Some(journal.append(&entry.encode(), None));
    }
    state
        .settings
        .insert(STREAM_POSITION_SETTING.to_owned(), value);
}

fn apply_one(state: &mut State, stream: &StreamWrite) -> Result<MergeOutcome, EngineError> {
    let write = &stream.write;
    state.events_muted = !stream.own;
    let shown = write
        .shown
        .as_ref()
        .and_then(|shown| state.apply_shown(write, shown, stream.own));
    state.events_muted = false;
    if let Some(outcome) = shown {
        state.stream_applies.shown += 1;
        return outcome.map_err(EngineError::from);
    }
    state.stream_applies.merged += 1;
    let changes = write
        .changes
        .iter()
        .map(|bytes| Change::from_bytes(bytes.clone()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| {
            EngineError::Write(WriteError::Unavailable {
                reason: format!(
                    "stream position {} holds a change that is not valid automerge: {error}",
                    stream.position
                ),
            })
        })?;
    state.events_muted = !stream.own;
    let outcome = state
        .merge_changes(&write.table, &write.id, changes, &write.origin, &FullAccess)
        .map_err(EngineError::from);
    state.events_muted = false;
    if let Err(error) = &outcome {
        warn!(position = stream.position, table = %write.table, record = %write.id, %error, "a write from the stream was refused on every node");
    }
    outcome
}

/// The most documents [`State::prepared`] keeps: at most one per record with
/// a write in flight, so only a write that never came back leaves one behind;
/// past this, all are dropped (their writes are then merged, as any other).
const MAX_PREPARED: usize = 1_024;

/// A document a write of this node made, kept until the write comes back
/// from the stream.
#[derive(Debug)]
pub(super) struct Prepared {
    /// The hash of the write's last change.
    hash: ChangeHash,
    /// The record's latest sequence number when the write was made (`None`
    /// without a record): any change stored since moved it.
    latest_seq: Option<u64>,
    record: Record,
}

impl State {
    /// Keeps a write made in [`WriteMode::Capture`] for the stream: its
    /// changes, and, when it was made on a known state of the record and
    /// leaves no conflict, what it shows and the document it made.
    pub(super) fn capture(
        &mut self,
        table_id: u16,
        slot: Option<u32>,
        id: &str,
        update: Update,
        origin: &ClientId,
    ) {
        let table = &self.tables[usize::from(table_id)];
        let clean = !update.open_conflict
            && update.detected.is_empty()
            && !slot.is_some_and(|slot| table.has_open_conflict(slot));
        let latest_seq = slot.map(|slot| table.record(slot).latest_seq);
        let (name, layout) = (table.name().to_owned(), table.layout());
        let shown = update.hint.filter(|_| clean).map(|hint| Shown {
            base: hint.base,
            hash: hint.hash,
            stamps: update.logged.iter().map(|(_, stamp)| *stamp).collect(),
            row: update.row.encoded().to_vec(),
            deleted: update.deleted,
            layout,
            causality: hint.causality,
        });
        if let (Some(shown), Some(record)) = (&shown, update.record) {
            if self.prepared.len() >= MAX_PREPARED {
                self.prepared.clear();
            }
            let prepared = Prepared {
                hash: shown.hash,
                latest_seq,
                record,
            };
            self.prepared.insert((table_id, id.to_owned()), prepared);
        }
        self.captured = Some(Captured {
            table: name,
            id: id.to_owned(),
            origin: origin.clone(),
            changes: update.logged.into_iter().map(|(bytes, _)| bytes).collect(),
            shown,
        });
    }

    /// Drops the document a write of this node made, once the write is known
    /// never to come back.
    pub(super) fn forget_prepared(&mut self, table: &str, id: &str) {
        if let Some(&table_id) = self.table_ids.get(table) {
            self.prepared.remove(&(table_id, id.to_owned()));
        }
    }

    /// Stores a write from the stream with what its node showed, when this
    /// node's record is in the state the write was made on: the document this
    /// node made for it (its own write, the record unchanged since), no
    /// document (a new record: loaded when next needed), or the cached one
    /// at the write's base, with the changes applied. `None` when the record
    /// is elsewhere: the caller merges the changes.
    pub(super) fn apply_shown(
        &mut self,
        write: &SequencedWrite,
        shown: &Shown,
        own: bool,
    ) -> Option<Result<MergeOutcome, WriteError>> {
        let table_id = *self.table_ids.get(&write.table)?;
        // Taken whatever follows: the write is back, merged or not.
        let prepared = own
            .then(|| self.prepared.remove(&(table_id, write.id.clone())))
            .flatten();
        let table = &self.tables[usize::from(table_id)];
        if table.layout() != shown.layout || shown.stamps.len() != write.changes.len() {
            return None;
        }
        let slot = table.slot_of(&write.id);
        if slot.is_some_and(|slot| table.has_open_conflict(slot)) {
            return None;
        }
        let latest_seq = slot.map(|slot| table.record(slot).latest_seq);
        let prepared = prepared
            .filter(|prepared| prepared.hash == shown.hash && prepared.latest_seq == latest_seq);
        let record = match (prepared, slot) {
            (Some(prepared), _) => Some(prepared.record),
            (None, None) if shown.base.is_empty() => None,
            (None, Some(slot)) => Some(self.cached_at(table_id, slot, write, shown)?),
            (None, None) => return None,
        };
        let now = self.wall.now_ms();
        for stamp in &shown.stamps {
            // Checked by the node that took the write.
            let _ = self.clock.observe(*stamp, now);
        }
        let update = Update {
            record,
            logged: write
                .changes
                .iter()
                .zip(&shown.stamps)
                .map(|(bytes, stamp)| (Chunk::from(bytes.as_slice()), *stamp))
                .collect(),
            row: Row::from_encoded(shown.row.clone().into_boxed_slice()),
            open_conflict: false,
            deleted: shown.deleted,
            detected: Vec::new(),
            hint: None,
        };
        let stored = self.store(table_id, slot, &write.id, update, &write.origin);
        Some(stored.map(|seqs| MergeOutcome {
            id: write.id.clone(),
            seqs,
            duplicates: 0,
            causality: shown.causality,
            conflicted_fields: Vec::new(),
        }))
    }

    /// The record's cached document with the write's changes applied, when
    /// the document is at the write's base; `None` (the document back in the
    /// cache, or dropped when applying failed) otherwise.
    fn cached_at(
        &mut self,
        table_id: u16,
        slot: u32,
        write: &SequencedWrite,
        shown: &Shown,
    ) -> Option<Record> {
        let mut record = self.cache.take(table_id, slot)?;
        if !same_heads(&record.heads(), &shown.base) {
            self.cache.put(table_id, slot, record);
            return None;
        }
        let changes = write
            .changes
            .iter()
            .map(|bytes| Change::from_bytes(bytes.clone()))
            .collect::<Result<Vec<_>, _>>();
        let Ok(changes) = changes else {
            self.cache.put(table_id, slot, record);
            return None;
        };
        // On failure the document is dropped: the merge loads it again.
        record.apply_changes(changes).ok()?;
        record.missing_deps().is_empty().then_some(record)
    }
}

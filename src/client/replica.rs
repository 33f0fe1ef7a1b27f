//! The local replica: what a device stores, laid out as the server stores it.
//!
//! Per record, the saved automerge bytes ([`LocalRecord::bytes`], a document
//! chunk and/or change chunks, concatenated) and the visible row. A pull batch is
//! stored without loading documents: payloads are appended (or replace the copy
//! when whole) and the row takes the fields the server sent. Only a record with
//! local edits not yet echoed by the server (`pending`) is loaded, merged with the
//! incoming bytes and saved again, so nothing local is lost.
//!
//! A batch is stored in two steps so that the expensive one runs off the async
//! threads and the batch lands whole or not at all: [`plan`] works on a
//! [`BatchSnapshot`] of the touched records and may fail; [`Replica::commit`]
//! swaps the result in, with the new cursor, and cannot fail.

use std::collections::{BTreeMap, BTreeSet};

use mobilesyncdb_crdt::{ActorId, HybridClock, LastWriterWins, Record, RecordError, Value};

use crate::client::error::ApplyError;
use crate::client::queue::WriteQueue;
use crate::schema::FieldType;
use crate::sync::{DeltaState, PullBatch, RecordDelta, RecordRef, WireScope};

/// A visible row: field values by name; unset fields are absent.
pub type LocalRow = BTreeMap<String, Value>;

/// One record as the device stores it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LocalRecord {
    /// Saved automerge bytes: storage chunks concatenated, oldest first.
    pub bytes: Vec<u8>,
    /// The visible row (as last written locally or received from the server).
    pub row: LocalRow,
    /// The sequence number of the latest server change stored; 0 for a record
    /// created here and not yet received back.
    pub seq: u64,
    pub deleted: bool,
    /// Local edits not yet confirmed echoed by the server.
    pub pending: bool,
}

/// One table of the replica.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LocalTable {
    /// The table's fields and types, as the server last sent them (empty before
    /// the first batch of the table).
    pub fields: Vec<(String, FieldType)>,
    /// Where each field's values are in record documents (a renamed field keeps
    /// its first name as its key); empty when every key is the field's name.
    pub keys: Vec<String>,
    pub records: BTreeMap<String, LocalRecord>,
}

impl LocalTable {
    /// The document key of the field `name`.
    pub fn key_of<'a>(&'a self, name: &'a str) -> &'a str {
        self.fields
            .iter()
            .position(|(field, _)| field == name)
            .and_then(|position| self.keys.get(position))
            .map_or(name, String::as_str)
    }
}

/// Everything a device persists to sync: records, sync position, clock, actor
/// and the offline write queue. Plain data: tests build one by hand.
#[derive(Clone, Debug)]
pub struct Replica {
    pub device: String,
    /// This device's automerge actor: every local change is made by it, so it
    /// writes one linear history. Persisted with the replica, never shared.
    pub actor: ActorId,
    /// Stamps local writes.
    pub clock: HybridClock,
    /// Everything up to this server sequence number is stored.
    pub cursor: u64,
    /// Every record is complete up to this sequence number: the `base` of the
    /// last batch stored (it trails `cursor` while a pull is cut into batches).
    pub base: u64,
    /// The checksum of the last batch stored, for the acknowledgement.
    pub checksum: u32,
    pub scope: Vec<WireScope>,
    pub tables: BTreeMap<String, LocalTable>,
    /// Records to ask the server for whole: changes arrived for a record not
    /// held here, or a rejected push left a local copy the server disagrees with.
    pub fetch: BTreeSet<RecordRef>,
    /// Records whose local edits the server refused: their local copy holds
    /// changes the server will never accept, so local writes to them wait until
    /// the fetch of their server copy has been answered.
    pub refused: BTreeSet<RecordRef>,
    /// Records whose changes the server held back for the power profile (a
    /// low-priority table, a large payload): fetched whole when the power
    /// mode allows. Until then their local copy is left as it was.
    pub deferred: BTreeSet<RecordRef>,
    /// For records with pushed edits: the server sequence number at or after
    /// which the server's version holds them. A batch bringing the record at that
    /// number or later (with nothing of it left in the queue) ends `pending`.
    pub confirm: BTreeMap<RecordRef, u64>,
    pub queue: WriteQueue,
    /// The schema version the stored rows are shaped in (the app's, when it
    /// states one).
    pub schema_version: Option<u32>,
}

impl Replica {
    /// An empty replica for `device`, writing as `actor`.
    pub fn new(device: impl Into<String>, actor: ActorId, scope: Vec<WireScope>) -> Replica {
        let hex = actor.to_hex_string();
        let prefix = hex.get(..16).unwrap_or(&hex).to_owned();
        Replica {
            device: device.into(),
            actor,
            clock: HybridClock::default(),
            cursor: 0,
            base: 0,
            checksum: 0,
            tables: scope
                .iter()
                .map(|table| (table.table.clone(), LocalTable::default()))
                .collect(),
            scope,
            fetch: BTreeSet::new(),
            refused: BTreeSet::new(),
            deferred: BTreeSet::new(),
            confirm: BTreeMap::new(),
            queue: WriteQueue::new(prefix),
            schema_version: None,
        }
    }

    /// Moves the replica to the app's schema version. Rows stored under another
    /// version have another shape (names, types, fields), so a change of version
    /// syncs again from the start: documents merge with what is held, local
    /// edits stay queued, and every row comes whole in the new shape. Returns
    /// whether it restarted.
    pub fn restate_schema(&mut self, version: Option<u32>) -> bool {
        if self.schema_version == version {
            return false;
        }
        let restart = self.cursor > 0;
        if restart {
            self.cursor = 0;
            self.base = 0;
            self.checksum = 0;
            for table in self.tables.values_mut() {
                table.fields.clear();
                table.keys.clear();
                // Held records take the new shape when the server sends them.
                for record in table.records.values_mut() {
                    record.seq = 0;
                }
            }
        }
        self.schema_version = version;
        restart
    }

    /// The stored record, live or deleted.
    pub fn record(&self, table: &str, id: &str) -> Option<&LocalRecord> {
        self.tables.get(table)?.records.get(id)
    }

    /// The visible row of a live record.
    pub fn get(&self, table: &str, id: &str) -> Option<&LocalRow> {
        self.record(table, id)
            .filter(|record| !record.deleted)
            .map(|record| &record.row)
    }

    /// The live rows of `table`, by id.
    pub fn rows(&self, table: &str) -> impl Iterator<Item = (&str, &LocalRow)> {
        self.tables
            .get(table)
            .into_iter()
            .flat_map(|table| &table.records)
            .filter(|(_, record)| !record.deleted)
            .map(|(id, record)| (id.as_str(), &record.row))
    }

    /// Stores a batch in one step (planning and committing here): what the client
    /// does off its async threads, for tests and synchronous callers.
    /// `requested` is the `fetch` list of the pull that brought the batch.
    ///
    /// # Errors
    ///
    /// [`ApplyError`]; the replica is unchanged then.
    pub fn apply_batch(
        &mut self,
        batch: &PullBatch,
        requested: &[RecordRef],
    ) -> Result<BatchOutcome, ApplyError> {
        let snapshot = BatchSnapshot::of(self, batch);
        let planned = plan(batch, snapshot, requested)?;
        Ok(self.commit(planned))
    }

    /// Swaps a planned batch in: records, fields, fetch set and cursor together.
    pub(crate) fn commit(&mut self, planned: PlannedBatch) -> BatchOutcome {
        for (table, fields, keys) in planned.fields {
            let local = self.tables.entry(table).or_default();
            local.fields = fields;
            local.keys = keys;
        }
        for (key, action) in planned.actions {
            self.act(key, action);
        }
        for key in &planned.requested {
            self.fetch.remove(key);
            self.refused.remove(key);
            self.deferred.remove(key);
        }
        self.fetch.extend(planned.fetch_later);
        self.deferred.extend(planned.deferred);
        self.cursor = planned.next_cursor;
        self.base = planned.base;
        self.checksum = planned.checksum;
        planned.outcome
    }

    fn act(&mut self, key: RecordRef, action: Action) {
        let table = self.tables.entry(key.table.clone()).or_default();
        match action {
            Action::Remove => {
                table.records.remove(&key.id);
                self.confirm.remove(&key);
                self.deferred.remove(&key);
            }
            Action::Store(stored) => {
                let record = table.records.entry(key.id.clone()).or_default();
                match stored.bytes {
                    Bytes::Append(bytes) => record.bytes.extend_from_slice(&bytes),
                    Bytes::Replace(bytes) => record.bytes = bytes,
                }
                match stored.row {
                    RowChange::Overlay(fields) => overlay(&mut record.row, fields),
                    RowChange::Replace(row) => record.row = row,
                }
                record.seq = stored.seq;
                record.deleted = stored.deleted;
                record.pending = stored.pending;
                if !stored.pending {
                    self.confirm.remove(&key);
                }
            }
        }
    }

    /// Pending records whose pushed edits the server confirmed at or before the
    /// cursor, with nothing left in the queue: their echo arrived while they were
    /// still queued, so their row may be a local guess. Asks for them whole and
    /// returns how many. Forgets confirmations of records no longer pending.
    pub fn refetch_confirmed(&mut self) -> usize {
        let tables = &self.tables;
        self.confirm.retain(|key, _| {
            tables
                .get(&key.table)
                .and_then(|table| table.records.get(&key.id))
                .is_some_and(|record| record.pending)
        });
        let stale: Vec<RecordRef> = self
            .confirm
            .iter()
            .filter(|(key, seq)| {
                **seq <= self.base
                    && !self.fetch.contains(*key)
                    // A deferred echo is fetched whole when the power mode allows.
                    && !self.deferred.contains(*key)
                    && !self.queue.has_ops_for(&key.table, &key.id)
            })
            .map(|(key, _)| key.clone())
            .collect();
        let count = stale.len();
        self.fetch.extend(stale);
        count
    }
}

/// Sets the `Some` fields of a batch row; a null value unsets the field.
fn overlay(row: &mut LocalRow, fields: Vec<(String, Value)>) {
    for (name, value) in fields {
        if value.is_null() {
            row.remove(&name);
        } else {
            row.insert(name, value);
        }
    }
}

/// What storing a batch did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BatchOutcome {
    /// Records in the batch.
    pub records: usize,
    /// Records already stored at that sequence number or later: skipped.
    pub skipped: usize,
    /// Records with pending local edits, merged by loading their documents.
    pub merged: usize,
    /// Changes to records not held here, to fetch whole on the next pull.
    pub fetch_later: usize,
    /// Records the server deferred (or changes to records still deferred),
    /// to fetch whole when the power mode allows.
    pub deferred: usize,
    pub next_cursor: u64,
    pub has_more: bool,
}

/// What a batch needs to know of the records it touches.
#[derive(Clone, Debug, Default)]
pub(crate) struct BatchSnapshot {
    held: BTreeMap<RecordRef, Held>,
    /// Records of the batch still deferred: their changes wait for the fetch.
    deferred: BTreeSet<RecordRef>,
}

#[derive(Clone, Debug)]
struct Held {
    seq: u64,
    pending: bool,
    /// Ops of the record wait in the queue.
    queued: bool,
    confirm: Option<u64>,
    /// Saved bytes, kept only for pending records (they are merged).
    bytes: Option<Vec<u8>>,
}

impl BatchSnapshot {
    /// The state of every record `batch` touches.
    pub(crate) fn of(replica: &Replica, batch: &PullBatch) -> BatchSnapshot {
        let mut queued: Option<BTreeSet<(&str, &str)>> = None;
        let mut held = BTreeMap::new();
        let mut deferred = BTreeSet::new();
        for table in &batch.tables {
            for delta in &table.records {
                let key = || RecordRef {
                    table: table.table.clone(),
                    id: delta.id.clone(),
                };
                // Most replicas hold nothing deferred: no key is made for them.
                if !replica.deferred.is_empty() && replica.deferred.contains(&key()) {
                    deferred.insert(key());
                }
                let Some(record) = replica.record(&table.table, &delta.id) else {
                    continue;
                };
                let key = key();
                let queued = record.pending && {
                    let set = queued.get_or_insert_with(|| queued_records(&replica.queue));
                    set.contains(&(key.table.as_str(), key.id.as_str()))
                };
                let state = Held {
                    seq: record.seq,
                    pending: record.pending,
                    queued,
                    confirm: replica.confirm.get(&key).copied(),
                    bytes: record.pending.then(|| record.bytes.clone()),
                };
                held.insert(key, state);
            }
        }
        BatchSnapshot { held, deferred }
    }
}

fn queued_records(queue: &WriteQueue) -> BTreeSet<(&str, &str)> {
    queue
        .ops
        .iter()
        .map(|queued| (queued.op.table.as_str(), queued.op.id.as_str()))
        .collect()
}

/// A table's fields and their document keys, as a batch gave them.
type TableFields = (String, Vec<(String, FieldType)>, Vec<String>);

/// A batch ready to be swapped in by [`Replica::commit`].
#[derive(Debug)]
pub(crate) struct PlannedBatch {
    fields: Vec<TableFields>,
    actions: Vec<(RecordRef, Action)>,
    requested: Vec<RecordRef>,
    fetch_later: Vec<RecordRef>,
    deferred: Vec<RecordRef>,
    next_cursor: u64,
    base: u64,
    checksum: u32,
    outcome: BatchOutcome,
}

#[derive(Debug)]
enum Action {
    Remove,
    Store(Stored),
}

#[derive(Debug)]
struct Stored {
    bytes: Bytes,
    row: RowChange,
    seq: u64,
    deleted: bool,
    pending: bool,
}

#[derive(Debug)]
enum Bytes {
    Append(Vec<u8>),
    Replace(Vec<u8>),
}

#[derive(Debug)]
enum RowChange {
    Overlay(Vec<(String, Value)>),
    Replace(LocalRow),
}

/// Works out what storing `batch` does to each record, loading documents only
/// for records with pending local edits. CPU-bound: run it off async threads.
///
/// # Errors
///
/// [`ApplyError`] for a malformed row or a merge automerge refuses.
pub(crate) fn plan(
    batch: &PullBatch,
    mut snapshot: BatchSnapshot,
    requested: &[RecordRef],
) -> Result<PlannedBatch, ApplyError> {
    let requested_set: BTreeSet<&RecordRef> = requested.iter().collect();
    let mut planned = PlannedBatch {
        fields: Vec::with_capacity(batch.tables.len()),
        actions: Vec::with_capacity(batch.len()),
        requested: requested.to_vec(),
        fetch_later: Vec::new(),
        deferred: batch.deferred.clone(),
        next_cursor: batch.next_cursor,
        base: batch.base,
        checksum: batch.checksum,
        outcome: BatchOutcome {
            records: batch.len(),
            deferred: batch.deferred.len(),
            next_cursor: batch.next_cursor,
            has_more: batch.has_more,
            ..BatchOutcome::default()
        },
    };
    for table in &batch.tables {
        let keys = if table
            .keys
            .iter()
            .zip(&table.fields)
            .all(|(key, (name, _))| key == name)
        {
            Vec::new()
        } else {
            table.keys.clone()
        };
        planned
            .fields
            .push((table.table.clone(), table.fields.clone(), keys));
        for delta in &table.records {
            let key = RecordRef {
                table: table.table.clone(),
                id: delta.id.clone(),
            };
            let fetched = requested_set.contains(&key);
            if !fetched
                && !delta.whole
                && delta.state != DeltaState::Left
                && snapshot.deferred.contains(&key)
            {
                // Its copy lacks the deferred changes these build on: it stays
                // deferred, and the fetch brings everything whole.
                planned.outcome.deferred += 1;
                continue;
            }
            let held = snapshot.held.get(&key);
            if held.is_some_and(|held| delta.seq <= held.seq && !fetched) {
                planned.outcome.skipped += 1;
                continue;
            }
            match decide(&key, (&table.fields, &table.keys), delta, held)? {
                Decision::FetchLater => {
                    planned.outcome.fetch_later += 1;
                    planned.fetch_later.push(key);
                }
                Decision::Act(action, merged) => {
                    planned.outcome.merged += usize::from(merged);
                    // A record listed twice (fetched, then changed) is stored once.
                    let now_held = match &action {
                        Action::Remove => None,
                        Action::Store(stored) => Some(Held {
                            seq: stored.seq,
                            pending: stored.pending,
                            queued: held.is_some_and(|held| held.queued),
                            confirm: held.and_then(|held| held.confirm),
                            bytes: None,
                        }),
                    };
                    match now_held {
                        Some(state) => snapshot.held.insert(key.clone(), state),
                        None => snapshot.held.remove(&key),
                    };
                    planned.actions.push((key, action));
                }
            }
        }
    }
    Ok(planned)
}

enum Decision {
    FetchLater,
    /// The action, and whether a document was loaded for it.
    Act(Action, bool),
}

/// A table's fields, and their document keys.
type FieldKeys<'a> = (&'a [(String, FieldType)], &'a [String]);

fn decide(
    key: &RecordRef,
    (fields, keys): FieldKeys<'_>,
    delta: &RecordDelta,
    held: Option<&Held>,
) -> Result<Decision, ApplyError> {
    if delta.row.len() != fields.len() {
        return Err(ApplyError::RowLength {
            table: key.table.clone(),
            id: key.id.clone(),
            expected: fields.len(),
            found: delta.row.len(),
        });
    }
    if delta.state == DeltaState::Left {
        return Ok(Decision::Act(Action::Remove, false));
    }
    let deleted = delta.state == DeltaState::Deleted;
    let server_row = || server_row(fields, delta);
    let stored = match held {
        _ if delta.unresolved => return Ok(Decision::FetchLater),
        None if !delta.whole => return Ok(Decision::FetchLater),
        Some(held) if held.pending => return merge(key, (fields, keys), delta, held),
        None | Some(_) => Stored {
            bytes: if delta.whole {
                Bytes::Replace(delta.payload.clone())
            } else {
                Bytes::Append(delta.payload.clone())
            },
            row: server_row(),
            seq: delta.seq,
            deleted,
            pending: false,
        },
    };
    Ok(Decision::Act(Action::Store(stored), false))
}

/// The row the server sent: the whole row when every field came (a record new
/// to the client, or in a new shape), the fields it sent over the held row
/// otherwise.
fn server_row(fields: &[(String, FieldType)], delta: &RecordDelta) -> RowChange {
    let sent = sent_fields(fields, delta);
    if delta.row.iter().all(Option::is_some) {
        RowChange::Replace(
            sent.into_iter()
                .filter(|(_, value)| !value.is_null())
                .collect(),
        )
    } else {
        RowChange::Overlay(sent)
    }
}

/// The fields the server sent (`Some`), by name.
fn sent_fields(fields: &[(String, FieldType)], delta: &RecordDelta) -> Vec<(String, Value)> {
    fields
        .iter()
        .zip(&delta.row)
        .filter_map(|((name, _), value)| Some((name.clone(), value.clone()?)))
        .collect()
}

/// A record with pending local edits: load it, merge the incoming bytes, save.
/// When the batch brings the server's version of every pushed edit, the row
/// becomes the server's; otherwise it is derived from the merged document.
fn merge(
    key: &RecordRef,
    (fields, keys): FieldKeys<'_>,
    delta: &RecordDelta,
    held: &Held,
) -> Result<Decision, ApplyError> {
    let failed = |source| ApplyError::Merge {
        table: key.table.clone(),
        id: key.id.clone(),
        source,
    };
    // One strict load of the local bytes followed by the payload: automerge's
    // incremental load would take unreadable bytes as a partial load and keep
    // changes with missing dependencies that a save then drops.
    let local = held.bytes.as_deref().unwrap_or_default();
    let mut bytes = Vec::with_capacity(local.len() + delta.payload.len());
    bytes.extend_from_slice(local);
    bytes.extend_from_slice(&delta.payload);
    let record = Record::load(&bytes).map_err(failed)?;
    let missing = record.missing_deps().len();
    if missing > 0 {
        return Err(failed(RecordError::MissingDependencies { missing }));
    }
    let confirmed = !held.queued && held.confirm.is_some_and(|seq| delta.seq >= seq);
    let (row, deleted) = if confirmed {
        let row = server_row(fields, delta);
        (row, delta.state == DeltaState::Deleted)
    } else {
        let row = derive_row(&record, fields, keys).map_err(failed)?;
        (RowChange::Replace(row), record.is_deleted())
    };
    let bytes = Bytes::Replace(record.save());
    let stored = Stored {
        bytes,
        row,
        seq: delta.seq.max(held.seq),
        deleted,
        pending: !confirmed,
    };
    Ok(Decision::Act(Action::Store(stored), true))
}

/// The row a document shows by last-writer-wins (the client does not know the
/// server's policies: the server's row replaces this guess once it echoes the
/// record). Without a field list, every field of the document. Fields are
/// read under their document keys (`keys`, empty when every key is the name)
/// and converted to their types, as the server reads them.
///
/// # Errors
///
/// [`RecordError`](mobilesyncdb_crdt::RecordError) when a field cannot be read.
pub fn derive_row(
    record: &Record,
    fields: &[(String, FieldType)],
    keys: &[String],
) -> Result<LocalRow, mobilesyncdb_crdt::RecordError> {
    let names: Vec<(String, String, Option<FieldType>)> = if fields.is_empty() {
        record
            .field_names()
            .into_iter()
            .map(|name| (name.clone(), name, None))
            .collect()
    } else {
        fields
            .iter()
            .enumerate()
            .map(|(position, (name, kind))| {
                let key = keys.get(position).unwrap_or(name);
                (name.clone(), key.clone(), Some(*kind))
            })
            .collect()
    };
    let mut row = LocalRow::new();
    for (name, key, kind) in names {
        let value = record.resolve(&key, &LastWriterWins)?.value;
        let value = match kind {
            Some(kind) => kind.read(value),
            None => value,
        };
        if !value.is_null() {
            row.insert(name, value);
        }
    }
    Ok(row)
}

#[cfg(test)]
mod tests {
    use mobilesyncdb_crdt::{Edit, Stamp, StampMeta};

    use super::*;
    use crate::sync::TableBatch;

    const FIELDS: [(&str, FieldType); 3] = [
        ("id", FieldType::String),
        ("title", FieldType::String),
        ("done", FieldType::Boolean),
    ];

    fn fields() -> Vec<(String, FieldType)> {
        FIELDS
            .iter()
            .map(|(name, kind)| ((*name).to_owned(), *kind))
            .collect()
    }

    fn server_record(id: &str, title: &str) -> Record {
        let mut record = Record::new(ActorId::from(b"server-actor-000".to_vec()));
        let meta = StampMeta::new(Stamp::at(1_000), "server");
        record
            .write(&[Edit::set("id", id), Edit::set("title", title)], &meta)
            .expect("write");
        record
    }

    fn delta(
        id: &str,
        seq: u64,
        payload: Vec<u8>,
        whole: bool,
        title: Option<&str>,
    ) -> RecordDelta {
        RecordDelta {
            id: id.to_owned(),
            seq,
            state: DeltaState::Live,
            payload,
            whole,
            row: vec![Some(Value::str(id)), title.map(Value::str), None],
            unresolved: false,
        }
    }

    fn batch(from: u64, next: u64, records: Vec<RecordDelta>) -> PullBatch {
        PullBatch {
            from,
            next_cursor: next,
            has_more: false,
            base: next,
            catch_up: false,
            checksum: 7,
            tables: vec![TableBatch {
                table: "todos".into(),
                keys: fields().into_iter().map(|(name, _)| name).collect(),
                fields: fields(),
                records,
            }],
            deferred: Vec::new(),
            hint: None,
        }
    }

    fn replica() -> Replica {
        Replica::new(
            "phone",
            ActorId::from(b"phone-actor-0000".to_vec()),
            vec![WireScope::all("todos")],
        )
    }

    fn key(id: &str) -> RecordRef {
        RecordRef {
            table: "todos".into(),
            id: id.into(),
        }
    }

    #[test]
    fn changes_are_appended_and_rows_overlaid_without_loading_documents() {
        let mut replica = replica();
        let mut server = server_record("a", "first");
        let first = batch(
            0,
            1,
            vec![delta("a", 1, server.save(), true, Some("first"))],
        );
        replica.apply_batch(&first, &[]).expect("stored");
        let heads = server.heads();
        let meta = StampMeta::new(Stamp::at(2_000), "server");
        server
            .write(&[Edit::set("title", "second")], &meta)
            .expect("write");
        let change = server.save_after(&heads);
        let second = batch(1, 2, vec![delta("a", 2, change, false, Some("second"))]);
        let outcome = replica.apply_batch(&second, &[]).expect("stored");
        assert_eq!(outcome.merged, 0);
        let stored = replica.record("todos", "a").expect("held");
        assert_eq!(stored.row.get("title"), Some(&Value::str("second")));
        assert_eq!(stored.row.get("id"), Some(&Value::str("a")));
        assert_eq!(stored.seq, 2);
        let loaded = Record::load(&stored.bytes).expect("the appended bytes load");
        assert_eq!(loaded.heads(), server.heads());
        assert_eq!((replica.cursor, replica.checksum), (2, 7));
    }

    #[test]
    fn a_deferred_record_keeps_its_copy_until_it_is_fetched_whole() {
        let mut replica = replica();
        let mut server = server_record("a", "first");
        let first = batch(
            0,
            1,
            vec![delta("a", 1, server.save(), true, Some("first"))],
        );
        replica.apply_batch(&first, &[]).expect("stored");
        // The server held back the record's next change (a large payload).
        let heads = server.heads();
        let meta = StampMeta::new(Stamp::at(2_000), "server");
        server
            .write(&[Edit::set("title", "second")], &meta)
            .expect("write");
        let mut held_back = batch(1, 2, Vec::new());
        held_back.deferred = vec![key("a")];
        let outcome = replica.apply_batch(&held_back, &[]).expect("stored");
        assert_eq!(outcome.deferred, 1);
        assert!(replica.deferred.contains(&key("a")));
        // A later change arrives as a delta: it builds on the deferred one, so
        // the copy is left as it was rather than given a gap.
        let later_heads = server.heads();
        server
            .write(
                &[Edit::set("done", true)],
                &StampMeta::new(Stamp::at(3_000), "server"),
            )
            .expect("write");
        let after_gap = batch(
            2,
            3,
            vec![delta("a", 3, server.save_after(&later_heads), false, None)],
        );
        let outcome = replica.apply_batch(&after_gap, &[]).expect("stored");
        assert_eq!(outcome.deferred, 1);
        let stored = replica.record("todos", "a").expect("held");
        assert_eq!(stored.row.get("title"), Some(&Value::str("first")));
        assert_eq!(stored.seq, 1);
        assert_ne!(server.save_after(&heads), Vec::<u8>::new());
        // Fetched by name, it comes whole and is no longer deferred.
        let fetched = batch(
            3,
            3,
            vec![delta("a", 3, server.save(), true, Some("second"))],
        );
        replica.apply_batch(&fetched, &[key("a")]).expect("stored");
        assert!(replica.deferred.is_empty());
        let stored = replica.record("todos", "a").expect("held");
        assert_eq!(stored.row.get("title"), Some(&Value::str("second")));
        assert_eq!(
            Record::load(&stored.bytes).expect("loads").heads(),
            server.heads()
        );
    }

    #[test]
    fn a_deferred_record_that_leaves_the_scope_leaves_at_once() {
        let mut replica = replica();
        let server = server_record("a", "first");
        let first = batch(
            0,
            1,
            vec![delta("a", 1, server.save(), true, Some("first"))],
        );
        replica.apply_batch(&first, &[]).expect("stored");
        let mut held_back = batch(1, 2, Vec::new());
        held_back.deferred = vec![key("a")];
        replica.apply_batch(&held_back, &[]).expect("stored");
        let mut left = delta("a", 3, Vec::new(), false, None);
        left.state = DeltaState::Left;
        left.row = vec![None; FIELDS.len()];
        replica
            .apply_batch(&batch(2, 3, vec![left]), &[])
            .expect("stored");
        assert!(replica.record("todos", "a").is_none());
        assert!(replica.deferred.is_empty());
    }

    #[test]
    fn a_batch_applied_twice_changes_nothing_the_second_time() {
        let mut replica = replica();
        let server = server_record("a", "first");
        let first = batch(
            0,
            1,
            vec![delta("a", 1, server.save(), true, Some("first"))],
        );
        replica.apply_batch(&first, &[]).expect("stored");
        let before = replica.tables.clone();
        let again = replica.apply_batch(&first, &[]).expect("stored again");
        assert_eq!(again.skipped, 1);
        assert_eq!(replica.tables, before);
    }

    #[test]
    fn changes_for_a_record_not_held_are_fetched_whole_later() {
        let mut replica = replica();
        let server = server_record("a", "first");
        let changes = server.save_after(&[]);
        let partial = batch(0, 3, vec![delta("a", 3, changes, false, Some("first"))]);
        let outcome = replica.apply_batch(&partial, &[]).expect("stored");
        assert_eq!(outcome.fetch_later, 1);
        assert!(replica.record("todos", "a").is_none());
        assert!(replica.fetch.contains(&key("a")));
        // The fetch brings it whole, even at a sequence number already seen.
        let whole = batch(
            3,
            3,
            vec![delta("a", 3, server.save(), true, Some("first"))],
        );
        replica.apply_batch(&whole, &[key("a")]).expect("stored");
        assert!(replica.fetch.is_empty());
        assert!(replica.get("todos", "a").is_some());
    }

    #[test]
    fn a_held_record_whose_changes_cannot_be_completed_is_fetched_whole_later() {
        let mut replica = replica();
        let server = server_record("a", "first");
        let first = batch(
            0,
            1,
            vec![delta("a", 1, server.save(), true, Some("first"))],
        );
        replica.apply_batch(&first, &[]).expect("stored");
        let held = replica.record("todos", "a").cloned().expect("held");
        let mut unresolved = delta("a", 2, Vec::new(), false, Some("second"));
        unresolved.unresolved = true;
        let outcome = replica
            .apply_batch(&batch(1, 2, vec![unresolved]), &[])
            .expect("stored");
        assert_eq!(outcome.fetch_later, 1);
        assert!(replica.fetch.contains(&key("a")));
        // Nothing of the incomplete change is stored: neither bytes nor row.
        assert_eq!(replica.record("todos", "a"), Some(&held));
    }

    #[test]
    fn a_record_that_left_the_scope_is_dropped() {
        let mut replica = replica();
        let server = server_record("a", "first");
        replica
            .apply_batch(
                &batch(
                    0,
                    1,
                    vec![delta("a", 1, server.save(), true, Some("first"))],
                ),
                &[],
            )
            .expect("stored");
        let mut left = delta("a", 2, Vec::new(), false, None);
        left.state = DeltaState::Left;
        left.row = vec![None, None, None];
        replica
            .apply_batch(&batch(1, 2, vec![left]), &[])
            .expect("stored");
        assert!(replica.record("todos", "a").is_none());
    }

    #[test]
    fn a_failing_batch_changes_nothing() {
        let mut replica = replica();
        let server = server_record("a", "first");
        let good = delta("b", 1, server_record("b", "x").save(), true, Some("x"));
        let mut bad = delta("a", 2, server.save(), true, Some("first"));
        bad.row.pop();
        let error = replica
            .apply_batch(&batch(0, 2, vec![good, bad]), &[])
            .expect_err("a row too short");
        assert!(matches!(error, ApplyError::RowLength { .. }));
        assert_eq!(replica.cursor, 0);
        assert!(replica.tables["todos"].records.is_empty());
    }

    #[test]
    fn pending_local_edits_survive_a_batch_for_their_record() {
        let mut replica = replica();
        let mut server = server_record("a", "first");
        replica
            .apply_batch(
                &batch(
                    0,
                    1,
                    vec![delta("a", 1, server.save(), true, Some("first"))],
                ),
                &[],
            )
            .expect("stored");
        // A local edit of `done`, not pushed yet.
        let stored = replica
            .tables
            .get_mut("todos")
            .and_then(|t| t.records.get_mut("a"));
        let stored = stored.expect("held");
        let mut local = Record::load(&stored.bytes).expect("load");
        local.set_actor(replica.actor.clone());
        let meta = StampMeta::new(Stamp::at(3_000), "phone");
        let change = local
            .write(&[Edit::set("done", true)], &meta)
            .expect("write");
        stored
            .bytes
            .extend_from_slice(change.expect("a change").raw_bytes());
        stored.row.insert("done".into(), Value::Bool(true));
        stored.pending = true;
        replica
            .queue
            .enqueue("todos", "a", Vec::new(), 10)
            .expect("room");
        // Meanwhile the server changed the title.
        let heads = server.heads();
        let meta = StampMeta::new(Stamp::at(2_000), "server");
        server
            .write(&[Edit::set("title", "second")], &meta)
            .expect("write");
        let whole = batch(
            1,
            2,
            vec![delta("a", 2, server.save(), true, Some("second"))],
        );
        let outcome = replica.apply_batch(&whole, &[]).expect("merged");
        assert_eq!(outcome.merged, 1);
        let stored = replica.record("todos", "a").expect("held");
        assert!(stored.pending);
        assert_eq!(stored.row.get("title"), Some(&Value::str("second")));
        assert_eq!(stored.row.get("done"), Some(&Value::Bool(true)));
        let merged = Record::load(&stored.bytes).expect("load");
        assert_eq!(merged.changes_since(&heads).len(), 2, "both edits are kept");
    }
}

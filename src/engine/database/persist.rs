//! The engine's side of durability: what a write logs, how the journal's
//! entries and a snapshot are applied on restart, and how a snapshot is cut.
//!
//! Frames are appended while the write lock is held, so the journal lists
//! writes in the order they were made; writers wait for durability after the
//! lock is released, so one `fsync` acknowledges every writer that queued
//! behind it.

use std::borrow::Cow;
use std::sync::{Arc, RwLockWriteGuard};

use mobilesyncdb_crdt::{ClientId, Stamp};

use super::state::{State, chunk_cost};
use super::{Database, EngineError};
use crate::engine::audit::{ConflictRecord, Event};
use crate::engine::changelog::{Chunk, LogEntry};
use crate::engine::error::WriteError;
use crate::engine::row::Row;
use crate::engine::table::{StoredChunk, StoredRecord, Table};
use crate::schema::TableSchema;
use crate::storage::entry::{
    Bytes, ChunkEntry, Entry, LogEntryEntry, RecordEntry, SNAPSHOT_FORMAT, SnapshotStart,
    WriteEntry,
};
use crate::storage::{Journal, StorageError};

/// Records per snapshot frame: large enough that frame overhead vanishes,
/// small enough that a frame stays a few hundred KiB.
const RECORDS_PER_FRAME: usize = 1_024;

impl Database {
    /// Runs a write under the lock, then waits (unless `defer`) until the
    /// journal has it durable. Refused up front while storage is failing.
    pub(super) fn commit<T, E: Into<EngineError>>(
        &self,
        defer: bool,
        write: impl FnOnce(&mut State) -> Result<T, E>,
    ) -> Result<T, EngineError> {
        let journal = self.journal.get();
        if let Some(journal) = journal {
            journal.check_healthy().map_err(storage_error)?;
        }
        let (result, lsn, latest) = {
            let mut state = self.write();
            let result = write(&mut state);
            let latest = (state.log.latest_seq(), state.events.latest_id());
            (result, state.pending_lsn.take(), latest)
        };
        self.watches.announce(latest.0, latest.1);
        let outcome = result.map_err(Into::into)?;
        if let (Some(journal), Some(lsn), false) = (journal, lsn, defer) {
            journal.wait(lsn).map_err(storage_error)?;
        }
        Ok(outcome)
    }

    /// Waits until every write made so far is durable: what a caller of
    /// [`Writer::deferred`](super::Writer::deferred) does before it answers.
    ///
    /// # Errors
    ///
    /// [`WriteError::Storage`] when storage failed before they were.
    pub fn acknowledge(&self) -> Result<(), EngineError> {
        match self.journal.get() {
            Some(journal) => journal.wait_all().map_err(storage_error),
            None => Ok(()),
        }
    }

    /// Sets (or with `None` removes) a durable setting: kept with the data,
    /// logged and snapshotted like it, so it survives a restart. Values are JSON.
    ///
    /// # Errors
    ///
    /// [`WriteError::Storage`] when storage refuses writes.
    pub fn put_setting(&self, key: &str, value: Option<String>) -> Result<(), EngineError> {
        self.store_setting(key, value, false)
    }

    /// As [`Database::put_setting`], without waiting for the setting to be
    /// durable: for progress markers where losing the last few to a crash
    /// only repeats work (a webhook endpoint's delivered position).
    ///
    /// # Errors
    ///
    /// [`WriteError::Storage`] when storage refuses writes.
    pub fn put_setting_eventually(
        &self,
        key: &str,
        value: Option<String>,
    ) -> Result<(), EngineError> {
        self.store_setting(key, value, true)
    }

    fn store_setting(
        &self,
        key: &str,
        value: Option<String>,
        defer: bool,
    ) -> Result<(), EngineError> {
        self.commit(defer, |state| {
            if let Some(journal) = &state.journal {
                let entry = Entry::Setting {
                    key: Cow::Borrowed(key),
                    value: value.as_deref().map(Cow::Borrowed),
                };
                state.pending_lsn = Some(journal.append(&entry.encode(), None));
            }
            match value {
                Some(value) => state.settings.insert(key.to_owned(), value),
                None => state.settings.remove(key),
            };
            Ok::<(), EngineError>(())
        })
    }

    /// The durable settings whose key starts with `prefix`, in key order.
    pub fn settings(&self, prefix: &str) -> Vec<(String, String)> {
        self.read()
            .settings
            .range(prefix.to_owned()..)
            .take_while(|(key, _)| key.starts_with(prefix))
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect()
    }

    /// The journal, once storage is attached.
    pub(crate) fn journal(&self) -> Option<&Journal> {
        self.journal.get()
    }

    /// Makes every later write go to `journal`.
    pub(crate) fn attach_journal(&self, journal: Journal) {
        let mut state = self.write();
        state.journal = Some(journal.clone());
        let _ = self.journal.set(journal);
    }

    /// The latest sequence number a pull may serve: every change up to it is
    /// durable, so a client's cursor never passes a change a crash could lose.
    pub(crate) fn durable_seq(&self, latest: u64) -> u64 {
        self.journal
            .get()
            .map_or(latest, |journal| journal.durable_seq().min(latest))
    }

    /// Applies restored entries to an empty database.
    pub(crate) fn restore(&self) -> Restore<'_> {
        Restore {
            state: self.write(),
            latest_stamp: Stamp::default(),
        }
    }

    /// Copies the engine's state for a snapshot under the read lock, then
    /// runs `cut` still under it (so no write slips between the copy and the
    /// journal position `cut` gives). Ids and rows are copied; change bytes are
    /// shared, not copied. The copy is encoded after the lock is released, so
    /// writers wait for the copy only.
    ///
    /// # Errors
    ///
    /// `cut`'s error.
    pub(crate) fn snapshot_copy<T>(
        &self,
        created_ms: u64,
        cut: impl FnOnce() -> Result<T, StorageError>,
    ) -> Result<(EngineCopy, T), StorageError> {
        let state = self.read();
        let clock = state.clock.last();
        let tables = state
            .tables
            .iter()
            .map(|table| {
                table
                    .records()
                    .iter()
                    .enumerate()
                    .map(|(slot, record)| RecordCopy {
                        id: record.id.clone(),
                        first_seq: record.first_seq,
                        latest_seq: record.latest_seq,
                        deleted: record.deleted,
                        open_conflict: table.has_open_conflict(slot as u32),
                        conflicted: table.is_conflicted(slot as u32),
                        row: record.row.encoded().into(),
                        chunks: record
                            .chunks
                            .iter()
                            .map(|chunk| (chunk.seq, Arc::clone(&chunk.bytes)))
                            .collect(),
                    })
                    .collect()
            })
            .collect();
        let log = state
            .log
            .iter()
            .map(|entry| LogCopy {
                seq: entry.seq,
                table: entry.table,
                slot: entry.slot,
                stamp: entry.stamp,
                origin: entry.origin.clone(),
                change: (!shared_with_record(&state.tables, entry))
                    .then(|| Arc::clone(&entry.change)),
            })
            .collect();
        let copy = EngineCopy {
            start: SnapshotStart {
                format: SNAPSHOT_FORMAT,
                latest_seq: state.log.latest_seq(),
                clock_ms: clock.physical_ms,
                clock_logical: clock.logical,
                created_ms,
            },
            settings: state
                .settings
                .iter()
                .map(|(key, value)| (key.clone(), value.clone()))
                .collect(),
            schemas: state
                .tables
                .iter()
                .map(|table| serde_json::to_string(&table.schema).expect("schemas serialize"))
                .collect(),
            history: serde_json::to_string(&state.history).expect("schema histories serialize"),
            tables,
            log,
            conflicts: (state.conflicts.last_id(), state.conflicts.all()),
            events: (state.events.latest_id(), state.events.all()),
        };
        let cut = cut()?;
        Ok((copy, cut))
    }
}

/// The engine's state as a snapshot holds it, copied out from under the lock.
#[derive(Debug)]
pub(crate) struct EngineCopy {
    start: SnapshotStart,
    settings: Vec<(String, String)>,
    schemas: Vec<String>,
    history: String,
    tables: Vec<Vec<RecordCopy>>,
    log: Vec<LogCopy>,
    conflicts: (u64, Vec<ConflictRecord>),
    events: (u64, Vec<Event>),
}

#[derive(Debug)]
struct RecordCopy {
    id: Box<str>,
    first_seq: u64,
    latest_seq: u64,
    deleted: bool,
    open_conflict: bool,
    conflicted: bool,
    row: Box<[u8]>,
    chunks: Vec<(u64, Chunk)>,
}

#[derive(Debug)]
struct LogCopy {
    seq: u64,
    table: u16,
    slot: u32,
    stamp: Stamp,
    origin: ClientId,
    /// `None` when the bytes are the record's chunk of the same sequence number.
    change: Option<Chunk>,
}

/// What a snapshot of the engine held.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct CopyCounts {
    pub(crate) tables: u64,
    pub(crate) records: u64,
    pub(crate) log_entries: u64,
}

impl EngineCopy {
    /// Encodes the copy as snapshot frames, in the order a restore reads them.
    ///
    /// # Errors
    ///
    /// `put`'s error.
    pub(crate) fn write(
        &self,
        put: &mut dyn FnMut(&Entry<'_>) -> Result<(), StorageError>,
    ) -> Result<CopyCounts, StorageError> {
        put(&Entry::SnapshotStart(self.start.clone()))?;
        put(&Entry::Settings(self.settings.clone()))?;
        for schema in &self.schemas {
            put(&Entry::Table {
                schema: Cow::Borrowed(schema),
            })?;
        }
        put(&Entry::SchemaHistory {
            history: Cow::Borrowed(&self.history),
        })?;
        let mut counts = CopyCounts {
            tables: self.tables.len() as u64,
            ..CopyCounts::default()
        };
        for (table_id, records) in self.tables.iter().enumerate() {
            let table = u16::try_from(table_id).unwrap_or(u16::MAX);
            for batch in records.chunks(RECORDS_PER_FRAME) {
                let records = batch
                    .iter()
                    .map(|record| RecordEntry {
                        id: Cow::Borrowed(&record.id),
                        first_seq: record.first_seq,
                        latest_seq: record.latest_seq,
                        deleted: record.deleted,
                        open_conflict: record.open_conflict,
                        conflicted: record.conflicted,
                        row: Cow::Borrowed(&record.row),
                        chunks: record
                            .chunks
                            .iter()
                            .map(|(seq, bytes)| (*seq, Bytes(Cow::Borrowed(bytes))))
                            .collect(),
                    })
                    .collect();
                counts.records += batch.len() as u64;
                put(&Entry::Records { table, records })?;
            }
        }
        for batch in self.log.chunks(RECORDS_PER_FRAME) {
            let batch = batch
                .iter()
                .map(|entry| LogEntryEntry {
                    seq: entry.seq,
                    table: entry.table,
                    slot: entry.slot,
                    ms: entry.stamp.physical_ms,
                    logical: entry.stamp.logical,
                    origin: Cow::Borrowed(entry.origin.as_str()),
                    bytes: entry
                        .change
                        .as_ref()
                        .map(|bytes| Bytes(Cow::Borrowed(bytes))),
                })
                .collect();
            put(&Entry::LogEntries(batch))?;
        }
        counts.log_entries = self.log.len() as u64;
        put(&Entry::Conflicts(
            self.conflicts.0,
            self.conflicts.1.clone(),
        ))?;
        put(&Entry::Events(self.events.0, self.events.1.clone()))?;
        Ok(counts)
    }
}

/// Whether a log entry's bytes are its record's chunk of the same sequence
/// number (written once in a snapshot, shared again on load).
fn shared_with_record(tables: &[Table], entry: &LogEntry) -> bool {
    tables
        .get(usize::from(entry.table))
        .and_then(|table| table.records().get(entry.slot as usize))
        .is_some_and(|record| {
            record
                .chunks
                .iter()
                .any(|chunk| chunk.seq == entry.seq && Arc::ptr_eq(&chunk.bytes, &entry.change))
        })
}

pub(super) fn storage_error(error: StorageError) -> EngineError {
    error.into()
}

impl From<StorageError> for EngineError {
    fn from(error: StorageError) -> EngineError {
        EngineError::Write(WriteError::Storage {
            reason: error.to_string(),
        })
    }
}

impl State {
    /// Adds a created (or restored) table.
    pub(super) fn add_table(&mut self, table: Table) {
        let id = u16::try_from(self.tables.len()).unwrap_or(u16::MAX);
        self.table_ids.insert(table.name().to_owned(), id);
        self.tables.push(table);
    }

    /// Logs a table's creation.
    pub(super) fn journal_table(&mut self, schema: &TableSchema) {
        if let Some(journal) = &self.journal {
            let schema = serde_json::to_string(schema).expect("schemas serialize");
            let entry = Entry::Table {
                schema: Cow::Owned(schema),
            };
            self.pending_lsn = Some(journal.append(&entry.encode(), None));
        }
    }

    /// Logs a schema version becoming current.
    pub(super) fn journal_schema(&mut self, doc: &crate::schema::SchemaDoc) {
        if let Some(journal) = &self.journal {
            let entry = Entry::Schema {
                doc: Cow::Owned(serde_json::to_string(doc).expect("schemas serialize")),
            };
            self.pending_lsn = Some(journal.append(&entry.encode(), None));
        }
    }

    /// Logs a change of the oldest schema version apps may state.
    pub(super) fn journal_min_client_version(&mut self, version: u32) {
        if let Some(journal) = &self.journal {
            let entry = Entry::MinClientVersion(version);
            self.pending_lsn = Some(journal.append(&entry.encode(), None));
        }
    }

    /// Logs a change of a table's policies.
    pub(super) fn journal_policies(&mut self, table_id: u16) {
        if let Some(journal) = &self.journal {
            let schema = &self.tables[usize::from(table_id)].schema;
            let entry = Entry::Policies {
                table: table_id,
                schema: Cow::Owned(serde_json::to_string(schema).expect("schemas serialize")),
            };
            self.pending_lsn = Some(journal.append(&entry.encode(), None));
        }
    }

    /// Logs a stored write: its new chunks and the row and liveness it left.
    pub(super) fn journal_write(
        &mut self,
        table_id: u16,
        slot: u32,
        chunks: &[(u64, Stamp, Chunk)],
        origin: &ClientId,
    ) {
        let Some(journal) = &self.journal else {
            return;
        };
        let table = &self.tables[usize::from(table_id)];
        let record = table.record(slot);
        let entry = Entry::Write(WriteEntry {
            table: table_id,
            id: Cow::Borrowed(&record.id),
            chunks: chunks
                .iter()
                .map(|(seq, stamp, bytes)| ChunkEntry {
                    seq: *seq,
                    ms: stamp.physical_ms,
                    logical: stamp.logical,
                    origin: Cow::Borrowed(origin.as_str()),
                    bytes: Cow::Borrowed(bytes),
                })
                .collect(),
            row: Cow::Borrowed(record.row.encoded()),
            deleted: record.deleted,
            open_conflict: table.has_open_conflict(slot),
            conflicted: table.is_conflicted(slot),
        });
        let seq = chunks.last().map(|(seq, _, _)| *seq);
        self.pending_lsn = Some(journal.append(&entry.encode(), seq));
    }
}

/// Applies restored entries to an empty database under its write lock.
pub(crate) struct Restore<'a> {
    state: RwLockWriteGuard<'a, State>,
    latest_stamp: Stamp,
}

impl std::fmt::Debug for Restore<'_> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Restore")
            .field("latest_seq", &self.state.log.latest_seq())
            .finish()
    }
}

impl Restore<'_> {
    /// The latest sequence number restored so far.
    pub(crate) fn latest_seq(&self) -> u64 {
        self.state.log.latest_seq()
    }

    /// A snapshot's first frame: where the sequence numbers and the clock resume.
    pub(crate) fn start(&mut self, start: &SnapshotStart) {
        self.state.log.resume_at(start.latest_seq);
        self.saw(Stamp {
            physical_ms: start.clock_ms,
            logical: start.clock_logical,
        });
    }

    /// A table, from a snapshot or the journal.
    ///
    /// # Errors
    ///
    /// What is wrong with the schema (a custom policy not registered, …).
    pub(crate) fn table(&mut self, schema: &str) -> Result<(), String> {
        let schema: TableSchema =
            serde_json::from_str(schema).map_err(|error| format!("a table schema: {error}"))?;
        if self.state.table_ids.contains_key(&schema.name) {
            return Err(format!("table `{}` is created twice", schema.name));
        }
        let mut table =
            Table::new(schema, &self.state.registry).map_err(|error| error.to_string())?;
        table.defer_indexes();
        self.state.history.amend(&table.schema);
        self.state.add_table(table);
        Ok(())
    }

    /// A schema version that became current.
    ///
    /// # Errors
    ///
    /// A document that does not read, or tables it cannot give their schemas.
    pub(crate) fn schema(&mut self, doc: &str) -> Result<(), String> {
        let doc: crate::schema::SchemaDoc =
            serde_json::from_str(doc).map_err(|error| format!("a schema version: {error}"))?;
        self.state
            .install(doc, true)
            .map(|_| ())
            .map_err(|error| error.to_string())
    }

    /// The oldest schema version apps may state.
    pub(crate) fn min_client_version(&mut self, version: u32) {
        self.state.history.set_min_client_version(version);
    }

    /// A snapshot's schema versions.
    ///
    /// # Errors
    ///
    /// A history that does not read.
    pub(crate) fn schema_history(&mut self, history: &str) -> Result<(), String> {
        self.state.history = serde_json::from_str(history)
            .map_err(|error| format!("the schema versions: {error}"))?;
        Ok(())
    }

    /// A snapshot's records of one table, in slot order.
    ///
    /// # Errors
    ///
    /// An unknown table.
    pub(crate) fn records(
        &mut self,
        table: u16,
        records: Vec<RecordEntry<'_>>,
    ) -> Result<(), String> {
        let state = &mut *self.state;
        let target = state
            .tables
            .get_mut(usize::from(table))
            .ok_or_else(|| format!("records of unknown table {table}"))?;
        for entry in records {
            let chunks: Vec<StoredChunk> = entry
                .chunks
                .into_iter()
                .map(|(seq, bytes)| StoredChunk {
                    seq,
                    bytes: Chunk::from(&*bytes.0),
                })
                .collect();
            for chunk in &chunks {
                state.document_bytes += chunk_cost(&chunk.bytes);
            }
            let record = StoredRecord {
                id: entry.id.as_ref().into(),
                chunks,
                first_seq: entry.first_seq,
                row: Row::from_encoded(entry.row.as_ref().into()),
                latest_seq: entry.latest_seq,
                deleted: entry.deleted,
            };
            let slot = target.restore_record(record, entry.open_conflict);
            target.set_conflicted(slot, entry.conflicted);
        }
        Ok(())
    }

    /// A snapshot's change log entries, in sequence order.
    ///
    /// # Errors
    ///
    /// An entry naming a record that does not exist, or a sequence gap.
    pub(crate) fn log_entries(&mut self, entries: Vec<LogEntryEntry<'_>>) -> Result<(), String> {
        let state = &mut *self.state;
        for entry in entries {
            if state.log.len() == 0 && state.log.latest_seq() >= entry.seq {
                state.log.resume_at(entry.seq - 1);
            }
            if entry.seq != state.log.next_seq() {
                return Err(format!(
                    "change log entry {} where {} was expected",
                    entry.seq,
                    state.log.next_seq()
                ));
            }
            let record = state
                .tables
                .get(usize::from(entry.table))
                .and_then(|table| table.records().get(entry.slot as usize))
                .ok_or_else(|| format!("change log entry {} of a missing record", entry.seq))?;
            let change = match entry.bytes {
                Some(bytes) => {
                    let chunk = Chunk::from(&*bytes.0);
                    state.document_bytes += chunk_cost(&chunk);
                    chunk
                }
                None => record
                    .chunks
                    .iter()
                    .find(|chunk| chunk.seq == entry.seq)
                    .map(|chunk| Arc::clone(&chunk.bytes))
                    .ok_or_else(|| {
                        format!(
                            "change log entry {} shares a chunk the record lacks",
                            entry.seq
                        )
                    })?,
            };
            self.latest_stamp = self.latest_stamp.max(Stamp {
                physical_ms: entry.ms,
                logical: entry.logical,
            });
            state.log.push(LogEntry {
                seq: entry.seq,
                table: entry.table,
                slot: entry.slot,
                stamp: Stamp {
                    physical_ms: entry.ms,
                    logical: entry.logical,
                },
                origin: ClientId::from(entry.origin.as_ref()),
                change,
            });
        }
        Ok(())
    }

    /// A write from the journal, applied as it was made.
    ///
    /// # Errors
    ///
    /// An unknown table or a sequence number out of order.
    pub(crate) fn write(&mut self, entry: WriteEntry<'_>) -> Result<(), String> {
        let state = &mut *self.state;
        let table_id = entry.table;
        let table = state
            .tables
            .get_mut(usize::from(table_id))
            .ok_or_else(|| format!("a write to unknown table {table_id}"))?;
        let slot = match table.slot_of(&entry.id) {
            Some(slot) => slot,
            None => table.add_slot(&entry.id),
        };
        let mut latest = None;
        for chunk in entry.chunks {
            if chunk.seq != state.log.next_seq() {
                return Err(format!(
                    "a write of change {} where {} was expected",
                    chunk.seq,
                    state.log.next_seq()
                ));
            }
            let stamp = Stamp {
                physical_ms: chunk.ms,
                logical: chunk.logical,
            };
            self.latest_stamp = self.latest_stamp.max(stamp);
            let origin = ClientId::from(chunk.origin.as_ref());
            let bytes = Chunk::from(&*chunk.bytes);
            latest = Some(state.append_change(table_id, slot, stamp, origin, bytes));
        }
        let table = &mut state.tables[usize::from(table_id)];
        let row = Row::from_encoded(entry.row.as_ref().into());
        table.set_row(slot, row, entry.deleted, entry.open_conflict);
        table.set_conflicted(slot, entry.conflicted);
        if let Some(seq) = latest {
            table.touch(slot, seq);
        }
        Ok(())
    }

    /// A table's policies changed.
    ///
    /// # Errors
    ///
    /// An unknown table, or policies that do not build.
    pub(crate) fn policies(&mut self, table: u16, schema: &str) -> Result<(), String> {
        let schema: TableSchema =
            serde_json::from_str(schema).map_err(|error| format!("a table schema: {error}"))?;
        let state = &mut *self.state;
        let target = state
            .tables
            .get_mut(usize::from(table))
            .ok_or_else(|| format!("policies of unknown table {table}"))?;
        target
            .set_policies(schema, &state.registry)
            .map_err(|error| error.to_string())?;
        state.history.amend(&target.schema);
        Ok(())
    }

    /// A conflict record, new or closed.
    pub(crate) fn conflict(&mut self, conflict: ConflictRecord) {
        self.state.conflicts.insert(conflict);
    }

    /// An event.
    pub(crate) fn event(&mut self, event: Event) {
        self.state.events.restore(event);
    }

    /// A snapshot's conflict records and the last id given.
    pub(crate) fn conflicts(&mut self, last_id: u64, conflicts: Vec<ConflictRecord>) {
        self.state.conflicts.resume_after(last_id);
        for conflict in conflicts {
            self.state.conflicts.insert(conflict);
        }
    }

    /// A snapshot's events and the last id given.
    pub(crate) fn events(&mut self, last_id: u64, events: Vec<Event>) {
        self.state.events.resume_after(last_id);
        for event in events {
            self.state.events.restore(event);
        }
    }

    /// A durable setting (`None`: removed).
    pub(crate) fn setting(&mut self, key: &str, value: Option<&str>) {
        match value {
            Some(value) => self.state.settings.insert(key.to_owned(), value.to_owned()),
            None => self.state.settings.remove(key),
        };
    }

    fn saw(&mut self, stamp: Stamp) {
        self.latest_stamp = self.latest_stamp.max(stamp);
    }

    /// Ends the restore: the clock continues after every restored stamp, and
    /// the change log is trimmed to its retention.
    pub(crate) fn finish(mut self) {
        let stamp = self.latest_stamp;
        let state = &mut *self.state;
        for table in &mut state.tables {
            table.reindex();
        }
        state.clock.resume_after(stamp);
        let now = state.clock.last();
        state.trim_log(now);
        let wall = state.wall.now_ms();
        state.conflicts.trim(state.config.conflicts, wall);
        state.events.trim(state.config.events, wall);
    }
}

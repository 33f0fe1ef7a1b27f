//! The database's state under its lock, and the write path: validation, the
//! memory check, the merge into the record's document, and storing the result in
//! the table, its indexes and the change log.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use mobilesyncdb_crdt::{
    ActorId, Causality, Change, ChangeHash, ClientId, ConflictSet, Edit, HybridClock,
    PolicyRegistry, Record, Stamp, StampMeta, Value,
};
use tracing::{debug, info, warn};

use super::audit::detect_conflicts;
use super::sequence::{Prepared, Shown};
use super::{
    LoggedChange, MemoryStats, MergeOutcome, PatchOutcome, RowAccess, WallClock, WriteOutcome,
};
use crate::config::EngineConfig;
use crate::engine::audit::{ConflictLog, EventLog};
use crate::engine::cache::DocCache;
use crate::engine::changelog::{ChangeLog, Chunk, ENTRY_OVERHEAD_BYTES, LogEntry};
use crate::engine::error::{ReadError, WriteError};
use crate::engine::query::Query;
use crate::engine::row::Row;
use crate::engine::table::{StoredChunk, StoredRecord, Table};
use crate::schema::{Fields, SchemaHistory};
use crate::storage::Journal;

#[derive(Debug)]
pub(super) struct State {
    pub(super) config: EngineConfig,
    pub(super) wall: Arc<dyn WallClock>,
    pub(super) clock: HybridClock,
    pub(super) actor: ActorId,
    pub(super) registry: PolicyRegistry,
    pub(super) tables: Vec<Table>,
    pub(super) table_ids: BTreeMap<String, u16>,
    pub(super) log: ChangeLog,
    pub(super) cache: DocCache,
    /// Saved bytes held by records or log entries, each chunk once.
    pub(super) document_bytes: usize,
    pub(super) refused_for_memory: u64,
    /// Durable settings other layers keep with the data (access rules set
    /// through the API, …), by key, as JSON.
    pub(super) settings: BTreeMap<String, String>,
    /// Where writes are logged, when storage is attached.
    pub(super) journal: Option<Journal>,
    /// The journal position the last write under this lock must wait for.
    pub(super) pending_lsn: Option<u64>,
    /// Every detected conflict, within retention.
    pub(super) conflicts: ConflictLog,
    /// Events for webhooks, within retention.
    pub(super) events: EventLog,
    /// Every schema version apps may state.
    pub(super) history: SchemaHistory,
    /// How writes land: stored, captured for a cluster's stream, or applied
    /// from it (see `sequence.rs`).
    pub(super) mode: WriteMode,
    /// What a write in [`WriteMode::Capture`] produced instead of storing it.
    pub(super) captured: Option<Captured>,
    /// No webhook events are made while set: a cluster node applying another
    /// node's write leaves its events to that node, so each fires once.
    pub(super) events_muted: bool,
    /// The documents this node's writes made, while the writes go through the
    /// cluster's stream, by table and record: stored as they are when the
    /// write comes back and the record has not changed since.
    pub(super) prepared: HashMap<(u16, String), Prepared>,
    /// Writes from the stream stored as their node showed them, and merged.
    pub(super) stream_applies: super::sequence::StreamApplies,
}

/// How the write path treats a write.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) enum WriteMode {
    /// Stored at once: a single node.
    #[default]
    Local,
    /// Checked and made, then handed over instead of stored: the change goes
    /// to the cluster's stream first, and is stored when it comes back.
    Capture,
    /// A change from the stream, already checked by the node that took it:
    /// applied whatever this node's clock or memory say, so that every node
    /// applies the stream alike.
    Apply,
}

/// A write's changes, made and checked but not stored.
#[derive(Clone, Debug)]
pub(super) struct Captured {
    pub(super) table: String,
    pub(super) id: String,
    pub(super) origin: ClientId,
    pub(super) changes: Vec<Chunk>,
    pub(super) shown: Option<Shown>,
}

/// Per-slot bookkeeping beyond the row and chunk bytes.
pub(super) const SLOT_BYTES: usize = std::mem::size_of::<StoredRecord>() + 16;

impl State {
    pub(super) fn table(&self, name: &str) -> Result<&Table, ReadError> {
        self.table_ids
            .get(name)
            .map(|id| &self.tables[usize::from(*id)])
            .ok_or_else(|| ReadError::UnknownTable {
                table: name.to_owned(),
            })
    }

    pub(super) fn table_id(&self, name: &str) -> Result<u16, WriteError> {
        self.table_ids
            .get(name)
            .copied()
            .ok_or_else(|| WriteError::UnknownTable {
                table: name.to_owned(),
            })
    }

    pub(super) fn bounded(&self, query: &Query) -> Query {
        let limit = query
            .limit
            .unwrap_or(self.config.max_query_rows)
            .min(self.config.max_query_rows);
        Query {
            limit: Some(limit),
            ..query.clone()
        }
    }

    pub(super) fn logged(&self, entry: &LogEntry) -> LoggedChange {
        let table = &self.tables[usize::from(entry.table)];
        LoggedChange {
            seq: entry.seq,
            table: table.name().to_owned(),
            record_id: table.record(entry.slot).id.to_string(),
            stamp: entry.stamp,
            origin: entry.origin.clone(),
            change: entry.change.to_vec(),
        }
    }

    pub(super) fn memory(&self) -> MemoryStats {
        let indexes = self.tables.iter().map(Table::index_bytes).sum();
        let records = self.tables.iter().map(Table::record_bytes).sum();
        let rows = self.tables.iter().map(Table::row_bytes).sum();
        let change_log = self.log.len() * ENTRY_OVERHEAD_BYTES;
        let doc_cache = self.cache.estimated_bytes();
        let parts = [
            self.document_bytes,
            rows,
            records,
            indexes,
            change_log,
            doc_cache,
        ];
        MemoryStats {
            documents: self.document_bytes,
            rows,
            records,
            indexes,
            change_log,
            doc_cache,
            total: parts.iter().sum(),
            limit: self.config.max_memory_bytes,
        }
    }

    /// Makes room for a write of about `needed` bytes: trims what may be trimmed,
    /// then refuses if that is not enough. Accepted data is never evicted.
    fn ensure_memory(&mut self, needed: usize) -> Result<(), WriteError> {
        if self.mode == WriteMode::Apply {
            return Ok(());
        }
        let limit = self.config.max_memory_bytes;
        if self.memory().total + needed <= limit {
            return Ok(());
        }
        self.cache.clear();
        let dropped = self.log.trim_to(self.config.retention.min_entries);
        self.release_entries(dropped);
        let used = self.memory().total;
        if used + needed <= limit {
            info!(
                used,
                limit, "memory pressure: trimmed the document cache and change log"
            );
            return Ok(());
        }
        self.refused_for_memory += 1;
        warn!(used, limit, needed, "write refused at the memory limit");
        Err(WriteError::MemoryLimit {
            used,
            limit,
            needed,
        })
    }

    pub(super) fn insert(
        &mut self,
        table: &str,
        fields: Fields,
        origin: &ClientId,
        guard: Guard<'_>,
    ) -> Result<WriteOutcome, WriteError> {
        let access = guard.access;
        let table_id = self.table_id(table)?;
        let target = &self.tables[usize::from(table_id)];
        let (id, edits) = match self.table_as_of(table, guard.schema)? {
            Some(view) => {
                let version = guard.schema.unwrap_or_default();
                let edits = crate::schema::field_edits(fields);
                let (named, removed) = target.translate(view, version, "", edits)?;
                let fields = named
                    .into_iter()
                    .filter_map(|edit| match edit {
                        Edit::Set { field, value } => Some((field, value)),
                        _ => None,
                    })
                    .collect();
                let (id, mut edits) = target.prepare_insert(&fields)?;
                edits.extend(removed);
                (id, edits)
            }
            None => target.prepare_insert(&fields)?,
        };
        let existing = target.slot_of(&id);
        if let Some(slot) = existing {
            hidden_as_missing(target, slot, access)?;
        }
        if existing.is_some_and(|slot| !target.record(slot).deleted) {
            return Err(WriteError::AlreadyExists {
                table: table.to_owned(),
                record: id,
            });
        }
        let predicted = predicted_row(target, None, &edits);
        target.check_unique(existing, &predicted, &id)?;
        let needed = predicted.heap_bytes() * 3 + SLOT_BYTES + ENTRY_OVERHEAD_BYTES + id.len();
        self.ensure_memory(needed)?;
        let meta = self.stamp(origin);
        let (record, slot) = match existing {
            Some(slot) => (self.load(table_id, slot)?, Some(slot)),
            None => (Record::new(self.actor.clone()), None),
        };
        // A revived record's older fields come back, so its row is derived.
        let revive = slot.is_some();
        let expected = if revive {
            Expected::Derived
        } else {
            Expected::Row(predicted)
        };
        let target = Target {
            table: table_id,
            slot,
            id: &id,
            access,
        };
        self.commit(target, record, &meta, expected, |record| match revive {
            true => record.revive(&edits, &meta),
            false => record.write(&edits, &meta),
        })
    }

    /// Applies field edits to a live record. With `base` (the heads the writer had
    /// seen) older than the record's heads, the change is made on the record as
    /// it was then: concurrent with everything the record gained since, so
    /// fields both touched keep every value for their policy to decide.
    pub(super) fn patch(
        &mut self,
        table: &str,
        id: &str,
        edits: Vec<Edit>,
        base: Option<&[ChangeHash]>,
        origin: &ClientId,
        guard: Guard<'_>,
    ) -> Result<PatchOutcome, WriteError> {
        let access = guard.access;
        let table_id = self.table_id(table)?;
        let target = &self.tables[usize::from(table_id)];
        let slot = live_slot(target, id, guard)?;
        let edits = match self.table_as_of(table, guard.schema)? {
            Some(view) => {
                let version = guard.schema.unwrap_or_default();
                let (named, removed) = target.translate(view, version, id, edits)?;
                let mut edits = target.prepare_patch(id, named)?;
                edits.extend(removed);
                edits
            }
            None => target.prepare_patch(id, edits)?,
        };
        let predicted = predicted_row(target, Some(slot), &edits);
        target.check_unique(Some(slot), &predicted, id)?;
        self.ensure_memory(predicted.heap_bytes() + ENTRY_OVERHEAD_BYTES + 256)?;
        let meta = self.stamp(origin);
        let record = self.load(table_id, slot)?;
        let base = base.filter(|base| !same_heads(base, &record.heads()));
        let Some(base) = base else {
            let write = self.commit(
                Target::existing(table_id, slot, id, access),
                record,
                &meta,
                Expected::Row(predicted),
                |record| record.write(&edits, &meta),
            )?;
            return Ok(PatchOutcome {
                write,
                causality: Causality::After,
                conflicted_fields: Vec::new(),
            });
        };
        let mut conflicted_fields = Vec::new();
        let write = self.commit(
            Target::existing(table_id, slot, id, access),
            record,
            &meta,
            Expected::Derived,
            |record| {
                let change = record.write_at(base, &edits, &meta)?;
                conflicted_fields = edits
                    .iter()
                    .map(Edit::field)
                    .filter(|field| record.has_conflict(field))
                    .map(str::to_owned)
                    .collect();
                Ok(change)
            },
        )?;
        let conflicted_fields = self.tables[usize::from(table_id)].names_of_keys(conflicted_fields);
        Ok(PatchOutcome {
            write,
            causality: Causality::Concurrent,
            conflicted_fields,
        })
    }

    pub(super) fn delete(
        &mut self,
        table: &str,
        id: &str,
        origin: &ClientId,
        guard: Guard<'_>,
    ) -> Result<WriteOutcome, WriteError> {
        let access = guard.access;
        let table_id = self.table_id(table)?;
        let slot = live_slot(&self.tables[usize::from(table_id)], id, guard)?;
        let meta = self.stamp(origin);
        let record = self.load(table_id, slot)?;
        self.commit(
            Target::existing(table_id, slot, id, access),
            record,
            &meta,
            Expected::Deleted,
            |record| record.delete(&meta),
        )
    }

    pub(super) fn merge_changes(
        &mut self,
        table: &str,
        id: &str,
        changes: Vec<Change>,
        origin: &ClientId,
        access: &dyn RowAccess,
    ) -> Result<MergeOutcome, WriteError> {
        let table_id = self.table_id(table)?;
        let existing = self.tables[usize::from(table_id)].slot_of(id);
        if let Some(slot) = existing {
            hidden_as_missing(&self.tables[usize::from(table_id)], slot, access)?;
        }
        self.check_stamps(table, id, &changes)?;
        let incoming: usize = changes.iter().map(|change| change.raw_bytes().len()).sum();
        self.ensure_memory(merge_headroom(incoming))?;
        let mut record = match existing {
            Some(slot) => self.load(table_id, slot)?,
            None => Record::new(self.actor.clone()),
        };
        let base = (self.mode == WriteMode::Capture).then(|| record.heads());
        let report = record
            .merge(changes)
            .map_err(|source| record_error(table, id, source))?;
        if report.applied.is_empty() {
            if let Some(slot) = existing {
                self.cache.put(table_id, slot, record);
            }
            return Ok(MergeOutcome {
                id: id.to_owned(),
                seqs: Vec::new(),
                duplicates: report.duplicates,
                causality: report.causality,
                conflicted_fields: Vec::new(),
            });
        }
        let conflicted_fields = self.conflicted_fields(table_id, &record);
        let detected = detect_conflicts(&record, &conflicted_fields, &report.applied);
        let (row, open_conflict, deleted) = self.tables[usize::from(table_id)]
            .derive(&record)
            .map_err(|source| record_error(table, id, source))?;
        // Refused here, the merged copy is dropped: the stored chunks never saw it.
        kept_in_reach(
            &self.tables[usize::from(table_id)],
            id,
            &row,
            deleted,
            access,
        )?;
        let logged = report
            .applied
            .iter()
            .map(|change| {
                let stamp =
                    StampMeta::of_change(change).map_or(Stamp::default(), |meta| meta.stamp);
                (Chunk::from(change.raw_bytes()), stamp)
            })
            .collect();
        let hint = base
            .filter(|_| conflicted_fields.is_empty())
            .zip(report.applied.last())
            .map(|(base, last)| Hint {
                base,
                hash: last.hash(),
                causality: report.causality,
            });
        let update = Update {
            record: Some(record),
            logged,
            row,
            open_conflict,
            deleted,
            detected,
            hint,
        };
        let seqs = self.store(table_id, existing, id, update, origin)?;
        if report.causality == Causality::Concurrent {
            debug!(table, record = id, fields = ?conflicted_fields, "concurrent modification merged");
        }
        let conflicted_fields = self.tables[usize::from(table_id)].names_of_keys(conflicted_fields);
        Ok(MergeOutcome {
            id: id.to_owned(),
            seqs,
            duplicates: report.duplicates,
            causality: report.causality,
            conflicted_fields,
        })
    }

    /// Refuses stamped changes from a clock too far ahead, then advances our clock
    /// past the accepted stamps.
    fn check_stamps(
        &mut self,
        table: &str,
        id: &str,
        changes: &[Change],
    ) -> Result<(), WriteError> {
        let now = self.wall.now_ms();
        if self.mode == WriteMode::Apply {
            // Checked by the node that took the write; this node's clock
            // must not make it refuse what the others apply.
            for meta in changes.iter().filter_map(StampMeta::of_change) {
                let _ = self.clock.observe(meta.stamp, now);
            }
            return Ok(());
        }
        let stamps = refuse_skewed(&self.clock, now, table, id, changes)?;
        for stamp in stamps {
            // Within the skew bound by the check above.
            let _ = self.clock.observe(stamp, now);
        }
        Ok(())
    }

    fn conflicted_fields(&self, table_id: u16, record: &Record) -> Vec<String> {
        self.tables[usize::from(table_id)]
            .schema
            .fields
            .iter()
            .filter(|field| record.has_conflict(field.doc_key()))
            .map(|field| field.doc_key().to_owned())
            .collect()
    }

    pub(super) fn stamp(&mut self, origin: &ClientId) -> StampMeta {
        StampMeta::new(self.clock.tick(self.wall.now_ms()), origin.clone())
    }

    /// A record's document: from the cache, or loaded from its saved bytes. Every
    /// cached document came through here or was created with the server's actor,
    /// so it writes as that actor already.
    pub(super) fn load(&mut self, table_id: u16, slot: u32) -> Result<Record, WriteError> {
        if let Some(record) = self.cache.take(table_id, slot) {
            return Ok(record);
        }
        let table = &self.tables[usize::from(table_id)];
        let stored = table.record(slot);
        let mut record = stored
            .load()
            .map_err(|source| record_error(table.name(), &stored.id, source))?;
        record.set_actor(self.actor.clone());
        Ok(record)
    }

    /// Runs a local write on a record's document and stores the result. `expected`
    /// is the row the write will show: a value written at the record's current
    /// state supersedes every concurrent one, so the row need not be re-derived
    /// from the document unless a manual conflict is open or a deleted record is
    /// revived (its older fields come back).
    pub(super) fn commit(
        &mut self,
        target: Target<'_>,
        mut record: Record,
        meta: &StampMeta,
        expected: Expected,
        write: impl FnOnce(&mut Record) -> Result<Option<Change>, mobilesyncdb_crdt::RecordError>,
    ) -> Result<WriteOutcome, WriteError> {
        let Target {
            table: table_id,
            slot,
            id,
            access,
        } = target;
        let failed = |table: &Table, source| record_error(table.name(), id, source);
        // Only a write whose row is known without deriving it can show it.
        let base = (self.mode == WriteMode::Capture && !matches!(expected, Expected::Derived))
            .then(|| record.heads());
        let change = write(&mut record)
            .map_err(|source| failed(&self.tables[usize::from(table_id)], source))?;
        let Some(change) = change else {
            if let Some(slot) = slot {
                self.cache.put(table_id, slot, record);
            }
            return Ok(WriteOutcome {
                id: id.to_owned(),
                seq: None,
                stamp: meta.stamp,
            });
        };
        let chunk: Chunk = change.raw_bytes().into();
        let detected = match expected {
            Expected::Derived => {
                let conflicted = self.conflicted_fields(table_id, &record);
                detect_conflicts(&record, &conflicted, std::slice::from_ref(&change))
            }
            Expected::Row(_) | Expected::Deleted => Vec::new(),
        };
        let table = &self.tables[usize::from(table_id)];
        let deleted = matches!(expected, Expected::Deleted);
        // A write at the record's current state comes after all of it: other
        // nodes in that state take its row as it is.
        let hint = base.map(|base| Hint {
            base,
            hash: change.hash(),
            causality: Causality::Before,
        });
        let (row, open_conflict) = match expected {
            Expected::Row(row) if !slot.is_some_and(|slot| table.has_open_conflict(slot)) => {
                (row, false)
            }
            Expected::Row(_) | Expected::Derived => table
                .derive_row(&record)
                .map_err(|source| failed(table, source))?,
            Expected::Deleted => (Row::new(Vec::new()), false),
        };
        kept_in_reach(table, id, &row, deleted, access)?;
        let update = Update {
            record: Some(record),
            logged: vec![(chunk, meta.stamp)],
            row,
            open_conflict,
            deleted,
            detected,
            hint,
        };
        let seqs = self.store(table_id, slot, id, update, &meta.writer)?;
        Ok(WriteOutcome {
            id: id.to_owned(),
            seq: seqs.first().copied(),
            stamp: meta.stamp,
        })
    }

    /// Stores what a write produced: the saved document, row, indexes and log entries.
    pub(super) fn store(
        &mut self,
        table_id: u16,
        slot: Option<u32>,
        id: &str,
        update: Update,
        origin: &ClientId,
    ) -> Result<Vec<u64>, WriteError> {
        let added: usize = update.logged.iter().map(|(bytes, _)| bytes.len()).sum();
        let before = slot.map_or(0, |slot| {
            self.tables[usize::from(table_id)].record(slot).saved_len()
        });
        let limit = self.config.max_record_bytes;
        if before + added > limit {
            return Err(WriteError::RecordTooLarge {
                table: self.tables[usize::from(table_id)].name().to_owned(),
                record: id.to_owned(),
                bytes: before + added,
                limit,
            });
        }
        if self.mode == WriteMode::Capture {
            // Handed to the cluster's stream instead: the change is stored
            // when it comes back, with the document made here if the record
            // has not changed by then.
            self.capture(table_id, slot, id, update, origin);
            return Ok(Vec::new());
        }
        let slot = match slot {
            Some(slot) => slot,
            None => self.tables[usize::from(table_id)].add_slot(id),
        };
        let before = Before::of(&self.tables[usize::from(table_id)], slot);
        let mut seqs = Vec::with_capacity(update.logged.len());
        let mut journaled = Vec::new();
        for (bytes, stamp) in update.logged {
            if self.journal.is_some() {
                journaled.push((self.log.next_seq(), stamp, Arc::clone(&bytes)));
            }
            seqs.push(self.append_change(table_id, slot, stamp, origin.clone(), bytes));
        }
        if let Some(record) = &update.record {
            self.compact_if_due(table_id, slot, record);
        }
        let table = &mut self.tables[usize::from(table_id)];
        table.set_row(slot, update.row, update.deleted, update.open_conflict);
        if !update.detected.is_empty() {
            table.set_conflicted(slot, true);
        }
        if let Some(seq) = seqs.last() {
            table.touch(slot, *seq);
        }
        self.journal_write(table_id, slot, &journaled, origin);
        if let Some(seq) = seqs.last() {
            let written = Written {
                table: table_id,
                slot,
                seq: *seq,
                origin,
                record: update.record.as_ref(),
                before,
            };
            self.note_write(&written, update.detected);
        }
        if let Some(record) = update.record {
            self.cache.put(table_id, slot, record);
        }
        let now = self.clock.last();
        self.trim_log(now);
        Ok(seqs)
    }

    /// Gives a new change of a record the next sequence number: into the
    /// change log and onto the record's chunks, sharing its bytes. Returns the
    /// sequence number.
    pub(super) fn append_change(
        &mut self,
        table_id: u16,
        slot: u32,
        stamp: Stamp,
        origin: ClientId,
        bytes: Chunk,
    ) -> u64 {
        self.document_bytes += chunk_cost(&bytes);
        let seq = self.log.next_seq();
        self.log.push(LogEntry {
            seq,
            table: table_id,
            slot,
            stamp,
            origin,
            change: Arc::clone(&bytes),
        });
        self.tables[usize::from(table_id)].push_chunk(slot, seq, bytes);
        seq
    }

    /// Replaces a record's many chunks by one saved document.
    fn compact_if_due(&mut self, table_id: u16, slot: u32, record: &Record) {
        let table = &mut self.tables[usize::from(table_id)];
        if table.record(slot).chunks.len() <= self.config.compact_after_chunks {
            return;
        }
        let saved: Chunk = record.save().into();
        self.document_bytes += chunk_cost(&saved);
        let seq = table
            .record(slot)
            .chunks
            .last()
            .map_or(0, |chunk| chunk.seq);
        let old = table.replace_chunks(slot, vec![StoredChunk { seq, bytes: saved }]);
        for chunk in old {
            release(chunk.bytes, &mut self.document_bytes);
        }
    }

    pub(super) fn trim_log(&mut self, now: Stamp) {
        let dropped = self.log.trim(&self.config.retention, now);
        self.release_entries(dropped);
    }

    fn release_entries(&mut self, entries: Vec<LogEntry>) {
        if !entries.is_empty() {
            debug!(
                dropped = entries.len(),
                horizon = self.log.horizon(),
                "change log trimmed"
            );
        }
        for entry in entries {
            release(entry.change, &mut self.document_bytes);
        }
    }
}

/// The record a write goes to: its table, its slot (none yet for a new record)
/// and its id.
#[derive(Clone, Copy)]
pub(super) struct Target<'a> {
    table: u16,
    slot: Option<u32>,
    id: &'a str,
    /// Whose write it is: the record must be in reach before and after.
    access: &'a dyn RowAccess,
}

impl<'a> Target<'a> {
    pub(super) fn existing(
        table: u16,
        slot: u32,
        id: &'a str,
        access: &'a dyn RowAccess,
    ) -> Target<'a> {
        Target {
            table,
            slot: Some(slot),
            id,
            access,
        }
    }
}

/// A live record the writer may not see is answered as missing, exactly as if
/// it did not exist, so a refusal never tells that it does.
fn hidden_as_missing(table: &Table, slot: u32, access: &dyn RowAccess) -> Result<(), WriteError> {
    let stored = table.record(slot);
    if stored.deleted || access.admits_all(table.name()) || access.admits(table.name(), &stored.row)
    {
        return Ok(());
    }
    Err(WriteError::NotFound {
        table: table.name().to_owned(),
        record: stored.id.to_string(),
    })
}

/// A write may not leave a record where its writer could no longer see it (for
/// example, give it to another owner).
fn kept_in_reach(
    table: &Table,
    id: &str,
    row: &Row,
    deleted: bool,
    access: &dyn RowAccess,
) -> Result<(), WriteError> {
    if deleted || access.admits_all(table.name()) || access.admits(table.name(), row) {
        return Ok(());
    }
    Err(WriteError::AccessDenied {
        table: table.name().to_owned(),
        record: id.to_owned(),
    })
}

/// The visible row a local write will leave.
pub(super) enum Expected {
    /// This row (predicted from the edits).
    Row(Row),
    /// Whatever the document resolves to.
    Derived,
    /// None: the record is deleted.
    Deleted,
}

/// What a write leaves behind.
pub(super) struct Update {
    /// The record's document after the write: `None` when a write from the
    /// stream was stored from what its node showed (the document is loaded
    /// when next needed).
    pub(super) record: Option<Record>,
    /// The bytes and stamp of each new change, oldest first.
    pub(super) logged: Vec<(Chunk, Stamp)>,
    pub(super) row: Row,
    pub(super) open_conflict: bool,
    pub(super) deleted: bool,
    /// Conflicts the write's changes made.
    pub(super) detected: Vec<ConflictSet>,
    /// Set when the write was made on a known state of the record (captured
    /// writes only): what other nodes need to take its row as it is.
    pub(super) hint: Option<Hint>,
}

/// The state a captured write was made on.
pub(super) struct Hint {
    pub(super) base: Vec<ChangeHash>,
    pub(super) hash: ChangeHash,
    pub(super) causality: Causality,
}

/// A record as it was before a write.
#[derive(Clone, Copy, Debug)]
pub(super) struct Before {
    pub(super) live: bool,
    pub(super) open_conflict: bool,
}

impl Before {
    fn of(table: &Table, slot: u32) -> Before {
        // A new slot starts deleted.
        Before {
            live: !table.record(slot).deleted,
            open_conflict: table.has_open_conflict(slot),
        }
    }
}

/// A stored write, for the audit and events.
pub(super) struct Written<'a> {
    pub(super) table: u16,
    pub(super) slot: u32,
    /// The sequence number of its last change.
    pub(super) seq: u64,
    pub(super) origin: &'a ClientId,
    /// `None` for a write stored without its document, which never has a
    /// conflict open before or after it.
    pub(super) record: Option<&'a Record>,
    pub(super) before: Before,
}

/// Drops one reference to a chunk, and its bytes from the count when it was the last.
fn release(chunk: Chunk, document_bytes: &mut usize) {
    if Arc::strong_count(&chunk) == 1 {
        *document_bytes -= chunk_cost(&chunk);
    }
}

/// A chunk's bytes plus its reference counts.
pub(super) fn chunk_cost(chunk: &Chunk) -> usize {
    chunk_cost_of(chunk.len())
}

/// What a stored chunk of `len` bytes costs: its bytes and its reference counts.
pub(super) const fn chunk_cost_of(len: usize) -> usize {
    len + 2 * std::mem::size_of::<usize>()
}

/// The free memory a merge of `incoming` change bytes asks for: the loaded
/// document, the merge and the stored chunks.
pub(super) fn merge_headroom(incoming: usize) -> usize {
    incoming * 3 + SLOT_BYTES
}

/// The stamps of `changes`, or the refusal of the first stamped too far ahead
/// of `now`; the clock is not moved.
pub(super) fn refuse_skewed(
    clock: &HybridClock,
    now: u64,
    table: &str,
    id: &str,
    changes: &[Change],
) -> Result<Vec<Stamp>, WriteError> {
    let stamps: Vec<Stamp> = changes
        .iter()
        .filter_map(StampMeta::of_change)
        .map(|meta| meta.stamp)
        .collect();
    for stamp in &stamps {
        clock
            .check(*stamp, now)
            .map_err(|source| WriteError::ClockSkew {
                table: table.to_owned(),
                record: id.to_owned(),
                source,
            })?;
    }
    Ok(stamps)
}

/// Whether two sets of heads name the same changes, in any order.
pub(super) fn same_heads(left: &[ChangeHash], right: &[ChangeHash]) -> bool {
    left.len() == right.len() && left.iter().all(|head| right.contains(head))
}

fn live_slot(table: &Table, id: &str, guard: Guard<'_>) -> Result<u32, WriteError> {
    let slot = table
        .slot_of(id)
        .filter(|slot| !table.record(*slot).deleted)
        .ok_or_else(|| WriteError::NotFound {
            table: table.name().to_owned(),
            record: id.to_owned(),
        })?;
    hidden_as_missing(table, slot, guard.access)?;
    let current = table.record(slot).latest_seq;
    match guard.version {
        Some(expected) if expected != current => Err(WriteError::VersionMismatch {
            table: table.name().to_owned(),
            record: id.to_owned(),
            expected,
            current,
        }),
        _ => Ok(slot),
    }
}

/// Who writes, and on which version of the record the write was made.
#[derive(Clone, Copy, Debug)]
pub(super) struct Guard<'a> {
    pub(super) access: &'a dyn RowAccess,
    /// The record's version (its latest sequence number) the writer saw: when
    /// the record changed since, the write is refused.
    pub(super) version: Option<u64>,
    /// The schema version the writer's fields are named and typed in.
    pub(super) schema: Option<u32>,
}

fn record_error(table: &str, id: &str, source: mobilesyncdb_crdt::RecordError) -> WriteError {
    WriteError::Record {
        table: table.to_owned(),
        record: id.to_owned(),
        source,
    }
}

/// The row a local write at the record's current state will produce: a set value
/// supersedes every concurrent one, so it is what the policy will show.
fn predicted_row(table: &Table, slot: Option<u32>, edits: &[Edit]) -> Row {
    let empty = Row::new(Vec::new());
    let current = slot.map_or(&empty, |slot| &table.record(slot).row);
    let mut replacements: Vec<(usize, Value)> = Vec::with_capacity(edits.len());
    for edit in edits {
        let Some(position) = table.schema.position_of_key(edit.field()) else {
            continue;
        };
        let value = match edit {
            Edit::Set { value, .. } => value.clone(),
            Edit::Unset { .. } => Value::Null,
            Edit::Increment { by, .. } => match current.get(position) {
                Value::Counter(n) => Value::Counter(n.saturating_add(*by)),
                other => other,
            },
        };
        replacements.retain(|(earlier, _)| *earlier != position);
        replacements.push((position, value));
    }
    current.replacing(table.schema.fields.len(), &replacements)
}

//! The database handle and the write path.
//!
//! [`Database`] is a cheap clonable handle: an `Arc` around one `RwLock` that guards
//! all tables, the change log, the clock and the hot-document cache. Writes take the
//! lock exclusively because every accepted change gets the next database-wide
//! sequence number; reads (gets, queries, change listings) share it. Every method is
//! synchronous and holds the lock only for its own work, so async callers never
//! hold it across an `.await`; heavy work belongs on a blocking thread.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use mobilesyncdb_crdt::{
    ActorId, Causality, Change, ClientId, ConflictSet, Edit, HybridClock, MergePolicy,
    PolicyRegistry, Record, Stamp, StampMeta, Value,
};
use tracing::{debug, info, warn};

use crate::config::EngineConfig;
use crate::engine::cache::DocCache;
use crate::engine::changelog::{ChangeLog, Chunk, ENTRY_OVERHEAD_BYTES, LogEntry};
use crate::engine::error::{EngineError, ReadError, SchemaError, WriteError};
use crate::engine::query::{self, Plan, Query, QueryResult};
use crate::engine::row::Row;
use crate::engine::table::{MAX_TABLES, StoredRecord, Table};
use crate::schema::{Fields, TableSchema};

/// Where the engine reads wall time. Tests pass a manual clock.
pub trait WallClock: Send + Sync + std::fmt::Debug {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;
}

/// The system clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl WallClock for SystemClock {
    fn now_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| {
                u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
            })
    }
}

/// What an accepted write did.
#[derive(Clone, Debug, PartialEq)]
pub struct WriteOutcome {
    /// The record's id.
    pub id: String,
    /// The change's sequence number, or `None` when the write changed nothing.
    pub seq: Option<u64>,
    /// The write's stamp.
    pub stamp: Stamp,
}

/// What merging foreign changes into a record did.
#[derive(Clone, Debug, PartialEq)]
pub struct MergeOutcome {
    pub id: String,
    /// Sequence numbers given to the new changes, in order.
    pub seqs: Vec<u64>,
    /// Changes the record already had (re-sent changes are harmless).
    pub duplicates: usize,
    /// `Concurrent` when the changes were made without seeing the record's latest
    /// state: a concurrent modification.
    pub causality: Causality,
    /// Fields that now hold concurrent values for their policy to decide.
    pub conflicted_fields: Vec<String>,
}

/// A change as the change log lists it.
#[derive(Clone, Debug)]
pub struct LoggedChange {
    pub seq: u64,
    pub table: String,
    pub record_id: String,
    pub stamp: Stamp,
    pub origin: ClientId,
    /// The automerge change bytes.
    pub change: Chunk,
}

/// Where the engine's memory goes, in bytes (estimates for structures whose
/// exact heap use the allocator knows better).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct MemoryStats {
    /// Saved document and change bytes (each shared chunk counted once).
    pub documents: usize,
    /// Visible rows.
    pub rows: usize,
    /// Per-record bookkeeping: slots, ids, chunk lists.
    pub records: usize,
    /// Secondary indexes, id maps and latest-change indexes.
    pub indexes: usize,
    /// Change log bookkeeping beyond the shared change bytes.
    pub change_log: usize,
    /// Loaded documents in the hot-document cache.
    pub doc_cache: usize,
    pub total: usize,
    pub limit: usize,
}

/// Counters for operators.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct EngineStats {
    pub tables: usize,
    pub live_records: usize,
    pub latest_seq: u64,
    pub horizon: u64,
    pub change_log_entries: usize,
    pub change_log_bytes: usize,
    pub doc_cache_hits: u64,
    pub doc_cache_misses: u64,
    pub writes_refused_for_memory: u64,
    pub memory: MemoryStats,
}

/// The in-memory database. Clone it freely: clones share one database.
#[derive(Clone, Debug)]
pub struct Database {
    state: Arc<RwLock<State>>,
}

#[derive(Debug)]
struct State {
    config: EngineConfig,
    wall: Arc<dyn WallClock>,
    clock: HybridClock,
    actor: ActorId,
    registry: PolicyRegistry,
    tables: Vec<Table>,
    table_ids: BTreeMap<String, u16>,
    log: ChangeLog,
    cache: DocCache,
    /// Saved bytes held by records or log entries, each chunk once.
    document_bytes: usize,
    row_bytes: usize,
    record_bytes: usize,
    refused_for_memory: u64,
}

impl Database {
    /// An empty database with the system clock.
    ///
    /// # Errors
    ///
    /// [`EngineError::Config`] when a setting is out of range.
    pub fn new(config: EngineConfig) -> Result<Database, EngineError> {
        Database::with_clock(config, Arc::new(SystemClock))
    }

    /// An empty database that reads time from `wall`.
    ///
    /// # Errors
    ///
    /// [`EngineError::Config`] when a setting is out of range.
    pub fn with_clock(
        config: EngineConfig,
        wall: Arc<dyn WallClock>,
    ) -> Result<Database, EngineError> {
        config.validate()?;
        let state = State {
            clock: HybridClock::new(config.max_clock_skew_ms),
            cache: DocCache::new(config.doc_cache_docs),
            actor: ActorId::random(),
            config,
            wall,
            registry: PolicyRegistry::new(),
            tables: Vec::new(),
            table_ids: BTreeMap::new(),
            log: ChangeLog::default(),
            document_bytes: 0,
            row_bytes: 0,
            record_bytes: 0,
            refused_for_memory: 0,
        };
        Ok(Database {
            state: Arc::new(RwLock::new(state)),
        })
    }

    fn read(&self) -> RwLockReadGuard<'_, State> {
        // A panic while writing leaves derived state possibly stale but the saved
        // documents intact; keep serving rather than poisoning every later call.
        self.state
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.state
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Registers a custom merge policy so that schemas can select it by name.
    ///
    /// # Errors
    ///
    /// [`SchemaError::BadPolicy`] when the name is taken.
    pub fn register_policy(&self, policy: Arc<dyn MergePolicy>) -> Result<(), EngineError> {
        let name = policy.name().to_owned();
        self.write().registry.register(policy).map_err(|error| {
            EngineError::Schema(SchemaError::BadPolicy {
                table: "*".into(),
                field: name,
                problem: error.to_string(),
            })
        })
    }

    /// Creates a table.
    ///
    /// # Errors
    ///
    /// [`SchemaError`] when the schema is invalid or the table exists.
    pub fn create_table(&self, schema: TableSchema) -> Result<(), EngineError> {
        let mut state = self.write();
        if state.table_ids.contains_key(&schema.name) {
            return Err(SchemaError::TableExists { table: schema.name }.into());
        }
        if state.tables.len() >= MAX_TABLES {
            return Err(SchemaError::TooManyTables { limit: MAX_TABLES }.into());
        }
        let id = u16::try_from(state.tables.len()).unwrap_or(u16::MAX);
        let table = Table::new(schema, &state.registry)?;
        info!(
            table = table.name(),
            fields = table.schema.fields.len(),
            "table created"
        );
        state.table_ids.insert(table.name().to_owned(), id);
        state.tables.push(table);
        Ok(())
    }

    /// The schema of every table, in creation order.
    pub fn schemas(&self) -> Vec<TableSchema> {
        self.read()
            .tables
            .iter()
            .map(|table| table.schema.clone())
            .collect()
    }

    /// Inserts a record. A deleted record with the same id is revived.
    ///
    /// # Errors
    ///
    /// [`WriteError`] for validation failures (naming table, record and field), an
    /// existing live record, a unique index conflict, or the memory limit.
    pub fn insert(
        &self,
        table: &str,
        fields: Fields,
        origin: &ClientId,
    ) -> Result<WriteOutcome, EngineError> {
        Ok(self.write().insert(table, fields, origin)?)
    }

    /// Applies field edits to an existing record.
    ///
    /// # Errors
    ///
    /// [`WriteError`] as for [`Database::insert`], and `NotFound`.
    pub fn patch(
        &self,
        table: &str,
        id: &str,
        edits: Vec<Edit>,
        origin: &ClientId,
    ) -> Result<WriteOutcome, EngineError> {
        Ok(self.write().patch(table, id, edits, origin)?)
    }

    /// Sets the given fields of an existing record (a patch of `Set` edits; a null
    /// value unsets the field).
    ///
    /// # Errors
    ///
    /// As [`Database::patch`].
    pub fn update(
        &self,
        table: &str,
        id: &str,
        fields: Fields,
        origin: &ClientId,
    ) -> Result<WriteOutcome, EngineError> {
        let edits = fields
            .into_iter()
            .map(|(field, value)| match value {
                Value::Null => Edit::unset(field),
                value => Edit::Set { field, value },
            })
            .collect();
        self.patch(table, id, edits, origin)
    }

    /// Deletes a record: a tombstone change that syncs like any other. Works even
    /// at the memory limit.
    ///
    /// # Errors
    ///
    /// [`WriteError::NotFound`] when there is no live record with this id.
    pub fn delete(
        &self,
        table: &str,
        id: &str,
        origin: &ClientId,
    ) -> Result<WriteOutcome, EngineError> {
        Ok(self.write().delete(table, id, origin)?)
    }

    /// Merges automerge changes made elsewhere (a phone, another node) into a
    /// record, creating it if needed. Re-sent changes are skipped.
    ///
    /// # Errors
    ///
    /// [`WriteError::ClockSkew`] when a change is stamped too far in the future,
    /// [`WriteError::Record`] for changes whose dependencies are missing or that
    /// automerge refuses; nothing of the batch is applied then.
    pub fn merge_changes(
        &self,
        table: &str,
        id: &str,
        changes: Vec<Change>,
        origin: &ClientId,
    ) -> Result<MergeOutcome, EngineError> {
        Ok(self.write().merge_changes(table, id, changes, origin)?)
    }

    /// The visible row of a live record.
    ///
    /// # Errors
    ///
    /// [`ReadError::UnknownTable`].
    pub fn get(&self, table: &str, id: &str) -> Result<Option<Row>, EngineError> {
        let state = self.read();
        let table = state.table(table)?;
        Ok(table
            .slot_of(id)
            .map(|slot| table.record(slot))
            .filter(|record| !record.deleted)
            .map(|record| record.row.clone()))
    }

    /// The saved automerge bytes of a record (live or deleted).
    ///
    /// # Errors
    ///
    /// [`ReadError::UnknownTable`].
    pub fn record_bytes(&self, table: &str, id: &str) -> Result<Option<Vec<u8>>, EngineError> {
        let state = self.read();
        let table = state.table(table)?;
        Ok(table
            .slot_of(id)
            .map(|slot| table.record(slot).saved_bytes()))
    }

    /// Runs a query.
    ///
    /// # Errors
    ///
    /// [`ReadError::Query`] for unknown fields, mistyped values or bad page tokens.
    pub fn query(&self, table: &str, query: &Query) -> Result<QueryResult, EngineError> {
        let state = self.read();
        let bounded = state.bounded(query);
        Ok(query::execute(state.table(table)?, &bounded).map_err(ReadError::from)?)
    }

    /// How a query would run: which index it uses, or a full scan.
    ///
    /// # Errors
    ///
    /// As [`Database::query`].
    pub fn explain(&self, table: &str, query: &Query) -> Result<Plan, EngineError> {
        let state = self.read();
        let bounded = state.bounded(query);
        Ok(query::explain(state.table(table)?, &bounded).map_err(ReadError::from)?)
    }

    /// The conflict set of every schema field of a record that has concurrent values.
    ///
    /// # Errors
    ///
    /// [`ReadError::UnknownTable`], or `Corrupt` if the stored document cannot load.
    pub fn conflicts(&self, table: &str, id: &str) -> Result<Vec<ConflictSet>, EngineError> {
        let state = self.read();
        let table_ref = state.table(table)?;
        let Some(slot) = table_ref.slot_of(id) else {
            return Ok(Vec::new());
        };
        let record = table_ref
            .record(slot)
            .load()
            .map_err(|source| ReadError::Corrupt {
                table: table.to_owned(),
                record: id.to_owned(),
                source,
            })?;
        let mut conflicts = Vec::new();
        for field in &table_ref.schema.fields {
            let set = record
                .conflict_set(&field.name)
                .map_err(|source| ReadError::Corrupt {
                    table: table.to_owned(),
                    record: id.to_owned(),
                    source,
                })?;
            if set.is_conflict() {
                conflicts.push(set);
            }
        }
        Ok(conflicts)
    }

    /// Ids of records with a manual conflict still open.
    ///
    /// # Errors
    ///
    /// [`ReadError::UnknownTable`].
    pub fn open_conflicts(&self, table: &str) -> Result<Vec<String>, EngineError> {
        let state = self.read();
        let table = state.table(table)?;
        Ok(table
            .open_conflicts()
            .map(|slot| table.record(slot).id.to_string())
            .collect())
    }

    /// The changes after `cursor`, oldest first, at most `limit`.
    ///
    /// # Errors
    ///
    /// [`ReadError::CursorTooOld`] when the cursor is older than the retention
    /// horizon; use [`Database::records_changed_since`] to catch up.
    pub fn changes_since(
        &self,
        cursor: u64,
        limit: usize,
    ) -> Result<Vec<LoggedChange>, EngineError> {
        let state = self.read();
        let entries = state.log.after(cursor, limit).map_err(ReadError::from)?;
        Ok(entries.map(|entry| state.logged(entry)).collect())
    }

    /// The records of `table` changed after `cursor` (at any age), each once with its
    /// latest sequence number, oldest first, at most `limit`. This is the compacted
    /// catch-up for a client older than the change log's horizon.
    ///
    /// # Errors
    ///
    /// [`ReadError::UnknownTable`].
    pub fn records_changed_since(
        &self,
        table: &str,
        cursor: u64,
        limit: usize,
    ) -> Result<Vec<(u64, String)>, EngineError> {
        let state = self.read();
        let table = state.table(table)?;
        Ok(table
            .changed_after(cursor)
            .take(limit)
            .map(|(seq, slot)| (seq, table.record(slot).id.to_string()))
            .collect())
    }

    /// The sequence number of the latest accepted change.
    pub fn latest_seq(&self) -> u64 {
        self.read().log.latest_seq()
    }

    /// The oldest cursor the change log can still serve change by change.
    pub fn horizon(&self) -> u64 {
        self.read().log.horizon()
    }

    /// Applies the retention policy now (writes also apply it as they go).
    pub fn apply_retention(&self) {
        let mut state = self.write();
        let wall_ms = state.wall.now_ms();
        let now = state.clock.tick(wall_ms);
        state.trim_log(now);
    }

    /// Counters and memory use.
    pub fn stats(&self) -> EngineStats {
        let state = self.read();
        EngineStats {
            tables: state.tables.len(),
            live_records: state.tables.iter().map(Table::live_count).sum(),
            latest_seq: state.log.latest_seq(),
            horizon: state.log.horizon(),
            change_log_entries: state.log.len(),
            change_log_bytes: state.log.bytes(),
            doc_cache_hits: state.cache.hits,
            doc_cache_misses: state.cache.misses,
            writes_refused_for_memory: state.refused_for_memory,
            memory: state.memory(),
        }
    }
}

/// Per-slot bookkeeping beyond the row and chunk bytes.
const SLOT_BYTES: usize = std::mem::size_of::<StoredRecord>() + 16;

impl State {
    fn table(&self, name: &str) -> Result<&Table, ReadError> {
        self.table_ids
            .get(name)
            .map(|id| &self.tables[usize::from(*id)])
            .ok_or_else(|| ReadError::UnknownTable {
                table: name.to_owned(),
            })
    }

    fn table_id(&self, name: &str) -> Result<u16, WriteError> {
        self.table_ids
            .get(name)
            .copied()
            .ok_or_else(|| WriteError::UnknownTable {
                table: name.to_owned(),
            })
    }

    fn bounded(&self, query: &Query) -> Query {
        let limit = query
            .limit
            .unwrap_or(self.config.max_query_rows)
            .min(self.config.max_query_rows);
        Query {
            limit: Some(limit),
            ..query.clone()
        }
    }

    fn logged(&self, entry: &LogEntry) -> LoggedChange {
        let table = &self.tables[usize::from(entry.table)];
        LoggedChange {
            seq: entry.seq,
            table: table.name().to_owned(),
            record_id: table.record(entry.slot).id.to_string(),
            stamp: entry.stamp,
            origin: entry.origin.clone(),
            change: entry.change.clone(),
        }
    }

    fn memory(&self) -> MemoryStats {
        let indexes = self.tables.iter().map(Table::index_bytes).sum();
        let change_log = self.log.len() * ENTRY_OVERHEAD_BYTES;
        let doc_cache = self.cache.estimated_bytes();
        let parts = [
            self.document_bytes,
            self.row_bytes,
            self.record_bytes,
            indexes,
            change_log,
            doc_cache,
        ];
        MemoryStats {
            documents: self.document_bytes,
            rows: self.row_bytes,
            records: self.record_bytes,
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

    fn insert(
        &mut self,
        table: &str,
        fields: Fields,
        origin: &ClientId,
    ) -> Result<WriteOutcome, WriteError> {
        let table_id = self.table_id(table)?;
        let target = &self.tables[usize::from(table_id)];
        let (id, edits) = target.prepare_insert(&fields)?;
        let existing = target.slot_of(&id);
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
        match slot {
            Some(_) => self.commit(
                table_id,
                slot,
                &id,
                record,
                &meta,
                Expected::Derived,
                |record| record.revive(&edits, &meta),
            ),
            None => self.commit(
                table_id,
                slot,
                &id,
                record,
                &meta,
                Expected::Row(predicted),
                |record| record.write(&edits, &meta),
            ),
        }
    }

    fn patch(
        &mut self,
        table: &str,
        id: &str,
        edits: Vec<Edit>,
        origin: &ClientId,
    ) -> Result<WriteOutcome, WriteError> {
        let table_id = self.table_id(table)?;
        let target = &self.tables[usize::from(table_id)];
        let slot = live_slot(target, id)?;
        let edits = target.prepare_patch(id, edits)?;
        let predicted = predicted_row(target, Some(slot), &edits);
        target.check_unique(Some(slot), &predicted, id)?;
        self.ensure_memory(predicted.heap_bytes() + ENTRY_OVERHEAD_BYTES + 256)?;
        let meta = self.stamp(origin);
        let record = self.load(table_id, slot)?;
        self.commit(
            table_id,
            Some(slot),
            id,
            record,
            &meta,
            Expected::Row(predicted),
            |record| record.write(&edits, &meta),
        )
    }

    fn delete(
        &mut self,
        table: &str,
        id: &str,
        origin: &ClientId,
    ) -> Result<WriteOutcome, WriteError> {
        let table_id = self.table_id(table)?;
        let slot = live_slot(&self.tables[usize::from(table_id)], id)?;
        let meta = self.stamp(origin);
        let record = self.load(table_id, slot)?;
        self.commit(
            table_id,
            Some(slot),
            id,
            record,
            &meta,
            Expected::Deleted,
            |record| record.delete(&meta),
        )
    }

    fn merge_changes(
        &mut self,
        table: &str,
        id: &str,
        changes: Vec<Change>,
        origin: &ClientId,
    ) -> Result<MergeOutcome, WriteError> {
        let table_id = self.table_id(table)?;
        self.check_stamps(table, id, &changes)?;
        let incoming: usize = changes.iter().map(|change| change.raw_bytes().len()).sum();
        self.ensure_memory(incoming * 3 + SLOT_BYTES)?;
        let existing = self.tables[usize::from(table_id)].slot_of(id);
        let mut record = match existing {
            Some(slot) => self.load(table_id, slot)?,
            None => Record::new(self.actor.clone()),
        };
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
        let (row, open_conflict) = self.tables[usize::from(table_id)]
            .derive_row(&record)
            .map_err(|source| record_error(table, id, source))?;
        let logged = report
            .applied
            .iter()
            .map(|change| {
                let stamp =
                    StampMeta::of_change(change).map_or(Stamp::default(), |meta| meta.stamp);
                (Chunk::from(change.raw_bytes()), stamp)
            })
            .collect();
        let deleted = record.is_deleted();
        let update = Update {
            record,
            logged,
            row,
            open_conflict,
            deleted,
        };
        let seqs = self.store(table_id, existing, id, update, origin)?;
        if report.causality == Causality::Concurrent {
            debug!(table, record = id, fields = ?conflicted_fields, "concurrent modification merged");
        }
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
        let stamps: Vec<Stamp> = changes
            .iter()
            .filter_map(StampMeta::of_change)
            .map(|meta| meta.stamp)
            .collect();
        for stamp in &stamps {
            self.clock
                .check(*stamp, now)
                .map_err(|source| WriteError::ClockSkew {
                    table: table.to_owned(),
                    record: id.to_owned(),
                    source,
                })?;
        }
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
            .filter(|field| {
                record
                    .conflict_set(&field.name)
                    .is_ok_and(|set| set.is_conflict())
            })
            .map(|field| field.name.clone())
            .collect()
    }

    fn stamp(&mut self, origin: &ClientId) -> StampMeta {
        StampMeta::new(self.clock.tick(self.wall.now_ms()), origin.clone())
    }

    /// A record's document: from the cache, or loaded from its saved bytes.
    fn load(&mut self, table_id: u16, slot: u32) -> Result<Record, WriteError> {
        if let Some(mut record) = self.cache.take(table_id, slot) {
            record.set_actor(self.actor.clone());
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
    fn commit(
        &mut self,
        table_id: u16,
        slot: Option<u32>,
        id: &str,
        mut record: Record,
        meta: &StampMeta,
        expected: Expected,
        write: impl FnOnce(&mut Record) -> Result<Option<Change>, mobilesyncdb_crdt::RecordError>,
    ) -> Result<WriteOutcome, WriteError> {
        let table_name = self.tables[usize::from(table_id)].name().to_owned();
        let change = write(&mut record).map_err(|source| record_error(&table_name, id, source))?;
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
        let table = &self.tables[usize::from(table_id)];
        let deleted = matches!(expected, Expected::Deleted);
        let (row, open_conflict) = match expected {
            Expected::Row(row) if !slot.is_some_and(|slot| table.has_open_conflict(slot)) => {
                (row, false)
            }
            Expected::Row(_) | Expected::Derived => table
                .derive_row(&record)
                .map_err(|source| record_error(&table_name, id, source))?,
            Expected::Deleted => (Row::new(Vec::new()), false),
        };
        let update = Update {
            record,
            logged: vec![(chunk, meta.stamp)],
            row,
            open_conflict,
            deleted,
        };
        let seqs = self.store(table_id, slot, id, update, &meta.writer)?;
        Ok(WriteOutcome {
            id: id.to_owned(),
            seq: seqs.first().copied(),
            stamp: meta.stamp,
        })
    }

    /// Stores what a write produced: the saved document, row, indexes and log entries.
    fn store(
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
        let slot = match slot {
            Some(slot) => slot,
            None => {
                self.record_bytes += SLOT_BYTES + id.len();
                self.tables[usize::from(table_id)].add_slot(id)
            }
        };
        let mut seqs = Vec::with_capacity(update.logged.len());
        for (bytes, stamp) in update.logged {
            self.document_bytes += bytes.len();
            let seq = self.log.next_seq();
            let entry = LogEntry {
                seq,
                table: table_id,
                slot,
                stamp,
                origin: origin.clone(),
                change: bytes.clone(),
            };
            self.log.push(entry);
            self.tables[usize::from(table_id)]
                .record_mut(slot)
                .chunks
                .push(bytes);
            seqs.push(seq);
        }
        self.compact_if_due(table_id, slot, &update.record);
        let table = &mut self.tables[usize::from(table_id)];
        self.row_bytes =
            self.row_bytes + update.row.heap_bytes() - table.record(slot).row.heap_bytes();
        table.set_row(slot, update.row, update.deleted, update.open_conflict);
        if let Some(seq) = seqs.last() {
            table.touch(slot, *seq);
        }
        self.cache.put(table_id, slot, update.record);
        let now = self.clock.last();
        self.trim_log(now);
        Ok(seqs)
    }

    /// Replaces a record's many chunks by one saved document.
    fn compact_if_due(&mut self, table_id: u16, slot: u32, record: &Record) {
        let stored = self.tables[usize::from(table_id)].record_mut(slot);
        if stored.chunks.len() <= self.config.compact_after_chunks {
            return;
        }
        let saved: Chunk = record.save().into();
        self.document_bytes += saved.len();
        let old = std::mem::replace(&mut stored.chunks, vec![saved]);
        for chunk in old {
            release(chunk, &mut self.document_bytes);
        }
    }

    fn trim_log(&mut self, now: Stamp) {
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

/// The visible row a local write will leave.
enum Expected {
    /// This row (predicted from the edits).
    Row(Row),
    /// Whatever the document resolves to.
    Derived,
    /// None: the record is deleted.
    Deleted,
}

/// What a write leaves behind.
struct Update {
    record: Record,
    /// The bytes and stamp of each new change, oldest first.
    logged: Vec<(Chunk, Stamp)>,
    row: Row,
    open_conflict: bool,
    deleted: bool,
}

/// Drops one reference to a chunk, and its bytes from the count when it was the last.
fn release(chunk: Chunk, document_bytes: &mut usize) {
    if Arc::strong_count(&chunk) == 1 {
        *document_bytes -= chunk.len();
    }
}

fn live_slot(table: &Table, id: &str) -> Result<u32, WriteError> {
    table
        .slot_of(id)
        .filter(|slot| !table.record(*slot).deleted)
        .ok_or_else(|| WriteError::NotFound {
            table: table.name().to_owned(),
            record: id.to_owned(),
        })
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
        let Some(position) = table.schema.position(edit.field()) else {
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

//! The database handle: every operation the engine offers.
//!
//! [`Database`] is a cheap clonable handle: an `Arc` around one `RwLock` that guards
//! all tables, the change log, the clock and the hot-document cache. Writes take the
//! lock exclusively because every accepted change gets the next database-wide
//! sequence number; reads (gets, queries, change listings) share it. Every method is
//! synchronous and holds the lock only for its own work, so async callers never
//! hold it across an `.await`; heavy work belongs on a blocking thread.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use mobilesyncdb_crdt::{
    ActorId, Causality, Change, ChangeHash, ClientId, ConflictSet, Edit, HybridClock, MergePolicy,
    PolicyRegistry, Stamp,
};
use tracing::info;

use crate::config::EngineConfig;
use crate::engine::cache::DocCache;
use crate::engine::changelog::ChangeLog;
use crate::engine::error::{EngineError, ReadError, SchemaError};
use crate::engine::query::{self, Plan, Query, QueryResult};
use crate::engine::row::Row;
use crate::engine::table::{MAX_TABLES, Table};
use crate::schema::{Fields, TableSchema};
use crate::storage::Journal;

mod audit;
mod export;
mod migrate;
mod persist;
mod scan;
mod sequence;
mod state;

pub use audit::{PolicyChange, PolicyOutcome};
pub use export::{ExportCursor, ExportPage, ExportedRecord};
pub(crate) use persist::Restore;
pub use scan::{
    Deferral, FullAccess, Payload, RowAccess, ScanRequest, ScanResult, ScannedRecord, ScannedState,
    TableScope,
};

use persist::storage_error;
pub use sequence::{
    Held, STREAM_POSITION_SETTING, SequencedWrite, Sequencer, Shown, StreamApplies, StreamWrite,
};
use state::State;

/// Writes made on behalf of one caller; see [`Database::writer`].
#[derive(Clone, Copy, Debug)]
pub struct Writer<'a> {
    db: &'a Database,
    access: &'a dyn RowAccess,
    version: Option<u64>,
    defer: bool,
    schema: Option<u32>,
}

impl Writer<'_> {
    /// Makes patches and deletes conditional: they are refused with
    /// [`WriteError::VersionMismatch`](crate::engine::WriteError::VersionMismatch)
    /// unless the record is still at `version` (as [`Database::get_versioned`]
    /// gave it). An HTTP `If-Match` maps here.
    pub fn if_version(mut self, version: Option<u64>) -> Self {
        self.version = version;
        self
    }

    /// Returns from each write without waiting for it to be durable; the caller
    /// then waits once for all of them with [`Database::acknowledge`] before it
    /// tells anyone the writes are done. A push of many operations shares one
    /// `fsync` this way.
    pub fn deferred(mut self) -> Self {
        self.defer = true;
        self
    }

    /// Reads the fields of inserts and patches as an app on schema version
    /// `version` names and types them, translating them to the current version
    /// (a field the current version removed is written where that version reads
    /// it). `None`, or the current version, writes as the current version does.
    pub fn schema_version(mut self, version: Option<u32>) -> Self {
        self.schema = version;
        self
    }

    fn guard(&self) -> state::Guard<'_> {
        state::Guard {
            access: self.access,
            version: self.version,
            schema: self.schema,
        }
    }

    /// As [`Database::insert`].
    ///
    /// # Errors
    ///
    /// As [`Database::insert`], and [`WriteError::AccessDenied`](crate::engine::WriteError::AccessDenied).
    pub fn insert(
        &self,
        table: &str,
        fields: Fields,
        origin: &ClientId,
    ) -> Result<WriteOutcome, EngineError> {
        self.db.commit_write(self.defer, None, |state| {
            state.insert(table, fields, origin, self.guard())
        })
    }

    /// As [`Database::patch`].
    ///
    /// # Errors
    ///
    /// As [`Database::patch`], and [`WriteError::AccessDenied`](crate::engine::WriteError::AccessDenied).
    pub fn patch(
        &self,
        table: &str,
        id: &str,
        edits: Vec<Edit>,
        origin: &ClientId,
    ) -> Result<WriteOutcome, EngineError> {
        let guard = self.guard();
        let outcome = self
            .db
            .commit_write(self.defer, Some((table, id)), |state| {
                state.patch(table, id, edits, None, origin, guard)
            })?;
        Ok(outcome.write)
    }

    /// As [`Database::patch_at`].
    ///
    /// # Errors
    ///
    /// As [`Database::patch_at`], and [`WriteError::AccessDenied`](crate::engine::WriteError::AccessDenied).
    pub fn patch_at(
        &self,
        table: &str,
        id: &str,
        edits: Vec<Edit>,
        base: &[ChangeHash],
        origin: &ClientId,
    ) -> Result<PatchOutcome, EngineError> {
        let guard = self.guard();
        self.db
            .commit_write(self.defer, Some((table, id)), |state| {
                state.patch(table, id, edits, Some(base), origin, guard)
            })
    }

    /// As [`Database::delete`].
    ///
    /// # Errors
    ///
    /// As [`Database::delete`].
    pub fn delete(
        &self,
        table: &str,
        id: &str,
        origin: &ClientId,
    ) -> Result<WriteOutcome, EngineError> {
        let guard = self.guard();
        self.db
            .commit_write(self.defer, Some((table, id)), |state| {
                state.delete(table, id, origin, guard)
            })
    }

    /// As [`Database::merge_changes`]; the record must be in reach before and after.
    ///
    /// # Errors
    ///
    /// As [`Database::merge_changes`], and [`WriteError::AccessDenied`](crate::engine::WriteError::AccessDenied).
    pub fn merge_changes(
        &self,
        table: &str,
        id: &str,
        changes: Vec<Change>,
        origin: &ClientId,
    ) -> Result<MergeOutcome, EngineError> {
        self.db.commit_write(self.defer, None, |state| {
            state.merge_changes(table, id, changes, origin, self.access)
        })
    }
}

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

/// A wall clock moved by hand, for tests, simulations and replays: it reads
/// what it was set to, and moves only when told.
#[derive(Debug, Default)]
pub struct ManualClock(std::sync::atomic::AtomicU64);

impl ManualClock {
    /// A clock reading `ms` milliseconds since the Unix epoch, ready to share.
    pub fn at(ms: u64) -> Arc<ManualClock> {
        Arc::new(ManualClock(std::sync::atomic::AtomicU64::new(ms)))
    }

    /// Moves the clock forward by `ms`.
    pub fn advance(&self, ms: u64) {
        self.0.fetch_add(ms, std::sync::atomic::Ordering::SeqCst);
    }
}

impl WallClock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
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

/// What a patch made at a base version did.
#[derive(Clone, Debug, PartialEq)]
pub struct PatchOutcome {
    pub write: WriteOutcome,
    /// `Concurrent` when the record changed after the base version.
    pub causality: Causality,
    /// Patched fields that now hold concurrent values for their policy to decide.
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
    /// The automerge storage bytes: a change chunk, to apply with
    /// `load_incremental` (or `Change::from_bytes`). A copy: the engine counts its
    /// own references to shared bytes, so it never hands them out.
    pub change: Vec<u8>,
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
    /// The journal writes wait on, once storage is attached.
    journal: Arc<OnceLock<Journal>>,
    /// The latest sequence number and event id, announced after each write
    /// for long polls, change streams and webhook workers.
    watches: Arc<Watches>,
    /// The cluster's stream, on a cluster node.
    sequencing: Arc<OnceLock<sequence::Sequencing>>,
}

#[derive(Debug)]
struct Watches {
    seq: tokio::sync::watch::Sender<u64>,
    event: tokio::sync::watch::Sender<u64>,
    /// The latest sequence number again, for threads that block on it.
    latest: std::sync::Mutex<u64>,
    moved: std::sync::Condvar,
}

impl Watches {
    fn new() -> Watches {
        Watches {
            seq: tokio::sync::watch::Sender::new(0),
            event: tokio::sync::watch::Sender::new(0),
            latest: std::sync::Mutex::new(0),
            moved: std::sync::Condvar::new(),
        }
    }

    /// Blocks until the latest sequence number reaches `seq` or `timeout`
    /// passes; whether it did.
    fn wait_for(&self, seq: u64, timeout: std::time::Duration) -> bool {
        let latest = self
            .latest
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let (latest, _) = self
            .moved
            .wait_timeout_while(latest, timeout, |latest| *latest < seq)
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *latest >= seq
    }

    /// Moves each watch forward (never back) and wakes its receivers.
    fn announce(&self, seq: u64, event: u64) {
        {
            let mut latest = self
                .latest
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if seq > *latest {
                *latest = seq;
                self.moved.notify_all();
            }
        }
        for (watch, latest) in [(&self.seq, seq), (&self.event, event)] {
            watch.send_if_modified(|current| {
                let newer = latest > *current;
                if newer {
                    *current = latest;
                }
                newer
            });
        }
    }
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
            refused_for_memory: 0,
            settings: BTreeMap::new(),
            journal: None,
            pending_lsn: None,
            conflicts: crate::engine::audit::ConflictLog::default(),
            events: crate::engine::audit::EventLog::default(),
            history: crate::schema::SchemaHistory::default(),
            mode: state::WriteMode::Local,
            captured: None,
            events_muted: false,
            prepared: std::collections::HashMap::new(),
            stream_applies: StreamApplies::default(),
        };
        Ok(Database {
            state: Arc::new(RwLock::new(state)),
            journal: Arc::new(OnceLock::new()),
            watches: Arc::new(Watches::new()),
            sequencing: Arc::new(OnceLock::new()),
        })
    }

    /// A receiver of the latest sequence number: it changes after every
    /// accepted change, so a long poll or a change stream waits on it instead
    /// of polling. The number it shows may not be durable yet; a pull serves
    /// only what is.
    pub fn watch_seq(&self) -> tokio::sync::watch::Receiver<u64> {
        self.watches.seq.subscribe()
    }

    /// A receiver of the latest event id (see [`Database::events_after`]).
    pub fn watch_events(&self) -> tokio::sync::watch::Receiver<u64> {
        self.watches.event.subscribe()
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
        self.commit(false, |state| {
            if state.table_ids.contains_key(&schema.name) {
                return Err(SchemaError::TableExists { table: schema.name });
            }
            if state.tables.len() >= MAX_TABLES {
                return Err(SchemaError::TooManyTables { limit: MAX_TABLES });
            }
            let table = Table::new(schema, &state.registry)?;
            info!(
                table = table.name(),
                fields = table.schema.fields.len(),
                "table created"
            );
            state.journal_table(&table.schema);
            state.history.amend(&table.schema);
            let name = table.name().to_owned();
            state.add_table(table);
            state.note_schema_changed(&name, true);
            Ok(())
        })
    }

    /// The schema of `table`, if it exists.
    pub fn schema(&self, table: &str) -> Option<TableSchema> {
        self.read()
            .table(table)
            .ok()
            .map(|table| table.schema.clone())
    }

    /// The position of `field` in the rows of `table` (as [`Row::get`] takes
    /// it), without copying the schema.
    pub fn field_position(&self, table: &str, field: &str) -> Option<usize> {
        self.read().table(table).ok()?.schema.position(field)
    }

    /// Every table's schema, in creation order.
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
        self.writer(&FullAccess).insert(table, fields, origin)
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
        self.writer(&FullAccess).patch(table, id, edits, origin)
    }

    /// Applies field edits as a writer that had seen the record only up to `base`
    /// (its heads then, as [`Database::heads`] gave them). When the record changed
    /// since, the patch is a concurrent edit: conflicts are kept and resolved by
    /// the fields' policies, exactly as if the writer had sent automerge changes.
    ///
    /// # Errors
    ///
    /// As [`Database::patch`], and [`WriteError::Record`] with `UnknownHeads` when
    /// `base` names a change the record does not have.
    pub fn patch_at(
        &self,
        table: &str,
        id: &str,
        edits: Vec<Edit>,
        base: &[ChangeHash],
        origin: &ClientId,
    ) -> Result<PatchOutcome, EngineError> {
        self.writer(&FullAccess)
            .patch_at(table, id, edits, base, origin)
    }

    /// The heads of a record's document (its version), live or deleted.
    ///
    /// # Errors
    ///
    /// [`ReadError::UnknownTable`], or `Corrupt` if the stored document cannot load.
    pub fn heads(&self, table: &str, id: &str) -> Result<Option<Vec<ChangeHash>>, EngineError> {
        let state = self.read();
        let table_ref = state.table(table)?;
        let Some(slot) = table_ref.slot_of(id) else {
            return Ok(None);
        };
        let record = table_ref
            .record(slot)
            .load()
            .map_err(|source| ReadError::Corrupt {
                table: table.to_owned(),
                record: id.to_owned(),
                source,
            })?;
        Ok(Some(record.heads()))
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
        self.patch(table, id, crate::schema::field_edits(fields), origin)
    }

    /// Writes on behalf of a caller who reaches only the rows `access` admits: a
    /// record out of reach is answered as missing ([`WriteError::NotFound`](crate::engine::WriteError::NotFound)), and a
    /// write that would move a record out of reach is refused
    /// ([`WriteError::AccessDenied`](crate::engine::WriteError::AccessDenied)). The methods of [`Database`] write with
    /// [`FullAccess`].
    pub fn writer<'a>(&'a self, access: &'a dyn RowAccess) -> Writer<'a> {
        Writer {
            db: self,
            access,
            version: None,
            defer: false,
            schema: None,
        }
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
        self.writer(&FullAccess).delete(table, id, origin)
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
        self.writer(&FullAccess)
            .merge_changes(table, id, changes, origin)
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

    /// The visible row of a live record and its version: the sequence number of
    /// its latest change, which every change to the record moves forward. HTTP
    /// serves it as the `ETag`.
    ///
    /// # Errors
    ///
    /// [`ReadError::UnknownTable`].
    pub fn get_versioned(&self, table: &str, id: &str) -> Result<Option<(Row, u64)>, EngineError> {
        let state = self.read();
        let table = state.table(table)?;
        Ok(table
            .slot_of(id)
            .map(|slot| table.record(slot))
            .filter(|record| !record.deleted)
            .map(|record| (record.row.clone(), record.latest_seq)))
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
        let corrupt = |source| ReadError::Corrupt {
            table: table.to_owned(),
            record: id.to_owned(),
            source,
        };
        let record = table_ref.record(slot).load().map_err(corrupt)?;
        let mut conflicts = Vec::new();
        for field in table_ref.schema.live_fields() {
            let set = record.conflict_set(field.doc_key()).map_err(corrupt)?;
            if set.is_conflict() {
                // Named as the field is now (a renamed field keeps its key).
                conflicts.push(ConflictSet::new(
                    field.name.clone(),
                    set.candidates().to_vec(),
                ));
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

    /// Re-derives every visible row and index from the saved documents, and returns
    /// how many rows differed from the ones kept (0 unless something is wrong:
    /// visible rows and indexes are derived state).
    ///
    /// # Errors
    ///
    /// [`ReadError::Corrupt`] naming the first record whose document cannot be read.
    pub fn rebuild_derived_state(&self) -> Result<usize, EngineError> {
        let mut state = self.write();
        let mut differing = 0;
        for table in &mut state.tables {
            differing += table
                .rebuild()
                .map_err(|(record, source)| ReadError::Corrupt {
                    table: table.name().to_owned(),
                    record,
                    source,
                })?;
        }
        if differing > 0 {
            tracing::warn!(
                differing,
                "rebuilt visible rows that had drifted from their documents"
            );
        }
        Ok(differing)
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

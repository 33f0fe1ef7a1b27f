//! Reading whole records out for export, page by page, and the checks an
//! import makes before it writes anything.
//!
//! Pages follow slot order (the order records were created in). Slots are never
//! reused or removed, so a cursor stays valid across writes, and a page costs
//! time in proportion to its records. Id order would need a sorted id structure
//! the table does not keep: sorting the ids for every page costs the whole
//! table per page.

use mobilesyncdb_crdt::automerge::ReadDoc as _;
use mobilesyncdb_crdt::{Change, HybridClock, StampMeta};

use super::Database;
use crate::engine::Row;
use crate::engine::changelog::ENTRY_OVERHEAD_BYTES;
use crate::engine::error::{EngineError, SchemaError, WriteError};
use crate::engine::table::{MAX_TABLES, StoredChunk, StoredRecord, Table};
use crate::schema::TableSchema;

/// Where the next export page of a table starts; the default is the first
/// record. It stays valid across writes: records keep their place for the life
/// of the table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExportCursor(pub(crate) u32);

/// One record as an export writes it.
#[derive(Clone, Debug, PartialEq)]
pub struct ExportedRecord {
    pub id: String,
    /// The record's automerge storage chunks, concatenated: one document to load.
    pub doc: Vec<u8>,
    /// True for a tombstone; the deletion is in the document too.
    pub deleted: bool,
    /// The visible row (empty for a deleted record).
    pub row: Row,
}

/// One page of a table's records, live and deleted, in the order they were
/// created.
#[derive(Clone, Debug, PartialEq)]
pub struct ExportPage {
    pub records: Vec<ExportedRecord>,
    /// Where the next page starts; `None` when the table has no more records.
    pub next: Option<ExportCursor>,
}

/// Bookkeeping of a new record beyond its bytes, as the write path counts it.
const SLOT_BYTES: usize = std::mem::size_of::<StoredRecord>() + 16;

/// Bookkeeping of one stored change: its chunk reference, its reference counts
/// and its change-log entry.
const CHANGE_BYTES: usize =
    std::mem::size_of::<StoredChunk>() + 2 * std::mem::size_of::<usize>() + ENTRY_OVERHEAD_BYTES;

impl Database {
    /// Up to `max_records` records of `table` from `from` on, live and deleted,
    /// with their saved bytes; the page ends after the record that reaches
    /// `max_bytes`. The read lock is held for this page only, so writes go on
    /// between pages: records written meanwhile show their latest state.
    ///
    /// # Errors
    ///
    /// [`ReadError::UnknownTable`](crate::engine::ReadError::UnknownTable).
    pub fn export_page(
        &self,
        table: &str,
        from: ExportCursor,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<ExportPage, EngineError> {
        let state = self.read();
        let table = state.table(table)?;
        let end = table_slots(table);
        let mut slot = from.0;
        let mut records = Vec::new();
        let mut bytes = 0;
        while slot < end && records.len() < max_records.max(1) && bytes < max_bytes {
            let stored = table.record(slot);
            slot += 1;
            // A slot without chunks holds no record (a write refused half-way).
            if stored.chunks.is_empty() {
                continue;
            }
            let doc = stored.saved_bytes();
            bytes += doc.len() + stored.row.heap_bytes();
            records.push(ExportedRecord {
                id: stored.id.to_string(),
                doc,
                deleted: stored.deleted,
                row: stored.row.clone(),
            });
        }
        let next = (slot < end).then_some(ExportCursor(slot));
        Ok(ExportPage { records, next })
    }

    /// Checks that tables with these schemas could be created now, without
    /// creating any: an import creates its missing tables only once every
    /// other check has passed.
    ///
    /// # Errors
    ///
    /// [`SchemaError`]: an invalid schema, a policy this database does not know,
    /// a table that exists already, or too many tables.
    pub fn check_new_tables(&self, schemas: &[TableSchema]) -> Result<(), EngineError> {
        let state = self.read();
        if state.tables.len() + schemas.len() > MAX_TABLES {
            return Err(SchemaError::TooManyTables { limit: MAX_TABLES }.into());
        }
        for schema in schemas {
            if state.table_ids.contains_key(&schema.name) {
                return Err(SchemaError::TableExists {
                    table: schema.name.clone(),
                }
                .into());
            }
            Table::new(schema.clone(), &state.registry)?;
        }
        Ok(())
    }

    /// Checks, before an import writes anything, the refusals its merges of
    /// `(table, id, whole history)` could meet: a stamp too far ahead of this
    /// server's clock, a record that would grow beyond `max_record_bytes`, and
    /// the memory limit. Records of tables that do not exist yet count as new.
    ///
    /// The memory figure is an estimate: stored bytes and bookkeeping of the
    /// changes the database lacks, not rows or indexes. The changes an existing
    /// record lacks are counted only when its size needs checking (loading
    /// every record would take too long); the rest are taken to be duplicates.
    ///
    /// # Errors
    ///
    /// [`WriteError::ClockSkew`], [`WriteError::RecordTooLarge`] or
    /// [`WriteError::MemoryLimit`] for the first record refused.
    pub fn check_import<'a>(
        &self,
        candidates: impl IntoIterator<Item = (&'a str, &'a str, &'a [Change])>,
    ) -> Result<(), EngineError> {
        let state = self.read();
        let now = state.wall.now_ms();
        let mut needed = 0;
        for (table, id, changes) in candidates {
            let candidate = Candidate { table, id, changes };
            check_stamps(&state.clock, now, candidate)?;
            let existing = state
                .table(table)
                .ok()
                .and_then(|table| table.slot_of(id).map(|slot| table.record(slot)));
            needed += added_bytes(existing, candidate, state.config.max_record_bytes)?;
        }
        let memory = state.memory();
        let used = memory.total - memory.doc_cache;
        if used + needed > memory.limit {
            let limit = memory.limit;
            return Err(WriteError::MemoryLimit {
                used,
                limit,
                needed,
            }
            .into());
        }
        Ok(())
    }
}

/// A record an import is about to merge: its table, its id, its whole history.
#[derive(Clone, Copy)]
struct Candidate<'a> {
    table: &'a str,
    id: &'a str,
    changes: &'a [Change],
}

/// One past the highest slot of `table`.
fn table_slots(table: &Table) -> u32 {
    crate::engine::query::RowSource::slot_count(table)
}

/// Refuses a candidate with a stamp too far ahead, as a merge would; the clock
/// is not moved.
fn check_stamps(clock: &HybridClock, now: u64, candidate: Candidate<'_>) -> Result<(), WriteError> {
    for meta in candidate.changes.iter().filter_map(StampMeta::of_change) {
        clock
            .check(meta.stamp, now)
            .map_err(|source| WriteError::ClockSkew {
                table: candidate.table.to_owned(),
                record: candidate.id.to_owned(),
                source,
            })?;
    }
    Ok(())
}

/// The bytes merging `candidate` would add, after checking that the record
/// stays within `limit`. A new record adds all its changes; an existing one
/// adds nothing unless its stored bytes plus every change exceed the limit,
/// when its document is loaded to count only the changes it lacks.
fn added_bytes(
    existing: Option<&StoredRecord>,
    candidate: Candidate<'_>,
    limit: usize,
) -> Result<usize, WriteError> {
    let too_large = |bytes| WriteError::RecordTooLarge {
        table: candidate.table.to_owned(),
        record: candidate.id.to_owned(),
        bytes,
        limit,
    };
    let all: usize = candidate.changes.iter().map(|c| c.raw_bytes().len()).sum();
    let Some(stored) = existing else {
        if all > limit {
            return Err(too_large(all));
        }
        let bookkeeping = SLOT_BYTES + candidate.id.len() + candidate.changes.len() * CHANGE_BYTES;
        return Ok(all + bookkeeping);
    };
    let before = stored.saved_len();
    if before + all <= limit {
        return Ok(0);
    }
    let record = stored.load().map_err(|source| WriteError::Record {
        table: candidate.table.to_owned(),
        record: candidate.id.to_owned(),
        source,
    })?;
    let fresh: Vec<&Change> = candidate
        .changes
        .iter()
        .filter(|change| {
            record
                .document()
                .get_change_by_hash(&change.hash())
                .is_none()
        })
        .collect();
    let added: usize = fresh.iter().map(|change| change.raw_bytes().len()).sum();
    if before + added > limit {
        return Err(too_large(before + added));
    }
    Ok(added + fresh.len() * CHANGE_BYTES)
}

//! Reading whole records out for export, page by page, and the checks an
//! import makes before it writes anything.
//!
//! Pages follow slot order (the order records were created in). Slots are never
//! reused or removed, so a cursor stays valid across writes, and a page costs
//! time in proportion to its records. Id order would need a sorted id structure
//! the table does not keep: sorting the ids for every page costs the whole
//! table per page.

use mobilesyncdb_crdt::Change;
use mobilesyncdb_crdt::automerge::ReadDoc as _;

use super::Database;
use super::state::{SLOT_BYTES, chunk_cost_of, merge_headroom, refuse_skewed};
use crate::engine::Row;
use crate::engine::changelog::{Chunk, ENTRY_OVERHEAD_BYTES};
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

/// Bookkeeping of one stored change beyond its bytes: its chunk reference, its
/// reference counts (as the write path's `chunk_cost`) and its change-log entry.
const CHANGE_BYTES: usize =
    std::mem::size_of::<StoredChunk>() + chunk_cost_of(0) + ENTRY_OVERHEAD_BYTES;

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
        // Under the lock the chunks are only shared (reference counts); their
        // bytes are joined into documents after it is released.
        let mut shared = Vec::new();
        let next = {
            let state = self.read();
            let table = state.table(table)?;
            let end = table_slots(table);
            let mut slot = from.0;
            let mut bytes = 0;
            while slot < end && shared.len() < max_records.max(1) && bytes < max_bytes {
                let stored = table.record(slot);
                slot += 1;
                // A slot without chunks holds no record (a write refused half-way).
                if stored.chunks.is_empty() {
                    continue;
                }
                bytes += stored.saved_len() + stored.row.heap_bytes();
                let chunks: Vec<Chunk> = stored
                    .chunks
                    .iter()
                    .map(|chunk| chunk.bytes.clone())
                    .collect();
                shared.push((
                    stored.id.to_string(),
                    chunks,
                    stored.deleted,
                    stored.row.clone(),
                ));
            }
            (slot < end).then_some(ExportCursor(slot))
        };
        let records = shared
            .into_iter()
            .map(|(id, chunks, deleted, row)| ExportedRecord {
                id,
                doc: chunks.concat(),
                deleted,
                row,
            })
            .collect();
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
        // Each merge asks for its own headroom free on top of what the merges
        // before it stored, as `merge_changes` does: the largest one counts.
        let mut headroom = 0;
        for (table, id, changes) in candidates {
            let candidate = Candidate { table, id, changes };
            refuse_skewed(&state.clock, now, table, id, changes)?;
            let existing = state
                .table(table)
                .ok()
                .and_then(|table| table.slot_of(id).map(|slot| table.record(slot)));
            needed += added_bytes(existing, candidate, state.config.max_record_bytes)?;
            let incoming = changes.iter().map(|change| change.raw_bytes().len()).sum();
            headroom = headroom.max(merge_headroom(incoming));
        }
        needed += headroom;
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
        // The row and index entries the record will also hold are not known
        // before its document is derived; its change bytes bound them on every
        // data set measured (a row takes about 60% of its changes' bytes).
        let row_and_indexes = all;
        return Ok(all + bookkeeping + row_and_indexes);
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

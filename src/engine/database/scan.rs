//! Listing what changed after a cursor, record by record: what sync pulls.
//!
//! A scan walks the latest-change index of every table in scope together, in
//! sequence order, so it costs time in proportion to the records that changed, not
//! to the table sizes. Each changed record appears once, with its latest sequence
//! number, the storage chunks newer than the cursor (or its whole document when
//! the caller cannot have its earlier chunks), and its visible row.

use mobilesyncdb_crdt::Record;

use super::Database;
use crate::engine::error::{EngineError, ReadError};
use crate::engine::query::{Filter, RowFilter};
use crate::engine::row::Row;
use crate::engine::table::{StoredRecord, Table};

/// One table a client replicates, optionally narrowed by filters on its rows
/// (partial replication).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TableScope {
    pub table: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<Filter>,
}

impl TableScope {
    /// The whole table.
    pub fn all(table: impl Into<String>) -> TableScope {
        TableScope {
            table: table.into(),
            filters: Vec::new(),
        }
    }
}

/// Decides which rows a caller may see. Sync applies it to every row of every
/// batch, beside the scope's own filters, so nothing outside it is ever sent.
pub trait RowAccess: Send + Sync + std::fmt::Debug {
    /// True when the caller may see this row of `table` (for a deleted record, the
    /// row it had when it was deleted).
    fn admits(&self, table: &str, row: &Row) -> bool;

    /// True when every row of `table` is admitted, so deleted records need no
    /// look at their last row.
    fn admits_all(&self, table: &str) -> bool;
}

/// Every row is visible: an embedded or administrative caller.
#[derive(Clone, Copy, Debug, Default)]
pub struct FullAccess;

impl RowAccess for FullAccess {
    fn admits(&self, _table: &str, _row: &Row) -> bool {
        true
    }

    fn admits_all(&self, _table: &str) -> bool {
        true
    }
}

/// What to list.
#[derive(Debug)]
pub struct ScanRequest<'a> {
    pub scopes: &'a [TableScope],
    /// List records whose latest change is after this sequence number.
    pub cursor: u64,
    /// The caller holds every change up to this sequence number (at most
    /// `cursor`): a listed record gets its chunks newer than it. While a pull is
    /// cut into batches, a record listed late may have changed both before and
    /// after the cursor, so the base stays where the pull began.
    pub base: u64,
    /// Records to send whole regardless of the cursor (`scope` index, id): a client
    /// that received changes for a record it does not hold asks for it this way.
    pub fetch: &'a [(usize, String)],
    /// At most this many records, beyond the fetched ones.
    pub max_records: usize,
    /// Stop after the record that reaches this many bytes (payload and row);
    /// at least one record is always listed.
    pub max_bytes: usize,
    /// Whether listed records carry their payload (the storage chunks); a
    /// caller that only announces which records changed leaves them out and
    /// copies no change bytes.
    pub payloads: bool,
    pub access: &'a dyn RowAccess,
    /// Records to hold back rather than send (a power profile's deferral):
    /// listed by id in [`ScanResult::deferred`], their payloads neither copied
    /// nor counted against `max_bytes`. Fetched records are never held back.
    pub defer: Option<&'a Deferral>,
}

/// What a scan holds back.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Deferral {
    /// Per scope (index into [`ScanRequest::scopes`]): hold back every changed
    /// record of it.
    pub scopes: Vec<bool>,
    /// Hold back a record whose payload would be larger than this.
    pub over_bytes: Option<usize>,
}

/// The automerge storage bytes a client adds to its copy of a record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Payload {
    /// Storage chunks concatenated, oldest first: change chunks, or a saved
    /// document first. Automerge loads them as one document.
    pub bytes: Vec<u8>,
    /// True when the chunks are the whole document, so a client that has no
    /// local edits on the record may replace its copy by them; otherwise they
    /// are the changes after the cursor, to append.
    pub whole: bool,
}

impl Payload {
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

/// What became of a changed record, from the caller's point of view.
#[derive(Clone, Debug, PartialEq)]
pub enum ScannedState {
    /// Live and in scope. `new` is true when the record's first change is after
    /// the cursor (or it was fetched): the caller cannot hold it yet.
    Live {
        payload: Payload,
        row: Row,
        new: bool,
    },
    /// Deleted; the payload carries the tombstone.
    Deleted { payload: Payload },
    /// Changed, but outside the caller's scope or access now: drop any copy.
    Left,
}

/// One changed record.
#[derive(Clone, Debug, PartialEq)]
pub struct ScannedRecord {
    /// Index into [`ScanRequest::scopes`].
    pub scope: usize,
    pub id: String,
    /// The sequence number of the record's latest change.
    pub seq: u64,
    pub state: ScannedState,
}

/// A scan's answer.
#[derive(Clone, Debug, PartialEq)]
pub struct ScanResult {
    pub records: Vec<ScannedRecord>,
    /// Records held back by [`ScanRequest::defer`]: scope index and id, in
    /// sequence order. Each counts against `max_records`, as a listed one does.
    pub deferred: Vec<(usize, String)>,
    /// Resume here: every change up to it was listed or is out of scope.
    pub next_cursor: u64,
    pub has_more: bool,
    /// The oldest cursor the change log still serves change by change.
    pub horizon: u64,
    pub latest_seq: u64,
}

/// A scope resolved against its table.
struct Resolved<'t> {
    table: &'t Table,
    filter: RowFilter,
    /// True when some rows of the table are not sent: filters or access rules.
    restricted: bool,
}

impl Database {
    /// Lists the records of `request.scopes` changed after `request.cursor`, oldest
    /// change first, within the record and byte bounds.
    ///
    /// # Errors
    ///
    /// [`ReadError::UnknownTable`], [`ReadError::Query`] for a filter that does not
    /// fit its table, or `Corrupt` for a document that cannot be read.
    pub fn scan_changes(&self, request: &ScanRequest<'_>) -> Result<ScanResult, EngineError> {
        let state = self.read();
        let resolved = request
            .scopes
            .iter()
            .map(|scope| {
                let table = state.table(&scope.table)?;
                let filter =
                    RowFilter::compile(&table.schema, &scope.filters).map_err(ReadError::from)?;
                let restricted = !filter.is_empty() || !request.access.admits_all(&scope.table);
                Ok(Resolved {
                    table,
                    filter,
                    restricted,
                })
            })
            .collect::<Result<Vec<_>, ReadError>>()?;
        // Only durable changes are served: a cursor never passes a change a
        // crash could still lose, so sequence numbers are never reused under it.
        // With the read lock held no write can start, so once the journal has
        // synced what it holds, every change is durable and none is skipped.
        let latest = state.log.latest_seq();
        if let Some(journal) = self.journal()
            && journal.durable_seq() < latest
            && let Err(error) = journal.make_durable()
        {
            tracing::debug!(%error, "pull served up to the durable changes only");
        }
        let durable = self.durable_seq(latest);
        let mut scan = Scanner {
            request,
            resolved: &resolved,
            records: Vec::new(),
            deferred: Vec::new(),
            bytes: 0,
            durable,
        };
        scan.fetch()?;
        let (next_cursor, has_more) = scan.walk()?;
        Ok(ScanResult {
            records: scan.records,
            deferred: scan.deferred,
            next_cursor,
            has_more,
            horizon: state.log.horizon(),
            latest_seq: state.log.latest_seq(),
        })
    }
}

struct Scanner<'r, 't> {
    request: &'r ScanRequest<'r>,
    resolved: &'r [Resolved<'t>],
    records: Vec<ScannedRecord>,
    deferred: Vec<(usize, String)>,
    bytes: usize,
    /// The latest sequence number that may be served.
    durable: u64,
}

impl Scanner<'_, '_> {
    fn fetch(&mut self) -> Result<(), ReadError> {
        for (scope, id) in self.request.fetch {
            let Some(resolved) = self.resolved.get(*scope) else {
                continue;
            };
            if let Some(slot) = resolved.table.slot_of(id) {
                let stored = resolved.table.record(slot);
                if stored.latest_seq > self.durable {
                    // Asked again by the next pull, once its change is durable.
                    continue;
                }
                if let Some(Listing::Send(state)) = self.listing(*scope, stored, true)? {
                    self.push(*scope, stored, state);
                }
            }
        }
        Ok(())
    }

    /// Walks every scope's latest-change index together, in sequence order.
    /// Returns the next cursor and whether more records wait.
    fn walk(&mut self) -> Result<(u64, bool), ReadError> {
        let durable = self.durable;
        let cursor = self.request.cursor;
        let mut walkers: Vec<_> = self
            .resolved
            .iter()
            .map(|resolved| resolved.table.changed_after(cursor).peekable())
            .collect();
        let mut listed = 0;
        let mut last_seq = cursor;
        loop {
            let next = walkers
                .iter_mut()
                .enumerate()
                .filter_map(|(scope, walker)| walker.peek().map(|(seq, _)| (*seq, scope)))
                .min();
            let Some((seq, scope)) = next else {
                return Ok((durable.max(cursor), false));
            };
            if seq > durable {
                // A record whose latest change is not durable (storage is
                // failing) is skipped, but an earlier change of it may lie
                // between the cursor and here: the cursor stays where it was.
                return Ok((cursor, false));
            }
            if listed >= self.request.max_records || self.full() {
                return Ok((last_seq, true));
            }
            let Some((_, slot)) = walkers[scope].next() else {
                continue;
            };
            last_seq = seq;
            let stored = self.resolved[scope].table.record(slot);
            match self.listing(scope, stored, false)? {
                Some(Listing::Send(state)) => self.push(scope, stored, state),
                Some(Listing::Defer) => {
                    self.bytes += stored.id.len();
                    self.deferred.push((scope, stored.id.to_string()));
                }
                None => continue,
            }
            listed += 1;
        }
    }

    fn full(&self) -> bool {
        !self.records.is_empty() && self.bytes >= self.request.max_bytes
    }

    fn push(&mut self, scope: usize, stored: &StoredRecord, state: ScannedState) {
        self.bytes += stored.id.len()
            + match &state {
                ScannedState::Live { payload, row, .. } => payload.len() + row.heap_bytes(),
                ScannedState::Deleted { payload } => payload.len(),
                ScannedState::Left => 0,
            };
        self.records.push(ScannedRecord {
            scope,
            id: stored.id.to_string(),
            seq: stored.latest_seq,
            state,
        });
    }

    /// What the caller gets of a changed record, or `None` when it gets nothing
    /// (a record it never held and may not see). A record it may see is held
    /// back when the deferral says so, before its payload is copied.
    fn listing(
        &self,
        scope: usize,
        stored: &StoredRecord,
        fetched: bool,
    ) -> Result<Option<Listing>, ReadError> {
        let resolved = &self.resolved[scope];
        let base = self.request.base.min(self.request.cursor);
        let new = fetched || stored.first_seq > base;
        if !self.visible(resolved, stored)? {
            // The caller may hold it if it was listed before: its first change is
            // not after the cursor (an earlier batch of a cut pull may have sent
            // it whole), or the caller asked for it.
            let maybe_held = fetched || stored.first_seq <= self.request.cursor;
            return Ok(maybe_held.then_some(Listing::Send(ScannedState::Left)));
        }
        let since = if new { 0 } else { base };
        if let Some(defer) = self.request.defer
            && !fetched
            && (defer.scopes.get(scope).copied().unwrap_or(false)
                || defer
                    .over_bytes
                    .is_some_and(|over| payload_len(stored, since) > over))
        {
            return Ok(Some(Listing::Defer));
        }
        // In a restricted scope a record may enter the scope long after its first
        // change; a client sent changes for a record it does not hold asks for it
        // whole through `fetch`.
        let payload = if self.request.payloads {
            payload(stored, since)
        } else {
            Payload {
                bytes: Vec::new(),
                whole: new,
            }
        };
        Ok(Some(Listing::Send(if stored.deleted {
            ScannedState::Deleted { payload }
        } else {
            ScannedState::Live {
                payload,
                row: stored.row.clone(),
                new,
            }
        })))
    }

    /// Whether the caller may see the record: its live row, or for a deleted
    /// record in a restricted scope the row it had before the tombstone.
    fn visible(&self, resolved: &Resolved<'_>, stored: &StoredRecord) -> Result<bool, ReadError> {
        let name = resolved.table.name();
        if !resolved.restricted {
            return Ok(true);
        }
        if !stored.deleted {
            return Ok(resolved.filter.matches(&resolved.table.schema, &stored.row)
                && self.request.access.admits(name, &stored.row));
        }
        let corrupt = |source| ReadError::Corrupt {
            table: name.to_owned(),
            record: stored.id.to_string(),
            source,
        };
        let record: Record = stored.load().map_err(corrupt)?;
        let (row, _) = resolved.table.derive_row(&record).map_err(corrupt)?;
        Ok(resolved.filter.matches(&resolved.table.schema, &row)
            && self.request.access.admits(name, &row))
    }
}

/// A changed record, as a scan lists it.
enum Listing {
    Send(ScannedState),
    /// Held back by [`ScanRequest::defer`].
    Defer,
}

/// The chunks of `stored` newer than `cursor` (all of them when the first is).
fn chunks_after(stored: &StoredRecord, cursor: u64) -> (impl Iterator<Item = &[u8]>, bool) {
    let whole = stored.chunks.first().is_none_or(|chunk| chunk.seq > cursor);
    let chunks = stored
        .chunks
        .iter()
        .filter(move |chunk| whole || chunk.seq > cursor)
        .map(|chunk| &chunk.bytes[..]);
    (chunks, whole)
}

/// The chunks of `stored` newer than `cursor` (all of them for cursor 0).
fn payload(stored: &StoredRecord, cursor: u64) -> Payload {
    let (chunks, whole) = chunks_after(stored, cursor);
    Payload {
        bytes: chunks.collect::<Vec<_>>().concat(),
        whole,
    }
}

/// The length of [`payload`], without copying it.
fn payload_len(stored: &StoredRecord, cursor: u64) -> usize {
    chunks_after(stored, cursor).0.map(<[u8]>::len).sum()
}

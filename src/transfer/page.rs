//! Pages of whole records, as [`Database::export_page`] reads them.
//!
//! [`Database::export_page`]: crate::engine::Database::export_page

use crate::engine::Row;

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

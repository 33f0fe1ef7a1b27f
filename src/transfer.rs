//! Export and import of whole tables or the whole database, as files.
//!
//! - [`Exporter`]: writes an export of a [`Database`] as an iterator of chunks
//!   of about 1 MiB, reading one page of records per chunk, so memory and lock
//!   time stay bounded whatever the database's size.
//! - [`Importer`]: reads an export in pieces of any size (a chunked HTTP body),
//!   checks every line or frame as it arrives, and writes only once the whole
//!   file has been checked: a damaged, cut-off or inconsistent file changes
//!   nothing. Records are merged as automerge changes, so importing the same
//!   file twice, or into a database that already holds some of its records,
//!   loses nothing and duplicates nothing.
//! - [`Format`]: NDJSON (`application/x-ndjson`, one JSON object per line,
//!   readable with any JSON tool) or binary
//!   (`application/vnd.mobilesyncdb.export`, the sync envelope's checked
//!   frames around MessagePack, documents LZ4-compressed).
//! - [`TransferError`]: every refusal, with a stable [`TransferError::code`] and
//!   the line or frame at fault.
//!
//! A file holds a header (format, version, when, the exporting database's
//! latest sequence number, and each table's schema beside an opaque `access`
//! value the caller chooses), every record of those tables, live and deleted,
//! as its whole automerge document, and an end marker with the record count
//! and a CRC-32 of everything before it. `docs/EXPORT.md` describes both
//! formats byte by byte.
//!
//! [`Database`]: crate::engine::Database

mod apply;
mod binary;
mod error;
mod export;
mod header;
mod import;
mod ndjson;

pub use crate::engine::{ExportCursor, ExportPage, ExportedRecord};
pub use error::{Defect, Position, TransferError};
pub use export::{ExportOptions, Exporter};
pub use import::{ImportLimits, ImportReport, Importer};

/// The two file formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// One JSON object per line.
    Ndjson,
    /// Checked binary frames around MessagePack.
    Binary,
}

impl Format {
    /// The media type of files in this format.
    pub const fn content_type(self) -> &'static str {
        match self {
            Format::Ndjson => "application/x-ndjson",
            Format::Binary => "application/vnd.mobilesyncdb.export",
        }
    }

    /// The usual file name extension.
    pub const fn extension(self) -> &'static str {
        match self {
            Format::Ndjson => "ndjson",
            Format::Binary => "msdbx",
        }
    }

    /// The format of a `Content-Type` (or `Accept`) value, ignoring case and
    /// parameters; `application/ndjson` is read as NDJSON too.
    pub fn from_content_type(value: &str) -> Option<Format> {
        let essence = value.split(';').next().unwrap_or_default().trim();
        let is = |name: &str| essence.eq_ignore_ascii_case(name);
        if is(Format::Ndjson.content_type()) || is("application/ndjson") {
            Some(Format::Ndjson)
        } else if is(Format::Binary.content_type()) {
            Some(Format::Binary)
        } else {
            None
        }
    }
}

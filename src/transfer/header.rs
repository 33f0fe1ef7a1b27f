//! What both formats carry: the header, and the items a reader hands the
//! importer (header, records, end) once their bytes have been checked.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::error::{Defect, Position, TransferError};
use crate::schema::TableSchema;

/// The `format` every export header names.
pub(crate) const FORMAT_NAME: &str = "mobilesyncdb-export";
/// The format version this build writes and reads.
pub(crate) const FORMAT_VERSION: u32 = 1;

/// The first line or frame of an export.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct Header {
    pub(crate) format: String,
    pub(crate) version: u32,
    /// When the export started, in milliseconds since the Unix epoch.
    pub(crate) created_ms: u64,
    /// Every change up to this sequence number of the exporting database is in
    /// the file.
    pub(crate) latest_seq: u64,
    pub(crate) tables: Vec<TableEntry>,
}

/// One exported table: its schema, and what the caller stored beside it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct TableEntry {
    pub(crate) schema: TableSchema,
    /// Opaque to the engine (the HTTP layer keeps access rules here).
    #[serde(default)]
    pub(crate) access: Option<serde_json::Value>,
}

/// Just the identity of a header, read when the whole header does not parse:
/// a future version may have changed the rest.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct Identity {
    format: Option<String>,
    version: Option<u64>,
}

impl Identity {
    /// The error to give instead of a parse error, if the identity explains it.
    pub(crate) fn refusal(&self, at: Position) -> Option<TransferError> {
        if let Some(format) = self.format.as_deref().filter(|f| *f != FORMAT_NAME) {
            let format = format.to_owned();
            return Some(TransferError::NotAnExport { at, format });
        }
        let version = self.version.filter(|v| *v != u64::from(FORMAT_VERSION))?;
        Some(TransferError::UnsupportedVersion {
            version,
            supported: FORMAT_VERSION,
        })
    }
}

impl Header {
    /// Checks what deserialising cannot: the format, the version, and that no
    /// table is listed twice.
    pub(crate) fn check(&self, at: Position) -> Result<(), TransferError> {
        let identity = Identity {
            format: Some(self.format.clone()),
            version: Some(u64::from(self.version)),
        };
        if let Some(refusal) = identity.refusal(at) {
            return Err(refusal);
        }
        let mut names = BTreeSet::new();
        for entry in &self.tables {
            if !names.insert(entry.schema.name.as_str()) {
                let table = entry.schema.name.clone();
                return Err(TransferError::bad(at, Defect::DuplicateTable { table }));
            }
        }
        Ok(())
    }
}

/// Where a reader hands each checked item, in file order; an error stops the
/// reading there.
pub(crate) type Accept<'a> = &'a mut dyn FnMut(Item) -> Result<(), TransferError>;

/// A checked piece of an export file, in file order.
#[derive(Debug)]
pub(crate) enum Item {
    Header {
        header: Header,
        at: Position,
    },
    Record(RawRecord),
    /// The end marker, its checksum already verified.
    End {
        records: u64,
        at: Position,
    },
}

/// A record as the file holds it, its document not yet loaded.
#[derive(Debug)]
pub(crate) struct RawRecord {
    pub(crate) table: String,
    pub(crate) id: String,
    pub(crate) deleted: bool,
    pub(crate) doc: Vec<u8>,
    pub(crate) at: Position,
}

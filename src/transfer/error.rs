//! [`TransferError`]: why an export could not be written or an import was refused.

use mobilesyncdb_crdt::RecordError;

use crate::engine::EngineError;
use crate::sync::wire::{MessageKind, WireError};

/// Where in an export file something was found. Lines, frames and the records
/// of a frame are numbered from 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Position {
    /// A line of an NDJSON file.
    Line(u64),
    /// A frame (sealed message) of a binary file.
    Frame(u64),
    /// One record of a binary file's records frame.
    FrameRecord { frame: u64, record: u64 },
}

impl std::fmt::Display for Position {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Position::Line(line) => write!(formatter, "line {line}"),
            Position::Frame(frame) => write!(formatter, "frame {frame}"),
            Position::FrameRecord { frame, record } => {
                write!(formatter, "frame {frame}, record {record}")
            }
        }
    }
}

/// What is wrong with a line or frame that parsed but does not belong where it is.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Defect {
    #[error("the file does not start with the export header")]
    HeaderMissing,
    #[error("a second header; an export file has exactly one")]
    SecondHeader,
    #[error("the header lists table `{table}` twice")]
    DuplicateTable { table: String },
    #[error("a record of table `{table}`, which the header does not list")]
    UnlistedTable { table: String },
    #[error("a record of table `{table}` with an empty id")]
    EmptyId { table: String },
    #[error("record `{id}` of table `{table}` appears a second time")]
    DuplicateRecord { table: String, id: String },
    #[error("record `{id}` of table `{table}`: the document holds no changes")]
    EmptyDocument { table: String, id: String },
    #[error(
        "record `{id}` of table `{table}`: the document lacks {missing} changes that its other changes depend on"
    )]
    MissingDependencies {
        table: String,
        id: String,
        missing: usize,
    },
    #[error(
        "record `{id}` of table `{table}` is marked deleted = {flag} but its document says the opposite"
    )]
    DeletedMismatch {
        table: String,
        id: String,
        flag: bool,
    },
    #[error(
        "the frame lists {ids} ids, {docs} documents and {flags} deleted flags; they must agree"
    )]
    RaggedFrame {
        ids: usize,
        docs: usize,
        flags: usize,
    },
    #[error("a {kind:?} message, which is not part of an export")]
    WrongKind { kind: MessageKind },
    #[error("the checksum `{text}` is not 8 lowercase hexadecimal digits")]
    BadChecksumText { text: String },
    #[error("data after the end of the export")]
    DataAfterEnd,
}

/// An export that could not be written, or an import that was refused.
///
/// Every refusal of an import before [`TransferError::Interrupted`] leaves the
/// database exactly as it was.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransferError {
    #[error("table `{table}` does not exist; export only tables the database has")]
    UnknownTable { table: String },
    #[error("reading the database for the export failed: {source}")]
    Export {
        #[source]
        source: Box<EngineError>,
    },
    #[error("the body is empty; send the export file as the export wrote it")]
    Empty,
    #[error(
        "{at}: this is not a MobileSyncDB export file (format `{format}`); send a file written by a MobileSyncDB export"
    )]
    NotAnExport { at: Position, format: String },
    #[error(
        "the file is export format version {version}; this server reads version {supported}: export again with this version, or upgrade the server"
    )]
    UnsupportedVersion { version: u64, supported: u32 },
    #[error("{at}: not valid export JSON ({source}); send the file unmodified")]
    Json {
        at: Position,
        #[source]
        source: serde_json::Error,
    },
    #[error("{at}: {source}")]
    Frame {
        at: Position,
        #[source]
        source: WireError,
    },
    #[error(
        "{at}: the frame body is not a valid export message ({source}); send the file unmodified"
    )]
    Body {
        at: Position,
        #[source]
        source: rmp_serde::decode::Error,
    },
    #[error("{at}: record `{id}` of table `{table}`: the document is not valid base64 ({source})")]
    Base64 {
        at: Position,
        table: String,
        id: String,
        #[source]
        source: base64::DecodeError,
    },
    #[error("{at}: record `{id}` of table `{table}`: the document does not load ({source})")]
    Document {
        at: Position,
        table: String,
        id: String,
        #[source]
        source: RecordError,
    },
    #[error("{at}: {defect}; send the file as the export wrote it")]
    BadFile { at: Position, defect: Defect },
    #[error(
        "{at}: the file's checksum is {declared:08x} but its bytes give {actual:08x}: the file was damaged; export it again"
    )]
    Checksum {
        at: Position,
        declared: u32,
        actual: u32,
    },
    #[error(
        "the end of the file says {declared} records but the file holds {found}: records were lost or added; export again"
    )]
    CountMismatch { declared: u64, found: u64 },
    #[error("the file is cut off inside {at}; send the whole file")]
    CutOff { at: Position },
    #[error(
        "the file ends after {records} records without its end marker: it was cut off; send the whole file"
    )]
    NoEnd { records: u64 },
    #[error(
        "the file is larger than the {limit} bytes allowed; export fewer tables or raise the limit"
    )]
    FileTooLarge { limit: usize },
    #[error("{at} is larger than the {limit} bytes allowed; raise the line limit")]
    PieceTooLarge { at: Position, limit: usize },
    #[error(
        "table `{table}` exists here with a different schema ({difference}); import into a database without that table, or export from one with the same schema"
    )]
    SchemaConflict { table: String, difference: String },
    #[error(
        "the file's tables cannot be created here: {source} (a custom merge policy must be registered before the import)"
    )]
    BadSchema {
        #[source]
        source: Box<EngineError>,
    },
    #[error("the database cannot take this import, nothing was imported: {source}")]
    Refused {
        #[source]
        source: Box<EngineError>,
    },
    #[error(
        "the import stopped at record `{id}` of table `{table}` after {applied} of {total} records: {source}; once that is fixed, import the same file again (records already imported are skipped)"
    )]
    Interrupted {
        table: String,
        id: String,
        applied: u64,
        total: u64,
        #[source]
        source: Box<EngineError>,
    },
    #[error(
        "all {applied} records were merged, but the data directory did not confirm them durable: {source}; import the same file again once it takes writes (records already imported are skipped)"
    )]
    NotDurable {
        applied: u64,
        #[source]
        source: Box<EngineError>,
    },
    #[error(
        "an earlier piece of this file was refused; start the import again from the first byte"
    )]
    Aborted,
}

impl TransferError {
    /// A stable, machine-readable code for the error (an HTTP problem document
    /// carries it). Refusals by the engine keep the engine's code
    /// (`memory_limit`, `clock_skew`, `record_too_large`, ...).
    pub fn code(&self) -> &'static str {
        match self {
            TransferError::UnknownTable { .. } => "unknown_table",
            TransferError::Export { source }
            | TransferError::Refused { source }
            | TransferError::Interrupted { source, .. }
            | TransferError::NotDurable { source, .. } => source.code(),
            TransferError::Frame {
                source: WireError::Checksum { .. },
                ..
            }
            | TransferError::Checksum { .. } => "checksum_mismatch",
            TransferError::Frame {
                source: WireError::TooLarge { .. },
                ..
            }
            | TransferError::FileTooLarge { .. }
            | TransferError::PieceTooLarge { .. } => "too_large",
            TransferError::UnsupportedVersion { .. } => "unsupported_version",
            TransferError::CountMismatch { .. } => "count_mismatch",
            TransferError::CutOff { .. } | TransferError::NoEnd { .. } => "truncated_export",
            TransferError::SchemaConflict { .. } => "schema_conflict",
            TransferError::BadSchema { .. } => "bad_schema",
            TransferError::Aborted => "import_aborted",
            TransferError::Empty
            | TransferError::NotAnExport { .. }
            | TransferError::Json { .. }
            | TransferError::Frame { .. }
            | TransferError::Body { .. }
            | TransferError::Base64 { .. }
            | TransferError::Document { .. }
            | TransferError::BadFile { .. } => "bad_export_file",
        }
    }

    pub(crate) fn bad(at: Position, defect: Defect) -> TransferError {
        TransferError::BadFile { at, defect }
    }
}

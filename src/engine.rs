//! The in-memory relational engine.
//!
//! - [`Database`]: the clonable handle; tables, writes, reads, the change log.
//! - Tables hold records as saved automerge bytes plus a materialised visible row
//!   ([`Row`]) that queries, indexes and responses read. Documents are loaded only
//!   to merge a write, through a bounded cache of hot documents.
//! - [`Query`]: filters, order, keyset pagination; an index is used where one fits
//!   and [`Database::explain`] says which.
//! - The change log gives every accepted change a database-wide sequence number;
//!   [`Database::changes_since`] lists what changed after a cursor in time
//!   proportional to the changes, within a retention horizon.
//! - Memory is accounted per structure ([`MemoryStats`]) against a configurable
//!   limit: near it the engine trims the document cache and the change log, then
//!   refuses writes while reads and deletes keep working.

mod audit;
mod cache;
mod changelog;
mod database;
mod error;
mod index;
mod query;
mod row;
mod table;

pub use audit::{
    ConflictCandidate, ConflictFilter, ConflictPage, ConflictRecord, ConflictResolution, Event,
    EventKind, EventKinds,
};
pub use changelog::CursorTooOld;
pub(crate) use database::Restore;
pub use database::{
    Database, Deferral, EngineStats, ExportCursor, ExportPage, ExportedRecord, FullAccess, Held,
    LoggedChange, ManualClock, MemoryStats, MergeOutcome, PatchOutcome, Payload, PolicyChange,
    PolicyOutcome, RowAccess, STREAM_POSITION_SETTING, ScanRequest, ScanResult, ScannedRecord,
    ScannedState, SequencedWrite, Sequencer, Shown, StreamApplies, StreamWrite, SystemClock,
    TableScope, WallClock, WriteOutcome, Writer,
};
pub use error::{EngineError, MigrationError, ReadError, SchemaError, WriteError};
pub use query::{
    AccessPath, Direction, Filter, FilterOp, OperatorShape, PageToken, Plan, Query, QueryError,
    QueryResult,
};
pub use row::Row;

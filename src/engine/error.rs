//! Engine errors: one enum per kind of operation, all convertible into
//! [`EngineError`]. Messages name the table, record and field involved.

use mobilesyncdb_crdt::{ClockError, RecordError};

use crate::engine::changelog::CursorTooOld;
use crate::engine::query::QueryError;
use crate::schema::FieldType;

/// A table definition was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SchemaError {
    #[error("table `{table}` already exists")]
    TableExists { table: String },
    #[error(
        "table name `{table}` is not allowed: use 1-64 letters, digits, `_` or `-`, not starting with `_`"
    )]
    BadTableName { table: String },
    #[error(
        "table `{table}`: field name `{field}` is not allowed: use 1-64 characters, not starting with `_`"
    )]
    BadFieldName { table: String, field: String },
    #[error("table `{table}`: field `{field}` is defined twice")]
    DuplicateField { table: String, field: String },
    #[error("table `{table}`: primary key `{field}` is not one of the fields")]
    UnknownPrimaryKey { table: String, field: String },
    #[error("table `{table}`: primary key `{field}` must be a string or integer field, not {kind}")]
    BadPrimaryKeyType {
        table: String,
        field: String,
        kind: FieldType,
    },
    #[error("table `{table}`: index on unknown field `{field}`")]
    UnknownIndexField { table: String, field: String },
    #[error(
        "table `{table}`: field `{field}` cannot be indexed: {kind} values have no useful order"
    )]
    UnindexableField {
        table: String,
        field: String,
        kind: FieldType,
    },
    #[error("table `{table}`: default of field `{field}` does not fit: {problem}")]
    BadDefault {
        table: String,
        field: String,
        problem: String,
    },
    #[error("table `{table}`: policy for `{field}` cannot be built: {problem}")]
    BadPolicy {
        table: String,
        field: String,
        problem: String,
    },
    #[error("a database holds at most {limit} tables")]
    TooManyTables { limit: usize },
}

/// A schema document was refused, or an app's schema version is not served;
/// nothing changed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MigrationError {
    #[error("the schema document is not valid: {0}")]
    Invalid(String),
    #[error("schema version {version} is not newer than the current version {current}")]
    NotNewer { version: u32, current: u32 },
    #[error("{}", blocked_message(.0))]
    Blocked(Box<crate::schema::MigrationReport>),
    #[error(
        "app schema version {stated} is no longer supported: upgrade the app to schema version {minimum} or later"
    )]
    UpgradeRequired { stated: u32, minimum: u32 },
    #[error("schema version {stated} is unknown here: the server's current version is {current}")]
    UnknownVersion { stated: u32, current: u32 },
    #[error("the minimum app version {minimum} is newer than the current version {current}")]
    MinimumAhead { minimum: u32, current: u32 },
}

fn blocked_message(report: &crate::schema::MigrationReport) -> String {
    let reasons: Vec<String> = report
        .blockers
        .iter()
        .map(|blocker| match &blocker.field {
            Some(field) => format!("`{}.{field}`: {}", blocker.table, blocker.problem),
            None => format!("`{}`: {}", blocker.table, blocker.problem),
        })
        .collect();
    format!(
        "the migration to version {} cannot be applied automatically; nothing changed: {}",
        report.diff.to_version,
        reasons.join("; ")
    )
}

impl MigrationError {
    /// A stable, machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            MigrationError::Invalid(_) => "bad_schema_document",
            MigrationError::NotNewer { .. } => "schema_version_not_newer",
            MigrationError::Blocked(_) => "migration_blocked",
            MigrationError::UpgradeRequired { .. } => "upgrade_required",
            MigrationError::UnknownVersion { .. } => "unknown_schema_version",
            MigrationError::MinimumAhead { .. } => "bad_min_client_version",
        }
    }
}

/// A write was refused; nothing of it was applied.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WriteError {
    #[error("table `{table}` does not exist")]
    UnknownTable { table: String },
    #[error("table `{table}`, record `{record}`: unknown field `{field}`")]
    UnknownField {
        table: String,
        record: String,
        field: String,
    },
    #[error("table `{table}`, record `{record}`, field `{field}`: {problem}")]
    TypeMismatch {
        table: String,
        record: String,
        field: String,
        problem: String,
    },
    #[error("table `{table}`, record `{record}`: required field `{field}` is missing")]
    MissingRequired {
        table: String,
        record: String,
        field: String,
    },
    #[error("table `{table}`: the primary key `{field}` is missing or empty")]
    MissingPrimaryKey { table: String, field: String },
    #[error(
        "table `{table}`, record `{record}`: the primary key `{field}` cannot change; delete the record and insert a new one"
    )]
    PrimaryKeyChange {
        table: String,
        record: String,
        field: String,
    },
    #[error(
        "table `{table}`, record `{record}`: field `{field}` is a {kind} field; only counter fields can be incremented"
    )]
    NotACounter {
        table: String,
        record: String,
        field: String,
        kind: FieldType,
    },
    #[error("table `{table}`: record `{record}` does not exist")]
    NotFound { table: String, record: String },
    #[error(
        "table `{table}`, record `{record}`: the write would move the record out of your reach (for example to another owner)"
    )]
    AccessDenied { table: String, record: String },
    #[error(
        "table `{table}`, record `{record}`: the record is at version {current}, not {expected}; read it again and reapply the change"
    )]
    VersionMismatch {
        table: String,
        record: String,
        expected: u64,
        current: u64,
    },
    #[error("table `{table}`: record `{record}` already exists; patch it instead")]
    AlreadyExists { table: String, record: String },
    #[error(
        "table `{table}`, record `{record}`, field `{field}`: the value is already used by record `{holder}` and the index is unique"
    )]
    UniqueViolation {
        table: String,
        record: String,
        field: String,
        holder: String,
    },
    #[error(
        "table `{table}`, record `{record}`: the record would take {bytes} bytes, more than the {limit} allowed"
    )]
    RecordTooLarge {
        table: String,
        record: String,
        bytes: usize,
        limit: usize,
    },
    #[error(
        "memory limit reached: {used} of {limit} bytes in use and this write needs about {needed} more; delete data or raise `max_memory_bytes`"
    )]
    MemoryLimit {
        used: usize,
        limit: usize,
        needed: usize,
    },
    /// The data directory does not take writes (a full disk, a failed `fsync`).
    /// Reads go on; writes resume by themselves once the disk takes them again.
    #[error("{reason}")]
    Storage { reason: String },
    /// A cluster node could not put the write on the cluster's stream (or did
    /// not see it come back in time). Nothing was stored by this call; the
    /// write may be tried again, on this node or another.
    #[error("{reason}")]
    Unavailable { reason: String },
    #[error(
        "table `{table}`, record `{record}`, field `{field}`: a value from schema version {version} has no form in the current version: {problem}"
    )]
    Untranslatable {
        table: String,
        record: String,
        field: String,
        version: u32,
        problem: String,
    },
    #[error(transparent)]
    Version(MigrationError),
    #[error("conflict {id} is resolved already")]
    ConflictClosed { id: u64 },
    #[error("table `{table}`, record `{record}`: {source}")]
    ClockSkew {
        table: String,
        record: String,
        #[source]
        source: ClockError,
    },
    #[error("table `{table}`, record `{record}`: {source}")]
    Record {
        table: String,
        record: String,
        #[source]
        source: RecordError,
    },
}

/// A read was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    #[error("table `{table}` does not exist")]
    UnknownTable { table: String },
    #[error(transparent)]
    Query(#[from] QueryError),
    #[error(transparent)]
    CursorTooOld(#[from] CursorTooOld),
    #[error("conflict {id} does not exist (or is older than the conflict retention)")]
    UnknownConflict { id: u64 },
    #[error("table `{table}`, record `{record}`: the stored document cannot be read: {source}")]
    Corrupt {
        table: String,
        record: String,
        #[source]
        source: RecordError,
    },
}

/// Any engine error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    #[error(transparent)]
    Schema(#[from] SchemaError),
    #[error(transparent)]
    Write(#[from] WriteError),
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Migration(#[from] MigrationError),
}

impl WriteError {
    /// A stable, machine-readable code for the refusal (sync results and HTTP
    /// problem documents carry it).
    pub fn code(&self) -> &'static str {
        match self {
            WriteError::UnknownTable { .. } => "unknown_table",
            WriteError::UnknownField { .. } => "unknown_field",
            WriteError::TypeMismatch { .. } => "type_mismatch",
            WriteError::MissingRequired { .. } => "missing_required",
            WriteError::MissingPrimaryKey { .. } => "missing_primary_key",
            WriteError::PrimaryKeyChange { .. } => "primary_key_change",
            WriteError::NotACounter { .. } => "not_a_counter",
            WriteError::NotFound { .. } => "not_found",
            WriteError::AlreadyExists { .. } => "already_exists",
            WriteError::AccessDenied { .. } => "access_denied",
            WriteError::VersionMismatch { .. } => "version_mismatch",
            WriteError::UniqueViolation { .. } => "unique_violation",
            WriteError::RecordTooLarge { .. } => "record_too_large",
            WriteError::MemoryLimit { .. } => "memory_limit",
            WriteError::ClockSkew { .. } => "clock_skew",
            WriteError::Storage { .. } => "storage_unavailable",
            WriteError::Unavailable { .. } => "cluster_unavailable",
            WriteError::ConflictClosed { .. } => "conflict_closed",
            WriteError::Untranslatable { .. } => "untranslatable",
            WriteError::Version(error) => error.code(),
            WriteError::Record { source, .. } => match source {
                RecordError::MissingDependencies { .. } => "missing_dependencies",
                RecordError::UnknownHeads { .. } => "unknown_base",
                RecordError::ReservedField { .. } => "reserved_field",
                _ => "invalid_change",
            },
        }
    }
}

impl EngineError {
    /// A stable, machine-readable code for the error.
    pub fn code(&self) -> &'static str {
        match self {
            EngineError::Write(error) => error.code(),
            EngineError::Read(ReadError::UnknownTable { .. }) => "unknown_table",
            EngineError::Read(ReadError::Query(_)) => "bad_query",
            EngineError::Read(ReadError::CursorTooOld(_)) => "cursor_too_old",
            EngineError::Read(ReadError::Corrupt { .. }) => "corrupt_record",
            EngineError::Read(ReadError::UnknownConflict { .. }) => "unknown_conflict",
            EngineError::Schema(_) => "bad_schema",
            EngineError::Config(_) => "bad_config",
            EngineError::Migration(error) => error.code(),
        }
    }
}

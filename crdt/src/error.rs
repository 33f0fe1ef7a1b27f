//! Errors, one small enum per concern, all convertible into [`CrdtError`].

/// A stamp was refused by a [`HybridClock`](crate::HybridClock).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClockError {
    #[error(
        "the writer's clock is {ahead_ms} ms ahead of this server, more than the {max_skew_ms} ms allowed; set the device clock right and retry"
    )]
    TooFarAhead { ahead_ms: u64, max_skew_ms: u64 },
}

/// A record could not be read, written or merged.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    #[error("the record bytes are not a valid automerge document: {0}")]
    Load(#[source] Box<automerge::AutomergeError>),
    #[error("the changes could not be applied: {0}")]
    Apply(#[source] Box<automerge::AutomergeError>),
    #[error("field `{field}` could not be written: {source}")]
    Write {
        field: String,
        #[source]
        source: Box<automerge::AutomergeError>,
    },
    #[error("field `{field}` could not be read: {source}")]
    Read {
        field: String,
        #[source]
        source: Box<automerge::AutomergeError>,
    },
    #[error("field `{field}` is not a counter, so it cannot be incremented; set it instead")]
    NotACounter { field: String },
    #[error("field name `{field}` is reserved: names starting with `_` belong to MobileSyncDB")]
    ReservedField { field: String },
    #[error(
        "the changes depend on {missing} change(s) this record has not seen; send the earlier changes first"
    )]
    MissingDependencies { missing: usize },
    #[error(
        "the base version names change {head}, which this record does not have; pull the record and retry with its current version"
    )]
    UnknownHeads { head: String },
    #[error("the record could not be written at its base version: {0}")]
    WriteAt(String),
}

/// A policy description could not be turned into a policy.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    #[error("no merge policy named `{name}` is registered; register it before selecting it")]
    UnknownCustom { name: String },
    #[error("a policy named `{name}` is already registered; choose another name")]
    AlreadyRegistered { name: String },
}

/// Any error of this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CrdtError {
    #[error(transparent)]
    Clock(#[from] ClockError),
    #[error(transparent)]
    Record(#[from] RecordError),
    #[error(transparent)]
    Policy(#[from] PolicyError),
}

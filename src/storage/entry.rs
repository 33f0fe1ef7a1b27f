//! What the frames of the journal and of snapshots hold, as MessagePack.
//!
//! The journal logs the effects of each write, not the request: the new change
//! chunks with their sequence numbers, the visible row they produced and the
//! record's liveness. Replaying a journal therefore needs no automerge, no merge
//! policy and no clock: it is as fast as reading, and gives exactly the rows,
//! sequence numbers and stamps the server had.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use crate::engine::{ConflictRecord, Event};
use crate::sync::message::OpResult;
use crate::sync::session::{SavedSession, SessionInfo};

/// One frame's content.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Entry<'a> {
    /// A table was created (its schema as JSON, the form people read).
    Table {
        #[serde(borrow)]
        schema: Cow<'a, str>,
    },
    /// A record was written.
    Write(#[serde(borrow)] WriteEntry<'a>),
    /// A device's session, as it is now.
    Session(SessionInfo),
    /// The result of an operation a device pushed, remembered for retries.
    Op {
        #[serde(borrow)]
        device: Cow<'a, str>,
        result: OpResult,
    },
    /// A device's session ended.
    EndSession {
        #[serde(borrow)]
        device: Cow<'a, str>,
    },
    /// A durable setting changed (`None`: removed). Values are JSON.
    Setting {
        #[serde(borrow)]
        key: Cow<'a, str>,
        #[serde(borrow)]
        value: Option<Cow<'a, str>>,
    },
    /// Snapshot: every durable setting.
    Settings(Vec<(String, String)>),
    /// Snapshot: the first frame.
    SnapshotStart(SnapshotStart),
    /// Snapshot: records of one table, in slot order.
    Records {
        table: u16,
        #[serde(borrow)]
        records: Vec<RecordEntry<'a>>,
    },
    /// Snapshot: change log entries, in sequence order.
    LogEntries(#[serde(borrow)] Vec<LogEntryEntry<'a>>),
    /// Snapshot: sessions, least recently seen first, each with its remembered
    /// operation results, oldest first.
    Sessions(Vec<SavedSession>),
    /// Snapshot: the last frame; a snapshot without it is incomplete.
    SnapshotEnd(SnapshotEnd),
    /// A table's policies changed (its whole schema as JSON, by table number).
    Policies {
        table: u16,
        #[serde(borrow)]
        schema: Cow<'a, str>,
    },
    /// A conflict was recorded, or a recorded one closed.
    Conflict(Cow<'a, ConflictRecord>),
    /// An event was made.
    Event(Cow<'a, Event>),
    /// Snapshot: the last conflict id given, and every retained conflict
    /// record, by id.
    Conflicts(u64, Vec<ConflictRecord>),
    /// Snapshot: the last event id given, and every retained event, by id.
    Events(u64, Vec<Event>),
    /// A schema version became current (the engine's form, as JSON).
    Schema {
        #[serde(borrow)]
        doc: Cow<'a, str>,
    },
    /// The oldest schema version apps may state changed.
    MinClientVersion(u32),
    /// Snapshot: every schema version (as JSON), after the tables.
    SchemaHistory {
        #[serde(borrow)]
        history: Cow<'a, str>,
    },
}

/// The effects of one write.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct WriteEntry<'a> {
    pub(crate) table: u16,
    #[serde(borrow)]
    pub(crate) id: Cow<'a, str>,
    /// The new change chunks, oldest first.
    #[serde(borrow)]
    pub(crate) chunks: Vec<ChunkEntry<'a>>,
    /// The visible row after the write, as the engine encodes rows.
    #[serde(borrow, with = "serde_bytes")]
    pub(crate) row: Cow<'a, [u8]>,
    pub(crate) deleted: bool,
    pub(crate) open_conflict: bool,
    /// Whether a field may hold concurrent values (a policy change looks at it).
    #[serde(default)]
    pub(crate) conflicted: bool,
}

/// A change chunk with its sequence number, stamp and writer.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ChunkEntry<'a> {
    pub(crate) seq: u64,
    pub(crate) ms: u64,
    pub(crate) logical: u32,
    #[serde(borrow)]
    pub(crate) origin: Cow<'a, str>,
    #[serde(borrow, with = "serde_bytes")]
    pub(crate) bytes: Cow<'a, [u8]>,
}

/// A record in a snapshot.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct RecordEntry<'a> {
    #[serde(borrow)]
    pub(crate) id: Cow<'a, str>,
    pub(crate) first_seq: u64,
    pub(crate) latest_seq: u64,
    pub(crate) deleted: bool,
    pub(crate) open_conflict: bool,
    /// Whether a field may hold concurrent values (a policy change looks at it).
    #[serde(default)]
    pub(crate) conflicted: bool,
    #[serde(borrow, with = "serde_bytes")]
    pub(crate) row: Cow<'a, [u8]>,
    /// Storage chunks with the sequence number of their latest change.
    #[serde(borrow)]
    pub(crate) chunks: Vec<(u64, Bytes<'a>)>,
}

/// A change log entry in a snapshot.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct LogEntryEntry<'a> {
    pub(crate) seq: u64,
    pub(crate) table: u16,
    pub(crate) slot: u32,
    pub(crate) ms: u64,
    pub(crate) logical: u32,
    #[serde(borrow)]
    pub(crate) origin: Cow<'a, str>,
    /// The change bytes, or `None` when they are the record's chunk of the
    /// same sequence number (written once, shared again on load).
    #[serde(borrow)]
    pub(crate) bytes: Option<Bytes<'a>>,
}

/// Bytes serialized as a MessagePack binary.
#[derive(Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub(crate) struct Bytes<'a>(#[serde(borrow, with = "serde_bytes")] pub(crate) Cow<'a, [u8]>);

/// What a snapshot starts with.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct SnapshotStart {
    pub(crate) format: u32,
    pub(crate) latest_seq: u64,
    /// The hybrid clock's last stamp: new stamps continue after it.
    pub(crate) clock_ms: u64,
    pub(crate) clock_logical: u32,
    pub(crate) created_ms: u64,
}

/// What a snapshot ends with: its counts, checked on load, and the journal
/// position it covers.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct SnapshotEnd {
    pub(crate) lsn: u64,
    pub(crate) tables: u64,
    pub(crate) records: u64,
    pub(crate) log_entries: u64,
    pub(crate) sessions: u64,
}

/// The snapshot format version.
pub(crate) const SNAPSHOT_FORMAT: u32 = 1;

impl Entry<'_> {
    /// The frame body.
    pub(crate) fn encode(&self) -> Vec<u8> {
        rmp_serde::to_vec(self).expect("entries always serialize")
    }
}

/// Reads a frame body.
///
/// # Errors
///
/// The MessagePack error, for a body that is not an entry of this version.
pub(crate) fn decode(body: &[u8]) -> Result<Entry<'_>, rmp_serde::decode::Error> {
    rmp_serde::from_slice(body)
}

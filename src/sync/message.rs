//! The messages of the sync protocol, as Rust values. `wire` puts them in
//! envelopes; `batch` gives a pull batch its columnar body.
//!
//! Every message body is a MessagePack map keyed by the field names below
//! (`docs/PROTOCOL.md` lists them byte by byte). Field values travel as plain
//! MessagePack values ([`WireValue`]) and take their type from the table schema.

use std::collections::BTreeMap;
use std::fmt;

use mobilesyncdb_crdt::Value;
use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::compress::Level;
use crate::schema::FieldType;

/// A pull: "send me what changed in these tables after my cursor".
///
/// Pulling with a cursor acknowledges it: the client says it has stored
/// everything up to it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PullRequest {
    /// The device's stable id (one sync session per device).
    pub device: String,
    /// The cursor of the last batch the client stored; 0 for an initial sync.
    pub cursor: u64,
    /// The `base` of the last batch stored: every record is complete up to it.
    /// It trails the cursor while a pull is cut into several batches. Absent means
    /// equal to `cursor`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<u64>,
    /// The tables to replicate, each optionally filtered.
    pub tables: Vec<WireScope>,
    /// Records to send whole: the client received changes for records it does not
    /// hold (a restricted scope let them in late) or lost its copy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fetch: Vec<RecordRef>,
    /// At most this many records (the server caps it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_records: Option<u32>,
    /// About this many bytes before compression (the server caps it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<u32>,
    /// The compression level for this batch; the server's default otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<Level>,
    /// The schema version the app was built against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema_version: Option<u32>,
    /// Send every change chunk complete: no value left for the row column to
    /// fill in, no dependency named by prefix. For clients whose automerge
    /// library cannot decode a change's operations; costs bytes.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub explicit_rows: bool,
    /// The device's power state: `charging`, `normal` (the default), `low` or
    /// `critical`. It picks the batch bounds, compression level, deferrals and
    /// the hint of the answer (`docs/POWER.md`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// The device's network: `unmetered` (the default) or `metered`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// Long poll: when there is nothing to send, wait up to this many
    /// milliseconds for a change (capped by the server and by the power
    /// profile's `long_poll`). Honoured by transports that can wait.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_ms: Option<u64>,
}

/// A table in a pull, with optional filters (AND-combined) on its rows.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WireScope {
    pub table: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<WireFilter>,
}

impl WireScope {
    /// The whole table.
    pub fn all(table: impl Into<String>) -> WireScope {
        WireScope {
            table: table.into(),
            filters: Vec::new(),
        }
    }
}

/// `field op value`: `op` is one of `eq`, `ne`, `lt`, `le`, `gt`, `ge`, `in` (the
/// value is an array) or `prefix` (the value is a string).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WireFilter {
    pub field: String,
    pub op: String,
    pub value: WireValue,
}

/// A record by table and id.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RecordRef {
    pub table: String,
    pub id: String,
}

/// A pull batch, decoded.
#[derive(Clone, Debug, PartialEq)]
pub struct PullBatch {
    /// The cursor the batch starts after.
    pub from: u64,
    /// Store the batch, then pull (or acknowledge) with this cursor.
    pub next_cursor: u64,
    /// More changes wait after `next_cursor`.
    pub has_more: bool,
    /// Send it back with the next pull: records not yet listed get every change
    /// after it. Equal to `next_cursor` once `has_more` is false.
    pub base: u64,
    /// The pull's base was older than the change log's horizon. Informational:
    /// the batch holds, as always, each changed record once with its chunks after
    /// the base (whole documents for compacted records), deletions included.
    pub catch_up: bool,
    /// The batch message's CRC-32: acknowledge the batch with it.
    pub checksum: u32,
    pub tables: Vec<TableBatch>,
    /// Records that changed but were held back by the power profile (a
    /// low-priority table, a large payload): fetch them whole when the device's
    /// mode allows. The cursor has moved past them.
    pub deferred: Vec<RecordRef>,
    /// What the server suggests for the next sync, from the power profile.
    pub hint: Option<SyncHint>,
}

/// The server's suggestion for the next sync, from the device's power profile.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncHint {
    /// The power state the pull was served in.
    pub mode: String,
    /// Sync again after about this many milliseconds.
    pub next_sync_ms: u64,
    /// The longest wait a long poll gets in this mode (0: none).
    pub long_poll_ms: u64,
}

impl PullBatch {
    /// Records in the batch.
    pub fn len(&self) -> usize {
        self.tables.iter().map(|table| table.records.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One table's records in a batch.
#[derive(Clone, Debug, PartialEq)]
pub struct TableBatch {
    pub table: String,
    /// The fields, in the order of [`RecordDelta::row`], named and typed as the
    /// client's schema version has them.
    pub fields: Vec<(String, FieldType)>,
    /// The document key of each field: where its values are in the record's
    /// document (the field's first name; a rename keeps it).
    pub keys: Vec<String>,
    pub records: Vec<RecordDelta>,
}

/// What a client does with one record of a batch.
#[derive(Clone, Debug, PartialEq)]
pub struct RecordDelta {
    pub id: String,
    /// The sequence number of the record's latest change.
    pub seq: u64,
    pub state: DeltaState,
    /// Automerge storage bytes: change chunks to append, or (when `whole`) the
    /// whole document.
    pub payload: Vec<u8>,
    /// The payload is the whole document: replace the local copy (merge when
    /// local edits are pending on it).
    pub whole: bool,
    /// The visible row, one entry per field of [`TableBatch::fields`]: `Some` for
    /// every field that may have changed, `None` for fields left as they were.
    /// Every entry is `Some` for a record new to the client.
    pub row: Vec<Option<Value>>,
    /// A change names a dependency by prefix that the local copy does not
    /// hold: the payload is empty and the record must be fetched whole.
    pub unresolved: bool,
}

/// The state a delta leaves a record in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeltaState {
    Live,
    Deleted,
    /// Out of the client's scope now (a filter or an access rule): drop the copy.
    Left,
}

/// A push: operations the device made, each idempotent.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PushRequest {
    pub device: String,
    pub ops: Vec<PushOp>,
    /// The schema version the app was built against: patches are named and
    /// typed in it. Absent means the current version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema_version: Option<u32>,
    /// The device's power state and network, as in [`PullRequest`]: recorded in
    /// its session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
}

/// One pushed operation.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PushOp {
    /// The client's operation id: a retried operation with the same id is
    /// answered from memory, not applied again.
    pub op: String,
    pub table: String,
    pub id: String,
    /// Automerge change chunks (clients that embed automerge). Idempotent by
    /// change hash. When present, the fields below must be empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<serde_bytes::ByteBuf>,
    /// Field values to set (a JSON-style patch); nil unsets the field.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub set: BTreeMap<String, WireValue>,
    /// Create the record with `set` as its fields (it must not exist, or be deleted).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insert: bool,
    /// Delete the record.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub delete: bool,
    /// The record's version the patch was made on (its heads, 32-byte change
    /// hashes). When the record changed since, the patch is a concurrent edit and
    /// the fields' policies decide. Without it the patch applies on top.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub base: Vec<serde_bytes::ByteBuf>,
}

/// The answer to a push: one result per operation, in order.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PushResult {
    pub results: Vec<OpResult>,
    /// The server's latest sequence number after the push.
    pub latest: u64,
}

/// What became of one pushed operation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OpResult {
    pub op: String,
    pub status: OpStatus,
    /// Sequence numbers given to the operation's new changes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub seqs: Vec<u64>,
    /// The operation was concurrent with changes it had not seen.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub concurrent: bool,
    /// Fields now holding concurrent values for their policy to decide.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conflicts: Vec<String>,
    /// Why a rejected operation was refused: a stable code and a message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The outcome of one operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpStatus {
    Applied,
    /// Already applied earlier (same change hashes, or same operation id).
    Duplicate,
    /// Refused: see `code` and `reason`. Nothing of the operation was applied.
    Rejected,
}

/// "I stored the batch that ends at `cursor`."
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AckRequest {
    pub device: String,
    pub cursor: u64,
    /// The batch's checksum, as [`PullBatch::checksum`].
    pub checksum: u32,
}

/// The cursor the server now holds for the device.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AckResult {
    pub cursor: u64,
}

/// A refused request: a stable code and a message for people.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub code: String,
    pub message: String,
}

/// A field value as MessagePack carries it: nil, bool, integer, float, string,
/// binary, array or map. The table schema gives it its type ([`WireValue::typed`]).
#[derive(Clone, Debug, PartialEq)]
pub enum WireValue {
    Nil,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Bin(Vec<u8>),
    Array(Vec<WireValue>),
    Map(BTreeMap<String, WireValue>),
}

impl WireValue {
    /// The value for a field of type `kind`, with the schema's lossless
    /// coercions (integers to timestamps or counters, whole floats to integers).
    /// Returns `None` when the value does not fit the type.
    pub fn typed(&self, kind: FieldType) -> Option<Value> {
        kind.check(self.untyped()).ok()
    }

    /// The value with no schema type: arrays become lists, maps maps.
    pub fn untyped(&self) -> Value {
        match self {
            WireValue::Nil => Value::Null,
            WireValue::Bool(flag) => Value::Bool(*flag),
            WireValue::Int(n) => Value::Int(*n),
            WireValue::Float(x) => Value::Float(*x),
            WireValue::Str(text) => Value::str(text.as_str()),
            WireValue::Bin(bytes) => Value::bytes(bytes.as_slice()),
            WireValue::Array(items) => Value::List(items.iter().map(WireValue::untyped).collect()),
            WireValue::Map(entries) => Value::Map(Box::new(
                entries
                    .iter()
                    .map(|(key, value)| (key.clone(), value.untyped()))
                    .collect(),
            )),
        }
    }

    /// The wire form of a value (timestamps and counters as integers).
    pub fn from_value(value: &Value) -> WireValue {
        match value {
            Value::Null => WireValue::Nil,
            Value::Bool(flag) => WireValue::Bool(*flag),
            Value::Int(n) | Value::Timestamp(n) | Value::Counter(n) => WireValue::Int(*n),
            Value::Float(x) => WireValue::Float(*x),
            Value::Str(text) => WireValue::Str(text.to_string()),
            Value::Bytes(bytes) => WireValue::Bin(bytes.to_vec()),
            Value::List(items) => {
                WireValue::Array(items.iter().map(WireValue::from_value).collect())
            }
            Value::Map(entries) => WireValue::Map(
                entries
                    .iter()
                    .map(|(key, value)| (key.clone(), WireValue::from_value(value)))
                    .collect(),
            ),
        }
    }
}

impl Serialize for WireValue {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            WireValue::Nil => serializer.serialize_unit(),
            WireValue::Bool(flag) => serializer.serialize_bool(*flag),
            WireValue::Int(n) => serializer.serialize_i64(*n),
            WireValue::Float(x) => serializer.serialize_f64(*x),
            WireValue::Str(text) => serializer.serialize_str(text),
            WireValue::Bin(bytes) => serializer.serialize_bytes(bytes),
            WireValue::Array(items) => items.serialize(serializer),
            WireValue::Map(entries) => entries.serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for WireValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<WireValue, D::Error> {
        deserializer.deserialize_any(WireValueVisitor)
    }
}

struct WireValueVisitor;

impl<'de> Visitor<'de> for WireValueVisitor {
    type Value = WireValue;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a MessagePack value")
    }

    fn visit_unit<E>(self) -> Result<WireValue, E> {
        Ok(WireValue::Nil)
    }

    fn visit_none<E>(self) -> Result<WireValue, E> {
        Ok(WireValue::Nil)
    }

    fn visit_some<D: Deserializer<'de>>(self, inner: D) -> Result<WireValue, D::Error> {
        WireValue::deserialize(inner)
    }

    fn visit_bool<E>(self, flag: bool) -> Result<WireValue, E> {
        Ok(WireValue::Bool(flag))
    }

    fn visit_i64<E>(self, n: i64) -> Result<WireValue, E> {
        Ok(WireValue::Int(n))
    }

    fn visit_u64<E: de::Error>(self, n: u64) -> Result<WireValue, E> {
        i64::try_from(n)
            .map(WireValue::Int)
            .map_err(|_| E::custom("integer larger than 2^63-1"))
    }

    fn visit_f64<E>(self, x: f64) -> Result<WireValue, E> {
        Ok(WireValue::Float(x))
    }

    fn visit_str<E>(self, text: &str) -> Result<WireValue, E> {
        Ok(WireValue::Str(text.to_owned()))
    }

    fn visit_string<E>(self, text: String) -> Result<WireValue, E> {
        Ok(WireValue::Str(text))
    }

    fn visit_bytes<E>(self, bytes: &[u8]) -> Result<WireValue, E> {
        Ok(WireValue::Bin(bytes.to_vec()))
    }

    fn visit_byte_buf<E>(self, bytes: Vec<u8>) -> Result<WireValue, E> {
        Ok(WireValue::Bin(bytes))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<WireValue, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(WireValue::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<WireValue, A::Error> {
        let mut entries = BTreeMap::new();
        while let Some((key, value)) = map.next_entry::<String, WireValue>()? {
            entries.insert(key, value);
        }
        Ok(WireValue::Map(entries))
    }
}

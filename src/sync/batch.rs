//! The columnar body of a pull batch.
//!
//! A batch holds, per table, N records as columns: ids, sequence numbers, flags,
//! automerge payloads, touched-field bitmaps, and one column per schema field.
//! Each column is encoded by the compression engine ([`crate::compress`]), which
//! picks the encoding by the kind of data. Columns compress far better than rows:
//! timestamps become small deltas, repeated strings dictionary indexes, and the
//! payloads of many records share one LZ4 frame.

use mobilesyncdb_crdt::Value;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use crate::compress::{self, ColumnError, Compressor};
use crate::engine::{Row, ScannedRecord, ScannedState};
use crate::schema::{FieldType, Lens};
use crate::sync::message::{DeltaState, PullBatch, RecordDelta, RecordRef, SyncHint, TableBatch};
use crate::sync::wire::{self, MessageKind, WireError};
use changes::{
    ChangeColumns, ChangeColumnsBuilder, ChangeError, ChangeRows, LocalCopy, Rebuilt, Resolve,
    RowValue,
};

mod changes;
mod chunk;
mod ops;

/// Flag bits of a record (the `flags` column).
pub(crate) mod flag {
    /// The record is deleted; its payload holds the tombstone.
    pub(crate) const DELETED: u64 = 1;
    /// The record left the client's scope: drop the local copy.
    pub(crate) const LEFT: u64 = 2;
    /// The payload is the whole document (replace), not changes to append.
    pub(crate) const WHOLE: u64 = 4;
    /// Every field of the row is present (no touched bitmap).
    pub(crate) const COMPLETE_ROW: u64 = 8;
}

/// The MessagePack body of a pull batch.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct BatchBody {
    pub(crate) from: u64,
    pub(crate) next: u64,
    pub(crate) more: bool,
    pub(crate) base: u64,
    pub(crate) catch_up: bool,
    pub(crate) tables: Vec<TableBody>,
    /// Records held back by the power profile, by table.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) deferred: Vec<DeferredIds>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) hint: Option<SyncHint>,
}

/// One table's deferred records.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct DeferredIds {
    pub(crate) table: String,
    pub(crate) ids: Vec<String>,
}

/// One table's columns.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct TableBody {
    pub(crate) name: String,
    pub(crate) fields: Vec<(String, FieldType)>,
    /// The document key of each field, when some field's key is not its name
    /// (a renamed field); absent otherwise.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) keys: Vec<String>,
    pub(crate) n: u32,
    pub(crate) ids: ByteBuf,
    pub(crate) seqs: ByteBuf,
    pub(crate) flags: ByteBuf,
    pub(crate) payloads: ByteBuf,
    pub(crate) touched: ByteBuf,
    /// Per record, how many change chunks of its payload are in `changes`
    /// (0: the payload is in `payloads`).
    pub(crate) chunks: ByteBuf,
    pub(crate) rows: Vec<ByteBuf>,
    /// The change chunks of the records, as columns; absent when there are none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) changes: Option<ChangeColumns>,
}

/// Builds the columns of one table's records. With `strip`, values that a
/// change chunk puts on a root field and that the row column sends anyway are
/// left out of the chunk (the client puts them back); without it (a client that
/// does not decode operations) chunks keep every value.
///
/// Rows are read through `lens`, the table as the client's schema version
/// shows it; change chunks go as they are.
pub(crate) fn table_body(
    lens: &Lens,
    records: &[&ScannedRecord],
    compressor: &Compressor,
    strip: bool,
) -> TableBody {
    let fields = lens.fields();
    let mut flags = Vec::with_capacity(records.len());
    let mut payloads: Vec<&[u8]> = Vec::with_capacity(records.len());
    let mut chunks = Vec::with_capacity(records.len());
    let mut touched = Vec::with_capacity(records.len());
    let mut rows: Vec<Option<&Row>> = Vec::with_capacity(records.len());
    let mut changes = ChangeColumnsBuilder::default();
    for record in records {
        let described = describe(record, lens);
        let sent = |key: &str| -> Option<Value> {
            let row = described.row?;
            let position = lens.position_of_key(key)?;
            let mask = &described.touched;
            (mask.is_empty() || bit(mask, position)).then(|| lens.read(row, position))
        };
        let value = (strip && described.row.is_some()).then_some(&sent as RowValue<'_>);
        let taken = changes.add(described.payload, value, strip);
        flags.push(described.flags);
        payloads.push(if taken > 0 { &[] } else { described.payload });
        chunks.push(taken);
        touched.push(described.touched);
        rows.push(described.row);
    }
    let ids: Vec<&str> = records.iter().map(|record| record.id.as_str()).collect();
    let seqs: Vec<u64> = records.iter().map(|record| record.seq).collect();
    let masks: Vec<&[u8]> = touched.iter().map(Vec::as_slice).collect();
    let columns = (0..fields.len())
        .map(|position| {
            let values: Vec<Value> = rows
                .iter()
                .zip(&touched)
                .map(|(row, mask)| match row {
                    Some(row) if mask.is_empty() || bit(mask, position) => lens.read(row, position),
                    _ => Value::Null,
                })
                .collect();
            ByteBuf::from(compressor.encode_values(fields[position].1, &values))
        })
        .collect();
    TableBody {
        name: lens.table().to_owned(),
        keys: lens.keys(),
        n: u32::try_from(records.len()).unwrap_or(u32::MAX),
        ids: ByteBuf::from(compressor.encode_strs(&ids)),
        seqs: ByteBuf::from(compressor.encode_u64s(&seqs)),
        flags: ByteBuf::from(compressor.encode_u64s(&flags)),
        payloads: ByteBuf::from(compressor.encode_blobs(&payloads)),
        touched: ByteBuf::from(compressor.encode_blobs(&masks)),
        chunks: ByteBuf::from(compressor.encode_u64s(&chunks)),
        rows: columns,
        changes: changes.finish(compressor),
        fields,
    }
}

/// How one record goes into the batch's columns.
struct Described<'r> {
    flags: u64,
    payload: &'r [u8],
    row: Option<&'r Row>,
    /// Fields sent, when not all of them (empty: complete row, or no row).
    touched: Vec<u8>,
}

/// A record's flags, payload, row and sent fields.
fn describe<'r>(record: &'r ScannedRecord, lens: &Lens) -> Described<'r> {
    let empty = |flags| Described {
        flags,
        payload: &[],
        row: None,
        touched: Vec::new(),
    };
    match &record.state {
        ScannedState::Left => empty(flag::LEFT),
        ScannedState::Deleted { payload } => {
            let whole = if payload.whole { flag::WHOLE } else { 0 };
            Described {
                payload: &payload.bytes,
                ..empty(flag::DELETED | whole)
            }
        }
        ScannedState::Live { payload, row, new } => {
            let whole = if payload.whole { flag::WHOLE } else { 0 };
            // A record the client holds gets only the fields its changes write.
            let touched = (!*new)
                .then(|| {
                    ops::read_payload(&payload.bytes, &|key| lens.position_of_key(key), lens.len())
                })
                .flatten()
                .filter(|summary| !summary.opaque)
                .map(|summary| summary.touched);
            let complete = if touched.is_none() {
                flag::COMPLETE_ROW
            } else {
                0
            };
            Described {
                flags: whole | complete,
                payload: &payload.bytes,
                row: Some(row),
                touched: touched.unwrap_or_default(),
            }
        }
    }
}

pub(crate) fn bit(mask: &[u8], position: usize) -> bool {
    mask.get(position / 8)
        .is_some_and(|byte| byte & (1 << (position % 8)) != 0)
}

/// Seals a batch body; returns the message and its body checksum.
pub(crate) fn seal_batch(body: &BatchBody) -> (Vec<u8>, u32) {
    let message = wire::seal_value(MessageKind::PullBatch, body, false);
    let checksum = u32::from_le_bytes([message[12], message[13], message[14], message[15]]);
    (message, checksum)
}

/// A batch that cannot be decoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BatchError {
    #[error(transparent)]
    Wire(#[from] WireError),
    #[error("column `{column}` of table `{table}` is invalid: {source}")]
    Column {
        table: String,
        column: String,
        #[source]
        source: ColumnError,
    },
    #[error("table `{table}` has {found} row columns for {expected} fields")]
    RowColumns {
        table: String,
        expected: usize,
        found: usize,
    },
    #[error("table `{table}`, record `{record}`: {source}")]
    Changes {
        table: String,
        record: String,
        #[source]
        source: ChangeError,
    },
    #[error("table `{table}` declares {n} records, more than the message can hold")]
    Count { table: String, n: u32 },
}

/// Opens and decodes a pull batch message with no local copy of any record: a
/// record whose changes name their dependencies by prefix comes back
/// `unresolved` (a batch for a request with `explicit_rows` has none). Nothing
/// is returned unless the whole message is valid.
///
/// # Errors
///
/// A [`BatchError`] naming what is wrong.
pub fn decode_batch(message: &[u8], limit: usize) -> Result<PullBatch, BatchError> {
    decode_batch_with(message, limit, &|_, _| None)
}

/// Opens and decodes a pull batch message; `held(table, id)` gives the saved
/// bytes of the local copy of a record, asked only for records whose changes
/// name a dependency by prefix.
///
/// # Errors
///
/// A [`BatchError`] naming what is wrong.
pub fn decode_batch_with(
    message: &[u8],
    limit: usize,
    held: &dyn Fn(&str, &str) -> Option<Vec<u8>>,
) -> Result<PullBatch, BatchError> {
    let (body, checksum): (BatchBody, u32) =
        wire::open_value(message, MessageKind::PullBatch, limit)?;
    let tables = body
        .tables
        .into_iter()
        .map(|table| decode_table(table, message.len(), held))
        .collect::<Result<_, _>>()?;
    Ok(PullBatch {
        from: body.from,
        next_cursor: body.next,
        has_more: body.more,
        base: body.base,
        catch_up: body.catch_up,
        checksum,
        tables,
        deferred: body
            .deferred
            .into_iter()
            .flat_map(|deferred| {
                let table = deferred.table;
                deferred.ids.into_iter().map(move |id| RecordRef {
                    table: table.clone(),
                    id,
                })
            })
            .collect(),
        hint: body.hint,
    })
}

fn decode_table(
    mut table: TableBody,
    message_len: usize,
    held: &dyn Fn(&str, &str) -> Option<Vec<u8>>,
) -> Result<TableBatch, BatchError> {
    let n = table.n as usize;
    // Every record costs at least a byte in the ids column.
    if n > message_len {
        return Err(BatchError::Count {
            table: table.name,
            n: table.n,
        });
    }
    if !table.keys.is_empty() && table.keys.len() != table.fields.len() {
        return Err(BatchError::RowColumns {
            table: table.name,
            expected: table.fields.len(),
            found: table.keys.len(),
        });
    }
    if table.keys.is_empty() {
        table.keys = table.fields.iter().map(|(name, _)| name.clone()).collect();
    }
    if table.rows.len() != table.fields.len() {
        return Err(BatchError::RowColumns {
            table: table.name,
            expected: table.fields.len(),
            found: table.rows.len(),
        });
    }
    let name = table.name.clone();
    let failed = |column: &str| {
        let table = name.clone();
        let column = column.to_owned();
        move |source| BatchError::Column {
            table,
            column,
            source,
        }
    };
    let ids = compress::decode_strs(n, &table.ids).map_err(failed("ids"))?;
    let seqs = compress::decode_u64s(n, &table.seqs).map_err(failed("seqs"))?;
    let flags = compress::decode_u64s(n, &table.flags).map_err(failed("flags"))?;
    let payloads = compress::decode_blobs(n, &table.payloads).map_err(failed("payloads"))?;
    let touched = compress::decode_blobs(n, &table.touched).map_err(failed("touched"))?;
    let chunks = compress::decode_u64s(n, &table.chunks).map_err(failed("chunks"))?;
    let mut columns = Vec::with_capacity(table.fields.len());
    for ((field, kind), bytes) in table.fields.iter().zip(&table.rows) {
        let values = compress::decode_values(*kind, n, bytes).map_err(failed(field))?;
        columns.push(values.into_iter());
    }
    let total = chunks
        .iter()
        .try_fold(0_u64, |sum, count| sum.checked_add(*count))
        .unwrap_or(u64::MAX);
    let changed = |record: &str, source| BatchError::Changes {
        table: name.clone(),
        record: record.to_owned(),
        source,
    };
    let mut changes = match table.changes.take() {
        Some(columns) => {
            Some(ChangeRows::decode(columns, total).map_err(|source| changed("", source))?)
        }
        None if total == 0 => None,
        None => {
            return Err(changed(
                "",
                ChangeError::Count {
                    expected: total,
                    found: 0,
                },
            ));
        }
    };
    let mut records = Vec::with_capacity(n);
    for (((id, seq), (flags, mut payload)), (mask, count)) in ids
        .into_iter()
        .zip(seqs)
        .zip(flags.into_iter().zip(payloads))
        .zip(touched.into_iter().zip(chunks))
    {
        let complete = flags & flag::COMPLETE_ROW != 0;
        let row: Vec<Option<Value>> = columns
            .iter_mut()
            .enumerate()
            .map(|(position, column)| {
                let value = column.next().unwrap_or(Value::Null);
                (complete || bit(&mask, position)).then_some(value)
            })
            .collect();
        let mut unresolved = false;
        if let Some(changes) = changes.as_mut().filter(|_| count > 0) {
            if !payload.is_empty() {
                return Err(changed(&id, ChangeError::Both));
            }
            let value = |key: &str| {
                let position = table.keys.iter().position(|known| known == key)?;
                row[position].clone()
            };
            let mut copy = Held {
                held,
                table: &table.name,
                id: &id,
                copy: None,
            };
            unresolved = changes
                .rebuild(count, &value, &mut copy, &mut payload)
                .map_err(|source| changed(&id, source))?
                == Rebuilt::Unresolved;
        }
        records.push(RecordDelta {
            id,
            seq,
            state: state_of(flags),
            payload,
            whole: flags & flag::WHOLE != 0,
            row,
            unresolved,
        });
    }
    if let Some(changes) = &changes {
        changes.check_used().map_err(|source| changed("", source))?;
    }
    Ok(TableBatch {
        table: table.name,
        fields: table.fields,
        keys: table.keys,
        records,
    })
}

/// A record's local copy, asked for when a dependency needs it.
struct Held<'h> {
    held: &'h dyn Fn(&str, &str) -> Option<Vec<u8>>,
    table: &'h str,
    id: &'h str,
    copy: Option<Option<LocalCopy>>,
}

impl Resolve for Held<'_> {
    fn candidates(&mut self, prefix: &[u8]) -> Vec<[u8; 32]> {
        let (held, table, id) = (self.held, self.table, self.id);
        self.copy
            .get_or_insert_with(|| held(table, id).map(LocalCopy::new))
            .as_mut()
            .map(|copy| copy.candidates(prefix))
            .unwrap_or_default()
    }
}

fn state_of(flags: u64) -> DeltaState {
    if flags & flag::LEFT != 0 {
        DeltaState::Left
    } else if flags & flag::DELETED != 0 {
        DeltaState::Deleted
    } else {
        DeltaState::Live
    }
}

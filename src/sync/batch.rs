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
use crate::schema::{FieldType, TableSchema};
use crate::sync::message::{DeltaState, PullBatch, RecordDelta, TableBatch};
use crate::sync::wire::{self, MessageKind, WireError};

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

/// Rows of new records larger than this are read from their payload rather than
/// sent again as values.
const DERIVE_ROW_BYTES: usize = 512;

/// The MessagePack body of a pull batch.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct BatchBody {
    pub(crate) from: u64,
    pub(crate) next: u64,
    pub(crate) more: bool,
    pub(crate) base: u64,
    pub(crate) catch_up: bool,
    pub(crate) tables: Vec<TableBody>,
}

/// One table's columns.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct TableBody {
    pub(crate) name: String,
    pub(crate) fields: Vec<(String, FieldType)>,
    pub(crate) n: u32,
    pub(crate) ids: ByteBuf,
    pub(crate) seqs: ByteBuf,
    pub(crate) flags: ByteBuf,
    pub(crate) payloads: ByteBuf,
    pub(crate) touched: ByteBuf,
    /// Per record, a bitmap of the row fields whose value is the last value the
    /// record's payload writes to them: not sent, the decoder reads it there.
    pub(crate) derived: ByteBuf,
    pub(crate) rows: Vec<ByteBuf>,
}

/// Builds the columns of one table's records.
pub(crate) fn table_body(
    schema: &TableSchema,
    records: &[&ScannedRecord],
    compressor: &Compressor,
    derive: bool,
) -> TableBody {
    let fields: Vec<(String, FieldType)> = schema
        .fields
        .iter()
        .map(|field| (field.name.clone(), field.kind))
        .collect();
    let mut flags = Vec::with_capacity(records.len());
    let mut payloads = Vec::with_capacity(records.len());
    let mut touched = Vec::with_capacity(records.len());
    let mut derived = Vec::with_capacity(records.len());
    let mut rows: Vec<Option<&Row>> = Vec::with_capacity(records.len());
    for record in records {
        let mut described = describe(record, &fields);
        if !derive {
            described.derived.clear();
        }
        flags.push(described.flags);
        payloads.push(described.payload);
        touched.push(described.touched);
        derived.push(described.derived);
        rows.push(described.row);
    }
    let ids: Vec<&str> = records.iter().map(|record| record.id.as_str()).collect();
    let seqs: Vec<u64> = records.iter().map(|record| record.seq).collect();
    let masks: Vec<&[u8]> = touched.iter().map(Vec::as_slice).collect();
    let derived_masks: Vec<&[u8]> = derived.iter().map(Vec::as_slice).collect();
    let columns = (0..fields.len())
        .map(|position| {
            let values: Vec<Value> = rows
                .iter()
                .zip(touched.iter().zip(&derived))
                .map(|(row, (mask, derived))| match row {
                    Some(row)
                        if (mask.is_empty() || bit(mask, position)) && !bit(derived, position) =>
                    {
                        row.get(position)
                    }
                    _ => Value::Null,
                })
                .collect();
            ByteBuf::from(compressor.encode_values(fields[position].1, &values))
        })
        .collect();
    TableBody {
        name: schema.name.clone(),
        n: u32::try_from(records.len()).unwrap_or(u32::MAX),
        ids: ByteBuf::from(compressor.encode_strs(&ids)),
        seqs: ByteBuf::from(compressor.encode_u64s(&seqs)),
        flags: ByteBuf::from(compressor.encode_u64s(&flags)),
        payloads: ByteBuf::from(compressor.encode_blobs(&payloads)),
        touched: ByteBuf::from(compressor.encode_blobs(&masks)),
        derived: ByteBuf::from(compressor.encode_blobs(&derived_masks)),
        rows: columns,
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
    /// Fields whose value the decoder reads from the payload (empty: none).
    derived: Vec<u8>,
}

/// A record's flags, payload, row and field bitmaps.
fn describe<'r>(record: &'r ScannedRecord, fields: &[(String, FieldType)]) -> Described<'r> {
    let empty = |flags| Described {
        flags,
        payload: &[],
        row: None,
        touched: Vec::new(),
        derived: Vec::new(),
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
            // Reading the changes costs ~5 µs a record on each side: worth it to
            // send only the changed fields of a record the client holds, or to
            // avoid sending a large row twice (once in the changes, once as values).
            let read = !*new || row.heap_bytes() > DERIVE_ROW_BYTES;
            let summary = read
                .then(|| ops::read_payload(&payload.bytes, fields))
                .flatten();
            let touched = match &summary {
                Some(summary) if !*new && !summary.opaque => Some(summary.touched.clone()),
                _ => None,
            };
            let derived = summary
                .map(|summary| summary.derivable(row, touched.as_deref()))
                .unwrap_or_default();
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
                derived,
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
    #[error(
        "table `{table}`, record `{record}`: field `{field}` should be read from the payload, which does not write it"
    )]
    Derived {
        table: String,
        record: String,
        field: String,
    },
    #[error("table `{table}` declares {n} records, more than the message can hold")]
    Count { table: String, n: u32 },
}

/// Opens and decodes a pull batch message. Nothing is returned unless the
/// whole message is valid.
///
/// # Errors
///
/// A [`BatchError`] naming what is wrong.
pub fn decode_batch(message: &[u8], limit: usize) -> Result<PullBatch, BatchError> {
    let (body, checksum): (BatchBody, u32) =
        wire::open_value(message, MessageKind::PullBatch, limit)?;
    let tables = body
        .tables
        .into_iter()
        .map(|table| decode_table(table, message.len()))
        .collect::<Result<_, _>>()?;
    Ok(PullBatch {
        from: body.from,
        next_cursor: body.next,
        has_more: body.more,
        base: body.base,
        catch_up: body.catch_up,
        checksum,
        tables,
    })
}

fn decode_table(table: TableBody, message_len: usize) -> Result<TableBatch, BatchError> {
    let n = table.n as usize;
    // Every record costs at least a byte in the ids column.
    if n > message_len {
        return Err(BatchError::Count {
            table: table.name,
            n: table.n,
        });
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
    let derived = compress::decode_blobs(n, &table.derived).map_err(failed("derived"))?;
    let mut columns = Vec::with_capacity(table.fields.len());
    for ((field, kind), bytes) in table.fields.iter().zip(&table.rows) {
        let values = compress::decode_values(*kind, n, bytes).map_err(failed(field))?;
        columns.push(values.into_iter());
    }
    let mut records = Vec::with_capacity(n);
    for (((id, seq), (flags, payload)), (mask, derived)) in ids
        .into_iter()
        .zip(seqs)
        .zip(flags.into_iter().zip(payloads))
        .zip(touched.into_iter().zip(derived))
    {
        let complete = flags & flag::COMPLETE_ROW != 0;
        let mut row: Vec<Option<Value>> = columns
            .iter_mut()
            .enumerate()
            .map(|(position, column)| {
                let value = column.next().unwrap_or(Value::Null);
                (complete || bit(&mask, position)).then_some(value)
            })
            .collect();
        if derived.iter().any(|byte| *byte != 0) {
            ops::fill_derived(&mut row, &payload, &derived, &table.fields).map_err(|field| {
                BatchError::Derived {
                    table: table.name.clone(),
                    record: id.clone(),
                    field,
                }
            })?;
        }
        records.push(RecordDelta {
            id,
            seq,
            state: state_of(flags),
            payload,
            whole: flags & flag::WHOLE != 0,
            row,
        });
    }
    Ok(TableBatch {
        table: table.name,
        fields: table.fields,
        records,
    })
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

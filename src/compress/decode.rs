//! Decoding columns: parse the encoding byte, undo LZ4, then read the payload
//! with the reader its encoding and the column's type call for.

use std::borrow::Cow;

use mobilesyncdb_crdt::Value;

use super::ColumnError;
use super::lz4;
use super::msgpack::{self, IntMeaning};
use super::typed::{self, Absent};
use super::wire::{ColumnEncoding, Cursor, EncodingByte};
use crate::schema::FieldType;

/// The encoding byte and the payload, decompressed when it is an LZ4 frame.
fn open(bytes: &[u8]) -> Result<(EncodingByte, Cow<'_, [u8]>), ColumnError> {
    let header = EncodingByte::of(bytes)?;
    let payload = &bytes[1..];
    if header.lz4 {
        Ok((header, Cow::Owned(lz4::decompress_frame(payload)?)))
    } else {
        Ok((header, Cow::Borrowed(payload)))
    }
}

fn null_value(_entry: usize) -> Result<Value, ColumnError> {
    Ok(Value::Null)
}

fn no_nulls<T>(entry: usize) -> Result<T, ColumnError> {
    Err(ColumnError::UnexpectedNull { entry })
}

/// Reads the typed payload with `read`, then checks that nothing is left over.
fn read_all<T>(
    payload: &[u8],
    read: impl FnOnce(&mut Cursor<'_>) -> Result<Vec<T>, ColumnError>,
) -> Result<Vec<T>, ColumnError> {
    let mut cursor = Cursor::new(payload);
    let entries = read(&mut cursor)?;
    cursor.finish()?;
    Ok(entries)
}

fn column_name(kind: FieldType) -> &'static str {
    match kind {
        FieldType::String => "string",
        FieldType::Integer => "integer",
        FieldType::Float => "float",
        FieldType::Boolean => "boolean",
        FieldType::Timestamp => "timestamp",
        FieldType::Bytes => "bytes",
        FieldType::Json => "json",
        FieldType::Counter => "counter",
    }
}

/// Decodes a column of `count` values of a field of type `kind`.
///
/// # Errors
///
/// Any [`ColumnError`]: the bytes are not a column that
/// [`Compressor::encode_values`](super::Compressor::encode_values) (or a
/// conforming encoder) wrote for `count` values of this type.
pub fn decode_values(
    kind: FieldType,
    count: usize,
    bytes: &[u8],
) -> Result<Vec<Value>, ColumnError> {
    let (header, payload) = open(bytes)?;
    let all = header.all_present;
    let absent: Absent<'_, Value> = &null_value;
    match (header.encoding, kind) {
        (ColumnEncoding::Plain, _) => msgpack::read_values(&payload, count, IntMeaning::of(kind)),
        (
            ColumnEncoding::DeltaVarint,
            FieldType::Integer | FieldType::Timestamp | FieldType::Counter,
        ) => {
            let meaning = IntMeaning::of(kind);
            read_all(&payload, |cursor| {
                typed::read_deltas(cursor, all, count, |n| meaning.value(n), absent)
            })
        }
        (ColumnEncoding::Strings, FieldType::String) => read_all(&payload, |cursor| {
            typed::read_strings(cursor, all, count, |text| Value::Str(text.into()), absent)
        }),
        (ColumnEncoding::Dictionary, FieldType::String) => read_all(&payload, |cursor| {
            typed::read_dictionary(cursor, all, count, |text| Value::Str(text.into()), absent)
        }),
        (ColumnEncoding::Uuids, FieldType::String) => read_all(&payload, |cursor| {
            typed::read_uuids(cursor, all, count, |text| Value::Str(text.into()), absent)
        }),
        (ColumnEncoding::Float64, FieldType::Float) => read_all(&payload, |cursor| {
            typed::read_floats(cursor, all, count, Value::Float, absent)
        }),
        (ColumnEncoding::Booleans, FieldType::Boolean) => read_all(&payload, |cursor| {
            typed::read_booleans(cursor, all, count, Value::Bool, absent)
        }),
        (ColumnEncoding::Blobs, FieldType::Bytes) => read_all(&payload, |cursor| {
            typed::read_blobs(cursor, all, count, |blob| Value::Bytes(blob.into()), absent)
        }),
        (encoding, kind) => Err(ColumnError::WrongEncoding {
            encoding,
            column: column_name(kind),
        }),
    }
}

/// Decodes a column of `count` byte strings written by
/// [`Compressor::encode_blobs`](super::Compressor::encode_blobs).
///
/// # Errors
///
/// Any [`ColumnError`]; a null entry is [`ColumnError::UnexpectedNull`].
pub fn decode_blobs(count: usize, bytes: &[u8]) -> Result<Vec<Vec<u8>>, ColumnError> {
    let (header, payload) = open(bytes)?;
    match header.encoding {
        ColumnEncoding::Blobs => read_all(&payload, |cursor| {
            typed::read_blobs(cursor, header.all_present, count, <[u8]>::to_vec, &no_nulls)
        }),
        encoding => Err(ColumnError::WrongEncoding {
            encoding,
            column: "blob",
        }),
    }
}

/// Decodes a column of `count` unsigned integers written by
/// [`Compressor::encode_u64s`](super::Compressor::encode_u64s).
///
/// # Errors
///
/// Any [`ColumnError`]; a null entry is [`ColumnError::UnexpectedNull`].
pub fn decode_u64s(count: usize, bytes: &[u8]) -> Result<Vec<u64>, ColumnError> {
    let (header, payload) = open(bytes)?;
    match header.encoding {
        ColumnEncoding::Plain => msgpack::read_u64s(&payload, count),
        ColumnEncoding::DeltaVarint => read_all(&payload, |cursor| {
            typed::read_deltas(cursor, header.all_present, count, |n| n as u64, &no_nulls)
        }),
        encoding => Err(ColumnError::WrongEncoding {
            encoding,
            column: "unsigned integer",
        }),
    }
}

/// Decodes a column of `count` strings written by
/// [`Compressor::encode_strs`](super::Compressor::encode_strs).
///
/// # Errors
///
/// Any [`ColumnError`]; a null entry is [`ColumnError::UnexpectedNull`].
pub fn decode_strs(count: usize, bytes: &[u8]) -> Result<Vec<String>, ColumnError> {
    let (header, payload) = open(bytes)?;
    let all = header.all_present;
    match header.encoding {
        ColumnEncoding::Plain => msgpack::read_strs(&payload, count),
        ColumnEncoding::Strings => read_all(&payload, |cursor| {
            typed::read_strings(cursor, all, count, str::to_owned, &no_nulls)
        }),
        ColumnEncoding::Dictionary => read_all(&payload, |cursor| {
            typed::read_dictionary(cursor, all, count, str::to_owned, &no_nulls)
        }),
        ColumnEncoding::Uuids => read_all(&payload, |cursor| {
            typed::read_uuids(cursor, all, count, str::to_owned, &no_nulls)
        }),
        encoding => Err(ColumnError::WrongEncoding {
            encoding,
            column: "string",
        }),
    }
}

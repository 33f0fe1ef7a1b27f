//! The `plain` encoding: a MessagePack array of the column's values, and the exact
//! size of that array computed without writing it (for the statistics).
//!
//! A MessagePack int means the column's own integer variant ([`IntMeaning`]):
//! a timestamp in a timestamp column, a counter in a counter column, an integer
//! anywhere else. An integer variant that differs from the column's (a timestamp
//! inside a JSON value, say) travels as a `fixext 8` whose type says which it is,
//! so every value round-trips.

use std::collections::BTreeMap;

use mobilesyncdb_crdt::Value;

use super::ColumnError;
use super::wire::Cursor;
use crate::schema::FieldType;

/// How deep lists and maps may nest. serde_json, which parses what the API
/// accepts, refuses JSON deeper than 128 levels, so valid data always fits; the
/// bound keeps a hostile column from overflowing the decoder's stack.
pub(super) const MAX_NESTING: usize = 128;

/// What a MessagePack int stands for in a column.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum IntMeaning {
    Int,
    Timestamp,
    Counter,
}

impl IntMeaning {
    pub(super) fn of(kind: FieldType) -> IntMeaning {
        match kind {
            FieldType::Timestamp => IntMeaning::Timestamp,
            FieldType::Counter => IntMeaning::Counter,
            _ => IntMeaning::Int,
        }
    }

    fn ext_type(self) -> u8 {
        match self {
            IntMeaning::Int => 1,
            IntMeaning::Timestamp => 2,
            IntMeaning::Counter => 3,
        }
    }

    fn from_ext_type(ext_type: u8) -> Option<IntMeaning> {
        match ext_type {
            1 => Some(IntMeaning::Int),
            2 => Some(IntMeaning::Timestamp),
            3 => Some(IntMeaning::Counter),
            _ => None,
        }
    }

    pub(super) fn value(self, n: i64) -> Value {
        match self {
            IntMeaning::Int => Value::Int(n),
            IntMeaning::Timestamp => Value::Timestamp(n),
            IntMeaning::Counter => Value::Counter(n),
        }
    }
}

// Writing. Lengths beyond u32 cannot be expressed in MessagePack; the callers
// document the panic (sync batches are bounded far below 4 GiB).

fn length_u32(len: usize) -> u32 {
    u32::try_from(len).expect("a plain column entry is shorter than 4 GiB")
}

pub(super) fn write_array_header(out: &mut Vec<u8>, len: usize) {
    write_container_header(out, len, 0x90, 0xdc);
}

fn write_container_header(out: &mut Vec<u8>, len: usize, fix: u8, marker16: u8) {
    let len = length_u32(len);
    if len < 16 {
        out.push(fix | len as u8);
    } else if let Ok(len) = u16::try_from(len) {
        out.push(marker16);
        out.extend_from_slice(&len.to_be_bytes());
    } else {
        out.push(marker16 + 1);
        out.extend_from_slice(&len.to_be_bytes());
    }
}

pub(super) fn array_header_size(len: usize) -> usize {
    match len {
        0..16 => 1,
        16..65_536 => 3,
        _ => 5,
    }
}

pub(super) fn write_uint(out: &mut Vec<u8>, n: u64) {
    if n < 128 {
        out.push(n as u8);
    } else if let Ok(n) = u8::try_from(n) {
        out.extend_from_slice(&[0xcc, n]);
    } else if let Ok(n) = u16::try_from(n) {
        out.push(0xcd);
        out.extend_from_slice(&n.to_be_bytes());
    } else if let Ok(n) = u32::try_from(n) {
        out.push(0xce);
        out.extend_from_slice(&n.to_be_bytes());
    } else {
        out.push(0xcf);
        out.extend_from_slice(&n.to_be_bytes());
    }
}

pub(super) fn uint_size(n: u64) -> usize {
    match n {
        0..128 => 1,
        128..256 => 2,
        256..65_536 => 3,
        65_536..4_294_967_296 => 5,
        _ => 9,
    }
}

fn write_int(out: &mut Vec<u8>, n: i64) {
    if n >= 0 {
        write_uint(out, n as u64);
    } else if n >= -32 {
        out.push(n as u8);
    } else if let Ok(n) = i8::try_from(n) {
        out.extend_from_slice(&[0xd0, n as u8]);
    } else if let Ok(n) = i16::try_from(n) {
        out.push(0xd1);
        out.extend_from_slice(&n.to_be_bytes());
    } else if let Ok(n) = i32::try_from(n) {
        out.push(0xd2);
        out.extend_from_slice(&n.to_be_bytes());
    } else {
        out.push(0xd3);
        out.extend_from_slice(&n.to_be_bytes());
    }
}

fn int_size(n: i64) -> usize {
    match n {
        0.. => uint_size(n as u64),
        -32..0 => 1,
        -128..-32 => 2,
        -32_768..-128 => 3,
        -2_147_483_648..-32_768 => 5,
        _ => 9,
    }
}

pub(super) fn write_str(out: &mut Vec<u8>, text: &str) {
    let len = length_u32(text.len());
    if len < 32 {
        out.push(0xa0 | len as u8);
    } else if let Ok(len) = u8::try_from(len) {
        out.extend_from_slice(&[0xd9, len]);
    } else if let Ok(len) = u16::try_from(len) {
        out.push(0xda);
        out.extend_from_slice(&len.to_be_bytes());
    } else {
        out.push(0xdb);
        out.extend_from_slice(&len.to_be_bytes());
    }
    out.extend_from_slice(text.as_bytes());
}

pub(super) fn str_size(len: usize) -> usize {
    len + match len {
        0..32 => 1,
        32..256 => 2,
        256..65_536 => 3,
        _ => 5,
    }
}

pub(super) fn write_bin(out: &mut Vec<u8>, bytes: &[u8]) {
    let len = length_u32(bytes.len());
    if let Ok(len) = u8::try_from(len) {
        out.extend_from_slice(&[0xc4, len]);
    } else if let Ok(len) = u16::try_from(len) {
        out.push(0xc5);
        out.extend_from_slice(&len.to_be_bytes());
    } else {
        out.push(0xc6);
        out.extend_from_slice(&len.to_be_bytes());
    }
    out.extend_from_slice(bytes);
}

pub(super) fn bin_size(len: usize) -> usize {
    len + match len {
        0..256 => 2,
        256..65_536 => 3,
        _ => 5,
    }
}

fn write_integer(out: &mut Vec<u8>, n: i64, variant: IntMeaning, ints: IntMeaning) {
    if variant == ints {
        write_int(out, n);
    } else {
        out.extend_from_slice(&[0xd7, variant.ext_type()]);
        out.extend_from_slice(&n.to_be_bytes());
    }
}

fn integer_size(n: i64, variant: IntMeaning, ints: IntMeaning) -> usize {
    if variant == ints { int_size(n) } else { 10 }
}

/// Appends one value; `ints` is the column's integer meaning.
pub(super) fn write_value(out: &mut Vec<u8>, value: &Value, ints: IntMeaning) {
    match value {
        Value::Null => out.push(0xc0),
        Value::Bool(flag) => out.push(if *flag { 0xc3 } else { 0xc2 }),
        Value::Int(n) => write_integer(out, *n, IntMeaning::Int, ints),
        Value::Timestamp(n) => write_integer(out, *n, IntMeaning::Timestamp, ints),
        Value::Counter(n) => write_integer(out, *n, IntMeaning::Counter, ints),
        Value::Float(x) => {
            out.push(0xcb);
            out.extend_from_slice(&x.to_bits().to_be_bytes());
        }
        Value::Str(text) => write_str(out, text),
        Value::Bytes(bytes) => write_bin(out, bytes),
        Value::List(items) => {
            write_array_header(out, items.len());
            for item in items {
                write_value(out, item, ints);
            }
        }
        Value::Map(entries) => {
            write_container_header(out, entries.len(), 0x80, 0xde);
            for (key, item) in entries.iter() {
                write_str(out, key);
                write_value(out, item, ints);
            }
        }
    }
}

/// The length [`write_value`] would append.
pub(super) fn value_size(value: &Value, ints: IntMeaning) -> usize {
    match value {
        Value::Null | Value::Bool(_) => 1,
        Value::Int(n) => integer_size(*n, IntMeaning::Int, ints),
        Value::Timestamp(n) => integer_size(*n, IntMeaning::Timestamp, ints),
        Value::Counter(n) => integer_size(*n, IntMeaning::Counter, ints),
        Value::Float(_) => 9,
        Value::Str(text) => str_size(text.len()),
        Value::Bytes(bytes) => bin_size(bytes.len()),
        Value::List(items) => {
            array_header_size(items.len())
                + items
                    .iter()
                    .map(|item| value_size(item, ints))
                    .sum::<usize>()
        }
        Value::Map(entries) => {
            array_header_size(entries.len())
                + entries
                    .iter()
                    .map(|(key, item)| str_size(key.len()) + value_size(item, ints))
                    .sum::<usize>()
        }
    }
}

// Reading.

/// Reads a plain column of `count` values.
pub(super) fn read_values(
    payload: &[u8],
    count: usize,
    ints: IntMeaning,
) -> Result<Vec<Value>, ColumnError> {
    read_array(payload, count, |reader| reader.value(ints, 0))
}

/// Reads a plain column of `count` unsigned integers (no nulls).
pub(super) fn read_u64s(payload: &[u8], count: usize) -> Result<Vec<u64>, ColumnError> {
    read_array(payload, count, |reader| {
        let marker = reader.cursor.byte("a messagepack marker")?;
        if marker == 0xc0 {
            return Err(ColumnError::UnexpectedNull {
                entry: reader.entry,
            });
        }
        let n = reader.int(marker)?.ok_or(ColumnError::InvalidMessagePack {
            what: "expected an unsigned integer",
        })?;
        u64::try_from(n).map_err(|_| ColumnError::OutOfRange {
            what: "negative or oversized entry in an unsigned column",
        })
    })
}

/// Reads the array header, checks it against `count`, then `count` entries.
fn read_array<T>(
    payload: &[u8],
    count: usize,
    mut entry: impl FnMut(&mut Reader<'_>) -> Result<T, ColumnError>,
) -> Result<Vec<T>, ColumnError> {
    let mut reader = Reader {
        cursor: Cursor::new(payload),
        entry: 0,
    };
    let marker = reader.cursor.byte("the array header")?;
    let found = reader
        .array_len(marker)?
        .ok_or(ColumnError::InvalidMessagePack {
            what: "a plain column must be an array",
        })?;
    if found != count {
        return Err(ColumnError::CountMismatch {
            expected: count,
            found,
        });
    }
    reader.cursor.justify(count, 8, "a plain column")?;
    let mut entries = Vec::with_capacity(count);
    for index in 0..count {
        reader.entry = index;
        entries.push(entry(&mut reader)?);
    }
    reader.cursor.finish()?;
    Ok(entries)
}

struct Reader<'a> {
    cursor: Cursor<'a>,
    /// The top-level entry being read, for error messages.
    entry: usize,
}

impl<'a> Reader<'a> {
    fn value(&mut self, ints: IntMeaning, depth: usize) -> Result<Value, ColumnError> {
        let marker = self.cursor.byte("a messagepack marker")?;
        if let Some(n) = self.int(marker)? {
            let n = i64::try_from(n).map_err(|_| ColumnError::OutOfRange {
                what: "integer above the largest 64-bit signed integer",
            })?;
            return Ok(ints.value(n));
        }
        if let Some(text) = self.str(marker)? {
            return Ok(Value::Str(text.into()));
        }
        if let Some(len) = self.array_len(marker)? {
            return self.list(len, ints, depth + 1);
        }
        if let Some(len) = self.map_len(marker)? {
            return self.map(len, ints, depth + 1);
        }
        self.scalar(marker)
    }

    /// Nil, booleans, floats, binary and the integer extensions.
    fn scalar(&mut self, marker: u8) -> Result<Value, ColumnError> {
        let cursor = &mut self.cursor;
        Ok(match marker {
            0xc0 => Value::Null,
            0xc2 => Value::Bool(false),
            0xc3 => Value::Bool(true),
            0xca => Value::Float(f64::from(f32::from_be_bytes(cursor.array("a float32")?))),
            0xcb => Value::Float(f64::from_be_bytes(cursor.array("a float64")?)),
            0xc4 => Value::bytes(self.sized(1, "binary")?),
            0xc5 => Value::bytes(self.sized(2, "binary")?),
            0xc6 => Value::bytes(self.sized(4, "binary")?),
            0xd7 => {
                let ext_type = cursor.byte("an extension type")?;
                let meaning =
                    IntMeaning::from_ext_type(ext_type).ok_or(ColumnError::InvalidMessagePack {
                        what: "unknown extension type (1 integer, 2 timestamp, 3 counter)",
                    })?;
                meaning.value(i64::from_be_bytes(cursor.array("an extension")?))
            }
            _ => {
                return Err(ColumnError::InvalidMessagePack {
                    what: "unsupported marker",
                });
            }
        })
    }

    fn list(&mut self, len: usize, ints: IntMeaning, depth: usize) -> Result<Value, ColumnError> {
        self.check_nesting(depth)?;
        self.cursor.justify(len, 8, "a messagepack array")?;
        let items = (0..len)
            .map(|_| self.value(ints, depth))
            .collect::<Result<_, _>>()?;
        Ok(Value::List(items))
    }

    fn map(&mut self, len: usize, ints: IntMeaning, depth: usize) -> Result<Value, ColumnError> {
        self.check_nesting(depth)?;
        self.cursor.justify(len, 16, "a messagepack map")?;
        let mut entries = BTreeMap::new();
        for _ in 0..len {
            let marker = self.cursor.byte("a map key")?;
            let key = self.str(marker)?.ok_or(ColumnError::InvalidMessagePack {
                what: "map keys must be strings",
            })?;
            let item = self.value(ints, depth)?;
            if entries.insert(key.to_owned(), item).is_some() {
                return Err(ColumnError::InvalidMessagePack {
                    what: "duplicate map key",
                });
            }
        }
        Ok(Value::Map(Box::new(entries)))
    }

    fn check_nesting(&self, depth: usize) -> Result<(), ColumnError> {
        if depth > MAX_NESTING {
            return Err(ColumnError::InvalidMessagePack {
                what: "lists and maps nested deeper than 128 levels",
            });
        }
        Ok(())
    }

    /// The integer a marker starts, widened so that every MessagePack int fits.
    fn int(&mut self, marker: u8) -> Result<Option<i128>, ColumnError> {
        let cursor = &mut self.cursor;
        let what = "an integer";
        Ok(Some(match marker {
            0x00..=0x7f => i128::from(marker),
            0xe0..=0xff => i128::from(marker as i8),
            0xcc => i128::from(cursor.byte(what)?),
            0xcd => i128::from(u16::from_be_bytes(cursor.array(what)?)),
            0xce => i128::from(u32::from_be_bytes(cursor.array(what)?)),
            0xcf => i128::from(u64::from_be_bytes(cursor.array(what)?)),
            0xd0 => i128::from(cursor.byte(what)? as i8),
            0xd1 => i128::from(i16::from_be_bytes(cursor.array(what)?)),
            0xd2 => i128::from(i32::from_be_bytes(cursor.array(what)?)),
            0xd3 => i128::from(i64::from_be_bytes(cursor.array(what)?)),
            _ => return Ok(None),
        }))
    }

    /// The string a marker starts, if it is a string marker.
    fn str(&mut self, marker: u8) -> Result<Option<&'a str>, ColumnError> {
        let bytes = match marker {
            0xa0..=0xbf => self.cursor.take(usize::from(marker & 0x1f), "a string")?,
            0xd9 => self.sized(1, "a string")?,
            0xda => self.sized(2, "a string")?,
            0xdb => self.sized(4, "a string")?,
            _ => return Ok(None),
        };
        let entry = self.entry;
        std::str::from_utf8(bytes)
            .map(Some)
            .map_err(|_| ColumnError::InvalidUtf8 { entry })
    }

    fn array_len(&mut self, marker: u8) -> Result<Option<usize>, ColumnError> {
        self.container_len(marker, 0x90, 0xdc)
    }

    fn map_len(&mut self, marker: u8) -> Result<Option<usize>, ColumnError> {
        self.container_len(marker, 0x80, 0xde)
    }

    fn container_len(
        &mut self,
        marker: u8,
        fix: u8,
        marker16: u8,
    ) -> Result<Option<usize>, ColumnError> {
        Ok(Some(match marker {
            _ if marker & 0xf0 == fix => usize::from(marker & 0x0f),
            _ if marker == marker16 => self.big_endian_len(2)?,
            _ if marker == marker16 + 1 => self.big_endian_len(4)?,
            _ => return Ok(None),
        }))
    }

    /// A length of `width` big-endian bytes, then that many bytes.
    fn sized(&mut self, width: usize, what: &'static str) -> Result<&'a [u8], ColumnError> {
        let len = self.big_endian_len(width)?;
        self.cursor.take(len, what)
    }

    fn big_endian_len(&mut self, width: usize) -> Result<usize, ColumnError> {
        let bytes = self.cursor.take(width, "a length")?;
        let len = bytes
            .iter()
            .fold(0u64, |len, byte| len << 8 | u64::from(*byte));
        usize::try_from(len).map_err(|_| ColumnError::OutOfRange {
            what: "length beyond this machine's address space",
        })
    }
}

/// Reads a plain column of `count` strings (no nulls).
pub(super) fn read_strs(payload: &[u8], count: usize) -> Result<Vec<String>, ColumnError> {
    read_array(payload, count, |reader| {
        let marker = reader.cursor.byte("a messagepack marker")?;
        if marker == 0xc0 {
            return Err(ColumnError::UnexpectedNull {
                entry: reader.entry,
            });
        }
        let text = reader.str(marker)?.ok_or(ColumnError::InvalidMessagePack {
            what: "expected a string",
        })?;
        Ok(text.to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_match_the_writers_at_every_boundary() {
        let ints = [
            0,
            127,
            128,
            255,
            256,
            65_535,
            65_536,
            u32::MAX as i64,
            u32::MAX as i64 + 1,
            -1,
            -32,
            -33,
            -128,
            -129,
            -32_768,
            -32_769,
            i32::MIN as i64,
            i32::MIN as i64 - 1,
            i64::MIN,
            i64::MAX,
        ];
        for n in ints {
            let mut out = Vec::new();
            write_int(&mut out, n);
            assert_eq!(out.len(), int_size(n), "{n}");
        }
        for len in [0, 31, 32, 255, 256, 65_535, 65_536] {
            let mut out = Vec::new();
            write_str(&mut out, &"x".repeat(len));
            assert_eq!(out.len(), str_size(len), "{len}");
            out.clear();
            write_bin(&mut out, &vec![7; len]);
            assert_eq!(out.len(), bin_size(len), "{len}");
            out.clear();
            write_array_header(&mut out, len);
            assert_eq!(out.len(), array_header_size(len), "{len}");
        }
    }

    #[test]
    fn ints_mean_the_columns_variant_and_others_travel_as_extensions() {
        let values = [Value::Timestamp(5), Value::Int(5), Value::Counter(-5)];
        let mut out = Vec::new();
        write_array_header(&mut out, values.len());
        for value in &values {
            write_value(&mut out, value, IntMeaning::Timestamp);
        }
        assert_eq!(&out[..2], &[0x93, 0x05]);
        assert_eq!(&out[2..4], &[0xd7, 1]);
        let decoded = read_values(&out, 3, IntMeaning::Timestamp).expect("valid");
        assert_eq!(decoded, values);
    }

    #[test]
    fn deep_nesting_is_refused_without_overflowing_the_stack() {
        let mut bytes = vec![0x91];
        bytes.extend(std::iter::repeat_n(0x91, 100_000));
        bytes.push(0xc0);
        assert!(read_values(&bytes, 1, IntMeaning::Int).is_err());
    }

    #[test]
    fn unsigned_columns_refuse_negatives_and_nulls() {
        assert_eq!(
            read_u64s(
                &[
                    0x92, 0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01
                ],
                2
            )
            .expect("valid"),
            vec![u64::MAX, 1]
        );
        assert!(read_u64s(&[0x91, 0xff], 1).is_err());
        assert!(read_u64s(&[0x91, 0xc0], 1).is_err());
        assert!(read_strs(&[0x91, 0xc0], 1).is_err());
    }
}

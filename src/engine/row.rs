//! Visible rows: the policy-resolved values of a record, in schema field order,
//! kept compactly encoded.
//!
//! The engine holds one visible row per record for queries, indexes and
//! responses. As a `Vec<Value>` a row costs 24 bytes per field before any string
//! data; encoded it costs a tag byte plus the value's own bytes, which more than
//! halves the resident size of typical mobile records. Reading a field decodes it.
//!
//! Encoding, per field: a tag byte, then
//! null, false, true: nothing; integer, timestamp, counter: zigzag LEB128;
//! float: 8 bytes little-endian; string, bytes: LEB128 length, then the bytes;
//! list: LEB128 count, then the items; map: LEB128 count, then key (as a string
//! without tag) and value pairs.

use std::collections::BTreeMap;

use mobilesyncdb_crdt::Value;

use crate::schema::{FieldSpec, TableSchema, value_to_json};

const NULL: u8 = 0;
const FALSE: u8 = 1;
const TRUE: u8 = 2;
const INT: u8 = 3;
const FLOAT: u8 = 4;
const STR: u8 = 5;
const TIMESTAMP: u8 = 6;
const BYTES: u8 = 7;
const COUNTER: u8 = 8;
const LIST: u8 = 9;
const MAP: u8 = 10;
/// The record's document has no value for the field (never written): it reads
/// as the field's default. `null` is a value someone wrote.
const ABSENT: u8 = 11;

/// A record's visible values, one per schema field, in the schema's field order.
///
/// Derived state: the engine rebuilds it from the record's document whenever the
/// document changes, and can always rebuild it from scratch.
#[derive(Clone, PartialEq, Eq)]
pub struct Row {
    encoded: Box<[u8]>,
}

impl std::fmt::Debug for Row {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_list().entries(self.values()).finish()
    }
}

impl Row {
    /// A row from values in schema field order.
    pub fn new(values: Vec<Value>) -> Row {
        let mut encoded = Vec::with_capacity(values.len() * 8);
        for value in &values {
            encode(value, &mut encoded);
        }
        Row {
            encoded: encoded.into_boxed_slice(),
        }
    }

    /// A row from values in field order; `None` marks a field the document has
    /// no value for.
    pub(crate) fn with_absent(values: &[Option<Value>]) -> Row {
        let mut encoded = Vec::with_capacity(values.len() * 8);
        for value in values {
            match value {
                Some(value) => encode(value, &mut encoded),
                None => encoded.push(ABSENT),
            }
        }
        Row {
            encoded: encoded.into_boxed_slice(),
        }
    }

    /// The value at a field position, `None` when the record has none: past the
    /// end (the row is older than the field) or never written. Readers give the
    /// field's default then.
    pub fn get_opt(&self, position: usize) -> Option<Value> {
        let mut reader = Reader::new(&self.encoded);
        for _ in 0..position {
            if reader.is_empty() {
                return None;
            }
            reader.skip();
        }
        match reader.bytes.first() {
            None | Some(&ABSENT) => None,
            Some(_) => Some(reader.value()),
        }
    }

    /// The value at a field position (`Null` past the end, so that rows built before
    /// a field was added read it as absent).
    pub fn get(&self, position: usize) -> Value {
        let mut reader = Reader::new(&self.encoded);
        for _ in 0..position {
            if reader.is_empty() {
                return Value::Null;
            }
            reader.skip();
        }
        if reader.is_empty() {
            return Value::Null;
        }
        reader.value()
    }

    /// A copy of this row, `width` fields wide, with some fields replaced.
    /// Unchanged fields are copied as encoded, without decoding them.
    pub(crate) fn replacing(&self, width: usize, replacements: &[(usize, Value)]) -> Row {
        let mut encoded = Vec::with_capacity(self.encoded.len() + 16);
        let mut reader = Reader::new(&self.encoded);
        for position in 0..width {
            let start = reader.bytes;
            if !reader.is_empty() {
                reader.skip();
            }
            let kept = &start[..start.len() - reader.bytes.len()];
            match replacements
                .iter()
                .find(|(replaced, _)| *replaced == position)
            {
                Some((_, value)) => encode(value, &mut encoded),
                None if kept.is_empty() => encoded.push(ABSENT),
                None => encoded.extend_from_slice(kept),
            }
        }
        Row {
            encoded: encoded.into_boxed_slice(),
        }
    }

    /// All values in schema field order.
    pub fn values(&self) -> Vec<Value> {
        let mut reader = Reader::new(&self.encoded);
        let mut values = Vec::new();
        while !reader.is_empty() {
            values.push(reader.value());
        }
        values
    }

    /// The row as a JSON object keyed by the schema's field names; null fields are
    /// left out.
    pub fn to_json(&self, schema: &TableSchema) -> serde_json::Map<String, serde_json::Value> {
        schema
            .fields
            .iter()
            .enumerate()
            .filter(|(_, field)| !field.retired)
            .filter_map(|(position, field)| {
                let value = self.read(position, field);
                (!value.is_null()).then(|| (field.name.clone(), value_to_json(&value)))
            })
            .collect()
    }

    /// The value of `field`, at `position`, as the field reads it: converted to
    /// its type (values written under an older type stay as written until the
    /// record is written again), or its default when the record has none.
    pub fn read(&self, position: usize, field: &FieldSpec) -> Value {
        match self.get_opt(position) {
            Some(value) => field.kind.read(value),
            None => field.default_value(),
        }
    }

    /// The encoded bytes, as storage keeps them.
    pub(crate) fn encoded(&self) -> &[u8] {
        &self.encoded
    }

    /// A row from bytes [`Row::encoded`] gave (checked by the storage frame's
    /// checksum; a malformed row reads as nulls, never panics).
    pub(crate) fn from_encoded(encoded: Box<[u8]>) -> Row {
        Row { encoded }
    }

    /// Heap bytes owned by the row, for memory accounting.
    pub fn heap_bytes(&self) -> usize {
        self.encoded.len()
    }
}

fn encode(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Null => out.push(NULL),
        Value::Bool(false) => out.push(FALSE),
        Value::Bool(true) => out.push(TRUE),
        Value::Int(n) => tagged_signed(INT, *n, out),
        Value::Timestamp(ms) => tagged_signed(TIMESTAMP, *ms, out),
        Value::Counter(n) => tagged_signed(COUNTER, *n, out),
        Value::Float(x) => {
            out.push(FLOAT);
            out.extend_from_slice(&x.to_le_bytes());
        }
        Value::Str(text) => tagged_bytes(STR, text.as_bytes(), out),
        Value::Bytes(bytes) => tagged_bytes(BYTES, bytes, out),
        Value::List(items) => {
            out.push(LIST);
            unsigned(items.len() as u64, out);
            for item in items.iter() {
                encode(item, out);
            }
        }
        Value::Map(entries) => {
            out.push(MAP);
            unsigned(entries.len() as u64, out);
            for (key, item) in entries.iter() {
                unsigned(key.len() as u64, out);
                out.extend_from_slice(key.as_bytes());
                encode(item, out);
            }
        }
    }
}

fn tagged_signed(tag: u8, n: i64, out: &mut Vec<u8>) {
    out.push(tag);
    unsigned(((n << 1) ^ (n >> 63)) as u64, out);
}

fn tagged_bytes(tag: u8, bytes: &[u8], out: &mut Vec<u8>) {
    out.push(tag);
    unsigned(bytes.len() as u64, out);
    out.extend_from_slice(bytes);
}

fn unsigned(mut n: u64, out: &mut Vec<u8>) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// Reads what [`encode`] wrote. Rows are only ever built by [`Row::new`], so the
/// bytes are well formed; a short read yields `Null` rather than a panic.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes }
    }

    fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    fn byte(&mut self) -> u8 {
        let (first, rest) = self.bytes.split_first().unwrap_or((&NULL, &[]));
        self.bytes = rest;
        *first
    }

    fn unsigned(&mut self) -> u64 {
        let mut n = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.byte();
            n |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                break;
            }
        }
        n
    }

    fn signed(&mut self) -> i64 {
        let n = self.unsigned();
        ((n >> 1) as i64) ^ -((n & 1) as i64)
    }

    fn slice(&mut self) -> &'a [u8] {
        let length = usize::try_from(self.unsigned())
            .unwrap_or(usize::MAX)
            .min(self.bytes.len());
        let (slice, rest) = self.bytes.split_at(length);
        self.bytes = rest;
        slice
    }

    fn text(&mut self) -> &'a str {
        std::str::from_utf8(self.slice()).unwrap_or_default()
    }

    fn value(&mut self) -> Value {
        match self.byte() {
            FALSE => Value::Bool(false),
            TRUE => Value::Bool(true),
            INT => Value::Int(self.signed()),
            TIMESTAMP => Value::Timestamp(self.signed()),
            COUNTER => Value::Counter(self.signed()),
            FLOAT => {
                let mut raw = [0u8; 8];
                for byte in &mut raw {
                    *byte = self.byte();
                }
                Value::Float(f64::from_le_bytes(raw))
            }
            STR => Value::str(self.text()),
            BYTES => Value::bytes(self.slice()),
            LIST => {
                let count = self.unsigned();
                Value::List((0..count).map(|_| self.value()).collect())
            }
            MAP => {
                let count = self.unsigned();
                let entries: BTreeMap<String, Value> = (0..count)
                    .map(|_| (self.text().to_owned(), self.value()))
                    .collect();
                Value::Map(Box::new(entries))
            }
            _ => Value::Null,
        }
    }

    fn skip(&mut self) {
        match self.byte() {
            INT | TIMESTAMP | COUNTER => {
                self.unsigned();
            }
            FLOAT => self.bytes = self.bytes.get(8..).unwrap_or_default(),
            STR | BYTES => {
                self.slice();
            }
            LIST => {
                for _ in 0..self.unsigned() {
                    self.skip();
                }
            }
            MAP => {
                for _ in 0..self.unsigned() {
                    self.slice();
                    self.skip();
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use quickcheck::{Arbitrary, Gen, QuickCheck};

    use super::*;

    #[derive(Clone, Debug)]
    struct Values(Vec<Value>);

    impl Arbitrary for Values {
        fn arbitrary(rng: &mut Gen) -> Values {
            Values(
                (0..u8::arbitrary(rng) % 12)
                    .map(|_| Value::arbitrary(rng))
                    .collect(),
            )
        }
    }

    fn replacing_matches_a_rebuilt_row(values: Values, width: u8, picks: Vec<(u8, bool)>) -> bool {
        let width = usize::from(width % 14);
        let row = Row::new(values.0.clone());
        let replacements: Vec<(usize, Value)> = picks
            .iter()
            .map(|(position, flag)| (usize::from(*position) % width.max(1), Value::Bool(*flag)))
            .collect();
        let mut expected: Vec<Value> = (0..width).map(|position| row.get(position)).collect();
        for (position, value) in &replacements {
            if *position < width {
                expected[*position] = replacements
                    .iter()
                    .find(|(candidate, _)| candidate == position)
                    .map_or(value.clone(), |(_, first)| first.clone());
            }
        }
        row.replacing(width, &replacements).values() == expected
    }

    #[test]
    fn replacing_fields_keeps_the_others_as_they_were() {
        QuickCheck::new()
            .tests(500)
            .quickcheck(replacing_matches_a_rebuilt_row as fn(Values, u8, Vec<(u8, bool)>) -> bool);
    }

    fn round_trips(values: Values) -> bool {
        let row = Row::new(values.0.clone());
        row.values() == values.0
            && values
                .0
                .iter()
                .enumerate()
                .all(|(position, value)| &row.get(position) == value)
            && row.get(values.0.len()) == Value::Null
    }

    #[test]
    fn every_row_round_trips_field_by_field() {
        QuickCheck::new()
            .tests(500)
            .quickcheck(round_trips as fn(Values) -> bool);
    }

    #[test]
    fn a_typical_record_is_much_smaller_than_its_values() {
        let values = vec![
            Value::str("5f0c1a2e-8d3b-4c61-9a57-2b7f0e4d9c13"),
            Value::str("Buy oat milk and eggs"),
            Value::Bool(false),
            Value::Int(3),
            Value::Timestamp(1_717_000_000_000),
            Value::Null,
        ];
        let row = Row::new(values.clone());
        let as_values: usize = values.len() * std::mem::size_of::<Value>() + 36 + 21;
        assert!(
            row.heap_bytes() * 2 < as_values,
            "{} vs {as_values}",
            row.heap_bytes()
        );
    }
}

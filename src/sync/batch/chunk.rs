//! The layout of an automerge change chunk, read without automerge: where its
//! header fields, its operation columns and their bytes are. Reading one costs a
//! few hundred nanoseconds; `Change::from_bytes` checks the hash and decodes
//! every column.
//!
//! ```text
//! chunk:  magic 85 6f 4a 83 | checksum (4) | type 01 | uLEB body length | body
//! body:   uLEB n, n × 32-byte dependency hashes
//!         uLEB length, actor id
//!         uLEB seq | uLEB start op | sLEB time | uLEB length, message
//!         uLEB n, n × (uLEB length, actor id)        other actors
//!         uLEB n, n × (uLEB spec, uLEB length)       column metadata
//!         column data, in metadata order | extra bytes
//! ```

use std::ops::Range;

use mobilesyncdb_crdt::Value;

/// The first bytes of every automerge storage chunk.
pub(crate) const CHUNK_MAGIC: [u8; 4] = [0x85, 0x6f, 0x4a, 0x83];
/// The type byte of an uncompressed change chunk.
pub(crate) const CHANGE_CHUNK: u8 = 0x01;

/// Column specs of a change chunk's operations (id << 4 | type).
pub(crate) mod spec {
    pub(crate) const OBJ_ACTOR: u32 = 0x01;
    pub(crate) const OBJ_CTR: u32 = 0x02;
    pub(crate) const KEY_STR: u32 = 0x15;
    pub(crate) const ACTION: u32 = 0x42;
    pub(crate) const VAL_META: u32 = 0x56;
    pub(crate) const VAL_RAW: u32 = 0x57;
    /// The DEFLATE bit of a spec.
    pub(crate) const DEFLATE: u32 = 0x08;
}

/// Where the parts of one change chunk are, as byte ranges of the chunk.
#[derive(Debug, Clone)]
pub(crate) struct ChunkLayout {
    /// The whole chunk.
    pub(crate) len: usize,
    /// The body: everything after the uLEB body length.
    pub(crate) body: Range<usize>,
    pub(crate) deps: Range<usize>,
    pub(crate) actor: Range<usize>,
    pub(crate) seq: u64,
    pub(crate) start_op: u64,
    pub(crate) time: i64,
    pub(crate) message: Range<usize>,
    /// The other actors, uLEB count included.
    pub(crate) other_actors: Range<usize>,
    /// The column metadata, uLEB count included.
    pub(crate) meta: Range<usize>,
    /// Each column's spec and data.
    pub(crate) columns: Vec<(u32, Range<usize>)>,
    pub(crate) extra: Range<usize>,
}

impl ChunkLayout {
    /// The data of the column with `spec`; an empty range when it is absent.
    pub(crate) fn column(&self, spec: u32) -> Range<usize> {
        self.columns
            .iter()
            .find(|(found, _)| *found == spec)
            .map_or(0..0, |(_, range)| range.clone())
    }
}

/// A reader over a byte slice that remembers its position.
#[derive(Debug)]
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    pub(crate) at: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes, at: 0 }
    }

    pub(crate) fn done(&self) -> bool {
        self.at == self.bytes.len()
    }

    pub(crate) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(n)?;
        let taken = self.bytes.get(self.at..end)?;
        self.at = end;
        Some(taken)
    }

    pub(crate) fn uleb(&mut self) -> Option<u64> {
        let mut value: u64 = 0;
        for shift in (0..64).step_by(7) {
            let byte = *self.bytes.get(self.at)?;
            self.at += 1;
            let bits = u64::from(byte & 0x7f);
            if shift == 63 && bits > 1 {
                return None;
            }
            value |= bits << shift;
            if byte & 0x80 == 0 {
                return Some(value);
            }
        }
        None
    }

    pub(crate) fn sleb(&mut self) -> Option<i64> {
        let mut value: i64 = 0;
        let mut shift = 0;
        loop {
            let byte = *self.bytes.get(self.at)?;
            self.at += 1;
            if shift >= 64 {
                return None;
            }
            value |= i64::from(byte & 0x7f) << shift;
            shift += 7;
            if byte & 0x80 == 0 {
                if shift < 64 && byte & 0x40 != 0 {
                    value |= -1_i64 << shift;
                }
                return Some(value);
            }
        }
    }

    pub(crate) fn length(&mut self) -> Option<usize> {
        usize::try_from(self.uleb()?).ok()
    }

    /// A uLEB length and that many bytes, as a range of the input.
    fn prefixed(&mut self) -> Option<Range<usize>> {
        let len = self.length()?;
        let start = self.at;
        self.take(len)?;
        Some(start..self.at)
    }
}

/// Reads the layout of the change chunk at the start of `bytes`, which may run
/// on into further chunks. `None` when it is not an uncompressed change chunk.
pub(crate) fn read_change(bytes: &[u8]) -> Option<ChunkLayout> {
    let mut reader = Reader::new(bytes);
    if reader.take(4)? != CHUNK_MAGIC {
        return None;
    }
    reader.take(4)?;
    if reader.take(1)? != [CHANGE_CHUNK] {
        return None;
    }
    let body_len = reader.length()?;
    let body_start = reader.at;
    let len = body_start.checked_add(body_len)?;
    let mut reader = Reader::new(bytes.get(..len)?);
    reader.at = body_start;
    let deps_start = reader.at;
    let deps = reader.length()?;
    reader.take(deps.checked_mul(32)?)?;
    let deps = deps_start..reader.at;
    let actor = reader.prefixed()?;
    let seq = reader.uleb()?;
    let start_op = reader.uleb()?;
    let time = reader.sleb()?;
    let message = reader.prefixed()?;
    let others_start = reader.at;
    for _ in 0..reader.length()? {
        reader.prefixed()?;
    }
    let other_actors = others_start..reader.at;
    let meta_start = reader.at;
    let count = reader.length()?;
    let mut specs = Vec::with_capacity(count.min(32));
    for _ in 0..count {
        let spec = u32::try_from(reader.uleb()?).ok()?;
        specs.push((spec, reader.length()?));
    }
    let meta = meta_start..reader.at;
    let mut columns = Vec::with_capacity(specs.len());
    for (spec, column_len) in specs {
        let start = reader.at;
        reader.take(column_len)?;
        columns.push((spec, start..reader.at));
    }
    Some(ChunkLayout {
        len,
        body: body_start..len,
        deps,
        actor,
        seq,
        start_op,
        time,
        message,
        other_actors,
        meta,
        columns,
        extra: reader.at..len,
    })
}

/// Splits concatenated automerge storage chunks at their headers (magic, checksum,
/// type, uLEB length). `None` when the bytes are not a run of whole chunks.
pub(crate) fn split_chunks(mut bytes: &[u8]) -> Option<Vec<&[u8]>> {
    let mut chunks = Vec::new();
    while !bytes.is_empty() {
        let mut reader = Reader::new(bytes);
        if reader.take(4)? != CHUNK_MAGIC {
            return None;
        }
        reader.take(5)?;
        let length = reader.length()?;
        let total = reader.at.checked_add(length)?;
        chunks.push(bytes.get(..total)?);
        bytes = &bytes[total..];
    }
    Some(chunks)
}

/// Value metadata type codes (the low four bits of a `valMeta` entry).
mod code {
    pub(super) const UINT: u64 = 3;
    pub(super) const INT: u64 = 4;
    pub(super) const FLOAT: u64 = 5;
    pub(super) const STRING: u64 = 6;
    pub(super) const BYTES: u64 = 7;
    pub(super) const COUNTER: u64 = 8;
    pub(super) const TIMESTAMP: u64 = 9;
}

/// The `set` action: a put of a scalar.
const ACTION_SET: u64 = 1;

/// Reads an RLE column of automerge's format: runs of a signed LEB128 count,
/// then for a positive count one value repeated, for a negative count that many
/// literal values, for zero an unsigned count of nulls. `value` reads one value.
fn read_rle<'a, T: Clone>(
    bytes: &'a [u8],
    limit: usize,
    mut value: impl FnMut(&mut Reader<'a>) -> Option<T>,
) -> Option<Vec<Option<T>>> {
    let mut reader = Reader::new(bytes);
    let mut out = Vec::new();
    while !reader.done() {
        let count = reader.sleb()?;
        let room = limit.checked_sub(out.len())?;
        match count {
            1.. => {
                let count = usize::try_from(count).ok().filter(|n| *n <= room)?;
                let repeated = value(&mut reader)?;
                out.extend(std::iter::repeat_n(Some(repeated), count));
            }
            0 => {
                let nulls = reader.length().filter(|n| *n <= room)?;
                out.extend(std::iter::repeat_n(None, nulls));
            }
            _ => {
                let count = usize::try_from(count.unsigned_abs())
                    .ok()
                    .filter(|n| *n <= room)?;
                for _ in 0..count {
                    out.push(Some(value(&mut reader)?));
                }
            }
        }
    }
    Some(out)
}

fn read_uint_column(bytes: &[u8], limit: usize) -> Option<Vec<Option<u64>>> {
    read_rle(bytes, limit, Reader::uleb)
}

fn read_str_column(bytes: &[u8], limit: usize) -> Option<Vec<Option<&str>>> {
    read_rle(bytes, limit, |reader| {
        let len = reader.length()?;
        std::str::from_utf8(reader.take(len)?).ok()
    })
}

/// The operations of a change chunk, as far as fields and values need: per
/// operation, the root-map key it acts on, whether it puts a scalar, and its
/// value's metadata (type code and length).
#[derive(Debug)]
pub(crate) struct Ops<'a> {
    /// The root-map key; `None` for an operation on a nested object.
    pub(crate) keys: Vec<Option<&'a str>>,
    /// Whether the operation is a put of a scalar (action `set`).
    pub(crate) puts: Vec<bool>,
    pub(crate) metas: Vec<u64>,
}

impl Ops<'_> {
    /// The root field operation `op` puts a scalar on, if it does.
    pub(crate) fn put_key(&self, op: usize) -> Option<&str> {
        self.keys[op].filter(|_| self.puts[op])
    }

    /// The byte length of operation `op`'s raw value.
    pub(crate) fn raw_len(&self, op: usize) -> usize {
        usize::try_from(self.metas[op] >> 4).unwrap_or(usize::MAX)
    }

    /// The sum of the raw value lengths: the length of the `valRaw` column.
    pub(crate) fn raw_total(&self) -> Option<usize> {
        (0..self.metas.len()).try_fold(0_usize, |sum, op| sum.checked_add(self.raw_len(op)))
    }
}

/// Reads the operation columns that say what a chunk writes where. `column`
/// gives a column's data by spec (empty when absent: every entry null). `None`
/// when a needed column is malformed or claims more than `max_ops` operations
/// (run-length columns can claim millions in a few bytes).
pub(crate) fn read_ops<'a>(column: impl Fn(u32) -> &'a [u8], max_ops: usize) -> Option<Ops<'a>> {
    let action = column(spec::ACTION);
    let actions = read_uint_column(action, max_ops)?;
    let count = actions.len();
    let metas = read_uint_column(column(spec::VAL_META), count)?;
    let obj_actors = read_uint_column(column(spec::OBJ_ACTOR), count)?;
    let obj_ctrs = read_uint_column(column(spec::OBJ_CTR), count)?;
    let key_strs = read_str_column(column(spec::KEY_STR), count)?;
    let keys = (0..count)
        .map(|op| {
            let root = obj_actors.get(op).is_none_or(Option::is_none)
                && obj_ctrs.get(op).is_none_or(Option::is_none);
            key_strs.get(op).copied().flatten().filter(|_| root)
        })
        .collect();
    let puts = actions
        .iter()
        .map(|action| *action == Some(ACTION_SET))
        .collect();
    let metas = (0..count)
        .map(|op| metas.get(op).copied().flatten().unwrap_or(0))
        .collect();
    Some(Ops { keys, puts, metas })
}

/// Reads a change chunk's operations, unless a column is DEFLATE-compressed.
pub(crate) fn read_chunk_ops<'a>(
    chunk: &'a [u8],
    layout: &ChunkLayout,
    max_ops: usize,
) -> Option<Ops<'a>> {
    if layout
        .columns
        .iter()
        .any(|(spec, _)| spec & spec::DEFLATE != 0)
    {
        return None;
    }
    read_ops(|spec| &chunk[layout.column(spec)], max_ops)
}

/// Appends `value` as the raw bytes of a value with metadata `meta`; false when
/// it has no such encoding of exactly that length (nothing is appended then).
pub(crate) fn put_raw_value(out: &mut Vec<u8>, value: &Value, meta: u64) -> bool {
    let start = out.len();
    let written = match (meta & 0x0f, value) {
        (code::UINT, _) => integral(value)
            .and_then(|n| u64::try_from(n).ok())
            .map(|n| put_uleb(out, n))
            .is_some(),
        (code::INT | code::COUNTER | code::TIMESTAMP, _) => {
            integral(value).map(|n| put_sleb(out, n)).is_some()
        }
        (code::FLOAT, Value::Float(x)) => {
            out.extend_from_slice(&x.to_le_bytes());
            true
        }
        (code::FLOAT, Value::Int(n)) => {
            out.extend_from_slice(&(*n as f64).to_le_bytes());
            true
        }
        (code::STRING, Value::Str(text)) => {
            out.extend_from_slice(text.as_bytes());
            true
        }
        (code::BYTES, Value::Bytes(bytes)) => {
            out.extend_from_slice(bytes);
            true
        }
        _ => false,
    };
    let fits = u64::try_from(out.len() - start).is_ok_and(|len| len == meta >> 4);
    if !(written && fits) {
        out.truncate(start);
        return false;
    }
    true
}

/// The integer a value stands for: integers, timestamps, counters and whole
/// floats.
fn integral(value: &Value) -> Option<i64> {
    match value {
        Value::Int(n) | Value::Timestamp(n) | Value::Counter(n) => Some(*n),
        #[allow(clippy::cast_possible_truncation)]
        Value::Float(x) if x.fract() == 0.0 && x.abs() < 9.2e18 => Some(*x as i64),
        _ => None,
    }
}

pub(crate) fn put_uleb(out: &mut Vec<u8>, mut value: u64) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

pub(crate) fn put_sleb(out: &mut Vec<u8>, mut value: i64) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        let done = (value == 0 && byte & 0x40 == 0) || (value == -1 && byte & 0x40 != 0);
        if done {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// The type byte of a document chunk.
const DOCUMENT_CHUNK: u8 = 0x00;

/// The change hashes readable without loading a record's saved bytes: the hash
/// of each change chunk (SHA-256 of its type, length and body) and the heads a
/// document chunk lists (after its actors).
pub(crate) fn chunk_hashes(bytes: &[u8]) -> Vec<[u8; 32]> {
    use sha2::{Digest, Sha256};
    let mut hashes = Vec::new();
    for chunk in split_chunks(bytes).unwrap_or_default() {
        match chunk[8] {
            CHANGE_CHUNK => hashes.push(Sha256::digest(&chunk[8..]).into()),
            DOCUMENT_CHUNK => {
                let mut reader = Reader::new(chunk);
                reader.at = 9;
                let heads = (|| {
                    reader.length()?;
                    for _ in 0..reader.length()? {
                        reader.prefixed()?;
                    }
                    let count = reader.length()?;
                    let mut heads = Vec::with_capacity(count.min(64));
                    for _ in 0..count {
                        heads.push(<[u8; 32]>::try_from(reader.take(32)?).ok()?);
                    }
                    Some(heads)
                })();
                hashes.extend(heads.unwrap_or_default());
            }
            _ => {}
        }
    }
    hashes
}

#[cfg(test)]
mod tests {
    use mobilesyncdb_crdt::{ActorId, Edit, Record, Stamp, StampMeta};

    use super::*;

    fn sleb(value: i64) -> Vec<u8> {
        let mut out = Vec::new();
        put_sleb(&mut out, value);
        out
    }

    #[test]
    fn leb128_round_trips_at_the_edges() {
        for value in [0, 1, -1, 63, 64, -64, -65, i64::MAX, i64::MIN] {
            assert_eq!(Reader::new(&sleb(value)).sleb(), Some(value), "{value}");
        }
        for value in [0, 127, 128, u64::MAX] {
            let mut out = Vec::new();
            put_uleb(&mut out, value);
            assert_eq!(Reader::new(&out).uleb(), Some(value), "{value}");
        }
        assert_eq!(Reader::new(&[0x80; 11]).uleb(), None);
    }

    #[test]
    fn run_length_columns_decode_runs_literals_and_nulls_within_a_limit() {
        // Three 5s, two literals (7, 8), two nulls.
        let mut column = sleb(3);
        column.push(5);
        column.extend(sleb(-2));
        column.extend([7, 8]);
        column.extend(sleb(0));
        column.push(2);
        assert_eq!(
            read_uint_column(&column, 7),
            Some(vec![
                Some(5),
                Some(5),
                Some(5),
                Some(7),
                Some(8),
                None,
                None
            ])
        );
        assert_eq!(
            read_uint_column(&column, 6),
            None,
            "one entry over the limit"
        );
        // A million entries claimed in four bytes are refused without allocating.
        let mut bomb = sleb(1_000_000);
        bomb.push(1);
        assert_eq!(read_uint_column(&bomb, 64), None);
        assert_eq!(read_uint_column(&column[..column.len() - 1], 7), None);
    }

    #[test]
    fn a_raw_value_is_written_only_in_its_exact_encoding() {
        let mut out = Vec::new();
        assert!(put_raw_value(
            &mut out,
            &Value::str("abc"),
            3 << 4 | code::STRING
        ));
        assert!(!put_raw_value(
            &mut out,
            &Value::str("abcd"),
            3 << 4 | code::STRING
        ));
        assert!(put_raw_value(&mut out, &Value::Int(-1), 1 << 4 | code::INT));
        assert!(!put_raw_value(
            &mut out,
            &Value::Int(-1),
            1 << 4 | code::UINT
        ));
        assert!(put_raw_value(
            &mut out,
            &Value::Int(3),
            8 << 4 | code::FLOAT
        ));
        assert!(put_raw_value(
            &mut out,
            &Value::Float(2.0),
            1 << 4 | code::TIMESTAMP
        ));
        assert!(!put_raw_value(
            &mut out,
            &Value::Bool(true),
            1 << 4 | code::INT
        ));
        let mut expected = b"abc".to_vec();
        expected.push(0x7f);
        expected.extend(3.0_f64.to_le_bytes());
        expected.push(2);
        assert_eq!(out, expected, "refused values leave nothing behind");
    }

    #[test]
    fn a_change_chunk_is_laid_out_and_its_hash_found_as_a_document_head() {
        let mut record = Record::new(ActorId::random());
        let meta = StampMeta::new(Stamp::at(1_700_000_000_000), "phone-1");
        let change = record
            .write(&[Edit::set("title", "milk")], &meta)
            .unwrap()
            .unwrap();
        let bytes = change.raw_bytes();
        let layout = read_change(bytes).expect("a change chunk");
        assert_eq!(layout.len, bytes.len());
        assert_eq!((layout.seq, layout.start_op), (1, 1));
        assert_eq!(layout.time, 1_700_000_000_000);
        assert_eq!(&bytes[layout.column(spec::VAL_RAW)], b"milk");
        assert_eq!(chunk_hashes(bytes), [change.hash().0]);
        assert_eq!(chunk_hashes(&record.save()), [change.hash().0]);
        assert!(read_change(&bytes[..bytes.len() - 1]).is_none());
    }
}

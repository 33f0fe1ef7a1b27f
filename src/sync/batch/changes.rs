//! Change chunks as columns. A table's change chunks are taken apart into their
//! fields (actor, sequence number, time, message, dependencies, operation
//! columns…) and each field is stored as one column across the batch, so that
//! what repeats from change to change (the actor, the column layout, the field
//! names) costs next to nothing, and numbers become small deltas. The decoder
//! puts every chunk back together byte for byte and checks it against the
//! chunk's own checksum (the first four bytes of its SHA-256 hash).
//!
//! A scalar that a change puts on a root field is usually the record's visible
//! value, which the batch sends in the field's row column, typed and compressed
//! with its neighbours. Such values are left out of the chunk's `valRaw` column
//! and written back from the row: `rebuilt` marks them, `raw` holds the others.
//!
//! A dependency is a 32-byte hash of a change the client already holds (or of
//! an earlier chunk of the same payload). Such dependencies travel as their
//! first 4 bytes; the decoder finds the whole hash among the changes of its
//! copy of the record, and the chunk's checksum confirms the choice. A client
//! that cannot (a dependency not in its copy) fetches the record whole.

use hashbrown::HashMap;
use mobilesyncdb_crdt::Value;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use sha2::{Digest, Sha256};

use super::bit;
use super::chunk::{
    self, CHANGE_CHUNK, CHUNK_MAGIC, ChunkLayout, Reader, put_raw_value, put_sleb, put_uleb, spec,
};
use crate::compress::{self, ColumnError, Compressor};

/// The change chunks of one table's records, field by field: M chunks, records in
/// batch order and each record's chunks in payload order. Parts of the same kind
/// share one column, one part after the other, so that a batch of one record
/// costs few column headers.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct ChangeColumns {
    /// The number of chunks, M.
    pub(crate) m: u32,
    /// The distinct actor ids, in order of first use.
    pub(crate) actors: Vec<ByteBuf>,
    /// 6 × M unsigned numbers: M of each kind ([`PER_CHUNK`]), one kind after
    /// the other.
    pub(crate) numbers: ByteBuf,
    /// M messages.
    pub(crate) message: ByteBuf,
    /// Two byte strings: every chunk's 4-byte checksum, then every dependency
    /// (its 32-byte hash, or its first 4 bytes when `dep_short` says so).
    pub(crate) hashes: ByteBuf,
    /// 6 × M byte strings: M of each kind ([`PER_CHUNK`]), one kind after the
    /// other.
    pub(crate) parts: ByteBuf,
}

/// How many numbers (in `numbers`) and byte strings (in `parts`) each chunk has.
/// The numbers, in order: the index of its actor in `actors`, its seq, start op
/// and time (the bits of an `i64`), its number of dependencies, and the bitmap
/// of those sent as a 4-byte prefix. The byte strings, in order: the
/// other-actors section and the column metadata as in the chunk (counts
/// included), the column data without `valRaw`, the bitmap of operations whose
/// raw value comes from the row, the other raw values, the extra bytes.
const PER_CHUNK: usize = 6;

/// The value the batch sends for a root field, by name, when it sends one.
pub(crate) type RowValue<'f> = &'f dyn Fn(&str) -> Option<Value>;

/// One chunk taken apart.
struct Parts<'a> {
    layout: ChunkLayout,
    /// The number of dependencies.
    deps: usize,
    /// Bitmap of the dependencies sent as a prefix.
    short: u64,
    chunk: &'a [u8],
    message: &'a str,
    ops: Vec<u8>,
    rebuilt: Vec<u8>,
    raw: Vec<u8>,
}

/// Collects the change chunks of a table's records.
#[derive(Default)]
pub(crate) struct ChangeColumnsBuilder<'a> {
    actors: Vec<&'a [u8]>,
    actor_index: HashMap<&'a [u8], u64>,
    parts: Vec<Parts<'a>>,
}

impl<'a> ChangeColumnsBuilder<'a> {
    /// Takes a record's payload apart when every chunk in it is a change chunk;
    /// returns how many chunks it took (0: the payload stays whole). `value`
    /// gives the value the batch sends for a root field, when it sends one:
    /// raw values equal to it are left out (`None`: the batch sends none, or
    /// the client cannot put values back). With `shorten`, dependencies travel
    /// as prefixes.
    pub(crate) fn add(
        &mut self,
        payload: &'a [u8],
        value: Option<RowValue<'_>>,
        shorten: bool,
    ) -> u64 {
        let Some(chunks) = chunk::split_chunks(payload) else {
            return 0;
        };
        let mut taken = Vec::with_capacity(chunks.len());
        for chunk in chunks {
            match take_apart(chunk, value) {
                Some(mut parts) => {
                    if shorten && parts.deps <= 64 {
                        parts.short = u64::MAX.checked_shr(64 - parts.deps as u32).unwrap_or(0);
                    }
                    taken.push(parts);
                }
                None => return 0,
            }
        }
        let count = taken.len() as u64;
        for parts in &taken {
            let actor = &parts.chunk[parts.layout.actor.clone()];
            if !self.actor_index.contains_key(actor) {
                self.actor_index.insert(actor, self.actors.len() as u64);
                self.actors.push(actor);
            }
        }
        self.parts.extend(taken);
        count
    }

    /// The columns; `None` when no chunk was added.
    pub(crate) fn finish(self, compressor: &Compressor) -> Option<ChangeColumns> {
        if self.parts.is_empty() {
            return None;
        }
        let parts = &self.parts;
        let mut numbers = Vec::with_capacity(parts.len() * PER_CHUNK);
        numbers.extend(
            parts
                .iter()
                .map(|part| self.actor_index[&part.chunk[part.layout.actor.clone()]]),
        );
        numbers.extend(parts.iter().map(|part| part.layout.seq));
        numbers.extend(parts.iter().map(|part| part.layout.start_op));
        numbers.extend(parts.iter().map(|part| part.layout.time as u64));
        numbers.extend(parts.iter().map(|part| part.deps as u64));
        numbers.extend(parts.iter().map(|part| part.short));
        let mut deps = Vec::new();
        let mut checksums = Vec::with_capacity(parts.len() * 4);
        for part in parts {
            let dep_section = &part.chunk[part.layout.deps.clone()];
            let mut reader = Reader::new(dep_section);
            reader.uleb();
            for (index, hash) in dep_section[reader.at..].chunks_exact(32).enumerate() {
                let short = index < 64 && part.short & (1 << index) != 0;
                deps.extend_from_slice(if short { &hash[..4] } else { hash });
            }
            checksums.extend_from_slice(&part.chunk[4..8]);
        }
        let mut pieces: Vec<&[u8]> = Vec::with_capacity(parts.len() * PER_CHUNK);
        pieces.extend(
            parts
                .iter()
                .map(|part| &part.chunk[part.layout.other_actors.clone()]),
        );
        pieces.extend(
            parts
                .iter()
                .map(|part| &part.chunk[part.layout.meta.clone()]),
        );
        pieces.extend(parts.iter().map(|part| part.ops.as_slice()));
        pieces.extend(parts.iter().map(|part| part.rebuilt.as_slice()));
        pieces.extend(parts.iter().map(|part| part.raw.as_slice()));
        pieces.extend(
            parts
                .iter()
                .map(|part| &part.chunk[part.layout.extra.clone()]),
        );
        let messages: Vec<&str> = parts.iter().map(|part| part.message).collect();
        Some(ChangeColumns {
            m: u32::try_from(parts.len()).unwrap_or(u32::MAX),
            actors: self
                .actors
                .iter()
                .map(|actor| ByteBuf::from(actor.to_vec()))
                .collect(),
            numbers: ByteBuf::from(compressor.encode_u64s(&numbers)),
            message: ByteBuf::from(compressor.encode_strs(&messages)),
            hashes: ByteBuf::from(compressor.encode_blobs(&[&checksums, &deps])),
            parts: ByteBuf::from(compressor.encode_blobs(&pieces)),
        })
    }
}

/// Splits one change chunk into the parts the columns hold; `None` when it is
/// not a change chunk this encoding can carry.
fn take_apart<'a>(chunk: &'a [u8], value: Option<RowValue<'_>>) -> Option<Parts<'a>> {
    let layout = chunk::read_change(chunk)?;
    if layout.len != chunk.len() {
        return None;
    }
    let message = std::str::from_utf8(&chunk[layout.message.clone()]).ok()?;
    let mut ops = Vec::with_capacity(layout.body.len());
    let mut raw_range = 0..0;
    for (spec, range) in &layout.columns {
        if *spec == spec::VAL_RAW {
            // Two `valRaw` columns would be ambiguous.
            if !raw_range.is_empty() {
                return None;
            }
            raw_range = range.clone();
        } else {
            ops.extend_from_slice(&chunk[range.clone()]);
        }
    }
    let raw_bytes = &chunk[raw_range];
    let (rebuilt, raw) = value
        .and_then(|value| strip_values(chunk, &layout, raw_bytes, value))
        .unwrap_or_else(|| (Vec::new(), raw_bytes.to_vec()));
    let deps = Reader::new(&chunk[layout.deps.clone()]).length()?;
    Some(Parts {
        layout,
        deps,
        short: 0,
        chunk,
        message,
        ops,
        rebuilt,
        raw,
    })
}

/// Leaves out of `raw_bytes` every value that is the row's: the bitmap of the
/// operations left out and the remaining bytes. `None` when none is.
fn strip_values<'a>(
    chunk: &'a [u8],
    layout: &ChunkLayout,
    raw_bytes: &[u8],
    value: &dyn Fn(&str) -> Option<Value>,
) -> Option<(Vec<u8>, Vec<u8>)> {
    if raw_bytes.is_empty() {
        return None;
    }
    // The chunk is the server's own, checked when it was stored.
    let ops = chunk::read_chunk_ops(chunk, layout, usize::MAX)?;
    if ops.raw_total()? != raw_bytes.len() {
        return None;
    }
    let mut rebuilt = vec![0_u8; ops.metas.len().div_ceil(8)];
    let mut rest = Vec::new();
    let mut scratch = Vec::new();
    let mut at = 0;
    let mut any = false;
    for op in 0..ops.metas.len() {
        let len = ops.raw_len(op);
        if len == 0 {
            continue;
        }
        let original = &raw_bytes[at..at + len];
        at += len;
        scratch.clear();
        let same = ops
            .put_key(op)
            .and_then(value)
            .is_some_and(|value| put_raw_value(&mut scratch, &value, ops.metas[op]))
            && scratch == original;
        if same {
            rebuilt[op / 8] |= 1 << (op % 8);
            any = true;
        } else {
            rest.extend_from_slice(original);
        }
    }
    any.then_some((rebuilt, rest))
}

/// Why change columns cannot be put back together.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChangeError {
    #[error("change column `{column}` is invalid: {source}")]
    Column {
        column: &'static str,
        #[source]
        source: ColumnError,
    },
    #[error("the change columns hold {found} chunks, the records {expected}")]
    Count { expected: u64, found: u32 },
    #[error("the record has both a payload and change chunks")]
    Both,
    #[error("chunk {chunk}: {what}")]
    Chunk { chunk: usize, what: String },
}

/// Finds the whole hash of a dependency sent as a prefix.
pub(crate) trait Resolve {
    /// The hashes among the record's changes that start with `prefix`.
    fn candidates(&mut self, prefix: &[u8]) -> Vec<[u8; 32]>;
}

/// What putting a record's chunks back gave.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Rebuilt {
    /// Every chunk, appended to the output.
    Done,
    /// A dependency sent as a prefix is not among the local changes: the
    /// record must be fetched whole. Nothing was appended.
    Unresolved,
}

/// The change columns decoded, ready to put chunks back together.
pub(crate) struct ChangeRows {
    actors: Vec<ByteBuf>,
    actor: Vec<u64>,
    seq: Vec<u64>,
    start_op: Vec<u64>,
    time: Vec<u64>,
    message: Vec<String>,
    dep_counts: Vec<u64>,
    dep_short: Vec<u64>,
    deps: Vec<u8>,
    deps_at: usize,
    checksums: Vec<u8>,
    others: Vec<Vec<u8>>,
    meta: Vec<Vec<u8>>,
    ops: Vec<Vec<u8>>,
    rebuilt: Vec<Vec<u8>>,
    raw: Vec<Vec<u8>>,
    extra: Vec<Vec<u8>>,
    next: usize,
}

impl ChangeRows {
    /// Decodes every column; `total` is the number of chunks the records claim.
    pub(crate) fn decode(columns: ChangeColumns, total: u64) -> Result<ChangeRows, ChangeError> {
        if u64::from(columns.m) != total {
            return Err(ChangeError::Count {
                expected: total,
                found: columns.m,
            });
        }
        let m = columns.m as usize;
        let failed = |column: &'static str| move |source| ChangeError::Column { column, source };
        let six = m.checked_mul(PER_CHUNK).ok_or(ChangeError::Count {
            expected: total,
            found: columns.m,
        })?;
        let numbers = compress::decode_u64s(six, &columns.numbers).map_err(failed("numbers"))?;
        let mut numbers = numbers.chunks_exact(m.max(1)).map(<[u64]>::to_vec);
        let mut next_numbers = || numbers.next().unwrap_or_default();
        let mut hashes = compress::decode_blobs(2, &columns.hashes).map_err(failed("hashes"))?;
        let deps = hashes.pop().unwrap_or_default();
        let checksums = hashes.pop().unwrap_or_default();
        if checksums.len() != m * 4 {
            return Err(ChangeError::Chunk {
                chunk: 0,
                what: format!("{} checksum bytes for {m} chunks", checksums.len()),
            });
        }
        let mut parts = compress::decode_blobs(six, &columns.parts).map_err(failed("parts"))?;
        let mut next_parts = || parts.drain(..m).collect::<Vec<_>>();
        Ok(ChangeRows {
            actors: columns.actors,
            actor: next_numbers(),
            seq: next_numbers(),
            start_op: next_numbers(),
            time: next_numbers(),
            dep_counts: next_numbers(),
            dep_short: next_numbers(),
            message: compress::decode_strs(m, &columns.message).map_err(failed("message"))?,
            deps,
            deps_at: 0,
            checksums,
            others: next_parts(),
            meta: next_parts(),
            ops: next_parts(),
            rebuilt: next_parts(),
            raw: next_parts(),
            extra: next_parts(),
            next: 0,
        })
    }

    /// Puts the record's next `count` chunks back together, appending them to
    /// `out`. `value` gives the row's value of a root field; `resolve` the
    /// hashes of the record's local changes.
    pub(crate) fn rebuild(
        &mut self,
        count: u64,
        value: &dyn Fn(&str) -> Option<Value>,
        resolve: &mut dyn Resolve,
        out: &mut Vec<u8>,
    ) -> Result<Rebuilt, ChangeError> {
        let start = out.len();
        let first = self.next;
        let count = usize::try_from(count).unwrap_or(usize::MAX);
        let last = first
            .checked_add(count)
            .filter(|last| *last <= self.actor.len())
            .ok_or(ChangeError::Count {
                expected: count as u64,
                found: u32::try_from(self.actor.len() - first).unwrap_or(u32::MAX),
            })?;
        // Hashes of this record's chunks put back so far: later chunks of the
        // same payload may depend on them.
        let mut earlier: Vec<[u8; 32]> = Vec::with_capacity(count);
        for index in first..last {
            let deps = self
                .deps_of(index)
                .map_err(|what| ChangeError::Chunk { chunk: index, what })?;
            let Some(deps) = resolve_deps(&deps, &earlier, resolve) else {
                self.skip(index + 1, last)?;
                out.truncate(start);
                return Ok(Rebuilt::Unresolved);
            };
            match self.rebuild_one(index, &deps, value, out) {
                Ok(hash) => earlier.push(hash),
                // A chunk with a guessed dependency that does not check out is
                // fetched whole; with every hash given, it is an error.
                Err(_) if self.dep_short[index] != 0 => {
                    self.skip(index + 1, last)?;
                    out.truncate(start);
                    return Ok(Rebuilt::Unresolved);
                }
                Err(what) => return Err(ChangeError::Chunk { chunk: index, what }),
            }
            self.next = index + 1;
        }
        Ok(Rebuilt::Done)
    }

    /// Refuses dependency bytes no chunk used. (Every chunk is used: the
    /// records' counts add up to M, checked by `decode`.)
    pub(crate) fn check_used(&self) -> Result<(), ChangeError> {
        if self.deps_at == self.deps.len() {
            return Ok(());
        }
        Err(ChangeError::Chunk {
            chunk: self.next,
            what: format!(
                "{} dependency bytes that no chunk uses",
                self.deps.len() - self.deps_at
            ),
        })
    }

    /// Chunk `index`'s dependencies as sent (32 bytes, or a 4-byte prefix),
    /// moving past them.
    fn deps_of(&mut self, index: usize) -> Result<Vec<Vec<u8>>, String> {
        let count = usize::try_from(self.dep_counts[index])
            .ok()
            .filter(|count| *count <= self.deps.len())
            .ok_or("more dependencies than the deps column holds")?;
        let short = self.dep_short[index];
        if count < 64 && short >> count != 0 {
            return Err("a short dependency beyond the dependency count".into());
        }
        let mut deps = Vec::with_capacity(count);
        for dep in 0..count {
            let len = if dep < 64 && short & (1 << dep) != 0 {
                4
            } else {
                32
            };
            let piece = self
                .deps
                .get(self.deps_at..self.deps_at + len)
                .ok_or("dependencies run past the deps column")?;
            deps.push(piece.to_vec());
            self.deps_at += len;
        }
        Ok(deps)
    }

    /// Moves past chunks `from..last` of a record without putting them back.
    fn skip(&mut self, from: usize, last: usize) -> Result<(), ChangeError> {
        for index in from..last {
            self.deps_of(index)
                .map_err(|what| ChangeError::Chunk { chunk: index, what })?;
        }
        self.next = last;
        Ok(())
    }

    /// Puts chunk `index` back with its dependencies `deps` (whole hashes);
    /// returns its hash.
    fn rebuild_one(
        &self,
        index: usize,
        deps: &[[u8; 32]],
        value: &dyn Fn(&str) -> Option<Value>,
        out: &mut Vec<u8>,
    ) -> Result<[u8; 32], String> {
        let mut body = Vec::with_capacity(
            self.ops[index].len() + self.raw[index].len() + self.meta[index].len() + 128,
        );
        put_uleb(&mut body, deps.len() as u64);
        for dep in deps {
            body.extend_from_slice(dep);
        }
        let actor = usize::try_from(self.actor[index])
            .ok()
            .and_then(|actor| self.actors.get(actor))
            .ok_or("actor index out of range")?;
        put_uleb(&mut body, actor.len() as u64);
        body.extend_from_slice(actor);
        put_uleb(&mut body, self.seq[index]);
        put_uleb(&mut body, self.start_op[index]);
        put_sleb(&mut body, self.time[index] as i64);
        let message = self.message[index].as_bytes();
        put_uleb(&mut body, message.len() as u64);
        body.extend_from_slice(message);
        body.extend_from_slice(&self.others[index]);
        let meta = &self.meta[index];
        body.extend_from_slice(meta);
        let columns = read_meta(meta).ok_or("malformed column metadata")?;
        // Where each column's data is in `ops`; `valRaw` is not there.
        let ops = &self.ops[index];
        let mut at = 0;
        let mut slices = Vec::with_capacity(columns.len());
        for (spec, len) in &columns {
            if *spec == spec::VAL_RAW {
                slices.push(None);
                continue;
            }
            let end = at + len;
            slices.push(Some(ops.get(at..end).ok_or("operation columns run short")?));
            at = end;
        }
        if at != ops.len() {
            return Err("operation columns hold extra bytes".into());
        }
        let column = |wanted: u32| -> &[u8] {
            columns
                .iter()
                .zip(&slices)
                .find(|((spec, _), _)| *spec == wanted)
                .and_then(|(_, slice)| *slice)
                .unwrap_or_default()
        };
        let raw_len = columns
            .iter()
            .find(|(spec, _)| *spec == spec::VAL_RAW)
            .map_or(0, |(_, len)| *len);
        let raw = rebuild_raw(
            &self.rebuilt[index],
            &self.raw[index],
            raw_len,
            &column,
            value,
        )?;
        for ((spec, _), slice) in columns.iter().zip(&slices) {
            match slice {
                Some(slice) => body.extend_from_slice(slice),
                None if *spec == spec::VAL_RAW => body.extend_from_slice(&raw),
                None => {}
            }
        }
        body.extend_from_slice(&self.extra[index]);
        let checksum = &self.checksums[index * 4..index * 4 + 4];
        let mut header = Vec::with_capacity(10);
        header.push(CHANGE_CHUNK);
        put_uleb(&mut header, body.len() as u64);
        let hash: [u8; 32] = Sha256::new()
            .chain_update(&header)
            .chain_update(&body)
            .finalize()
            .into();
        if hash[..4] != *checksum {
            return Err("the rebuilt chunk does not match its checksum".into());
        }
        out.extend_from_slice(&CHUNK_MAGIC);
        out.extend_from_slice(checksum);
        out.extend_from_slice(&header);
        out.extend_from_slice(&body);
        Ok(hash)
    }
}

/// The whole hashes of a chunk's dependencies: given ones as they are, prefixes
/// matched against the record's earlier chunks, then its local changes. `None`
/// when a prefix matches none, or more than one.
fn resolve_deps(
    deps: &[Vec<u8>],
    earlier: &[[u8; 32]],
    resolve: &mut dyn Resolve,
) -> Option<Vec<[u8; 32]>> {
    deps.iter()
        .map(|dep| {
            if let Ok(hash) = <[u8; 32]>::try_from(dep.as_slice()) {
                return Some(hash);
            }
            let mut found: Vec<[u8; 32]> = earlier
                .iter()
                .filter(|hash| hash.starts_with(dep))
                .copied()
                .collect();
            if found.is_empty() {
                found = resolve.candidates(dep);
            }
            (found.len() == 1).then(|| found[0])
        })
        .collect()
}

/// The `valRaw` column: rebuilt values from the row, the others from `rest`.
fn rebuild_raw<'c>(
    rebuilt: &[u8],
    rest: &[u8],
    raw_len: usize,
    column: &dyn Fn(u32) -> &'c [u8],
    value: &dyn Fn(&str) -> Option<Value>,
) -> Result<Vec<u8>, String> {
    if rebuilt.is_empty() {
        if rest.len() != raw_len {
            return Err(format!(
                "{} raw bytes for a column of {raw_len}",
                rest.len()
            ));
        }
        return Ok(rest.to_vec());
    }
    // The bitmap has a bit per operation: it bounds what the columns may claim.
    let ops = chunk::read_ops(column, rebuilt.len().saturating_mul(8))
        .ok_or("malformed operation columns")?;
    let mut raw = Vec::with_capacity(raw_len);
    let mut at = 0;
    for op in 0..ops.metas.len() {
        let len = ops.raw_len(op);
        if len == 0 {
            continue;
        }
        if bit(rebuilt, op) {
            let key = ops
                .put_key(op)
                .ok_or("a rebuilt value is not a put on a root field")?;
            let value = value(key).ok_or_else(|| format!("no row value for field `{key}`"))?;
            if !put_raw_value(&mut raw, &value, ops.metas[op]) {
                return Err(format!(
                    "the row value of field `{key}` does not fit the change"
                ));
            }
        } else {
            let end = at + len;
            raw.extend_from_slice(rest.get(at..end).ok_or("raw values run short")?);
            at = end;
        }
    }
    if at != rest.len() || raw.len() != raw_len {
        return Err("raw values do not add up to the column".into());
    }
    Ok(raw)
}

/// A column metadata section: each column's spec and length.
fn read_meta(meta: &[u8]) -> Option<Vec<(u32, usize)>> {
    let mut reader = Reader::new(meta);
    let count = reader.length()?;
    let mut columns = Vec::with_capacity(count.min(64));
    for _ in 0..count {
        columns.push((u32::try_from(reader.uleb()?).ok()?, reader.length()?));
    }
    reader.done().then_some(columns)
}

/// A record's local copy (its saved bytes): the hashes of its changes, found on
/// demand. First the cheap ones: each change chunk's hash and each document
/// chunk's heads; then, when a prefix matches none of them, every change of the
/// loaded document.
pub(crate) struct LocalCopy {
    bytes: Vec<u8>,
    cheap: Option<Vec<[u8; 32]>>,
    all: Option<Vec<[u8; 32]>>,
}

impl LocalCopy {
    pub(crate) fn new(bytes: Vec<u8>) -> LocalCopy {
        LocalCopy {
            bytes,
            cheap: None,
            all: None,
        }
    }
}

impl Resolve for LocalCopy {
    fn candidates(&mut self, prefix: &[u8]) -> Vec<[u8; 32]> {
        let matching = |hashes: &[[u8; 32]]| -> Vec<[u8; 32]> {
            hashes
                .iter()
                .filter(|hash| hash.starts_with(prefix))
                .copied()
                .collect()
        };
        let bytes = &self.bytes;
        let found = matching(self.cheap.get_or_insert_with(|| chunk::chunk_hashes(bytes)));
        if !found.is_empty() {
            return found;
        }
        matching(self.all.get_or_insert_with(|| {
            automerge::Automerge::load(bytes)
                .map(|document| {
                    document
                        .get_changes_meta(&[])
                        .into_iter()
                        .map(|meta| meta.hash.0)
                        .collect()
                })
                .unwrap_or_default()
        }))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use mobilesyncdb_crdt::{ActorId, Edit, Record, Stamp, StampMeta};

    use super::*;
    use crate::compress::{CompressionStats, Level};

    fn compressor() -> Compressor {
        Compressor::new(Level::Balanced, Arc::new(CompressionStats::new()))
    }

    /// A record's insert and a later edit, as change chunks.
    fn changes() -> (Vec<u8>, Vec<u8>) {
        let mut record = Record::new(ActorId::random());
        let meta = StampMeta::new(Stamp::at(1_700_000_000_000), "phone-1");
        let insert = record
            .write(
                &[
                    Edit::set("title", "milk"),
                    Edit::set("due", Value::Timestamp(1_700_000_100_000)),
                    Edit::set("weight", 1.5),
                    Edit::set("done", false),
                ],
                &meta,
            )
            .unwrap()
            .unwrap();
        let edit = record
            .write(&[Edit::set("title", "oat milk")], &meta)
            .unwrap()
            .unwrap();
        (insert.raw_bytes().to_vec(), edit.raw_bytes().to_vec())
    }

    fn row(title: &str) -> impl Fn(&str) -> Option<Value> {
        let title = title.to_owned();
        move |field: &str| match field {
            "title" => Some(Value::str(title.as_str())),
            "due" => Some(Value::Timestamp(1_700_000_100_000)),
            "weight" => Some(Value::Float(1.5)),
            "done" => Some(Value::Bool(false)),
            _ => None,
        }
    }

    /// Encodes payloads, then puts them back with `copy` resolving prefixes.
    fn round_trip(
        payloads: &[&[u8]],
        value: &dyn Fn(&str) -> Option<Value>,
        shorten: bool,
        copy: &mut dyn Resolve,
    ) -> (ChangeColumns, Vec<Result<Vec<u8>, ()>>) {
        let mut builder = ChangeColumnsBuilder::default();
        let counts: Vec<u64> = payloads
            .iter()
            .map(|payload| builder.add(payload, Some(value), shorten))
            .collect();
        let columns = builder.finish(&compressor()).expect("chunks");
        let mut rows = ChangeRows::decode(columns.clone(), counts.iter().sum()).unwrap();
        let rebuilt = counts
            .iter()
            .map(|count| {
                let mut out = Vec::new();
                match rows.rebuild(*count, value, copy, &mut out).unwrap() {
                    Rebuilt::Done => Ok(out),
                    Rebuilt::Unresolved => Err(()),
                }
            })
            .collect();
        assert_eq!(rows.next, rows.actor.len(), "every chunk put back");
        rows.check_used().expect("every dependency byte used");
        (columns, rebuilt)
    }

    /// The length of a chunk's `valRaw` column.
    fn insert_raw_len(chunk: &[u8]) -> usize {
        chunk::read_change(chunk)
            .unwrap()
            .column(spec::VAL_RAW)
            .len()
    }

    struct Copy(Vec<u8>);

    impl Resolve for Copy {
        fn candidates(&mut self, prefix: &[u8]) -> Vec<[u8; 32]> {
            LocalCopy::new(self.0.clone()).candidates(prefix)
        }
    }

    #[test]
    fn chunks_come_back_byte_for_byte_with_values_from_the_row() {
        let (insert, edit) = changes();
        let both = [insert.clone(), edit.clone()].concat();
        let (columns, rebuilt) = round_trip(
            &[&insert, &both],
            &row("oat milk"),
            true,
            &mut Copy(Vec::new()),
        );
        // The insert's title is not the row's any more: it stays raw; the
        // other values (and the edit's title) come from the row.
        assert_eq!(rebuilt, [Ok(insert.clone()), Ok(both)]);
        let parts = compress::decode_blobs(18, &columns.parts).unwrap();
        let raw = &parts[12..15];
        assert_eq!(raw[0], b"milk");
        assert!(raw[2].is_empty());
        // Every automerge reader takes the rebuilt bytes.
        Record::load(&rebuilt[1].clone().unwrap()).expect("loads");
    }

    #[test]
    fn without_a_row_every_value_stays_in_the_chunk() {
        let (insert, _) = changes();
        let nothing = |_: &str| None;
        let (columns, rebuilt) = round_trip(&[&insert], &nothing, false, &mut Copy(Vec::new()));
        assert_eq!(rebuilt, [Ok(insert.clone())]);
        let parts = compress::decode_blobs(6, &columns.parts).unwrap();
        assert!(parts[3].is_empty(), "no value rebuilt");
        assert_eq!(parts[4].len(), insert_raw_len(&insert));
    }

    #[test]
    fn a_short_dependency_is_found_in_the_local_copy_or_the_record_is_unresolved() {
        let (insert, edit) = changes();
        let value = row("oat milk");
        let (_, rebuilt) = round_trip(&[&edit], &value, true, &mut Copy(insert.clone()));
        assert_eq!(rebuilt, [Ok(edit.clone())]);
        // A copy saved as a document lists the dependency among its heads.
        let saved = Record::load(&insert).unwrap().save();
        let (_, rebuilt) = round_trip(&[&edit], &value, true, &mut Copy(saved));
        assert_eq!(rebuilt, [Ok(edit.clone())]);
        // A copy without it: fetch the record whole.
        let (_, rebuilt) = round_trip(&[&edit, &insert], &value, true, &mut Copy(Vec::new()));
        assert_eq!(rebuilt, [Err(()), Ok(insert)]);
        // Whole dependencies need no copy.
        let (_, rebuilt) = round_trip(&[&edit], &value, false, &mut Copy(Vec::new()));
        assert_eq!(rebuilt, [Ok(edit)]);
    }

    #[test]
    fn a_value_that_does_not_rebuild_the_chunk_is_refused_by_its_checksum() {
        let (insert, _) = changes();
        let mut builder = ChangeColumnsBuilder::default();
        assert_eq!(builder.add(&insert, Some(&row("milk")), false), 1);
        let columns = builder.finish(&compressor()).unwrap();
        let mut rows = ChangeRows::decode(columns.clone(), 1).unwrap();
        // The decoder's row says "silk": same length, other bytes.
        let error = rows
            .rebuild(1, &row("silk"), &mut Copy(Vec::new()), &mut Vec::new())
            .unwrap_err();
        assert!(error.to_string().contains("checksum"), "{error}");
        let mut rows = ChangeRows::decode(columns.clone(), 1).unwrap();
        let error = rows
            .rebuild(1, &row("oat"), &mut Copy(Vec::new()), &mut Vec::new())
            .unwrap_err();
        assert!(error.to_string().contains("does not fit"), "{error}");
        assert!(ChangeRows::decode(columns, 2).is_err());
    }

    #[test]
    fn payloads_that_are_not_change_chunks_stay_whole() {
        let (insert, _) = changes();
        let document = Record::load(&insert).unwrap().save();
        let mut builder = ChangeColumnsBuilder::default();
        let value = row("milk");
        let value: Option<RowValue<'_>> = Some(&value);
        assert_eq!(builder.add(&document, value, true), 0);
        assert_eq!(builder.add(&insert[..insert.len() - 1], value, true), 0);
        assert_eq!(builder.add(b"not automerge", value, true), 0);
        assert!(builder.finish(&compressor()).is_none());
    }
}

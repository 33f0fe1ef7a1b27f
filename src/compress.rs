//! The column compression engine: turns one column of a sync batch into bytes,
//! picking the encoding by the kind of data, and back.
//!
//! - [`Compressor`]: encodes columns at a [`Level`] and counts what it did in a
//!   shared [`CompressionStats`]. `encode_values` takes the values of one schema
//!   field (nulls anywhere), `encode_blobs` opaque byte strings (automerge change
//!   chunks, saved documents), `encode_u64s` sequence numbers and flags,
//!   `encode_strs` record ids.
//! - [`decode_values`], [`decode_blobs`], [`decode_u64s`], [`decode_strs`]: the
//!   inverses. They need no level: every column says how it is encoded. They
//!   return a [`ColumnError`] for any malformed input and never panic. They
//!   check what the input claims before allocating for it: a payload justifies
//!   at most 8 entries per byte (one presence bit each), and an LZ4 frame at most
//!   [`decompressed_limit`] bytes of payload (min(256 MiB, 255 × its length)).
//!   The result holds `count` entries, so callers bound `count` (the batch size).
//! - [`CompressionStats`] and its [`StatsSnapshot`]: columns, plain bytes in,
//!   encoded bytes out and encoding time per [`DataKind`].
//! - [`EncodingByte`] and [`ColumnEncoding`]: the first byte of a column, parsed,
//!   for tests, debugging and explain output.
//!
//! # Format
//!
//! An encoded column is a `Vec<u8>`: one encoding byte, then the payload. Bit 7
//! of the byte says the payload is an LZ4 frame; bit 6 says every entry is
//! present so the payload has no presence bitmap; bits 0–5 name the layout:
//! `plain` (a MessagePack array, the uncompressed encoding), `delta_varint`,
//! `dictionary`, `strings`, `float64`, `booleans`, `blobs`, `uuids`.
//! `docs/COMPRESSION.md` describes every byte, for client developers with a
//! MessagePack and an LZ4 frame library.
//!
//! ```
//! use std::sync::Arc;
//!
//! use mobilesyncdb::compress::{self, ColumnEncoding, CompressionStats, Compressor};
//! use mobilesyncdb::compress::{EncodingByte, Level};
//! use mobilesyncdb::crdt::Value;
//! use mobilesyncdb::schema::FieldType;
//!
//! let stats = Arc::new(CompressionStats::new());
//! let compressor = Compressor::new(Level::Balanced, stats.clone());
//! // Due dates a minute apart, some unset.
//! let due: Vec<Value> = (0..100)
//!     .map(|i| match i % 7 {
//!         0 => Value::Null,
//!         _ => Value::Timestamp(1_704_067_200_000 + i * 60_000),
//!     })
//!     .collect();
//! let column = compressor.encode_values(FieldType::Timestamp, &due);
//! assert_eq!(EncodingByte::of(&column)?.encoding, ColumnEncoding::DeltaVarint);
//! assert_eq!(compress::decode_values(FieldType::Timestamp, due.len(), &column)?, due);
//! assert!(stats.snapshot().total.saving_pct() > 50.0);
//! # Ok::<(), compress::ColumnError>(())
//! ```
//!
//! # Levels
//!
//! - [`Level::Off`]: `plain` for values, ids and sequence numbers, `blobs`
//!   without LZ4 for byte strings.
//! - [`Level::Fast`]: the typed layout for the data (zigzag delta varints for
//!   integers, timestamps, counters and sequence numbers; length-prefixed
//!   strings; doubles; bitmaps; blobs), LZ4 on strings, JSON and blobs whose
//!   payload exceeds 64 bytes when it saves at least 5%.
//! - [`Level::Balanced`], the default: `Fast`, plus `uuids` (16 bytes each) for
//!   strings that are all canonical UUIDs, a dictionary for strings when an
//!   evenly spread sample of 64 has at most half distinct values (kept when the
//!   column has at most N/2 distinct strings), and LZ4 for numeric layouts too.
//!   It detects data LZ4 cannot shrink: blobs starting with a compressed
//!   format's magic number, and payloads over 4 KiB whose first 4 KiB LZ4
//!   shrinks by less than 5%, are stored as they are (blobs then count as
//!   [`DataKind::Compressed`]).
//! - [`Level::Max`]: every layout that can hold the column, each with and
//!   without LZ4; the smallest wins.

mod decode;
mod encode;
mod error;
mod lz4;
mod msgpack;
mod stats;
mod typed;
mod wire;

#[cfg(test)]
mod measure;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Instant;

use mobilesyncdb_crdt::Value;
use serde::{Deserialize, Serialize};

use crate::schema::FieldType;
use encode::{Built, Sealed, ValueColumn};

pub use decode::{decode_blobs, decode_strs, decode_u64s, decode_values};
pub use error::ColumnError;
pub use lz4::{MAX_DECOMPRESSED, MAX_RATIO, decompressed_limit};
pub(crate) use lz4::{compress_frame, decompress_frame_within};
pub use stats::{CompressionStats, DataKind, KindStats, StatsSnapshot};
pub use wire::{ColumnEncoding, EncodingByte};

/// How hard the compressor works; see the module documentation. Ordered from
/// least to most work.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Off,
    Fast,
    #[default]
    Balanced,
    Max,
}

impl Level {
    /// Every level, from least to most work.
    pub const ALL: [Level; 4] = [Level::Off, Level::Fast, Level::Balanced, Level::Max];

    fn name(self) -> &'static str {
        match self {
            Level::Off => "off",
            Level::Fast => "fast",
            Level::Balanced => "balanced",
            Level::Max => "max",
        }
    }
}

impl std::fmt::Display for Level {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.name())
    }
}

/// A compression level name that is not one of `off`, `fast`, `balanced`, `max`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown compression level {input:?}: use off, fast, balanced or max")]
pub struct ParseLevelError {
    pub input: String,
}

impl std::str::FromStr for Level {
    type Err = ParseLevelError;

    fn from_str(input: &str) -> Result<Level, ParseLevelError> {
        Level::ALL
            .into_iter()
            .find(|level| level.name() == input)
            .ok_or_else(|| ParseLevelError {
                input: input.to_owned(),
            })
    }
}

/// Encodes columns at one level and counts them in shared statistics. Cheap to
/// clone; encoding is CPU work, so async callers should run it off the async
/// threads (`spawn_blocking`) for large batches.
///
/// Every `encode_*` method returns the encoded column: the encoding byte first,
/// then the payload (see the module documentation).
///
/// # Panics
///
/// Wherever the plain encoding is built (at [`Level::Off`] and [`Level::Max`],
/// and for JSON columns or values that do not fit the field type at every
/// level), a string, byte string, list or map of 4 GiB or more, or a column of
/// 2^32 entries or more, panics: MessagePack cannot express its length. Sync
/// batches are bounded far below that.
#[derive(Clone, Debug)]
pub struct Compressor {
    level: Level,
    stats: Arc<CompressionStats>,
}

impl Compressor {
    /// A compressor at `level` that counts into `stats`.
    pub fn new(level: Level, stats: Arc<CompressionStats>) -> Compressor {
        Compressor { level, stats }
    }

    /// The level this compressor works at.
    pub fn level(&self) -> Level {
        self.level
    }

    /// The statistics this compressor counts into.
    pub fn stats(&self) -> &Arc<CompressionStats> {
        &self.stats
    }

    /// Encodes `values`, one per record, of a field of type `kind`. Nulls may
    /// appear anywhere. A value that does not fit `kind` (an integer in a string
    /// column) makes the column `plain`, which holds any value.
    pub fn encode_values(&self, kind: FieldType, values: &[Value]) -> Vec<u8> {
        let started = Instant::now();
        let column = ValueColumn::scan(kind, values);
        let sealed = match self.level {
            Level::Off => column.plain().raw(),
            Level::Max => {
                encode::smallest(column.candidates().iter().filter_map(|e| column.build(*e)))
            }
            level => column.typed(level).seal(level),
        };
        let kind = match DataKind::of_field(kind) {
            DataKind::Binary if sealed.incompressible => DataKind::Compressed,
            other => other,
        };
        self.count(kind, column.plain_bytes, sealed, started)
    }

    /// Encodes opaque byte strings (automerge change chunks, saved documents),
    /// one per record; empty ones are allowed.
    pub fn encode_blobs(&self, blobs: &[&[u8]]) -> Vec<u8> {
        let started = Instant::now();
        let built = encode::blobs(None, blobs);
        let sealed = match self.level {
            Level::Off => built.raw(),
            Level::Max => encode::smallest([built]),
            level => built.seal(level),
        };
        let kind = if sealed.incompressible {
            DataKind::Compressed
        } else {
            DataKind::Binary
        };
        self.count(kind, encode::blobs_plain_size(blobs), sealed, started)
    }

    /// Encodes unsigned integers (sequence numbers, flags), one per record.
    pub fn encode_u64s(&self, values: &[u64]) -> Vec<u8> {
        let started = Instant::now();
        let build = |encoding| encode::u64s(encoding, values);
        let sealed = match self.level {
            Level::Off => build(ColumnEncoding::Plain).raw(),
            Level::Max => {
                encode::smallest([ColumnEncoding::Plain, ColumnEncoding::DeltaVarint].map(build))
            }
            level => build(ColumnEncoding::DeltaVarint).seal(level),
        };
        self.count(
            DataKind::Integers,
            encode::u64s_plain_size(values),
            sealed,
            started,
        )
    }

    /// Encodes strings that are never null (record ids), one per record.
    pub fn encode_strs(&self, values: &[&str]) -> Vec<u8> {
        let started = Instant::now();
        let build = |encoding| encode::strs(encoding, values);
        let sealed = match self.level {
            Level::Off => build(ColumnEncoding::Plain).map(Built::raw),
            Level::Max => Some(encode::smallest(
                [
                    ColumnEncoding::Plain,
                    ColumnEncoding::Strings,
                    ColumnEncoding::Dictionary,
                    ColumnEncoding::Uuids,
                ]
                .into_iter()
                .filter_map(build),
            )),
            level => Some(encode::text_for_level(level, None, values).seal(level)),
        }
        .expect("plain and strings always build");
        self.count(
            DataKind::Text,
            encode::strs_plain_size(values),
            sealed,
            started,
        )
    }

    fn count(
        &self,
        kind: DataKind,
        plain_bytes: usize,
        sealed: Sealed,
        started: Instant,
    ) -> Vec<u8> {
        self.stats
            .record(kind, plain_bytes, sealed.bytes.len(), started.elapsed());
        sealed.bytes
    }
}

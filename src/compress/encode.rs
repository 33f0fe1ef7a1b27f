//! Building columns: one [`Built`] column per candidate encoding, then the LZ4
//! step the level asks for ([`Built::seal`]) or, at `Max`, the smallest of every
//! candidate with and without LZ4 ([`smallest`]).

use mobilesyncdb_crdt::Value;

use super::Level;
use super::lz4::{self, MIN_PAYLOAD, SAMPLE_BYTES};
use super::msgpack::{self, IntMeaning};
use super::typed::{self, Dictionary};
use super::wire::{ColumnEncoding, EncodingByte, put_bitmap};
use crate::schema::FieldType;

/// What a payload holds, which decides how the LZ4 step treats it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Content {
    /// Strings, dictionaries and MessagePack: LZ4 whenever it pays.
    Text,
    /// Varints, doubles, bitmaps and packed UUIDs: LZ4 only from `Balanced` on,
    /// as it pays less often (though it shrinks runs of equal flags a lot).
    Numbers,
    /// Byte strings; `magic` when they start with a compressed format's magic
    /// number, which `Balanced` trusts without a sample.
    Blobs { magic: bool },
}

/// An encoded column without LZ4: its encoding byte, then the payload.
#[derive(Debug)]
pub(super) struct Built {
    bytes: Vec<u8>,
    header: EncodingByte,
    content: Content,
    /// Where the compressibility sample starts in `bytes`.
    sample_from: usize,
}

/// A finished column, and whether LZ4 was weighed and found not to pay.
#[derive(Debug)]
pub(super) struct Sealed {
    pub(super) bytes: Vec<u8>,
    pub(super) incompressible: bool,
}

enum Prospect {
    Skip,
    Incompressible,
    Try,
}

impl Built {
    /// Starts a column: the encoding byte, then the presence bitmap unless every
    /// entry is present (`presence` is `None`); `body` writes the rest.
    fn new(
        encoding: ColumnEncoding,
        presence: Option<&[u8]>,
        content: Content,
        capacity: usize,
        body: impl FnOnce(&mut Vec<u8>),
    ) -> Built {
        // `plain` has no bitmap, so no flag saying the bitmap is left out.
        let all_present = presence.is_none() && encoding != ColumnEncoding::Plain;
        let header = EncodingByte::new(encoding).with_all_present(all_present);
        let mut bytes = Vec::with_capacity(1 + presence.map_or(0, <[u8]>::len) + capacity);
        bytes.push(header.to_byte());
        bytes.extend_from_slice(presence.unwrap_or_default());
        let sample_from = bytes.len();
        body(&mut bytes);
        Built {
            bytes,
            header,
            content,
            sample_from,
        }
    }

    fn plain(capacity: usize, body: impl FnOnce(&mut Vec<u8>)) -> Built {
        Built::new(ColumnEncoding::Plain, None, Content::Text, capacity, body)
    }

    fn payload_len(&self) -> usize {
        self.bytes.len() - 1
    }

    fn framed(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.payload_len() / 2 + 32);
        out.push(self.header.with_lz4().to_byte());
        lz4::compress_frame(out, &self.bytes[1..])
    }

    /// The column as built, without LZ4.
    pub(super) fn raw(self) -> Sealed {
        Sealed {
            bytes: self.bytes,
            incompressible: false,
        }
    }

    /// Applies the LZ4 policy of `level` (`Fast` or `Balanced`; see the module
    /// documentation of `compress`).
    pub(super) fn seal(self, level: Level) -> Sealed {
        match self.prospect(level) {
            Prospect::Skip => self.raw(),
            Prospect::Incompressible => Sealed {
                bytes: self.bytes,
                incompressible: true,
            },
            Prospect::Try => {
                let framed = self.framed();
                if lz4::pays(framed.len(), self.bytes.len()) {
                    Sealed {
                        bytes: framed,
                        incompressible: false,
                    }
                } else {
                    Sealed {
                        bytes: self.bytes,
                        incompressible: true,
                    }
                }
            }
        }
    }

    fn prospect(&self, level: Level) -> Prospect {
        let len = self.payload_len();
        let small = len <= MIN_PAYLOAD;
        match (level, self.content) {
            (Level::Off, _) | (Level::Fast, Content::Numbers) => Prospect::Skip,
            _ if small => Prospect::Skip,
            (Level::Balanced, Content::Blobs { magic: true }) => Prospect::Incompressible,
            (Level::Balanced, _)
                if len > SAMPLE_BYTES
                    && !lz4::sample_compresses(&self.bytes[self.sample_from..]) =>
            {
                Prospect::Incompressible
            }
            _ => Prospect::Try,
        }
    }
}

/// The smallest of the candidates, each with and without LZ4 (the `Max` level).
pub(super) fn smallest(candidates: impl IntoIterator<Item = Built>) -> Sealed {
    let mut best: Option<Sealed> = None;
    for built in candidates {
        let framed = built.framed();
        // Counted as incompressible when LZ4 saves under 5%, even if those few
        // bytes make the framed column the smaller one.
        let incompressible =
            built.payload_len() > MIN_PAYLOAD && !lz4::pays(framed.len(), built.bytes.len());
        let bytes = if framed.len() < built.bytes.len() {
            framed
        } else {
            built.bytes
        };
        let sealed = Sealed {
            bytes,
            incompressible,
        };
        if best
            .as_ref()
            .is_none_or(|best| sealed.bytes.len() < best.bytes.len())
        {
            best = Some(sealed);
        }
    }
    best.expect("every column has at least the plain candidate")
}

// Builders shared by value columns and the never-null slice columns.

pub(super) fn deltas(
    presence: Option<&[u8]>,
    count: usize,
    ints: impl Iterator<Item = i64>,
) -> Built {
    let capacity = count * 3 + 8;
    Built::new(
        ColumnEncoding::DeltaVarint,
        presence,
        Content::Numbers,
        capacity,
        |out| {
            typed::put_deltas(out, ints);
        },
    )
}

/// The `strings`, `dictionary` or `uuids` column of the present strings; `None`
/// for a dictionary that would exceed `dictionary_limit` entries, or `uuids` when
/// some string is not a canonical UUID.
pub(super) fn text(
    encoding: ColumnEncoding,
    presence: Option<&[u8]>,
    strings: &[&str],
    dictionary_limit: usize,
) -> Option<Built> {
    let bytes: usize = strings.iter().map(|text| text.len()).sum();
    let capacity = bytes + strings.len() * 2;
    match encoding {
        ColumnEncoding::Dictionary => {
            let dictionary = Dictionary::build(strings, dictionary_limit)?;
            Some(Built::new(
                encoding,
                presence,
                Content::Text,
                capacity / 2,
                |out| {
                    dictionary.put(out);
                },
            ))
        }
        ColumnEncoding::Uuids => uuids(presence, strings),
        _ => Some(Built::new(
            encoding,
            presence,
            Content::Text,
            capacity,
            |out| {
                typed::put_strings(out, strings);
            },
        )),
    }
}

fn uuids(presence: Option<&[u8]>, strings: &[&str]) -> Option<Built> {
    if strings.first().is_none_or(|text| text.len() != 36) {
        return None;
    }
    let upper = typed::uuid_upper_case(strings);
    let capacity = 1 + strings.len() * 16;
    let mut packed = false;
    let built = Built::new(
        ColumnEncoding::Uuids,
        presence,
        Content::Numbers,
        capacity,
        |out| {
            packed = typed::put_uuids(out, strings, upper);
        },
    );
    packed.then_some(built)
}

/// `Strings`, or at `Balanced` `Uuids` when every string is a canonical UUID and
/// `Dictionary` when the strings repeat.
pub(super) fn text_for_level(level: Level, presence: Option<&[u8]>, strings: &[&str]) -> Built {
    let detected = (level == Level::Balanced)
        .then(|| {
            text(ColumnEncoding::Uuids, presence, strings, 0).or_else(|| {
                let limit = strings.len() / 2;
                typed::repeats(strings)
                    .then(|| text(ColumnEncoding::Dictionary, presence, strings, limit))
                    .flatten()
            })
        })
        .flatten();
    detected.unwrap_or_else(|| {
        text(ColumnEncoding::Strings, presence, strings, 0).expect("strings always build")
    })
}

pub(super) fn blobs(presence: Option<&[u8]>, blobs: &[&[u8]]) -> Built {
    let mut non_empty = blobs
        .iter()
        .filter(|blob| !blob.is_empty())
        .take(4)
        .peekable();
    let magic = non_empty.peek().is_some() && non_empty.all(|blob| lz4::looks_compressed(blob));
    let capacity = blobs.iter().map(|blob| blob.len() + 2).sum();
    let mut data_start = 0;
    let mut built = Built::new(
        ColumnEncoding::Blobs,
        presence,
        Content::Blobs { magic },
        capacity,
        |out| data_start = typed::put_blobs(out, blobs),
    );
    built.sample_from = data_start;
    built
}

// Value columns.

/// A column of values looked over once: whether every value fits the field type,
/// the presence bitmap when some are null, and the plain encoding's length.
#[derive(Debug)]
pub(super) struct ValueColumn<'v> {
    kind: FieldType,
    values: &'v [Value],
    presence: Option<Vec<u8>>,
    well_typed: bool,
    pub(super) plain_bytes: usize,
}

impl<'v> ValueColumn<'v> {
    pub(super) fn scan(kind: FieldType, values: &'v [Value]) -> ValueColumn<'v> {
        let ints = IntMeaning::of(kind);
        let mut plain_bytes = msgpack::array_header_size(values.len());
        let mut nulls = 0;
        let mut well_typed = true;
        for value in values {
            plain_bytes += msgpack::value_size(value, ints);
            nulls += usize::from(value.is_null());
            well_typed &= kind.accepts(value);
        }
        let presence = (nulls > 0).then(|| {
            let mut bitmap = Vec::with_capacity(values.len().div_ceil(8));
            put_bitmap(&mut bitmap, values.iter().map(|value| !value.is_null()));
            bitmap
        });
        ValueColumn {
            kind,
            values,
            presence,
            well_typed,
            plain_bytes,
        }
    }

    /// The encodings that can hold this column, plain first.
    pub(super) fn candidates(&self) -> &'static [ColumnEncoding] {
        use ColumnEncoding::*;
        if !self.well_typed {
            return &[Plain];
        }
        match self.kind {
            FieldType::Integer | FieldType::Timestamp | FieldType::Counter => &[Plain, DeltaVarint],
            FieldType::String => &[Plain, Strings, Dictionary, Uuids],
            FieldType::Float => &[Plain, Float64],
            FieldType::Boolean => &[Plain, Booleans],
            FieldType::Bytes => &[Plain, Blobs],
            FieldType::Json => &[Plain],
        }
    }

    /// The column in the typed encoding `Fast` and `Balanced` use.
    pub(super) fn typed(&self, level: Level) -> Built {
        match self.candidates() {
            [_, ColumnEncoding::Strings, ..] => {
                text_for_level(level, self.presence.as_deref(), &self.strings())
            }
            [_, typed, ..] => self
                .build(*typed)
                .expect("the typed encoding of the column's own type always builds"),
            _ => self.plain(),
        }
    }

    /// The column in `encoding`, one of [`ValueColumn::candidates`]; `None` when
    /// this column's strings are not all UUIDs.
    pub(super) fn build(&self, encoding: ColumnEncoding) -> Option<Built> {
        let presence = self.presence.as_deref();
        let values = self.values.iter();
        Some(match encoding {
            ColumnEncoding::DeltaVarint => {
                deltas(presence, values.len(), values.filter_map(int_of))
            }
            ColumnEncoding::Strings | ColumnEncoding::Dictionary | ColumnEncoding::Uuids => {
                return text(encoding, presence, &self.strings(), usize::MAX);
            }
            ColumnEncoding::Float64 => {
                let floats = values.filter_map(|value| match value {
                    Value::Float(x) => Some(*x),
                    _ => None,
                });
                Built::new(
                    encoding,
                    presence,
                    Content::Numbers,
                    self.values.len() * 8,
                    |out| {
                        typed::put_floats(out, floats);
                    },
                )
            }
            ColumnEncoding::Booleans => {
                let flags = values.filter_map(|value| match value {
                    Value::Bool(flag) => Some(*flag),
                    _ => None,
                });
                Built::new(
                    encoding,
                    presence,
                    Content::Numbers,
                    self.values.len() / 8 + 1,
                    |out| {
                        typed::put_booleans(out, flags);
                    },
                )
            }
            ColumnEncoding::Blobs => blobs(presence, &self.blobs()),
            ColumnEncoding::Plain => self.plain(),
        })
    }

    pub(super) fn plain(&self) -> Built {
        let ints = IntMeaning::of(self.kind);
        Built::plain(self.plain_bytes, |out| {
            msgpack::write_array_header(out, self.values.len());
            for value in self.values {
                msgpack::write_value(out, value, ints);
            }
        })
    }

    fn strings(&self) -> Vec<&'v str> {
        let strings = self.values.iter().filter_map(|value| match value {
            Value::Str(text) => Some(&**text),
            _ => None,
        });
        strings.collect()
    }

    fn blobs(&self) -> Vec<&'v [u8]> {
        let blobs = self.values.iter().filter_map(|value| match value {
            Value::Bytes(bytes) => Some(&**bytes),
            _ => None,
        });
        blobs.collect()
    }
}

fn int_of(value: &Value) -> Option<i64> {
    match value {
        Value::Int(n) | Value::Timestamp(n) | Value::Counter(n) => Some(*n),
        _ => None,
    }
}

// The never-null slice columns.

pub(super) fn u64s(encoding: ColumnEncoding, values: &[u64]) -> Built {
    match encoding {
        ColumnEncoding::Plain => Built::plain(values.len() * 9 + 5, |out| {
            msgpack::write_array_header(out, values.len());
            for n in values {
                msgpack::write_uint(out, *n);
            }
        }),
        _ => deltas(None, values.len(), values.iter().map(|n| *n as i64)),
    }
}

pub(super) fn strs(encoding: ColumnEncoding, values: &[&str]) -> Option<Built> {
    match encoding {
        ColumnEncoding::Plain => Some(Built::plain(strs_plain_size(values), |out| {
            msgpack::write_array_header(out, values.len());
            for text in values {
                msgpack::write_str(out, text);
            }
        })),
        _ => text(encoding, None, values, usize::MAX),
    }
}

pub(super) fn u64s_plain_size(values: &[u64]) -> usize {
    let items: usize = values.iter().map(|n| msgpack::uint_size(*n)).sum();
    msgpack::array_header_size(values.len()) + items
}

pub(super) fn strs_plain_size(values: &[&str]) -> usize {
    let items: usize = values
        .iter()
        .map(|text| msgpack::str_size(text.len()))
        .sum();
    msgpack::array_header_size(values.len()) + items
}

pub(super) fn blobs_plain_size(values: &[&[u8]]) -> usize {
    let items: usize = values
        .iter()
        .map(|blob| msgpack::bin_size(blob.len()))
        .sum();
    msgpack::array_header_size(values.len()) + items
}

//! The pieces every encoding shares: the encoding byte, LEB128 varints, zigzag,
//! presence bitmaps, and [`Cursor`], a reader that turns every overrun into an
//! error instead of a panic.

use serde::Serialize;

use super::ColumnError;

/// Bit 7 of the encoding byte: the payload is an LZ4 frame.
pub(super) const LZ4_FLAG: u8 = 0x80;
/// Bit 6 of the encoding byte: every entry is present, so no presence bitmap.
pub(super) const ALL_PRESENT_FLAG: u8 = 0x40;
const ID_MASK: u8 = 0x3f;

/// The layout of a column's payload (the low six bits of the encoding byte).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ColumnEncoding {
    /// A MessagePack array of the values: the uncompressed encoding.
    Plain = 0,
    /// Zigzag deltas between present integers as LEB128 varints.
    DeltaVarint = 1,
    /// Distinct strings once, then one varint index per present entry.
    Dictionary = 2,
    /// Length-prefixed UTF-8 strings.
    Strings = 3,
    /// Little-endian IEEE-754 doubles.
    Float64 = 4,
    /// A bitmap of the present booleans.
    Booleans = 5,
    /// The lengths of the byte strings, then their bytes.
    Blobs = 6,
    /// Canonical UUID strings as their 16 bytes.
    Uuids = 7,
}

impl ColumnEncoding {
    fn from_id(id: u8) -> Option<ColumnEncoding> {
        Some(match id {
            0 => ColumnEncoding::Plain,
            1 => ColumnEncoding::DeltaVarint,
            2 => ColumnEncoding::Dictionary,
            3 => ColumnEncoding::Strings,
            4 => ColumnEncoding::Float64,
            5 => ColumnEncoding::Booleans,
            6 => ColumnEncoding::Blobs,
            7 => ColumnEncoding::Uuids,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            ColumnEncoding::Plain => "plain",
            ColumnEncoding::DeltaVarint => "delta_varint",
            ColumnEncoding::Dictionary => "dictionary",
            ColumnEncoding::Strings => "strings",
            ColumnEncoding::Float64 => "float64",
            ColumnEncoding::Booleans => "booleans",
            ColumnEncoding::Blobs => "blobs",
            ColumnEncoding::Uuids => "uuids",
        }
    }
}

impl std::fmt::Display for ColumnEncoding {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.name())
    }
}

/// The first byte of an encoded column, parsed: the payload's layout, whether it
/// omits the presence bitmap because no entry is null, and whether it is wrapped
/// in an LZ4 frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EncodingByte {
    pub encoding: ColumnEncoding,
    pub all_present: bool,
    pub lz4: bool,
}

impl EncodingByte {
    /// A byte for `encoding`, with a presence bitmap and without LZ4.
    pub fn new(encoding: ColumnEncoding) -> EncodingByte {
        EncodingByte {
            encoding,
            all_present: false,
            lz4: false,
        }
    }

    /// Parses an encoding byte.
    ///
    /// # Errors
    ///
    /// [`ColumnError::UnknownEncoding`] for an unassigned id, and for the
    /// all-present flag on `plain`, which has no bitmap to omit.
    pub fn parse(byte: u8) -> Result<EncodingByte, ColumnError> {
        let encoding =
            ColumnEncoding::from_id(byte & ID_MASK).ok_or(ColumnError::UnknownEncoding(byte))?;
        let all_present = byte & ALL_PRESENT_FLAG != 0;
        if all_present && encoding == ColumnEncoding::Plain {
            return Err(ColumnError::UnknownEncoding(byte));
        }
        Ok(EncodingByte {
            encoding,
            all_present,
            lz4: byte & LZ4_FLAG != 0,
        })
    }

    /// The encoding byte of an encoded column.
    ///
    /// # Errors
    ///
    /// [`ColumnError::Empty`] for an empty slice, or as [`EncodingByte::parse`].
    pub fn of(column: &[u8]) -> Result<EncodingByte, ColumnError> {
        EncodingByte::parse(*column.first().ok_or(ColumnError::Empty)?)
    }

    /// The byte itself.
    pub fn to_byte(self) -> u8 {
        let mut byte = self.encoding as u8;
        if self.all_present {
            byte |= ALL_PRESENT_FLAG;
        }
        if self.lz4 {
            byte |= LZ4_FLAG;
        }
        byte
    }

    pub(super) fn with_all_present(self, all_present: bool) -> EncodingByte {
        EncodingByte {
            all_present,
            ..self
        }
    }

    pub(super) fn with_lz4(self) -> EncodingByte {
        EncodingByte { lz4: true, ..self }
    }
}

/// Appends `value` as an unsigned LEB128 varint.
pub(super) fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push(value as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Maps signed to unsigned so that small magnitudes of either sign stay small.
pub(super) fn zigzag(value: i64) -> u64 {
    ((value << 1) ^ (value >> 63)) as u64
}

pub(super) fn unzigzag(value: u64) -> i64 {
    (value >> 1) as i64 ^ -((value & 1) as i64)
}

/// Appends one bit per item, least significant bit first, padding the last byte
/// with zeros.
pub(super) fn put_bitmap(out: &mut Vec<u8>, bits: impl Iterator<Item = bool>) {
    let mut byte = 0u8;
    let mut filled = 0;
    for bit in bits {
        byte |= u8::from(bit) << filled;
        filled += 1;
        if filled == 8 {
            out.push(byte);
            byte = 0;
            filled = 0;
        }
    }
    if filled > 0 {
        out.push(byte);
    }
}

/// Bit `index` of a bitmap written by [`put_bitmap`]; the caller checked the length.
pub(super) fn bit(bitmap: &[u8], index: usize) -> bool {
    bitmap[index / 8] >> (index % 8) & 1 == 1
}

/// A reader over a payload. Every read checks the length first.
#[derive(Debug)]
pub(super) struct Cursor<'a> {
    bytes: &'a [u8],
}

impl<'a> Cursor<'a> {
    pub(super) fn new(bytes: &'a [u8]) -> Cursor<'a> {
        Cursor { bytes }
    }

    pub(super) fn remaining(&self) -> usize {
        self.bytes.len()
    }

    pub(super) fn take(&mut self, len: usize, what: &'static str) -> Result<&'a [u8], ColumnError> {
        if len > self.bytes.len() {
            return Err(ColumnError::Truncated { what });
        }
        let (head, tail) = self.bytes.split_at(len);
        self.bytes = tail;
        Ok(head)
    }

    pub(super) fn array<const N: usize>(
        &mut self,
        what: &'static str,
    ) -> Result<[u8; N], ColumnError> {
        let mut array = [0; N];
        array.copy_from_slice(self.take(N, what)?);
        Ok(array)
    }

    pub(super) fn byte(&mut self, what: &'static str) -> Result<u8, ColumnError> {
        let [byte] = self.array::<1>(what)?;
        Ok(byte)
    }

    /// Reads an unsigned LEB128 varint of at most ten bytes.
    pub(super) fn varint(&mut self, what: &'static str) -> Result<u64, ColumnError> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.byte(what)?;
            if shift == 63 && byte > 1 {
                return Err(ColumnError::OutOfRange {
                    what: "varint longer than 64 bits",
                });
            }
            value |= u64::from(byte & 0x7f) << shift;
            if byte < 0x80 {
                return Ok(value);
            }
        }
        Err(ColumnError::OutOfRange {
            what: "varint longer than 64 bits",
        })
    }

    /// Reads a varint length and checks that the payload still holds that many bytes.
    pub(super) fn length(&mut self, what: &'static str) -> Result<usize, ColumnError> {
        let length = self.varint(what)?;
        match usize::try_from(length) {
            Ok(length) if length <= self.bytes.len() => Ok(length),
            _ => Err(ColumnError::Truncated { what }),
        }
    }

    /// Checks that `entries` entries of at least `bits_each` bits fit in what is
    /// left, before anything sized by `entries` is allocated.
    pub(super) fn justify(
        &self,
        entries: usize,
        bits_each: usize,
        what: &'static str,
    ) -> Result<(), ColumnError> {
        let limit = self.bytes.len().saturating_mul(8) / bits_each.max(1);
        if entries > limit {
            return Err(ColumnError::AllocationTooLarge {
                what,
                claimed: entries as u64,
                limit: limit as u64,
            });
        }
        Ok(())
    }

    /// Ends the read: every byte must have been used.
    pub(super) fn finish(self) -> Result<(), ColumnError> {
        match self.bytes.len() {
            0 => Ok(()),
            extra => Err(ColumnError::TrailingBytes { extra }),
        }
    }
}

/// Which entries of a column are present (not null).
#[derive(Debug)]
pub(super) enum Presence<'a> {
    All,
    Bitmap(&'a [u8]),
}

impl<'a> Presence<'a> {
    /// Reads the bitmap of a `count`-entry column, or none when the encoding byte
    /// says every entry is present.
    pub(super) fn read(
        cursor: &mut Cursor<'a>,
        all_present: bool,
        count: usize,
    ) -> Result<Presence<'a>, ColumnError> {
        if all_present {
            Ok(Presence::All)
        } else {
            Ok(Presence::Bitmap(
                cursor.take(count.div_ceil(8), "the presence bitmap")?,
            ))
        }
    }

    pub(super) fn is_present(&self, index: usize) -> bool {
        match self {
            Presence::All => true,
            Presence::Bitmap(bitmap) => bit(bitmap, index),
        }
    }

    /// The number of present entries among the first `count`; bits past `count`
    /// are padding and ignored.
    pub(super) fn present_count(&self, count: usize) -> usize {
        let Presence::Bitmap(bitmap) = self else {
            return count;
        };
        let whole = count / 8;
        let mut total: usize = bitmap[..whole]
            .iter()
            .map(|byte| byte.count_ones() as usize)
            .sum();
        if !count.is_multiple_of(8) {
            let mask = (1u8 << (count % 8)) - 1;
            total += (bitmap[whole] & mask).count_ones() as usize;
        }
        total
    }

    /// Builds the `count` entries: `present` reads each present one, `absent`
    /// stands for each null one (or refuses it).
    pub(super) fn collect<T>(
        &self,
        count: usize,
        mut present: impl FnMut(usize) -> Result<T, ColumnError>,
        absent: impl Fn(usize) -> Result<T, ColumnError>,
    ) -> Result<Vec<T>, ColumnError> {
        let mut entries = Vec::with_capacity(count);
        for index in 0..count {
            entries.push(if self.is_present(index) {
                present(index)?
            } else {
                absent(index)?
            });
        }
        Ok(entries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip_at_the_edges() {
        for value in [0, 1, 127, 128, 16_383, 16_384, u64::MAX / 2, u64::MAX] {
            let mut out = Vec::new();
            put_varint(&mut out, value);
            let mut cursor = Cursor::new(&out);
            assert_eq!(cursor.varint("test").expect("valid"), value);
            cursor.finish().expect("all used");
        }
    }

    #[test]
    fn overlong_varints_are_refused() {
        let eleven = [0xff; 11];
        assert!(Cursor::new(&eleven).varint("test").is_err());
        let too_big = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02];
        assert!(Cursor::new(&too_big).varint("test").is_err());
    }

    #[test]
    fn zigzag_keeps_small_magnitudes_small() {
        assert_eq!(zigzag(0), 0);
        assert_eq!(zigzag(-1), 1);
        assert_eq!(zigzag(1), 2);
        for value in [i64::MIN, -5, 0, 5, i64::MAX] {
            assert_eq!(unzigzag(zigzag(value)), value);
        }
    }

    #[test]
    fn encoding_bytes_round_trip_and_unknown_ids_are_refused() {
        for byte in 0..=255u8 {
            if let Ok(parsed) = EncodingByte::parse(byte) {
                assert_eq!(parsed.to_byte(), byte);
            }
        }
        assert!(EncodingByte::parse(0x08).is_err());
        assert!(EncodingByte::parse(ALL_PRESENT_FLAG).is_err());
        assert!(EncodingByte::of(&[]).is_err());
    }

    #[test]
    fn present_count_ignores_padding_bits() {
        let presence = Presence::Bitmap(&[0xff, 0xff]);
        assert_eq!(presence.present_count(10), 10);
        assert_eq!(Presence::Bitmap(&[0b0000_0101]).present_count(3), 2);
    }
}

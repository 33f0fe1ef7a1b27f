//! The typed payloads: delta varints, dictionaries, strings, doubles, booleans and
//! blobs. Writers take the present entries only (the caller writes the presence
//! bitmap); readers take the parsed presence and give back every entry, asking
//! `absent` what a null stands for (a `Value::Null`, or an error in a column
//! that cannot hold nulls).

use hashbrown::HashMap;

use super::ColumnError;
use super::wire::{Cursor, Presence, bit, put_bitmap, put_varint, unzigzag, zigzag};

/// What a reader makes of a null entry.
pub(super) type Absent<'f, T> = &'f dyn Fn(usize) -> Result<T, ColumnError>;

/// Appends zigzag deltas between consecutive integers, starting from 0. The
/// subtraction wraps, so any pair of `i64` (or `u64` seen as `i64`) round-trips.
pub(super) fn put_deltas(out: &mut Vec<u8>, ints: impl Iterator<Item = i64>) {
    let mut previous = 0i64;
    for n in ints {
        put_varint(out, zigzag(n.wrapping_sub(previous)));
        previous = n;
    }
}

pub(super) fn read_deltas<T>(
    cursor: &mut Cursor<'_>,
    all_present: bool,
    count: usize,
    make: impl Fn(i64) -> T,
    absent: Absent<'_, T>,
) -> Result<Vec<T>, ColumnError> {
    let presence = Presence::read(cursor, all_present, count)?;
    cursor.justify(presence.present_count(count), 8, "delta varints")?;
    let mut previous = 0i64;
    presence.collect(
        count,
        |_| {
            previous = previous.wrapping_add(unzigzag(cursor.varint("a delta varint")?));
            Ok(make(previous))
        },
        absent,
    )
}

/// Appends each string as a varint length and its UTF-8 bytes.
pub(super) fn put_strings(out: &mut Vec<u8>, strings: &[&str]) {
    for text in strings {
        put_varint(out, text.len() as u64);
        out.extend_from_slice(text.as_bytes());
    }
}

pub(super) fn read_strings<T>(
    cursor: &mut Cursor<'_>,
    all_present: bool,
    count: usize,
    make: impl Fn(&str) -> T,
    absent: Absent<'_, T>,
) -> Result<Vec<T>, ColumnError> {
    let presence = Presence::read(cursor, all_present, count)?;
    cursor.justify(presence.present_count(count), 8, "strings")?;
    presence.collect(
        count,
        |entry| {
            let len = cursor.length("a string")?;
            let text = std::str::from_utf8(cursor.take(len, "a string")?)
                .map_err(|_| ColumnError::InvalidUtf8 { entry })?;
            Ok(make(text))
        },
        absent,
    )
}

/// Whether a column of strings looks repetitive enough for a dictionary: at most
/// half the strings of an evenly spread sample of 64 are distinct.
pub(super) fn repeats(strings: &[&str]) -> bool {
    const SAMPLE: usize = 64;
    if strings.len() < 4 {
        return false;
    }
    let taken = strings.len().min(SAMPLE);
    let mut sample: Vec<&str> = (0..taken)
        .map(|k| strings[k * strings.len() / taken])
        .collect();
    sample.sort_unstable();
    sample.dedup();
    sample.len() * 2 <= taken
}

/// The distinct strings of a column in order of first appearance, and each
/// entry's index among them.
#[derive(Debug)]
pub(super) struct Dictionary<'a> {
    entries: Vec<&'a str>,
    indices: Vec<u32>,
}

impl<'a> Dictionary<'a> {
    /// The dictionary of `strings`, or `None` once it would hold more than
    /// `max_entries` strings.
    pub(super) fn build(strings: &[&'a str], max_entries: usize) -> Option<Dictionary<'a>> {
        let mut positions: HashMap<&str, u32> = HashMap::with_capacity(max_entries.min(1024));
        let mut entries = Vec::new();
        let mut indices = Vec::with_capacity(strings.len());
        for text in strings {
            let next = entries.len() as u32;
            let index = *positions.entry(*text).or_insert(next);
            if index == next {
                if entries.len() == max_entries {
                    return None;
                }
                entries.push(*text);
            }
            indices.push(index);
        }
        Some(Dictionary { entries, indices })
    }

    /// Appends the entry count, the entries as strings, then the indices.
    pub(super) fn put(&self, out: &mut Vec<u8>) {
        put_varint(out, self.entries.len() as u64);
        put_strings(out, &self.entries);
        for index in &self.indices {
            put_varint(out, u64::from(*index));
        }
    }
}

pub(super) fn read_dictionary<'a, T>(
    cursor: &mut Cursor<'a>,
    all_present: bool,
    count: usize,
    make: impl Fn(&str) -> T,
    absent: Absent<'_, T>,
) -> Result<Vec<T>, ColumnError> {
    let presence = Presence::read(cursor, all_present, count)?;
    let size = cursor.varint("the dictionary size")?;
    let size = usize::try_from(size).unwrap_or(usize::MAX);
    cursor.justify(size, 8, "the dictionary")?;
    let mut entries: Vec<&'a str> = Vec::with_capacity(size);
    for entry in 0..size {
        let len = cursor.length("a dictionary string")?;
        let text = std::str::from_utf8(cursor.take(len, "a dictionary string")?)
            .map_err(|_| ColumnError::InvalidUtf8 { entry })?;
        entries.push(text);
    }
    cursor.justify(presence.present_count(count), 8, "dictionary indices")?;
    presence.collect(
        count,
        |_| {
            let index = cursor.varint("a dictionary index")?;
            let text = usize::try_from(index)
                .ok()
                .and_then(|index| entries.get(index))
                .ok_or(ColumnError::DictionaryIndex { index, size })?;
            Ok(make(text))
        },
        absent,
    )
}

/// Appends each double as 8 little-endian bytes.
pub(super) fn put_floats(out: &mut Vec<u8>, floats: impl Iterator<Item = f64>) {
    for x in floats {
        out.extend_from_slice(&x.to_bits().to_le_bytes());
    }
}

pub(super) fn read_floats<T>(
    cursor: &mut Cursor<'_>,
    all_present: bool,
    count: usize,
    make: impl Fn(f64) -> T,
    absent: Absent<'_, T>,
) -> Result<Vec<T>, ColumnError> {
    let presence = Presence::read(cursor, all_present, count)?;
    cursor.justify(presence.present_count(count), 64, "doubles")?;
    presence.collect(
        count,
        |_| Ok(make(f64::from_le_bytes(cursor.array("a double")?))),
        absent,
    )
}

/// Appends a bitmap of the present booleans.
pub(super) fn put_booleans(out: &mut Vec<u8>, flags: impl Iterator<Item = bool>) {
    put_bitmap(out, flags);
}

pub(super) fn read_booleans<T>(
    cursor: &mut Cursor<'_>,
    all_present: bool,
    count: usize,
    make: impl Fn(bool) -> T,
    absent: Absent<'_, T>,
) -> Result<Vec<T>, ColumnError> {
    let presence = Presence::read(cursor, all_present, count)?;
    let present = presence.present_count(count);
    let bitmap = cursor.take(present.div_ceil(8), "the boolean bitmap")?;
    let mut next = 0;
    presence.collect(
        count,
        |_| {
            next += 1;
            Ok(make(bit(bitmap, next - 1)))
        },
        absent,
    )
}

/// Appends the lengths of the byte strings, then their bytes. Returns where the
/// bytes start in `out`, so that the compressibility sample can skip the lengths.
pub(super) fn put_blobs(out: &mut Vec<u8>, blobs: &[&[u8]]) -> usize {
    for blob in blobs {
        put_varint(out, blob.len() as u64);
    }
    let data_start = out.len();
    for blob in blobs {
        out.extend_from_slice(blob);
    }
    data_start
}

pub(super) fn read_blobs<T>(
    cursor: &mut Cursor<'_>,
    all_present: bool,
    count: usize,
    make: impl Fn(&[u8]) -> T,
    absent: Absent<'_, T>,
) -> Result<Vec<T>, ColumnError> {
    let presence = Presence::read(cursor, all_present, count)?;
    let present = presence.present_count(count);
    cursor.justify(present, 8, "blob lengths")?;
    let mut lengths = Vec::with_capacity(present);
    let mut total = 0usize;
    for _ in 0..present {
        let len = cursor.length("a blob length")?;
        total = total.saturating_add(len);
        lengths.push(len);
    }
    if total > cursor.remaining() {
        return Err(ColumnError::Truncated { what: "the blobs" });
    }
    let mut lengths = lengths.into_iter();
    presence.collect(
        count,
        |_| {
            let len = lengths.next().unwrap_or(0);
            Ok(make(cursor.take(len, "a blob")?))
        },
        absent,
    )
}

const HEX_LOWER: &[u8; 16] = b"0123456789abcdef";
const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";
const DASHES: [usize; 4] = [8, 13, 18, 23];

/// Whether the UUIDs of a column use upper-case hex digits (Swift's
/// `uuidString`) rather than lower-case ones (most other platforms): the case of
/// the first hex letter found.
pub(super) fn uuid_upper_case(strings: &[&str]) -> bool {
    strings
        .iter()
        .find_map(|text| text.bytes().find(u8::is_ascii_alphabetic))
        .is_some_and(|letter| letter.is_ascii_uppercase())
}

/// The 16 bytes of a canonical UUID string (`8-4-4-4-12` hex digits, all of the
/// given case), or `None` for any other string.
fn pack_uuid(text: &str, upper: bool) -> Option<[u8; 16]> {
    let bytes = text.as_bytes();
    if bytes.len() != 36 {
        return None;
    }
    let mut packed = [0u8; 16];
    let mut nibble = 0;
    for (position, byte) in bytes.iter().enumerate() {
        if DASHES.contains(&position) {
            if *byte != b'-' {
                return None;
            }
            continue;
        }
        let value = match byte {
            b'0'..=b'9' => byte - b'0',
            b'a'..=b'f' if !upper => byte - b'a' + 10,
            b'A'..=b'F' if upper => byte - b'A' + 10,
            _ => return None,
        };
        packed[nibble / 2] |= value << (4 * (1 - nibble % 2));
        nibble += 1;
    }
    Some(packed)
}

fn unpack_uuid(packed: &[u8], upper: bool) -> String {
    let digits = if upper { HEX_UPPER } else { HEX_LOWER };
    let mut text = String::with_capacity(36);
    for (index, byte) in packed.iter().enumerate() {
        if matches!(index, 4 | 6 | 8 | 10) {
            text.push('-');
        }
        text.push(char::from(digits[usize::from(byte >> 4)]));
        text.push(char::from(digits[usize::from(byte & 0x0f)]));
    }
    text
}

/// Appends the case byte (1 for upper-case digits) and the 16 bytes of each
/// string. Returns false, leaving `out` partly written, when a string is not a
/// canonical UUID of that case.
pub(super) fn put_uuids(out: &mut Vec<u8>, strings: &[&str], upper: bool) -> bool {
    out.push(u8::from(upper));
    for text in strings {
        match pack_uuid(text, upper) {
            Some(packed) => out.extend_from_slice(&packed),
            None => return false,
        }
    }
    true
}

pub(super) fn read_uuids<T>(
    cursor: &mut Cursor<'_>,
    all_present: bool,
    count: usize,
    make: impl Fn(&str) -> T,
    absent: Absent<'_, T>,
) -> Result<Vec<T>, ColumnError> {
    let presence = Presence::read(cursor, all_present, count)?;
    let upper = match cursor.byte("the uuid case")? {
        0 => false,
        1 => true,
        _ => {
            return Err(ColumnError::OutOfRange {
                what: "uuid case other than 0 or 1",
            });
        }
    };
    cursor.justify(presence.present_count(count), 128, "uuids")?;
    presence.collect(
        count,
        |_| Ok(make(&unpack_uuid(cursor.take(16, "a uuid")?, upper))),
        absent,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_pack_in_either_case_and_nothing_else_packs() {
        for (text, upper) in [
            ("123e4567-e89b-12d3-a456-426614174000", false),
            ("123E4567-E89B-12D3-A456-426614174000", true),
        ] {
            let packed = pack_uuid(text, upper).expect("canonical");
            assert_eq!(unpack_uuid(&packed, upper), text);
            assert!(pack_uuid(text, !upper).is_none());
        }
        for text in [
            "123e4567e89b12d3a456426614174000",
            "123e4567-e89b-12d3-a456-42661417400g",
            "",
        ] {
            assert!(pack_uuid(text, false).is_none(), "{text}");
        }
    }

    #[test]
    fn repetition_is_judged_on_a_sample() {
        let statuses: Vec<&str> = (0..1_000).map(|i| ["a", "b", "c"][i % 3]).collect();
        assert!(repeats(&statuses));
        let names: Vec<String> = (0..1_000).map(|i| format!("name {i}")).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        assert!(!repeats(&names));
    }
}

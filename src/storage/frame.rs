//! Frames: the unit every storage file is made of.
//!
//! A frame is a 12-byte header and a body:
//!
//! ```text
//! magic  u32 LE  0x4D53_4446 ("FDSM" on disk)
//! length u32 LE  bytes of the body
//! crc    u32 LE  CRC-32 (IEEE) of the length's 4 bytes and the body
//! body   length bytes
//! ```
//!
//! The magic lets a reader that meets damage look further for intact frames:
//! intact frames after the damage mean the file was damaged in the middle, none
//! mean its tail was torn by a crash. Checking the length together with the body
//! means a flipped length byte is caught, not followed.

use crc32fast::Hasher;

/// Marks the start of every frame.
pub const MAGIC: u32 = 0x4D53_4446;
/// Header bytes before a frame's body.
pub const HEADER_BYTES: usize = 12;
/// The largest body a frame may have (a snapshot writes records in batches that
/// stay far below it).
pub const MAX_BODY_BYTES: usize = 256 << 20;

/// Appends one frame holding `body` to `out`.
pub fn put(body: &[u8], out: &mut Vec<u8>) {
    let length = u32::try_from(body.len()).expect("a frame body fits in 32 bits");
    out.reserve(HEADER_BYTES + body.len());
    out.extend_from_slice(&MAGIC.to_le_bytes());
    out.extend_from_slice(&length.to_le_bytes());
    out.extend_from_slice(&checksum(&length.to_le_bytes(), body).to_le_bytes());
    out.extend_from_slice(body);
}

fn checksum(length: &[u8], body: &[u8]) -> u32 {
    let mut hasher = Hasher::new();
    hasher.update(length);
    hasher.update(body);
    hasher.finalize()
}

/// Why the bytes at an offset are not a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Damage {
    /// The file ends inside the frame.
    Short,
    /// The bytes do not start with the frame magic (zeros from a crash, or garbage).
    NoMagic,
    /// The length is beyond [`MAX_BODY_BYTES`].
    BadLength,
    /// The checksum does not match.
    Checksum,
}

impl std::fmt::Display for Damage {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(match self {
            Damage::Short => "the file ends inside a frame",
            Damage::NoMagic => "no frame starts here",
            Damage::BadLength => "a frame length beyond the limit",
            Damage::Checksum => "a frame checksum mismatch",
        })
    }
}

/// A frame's header, checked: the body's length and its expected checksum.
fn header(header: &[u8; HEADER_BYTES]) -> Result<(usize, u32), Damage> {
    let word = |at: usize| u32::from_le_bytes(header[at..at + 4].try_into().expect("4 bytes"));
    if word(0) != MAGIC {
        return Err(Damage::NoMagic);
    }
    let length = word(4) as usize;
    if length > MAX_BODY_BYTES {
        return Err(Damage::BadLength);
    }
    Ok((length, word(8)))
}

/// Checks a body against the checksum its header gave.
fn verify(header: &[u8; HEADER_BYTES], body: &[u8], expected: u32) -> Result<(), Damage> {
    if checksum(&header[4..8], body) == expected {
        Ok(())
    } else {
        Err(Damage::Checksum)
    }
}

/// Reads the frame at `offset` of `bytes`: its body and the offset after it.
///
/// # Errors
///
/// [`Damage`] when the bytes there are not an intact frame.
pub fn read(bytes: &[u8], offset: usize) -> Result<(&[u8], usize), Damage> {
    let head: &[u8; HEADER_BYTES] = bytes
        .get(offset..offset + HEADER_BYTES)
        .and_then(|head| head.try_into().ok())
        .ok_or(Damage::Short)?;
    let (length, expected) = header(head)?;
    let start = offset + HEADER_BYTES;
    let body = bytes.get(start..start + length).ok_or(Damage::Short)?;
    verify(head, body, expected)?;
    Ok((body, start + length))
}

/// Reads the next frame from `reader` into `body` (replacing what it held):
/// `None` at the end of the input, the damage when the bytes there are not an
/// intact frame. Files too large to hold whole (snapshots) are read this way.
///
/// # Errors
///
/// The reader's I/O error.
pub fn read_next(
    reader: &mut impl std::io::Read,
    body: &mut Vec<u8>,
) -> std::io::Result<Option<Result<(), Damage>>> {
    let mut head = [0; HEADER_BYTES];
    match read_full(reader, &mut head)? {
        0 => return Ok(None),
        HEADER_BYTES => {}
        _ => return Ok(Some(Err(Damage::Short))),
    }
    let (length, expected) = match header(&head) {
        Ok(checked) => checked,
        Err(damage) => return Ok(Some(Err(damage))),
    };
    body.clear();
    body.resize(length, 0);
    if read_full(reader, body)? < length {
        return Ok(Some(Err(Damage::Short)));
    }
    Ok(Some(verify(&head, body, expected)))
}

/// Reads until `buffer` is full or the input ends; returns the bytes read.
fn read_full(reader: &mut impl std::io::Read, buffer: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        match reader.read(&mut buffer[filled..]) {
            Ok(0) => break,
            Ok(read) => filled += read,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(filled)
}

/// The offset of the first intact frame at or after `from`, if any: what tells
/// damage in the middle of a file from a torn tail.
pub fn next_intact(bytes: &[u8], from: usize) -> Option<usize> {
    let magic = MAGIC.to_le_bytes();
    let mut at = from;
    while at + HEADER_BYTES <= bytes.len() {
        let found = bytes[at..].windows(4).position(|window| window == magic)?;
        let candidate = at + found;
        if read(bytes, candidate).is_ok() {
            return Some(candidate);
        }
        at = candidate + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(bodies: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for body in bodies {
            put(body, &mut out);
        }
        out
    }

    #[test]
    fn frames_read_back_in_order() {
        let bytes = frames(&[b"one", b"", b"three"]);
        let (body, next) = read(&bytes, 0).unwrap();
        assert_eq!(body, b"one");
        let (body, next) = read(&bytes, next).unwrap();
        assert_eq!(body, b"");
        let (body, next) = read(&bytes, next).unwrap();
        assert_eq!(body, b"three");
        assert_eq!(next, bytes.len());
        assert_eq!(read(&bytes, next), Err(Damage::Short));
    }

    #[test]
    fn every_flipped_bit_is_caught() {
        let bytes = frames(&[b"a body of some length"]);
        for index in 0..bytes.len() {
            for bit in 0..8 {
                let mut damaged = bytes.clone();
                damaged[index] ^= 1 << bit;
                assert!(read(&damaged, 0).is_err(), "byte {index} bit {bit}");
            }
        }
    }

    #[test]
    fn a_cut_frame_is_short_and_zeros_are_no_frame() {
        let bytes = frames(&[b"0123456789"]);
        for cut in 0..bytes.len() {
            assert_eq!(read(&bytes[..cut], 0), Err(Damage::Short), "cut at {cut}");
        }
        assert_eq!(read(&[0; 64], 0), Err(Damage::NoMagic));
    }

    #[test]
    fn frames_stream_from_a_reader_as_from_memory() {
        let bytes = frames(&[b"one", b"", b"three"]);
        let mut reader = &bytes[..];
        let mut body = Vec::new();
        for expected in [&b"one"[..], b"", b"three"] {
            assert_eq!(read_next(&mut reader, &mut body).unwrap(), Some(Ok(())));
            assert_eq!(body, expected);
        }
        assert_eq!(read_next(&mut reader, &mut body).unwrap(), None);
        for cut in 1..bytes.len() {
            let mut reader = &bytes[..cut];
            let mut outcome = None;
            while let Some(result) = read_next(&mut reader, &mut body).unwrap() {
                if result.is_err() {
                    outcome = Some(result);
                    break;
                }
            }
            let ends_on_frame = [15, 27, 44].contains(&cut);
            assert_eq!(outcome.is_some(), !ends_on_frame, "cut at {cut}");
        }
        let mut damaged = bytes.clone();
        damaged[HEADER_BYTES + 1] ^= 1;
        let mut reader = &damaged[..];
        assert_eq!(
            read_next(&mut reader, &mut body).unwrap(),
            Some(Err(Damage::Checksum))
        );
    }

    #[test]
    fn the_next_intact_frame_is_found_past_damage() {
        let mut bytes = frames(&[b"first", b"second", b"third"]);
        let second = HEADER_BYTES + 5;
        bytes[second + HEADER_BYTES] ^= 0xFF;
        assert_eq!(read(&bytes, second), Err(Damage::Checksum));
        let third = second + HEADER_BYTES + 6;
        assert_eq!(next_intact(&bytes, second), Some(third));
        assert_eq!(next_intact(&bytes, third + 1), None);
    }
}

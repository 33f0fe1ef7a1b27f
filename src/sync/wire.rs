//! The envelope every sync message travels in.
//!
//! ```text
//! offset size field
//!      0    4 magic "MSDB" (4D 53 44 42)
//!      4    1 format version (1)
//!      5    1 message kind (MessageKind)
//!      6    1 codec: 0 = MessagePack body, 1 = an LZ4 frame holding the MessagePack body
//!      7    1 flags, 0 (other values are refused)
//!      8    4 body length in bytes, u32 little-endian
//!     12    4 CRC-32 (IEEE 802.3, as zlib's crc32) of bytes 0..12 then the body,
//!             u32 little-endian: every header field and every body byte is covered
//!     16    … body
//! ```
//!
//! A message is checked whole before any of it is used: a wrong magic, an unknown
//! version, kind or codec, a length that disagrees with the bytes, or a checksum
//! mismatch refuses the message with a [`WireError`], and nothing of it is applied.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::compress::{self, ColumnError};

/// The first four bytes of every message.
pub const MAGIC: [u8; 4] = *b"MSDB";
/// The format version this build writes and reads.
pub const FORMAT_VERSION: u8 = 1;
/// Bytes before the body.
pub const HEADER_LEN: usize = 16;

/// What a message holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum MessageKind {
    PullRequest = 1,
    PullBatch = 2,
    PushRequest = 3,
    PushResult = 4,
    AckRequest = 5,
    AckResult = 6,
    /// The first frame of a binary export file (`crate::transfer`).
    ExportHeader = 0x10,
    /// A frame of records of a binary export file.
    ExportRecords = 0x11,
    /// The last frame of a binary export file: record count and checksum.
    ExportEnd = 0x12,
    Error = 0x7F,
}

impl MessageKind {
    fn from_byte(byte: u8) -> Option<MessageKind> {
        Some(match byte {
            1 => MessageKind::PullRequest,
            2 => MessageKind::PullBatch,
            3 => MessageKind::PushRequest,
            4 => MessageKind::PushResult,
            5 => MessageKind::AckRequest,
            6 => MessageKind::AckResult,
            0x10 => MessageKind::ExportHeader,
            0x11 => MessageKind::ExportRecords,
            0x12 => MessageKind::ExportEnd,
            0x7F => MessageKind::Error,
            _ => return None,
        })
    }
}

/// How the body is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Codec {
    MessagePack = 0,
    Lz4MessagePack = 1,
}

/// A message that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    #[error(
        "the message is {len} bytes, shorter than the {HEADER_LEN}-byte header; it was cut off"
    )]
    TooShort { len: usize },
    #[error(
        "the message does not start with the MSDB magic bytes; it is not a MobileSyncDB message"
    )]
    BadMagic,
    #[error(
        "the message uses format version {version}, this server reads version {FORMAT_VERSION}; upgrade the older side"
    )]
    UnknownVersion { version: u8 },
    #[error("unknown message kind 0x{kind:02x}")]
    UnknownKind { kind: u8 },
    #[error("expected a {expected:?} message, got {found:?}")]
    UnexpectedKind {
        expected: MessageKind,
        found: MessageKind,
    },
    #[error("unknown codec {codec}; known codecs are 0 (MessagePack) and 1 (LZ4 frame)")]
    UnknownCodec { codec: u8 },
    #[error("unknown flags 0x{flags:02x}; this version writes 0")]
    UnknownFlags { flags: u8 },
    #[error(
        "the header announces a {declared}-byte body but {actual} bytes follow; the message was cut off or padded"
    )]
    LengthMismatch { declared: usize, actual: usize },
    #[error("the message is {len} bytes, more than the {limit} allowed; send smaller batches")]
    TooLarge { len: usize, limit: usize },
    #[error(
        "checksum mismatch (header {declared:08x}, body {actual:08x}): the message was corrupted in transit"
    )]
    Checksum { declared: u32, actual: u32 },
    #[error("the LZ4 frame of the body is invalid: {0}")]
    Lz4(#[source] crate::compress::ColumnError),
    #[error("the body is not a valid {kind:?} message: {message}")]
    Body { kind: MessageKind, message: String },
}

/// A checked message: its kind and its decompressed body.
#[derive(Debug)]
pub struct Opened {
    pub kind: MessageKind,
    pub body: Vec<u8>,
    /// The message's CRC-32 (header and body as sent).
    pub checksum: u32,
}

/// Puts `body` in an envelope; `compress` stores it as an LZ4 frame.
pub fn seal(kind: MessageKind, body: &[u8], compress: bool) -> Vec<u8> {
    let (codec, stored) = if compress {
        (
            Codec::Lz4MessagePack,
            compress::compress_frame(Vec::new(), body),
        )
    } else {
        (Codec::MessagePack, body.to_vec())
    };
    seal_stored(kind, codec, stored)
}

fn seal_stored(kind: MessageKind, codec: Codec, stored: Vec<u8>) -> Vec<u8> {
    let mut message = Vec::with_capacity(HEADER_LEN + stored.len());
    message.extend_from_slice(&MAGIC);
    message.push(FORMAT_VERSION);
    message.push(kind as u8);
    message.push(codec as u8);
    message.push(0);
    // Messages are bounded far below 4 GiB by `open`'s limit.
    message.extend_from_slice(
        &u32::try_from(stored.len())
            .unwrap_or(u32::MAX)
            .to_le_bytes(),
    );
    let checksum = checksum(&message, &stored);
    message.extend_from_slice(&checksum.to_le_bytes());
    message.extend_from_slice(&stored);
    message
}

/// `value` as a MessagePack map with its field names as keys.
pub fn body_of<T: Serialize>(value: &T) -> Vec<u8> {
    rmp_serde::to_vec_named(value)
        .expect("protocol messages always serialise: maps with string keys and plain values")
}

/// Serialises `value` as a MessagePack map and seals it.
pub fn seal_value<T: Serialize>(kind: MessageKind, value: &T, compress: bool) -> Vec<u8> {
    seal(kind, &body_of(value), compress)
}

/// Deserialises the body of an opened message of `kind`.
///
/// # Errors
///
/// [`WireError::Body`] when the body is not that message.
pub fn decode_body<T: DeserializeOwned>(
    opened: &Opened,
    kind: MessageKind,
) -> Result<T, WireError> {
    rmp_serde::from_slice(&opened.body).map_err(|error| WireError::Body {
        kind,
        message: error.to_string(),
    })
}

/// Checks a message whole and returns its body.
///
/// # Errors
///
/// A [`WireError`] naming the first thing wrong; nothing is returned then.
pub fn open(message: &[u8], limit: usize) -> Result<Opened, WireError> {
    if message.len() > limit {
        return Err(WireError::TooLarge {
            len: message.len(),
            limit,
        });
    }
    let Some((header, stored)) = message.split_first_chunk::<HEADER_LEN>() else {
        return Err(WireError::TooShort { len: message.len() });
    };
    if header[0..4] != MAGIC {
        return Err(WireError::BadMagic);
    }
    if header[4] != FORMAT_VERSION {
        return Err(WireError::UnknownVersion { version: header[4] });
    }
    let kind =
        MessageKind::from_byte(header[5]).ok_or(WireError::UnknownKind { kind: header[5] })?;
    let codec = match header[6] {
        0 => Codec::MessagePack,
        1 => Codec::Lz4MessagePack,
        codec => return Err(WireError::UnknownCodec { codec }),
    };
    if header[7] != 0 {
        return Err(WireError::UnknownFlags { flags: header[7] });
    }
    let declared = u32::from_le_bytes([header[8], header[9], header[10], header[11]]) as usize;
    if declared != stored.len() {
        return Err(WireError::LengthMismatch {
            declared,
            actual: stored.len(),
        });
    }
    let expected = u32::from_le_bytes([header[12], header[13], header[14], header[15]]);
    let actual = checksum(&header[..12], stored);
    if expected != actual {
        return Err(WireError::Checksum {
            declared: expected,
            actual,
        });
    }
    let body = match codec {
        Codec::MessagePack => stored.to_vec(),
        Codec::Lz4MessagePack => unframe(stored, limit)?,
    };
    Ok(Opened {
        kind,
        body,
        checksum: actual,
    })
}

/// Opens a message of the expected kind and deserialises its body.
///
/// # Errors
///
/// As [`open`], [`WireError::UnexpectedKind`], or [`WireError::Body`].
pub fn open_value<T: DeserializeOwned>(
    message: &[u8],
    expected: MessageKind,
    limit: usize,
) -> Result<(T, u32), WireError> {
    let opened = open(message, limit)?;
    if opened.kind != expected {
        return Err(WireError::UnexpectedKind {
            expected,
            found: opened.kind,
        });
    }
    Ok((decode_body(&opened, expected)?, opened.checksum))
}

/// CRC-32 of the first 12 header bytes followed by the stored body.
fn checksum(header: &[u8], stored: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&header[..12]);
    hasher.update(stored);
    hasher.finalize()
}

/// Decompresses an LZ4 frame, refusing output beyond `limit` bytes.
fn unframe(stored: &[u8], limit: usize) -> Result<Vec<u8>, WireError> {
    compress::decompress_frame_within(stored, limit).map_err(|error| match error {
        ColumnError::AllocationTooLarge { claimed, .. } => WireError::TooLarge {
            len: usize::try_from(claimed).unwrap_or(usize::MAX),
            limit,
        },
        error => WireError::Lz4(error),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_message_opens_to_its_body() {
        for compress in [false, true] {
            let body = b"hello hello hello hello hello".repeat(10);
            let message = seal(MessageKind::PushRequest, &body, compress);
            let opened = open(&message, 1 << 20).expect("open");
            assert_eq!(opened.kind, MessageKind::PushRequest);
            assert_eq!(opened.body, body);
        }
    }

    #[test]
    fn every_truncation_and_every_flipped_byte_is_refused() {
        let message = seal(MessageKind::PullRequest, b"some body bytes", true);
        for len in 0..message.len() {
            assert!(
                open(&message[..len], 1 << 20).is_err(),
                "truncated at {len}"
            );
        }
        for at in 0..message.len() {
            let mut corrupted = message.clone();
            corrupted[at] ^= 0x01;
            assert!(open(&corrupted, 1 << 20).is_err(), "flipped byte {at}");
        }
    }

    #[test]
    fn foreign_and_future_messages_are_refused_with_their_reason() {
        let mut message = seal(MessageKind::PullRequest, b"x", false);
        message[4] = 2;
        assert!(matches!(
            open(&message, 1024),
            Err(WireError::UnknownVersion { version: 2 })
        ));
        let foreign = b"GET / HTTP/1.1\r\nHost: example\r\n\r\n";
        assert!(matches!(open(foreign, 1024), Err(WireError::BadMagic)));
        let big = seal(MessageKind::PullRequest, &[0; 2048], false);
        assert!(matches!(open(&big, 1024), Err(WireError::TooLarge { .. })));
    }

    #[test]
    fn a_decompression_bomb_is_refused() {
        let message = seal(MessageKind::PushRequest, &vec![0; 1 << 20], true);
        assert!(message.len() < 64 * 1024);
        assert!(matches!(
            open(&message, 64 * 1024),
            Err(WireError::TooLarge { .. })
        ));
    }
}

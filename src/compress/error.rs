//! [`ColumnError`]: why an encoded column could not be decoded.

use super::wire::ColumnEncoding;

/// An encoded column that could not be decoded. Every variant means the sender's
/// encoder is broken or the bytes were damaged in transit: ask the sender to resend
/// the batch, and report the message to whoever maintains that encoder.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ColumnError {
    #[error("empty column: an encoded column holds at least its encoding byte")]
    Empty,
    #[error("unknown encoding 0x{0:02x}: see docs/COMPRESSION.md for the valid encoding bytes")]
    UnknownEncoding(u8),
    #[error("the {encoding} encoding cannot hold a {column} column")]
    WrongEncoding {
        encoding: ColumnEncoding,
        column: &'static str,
    },
    #[error("truncated column: the payload ends inside {what}")]
    Truncated { what: &'static str },
    #[error("count mismatch: the batch says {expected} entries, the column holds {found}")]
    CountMismatch { expected: usize, found: usize },
    #[error("{extra} trailing bytes after the last entry of the column")]
    TrailingBytes { extra: usize },
    #[error("invalid utf-8 in string entry {entry}")]
    InvalidUtf8 { entry: usize },
    #[error("value out of range: {what}")]
    OutOfRange { what: &'static str },
    #[error(
        "allocation larger than input: {what} claims {claimed} bytes or entries, \
         the input justifies at most {limit}"
    )]
    AllocationTooLarge {
        what: &'static str,
        claimed: u64,
        limit: u64,
    },
    #[error("invalid messagepack in a plain column: {what}")]
    InvalidMessagePack { what: &'static str },
    #[error("null at entry {entry} of a column that cannot hold nulls")]
    UnexpectedNull { entry: usize },
    #[error("dictionary index {index} out of range: the dictionary holds {size} strings")]
    DictionaryIndex { index: u64, size: usize },
    #[error("lz4 frame error: {what}")]
    InvalidLz4Frame { what: &'static str },
    #[error("lz4 frame error: {0}")]
    Lz4Decode(std::io::Error),
}

//! LZ4 frames around payloads, and the tests that decide whether LZ4 is worth it.
//!
//! Frames are the standard LZ4 frame format (so any LZ4 frame library decodes
//! them) with 64 KiB independent blocks and a content checksum. Before
//! [`decompress_frame`] hands a frame to lz4_flex it walks the frame's headers
//! itself, which bounds what decoding may allocate by the frame's own length.

use std::io::{Read, Write};

use lz4_flex::frame::{BlockSize, FrameDecoder, FrameEncoder, FrameInfo};

use super::ColumnError;
use super::wire::Cursor;

/// Payloads this short are never compressed: the frame's 19 bytes of headers
/// would eat any saving.
pub(super) const MIN_PAYLOAD: usize = 64;
/// How much of a payload the compressibility sample compresses.
pub(super) const SAMPLE_BYTES: usize = 4096;
/// No frame may decompress to more than this.
pub const MAX_DECOMPRESSED: usize = 256 << 20;
/// Nor to more than this many times its own length: LZ4's best possible ratio
/// is just under 255 (a match length grows by 255 per extra byte).
pub const MAX_RATIO: usize = 255;

const MAGIC: u32 = 0x184d_2204;
const BLOCK_64K: usize = 64 << 10;

/// Appends `payload` to `out` as one LZ4 frame.
pub(crate) fn compress_frame(out: Vec<u8>, payload: &[u8]) -> Vec<u8> {
    // The content checksum makes a damaged frame an error rather than silently
    // different values; it costs one xxHash32 pass.
    // Independent blocks, as every LZ4 frame library decodes them, as large as the
    // payload needs up to 1 MiB: matches then reach across the whole column (a
    // 64 KiB block restarts the window; on the 10 MB sync benchmark that cost 1.5
    // points of saving overall, 2.6 on automerge changes). Small payloads keep
    // small blocks, so decoders allocate little.
    let block_size = if payload.len() <= BLOCK_64K {
        BlockSize::Max64KB
    } else if payload.len() <= 4 * BLOCK_64K {
        BlockSize::Max256KB
    } else {
        BlockSize::Max1MB
    };
    let info = FrameInfo::new()
        .block_size(block_size)
        .content_checksum(true);
    let mut encoder = FrameEncoder::with_frame_info(info, out);
    encoder
        .write_all(payload)
        .expect("writing an lz4 frame into a Vec cannot fail");
    encoder
        .finish()
        .expect("finishing an lz4 frame into a Vec cannot fail")
}

/// Whether LZ4 saves at least 5% of `raw_len` (a smaller saving is not worth the
/// decoding time on a phone).
pub(super) fn pays(framed_len: usize, raw_len: usize) -> bool {
    framed_len.saturating_mul(20) <= raw_len.saturating_mul(19)
}

/// Whether the start of `data` compresses by at least 5%, judged on one LZ4 block
/// of at most [`SAMPLE_BYTES`].
pub(super) fn sample_compresses(data: &[u8]) -> bool {
    let sample = &data[..data.len().min(SAMPLE_BYTES)];
    pays(lz4_flex::block::compress(sample).len(), sample.len())
}

/// Magic numbers of formats that are compressed already: gzip, zstd, xz, bzip2,
/// LZ4 frames, PNG, JPEG, GIF, ZIP (and docx, apk, jar), 7z, WebP, HEIC and MP4.
pub(super) fn looks_compressed(bytes: &[u8]) -> bool {
    const PREFIXES: &[&[u8]] = &[
        &[0x1f, 0x8b],
        &[0x28, 0xb5, 0x2f, 0xfd],
        &[0xfd, b'7', b'z', b'X', b'Z', 0x00],
        b"BZh",
        &[0x04, 0x22, 0x4d, 0x18],
        &[0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a],
        &[0xff, 0xd8, 0xff],
        b"GIF8",
        b"PK\x03\x04",
        &[b'7', b'z', 0xbc, 0xaf, 0x27, 0x1c],
    ];
    let riff_webp = bytes.starts_with(b"RIFF") && bytes.get(8..12) == Some(b"WEBP");
    let iso_media = bytes.get(4..8) == Some(b"ftyp");
    riff_webp || iso_media || PREFIXES.iter().any(|magic| bytes.starts_with(magic))
}

/// The most bytes a frame of `frame_len` bytes may decompress to.
pub fn decompressed_limit(frame_len: usize) -> usize {
    frame_len.saturating_mul(MAX_RATIO).min(MAX_DECOMPRESSED)
}

/// Decompresses one LZ4 frame that must fill `frame` exactly.
///
/// # Errors
///
/// [`ColumnError::InvalidLz4Frame`] for a malformed or oversized frame (see
/// [`decompressed_limit`]), [`ColumnError::Lz4Decode`] when lz4_flex refuses it
/// (a bad block or checksum).
pub(super) fn decompress_frame(frame: &[u8]) -> Result<Vec<u8>, ColumnError> {
    decompress_frame_within(frame, usize::MAX)
}

/// [`decompress_frame`] with a tighter bound on the output: at most `ceiling`
/// bytes as well as [`decompressed_limit`].
///
/// # Errors
///
/// As [`decompress_frame`].
pub(crate) fn decompress_frame_within(
    frame: &[u8],
    ceiling: usize,
) -> Result<Vec<u8>, ColumnError> {
    let limit = decompressed_limit(frame.len()).min(ceiling);
    let bound = walk_frame(frame, limit)?;
    let mut out = Vec::with_capacity(bound.min(limit));
    FrameDecoder::new(frame)
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(ColumnError::Lz4Decode)?;
    if out.len() > limit {
        return Err(ColumnError::AllocationTooLarge {
            what: "an lz4 frame",
            claimed: out.len() as u64,
            limit: limit as u64,
        });
    }
    Ok(out)
}

fn frame_error(what: &'static str) -> ColumnError {
    ColumnError::InvalidLz4Frame { what }
}

/// Checks the frame's structure without decompressing it, and returns an upper
/// bound of its decompressed size.
fn walk_frame(frame: &[u8], limit: usize) -> Result<usize, ColumnError> {
    let mut cursor = Cursor::new(frame);
    let header = FrameHeader::read(&mut cursor, limit)?;
    let mut bound = 0usize;
    loop {
        let word = u32::from_le_bytes(cursor.array("an lz4 block header")?);
        if word == 0 {
            break;
        }
        let len = (word & 0x7fff_ffff) as usize;
        if len > header.block_max {
            return Err(frame_error("block larger than the frame's block size"));
        }
        cursor.take(len, "an lz4 block")?;
        if header.block_checksums {
            cursor.take(4, "an lz4 block checksum")?;
        }
        let uncompressed = word & 0x8000_0000 != 0;
        bound = bound.saturating_add(if uncompressed { len } else { header.block_max });
    }
    if header.content_checksum {
        cursor.take(4, "the lz4 content checksum")?;
    }
    cursor
        .finish()
        .map_err(|_| frame_error("bytes after the end of the frame"))?;
    Ok(bound)
}

/// The smallest block size of the LZ4 frame format (64 KiB, 256 KiB, 1 MiB,
/// 4 MiB) that holds `len` bytes; 4 MiB for anything larger.
fn block_size_for(len: usize) -> usize {
    [BLOCK_64K, 256 << 10, 1 << 20]
        .into_iter()
        .find(|size| len <= *size)
        .unwrap_or(4 << 20)
}

struct FrameHeader {
    block_max: usize,
    block_checksums: bool,
    content_checksum: bool,
}

impl FrameHeader {
    fn read(cursor: &mut Cursor<'_>, limit: usize) -> Result<FrameHeader, ColumnError> {
        if u32::from_le_bytes(cursor.array("the lz4 magic number")?) != MAGIC {
            return Err(frame_error("not an lz4 frame (magic number 0x184d2204)"));
        }
        let [flags, block_descriptor] = cursor.array("the lz4 frame descriptor")?;
        if flags >> 6 != 0b01 || flags & 0b10 != 0 || block_descriptor & 0x8f != 0 {
            return Err(frame_error("unknown version or reserved bits set"));
        }
        if flags & 1 != 0 {
            return Err(frame_error("dictionary ids are not supported"));
        }
        let block_max = match block_descriptor >> 4 {
            4 => BLOCK_64K,
            5 => 256 << 10,
            6 => 1 << 20,
            7 => 4 << 20,
            _ => return Err(frame_error("unknown block maximum size")),
        };
        // Decoding allocates a buffer of the block size: a small frame may not
        // claim large blocks. An encoder picks the smallest block size that
        // holds its content, which may be up to 4 times the content (100 KiB in
        // 256 KiB blocks), so the bound is the smallest block size that holds
        // `limit`: a frame can make decoding allocate at most 4 times what it
        // may decompress to.
        let allowed = block_size_for(limit);
        if block_max > allowed {
            return Err(ColumnError::AllocationTooLarge {
                what: "the lz4 block size",
                claimed: block_max as u64,
                limit: allowed as u64,
            });
        }
        if flags & 0b1000 != 0 {
            let content_size = u64::from_le_bytes(cursor.array("the lz4 content size")?);
            if content_size > limit as u64 {
                return Err(ColumnError::AllocationTooLarge {
                    what: "the lz4 content size",
                    claimed: content_size,
                    limit: limit as u64,
                });
            }
        }
        cursor.byte("the lz4 header checksum")?;
        Ok(FrameHeader {
            block_max,
            block_checksums: flags & 0b1_0000 != 0,
            content_checksum: flags & 0b100 != 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_highly_compressible_ones_stay_within_the_ratio() {
        // 100 KB and 300 KB of zeros take 256 KiB and 1 MiB blocks but frames
        // short enough that the block is larger than the ratio allows them to
        // decompress to (a pull of 20,000 rows with one repeated value once made
        // such a column and its decoder refused it).
        let payloads = [
            vec![],
            vec![0u8; 1 << 20],
            vec![0u8; 100_000],
            vec![0u8; 300_000],
            b"hello ".repeat(5_000),
        ];
        for payload in payloads {
            let frame = compress_frame(Vec::new(), &payload);
            assert!(payload.len() <= decompressed_limit(frame.len()));
            assert_eq!(decompress_frame(&frame).expect("valid"), payload);
        }
    }

    #[test]
    fn damaged_frames_are_errors() {
        let payload = b"the quick brown fox jumps over the lazy dog ".repeat(50);
        let frame = compress_frame(Vec::new(), &payload);
        for index in 0..frame.len() {
            let mut damaged = frame.clone();
            damaged[index] ^= 0x10;
            assert!(decompress_frame(&damaged).is_err(), "flip at {index}");
        }
        for len in 0..frame.len() {
            assert!(decompress_frame(&frame[..len]).is_err(), "cut at {len}");
        }
        let mut two = frame.clone();
        two.extend_from_slice(&frame);
        assert!(decompress_frame(&two).is_err());
    }

    #[test]
    fn small_frames_may_not_claim_large_blocks() {
        let mut frame = compress_frame(Vec::new(), b"tiny");
        frame[5] = 0x70; // 4 MiB blocks; the header checksum is now wrong too
        assert!(matches!(
            decompress_frame(&frame),
            Err(ColumnError::AllocationTooLarge { .. })
        ));
    }

    #[test]
    fn magic_numbers_are_recognised() {
        assert!(looks_compressed(&[0xff, 0xd8, 0xff, 0xe0, 0, 0x10]));
        assert!(looks_compressed(b"RIFF\x10\0\0\0WEBPVP8 "));
        assert!(!looks_compressed(b"{\"json\": true}"));
        assert!(!looks_compressed(&[]));
    }
}

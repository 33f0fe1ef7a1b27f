//! The binary form: sealed messages of the sync envelope (`sync::wire`), each
//! with its own CRC-32: one `ExportHeader`, `ExportRecords` frames of about
//! 1 MiB of documents each (LZ4-compressed), one `ExportEnd` whose CRC-32 covers
//! every byte of the frames before it. Bodies are MessagePack maps.

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use super::error::{Defect, Position, TransferError};
use super::header::{Accept, Header, Identity, Item, RawRecord};
use crate::engine::ExportedRecord;
use crate::sync::wire::{self, HEADER_LEN, MAGIC, MessageKind, Opened};

/// The body of an `ExportRecords` frame: records of one table, column by column.
#[derive(Debug, Serialize, Deserialize)]
struct RecordsBody {
    table: String,
    ids: Vec<String>,
    docs: Vec<ByteBuf>,
    deleted: Vec<bool>,
}

/// The body of the `ExportEnd` frame.
#[derive(Debug, Serialize, Deserialize)]
struct EndBody {
    records: u64,
    crc32: u32,
}

/// Seals the frames of an export and keeps the running checksum.
#[derive(Debug, Default)]
pub(crate) struct Writer {
    crc: crc32fast::Hasher,
}

impl Writer {
    pub(crate) fn header(&mut self, header: &Header) -> Vec<u8> {
        self.frame(wire::seal_value(MessageKind::ExportHeader, header, false))
    }

    /// One frame holding a page of `table`'s records.
    pub(crate) fn records(&mut self, table: &str, records: Vec<ExportedRecord>) -> Vec<u8> {
        let mut body = RecordsBody {
            table: table.to_owned(),
            ids: Vec::with_capacity(records.len()),
            docs: Vec::with_capacity(records.len()),
            deleted: Vec::with_capacity(records.len()),
        };
        for record in records {
            body.ids.push(record.id);
            body.docs.push(ByteBuf::from(record.doc));
            body.deleted.push(record.deleted);
        }
        self.frame(wire::seal_value(MessageKind::ExportRecords, &body, true))
    }

    /// The end frame: the record count and the checksum of every frame before.
    pub(crate) fn end(&mut self, records: u64) -> Vec<u8> {
        let crc32 = self.crc.clone().finalize();
        let body = EndBody { records, crc32 };
        self.frame(wire::seal_value(MessageKind::ExportEnd, &body, false))
    }

    fn frame(&mut self, frame: Vec<u8>) -> Vec<u8> {
        self.crc.update(&frame);
        frame
    }
}

/// Cuts pushed bytes into frames and checks each as it completes.
#[derive(Debug)]
pub(crate) struct Reader {
    pending: Vec<u8>,
    /// Bytes of `pending` already read as whole frames.
    start: usize,
    frames: Frames,
}

/// What the reader knows of the frames read so far.
#[derive(Debug)]
struct Frames {
    /// The number of the next frame, from 1.
    next: u64,
    crc: crc32fast::Hasher,
    ended: bool,
    limit: usize,
}

impl Reader {
    pub(crate) fn new(limit: usize) -> Reader {
        let frames = Frames {
            next: 1,
            crc: crc32fast::Hasher::new(),
            ended: false,
            limit,
        };
        Reader {
            pending: Vec::new(),
            start: 0,
            frames,
        }
    }

    /// Reads `bytes`, handing `accept` the items of every frame they complete.
    pub(crate) fn push(&mut self, bytes: &[u8], accept: Accept<'_>) -> Result<(), TransferError> {
        self.pending.extend_from_slice(bytes);
        while let Some(length) = self.frames.complete_frame(&self.pending[self.start..])? {
            let frame = &self.pending[self.start..self.start + length];
            self.frames.read(frame, accept)?;
            self.start += length;
        }
        self.pending.drain(..self.start);
        self.start = 0;
        Ok(())
    }

    /// Refuses a file that stops inside a frame.
    pub(crate) fn finish(&mut self) -> Result<(), TransferError> {
        if self.pending.len() > self.start {
            let at = Position::Frame(self.frames.next);
            return Err(TransferError::CutOff { at });
        }
        Ok(())
    }
}

impl Frames {
    /// The length of the frame at the start of `bytes` once all of it is
    /// there. Bytes that cannot start a frame, or a frame beyond the limit,
    /// are refused as soon as its header shows it.
    fn complete_frame(&self, bytes: &[u8]) -> Result<Option<usize>, TransferError> {
        if bytes.is_empty() {
            return Ok(None);
        }
        let at = Position::Frame(self.next);
        if self.ended {
            return Err(TransferError::bad(at, Defect::DataAfterEnd));
        }
        let prefix = bytes.len().min(MAGIC.len());
        if bytes[..prefix] != MAGIC[..prefix] {
            let format = "no MSDB magic bytes".to_owned();
            return Err(TransferError::NotAnExport { at, format });
        }
        let Some(header) = bytes.first_chunk::<HEADER_LEN>() else {
            return Ok(None);
        };
        let declared = u32::from_le_bytes([header[8], header[9], header[10], header[11]]);
        let length = HEADER_LEN + declared as usize;
        if length > self.limit {
            let limit = self.limit;
            return Err(TransferError::PieceTooLarge { at, limit });
        }
        Ok((bytes.len() >= length).then_some(length))
    }

    fn read(&mut self, frame: &[u8], accept: Accept<'_>) -> Result<(), TransferError> {
        let at = Position::Frame(self.next);
        let opened =
            wire::open(frame, self.limit).map_err(|source| TransferError::Frame { at, source })?;
        match opened.kind {
            MessageKind::ExportHeader => accept(Item::Header {
                header: decode_header(&opened, at)?,
                at,
            })?,
            MessageKind::ExportRecords => self.read_records(&opened, accept)?,
            MessageKind::ExportEnd => {
                let end: EndBody = decode(&opened, at)?;
                let actual = self.crc.clone().finalize();
                if end.crc32 != actual {
                    let declared = end.crc32;
                    return Err(TransferError::Checksum {
                        at,
                        declared,
                        actual,
                    });
                }
                self.ended = true;
                accept(Item::End {
                    records: end.records,
                    at,
                })?;
            }
            kind => return Err(TransferError::bad(at, Defect::WrongKind { kind })),
        }
        self.crc.update(frame);
        self.next += 1;
        Ok(())
    }

    fn read_records(&self, opened: &Opened, accept: Accept<'_>) -> Result<(), TransferError> {
        let at = Position::Frame(self.next);
        let body: RecordsBody = decode(opened, at)?;
        let (ids, docs, flags) = (body.ids.len(), body.docs.len(), body.deleted.len());
        if ids != docs || ids != flags {
            return Err(TransferError::bad(
                at,
                Defect::RaggedFrame { ids, docs, flags },
            ));
        }
        let columns = body.ids.into_iter().zip(body.docs).zip(body.deleted);
        for (index, ((id, doc), deleted)) in columns.enumerate() {
            accept(Item::Record(RawRecord {
                table: body.table.clone(),
                id,
                deleted,
                doc: doc.into_vec(),
                at: Position::FrameRecord {
                    frame: self.next,
                    record: index as u64 + 1,
                },
            }))?;
        }
        Ok(())
    }
}

/// Decodes a header body; one that does not decode is explained by its
/// `format` and `version` when it has them.
fn decode_header(opened: &Opened, at: Position) -> Result<Header, TransferError> {
    decode(opened, at).map_err(|error| {
        let identity: Identity = rmp_serde::from_slice(&opened.body).unwrap_or_default();
        identity.refusal(at).unwrap_or(error)
    })
}

fn decode<T: serde::de::DeserializeOwned>(
    opened: &Opened,
    at: Position,
) -> Result<T, TransferError> {
    rmp_serde::from_slice(&opened.body).map_err(|source| TransferError::Body { at, source })
}

//! The NDJSON form: a header line, one line per record, an end line. Every
//! line is one JSON object followed by `\n`; the end line's CRC-32 covers every
//! byte before it. `docs/EXPORT.md` describes each line.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

use super::error::{Defect, Position, TransferError};
use super::header::{Accept, Header, Identity, Item, RawRecord};
use crate::engine::ExportedRecord;
use crate::schema::TableSchema;

type JsonMap = serde_json::Map<String, serde_json::Value>;

/// Writes the lines of an export and keeps the running checksum.
#[derive(Debug, Default)]
pub(crate) struct Writer {
    crc: crc32fast::Hasher,
}

#[derive(Serialize)]
struct HeaderOut<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(flatten)]
    header: &'a Header,
}

#[derive(Serialize)]
struct RecordOut<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    table: &'a str,
    id: &'a str,
    deleted: bool,
    row: Option<JsonMap>,
    doc: String,
}

impl Writer {
    pub(crate) fn header(&mut self, header: &Header) -> Vec<u8> {
        let line = HeaderOut {
            kind: "header",
            header,
        };
        self.line(&line)
    }

    /// The lines of a page of `schema`'s records.
    pub(crate) fn records(
        &mut self,
        schema: &TableSchema,
        records: Vec<ExportedRecord>,
    ) -> Vec<u8> {
        let mut chunk = Vec::new();
        for record in records {
            let line = RecordOut {
                kind: "record",
                table: &schema.name,
                id: &record.id,
                deleted: record.deleted,
                row: (!record.deleted).then(|| record.row.to_json(schema)),
                doc: STANDARD.encode(&record.doc),
            };
            chunk.extend_from_slice(&self.line(&line));
        }
        chunk
    }

    /// The end line: the record count and the checksum of everything before it.
    pub(crate) fn end(&mut self, records: u64) -> Vec<u8> {
        let crc = self.crc.clone().finalize();
        format!("{{\"type\":\"end\",\"records\":{records},\"crc32\":\"{crc:08x}\"}}\n").into_bytes()
    }

    fn line(&mut self, value: &impl Serialize) -> Vec<u8> {
        let mut line = serde_json::to_vec(value)
            .expect("export lines always serialise: string keys and plain values");
        line.push(b'\n');
        self.crc.update(&line);
        line
    }
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum LineIn {
    Header(Header),
    Record(RecordIn),
    End(EndIn),
}

#[derive(Deserialize)]
struct RecordIn {
    table: String,
    id: String,
    deleted: bool,
    /// Informational: an import derives rows from the documents. It must still
    /// be an object (or null for a deleted record).
    #[serde(default, rename = "row")]
    _row: Option<JsonMap>,
    doc: String,
}

#[derive(Deserialize)]
struct EndIn {
    records: u64,
    crc32: String,
}

/// Splits pushed bytes into lines and checks each as it completes.
#[derive(Debug)]
pub(crate) struct Reader {
    /// The start of a line whose `\n` has not arrived yet.
    partial: Vec<u8>,
    /// The number of the next line to complete, from 1.
    line: u64,
    crc: crc32fast::Hasher,
    ended: bool,
    max_line: usize,
}

impl Reader {
    pub(crate) fn new(max_line: usize) -> Reader {
        Reader {
            partial: Vec::new(),
            line: 1,
            crc: crc32fast::Hasher::new(),
            ended: false,
            max_line,
        }
    }

    /// Reads `bytes`, handing `accept` an item for every line they complete.
    pub(crate) fn push(
        &mut self,
        mut bytes: &[u8],
        accept: Accept<'_>,
    ) -> Result<(), TransferError> {
        while let Some(newline) = bytes.iter().position(|byte| *byte == b'\n') {
            let (line, rest) = bytes.split_at(newline + 1);
            bytes = rest;
            self.check_length(self.partial.len() + line.len())?;
            if self.partial.is_empty() {
                self.complete(line, accept)?;
            } else {
                let mut whole = std::mem::take(&mut self.partial);
                whole.extend_from_slice(line);
                self.complete(&whole, accept)?;
                whole.clear();
                self.partial = whole;
            }
        }
        self.check_length(self.partial.len() + bytes.len())?;
        self.partial.extend_from_slice(bytes);
        self.check_partial()
    }

    /// Reads the last line if it has no `\n`: a file cut inside a line is
    /// refused as cut off, not as bad JSON.
    pub(crate) fn finish(&mut self, accept: Accept<'_>) -> Result<(), TransferError> {
        if self.partial.is_empty() {
            return Ok(());
        }
        let line = std::mem::take(&mut self.partial);
        match self.complete(&line, accept) {
            Err(TransferError::Json { at, source }) if source.is_eof() => {
                Err(TransferError::CutOff { at })
            }
            other => other,
        }
    }

    fn check_length(&self, length: usize) -> Result<(), TransferError> {
        if length > self.max_line {
            let at = Position::Line(self.line);
            return Err(TransferError::PieceTooLarge {
                at,
                limit: self.max_line,
            });
        }
        Ok(())
    }

    /// Refuses early what cannot become a valid line: anything after the end
    /// line, and a first line that does not open a JSON object.
    fn check_partial(&self) -> Result<(), TransferError> {
        let Some(first) = self.partial.first() else {
            return Ok(());
        };
        let at = Position::Line(self.line);
        if self.ended {
            return Err(TransferError::bad(at, Defect::DataAfterEnd));
        }
        if self.line == 1 && *first != b'{' {
            let format = "not JSON".to_owned();
            return Err(TransferError::NotAnExport { at, format });
        }
        Ok(())
    }

    fn complete(&mut self, line: &[u8], accept: Accept<'_>) -> Result<(), TransferError> {
        let at = Position::Line(self.line);
        if self.ended {
            return Err(TransferError::bad(at, Defect::DataAfterEnd));
        }
        let text = line.strip_suffix(b"\n").unwrap_or(line);
        match parse(text, at)? {
            LineIn::Header(header) => accept(Item::Header { header, at })?,
            LineIn::Record(record) => accept(Item::Record(decode_record(record, at)?))?,
            LineIn::End(end) => {
                self.check_checksum(&end.crc32, at)?;
                self.ended = true;
                accept(Item::End {
                    records: end.records,
                    at,
                })?;
            }
        }
        if !self.ended {
            self.crc.update(line);
        }
        self.line += 1;
        Ok(())
    }

    fn check_checksum(&self, text: &str, at: Position) -> Result<(), TransferError> {
        // Lowercase only: the end line is outside the checksum, so it has one
        // spelling.
        let lowercase_hex = |byte: &u8| byte.is_ascii_digit() || (b'a'..=b'f').contains(byte);
        let declared = (text.len() == 8 && text.as_bytes().iter().all(lowercase_hex))
            .then(|| u32::from_str_radix(text, 16).ok())
            .flatten()
            .ok_or_else(|| {
                let text = text.to_owned();
                TransferError::bad(at, Defect::BadChecksumText { text })
            })?;
        let actual = self.crc.clone().finalize();
        if declared != actual {
            return Err(TransferError::Checksum {
                at,
                declared,
                actual,
            });
        }
        Ok(())
    }
}

/// Parses one line; a first line that is not a header of this version is
/// explained by its `format` and `version` when it has them.
fn parse(text: &[u8], at: Position) -> Result<LineIn, TransferError> {
    serde_json::from_slice(text).map_err(|source| {
        let identity = serde_json::from_slice::<Identity>(text).unwrap_or_default();
        match identity.refusal(at) {
            Some(refusal) if at == Position::Line(1) => refusal,
            _ => TransferError::Json { at, source },
        }
    })
}

fn decode_record(record: RecordIn, at: Position) -> Result<RawRecord, TransferError> {
    let doc = STANDARD
        .decode(record.doc.as_bytes())
        .map_err(|source| TransferError::Base64 {
            at,
            table: record.table.clone(),
            id: record.id.clone(),
            source,
        })?;
    Ok(RawRecord {
        table: record.table,
        id: record.id,
        deleted: record.deleted,
        doc,
        at,
    })
}

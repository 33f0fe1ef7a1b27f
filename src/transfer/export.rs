//! [`Exporter`]: an export file as a stream of bounded chunks.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use super::error::TransferError;
use super::header::{FORMAT_NAME, FORMAT_VERSION, Header, TableEntry};
use super::{Format, binary, ndjson};
use crate::engine::Database;
use crate::engine::{ExportCursor, ExportedRecord};
use crate::schema::TableSchema;

/// Documents per binary records frame: frames of about 1 MiB (blocks of the
/// LZ4 frame are 1 MiB too).
const BINARY_PAGE_BYTES: usize = 1 << 20;
/// Documents per NDJSON chunk: base64 and the JSON rows make the chunk about
/// 1.5 times larger, so about 1 MiB.
const NDJSON_PAGE_BYTES: usize = 640 << 10;

/// What to export.
#[derive(Clone, Debug, PartialEq)]
pub struct ExportOptions {
    /// The tables to export, in this order; `None` (the default) exports every
    /// table in creation order.
    pub tables: Option<Vec<String>>,
    /// Stored in the header beside each table's schema, opaque to the engine
    /// (the HTTP layer keeps access rules here); an import reports it back.
    /// Entries for tables not exported are ignored. Default: empty.
    pub access: BTreeMap<String, serde_json::Value>,
    /// At most this many records per chunk (and per binary frame). Default 1,000.
    pub page_records: usize,
}

impl Default for ExportOptions {
    fn default() -> ExportOptions {
        ExportOptions {
            tables: None,
            access: BTreeMap::new(),
            page_records: 1_000,
        }
    }
}

/// Writes an export file as a sequence of chunks: the header, then pages of
/// records, then the end marker. Each chunk holds about 1 MiB (a page of at
/// most `page_records` records, plus one record beyond the byte budget), and
/// the database's read lock is taken once per chunk, so memory and lock time
/// stay bounded whatever the database's size. Concatenated, the chunks are the
/// file.
///
/// The export is not a snapshot: writes go on between chunks. Every change up
/// to the header's `latest_seq` is in the file; records written later appear
/// with or without their later changes.
///
/// After an error the iterator ends: the chunks already given are not a valid
/// file.
#[derive(Debug)]
pub struct Exporter {
    db: Database,
    format: Format,
    encoder: Encoder,
    schemas: Vec<TableSchema>,
    /// The header, until its chunk is given.
    header: Option<Header>,
    /// The table being read (an index into `schemas`) and where in it.
    table: usize,
    cursor: ExportCursor,
    records: u64,
    page_records: usize,
    done: bool,
}

/// The chunks of one format, with the running checksum.
#[derive(Debug)]
enum Encoder {
    Ndjson(ndjson::Writer),
    Binary(binary::Writer),
}

impl Exporter {
    /// Starts an export of `db`.
    ///
    /// # Errors
    ///
    /// [`TransferError::UnknownTable`] when `options.tables` names a table the
    /// database does not have.
    pub fn new(
        db: Database,
        format: Format,
        options: ExportOptions,
    ) -> Result<Exporter, TransferError> {
        // Read before the schemas: every change up to it is in the records.
        let latest_seq = db.latest_seq();
        let schemas = chosen_schemas(&db, options.tables)?;
        let header = header(&schemas, &options.access, latest_seq);
        let encoder = match format {
            Format::Ndjson => Encoder::Ndjson(ndjson::Writer::default()),
            Format::Binary => Encoder::Binary(binary::Writer::default()),
        };
        Ok(Exporter {
            db,
            format,
            encoder,
            schemas,
            header: Some(header),
            table: 0,
            cursor: ExportCursor::default(),
            records: 0,
            page_records: options.page_records.max(1),
            done: false,
        })
    }

    /// The file's format.
    pub fn format(&self) -> Format {
        self.format
    }

    /// Records written so far.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// The next chunk of the file, or `None` after the end marker.
    ///
    /// # Errors
    ///
    /// [`TransferError::Export`] when a page cannot be read (a table removed
    /// meanwhile); the export is over then.
    pub fn next_chunk(&mut self) -> Option<Result<Vec<u8>, TransferError>> {
        if self.done {
            return None;
        }
        if let Some(header) = self.header.take() {
            return Some(Ok(self.encoder.header(&header)));
        }
        let chunk = self.records_chunk();
        if chunk.is_err() {
            self.done = true;
        }
        Some(chunk)
    }

    /// The next page of records, or the end marker once every table is read.
    fn records_chunk(&mut self) -> Result<Vec<u8>, TransferError> {
        while let Some(schema) = self.schemas.get(self.table) {
            let page = self
                .db
                .export_page(
                    &schema.name,
                    self.cursor,
                    self.page_records,
                    self.encoder.page_bytes(),
                )
                .map_err(|source| TransferError::Export {
                    source: Box::new(source),
                })?;
            match page.next {
                Some(next) => self.cursor = next,
                None => (self.table, self.cursor) = (self.table + 1, ExportCursor::default()),
            }
            if !page.records.is_empty() {
                self.records += page.records.len() as u64;
                return Ok(self.encoder.records(schema, page.records));
            }
        }
        self.done = true;
        Ok(self.encoder.end(self.records))
    }
}

impl Iterator for Exporter {
    type Item = Result<Vec<u8>, TransferError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_chunk()
    }
}

impl std::iter::FusedIterator for Exporter {}

impl Encoder {
    fn header(&mut self, header: &Header) -> Vec<u8> {
        match self {
            Encoder::Ndjson(writer) => writer.header(header),
            Encoder::Binary(writer) => writer.header(header),
        }
    }

    fn records(&mut self, schema: &TableSchema, records: Vec<ExportedRecord>) -> Vec<u8> {
        match self {
            Encoder::Ndjson(writer) => writer.records(schema, records),
            Encoder::Binary(writer) => writer.records(&schema.name, records),
        }
    }

    fn end(&mut self, records: u64) -> Vec<u8> {
        match self {
            Encoder::Ndjson(writer) => writer.end(records),
            Encoder::Binary(writer) => writer.end(records),
        }
    }

    fn page_bytes(&self) -> usize {
        match self {
            Encoder::Ndjson(_) => NDJSON_PAGE_BYTES,
            Encoder::Binary(_) => BINARY_PAGE_BYTES,
        }
    }
}

/// The schemas of the tables asked for, each once, or of every table.
fn chosen_schemas(
    db: &Database,
    tables: Option<Vec<String>>,
) -> Result<Vec<TableSchema>, TransferError> {
    let Some(names) = tables else {
        return Ok(db.schemas());
    };
    let mut schemas: Vec<TableSchema> = Vec::with_capacity(names.len());
    for table in names {
        if schemas.iter().any(|schema| schema.name == table) {
            continue;
        }
        let schema = db
            .schema(&table)
            .ok_or(TransferError::UnknownTable { table })?;
        schemas.push(schema);
    }
    Ok(schemas)
}

fn header(
    schemas: &[TableSchema],
    access: &BTreeMap<String, serde_json::Value>,
    latest_seq: u64,
) -> Header {
    let tables = schemas
        .iter()
        .map(|schema| TableEntry {
            schema: schema.clone(),
            access: access.get(&schema.name).cloned(),
        })
        .collect();
    let created_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
        });
    Header {
        format: FORMAT_NAME.to_owned(),
        version: FORMAT_VERSION,
        created_ms,
        latest_seq,
        tables,
    }
}

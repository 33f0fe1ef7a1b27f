//! [`Importer`]: reads an export file in pieces, checks all of it, then merges it.

use std::collections::{BTreeMap, HashMap, HashSet};

use mobilesyncdb_crdt::{Change, Record};

use super::apply::{self, Staged};
use super::error::{Defect, Position, TransferError};
use super::header::{Header, Item, RawRecord};
use super::{Format, binary, ndjson};
use crate::engine::Database;

/// Bounds on what an import accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImportLimits {
    /// The whole file, in bytes. Default 1 GiB. The importer holds every
    /// record's changes until the whole file has been checked, so its memory
    /// grows in proportion to the file.
    pub max_bytes: usize,
    /// One NDJSON line or one binary frame, in bytes (for a binary frame, also
    /// its decompressed body). Default 8 MiB: export chunks hold about 1 MiB
    /// plus one record, and a record holds at most `max_record_bytes` (1 MiB by
    /// default), a third more in base64.
    pub max_line_bytes: usize,
}

impl Default for ImportLimits {
    fn default() -> ImportLimits {
        ImportLimits {
            max_bytes: 1 << 30,
            max_line_bytes: 8 << 20,
        }
    }
}

/// What an import did. Serialises as the answer of an HTTP import.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct ImportReport {
    /// The file's tables, in its order.
    pub tables: Vec<String>,
    /// The tables the import created (the others existed with the same schema).
    pub created_tables: Vec<String>,
    /// Records in the file.
    pub records: u64,
    /// Records that gained changes (new records included).
    pub changed: u64,
    /// Records the database held with every change already.
    pub unchanged: u64,
    /// What the export stored beside each table's schema (tables without it
    /// are left out), for the caller to restore.
    pub access: BTreeMap<String, serde_json::Value>,
}

/// Imports an export file into a database: [`Importer::push`] takes the file
/// in pieces of any size and checks each line or frame as it completes (its
/// syntax, base64, that every document loads and agrees with its deleted
/// flag, the schemas against the database); [`Importer::finish`] checks the
/// end marker (record count and checksum) and only then writes.
///
/// A file that is damaged, cut off or inconsistent, or that conflicts with the
/// database's schemas, changes nothing. Records are merged as automerge
/// changes (origin `import`), so importing the same file again adds nothing and
/// records the database already had merge with the file's version.
#[derive(Debug)]
pub struct Importer {
    reader: Reader,
    intake: Intake,
    limits: ImportLimits,
    received: usize,
    failed: bool,
}

/// Cuts the pushed bytes into lines or frames.
#[derive(Debug)]
enum Reader {
    Ndjson(ndjson::Reader),
    Binary(binary::Reader),
}

/// What the checked items of the file have given so far.
#[derive(Debug)]
struct Intake {
    db: Database,
    header: Option<Header>,
    /// Table name → index into the header's tables.
    tables: HashMap<String, usize>,
    staged: Vec<Staged>,
    seen: HashSet<(usize, String)>,
    ended: bool,
}

impl Importer {
    /// An import of a file of `format` into `db`.
    pub fn new(db: Database, format: Format, limits: ImportLimits) -> Importer {
        let reader = match format {
            Format::Ndjson => Reader::Ndjson(ndjson::Reader::new(limits.max_line_bytes)),
            Format::Binary => Reader::Binary(binary::Reader::new(limits.max_line_bytes)),
        };
        let intake = Intake {
            db,
            header: None,
            tables: HashMap::new(),
            staged: Vec::new(),
            seen: HashSet::new(),
            ended: false,
        };
        Importer {
            reader,
            intake,
            limits,
            received: 0,
            failed: false,
        }
    }

    /// Records read and checked so far.
    pub fn records(&self) -> u64 {
        self.intake.staged.len() as u64
    }

    /// Reads the next piece of the file. Nothing is written yet.
    ///
    /// # Errors
    ///
    /// The first problem found in the file so far (see [`TransferError::code`]);
    /// the import is over then, and later calls answer [`TransferError::Aborted`].
    pub fn push(&mut self, bytes: &[u8]) -> Result<(), TransferError> {
        if self.failed {
            return Err(TransferError::Aborted);
        }
        let result = self.read(bytes);
        self.failed = result.is_err();
        result
    }

    /// Checks that the file is complete and fits the database, then merges
    /// every record.
    ///
    /// # Errors
    ///
    /// A [`TransferError`] naming what is wrong; the database is unchanged
    /// unless the error is [`TransferError::Interrupted`] (the database refused
    /// a merge the checks could not foresee; importing the file again completes
    /// the import).
    pub fn finish(mut self) -> Result<ImportReport, TransferError> {
        if self.failed {
            return Err(TransferError::Aborted);
        }
        if self.received == 0 {
            return Err(TransferError::Empty);
        }
        let intake = &mut self.intake;
        match &mut self.reader {
            Reader::Ndjson(reader) => reader.finish(&mut |item| intake.accept(item))?,
            Reader::Binary(reader) => reader.finish()?,
        }
        let records = self.records();
        let Intake {
            db,
            header,
            staged,
            ended,
            ..
        } = self.intake;
        match header {
            Some(header) if ended => apply::apply(&db, header, staged),
            _ => Err(TransferError::NoEnd { records }),
        }
    }

    fn read(&mut self, bytes: &[u8]) -> Result<(), TransferError> {
        self.received += bytes.len();
        if self.received > self.limits.max_bytes {
            let limit = self.limits.max_bytes;
            return Err(TransferError::FileTooLarge { limit });
        }
        let intake = &mut self.intake;
        let mut accept = |item| intake.accept(item);
        match &mut self.reader {
            Reader::Ndjson(reader) => reader.push(bytes, &mut accept),
            Reader::Binary(reader) => reader.push(bytes, &mut accept),
        }
    }
}

impl Intake {
    /// Takes one checked item, in file order.
    fn accept(&mut self, item: Item) -> Result<(), TransferError> {
        match item {
            Item::Header { header, at } => self.accept_header(header, at),
            Item::Record(record) => self.accept_record(record),
            Item::End { records, at } => self.accept_end(records, at),
        }
    }

    /// Checks the header, and its schemas against the database now, so that a
    /// conflict is found before the records are sent (and again at the end).
    fn accept_header(&mut self, header: Header, at: Position) -> Result<(), TransferError> {
        if self.header.is_some() {
            return Err(TransferError::bad(at, Defect::SecondHeader));
        }
        header.check(at)?;
        apply::plan_tables(&self.db, &header)?;
        for (index, entry) in header.tables.iter().enumerate() {
            self.tables.insert(entry.schema.name.clone(), index);
        }
        self.header = Some(header);
        Ok(())
    }

    fn accept_record(&mut self, record: RawRecord) -> Result<(), TransferError> {
        let at = record.at;
        if self.header.is_none() {
            return Err(TransferError::bad(at, Defect::HeaderMissing));
        }
        let table = record.table.clone();
        let Some(&index) = self.tables.get(&table) else {
            return Err(TransferError::bad(at, Defect::UnlistedTable { table }));
        };
        if record.id.is_empty() {
            return Err(TransferError::bad(at, Defect::EmptyId { table }));
        }
        if !self.seen.insert((index, record.id.clone())) {
            let id = record.id;
            return Err(TransferError::bad(
                at,
                Defect::DuplicateRecord { table, id },
            ));
        }
        let changes = checked_changes(&record)?;
        self.staged.push(Staged {
            table: index,
            id: record.id,
            changes,
        });
        Ok(())
    }

    fn accept_end(&mut self, declared: u64, at: Position) -> Result<(), TransferError> {
        let found = self.staged.len() as u64;
        if self.header.is_none() {
            return Err(TransferError::bad(at, Defect::HeaderMissing));
        }
        if declared != found {
            return Err(TransferError::CountMismatch { declared, found });
        }
        self.ended = true;
        Ok(())
    }
}

/// Loads a record's document and checks it: it must hold changes, all of
/// their dependencies, and agree with the record's deleted flag. Returns its
/// whole history, which is what the import merges.
fn checked_changes(record: &RawRecord) -> Result<Vec<Change>, TransferError> {
    let at = record.at;
    let names = || (record.table.clone(), record.id.clone());
    let document = Record::load(&record.doc).map_err(|source| {
        let (table, id) = names();
        TransferError::Document {
            at,
            table,
            id,
            source,
        }
    })?;
    let defect = if document.is_empty() {
        let (table, id) = names();
        Defect::EmptyDocument { table, id }
    } else if !document.missing_deps().is_empty() {
        let (table, id) = names();
        let missing = document.missing_deps().len();
        Defect::MissingDependencies { table, id, missing }
    } else if document.is_deleted() != record.deleted {
        let (table, id) = names();
        let flag = record.deleted;
        Defect::DeletedMismatch { table, id, flag }
    } else {
        return Ok(document.changes_since(&[]));
    };
    Err(TransferError::bad(at, defect))
}

//! The write step of an import: schemas checked against the database, the
//! engine's own refusals checked ahead, then missing tables created and every
//! record merged.

use mobilesyncdb_crdt::{Change, ClientId};

use super::error::TransferError;
use super::header::Header;
use super::import::ImportReport;
use crate::engine::{Database, FullAccess};
use crate::schema::TableSchema;

/// The writer every imported change is logged with.
const ORIGIN: &str = "import";

/// A record checked and ready to merge.
#[derive(Debug)]
pub(super) struct Staged {
    /// Index into the header's tables.
    pub(super) table: usize,
    pub(super) id: String,
    /// The record's whole history.
    pub(super) changes: Vec<Change>,
}

/// The header's tables that the database lacks, after checking that the others
/// have the same schema here and that the missing ones can be created.
///
/// # Errors
///
/// [`TransferError::SchemaConflict`] or [`TransferError::BadSchema`].
pub(super) fn plan_tables(
    db: &Database,
    header: &Header,
) -> Result<Vec<TableSchema>, TransferError> {
    let mut missing = Vec::new();
    for entry in &header.tables {
        let incoming = &entry.schema;
        match db.schema(&incoming.name) {
            None => missing.push(incoming.clone()),
            Some(existing) if same_definition(&existing, incoming) => {}
            Some(existing) => {
                return Err(TransferError::SchemaConflict {
                    table: incoming.name.clone(),
                    difference: difference(&existing, incoming),
                });
            }
        }
    }
    db.check_new_tables(&missing)
        .map_err(|source| TransferError::BadSchema {
            source: Box::new(source),
        })?;
    Ok(missing)
}

/// Writes a checked file: nothing is written until every check has passed.
pub(super) fn apply(
    db: &Database,
    header: Header,
    staged: Vec<Staged>,
) -> Result<ImportReport, TransferError> {
    let missing = plan_tables(db, &header)?;
    let name = |index: usize| header.tables[index].schema.name.as_str();
    let candidates = staged.iter().map(|record| {
        (
            name(record.table),
            record.id.as_str(),
            record.changes.as_slice(),
        )
    });
    db.check_import(candidates)
        .map_err(|source| TransferError::Refused {
            source: Box::new(source),
        })?;
    for schema in &missing {
        db.create_table(schema.clone())
            .map_err(|source| TransferError::Refused {
                source: Box::new(source),
            })?;
    }
    let mut report = report(&header, &missing);
    report.records = staged.len() as u64;
    merge_all(db, &header, staged, &mut report)?;
    Ok(report)
}

fn report(header: &Header, created: &[TableSchema]) -> ImportReport {
    let names = |schemas: &mut dyn Iterator<Item = &TableSchema>| {
        schemas.map(|schema| schema.name.clone()).collect()
    };
    let access = header
        .tables
        .iter()
        .filter_map(|entry| Some((entry.schema.name.clone(), entry.access.clone()?)))
        .filter(|(_, access)| !access.is_null())
        .collect();
    ImportReport {
        tables: names(&mut header.tables.iter().map(|entry| &entry.schema)),
        created_tables: names(&mut created.iter()),
        access,
        ..ImportReport::default()
    }
}

/// Merges every record's history; a record the database had whole gets no
/// new sequence number.
fn merge_all(
    db: &Database,
    header: &Header,
    staged: Vec<Staged>,
    report: &mut ImportReport,
) -> Result<(), TransferError> {
    let origin = ClientId::from(ORIGIN);
    let total = staged.len() as u64;
    // The merges share journal syncs; the import is answered after one wait
    // for all of them.
    let writer = db.writer(&FullAccess).deferred();
    for (applied, record) in (0..).zip(staged) {
        let table = &header.tables[record.table].schema.name;
        let outcome = writer
            .merge_changes(table, &record.id, record.changes, &origin)
            .map_err(|source| TransferError::Interrupted {
                table: table.clone(),
                id: record.id.clone(),
                applied,
                total,
                source: Box::new(source),
            })?;
        if outcome.seqs.is_empty() {
            report.unchanged += 1;
        } else {
            report.changed += 1;
        }
    }
    db.acknowledge()
        .map_err(|source| TransferError::NotDurable {
            applied: total,
            source: Box::new(source),
        })?;
    Ok(())
}

/// Two schemas define the same table when they differ at most in their
/// version number (which counts changes, not what they made).
fn same_definition(existing: &TableSchema, incoming: &TableSchema) -> bool {
    let incoming = TableSchema {
        version: existing.version,
        ..incoming.clone()
    };
    *existing == incoming
}

/// What differs between two schemas of a table, for the conflict's message.
fn difference(existing: &TableSchema, incoming: &TableSchema) -> String {
    let mut found = Vec::new();
    if existing.primary_key != incoming.primary_key {
        found.push(format!(
            "primary key `{}` here, `{}` in the file",
            existing.primary_key, incoming.primary_key
        ));
    }
    for field in &incoming.fields {
        match existing.spec(&field.name) {
            None => found.push(format!("field `{}` is only in the file", field.name)),
            Some(here) if here != field => found.push(format!(
                "field `{}` is {} here, {} in the file",
                field.name,
                describe(here),
                describe(field)
            )),
            Some(_) => {}
        }
    }
    for field in &existing.fields {
        if incoming.spec(&field.name).is_none() {
            found.push(format!("field `{}` is only here", field.name));
        }
    }
    if existing.indexes != incoming.indexes {
        found.push("the indexes differ".to_owned());
    }
    if existing.policy != incoming.policy || existing.field_policies != incoming.field_policies {
        found.push("the merge policies differ".to_owned());
    }
    if found.is_empty() {
        // Rows are positional: the same fields in another order differ too.
        found.push("the fields are in another order".to_owned());
    }
    found.join("; ")
}

fn describe(field: &crate::schema::FieldSpec) -> String {
    let required = if field.required { " required" } else { "" };
    match &field.default {
        Some(default) => format!("{}{required} with default {default}", field.kind),
        None => format!("{}{required}", field.kind),
    }
}

//! Local writes: checked and stamped under the client's lock ([`PreparedWrite`]),
//! made on the record's document off the async threads ([`PreparedWrite::perform`]),
//! then stored with their change queued for the next push.

use mobilesyncdb_crdt::{ActorId, ClientId, Edit, Record, StampMeta, Value};

use crate::client::config::ClientConfig;
use crate::client::error::WriteError;
use crate::client::replica::{LocalRecord, LocalRow, Replica, derive_row};
use crate::schema::{FieldType, Fields};
use crate::sync::RecordRef;

/// What a local write does.
#[derive(Clone, Debug)]
pub(crate) enum WriteKind {
    /// Creates the record (or revives a deleted one) with these fields.
    Insert(Fields),
    /// Sets these fields; a null value unsets the field.
    Update(Fields),
    Delete,
}

/// A write checked against the replica, with its stamp and a copy of the record
/// as it was.
#[derive(Debug)]
pub(crate) struct PreparedWrite {
    pub(crate) table: String,
    pub(crate) id: String,
    /// The record as it was when the write was prepared: the write is stored only
    /// if it still is.
    pub(crate) existing: Option<LocalRecord>,
    kind: WriteKind,
    fields: Vec<(String, FieldType)>,
    /// Document keys of the fields (empty: every key is the name).
    keys: Vec<String>,
    actor: ActorId,
    meta: StampMeta,
}

/// A write made on the document: the record's new state and the change to push
/// (`None` when the write changed nothing).
#[derive(Debug)]
pub(crate) struct Written {
    pub(crate) record: LocalRecord,
    pub(crate) change: Option<Vec<u8>>,
}

impl PreparedWrite {
    /// Checks the write against the table's known fields and the stored record,
    /// and stamps it with the replica's clock.
    pub(crate) fn prepare(
        replica: &mut Replica,
        config: &ClientConfig,
        table: &str,
        id: Option<&str>,
        kind: WriteKind,
    ) -> Result<PreparedWrite, WriteError> {
        let unknown_table = || WriteError::UnknownTable {
            table: table.to_owned(),
        };
        if !config.replicates(table) {
            return Err(unknown_table());
        }
        let (fields, keys) = replica
            .tables
            .get(table)
            .map(|local| (local.fields.clone(), local.keys.clone()))
            .unwrap_or_default();
        let key = config.key_of(table);
        let (id, kind) = match kind {
            WriteKind::Insert(values) => {
                let mut values = checked(table, &fields, values)?;
                values.retain(|_, value| !value.is_null());
                (record_id(table, key, &values)?, WriteKind::Insert(values))
            }
            WriteKind::Update(values) => {
                let id = id.unwrap_or_default().to_owned();
                let values = checked(table, &fields, values)?;
                (id, WriteKind::Update(values))
            }
            WriteKind::Delete => (id.unwrap_or_default().to_owned(), WriteKind::Delete),
        };
        let wanted = RecordRef {
            table: table.to_owned(),
            id,
        };
        if replica.refused.contains(&wanted) {
            return Err(WriteError::AwaitingServerCopy {
                table: wanted.table,
                id: wanted.id,
            });
        }
        let id = wanted.id;
        let existing = replica.record(table, &id).cloned();
        let live = existing.as_ref().is_some_and(|record| !record.deleted);
        let kind = match kind {
            WriteKind::Insert(_) if live => {
                return Err(WriteError::AlreadyExists {
                    table: table.to_owned(),
                    id,
                });
            }
            WriteKind::Update(_) | WriteKind::Delete if !live => {
                return Err(WriteError::UnknownRecord {
                    table: table.to_owned(),
                    id,
                });
            }
            WriteKind::Update(values) => {
                let row = existing.as_ref().map(|record| &record.row);
                WriteKind::Update(without_key(table, &id, key, values, row)?)
            }
            kind => kind,
        };
        replica.queue.check_room(table, &id, config.max_queue)?;
        let stamp = replica.clock.tick(config.wall.now_ms());
        Ok(PreparedWrite {
            table: table.to_owned(),
            id,
            existing,
            kind,
            fields,
            keys,
            actor: replica.actor.clone(),
            meta: StampMeta::new(stamp, ClientId::from(config.device.as_str())),
        })
    }

    /// Loads the record's document, writes as this device's actor, and returns
    /// the new state. CPU-bound: run it off async threads.
    pub(crate) fn perform(&self) -> Result<Written, WriteError> {
        let failed = |source| WriteError::Record {
            table: self.table.clone(),
            id: self.id.clone(),
            source,
        };
        let base = self.existing.clone().unwrap_or_default();
        let mut record = if base.bytes.is_empty() {
            Record::new(self.actor.clone())
        } else {
            Record::load(&base.bytes).map_err(failed)?
        };
        record.set_actor(self.actor.clone());
        let (change, row, deleted) = match &self.kind {
            WriteKind::Insert(values) if base.deleted => {
                let change = record
                    .revive(&self.edits(values), &self.meta)
                    .map_err(failed)?;
                let row = derive_row(&record, &self.fields, &self.keys).map_err(failed)?;
                (change, row, false)
            }
            WriteKind::Insert(values) => {
                let change = record
                    .write(&self.edits(values), &self.meta)
                    .map_err(failed)?;
                (change, overlaid(LocalRow::new(), values), false)
            }
            WriteKind::Update(values) => {
                let change = record
                    .write(&self.edits(values), &self.meta)
                    .map_err(failed)?;
                (change, overlaid(base.row.clone(), values), false)
            }
            WriteKind::Delete => {
                let change = record.delete(&self.meta).map_err(failed)?;
                (change, base.row.clone(), true)
            }
        };
        let Some(change) = change else {
            return Ok(Written {
                record: base,
                change: None,
            });
        };
        let mut bytes = base.bytes;
        bytes.extend_from_slice(change.raw_bytes());
        Ok(Written {
            record: LocalRecord {
                bytes,
                row,
                seq: base.seq,
                deleted,
                pending: true,
            },
            change: Some(change.raw_bytes().to_vec()),
        })
    }
}

/// The record id an insert gives in its primary key field.
fn record_id(table: &str, key: &str, values: &Fields) -> Result<String, WriteError> {
    match values.get(key) {
        Some(Value::Str(text)) if !text.is_empty() => Ok(text.to_string()),
        Some(Value::Int(number)) => Ok(number.to_string()),
        _ => Err(WriteError::MissingPrimaryKey {
            table: table.to_owned(),
            field: key.to_owned(),
        }),
    }
}

/// The values checked and coerced against the table's fields, when the client
/// knows them (after the table's first batch); unchecked before.
fn checked(
    table: &str,
    fields: &[(String, FieldType)],
    values: Fields,
) -> Result<Fields, WriteError> {
    if fields.is_empty() {
        return Ok(values);
    }
    values
        .into_iter()
        .map(|(name, value)| {
            let Some((_, kind)) = fields.iter().find(|(field, _)| *field == name) else {
                return Err(WriteError::UnknownField {
                    table: table.to_owned(),
                    field: name,
                });
            };
            match kind.check(value) {
                Ok(value) => Ok((name, value)),
                Err(problem) => Err(WriteError::TypeMismatch {
                    table: table.to_owned(),
                    field: name,
                    problem,
                }),
            }
        })
        .collect()
}

/// An update's values without the primary key, which may only be restated.
fn without_key(
    table: &str,
    id: &str,
    key: &str,
    mut values: Fields,
    row: Option<&LocalRow>,
) -> Result<Fields, WriteError> {
    if let Some(value) = values.remove(key)
        && row.and_then(|row| row.get(key)) != Some(&value)
    {
        return Err(WriteError::PrimaryKeyChange {
            table: table.to_owned(),
            id: id.to_owned(),
            field: key.to_owned(),
        });
    }
    Ok(values)
}

impl PreparedWrite {
    /// The values as edits of the document, each under its field's key.
    fn edits(&self, values: &Fields) -> Vec<Edit> {
        values
            .iter()
            .map(|(field, value)| {
                let key = self
                    .fields
                    .iter()
                    .position(|(name, _)| name == field)
                    .and_then(|position| self.keys.get(position))
                    .unwrap_or(field);
                match value {
                    Value::Null => Edit::unset(key.as_str()),
                    value => Edit::set(key.as_str(), value.clone()),
                }
            })
            .collect()
    }
}

fn overlaid(mut row: LocalRow, values: &Fields) -> LocalRow {
    for (name, value) in values {
        if value.is_null() {
            row.remove(name);
        } else {
            row.insert(name.clone(), value.clone());
        }
    }
    row
}

//! One table: its schema, its records (saved bytes plus visible row), the id map,
//! secondary indexes and the latest-change index.
//!
//! Records live in slots that are never reused: a deleted record keeps its slot
//! (its tombstone must still sync), so a slot number identifies a record for the
//! life of the table and can be kept in indexes, the change log and the cache.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::BuildHasher;

use hashbrown::{DefaultHashBuilder, HashTable};
use mobilesyncdb_crdt::{Edit, MergePolicy, PolicyRegistry, PolicySet, Record, RecordError, Value};

use crate::engine::changelog::Chunk;
use crate::engine::error::{SchemaError, WriteError};
use crate::engine::index::Index;
use crate::engine::query::RowSource;
use crate::engine::row::Row;
use crate::schema::{FieldSpec, FieldType, Fields, TableSchema};

/// The most tables one database holds (table ids are 16 bits in the change log).
pub(crate) const MAX_TABLES: usize = 4_096;

/// A record as the engine keeps it: its document as automerge storage chunks and
/// its visible row.
///
/// A write appends its change chunk, which the change log shares. Chunks are
/// compacted into one saved document only when they pile up: on typical records a
/// saved document is larger than its change chunks, and saving costs time.
#[derive(Debug)]
pub(crate) struct StoredRecord {
    pub(crate) id: Box<str>,
    /// Automerge storage chunks (change chunks or a saved document), in order,
    /// each with the sequence number of the latest change it holds: sync sends a
    /// client only the chunks newer than its cursor.
    pub(crate) chunks: Vec<StoredChunk>,
    /// The sequence number of the record's first change (0 before it has one).
    /// Compaction keeps it: a client whose cursor is past it may hold the record.
    pub(crate) first_seq: u64,
    pub(crate) row: Row,
    pub(crate) latest_seq: u64,
    pub(crate) deleted: bool,
}

/// One storage chunk of a record and the sequence number of its latest change.
#[derive(Debug)]
pub(crate) struct StoredChunk {
    pub(crate) seq: u64,
    pub(crate) bytes: Chunk,
}

impl StoredRecord {
    /// The document's bytes: the chunks concatenated, which automerge loads as one.
    pub(crate) fn saved_bytes(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(self.saved_len());
        for chunk in &self.chunks {
            bytes.extend_from_slice(&chunk.bytes);
        }
        bytes
    }

    pub(crate) fn saved_len(&self) -> usize {
        self.chunks.iter().map(|chunk| chunk.bytes.len()).sum()
    }

    pub(crate) fn load(&self) -> Result<Record, RecordError> {
        match self.chunks.as_slice() {
            [only] => Record::load(&only.bytes),
            _ => Record::load(&self.saved_bytes()),
        }
    }
}

#[derive(Debug)]
pub(crate) struct Table {
    pub(crate) schema: TableSchema,
    pub(crate) policies: PolicySet,
    records: Vec<StoredRecord>,
    ids: HashTable<u32>,
    /// Seeded at random per table (foldhash): ids come from clients.
    hasher: DefaultHashBuilder,
    indexes: Vec<Index>,
    /// While a restore runs, rows change without touching the indexes, which
    /// [`Table::reindex`] then builds at once.
    deferred_indexes: bool,
    /// Latest change seq → slot: which records changed after a cursor, each once.
    by_seq: BTreeMap<u64, u32>,
    /// Slots with a manual conflict still open.
    open_conflicts: BTreeSet<u32>,
    /// Slots that had concurrent values in a field when last seen (a superset
    /// of those that have them now): what a policy change must look at again.
    conflicted: BTreeSet<u32>,
    live: usize,
    /// Heap bytes of the visible rows.
    row_bytes: usize,
    /// Bytes of record ids and of chunk references held by records.
    id_bytes: usize,
    chunk_refs: usize,
    /// A fingerprint of the schema and policies rows are derived under.
    layout: u64,
}

/// A fingerprint of what a table's rows are derived under: its fields, their
/// order and its policies. Cluster nodes compare it before taking a row
/// another node derived.
fn layout_of(schema: &TableSchema) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::hash::DefaultHasher::new();
    serde_json::to_vec(schema)
        .unwrap_or_default()
        .hash(&mut hasher);
    hasher.finish()
}

impl Table {
    /// A table for `schema`, validated, with its policies built from `registry`.
    pub(crate) fn new(
        schema: TableSchema,
        registry: &PolicyRegistry,
    ) -> Result<Table, SchemaError> {
        validate_schema(&schema)?;
        let policies = build_policies(&schema, registry)?;
        let indexes = schema
            .indexes
            .iter()
            .filter_map(|spec| Some(Index::new(schema.position(&spec.field)?, spec.unique)))
            .collect();
        Ok(Table {
            layout: layout_of(&schema),
            schema,
            policies,
            records: Vec::new(),
            ids: HashTable::new(),
            hasher: DefaultHashBuilder::default(),
            indexes,
            deferred_indexes: false,
            by_seq: BTreeMap::new(),
            open_conflicts: BTreeSet::new(),
            conflicted: BTreeSet::new(),
            live: 0,
            row_bytes: 0,
            id_bytes: 0,
            chunk_refs: 0,
        })
    }

    pub(crate) fn name(&self) -> &str {
        &self.schema.name
    }

    /// The fingerprint of the schema and policies this table's rows are
    /// derived under.
    pub(crate) fn layout(&self) -> u64 {
        self.layout
    }

    /// Live (not deleted) records.
    pub(crate) fn live_count(&self) -> usize {
        self.live
    }

    pub(crate) fn slot_of(&self, id: &str) -> Option<u32> {
        let hash = self.hasher.hash_one(id);
        self.ids
            .find(hash, |slot| &*self.records[*slot as usize].id == id)
            .copied()
    }

    pub(crate) fn record(&self, slot: u32) -> &StoredRecord {
        &self.records[slot as usize]
    }

    /// A new, empty slot for `id`.
    pub(crate) fn add_slot(&mut self, id: &str) -> u32 {
        let slot = u32::try_from(self.records.len()).unwrap_or(u32::MAX);
        self.id_bytes += id.len();
        self.records.push(StoredRecord {
            id: id.into(),
            chunks: Vec::new(),
            first_seq: 0,
            row: Row::new(Vec::new()),
            latest_seq: 0,
            deleted: true,
        });
        let hash = self.hasher.hash_one(id);
        let (records, hasher) = (&self.records, &self.hasher);
        self.ids.insert_unique(hash, slot, |slot| {
            hasher.hash_one(&*records[*slot as usize].id)
        });
        slot
    }

    /// Makes row changes skip the indexes until [`Table::reindex`].
    pub(crate) fn defer_indexes(&mut self) {
        self.deferred_indexes = true;
    }

    /// Builds every index from the live rows at once, one index per thread.
    pub(crate) fn reindex(&mut self) {
        self.deferred_indexes = false;
        let (records, schema) = (&self.records, &self.schema);
        let specs: Vec<(usize, bool)> = self
            .indexes
            .iter()
            .map(|index| (index.field_position(), index.is_unique()))
            .collect();
        self.indexes = std::thread::scope(|scope| {
            let handles: Vec<_> = specs
                .iter()
                .map(|&(position, unique)| {
                    scope.spawn(move || build_index(records, schema, position, unique))
                })
                .collect();
            handles
                .into_iter()
                .map(|handle| handle.join().expect("an index build does not panic"))
                .collect()
        });
    }

    /// Moves the table to a new version of its schema, in the engine's form
    /// ([`crate::schema::evolve`]): policies and indexes follow, rows stay as
    /// they are and read through the new fields. Only an index whose keys change
    /// is built: a new one, or one on a field whose type or default changed.
    /// Nothing changes on error.
    pub(crate) fn migrate(
        &mut self,
        schema: TableSchema,
        registry: &PolicyRegistry,
    ) -> Result<(), SchemaError> {
        validate_schema(&schema)?;
        let policies = build_policies(&schema, registry)?;
        let mut old = std::mem::take(&mut self.indexes);
        let mut build = Vec::new();
        for spec in &schema.indexes {
            let Some(position) = schema.position(&spec.field) else {
                continue;
            };
            let same_keys = self.schema.fields.get(position).is_some_and(|before| {
                let after = &schema.fields[position];
                before.kind == after.kind && before.default == after.default
            });
            let kept = old.iter().position(|index| {
                index.field_position() == position && index.is_unique() == spec.unique
            });
            match kept {
                Some(at) if same_keys => self.indexes.push(old.swap_remove(at)),
                _ => build.push((position, spec.unique)),
            }
        }
        self.layout = layout_of(&schema);
        self.schema = schema;
        self.policies = policies;
        for (position, unique) in build {
            let index = if self.deferred_indexes {
                Index::new(position, unique)
            } else {
                build_index(&self.records, &self.schema, position, unique)
            };
            self.indexes.push(index);
        }
        // Dropping a large index takes a while: not under the engine's lock.
        if old.iter().any(|index| index.heap_bytes() > 1 << 20) {
            std::thread::spawn(move || drop(old));
        }
        Ok(())
    }

    /// Every record slot, in slot order.
    pub(crate) fn records(&self) -> &[StoredRecord] {
        &self.records
    }

    /// Adds a record as a snapshot kept it, in the next slot.
    pub(crate) fn restore_record(&mut self, record: StoredRecord, open_conflict: bool) -> u32 {
        let slot = self.add_slot(&record.id);
        let StoredRecord {
            chunks,
            first_seq,
            row,
            latest_seq,
            deleted,
            ..
        } = record;
        self.replace_chunks(slot, chunks);
        self.records[slot as usize].first_seq = first_seq;
        self.set_row(slot, row, deleted, open_conflict);
        if latest_seq != 0 {
            self.touch(slot, latest_seq);
        }
        slot
    }

    /// Appends a storage chunk to a record, with no spare capacity: most records
    /// hold one or two chunks.
    pub(crate) fn push_chunk(&mut self, slot: u32, seq: u64, bytes: Chunk) {
        let record = &mut self.records[slot as usize];
        if record.first_seq == 0 {
            record.first_seq = seq;
        }
        record.chunks.reserve_exact(1);
        record.chunks.push(StoredChunk { seq, bytes });
        self.chunk_refs += 1;
    }

    /// Replaces a record's chunks, returning the old ones.
    pub(crate) fn replace_chunks(
        &mut self,
        slot: u32,
        chunks: Vec<StoredChunk>,
    ) -> Vec<StoredChunk> {
        self.chunk_refs += chunks.len();
        let old = std::mem::replace(&mut self.records[slot as usize].chunks, chunks);
        self.chunk_refs -= old.len();
        old
    }

    /// Records the latest change of a slot.
    pub(crate) fn touch(&mut self, slot: u32, seq: u64) {
        let record = &mut self.records[slot as usize];
        if record.latest_seq != 0 {
            self.by_seq.remove(&record.latest_seq);
        }
        record.latest_seq = seq;
        self.by_seq.insert(seq, slot);
    }

    /// Records changed after `cursor`, each once, oldest first.
    pub(crate) fn changed_after(&self, cursor: u64) -> impl Iterator<Item = (u64, u32)> + '_ {
        self.by_seq
            .range(cursor.saturating_add(1)..)
            .map(|(seq, slot)| (*seq, *slot))
    }

    pub(crate) fn has_open_conflict(&self, slot: u32) -> bool {
        self.open_conflicts.contains(&slot)
    }

    /// Slots with open manual conflicts.
    pub(crate) fn open_conflicts(&self) -> impl Iterator<Item = u32> + '_ {
        self.open_conflicts.iter().copied()
    }

    /// Notes whether a slot may hold concurrent values.
    pub(crate) fn set_conflicted(&mut self, slot: u32, conflicted: bool) {
        if conflicted {
            self.conflicted.insert(slot);
        } else {
            self.conflicted.remove(&slot);
        }
    }

    pub(crate) fn is_conflicted(&self, slot: u32) -> bool {
        self.conflicted.contains(&slot)
    }

    /// Slots that may hold concurrent values.
    pub(crate) fn conflicted(&self) -> Vec<u32> {
        self.conflicted.iter().copied().collect()
    }

    /// Replaces the table's policies (the schema's `policy` and
    /// `field_policies`), built from `registry`; nothing changes on error.
    pub(crate) fn set_policies(
        &mut self,
        schema: TableSchema,
        registry: &PolicyRegistry,
    ) -> Result<(), SchemaError> {
        self.policies = build_policies(&schema, registry)?;
        self.layout = layout_of(&schema);
        self.schema = schema;
        Ok(())
    }

    /// The visible row of `record` under this table's policies, and whether a
    /// manual conflict stays open in it. Every column is derived, removed fields
    /// too (apps on older versions still read them); a field the document has no
    /// value for is marked absent, so that it reads as its default.
    pub(crate) fn derive_row(&self, record: &Record) -> Result<(Row, bool), RecordError> {
        let mut open = false;
        let mut values = Vec::with_capacity(self.schema.fields.len());
        for field in &self.schema.fields {
            let key = field.doc_key();
            let resolution = record.resolve(key, self.policy_of(field))?;
            open |= resolution.open;
            let value = field.kind.coerce(resolution.value);
            values.push((!value.is_null() || record.has_field(key)).then_some(value));
        }
        Ok((Row::with_absent(&values), open))
    }

    /// The merge policy of a field; removed fields take the table's.
    pub(crate) fn policy_of(&self, field: &FieldSpec) -> &dyn MergePolicy {
        if field.retired {
            self.policies.default_policy()
        } else {
            self.policies.for_field(&field.name)
        }
    }

    /// The field, removed or not, whose values are under `key` in documents.
    pub(crate) fn field_of_key(&self, key: &str) -> Option<(usize, &FieldSpec)> {
        let position = self.schema.position_of_key(key)?;
        Some((position, &self.schema.fields[position]))
    }

    /// The field names of document keys (a key no field has stays as it is).
    pub(crate) fn names_of_keys(&self, keys: Vec<String>) -> Vec<String> {
        keys.into_iter()
            .map(|key| match self.field_of_key(&key) {
                Some((_, field)) => field.name.clone(),
                None => key,
            })
            .collect()
    }

    /// The document key of the field named `name` (`name` itself when there is
    /// no such field).
    pub(crate) fn key_of<'a>(&'a self, name: &'a str) -> &'a str {
        self.schema.spec(name).map_or(name, FieldSpec::doc_key)
    }

    /// The merge policy of the values under a document key.
    pub(crate) fn policy_of_key(&self, key: &str) -> &dyn MergePolicy {
        match self.field_of_key(key) {
            Some((_, field)) => self.policy_of(field),
            None => self.policies.default_policy(),
        }
    }

    /// The value of the field at `position` in a row, as the field reads it.
    pub(crate) fn read(&self, row: &Row, position: usize) -> Value {
        read_field(&self.schema, row, position)
    }

    /// What a record's document shows: its visible row (empty when deleted),
    /// whether a manual conflict is open, and whether it is deleted.
    pub(crate) fn derive(&self, record: &Record) -> Result<(Row, bool, bool), RecordError> {
        if record.is_deleted() {
            return Ok((Row::new(Vec::new()), false, true));
        }
        let (row, open) = self.derive_row(record)?;
        Ok((row, open, false))
    }

    /// Replaces a slot's row (and liveness), keeping indexes in step.
    pub(crate) fn set_row(&mut self, slot: u32, row: Row, deleted: bool, open_conflict: bool) {
        let record = &mut self.records[slot as usize];
        let was_live = !record.deleted;
        self.row_bytes = self.row_bytes + row.heap_bytes() - record.row.heap_bytes();
        let old_row = std::mem::replace(&mut record.row, row);
        record.deleted = deleted;
        let new_row = &self.records[slot as usize].row;
        let indexes = if self.deferred_indexes {
            &mut [][..]
        } else {
            &mut self.indexes[..]
        };
        let schema = &self.schema;
        for index in indexes {
            let position = index.field_position();
            let old_key = was_live.then(|| read_field(schema, &old_row, position));
            let new_key = (!deleted).then(|| read_field(schema, new_row, position));
            if old_key == new_key {
                continue;
            }
            if let Some(key) = old_key {
                index.remove(&key, slot);
            }
            if let Some(key) = new_key {
                index.insert(&key, slot);
            }
        }
        self.live = self.live + usize::from(!deleted) - usize::from(was_live);
        if open_conflict && !deleted {
            self.open_conflicts.insert(slot);
        } else {
            self.open_conflicts.remove(&slot);
        }
    }

    /// Refuses a row whose unique keys another live record holds.
    pub(crate) fn check_unique(
        &self,
        slot: Option<u32>,
        row: &Row,
        record_id: &str,
    ) -> Result<(), WriteError> {
        for index in self.indexes.iter().filter(|index| index.is_unique()) {
            let key = self.read(row, index.field_position());
            if let Some(holder) = index.holder(&key, slot.unwrap_or(u32::MAX)) {
                return Err(WriteError::UniqueViolation {
                    table: self.name().to_owned(),
                    record: record_id.to_owned(),
                    field: self.schema.fields[index.field_position()].name.clone(),
                    holder: self.records[holder as usize].id.to_string(),
                });
            }
        }
        Ok(())
    }

    /// Re-derives every visible row from its saved document and rebuilds the
    /// indexes from the rows. Returns how many rows differed from what was kept,
    /// or the first record whose document cannot be read.
    pub(crate) fn rebuild(&mut self) -> Result<usize, (String, RecordError)> {
        let mut derived = Vec::with_capacity(self.records.len());
        for stored in &self.records {
            if stored.chunks.is_empty() {
                derived.push((Row::new(Vec::new()), true, false));
                continue;
            }
            let failed = |error| (stored.id.to_string(), error);
            let record = stored.load().map_err(failed)?;
            let (row, open, deleted) = self.derive(&record).map_err(failed)?;
            derived.push((row, deleted, open));
        }
        for index in &mut self.indexes {
            *index = Index::new(index.field_position(), index.is_unique());
        }
        self.open_conflicts.clear();
        self.live = 0;
        let mut differing = 0;
        for (slot, (row, deleted, open)) in derived.into_iter().enumerate() {
            let stored = &mut self.records[slot];
            differing += usize::from(stored.row != row || stored.deleted != deleted);
            // Start from "deleted" so that set_row indexes the row afresh.
            stored.deleted = true;
            self.set_row(slot as u32, row, deleted, open);
        }
        Ok(differing)
    }

    /// Heap bytes of the visible rows.
    pub(crate) fn row_bytes(&self) -> usize {
        self.row_bytes
    }

    /// Heap bytes of the indexes and the latest-change index.
    pub(crate) fn index_bytes(&self) -> usize {
        let indexes: usize = self.indexes.iter().map(Index::heap_bytes).sum();
        indexes + self.by_seq.len() * BTREE_ENTRY_BYTES
    }

    /// Heap bytes of the record slots, their ids and chunk lists, and the id map.
    pub(crate) fn record_bytes(&self) -> usize {
        self.records.capacity() * std::mem::size_of::<StoredRecord>()
            + self.id_bytes
            + self.chunk_refs * std::mem::size_of::<StoredChunk>()
            + self.ids.capacity() * (std::mem::size_of::<u32>() + 1)
    }

    /// The id of a new record from its fields, and the edits that create it
    /// (defaults filled in, values checked against the schema).
    pub(crate) fn prepare_insert(
        &self,
        fields: &Fields,
    ) -> Result<(String, Vec<Edit>), WriteError> {
        let id = self.record_id(fields)?;
        let mut edits = Vec::with_capacity(self.schema.fields.len());
        for name in fields.keys() {
            if self.schema.spec(name).is_none() {
                return Err(self.unknown_field(&id, name));
            }
        }
        for spec in self.schema.live_fields() {
            let given = fields.get(&spec.name).filter(|value| !value.is_null());
            let value = match (given, &spec.default) {
                (Some(value), _) => self.checked(&id, &spec.name, spec.kind, value.clone())?,
                (None, Some(default)) => spec.kind.from_json(default).unwrap_or(Value::Null),
                (None, None) => Value::Null,
            };
            if value.is_null() {
                if spec.required {
                    return Err(WriteError::MissingRequired {
                        table: self.name().to_owned(),
                        record: id,
                        field: spec.name.clone(),
                    });
                }
                continue;
            }
            edits.push(Edit::Set {
                field: spec.doc_key().to_owned(),
                value,
            });
        }
        Ok((id, edits))
    }

    /// Edits an app on schema version `version` made (`view` is this table's
    /// schema in that version), as edits of the current version's fields by
    /// name, and edits by document key of the fields the current version
    /// removed (apps on older versions still read them). Values are checked
    /// against the app's types and converted to the current ones.
    pub(crate) fn translate(
        &self,
        view: &TableSchema,
        version: u32,
        id: &str,
        edits: Vec<Edit>,
    ) -> Result<(Vec<Edit>, Vec<Edit>), WriteError> {
        let mut named = Vec::with_capacity(edits.len());
        let mut removed = Vec::new();
        for edit in edits {
            let name = edit.field().to_owned();
            let spec = view
                .spec(&name)
                .ok_or_else(|| self.unknown_field(id, &name))?;
            let Some((_, field)) = self.field_of_key(spec.doc_key()) else {
                return Err(self.unknown_field(id, &name));
            };
            let key = field.doc_key().to_owned();
            let edit = match edit {
                Edit::Set { value, .. } => {
                    let value = self.checked(id, &name, spec.kind, value)?;
                    if field.retired {
                        removed.push(Edit::Set { field: key, value });
                        continue;
                    }
                    let converted = field.kind.convert(value.clone()).ok_or_else(|| {
                        WriteError::Untranslatable {
                            table: self.name().to_owned(),
                            record: id.to_owned(),
                            field: name.clone(),
                            version,
                            problem: format!(
                                "the {} value does not convert to {}",
                                value.kind(),
                                field.kind
                            ),
                        }
                    })?;
                    Edit::Set {
                        field: field.name.clone(),
                        value: converted,
                    }
                }
                Edit::Unset { .. } if field.retired => {
                    removed.push(Edit::Unset { field: key });
                    continue;
                }
                Edit::Unset { .. } => Edit::Unset {
                    field: field.name.clone(),
                },
                Edit::Increment { by, .. } if !field.retired => Edit::Increment {
                    field: field.name.clone(),
                    by,
                },
                Edit::Increment { .. } => return Err(self.unknown_field(id, &name)),
            };
            named.push(edit);
        }
        Ok((named, removed))
    }

    /// Checks a patch of an existing record against the schema; the edits come
    /// back keyed by the fields' document keys.
    pub(crate) fn prepare_patch(
        &self,
        id: &str,
        edits: Vec<Edit>,
    ) -> Result<Vec<Edit>, WriteError> {
        edits
            .into_iter()
            .map(|edit| self.check_edit(id, edit))
            .collect()
    }

    fn check_edit(&self, id: &str, edit: Edit) -> Result<Edit, WriteError> {
        let spec = self
            .schema
            .spec(edit.field())
            .ok_or_else(|| self.unknown_field(id, edit.field()))?;
        if spec.name == self.schema.primary_key {
            return Err(WriteError::PrimaryKeyChange {
                table: self.name().to_owned(),
                record: id.to_owned(),
                field: spec.name.clone(),
            });
        }
        let key = spec.doc_key().to_owned();
        match edit {
            Edit::Set { field, value } => {
                let value = self.checked(id, &field, spec.kind, value)?;
                if value.is_null() && spec.required {
                    return Err(WriteError::MissingRequired {
                        table: self.name().to_owned(),
                        record: id.to_owned(),
                        field,
                    });
                }
                Ok(Edit::Set { field: key, value })
            }
            Edit::Unset { field } if spec.required => Err(WriteError::MissingRequired {
                table: self.name().to_owned(),
                record: id.to_owned(),
                field,
            }),
            Edit::Increment { field, .. } if spec.kind != FieldType::Counter => {
                Err(WriteError::NotACounter {
                    table: self.name().to_owned(),
                    record: id.to_owned(),
                    field,
                    kind: spec.kind,
                })
            }
            Edit::Unset { .. } => Ok(Edit::Unset { field: key }),
            Edit::Increment { by, .. } => Ok(Edit::Increment { field: key, by }),
        }
    }

    fn record_id(&self, fields: &Fields) -> Result<String, WriteError> {
        let key = &self.schema.primary_key;
        let id = match fields.get(key) {
            Some(Value::Str(text)) if !text.is_empty() => text.to_string(),
            Some(Value::Int(number)) => number.to_string(),
            Some(Value::Float(number)) if number.fract() == 0.0 => (*number as i64).to_string(),
            _ => {
                return Err(WriteError::MissingPrimaryKey {
                    table: self.name().to_owned(),
                    field: key.clone(),
                });
            }
        };
        Ok(id)
    }

    fn checked(
        &self,
        id: &str,
        field: &str,
        kind: FieldType,
        value: Value,
    ) -> Result<Value, WriteError> {
        kind.check(value)
            .map_err(|mismatch| WriteError::TypeMismatch {
                table: self.name().to_owned(),
                record: id.to_owned(),
                field: field.to_owned(),
                problem: mismatch.to_string(),
            })
    }

    fn unknown_field(&self, id: &str, field: &str) -> WriteError {
        WriteError::UnknownField {
            table: self.name().to_owned(),
            record: id.to_owned(),
            field: field.to_owned(),
        }
    }
}

/// An index on the field at `position`, built from the live rows at once.
fn build_index(
    records: &[StoredRecord],
    schema: &TableSchema,
    position: usize,
    unique: bool,
) -> Index {
    let entries = records
        .iter()
        .enumerate()
        .filter(|(_, record)| !record.deleted)
        .map(|(slot, record)| (read_field(schema, &record.row, position), slot as u32))
        .collect();
    Index::from_entries(position, unique, entries)
}

/// The value of the field at `position` in a row, as the field reads it.
fn read_field(schema: &TableSchema, row: &Row, position: usize) -> Value {
    match schema.fields.get(position) {
        Some(field) => row.read(position, field),
        None => Value::Null,
    }
}

/// Approximate bytes of one `BTreeMap<u64, u32>` entry including node overhead.
const BTREE_ENTRY_BYTES: usize = 24;

impl RowSource for Table {
    fn schema(&self) -> &TableSchema {
        &self.schema
    }

    fn slot_count(&self) -> u32 {
        u32::try_from(self.records.len()).unwrap_or(u32::MAX)
    }

    fn live_row(&self, slot: u32) -> Option<&Row> {
        let record = self.records.get(slot as usize)?;
        (!record.deleted).then_some(&record.row)
    }

    fn record_id(&self, slot: u32) -> &str {
        &self.records[slot as usize].id
    }

    fn index_on(&self, position: usize) -> Option<&Index> {
        self.indexes
            .iter()
            .find(|index| index.field_position() == position)
    }
}

fn validate_schema(schema: &TableSchema) -> Result<(), SchemaError> {
    let table = || schema.name.clone();
    if !valid_table_name(&schema.name) {
        return Err(SchemaError::BadTableName { table: table() });
    }
    let mut seen = BTreeSet::new();
    let mut keys = BTreeSet::new();
    for field in &schema.fields {
        if field.name.is_empty()
            || field.name.len() > 64
            || field.name.starts_with('_')
            || field.doc_key().starts_with('_')
        {
            return Err(SchemaError::BadFieldName {
                table: table(),
                field: field.name.clone(),
            });
        }
        if !keys.insert(field.doc_key()) || (!field.retired && !seen.insert(field.name.as_str())) {
            return Err(SchemaError::DuplicateField {
                table: table(),
                field: field.name.clone(),
            });
        }
        if let Some(default) = &field.default {
            field
                .kind
                .from_json(default)
                .map_err(|problem| SchemaError::BadDefault {
                    table: table(),
                    field: field.name.clone(),
                    problem: problem.to_string(),
                })?;
        }
    }
    let key = schema
        .spec(&schema.primary_key)
        .ok_or_else(|| SchemaError::UnknownPrimaryKey {
            table: table(),
            field: schema.primary_key.clone(),
        })?;
    if !matches!(key.kind, FieldType::String | FieldType::Integer) {
        return Err(SchemaError::BadPrimaryKeyType {
            table: table(),
            field: key.name.clone(),
            kind: key.kind,
        });
    }
    for index in &schema.indexes {
        let spec = schema
            .spec(&index.field)
            .ok_or_else(|| SchemaError::UnknownIndexField {
                table: table(),
                field: index.field.clone(),
            })?;
        if matches!(spec.kind, FieldType::Json) {
            return Err(SchemaError::UnindexableField {
                table: table(),
                field: spec.name.clone(),
                kind: spec.kind,
            });
        }
    }
    Ok(())
}

fn valid_table_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && !name.starts_with('_')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn build_policies(
    schema: &TableSchema,
    registry: &PolicyRegistry,
) -> Result<PolicySet, SchemaError> {
    let bad_policy = |field: &str, problem: String| SchemaError::BadPolicy {
        table: schema.name.clone(),
        field: field.to_owned(),
        problem,
    };
    let default = schema
        .policy
        .build(registry)
        .map_err(|error| bad_policy("*", error.to_string()))?;
    let mut policies = PolicySet::new(default);
    for (field, spec) in &schema.field_policies {
        if schema.spec(field).is_none() {
            return Err(bad_policy(field, "no such field".to_owned()));
        }
        let policy = spec
            .build(registry)
            .map_err(|error| bad_policy(field, error.to_string()))?;
        policies = policies.with_field(field.clone(), policy);
    }
    Ok(policies)
}

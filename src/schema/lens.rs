//! Lenses: a table as an app on one schema version sees it.
//!
//! Records keep one set of columns for life (see [`super::migrate`]); a version
//! is a choice of columns, each with that version's name, type and default. A
//! pull reads rows through the lens of the app's version, so an app on version 1
//! and one on version 3 get the same record in their own shapes; a push from an
//! older app is translated back by the engine ([`crate::engine::Writer::schema_version`]).
//! Change chunks travel untouched: documents hold values under keys that no
//! version renames, and each app names the keys its fields write.

use mobilesyncdb_crdt::Value;

use super::{FieldSpec, FieldType, TableSchema};
use crate::engine::Row;

/// One table as a schema version shows it, over the current rows.
#[derive(Clone, Debug)]
pub struct Lens {
    table: String,
    fields: Vec<LensField>,
    /// Some field's name differs from its document key.
    renamed: bool,
    /// Every field reads its current column as it is (the current version).
    identity: bool,
}

#[derive(Clone, Debug)]
struct LensField {
    spec: FieldSpec,
    /// The field's column in the current rows.
    column: Option<usize>,
}

impl Lens {
    /// `view` (the table in the app's version, the engine's form) over rows of
    /// `current` (the table now).
    pub fn new(view: &TableSchema, current: &TableSchema) -> Lens {
        let fields: Vec<LensField> = view
            .live_fields()
            .map(|spec| LensField {
                spec: spec.clone(),
                column: current.position_of_key(spec.doc_key()),
            })
            .collect();
        let renamed = fields.iter().any(|field| field.spec.key.is_some());
        let identity = view.fields == current.fields;
        Lens {
            table: current.name.clone(),
            fields,
            renamed,
            identity,
        }
    }

    /// The current version of `table`: its live fields as they are.
    pub fn current(schema: &TableSchema) -> Lens {
        Lens::new(schema, schema)
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    /// The fields, in order, with their types.
    pub fn fields(&self) -> Vec<(String, FieldType)> {
        self.fields
            .iter()
            .map(|field| (field.spec.name.clone(), field.spec.kind))
            .collect()
    }

    /// The document key of each field, when some differs from its name (empty
    /// otherwise: every key is the name).
    pub fn keys(&self) -> Vec<String> {
        if !self.renamed {
            return Vec::new();
        }
        self.fields
            .iter()
            .map(|field| field.spec.doc_key().to_owned())
            .collect()
    }

    /// The position of the field whose values are under `key`.
    pub fn position_of_key(&self, key: &str) -> Option<usize> {
        self.fields
            .iter()
            .position(|field| field.spec.doc_key() == key)
    }

    /// How many fields.
    pub fn len(&self) -> usize {
        self.fields.len()
    }

    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// The value of field `position` in a current row, as this version reads it.
    pub fn read(&self, row: &Row, position: usize) -> Value {
        let field = &self.fields[position];
        match field.column {
            Some(column) => row.read(column, &field.spec),
            None => field.spec.default_value(),
        }
    }

    /// Whether this lens is the current version itself.
    pub fn is_identity(&self) -> bool {
        self.identity
    }

    /// The field named `name` in this version.
    pub fn spec(&self, name: &str) -> Option<&FieldSpec> {
        self.fields
            .iter()
            .map(|field| &field.spec)
            .find(|spec| spec.name == name)
    }
}

//! Migrations: a table's next schema in the engine's form, the history of
//! versions apps state, and the report of what a migration did or what blocks it.
//!
//! The engine never rewrites records for a migration. Each field keeps the key
//! its values have in record documents for life (a rename changes only the
//! name), a removed field stays as a retired column that older versions still
//! read, and a new field takes a new column. Every version is then a lens over
//! the same documents: its fields, by key, read through their own types and
//! defaults ([`FieldType::read`](super::FieldType::read)).

use serde::{Deserialize, Serialize};

use super::{FieldSpec, SchemaDiff, SchemaDoc, TableSchema};

/// `target` (a table as a schema document gives it) as the next version of
/// `current` (the engine's form, with keys and retired fields): fields matched
/// by name or declared rename keep their key and column; fields `target` no
/// longer has are retired; new fields are appended with a fresh key.
pub fn evolve(current: &TableSchema, target: &TableSchema, version: u32) -> TableSchema {
    let claimed = |name: &str| current.spec(name).is_some();
    let mut fields: Vec<FieldSpec> = Vec::with_capacity(current.fields.len() + 1);
    let mut matched = vec![false; target.fields.len()];
    for field in &current.fields {
        if field.retired {
            fields.push(field.clone());
            continue;
        }
        let found = target
            .fields
            .iter()
            .position(|new| new.name == field.name)
            .or_else(|| {
                target.fields.iter().position(|new| {
                    new.renamed_from.as_deref() == Some(field.name.as_str()) && !claimed(&new.name)
                })
            });
        match found {
            Some(at) if !matched[at] => {
                matched[at] = true;
                let new = &target.fields[at];
                fields.push(FieldSpec {
                    name: new.name.clone(),
                    kind: new.kind,
                    required: new.required,
                    default: new.default.clone(),
                    renamed_from: None,
                    key: (new.name != field.doc_key()).then(|| field.doc_key().to_owned()),
                    retired: false,
                });
            }
            _ => fields.push(FieldSpec {
                retired: true,
                key: Some(field.doc_key().to_owned()),
                renamed_from: None,
                ..field.clone()
            }),
        }
    }
    for (new, _) in target
        .fields
        .iter()
        .zip(&matched)
        .filter(|(_, done)| !**done)
    {
        let taken = |key: &str| fields.iter().any(|field| field.doc_key() == key);
        let key = if taken(&new.name) {
            let mut n = version;
            while taken(&format!("{}@{n}", new.name)) {
                n += 1;
            }
            Some(format!("{}@{n}", new.name))
        } else {
            None
        };
        fields.push(FieldSpec {
            renamed_from: None,
            key,
            retired: false,
            ..new.clone()
        });
    }
    TableSchema {
        name: target.name.clone(),
        version: current.version + 1,
        primary_key: target.primary_key.clone(),
        fields,
        indexes: target.indexes.clone(),
        policy: target.policy.clone(),
        field_policies: target.field_policies.clone(),
    }
}

/// A new table from a schema document, in the engine's form.
pub fn fresh(target: &TableSchema) -> TableSchema {
    let mut table = target.clone();
    table.version = 1;
    for field in &mut table.fields {
        field.renamed_from = None;
        field.key = None;
        field.retired = false;
    }
    table
}

/// Every schema version of a database, oldest first, with its tables in the
/// engine's form. Version 0 holds the tables made before any document was
/// applied. Tables created or re-policied at run time amend the current version.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SchemaHistory {
    versions: Vec<SchemaDoc>,
}

impl Default for SchemaHistory {
    fn default() -> Self {
        SchemaHistory {
            versions: vec![SchemaDoc::default()],
        }
    }
}

impl SchemaHistory {
    /// The current version.
    pub fn current(&self) -> &SchemaDoc {
        self.versions.last().expect("the history is never empty")
    }

    /// The current version's number.
    pub fn version(&self) -> u32 {
        self.current().version
    }

    /// The oldest version apps may still state.
    pub fn min_client_version(&self) -> u32 {
        self.current().min_client_version
    }

    /// Version `version`, if the database had it.
    pub fn at(&self, version: u32) -> Option<&SchemaDoc> {
        self.versions
            .binary_search_by_key(&version, |doc| doc.version)
            .ok()
            .map(|at| &self.versions[at])
    }

    /// Every version, oldest first.
    pub fn versions(&self) -> &[SchemaDoc] {
        &self.versions
    }

    /// Adds the next version.
    pub fn push(&mut self, doc: SchemaDoc) {
        self.versions.push(doc);
    }

    /// Replaces (or adds) a table of the current version.
    pub fn amend(&mut self, table: &TableSchema) {
        let current = self
            .versions
            .last_mut()
            .expect("the history is never empty");
        match current
            .tables
            .iter_mut()
            .find(|known| known.name == table.name)
        {
            Some(known) => *known = table.clone(),
            None => current.tables.push(table.clone()),
        }
    }

    /// Sets the oldest version apps may state.
    pub fn set_min_client_version(&mut self, version: u32) {
        let current = self
            .versions
            .last_mut()
            .expect("the history is never empty");
        current.min_client_version = version;
    }
}

/// What a migration did, or why it did nothing.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MigrationReport {
    /// The changes from the current version to the document.
    pub diff: SchemaDiff,
    /// What the engine does for each change.
    pub steps: Vec<String>,
    /// What stops the migration; empty when it can be applied.
    pub blockers: Vec<Blocker>,
    /// The document became the current version.
    pub applied: bool,
}

/// A change that cannot be migrated automatically, and the records it concerns.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Blocker {
    pub table: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    pub problem: String,
    /// How many records block it (0 when no record is at fault).
    pub records: u64,
    /// The first of them, with the value at fault.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub examples: Vec<BlockedRecord>,
}

impl std::fmt::Display for Blocker {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.field {
            Some(field) => write!(
                formatter,
                "table {}, field {field}: {}",
                self.table, self.problem
            ),
            None => write!(formatter, "table {}: {}", self.table, self.problem),
        }
    }
}

/// A record that blocks a migration.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BlockedRecord {
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<serde_json::Value>,
}

/// How many blocked records a report lists by id.
pub const BLOCKED_EXAMPLES: usize = 20;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::FieldType;

    fn v1() -> TableSchema {
        TableSchema::new("todos", "id")
            .field(FieldSpec::new("title", FieldType::String))
            .field(FieldSpec::new("legacy", FieldType::String))
    }

    #[test]
    fn renames_keep_keys_and_removals_retire() {
        let target = TableSchema::new("todos", "id")
            .field(FieldSpec::new("name", FieldType::String).renamed_from("title"))
            .field(FieldSpec::new("priority", FieldType::Integer));
        let v2 = evolve(&fresh(&v1()), &target, 2);
        let by_name = |name: &str| v2.fields.iter().find(|f| f.name == name).cloned();
        assert_eq!(
            by_name("name").map(|f| f.doc_key().to_owned()),
            Some("title".into())
        );
        assert!(by_name("legacy").is_some_and(|f| f.retired));
        assert_eq!(v2.position("priority"), Some(3));
        assert_eq!(v2.position("legacy"), None);
        assert_eq!(v2.version, 2);
    }

    #[test]
    fn a_reused_name_gets_a_fresh_key() {
        let v2 = evolve(
            &fresh(&v1()),
            &TableSchema::new("todos", "id").field(FieldSpec::new("title", FieldType::String)),
            2,
        );
        let target = TableSchema::new("todos", "id")
            .field(FieldSpec::new("title", FieldType::String))
            .field(FieldSpec::new("legacy", FieldType::Integer));
        let v3 = evolve(&v2, &target, 3);
        let live = v3.spec("legacy").expect("the new field");
        assert_eq!(live.doc_key(), "legacy@3");
        assert_eq!(v3.position_of_key("legacy"), Some(2));
        assert_eq!(v3.position("legacy"), Some(3));
    }
}

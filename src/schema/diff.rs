//! The difference between two schema versions, for people and programs.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use mobilesyncdb_crdt::PolicySpec;
use serde::Serialize;

use super::migrate::Blocker;
use super::{Converter, FieldSpec, FieldType, SchemaDoc, TableSchema};

/// What changed from one schema document to another.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SchemaDiff {
    pub from_version: u32,
    pub to_version: u32,
    /// `Some((old, new))` when the minimum supported app version changed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_client_version: Option<(u32, u32)>,
    pub tables: Vec<TableChange>,
    /// The primary key of each changed table in the new version, to tell a
    /// type change of the key from one of another field.
    #[serde(skip)]
    primary_keys: BTreeMap<String, String>,
}

/// A table's change.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum TableChange {
    Added {
        table: TableSchema,
    },
    Removed {
        table: String,
    },
    Changed {
        table: String,
        fields: Vec<FieldChange>,
    },
}

/// A change inside a table.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum FieldChange {
    FieldAdded {
        field: String,
        #[serde(rename = "type")]
        kind: FieldType,
        required: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        default: Option<serde_json::Value>,
    },
    FieldRemoved {
        field: String,
        #[serde(rename = "type")]
        kind: FieldType,
    },
    FieldRenamed {
        from: String,
        to: String,
    },
    TypeChanged {
        field: String,
        from: FieldType,
        to: FieldType,
        /// `None`: no converter between the types.
        converter: Option<Converter>,
    },
    RequiredChanged {
        field: String,
        required: bool,
    },
    DefaultChanged {
        field: String,
        from: Option<serde_json::Value>,
        to: Option<serde_json::Value>,
    },
    IndexAdded {
        field: String,
        unique: bool,
    },
    IndexRemoved {
        field: String,
        unique: bool,
    },
    /// `field` is `None` for the table's policy.
    PolicyChanged {
        #[serde(skip_serializing_if = "Option::is_none")]
        field: Option<String>,
        from: Option<PolicySpec>,
        to: Option<PolicySpec>,
    },
    PrimaryKeyChanged {
        from: String,
        to: String,
    },
}

impl SchemaDiff {
    /// The changes from `old` to `new`.
    ///
    /// Tables are matched by name and come in `new`'s order, then the removed
    /// ones in `old`'s. Fields are matched by name, or through a declared
    /// `renamed_from` when the new name is not in `old` and the old name is not
    /// in `new`; removed fields (`retired`) and the server's `key`s are
    /// ignored, as is each table's own `version`. A table's changes come as
    /// renames, removals, additions, type changes, required flags, defaults,
    /// indexes, policies and the primary key, each group in field order.
    pub fn between(old: &SchemaDoc, new: &SchemaDoc) -> SchemaDiff {
        let mut tables = Vec::new();
        let mut primary_keys = BTreeMap::new();
        for table in &new.tables {
            match old.table(&table.name) {
                None => tables.push(TableChange::Added {
                    table: table.public(),
                }),
                Some(before) => {
                    let fields = table_changes(before, table);
                    if !fields.is_empty() {
                        primary_keys.insert(table.name.clone(), table.primary_key.clone());
                        tables.push(TableChange::Changed {
                            table: table.name.clone(),
                            fields,
                        });
                    }
                }
            }
        }
        for table in &old.tables {
            if new.table(&table.name).is_none() {
                tables.push(TableChange::Removed {
                    table: table.name.clone(),
                });
            }
        }
        SchemaDiff {
            from_version: old.version,
            to_version: new.version,
            min_client_version: (old.min_client_version != new.min_client_version)
                .then_some((old.min_client_version, new.min_client_version)),
            tables,
            primary_keys,
        }
    }

    /// Whether `field` of the changed table `table` is its primary key.
    fn is_primary_key(&self, table: &str, field: &str) -> bool {
        self.primary_keys.get(table).is_some_and(|key| key == field)
    }

    /// True when nothing changed.
    pub fn is_empty(&self) -> bool {
        self.min_client_version.is_none() && self.tables.is_empty()
    }

    /// The changes no migration can make, whatever the records hold: a type
    /// change without a converter, a change of a primary key's type or of which
    /// field is the primary key, a removed table. Each names its table and field;
    /// the engine adds the records concerned.
    pub fn blockers_without_data(&self) -> Vec<Blocker> {
        let blocker = |table: &str, field: Option<&str>, problem: String| Blocker {
            table: table.to_owned(),
            field: field.map(str::to_owned),
            problem,
            records: 0,
            examples: Vec::new(),
        };
        let mut blockers = Vec::new();
        for change in &self.tables {
            match change {
                TableChange::Added { .. } => {}
                TableChange::Removed { table } => blockers.push(blocker(
                    table,
                    None,
                    "tables are not removed by a migration: keep the table in the document \
                     (older apps may still sync it)"
                        .to_owned(),
                )),
                TableChange::Changed { table, fields } => {
                    for change in fields {
                        match change {
                            FieldChange::TypeChanged {
                                field, from, to, ..
                            } if self.is_primary_key(table, field) => blockers.push(blocker(
                                table,
                                Some(field),
                                format!("the primary key's type does not change ({from} → {to})"),
                            )),
                            FieldChange::TypeChanged {
                                field,
                                from,
                                to,
                                converter: None,
                                ..
                            } => blockers.push(blocker(
                                table,
                                Some(field),
                                format!("no converter from {from} to {to}"),
                            )),
                            FieldChange::PrimaryKeyChanged { from, to } => {
                                blockers.push(blocker(
                                    table,
                                    Some(to),
                                    format!("the primary key does not change (from {from})"),
                                ));
                            }
                            _ => {}
                        }
                    }
                }
            }
        }
        blockers
    }
}

/// The changes of one table, `old` and `new` having the same name.
fn table_changes(old: &TableSchema, new: &TableSchema) -> Vec<FieldChange> {
    // Pairs of (old field, new field), in new's order; the renamed ones noted.
    let mut pairs: Vec<(&FieldSpec, &FieldSpec)> = Vec::new();
    let mut renames = Vec::new();
    let mut added = Vec::new();
    // Old name → new name of every old field that lives on.
    let mut new_name: BTreeMap<&str, &str> = BTreeMap::new();
    for field in new.live_fields() {
        if let Some(before) = old.spec(&field.name) {
            pairs.push((before, field));
            new_name.insert(&before.name, &field.name);
            continue;
        }
        let renamed = field.renamed_from.as_deref().and_then(|from| {
            let before = old.spec(from)?;
            (new.spec(from).is_none() && !new_name.contains_key(from)).then_some(before)
        });
        match renamed {
            Some(before) => {
                pairs.push((before, field));
                new_name.insert(&before.name, &field.name);
                renames.push(FieldChange::FieldRenamed {
                    from: before.name.clone(),
                    to: field.name.clone(),
                });
            }
            None => added.push(FieldChange::FieldAdded {
                field: field.name.clone(),
                kind: field.kind,
                required: field.required,
                default: field.default.clone(),
            }),
        }
    }
    let renamed = |name: &str| new_name.get(name).copied().unwrap_or(name).to_owned();
    let removed = old
        .live_fields()
        .filter(|field| !new_name.contains_key(field.name.as_str()))
        .map(|field| FieldChange::FieldRemoved {
            field: field.name.clone(),
            kind: field.kind,
        });

    let mut changes = renames;
    changes.extend(removed);
    changes.extend(added);
    changes.extend(
        pairs
            .iter()
            .filter(|(before, after)| before.kind != after.kind)
            .map(|(before, after)| FieldChange::TypeChanged {
                field: after.name.clone(),
                from: before.kind,
                to: after.kind,
                converter: Converter::between(before.kind, after.kind),
            }),
    );
    changes.extend(
        pairs
            .iter()
            .filter(|(before, after)| before.required != after.required)
            .map(|(_, after)| FieldChange::RequiredChanged {
                field: after.name.clone(),
                required: after.required,
            }),
    );
    changes.extend(
        pairs
            .iter()
            .filter(|(before, after)| before.default != after.default)
            .map(|(before, after)| FieldChange::DefaultChanged {
                field: after.name.clone(),
                from: before.default.clone(),
                to: after.default.clone(),
            }),
    );

    let old_indexes: Vec<(String, bool)> = unique_in_order(
        old.indexes
            .iter()
            .map(|index| (renamed(&index.field), index.unique)),
    );
    let new_indexes: Vec<(String, bool)> = unique_in_order(
        new.indexes
            .iter()
            .map(|index| (index.field.clone(), index.unique)),
    );
    changes.extend(
        old_indexes
            .iter()
            .filter(|index| !new_indexes.contains(index))
            .map(|(field, unique)| FieldChange::IndexRemoved {
                field: field.clone(),
                unique: *unique,
            }),
    );
    changes.extend(
        new_indexes
            .iter()
            .filter(|index| !old_indexes.contains(index))
            .map(|(field, unique)| FieldChange::IndexAdded {
                field: field.clone(),
                unique: *unique,
            }),
    );

    if old.policy != new.policy {
        changes.push(FieldChange::PolicyChanged {
            field: None,
            from: Some(old.policy.clone()),
            to: Some(new.policy.clone()),
        });
    }
    let old_policies: BTreeMap<String, &PolicySpec> = old
        .field_policies
        .iter()
        .map(|(field, policy)| (renamed(field), policy))
        .collect();
    let fields: BTreeSet<&String> = old_policies
        .keys()
        .chain(new.field_policies.keys())
        .collect();
    for field in fields {
        let (before, after) = (
            old_policies.get(field).copied(),
            new.field_policies.get(field),
        );
        if before != after {
            changes.push(FieldChange::PolicyChanged {
                field: Some(field.clone()),
                from: before.cloned(),
                to: after.cloned(),
            });
        }
    }

    if renamed(&old.primary_key) != new.primary_key {
        changes.push(FieldChange::PrimaryKeyChanged {
            from: old.primary_key.clone(),
            to: new.primary_key.clone(),
        });
    }
    changes
}

fn unique_in_order<T: PartialEq>(items: impl Iterator<Item = T>) -> Vec<T> {
    let mut unique = Vec::new();
    for item in items {
        if !unique.contains(&item) {
            unique.push(item);
        }
    }
    unique
}

/// A policy as a diff shows it: `max`, `client_priority [admin, tablet]`,
/// `custom longest_text`.
fn policy_text(policy: &PolicySpec) -> String {
    match policy {
        PolicySpec::LastWriterWins => "last_writer_wins".to_owned(),
        PolicySpec::ClientPriority { ranking } => format!(
            "client_priority [{}]",
            ranking
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        PolicySpec::Max => "max".to_owned(),
        PolicySpec::Min => "min".to_owned(),
        PolicySpec::Sum => "sum".to_owned(),
        PolicySpec::SetUnion => "set_union".to_owned(),
        PolicySpec::Manual => "manual".to_owned(),
        PolicySpec::Custom { name } => format!("custom {name}"),
    }
}

fn default_text(default: Option<&serde_json::Value>) -> String {
    default.map_or_else(|| "none".to_owned(), ToString::to_string)
}

impl fmt::Display for FieldChange {
    /// One line, starting with its marker: `+` added, `-` removed, `~` changed,
    /// `!` a change no migration can make.
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FieldChange::FieldAdded {
                field,
                kind,
                required,
                default,
            } => {
                write!(formatter, "+ field {field}: {kind}")?;
                if *required {
                    formatter.write_str(", required")?;
                }
                if let Some(default) = default {
                    write!(formatter, ", default {default}")?;
                }
                Ok(())
            }
            FieldChange::FieldRemoved { field, kind } => {
                write!(formatter, "- field {field}: {kind}")
            }
            FieldChange::FieldRenamed { from, to } => {
                write!(formatter, "~ field {from} renamed to {to}")
            }
            FieldChange::TypeChanged {
                field,
                from,
                to,
                converter,
            } => match converter {
                Some(converter) => write!(formatter, "~ field {field}: {}", converter.describe()),
                None => write!(formatter, "! field {field}: {from} → {to} has no converter"),
            },
            FieldChange::RequiredChanged { field, required } => write!(
                formatter,
                "~ field {field} is now {}",
                if *required { "required" } else { "optional" }
            ),
            FieldChange::DefaultChanged { field, from, to } => write!(
                formatter,
                "~ field {field}: default {} → {}",
                default_text(from.as_ref()),
                default_text(to.as_ref())
            ),
            FieldChange::IndexAdded { field, unique } => write!(
                formatter,
                "+ {}index on {field}",
                if *unique { "unique " } else { "" }
            ),
            FieldChange::IndexRemoved { field, unique } => write!(
                formatter,
                "- {}index on {field}",
                if *unique { "unique " } else { "" }
            ),
            FieldChange::PolicyChanged { field, from, to } => {
                let text = |policy: &Option<PolicySpec>| {
                    policy
                        .as_ref()
                        .map_or_else(|| "the table's policy".to_owned(), policy_text)
                };
                match field {
                    None => formatter.write_str("~ policy: ")?,
                    Some(field) => write!(formatter, "~ policy of field {field}: ")?,
                }
                write!(formatter, "{} → {}", text(from), text(to))
            }
            FieldChange::PrimaryKeyChanged { from, to } => {
                write!(formatter, "! primary key {from} → {to}")
            }
        }
    }
}

impl fmt::Display for SchemaDiff {
    /// A report for people, one change a line:
    ///
    /// ```text
    /// schema 1 → 2
    ///   min client version 1 → 2
    ///   table todos:
    ///     + field priority: integer, default 0
    ///     ~ field title renamed to name
    ///     ~ field price: integer → float (every value converts)
    ///   + table tags (3 fields)
    /// ```
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "schema {} → {}",
            self.from_version, self.to_version
        )?;
        if self.is_empty() {
            return formatter.write_str("\n  no changes");
        }
        if let Some((from, to)) = self.min_client_version {
            write!(formatter, "\n  min client version {from} → {to}")?;
        }
        for change in &self.tables {
            match change {
                TableChange::Added { table } => {
                    let count = table.live_fields().count();
                    write!(
                        formatter,
                        "\n  + table {} ({count} field{})",
                        table.name,
                        if count == 1 { "" } else { "s" }
                    )?;
                }
                TableChange::Removed { table } => write!(formatter, "\n  - table {table}")?,
                TableChange::Changed { table, fields } => {
                    write!(formatter, "\n  table {table}:")?;
                    for change in fields {
                        match change {
                            FieldChange::TypeChanged {
                                field, from, to, ..
                            } if self.is_primary_key(table, field) => write!(
                                formatter,
                                "\n    ! field {field}: {from} → {to} changes the primary key's type"
                            )?,
                            change => write!(formatter, "\n    {change}")?,
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    fn strings(blockers: Vec<crate::schema::Blocker>) -> Vec<String> {
        blockers.iter().map(ToString::to_string).collect()
    }

    use super::*;
    use crate::schema::Coverage;
    use serde_json::json;

    fn doc(version: u32, tables: Vec<TableSchema>) -> SchemaDoc {
        SchemaDoc {
            version,
            min_client_version: 1,
            tables,
        }
    }

    fn todos() -> TableSchema {
        TableSchema::new("todos", "id")
            .field(FieldSpec::new("title", FieldType::String))
            .field(FieldSpec::new("price", FieldType::Integer))
            .field(FieldSpec::new("due", FieldType::Timestamp))
            .index("due")
    }

    /// The changes of the one table `old` and `new` both hold.
    fn changes(old: TableSchema, new: TableSchema) -> Vec<FieldChange> {
        let diff = SchemaDiff::between(&doc(1, vec![old]), &doc(2, vec![new]));
        match diff.tables.as_slice() {
            [] => Vec::new(),
            [TableChange::Changed { fields, .. }] => fields.clone(),
            other => panic!("expected one changed table, got {other:?}"),
        }
    }

    #[test]
    fn identical_documents_have_no_changes() {
        let diff = SchemaDiff::between(&doc(1, vec![todos()]), &doc(1, vec![todos()]));
        assert!(diff.is_empty());
        assert_eq!(diff.to_string(), "schema 1 → 1\n  no changes");
        assert!(diff.blockers_without_data().is_empty());
    }

    #[test]
    fn table_versions_keys_and_removed_fields_are_ignored() {
        let mut new = todos();
        new.version = 7;
        new.fields[1].key = Some("title".into());
        new.fields.push(FieldSpec {
            retired: true,
            ..FieldSpec::new("old", FieldType::Bytes)
        });
        let mut old = todos();
        old.fields.push(FieldSpec {
            retired: true,
            ..FieldSpec::new("older", FieldType::Json)
        });
        assert_eq!(changes(old, new), Vec::new());
    }

    #[test]
    fn tables_are_added_and_removed() {
        let tags = TableSchema::new("tags", "id").field(FieldSpec::new("label", FieldType::String));
        let notes = TableSchema::new("notes", "id");
        let diff = SchemaDiff::between(
            &doc(1, vec![todos(), notes]),
            &doc(2, vec![tags.clone(), todos()]),
        );
        assert_eq!(
            diff.tables,
            vec![
                TableChange::Added { table: tags },
                TableChange::Removed {
                    table: "notes".into()
                },
            ]
        );
        assert_eq!(
            diff.to_string(),
            "schema 1 → 2\n  + table tags (2 fields)\n  - table notes"
        );
        assert_eq!(
            strings(diff.blockers_without_data()),
            vec!["table notes: tables are not removed by a migration: keep the table in the document (older apps may still sync it)".to_owned()]
        );
    }

    #[test]
    fn added_tables_are_shown_as_people_write_them() {
        let mut tags = TableSchema::new("tags", "id");
        tags.fields.push(FieldSpec {
            retired: true,
            key: Some("x".into()),
            ..FieldSpec::new("gone", FieldType::String)
        });
        let diff = SchemaDiff::between(&doc(1, vec![]), &doc(2, vec![tags.clone()]));
        assert_eq!(
            diff.tables,
            vec![TableChange::Added {
                table: tags.public()
            }]
        );
    }

    #[test]
    fn min_client_version_changes() {
        let mut new = doc(2, vec![todos()]);
        new.min_client_version = 2;
        let diff = SchemaDiff::between(&doc(1, vec![todos()]), &new);
        assert_eq!(diff.min_client_version, Some((1, 2)));
        assert!(!diff.is_empty());
        assert_eq!(diff.to_string(), "schema 1 → 2\n  min client version 1 → 2");
    }

    #[test]
    fn fields_are_added_and_removed() {
        let new = todos()
            .field(FieldSpec::new("priority", FieldType::Integer).with_default(json!(0)))
            .field(FieldSpec::new("code", FieldType::String).required());
        let mut old = todos().field(FieldSpec::new("legacy", FieldType::String));
        old.fields.swap(1, 4);
        let found = changes(old, new);
        assert_eq!(
            found,
            vec![
                FieldChange::FieldRemoved {
                    field: "legacy".into(),
                    kind: FieldType::String
                },
                FieldChange::FieldAdded {
                    field: "priority".into(),
                    kind: FieldType::Integer,
                    required: false,
                    default: Some(json!(0))
                },
                FieldChange::FieldAdded {
                    field: "code".into(),
                    kind: FieldType::String,
                    required: true,
                    default: None
                },
            ]
        );
        let lines: Vec<String> = found.iter().map(ToString::to_string).collect();
        assert_eq!(
            lines,
            [
                "- field legacy: string",
                "+ field priority: integer, default 0",
                "+ field code: string, required",
            ]
        );
    }

    #[test]
    fn types_change_with_or_without_a_converter() {
        let mut new = todos().field(FieldSpec::new("code", FieldType::Integer));
        new.fields[2].kind = FieldType::Float;
        new.fields[1].kind = FieldType::Integer;
        let old = todos().field(FieldSpec::new("code", FieldType::Bytes));
        let found = changes(old, new);
        assert_eq!(
            found,
            vec![
                FieldChange::TypeChanged {
                    field: "title".into(),
                    from: FieldType::String,
                    to: FieldType::Integer,
                    converter: Converter::between(FieldType::String, FieldType::Integer),
                },
                FieldChange::TypeChanged {
                    field: "price".into(),
                    from: FieldType::Integer,
                    to: FieldType::Float,
                    converter: Some(Converter {
                        from: FieldType::Integer,
                        to: FieldType::Float,
                        coverage: Coverage::Total
                    }),
                },
                FieldChange::TypeChanged {
                    field: "code".into(),
                    from: FieldType::Bytes,
                    to: FieldType::Integer,
                    converter: None,
                },
            ]
        );
        let lines: Vec<String> = found.iter().map(ToString::to_string).collect();
        assert_eq!(
            lines,
            [
                "~ field title: string → integer (each value must convert)",
                "~ field price: integer → float (every value converts)",
                "! field code: bytes → integer has no converter",
            ]
        );
        let diff = SchemaDiff::between(
            &doc(
                1,
                vec![todos().field(FieldSpec::new("code", FieldType::Bytes))],
            ),
            &doc(
                2,
                vec![todos().field(FieldSpec::new("code", FieldType::Integer))],
            ),
        );
        assert_eq!(
            strings(diff.blockers_without_data()),
            vec!["table todos, field code: no converter from bytes to integer".to_owned()]
        );
    }

    #[test]
    fn required_and_defaults_change() {
        let mut new = todos();
        new.fields[1].required = true;
        new.fields[2].default = Some(json!(5));
        let mut old = todos();
        old.fields[2].default = Some(json!(0));
        old.fields[3].default = Some(json!(0));
        let found = changes(old, new);
        assert_eq!(
            found,
            vec![
                FieldChange::RequiredChanged {
                    field: "title".into(),
                    required: true
                },
                FieldChange::DefaultChanged {
                    field: "price".into(),
                    from: Some(json!(0)),
                    to: Some(json!(5))
                },
                FieldChange::DefaultChanged {
                    field: "due".into(),
                    from: Some(json!(0)),
                    to: None
                },
            ]
        );
        let lines: Vec<String> = found.iter().map(ToString::to_string).collect();
        assert_eq!(
            lines,
            [
                "~ field title is now required",
                "~ field price: default 0 → 5",
                "~ field due: default 0 → none",
            ]
        );
    }

    #[test]
    fn renames_keep_the_field() {
        let mut new = todos();
        new.fields[1] = FieldSpec::new("name", FieldType::String).renamed_from("title");
        let found = changes(todos(), new);
        assert_eq!(
            found,
            vec![FieldChange::FieldRenamed {
                from: "title".into(),
                to: "name".into()
            }]
        );
        assert_eq!(found[0].to_string(), "~ field title renamed to name");
    }

    #[test]
    fn a_rename_with_a_type_change_names_the_new_field() {
        let mut new = todos();
        new.fields[2] = FieldSpec::new("cost", FieldType::Float)
            .renamed_from("price")
            .required()
            .with_default(json!(0.5));
        assert_eq!(
            changes(todos(), new),
            vec![
                FieldChange::FieldRenamed {
                    from: "price".into(),
                    to: "cost".into()
                },
                FieldChange::TypeChanged {
                    field: "cost".into(),
                    from: FieldType::Integer,
                    to: FieldType::Float,
                    converter: Converter::between(FieldType::Integer, FieldType::Float),
                },
                FieldChange::RequiredChanged {
                    field: "cost".into(),
                    required: true
                },
                FieldChange::DefaultChanged {
                    field: "cost".into(),
                    from: None,
                    to: Some(json!(0.5))
                },
            ]
        );
    }

    #[test]
    fn a_rename_whose_old_name_stays_is_a_new_field() {
        let new = todos().field(FieldSpec::new("heading", FieldType::String).renamed_from("title"));
        assert_eq!(
            changes(todos(), new),
            vec![FieldChange::FieldAdded {
                field: "heading".into(),
                kind: FieldType::String,
                required: false,
                default: None
            }]
        );
        // A rename from a field the old version does not have: also new.
        let mut new = todos();
        new.fields[1] = FieldSpec::new("name", FieldType::String).renamed_from("label");
        assert_eq!(
            changes(todos(), new),
            vec![
                FieldChange::FieldRemoved {
                    field: "title".into(),
                    kind: FieldType::String
                },
                FieldChange::FieldAdded {
                    field: "name".into(),
                    kind: FieldType::String,
                    required: false,
                    default: None
                },
            ]
        );
    }

    #[test]
    fn indexes_are_added_and_removed() {
        let mut new = todos().unique_index("title");
        new.indexes.retain(|index| index.field != "due");
        new = new.index("price");
        let found = changes(todos(), new);
        assert_eq!(
            found,
            vec![
                FieldChange::IndexRemoved {
                    field: "due".into(),
                    unique: false
                },
                FieldChange::IndexAdded {
                    field: "title".into(),
                    unique: true
                },
                FieldChange::IndexAdded {
                    field: "price".into(),
                    unique: false
                },
            ]
        );
        let lines: Vec<String> = found.iter().map(ToString::to_string).collect();
        assert_eq!(
            lines,
            [
                "- index on due",
                "+ unique index on title",
                "+ index on price"
            ]
        );
    }

    #[test]
    fn an_index_follows_its_renamed_field() {
        let mut new = todos();
        new.fields[3] = FieldSpec::new("due_at", FieldType::Timestamp).renamed_from("due");
        new.indexes[0].field = "due_at".into();
        assert_eq!(
            changes(todos(), new),
            vec![FieldChange::FieldRenamed {
                from: "due".into(),
                to: "due_at".into()
            }]
        );
    }

    #[test]
    fn policies_change_for_the_table_and_its_fields() {
        let old = todos()
            .field_policy("price", PolicySpec::Max)
            .field_policy("title", PolicySpec::Manual);
        let mut new = todos()
            .policy(PolicySpec::ClientPriority {
                ranking: vec!["admin".into(), "tablet".into()],
            })
            .field_policy("name", PolicySpec::Manual)
            .field_policy(
                "due",
                PolicySpec::Custom {
                    name: "latest".into(),
                },
            );
        new.fields[1] = FieldSpec::new("name", FieldType::String).renamed_from("title");
        let found = changes(old, new);
        assert_eq!(
            found,
            vec![
                FieldChange::FieldRenamed {
                    from: "title".into(),
                    to: "name".into()
                },
                FieldChange::PolicyChanged {
                    field: None,
                    from: Some(PolicySpec::LastWriterWins),
                    to: Some(PolicySpec::ClientPriority {
                        ranking: vec!["admin".into(), "tablet".into()]
                    }),
                },
                FieldChange::PolicyChanged {
                    field: Some("due".into()),
                    from: None,
                    to: Some(PolicySpec::Custom {
                        name: "latest".into()
                    }),
                },
                FieldChange::PolicyChanged {
                    field: Some("price".into()),
                    from: Some(PolicySpec::Max),
                    to: None,
                },
            ]
        );
        let lines: Vec<String> = found.iter().map(ToString::to_string).collect();
        assert_eq!(
            lines[1..],
            [
                "~ policy: last_writer_wins → client_priority [admin, tablet]",
                "~ policy of field due: the table's policy → custom latest",
                "~ policy of field price: max → the table's policy",
            ]
        );
    }

    #[test]
    fn primary_keys_change_or_follow_a_rename() {
        let mut renamed = todos();
        renamed.fields[0] = FieldSpec::new("key", FieldType::String)
            .required()
            .renamed_from("id");
        renamed.primary_key = "key".into();
        assert_eq!(
            changes(todos(), renamed),
            vec![FieldChange::FieldRenamed {
                from: "id".into(),
                to: "key".into()
            }]
        );

        let mut moved = todos();
        moved.primary_key = "title".into();
        let diff = SchemaDiff::between(&doc(1, vec![todos()]), &doc(2, vec![moved]));
        assert_eq!(
            diff.tables,
            vec![TableChange::Changed {
                table: "todos".into(),
                fields: vec![FieldChange::PrimaryKeyChanged {
                    from: "id".into(),
                    to: "title".into()
                }]
            }]
        );
        assert_eq!(
            diff.to_string(),
            "schema 1 → 2\n  table todos:\n    ! primary key id → title"
        );
        assert_eq!(
            strings(diff.blockers_without_data()),
            vec!["table todos, field title: the primary key does not change (from id)".to_owned()]
        );
    }

    #[test]
    fn a_primary_key_keeps_its_type() {
        let mut new = todos();
        new.fields[0].kind = FieldType::Integer;
        let diff = SchemaDiff::between(&doc(1, vec![todos()]), &doc(2, vec![new]));
        let [TableChange::Changed { fields, .. }] = diff.tables.as_slice() else {
            panic!("one changed table: {diff:?}");
        };
        assert!(matches!(
            &fields[..],
            [FieldChange::TypeChanged {
                converter: Some(_),
                ..
            }]
        ));
        assert_eq!(
            diff.to_string(),
            "schema 1 → 2\n  table todos:\n    ! field id: string → integer changes the primary key's type"
        );
        assert_eq!(
            strings(diff.blockers_without_data()),
            vec![
                "table todos, field id: the primary key's type does not change (string → integer)"
                    .to_owned()
            ]
        );
    }

    #[test]
    fn changes_come_in_a_stable_order() {
        let old = todos()
            .field(FieldSpec::new("legacy", FieldType::String))
            .field_policy("price", PolicySpec::Max);
        let mut new = todos()
            .policy(PolicySpec::Manual)
            .field(FieldSpec::new("priority", FieldType::Integer).with_default(json!(0)))
            .index("priority")
            .field_policy("price", PolicySpec::Min);
        new.fields[1] = FieldSpec::new("name", FieldType::String)
            .renamed_from("title")
            .required();
        new.fields[2].kind = FieldType::Float;
        new.fields[3].default = Some(json!(1));
        new.primary_key = "name".into();
        let kinds: Vec<&str> = changes(old, new)
            .iter()
            .map(|change| match change {
                FieldChange::FieldRenamed { .. } => "renamed",
                FieldChange::FieldRemoved { .. } => "removed",
                FieldChange::FieldAdded { .. } => "added",
                FieldChange::TypeChanged { .. } => "type",
                FieldChange::RequiredChanged { .. } => "required",
                FieldChange::DefaultChanged { .. } => "default",
                FieldChange::IndexRemoved { .. } => "index removed",
                FieldChange::IndexAdded { .. } => "index added",
                FieldChange::PolicyChanged { field: None, .. } => "policy",
                FieldChange::PolicyChanged { .. } => "field policy",
                FieldChange::PrimaryKeyChanged { .. } => "primary key",
            })
            .collect();
        assert_eq!(
            kinds,
            [
                "renamed",
                "removed",
                "added",
                "type",
                "required",
                "default",
                "index added",
                "policy",
                "field policy",
                "primary key"
            ]
        );
    }

    #[test]
    fn serialises_with_a_change_tag() {
        let mut new = todos();
        new.fields[2].kind = FieldType::Float;
        let diff = SchemaDiff::between(&doc(1, vec![todos()]), &doc(2, vec![new]));
        assert_eq!(
            serde_json::to_value(&diff).expect("JSON"),
            json!({
                "from_version": 1,
                "to_version": 2,
                "tables": [{
                    "change": "changed",
                    "table": "todos",
                    "fields": [{
                        "change": "type_changed",
                        "field": "price",
                        "from": "integer",
                        "to": "float",
                        "converter": {"from": "integer", "to": "float", "coverage": "total"}
                    }]
                }]
            })
        );
    }

    #[test]
    fn the_report_reads_top_down() {
        let old = doc(
            1,
            vec![
                todos()
                    .field(FieldSpec::new("legacy", FieldType::String))
                    .field(FieldSpec::new("code", FieldType::Bytes)),
            ],
        );
        let mut table = todos()
            .field(FieldSpec::new("priority", FieldType::Integer).with_default(json!(0)))
            .field(FieldSpec::new("code", FieldType::Integer));
        table.fields[1] = FieldSpec::new("name", FieldType::String).renamed_from("title");
        table.fields[2].kind = FieldType::Float;
        let tags = TableSchema::new("tags", "id")
            .field(FieldSpec::new("label", FieldType::String))
            .field(FieldSpec::new("color", FieldType::String));
        let mut new = doc(2, vec![table, tags]);
        new.min_client_version = 2;
        assert_eq!(
            SchemaDiff::between(&old, &new).to_string(),
            "schema 1 → 2
  min client version 1 → 2
  table todos:
    ~ field title renamed to name
    - field legacy: string
    + field priority: integer, default 0
    ~ field price: integer → float (every value converts)
    ! field code: bytes → integer has no converter
  + table tags (3 fields)"
        );
    }
}

//! Schema documents: every table of a database at one version, in a file
//! people keep in git (TOML or JSON) and send to the API.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{FieldType, TableSchema};

/// Every table of a database at one schema version.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SchemaDoc {
    /// The schema version apps state; each applied document has a larger one.
    pub version: u32,
    /// Apps that state an older version are refused with "upgrade required".
    #[serde(default)]
    pub min_client_version: u32,
    #[serde(default)]
    pub tables: Vec<TableSchema>,
}

/// A schema document that cannot be read or is not valid.
#[derive(Debug, thiserror::Error)]
pub enum SchemaDocError {
    #[error("not a schema document: {0}")]
    Parse(String),
    #[error("{0}")]
    Invalid(String),
    /// The file could not be read at all.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl SchemaDoc {
    /// The table named `name`.
    pub fn table(&self, name: &str) -> Option<&TableSchema> {
        self.tables.iter().find(|table| table.name == name)
    }

    /// Reads a document written in TOML.
    ///
    /// # Errors
    ///
    /// [`SchemaDocError::Parse`] when the text is not a schema document.
    pub fn from_toml(text: &str) -> Result<SchemaDoc, SchemaDocError> {
        toml::from_str(text).map_err(|error| SchemaDocError::Parse(error.to_string()))
    }

    /// Reads a document written in JSON.
    ///
    /// # Errors
    ///
    /// [`SchemaDocError::Parse`] when the text is not a schema document.
    pub fn from_json(text: &str) -> Result<SchemaDoc, SchemaDocError> {
        serde_json::from_str(text).map_err(|error| SchemaDocError::Parse(error.to_string()))
    }

    /// Reads a document from a file: TOML for `.toml`, JSON for `.json`, and
    /// otherwise whichever of the two parses (TOML first).
    ///
    /// The document is not validated: see [`SchemaDoc::validate`].
    ///
    /// # Errors
    ///
    /// [`SchemaDocError::Read`] when the file cannot be read,
    /// [`SchemaDocError::Parse`] when it is not a schema document.
    pub fn read(path: &Path) -> Result<SchemaDoc, SchemaDocError> {
        let text = std::fs::read_to_string(path).map_err(|source| SchemaDocError::Read {
            path: path.to_owned(),
            source,
        })?;
        let extension = path
            .extension()
            .and_then(|extension| extension.to_str())
            .map(str::to_ascii_lowercase);
        match extension.as_deref() {
            Some("toml") => SchemaDoc::from_toml(&text),
            Some("json") => SchemaDoc::from_json(&text),
            _ => SchemaDoc::from_toml(&text).or_else(|toml_error| {
                SchemaDoc::from_json(&text).map_err(|json_error| {
                    // Report the error of the format the text looks like.
                    if text.trim_start().starts_with('{') {
                        json_error
                    } else {
                        toml_error
                    }
                })
            }),
        }
    }

    /// The document as TOML, tables as `[[tables]]` sections.
    ///
    /// # Errors
    ///
    /// [`SchemaDocError::Invalid`] when a value has no TOML form (a JSON
    /// `null` in a default).
    pub fn to_toml(&self) -> Result<String, SchemaDocError> {
        toml::to_string_pretty(self).map_err(|error| {
            SchemaDocError::Invalid(format!("the document has no TOML form: {error}"))
        })
    }

    /// Checks what serde cannot: versions, unique names, that the primary
    /// key, indexes and field policies name fields, that defaults fit their
    /// types, that renames are unambiguous, and that no field sets what only
    /// the server sets (`key`, `retired`).
    ///
    /// # Errors
    ///
    /// [`SchemaDocError::Invalid`] naming every problem found, each with its
    /// table and field, separated by `; `.
    pub fn validate(&self) -> Result<(), SchemaDocError> {
        let mut problems = Vec::new();
        if self.version < 1 {
            problems.push(format!("version must be at least 1, not {}", self.version));
        }
        if self.min_client_version > self.version {
            problems.push(format!(
                "min_client_version {} is above the document's version {}",
                self.min_client_version, self.version
            ));
        }
        let mut table_names = BTreeSet::new();
        for table in &self.tables {
            if !table_names.insert(table.name.as_str()) {
                problems.push(format!("table {} is defined more than once", table.name));
            }
            validate_table(table, &mut problems);
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(SchemaDocError::Invalid(problems.join("; ")))
        }
    }
}

fn validate_table(table: &TableSchema, problems: &mut Vec<String>) {
    let name = &table.name;
    if name.is_empty() {
        problems.push("a table has an empty name".to_owned());
    }
    let mut field_names = BTreeSet::new();
    let mut renamed_from: BTreeMap<&str, &str> = BTreeMap::new();
    for field in &table.fields {
        let at = format!("table {name}, field {}", field.name);
        if field.name.is_empty() {
            problems.push(format!("table {name}: a field has an empty name"));
        }
        if !field_names.insert(field.name.as_str()) {
            problems.push(format!("{at}: defined more than once"));
        }
        if field.name.starts_with('_') {
            problems.push(format!(
                "{at}: names starting with `_` are reserved for the server"
            ));
        }
        if let Some(default) = &field.default
            && let Err(mismatch) = field.kind.from_json(default)
        {
            problems.push(format!(
                "{at}: the default {default} does not fit the type ({mismatch})"
            ));
        }
        if let Some(old) = &field.renamed_from {
            if *old == field.name {
                problems.push(format!("{at}: `renamed_from` names the field itself"));
            } else if let Some(other) = renamed_from.insert(old.as_str(), field.name.as_str()) {
                problems.push(format!(
                    "{at}: `renamed_from = \"{old}\"` is also declared by field {other}"
                ));
            }
        }
        if field.key.is_some() {
            problems.push(format!("{at}: `key` is set by the server"));
        }
        if field.retired {
            problems.push(format!("{at}: `retired` is set by the server"));
        }
    }
    match table
        .fields
        .iter()
        .find(|field| field.name == table.primary_key)
    {
        None => problems.push(format!(
            "table {name}, field {}: the primary key is not a field of the table",
            table.primary_key
        )),
        Some(field) if !matches!(field.kind, FieldType::String | FieldType::Integer) => {
            problems.push(format!(
                "table {name}, field {}: the primary key must be a string or integer field, not {}",
                field.name, field.kind
            ));
        }
        Some(_) => {}
    }
    for index in &table.indexes {
        if !field_names.contains(index.field.as_str()) {
            problems.push(format!(
                "table {name}, field {}: an index names a field the table does not have",
                index.field
            ));
        }
    }
    for field in table.field_policies.keys() {
        if !field_names.contains(field.as_str()) {
            problems.push(format!(
                "table {name}, field {field}: a field policy names a field the table does not have"
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{FieldSpec, IndexSpec};
    use mobilesyncdb_crdt::PolicySpec;

    const TODOS: &str = r#"
version = 2
min_client_version = 1

[[tables]]
name = "todos"
primary_key = "id"
indexes = [{ field = "due" }]
policy = { kind = "last_writer_wins" }
field_policies = { likes = { kind = "sum" } }

[[tables.fields]]
name = "id"
type = "string"
required = true

[[tables.fields]]
name = "title"
type = "string"
default = ""

[[tables.fields]]
name = "due"
type = "timestamp"

[[tables.fields]]
name = "likes"
type = "integer"
default = 0
"#;

    fn invalid(doc: &SchemaDoc) -> String {
        match doc.validate() {
            Err(SchemaDocError::Invalid(message)) => message,
            other => panic!("expected an invalid document, got {other:?}"),
        }
    }

    fn todos() -> SchemaDoc {
        SchemaDoc::from_toml(TODOS).expect("a schema document")
    }

    #[test]
    fn reads_toml() {
        let doc = todos();
        assert_eq!(doc.version, 2);
        let table = doc.table("todos").expect("todos");
        assert_eq!(table.version, 1);
        assert_eq!(table.fields.len(), 4);
        assert_eq!(
            table.indexes,
            vec![IndexSpec {
                field: "due".into(),
                unique: false
            }]
        );
        assert_eq!(table.field_policies["likes"], PolicySpec::Sum);
        assert_eq!(
            table.spec("likes").and_then(|f| f.default.clone()),
            Some(serde_json::json!(0))
        );
        doc.validate().expect("valid");
    }

    #[test]
    fn toml_and_json_round_trip() {
        let doc = todos();
        let toml = doc.to_toml().expect("TOML");
        assert!(toml.contains("[[tables]]"), "{toml}");
        assert_eq!(SchemaDoc::from_toml(&toml).expect("reads back"), doc);
        let json = serde_json::to_string(&doc).expect("JSON");
        assert_eq!(SchemaDoc::from_json(&json).expect("reads back"), doc);
    }

    #[test]
    fn reads_files_by_extension_or_content() {
        let dir = std::env::temp_dir().join(format!(
            "msdb-schema-doc-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(&dir).expect("a directory");
        let doc = todos();
        let json = serde_json::to_string_pretty(&doc).expect("JSON");
        for (name, text) in [
            ("a.toml", TODOS.to_owned()),
            ("a.json", json.clone()),
            ("a.schema", TODOS.to_owned()),
            ("b.schema", json),
        ] {
            let path = dir.join(name);
            std::fs::write(&path, text).expect("write");
            assert_eq!(SchemaDoc::read(&path).expect(name), doc, "{name}");
        }
        std::fs::write(dir.join("bad.json"), TODOS).expect("write");
        assert!(matches!(
            SchemaDoc::read(&dir.join("bad.json")),
            Err(SchemaDocError::Parse(_))
        ));
        let missing = SchemaDoc::read(&dir.join("missing.toml")).expect_err("no file");
        assert!(matches!(missing, SchemaDocError::Read { .. }));
        assert!(missing.to_string().contains("missing.toml"), "{missing}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn parse_errors_say_what_is_wrong() {
        let error = SchemaDoc::from_toml("version = \"two\"").expect_err("not a number");
        assert!(
            error.to_string().starts_with("not a schema document"),
            "{error}"
        );
        assert!(SchemaDoc::from_json("{\"tables\": []}").is_err());
    }

    #[test]
    fn versions_are_checked() {
        let mut doc = todos();
        doc.version = 0;
        doc.min_client_version = 0;
        assert!(invalid(&doc).contains("version must be at least 1"));
        doc.version = 2;
        doc.min_client_version = 3;
        assert!(invalid(&doc).contains("min_client_version 3"));
    }

    #[test]
    fn names_are_unique() {
        let mut doc = todos();
        doc.tables.push(doc.tables[0].clone());
        assert!(invalid(&doc).contains("table todos is defined more than once"));
        let mut doc = todos();
        doc.tables[0]
            .fields
            .push(FieldSpec::new("title", FieldType::Integer));
        assert!(invalid(&doc).contains("table todos, field title: defined more than once"));
    }

    #[test]
    fn primary_keys_are_string_or_integer_fields() {
        let mut doc = todos();
        doc.tables[0].primary_key = "nope".into();
        assert!(invalid(&doc).contains("table todos, field nope: the primary key is not"));
        doc.tables[0].primary_key = "due".into();
        assert!(invalid(&doc).contains("must be a string or integer field, not timestamp"));
        doc.tables[0].primary_key = "likes".into();
        doc.validate().expect("an integer key");
    }

    #[test]
    fn indexes_and_policies_name_fields() {
        let mut doc = todos();
        doc.tables[0] = doc.tables[0]
            .clone()
            .index("ghost")
            .field_policy("phantom", PolicySpec::Max);
        let message = invalid(&doc);
        assert!(
            message.contains("table todos, field ghost: an index names"),
            "{message}"
        );
        assert!(
            message.contains("table todos, field phantom: a field policy names"),
            "{message}"
        );
    }

    #[test]
    fn reserved_names_are_refused() {
        let mut doc = todos();
        doc.tables[0]
            .fields
            .push(FieldSpec::new("_seq", FieldType::Integer));
        assert!(invalid(&doc).contains("table todos, field _seq: names starting with `_`"));
    }

    #[test]
    fn defaults_fit_their_types() {
        let mut doc = todos();
        doc.tables[0].fields[3].default = Some(serde_json::json!("zero"));
        let message = invalid(&doc);
        assert!(
            message.contains("table todos, field likes: the default \"zero\" does not fit"),
            "{message}"
        );
        assert!(
            message.contains("expected integer, found string"),
            "{message}"
        );
    }

    #[test]
    fn renames_are_unambiguous() {
        let mut doc = todos();
        doc.tables[0].fields[1].renamed_from = Some("title".into());
        assert!(invalid(&doc).contains("table todos, field title: `renamed_from` names the field"));
        let mut doc = todos();
        doc.tables[0].fields[1].renamed_from = Some("name".into());
        doc.tables[0].fields[2].renamed_from = Some("name".into());
        let message = invalid(&doc);
        assert!(
            message.contains(
                "table todos, field due: `renamed_from = \"name\"` is also declared by field title"
            ),
            "{message}"
        );
    }

    #[test]
    fn server_only_settings_are_refused() {
        let mut doc = todos();
        doc.tables[0].fields[1].key = Some("title".into());
        doc.tables[0].fields[2].retired = true;
        let message = invalid(&doc);
        assert!(
            message.contains("table todos, field title: `key` is set by the server"),
            "{message}"
        );
        assert!(
            message.contains("table todos, field due: `retired` is set by the server"),
            "{message}"
        );
    }

    #[test]
    fn every_problem_is_reported() {
        let mut doc = todos();
        doc.version = 0;
        doc.min_client_version = 0;
        doc.tables[0].fields[1].key = Some("k".into());
        doc.tables[0].primary_key = "nope".into();
        assert_eq!(invalid(&doc).split("; ").count(), 3);
    }
}

//! `mobilesyncdb schema diff` and `schema check` on files: three versions of a
//! to-do table, as people and as programs read the changes, and files that are
//! not schema documents.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::TempDir;

const V1: &str = r#"
version = 1
min_client_version = 1

[[tables]]
name = "todos"
primary_key = "id"

[[tables.fields]]
name = "id"
type = "string"
required = true

[[tables.fields]]
name = "title"
type = "string"

[[tables.fields]]
name = "price"
type = "integer"

[[tables.fields]]
name = "legacy"
type = "string"
"#;

const V2: &str = r#"{
  "version": 2,
  "min_client_version": 1,
  "tables": [{
    "name": "todos",
    "primary_key": "id",
    "fields": [
      {"name": "id", "type": "string", "required": true},
      {"name": "name", "type": "string", "renamed_from": "title"},
      {"name": "price", "type": "float"},
      {"name": "legacy", "type": "string"},
      {"name": "priority", "type": "integer", "default": 0}
    ]
  }]
}"#;

const V3: &str = r#"
version = 3
min_client_version = 2

[[tables]]
name = "todos"
primary_key = "id"

[[tables.fields]]
name = "id"
type = "string"
required = true

[[tables.fields]]
name = "name"
type = "string"

[[tables.fields]]
name = "price"
type = "float"

[[tables.fields]]
name = "priority"
type = "string"
default = "0"

[[tables.fields]]
name = "tags"
type = "json"
"#;

/// The three versions as files: TOML, JSON, and TOML without an extension.
fn versions(dir: &TempDir) -> [PathBuf; 3] {
    let files = [("v1.toml", V1), ("v2.json", V2), ("v3.schema", V3)];
    files.map(|(name, text)| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write a schema document");
        path
    })
}

fn run(args: &[&Path]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mobilesyncdb"))
        .args(args)
        .output()
        .expect("the binary runs")
}

fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "exit {:?}: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).expect("UTF-8")
}

fn failure(output: &Output) -> String {
    assert!(
        !output.status.success(),
        "expected a failure, got: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    String::from_utf8(output.stderr.clone()).expect("UTF-8")
}

fn diff(old: &Path, new: &Path) -> Output {
    run(&[Path::new("schema"), Path::new("diff"), old, new])
}

#[test]
fn people_read_what_each_version_changes() {
    let dir = TempDir::new("schema-diff-human");
    let [v1, v2, v3] = versions(&dir);
    assert_eq!(
        stdout(&diff(&v1, &v2)),
        "schema 1 → 2
  table todos:
    ~ field title renamed to name
    + field priority: integer, default 0
    ~ field price: integer → float (every value converts)
"
    );
    assert_eq!(
        stdout(&diff(&v2, &v3)),
        "schema 2 → 3
  min client version 1 → 2
  table todos:
    - field legacy: string
    + field tags: json
    ~ field priority: integer → string (every value converts)
    ~ field priority: default 0 → \"0\"
"
    );
    assert_eq!(stdout(&diff(&v3, &v3)), "schema 3 → 3\n  no changes\n");
}

#[test]
fn programs_read_the_changes_as_json() {
    let dir = TempDir::new("schema-diff-json");
    let [v1, v2, v3] = versions(&dir);
    let json = |old: &Path, new: &Path| -> serde_json::Value {
        let output = run(&[
            Path::new("schema"),
            Path::new("diff"),
            old,
            new,
            Path::new("--json"),
        ]);
        serde_json::from_str(&stdout(&output)).expect("JSON")
    };

    let first = json(&v1, &v2);
    assert_eq!(first["from_version"], 1);
    assert_eq!(first["to_version"], 2);
    assert!(first.get("min_client_version").is_none(), "{first}");
    let tables = first["tables"].as_array().expect("tables");
    assert_eq!(tables.len(), 1);
    assert_eq!(tables[0]["change"], "changed");
    assert_eq!(tables[0]["table"], "todos");
    assert_eq!(
        tables[0]["fields"],
        serde_json::json!([
            {"change": "field_renamed", "from": "title", "to": "name"},
            {"change": "field_added", "field": "priority", "type": "integer",
             "required": false, "default": 0},
            {"change": "type_changed", "field": "price", "from": "integer", "to": "float",
             "converter": {"from": "integer", "to": "float", "coverage": "total"}},
        ])
    );

    let second = json(&v2, &v3);
    assert_eq!(second["min_client_version"], serde_json::json!([1, 2]));
    let changes: Vec<&str> = second["tables"][0]["fields"]
        .as_array()
        .expect("field changes")
        .iter()
        .map(|change| change["change"].as_str().expect("a change tag"))
        .collect();
    assert_eq!(
        changes,
        [
            "field_removed",
            "field_added",
            "type_changed",
            "default_changed"
        ]
    );
    assert_eq!(second["tables"][0]["fields"][1]["field"], "tags");
    assert_eq!(second["tables"][0]["fields"][1]["type"], "json");
}

#[test]
fn check_validates_one_document() {
    let dir = TempDir::new("schema-check");
    let [v1, _, v3] = versions(&dir);
    let check = |file: &Path| run(&[Path::new("schema"), Path::new("check"), file]);
    assert_eq!(stdout(&check(&v1)), "ok: version 1, 1 table\n");
    assert_eq!(stdout(&check(&v3)), "ok: version 3, 1 table\n");

    let invalid = dir.path().join("invalid.toml");
    std::fs::write(
        &invalid,
        V1.replace(
            "name = \"price\"\ntype = \"integer\"",
            "name = \"price\"\ntype = \"integer\"\ndefault = \"free\"",
        ),
    )
    .expect("write");
    let error = failure(&check(&invalid));
    assert!(error.contains("invalid.toml"), "{error}");
    assert!(error.contains("table todos, field price"), "{error}");
}

#[test]
fn bad_files_are_named_and_fail() {
    let dir = TempDir::new("schema-diff-bad");
    let [v1, ..] = versions(&dir);

    let garbage = dir.path().join("garbage.toml");
    std::fs::write(&garbage, "version = [unclosed").expect("write");
    let error = failure(&diff(&v1, &garbage));
    assert!(error.contains("garbage.toml"), "{error}");
    assert!(error.contains("not a schema document"), "{error}");

    let not_json = dir.path().join("not.json");
    std::fs::write(&not_json, V1).expect("write");
    let error = failure(&diff(&not_json, &v1));
    assert!(error.contains("not.json"), "{error}");

    let missing = dir.path().join("missing.toml");
    let error = failure(&diff(&v1, &missing));
    assert!(error.contains("missing.toml"), "{error}");
}

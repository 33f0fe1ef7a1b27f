//! Export and import of whole databases (`mobilesyncdb::transfer`).
//!
//! - An export imported into a fresh database gives the same rows (every
//!   table's query results) and the same documents (heads per record), deleted
//!   records included, in both formats; importing it again changes nothing.
//! - A file cut at any of many positions, with a flipped byte, a wrong checksum
//!   or record count, garbage, an empty body, or tables that conflict with the
//!   database's schemas is refused with its code, and the database is unchanged.
//!   So is a file the database cannot hold (stamps too far ahead of its clock,
//!   records beyond its record limit).
//! - The file may arrive in pieces of any size, down to single bytes.
//! - The examples in `docs/EXPORT.md` import as documented.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use mobilesyncdb::config::EngineConfig;
use mobilesyncdb::crdt::{ChangeHash, ClientId, Value};
use mobilesyncdb::dataset::{Dataset, DatasetSpec, Fields};
use mobilesyncdb::engine::{Database, ManualClock, Query, Row};
use mobilesyncdb::schema::{FieldSpec, FieldType, TableSchema};
use mobilesyncdb::sync::wire::{self, MessageKind};
use mobilesyncdb::transfer::{
    ExportCursor, ExportOptions, Exporter, Format, ImportLimits, ImportReport, Importer,
    TransferError,
};
use quickcheck::{QuickCheck, TestResult};

mod common;

use common::fields;

const FORMATS: [Format; 2] = [Format::Ndjson, Format::Binary];

/// A database and its export in both formats.
struct Fixture {
    db: Database,
    ndjson: Vec<u8>,
    binary: Vec<u8>,
    records: u64,
    deleted: Vec<(String, String)>,
}

impl Fixture {
    fn file(&self, format: Format) -> &[u8] {
        match format {
            Format::Ndjson => &self.ndjson,
            Format::Binary => &self.binary,
        }
    }
}

fn origin() -> ClientId {
    ClientId::from("test")
}

fn id_of(row: &Fields) -> String {
    match &row["id"] {
        Value::Str(id) => id.to_string(),
        other => panic!("ids are strings, got {other:?}"),
    }
}

fn export(db: &Database, format: Format, options: ExportOptions) -> Vec<u8> {
    let exporter = Exporter::new(db.clone(), format, options).expect("export starts");
    exporter.flat_map(|chunk| chunk.expect("chunk")).collect()
}

fn fixture_of(db: Database, deleted: Vec<(String, String)>) -> Fixture {
    let ndjson = export(&db, Format::Ndjson, ExportOptions::default());
    let binary = export(&db, Format::Binary, ExportOptions::default());
    let records = all_records(&db).len() as u64;
    Fixture {
        db,
        ndjson,
        binary,
        records,
        deleted,
    }
}

/// The generated data set (about 200 KB of JSON, six tables), with deleted
/// records, records edited often enough to be compacted, and an empty table.
fn big() -> &'static Fixture {
    static BIG: OnceLock<Fixture> = OnceLock::new();
    BIG.get_or_init(|| {
        let dataset = Dataset::generate(DatasetSpec::new(11, 200_000));
        let db = Database::new(EngineConfig::default()).expect("database");
        dataset.load_into(&db, &origin()).expect("load");
        let mut deleted = Vec::new();
        for (table, every) in [("todos", 9), ("messages", 13)] {
            let rows = &dataset.table(table).expect("table").rows;
            for row in rows.iter().step_by(every) {
                db.delete(table, &id_of(row), &origin()).expect("delete");
                deleted.push((table.to_owned(), id_of(row)));
            }
        }
        let todos = &dataset.table("todos").expect("todos").rows;
        for row in todos.iter().skip(1).take(3) {
            for round in 0..10 {
                let title = fields(&[("title", Value::str(format!("edit {round}")))]);
                db.update("todos", &id_of(row), title, &origin())
                    .expect("update");
            }
        }
        db.create_table(notes_schema("archive")).expect("table");
        fixture_of(db, deleted)
    })
}

fn notes_schema(name: &str) -> TableSchema {
    TableSchema::new(name, "id")
        .field(FieldSpec::new("title", FieldType::String).required())
        .field(FieldSpec::new("done", FieldType::Boolean))
        .index("title")
}

/// Six notes: one deleted, one edited ten times. Small enough to cut at
/// hundreds of places.
fn small() -> &'static Fixture {
    static SMALL: OnceLock<Fixture> = OnceLock::new();
    SMALL.get_or_init(|| {
        let db = Database::new(EngineConfig::default()).expect("database");
        db.create_table(notes_schema("notes")).expect("table");
        for n in 0..6 {
            let note = fields(&[
                ("id", Value::str(format!("n{n}"))),
                ("title", Value::str(format!("note {n}"))),
                ("done", Value::Bool(n % 2 == 0)),
            ]);
            db.insert("notes", note, &origin()).expect("insert");
        }
        for round in 0..10 {
            let title = fields(&[("title", Value::str(format!("edit {round}")))]);
            db.update("notes", "n1", title, &origin()).expect("update");
        }
        db.delete("notes", "n4", &origin()).expect("delete");
        fixture_of(db, vec![("notes".to_owned(), "n4".to_owned())])
    })
}

/// Pushes `bytes` cut at `cuts` (offsets, any order), then finishes.
fn import_cut(
    db: &Database,
    format: Format,
    bytes: &[u8],
    cuts: &[usize],
) -> Result<ImportReport, TransferError> {
    let mut cuts: Vec<usize> = cuts.iter().map(|cut| cut % (bytes.len() + 1)).collect();
    cuts.push(0);
    cuts.push(bytes.len());
    cuts.sort_unstable();
    let mut importer = Importer::new(db.clone(), format, ImportLimits::default());
    for piece in cuts.windows(2) {
        importer.push(&bytes[piece[0]..piece[1]])?;
    }
    importer.finish()
}

fn import(db: &Database, format: Format, bytes: &[u8]) -> Result<ImportReport, TransferError> {
    import_cut(db, format, bytes, &[])
}

fn query_all(db: &Database, table: &str) -> Vec<Row> {
    let mut rows = Vec::new();
    let mut query = Query::new();
    loop {
        let result = db.query(table, &query).expect("query");
        rows.extend(result.rows);
        match result.next {
            Some(token) => query.after = Some(token),
            None => return rows,
        }
    }
}

/// Every record of every table, live and deleted: (table, id) → deleted.
fn all_records(db: &Database) -> BTreeMap<(String, String), bool> {
    let mut records = BTreeMap::new();
    for schema in db.schemas() {
        let mut cursor = Some(ExportCursor::default());
        while let Some(from) = cursor {
            let page = db
                .export_page(&schema.name, from, 100, 1 << 20)
                .expect("page");
            for record in page.records {
                records.insert((schema.name.clone(), record.id), record.deleted);
            }
            cursor = page.next;
        }
    }
    records
}

/// What a failed import must leave as it was.
#[derive(Debug, PartialEq)]
struct Snapshot {
    latest_seq: u64,
    schemas: Vec<TableSchema>,
    rows: BTreeMap<String, Vec<Row>>,
    records: BTreeMap<(String, String), bool>,
}

fn snapshot(db: &Database) -> Snapshot {
    let schemas = db.schemas();
    let rows = schemas
        .iter()
        .map(|schema| (schema.name.clone(), query_all(db, &schema.name)))
        .collect();
    Snapshot {
        latest_seq: db.latest_seq(),
        schemas,
        rows,
        records: all_records(db),
    }
}

fn heads(db: &Database, records: &BTreeMap<(String, String), bool>) -> Vec<Vec<ChangeHash>> {
    records
        .keys()
        .map(|(table, id)| {
            let mut heads = db.heads(table, id).expect("heads").expect("record");
            heads.sort_unstable();
            heads
        })
        .collect()
}

/// A database that already holds a table and a record of its own.
fn target() -> Database {
    let db = Database::new(EngineConfig::default()).expect("database");
    db.create_table(notes_schema("mine")).expect("table");
    let note = fields(&[("id", Value::str("m1")), ("title", Value::str("mine"))]);
    db.insert("mine", note, &origin()).expect("insert");
    db
}

/// Imports `bytes` into a fresh target and checks it is refused with `code`
/// and changes nothing.
fn assert_refused(format: Format, bytes: &[u8], codes: &[&str], what: &str) -> TransferError {
    let db = target();
    let before = snapshot(&db);
    let error = import(&db, format, bytes).expect_err(what);
    assert!(
        codes.contains(&error.code()),
        "{what}: code {} ({error}), expected one of {codes:?}",
        error.code()
    );
    assert_eq!(snapshot(&db), before, "{what} changed the database");
    error
}

fn ndjson_lines(file: &[u8]) -> Vec<String> {
    String::from_utf8(file.to_vec())
        .expect("utf-8")
        .lines()
        .map(str::to_owned)
        .collect()
}

fn ndjson_file(lines: &[String]) -> Vec<u8> {
    let mut file = lines.join("\n");
    file.push('\n');
    file.into_bytes()
}

/// The frames of a binary file, split by their declared lengths.
fn frames(file: &[u8]) -> Vec<Vec<u8>> {
    let mut frames = Vec::new();
    let mut rest = file;
    while !rest.is_empty() {
        let length = u32::from_le_bytes(rest[8..12].try_into().expect("4 bytes")) as usize;
        let (frame, tail) = rest.split_at(wire::HEADER_LEN + length);
        frames.push(frame.to_vec());
        rest = tail;
    }
    frames
}

#[derive(serde::Serialize)]
struct EndBody {
    records: u64,
    crc32: u32,
}

/// A binary file whose end frame says `records` and `crc32`.
fn with_binary_end(file: &[u8], records: u64, crc32: impl Fn(u32) -> u32) -> Vec<u8> {
    let frames = frames(file);
    let (_, before) = frames.split_last().expect("frames");
    let mut bytes = before.concat();
    let crc = crc32fast::hash(&bytes);
    let end = EndBody {
        records,
        crc32: crc32(crc),
    };
    bytes.extend(wire::seal_value(MessageKind::ExportEnd, &end, false));
    bytes
}

#[test]
fn an_export_imports_into_a_fresh_database_with_the_same_rows_and_documents() {
    let source = big();
    let records = all_records(&source.db);
    assert!(records.len() > 500, "{} records", records.len());
    for format in FORMATS {
        let db = Database::new(EngineConfig::default()).expect("database");
        let report = import(&db, format, source.file(format)).expect("import");
        assert_eq!(report.records, source.records, "{format:?}");
        assert_eq!((report.changed, report.unchanged), (source.records, 0));
        let names: Vec<String> = source.db.schemas().into_iter().map(|s| s.name).collect();
        assert_eq!(report.tables, names);
        assert_eq!(report.created_tables, names);
        assert_eq!(db.schemas(), source.db.schemas());
        for name in &names {
            assert_eq!(query_all(&db, name), query_all(&source.db, name), "{name}");
        }
        assert_eq!(
            all_records(&db),
            records,
            "{format:?}: ids and deleted flags"
        );
        assert_eq!(heads(&db, &records), heads(&source.db, &records));
        assert_eq!(db.rebuild_derived_state().expect("rebuild"), 0);
    }
}

#[test]
fn deleted_records_stay_deleted() {
    let source = small();
    for format in FORMATS {
        let db = Database::new(EngineConfig::default()).expect("database");
        import(&db, format, source.file(format)).expect("import");
        for (table, id) in &source.deleted {
            assert_eq!(db.get(table, id).expect("get"), None, "{table}/{id}");
            let records = BTreeMap::from([((table.clone(), id.clone()), true)]);
            assert_eq!(heads(&db, &records), heads(&source.db, &records));
        }
        // The tombstone is a change like any other: a live copy elsewhere that
        // imports the file learns of the deletion.
        let stale = Database::new(EngineConfig::default()).expect("database");
        import(&stale, format, &export_before_delete(format)).expect("import");
        assert!(stale.get("notes", "n4").expect("get").is_some());
        let report = import(&stale, format, source.file(format)).expect("import");
        // n0 was there whole; n4 gains its tombstone; the others are new.
        assert_eq!((report.changed, report.unchanged), (source.records - 1, 1));
        assert_eq!(stale.get("notes", "n4").expect("get"), None);
    }
}

/// The small fixture's notes before n4 was deleted: its own export, with n4's
/// tombstone left out.
fn export_before_delete(format: Format) -> Vec<u8> {
    let db = Database::new(EngineConfig::default()).expect("database");
    db.create_table(notes_schema("notes")).expect("table");
    let source = small();
    for (_, id) in source
        .deleted
        .iter()
        .chain([&("notes".to_owned(), "n0".to_owned())])
    {
        let bytes = source
            .db
            .record_bytes("notes", id)
            .expect("bytes")
            .expect("record");
        let document = mobilesyncdb::crdt::Record::load(&bytes).expect("load");
        let mut changes = document.changes_since(&[]);
        if document.is_deleted() {
            changes.pop();
        }
        db.merge_changes("notes", id, changes, &origin())
            .expect("merge");
    }
    export(&db, format, ExportOptions::default())
}

#[test]
fn importing_the_same_file_again_changes_nothing() {
    let source = small();
    for format in FORMATS {
        let db = target();
        let first = import(&db, format, source.file(format)).expect("first import");
        assert_eq!(first.created_tables, vec!["notes".to_owned()]);
        let before = snapshot(&db);
        let again = import(&db, format, source.file(format)).expect("second import");
        assert_eq!((again.changed, again.unchanged), (0, source.records));
        assert!(again.created_tables.is_empty());
        assert_eq!(snapshot(&db), before, "{format:?}");
    }
}

#[test]
fn an_import_merges_with_records_the_database_changed_since() {
    let source = small();
    let db = Database::new(EngineConfig::default()).expect("database");
    import(&db, Format::Binary, &source.binary).expect("import");
    let title = fields(&[("title", Value::str("changed here"))]);
    db.update("notes", "n2", title, &origin()).expect("update");
    let latest = db.latest_seq();
    let report = import(&db, Format::Ndjson, &source.ndjson).expect("import again");
    assert_eq!(report.changed, 0);
    assert_eq!(db.latest_seq(), latest);
    let row = db.get("notes", "n2").expect("get").expect("live");
    assert_eq!(row.get(1), Value::str("changed here"));
    // The other way round: the newer copy brings its change to the older one.
    let newer = export(&db, Format::Ndjson, ExportOptions::default());
    let old = Database::new(EngineConfig::default()).expect("database");
    import(&old, Format::Binary, &source.binary).expect("import");
    let report = import(&old, Format::Ndjson, &newer).expect("import newer");
    assert_eq!((report.changed, report.unchanged), (1, source.records - 1));
    assert_eq!(query_all(&old, "notes"), query_all(&db, "notes"));
}

/// Cut positions: the first and last 64 bytes, every chunk boundary, and
/// evenly spread positions in between.
fn cut_positions(file: &[u8], spread: usize) -> Vec<usize> {
    let mut positions: Vec<usize> = (1..64.min(file.len())).collect();
    positions.extend(file.len().saturating_sub(64)..file.len());
    positions.extend((1..spread).map(|k| k * file.len() / spread));
    positions.sort_unstable();
    positions.dedup();
    positions
}

#[test]
fn a_file_cut_anywhere_is_refused_and_changes_nothing() {
    let source = small();
    for format in FORMATS {
        let file = source.file(format);
        let db = target();
        let before = snapshot(&db);
        for at in cut_positions(file, 120) {
            // Only the final newline of an NDJSON file may go missing.
            if format == Format::Ndjson && at == file.len() - 1 {
                continue;
            }
            let error = import(&db, format, &file[..at]).expect_err("cut file");
            assert_eq!(
                error.code(),
                "truncated_export",
                "{format:?} cut at {at}: {error}"
            );
        }
        assert_eq!(snapshot(&db), before, "{format:?}");
    }
    let last_newline_missing = &source.ndjson[..source.ndjson.len() - 1];
    let db = Database::new(EngineConfig::default()).expect("database");
    import(&db, Format::Ndjson, last_newline_missing).expect("an end line without its newline");
}

#[test]
fn a_file_cut_between_chunks_is_refused() {
    let page = ExportOptions {
        page_records: 1,
        ..ExportOptions::default()
    };
    for format in FORMATS {
        let exporter = Exporter::new(small().db.clone(), format, page.clone()).expect("export");
        let chunks: Vec<Vec<u8>> = exporter.map(|chunk| chunk.expect("chunk")).collect();
        assert_eq!(chunks.len() as u64, small().records + 2, "{format:?}");
        let file = chunks.concat();
        let db = target();
        let before = snapshot(&db);
        let mut end = 0;
        for chunk in &chunks[..chunks.len() - 1] {
            end += chunk.len();
            let error = import(&db, format, &file[..end]).expect_err("cut file");
            assert_eq!(
                error.code(),
                "truncated_export",
                "{format:?} cut at {end}: {error}"
            );
        }
        // All the records of the generated set, without the end marker.
        let big = big().file(format);
        let end_marker = match format {
            Format::Ndjson => {
                big[..big.len() - 1]
                    .iter()
                    .rposition(|b| *b == b'\n')
                    .expect("line")
                    + 1
            }
            Format::Binary => big.len() - frames(big).last().expect("frame").len(),
        };
        let error = import(&db, format, &big[..end_marker]).expect_err("cut file");
        assert_eq!(error.code(), "truncated_export", "{format:?}: {error}");
        assert_eq!(snapshot(&db), before);
    }
}

#[test]
fn a_flipped_byte_is_refused_and_changes_nothing() {
    let source = small();
    let codes = [
        "checksum_mismatch",
        "bad_export_file",
        "count_mismatch",
        "unsupported_version",
        "truncated_export",
        "too_large",
        // A flip inside the header's schemas can leave valid JSON naming a
        // field that does not exist: refused as a schema the server cannot create.
        "bad_schema",
        "schema_conflict",
    ];
    for format in FORMATS {
        let file = source.file(format);
        let db = target();
        let before = snapshot(&db);
        for at in cut_positions(file, 150) {
            let mut damaged = file.to_vec();
            damaged[at] ^= 0x20;
            if format == Format::Ndjson && damaged[at] == b'\n' {
                continue;
            }
            let error = import(&db, format, &damaged).expect_err("damaged file");
            assert!(
                codes.contains(&error.code()),
                "{format:?} flip at {at}: {error}"
            );
        }
        assert_eq!(snapshot(&db), before, "{format:?}");
    }
}

#[test]
fn a_wrong_checksum_is_refused() {
    let source = small();
    let mut lines = ndjson_lines(&source.ndjson);
    let end = lines.last_mut().expect("end line");
    let crc = end.split("\"crc32\":\"").nth(1).expect("crc")[..8].to_owned();
    let wrong = format!("{:08x}", u32::from_str_radix(&crc, 16).expect("hex") ^ 1);
    *end = end.replace(&crc, &wrong);
    let error = assert_refused(
        Format::Ndjson,
        &ndjson_file(&lines),
        &["checksum_mismatch"],
        "crc",
    );
    assert!(
        error.to_string().contains(&format!("line {}", lines.len())),
        "{error}"
    );

    let binary = with_binary_end(&source.binary, source.records, |crc| crc ^ 1);
    assert_refused(
        Format::Binary,
        &binary,
        &["checksum_mismatch"],
        "binary crc",
    );
    let unchanged = with_binary_end(&source.binary, source.records, |crc| crc);
    assert_eq!(
        unchanged, source.binary,
        "the test rebuilds the end frame exactly"
    );
}

#[test]
fn a_wrong_record_count_is_refused() {
    let source = small();
    let mut lines = ndjson_lines(&source.ndjson);
    let end = lines.last_mut().expect("end line");
    let count = format!("\"records\":{}", source.records);
    *end = end.replace(&count, &format!("\"records\":{}", source.records + 1));
    assert_refused(
        Format::Ndjson,
        &ndjson_file(&lines),
        &["count_mismatch"],
        "count",
    );

    let binary = with_binary_end(&source.binary, source.records - 1, |crc| crc);
    assert_refused(Format::Binary, &binary, &["count_mismatch"], "binary count");

    // A record line removed, with the count and checksum made to match.
    let mut lines = ndjson_lines(&source.ndjson);
    lines.remove(2);
    lines.pop();
    let body = ndjson_file(&lines);
    let records = source.records - 1;
    let crc = crc32fast::hash(&body);
    lines.push(format!(
        "{{\"type\":\"end\",\"records\":{records},\"crc32\":\"{crc:08x}\"}}"
    ));
    let db = Database::new(EngineConfig::default()).expect("database");
    let report = import(&db, Format::Ndjson, &ndjson_file(&lines)).expect("a consistent file");
    assert_eq!(report.records, records);
}

#[test]
fn garbage_empty_bodies_and_the_other_format_are_refused() {
    let source = small();
    let random: Vec<u8> = (0..4096_u32)
        .map(|n| (n.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let cases: [(&str, &[u8]); 5] = [
        ("empty", b""),
        ("random bytes", &random),
        ("HTTP", b"GET / HTTP/1.1\r\nHost: example\r\n\r\n"),
        ("JSON that is not an export", b"{\"hello\":\"world\"}\n"),
        (
            "a header of another format",
            b"{\"type\":\"header\",\"format\":\"other\",\"version\":1}\n",
        ),
    ];
    for format in FORMATS {
        for (what, bytes) in cases {
            assert_refused(format, bytes, &["bad_export_file"], what);
        }
    }
    assert_refused(
        Format::Binary,
        &source.ndjson,
        &["bad_export_file"],
        "NDJSON as binary",
    );
    assert_refused(
        Format::Ndjson,
        &source.binary,
        &["bad_export_file"],
        "binary as NDJSON",
    );
    let future = String::from_utf8(source.ndjson.clone())
        .expect("utf-8")
        .replacen("\"version\":1,", "\"version\":2,", 1);
    assert_refused(
        Format::Ndjson,
        future.as_bytes(),
        &["unsupported_version"],
        "version 2",
    );
    let error = Importer::new(target(), Format::Ndjson, ImportLimits::default())
        .finish()
        .expect_err("nothing pushed");
    assert_eq!(error.code(), "bad_export_file");
}

#[test]
fn inconsistent_records_are_refused_naming_their_line() {
    let source = small();
    let lines = ndjson_lines(&source.ndjson);
    let record = |line: &str| serde_json::from_str::<serde_json::Value>(line).expect("json");
    let mut cases: Vec<(&str, Vec<String>)> = Vec::new();
    let mut duplicate = lines.clone();
    duplicate.insert(3, lines[2].clone());
    cases.push(("duplicate record", duplicate));
    let mut bad_doc = lines.clone();
    let mut line = record(&lines[2]);
    line["doc"] = "aGVsbG8gd29ybGQ=".into();
    bad_doc[2] = line.to_string();
    cases.push(("not a document", bad_doc));
    let mut flag = lines.clone();
    let mut line = record(&lines[2]);
    line["deleted"] = true.into();
    flag[2] = line.to_string();
    cases.push(("deleted flag that disagrees", flag));
    let mut unlisted = lines.clone();
    let mut line = record(&lines[2]);
    line["table"] = "elsewhere".into();
    unlisted[2] = line.to_string();
    cases.push(("table not in the header", unlisted));
    let mut headless = lines.clone();
    headless.remove(0);
    cases.push(("no header", headless));
    for (what, lines) in cases {
        let error = assert_refused(
            Format::Ndjson,
            &ndjson_file(&lines),
            &["bad_export_file"],
            what,
        );
        let line = match what {
            "no header" => 1,
            "duplicate record" => 4,
            _ => 3,
        };
        assert!(
            error.to_string().contains(&format!("line {line}")),
            "{what}: {error}"
        );
    }
}

#[test]
fn a_table_with_another_schema_is_refused_before_anything_is_written() {
    let source = small();
    for format in FORMATS {
        let db = target();
        let other =
            TableSchema::new("notes", "id").field(FieldSpec::new("title", FieldType::Integer));
        db.create_table(other).expect("table");
        let error = assert_refused_in(&db, format, source.file(format), "schema_conflict");
        let message = error.to_string();
        assert!(
            message.contains("`notes`") && message.contains("`title`"),
            "{message}"
        );
        assert!(message.contains("`done` is only in the file"), "{message}");
    }
    // The same schema is no conflict: the table is reused, not created.
    let db = target();
    db.create_table(notes_schema("notes")).expect("table");
    let report = import(&db, Format::Binary, &source.binary).expect("import");
    assert!(report.created_tables.is_empty());
    assert_eq!(report.changed, source.records);
}

fn assert_refused_in(db: &Database, format: Format, bytes: &[u8], code: &str) -> TransferError {
    let before = snapshot(db);
    let error = import(db, format, bytes).expect_err(code);
    assert_eq!(error.code(), code, "{error}");
    assert_eq!(snapshot(db), before);
    error
}

#[test]
fn a_file_the_database_cannot_hold_is_refused_whole() {
    // Thumbnails are larger than 1 KiB: refused before any record is written.
    let small_records = EngineConfig {
        max_record_bytes: 1 << 10,
        ..EngineConfig::default()
    };
    let db = Database::new(small_records).expect("database");
    let error = assert_refused_in(&db, Format::Binary, &big().binary, "record_too_large");
    assert!(
        error.to_string().contains("nothing was imported"),
        "{error}"
    );
    for format in FORMATS {
        // A server whose clock is a year behind the file's stamps.
        let clock = ManualClock::at(1_700_000_000_000);
        let db = Database::with_clock(EngineConfig::default(), clock).expect("database");
        assert_refused_in(&db, format, small().file(format), "clock_skew");
    }
}

#[test]
fn a_file_beyond_the_memory_limit_is_refused_before_any_table_is_created() {
    // The pre-check counts what each merge will ask for, as the write path
    // does: a file that would fail half-way is refused whole, and no table of
    // it is left behind.
    // Sized so that the documents alone fit under the limit but the records
    // they become (documents, rows, indexes) do not: counting the documents
    // only would let the import start and fail part-way.
    let dataset = Dataset::generate(DatasetSpec::new(13, 450_000));
    let source = Database::new(EngineConfig::default()).expect("database");
    dataset.load_into(&source, &origin()).expect("load");
    let tight = EngineConfig {
        max_memory_bytes: 1 << 20,
        ..EngineConfig::default()
    };
    // The documents fit, the records they become do not.
    let memory = source.stats().memory;
    assert!(memory.documents < tight.max_memory_bytes, "{memory:?}");
    assert!(
        memory.total - memory.doc_cache - memory.change_log > tight.max_memory_bytes,
        "{memory:?}"
    );
    // The check is the engine's, whatever the file's format.
    let file = export(&source, Format::Binary, ExportOptions::default());
    let db = Database::new(tight).expect("database");
    assert_refused_in(&db, Format::Binary, &file, "memory_limit");
    assert!(db.schemas().is_empty(), "no table is created");
}

#[test]
fn a_file_fed_in_pieces_imports_the_same() {
    let source = small();
    for format in FORMATS {
        let file = source.file(format);
        let whole = Database::new(EngineConfig::default()).expect("database");
        let expected = import(&whole, format, file).expect("import");
        let bytewise = Database::new(EngineConfig::default()).expect("database");
        let cuts: Vec<usize> = (1..file.len()).collect();
        let report = import_cut(&bytewise, format, file, &cuts).expect("one byte at a time");
        assert_eq!(report, expected);
        assert_eq!(snapshot(&bytewise).rows, snapshot(&whole).rows);
    }
    let source = big();
    for format in FORMATS {
        let file = source.file(format);
        let db = Database::new(EngineConfig::default()).expect("database");
        let mut rng = fastrand::Rng::with_seed(7);
        let cuts: Vec<usize> = (0..64).map(|_| rng.usize(..file.len())).collect();
        let report = import_cut(&db, format, file, &cuts).expect("random pieces");
        assert_eq!(report.records, source.records);
        assert_eq!(all_records(&db), all_records(&source.db));
    }
}

#[test]
fn any_split_of_a_file_imports_the_same() {
    fn property(cuts: Vec<usize>, binary: bool) -> TestResult {
        let source = small();
        let format = if binary {
            Format::Binary
        } else {
            Format::Ndjson
        };
        let db = Database::new(EngineConfig::default()).expect("database");
        let report = import_cut(&db, format, source.file(format), &cuts).expect("import");
        let rows = query_all(&db, "notes");
        TestResult::from_bool(
            report.records == source.records && rows == query_all(&source.db, "notes"),
        )
    }
    QuickCheck::new()
        .tests(40)
        .quickcheck(property as fn(Vec<usize>, bool) -> TestResult);
}

#[test]
fn an_export_of_chosen_tables_carries_their_access_values() {
    let source = big();
    let access = BTreeMap::from([
        (
            "todos".to_owned(),
            serde_json::json!({"owner_field": "owner"}),
        ),
        ("not_exported".to_owned(), serde_json::json!(true)),
    ]);
    for format in FORMATS {
        let options = ExportOptions {
            tables: Some(vec![
                "todos".to_owned(),
                "archive".to_owned(),
                "todos".to_owned(),
            ]),
            access: access.clone(),
            page_records: 25,
        };
        let file = export(&source.db, format, options);
        let db = Database::new(EngineConfig::default()).expect("database");
        let report = import(&db, format, &file).expect("import");
        assert_eq!(
            report.tables,
            vec!["todos".to_owned(), "archive".to_owned()]
        );
        assert_eq!(
            report.access,
            BTreeMap::from([("todos".to_owned(), access["todos"].clone())])
        );
        assert_eq!(query_all(&db, "todos"), query_all(&source.db, "todos"));
        let unknown = ExportOptions {
            tables: Some(vec!["todos".to_owned(), "nope".to_owned()]),
            ..ExportOptions::default()
        };
        let error = Exporter::new(source.db.clone(), format, unknown).expect_err("unknown table");
        assert_eq!(error.code(), "unknown_table");
    }
}

#[test]
fn chunks_are_bounded_and_pages_hold_page_records() {
    fn sendable<T: Send + 'static>(_: &T) {}
    let source = big();
    for format in FORMATS {
        let options = ExportOptions {
            page_records: 10,
            ..ExportOptions::default()
        };
        let exporter = Exporter::new(source.db.clone(), format, options).expect("export");
        sendable(&exporter);
        let chunks: Vec<Vec<u8>> = exporter.map(|chunk| chunk.expect("chunk")).collect();
        // A header, pages of at most ten records, an end.
        assert!(
            chunks.len() as u64 >= source.records / 10 + 2,
            "{}",
            chunks.len()
        );
        assert!(chunks.iter().all(|chunk| chunk.len() < 2 << 20));
        if format == Format::Ndjson {
            for chunk in &chunks[1..chunks.len() - 1] {
                assert!(chunk.iter().filter(|byte| **byte == b'\n').count() <= 10);
            }
        }
        let db = Database::new(EngineConfig::default()).expect("database");
        let report = import(&db, format, &chunks.concat()).expect("import");
        assert_eq!(report.records, source.records);
    }
}

#[test]
fn a_line_or_file_beyond_the_limits_is_refused() {
    let source = small();
    for format in FORMATS {
        let limits = ImportLimits {
            max_bytes: 1 << 20,
            max_line_bytes: 64,
        };
        let mut importer = Importer::new(target(), format, limits);
        let error = importer.push(source.file(format)).expect_err("a long line");
        assert_eq!(error.code(), "too_large");
        assert_eq!(
            importer.push(b"").expect_err("over").code(),
            "import_aborted"
        );
        let limits = ImportLimits {
            max_bytes: 100,
            ..ImportLimits::default()
        };
        let mut importer = Importer::new(target(), format, limits);
        let error = importer
            .push(source.file(format))
            .expect_err("a large file");
        assert_eq!(error.code(), "too_large");
    }
}

#[test]
fn content_types_name_their_format() {
    for format in FORMATS {
        assert_eq!(
            Format::from_content_type(format.content_type()),
            Some(format)
        );
    }
    let with_parameters = "Application/X-NDJSON; charset=utf-8";
    assert_eq!(
        Format::from_content_type(with_parameters),
        Some(Format::Ndjson)
    );
    assert_eq!(Format::from_content_type("application/json"), None);
}

/// The fenced block of `docs/EXPORT.md` whose info string is `info`.
fn documented(info: &str) -> String {
    let text = include_str!("../docs/EXPORT.md");
    let start = text
        .find(&format!("```{info}\n"))
        .unwrap_or_else(|| panic!("a ```{info} block"))
        + info.len()
        + 4;
    let end = start + text[start..].find("```").expect("closing fence");
    text[start..end].to_owned()
}

#[test]
fn the_documented_examples_import() {
    let ndjson = documented("ndjson");
    let hex = documented("hexdump");
    let binary: Vec<u8> = hex
        .lines()
        .flat_map(|line| {
            line.split_whitespace()
                .skip(1)
                .take_while(|word| word.len() == 2)
        })
        .map(|byte| u8::from_str_radix(byte, 16).expect("hex byte"))
        .collect();
    for (format, file) in [
        (Format::Ndjson, ndjson.as_bytes()),
        (Format::Binary, &binary[..]),
    ] {
        let db = Database::new(EngineConfig::default()).expect("database");
        let report = import(&db, format, file).expect("the documented example");
        assert_eq!((report.records, report.changed), (2, 2), "{format:?}");
        assert_eq!(report.created_tables, vec!["notes".to_owned()]);
        let row = db.get("notes", "n1").expect("get").expect("live");
        assert_eq!(row.get(1), Value::str("buy milk"));
        assert_eq!(db.get("notes", "n2").expect("get"), None);
        assert!(db.record_bytes("notes", "n2").expect("bytes").is_some());
    }
}

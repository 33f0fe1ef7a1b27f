//! Schema migration figures: applying versioned schema documents to a large
//! table, and pulling as an app that is versions behind.
//!
//! `cargo bench --bench schema` prints one `figure <name> = <value> <unit>` line
//! per figure:
//!
//! - `migration_apply_ms_1m_records` (target ≤ 50 ms) and `_max`: a database
//!   holding 1,000,000 live records in table `items` (`id`, `title`, `price`
//!   integer, `legacy`, `done` boolean, `code` string) is at schema version 1
//!   (a document describing the table as created). Version 2 adds `priority`
//!   (integer, default 0), removes `legacy`, renames `title` to `name` and
//!   changes `price` from integer to float, in one document; versions 3 to 10
//!   each make another change that needs no look at the records (add a field
//!   with a default, `priority` integer to float, rename `name` to `label`).
//!   Median and maximum of the nine applies. Records migrate when read: one
//!   old record is then read and checked in the current shape.
//! - `migration_check_ms_1m_records` (informational): the dry run
//!   (`plan_schema`) of changing `code` from string to integer, a conversion
//!   that not every string survives, so every record's value is checked.
//!   Median of three. `migration_apply_checked_ms_1m_records`: applying it
//!   once (the same check, then the constant-time switch).
//! - `translated_pull_overhead_pct` (target ≤ 20): a separate database of
//!   20,000 such records at version 3 (version 2 as above, then `priority`
//!   integer to string and `done` boolean to integer). A full initial pull
//!   (cursor 0 until `has_more` is false, each batch decoded) by an app on
//!   version 1, whose rows the server translates back through two versions,
//!   against one on the current version. The two alternate, 15 rounds each;
//!   medians. Also `pull_ms_current_client`, `pull_ms_v1_client` and the bytes
//!   of each full pull (`pull_bytes_current_client`, `pull_bytes_v1_client`).
//!
//! Set `MSDB_BENCH_RECORDS` to change the size of the migrated table (filling
//! it goes through `Database::insert`, about a minute for a million records),
//! `MSDB_BENCH_PULL_RECORDS` the size of the pulled one.

use std::time::{Duration, Instant};

#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use mobilesyncdb::config::SyncConfig;
use mobilesyncdb::crdt::{ClientId, Value};
use mobilesyncdb::engine::Database;
use mobilesyncdb::schema::{FieldSpec, FieldType, Fields, SchemaDoc, TableSchema};
use mobilesyncdb::sync::{PullBatch, PullRequest, SyncServer, WireScope};
use serde_json::json;

mod common;
use common::{FullPull, env_number, figure, median, ms};

const TABLE: &str = "items";

fn id_of(i: u64) -> String {
    format!("item-{i:07}")
}

/// Text of `len` random letters and digits, the same for the same `seed`:
/// titles and notes vary as people's do, so that columns do not compress
/// beyond what real data allows.
fn text(seed: u64, len: usize) -> String {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..len).map(|_| rng.alphanumeric()).collect()
}

fn title_of(i: u64) -> String {
    format!("Item {i} {}", text(i, 12))
}

fn legacy_of(i: u64) -> String {
    text(i ^ 0x5eed_0000_0000, 16)
}

fn price_of(i: u64) -> i64 {
    (i % 10_000) as i64
}

/// The table as created: version 1.
fn items_v1() -> TableSchema {
    TableSchema::new(TABLE, "id")
        .field(FieldSpec::new("title", FieldType::String))
        .field(FieldSpec::new("price", FieldType::Integer))
        .field(FieldSpec::new("legacy", FieldType::String))
        .field(FieldSpec::new("done", FieldType::Boolean))
        .field(FieldSpec::new("code", FieldType::String))
}

fn record(i: u64) -> Fields {
    let mut fields = Fields::new();
    fields.insert("id".into(), Value::str(id_of(i)));
    fields.insert("title".into(), Value::str(title_of(i)));
    fields.insert("price".into(), Value::Int(price_of(i)));
    fields.insert("legacy".into(), Value::str(legacy_of(i)));
    fields.insert("done".into(), Value::Bool(i.is_multiple_of(2)));
    fields.insert("code".into(), Value::str(i.to_string()));
    fields
}

/// A database with table `items` holding `records` records, and how long
/// filling it took.
fn filled(records: u64) -> (Database, Duration) {
    let db = Database::new(common::engine_config()).expect("engine config");
    db.create_table(items_v1()).expect("create items");
    let origin = ClientId::from("bench");
    let started = Instant::now();
    let step = (records / 10).max(1);
    for i in 0..records {
        db.insert(TABLE, record(i), &origin).expect("insert");
        if (i + 1) % step == 0 && records >= 100_000 {
            eprintln!(
                "  filled {} of {records} records ({:.0} s)",
                i + 1,
                started.elapsed().as_secs_f64()
            );
        }
    }
    (db, started.elapsed())
}

fn doc(version: u32, table: &TableSchema) -> SchemaDoc {
    SchemaDoc {
        version,
        min_client_version: 1,
        tables: vec![table.clone()],
    }
}

/// `table` with field `name` replaced by `spec`, in place.
fn replaced(mut table: TableSchema, name: &str, spec: FieldSpec) -> TableSchema {
    let at = table
        .fields
        .iter()
        .position(|field| field.name == name)
        .unwrap_or_else(|| panic!("no field {name}"));
    table.fields[at] = spec;
    table
}

fn removed(mut table: TableSchema, name: &str) -> TableSchema {
    table.fields.retain(|field| field.name != name);
    table
}

/// Version 2 as the brief has it: add `priority`, remove `legacy`, rename
/// `title` to `name`, `price` integer to float.
fn items_v2(v1: &TableSchema) -> TableSchema {
    let table = removed(v1.clone(), "legacy");
    let table = replaced(
        table,
        "title",
        FieldSpec::new("name", FieldType::String).renamed_from("title"),
    );
    let table = replaced(table, "price", FieldSpec::new("price", FieldType::Float));
    table.field(FieldSpec::new("priority", FieldType::Integer).with_default(json!(0)))
}

/// The declared renames dropped: they hold for one version step only.
fn settled(mut table: TableSchema) -> TableSchema {
    for field in &mut table.fields {
        field.renamed_from = None;
    }
    table
}

fn apply(db: &Database, doc: &SchemaDoc) -> Duration {
    let started = Instant::now();
    let report = db
        .apply_schema(doc, &ClientId::from("admin"))
        .unwrap_or_else(|error| panic!("apply version {}: {error:?}", doc.version));
    let elapsed = started.elapsed();
    assert!(
        report.applied,
        "version {} not applied: {report:?}",
        doc.version
    );
    assert!(report.blockers.is_empty(), "{report:?}");
    elapsed
}

fn migrations() {
    let records = env_number("MSDB_BENCH_RECORDS", 1_000_000);
    let (db, fill) = filled(records);
    println!(
        "  {records} records filled in {:.1} s ({:.0} records/s)",
        fill.as_secs_f64(),
        records as f64 / fill.as_secs_f64()
    );
    assert_eq!(db.stats().live_records as u64, records);

    let v1 = items_v1();
    let first = apply(&db, &doc(1, &v1));
    println!("  version 1 (the table as created): {:.3} ms", ms(first));

    // Each step: the next table, and what it changes.
    let mut table = v1.clone();
    let mut steps: Vec<(TableSchema, &str)> = Vec::new();
    table = items_v2(&table);
    steps.push((
        table.clone(),
        "add priority, remove legacy, rename title to name, price integer to float",
    ));
    table =
        settled(table).field(FieldSpec::new("extra_3", FieldType::Integer).with_default(json!(3)));
    steps.push((table.clone(), "add extra_3 (integer, default 3)"));
    table = replaced(
        table,
        "priority",
        FieldSpec::new("priority", FieldType::Float).with_default(json!(0.0)),
    );
    steps.push((table.clone(), "priority integer to float"));
    table = replaced(
        table,
        "name",
        FieldSpec::new("label", FieldType::String).renamed_from("name"),
    );
    steps.push((table.clone(), "rename name to label"));
    table = settled(table)
        .field(FieldSpec::new("extra_6", FieldType::String).with_default(json!("six")));
    steps.push((table.clone(), "add extra_6 (string, default \"six\")"));
    table = table.field(FieldSpec::new("extra_7", FieldType::Boolean).with_default(json!(true)));
    steps.push((table.clone(), "add extra_7 (boolean, default true)"));
    table = removed(table, "extra_3");
    steps.push((table.clone(), "remove extra_3"));
    table = replaced(
        table,
        "extra_6",
        FieldSpec::new("notes", FieldType::String)
            .with_default(json!("six"))
            .renamed_from("extra_6"),
    );
    steps.push((table.clone(), "rename extra_6 to notes"));
    table =
        settled(table).field(FieldSpec::new("extra_10", FieldType::Float).with_default(json!(1.5)));
    steps.push((table.clone(), "add extra_10 (float, default 1.5)"));

    let mut applies = Vec::new();
    for (at, (target, what)) in steps.iter().enumerate() {
        let version = at as u32 + 2;
        let elapsed = apply(&db, &doc(version, target));
        println!("  version {version} ({what}): {:.3} ms", ms(elapsed));
        applies.push(elapsed);
    }
    let version = steps.len() as u32 + 1;
    assert_eq!(db.schema_version(), version);
    figure(
        "migration_apply_ms_1m_records",
        ms(median(applies.clone())),
        "ms",
    );
    figure(
        "migration_apply_ms_1m_records_max",
        ms(applies.iter().copied().max().expect("applies")),
        "ms",
    );

    // An old record reads in the current shape.
    let schema = db.schema(TABLE).expect("items");
    for i in [0, records / 2, records - 1] {
        let row = db.get(TABLE, &id_of(i)).expect("get").expect("live record");
        let json = row.to_json(&schema);
        let check = |ok: bool, what: &str| assert!(ok, "record {i}: {what}: {json:?}");
        check(json.get("id") == Some(&json!(id_of(i))), "id");
        check(
            json.get("label") == Some(&json!(title_of(i))),
            "label is the old title",
        );
        check(
            !json.contains_key("title") && !json.contains_key("name"),
            "no title or name",
        );
        check(!json.contains_key("legacy"), "no legacy");
        check(!json.contains_key("extra_3"), "no extra_3");
        let price = json.get("price").expect("price");
        check(price.is_f64(), "price is a float");
        check(
            price.as_f64() == Some(price_of(i) as f64),
            "price keeps its value",
        );
        let priority = json.get("priority").expect("priority");
        check(
            priority.is_f64() && priority.as_f64() == Some(0.0),
            "priority 0.0",
        );
        check(json.get("notes") == Some(&json!("six")), "notes default");
        check(json.get("extra_7") == Some(&json!(true)), "extra_7 default");
        check(
            json.get("extra_10") == Some(&json!(1.5)),
            "extra_10 default",
        );
        check(
            json.get("done") == Some(&json!(i.is_multiple_of(2))),
            "done",
        );
        check(json.get("code") == Some(&json!(i.to_string())), "code");
        if i == 0 {
            println!(
                "  record 0 at version {version}: {}",
                serde_json::Value::Object(json)
            );
        }
    }

    // A conversion that every value must survive: `code` string to integer.
    let checked = doc(
        version + 1,
        &replaced(
            settled(table),
            "code",
            FieldSpec::new("code", FieldType::Integer),
        ),
    );
    let mut plans = Vec::new();
    for _ in 0..3 {
        let started = Instant::now();
        let report = db.plan_schema(&checked).expect("plan");
        plans.push(started.elapsed());
        assert!(!report.applied);
        assert!(report.blockers.is_empty(), "{report:?}");
    }
    assert_eq!(db.schema_version(), version, "a dry run changes nothing");
    println!(
        "  plan of code string to integer: {:?} ms",
        plans.iter().map(|plan| ms(*plan)).collect::<Vec<_>>()
    );
    figure("migration_check_ms_1m_records", ms(median(plans)), "ms");
    let elapsed = apply(&db, &checked);
    figure("migration_apply_checked_ms_1m_records", ms(elapsed), "ms");
    let schema = db.schema(TABLE).expect("items");
    let i = records / 3;
    let json = db
        .get(TABLE, &id_of(i))
        .expect("get")
        .expect("live")
        .to_json(&schema);
    assert_eq!(json.get("code"), Some(&json!(i)), "{json:?}");
}

/// One full pull from cursor 0; the batches, their bytes and the time.
fn full_pull(
    server: &SyncServer,
    device: &str,
    version: Option<u32>,
) -> (Vec<PullBatch>, usize, Duration) {
    let mut pull = FullPull::new(
        PullRequest {
            device: device.to_owned(),
            tables: vec![WireScope::all(TABLE)],
            schema_version: version,
            ..PullRequest::default()
        },
        true,
    );
    let started = Instant::now();
    let mut batches = Vec::new();
    while let Some(message) = pull.next_message() {
        let answer = server.handle(&message);
        batches.push(pull.answer(&answer));
    }
    (batches, pull.bytes_received, started.elapsed())
}

/// A pulled row as (field name, value) pairs.
type NamedRow = Vec<(String, Option<Value>)>;

/// The fields and a record's row (by field name) of a full pull.
fn shape_of(batches: &[PullBatch], id: &str) -> (Vec<(String, FieldType)>, NamedRow) {
    let mut fields = None;
    let mut row = None;
    for table in batches.iter().flat_map(|batch| &batch.tables) {
        assert_eq!(table.table, TABLE);
        if let Some(known) = &fields {
            assert_eq!(known, &table.fields, "every batch has the same fields");
        }
        fields = Some(table.fields.clone());
        if let Some(record) = table.records.iter().find(|record| record.id == id) {
            row = Some(
                table
                    .fields
                    .iter()
                    .map(|(name, _)| name.clone())
                    .zip(record.row.iter().cloned())
                    .collect::<Vec<_>>(),
            );
        }
    }
    (
        fields.expect("a table batch"),
        row.unwrap_or_else(|| panic!("record {id} not pulled")),
    )
}

fn value_of<'a>(row: &'a [(String, Option<Value>)], name: &str) -> Option<&'a Value> {
    row.iter()
        .find(|(field, _)| field == name)
        .and_then(|(_, value)| value.as_ref())
}

fn translated_pulls() {
    let records = env_number("MSDB_BENCH_PULL_RECORDS", 20_000);
    let (db, _) = filled(records);
    let v1 = items_v1();
    apply(&db, &doc(1, &v1));
    let v2 = items_v2(&v1);
    apply(&db, &doc(2, &v2));
    let v3 = replaced(
        settled(v2),
        "priority",
        FieldSpec::new("priority", FieldType::String).with_default(json!("0")),
    );
    let v3 = replaced(v3, "done", FieldSpec::new("done", FieldType::Integer));
    apply(&db, &doc(3, &v3));
    let server = SyncServer::new(db.clone(), SyncConfig::default()).expect("sync config");

    // One warm-up pull of each, checked.
    let sample = 7.min(records - 1);
    let id = id_of(sample);
    let (old, _, _) = full_pull(&server, "v1-client", Some(1));
    let (new, _, _) = full_pull(&server, "current-client", None);
    for batches in [&old, &new] {
        let pulled: usize = batches.iter().map(PullBatch::len).sum();
        assert_eq!(pulled as u64, records, "every record pulled once");
    }
    let (fields, row) = shape_of(&old, &id);
    println!("  v1 fields: {fields:?}");
    println!("  v1 row of {id}: {row:?}");
    let has = |fields: &[(String, FieldType)], name: &str, kind: FieldType| {
        fields.iter().any(|(field, k)| field == name && *k == kind)
    };
    assert!(has(&fields, "title", FieldType::String), "{fields:?}");
    assert!(has(&fields, "price", FieldType::Integer), "{fields:?}");
    assert!(has(&fields, "legacy", FieldType::String), "{fields:?}");
    assert!(has(&fields, "done", FieldType::Boolean), "{fields:?}");
    assert!(has(&fields, "code", FieldType::String), "{fields:?}");
    assert!(
        !fields
            .iter()
            .any(|(name, _)| name == "name" || name == "priority"),
        "{fields:?}"
    );
    assert_eq!(value_of(&row, "title"), Some(&Value::str(title_of(sample))));
    assert_eq!(value_of(&row, "price"), Some(&Value::Int(price_of(sample))));
    assert_eq!(
        value_of(&row, "legacy"),
        Some(&Value::str(legacy_of(sample)))
    );
    assert_eq!(
        value_of(&row, "done"),
        Some(&Value::Bool(sample.is_multiple_of(2)))
    );

    let (fields, row) = shape_of(&new, &id);
    println!("  current fields: {fields:?}");
    println!("  current row of {id}: {row:?}");
    assert!(has(&fields, "name", FieldType::String), "{fields:?}");
    assert!(has(&fields, "price", FieldType::Float), "{fields:?}");
    assert!(has(&fields, "priority", FieldType::String), "{fields:?}");
    assert!(has(&fields, "done", FieldType::Integer), "{fields:?}");
    assert!(
        !fields
            .iter()
            .any(|(name, _)| name == "title" || name == "legacy"),
        "{fields:?}"
    );
    assert_eq!(value_of(&row, "name"), Some(&Value::str(title_of(sample))));
    assert_eq!(
        value_of(&row, "price"),
        Some(&Value::Float(price_of(sample) as f64))
    );
    assert_eq!(
        value_of(&row, "done"),
        Some(&Value::Int(i64::from(sample.is_multiple_of(2))))
    );
    // The default of a field the record never had, as the current version reads it.
    assert_eq!(value_of(&row, "priority"), Some(&Value::str("0")));

    let mut old_times = Vec::new();
    let mut new_times = Vec::new();
    let (mut old_bytes, mut new_bytes) = (0, 0);
    for _ in 0..15 {
        let (_, bytes, elapsed) = full_pull(&server, "v1-client", Some(1));
        old_times.push(elapsed);
        old_bytes = bytes;
        let (_, bytes, elapsed) = full_pull(&server, "current-client", None);
        new_times.push(elapsed);
        new_bytes = bytes;
    }
    println!("  {records} records, {} batches per pull", new.len());
    let old = ms(median(old_times));
    let new = ms(median(new_times));
    figure("pull_ms_current_client", new, "ms");
    figure("pull_ms_v1_client", old, "ms");
    figure("pull_bytes_current_client", new_bytes as f64, "B");
    figure("pull_bytes_v1_client", old_bytes as f64, "B");
    figure(
        "translated_pull_overhead_pct",
        (old - new) / new * 100.0,
        "%",
    );
}

fn main() {
    println!("schema figures");
    let started = Instant::now();
    translated_pulls();
    migrations();
    println!("  total {:.0} s", started.elapsed().as_secs_f64());
}

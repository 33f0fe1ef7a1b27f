//! Inserts, patches, deletes and merges: validation, indexes, the change log and
//! the memory limit, as an app developer relies on them.

use std::sync::Arc;

use mobilesyncdb::config::{EngineConfig, RetentionPolicy};
use mobilesyncdb::crdt::{
    ActorId, Causality, ClientId, Edit, PolicySpec, Record, Stamp, StampMeta, Value,
};
use mobilesyncdb::engine::{
    Database, EngineError, ManualClock, Query, ReadError, SchemaError, WallClock, WriteError,
};
use mobilesyncdb::schema::{FieldSpec, FieldType, Fields, TableSchema};

mod common;

use common::fields;

fn todos() -> TableSchema {
    TableSchema::new("todos", "id")
        .field(FieldSpec::new("title", FieldType::String).required())
        .field(FieldSpec::new("done", FieldType::Boolean).with_default(serde_json::json!(false)))
        .field(FieldSpec::new("priority", FieldType::Integer))
        .field(FieldSpec::new("likes", FieldType::Counter))
        .field(FieldSpec::new("email", FieldType::String))
        .index("done")
        .unique_index("email")
}

fn database_with(config: EngineConfig) -> (Database, Arc<ManualClock>) {
    let clock = ManualClock::at(1_700_000_000_000);
    let database = common::database(config, clock.clone(), todos(), []);
    (database, clock)
}

fn database() -> Database {
    database_with(EngineConfig::default()).0
}

fn todo(id: &str, title: &str) -> Fields {
    fields(&[("id", Value::str(id)), ("title", Value::str(title))])
}

fn phone() -> ClientId {
    ClientId::from("phone-1")
}

fn write_error(result: Result<impl std::fmt::Debug, EngineError>) -> WriteError {
    match result {
        Err(EngineError::Write(error)) => error,
        other => panic!("expected a write error, got {other:?}"),
    }
}

#[test]
fn insert_fills_defaults_and_reads_back() {
    let db = database();
    let outcome = db
        .insert("todos", todo("t1", "buy milk"), &phone())
        .expect("insert");
    assert_eq!(outcome.seq, Some(1));
    let row = db.get("todos", "t1").expect("table").expect("row");
    assert_eq!(
        row.values()[..3],
        [Value::str("t1"), Value::str("buy milk"), Value::Bool(false)]
    );
    assert_eq!(db.get("todos", "missing").expect("table"), None);
}

#[test]
fn validation_errors_name_table_record_and_field() {
    let db = database();
    let cases: Vec<(Fields, &str)> = vec![
        (
            fields(&[("title", Value::str("no id"))]),
            "table `todos`: the primary key `id` is missing or empty",
        ),
        (
            fields(&[("id", Value::str("t1"))]),
            "table `todos`, record `t1`: required field `title` is missing",
        ),
        (
            fields(&[
                ("id", Value::str("t1")),
                ("title", Value::str("x")),
                ("color", Value::str("red")),
            ]),
            "table `todos`, record `t1`: unknown field `color`",
        ),
        (
            fields(&[("id", Value::str("t1")), ("title", Value::Int(5))]),
            "table `todos`, record `t1`, field `title`: expected string, found integer",
        ),
    ];
    for (input, message) in cases {
        let error = write_error(db.insert("todos", input, &phone()));
        assert_eq!(error.to_string(), message);
    }
    let error = write_error(db.insert("nope", todo("t1", "x"), &phone()));
    assert_eq!(error.to_string(), "table `nope` does not exist");
    assert_eq!(db.latest_seq(), 0, "nothing was applied");
}

#[test]
fn patches_check_types_keys_and_counters() {
    let db = database();
    db.insert("todos", todo("t1", "x"), &phone())
        .expect("insert");
    let error = write_error(db.patch("todos", "t1", vec![Edit::set("id", "t2")], &phone()));
    assert!(
        matches!(error, WriteError::PrimaryKeyChange { .. }),
        "{error}"
    );
    let error = write_error(db.patch(
        "todos",
        "t1",
        vec![Edit::increment("priority", 1)],
        &phone(),
    ));
    assert!(matches!(error, WriteError::NotACounter { .. }), "{error}");
    let error = write_error(db.patch("todos", "t1", vec![Edit::unset("title")], &phone()));
    assert!(
        matches!(error, WriteError::MissingRequired { .. }),
        "{error}"
    );
    let error = write_error(db.patch("todos", "t2", vec![Edit::set("done", true)], &phone()));
    assert_eq!(
        error.to_string(),
        "table `todos`: record `t2` does not exist"
    );
    let error = write_error(db.patch("todos", "t1", vec![Edit::set("priority", 1.5)], &phone()));
    assert!(matches!(error, WriteError::TypeMismatch { .. }), "{error}");
    // A whole float from a JavaScript client fits an integer field.
    db.patch("todos", "t1", vec![Edit::set("priority", 2.0)], &phone())
        .expect("whole float");
    let row = db.get("todos", "t1").expect("table").expect("row");
    assert_eq!(row.get(3), Value::Int(2));
}

#[test]
fn counters_increment_and_repeated_values_make_no_change() {
    let db = database();
    let mut input = todo("t1", "x");
    input.insert("likes".into(), Value::Int(0));
    db.insert("todos", input, &phone()).expect("insert");
    db.patch("todos", "t1", vec![Edit::increment("likes", 3)], &phone())
        .expect("increment");
    let row = db.get("todos", "t1").expect("table").expect("row");
    assert_eq!(row.get(4), Value::Counter(3));
    let same = db
        .patch("todos", "t1", vec![Edit::set("title", "x")], &phone())
        .expect("same value");
    assert_eq!(same.seq, None);
    assert_eq!(db.latest_seq(), 2);
}

#[test]
fn duplicate_insert_is_refused_and_delete_then_insert_revives() {
    let db = database();
    db.insert("todos", todo("t1", "first"), &phone())
        .expect("insert");
    let error = write_error(db.insert("todos", todo("t1", "again"), &phone()));
    assert!(matches!(error, WriteError::AlreadyExists { .. }));
    db.delete("todos", "t1", &phone()).expect("delete");
    assert_eq!(db.get("todos", "t1").expect("table"), None);
    let error = write_error(db.delete("todos", "t1", &phone()));
    assert!(matches!(error, WriteError::NotFound { .. }));
    db.insert("todos", todo("t1", "second life"), &phone())
        .expect("revive");
    let row = db.get("todos", "t1").expect("table").expect("row");
    assert_eq!(row.get(1), Value::str("second life"));
    assert_eq!(db.stats().live_records, 1);
}

#[test]
fn unique_indexes_refuse_duplicates_until_the_holder_is_deleted() {
    let db = database();
    let with_email = |id: &str| {
        let mut input = todo(id, "x");
        input.insert("email".into(), Value::str("a@example.com"));
        input
    };
    db.insert("todos", with_email("t1"), &phone())
        .expect("first");
    let error = write_error(db.insert("todos", with_email("t2"), &phone()));
    assert_eq!(
        error.to_string(),
        "table `todos`, record `t2`, field `email`: the value is already used by record `t1` and the index is unique"
    );
    db.insert("todos", todo("t2", "x"), &phone())
        .expect("no email");
    let error = write_error(db.patch(
        "todos",
        "t2",
        vec![Edit::set("email", "a@example.com")],
        &phone(),
    ));
    assert!(matches!(error, WriteError::UniqueViolation { .. }));
    db.delete("todos", "t1", &phone()).expect("delete holder");
    db.patch(
        "todos",
        "t2",
        vec![Edit::set("email", "a@example.com")],
        &phone(),
    )
    .expect("free now");
}

#[test]
fn every_change_gets_the_next_sequence_number_and_can_be_listed() {
    let db = database();
    for n in 0..10 {
        db.insert("todos", todo(&format!("t{n}"), "x"), &phone())
            .expect("insert");
    }
    db.patch("todos", "t3", vec![Edit::set("done", true)], &phone())
        .expect("patch");
    db.delete("todos", "t4", &phone()).expect("delete");
    let changes = db.changes_since(9, 100).expect("within horizon");
    let listed: Vec<(u64, &str)> = changes
        .iter()
        .map(|change| (change.seq, change.record_id.as_str()))
        .collect();
    assert_eq!(listed, vec![(10, "t9"), (11, "t3"), (12, "t4")]);
    assert!(
        changes
            .iter()
            .all(|change| change.table == "todos" && change.origin == phone())
    );
    let changed = db.records_changed_since("todos", 2, 100).expect("table");
    let ids: Vec<&str> = changed.iter().map(|(_, id)| id.as_str()).collect();
    assert_eq!(ids, vec!["t2", "t5", "t6", "t7", "t8", "t9", "t3", "t4"]);
}

#[test]
fn logged_changes_rebuild_the_same_record_elsewhere() {
    let db = database();
    db.insert("todos", todo("t1", "x"), &phone())
        .expect("insert");
    db.patch("todos", "t1", vec![Edit::set("done", true)], &phone())
        .expect("patch");
    let mut replica = Record::new(ActorId::random());
    for change in db.changes_since(0, 10).expect("log") {
        replica
            .load_incremental(&change.change)
            .expect("change bytes load");
    }
    let saved = db
        .record_bytes("todos", "t1")
        .expect("table")
        .expect("record");
    let server = Record::load(&saved).expect("saved bytes load");
    assert_eq!(replica.heads(), server.heads());
}

#[test]
fn retention_moves_the_horizon_and_old_cursors_are_told_to_catch_up() {
    let config = EngineConfig {
        retention: RetentionPolicy {
            max_entries: 5,
            min_entries: 2,
            ..RetentionPolicy::default()
        },
        ..EngineConfig::default()
    };
    let (db, _) = database_with(config);
    for n in 0..12 {
        db.insert("todos", todo(&format!("t{n}"), "x"), &phone())
            .expect("insert");
    }
    assert_eq!(db.horizon(), 7);
    match db.changes_since(3, 100) {
        Err(EngineError::Read(ReadError::CursorTooOld(too_old))) => {
            assert_eq!((too_old.cursor, too_old.horizon), (3, 7));
        }
        other => panic!("expected CursorTooOld, got {other:?}"),
    }
    let catch_up = db.records_changed_since("todos", 3, 100).expect("table");
    assert_eq!(
        catch_up.len(),
        9,
        "every record changed after the cursor, at any age"
    );
}

#[test]
fn retention_by_age_uses_the_clock() {
    let config = EngineConfig {
        retention: RetentionPolicy {
            max_age: std::time::Duration::from_secs(60),
            min_entries: 0,
            ..RetentionPolicy::default()
        },
        ..EngineConfig::default()
    };
    let (db, clock) = database_with(config);
    db.insert("todos", todo("old", "x"), &phone())
        .expect("insert");
    clock.advance(120_000);
    db.insert("todos", todo("new", "x"), &phone())
        .expect("insert");
    assert_eq!(db.horizon(), 1);
    assert_eq!(db.changes_since(1, 10).expect("log").len(), 1);
}

#[test]
fn the_memory_limit_refuses_writes_but_reads_and_deletes_keep_working() {
    let config = EngineConfig {
        max_memory_bytes: 1 << 20,
        retention: RetentionPolicy {
            min_entries: 100,
            ..RetentionPolicy::default()
        },
        ..EngineConfig::default()
    };
    let (db, _) = database_with(config);
    let body = "x".repeat(400);
    let mut inserted = 0;
    let refusal = loop {
        match db.insert("todos", todo(&format!("t{inserted}"), &body), &phone()) {
            Ok(_) => inserted += 1,
            Err(EngineError::Write(error @ WriteError::MemoryLimit { .. })) => break error,
            Err(other) => panic!("unexpected error {other}"),
        }
        assert!(inserted < 100_000, "the limit never took effect");
    };
    assert!(
        refusal.to_string().contains("raise `max_memory_bytes`"),
        "{refusal}"
    );
    let stats = db.stats();
    assert!(
        stats.memory.total <= stats.memory.limit,
        "{:?}",
        stats.memory
    );
    assert_eq!(
        stats.change_log_entries, 100,
        "the log was trimmed to its floor first"
    );
    assert_eq!(stats.writes_refused_for_memory, 1);
    assert!(
        db.get("todos", "t0").expect("table").is_some(),
        "accepted data is never evicted"
    );
    assert_eq!(
        db.query("todos", &Query::new()).expect("query").rows.len(),
        inserted.min(10_000)
    );
    db.delete("todos", "t0", &phone())
        .expect("deletes still work");
}

fn phone_record(actor: &str) -> Record {
    Record::new(ActorId::from(actor.as_bytes().to_vec()))
}

#[test]
fn merged_changes_from_phones_detect_concurrency_and_conflicts() {
    let (db, clock) = database_with(EngineConfig::default());
    db.insert("todos", todo("t1", "draft"), &ClientId::from("server"))
        .expect("insert");
    let base = db
        .record_bytes("todos", "t1")
        .expect("table")
        .expect("record");
    let now = clock.now_ms();

    let mut phone_a = Record::load(&base).expect("load");
    phone_a.set_actor(ActorId::from(b"phone-a-actor-00".to_vec()));
    phone_a
        .write(
            &[Edit::set("title", "from a")],
            &StampMeta::new(Stamp::at(now + 10), "phone-a"),
        )
        .expect("a");
    let outcome = db
        .merge_changes(
            "todos",
            "t1",
            phone_a.changes_since(&[]),
            &ClientId::from("phone-a"),
        )
        .expect("merge a");
    assert_eq!((outcome.seqs.len(), outcome.duplicates), (1, 1));
    assert_eq!(outcome.causality, Causality::Before);

    let mut phone_b = Record::load(&base).expect("load");
    phone_b.set_actor(ActorId::from(b"phone-b-actor-00".to_vec()));
    phone_b
        .write(
            &[Edit::set("title", "from b")],
            &StampMeta::new(Stamp::at(now + 20), "phone-b"),
        )
        .expect("b");
    let outcome = db
        .merge_changes(
            "todos",
            "t1",
            phone_b.changes_since(&[]),
            &ClientId::from("phone-b"),
        )
        .expect("merge b");
    assert_eq!(outcome.causality, Causality::Concurrent);
    assert_eq!(outcome.conflicted_fields, vec!["title".to_owned()]);
    let row = db.get("todos", "t1").expect("table").expect("row");
    assert_eq!(
        row.get(1),
        Value::str("from b"),
        "last writer wins by default"
    );
    assert_eq!(
        db.conflicts("todos", "t1").expect("read")[0]
            .candidates()
            .len(),
        2
    );

    let again = db
        .merge_changes(
            "todos",
            "t1",
            phone_b.changes_since(&[]),
            &ClientId::from("phone-b"),
        )
        .expect("again");
    assert!(again.seqs.is_empty(), "re-sent changes are harmless");
}

#[test]
fn merges_refuse_far_future_stamps_and_missing_dependencies_whole() {
    let (db, clock) = database_with(EngineConfig::default());
    let mut skewed = phone_record("phone-with-bad-clock");
    let year_2099 = StampMeta::new(Stamp::at(4_070_908_800_000), "phone-x");
    skewed
        .write(
            &[Edit::set("id", "t9"), Edit::set("title", "from 2099")],
            &year_2099,
        )
        .expect("write");
    let error = write_error(db.merge_changes("todos", "t9", skewed.changes_since(&[]), &phone()));
    assert!(matches!(error, WriteError::ClockSkew { .. }), "{error}");
    assert!(
        error.to_string().contains("set the device clock right"),
        "{error}"
    );

    let now = clock.now_ms();
    let mut honest = phone_record("honest-phone-000");
    honest
        .write(
            &[Edit::set("id", "t8"), Edit::set("title", "one")],
            &StampMeta::new(Stamp::at(now), "p"),
        )
        .expect("one");
    honest
        .write(
            &[Edit::set("title", "two")],
            &StampMeta::new(Stamp::at(now + 1), "p"),
        )
        .expect("two");
    let second_only = vec![honest.changes_since(&[])[1].clone()];
    let error = write_error(db.merge_changes("todos", "t8", second_only, &phone()));
    assert!(
        error.to_string().contains("send the earlier changes first"),
        "{error}"
    );
    assert_eq!(db.latest_seq(), 0);
    assert_eq!(db.record_bytes("todos", "t8").expect("table"), None);
}

#[test]
fn schema_policies_decide_what_merged_conflicts_show() {
    let (db, clock) = database_with(EngineConfig::default());
    let schema = TableSchema::new("notes", "id")
        .field(FieldSpec::new("body", FieldType::String))
        .field(FieldSpec::new("status", FieldType::String))
        .policy(PolicySpec::Manual)
        .field_policy(
            "status",
            PolicySpec::ClientPriority {
                ranking: vec![ClientId::from("admin")],
            },
        );
    db.create_table(schema).expect("create");
    db.insert(
        "notes",
        fields(&[("id", Value::str("n1"))]),
        &ClientId::from("admin"),
    )
    .expect("insert");
    let base = db
        .record_bytes("notes", "n1")
        .expect("table")
        .expect("record");
    let now = clock.now_ms();
    for (actor, writer, offset) in [
        ("admin-actor-0000", "admin", 1),
        ("phone-actor-0000", "phone", 50),
    ] {
        let mut replica = Record::load(&base).expect("load");
        replica.set_actor(ActorId::from(actor.as_bytes().to_vec()));
        let edits = [
            Edit::set("body", format!("{writer} body")),
            Edit::set("status", format!("{writer} status")),
        ];
        replica
            .write(&edits, &StampMeta::new(Stamp::at(now + offset), writer))
            .expect("write");
        db.merge_changes(
            "notes",
            "n1",
            replica.changes_since(&[]),
            &ClientId::from(writer),
        )
        .expect("merge");
    }
    let row = db.get("notes", "n1").expect("table").expect("row");
    assert_eq!(
        row.get(2),
        Value::str("admin status"),
        "client priority beats recency"
    );
    assert_eq!(
        row.get(1),
        Value::str("phone body"),
        "manual shows last-writer-wins provisionally"
    );
    assert_eq!(
        db.open_conflicts("notes").expect("table"),
        vec!["n1".to_owned()]
    );
    db.patch(
        "notes",
        "n1",
        vec![Edit::set("body", "settled")],
        &ClientId::from("admin"),
    )
    .expect("resolve");
    assert!(db.open_conflicts("notes").expect("table").is_empty());
}

#[test]
fn bad_schemas_are_refused_with_the_reason() {
    let db = database();
    let error = db.create_table(todos()).expect_err("exists");
    assert!(matches!(
        error,
        EngineError::Schema(SchemaError::TableExists { .. })
    ));
    let bad = TableSchema::new("t2", "id").index("nowhere");
    assert!(matches!(
        db.create_table(bad),
        Err(EngineError::Schema(SchemaError::UnknownIndexField { .. }))
    ));
    let bad = TableSchema::new("t3", "id").field(FieldSpec::new("_secret", FieldType::String));
    assert!(matches!(
        db.create_table(bad),
        Err(EngineError::Schema(SchemaError::BadFieldName { .. }))
    ));
    let bad = TableSchema::new("t4", "id")
        .field(FieldSpec::new("n", FieldType::Integer).with_default(serde_json::json!("x")));
    assert!(matches!(
        db.create_table(bad),
        Err(EngineError::Schema(SchemaError::BadDefault { .. }))
    ));
    let bad = TableSchema::new("t5", "id").policy(PolicySpec::Custom {
        name: "unregistered".into(),
    });
    assert!(matches!(
        db.create_table(bad),
        Err(EngineError::Schema(SchemaError::BadPolicy { .. }))
    ));
    let bad = TableSchema::new("bad name!", "id");
    assert!(matches!(
        db.create_table(bad),
        Err(EngineError::Schema(SchemaError::BadTableName { .. }))
    ));
}

#[test]
fn the_handle_is_shared_across_threads_with_dense_sequence_numbers() {
    fn assert_shareable<T: Send + Sync + Clone + 'static>() {}
    assert_shareable::<Database>();
    let db = database();
    let workers: Vec<_> = (0..4)
        .map(|worker| {
            let db = db.clone();
            std::thread::spawn(move || {
                for n in 0..50 {
                    db.insert(
                        "todos",
                        todo(&format!("w{worker}-{n}"), "x"),
                        &ClientId::from("worker"),
                    )
                    .expect("insert");
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().expect("worker finished");
    }
    let seqs: Vec<u64> = db
        .changes_since(0, 1_000)
        .expect("log")
        .iter()
        .map(|change| change.seq)
        .collect();
    assert_eq!(seqs, (1..=200).collect::<Vec<u64>>());
}

#[test]
fn a_disabled_document_cache_still_merges_correctly() {
    let config = EngineConfig {
        doc_cache_docs: 0,
        ..EngineConfig::default()
    };
    let (db, _) = database_with(config);
    db.insert("todos", todo("t1", "x"), &phone())
        .expect("insert");
    for n in 0..6 {
        db.patch("todos", "t1", vec![Edit::set("priority", n)], &phone())
            .expect("patch");
    }
    let row = db.get("todos", "t1").expect("table").expect("row");
    assert_eq!(row.get(3), Value::Int(5));
    let stats = db.stats();
    assert_eq!(stats.doc_cache_hits, 0);
    assert!(stats.memory.documents > 0);
    // The record keeps one saved document; the log still serves every change.
    assert_eq!(db.changes_since(0, 100).expect("log").len(), 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_tokio_tasks_share_one_handle() {
    let db = database();
    let tasks: Vec<_> = (0..64)
        .map(|task| {
            let db = db.clone();
            tokio::spawn(async move {
                let id = format!("task-{task}");
                db.insert("todos", todo(&id, "from a task"), &ClientId::from("task"))
                    .expect("insert");
                tokio::task::yield_now().await;
                db.patch(
                    "todos",
                    &id,
                    vec![Edit::set("done", true)],
                    &ClientId::from("task"),
                )
                .expect("patch");
                db.get("todos", &id).expect("table").expect("row")
            })
        })
        .collect();
    for task in tasks {
        let row = task.await.expect("task finished");
        assert_eq!(row.get(2), Value::Bool(true));
    }
    assert_eq!(db.latest_seq(), 128);
}

#[test]
fn records_over_the_size_limit_are_refused_whole() {
    let config = EngineConfig {
        max_record_bytes: 2_048,
        ..EngineConfig::default()
    };
    let (db, _) = database_with(config);
    let error = write_error(db.insert("todos", todo("big", &"x".repeat(4_000)), &phone()));
    assert!(
        matches!(error, WriteError::RecordTooLarge { limit: 2_048, .. }),
        "{error}"
    );
    assert_eq!(db.get("todos", "big").expect("table"), None);
    db.insert("todos", todo("small", "x"), &phone())
        .expect("small fits");
    let error = write_error(db.patch(
        "todos",
        "small",
        vec![Edit::set("title", "y".repeat(4_000))],
        &phone(),
    ));
    assert!(
        matches!(error, WriteError::RecordTooLarge { .. }),
        "{error}"
    );
    assert_eq!(
        db.get("todos", "small")
            .expect("table")
            .expect("row")
            .get(1),
        Value::str("x")
    );
    assert_eq!(
        db.latest_seq(),
        1,
        "nothing of the refused writes was logged"
    );
}

#[test]
fn integer_primary_keys_and_unknown_tables_on_reads() {
    let db = database();
    let schema = TableSchema::new("readings", "n")
        .field(FieldSpec::new("n", FieldType::Integer).required())
        .field(FieldSpec::new("value", FieldType::Float));
    db.create_table(schema).expect("integer keys are allowed");
    let reading = fields(&[("n", Value::Int(42)), ("value", Value::Int(7))]);
    let outcome = db.insert("readings", reading, &phone()).expect("insert");
    assert_eq!(outcome.id, "42");
    let row = db.get("readings", "42").expect("table").expect("row");
    assert_eq!(
        row.get(1),
        Value::Float(7.0),
        "an integer fits a float field"
    );
    assert!(matches!(
        db.get("nope", "1"),
        Err(EngineError::Read(ReadError::UnknownTable { .. }))
    ));
    assert!(matches!(
        db.query("nope", &Query::new()),
        Err(EngineError::Read(ReadError::UnknownTable { .. }))
    ));
    let bad_key = TableSchema::new("flags", "on").field(FieldSpec::new("on", FieldType::Boolean));
    assert!(matches!(
        db.create_table(bad_key),
        Err(EngineError::Schema(SchemaError::BadPrimaryKeyType { .. }))
    ));
}

/// Regression: change bytes handed out by `changes_since` used to share the
/// engine's reference-counted chunks, so when the engine let go of a chunk while a
/// caller still held it, its bytes were never uncounted and the memory count only
/// grew.
#[test]
fn listed_changes_held_by_a_caller_do_not_skew_memory_accounting() {
    let config = EngineConfig {
        compact_after_chunks: 2,
        retention: RetentionPolicy {
            max_entries: 5,
            min_entries: 0,
            ..RetentionPolicy::default()
        },
        ..EngineConfig::default()
    };
    let (held, _) = database_with(config.clone());
    let (twin, _) = database_with(config);
    let mut kept = Vec::new();
    for n in 0..20 {
        let id = format!("t{n}");
        for db in [&held, &twin] {
            db.insert("todos", todo(&id, "x"), &phone())
                .expect("insert");
            for priority in 0..3 {
                db.patch(
                    "todos",
                    &id,
                    vec![Edit::set("priority", priority)],
                    &phone(),
                )
                .expect("patch");
            }
        }
        kept.push(
            held.changes_since(held.horizon(), 100)
                .expect("within horizon"),
        );
    }
    assert_eq!(held.stats().memory.documents, twin.stats().memory.documents);
    assert!(kept.iter().all(|changes| !changes.is_empty()));
}

#[test]
fn a_patch_at_a_base_version_keeps_unique_indexes_and_reads_heads_in_any_order() {
    let (db, clock) = database_with(EngineConfig::default());
    let server = ClientId::from("server");
    let with_email = |id: &str, email: &str| {
        let mut fields = todo(id, id);
        fields.insert("email".into(), Value::str(email));
        fields
    };
    db.insert("todos", with_email("t1", "a@x"), &server)
        .expect("t1");
    db.insert("todos", with_email("t2", "b@x"), &server)
        .expect("t2");
    let base = db.heads("todos", "t2").expect("table").expect("t2");
    let taken = db.patch_at(
        "todos",
        "t2",
        vec![Edit::set("email", "a@x")],
        &base,
        &server,
    );
    assert!(matches!(
        write_error(taken),
        WriteError::UniqueViolation { .. }
    ));

    // Two concurrent writers leave t2 with two heads.
    let stored = db.record_bytes("todos", "t2").unwrap().unwrap();
    let mut offline = Record::load(&stored).expect("load");
    offline.set_actor(ActorId::from(b"phone-heads-0001".to_vec()));
    let at = Stamp::at(clock.now_ms() + 5);
    offline
        .write(&[Edit::set("title", "phone")], &StampMeta::new(at, "phone"))
        .expect("phone write");
    db.patch("todos", "t2", vec![Edit::set("title", "server")], &server)
        .expect("server write");
    db.merge_changes("todos", "t2", offline.changes_since(&[]), &phone())
        .expect("merge");
    let mut heads = db.heads("todos", "t2").unwrap().unwrap();
    assert_eq!(heads.len(), 2);
    heads.reverse();
    let outcome = db
        .patch_at(
            "todos",
            "t2",
            vec![Edit::set("done", true)],
            &heads,
            &server,
        )
        .expect("patch at the current heads, listed in another order");
    assert_eq!(outcome.causality, Causality::After);
    assert!(outcome.conflicted_fields.is_empty());
}

//! Schema versions end to end: phones (reference clients) built against
//! different schema versions sync the same records while the schema adds,
//! removes, renames and retypes fields, and nothing either writes is lost;
//! changes that cannot be migrated are refused with their report and leave the
//! database as it was; old apps below the minimum are told to upgrade.

use std::sync::Arc;

use mobilesyncdb::client::{Client, ClientError, InProcess};
use mobilesyncdb::config::{DEV_ADMIN_KEY, EngineConfig, FsyncPolicy, StorageConfig, SyncConfig};
use mobilesyncdb::crdt::{ClientId, Value};
use mobilesyncdb::engine::{Database, EngineError, ManualClock, MigrationError, WallClock};
use mobilesyncdb::schema::{
    FieldSpec, FieldType, IndexSpec, MigrationReport, SchemaDoc, TableSchema,
};
use mobilesyncdb::storage::{Store, StoreOptions};
use serde_json::{Value as Json, json};

mod common;

use common::{TempDir, client_config, fields, local_config, sync_server};

const T0: u64 = 1_750_000_000_000;
const TABLE: &str = "todos";

type Phone = Client<InProcess>;

/// Version 1 of the app's schema.
fn v1_table() -> TableSchema {
    TableSchema::new(TABLE, "id")
        .field(FieldSpec::new("title", FieldType::String))
        .field(FieldSpec::new("price", FieldType::Integer))
        .field(FieldSpec::new("legacy", FieldType::String))
        .field(FieldSpec::new("done", FieldType::Boolean))
        .field(FieldSpec::new("code", FieldType::String))
}

fn doc(version: u32, table: TableSchema) -> SchemaDoc {
    SchemaDoc {
        version,
        min_client_version: 0,
        tables: vec![table],
    }
}

/// A schema that adds `priority` (default 0), renames `title` to `name`,
/// changes `price` to float and removes `legacy`.
fn v2_table() -> TableSchema {
    TableSchema::new(TABLE, "id")
        .field(FieldSpec::new("name", FieldType::String).renamed_from("title"))
        .field(FieldSpec::new("price", FieldType::Float))
        .field(FieldSpec::new("done", FieldType::Boolean))
        .field(FieldSpec::new("code", FieldType::String))
        .field(FieldSpec::new("priority", FieldType::Integer).with_default(json!(0)))
}

struct World {
    clock: Arc<ManualClock>,
    db: Database,
}

impl World {
    /// A database at schema version 1 holding `r1` and `r2`.
    fn new() -> World {
        World::with(EngineConfig::default())
    }

    fn with(config: EngineConfig) -> World {
        let clock = ManualClock::at(T0);
        let db = Database::with_clock(config, Arc::clone(&clock) as Arc<dyn WallClock>)
            .expect("engine config");
        let world = World { clock, db };
        world.apply(&doc(1, v1_table())).expect("version 1");
        for (id, title, price) in [("r1", "milk", 3), ("r2", "bread", 2)] {
            world
                .db
                .insert(
                    TABLE,
                    fields(&[
                        ("id", Value::str(id)),
                        ("title", Value::str(title)),
                        ("price", Value::Int(price)),
                        ("legacy", Value::str("old")),
                        ("code", Value::str("12")),
                    ]),
                    &ClientId::from("admin"),
                )
                .expect("insert");
        }
        world
    }

    fn apply(&self, doc: &SchemaDoc) -> Result<MigrationReport, EngineError> {
        self.db.apply_schema(doc, &ClientId::from("admin"))
    }

    /// A phone built against schema `version` (`None`: states none).
    fn phone(&self, device: &str, version: Option<u32>) -> Phone {
        let mut config =
            client_config(device, TABLE, Arc::clone(&self.clock) as Arc<dyn WallClock>);
        config.schema_version = version;
        Client::new(config, InProcess::new(sync_server(&self.db))).expect("client")
    }

    /// The server's row as REST shows it (current version).
    fn server_row(&self, id: &str) -> Json {
        let schema = self.db.schema(TABLE).expect("table");
        let row = self.db.get(TABLE, id).expect("read").expect("live");
        Json::Object(row.to_json(&schema))
    }

    fn tick(&self) {
        self.clock.advance(1_000);
    }
}

fn shown(phone: &Phone, id: &str) -> Json {
    let row = phone.get(TABLE, id).unwrap_or_default();
    Json::Object(
        row.into_iter()
            .map(|(name, value)| (name, mobilesyncdb::schema::value_to_json(&value)))
            .collect(),
    )
}

async fn sync_all(phones: &[&Phone]) {
    for _ in 0..2 {
        for phone in phones {
            phone.sync().await.expect("sync");
        }
    }
}

#[tokio::test]
async fn an_added_field_reads_its_default_and_old_phones_keep_working() {
    let world = World::new();
    let old = world.phone("old", Some(1));
    old.pull_all().await.expect("pull");
    let mut v2 = v1_table();
    v2 = v2.field(FieldSpec::new("priority", FieldType::Integer).with_default(json!(0)));
    let report = world.apply(&doc(2, v2)).expect("an added field migrates");
    assert!(report.applied && report.blockers.is_empty(), "{report:?}");
    let seq = world.db.latest_seq();
    let new = world.phone("new", Some(2));
    new.pull_all().await.expect("pull");
    assert_eq!(
        shown(&new, "r1")["priority"],
        json!(0),
        "old records read the default"
    );
    assert_eq!(world.db.latest_seq(), seq, "applying rewrote no record");

    // Offline on both: the old app edits the title, the new one the priority.
    world.tick();
    old.update(TABLE, "r1", fields(&[("title", Value::str("oat milk"))]))
        .await
        .expect("old edit");
    new.update(TABLE, "r1", fields(&[("priority", Value::Int(5))]))
        .await
        .expect("new edit");
    let fresh = old
        .insert(
            TABLE,
            fields(&[("id", Value::str("r3")), ("title", Value::str("eggs"))]),
        )
        .await
        .expect("old insert");
    sync_all(&[&old, &new]).await;

    assert_eq!(shown(&new, "r1")["title"], json!("oat milk"));
    assert_eq!(shown(&new, "r1")["priority"], json!(5));
    assert_eq!(shown(&old, "r1")["title"], json!("oat milk"));
    assert!(
        shown(&old, "r1").get("priority").is_none(),
        "version 1 has no priority"
    );
    assert_eq!(
        shown(&new, &fresh)["priority"],
        json!(0),
        "an old app's insert"
    );
    assert_eq!(world.server_row("r1")["priority"], json!(5));
    assert_eq!(world.server_row(&fresh)["priority"], json!(0));
}

#[tokio::test]
async fn a_removed_field_stays_with_the_apps_that_still_have_it() {
    let world = World::new();
    let old = world.phone("old", Some(1));
    let other_old = world.phone("other-old", Some(1));
    old.pull_all().await.expect("pull");
    let mut v2 = v1_table();
    v2.fields.retain(|field| field.name != "legacy");
    world.apply(&doc(2, v2)).expect("a removal migrates");
    let new = world.phone("new", Some(2));
    new.pull_all().await.expect("pull");
    assert!(shown(&new, "r1").get("legacy").is_none());

    world.tick();
    old.update(TABLE, "r1", fields(&[("legacy", Value::str("kept"))]))
        .await
        .expect("old edit of the removed field");
    new.update(TABLE, "r1", fields(&[("title", Value::str("whole milk"))]))
        .await
        .expect("new edit");
    let refused = new
        .update(TABLE, "r1", fields(&[("legacy", Value::str("no"))]))
        .await;
    assert!(refused.is_err(), "version 2 has no `legacy`");
    sync_all(&[&old, &new, &other_old]).await;

    for phone in [&old, &other_old] {
        assert_eq!(shown(phone, "r1")["legacy"], json!("kept"));
        assert_eq!(shown(phone, "r1")["title"], json!("whole milk"));
    }
    assert_eq!(shown(&new, "r1")["title"], json!("whole milk"));
    assert!(shown(&new, "r1").get("legacy").is_none());
    assert!(world.server_row("r1").get("legacy").is_none());
}

#[tokio::test]
async fn a_renamed_field_is_one_field_for_both_versions() {
    let world = World::new();
    let old = world.phone("old", Some(1));
    old.pull_all().await.expect("pull");
    let mut v2 = v1_table();
    v2.fields[1] = FieldSpec::new("name", FieldType::String).renamed_from("title");
    world.apply(&doc(2, v2)).expect("a rename migrates");
    let new = world.phone("new", Some(2));
    new.pull_all().await.expect("pull");
    assert_eq!(shown(&new, "r1")["name"], json!("milk"));

    // Each edits a record alone, then both edit r1 concurrently.
    world.tick();
    old.update(TABLE, "r2", fields(&[("title", Value::str("rye bread"))]))
        .await
        .expect("old edit");
    new.update(TABLE, "r1", fields(&[("name", Value::str("soy milk"))]))
        .await
        .expect("new edit");
    sync_all(&[&old, &new]).await;
    assert_eq!(shown(&new, "r2")["name"], json!("rye bread"));
    assert_eq!(shown(&old, "r1")["title"], json!("soy milk"));

    world.tick();
    old.update(TABLE, "r1", fields(&[("title", Value::str("from old"))]))
        .await
        .expect("old edit");
    world.tick();
    new.update(TABLE, "r1", fields(&[("name", Value::str("from new"))]))
        .await
        .expect("new edit");
    sync_all(&[&old, &new]).await;
    // One field: the later write wins everywhere, and the conflict is on `name`.
    assert_eq!(shown(&old, "r1")["title"], json!("from new"));
    assert_eq!(shown(&new, "r1")["name"], json!("from new"));
    assert_eq!(world.server_row("r1")["name"], json!("from new"));
    let conflicts = world.db.conflicts(TABLE, "r1").expect("conflicts");
    assert!(
        conflicts
            .iter()
            .any(|set| set.field() == "name" && set.candidates().len() == 2),
        "both values are kept under the field's current name: {conflicts:?}"
    );
    let log = world
        .db
        .conflict_log(&mobilesyncdb::engine::ConflictFilter::default());
    assert!(
        log.conflicts.iter().any(|record| record.field == "name"),
        "{log:?}"
    );
}

#[tokio::test]
async fn a_type_change_converts_both_ways_and_loses_nothing() {
    let world = World::new();
    let old = world.phone("old", Some(1));
    old.pull_all().await.expect("pull");
    let mut v2 = v1_table();
    v2.fields[2] = FieldSpec::new("price", FieldType::Float);
    v2.fields[5] = FieldSpec::new("code", FieldType::Integer);
    let report = world
        .apply(&doc(2, v2))
        .expect("integer to float, text to integer");
    assert!(
        report
            .steps
            .iter()
            .any(|step| step.contains("integer → float")),
        "{report:?}"
    );
    let new = world.phone("new", Some(2));
    new.pull_all().await.expect("pull");
    assert_eq!(shown(&new, "r1")["price"], json!(3.0));
    assert_eq!(shown(&new, "r1")["code"], json!(12));

    world.tick();
    new.update(TABLE, "r1", fields(&[("price", Value::Float(3.5))]))
        .await
        .expect("a float");
    new.update(TABLE, "r2", fields(&[("price", Value::Float(4.0))]))
        .await
        .expect("a whole float");
    old.update(TABLE, "r1", fields(&[("done", Value::Bool(true))]))
        .await
        .expect("old edit");
    old.update(TABLE, "r2", fields(&[("code", Value::str("77"))]))
        .await
        .expect("old text");
    sync_all(&[&old, &new]).await;

    // 3.5 has no integer form: version 1 shows no price, the record keeps it.
    assert!(shown(&old, "r1").get("price").is_none());
    assert_eq!(shown(&old, "r1")["done"], json!(true));
    assert_eq!(shown(&new, "r1")["price"], json!(3.5));
    assert_eq!(shown(&old, "r2")["price"], json!(4));
    assert_eq!(shown(&new, "r2")["code"], json!(77));
    assert_eq!(world.server_row("r1")["price"], json!(3.5));
    assert_eq!(world.server_row("r2")["code"], json!(77));

    // A patch from a version 1 app is translated: text that is no number is refused.
    let sync = sync_server(&world.db);
    let push = |value: &str| mobilesyncdb::sync::PushRequest {
        device: "json-app".into(),
        schema_version: Some(1),
        ops: vec![mobilesyncdb::sync::PushOp {
            op: format!("op-{value}"),
            table: TABLE.into(),
            id: "r2".into(),
            set: [(
                "code".to_owned(),
                mobilesyncdb::sync::WireValue::Str(value.into()),
            )]
            .into(),
            ..mobilesyncdb::sync::PushOp::default()
        }],
        ..mobilesyncdb::sync::PushRequest::default()
    };
    let result = sync.push(push("nope")).expect("push");
    assert_eq!(result.results[0].code.as_deref(), Some("untranslatable"));
    assert_eq!(world.server_row("r2")["code"], json!(77), "nothing changed");
    let result = sync.push(push("88")).expect("push");
    assert!(result.results[0].code.is_none(), "{result:?}");
    assert_eq!(world.server_row("r2")["code"], json!(88));
}

/// Versions 2 to 4 in a row: a rename, then a type change and a new field,
/// then a removal.
fn three_more_versions(world: &World) {
    let mut v2 = v1_table();
    v2.fields[1] = FieldSpec::new("name", FieldType::String).renamed_from("title");
    world.apply(&doc(2, v2.clone())).expect("version 2");
    let mut v3 = v2.clone();
    v3.fields[2] = FieldSpec::new("price", FieldType::String);
    v3 = v3.field(FieldSpec::new("tags", FieldType::Json));
    world.apply(&doc(3, v3.clone())).expect("version 3");
    let mut v4 = v3;
    v4.fields.retain(|field| field.name != "done");
    v4.fields[1] = FieldSpec::new("label", FieldType::String).renamed_from("name");
    world.apply(&doc(4, v4)).expect("version 4");
}

#[tokio::test]
async fn a_phone_three_versions_behind_edits_with_a_current_one() {
    let world = World::new();
    let old = world.phone("old", Some(1));
    old.pull_all().await.expect("pull");
    three_more_versions(&world);
    let new = world.phone("new", Some(4));
    let middle = world.phone("middle", Some(3));
    new.pull_all().await.expect("pull");
    middle.pull_all().await.expect("pull");
    assert_eq!(shown(&new, "r1")["label"], json!("milk"));
    assert_eq!(shown(&new, "r1")["price"], json!("3"));
    assert_eq!(shown(&middle, "r1")["name"], json!("milk"));

    world.tick();
    old.update(
        TABLE,
        "r1",
        fields(&[
            ("title", Value::str("skim milk")),
            ("done", Value::Bool(true)),
        ]),
    )
    .await
    .expect("old edit");
    new.update(
        TABLE,
        "r1",
        fields(&[
            ("price", Value::str("4")),
            ("tags", Value::List(vec![Value::str("dairy")].into())),
        ]),
    )
    .await
    .expect("new edit");
    middle
        .update(TABLE, "r2", fields(&[("price", Value::str("about 2"))]))
        .await
        .expect("middle edit");
    sync_all(&[&old, &new, &middle]).await;

    let old_r1 = shown(&old, "r1");
    assert_eq!(old_r1["title"], json!("skim milk"));
    assert_eq!(old_r1["done"], json!(true));
    assert_eq!(old_r1["price"], json!(4), "the text parses back");
    let new_r1 = shown(&new, "r1");
    assert_eq!(new_r1["label"], json!("skim milk"));
    assert_eq!(new_r1["price"], json!("4"));
    assert_eq!(new_r1["tags"], json!(["dairy"]));
    assert!(new_r1.get("done").is_none());
    assert_eq!(shown(&middle, "r1")["name"], json!("skim milk"));
    assert_eq!(
        shown(&middle, "r1")["done"],
        json!(true),
        "version 3 still has done"
    );
    // Text that is no number: version 1 shows no price, versions 3 and 4 do.
    assert!(shown(&old, "r2").get("price").is_none());
    assert_eq!(shown(&new, "r2")["price"], json!("about 2"));
}

#[tokio::test]
async fn apps_below_the_minimum_are_told_to_upgrade() {
    let world = World::new();
    three_more_versions(&world);
    let mut v5 = world.db.schema_doc();
    v5.version = 5;
    v5.min_client_version = 3;
    world.apply(&v5).expect("version 5");
    assert_eq!(world.db.min_client_version(), 3);

    let old = world.phone("old", Some(2));
    let error = old.pull_all().await.expect_err("too old");
    match &error {
        ClientError::Refused { code, message } => {
            assert_eq!(code, "upgrade_required");
            assert!(message.contains("upgrade"), "{message}");
        }
        other => panic!("not a refusal: {other:?}"),
    }
    old.insert(
        TABLE,
        fields(&[("id", Value::str("r9")), ("title", Value::str("x"))]),
    )
    .await
    .expect("a local write");
    let error = old.push().await.expect_err("pushes are refused too");
    assert!(matches!(&error, ClientError::Refused { code, .. } if code == "upgrade_required"));
    assert!(world.db.get(TABLE, "r9").expect("read").is_none());

    let future = world.phone("future", Some(9));
    let error = future.pull_all().await.expect_err("unknown version");
    assert!(
        matches!(&error, ClientError::Refused { code, .. } if code == "unknown_schema_version"),
        "{error:?}"
    );
    let current = world.phone("current", Some(3));
    current.pull_all().await.expect("version 3 is served");

    assert!(matches!(
        world.db.set_min_client_version(6),
        Err(EngineError::Migration(MigrationError::MinimumAhead { .. }))
    ));
}

#[tokio::test]
async fn an_upgraded_app_syncs_again_in_its_new_shape() {
    let world = World::new();
    let phone = world.phone("phone", Some(1));
    phone.pull_all().await.expect("pull");
    three_more_versions(&world);
    world.tick();
    phone
        .update(TABLE, "r1", fields(&[("title", Value::str("offline"))]))
        .await
        .expect("an edit made before the upgrade");

    // The app updates: same stored replica, new schema version.
    let mut config = phone.config().clone();
    config.schema_version = Some(4);
    let upgraded = Client::from_replica(
        config,
        phone.replica(),
        InProcess::new(sync_server(&world.db)),
    )
    .expect("client");
    upgraded.sync().await.expect("sync");
    upgraded.sync().await.expect("sync");
    let row = shown(&upgraded, "r1");
    assert_eq!(row["label"], json!("offline"), "{row}");
    assert!(
        row.get("title").is_none() && row.get("done").is_none(),
        "{row}"
    );
    assert_eq!(shown(&upgraded, "r2")["label"], json!("bread"));
    assert_eq!(world.server_row("r1")["label"], json!("offline"));
}

fn blocked(result: Result<MigrationReport, EngineError>) -> MigrationReport {
    match result {
        Err(EngineError::Migration(MigrationError::Blocked(report))) => *report,
        other => panic!("not blocked: {other:?}"),
    }
}

#[tokio::test]
async fn unmigratable_changes_are_refused_with_their_records() {
    let world = World::new();
    world
        .db
        .insert(
            TABLE,
            fields(&[
                ("id", Value::str("r3")),
                ("title", Value::str("milk")),
                ("code", Value::str("twelve")),
            ]),
            &ClientId::from("admin"),
        )
        .expect("insert");
    let before_doc = world.db.schema_doc();
    let before_rows: Vec<Json> = ["r1", "r2", "r3"]
        .iter()
        .map(|id| world.server_row(id))
        .collect();
    let seq = world.db.latest_seq();

    let changed = |edit: &dyn Fn(&mut TableSchema)| {
        let mut table = v1_table();
        edit(&mut table);
        doc(2, table)
    };
    // Text to integer where one value does not parse.
    let report = blocked(world.apply(&changed(&|table| {
        table.fields[5] = FieldSpec::new("code", FieldType::Integer);
    })));
    let blocker = &report.blockers[0];
    assert_eq!(blocker.field.as_deref(), Some("code"));
    assert_eq!(blocker.records, 1);
    assert_eq!(blocker.examples[0].id, "r3");
    assert_eq!(blocker.examples[0].value, Some(json!("twelve")));
    assert!(!report.applied);

    // A new required field without a default, on a table with records.
    let report = blocked(world.apply(&changed(&|table| {
        table
            .fields
            .push(FieldSpec::new("owner", FieldType::String).required());
    })));
    assert_eq!(report.blockers[0].records, 3, "{report:?}");
    assert!(report.blockers[0].problem.contains("default"));

    // A field made required while records have no value.
    let report = blocked(world.apply(&changed(&|table| {
        table.fields[4] = FieldSpec::new("done", FieldType::Boolean).required();
    })));
    assert_eq!(report.blockers[0].records, 3);

    // Types with no converter: the records that hold a value are listed.
    let report = blocked(world.apply(&changed(&|table| {
        table.fields[2] = FieldSpec::new("price", FieldType::Bytes);
    })));
    assert_eq!(report.blockers.len(), 1, "{report:?}");
    let blocker = &report.blockers[0];
    assert_eq!(blocker.field.as_deref(), Some("price"));
    assert!(blocker.problem.contains("no converter"), "{report:?}");
    assert_eq!(blocker.records, 2, "r3 has no price: {report:?}");
    let examples: Vec<(&str, Option<&Json>)> = blocker
        .examples
        .iter()
        .map(|example| (example.id.as_str(), example.value.as_ref()))
        .collect();
    assert_eq!(
        examples,
        [("r1", Some(&json!(3))), ("r2", Some(&json!(2)))],
        "{report:?}"
    );

    // A unique index on repeated values.
    let report = blocked(world.apply(&changed(&|table| {
        table.indexes.push(IndexSpec {
            field: "legacy".into(),
            unique: true,
        });
    })));
    assert_eq!(report.blockers[0].records, 2);

    // The primary key changes, or its type does: every record is concerned,
    // and each change is reported once.
    let report = blocked(world.apply(&changed(&|table| {
        table.primary_key = "code".into();
    })));
    assert_eq!(report.blockers.len(), 1, "{report:?}");
    assert!(report.blockers[0].problem.contains("primary key"));
    assert_eq!(report.blockers[0].records, 3, "{report:?}");
    let report = blocked(world.apply(&changed(&|table| {
        table.fields[0] = FieldSpec::new("id", FieldType::Integer).required();
    })));
    assert_eq!(report.blockers.len(), 1, "{report:?}");
    assert_eq!(report.blockers[0].field.as_deref(), Some("id"));
    assert!(report.blockers[0].problem.contains("primary key's type"));
    assert_eq!(report.blockers[0].records, 3, "{report:?}");

    // A table removed.
    let report = blocked(world.apply(&SchemaDoc {
        version: 2,
        min_client_version: 0,
        tables: vec![TableSchema::new("other", "id")],
    }));
    assert_eq!(report.blockers.len(), 1, "{report:?}");
    assert_eq!(report.blockers[0].table, TABLE);
    assert_eq!(report.blockers[0].field, None);
    assert_eq!(report.blockers[0].records, 3, "{report:?}");
    let ids: Vec<&str> = report.blockers[0]
        .examples
        .iter()
        .map(|example| example.id.as_str())
        .collect();
    assert_eq!(ids, ["r1", "r2", "r3"]);

    // Not newer, and not valid.
    assert!(matches!(
        world.apply(&doc(1, v1_table())),
        Err(EngineError::Migration(MigrationError::NotNewer { .. }))
    ));
    let mut keyless = v1_table();
    keyless.primary_key = "missing".into();
    assert!(matches!(
        world.apply(&doc(2, keyless)),
        Err(EngineError::Migration(MigrationError::Invalid(_)))
    ));

    // Nothing changed.
    assert_eq!(world.db.schema_doc(), before_doc);
    assert_eq!(world.db.schema_version(), 1);
    assert_eq!(world.db.latest_seq(), seq);
    let after_rows: Vec<Json> = ["r1", "r2", "r3"]
        .iter()
        .map(|id| world.server_row(id))
        .collect();
    assert_eq!(after_rows, before_rows);
}

#[tokio::test]
async fn versions_and_lazy_rows_survive_restarts() {
    let dir = TempDir::new("schema-restart");
    let open = || {
        let options = StoreOptions::new(StorageConfig {
            data_dir: Some(dir.path().to_path_buf()),
            fsync: FsyncPolicy::Always,
            ..StorageConfig::default()
        });
        Store::open(options, EngineConfig::default(), SyncConfig::default()).expect("opens")
    };
    {
        let opened = open();
        let db = opened.sync.database();
        db.apply_schema(&doc(1, v1_table()), &ClientId::from("admin"))
            .expect("v1");
        db.insert(
            TABLE,
            fields(&[
                ("id", Value::str("r1")),
                ("title", Value::str("milk")),
                ("price", Value::Int(3)),
            ]),
            &ClientId::from("admin"),
        )
        .expect("insert");
        db.apply_schema(&doc(2, v2_table()), &ClientId::from("admin"))
            .expect("v2");
        db.set_min_client_version(1).expect("minimum");
        opened.store.close().expect("close");
    }
    let check = |db: &Database| {
        assert_eq!(db.schema_version(), 2);
        assert_eq!(db.min_client_version(), 1);
        let schema = db.schema(TABLE).expect("table");
        let row = Json::Object(
            db.get(TABLE, "r1")
                .expect("read")
                .expect("live")
                .to_json(&schema),
        );
        assert_eq!(
            row,
            json!({"id": "r1", "name": "milk", "price": 3.0, "priority": 0})
        );
        assert_eq!(db.schema_doc_at(1).expect("v1").tables[0], v1_table());
    };
    {
        let opened = open();
        check(opened.sync.database());
        opened.store.snapshot().expect("snapshot");
        opened.store.close().expect("close");
    }
    let opened = open();
    check(opened.sync.database());
}

#[tokio::test]
async fn the_schema_api_takes_toml_and_reports_blockers() {
    let world = World::new();
    let server = mobilesyncdb::api::start_with(local_config(), world.db.clone())
        .await
        .expect("server");
    let http = reqwest::Client::new();
    let url = |path: &str| format!("{}{path}", server.url());
    let send = |request: reqwest::RequestBuilder| async move {
        let response = request
            .header("authorization", format!("Bearer {DEV_ADMIN_KEY}"))
            .send()
            .await
            .expect("request");
        let status = response.status().as_u16();
        let text = response.text().await.expect("body");
        (status, text)
    };
    let toml = r#"
version = 2
min_client_version = 1

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
renamed_from = "title"

[[tables.fields]]
name = "price"
type = "float"

[[tables.fields]]
name = "legacy"
type = "string"

[[tables.fields]]
name = "done"
type = "boolean"

[[tables.fields]]
name = "code"
type = "string"
"#;
    let (status, text) = send(
        http.post(url("/v1/schema/plan"))
            .header("content-type", "application/toml")
            .body(toml),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let plan: Json = serde_json::from_str(&text).expect("JSON");
    assert_eq!(plan["applied"], json!(false));
    assert_eq!(world.db.schema_version(), 1, "a plan changes nothing");
    let (status, text) = send(
        http.put(url("/v1/schema"))
            .header("content-type", "application/toml")
            .body(toml),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let (status, text) = send(http.get(url("/v1/schema"))).await;
    assert_eq!(status, 200);
    let current: Json = serde_json::from_str(&text).expect("JSON");
    assert_eq!(current["version"], json!(2));
    assert_eq!(current["tables"][0]["fields"][1]["name"], json!("name"));
    let (_, text) = send(
        http.get(url("/v1/schema/diff?from=1"))
            .header("accept", "text/plain"),
    )
    .await;
    assert!(text.contains("title") && text.contains("name"), "{text}");

    // A blocked migration: 409 with the report.
    let mut bad = world.db.schema_doc();
    bad.version = 3;
    bad.tables[0].fields[5].kind = FieldType::Bytes;
    let (status, text) = send(
        http.put(url("/v1/schema"))
            .header("content-type", "application/json")
            .body(serde_json::to_string(&bad).expect("JSON")),
    )
    .await;
    assert_eq!(status, 409, "{text}");
    let problem: Json = serde_json::from_str(&text).expect("JSON");
    assert_eq!(problem["code"], json!("migration_blocked"));
    assert_eq!(problem["report"]["blockers"][0]["field"], json!("code"));

    // An app below the minimum gets 426 over HTTP.
    let (status, _) = send(
        http.put(url("/v1/schema/min-client-version"))
            .header("content-type", "application/json")
            .body(r#"{"min_client_version": 2}"#),
    )
    .await;
    assert_eq!(status, 200);
    let token = common::mint_token(&server, "ann", "ann-phone");
    let response = http
        .post(url("/v1/sync/pull"))
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(r#"{"cursor": 0, "tables": [{"table": "todos"}], "schema_version": 1}"#)
        .send()
        .await
        .expect("request");
    assert_eq!(response.status().as_u16(), 426);
    let problem: Json = serde_json::from_str(&response.text().await.expect("body")).expect("JSON");
    assert_eq!(problem["code"], json!("upgrade_required"));
    server.shutdown().await;
}

#[test]
fn the_documented_example_applies_as_docs_schema_md_says() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/schema");
    let read = |name: &str| SchemaDoc::read(&dir.join(name)).expect("a schema document");
    let db = Database::new(EngineConfig::default()).expect("engine config");
    let admin = ClientId::from("admin");
    db.apply_schema(&read("v1.toml"), &admin)
        .expect("version 1");
    for (id, title, quantity) in [("i1", "milk", 2), ("i2", "bread", 1)] {
        db.insert(
            "items",
            fields(&[
                ("id", Value::str(id)),
                ("title", Value::str(title)),
                ("quantity", Value::Int(quantity)),
            ]),
            &admin,
        )
        .expect("insert");
    }
    db.apply_schema(&read("v2.toml"), &admin)
        .expect("version 2");
    db.apply_schema(&read("v3.toml"), &admin)
        .expect("version 3");
    db.writer(&mobilesyncdb::engine::FullAccess)
        .patch(
            "items",
            "i2",
            vec![mobilesyncdb::crdt::Edit::set("quantity", "2 kg")],
            &admin,
        )
        .expect("patch");
    let report = blocked(db.apply_schema(&read("v4-blocked.toml"), &admin));
    let fields: Vec<&str> = report
        .blockers
        .iter()
        .filter_map(|blocker| blocker.field.as_deref())
        .collect();
    assert_eq!(fields, ["barcode", "barcode", "quantity"]);
    assert_eq!(db.schema_version(), 3);
    assert_eq!(db.min_client_version(), 2);
    let diff = db.schema_diff(1, 3).expect("both versions").to_string();
    assert!(diff.contains("~ field title renamed to name"), "{diff}");
}

//! Durability: what a data directory keeps across restarts, how it treats
//! damage, and how writes behave while the disk refuses them.
//!
//! - A restart restores the same rows, sequence numbers, change log, document
//!   heads, sync sessions (acknowledged cursors, remembered operation results)
//!   and durable settings, from the journal alone and from a snapshot plus a
//!   journal tail; a client continues incrementally from its cursor.
//! - A snapshot deletes the journal segments and older snapshots it covers.
//! - A torn journal tail is cut and reported; damage in the middle stops the
//!   start with a message naming `check` and `repair`, `check` reports it, and
//!   `repair` cuts the data at the damage so the server starts again.
//! - A full disk and a failing `fsync` (injected through the `Disk` trait) make
//!   writes fail with a storage error while reads go on; a pull never serves a
//!   change that is not durable; writes resume without a restart when the disk
//!   recovers, and nothing acknowledged is lost.
//! - Over HTTP, a refused write is a 507 problem, `/health` says `degraded`, and
//!   the server takes writes again once the disk does.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mobilesyncdb::client::{Client, InProcess};
use mobilesyncdb::config::{AccessRule, EngineConfig, FsyncPolicy, StorageConfig, SyncConfig};
use mobilesyncdb::crdt::{ClientId, Value};
use mobilesyncdb::engine::{Database, EngineError, SystemClock, WriteError};
use mobilesyncdb::schema::Fields;
use mobilesyncdb::storage::{self, Faults, FaultyDisk, Opened, StorageError, Store, StoreOptions};
use mobilesyncdb::sync::SyncServer;

mod common;

use common::{TempDir, client_config, fields, local_config, todos_of_every_kind};

const TABLE: &str = "todos";

fn storage_config(dir: &Path, fsync: FsyncPolicy) -> StorageConfig {
    StorageConfig {
        data_dir: Some(dir.to_owned()),
        fsync,
        fsync_interval_ms: 5,
        retry_interval_ms: 20,
        ..StorageConfig::default()
    }
}

fn open_with(
    dir: &Path,
    fsync: FsyncPolicy,
    disk: Option<&FaultyDisk>,
) -> Result<Opened, StorageError> {
    let mut options = StoreOptions::new(storage_config(dir, fsync));
    if let Some(disk) = disk {
        options.disk = Arc::new(disk.clone());
    }
    Store::open(options, EngineConfig::default(), SyncConfig::default())
}

fn open(dir: &Path) -> Opened {
    open_with(dir, FsyncPolicy::Always, None).expect("the data directory opens")
}

fn todo(id: &str, title: &str, priority: i64) -> Fields {
    fields(&[
        ("id", Value::str(id)),
        ("title", Value::str(title)),
        ("priority", Value::Int(priority)),
        ("likes", Value::Counter(0)),
    ])
}

fn admin() -> ClientId {
    ClientId::from("admin")
}

/// Everything a restart must keep that the engine shows: rows in order, the
/// latest sequence number, the horizon, the change log and every record's heads.
#[derive(Debug, PartialEq)]
struct Observed {
    rows: Vec<(String, Vec<Value>, u64)>,
    latest_seq: u64,
    horizon: u64,
    changes: Vec<(u64, String, String, Vec<u8>)>,
    heads: Vec<Vec<String>>,
    settings: Vec<(String, String)>,
}

fn observe(db: &Database) -> Observed {
    let mut rows = Vec::new();
    let mut heads = Vec::new();
    for schema in db.schemas() {
        let mut ids = db
            .records_changed_since(&schema.name, 0, usize::MAX)
            .unwrap();
        ids.sort_by(|left, right| left.1.cmp(&right.1));
        for (seq, id) in ids {
            let row = db.get(&schema.name, &id).unwrap().map(|row| row.values());
            let mut record_heads: Vec<String> = db
                .heads(&schema.name, &id)
                .unwrap()
                .unwrap()
                .iter()
                .map(ToString::to_string)
                .collect();
            record_heads.sort();
            heads.push(record_heads);
            rows.push((id, row.unwrap_or_default(), seq));
        }
    }
    let changes = db
        .changes_since(db.horizon(), usize::MAX)
        .unwrap()
        .into_iter()
        .map(|change| (change.seq, change.table, change.record_id, change.change))
        .collect();
    Observed {
        rows,
        latest_seq: db.latest_seq(),
        horizon: db.horizon(),
        changes,
        heads,
        settings: db.settings(""),
    }
}

/// Writes of every kind: inserts, patches, a delete, a revival, a counter, a
/// merge of a phone's changes, a setting.
async fn write_history(sync: &SyncServer, phone: &Client<InProcess>) {
    let db = sync.database();
    if db.schema(TABLE).is_none() {
        db.create_table(todos_of_every_kind(TABLE)).unwrap();
    }
    for index in 0..20 {
        db.insert(
            TABLE,
            todo(&format!("t{index}"), &format!("task {index}"), index),
            &admin(),
        )
        .unwrap();
    }
    db.update(
        TABLE,
        "t3",
        fields(&[("title", Value::str("renamed"))]),
        &admin(),
    )
    .unwrap();
    db.delete(TABLE, "t4", &admin()).unwrap();
    db.patch(
        TABLE,
        "t5",
        vec![mobilesyncdb::crdt::Edit::Increment {
            field: "likes".into(),
            by: 3,
        }],
        &admin(),
    )
    .unwrap();
    db.put_setting("test/key", Some("\"value\"".into()))
        .unwrap();
    phone
        .insert(TABLE, todo("p1", "from the phone", 9))
        .await
        .unwrap();
    phone.sync().await.unwrap();
    phone
        .update(TABLE, "t1", fields(&[("done", Value::Bool(true))]))
        .await
        .unwrap();
    phone.sync().await.unwrap();
}

fn phone(sync: &SyncServer) -> Client<InProcess> {
    let config = client_config("phone-1", TABLE, Arc::new(SystemClock));
    Client::new(config, InProcess::new(sync.clone())).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_rows_sequence_numbers_sessions_and_settings() {
    let dir = TempDir::new("restart");
    let opened = open(dir.path());
    assert_eq!(opened.report.latest_seq, 0);
    let client = phone(&opened.sync);
    write_history(&opened.sync, &client).await;
    let before = observe(opened.sync.database());
    let session = opened.sync.session("phone-1").expect("a session");
    assert!(session.acked_cursor > 0, "{session:?}");
    let replica = client.replica();
    drop(client);
    opened.store.close().unwrap();
    drop(opened);

    // From the journal alone.
    let reopened = open(dir.path());
    assert_eq!(reopened.report.snapshot_lsn, None);
    assert!(reopened.report.journal_frames > 20, "{:?}", reopened.report);
    assert_eq!(observe(reopened.sync.database()), before);
    assert_eq!(reopened.sync.session("phone-1"), Some(session.clone()));

    // The phone continues from its cursor: a new change comes alone, and its
    // sequence number follows the restored ones.
    let config = client_config("phone-1", TABLE, Arc::new(SystemClock));
    let client =
        Client::from_replica(config, replica, InProcess::new(reopened.sync.clone())).unwrap();
    let seq = reopened
        .sync
        .database()
        .insert(TABLE, todo("after", "after the restart", 1), &admin())
        .unwrap()
        .seq
        .unwrap();
    assert_eq!(seq, before.latest_seq + 1);
    let report = client.pull_all().await.unwrap();
    assert_eq!(report.records, 1, "{report:?}");
    assert_eq!(report.cursor, seq);
    let before = observe(reopened.sync.database());
    let replica = client.replica();
    drop(client);

    // From a snapshot plus a journal tail.
    let snapshot = reopened.store.snapshot().unwrap();
    assert_eq!(snapshot.records, 22);
    reopened
        .sync
        .database()
        .update(
            TABLE,
            "t7",
            fields(&[("priority", Value::Int(70))]),
            &admin(),
        )
        .unwrap();
    let before_tail = observe(reopened.sync.database());
    assert_ne!(before_tail, before);
    let session = reopened.sync.session("phone-1").unwrap();
    reopened.store.close().unwrap();
    drop(reopened);
    let files = names(dir.path());
    assert_eq!(
        files.iter().filter(|name| name.starts_with("wal-")).count(),
        1,
        "covered segments are deleted: {files:?}"
    );
    let again = open(dir.path());
    assert_eq!(again.report.snapshot_lsn, Some(snapshot.lsn));
    assert_eq!(again.report.journal_frames, 1, "{:?}", again.report);
    assert_eq!(observe(again.sync.database()), before_tail);
    assert_eq!(again.sync.session("phone-1"), Some(session));
    let config = client_config("phone-1", TABLE, Arc::new(SystemClock));
    let client = Client::from_replica(config, replica, InProcess::new(again.sync.clone())).unwrap();
    let report = client.pull_all().await.unwrap();
    assert_eq!(
        report.records, 1,
        "only the change made after the snapshot: {report:?}"
    );
    assert_eq!(
        client.get(TABLE, "t7").unwrap().get("priority"),
        Some(&Value::Int(70))
    );
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn segment(dir: &Path) -> PathBuf {
    let name = names(dir)
        .into_iter()
        .rfind(|name| name.starts_with("wal-"))
        .expect("a segment");
    dir.join(name)
}

fn insert_many(db: &Database, count: usize) {
    if db.schema(TABLE).is_none() {
        db.create_table(todos_of_every_kind(TABLE)).unwrap();
    }
    for index in 0..count {
        db.insert(
            TABLE,
            todo(&format!("r{index}"), "a record", index as i64),
            &admin(),
        )
        .unwrap();
    }
}

#[test]
fn a_torn_tail_is_cut_and_reported() {
    let dir = TempDir::new("torn");
    let opened = open(dir.path());
    insert_many(opened.sync.database(), 10);
    drop(opened);
    let path = segment(dir.path());
    let length = std::fs::metadata(&path).unwrap().len();
    // A crash in the middle of the last write: its frame is cut short.
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.set_len(length - 7).unwrap();
    drop(file);

    let reopened = open(dir.path());
    let (torn, offset, cut) = reopened.report.torn_tail.clone().expect("a torn tail");
    assert_eq!(torn, path);
    assert!(offset < length - 7 && cut > 0, "{offset} {cut}");
    let db = reopened.sync.database();
    assert_eq!(db.latest_seq(), 9, "the last write is gone, whole");
    assert!(db.get(TABLE, "r8").unwrap().is_some());
    assert!(db.get(TABLE, "r9").unwrap().is_none());
    // The journal goes on from the cut: the next write takes seq 10 and survives.
    db.insert(TABLE, todo("r9", "again", 9), &admin()).unwrap();
    drop(reopened);
    let again = open(dir.path());
    assert_eq!(again.report.torn_tail, None);
    assert_eq!(again.sync.database().latest_seq(), 10);

    // Zeros after the last frame (a file extended but not written) are a torn
    // tail too.
    drop(again);
    let path = segment(dir.path());
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.extend_from_slice(&[0; 4096]);
    std::fs::write(&path, bytes).unwrap();
    let again = open(dir.path());
    assert!(again.report.torn_tail.is_some());
    assert_eq!(again.sync.database().latest_seq(), 10);
}

#[test]
fn damage_in_the_middle_stops_the_start_until_repaired() {
    let dir = TempDir::new("corrupt");
    let opened = open(dir.path());
    insert_many(opened.sync.database(), 50);
    drop(opened);
    let path = segment(dir.path());
    let mut bytes = std::fs::read(&path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(&path, &bytes).unwrap();

    let error = open_with(dir.path(), FsyncPolicy::Always, None).expect_err("refused");
    let message = error.to_string();
    assert!(matches!(error, StorageError::Corrupt { .. }), "{message}");
    assert!(
        message.contains("mobilesyncdb check --data-dir"),
        "{message}"
    );
    assert!(
        message.contains("mobilesyncdb repair --data-dir"),
        "{message}"
    );
    assert!(message.contains("not a torn tail"), "{message}");

    let report = storage::check(dir.path()).unwrap();
    assert!(!report.healthy());
    let damaged = report.files.iter().find(|file| file.path == path).unwrap();
    let damage = damaged.damage.clone().unwrap();
    assert!(
        damage.offset as usize <= middle && damage.intact_after.is_some(),
        "{damage:?}"
    );
    assert!(damaged.verdict.starts_with("damaged"), "{damaged:?}");

    {
        // A repair never runs under a server holding the directory.
        let held = std::fs::File::open(dir.path().join("LOCK")).unwrap();
        held.lock().unwrap();
        let error = storage::repair(dir.path()).expect_err("locked");
        assert!(matches!(error, StorageError::Locked { .. }), "{error}");
    }
    let (after, actions) = storage::repair(dir.path()).unwrap();
    assert!(after.healthy(), "{after:?}");
    assert_eq!(actions.len(), 1, "{actions:?}");
    assert!(
        names(dir.path())
            .iter()
            .any(|name| name.contains(".damaged-at-")),
        "what follows the damage is kept aside"
    );
    let repaired = open(dir.path());
    let db = repaired.sync.database();
    let kept = db.latest_seq();
    assert!(
        kept > 0 && kept < 50,
        "the records before the damage: {kept}"
    );
    for index in 0..kept {
        assert!(db.get(TABLE, &format!("r{index}")).unwrap().is_some());
    }
}

#[test]
fn a_damaged_snapshot_stops_the_start() {
    let dir = TempDir::new("snapshot");
    let opened = open(dir.path());
    insert_many(opened.sync.database(), 30);
    let snapshot = opened.store.snapshot().unwrap();
    drop(opened);
    let mut bytes = std::fs::read(&snapshot.path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&snapshot.path, &bytes).unwrap();
    let error = open_with(dir.path(), FsyncPolicy::Always, None).expect_err("refused");
    assert!(matches!(error, StorageError::Corrupt { .. }), "{error}");
    assert!(!storage::check(dir.path()).unwrap().healthy());
}

fn wait_until(mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !condition() {
        assert!(Instant::now() < deadline, "the condition never held");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn storage_refusal(error: EngineError) -> String {
    match error {
        EngineError::Write(WriteError::Storage { reason }) => reason,
        other => panic!("expected a storage refusal, got {other}"),
    }
}

/// A disk failure: writes fail, reads go on, a pull serves nothing that is not
/// durable, and writes resume once the disk recovers.
fn survive(name: &str, fail: impl Fn(&Faults), heal: impl Fn(&Faults)) {
    let dir = TempDir::new(name);
    let disk = FaultyDisk::new();
    let faults = disk.faults();
    let opened = open_with(dir.path(), FsyncPolicy::Always, Some(&disk)).unwrap();
    let db = opened.sync.database().clone();
    insert_many(&db, 5);
    let durable = db.latest_seq();

    fail(&faults);
    let error = db
        .insert(TABLE, todo("lost", "not acknowledged", 1), &admin())
        .expect_err("the write is refused");
    let reason = storage_refusal(error);
    assert!(reason.contains("injected"), "{reason}");
    // Later writes are refused up front; reads go on.
    let error = db
        .insert(TABLE, todo("later", "refused", 1), &admin())
        .expect_err("refused up front");
    storage_refusal(error);
    assert!(db.get(TABLE, "r0").unwrap().is_some());
    assert!(!opened.store.status().healthy);
    // A pull serves only durable changes: the write whose journal frame failed
    // is not served, and the cursor does not pass it (nor any earlier change of
    // its record).
    let client = Client::new(
        client_config("reader", TABLE, Arc::new(SystemClock)),
        InProcess::new(opened.sync.clone()),
    )
    .unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let report = runtime.block_on(client.pull_all()).unwrap();
    assert!(report.cursor <= durable, "{report:?}");
    assert!(client.get(TABLE, "lost").is_none());
    assert!(
        client.get(TABLE, "r4").is_some(),
        "durable changes are served"
    );

    heal(&faults);
    wait_until(|| opened.store.status().healthy);
    db.insert(TABLE, todo("resumed", "after recovery", 2), &admin())
        .unwrap();
    // The write that was refused was kept in memory and written on recovery:
    // it was never acknowledged, but it is not half there either.
    let report = runtime.block_on(client.pull_all()).unwrap();
    assert_eq!(report.cursor, db.latest_seq());
    assert!(client.get(TABLE, "resumed").is_some());
    let expected = observe(&db);
    drop(client);
    drop(opened);
    let reopened = open(dir.path());
    assert_eq!(observe(reopened.sync.database()), expected);
}

#[test]
fn a_full_disk_refuses_writes_until_space_returns() {
    survive(
        "full",
        |faults| faults.set_space_left(Some(10)),
        |faults| faults.set_space_left(None),
    );
}

#[test]
fn a_failing_fsync_refuses_writes_until_it_succeeds_again() {
    survive(
        "fsync",
        |faults| faults.set_fail_sync(true),
        |faults| faults.set_fail_sync(false),
    );
}

#[test]
fn bytes_corrupted_on_the_way_to_disk_are_caught_on_start() {
    let dir = TempDir::new("written-corrupt");
    let disk = FaultyDisk::new();
    let opened = open_with(dir.path(), FsyncPolicy::Always, Some(&disk)).unwrap();
    insert_many(opened.sync.database(), 5);
    disk.faults().corrupt_next_write();
    opened
        .sync
        .database()
        .insert(TABLE, todo("bad", "corrupted", 1), &admin())
        .unwrap();
    insert_many_more(opened.sync.database(), 5);
    drop(opened);
    let error = open_with(dir.path(), FsyncPolicy::Always, None).expect_err("refused");
    assert!(matches!(error, StorageError::Corrupt { .. }), "{error}");
}

fn insert_many_more(db: &Database, count: usize) {
    for index in 0..count {
        db.insert(TABLE, todo(&format!("more{index}"), "more", 0), &admin())
            .unwrap();
    }
}

#[test]
fn every_policy_keeps_what_it_acknowledged_across_a_clean_restart() {
    for fsync in [
        FsyncPolicy::Always,
        FsyncPolicy::Interval,
        FsyncPolicy::Never,
    ] {
        let dir = TempDir::new("policies");
        let opened = open_with(dir.path(), fsync, None).unwrap();
        insert_many(opened.sync.database(), 25);
        let expected = observe(opened.sync.database());
        opened.store.close().unwrap();
        drop(opened);
        let reopened = open_with(dir.path(), fsync, None).unwrap();
        assert_eq!(observe(reopened.sync.database()), expected, "{fsync}");
    }
}

#[test]
fn a_second_process_cannot_open_the_same_directory() {
    let dir = TempDir::new("lock");
    let first = open(dir.path());
    let error = open_with(dir.path(), FsyncPolicy::Always, None).expect_err("locked");
    assert!(matches!(error, StorageError::Locked { .. }), "{error}");
    drop(first);
    open(dir.path());
}

async fn health(http: &reqwest::Client, url: &str) -> serde_json::Value {
    let body = http
        .get(format!("{url}/health"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    serde_json::from_slice(&body).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_http_a_refused_write_is_507_and_writes_resume() {
    let dir = TempDir::new("http");
    let disk = FaultyDisk::new();
    let mut config = local_config();
    config.storage = storage_config(dir.path(), FsyncPolicy::Always);
    let mut options = StoreOptions::new(config.storage.clone());
    options.disk = Arc::new(disk.clone());
    let handle = mobilesyncdb::api::start_durable(config, options)
        .await
        .unwrap();
    let url = handle.url();
    let http = reqwest::Client::new();
    let admin = |request: reqwest::RequestBuilder| {
        request.header("authorization", "Bearer msdb-dev-admin-key")
    };
    let response = admin(http.put(format!("{url}/v1/tables/notes")))
        .header("content-type", "application/json")
        .body(r#"{"primary_key":"id","fields":[{"name":"id","type":"string"},{"name":"text","type":"string"}],"access":{"kind":"shared"}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let post = |id: &str| {
        admin(http.post(format!("{url}/v1/tables/notes/records")))
            .header("content-type", "application/json")
            .body(format!(r#"{{"id":"{id}","text":"hello"}}"#))
            .send()
    };
    assert_eq!(post("n1").await.unwrap().status(), 201);

    disk.faults().set_space_left(Some(0));
    let refused = post("n2").await.unwrap();
    assert_eq!(refused.status(), 507);
    let problem: serde_json::Value =
        serde_json::from_slice(&refused.bytes().await.unwrap()).unwrap();
    assert_eq!(problem["code"], "storage_unavailable", "{problem}");
    let degraded = health(&http, &url).await;
    assert_eq!(degraded["status"], "degraded", "{degraded}");
    assert!(
        degraded["storage"]["journal"]["failure"].is_string(),
        "{degraded}"
    );
    let metrics = admin(http.get(format!("{url}/metrics")))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("msdb_storage_healthy 0"), "{metrics}");
    assert!(metrics.contains("msdb_journal_syncs_total"), "{metrics}");
    let read = admin(http.get(format!("{url}/v1/tables/notes/records/n1")))
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 200, "reads go on");

    disk.faults().set_space_left(None);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if health(&http, &url).await["status"] == "ok" {
            break;
        }
        assert!(Instant::now() < deadline, "storage never recovered");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(post("n3").await.unwrap().status(), 201);
    handle.shutdown().await;

    // The access rule set through the API is kept with the data.
    let reopened = open(dir.path());
    let rules =
        mobilesyncdb::api::AccessRules::restored(Default::default(), reopened.sync.database());
    assert_eq!(rules.get("notes"), Some(AccessRule::Shared));
    assert!(
        reopened
            .sync
            .database()
            .get("notes", "n3")
            .unwrap()
            .is_some()
    );
}

/// A record whose latest change is not durable may have an earlier, durable
/// change the client lacks: the cursor must not pass that one either, or a
/// crash that takes the latest change back leaves the client without both.
#[test]
fn a_cursor_never_passes_a_durable_change_of_a_record_with_a_lost_one() {
    let dir = TempDir::new("skip");
    let disk = FaultyDisk::new();
    let opened = open_with(dir.path(), FsyncPolicy::Always, Some(&disk)).unwrap();
    let db = opened.sync.database().clone();
    insert_many(&db, 5);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = Client::new(
        client_config("reader", TABLE, Arc::new(SystemClock)),
        InProcess::new(opened.sync.clone()),
    )
    .unwrap();
    runtime.block_on(client.pull_all()).unwrap();
    let title = |value: &str| fields(&[("title", Value::str(value))]);
    db.update(TABLE, "r2", title("durable"), &admin()).unwrap();
    disk.faults().set_space_left(Some(0));
    db.update(TABLE, "r2", title("lost"), &admin())
        .expect_err("not durable");
    let report = runtime.block_on(client.pull_all()).unwrap();
    assert!(report.cursor <= 5, "{report:?}");
    let replica = client.replica();
    drop(client);
    // The process dies before the disk recovers: the last change is gone.
    drop(opened);
    let reopened = open(dir.path());
    assert_eq!(reopened.sync.database().latest_seq(), 6);
    let client = Client::from_replica(
        client_config("reader", TABLE, Arc::new(SystemClock)),
        replica,
        InProcess::new(reopened.sync.clone()),
    )
    .unwrap();
    runtime.block_on(client.pull_all()).unwrap();
    assert_eq!(
        client.get(TABLE, "r2").unwrap().get("title"),
        Some(&Value::str("durable"))
    );
}

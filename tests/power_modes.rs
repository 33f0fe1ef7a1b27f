//! Battery-aware modes: what the server serves each power profile (batch
//! bounds, deferral of low-priority tables and large records, the hint, the
//! long-poll cap), and what `Client::autosync` polls, pushes, defers and
//! fetches in each mode, and when, under paused time.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use mobilesyncdb::client::{
    Autosync, Client, ClientConfig, ClientPower, InProcess, Polling, Transport, TransportError,
};
use mobilesyncdb::config::{EngineConfig, SyncConfig};
use mobilesyncdb::crdt::{ClientId, Edit, Value};
use mobilesyncdb::dataset::Dice;
use mobilesyncdb::engine::{Database, FullAccess, RowAccess};
use mobilesyncdb::power::{NetworkKind, PowerProfile, PowerState};
use mobilesyncdb::schema::{FieldSpec, FieldType, Fields, TableSchema};
use mobilesyncdb::sync::wire::{self, MessageKind};
use mobilesyncdb::sync::{
    PullRequest, PushRequest, RecordRef, SyncServer, WireScope, decode_batch, decode_pull_response,
    encode_request,
};
use tokio::time::Instant;

mod common;

use common::fields;

const TABLES: [&str; 3] = ["todos", "events", "photos"];
const LOW_PRIORITY: [&str; 2] = ["events", "photos"];

fn database() -> Database {
    let db = Database::new(EngineConfig::default()).expect("engine config");
    db.create_table(
        TableSchema::new("todos", "id")
            .field(FieldSpec::new("title", FieldType::String))
            .field(FieldSpec::new("done", FieldType::Boolean)),
    )
    .expect("todos");
    db.create_table(
        TableSchema::new("events", "id").field(FieldSpec::new("kind", FieldType::String)),
    )
    .expect("events");
    db.create_table(
        TableSchema::new("photos", "id")
            .field(FieldSpec::new("todo", FieldType::String))
            .field(FieldSpec::new("photo", FieldType::Bytes)),
    )
    .expect("photos");
    db
}

fn server(db: &Database) -> SyncServer {
    let mut config = SyncConfig::default();
    config.power.low_priority_tables = LOW_PRIORITY.map(str::to_owned).to_vec();
    SyncServer::new(db.clone(), config).expect("sync config")
}

fn other() -> ClientId {
    ClientId::from("other-device")
}

fn todo(db: &Database, id: &str, title: &str) {
    db.insert(
        "todos",
        fields(&[("id", Value::str(id)), ("title", Value::str(title))]),
        &other(),
    )
    .expect("todo");
}

fn event(db: &Database, id: &str) {
    db.insert(
        "events",
        fields(&[("id", Value::str(id)), ("kind", Value::str("view"))]),
        &other(),
    )
    .expect("event");
}

/// A photo of `bytes` random bytes (they do not compress).
fn photo(db: &Database, id: &str, bytes: usize) {
    let mut photo = vec![0; bytes];
    Dice::new(7).fill(&mut photo);
    db.insert(
        "photos",
        fields(&[
            ("id", Value::str(id)),
            ("todo", Value::str("t1")),
            ("photo", Value::Bytes(photo.into())),
        ]),
        &other(),
    )
    .expect("photo");
}

fn retitle(db: &Database, id: &str, title: &str) {
    db.patch(
        "todos",
        id,
        vec![Edit::set("title", Value::str(title))],
        &other(),
    )
    .expect("patch");
}

fn titled(title: &str) -> Fields {
    fields(&[("title", Value::str(title))])
}

fn title_on_server(db: &Database, id: &str) -> Value {
    let position = db.field_position("todos", "title").expect("title");
    db.get("todos", id)
        .expect("read")
        .expect("todo")
        .get(position)
}

fn pull_request(profile: Option<(&str, &str)>, fetch: Vec<RecordRef>) -> PullRequest {
    PullRequest {
        device: "phone".to_owned(),
        tables: TABLES.into_iter().map(WireScope::all).collect(),
        fetch,
        profile: profile.map(|(power, _)| power.to_owned()),
        network: profile.map(|(_, network)| network.to_owned()),
        ..PullRequest::default()
    }
}

fn ids(batch: &mobilesyncdb::sync::PullBatch) -> Vec<String> {
    batch
        .tables
        .iter()
        .flat_map(|table| {
            table
                .records
                .iter()
                .map(move |record| format!("{}/{}", table.table, record.id))
        })
        .collect()
}

fn refs(batch: &mobilesyncdb::sync::PullBatch) -> Vec<String> {
    batch
        .deferred
        .iter()
        .map(|key| format!("{}/{}", key.table, key.id))
        .collect()
}

#[test]
fn a_low_battery_pull_defers_low_priority_tables_and_large_records() {
    let db = database();
    let server = server(&db);
    todo(&db, "t1", "small");
    event(&db, "e1");
    photo(&db, "p1", 20_000);
    // A to-do whose payload is over the low mode's 64 KiB: random text.
    let mut noise = vec![0; 120_000];
    Dice::new(3).fill(&mut noise);
    let big: String = noise
        .iter()
        .map(|byte| char::from(b'a' + byte % 26))
        .collect();
    todo(&db, "big", &big);

    let low = server
        .pull(
            &FullAccess,
            &pull_request(Some(("low", "unmetered")), Vec::new()),
        )
        .expect("pull");
    let batch = decode_batch(&low.message, usize::MAX).expect("batch");
    assert_eq!(ids(&batch), ["todos/t1"]);
    assert_eq!(refs(&batch), ["events/e1", "photos/p1", "todos/big"]);
    assert_eq!(low.deferred, 3);
    // The cursor moves past what was deferred: it is owed by name, not by cursor.
    assert_eq!(batch.next_cursor, db.latest_seq());
    let hint = batch.hint.expect("a hint");
    assert_eq!(hint.mode, "low");
    assert_eq!(hint.next_sync_ms, 3 * 3600 * 1000);
    assert_eq!(hint.long_poll_ms, 0);

    // Asked for by name, deferred records come whole, whatever the mode.
    let fetched = server
        .pull(
            &FullAccess,
            &PullRequest {
                cursor: batch.next_cursor,
                ..pull_request(Some(("low", "unmetered")), batch.deferred.clone())
            },
        )
        .expect("pull");
    let fetched = decode_batch(&fetched.message, usize::MAX).expect("batch");
    let mut got = ids(&fetched);
    got.sort();
    assert_eq!(got, ["events/e1", "photos/p1", "todos/big"]);
    assert!(
        fetched
            .tables
            .iter()
            .all(|table| table.records.iter().all(|r| r.whole))
    );
    assert!(fetched.deferred.is_empty());

    // Normal mode sends everything; metered defers only records over 256 KiB.
    for network in ["unmetered", "metered"] {
        let normal = server
            .pull(
                &FullAccess,
                &pull_request(Some(("normal", network)), Vec::new()),
            )
            .expect("pull");
        let batch = decode_batch(&normal.message, usize::MAX).expect("batch");
        assert_eq!(batch.len(), 4, "{network}");
        assert!(batch.deferred.is_empty());
        assert_eq!(batch.hint.expect("hint").next_sync_ms, 3600 * 1000);
    }
    // A device that states no profile is served as before, with no hint.
    let plain = server
        .pull(&FullAccess, &pull_request(None, Vec::new()))
        .expect("pull");
    let plain = decode_batch(&plain.message, usize::MAX).expect("batch");
    assert_eq!(plain.len(), 4);
    assert!(plain.hint.is_none());
}

#[test]
fn deferred_records_are_not_copied_into_the_batch_nor_fill_it() {
    let db = database();
    let server = server(&db);
    // 6 MB of photos, more than low mode's 4 MiB batch, between the to-dos.
    for n in 0..60 {
        todo(&db, &format!("t{n:02}"), "task");
        photo(&db, &format!("p{n:02}"), 100_000);
    }
    let low = server
        .pull(
            &FullAccess,
            &pull_request(Some(("low", "metered")), Vec::new()),
        )
        .expect("pull");
    let batch = decode_batch(&low.message, usize::MAX).expect("batch");
    // One batch holds every to-do and names every photo: the photos' bytes
    // were never part of it.
    assert!(!batch.has_more);
    assert_eq!(batch.len(), 60);
    assert_eq!(batch.deferred.len(), 60);
    assert!(low.message.len() < 100_000, "{} bytes", low.message.len());
}

#[test]
fn the_profile_picks_the_batch_size() {
    let db = database();
    let server = server(&db);
    for n in 0..2_500 {
        todo(&db, &format!("t{n:04}"), "task");
    }
    let batch = |power: &str| {
        let pull = server
            .pull(
                &FullAccess,
                &pull_request(Some((power, "unmetered")), Vec::new()),
            )
            .expect("pull");
        decode_batch(&pull.message, usize::MAX).expect("batch")
    };
    // Normal: 2,000 records a batch; charging and low: up to 10,000 and 5,000,
    // so one wake-up brings everything.
    assert_eq!(batch("normal").len(), 2_000);
    assert!(batch("normal").has_more);
    assert_eq!(batch("charging").len(), 2_500);
    assert_eq!(batch("low").len(), 2_500);
}

#[test]
fn an_unknown_power_state_is_refused_by_name_and_a_known_one_is_recorded() {
    let db = database();
    let server = server(&db);
    let bad = server.handle(&encode_request(
        MessageKind::PullRequest,
        &pull_request(Some(("sleepy", "unmetered")), Vec::new()),
    ));
    let error = decode_pull_response(&bad, usize::MAX).expect_err("refused");
    assert_eq!(error.code(), Some("bad_profile"));
    assert!(
        error.to_string().contains("unknown power state `sleepy`"),
        "{error}"
    );

    let push = PushRequest {
        device: "phone".to_owned(),
        profile: Some("low".to_owned()),
        network: Some("metered".to_owned()),
        ..PushRequest::default()
    };
    server.push(push).expect("push");
    assert_eq!(
        server.session("phone").expect("session").profile.as_deref(),
        Some("low/metered")
    );
}

#[tokio::test(start_paused = true)]
async fn long_polls_are_capped_by_the_power_mode() {
    let db = database();
    let server = server(&db);
    let waiting = |power: &str| {
        let mut request = pull_request(Some((power, "metered")), Vec::new());
        request.wait_ms = Some(60_000);
        encode_request(MessageKind::PullRequest, &request)
    };
    let access: Arc<dyn RowAccess> = Arc::new(FullAccess);
    let started = Instant::now();
    let answer = server
        .handle_waiting(access.clone(), waiting("low"), Duration::from_secs(300))
        .await;
    // Low answers at once: a phone low on battery is not kept waiting (and
    // woken by every change).
    assert_eq!(started.elapsed(), Duration::ZERO);
    assert!(decode_batch(&answer, usize::MAX).expect("batch").is_empty());

    let started = Instant::now();
    server
        .handle_waiting(access.clone(), waiting("normal"), Duration::from_secs(300))
        .await;
    assert_eq!(started.elapsed(), Duration::from_secs(60));

    // A change ends the wait with the change.
    let held = {
        let server = server.clone();
        let request = waiting("normal");
        tokio::spawn(async move {
            let started = Instant::now();
            let answer = server
                .handle_waiting(access, request, Duration::from_secs(300))
                .await;
            (started.elapsed(), answer)
        })
    };
    tokio::time::sleep(Duration::from_secs(20)).await;
    todo(&db, "t1", "new");
    let (waited, answer) = held.await.expect("task");
    assert_eq!(waited, Duration::from_secs(20));
    assert_eq!(
        ids(&decode_batch(&answer, usize::MAX).expect("batch")),
        ["todos/t1"]
    );
}

/// What the phone sent, and when.
#[derive(Clone, Debug)]
struct Sent {
    at: Duration,
    kind: MessageKind,
    /// A pull's long-poll wait.
    wait_ms: Option<u64>,
    /// A pull's records asked for by name.
    fetch: Vec<RecordRef>,
    /// A push's operations: table and number of changes.
    ops: Vec<(String, usize)>,
}

/// Records every request before passing it on.
#[derive(Clone)]
struct Recorder {
    inner: InProcess,
    start: Instant,
    sent: Arc<Mutex<Vec<Sent>>>,
}

impl Recorder {
    fn new(server: &SyncServer) -> Recorder {
        Recorder {
            inner: InProcess::new(server.clone()),
            start: Instant::now(),
            sent: Arc::default(),
        }
    }

    fn sent(&self) -> Vec<Sent> {
        self.sent.lock().unwrap().clone()
    }

    fn pulls(&self) -> Vec<Sent> {
        self.of(MessageKind::PullRequest)
    }

    fn pushes(&self) -> Vec<Sent> {
        self.of(MessageKind::PushRequest)
    }

    fn of(&self, kind: MessageKind) -> Vec<Sent> {
        self.sent()
            .into_iter()
            .filter(|sent| sent.kind == kind)
            .collect()
    }
}

impl Transport for Recorder {
    fn exchange(
        &self,
        request: Vec<u8>,
    ) -> impl std::future::Future<Output = Result<Vec<u8>, TransportError>> + Send {
        let opened = wire::open(&request, usize::MAX).expect("a valid request");
        let mut sent = Sent {
            at: self.start.elapsed(),
            kind: opened.kind,
            wait_ms: None,
            fetch: Vec::new(),
            ops: Vec::new(),
        };
        match opened.kind {
            MessageKind::PullRequest => {
                let pull: PullRequest = wire::decode_body(&opened, opened.kind).expect("a pull");
                sent.wait_ms = pull.wait_ms;
                sent.fetch = pull.fetch;
            }
            MessageKind::PushRequest => {
                let push: PushRequest = wire::decode_body(&opened, opened.kind).expect("a push");
                sent.ops = push
                    .ops
                    .into_iter()
                    .map(|op| (op.table, op.changes.len()))
                    .collect();
            }
            _ => {}
        }
        self.sent.lock().unwrap().push(sent);
        self.inner.exchange(request)
    }
}

fn phone(
    server: &SyncServer,
    profile: PowerProfile,
    power: ClientPower,
) -> (Client<Recorder>, Recorder) {
    let mut config = ClientConfig::new("phone", TABLES.into_iter().map(WireScope::all).collect());
    config.power = ClientPower {
        low_priority_tables: LOW_PRIORITY.map(str::to_owned).to_vec(),
        ..power
    };
    config.profile = Some(profile);
    let recorder = Recorder::new(server);
    let client = Client::new(config, recorder.clone()).expect("client config");
    (client, recorder)
}

/// Waits until `seconds` after the recorder started.
async fn until(recorder: &Recorder, seconds: f64) {
    tokio::time::sleep_until(recorder.start + Duration::from_secs_f64(seconds)).await;
}

/// A phone in `profile` over a recording link to a server holding the
/// to-dos `todos` (and what `seed` adds), its autosync started in the
/// foreground or not.
fn start(
    todos: &[&str],
    seed: impl FnOnce(&Database),
    profile: PowerProfile,
    power: ClientPower,
    foreground: bool,
) -> (Database, Client<Recorder>, Recorder, Autosync) {
    let db = database();
    for (n, id) in todos.iter().enumerate() {
        todo(&db, id, &format!("to-do {n}"));
    }
    seed(&db);
    let (phone, recorder) = phone(&server(&db), profile, power);
    phone.set_foreground(foreground);
    let autosync = phone.autosync();
    (db, phone, recorder, autosync)
}

fn seconds(sent: &[Sent]) -> Vec<u64> {
    sent.iter().map(|sent| sent.at.as_secs()).collect()
}

#[tokio::test(start_paused = true)]
async fn normal_mode_long_polls_in_the_foreground_and_coalesces_a_burst_of_writes() {
    let (db, phone, recorder, autosync) = start(
        &["t1", "t2"],
        |_| {},
        PowerProfile::new(PowerState::Normal, NetworkKind::Unmetered),
        ClientPower::default(),
        true,
    );
    until(&recorder, 1.0).await;
    assert_eq!(phone.rows("todos").len(), 2, "the first sync is at once");

    // Three edits of one record in three seconds wait for a quiet minute.
    for (second, title) in [(10.0, "a"), (11.0, "b"), (12.0, "c")] {
        until(&recorder, second).await;
        phone
            .update("todos", "t1", titled(title))
            .await
            .expect("edit");
    }
    // Every pull is a long poll; a change on the server reaches the phone
    // when it is made, not at the next poll, and the waiting writes ride
    // along while the radio is awake: one push, one op of three changes.
    let pulls_before = recorder.pulls().len();
    until(&recorder, 30.0).await;
    assert!(recorder.pushes().is_empty());
    retitle(&db, "t2", "changed elsewhere");
    until(&recorder, 30.1).await;
    assert_eq!(
        phone.get("todos", "t2").expect("t2")["title"],
        Value::str("changed elsewhere")
    );
    let pushes = recorder.pushes();
    assert_eq!(seconds(&pushes), [30]);
    assert_eq!(pushes[0].ops, [("todos".to_owned(), 3)]);
    assert_eq!(title_on_server(&db, "t1"), Value::str("c"));
    let pulls = recorder.pulls();
    assert!(pulls.iter().all(|pull| pull.wait_ms == Some(300_000)));
    // The held poll answered the change; the push's step pulled its echo
    // and holds the next poll.
    assert_eq!(pulls.len(), pulls_before + 2);

    // With the radio asleep, an edit waits a quiet minute.
    until(&recorder, 100.0).await;
    phone
        .update("todos", "t1", titled("d"))
        .await
        .expect("edit");
    until(&recorder, 159.0).await;
    assert_eq!(recorder.pushes().len(), 1);
    until(&recorder, 161.0).await;
    assert_eq!(seconds(&recorder.pushes()), [30, 160]);

    // Leaving the app pushes what waits at once.
    until(&recorder, 200.0).await;
    phone
        .update("todos", "t1", titled("e"))
        .await
        .expect("edit");
    until(&recorder, 210.0).await;
    phone.set_foreground(false);
    until(&recorder, 211.0).await;
    assert_eq!(seconds(&recorder.pushes()), [30, 160, 210]);
    assert_eq!(title_on_server(&db, "t1"), Value::str("e"));
    autosync.stop().await;
}

#[tokio::test(start_paused = true)]
async fn background_polls_follow_the_servers_suggested_interval() {
    let (_, phone, recorder, autosync) = start(
        &["t1"],
        |_| {},
        PowerProfile::new(PowerState::Normal, NetworkKind::Metered),
        ClientPower::default(),
        false,
    );
    until(&recorder, 3.0 * 3600.0 + 60.0).await;
    // Normal mode's hint is an hour: one pull at the start, then each hour.
    assert_eq!(seconds(&recorder.pulls()), [0, 3600, 7200, 10800]);
    assert!(recorder.pulls().iter().all(|pull| pull.wait_ms.is_none()));

    // Coming to the foreground syncs at once, then long polls.
    until(&recorder, 4.0 * 3600.0).await;
    phone.set_foreground(true);
    until(&recorder, 4.0 * 3600.0 + 1.0).await;
    let last = recorder.pulls().last().cloned().expect("a pull");
    assert_eq!(last.at.as_secs(), 4 * 3600);
    assert_eq!(last.wait_ms, Some(300_000));
    autosync.stop().await;
}

#[tokio::test(start_paused = true)]
async fn low_mode_coalesces_writes_defers_low_priority_data_and_polls_every_five_minutes() {
    let (_, phone, recorder, autosync) = start(
        &["t1", "t2"],
        |db| event(db, "e1"),
        PowerProfile::new(PowerState::Low, NetworkKind::Metered),
        ClientPower::default(),
        true,
    );
    until(&recorder, 1.0).await;
    assert_eq!(phone.rows("todos").len(), 2);
    assert!(phone.get("events", "e1").is_none());
    assert_eq!(
        phone.deferred(),
        [RecordRef {
            table: "events".to_owned(),
            id: "e1".to_owned()
        }]
    );

    // Writes at 10, 40 and 70 s wait until a minute passes without one.
    let edit = |id: &'static str| {
        let phone = phone.clone();
        async move {
            let title = format!("{id} edited");
            phone
                .update("todos", id, titled(&title))
                .await
                .expect("edit");
        }
    };
    until(&recorder, 10.0).await;
    edit("t1").await;
    until(&recorder, 40.0).await;
    edit("t2").await;
    until(&recorder, 70.0).await;
    phone
        .insert(
            "events",
            fields(&[("id", Value::str("mine")), ("kind", Value::str("edit"))]),
        )
        .await
        .expect("event");
    until(&recorder, 129.0).await;
    assert!(recorder.pushes().is_empty());
    until(&recorder, 131.0).await;
    let pushes = recorder.pushes();
    assert_eq!(seconds(&pushes), [130]);
    assert_eq!(pushes[0].ops.len(), 3, "one push for the three writes");

    // Foreground pulls every five minutes after the last sync, none a long
    // poll, none fetching the deferred event.
    until(&recorder, 1000.0).await;
    assert_eq!(seconds(&recorder.pulls()), [0, 130, 430, 730]);
    assert!(
        recorder
            .pulls()
            .iter()
            .all(|pull| pull.wait_ms.is_none() && pull.fetch.is_empty())
    );

    // Plugged in on WiFi: it syncs at once and prefetches what was deferred.
    phone.set_power(PowerProfile::new(
        PowerState::Charging,
        NetworkKind::Unmetered,
    ));
    until(&recorder, 1001.0).await;
    assert!(phone.get("events", "e1").is_some());
    assert!(phone.deferred().is_empty());
    let fetching = recorder
        .pulls()
        .into_iter()
        .find(|pull| !pull.fetch.is_empty())
        .expect("a pull fetching the deferred record");
    assert_eq!(fetching.at.as_secs(), 1000);
    autosync.stop().await;
}

#[tokio::test(start_paused = true)]
async fn critical_mode_syncs_only_essential_data() {
    let (db, phone, recorder, autosync) = start(
        &["t1"],
        |_| {},
        PowerProfile::new(PowerState::Critical, NetworkKind::Metered),
        ClientPower::default(),
        false,
    );
    until(&recorder, 60.0).await;
    phone
        .update("todos", "t1", titled("urgent"))
        .await
        .expect("edit");
    phone
        .insert(
            "events",
            fields(&[("id", Value::str("mine")), ("kind", Value::str("edit"))]),
        )
        .await
        .expect("event");
    event(&db, "e1");

    // The to-do goes five minutes after the last write; the event waits.
    until(&recorder, 359.0).await;
    assert!(recorder.pushes().is_empty());
    until(&recorder, 361.0).await;
    let pushes = recorder.pushes();
    assert_eq!(seconds(&pushes), [360]);
    assert_eq!(pushes[0].ops, [("todos".to_owned(), 1)]);
    assert_eq!(phone.queued_ops(), 1);
    assert!(db.get("events", "mine").expect("read").is_none());
    assert!(phone.get("events", "e1").is_none());

    // No polling in the background: six hours bring no other request.
    until(&recorder, 6.0 * 3600.0).await;
    assert_eq!(seconds(&recorder.pulls()), [0, 360]);

    // Opening the app syncs at once, every 15 minutes while open.
    phone.set_foreground(true);
    until(&recorder, 6.0 * 3600.0 + 1800.0 + 1.0).await;
    let opened: Vec<u64> = seconds(&recorder.pulls())
        .into_iter()
        .filter(|second| *second >= 6 * 3600)
        .collect();
    assert_eq!(opened, [21_600, 22_500, 23_400]);
    assert_eq!(phone.queued_ops(), 1, "the event still waits");

    // Back to normal: the event is pushed and the deferred one fetched.
    phone.set_power(PowerProfile::new(
        PowerState::Normal,
        NetworkKind::Unmetered,
    ));
    until(&recorder, 6.0 * 3600.0 + 1800.0 + 10.0).await;
    assert!(db.get("events", "mine").expect("read").is_some());
    assert!(phone.get("events", "e1").is_some());
    assert_eq!(phone.queued_ops(), 0);
    autosync.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_plain_client_polls_on_its_interval_and_pushes_each_write_alone() {
    let (_, phone, recorder, autosync) = start(
        &["t1", "t2"],
        |_| {},
        PowerProfile::default(),
        ClientPower::polling_every(Duration::from_secs(300)),
        false,
    );
    for (second, id) in [(100.0, "t1"), (101.0, "t2")] {
        until(&recorder, second).await;
        phone
            .update("todos", id, titled("edited"))
            .await
            .expect("edit");
    }
    until(&recorder, 3599.0).await;
    assert_eq!(seconds(&recorder.pushes()), [100, 101]);
    // Each push pulls too; the interval counts from the last sync.
    assert_eq!(
        seconds(&recorder.pulls()),
        [
            0, 100, 101, 401, 701, 1001, 1301, 1601, 1901, 2201, 2501, 2801, 3101, 3401
        ]
    );
    autosync.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_sync_the_app_asks_for_does_not_wait_for_a_long_poll() {
    let (_, phone, recorder, autosync) = start(
        &["t1"],
        |_| {},
        PowerProfile::new(PowerState::Normal, NetworkKind::Unmetered),
        ClientPower::default(),
        true,
    );
    until(&recorder, 10.0).await;
    let started = Instant::now();
    phone.sync().await.expect("sync");
    assert_eq!(started.elapsed(), Duration::ZERO);
    autosync.stop().await;
}

#[tokio::test(start_paused = true)]
async fn every_mode_can_be_configured() {
    let mut power = ClientPower::default();
    power.normal.background = Polling::Every(Duration::from_secs(600));
    let (_, _phone, recorder, autosync) = start(
        &["t1"],
        |_| {},
        PowerProfile::new(PowerState::Normal, NetworkKind::Metered),
        power,
        false,
    );
    until(&recorder, 1900.0).await;
    assert_eq!(seconds(&recorder.pulls()), [0, 600, 1200, 1800]);
    autosync.stop().await;
}

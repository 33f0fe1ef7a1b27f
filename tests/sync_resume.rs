//! Interrupted syncs resume where they stopped, and hostile answers are refused.
//!
//! - A pull cut at every message boundary (a lost, dropped, cut or corrupted
//!   answer at exchange k, for every k) resumes from the stored replica and
//!   downloads nothing twice: the only records the server sends again are those
//!   of the one batch in flight.
//! - An answer cut or corrupted at any byte is refused and leaves the replica and
//!   its cursor as they were; a request cut or corrupted at any byte is refused
//!   by the server, which applies nothing.
//! - A push the server applied but whose answer was lost is answered as a
//!   duplicate when retried, and applied exactly once, even by a server that has
//!   forgotten the operation ids.
//! - A cursor far older than the change log's horizon catches up (in one batch
//!   and in several, marked `catch_up`), deletions included, while the phone's
//!   offline edits are pushed and kept.
//! - Foreign answers (empty, random bytes, HTTP, the wrong message kind, a future
//!   format version, a header that lies about the length, bodies that are not
//!   batches) are refused with an error that names the problem, and the replica
//!   is unchanged.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mobilesyncdb::client::{
    ApplyError, Client, ClientConfig, ClientError, Fault, InProcess, LocalRow, NetworkConditions,
    Replica, RetryPolicy, SimulatedNetwork, Transport, TransportError, WriteQueue,
};
use mobilesyncdb::config::{EngineConfig, RetentionPolicy, SyncConfig};
use mobilesyncdb::crdt::{Change, ChangeHash, ClientId, Edit, Record, Value};
use mobilesyncdb::engine::{Database, ManualClock, WallClock};
use mobilesyncdb::schema::Fields;
use mobilesyncdb::sync::wire::{self, MessageKind, WireError};
use mobilesyncdb::sync::{
    BatchError, PullBatch, PullRequest, PushResult, RecordRef, ResponseError, SyncServer,
    WireScope, decode_pull_response, decode_pull_response_with, encode_request,
};

mod common;

use common::{
    client_config, fields, server_row, sorted, sync_server as server, todos_of_every_kind,
};

const TABLE: &str = "todos";
const T0: u64 = 1_750_000_000_000;
const LIMIT: usize = 64 << 20;

/// Keeps a copy of every answer the server gives, before the network can damage
/// or lose it.
#[derive(Debug)]
struct Recorder<T> {
    inner: T,
    answers: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl<T: Transport> Transport for Recorder<T> {
    async fn exchange(&self, request: Vec<u8>) -> Result<Vec<u8>, TransportError> {
        let answer = self.inner.exchange(request).await?;
        self.answers
            .lock()
            .expect("recorder lock")
            .push(answer.clone());
        Ok(answer)
    }
}

/// The pull batches among recorded answers.
fn served_batches(answers: &Mutex<Vec<Vec<u8>>>) -> Vec<PullBatch> {
    answers
        .lock()
        .expect("recorder lock")
        .iter()
        .filter(|answer| answer.get(5) == Some(&(MessageKind::PullBatch as u8)))
        .map(|answer| decode_pull_response(answer, LIMIT).expect("the server's batch decodes"))
        .collect()
}

/// Answers every request with the same bytes.
#[derive(Debug)]
struct Canned(Vec<u8>);

impl Transport for Canned {
    fn exchange(
        &self,
        _request: Vec<u8>,
    ) -> impl Future<Output = Result<Vec<u8>, TransportError>> + Send {
        std::future::ready(Ok(self.0.clone()))
    }
}

type Link = Arc<SimulatedNetwork<Recorder<InProcess>>>;

fn todo(id: &str, title: &str) -> Fields {
    fields(&[
        ("id", Value::str(id)),
        ("title", Value::str(title)),
        ("done", Value::Bool(false)),
        ("due", Value::Timestamp(T0 as i64)),
        ("likes", Value::Counter(0)),
    ])
}

fn record_id(n: usize) -> String {
    format!("r{n:03}")
}

/// A database with `count` todos `r000`, `r001`, …, written at `clock`'s time.
fn database(config: EngineConfig, count: usize, clock: &Arc<ManualClock>) -> Database {
    common::database(
        config,
        Arc::clone(clock) as Arc<dyn WallClock>,
        todos_of_every_kind(TABLE),
        (0..count).map(|n| todo(&record_id(n), &format!("task {n}"))),
    )
}

/// A phone's settings: the manual clock, one try per request (so each fault
/// surfaces), and `batch` records per pull batch.
fn config(device: &str, clock: &Arc<ManualClock>, batch: Option<u32>) -> ClientConfig {
    let mut config = client_config(device, TABLE, Arc::clone(clock) as Arc<dyn WallClock>);
    config.retry = RetryPolicy::never();
    config.batch_records = batch;
    config
}

/// A recorded, simulated link to `server`; the answers go to `answers`.
fn link(server: &SyncServer, answers: &Arc<Mutex<Vec<Vec<u8>>>>) -> Link {
    let recorder = Recorder {
        inner: InProcess::new(server.clone()),
        answers: Arc::clone(answers),
    };
    Arc::new(SimulatedNetwork::new(recorder, NetworkConditions::lte()))
}

fn replica(device: &str) -> Replica {
    common::replica(device, TABLE)
}

/// What a failed exchange must leave exactly as it was.
#[derive(Debug, PartialEq)]
struct Stored {
    cursor: u64,
    base: u64,
    checksum: u32,
    tables: BTreeMap<String, mobilesyncdb::client::LocalTable>,
    fetch: BTreeSet<RecordRef>,
    refused: BTreeSet<RecordRef>,
    confirm: BTreeMap<RecordRef, u64>,
    queue: WriteQueue,
}

fn stored(replica: Replica) -> Stored {
    Stored {
        cursor: replica.cursor,
        base: replica.base,
        checksum: replica.checksum,
        tables: replica.tables,
        fetch: replica.fetch,
        refused: replica.refused,
        confirm: replica.confirm,
        queue: replica.queue,
    }
}

/// One server record as a replica must hold it.
struct ServerRecord {
    /// `None` when deleted.
    row: Option<LocalRow>,
    bytes: Vec<u8>,
    heads: Vec<ChangeHash>,
    changes: BTreeSet<ChangeHash>,
}

/// Every record of the server, tombstones included.
fn server_view(db: &Database) -> BTreeMap<String, ServerRecord> {
    let schema = db.schema(TABLE).expect("table");
    db.records_changed_since(TABLE, 0, usize::MAX)
        .expect("read")
        .into_iter()
        .map(|(_, id)| {
            let bytes = db.record_bytes(TABLE, &id).expect("read").expect("stored");
            let document = Record::load(&bytes).expect("the server's document loads");
            let record = ServerRecord {
                row: server_row(db, &schema, &id),
                heads: sorted(document.heads()),
                changes: document
                    .changes_since(&[])
                    .iter()
                    .map(Change::hash)
                    .collect(),
                bytes,
            };
            (id, record)
        })
        .collect()
}

/// The replica holds exactly the server's records, with the same rows, deleted
/// state and heads, and nothing pending.
fn assert_matches(replica: &Replica, server: &BTreeMap<String, ServerRecord>, context: &str) {
    let table = &replica.tables[TABLE];
    let held: Vec<&String> = table.records.keys().collect();
    let expected: Vec<&String> = server.keys().collect();
    assert_eq!(held, expected, "{context}: held records");
    for (id, record) in &table.records {
        let on_server = &server[id];
        assert_eq!(
            record.deleted,
            on_server.row.is_none(),
            "{context}: {id} deleted"
        );
        assert!(!record.pending, "{context}: {id} still pending");
        if !record.deleted {
            assert_eq!(
                Some(&record.row),
                on_server.row.as_ref(),
                "{context}: row of {id}"
            );
        }
        // Identical bytes are the same document; otherwise compare the heads.
        if record.bytes != on_server.bytes {
            let document = Record::load(&record.bytes).expect("the stored copy loads");
            assert_eq!(
                sorted(document.heads()),
                on_server.heads,
                "{context}: heads of {id}"
            );
        }
    }
    assert!(replica.queue.is_empty(), "{context}: ops still queued");
    assert!(
        replica.fetch.is_empty(),
        "{context}: records still to fetch"
    );
}

const RECORDS: usize = 300;
const BATCH: usize = 25;

/// A first sync of 300 records in batches of 25 is interrupted at exchange k,
/// for every k, by each kind of fault; then the app restarts from its stored
/// replica and syncs again over a clean link. Exchanges 0 to 11 are the twelve
/// batches, exchange 12 the acknowledgement. Every record was edited after all
/// were created, in shuffled order, so the batches (listed by each record's
/// latest change) cut across the records' histories.
///
/// With a fault at batch k, the first attempt stores the k batches before it
/// (`records_received` = 25·k; the cursor is the 25·k-th smallest latest
/// sequence number); the resumed sync stores the other 12 − k batches
/// (300 − 25·k records), skips none and fetches none. Records of a refused or
/// lost batch are never stored, so `records_received` over both attempts is
/// exactly 300. On the server side the batch in flight is served twice when it
/// reached the server (lost, cut or corrupted answer: 300 + 25 records served)
/// and once when the request was dropped (300 served); no other record is ever
/// sent again.
#[tokio::test(start_paused = true)]
async fn a_first_sync_cut_at_any_exchange_resumes_without_downloading_twice() {
    let clock = ManualClock::at(T0);
    let db = database(EngineConfig::default(), RECORDS, &clock);
    let mut order: Vec<usize> = (0..RECORDS).collect();
    fastrand::Rng::with_seed(300).shuffle(&mut order);
    let admin = ClientId::from("admin");
    for n in order {
        let edit = fields(&[("priority", Value::Int(n as i64))]);
        db.update(TABLE, &record_id(n), edit, &admin)
            .expect("update");
    }
    let server = server(&db);
    let view = server_view(&db);
    // The cursor after k batches: the latest change of the 25·k-th record listed.
    let mut latest: Vec<u64> = db
        .records_changed_since(TABLE, 0, usize::MAX)
        .expect("read")
        .into_iter()
        .map(|(seq, _)| seq)
        .collect();
    latest.sort_unstable();
    let cursor_after = |stored: usize| match stored {
        0 => 0,
        stored => latest[BATCH * stored - 1],
    };
    let batches = RECORDS / BATCH;
    let exchanges = batches + 1;
    let batch = Some(BATCH as u32);
    // A clean run: twelve batches, then the acknowledgement.
    let answers = Arc::new(Mutex::new(Vec::new()));
    let network = link(&server, &answers);
    let clean = Client::new(config("clean", &clock, batch), Arc::clone(&network)).expect("client");
    clean.pull_all().await.expect("a clean sync");
    assert_eq!(network.stats().exchanges, exchanges as u64);
    assert_eq!(clean.stats().batches_applied, batches as u64);
    assert_matches(&clean.replica(), &view, "clean");

    let faults = [
        Fault::LoseResponse,
        Fault::DropRequest,
        Fault::TruncateResponse { keep: 1_000 },
        Fault::CorruptResponse { at: 500 },
    ];
    for fault in faults {
        let reaches_server = fault != Fault::DropRequest;
        for k in 0..exchanges {
            let context = format!("{fault:?} at exchange {k}");
            let device = format!("phone-{k}");
            let answers = Arc::new(Mutex::new(Vec::new()));
            let network = link(&server, &answers);
            network.script(std::iter::repeat_n(Fault::None, k).chain([fault.clone()]));
            let config = config(&device, &clock, batch);
            let first =
                Client::from_replica(config.clone(), replica(&device), network).expect("client");
            let outcome = first.pull_all().await;
            let stats = first.stats();
            let stored_batches = k.min(batches);
            if k < batches {
                assert!(outcome.is_err(), "{context}: the sync failed");
            } else {
                // Only the acknowledgement failed: the next pull acknowledges too.
                outcome.unwrap_or_else(|error| panic!("{context}: {error}"));
                assert_eq!(stats.acks_failed, 1, "{context}");
            }
            assert_eq!(
                stats.records_received,
                (BATCH * stored_batches) as u64,
                "{context}"
            );
            assert_eq!(
                first.cursor(),
                cursor_after(stored_batches),
                "{context}: cursor"
            );
            assert_eq!(first.rows(TABLE).len(), BATCH * stored_batches, "{context}");

            // The app restarts from what it stored, over a clean link.
            let resumed = Client::from_replica(config, first.replica(), link(&server, &answers))
                .expect("client");
            let report = resumed
                .pull_all()
                .await
                .unwrap_or_else(|error| panic!("{context}: resuming failed: {error}"));
            assert_eq!(
                report.batches,
                (batches - stored_batches).max(1),
                "{context}"
            );
            assert_eq!(
                report.records,
                RECORDS - BATCH * stored_batches,
                "{context}"
            );
            let received = stats.records_received + resumed.stats().records_received;
            assert_eq!(received, RECORDS as u64, "{context}: records stored");
            assert_eq!(stats.records_skipped + resumed.stats().records_skipped, 0);
            let served: usize = served_batches(&answers).iter().map(PullBatch::len).sum();
            let served_again = if k < batches && reaches_server {
                BATCH
            } else {
                0
            };
            assert_eq!(served, RECORDS + served_again, "{context}: records served");
            assert_matches(&resumed.replica(), &view, &context);
            assert_eq!(resumed.cursor(), db.latest_seq(), "{context}: cursor");
        }
    }
}

/// Offsets every 97th byte, plus every header byte.
fn offsets(len: usize) -> impl Iterator<Item = usize> {
    (0..wire::HEADER_LEN).chain((wire::HEADER_LEN..len).step_by(97))
}

/// An answer cut after any byte, or with any byte flipped, is refused: nothing
/// of it is stored and the cursor stays. The pull then completes, and storing
/// everything took exactly one download per record.
#[tokio::test(start_paused = true)]
async fn a_cut_or_corrupted_batch_is_refused_and_the_replica_is_unchanged() {
    let clock = ManualClock::at(T0);
    let db = database(EngineConfig::default(), 100, &clock);
    let server = server(&db);
    let answers = Arc::new(Mutex::new(Vec::new()));
    let network = link(&server, &answers);
    let client =
        Client::new(config("phone-1", &clock, Some(25)), Arc::clone(&network)).expect("client");
    client.pull_once().await.expect("the first batch");
    let before = stored(client.replica());
    // Lose the next answer once to learn its size: the server answers the same
    // pull with the same batch.
    network.script([Fault::LoseResponse]);
    client.pull_once().await.expect_err("lost");
    assert_eq!(stored(client.replica()), before);
    let len = answers
        .lock()
        .expect("recorder lock")
        .last()
        .expect("an answer")
        .len();
    assert!(len > 1_000, "a real batch: {len} bytes");
    let faults: Vec<Fault> = (0..len)
        .step_by(97)
        .map(|keep| Fault::TruncateResponse { keep })
        .chain([Fault::TruncateResponse { keep: len - 1 }])
        .chain(offsets(len).map(|at| Fault::CorruptResponse { at }))
        .collect();
    for fault in &faults {
        network.script([fault.clone()]);
        let error = client.pull_once().await.expect_err("refused");
        assert!(
            matches!(error, ClientError::InvalidResponse(_)),
            "{fault:?}: {error:?}"
        );
        assert_eq!(stored(client.replica()), before, "{fault:?}");
    }
    let stats = client.stats();
    assert_eq!(stats.invalid_responses, faults.len() as u64);
    assert_eq!(stats.bytes_received, network.stats().bytes_down);
    assert_eq!(stats.batches_applied, 1);
    client.pull_all().await.expect("the pull completes");
    assert_eq!(
        client.stats().records_received,
        100,
        "one download per record"
    );
    assert_matches(&client.replica(), &server_view(&db), "after the faults");
}

/// A request cut after any byte, or with any byte flipped, is refused by the
/// server with a code the client may retry on (or, for a flipped version byte,
/// `unsupported_version`), and nothing of it is applied: the change log does not
/// move and the ops stay queued. The intact push then applies each op once.
#[tokio::test(start_paused = true)]
async fn a_cut_or_corrupted_request_is_refused_and_nothing_is_applied() {
    let clock = ManualClock::at(T0);
    let db = database(EngineConfig::default(), 10, &clock);
    let server = server(&db);
    let schema = db.schema(TABLE).expect("table");
    let answers = Arc::new(Mutex::new(Vec::new()));
    let network = link(&server, &answers);
    let client =
        Client::new(config("phone-1", &clock, None), Arc::clone(&network)).expect("client");
    client.pull_all().await.expect("initial sync");
    client
        .update(TABLE, "r001", fields(&[("title", Value::str("mine"))]))
        .await
        .expect("update");
    client
        .insert(TABLE, todo("n1", "new"))
        .await
        .expect("insert");
    client.delete(TABLE, "r002").await.expect("delete");
    let latest = db.latest_seq();
    let rows_before: Vec<Option<LocalRow>> = ["r001", "n1", "r002"]
        .iter()
        .map(|id| server_row(&db, &schema, id))
        .collect();
    // Drop the push once to learn its size: retries send the same bytes.
    let up = network.stats().bytes_up;
    network.script([Fault::DropRequest]);
    client.push().await.expect_err("dropped");
    let len = usize::try_from(network.stats().bytes_up - up).expect("small");
    let faults: Vec<Fault> = (0..len)
        .step_by(97)
        .map(|keep| Fault::TruncateRequest { keep })
        .chain([Fault::TruncateRequest { keep: len - 1 }])
        .chain((0..len).map(|at| Fault::CorruptRequest { at }))
        .collect();
    for fault in &faults {
        network.script([fault.clone()]);
        let error = client.push().await.expect_err("refused");
        let code = error
            .code()
            .unwrap_or_else(|| panic!("{fault:?}: {error:?}"));
        assert!(
            error.is_retryable() || code == "unsupported_version",
            "{fault:?}: {error}"
        );
        assert_eq!(db.latest_seq(), latest, "{fault:?}: nothing applied");
        assert_eq!(client.queued_ops(), 3, "{fault:?}");
    }
    let rows_after: Vec<Option<LocalRow>> = ["r001", "n1", "r002"]
        .iter()
        .map(|id| server_row(&db, &schema, id))
        .collect();
    assert_eq!(rows_after, rows_before);
    // Damaged pull requests are refused too, and store nothing.
    let before = stored(client.replica());
    for fault in [
        Fault::TruncateRequest { keep: 10 },
        Fault::CorruptRequest { at: 3 },
        Fault::CorruptRequest { at: 40 },
    ] {
        network.script([fault.clone()]);
        let error = client.pull_once().await.expect_err("refused");
        assert!(matches!(error, ClientError::Refused { .. }), "{fault:?}");
        assert_eq!(stored(client.replica()), before, "{fault:?}");
    }
    let report = client.sync().await.expect("the intact sync");
    assert_eq!((report.push.applied, report.push.duplicates), (3, 0));
    assert_eq!(db.latest_seq(), latest + 3, "one change per op");
    assert_matches(&client.replica(), &server_view(&db), "after the faults");
}

/// Pushes four ops whose answer is lost after the server applied them, then
/// retries: the retry is answered as duplicates and nothing is applied twice.
async fn lost_push_answer(sync: SyncConfig) {
    let clock = ManualClock::at(T0);
    let db = database(EngineConfig::default(), 10, &clock);
    let server = SyncServer::new(db.clone(), sync).expect("sync config");
    let answers = Arc::new(Mutex::new(Vec::new()));
    let network = link(&server, &answers);
    let client =
        Client::new(config("phone-1", &clock, None), Arc::clone(&network)).expect("client");
    client.pull_all().await.expect("initial sync");
    let edited = ["r001", "r002", "n1", "r003"];
    let view = server_view(&db);
    let changes_before: Vec<usize> = edited
        .iter()
        .map(|id| view.get(*id).map_or(0, |record| record.changes.len()))
        .collect();
    clock.advance(1_000);
    client
        .update(TABLE, "r001", fields(&[("title", Value::str("mine"))]))
        .await
        .expect("update");
    client
        .update(TABLE, "r002", fields(&[("likes", Value::Counter(5))]))
        .await
        .expect("update");
    client
        .insert(TABLE, todo("n1", "new"))
        .await
        .expect("insert");
    client.delete(TABLE, "r003").await.expect("delete");
    let latest = db.latest_seq();
    network.script([Fault::LoseResponse]);
    let error = client.push().await.expect_err("the answer was lost");
    assert!(
        matches!(error, ClientError::Transport(TransportError::ResponseLost)),
        "{error:?}"
    );
    assert_eq!(client.queued_ops(), 4, "unanswered ops stay queued");
    assert_eq!(db.latest_seq(), latest + 4, "the server applied the push");
    let applied = server_view(&db);
    for (id, before) in edited.iter().zip(&changes_before) {
        assert_eq!(applied[*id].changes.len(), before + 1, "{id}: one change");
    }

    let report = client.push().await.expect("the retry is answered");
    assert_eq!((report.applied, report.duplicates), (0, 4));
    assert!(report.rejected.is_empty());
    assert_eq!(db.latest_seq(), latest + 4, "nothing applied twice");
    let retried = server_view(&db);
    for id in edited {
        assert_eq!(retried[id].heads, applied[id].heads, "{id}: heads");
        assert_eq!(retried[id].changes, applied[id].changes, "{id}: changes");
    }
    client.pull_all().await.expect("pull");
    assert_matches(&client.replica(), &retried, "after the retry");
    assert_eq!(
        server_row(&db, &db.schema(TABLE).expect("table"), "r002")
            .and_then(|row| row.get("likes").cloned()),
        Some(Value::Counter(5))
    );
}

/// The server answers the retry from its memory of the operation ids.
#[tokio::test(start_paused = true)]
async fn a_retried_push_whose_answer_was_lost_is_a_duplicate_applied_once() {
    lost_push_answer(SyncConfig::default()).await;
}

/// A server that remembers one operation id (as after a restart, or with the
/// session evicted) recognises the retried changes by their hashes.
#[tokio::test(start_paused = true)]
async fn a_retried_push_is_applied_once_even_when_the_server_forgot_its_op_ids() {
    lost_push_answer(SyncConfig {
        remembered_ops: 1,
        ..SyncConfig::default()
    })
    .await;
}

/// Random server edits of fields other than `priority` (which only the phone
/// writes), with a counter increment now and then.
fn server_edits(db: &Database, rng: &mut fastrand::Rng, clock: &ManualClock, count: usize) {
    let admin = ClientId::from("admin");
    for _ in 0..count {
        let id = record_id(rng.usize(..90));
        let mut edits = vec![match rng.u8(..3) {
            0 => Edit::set("title", format!("server {}", rng.u16(..))),
            1 => Edit::set("done", rng.bool()),
            _ => Edit::set("due", Value::Timestamp(T0 as i64 + rng.i64(..1 << 30))),
        }];
        if rng.u8(..4) == 0 {
            edits.push(Edit::increment("likes", 1));
        }
        db.patch(TABLE, &id, edits, &admin).expect("server edit");
        clock.advance(50);
    }
}

/// The hashes of every change waiting in the phone's queue.
fn queued_changes(replica: &Replica) -> Vec<(String, ChangeHash)> {
    replica
        .queue
        .ops
        .iter()
        .flat_map(|queued| {
            queued.op.changes.iter().map(|bytes| {
                let change = Change::from_bytes(bytes.to_vec()).expect("a queued change");
                (queued.op.id.clone(), change.hash())
            })
        })
        .collect()
}

/// A phone away while the server made 1,600 edits and more, with a change log
/// that keeps only 50 entries, comes back with offline edits of its own: its
/// edits are pushed and kept, it catches up in batches of `batch` records (the
/// server says `catch_up`), records deleted meanwhile (or created and deleted
/// meanwhile) are deleted locally, and its replica ends equal to the server.
async fn outdated_cursor_catches_up(batch: Option<u32>) {
    let clock = ManualClock::at(T0);
    let engine = EngineConfig {
        retention: RetentionPolicy {
            max_entries: 50,
            min_entries: 10,
            ..RetentionPolicy::default()
        },
        compact_after_chunks: 2,
        ..EngineConfig::default()
    };
    let db = database(engine, 100, &clock);
    let server = server(&db);
    let answers = Arc::new(Mutex::new(Vec::new()));
    let network = link(&server, &answers);
    let mut config = config("phone-1", &clock, batch);
    config.retry = RetryPolicy::default();
    let client = Client::new(config, Arc::clone(&network)).expect("client");
    client.pull_all().await.expect("initial sync");
    let away_from = client.cursor();
    network.disconnect_for(Duration::from_secs(24 * 3600));
    let offline = client.sync().await.expect_err("offline");
    assert!(matches!(
        offline,
        ClientError::Transport(TransportError::Disconnected)
    ));

    let mut rng = fastrand::Rng::with_seed(2025);
    let admin = ClientId::from("admin");
    server_edits(&db, &mut rng, &clock, 800);
    // The phone's offline edits, concurrent with the server's.
    for n in 0..10 {
        let edit = fields(&[
            ("priority", Value::Int(1_000 + n as i64)),
            ("title", Value::str(format!("phone {n}"))),
        ]);
        client
            .update(TABLE, &record_id(n), edit)
            .await
            .expect("offline update");
    }
    client
        .update(TABLE, "r091", fields(&[("done", Value::Bool(true))]))
        .await
        .expect("an edit of a record the server deletes");
    for n in 50..53 {
        client
            .delete(TABLE, &record_id(n))
            .await
            .expect("offline delete");
    }
    for n in 0..5 {
        let id = format!("p{n}");
        client
            .insert(TABLE, todo(&id, &format!("phone made {n}")))
            .await
            .expect("offline insert");
    }
    server_edits(&db, &mut rng, &clock, 800);
    for n in 90..100 {
        db.delete(TABLE, &record_id(n), &admin).expect("delete");
    }
    for n in 0..30 {
        let id = format!("s{n:03}");
        db.insert(TABLE, todo(&id, "made while away"), &admin)
            .expect("insert");
        db.update(TABLE, &id, fields(&[("done", Value::Bool(true))]), &admin)
            .expect("update");
        if n < 10 {
            db.delete(TABLE, &id, &admin).expect("delete");
        }
    }
    db.insert(TABLE, todo("r095", "revived"), &admin)
        .expect("revive");
    // The phone's last word on r005, later than every server write.
    clock.advance(1_000);
    client
        .update(
            TABLE,
            "r005",
            fields(&[("title", Value::str("phone, last"))]),
        )
        .await
        .expect("offline update");
    let offline_changes = queued_changes(&client.replica());
    assert_eq!(client.queued_ops(), 19);
    assert!(
        db.horizon() > away_from,
        "the phone's cursor {away_from} must be older than the log's horizon {}",
        db.horizon()
    );

    network.reconnect();
    answers.lock().expect("recorder lock").clear();
    let report = client.sync().await.expect("the phone catches up");
    assert_eq!(report.push.applied, 19);
    assert!(
        report.push.rejected.is_empty(),
        "{:?}",
        report.push.rejected
    );
    let batches = served_batches(&answers);
    assert!(
        batches.first().is_some_and(|batch| batch.catch_up),
        "the first batch is a catch-up"
    );
    let expected_batches = match batch {
        None => 1,
        Some(_) => 4,
    };
    assert_eq!(batches.len(), expected_batches, "catch-up batches");

    let view = server_view(&db);
    assert_matches(&client.replica(), &view, "after catching up");
    assert_eq!(client.cursor(), db.latest_seq());
    for (id, hash) in &offline_changes {
        assert!(
            view[id].changes.contains(hash),
            "{id}: an offline change was lost"
        );
    }
    let row = |id: &str| client.get(TABLE, id);
    for n in 0..10 {
        let priority = row(&record_id(n)).and_then(|row| row.get("priority").cloned());
        assert_eq!(priority, Some(Value::Int(1_000 + n as i64)), "r{n:03}");
    }
    let title = row("r005").and_then(|row| row.get("title").cloned());
    assert_eq!(title, Some(Value::str("phone, last")));
    for n in 0..5 {
        let id = format!("p{n}");
        let title = view[&id]
            .row
            .as_ref()
            .and_then(|row| row.get("title").cloned());
        assert_eq!(title, Some(Value::str(format!("phone made {n}"))), "{id}");
    }
    let deleted = (50..53)
        .chain(90..100)
        .filter(|n| *n != 95)
        .map(record_id)
        .chain((0..10).map(|n| format!("s{n:03}")));
    for id in deleted {
        assert_eq!(row(&id), None, "{id} is deleted");
    }
    assert!(row("r095").is_some(), "the revived record is back");
    assert_eq!(client.rows(TABLE).len(), db.stats().live_records);
}

/// The catch-up in one batch (the server's default batch bound, 2,000 records,
/// holds all 135 changed records).
#[tokio::test(start_paused = true)]
async fn an_outdated_cursor_catches_up_and_keeps_the_offline_edits() {
    outdated_cursor_catches_up(None).await;
}

/// The same catch-up in four batches of 40. Records the phone holds that
/// changed both before and after a batch's `next` must still arrive with every
/// change after the phone's old cursor (a batch cut once sent them with only
/// their chunks after `next`: stale fields, documents missing changes).
#[tokio::test(start_paused = true)]
async fn an_outdated_cursor_catches_up_in_several_batches() {
    outdated_cursor_catches_up(Some(40)).await;
}

/// The wire error inside a refused answer.
/// The server's raw answer to a probe device pulling all of the table from `cursor`.
fn probe_pull(server: &SyncServer, cursor: u64) -> Vec<u8> {
    let request = PullRequest {
        device: "probe".into(),
        cursor,
        tables: vec![WireScope::all(TABLE)],
        ..PullRequest::default()
    };
    server.handle(&encode_request(MessageKind::PullRequest, &request))
}

fn wire_error(error: &ClientError) -> &WireError {
    match error {
        ClientError::InvalidResponse(
            ResponseError::Wire(wire) | ResponseError::Batch(BatchError::Wire(wire)),
        ) => wire,
        other => panic!("expected an invalid envelope, got {other:?}"),
    }
}

/// A sealed message whose stored body is `stored`, sealed with `codec`.
fn sealed(kind: MessageKind, codec: u8, stored: &[u8]) -> Vec<u8> {
    let mut message = wire::MAGIC.to_vec();
    message.extend([wire::FORMAT_VERSION, kind as u8, codec, 0]);
    message.extend(u32::try_from(stored.len()).expect("small").to_le_bytes());
    let mut crc = crc32fast::Hasher::new();
    crc.update(&message);
    crc.update(stored);
    message.extend(crc.finalize().to_le_bytes());
    message.extend_from_slice(stored);
    message
}

/// Answers that are not a batch for this replica are refused with an error that
/// names the problem, and the replica (records, cursor, queue) is unchanged.
#[tokio::test(start_paused = true)]
async fn foreign_answers_are_refused_and_the_replica_is_unchanged() {
    let clock = ManualClock::at(T0);
    let db = database(EngineConfig::default(), 5, &clock);
    let server = server(&db);
    let device = "phone-1";
    let config = config(device, &clock, None);
    let real = Client::new(config.clone(), InProcess::new(server.clone())).expect("client");
    real.pull_all().await.expect("initial sync");
    db.update(
        TABLE,
        "r001",
        fields(&[("title", Value::str("changed"))]),
        &ClientId::from("admin"),
    )
    .expect("update");
    let base = real.replica();
    let batch = probe_pull(&server, base.cursor);
    let declared = batch.len() - wire::HEADER_LEN;
    let patched = |at: usize, byte: u8| {
        let mut message = batch.clone();
        message[at] = byte;
        message
    };
    let mut lying_length = batch.clone();
    lying_length[8..12].copy_from_slice(&u32::try_from(declared + 1).expect("small").to_le_bytes());
    let mut padded = batch.clone();
    padded.extend_from_slice(b"\0\0\0\0");
    let mut rng = fastrand::Rng::with_seed(7);
    let random: Vec<u8> = (0..512).map(|_| rng.u8(..)).collect();
    let http = b"HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/html\r\nContent-Length: 22\r\n\r\n<h1>Bad Gateway</h1>\r\n".to_vec();
    let push_result = wire::seal_value(MessageKind::PushResult, &PushResult::default(), false);

    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "an empty answer",
            Vec::new(),
            "shorter than the 16-byte header",
        ),
        ("random bytes", random, "not a MobileSyncDB message"),
        ("an HTTP response", http, "not a MobileSyncDB message"),
        (
            "a push result",
            push_result,
            "expected a PullBatch message, got PushResult",
        ),
        ("a future version", patched(4, 2), "format version 2"),
        (
            "an unknown kind",
            patched(5, 0x42),
            "unknown message kind 0x42",
        ),
        ("an unknown codec", patched(6, 9), "unknown codec 9"),
        ("unknown flags", patched(7, 1), "unknown flags 0x01"),
        ("a lying length", lying_length, "announces a"),
        ("a padded message", padded, "announces a"),
        (
            "a body that is not a batch",
            wire::seal(MessageKind::PullBatch, b"\x93\x01\x02\x03", false),
            "not a valid PullBatch message",
        ),
        (
            "a body that is not LZ4",
            sealed(MessageKind::PullBatch, 1, b"this is not an lz4 frame"),
            "LZ4 frame of the body is invalid",
        ),
    ];
    for (what, answer, says) in cases {
        let client =
            Client::from_replica(config.clone(), base.clone(), Canned(answer)).expect("client");
        let error = client.pull_once().await.expect_err(what);
        let wire = wire_error(&error);
        assert!(
            wire.to_string().contains(says),
            "{what}: `{wire}` should say `{says}`"
        );
        assert_eq!(stored(client.replica()), stored(base.clone()), "{what}");
        assert_eq!(client.stats().batches_applied, 0, "{what}");
        assert_eq!(client.stats().invalid_responses, 1, "{what}");
    }

    // A real batch, but one that starts at another cursor.
    let first_batch = probe_pull(&server, 0);
    let client =
        Client::from_replica(config.clone(), base.clone(), Canned(first_batch)).expect("client");
    let error = client.pull_once().await.expect_err("out of order");
    assert!(
        matches!(
            error,
            ClientError::Apply(ApplyError::OutOfOrder { expected, found: 0 }) if expected == base.cursor
        ),
        "{error:?}"
    );
    assert_eq!(stored(client.replica()), stored(base.clone()));

    // The server's own refusal is passed on with its code.
    let refusal = server.handle(b"GET / HTTP/1.1\r\n\r\n");
    let client =
        Client::from_replica(config.clone(), base.clone(), Canned(refusal)).expect("client");
    let error = client.pull_once().await.expect_err("refused");
    assert_eq!(error.code(), Some("bad_message"), "{error}");
    assert_eq!(stored(client.replica()), stored(base.clone()));

    // A batch where a push result is expected: the op stays queued, unchanged.
    let client =
        Client::from_replica(config.clone(), base.clone(), Canned(batch.clone())).expect("client");
    client
        .update(TABLE, "r000", fields(&[("done", Value::Bool(true))]))
        .await
        .expect("update");
    let queued = client.replica().queue.ops[0].op.clone();
    let error = client.push().await.expect_err("not a push result");
    assert!(
        matches!(
            wire_error(&error),
            WireError::UnexpectedKind {
                expected: MessageKind::PushResult,
                found: MessageKind::PullBatch
            }
        ),
        "{error:?}"
    );
    let replica = client.replica();
    assert_eq!(replica.queue.ops.len(), 1);
    assert_eq!(
        replica.queue.ops[0].op, queued,
        "the op is resent as it was"
    );
    assert!(
        replica
            .record(TABLE, "r000")
            .is_some_and(|record| record.pending)
    );
    // Over the real server the same op applies once.
    let client =
        Client::from_replica(config, replica, InProcess::new(server.clone())).expect("client");
    let report = client.sync().await.expect("sync");
    assert_eq!(report.push.applied, 1);
    assert_matches(&client.replica(), &server_view(&db), "after the real sync");
}

/// A replica with a pending local edit of `r001`, and the next batch the
/// server sends it after two server edits of `r001` and one of `r002`.
async fn pending_replica_and_batch() -> (Replica, PullBatch, Database) {
    let clock = ManualClock::at(T0);
    let db = database(EngineConfig::default(), 5, &clock);
    let server = server(&db);
    let config = config("phone-1", &clock, None);
    let client = Client::new(config, InProcess::new(server.clone())).expect("client");
    client.pull_all().await.expect("initial sync");
    client
        .update(TABLE, "r001", fields(&[("done", Value::Bool(true))]))
        .await
        .expect("a pending local edit");
    let admin = ClientId::from("admin");
    for (id, title) in [("r001", "changed"), ("r002", "changed"), ("r001", "again")] {
        db.update(TABLE, id, fields(&[("title", Value::str(title))]), &admin)
            .expect("update");
    }
    let replica = client.replica();
    let answer = probe_pull(&server, replica.cursor);
    // r001's copy is a saved document with the local edit on top: the server's
    // changes depend on a change inside it, found by loading it.
    let held = |table: &str, id: &str| replica.record(table, id).map(|record| record.bytes.clone());
    let batch = decode_pull_response_with(&answer, LIMIT, &held).expect("a batch");
    assert_eq!(batch.len(), 2);
    assert!(
        batch.tables[0]
            .records
            .iter()
            .all(|delta| !delta.unresolved)
    );
    (replica, batch, db)
}

/// A decoded batch whose row does not match its field list is refused whole
/// by `Replica::apply_batch`, and the replica is unchanged.
#[tokio::test(start_paused = true)]
async fn a_batch_with_a_malformed_row_is_refused_whole() {
    let (base, batch, _db) = pending_replica_and_batch().await;
    let mut short_row = batch.clone();
    short_row.tables[0].records[1].row.pop();
    let mut replica = base.clone();
    let error = replica
        .apply_batch(&short_row, &[])
        .expect_err("a short row");
    assert!(
        matches!(
            &error,
            ApplyError::RowLength {
                expected: 6,
                found: 5,
                ..
            }
        ),
        "{error:?}"
    );
    assert_eq!(stored(replica), stored(base.clone()));
    let mut replica = base;
    replica.apply_batch(&batch, &[]).expect("the intact batch");
    assert_eq!(replica.cursor, batch.next_cursor);
}

/// A record with local edits is merged by loading its document, so a payload
/// that is not automerge, or whose changes depend on changes the replica lacks,
/// must refuse the batch (`ApplyError::Merge`) and leave the replica unchanged.
#[tokio::test(start_paused = true)]
async fn a_payload_that_cannot_be_merged_into_local_edits_is_refused_whole() {
    let (base, batch, db) = pending_replica_and_batch().await;
    let at = batch.tables[0]
        .records
        .iter()
        .position(|delta| delta.id == "r001")
        .expect("r001 is in the batch");
    let mut garbage = batch.clone();
    garbage.tables[0].records[at].payload = b"not automerge at all".to_vec();
    // Only the second server edit of r001: its dependency (the first) is missing.
    let last_change = db
        .changes_since(base.cursor, usize::MAX)
        .expect("the log covers the cursor")
        .into_iter()
        .rfind(|change| change.record_id == "r001")
        .expect("a change of r001");
    let mut missing_dependency = batch.clone();
    missing_dependency.tables[0].records[at].payload = last_change.change;
    for (what, broken) in [
        ("garbage", garbage),
        ("missing dependency", missing_dependency),
    ] {
        let mut replica = base.clone();
        let outcome = replica.apply_batch(&broken, &[]);
        assert!(
            matches!(&outcome, Err(ApplyError::Merge { id, .. }) if id == "r001"),
            "{what}: {outcome:?}"
        );
        assert_eq!(stored(replica), stored(base.clone()), "{what}");
    }
}

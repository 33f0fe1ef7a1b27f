//! The reference client against an in-process server: initial and incremental
//! pulls, offline writes pushed and echoed, concurrent edits converging, damaged
//! and lost messages refused or retried without double effects, resumed pulls
//! that download nothing twice, and the simulated network's timing.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use mobilesyncdb::client::{
    Client, ClientConfig, ClientError, Fault, InProcess, LocalRow, NetworkConditions, Replica,
    RetryPolicy, SimulatedNetwork, WriteError,
};
use mobilesyncdb::config::EngineConfig;
use mobilesyncdb::crdt::{ActorId, ChangeHash, ClientId, Record, Value};
use mobilesyncdb::engine::{Database, ManualClock};
use mobilesyncdb::schema::{FieldSpec, FieldType, Fields, TableSchema};
use mobilesyncdb::sync::wire::MessageKind;
use mobilesyncdb::sync::{
    PullRequest, WireFilter, WireScope, WireValue, decode_pull_response, encode_request,
};

mod common;

use common::{client_config, fields, sync_server};

const T0: u64 = 1_750_000_000_000;

fn todos() -> TableSchema {
    TableSchema::new("todos", "id")
        .field(FieldSpec::new("title", FieldType::String).required())
        .field(FieldSpec::new("done", FieldType::Boolean))
        .field(FieldSpec::new("rank", FieldType::Integer))
}

fn todo(id: &str, title: &str) -> Fields {
    fields(&[("id", Value::str(id)), ("title", Value::str(title))])
}

/// A database with `count` todos, written by the server at `clock`'s time.
fn database(count: usize, clock: Arc<ManualClock>) -> Database {
    common::database(
        EngineConfig::default(),
        clock,
        todos(),
        (0..count).map(|n| todo(&format!("t{n:03}"), &format!("task {n}"))),
    )
}

fn config(device: &str, wall: Arc<ManualClock>) -> ClientConfig {
    client_config(device, "todos", wall)
}

fn client(db: &Database, config: ClientConfig) -> Client<InProcess> {
    Client::new(config, InProcess::new(sync_server(db))).expect("client config")
}

type Network = Arc<SimulatedNetwork<InProcess>>;

/// A database with `count` todos and phone-1's client over a simulated link
/// with `conditions`, its settings passed through `adjust`.
fn over_network(
    count: usize,
    conditions: NetworkConditions,
    adjust: impl FnOnce(ClientConfig) -> ClientConfig,
) -> (Database, Network, Client<Network>) {
    let clock = ManualClock::at(T0);
    let db = database(count, Arc::clone(&clock));
    let network = Arc::new(SimulatedNetwork::new(
        InProcess::new(sync_server(&db)),
        conditions,
    ));
    let client =
        Client::new(adjust(config("phone-1", clock)), Arc::clone(&network)).expect("client");
    (db, network, client)
}

/// The server's row as the client shows rows: set fields by name.
fn server_row(db: &Database, id: &str) -> Option<LocalRow> {
    common::server_row(db, &db.schema("todos").expect("table"), id)
}

/// An edit of `id` on the server, by `admin`.
fn server_update(db: &Database, id: &str, pairs: &[(&str, Value)]) {
    db.update("todos", id, fields(pairs), &ClientId::from("admin"))
        .expect("server edit");
}

fn server_heads(db: &Database, id: &str) -> BTreeSet<ChangeHash> {
    let bytes = db.record_bytes("todos", id).expect("read").expect("stored");
    Record::load(&bytes)
        .expect("load")
        .heads()
        .into_iter()
        .collect()
}

async fn client_heads<T: mobilesyncdb::client::Transport>(
    client: &Client<T>,
    id: &str,
) -> BTreeSet<ChangeHash> {
    let record = client
        .document("todos", id)
        .await
        .expect("load")
        .expect("held");
    record.heads().into_iter().collect()
}

fn assert_same_rows<T>(client: &Client<T>, db: &Database) {
    let ids: Vec<String> = client.rows("todos").into_iter().map(|(id, _)| id).collect();
    let live = db.stats().live_records;
    assert_eq!(ids.len(), live, "live records");
    for id in ids {
        assert_eq!(client.get("todos", &id), server_row(db, &id), "row of {id}");
    }
}

#[tokio::test]
async fn a_fresh_client_pulls_the_servers_rows_and_documents() {
    let clock = ManualClock::at(T0);
    let db = database(5, Arc::clone(&clock));
    let client = client(&db, config("phone-1", clock));
    let report = client.pull_all().await.expect("pull");
    assert_eq!(report.records, 5);
    assert_eq!(client.cursor(), db.latest_seq());
    assert_same_rows(&client, &db);
    for n in 0..5 {
        let id = format!("t{n:03}");
        assert_eq!(client_heads(&client, &id).await, server_heads(&db, &id));
        assert!(!client.is_pending("todos", &id));
    }
    let stats = client.stats();
    assert_eq!(stats.records_merged, 0, "pulling loads no document");
    assert_eq!(stats.acks, 1);
}

#[tokio::test]
async fn an_incremental_pull_brings_only_the_changed_records() {
    let clock = ManualClock::at(T0);
    let db = database(20, Arc::clone(&clock));
    let client = client(&db, config("phone-1", clock));
    client.pull_all().await.expect("initial pull");
    let before = client.stats().records_received;
    let admin = ClientId::from("admin");
    server_update(&db, "t003", &[("done", Value::Bool(true))]);
    server_update(&db, "t017", &[("title", Value::str("renamed"))]);
    db.delete("todos", "t010", &admin).expect("delete");
    let report = client.pull_all().await.expect("incremental pull");
    assert_eq!(report.records, 3);
    assert_eq!(client.stats().records_received - before, 3);
    assert_eq!(client.get("todos", "t010"), None);
    assert_same_rows(&client, &db);
    for id in ["t003", "t010", "t017"] {
        assert_eq!(client_heads(&client, id).await, server_heads(&db, id));
    }
}

/// A change's dependency travels as a 4-byte prefix found in the client's copy
/// of the record. A copy that lacks it (here: another record's bytes) cannot
/// complete the change: the record is fetched whole in the same `pull_all`, and
/// nothing wrong is stored.
#[tokio::test]
async fn a_record_whose_copy_lacks_a_dependency_is_fetched_whole() {
    let clock = ManualClock::at(T0);
    let db = database(3, Arc::clone(&clock));
    let phone = client(&db, config("phone-1", Arc::clone(&clock)));
    phone.pull_all().await.expect("initial pull");
    let mut replica = phone.replica();
    let records = &mut replica.tables.get_mut("todos").expect("table").records;
    let other = records["t002"].bytes.clone();
    records.get_mut("t001").expect("held").bytes = other;
    let phone = Client::from_replica(
        config("phone-1", clock),
        replica,
        InProcess::new(sync_server(&db)),
    )
    .expect("client");
    server_update(&db, "t001", &[("title", Value::str("renamed"))]);
    server_update(&db, "t000", &[("title", Value::str("also renamed"))]);
    let report = phone.pull_all().await.expect("incremental pull");
    // The batch with both changes, then the one fetching t001 whole.
    assert_eq!(report.batches, 2, "the fetch follows at once");
    assert_eq!(report.records, 3);
    assert!(phone.replica().fetch.is_empty());
    assert_same_rows(&phone, &db);
    for id in ["t000", "t001", "t002"] {
        assert_eq!(
            client_heads(&phone, id).await,
            server_heads(&db, id),
            "{id}"
        );
    }
}

#[tokio::test]
async fn a_pull_that_finds_nothing_costs_one_request_and_no_acknowledgement() {
    let clock = ManualClock::at(T0);
    let db = database(5, Arc::clone(&clock));
    let client = client(&db, config("phone-1", clock));
    client.pull_all().await.expect("initial pull");
    let before = client.stats();
    client.pull_all().await.expect("no-change pull");
    let after = client.stats();
    assert_eq!(after.requests - before.requests, 1);
    assert_eq!(after.acks, before.acks);
    // The pull itself acknowledged the cursor it was made with.
    let session = client
        .transport()
        .server()
        .session("phone-1")
        .expect("session");
    assert_eq!(session.acked_cursor, client.cursor());
    server_update(&db, "t003", &[("done", Value::Bool(true))]);
    client.pull_all().await.expect("incremental pull");
    let moved = client.stats();
    assert_eq!(
        moved.requests - after.requests,
        2,
        "a pull, then its acknowledgement"
    );
    assert_eq!(moved.acks, after.acks + 1);
}

#[tokio::test]
async fn offline_writes_reach_the_server_and_come_back_confirmed() {
    let clock = ManualClock::at(T0);
    let db = database(3, Arc::clone(&clock));
    let client = client(&db, config("phone-1", Arc::clone(&clock)));
    client.pull_all().await.expect("initial pull");
    // Offline: an update, an insert and a delete, applied locally at once.
    client
        .update("todos", "t000", fields(&[("done", Value::Bool(true))]))
        .await
        .expect("update");
    let id = client
        .insert("todos", todo("new", "written offline"))
        .await
        .expect("insert");
    assert_eq!(id, "new");
    client.delete("todos", "t002").await.expect("delete");
    assert_eq!(client.queued_ops(), 3);
    assert!(client.is_pending("todos", "t000"));
    assert_eq!(
        client
            .get("todos", "t000")
            .and_then(|row| row.get("done").cloned()),
        Some(Value::Bool(true))
    );
    assert_eq!(client.get("todos", "t002"), None);

    let report = client.sync().await.expect("sync");
    assert_eq!(report.push.applied, 3);
    assert!(report.push.rejected.is_empty());
    assert_eq!(client.queued_ops(), 0);
    assert_same_rows(&client, &db);
    for id in ["t000", "new", "t002"] {
        assert!(!client.is_pending("todos", id), "{id} is confirmed");
        assert_eq!(client_heads(&client, id).await, server_heads(&db, id));
    }
    assert_eq!(db.get("todos", "t002").expect("read"), None);
}

/// The server and the phone (offline) edit one title; the later stamp wins on
/// both sides, whichever side made it.
async fn concurrent_title_edits(server_later: bool) {
    let server_clock = ManualClock::at(T0);
    let phone_clock = ManualClock::at(T0);
    let db = database(1, Arc::clone(&server_clock));
    let client = client(&db, config("phone-1", Arc::clone(&phone_clock)));
    client.pull_all().await.expect("initial pull");
    let (server_ms, phone_ms) = if server_later {
        (2_000, 1_000)
    } else {
        (1_000, 2_000)
    };
    server_clock.advance(server_ms);
    phone_clock.advance(phone_ms);
    server_update(&db, "t000", &[("title", Value::str("server"))]);
    client
        .update("todos", "t000", fields(&[("title", Value::str("phone"))]))
        .await
        .expect("phone edit");
    // Pulling before pushing merges the server's edit into the pending record,
    // which keeps the local edit and shows the later of the two already.
    client.pull_all().await.expect("pull with pending edits");
    assert_eq!(client.stats().records_merged, 1);
    assert!(client.is_pending("todos", "t000"));
    let title = |row: Option<LocalRow>| row.and_then(|row| row.get("title").cloned());
    let winner = Value::str(if server_later { "server" } else { "phone" });
    assert_eq!(title(client.get("todos", "t000")), Some(winner.clone()));

    let report = client.sync().await.expect("sync");
    assert_eq!(report.push.applied, 1);
    assert_eq!(title(server_row(&db, "t000")), Some(winner.clone()));
    assert_eq!(title(client.get("todos", "t000")), Some(winner));
    assert_same_rows(&client, &db);
    assert!(!client.is_pending("todos", "t000"));
    let heads = server_heads(&db, "t000");
    assert_eq!(client_heads(&client, "t000").await, heads);
    assert_eq!(
        heads.len(),
        2,
        "both concurrent edits are kept, as two branches"
    );
}

#[tokio::test]
async fn a_concurrent_edit_of_one_field_converges_to_the_later_phone_write() {
    concurrent_title_edits(false).await;
}

#[tokio::test]
async fn a_concurrent_edit_of_one_field_converges_to_the_later_server_write() {
    concurrent_title_edits(true).await;
}

#[tokio::test(start_paused = true)]
async fn a_local_write_during_a_pull_is_kept() {
    let (db, _network, client) = over_network(3, NetworkConditions::lte(), |config| config);
    client.pull_all().await.expect("initial pull");
    server_update(&db, "t001", &[("rank", Value::Int(9))]);
    let (pulled, written) = tokio::join!(client.pull_all(), async {
        // Lands while the pull's request is on the way.
        tokio::time::sleep(Duration::from_millis(10)).await;
        client
            .update("todos", "t001", fields(&[("done", Value::Bool(true))]))
            .await
    });
    pulled.expect("pull");
    written.expect("write");
    let row = client.get("todos", "t001").expect("live");
    assert_eq!(row.get("rank"), Some(&Value::Int(9)), "the server's edit");
    assert_eq!(row.get("done"), Some(&Value::Bool(true)), "the local edit");
    client.sync().await.expect("sync");
    assert_same_rows(&client, &db);
    assert_eq!(
        client_heads(&client, "t001").await,
        server_heads(&db, "t001")
    );
}

#[tokio::test]
async fn a_batch_stored_twice_changes_nothing() {
    let clock = ManualClock::at(T0);
    let db = database(4, clock);
    let server = sync_server(&db);
    let request = PullRequest {
        device: "phone-1".into(),
        cursor: 0,
        tables: vec![WireScope::all("todos")],
        ..PullRequest::default()
    };
    let answer = server.handle(&encode_request(MessageKind::PullRequest, &request));
    let batch = decode_pull_response(&answer, 64 << 20).expect("batch");
    let mut replica = Replica::new(
        "phone-1",
        ActorId::from(b"phone-1-actor-00".to_vec()),
        vec![WireScope::all("todos")],
    );
    replica.apply_batch(&batch, &[]).expect("stored");
    let (tables, cursor) = (replica.tables.clone(), replica.cursor);
    let again = replica.apply_batch(&batch, &[]).expect("stored again");
    assert_eq!(again.skipped, 4);
    assert_eq!(replica.tables, tables);
    assert_eq!(replica.cursor, cursor);
}

fn no_retries(mut config: ClientConfig) -> ClientConfig {
    config.retry = RetryPolicy::never();
    config
}

#[tokio::test(start_paused = true)]
async fn a_damaged_answer_is_refused_and_the_replica_is_unchanged() {
    let (db, network, client) = over_network(10, NetworkConditions::ideal(), no_retries);
    client.pull_all().await.expect("initial pull");
    server_update(&db, "t001", &[("rank", Value::Int(5))]);
    let before = client.replica();
    for fault in [
        Fault::CorruptResponse { at: 40 },
        Fault::TruncateResponse { keep: 30 },
        Fault::TruncateResponse { keep: 3 },
    ] {
        network.script([fault.clone()]);
        let error = client.pull_once().await.expect_err("refused");
        assert!(
            matches!(error, ClientError::InvalidResponse(_)),
            "{fault:?}: {error}"
        );
        assert_eq!(client.cursor(), before.cursor);
        assert_eq!(client.replica().tables, before.tables);
    }
    // A cut request reaches the server, which refuses it.
    network.script([Fault::TruncateRequest { keep: 20 }]);
    let error = client.pull_once().await.expect_err("refused by the server");
    assert_eq!(error.code(), Some("bad_message"));
    assert!(error.is_retryable());
    assert_eq!(client.replica().tables, before.tables);
    // Once the link is clean the update arrives.
    client.pull_all().await.expect("pull");
    assert_same_rows(&client, &db);
    assert_eq!(client.stats().invalid_responses, 3);
}

#[tokio::test(start_paused = true)]
async fn a_retried_pull_recovers_from_damaged_answers() {
    let (db, network, client) = over_network(10, NetworkConditions::ideal(), |config| config);
    network.script([Fault::CorruptResponse { at: 100 }, Fault::DropRequest]);
    client.pull_all().await.expect("pull after two retries");
    assert_eq!(client.stats().retries, 2);
    assert_same_rows(&client, &db);
}

#[tokio::test(start_paused = true)]
async fn a_push_whose_answer_was_lost_is_not_applied_twice() {
    let (db, network, client) = over_network(2, NetworkConditions::ideal(), no_retries);
    client.pull_all().await.expect("initial pull");
    client
        .update("todos", "t000", fields(&[("rank", Value::Int(1))]))
        .await
        .expect("update");
    client
        .insert("todos", todo("n1", "new"))
        .await
        .expect("insert");
    network.script([Fault::LoseResponse]);
    let error = client.push().await.expect_err("the answer was lost");
    assert!(matches!(error, ClientError::Transport(_)));
    assert_eq!(client.queued_ops(), 2, "unanswered ops stay queued");
    // The server applied the push.
    let latest = db.latest_seq();
    assert_eq!(
        server_row(&db, "t000").and_then(|row| row.get("rank").cloned()),
        Some(Value::Int(1))
    );
    assert!(server_row(&db, "n1").is_some());
    // The retry carries the same op ids: answered from memory, applied once.
    let report = client.push().await.expect("retry");
    assert_eq!((report.applied, report.duplicates), (0, 2));
    assert_eq!(db.latest_seq(), latest, "nothing applied twice");
    client.pull_all().await.expect("pull");
    assert!(!client.is_pending("todos", "t000"));
    assert!(!client.is_pending("todos", "n1"));
    assert_same_rows(&client, &db);
    assert_eq!(client_heads(&client, "n1").await, server_heads(&db, "n1"));
}

#[tokio::test(start_paused = true)]
async fn an_echo_pulled_before_the_push_was_answered_is_confirmed_later() {
    let (db, network, client) = over_network(2, NetworkConditions::ideal(), no_retries);
    client.pull_all().await.expect("initial pull");
    client
        .update("todos", "t001", fields(&[("title", Value::str("mine"))]))
        .await
        .expect("update");
    network.script([Fault::LoseResponse]);
    client.push().await.expect_err("the answer was lost");
    // The pull brings the applied change while its op is still queued.
    client.pull_all().await.expect("pull");
    assert!(client.is_pending("todos", "t001"));
    let received = client.stats().records_received;
    let report = client.sync().await.expect("sync");
    assert_eq!(report.push.duplicates, 1);
    assert_eq!(
        report.pull.records, 1,
        "the record fetched whole to confirm it"
    );
    assert_eq!(client.stats().records_received, received + 1);
    assert!(!client.is_pending("todos", "t001"));
    assert!(client.replica().confirm.is_empty());
    assert_same_rows(&client, &db);
}

#[tokio::test(start_paused = true)]
async fn a_lost_push_answer_is_retried_automatically() {
    let (db, network, client) = over_network(1, NetworkConditions::ideal(), |config| config);
    client.pull_all().await.expect("initial pull");
    client
        .update("todos", "t000", fields(&[("title", Value::str("once"))]))
        .await
        .expect("update");
    let latest = db.latest_seq();
    network.script([Fault::LoseResponse]);
    let report = client.sync().await.expect("sync");
    assert_eq!(report.push.duplicates, 1);
    assert_eq!(db.latest_seq(), latest + 1, "one change for one edit");
    assert_eq!(client.stats().retries, 1);
    assert_same_rows(&client, &db);
}

#[tokio::test(start_paused = true)]
async fn an_interrupted_pull_resumes_without_downloading_stored_batches_again() {
    let (db, network, client) = over_network(50, NetworkConditions::lte(), |config| {
        let mut config = no_retries(config);
        config.batch_records = Some(10);
        config
    });
    network.script([
        Fault::None,
        Fault::None,
        Fault::Disconnect(Duration::from_secs(30)),
    ]);
    let error = client.pull_all().await.expect_err("the link went down");
    assert!(matches!(error, ClientError::Transport(_)));
    let stored = client.stats().records_received;
    assert_eq!(stored, 20);
    assert_eq!(client.rows("todos").len(), 20);
    let cursor = client.cursor();
    tokio::time::sleep(Duration::from_secs(31)).await;
    let report = client.pull_all().await.expect("resumed");
    assert_eq!(report.records, 30, "only what was not stored");
    assert!(client.cursor() > cursor);
    assert_eq!(client.stats().records_received, 50);
    assert_eq!(client.stats().records_skipped, 0);
    assert_same_rows(&client, &db);
}

#[tokio::test(start_paused = true)]
async fn an_exchange_costs_latency_plus_bytes_over_bandwidth() {
    let conditions = NetworkConditions {
        latency_up: Duration::from_millis(80),
        latency_down: Duration::from_millis(120),
        bandwidth_up: Some(10_000),
        bandwidth_down: Some(50_000),
    };
    let (_db, network, client) = over_network(30, conditions.clone(), |config| config);
    let started = tokio::time::Instant::now();
    client.pull_once().await.expect("pull");
    let elapsed = started.elapsed();
    let stats = network.stats();
    assert_eq!(stats.exchanges, 1);
    assert_eq!(stats.bytes_up, client.stats().bytes_sent);
    assert_eq!(stats.bytes_down, client.stats().bytes_received);
    let expected = conditions.up_time(stats.bytes_up as usize)
        + conditions.down_time(stats.bytes_down as usize);
    assert!(
        stats.bytes_down > 1_000,
        "a real batch: {} bytes",
        stats.bytes_down
    );
    let difference = elapsed.abs_diff(expected);
    assert!(
        difference < Duration::from_millis(2),
        "{elapsed:?} vs {expected:?}"
    );
}

#[tokio::test]
async fn a_full_queue_refuses_writes_until_a_push_drains_it() {
    let clock = ManualClock::at(T0);
    let db = database(0, Arc::clone(&clock));
    let mut config = config("phone-1", clock);
    config.max_queue = 2;
    let client = client(&db, config);
    client.insert("todos", todo("a", "a")).await.expect("first");
    client
        .insert("todos", todo("b", "b"))
        .await
        .expect("second");
    let error = client
        .insert("todos", todo("c", "c"))
        .await
        .expect_err("full");
    assert!(matches!(
        error,
        ClientError::Write(WriteError::QueueFull { limit: 2 })
    ));
    assert_eq!(
        client.get("todos", "c"),
        None,
        "a refused write leaves nothing"
    );
    // Edits of a record whose op is still unsent join that op.
    client
        .update("todos", "a", fields(&[("rank", Value::Int(3))]))
        .await
        .expect("gathered into the queued op");
    client.push().await.expect("push");
    client
        .insert("todos", todo("c", "c"))
        .await
        .expect("room again");
}

#[tokio::test]
async fn local_writes_are_checked_against_the_tables_fields() {
    let clock = ManualClock::at(T0);
    let db = database(1, Arc::clone(&clock));
    let client = client(&db, config("phone-1", clock));
    client.pull_all().await.expect("pull");
    let refused = [
        client.insert("notes", todo("x", "x")).await,
        client
            .insert("todos", fields(&[("title", Value::str("no id"))]))
            .await,
        client.insert("todos", todo("t000", "exists")).await,
        client
            .insert(
                "todos",
                fields(&[("id", Value::str("x")), ("colour", Value::str("red"))]),
            )
            .await,
        client
            .insert(
                "todos",
                fields(&[("id", Value::str("x")), ("rank", Value::str("high"))]),
            )
            .await,
    ];
    for outcome in refused {
        assert!(matches!(outcome, Err(ClientError::Write(_))), "{outcome:?}");
    }
    let missing = client.update("todos", "nope", todo("nope", "x")).await;
    assert!(matches!(
        missing,
        Err(ClientError::Write(WriteError::UnknownRecord { .. }))
    ));
    let rekey = client
        .update("todos", "t000", fields(&[("id", Value::str("other"))]))
        .await;
    assert!(matches!(
        rekey,
        Err(ClientError::Write(WriteError::PrimaryKeyChange { .. }))
    ));
    assert_eq!(client.queued_ops(), 0);
}

#[tokio::test]
async fn a_rejected_edit_is_reported_and_the_servers_copy_restored() {
    let server_clock = ManualClock::at(T0);
    let phone_clock = ManualClock::at(T0);
    let db = database(2, Arc::clone(&server_clock));
    let client = client(&db, config("phone-1", Arc::clone(&phone_clock)));
    client.pull_all().await.expect("pull");
    // The phone's clock runs ten minutes fast: the server refuses its stamps.
    phone_clock.advance(600_000);
    client
        .update(
            "todos",
            "t000",
            fields(&[("title", Value::str("from the future"))]),
        )
        .await
        .expect("local update");
    client
        .insert("todos", todo("fresh", "also from the future"))
        .await
        .expect("insert");
    let report = client.push().await.expect("push");
    // Until the server's copy is back, the refused record takes no edits.
    let blocked = client
        .update("todos", "t000", fields(&[("done", Value::Bool(true))]))
        .await;
    assert!(matches!(
        blocked,
        Err(ClientError::Write(WriteError::AwaitingServerCopy { .. }))
    ));
    client.pull_all().await.expect("pull");
    let codes: Vec<&str> = report.rejected.iter().map(|op| op.code.as_str()).collect();
    assert_eq!(codes, ["clock_skew", "clock_skew"]);
    assert_eq!(client.queued_ops(), 0);
    assert!(!client.is_pending("todos", "t000"));
    assert_eq!(
        client.get("todos", "fresh"),
        None,
        "the server never had it"
    );
    assert_same_rows(&client, &db);
    assert_eq!(
        client_heads(&client, "t000").await,
        server_heads(&db, "t000")
    );
    assert!(client.replica().refused.is_empty());
    client
        .update("todos", "t000", fields(&[("done", Value::Bool(true))]))
        .await
        .expect("editable again once the server's copy is back");
}

#[tokio::test]
async fn a_record_entering_a_filtered_scope_is_fetched_whole() {
    let clock = ManualClock::at(T0);
    let db = database(0, Arc::clone(&clock));
    let admin = ClientId::from("admin");
    // The title stands for an owner here.
    db.insert("todos", todo("mine", "ann"), &admin)
        .expect("insert");
    db.insert("todos", todo("theirs", "bob"), &admin)
        .expect("insert");
    let scope = WireScope {
        table: "todos".into(),
        filters: vec![WireFilter {
            field: "title".into(),
            op: "eq".into(),
            value: WireValue::Str("ann".into()),
        }],
    };
    let mut config = ClientConfig::new("phone-1", vec![scope]);
    config.wall = clock;
    let client = client(&db, config);
    client.pull_all().await.expect("pull");
    assert_eq!(client.rows("todos").len(), 1);
    // Handed over to ann: the server sends only the change, which the client
    // cannot apply without the record, so it asks for the record whole.
    server_update(&db, "theirs", &[("title", Value::str("ann"))]);
    let report = client.pull_all().await.expect("pull");
    assert_eq!(report.batches, 2, "one batch, then one to fetch the record");
    assert_eq!(client.get("todos", "theirs"), server_row(&db, "theirs"));
    assert_eq!(
        client_heads(&client, "theirs").await,
        server_heads(&db, "theirs")
    );
    assert!(client.replica().fetch.is_empty());
    // Handed away again: the record leaves the replica.
    server_update(&db, "mine", &[("title", Value::str("bob"))]);
    client.pull_all().await.expect("pull");
    assert_eq!(client.replica().record("todos", "mine"), None);
}

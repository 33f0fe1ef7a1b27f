//! The sync protocol as a client sees it on the wire: batches bounded and resumable,
//! cursors acknowledged, outdated cursors caught up, pushes idempotent, bad
//! messages refused with nothing applied.

use std::collections::BTreeMap;

use mobilesyncdb::config::{EngineConfig, RetentionPolicy};
use mobilesyncdb::crdt::{ActorId, ClientId, Edit, Record, Stamp, StampMeta, Value};
use mobilesyncdb::engine::Database;
use mobilesyncdb::schema::{FieldSpec, FieldType, Fields, TableSchema};
use mobilesyncdb::sync::wire::MessageKind;
use mobilesyncdb::sync::{
    AckRequest, AckResult, DeltaState, OpStatus, PullBatch, PullRequest, PushOp, PushRequest,
    PushResult, RecordRef, ResponseError, SyncServer, WireFilter, WireScope, WireValue,
    decode_pull_response, decode_pull_response_with, decode_response, encode_request,
};

mod common;

use common::{fields, sync_server};

const LIMIT: usize = 64 << 20;

fn todos() -> TableSchema {
    TableSchema::new("todos", "id")
        .field(FieldSpec::new("title", FieldType::String).required())
        .field(FieldSpec::new("done", FieldType::Boolean).with_default(serde_json::json!(false)))
        .field(FieldSpec::new("owner", FieldType::String))
        .field(FieldSpec::new("due", FieldType::Timestamp))
}

fn todo(id: &str, title: &str, owner: &str) -> Fields {
    fields(&[
        ("id", Value::str(id)),
        ("title", Value::str(title)),
        ("owner", Value::str(owner)),
        ("due", Value::Timestamp(1_700_000_000_000)),
    ])
}

/// A web client's edit of one field of `id`.
fn web_edit(db: &Database, id: &str, field: &str, value: Value) {
    db.update(
        "todos",
        id,
        fields(&[(field, value)]),
        &ClientId::from("web"),
    )
    .expect("edit");
}

fn server_with(config: EngineConfig, count: usize) -> SyncServer {
    let db = Database::new(config).expect("config");
    db.create_table(todos()).expect("table");
    let origin = ClientId::from("seed");
    for n in 0..count {
        let owner = if n % 2 == 0 { "ann" } else { "bob" };
        db.insert(
            "todos",
            todo(&format!("t{n:04}"), &format!("task {n}"), owner),
            &origin,
        )
        .expect("insert");
    }
    sync_server(&db)
}

fn server(count: usize) -> SyncServer {
    server_with(EngineConfig::default(), count)
}

fn pull_request(cursor: u64) -> PullRequest {
    PullRequest {
        device: "phone-1".into(),
        cursor,
        tables: vec![WireScope::all("todos")],
        ..PullRequest::default()
    }
}

fn pull(server: &SyncServer, request: &PullRequest) -> PullBatch {
    let answer = server.handle(&encode_request(MessageKind::PullRequest, request));
    decode_pull_response(&answer, LIMIT).expect("a batch")
}

/// A pull by a client holding `bytes` (saved bytes by record id): dependencies
/// sent by prefix are found there.
fn pull_holding(
    server: &SyncServer,
    request: &PullRequest,
    bytes: &BTreeMap<String, Vec<u8>>,
) -> PullBatch {
    let answer = server.handle(&encode_request(MessageKind::PullRequest, request));
    let held = |_: &str, id: &str| bytes.get(id).cloned();
    let batch = decode_pull_response_with(&answer, LIMIT, &held).expect("a batch");
    for table in &batch.tables {
        assert!(table.records.iter().all(|record| !record.unresolved));
    }
    batch
}

fn push(server: &SyncServer, ops: Vec<PushOp>) -> PushResult {
    let request = PushRequest {
        device: "phone-1".into(),
        ops,
        ..PushRequest::default()
    };
    let answer = server.handle(&encode_request(MessageKind::PushRequest, &request));
    decode_response(&answer, MessageKind::PushResult, LIMIT).expect("a push result")
}

fn ids(batch: &PullBatch) -> Vec<String> {
    batch
        .tables
        .iter()
        .flat_map(|table| table.records.iter().map(|record| record.id.clone()))
        .collect()
}

/// Pulls every batch from `cursor`, returning the batches.
fn pull_all(server: &SyncServer, mut request: PullRequest) -> Vec<PullBatch> {
    let mut batches = Vec::new();
    loop {
        let batch = pull(server, &request);
        request.cursor = batch.next_cursor;
        let more = batch.has_more;
        batches.push(batch);
        if !more {
            return batches;
        }
    }
}

#[test]
fn an_initial_sync_comes_in_bounded_batches_that_cover_every_record_once() {
    let server = server(250);
    let request = PullRequest {
        max_records: Some(100),
        ..pull_request(0)
    };
    let batches = pull_all(&server, request);
    let sizes: Vec<usize> = batches.iter().map(PullBatch::len).collect();
    assert_eq!(sizes, [100, 100, 50]);
    let mut all: Vec<String> = batches.iter().flat_map(ids).collect();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 250);
    let first = &batches[0].tables[0].records[0];
    assert!(first.whole, "a record new to the client comes whole");
    assert!(
        first.row.iter().all(Option::is_some),
        "with its complete row"
    );
    assert_eq!(batches.last().map(|batch| batch.next_cursor), Some(250));
}

#[test]
fn a_byte_bound_cuts_batches_but_always_makes_progress() {
    let server = server(50);
    let request = PullRequest {
        max_bytes: Some(1),
        ..pull_request(0)
    };
    let batches = pull_all(&server, request);
    assert_eq!(batches.len(), 50);
    assert!(batches.iter().all(|batch| batch.len() == 1));
}

#[test]
fn an_incremental_pull_sends_only_changed_records_and_only_their_changed_fields() {
    let server = server(100);
    let cursor = pull(&server, &pull_request(0)).next_cursor;
    let db = server.database();
    let origin = ClientId::from("web");
    for n in [3, 50, 77] {
        db.patch(
            "todos",
            &format!("t{n:04}"),
            vec![Edit::set("done", true)],
            &origin,
        )
        .expect("patch");
    }
    let batch = pull(&server, &pull_request(cursor));
    assert_eq!(ids(&batch), ["t0003", "t0050", "t0077"]);
    let table = &batch.tables[0];
    let done = table
        .fields
        .iter()
        .position(|(name, _)| name == "done")
        .expect("done");
    for record in &table.records {
        assert!(!record.whole, "changes to append, not the document");
        assert_eq!(record.row[done], Some(Value::Bool(true)));
        let sent = record.row.iter().filter(|value| value.is_some()).count();
        assert_eq!(sent, 1, "only the changed field travels");
    }
    assert!(!batch.has_more);
    assert_eq!(batch.next_cursor, db.latest_seq());
}

#[test]
fn appending_the_payload_to_the_clients_bytes_gives_the_servers_document() {
    let server = server(5);
    let first = pull(&server, &pull_request(0));
    let mut bytes: BTreeMap<String, Vec<u8>> = first.tables[0]
        .records
        .iter()
        .map(|record| (record.id.clone(), record.payload.clone()))
        .collect();
    let db = server.database();
    db.patch(
        "todos",
        "t0002",
        vec![Edit::set("title", "renamed")],
        &ClientId::from("web"),
    )
    .expect("patch");
    let second = pull_holding(&server, &pull_request(first.next_cursor), &bytes);
    for record in &second.tables[0].records {
        bytes
            .get_mut(&record.id)
            .expect("held")
            .extend_from_slice(&record.payload);
    }
    let client = Record::load(&bytes["t0002"]).expect("load");
    let stored = Record::load(&db.record_bytes("todos", "t0002").unwrap().unwrap()).unwrap();
    assert_eq!(client.heads(), stored.heads());
}

#[test]
fn re_pulling_the_same_cursor_gives_the_same_batch() {
    let server = server(20);
    let once = pull(&server, &pull_request(0));
    let twice = pull(&server, &pull_request(0));
    assert_eq!(once, twice);
}

#[test]
fn a_cursor_older_than_the_change_log_gets_a_compacted_catch_up_with_deletions() {
    let config = EngineConfig {
        retention: RetentionPolicy {
            max_entries: 10,
            min_entries: 5,
            ..RetentionPolicy::default()
        },
        ..EngineConfig::default()
    };
    let server = server_with(config, 40);
    let db = server.database();
    let origin = ClientId::from("web");
    let cursor = 5;
    for round in 0..12 {
        db.patch(
            "todos",
            "t0001",
            vec![Edit::set("title", format!("v{round}"))],
            &origin,
        )
        .expect("patch");
    }
    db.delete("todos", "t0002", &origin).expect("delete");
    assert!(
        db.horizon() > cursor,
        "the log no longer reaches the cursor"
    );
    let batches = pull_all(&server, pull_request(cursor));
    assert!(batches[0].catch_up);
    let records: Vec<_> = batches
        .iter()
        .flat_map(|batch| batch.tables.iter().flat_map(|table| table.records.clone()))
        .collect();
    let deleted: Vec<_> = records
        .iter()
        .filter(|record| record.state == DeltaState::Deleted)
        .map(|record| record.id.as_str())
        .collect();
    assert_eq!(deleted, ["t0002"]);
    let renamed = records
        .iter()
        .find(|record| record.id == "t0001")
        .expect("t0001");
    assert!(renamed.whole, "a compacted record comes as its document");
    let title = Record::load(&renamed.payload).expect("load");
    assert_eq!(title.heads(), db.heads("todos", "t0001").unwrap().unwrap());
    // Records that did not change after the cursor are not sent again.
    assert!(records.iter().all(|record| record.seq > cursor));
}

#[test]
fn a_filtered_scope_sends_matching_rows_and_tells_when_a_row_leaves() {
    let server = server(10);
    let mut request = pull_request(0);
    request.tables[0].filters.push(WireFilter {
        field: "owner".into(),
        op: "eq".into(),
        value: WireValue::Str("ann".into()),
    });
    let first = pull(&server, &request);
    assert_eq!(ids(&first), ["t0000", "t0002", "t0004", "t0006", "t0008"]);
    let db = server.database();
    web_edit(db, "t0002", "owner", Value::str("bob"));
    web_edit(db, "t0003", "owner", Value::str("ann"));
    request.cursor = first.next_cursor;
    let second = pull(&server, &request);
    let states: Vec<_> = second.tables[0]
        .records
        .iter()
        .map(|record| (record.id.as_str(), record.state, record.whole))
        .collect();
    assert_eq!(
        states,
        [
            ("t0002", DeltaState::Left, false),
            ("t0003", DeltaState::Live, false)
        ]
    );
    // t0003 entered the scope late: the client asks for it whole.
    request.cursor = second.next_cursor;
    request.fetch = vec![RecordRef {
        table: "todos".into(),
        id: "t0003".into(),
    }];
    let third = pull(&server, &request);
    let fetched = &third.tables[0].records[0];
    assert_eq!(fetched.id, "t0003");
    assert!(fetched.whole && fetched.row.iter().all(Option::is_some));
}

#[test]
fn corrupted_truncated_and_foreign_requests_are_refused_and_change_nothing() {
    let server = server(3);
    let op = PushOp {
        op: "op-1".into(),
        table: "todos".into(),
        id: "t0000".into(),
        set: [("title".to_owned(), WireValue::Str("changed".into()))].into(),
        ..PushOp::default()
    };
    let request = encode_request(
        MessageKind::PushRequest,
        &PushRequest {
            device: "phone-1".into(),
            ops: vec![op],
            ..PushRequest::default()
        },
    );
    let before = server.database().latest_seq();
    let mut refusals = Vec::new();
    for len in [0, 3, 15, 16, request.len() - 1] {
        refusals.push(server.handle(&request[..len]));
    }
    for at in [0, 4, 5, 6, 9, 13, 20, request.len() - 1] {
        let mut corrupted = request.clone();
        corrupted[at] ^= 0x40;
        refusals.push(server.handle(&corrupted));
    }
    refusals.push(server.handle(b"{\"device\":\"phone-1\",\"ops\":[]}"));
    for answer in refusals {
        let refused = decode_response::<PushResult>(&answer, MessageKind::PushResult, LIMIT);
        assert!(
            matches!(refused, Err(ResponseError::Refused(_))),
            "{refused:?}"
        );
    }
    assert_eq!(
        server.database().latest_seq(),
        before,
        "nothing was applied"
    );
}

#[test]
fn a_corrupted_batch_is_refused_by_the_client_decoder() {
    let server = server(20);
    let answer = server.handle(&encode_request(MessageKind::PullRequest, &pull_request(0)));
    for at in (0..answer.len()).step_by(7) {
        let mut corrupted = answer.clone();
        corrupted[at] ^= 0x10;
        assert!(
            decode_pull_response(&corrupted, LIMIT).is_err(),
            "byte {at}"
        );
    }
    for len in (0..answer.len()).step_by(11) {
        assert!(
            decode_pull_response(&answer[..len], LIMIT).is_err(),
            "length {len}"
        );
    }
}

#[test]
fn a_retried_patch_is_answered_from_memory_and_applied_once() {
    let server = server(2);
    let op = PushOp {
        op: "op-7".into(),
        table: "todos".into(),
        id: "t0001".into(),
        set: [("title".to_owned(), WireValue::Str("from phone".into()))].into(),
        ..PushOp::default()
    };
    let first = push(&server, vec![op.clone()]);
    assert_eq!(first.results[0].status, OpStatus::Applied);
    let latest = server.database().latest_seq();
    let retry = push(&server, vec![op]);
    assert_eq!(retry.results[0].status, OpStatus::Duplicate);
    assert_eq!(retry.results[0].seqs, first.results[0].seqs);
    assert_eq!(server.database().latest_seq(), latest);
}

#[test]
fn pushed_automerge_changes_are_idempotent_by_hash_and_concurrency_is_reported() {
    let server = server(1);
    let db = server.database();
    let mut phone = Record::load(&db.record_bytes("todos", "t0000").unwrap().unwrap()).unwrap();
    phone.set_actor(ActorId::random());
    let now = db.stats().latest_seq;
    assert!(now > 0);
    let change = phone
        .write(
            &[Edit::set("title", "phone title")],
            &StampMeta::new(Stamp::at(1_000), "phone-1"),
        )
        .expect("write")
        .expect("a change");
    db.patch(
        "todos",
        "t0000",
        vec![Edit::set("title", "web title")],
        &ClientId::from("web"),
    )
    .expect("concurrent web edit");
    let op = PushOp {
        op: String::new(),
        table: "todos".into(),
        id: "t0000".into(),
        changes: vec![change.raw_bytes().to_vec().into()],
        ..PushOp::default()
    };
    let first = push(&server, vec![op.clone()]);
    assert_eq!(first.results[0].status, OpStatus::Applied);
    assert!(first.results[0].concurrent);
    assert_eq!(first.results[0].conflicts, ["title"]);
    let again = push(&server, vec![op]);
    assert_eq!(again.results[0].status, OpStatus::Duplicate);
}

#[test]
fn a_patch_made_on_an_older_version_is_a_concurrent_edit() {
    let server = server(1);
    let db = server.database();
    let base = db.heads("todos", "t0000").unwrap().unwrap();
    db.patch(
        "todos",
        "t0000",
        vec![Edit::set("title", "web")],
        &ClientId::from("web"),
    )
    .expect("web edit");
    let op = PushOp {
        op: "p1".into(),
        table: "todos".into(),
        id: "t0000".into(),
        set: [("title".to_owned(), WireValue::Str("phone".into()))].into(),
        base: base.iter().map(|head| head.0.to_vec().into()).collect(),
        ..PushOp::default()
    };
    let result = push(&server, vec![op]);
    assert_eq!(result.results[0].status, OpStatus::Applied);
    assert!(result.results[0].concurrent);
    assert_eq!(db.conflicts("todos", "t0000").unwrap().len(), 1);
}

#[test]
fn each_rejected_operation_comes_back_with_its_reason_and_the_others_apply() {
    let server = server(1);
    let ops = vec![
        PushOp {
            op: "bad-field".into(),
            table: "todos".into(),
            id: "t0000".into(),
            set: [("colour".to_owned(), WireValue::Str("red".into()))].into(),
            ..PushOp::default()
        },
        PushOp {
            op: "bad-type".into(),
            table: "todos".into(),
            id: "t0000".into(),
            set: [("done".to_owned(), WireValue::Str("yes".into()))].into(),
            ..PushOp::default()
        },
        PushOp {
            op: "missing".into(),
            table: "todos".into(),
            id: "nope".into(),
            delete: true,
            ..PushOp::default()
        },
        PushOp {
            op: "garbage".into(),
            table: "todos".into(),
            id: "t0000".into(),
            changes: vec![vec![1, 2, 3].into()],
            ..PushOp::default()
        },
        PushOp {
            op: "good".into(),
            table: "todos".into(),
            id: "t0000".into(),
            set: [("done".to_owned(), WireValue::Bool(true))].into(),
            ..PushOp::default()
        },
    ];
    let result = push(&server, ops);
    let codes: Vec<_> = result
        .results
        .iter()
        .map(|result| (result.op.as_str(), result.status, result.code.as_deref()))
        .collect();
    assert_eq!(
        codes,
        [
            ("bad-field", OpStatus::Rejected, Some("unknown_field")),
            ("bad-type", OpStatus::Rejected, Some("type_mismatch")),
            ("missing", OpStatus::Rejected, Some("not_found")),
            ("garbage", OpStatus::Rejected, Some("invalid_change")),
            ("good", OpStatus::Applied, None),
        ]
    );
    assert!(
        result.results[..4]
            .iter()
            .all(|result| result.reason.is_some())
    );
}

#[test]
fn acknowledgements_move_the_sessions_cursor_and_check_the_batch() {
    let server = server(5);
    let batch = pull(&server, &pull_request(0));
    let ack = |cursor, checksum| {
        let request = AckRequest {
            device: "phone-1".into(),
            cursor,
            checksum,
        };
        let answer = server.handle(&encode_request(MessageKind::AckRequest, &request));
        decode_response::<AckResult>(&answer, MessageKind::AckResult, LIMIT)
    };
    let wrong = ack(batch.next_cursor, batch.checksum ^ 1);
    assert_eq!(wrong.unwrap_err().code(), Some("checksum_mismatch"));
    assert_eq!(server.sessions()[0].acked_cursor, 0);
    ack(batch.next_cursor, batch.checksum).expect("ack");
    assert_eq!(server.sessions()[0].acked_cursor, batch.next_cursor);
    assert_eq!(ack(999, 0).unwrap_err().code(), Some("cursor_ahead"));
}

#[test]
fn a_pull_names_its_problem() {
    let server = server(1);
    let refused = |request: PullRequest| {
        let answer = server.handle(&encode_request(MessageKind::PullRequest, &request));
        decode_pull_response(&answer, LIMIT)
            .unwrap_err()
            .code()
            .map(str::to_owned)
    };
    let mut no_device = pull_request(0);
    no_device.device.clear();
    assert_eq!(refused(no_device).as_deref(), Some("no_device"));
    let mut unknown = pull_request(0);
    unknown.tables = vec![WireScope::all("nope")];
    assert_eq!(refused(unknown).as_deref(), Some("unknown_table"));
    let mut bad_filter = pull_request(0);
    bad_filter.tables[0].filters.push(WireFilter {
        field: "done".into(),
        op: "eq".into(),
        value: WireValue::Str("yes".into()),
    });
    assert_eq!(refused(bad_filter).as_deref(), Some("bad_filter"));
}

/// Regression: compaction gave a record's single chunk its latest sequence
/// number, so a compacted record that left a filtered scope looked new to the
/// client and was silently skipped instead of reported as `Left`.
#[test]
fn a_compacted_record_leaving_a_filtered_scope_is_reported() {
    let config = EngineConfig {
        compact_after_chunks: 2,
        ..EngineConfig::default()
    };
    let server = server_with(config, 4);
    let mut request = pull_request(0);
    request.tables[0].filters.push(WireFilter {
        field: "owner".into(),
        op: "eq".into(),
        value: WireValue::Str("ann".into()),
    });
    let first = pull(&server, &request);
    assert_eq!(ids(&first), ["t0000", "t0002"]);
    let db = server.database();
    for title in ["a", "b", "c"] {
        web_edit(db, "t0000", "title", Value::str(title));
    }
    web_edit(db, "t0000", "owner", Value::str("bob"));
    request.cursor = first.next_cursor;
    let second = pull(&server, &request);
    let states: Vec<_> = second.tables[0]
        .records
        .iter()
        .map(|record| (record.id.as_str(), record.state))
        .collect();
    assert_eq!(states, [("t0000", DeltaState::Left)]);
}

/// Regression: a pull cut into batches listed a record changed both before and
/// after the cut with only its changes after the cut, so the client's copy lost
/// the earlier change (and its bytes no longer loaded). Records listed later in a
/// cut pull get every change after the pull's base.
#[test]
fn a_pull_cut_into_batches_never_drops_a_change_of_a_record_listed_later() {
    let server = server(10);
    let first = pull(&server, &pull_request(0));
    let mut bytes: BTreeMap<String, Vec<u8>> = first.tables[0]
        .records
        .iter()
        .map(|record| (record.id.clone(), record.payload.clone()))
        .collect();
    let db = server.database();
    let edit = |id: &str, title: &str| {
        web_edit(db, id, "title", Value::str(title));
    };
    edit("t0005", "first change");
    edit("t0001", "listed first");
    edit("t0005", "second change");
    let mut request = PullRequest {
        max_records: Some(1),
        ..pull_request(first.next_cursor)
    };
    let mut batches = 0;
    loop {
        let batch = pull_holding(&server, &request, &bytes);
        batches += 1;
        for record in &batch.tables[0].records {
            bytes
                .get_mut(&record.id)
                .expect("held")
                .extend_from_slice(&record.payload);
        }
        request.cursor = batch.next_cursor;
        request.base = Some(batch.base);
        if !batch.has_more {
            assert_eq!(batch.base, batch.next_cursor);
            break;
        }
    }
    assert_eq!(batches, 2);
    let client = Record::load(&bytes["t0005"]).expect("the client's copy loads");
    let stored = Record::load(&db.record_bytes("todos", "t0005").unwrap().unwrap()).unwrap();
    assert_eq!(client.heads(), stored.heads());
}

#[test]
fn a_client_without_a_change_decoder_can_ask_for_complete_changes() {
    let server = server(3);
    let cursor = pull(&server, &pull_request(0)).next_cursor;
    server
        .database()
        .patch(
            "todos",
            "t0001",
            vec![Edit::set("title", "renamed")],
            &ClientId::from("web"),
        )
        .expect("patch");
    let request = PullRequest {
        explicit_rows: true,
        ..pull_request(cursor)
    };
    let copies: BTreeMap<String, Vec<u8>> = pull(&server, &pull_request(0)).tables[0]
        .records
        .iter()
        .map(|record| (record.id.clone(), record.payload.clone()))
        .collect();
    let compact = pull_holding(&server, &pull_request(cursor), &copies);
    let explicit = pull(&server, &request);
    // Both decode to the same row and the same change.
    let (compact, explicit) = (
        &compact.tables[0].records[0],
        &explicit.tables[0].records[0],
    );
    assert_eq!(compact.row, explicit.row);
    assert_eq!(compact.payload, explicit.payload);
    assert!(!explicit.unresolved);
    // Without its copy of the record, a client cannot complete the compact
    // change (its dependency travels as a prefix): it fetches the record whole.
    let alone = pull(&server, &pull_request(cursor));
    assert!(alone.tables[0].records[0].unresolved);
    assert!(alone.tables[0].records[0].payload.is_empty());
    // The explicit batch carries the value in the row column as well as in the
    // change; the compact batch only in the row column.
    let occurrences = |request: &PullRequest| {
        let answer = server.handle(&encode_request(MessageKind::PullRequest, request));
        let needle = b"renamed";
        answer.windows(needle.len()).filter(|w| w == needle).count()
    };
    assert_eq!(occurrences(&pull_request(cursor)), 1);
    assert_eq!(occurrences(&request), 2);
}

/// Regression: in a filtered scope, a record first changed after the pull's base
/// and sent whole in an early batch of a cut pull was left out, not reported as
/// `Left`, when it left the scope before a later batch.
#[test]
fn a_record_leaving_the_scope_during_a_cut_pull_is_reported() {
    let server = server(0);
    let db = server.database();
    let origin = ClientId::from("web");
    db.insert("todos", todo("a", "first", "ann"), &origin)
        .expect("insert");
    db.insert("todos", todo("b", "second", "ann"), &origin)
        .expect("insert");
    let mut request = PullRequest {
        max_records: Some(1),
        ..pull_request(0)
    };
    request.tables[0].filters.push(WireFilter {
        field: "owner".into(),
        op: "eq".into(),
        value: WireValue::Str("ann".into()),
    });
    let first = pull(&server, &request);
    assert_eq!(ids(&first), ["a"]);
    assert!(first.has_more);
    web_edit(db, "a", "owner", Value::str("bob"));
    request.cursor = first.next_cursor;
    request.base = Some(first.base);
    let mut states = Vec::new();
    loop {
        let batch = pull(&server, &request);
        for record in &batch
            .tables
            .iter()
            .flat_map(|t| t.records.clone())
            .collect::<Vec<_>>()
        {
            states.push((record.id.clone(), record.state));
        }
        request.cursor = batch.next_cursor;
        request.base = Some(batch.base);
        if !batch.has_more {
            break;
        }
    }
    assert!(
        states.contains(&("a".to_owned(), DeltaState::Left)),
        "{states:?}"
    );
}

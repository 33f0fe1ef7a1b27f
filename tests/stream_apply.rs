//! The cluster's write path without NATS: writes made and checked on one
//! database, put on an in-process stream, and applied by every database in
//! stream order. Nodes store a write as the node that made it showed it when
//! their record is in the state it was made on, and merge it otherwise; either
//! way every node ends with the same records as a database that merged every
//! write.

use std::sync::{Arc, Mutex};

use mobilesyncdb::config::EngineConfig;
use mobilesyncdb::crdt::{ActorId, ClientId, Edit, Record, Stamp, StampMeta, Value};
use mobilesyncdb::engine::{
    Database, EngineError, Held, ManualClock, MergeOutcome, SequencedWrite, Sequencer, StreamWrite,
};
use mobilesyncdb::schema::{FieldSpec, FieldType, TableSchema};

mod common;

use common::fields;

const NOW: u64 = 1_700_000_000_000;

fn notes() -> TableSchema {
    TableSchema::new("notes", "id")
        .field(FieldSpec::new("title", FieldType::String))
        .field(FieldSpec::new("n", FieldType::Integer))
        .field(FieldSpec::new("likes", FieldType::Counter))
        .index("n")
}

/// One stream for every node: each write is applied by every node, in the
/// order the stream took it, before its writer is answered; `merger` applies
/// the same writes with what they show taken out, so it merges every one.
#[derive(Debug, Default)]
struct Stream {
    nodes: Mutex<Vec<Database>>,
    merger: Mutex<Option<Database>>,
    position: Mutex<u64>,
}

#[derive(Debug)]
struct Node {
    stream: Arc<Stream>,
    index: usize,
}

impl Sequencer for Node {
    fn sequence(
        &self,
        write: SequencedWrite,
        held: Held,
    ) -> Result<Option<MergeOutcome>, EngineError> {
        let mut position = self.stream.position.lock().expect("stream");
        *position += 1;
        let nodes = self.stream.nodes.lock().expect("nodes").clone();
        let mut answer = None;
        for (index, node) in nodes.iter().enumerate() {
            let at = StreamWrite {
                position: *position,
                own: index == self.index,
                write: write.clone(),
            };
            let mut outcomes = node.apply_stream(&[at])?;
            if index == self.index {
                answer = outcomes.pop();
            }
        }
        if let Some(merger) = self.stream.merger.lock().expect("merger").as_ref() {
            let at = StreamWrite {
                position: *position,
                own: false,
                write: SequencedWrite {
                    shown: None,
                    ..write
                },
            };
            merger.apply_stream(&[at])?;
        }
        drop(held);
        answer.expect("the node applied its write").map(Some)
    }
}

fn database() -> Database {
    let db = Database::with_clock(EngineConfig::default(), ManualClock::at(NOW)).expect("engine");
    db.create_table(notes()).expect("table");
    db
}

/// Three nodes on one stream, and the database that merges everything.
fn cluster() -> (Vec<Database>, Database) {
    let stream = Arc::new(Stream::default());
    let nodes: Vec<Database> = (0..3).map(|_| database()).collect();
    for (index, node) in nodes.iter().enumerate() {
        let sequencer = Node {
            stream: Arc::clone(&stream),
            index,
        };
        node.attach_sequencer(Arc::new(sequencer)).expect("a node");
    }
    *stream.nodes.lock().expect("nodes") = nodes.clone();
    let merger = database();
    *stream.merger.lock().expect("merger") = Some(merger.clone());
    (nodes, merger)
}

fn note(id: &str, title: &str, n: i64) -> mobilesyncdb::schema::Fields {
    fields(&[
        ("id", Value::from(id)),
        ("title", Value::from(title)),
        ("n", Value::from(n)),
        ("likes", Value::Counter(0)),
    ])
}

/// A phone's change to a record it holds at `heads` (none: a new record).
fn phone_change(record: &mut Record, edits: &[Edit]) -> mobilesyncdb::crdt::Change {
    let meta = StampMeta::new(Stamp::at(NOW), ClientId::from("phone"));
    record
        .write(edits, &meta)
        .expect("a phone write")
        .expect("a change")
}

#[test]
fn nodes_storing_what_writes_show_end_with_the_records_of_a_database_that_merged_them() {
    let (nodes, merger) = cluster();
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    let who = ClientId::from("app");
    for i in 0..20 {
        a.insert("notes", note(&format!("n{i}"), "first", i), &who)
            .expect("insert");
    }
    // Written on a node that holds no document for the record.
    b.update(
        "notes",
        "n1",
        fields(&[("title", Value::from("from b"))]),
        &who,
    )
    .expect("update");
    // Back on the node whose cached document is at the write's base.
    a.patch("notes", "n1", vec![Edit::increment("likes", 2)], &who)
        .expect("patch");
    c.delete("notes", "n2", &who).expect("delete");
    // A concurrent edit of one field: a conflict, merged everywhere.
    let old = a.heads("notes", "n3").expect("heads").expect("a record");
    b.update(
        "notes",
        "n3",
        fields(&[("title", Value::from("b wins?"))]),
        &who,
    )
    .expect("update");
    let concurrent = c
        .patch_at(
            "notes",
            "n3",
            vec![Edit::set("title", Value::from("c wins?"))],
            &old,
            &who,
        )
        .expect("a concurrent patch");
    assert_eq!(concurrent.conflicted_fields, vec!["title".to_owned()]);
    // A phone's changes: a new record, then an edit of it.
    let mut phone = Record::new(ActorId::random());
    let created = phone_change(
        &mut phone,
        &[
            Edit::set("id", Value::from("p1")),
            Edit::set("title", Value::from("phone")),
            Edit::set("n", Value::from(100)),
        ],
    );
    let edited = phone_change(&mut phone, &[Edit::set("n", Value::from(101))]);
    let pushed = b
        .merge_changes(
            "notes",
            "p1",
            vec![created, edited],
            &ClientId::from("phone"),
        )
        .expect("a push");
    assert_eq!(pushed.seqs.len(), 2, "both changes stored");

    let ids: Vec<String> = (0..20)
        .map(|i| format!("n{i}"))
        .chain(["p1".to_owned()])
        .collect();
    for id in &ids {
        let expected = (
            merger.get("notes", id).expect("row"),
            merger.heads("notes", id).expect("heads"),
        );
        for (index, node) in nodes.iter().enumerate() {
            let got = (
                node.get("notes", id).expect("row"),
                node.heads("notes", id).expect("heads"),
            );
            assert_eq!(got, expected, "node {index}, record {id}");
        }
    }
    assert_eq!(
        merger.get("notes", "n1").expect("row"),
        a.get("notes", "n1").expect("row")
    );
    let titles = |db: &Database| {
        let row = db.get("notes", "n1").expect("row").expect("live");
        let position = db.field_position("notes", "title").expect("a field");
        row.get(position)
    };
    assert_eq!(titles(c), Value::from("from b"));
    assert_eq!(merger.get("notes", "n2").expect("row"), None, "deleted");
    for node in &nodes {
        assert_eq!(node.latest_seq(), merger.latest_seq());
        let found = node
            .query("notes", &mobilesyncdb::engine::Query::default())
            .expect("query");
        assert_eq!(found.rows.len(), 20, "19 notes and the phone's record");
    }

    // Every write after the inserts was stored as shown on some nodes; the
    // conflict was merged everywhere, and the merger merged everything.
    let writes = 20 + 5 + 1;
    let merged = merger.stream_applies();
    assert_eq!((merged.shown, merged.merged), (0, writes));
    for (index, node) in nodes.iter().enumerate() {
        let applies = node.stream_applies();
        assert_eq!(applies.shown + applies.merged, writes, "node {index}");
        assert!(applies.shown >= 20, "node {index}: {applies:?}");
        assert!(applies.merged >= 1, "node {index}: {applies:?}");
    }
}

#[test]
fn a_message_whose_table_is_missing_is_held_back_whole_and_applied_once_the_table_exists() {
    let (nodes, _) = cluster();
    let who = ClientId::from("app");
    nodes[0]
        .insert("notes", note("n1", "one", 1), &who)
        .expect("insert");
    let lacking =
        Database::with_clock(EngineConfig::default(), ManualClock::at(NOW)).expect("engine");
    let mut phone = Record::new(ActorId::random());
    let change = phone_change(
        &mut phone,
        &[
            Edit::set("id", Value::from("p1")),
            Edit::set("title", Value::from("phone")),
        ],
    );
    let write = |table: &str| SequencedWrite {
        table: table.to_owned(),
        id: "p1".to_owned(),
        origin: ClientId::from("phone"),
        changes: vec![change.raw_bytes().to_vec()],
        shown: None,
    };
    let at = |position: u64, table: &str| StreamWrite {
        position,
        own: false,
        write: write(table),
    };
    lacking
        .create_table(
            TableSchema::new("drafts", "id").field(FieldSpec::new("title", FieldType::String)),
        )
        .expect("table");
    // Position 2 holds a write to `drafts` and one to `notes`, which this
    // database lacks: neither is applied.
    let batch = [at(1, "drafts"), at(2, "drafts"), at(2, "notes")];
    let outcomes = lacking.apply_stream(&batch).expect("applied");
    assert_eq!(outcomes.len(), 1, "position 1 only");
    assert_eq!(lacking.stream_position(), 1);

    lacking.create_table(notes()).expect("table");
    let outcomes = lacking.apply_stream(&batch[1..]).expect("applied");
    assert_eq!(outcomes.len(), 2);
    assert_eq!(lacking.stream_position(), 2);
    assert!(lacking.get("notes", "p1").expect("row").is_some());
}

//! Visible rows and indexes are derived state: after any mix of local writes and
//! merged phone edits, under every policy, rebuilding them from the saved documents
//! changes nothing, and indexed queries agree with the rows.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use mobilesyncdb::config::EngineConfig;
use mobilesyncdb::crdt::{ActorId, ClientId, Edit, PolicySpec, Record, Stamp, StampMeta, Value};
use mobilesyncdb::engine::{Database, Direction, Filter, Query, WallClock};
use mobilesyncdb::schema::{FieldSpec, FieldType, TableSchema};
use quickcheck::{Arbitrary, Gen, QuickCheck, TestResult};

mod common;

#[derive(Debug)]
struct ManualClock(AtomicU64);

impl WallClock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.0.fetch_add(1, Ordering::SeqCst)
    }
}

const START_MS: u64 = 1_700_000_000_000;
const IDS: u8 = 6;
const PHONES: u8 = 3;

#[derive(Clone, Debug)]
enum Op {
    Insert {
        id: u8,
        priority: i64,
    },
    Set {
        id: u8,
        field: u8,
        value: i64,
    },
    Unset {
        id: u8,
    },
    Like {
        id: u8,
        by: i64,
    },
    Delete {
        id: u8,
    },
    /// A phone takes a copy of the record as the server has it now.
    Snapshot {
        phone: u8,
        id: u8,
    },
    /// The phone edits its copy offline.
    PhoneSet {
        phone: u8,
        id: u8,
        field: u8,
        value: i64,
        ahead_ms: u64,
    },
    /// The phone pushes its edits.
    Push {
        phone: u8,
        id: u8,
    },
}

impl Arbitrary for Op {
    fn arbitrary(rng: &mut Gen) -> Op {
        let id = u8::arbitrary(rng) % IDS;
        let phone = u8::arbitrary(rng) % PHONES;
        let value = i64::from(i8::arbitrary(rng));
        let field = u8::arbitrary(rng) % 3;
        match u8::arbitrary(rng) % 8 {
            0 => Op::Insert {
                id,
                priority: value,
            },
            1 => Op::Set { id, field, value },
            2 => Op::Unset { id },
            3 => Op::Like { id, by: value },
            4 => Op::Delete { id },
            5 => Op::Snapshot { phone, id },
            6 => Op::PhoneSet {
                phone,
                id,
                field,
                value,
                ahead_ms: u64::from(u8::arbitrary(rng)),
            },
            _ => Op::Push { phone, id },
        }
    }
}

#[derive(Clone, Debug)]
struct Scenario {
    policy: u8,
    ops: Vec<Op>,
}

impl Arbitrary for Scenario {
    fn arbitrary(rng: &mut Gen) -> Scenario {
        let count = usize::arbitrary(rng) % 60;
        Scenario {
            policy: u8::arbitrary(rng),
            ops: (0..count).map(|_| Op::arbitrary(rng)).collect(),
        }
    }
}

fn policy(choice: u8) -> PolicySpec {
    match choice % 6 {
        0 => PolicySpec::LastWriterWins,
        1 => PolicySpec::Manual,
        2 => PolicySpec::Max,
        3 => PolicySpec::Sum,
        4 => PolicySpec::SetUnion,
        _ => PolicySpec::ClientPriority {
            ranking: vec![ClientId::from("phone-1"), ClientId::from("server")],
        },
    }
}

fn schema(choice: u8) -> TableSchema {
    TableSchema::new("items", "id")
        .field(FieldSpec::new("title", FieldType::String))
        .field(FieldSpec::new("priority", FieldType::Integer))
        .field(FieldSpec::new("score", FieldType::Integer))
        .field(FieldSpec::new("likes", FieldType::Counter))
        .index("priority")
        .index("title")
        .policy(policy(choice))
}

const FIELDS: [&str; 3] = ["title", "priority", "score"];

fn field_value(field: u8, value: i64) -> Value {
    match FIELDS[usize::from(field)] {
        "title" => Value::from(format!("title {value}")),
        _ => Value::Int(value),
    }
}

struct World {
    db: Database,
    clock: Arc<ManualClock>,
    phones: BTreeMap<(u8, u8), Record>,
}

impl World {
    fn new(policy: u8) -> World {
        let clock = Arc::new(ManualClock(AtomicU64::new(START_MS)));
        let db = common::database(EngineConfig::default(), clock.clone(), schema(policy), []);
        World {
            db,
            clock,
            phones: BTreeMap::new(),
        }
    }

    /// Plays one operation; refusals (a missing record, a duplicate id) are part of
    /// the game and must leave the state consistent too.
    fn play(&mut self, op: &Op) {
        let server = ClientId::from("server");
        let id = |id: &u8| format!("item-{id}");
        let _ = match op {
            Op::Insert { id: key, priority } => {
                let fields = [
                    ("id".to_owned(), Value::from(id(key))),
                    ("priority".to_owned(), Value::Int(*priority)),
                    ("likes".to_owned(), Value::Counter(0)),
                ];
                self.db
                    .insert("items", fields.into_iter().collect(), &server)
                    .map(|_| ())
            }
            Op::Set {
                id: key,
                field,
                value,
            } => {
                let edit = Edit::set(FIELDS[usize::from(*field)], field_value(*field, *value));
                self.db
                    .patch("items", &id(key), vec![edit], &server)
                    .map(|_| ())
            }
            Op::Unset { id: key } => self
                .db
                .patch("items", &id(key), vec![Edit::unset("score")], &server)
                .map(|_| ()),
            Op::Like { id: key, by } => self
                .db
                .patch(
                    "items",
                    &id(key),
                    vec![Edit::increment("likes", *by)],
                    &server,
                )
                .map(|_| ()),
            Op::Delete { id: key } => self.db.delete("items", &id(key), &server).map(|_| ()),
            Op::Snapshot { phone, id: key } => {
                if let Some(bytes) = self.db.record_bytes("items", &id(key)).expect("table") {
                    let mut copy = Record::load(&bytes).expect("server bytes load");
                    copy.set_actor(ActorId::from(
                        format!("phone-actor-{phone:04}").into_bytes(),
                    ));
                    self.phones.insert((*phone, *key), copy);
                }
                Ok(())
            }
            Op::PhoneSet {
                phone,
                id: key,
                field,
                value,
                ahead_ms,
            } => {
                let now = self.clock.0.load(Ordering::SeqCst);
                if let Some(copy) = self.phones.get_mut(&(*phone, *key)) {
                    let meta = StampMeta::new(Stamp::at(now + ahead_ms), format!("phone-{phone}"));
                    let edit = Edit::set(FIELDS[usize::from(*field)], field_value(*field, *value));
                    copy.write(&[edit], &meta).expect("phone write");
                }
                Ok(())
            }
            Op::Push { phone, id: key } => {
                if let Some(copy) = self.phones.get(&(*phone, *key)) {
                    let origin = ClientId::new(format!("phone-{phone}"));
                    self.db
                        .merge_changes("items", &id(key), copy.changes_since(&[]), &origin)
                        .map(|_| ())
                } else {
                    Ok(())
                }
            }
        };
    }
}

/// Rows with a priority of at least `floor`, once through the priority index and
/// once by filtering every row here.
fn indexed_and_scanned(db: &Database, floor: i64) -> (Vec<String>, Vec<String>) {
    let render = |rows: &[mobilesyncdb::engine::Row]| -> Vec<String> {
        let mut rendered: Vec<String> = rows
            .iter()
            .map(|row| format!("{:?}", row.values()))
            .collect();
        rendered.sort();
        rendered
    };
    let indexed = Query::new()
        .filter(Filter::ge("priority", floor))
        .limit(10_000);
    let plan = db.explain("items", &indexed).expect("explain");
    assert!(plan.to_string().contains("priority"), "{plan}");
    let indexed_rows = db.query("items", &indexed).expect("query").rows;
    let all = db
        .query("items", &Query::new().limit(10_000))
        .expect("query")
        .rows;
    let scanned: Vec<_> = all
        .into_iter()
        .filter(|row| matches!(row.get(2), Value::Int(priority) if priority >= floor))
        .collect();
    (render(&indexed_rows), render(&scanned))
}

fn derived_state_is_rebuildable(scenario: Scenario) -> TestResult {
    let mut world = World::new(scenario.policy);
    for op in &scenario.ops {
        world.play(op);
    }
    let latest = world.db.latest_seq();
    let logged = world.db.changes_since(0, 100_000).expect("log").len() as u64;
    let ordered = Query::new()
        .order_by("priority", Direction::Desc)
        .limit(10_000);
    let before_rebuild = world.db.query("items", &ordered).expect("query").rows;
    let (indexed, scanned) = indexed_and_scanned(&world.db, -20);
    let differing = world.db.rebuild_derived_state().expect("documents load");
    let after_rebuild = world.db.query("items", &ordered).expect("query").rows;
    if differing != 0 || logged != latest || before_rebuild != after_rebuild || indexed != scanned {
        return TestResult::error(format!(
            "{differing} rows differed from their documents; {logged} of {latest} changes logged\n\
             before rebuild {before_rebuild:?}\nafter rebuild {after_rebuild:?}\n\
             indexed {indexed:?}\nscanned {scanned:?}\n{scenario:#?}"
        ));
    }
    TestResult::passed()
}

#[test]
fn rows_and_indexes_always_match_the_documents() {
    QuickCheck::new()
        .tests(200)
        .quickcheck(derived_state_is_rebuildable as fn(Scenario) -> TestResult);
}

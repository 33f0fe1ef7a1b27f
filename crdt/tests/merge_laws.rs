//! Properties every replica relies on: merging is order- and duplicate-insensitive,
//! policies are deterministic, and records survive save and load unchanged.

use std::sync::Arc;

use mobilesyncdb_crdt::{
    ActorId, Candidate, Change, ClientId, ClientPriority, ConflictSet, Custom, Edit,
    LastWriterWins, Manual, Max, MergePolicy, Min, OpId, PolicySet, Record, Resolution, SetUnion,
    Stamp, StampMeta, Sum, Value,
};
use quickcheck::{Arbitrary, Gen, QuickCheck};

const FIELDS: [&str; 4] = ["title", "score", "tags", "note"];

fn actor(client: usize) -> ActorId {
    ActorId::from(format!("client-actor-{client:04}").into_bytes())
}

fn writer(client: usize) -> ClientId {
    ClientId::new(format!("phone-{client}"))
}

fn every_policy() -> Vec<Arc<dyn MergePolicy>> {
    vec![
        Arc::new(LastWriterWins),
        Arc::new(ClientPriority::new([writer(3), writer(0)])),
        Arc::new(Max),
        Arc::new(Min),
        Arc::new(Sum),
        Arc::new(SetUnion),
        Arc::new(Manual),
        Arc::new(Custom::new("shortest_text", |conflict| {
            let shortest = conflict
                .candidates()
                .iter()
                .map(|candidate| format!("{:?}", candidate.value))
                .min_by(|left, right| left.len().cmp(&right.len()).then(left.cmp(right)));
            Resolution::settled(shortest.map_or(Value::Null, Value::from))
        })),
    ]
}

/// One client's action: an edit with a stamp, or a sync with another client.
#[derive(Clone, Debug)]
enum Step {
    Write {
        client: usize,
        field: usize,
        value: Value,
        at_ms: u64,
    },
    Counter {
        client: usize,
        by: i64,
        at_ms: u64,
    },
    Delete {
        client: usize,
        at_ms: u64,
    },
    Sync {
        from: usize,
        to: usize,
    },
}

/// Random edits by 2–8 clients that start from one shared record.
#[derive(Clone, Debug)]
struct Scenario {
    clients: usize,
    steps: Vec<Step>,
    /// Order and duplication of the changes on the fresh replicas.
    delivery: Vec<usize>,
    batch_sizes: Vec<usize>,
}

fn small_value(rng: &mut Gen) -> Value {
    match u8::arbitrary(rng) % 6 {
        0 => Value::Null,
        1 => Value::Int(i64::from(i8::arbitrary(rng))),
        2 => Value::Float(f64::from(i8::arbitrary(rng)) / 4.0),
        3 => Value::str(
            *rng.choose(&["a", "b", "milk", "ümlaut", ""])
                .expect("non-empty"),
        ),
        4 => Value::List(
            (0..u8::arbitrary(rng) % 3)
                .map(|_| Value::Int(i64::from(u8::arbitrary(rng) % 5)))
                .collect(),
        ),
        _ => Value::Bool(bool::arbitrary(rng)),
    }
}

impl Arbitrary for Scenario {
    fn arbitrary(rng: &mut Gen) -> Scenario {
        let clients = 2 + usize::arbitrary(rng) % 7;
        let step_count = 1 + usize::arbitrary(rng) % 24;
        let mut steps = Vec::with_capacity(step_count);
        for _ in 0..step_count {
            let client = usize::arbitrary(rng) % clients;
            let at_ms = 1_000 + u64::from(u8::arbitrary(rng) % 16);
            let step = match u8::arbitrary(rng) % 10 {
                0..=5 => Step::Write {
                    client,
                    field: usize::arbitrary(rng) % FIELDS.len(),
                    value: small_value(rng),
                    at_ms,
                },
                6 => Step::Counter {
                    client,
                    by: i64::from(i8::arbitrary(rng)),
                    at_ms,
                },
                7 => Step::Delete { client, at_ms },
                _ => Step::Sync {
                    from: usize::arbitrary(rng) % clients,
                    to: client,
                },
            };
            steps.push(step);
        }
        let delivery = Vec::<usize>::arbitrary(rng);
        let batch_sizes = (0..4).map(|_| 1 + usize::arbitrary(rng) % 5).collect();
        Scenario {
            clients,
            steps,
            delivery,
            batch_sizes,
        }
    }
}

impl Scenario {
    /// Plays the steps and returns every change any client made.
    fn play(&self) -> Vec<Change> {
        let mut base = Record::new(actor(99));
        let create = StampMeta::new(Stamp::at(1), "creator");
        base.write(
            &[
                Edit::set("title", "new"),
                Edit::set("hits", Value::Counter(0)),
            ],
            &create,
        )
        .expect("create");
        let mut replicas: Vec<Record> = (0..self.clients)
            .map(|client| {
                let mut replica = Record::load(&base.save()).expect("load base");
                replica.set_actor(actor(client));
                replica
            })
            .collect();
        for step in &self.steps {
            apply_step(&mut replicas, step);
        }
        let mut changes = base.changes_since(&[]);
        for replica in &replicas {
            changes.extend(replica.changes_since(&[]));
        }
        changes
    }

    /// A fresh replica fed the changes in this scenario's order, with duplicates.
    fn deliver(&self, changes: &[Change]) -> Record {
        // Every change once, in an order keyed by the scenario, then duplicates.
        let key = |index: usize| self.delivery.get(index).copied().unwrap_or(index);
        let mut order: Vec<usize> = (0..changes.len()).collect();
        order.sort_by_key(|index| (key(*index), *index));
        order.extend(self.delivery.iter().map(|index| index % changes.len()));
        let mut replica = Record::new(actor(200));
        let mut position = 0;
        let mut round = 0;
        while position < order.len() {
            let batch = self.batch_sizes[round % self.batch_sizes.len()];
            let end = (position + batch).min(order.len());
            let bundle: Vec<Change> = order[position..end]
                .iter()
                .map(|index| changes[*index].clone())
                .collect();
            replica.apply_changes(bundle).expect("apply");
            position = end;
            round += 1;
        }
        replica
    }
}

fn apply_step(replicas: &mut [Record], step: &Step) {
    match step {
        Step::Write {
            client,
            field,
            value,
            at_ms,
        } => {
            let meta = StampMeta::new(Stamp::at(*at_ms), writer(*client));
            replicas[*client]
                .write(&[Edit::set(FIELDS[*field], value.clone())], &meta)
                .expect("write");
        }
        Step::Counter { client, by, at_ms } => {
            let meta = StampMeta::new(Stamp::at(*at_ms), writer(*client));
            replicas[*client]
                .write(&[Edit::increment("hits", *by)], &meta)
                .expect("increment");
        }
        Step::Delete { client, at_ms } => {
            let meta = StampMeta::new(Stamp::at(*at_ms), writer(*client));
            replicas[*client].delete(&meta).expect("delete");
        }
        Step::Sync { from, to } => {
            let changes = replicas[*from].changes_since(&[]);
            replicas[*to].apply_changes(changes).expect("sync");
        }
    }
}

fn visible(record: &Record, policy: &Arc<dyn MergePolicy>) -> (Vec<(String, Resolution)>, bool) {
    let policies = PolicySet::new(policy.clone());
    (
        record.resolve_all(&policies).expect("resolve"),
        record.is_deleted(),
    )
}

fn any_order_and_duplication_converge(scenario: Scenario) -> bool {
    let changes = scenario.play();
    let reference = {
        let mut record = Record::new(actor(201));
        record.apply_changes(changes.clone()).expect("apply all");
        record
    };
    let shuffled = scenario.deliver(&changes);
    if !shuffled.missing_deps().is_empty()
        || shuffled.heads() != reference.heads()
        || shuffled.save_canonical() != reference.save_canonical()
    {
        return false;
    }
    every_policy()
        .iter()
        .all(|policy| visible(&shuffled, policy) == visible(&reference, policy))
}

/// The convergence property is only worth something if its scenarios produce
/// real conflicts for the policies to decide.
#[test]
fn generated_scenarios_produce_conflicts() {
    let mut rng = Gen::new(100);
    let conflicted = (0..150)
        .filter(|_| {
            let mut record = Record::new(actor(203));
            record
                .apply_changes(Scenario::arbitrary(&mut rng).play())
                .expect("apply");
            FIELDS.iter().any(|field| record.has_conflict(field))
        })
        .count();
    assert!(
        conflicted >= 50,
        "only {conflicted} of 150 scenarios had a conflict"
    );
}

#[test]
fn replicas_converge_for_any_delivery_order_and_duplication() {
    QuickCheck::new()
        .tests(150)
        .quickcheck(any_order_and_duplication_converge as fn(Scenario) -> bool);
}

#[derive(Clone, Debug)]
struct Candidates(Vec<Candidate>, Vec<usize>);

impl Arbitrary for Candidates {
    fn arbitrary(rng: &mut Gen) -> Candidates {
        let count = 2 + usize::arbitrary(rng) % 6;
        let candidates: Vec<Candidate> = (0..count)
            .map(|index| {
                let stamped = u8::arbitrary(rng) % 4 != 0;
                Candidate {
                    value: small_value(rng),
                    stamp: stamped.then(|| Stamp {
                        physical_ms: u64::from(u8::arbitrary(rng) % 4),
                        logical: 0,
                    }),
                    writer: stamped.then(|| writer(usize::arbitrary(rng) % 5)),
                    op: OpId {
                        counter: u64::from(u8::arbitrary(rng) % 3),
                        actor: actor(index),
                    },
                }
            })
            .collect();
        let permutation = (0..count).map(|_| usize::arbitrary(rng)).collect();
        Candidates(candidates, permutation)
    }
}

fn policies_ignore_candidate_order(input: Candidates) -> bool {
    let Candidates(candidates, permutation) = input;
    let mut shuffled = candidates.clone();
    for (position, swap_with) in permutation.iter().enumerate() {
        let other = swap_with % shuffled.len();
        shuffled.swap(position, other);
    }
    let original = ConflictSet::new("field", candidates);
    let reordered = ConflictSet::new("field", shuffled);
    every_policy()
        .iter()
        .all(|policy| policy.resolve(&original) == policy.resolve(&reordered))
}

#[test]
fn every_policy_answers_the_same_for_any_candidate_order() {
    QuickCheck::new()
        .tests(500)
        .quickcheck(policies_ignore_candidate_order as fn(Candidates) -> bool);
}

fn save_and_load_round_trip(scenario: Scenario) -> bool {
    let changes = scenario.play();
    let mut original = Record::new(actor(202));
    original.apply_changes(changes).expect("apply");
    let saved = original.save();
    let loaded = Record::load(&saved).expect("load");
    let from_canonical = Record::load(&original.save_canonical()).expect("load canonical");
    loaded.save() == saved
        && from_canonical.save_canonical() == original.save_canonical()
        && loaded.heads() == original.heads()
        && loaded.version_vector() == original.version_vector()
        && every_policy()
            .iter()
            .all(|policy| visible(&loaded, policy) == visible(&original, policy))
}

#[test]
fn save_and_load_round_trip_keeps_everything() {
    QuickCheck::new()
        .tests(150)
        .quickcheck(save_and_load_round_trip as fn(Scenario) -> bool);
}

fn values_round_trip_through_documents(value: Value) -> bool {
    let mut record = Record::new(actor(1));
    let meta = StampMeta::new(Stamp::at(5), "writer");
    record
        .write(&[Edit::set("field", value.clone())], &meta)
        .expect("write");
    let reloaded = Record::load(&record.save()).expect("load");
    let read = reloaded
        .resolve("field", &LastWriterWins)
        .expect("read")
        .value;
    // Counters nested inside lists and maps are plain counters too.
    read == value
}

#[test]
fn every_value_survives_a_write_save_and_load() {
    QuickCheck::new()
        .tests(300)
        .quickcheck(values_round_trip_through_documents as fn(Value) -> bool);
}

//! The seeded multi-client convergence harness (after yrs' fuzz harness).
//!
//! Many phones, each with its own device id, actor, drifting clock and
//! [`SimulatedNetwork`] over one shared [`SyncServer`], edit records drawn from a
//! small shared pool so that they collide: inserts (an insert of an id held
//! locally becomes an update), updates of random fields, counter bumps, deletes
//! and revivals. Meanwhile their links drop requests, lose answers, cut and
//! corrupt messages and go offline, and most phones pull in batches of 3 or 7
//! records, so pulls are cut into several batches and interrupted between them.
//! The server edits records directly too. After the networks heal and every
//! phone has synced until nothing changes any more, every replica must equal the
//! server: the same records (tombstones included), the same visible rows, the
//! same deleted state and the same automerge heads, and every change any phone
//! made must be in the server's document (nothing lost; with every change present
//! and rows equal to last-writer-wins over the document, the latest write of each
//! field is the one shown).
//!
//! Both tests print their seed first (`seed N`); the random harness runs its
//! phones one after another, so a seed replays the same edits, syncs and faults
//! (only the server's automerge actor, and so the change hashes, differ from run
//! to run). Replay a failure with
//! `MSDB_SYNC_SEED=N cargo test --test sync_convergence`; run more phones with
//! `MSDB_SYNC_CLIENTS` (12 by default; up to 50 is the intended range) and longer
//! runs with `MSDB_SYNC_ROUNDS` (30 by default).

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mobilesyncdb::client::{
    Client, ClientConfig, ClientError, Fault, FaultRates, InProcess, LocalRow, NetworkConditions,
    Replica, SimulatedNetwork, Transport, TransportError, derive_row,
};
use mobilesyncdb::config::EngineConfig;
use mobilesyncdb::crdt::{ActorId, Change, ChangeHash, ClientId, Edit, Record, Value};
use mobilesyncdb::engine::{Database, ManualClock, WallClock};
use mobilesyncdb::schema::{FieldType, Fields, TableSchema};
use mobilesyncdb::sync::wire::MessageKind;
use mobilesyncdb::sync::{OpResult, OpStatus, PushResult, WireScope, decode_response};

mod common;

use common::{fields, server_row, sorted, sync_server, todos_of_every_kind};

const TABLE: &str = "todos";
/// The wall time every clock starts from (June 2025).
const T0: i64 = 1_750_000_000_000;
const DEFAULT_SEED: u64 = 0x00C0_FFEE_2025;
const DEFAULT_CLIENTS: usize = 12;
const DEFAULT_ROUNDS: usize = 30;
/// Record ids are drawn from this many, so phones collide on the same records.
const POOL: usize = 20;
/// Virtual time per round; offline spells last whole rounds.
const ROUND: Duration = Duration::from_secs(10);
/// Sync passes allowed after healing before the system must be quiet.
const MAX_QUIET_PASSES: usize = 12;
/// The largest message decoded by the recorders.
const LIMIT: usize = 64 << 20;

/// A device clock that runs a fixed offset from the shared clock (well within
/// the server's clock skew bound of 60 s).
#[derive(Debug)]
struct DeviceClock {
    base: Arc<ManualClock>,
    offset_ms: i64,
}

impl WallClock for DeviceClock {
    fn now_ms(&self) -> u64 {
        self.base.now_ms().saturating_add_signed(self.offset_ms)
    }
}

/// Keeps every push result the server sends, before the network can lose it.
#[derive(Debug)]
struct PushRecorder<T> {
    inner: T,
    results: Arc<Mutex<Vec<OpResult>>>,
}

impl<T: Transport> Transport for PushRecorder<T> {
    async fn exchange(&self, request: Vec<u8>) -> Result<Vec<u8>, TransportError> {
        let answer = self.inner.exchange(request).await?;
        if let Ok(result) = decode_response::<PushResult>(&answer, MessageKind::PushResult, LIMIT) {
            self.results
                .lock()
                .expect("recorder lock")
                .extend(result.results);
        }
        Ok(answer)
    }
}

type Link = Arc<SimulatedNetwork<PushRecorder<InProcess>>>;

/// One simulated phone and what the harness remembers about it.
struct Phone {
    device: String,
    client: Client<Link>,
    network: Link,
    /// The hash of every change this phone's writes queued, by record: each must
    /// be in the server's document at the end.
    made: BTreeMap<String, BTreeSet<ChangeHash>>,
}

/// A number from the environment, or `default` when the variable is unset.
fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(raw) => raw
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={raw} is not a number")),
        Err(_) => default,
    }
}

/// The seed from `MSDB_SYNC_SEED` (decimal or `0x` hex), or the fixed default.
fn seed() -> u64 {
    let Ok(raw) = std::env::var("MSDB_SYNC_SEED") else {
        return DEFAULT_SEED;
    };
    let raw = raw.trim();
    let parsed = match raw.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => raw.parse(),
    };
    parsed.unwrap_or_else(|_| panic!("MSDB_SYNC_SEED={raw} is not a number"))
}

fn pool_id(n: usize) -> String {
    format!("r{n:02}")
}

/// A value for one of the editable fields (never the counter); unset sometimes.
fn random_value(rng: &mut fastrand::Rng, field: &str) -> Value {
    if rng.u8(..10) == 0 {
        return Value::Null;
    }
    match field {
        // A small space of titles, so equal concurrent writes happen too.
        "title" => Value::str(format!("title {}", rng.u8(..40))),
        "done" => Value::Bool(rng.bool()),
        "priority" => Value::Int(rng.i64(-5..=5)),
        "due" => Value::Timestamp(T0 + rng.i64(0..86_400_000)),
        other => unreachable!("no random values for `{other}`"),
    }
}

/// One to four of the editable fields with random values.
fn random_edit(rng: &mut fastrand::Rng) -> Fields {
    let mut names = ["title", "done", "priority", "due"];
    rng.shuffle(&mut names);
    let count = rng.usize(1..=names.len());
    names[..count]
        .iter()
        .map(|name| ((*name).to_owned(), random_value(rng, name)))
        .collect()
}

fn full_record(rng: &mut fastrand::Rng, id: &str) -> Fields {
    let mut record = fields(&[
        ("id", Value::str(id)),
        ("title", Value::str(format!("title {}", rng.u8(..40)))),
        ("done", Value::Bool(rng.bool())),
        ("priority", Value::Int(rng.i64(-5..=5))),
        ("due", Value::Timestamp(T0 + rng.i64(0..86_400_000))),
        ("likes", Value::Counter(0)),
    ]);
    record.append(&mut random_edit(rng));
    record
}

/// The next value of a row's counter, as a phone (which cannot increment) sets it.
fn bumped(row: Option<&LocalRow>) -> Value {
    match row.and_then(|row| row.get("likes")) {
        Some(Value::Counter(n)) => Value::Counter(n + 1),
        _ => Value::Counter(1),
    }
}

fn random_fault(rng: &mut fastrand::Rng) -> Fault {
    match rng.u8(..7) {
        0 => Fault::DropRequest,
        1 => Fault::LoseResponse,
        2 => Fault::TruncateRequest {
            keep: rng.usize(..512),
        },
        3 => Fault::TruncateResponse {
            keep: rng.usize(..4096),
        },
        4 => Fault::CorruptRequest {
            at: rng.usize(..4096),
        },
        5 => Fault::CorruptResponse {
            at: rng.usize(..4096),
        },
        _ => Fault::Disconnect(ROUND * rng.u32(1..=2)),
    }
}

/// Background fault rates while the phones roam.
fn roaming_rates() -> FaultRates {
    FaultRates {
        drop_request: 0.03,
        lose_response: 0.03,
        truncate_request: 0.02,
        truncate_response: 0.02,
        corrupt_request: 0.02,
        corrupt_response: 0.02,
        disconnect: 0.01,
        disconnect_for: ROUND,
    }
}

/// True for failures a damaged, lost or refused message explains; anything
/// else (a merge failure, an out-of-order batch, a corrupt local record) is a
/// bug.
fn explained_by_faults(error: &ClientError) -> bool {
    match error {
        ClientError::Transport(_) | ClientError::InvalidResponse(_) => true,
        ClientError::Refused { code, .. } => matches!(
            code.as_str(),
            "corrupt_message" | "bad_message" | "unsupported_version"
        ),
        _ => false,
    }
}

/// Counts what happened, printed at the end to show the run did something.
#[derive(Debug, Default)]
struct Tally {
    inserts: usize,
    updates: usize,
    bumps: usize,
    deletes: usize,
    offline_spells: usize,
    scripted_faults: usize,
    syncs_ok: usize,
    syncs_failed: usize,
    server_writes: usize,
}

/// The shared server, its clock, and the phones.
struct World {
    db: Database,
    clock: Arc<ManualClock>,
    phones: Vec<Phone>,
    pushes: Arc<Mutex<Vec<OpResult>>>,
}

/// A server with an empty table and `clients` phones, each behind its own link
/// that draws faults at `rates` from a generator seeded from `seed`.
fn world(
    seed: u64,
    clients: usize,
    conditions: impl Fn(usize) -> NetworkConditions,
    rates: &FaultRates,
) -> World {
    let clock = ManualClock::at(T0 as u64);
    let db = common::database(
        EngineConfig::default(),
        Arc::clone(&clock) as Arc<dyn WallClock>,
        todos_of_every_kind(TABLE),
        [],
    );
    let server = sync_server(&db);
    let pushes = Arc::new(Mutex::new(Vec::new()));
    let mut rng = fastrand::Rng::with_seed(seed);
    let phones = (0..clients)
        .map(|index| {
            let device = format!("phone-{index:02}");
            let recorder = PushRecorder {
                inner: InProcess::new(server.clone()),
                results: Arc::clone(&pushes),
            };
            let network = Arc::new(
                SimulatedNetwork::new(recorder, conditions(index))
                    .with_faults(rng.u64(..), rates.clone()),
            );
            let mut config = ClientConfig::new(device.clone(), vec![WireScope::all(TABLE)]);
            // Small batches cut most pulls into several, so interruptions land
            // between batches too; a third of the phones take the server's bound.
            config.batch_records = [None, Some(3), Some(7)][index % 3];
            config.wall = Arc::new(DeviceClock {
                base: Arc::clone(&clock),
                offset_ms: rng.i64(-5_000..=5_000),
            });
            let actor = ActorId::from((0..16).map(|_| rng.u8(..)).collect::<Vec<u8>>());
            let replica = Replica::new(device.clone(), actor, config.tables.clone());
            let client =
                Client::from_replica(config, replica, Arc::clone(&network)).expect("client config");
            Phone {
                device,
                client,
                network,
                made: BTreeMap::new(),
            }
        })
        .collect();
    World {
        db,
        clock,
        phones,
        pushes,
    }
}

impl Phone {
    /// Remembers the change a local write queued (the newest change of the
    /// record's newest queued op), without loading the document.
    fn note_write(&mut self, id: &str) {
        let replica = self.client.replica();
        let Some(queued) = replica
            .queue
            .ops
            .iter()
            .rev()
            .find(|queued| queued.op.table == TABLE && queued.op.id == id)
        else {
            return;
        };
        let bytes = queued.op.changes.last().expect("an op holds changes");
        let change = Change::from_bytes(bytes.to_vec()).expect("a queued change parses");
        self.made
            .entry(id.to_owned())
            .or_default()
            .insert(change.hash());
    }

    fn live_ids(&self) -> Vec<String> {
        self.client
            .rows(TABLE)
            .into_iter()
            .map(|(id, _)| id)
            .collect()
    }

    /// One random local action (or fault) of a roaming phone.
    async fn act(&mut self, rng: &mut fastrand::Rng, tally: &mut Tally, seed: u64) {
        let live = self.live_ids();
        let pick = rng.u8(..100);
        let written = match pick {
            0..=29 => {
                let id = pool_id(rng.usize(..POOL));
                if self.client.get(TABLE, &id).is_some() {
                    tally.updates += 1;
                    let edit = random_edit(rng);
                    self.client.update(TABLE, &id, edit).await.map(|()| id)
                } else {
                    tally.inserts += 1;
                    self.client.insert(TABLE, full_record(rng, &id)).await
                }
            }
            30..=59 if !live.is_empty() => {
                tally.updates += 1;
                let id = live[rng.usize(..live.len())].clone();
                let edit = random_edit(rng);
                self.client.update(TABLE, &id, edit).await.map(|()| id)
            }
            60..=71 if !live.is_empty() => {
                tally.bumps += 1;
                let id = live[rng.usize(..live.len())].clone();
                let likes = bumped(self.client.get(TABLE, &id).as_ref());
                let edit = fields(&[("likes", likes)]);
                self.client.update(TABLE, &id, edit).await.map(|()| id)
            }
            72..=79 if !live.is_empty() => {
                tally.deletes += 1;
                let id = live[rng.usize(..live.len())].clone();
                self.client.delete(TABLE, &id).await.map(|()| id)
            }
            80..=87 => {
                tally.offline_spells += 1;
                self.network.disconnect_for(ROUND * rng.u32(1..=3));
                return;
            }
            88..=95 => {
                let count = rng.usize(1..=3);
                tally.scripted_faults += count;
                self.network
                    .script((0..count).map(|_| random_fault(rng)).collect::<Vec<_>>());
                return;
            }
            _ => {
                self.network.reconnect();
                return;
            }
        };
        // Local writes never need the network: any refusal is a bug.
        let id = written.unwrap_or_else(|error| {
            panic!("seed {seed}: {} local write refused: {error}", self.device)
        });
        self.note_write(&id);
    }

    async fn sync(&self, seed: u64) -> Result<bool, ()> {
        sync_once(&self.client, &self.device, seed).await
    }
}

/// Syncs once; returns whether anything moved. A failure must be one the
/// injected faults explain.
async fn sync_once(client: &Client<Link>, device: &str, seed: u64) -> Result<bool, ()> {
    let queued = client.queued_ops();
    match client.sync().await {
        Ok(report) => Ok(queued > 0 || report.push.answered > 0 || report.pull.records > 0),
        Err(error) => {
            assert!(
                explained_by_faults(&error),
                "seed {seed}: {device} failed to sync for a reason no fault explains: {error:?}"
            );
            Err(())
        }
    }
}

/// The server edits, inserts, deletes or revives a random pool record itself.
fn server_edit(db: &Database, rng: &mut fastrand::Rng, seed: u64) {
    let admin = ClientId::from("admin");
    let id = pool_id(rng.usize(..POOL));
    let row = db.get(TABLE, &id).expect("read");
    let outcome = match row {
        None => db.insert(TABLE, full_record(rng, &id), &admin),
        Some(_) if rng.u8(..10) == 0 => db.delete(TABLE, &id, &admin),
        Some(row) => {
            let schema = db.schema(TABLE).expect("table");
            let likes = schema.position("likes").expect("likes field");
            let mut edits: Vec<Edit> = random_edit(rng)
                .into_iter()
                .map(|(field, value)| match value {
                    Value::Null => Edit::unset(field),
                    value => Edit::Set { field, value },
                })
                .collect();
            if rng.bool() {
                edits.push(match row.get(likes) {
                    Value::Counter(_) => Edit::increment("likes", rng.i64(1..=3)),
                    _ => Edit::set("likes", Value::Counter(1)),
                });
            }
            db.patch(TABLE, &id, edits, &admin)
        }
    };
    outcome.unwrap_or_else(|error| panic!("seed {seed}: server write to {id} refused: {error}"));
}

/// Every record the server holds, live or deleted.
fn server_ids(db: &Database) -> BTreeSet<String> {
    db.records_changed_since(TABLE, 0, usize::MAX)
        .expect("read")
        .into_iter()
        .map(|(_, id)| id)
        .collect()
}

fn server_document(db: &Database, id: &str) -> Record {
    let bytes = db.record_bytes(TABLE, id).expect("read").expect("stored");
    Record::load(&bytes).expect("the server's document loads")
}

fn schema_fields(schema: &TableSchema) -> Vec<(String, FieldType)> {
    schema
        .fields
        .iter()
        .map(|field| (field.name.clone(), field.kind))
        .collect()
}

/// Syncs every phone over healed links until a whole pass changes nothing.
/// Returns the passes it took.
async fn settle(world: &World, seed: u64) -> usize {
    for phone in &world.phones {
        phone.network.set_rates(FaultRates::default());
        phone.network.reconnect();
    }
    for pass in 1..=MAX_QUIET_PASSES {
        let latest = world.db.latest_seq();
        let mut quiet = true;
        for phone in &world.phones {
            // A scripted disconnection may still wait in the script.
            phone.network.reconnect();
            match phone.sync(seed).await {
                Ok(changed) => quiet &= !changed,
                Err(()) => quiet = false,
            }
        }
        if quiet && world.db.latest_seq() == latest {
            return pass;
        }
    }
    panic!("seed {seed}: still syncing after {MAX_QUIET_PASSES} passes over healed links");
}

/// What the server holds of one record, read once for every phone's check.
struct ServerRecord {
    /// The visible row; `None` when the record is deleted.
    row: Option<LocalRow>,
    heads: Vec<ChangeHash>,
    /// Every change of the document.
    changes: BTreeSet<ChangeHash>,
}

/// Reads every record of the server (tombstones included) and checks the
/// server's own invariants on the way: each row is last-writer-wins over its
/// document (the table's policy), deleted exactly when the document's tombstone
/// says so, and rebuilding derived state changes nothing.
fn server_view(db: &Database, seed: u64) -> BTreeMap<String, ServerRecord> {
    let schema = db.schema(TABLE).expect("table");
    let fields = schema_fields(&schema);
    let mut view = BTreeMap::new();
    for id in server_ids(db) {
        let document = server_document(db, &id);
        let row = server_row(db, &schema, &id);
        assert_eq!(
            row.is_none(),
            document.is_deleted(),
            "seed {seed}: {id} tombstone"
        );
        if let Some(row) = &row {
            let derived = derive_row(&document, &fields, &[]).expect("fields read");
            assert_eq!(*row, derived, "seed {seed}: server row of {id}");
        }
        let changes = document
            .changes_since(&[])
            .iter()
            .map(Change::hash)
            .collect();
        let record = ServerRecord {
            row,
            heads: sorted(document.heads()),
            changes,
        };
        view.insert(id, record);
    }
    assert_eq!(
        db.rebuild_derived_state().expect("documents load"),
        0,
        "seed {seed}: rows drifted from documents"
    );
    view
}

/// Asserts the phone's replica equals the server record by record: the same
/// records (tombstones included), rows, deleted state and heads; rows equal to
/// last-writer-wins over its own documents; nothing left to push, fetch or
/// confirm; and every change the phone made present on the server.
fn assert_converged(
    phone: &Phone,
    server: &BTreeMap<String, ServerRecord>,
    latest_seq: u64,
    seed: u64,
) {
    let who = format!("seed {seed}, {}", phone.device);
    let replica = phone.client.replica();
    assert_eq!(replica.queue.len(), 0, "{who}: ops still queued");
    assert!(replica.fetch.is_empty(), "{who}: records still to fetch");
    assert!(replica.refused.is_empty(), "{who}: refused records remain");
    assert_eq!(replica.cursor, latest_seq, "{who}: cursor");
    assert_eq!(phone.client.stats().ops_rejected, 0, "{who}: rejected ops");
    let table = &replica.tables[TABLE];
    let held: Vec<&String> = table.records.keys().collect();
    let expected: Vec<&String> = server.keys().collect();
    assert_eq!(held, expected, "{who}: held records");
    for (id, record) in &table.records {
        let on_server = &server[id];
        assert_eq!(
            record.deleted,
            on_server.row.is_none(),
            "{who}: {id} deleted"
        );
        assert!(!record.pending, "{who}: {id} still pending");
        assert_eq!(
            phone.client.get(TABLE, id),
            on_server.row,
            "{who}: row of {id}"
        );
        let document = Record::load(&record.bytes).expect("the stored copy loads");
        assert_eq!(
            sorted(document.heads()),
            on_server.heads,
            "{who}: heads of {id}"
        );
        assert_eq!(
            document.is_deleted(),
            record.deleted,
            "{who}: tombstone of {id}"
        );
        if !record.deleted {
            let derived = derive_row(&document, &table.fields, &table.keys).expect("fields read");
            assert_eq!(record.row, derived, "{who}: row of {id} vs its document");
        }
    }
    for (id, hashes) in &phone.made {
        let missing: Vec<&ChangeHash> = hashes
            .iter()
            .filter(|hash| !server[id].changes.contains(hash))
            .collect();
        assert!(
            missing.is_empty(),
            "{who}: changes to {id} never reached the server: {missing:?}"
        );
    }
}

/// Random phones and the server editing a shared pool of records over lossy,
/// intermittent links converge to identical replicas without losing a write.
#[tokio::test(start_paused = true)]
async fn random_edits_over_faulty_links_converge_to_the_servers_state() {
    let seed = seed();
    let clients: usize = env_or("MSDB_SYNC_CLIENTS", DEFAULT_CLIENTS).max(2);
    let rounds: usize = env_or("MSDB_SYNC_ROUNDS", DEFAULT_ROUNDS).max(1);
    eprintln!("seed {seed} (clients {clients}, rounds {rounds})");
    let mut rng = fastrand::Rng::with_seed(seed);
    let conditions = |index: usize| NetworkConditions {
        latency_up: Duration::from_millis(20 + 10 * (index as u64 % 8)),
        latency_down: Duration::from_millis(30 + 10 * (index as u64 % 5)),
        bandwidth_up: Some(250_000),
        bandwidth_down: Some(1_000_000),
    };
    let mut world = world(seed, clients, conditions, &roaming_rates());
    let mut tally = Tally::default();
    let mut order: Vec<usize> = (0..clients).collect();
    for _round in 0..rounds {
        rng.shuffle(&mut order);
        for &index in &order {
            let phone = &mut world.phones[index];
            for _ in 0..rng.usize(1..=3) {
                phone.act(&mut rng, &mut tally, seed).await;
            }
            if rng.u8(..10) < 6 {
                match phone.sync(seed).await {
                    Ok(_) => tally.syncs_ok += 1,
                    Err(()) => tally.syncs_failed += 1,
                }
            }
        }
        for _ in 0..rng.usize(..3) {
            server_edit(&world.db, &mut rng, seed);
            tally.server_writes += 1;
        }
        world.clock.advance(ROUND.as_millis() as u64);
        tokio::time::sleep(ROUND).await;
    }
    let passes = settle(&world, seed).await;
    eprintln!("seed {seed}: {tally:?}; quiet after {passes} passes");
    assert!(tally.syncs_failed > 0, "seed {seed}: the faults never bit");
    assert!(tally.syncs_ok > 0, "seed {seed}: no sync ever succeeded");
    let server = server_view(&world.db, seed);
    for phone in &world.phones {
        assert_converged(phone, &server, world.db.latest_seq(), seed);
    }
    let applied = world
        .pushes
        .lock()
        .expect("recorder lock")
        .iter()
        .filter(|result| result.status == OpStatus::Applied && result.concurrent)
        .count();
    assert!(applied > 0, "seed {seed}: no push was ever concurrent");
}

/// Syncs until a sync succeeds (the link's faults are random).
async fn sync_through(client: Client<Link>, network: Link, device: String, seed: u64) {
    for _ in 0..20 {
        network.reconnect();
        if sync_once(&client, &device, seed).await.is_ok() {
            return;
        }
    }
    panic!("seed {seed}: {device} never got a sync through");
}

/// Runs `job` on every phone at once and waits for them all.
async fn on_every_phone<F, Fut>(phones: &[Phone], job: F)
where
    F: Fn(Client<Link>, Link, String) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut tasks = tokio::task::JoinSet::new();
    for phone in phones {
        let network = Arc::clone(&phone.network);
        tasks.spawn(job(phone.client.clone(), network, phone.device.clone()));
    }
    while let Some(done) = tasks.join_next().await {
        if let Err(error) = done {
            std::panic::resume_unwind(error.into_panic());
        }
    }
}

/// Every phone syncs at once until each got a sync through.
async fn sync_all_at_once(phones: &[Phone], seed: u64) {
    on_every_phone(phones, |client, network, device| {
        sync_through(client, network, device, seed)
    })
    .await;
}

/// Fifty phones set the same field of the same record at once, five times over.
/// Each round every phone writes on the same version, so the fifty writes are
/// mutually concurrent: the server keeps all fifty as the field's conflict set,
/// flags 49 of the pushes as concurrent (all but the first to arrive), shows
/// the write with the latest stamp, and every phone ends with the same value
/// and the same fifty heads. The phones write and sync concurrently, so the
/// order in which their pushes reach the server is not fixed by the seed; none
/// of the assertions depends on it.
#[tokio::test(start_paused = true)]
async fn fifty_phones_writing_one_field_at_once_converge_on_the_latest_write() {
    const PHONES: usize = 50;
    const ROUNDS: usize = 5;
    let seed = seed();
    eprintln!("seed {seed} (clients {PHONES}, rounds {ROUNDS})");
    let rates = FaultRates {
        drop_request: 0.03,
        lose_response: 0.03,
        corrupt_response: 0.02,
        ..FaultRates::default()
    };
    let mut world = world(seed, PHONES, |_| NetworkConditions::lte(), &rates);
    let db = world.db.clone();
    let admin = ClientId::from("admin");
    db.insert(
        TABLE,
        fields(&[("id", Value::str("shared")), ("title", Value::str("start"))]),
        &admin,
    )
    .expect("insert");
    // Distinct device clock offsets, so one write of each round is the latest.
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut offsets: Vec<i64> = (0..PHONES as i64).map(|n| n * 10).collect();
    rng.shuffle(&mut offsets);
    for (phone, offset) in world.phones.iter_mut().zip(&offsets) {
        let mut config = phone.client.config().clone();
        config.wall = Arc::new(DeviceClock {
            base: Arc::clone(&world.clock),
            offset_ms: *offset,
        });
        let replica = phone.client.replica();
        phone.client = Client::from_replica(config, replica, Arc::clone(&phone.network))
            .expect("client config");
    }
    sync_all_at_once(&world.phones, seed).await;
    let latest_phone = (0..PHONES).max_by_key(|&n| offsets[n]).expect("phones");
    for round in 0..ROUNDS {
        world.clock.advance(10_000);
        world.pushes.lock().expect("recorder lock").clear();
        on_every_phone(&world.phones, |client, _, device| async move {
            let title = Value::str(format!("{device}, round {round}"));
            client
                .update(TABLE, "shared", fields(&[("title", title)]))
                .await
                .unwrap_or_else(|error| panic!("seed {seed}: local write refused: {error}"));
        })
        .await;
        for phone in &mut world.phones {
            phone.note_write("shared");
        }
        sync_all_at_once(&world.phones, seed).await;
        let conflicts = db.conflicts(TABLE, "shared").expect("read");
        let title = conflicts
            .iter()
            .find(|set| set.field() == "title")
            .unwrap_or_else(|| panic!("seed {seed}, round {round}: no conflict on the title"));
        let writers: BTreeSet<&str> = title
            .candidates()
            .iter()
            .filter_map(|candidate| candidate.writer.as_ref().map(ClientId::as_str))
            .collect();
        let devices: BTreeSet<&str> = world.phones.iter().map(|p| p.device.as_str()).collect();
        assert_eq!(
            title.candidates().len(),
            PHONES,
            "seed {seed}, round {round}"
        );
        assert_eq!(writers, devices, "seed {seed}, round {round}: writers");
        let expected = Value::str(format!("phone-{latest_phone:02}, round {round}"));
        let schema = db.schema(TABLE).expect("table");
        let shown = server_row(&db, &schema, "shared").and_then(|row| row.get("title").cloned());
        assert_eq!(shown, Some(expected), "seed {seed}, round {round}: winner");
        let results = world.pushes.lock().expect("recorder lock").clone();
        let applied: Vec<&OpResult> = results
            .iter()
            .filter(|result| result.status == OpStatus::Applied)
            .collect();
        assert_eq!(
            applied.len(),
            PHONES,
            "seed {seed}, round {round}: applied pushes"
        );
        let concurrent = applied.iter().filter(|result| result.concurrent).count();
        assert_eq!(
            concurrent,
            PHONES - 1,
            "seed {seed}, round {round}: concurrent"
        );
        assert!(
            applied
                .iter()
                .filter(|result| result.concurrent)
                .all(|result| result.conflicts == ["title"]),
            "seed {seed}, round {round}: conflicted fields"
        );
        // Everyone sees every write before the next round.
        sync_all_at_once(&world.phones, seed).await;
    }
    settle(&world, seed).await;
    let server = server_view(&db, seed);
    assert_eq!(
        server["shared"].heads.len(),
        PHONES,
        "seed {seed}: one head per concurrent write of the last round"
    );
    for phone in &world.phones {
        assert_converged(phone, &server, db.latest_seq(), seed);
    }
}

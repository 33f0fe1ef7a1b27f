//! A day of an app, simulated against a real server in-process.
//!
//! [`DayPlan::typical`] describes a day of a to-do app on one phone: eight
//! visits of four minutes, edits while the app is open (and a usage event
//! logged with some of them), and other devices' changes coming in all day,
//! with a few large attachments. [`run_day`] plays it against a
//! [`SyncServer`] in the same process: the phone is a real [`Client`] running
//! [`Client::autosync`] in one [`Strategy`] (a power mode, or a plain client
//! polling at a fixed interval), over a [`MeteredTransport`] that notes every
//! byte sent and received and when. [`DayResult::energy`] turns that timeline
//! into joules with the radio and CPU model of [`energy`](super::energy).
//!
//! The day runs on tokio's clock: run it on a runtime with paused time
//! (`start_paused`, tokio's `test-util`), and 24 hours pass in well under a
//! second of wall time. The server's writes and the client's CPU work are
//! real; only waiting is skipped.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use mobilesyncdb_crdt::{ClientId, Edit, Value};
use tokio::time::Instant;

use crate::client::{
    Client, ClientConfig, ClientError, ClientPower, ClientStats, InProcess, Transport,
    TransportError,
};
use crate::compress::Level;
use crate::config::{EngineConfig, SyncConfig};
use crate::dataset::Dice;
use crate::engine::{Database, EngineError};
use crate::power::energy::{CpuModel, EnergyReport, Radio, RadioModel, Transfer, account};
use crate::power::{NetworkKind, PowerProfile, PowerState};
use crate::schema::{FieldSpec, FieldType, Fields, TableSchema};
use crate::sync::{SyncServer, WireScope};

/// The to-do table: what the app exists for.
pub const TODOS: &str = "todos";
/// Usage events the app logs: low priority.
pub const EVENTS: &str = "events";
/// Photos attached to to-dos: low priority, and large.
pub const ATTACHMENTS: &str = "attachments";

/// Bytes a request and its answer add beyond the message: HTTP/1.1 headers,
/// TLS records and TCP/IP headers, as sent by a phone.
pub const REQUEST_OVERHEAD_BYTES: u64 = 600;
pub const ANSWER_OVERHEAD_BYTES: u64 = 400;

const DAY: Duration = Duration::from_secs(24 * 60 * 60);

/// Something that happens during the day.
#[derive(Clone, Debug, PartialEq)]
pub enum DayEvent {
    /// The user opens the app.
    Foreground,
    /// The user leaves it.
    Background,
    /// The user edits a to-do; `log` also records a usage event.
    Edit {
        todo: usize,
        title: String,
        log: bool,
    },
    /// Another device edits a to-do.
    Incoming { todo: usize, title: String },
    /// Another device logs a usage event.
    IncomingEvent { id: String },
    /// Another device attaches a photo of `bytes` bytes to a to-do.
    IncomingAttachment {
        id: String,
        todo: usize,
        bytes: usize,
    },
}

/// A day: what happens, and when (since midnight).
#[derive(Clone, Debug, PartialEq)]
pub struct DayPlan {
    /// To-dos on the server (and the phone) when the day starts.
    pub todos: usize,
    pub events: Vec<(Duration, DayEvent)>,
}

impl DayPlan {
    /// The typical day of `docs/POWER.md`: eight visits of four minutes
    /// (near 07:30, 09:00, 12:15, 13:30, 17:45, 19:00, 20:30 and 22:00, each
    /// moved by up to ten minutes), five edits in each (one in four also logs
    /// a usage event), 200 to-do edits and 100 usage events from other devices
    /// spread over 07:00–23:00, and three photo attachments of 200 KB. The
    /// same `seed` gives the same day.
    pub fn typical(seed: u64) -> DayPlan {
        let mut dice = Dice::new(seed);
        let todos = 500;
        let mut within = |low: u64, high: u64| low + dice.u64() % (high - low);
        let mut events = Vec::new();
        let minutes = |m: u64| Duration::from_secs(m * 60);
        for visit in [450, 540, 735, 810, 1065, 1140, 1230, 1320] {
            let start = minutes(visit) + Duration::from_secs(within(0, 1200)) - minutes(10);
            let length = minutes(4);
            events.push((start, DayEvent::Foreground));
            for edit in 0..5 {
                let at = start + Duration::from_secs(within(5, length.as_secs()));
                events.push((
                    at,
                    DayEvent::Edit {
                        todo: within(0, todos as u64) as usize,
                        title: format!("edited at visit {visit}, edit {edit}"),
                        log: within(0, 4) == 0,
                    },
                ));
            }
            events.push((start + length, DayEvent::Background));
        }
        let (wake, sleep) = (minutes(7 * 60).as_secs(), minutes(23 * 60).as_secs());
        let mut at = || Duration::from_secs(within(wake, sleep));
        for n in 0..200 {
            let when = at();
            events.push((
                when,
                DayEvent::Incoming {
                    todo: n * 7 % todos,
                    title: format!("changed elsewhere ({n})"),
                },
            ));
        }
        for n in 0..100 {
            let when = at();
            events.push((
                when,
                DayEvent::IncomingEvent {
                    id: format!("e{n}"),
                },
            ));
        }
        for n in 0..3 {
            let when = at();
            events.push((
                when,
                DayEvent::IncomingAttachment {
                    id: format!("a{n}"),
                    todo: n * 11,
                    bytes: 200_000,
                },
            ));
        }
        events.sort_by_key(|(at, _)| *at);
        DayPlan { todos, events }
    }
}

/// How the phone syncs for the day.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strategy {
    /// [`Client::autosync`] with the default [`ClientPower`], reporting this
    /// power state all day (`Normal` is the balanced mode).
    Mode(PowerState),
    /// A plain client: a pull every `interval` whatever happens, each write
    /// pushed at once in its own request, no compression, nothing deferred.
    PlainPolling(Duration),
}

impl Strategy {
    /// The name the benchmark's figures use.
    pub fn name(self) -> String {
        match self {
            Strategy::Mode(PowerState::Normal) => "balanced".to_owned(),
            Strategy::Mode(power) => power.name().to_owned(),
            Strategy::PlainPolling(interval) if interval == Duration::from_secs(300) => {
                "naive_poll".to_owned()
            }
            Strategy::PlainPolling(interval) => format!("poll_{}s", interval.as_secs()),
        }
    }
}

/// What a simulated day did.
#[derive(Clone, Debug)]
pub struct DayResult {
    pub strategy: Strategy,
    pub network: NetworkKind,
    /// Every transfer of the phone's radio, with the request and answer
    /// overheads added.
    pub transfers: Vec<Transfer>,
    pub stats: ClientStats,
    /// The phone's to-dos equal the server's at the end of the day (after a
    /// final sync), and the server holds every edit made on the phone.
    pub converged: bool,
    /// Records still deferred at the end of the day (before the final sync).
    pub deferred_at_end: usize,
    /// Operations still queued at the end of the day (before the final sync).
    pub queued_at_end: usize,
}

impl DayResult {
    /// The day's energy on `radio`, with the client's measured CPU time.
    pub fn energy(&self, radio: Radio, cpu: &CpuModel) -> EnergyReport {
        let mut report = account(radio, &RadioModel::of(radio), &self.transfers);
        report.add_cpu(cpu, Duration::from_micros(self.stats.cpu_micros));
        report
    }
}

/// A day that could not be played.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SimulateError {
    #[error("the simulated server refused a setting: {0}")]
    Config(#[from] crate::config::ConfigError),
    #[error("the simulated server refused a write: {0}")]
    Engine(#[from] EngineError),
    #[error("the phone failed: {0}")]
    Client(#[from] ClientError),
    #[error("a simulation task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Notes each exchange's bytes, and when, as radio transfers: the request at
/// the moment it is sent, the answer at the moment it arrives (a long poll's
/// answer may come minutes later).
#[derive(Clone, Debug)]
pub struct MeteredTransport<T> {
    inner: T,
    start: Instant,
    transfers: Arc<Mutex<Vec<Transfer>>>,
}

impl<T> MeteredTransport<T> {
    /// Meters `inner`, with times counted from `start`.
    pub fn new(inner: T, start: Instant) -> MeteredTransport<T> {
        MeteredTransport {
            inner,
            start,
            transfers: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// The transfers so far.
    pub fn transfers(&self) -> Vec<Transfer> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Transfer>> {
        self.transfers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn note(&self, up_bytes: u64, down_bytes: u64) {
        let at = Instant::now().saturating_duration_since(self.start);
        self.lock().push(Transfer {
            at,
            up_bytes,
            down_bytes,
        });
    }
}

impl<T: Transport> Transport for MeteredTransport<T> {
    async fn exchange(&self, request: Vec<u8>) -> Result<Vec<u8>, TransportError> {
        self.note(request.len() as u64 + REQUEST_OVERHEAD_BYTES, 0);
        let answer = self.inner.exchange(request).await?;
        self.note(0, answer.len() as u64 + ANSWER_OVERHEAD_BYTES);
        Ok(answer)
    }
}

fn tables() -> [TableSchema; 3] {
    [
        TableSchema::new(TODOS, "id")
            .field(FieldSpec::new("title", FieldType::String))
            .field(FieldSpec::new("done", FieldType::Boolean))
            .field(FieldSpec::new("notes", FieldType::String)),
        TableSchema::new(EVENTS, "id")
            .field(FieldSpec::new("kind", FieldType::String))
            .field(FieldSpec::new("todo", FieldType::String)),
        TableSchema::new(ATTACHMENTS, "id")
            .field(FieldSpec::new("todo", FieldType::String))
            .field(FieldSpec::new("photo", FieldType::Bytes)),
    ]
}

fn todo_id(n: usize) -> String {
    format!("t{n:04}")
}

fn named(pairs: Vec<(&str, Value)>) -> Fields {
    pairs
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value))
        .collect()
}

/// Plays `plan` with the phone syncing by `strategy` on a `network`. Run it
/// on a runtime with paused time (see the module documentation).
///
/// # Errors
///
/// [`SimulateError`] when the server or the phone fails; a day played
/// through is `Ok` whatever it cost.
pub async fn run_day(
    plan: &DayPlan,
    strategy: Strategy,
    network: NetworkKind,
) -> Result<DayResult, SimulateError> {
    let db = Database::new(EngineConfig::default())?;
    let low_priority = vec![EVENTS.to_owned(), ATTACHMENTS.to_owned()];
    for table in tables() {
        db.create_table(table)?;
    }
    let other = ClientId::from("other-device");
    for n in 0..plan.todos {
        db.insert(
            TODOS,
            named(vec![
                ("id", Value::str(todo_id(n))),
                ("title", Value::str(format!("to-do number {n}"))),
                ("done", Value::Bool(false)),
                (
                    "notes",
                    Value::str("bring the blue folder; call before noon"),
                ),
            ]),
            &other,
        )?;
    }
    let mut sync = SyncConfig::default();
    sync.power.low_priority_tables.clone_from(&low_priority);
    let server = SyncServer::new(db.clone(), sync)?;

    let scopes = [TODOS, EVENTS, ATTACHMENTS]
        .into_iter()
        .map(WireScope::all)
        .collect();
    let mut config = ClientConfig::new("phone", scopes);
    match strategy {
        Strategy::Mode(power) => {
            config.power = ClientPower {
                low_priority_tables: low_priority,
                ..ClientPower::default()
            };
            config.profile = Some(PowerProfile::new(power, network));
        }
        Strategy::PlainPolling(interval) => {
            config.power = ClientPower::polling_every(interval);
            config.level = Some(Level::Off);
            config.push_ops = 1;
        }
    }
    // The phone starts the day in sync (its first sync is not the day's).
    let setup = Client::new(config.clone(), InProcess::new(server.clone()))?;
    setup.pull_all().await?;
    let replica = setup.replica();
    let day_start = Instant::now();
    let transport = MeteredTransport::new(InProcess::new(server.clone()), day_start);
    let phone = Client::from_replica(config, replica, transport.clone())?;
    phone.set_foreground(false);
    let autosync = phone.autosync();

    let mut logged = Vec::new();
    for (at, event) in &plan.events {
        tokio::time::sleep_until(day_start + *at).await;
        play(&phone, &db, &other, event, &mut logged).await?;
    }
    tokio::time::sleep_until(day_start + DAY).await;
    autosync.stop().await;
    let stats = phone.stats();
    let deferred_at_end = phone.deferred().len();
    let queued_at_end = phone.queued_ops();
    let transfers = transport.transfers();

    // Check that nothing was lost: a final sync on a good network, then the
    // phone's to-dos against the server's.
    phone.set_power(PowerProfile::new(
        PowerState::Charging,
        NetworkKind::Unmetered,
    ));
    phone.sync().await?;
    phone.sync().await?;
    let converged = converged(&phone, &db, plan, &logged)?;
    Ok(DayResult {
        strategy,
        network,
        transfers,
        stats,
        converged,
        deferred_at_end,
        queued_at_end,
    })
}

async fn play<T: Transport>(
    phone: &Client<T>,
    db: &Database,
    other: &ClientId,
    event: &DayEvent,
    logged: &mut Vec<String>,
) -> Result<(), SimulateError> {
    match event {
        DayEvent::Foreground => phone.set_foreground(true),
        DayEvent::Background => phone.set_foreground(false),
        DayEvent::Edit { todo, title, log } => {
            let id = todo_id(*todo);
            phone
                .update(
                    TODOS,
                    &id,
                    named(vec![("title", Value::str(title.clone()))]),
                )
                .await?;
            if *log {
                let event = format!("p{}", logged.len());
                logged.push(event.clone());
                phone
                    .insert(
                        EVENTS,
                        named(vec![
                            ("id", Value::str(event)),
                            ("kind", Value::str("edit")),
                            ("todo", Value::str(id)),
                        ]),
                    )
                    .await?;
            }
        }
        DayEvent::Incoming { todo, title } => {
            let (db, other, id, title) = (db.clone(), other.clone(), todo_id(*todo), title.clone());
            tokio::task::spawn_blocking(move || {
                db.patch(
                    TODOS,
                    &id,
                    vec![Edit::set("title", Value::str(title))],
                    &other,
                )
            })
            .await??;
        }
        DayEvent::IncomingEvent { id } => {
            let (db, other, id) = (db.clone(), other.clone(), id.clone());
            tokio::task::spawn_blocking(move || {
                let fields = named(vec![
                    ("id", Value::str(id)),
                    ("kind", Value::str("view")),
                    ("todo", Value::str(todo_id(1))),
                ]);
                db.insert(EVENTS, fields, &other)
            })
            .await??;
        }
        DayEvent::IncomingAttachment { id, todo, bytes } => {
            let (db, other, id, todo, bytes) =
                (db.clone(), other.clone(), id.clone(), *todo, *bytes);
            tokio::task::spawn_blocking(move || {
                // Photo bytes do not compress: fill them with noise.
                let mut photo = vec![0; bytes];
                Dice::new(bytes as u64 + todo as u64).fill(&mut photo);
                let fields = named(vec![
                    ("id", Value::str(id)),
                    ("todo", Value::str(todo_id(todo))),
                    ("photo", Value::Bytes(photo.into())),
                ]);
                db.insert(ATTACHMENTS, fields, &other)
            })
            .await??;
        }
    }
    Ok(())
}

/// The phone's records equal the server's: every to-do's title, every usage
/// event and attachment of the day on both sides (the phone's own events
/// reached the server, the others' reached the phone).
fn converged<T>(
    phone: &Client<T>,
    db: &Database,
    plan: &DayPlan,
    logged: &[String],
) -> Result<bool, SimulateError> {
    let title = db.field_position(TODOS, "title").unwrap_or(1);
    let mut same = true;
    for n in 0..plan.todos {
        let id = todo_id(n);
        let server = db.get(TODOS, &id)?.map(|row| row.get(title));
        let local = phone
            .get(TODOS, &id)
            .and_then(|row| row.get("title").cloned());
        same &= server.is_some() && server == local;
    }
    for id in logged {
        same &= db.get(EVENTS, id)?.is_some() && phone.get(EVENTS, id).is_some();
    }
    for (_, event) in &plan.events {
        match event {
            DayEvent::IncomingEvent { id } => same &= phone.get(EVENTS, id).is_some(),
            DayEvent::IncomingAttachment { id, .. } => {
                same &= phone.get(ATTACHMENTS, id).is_some();
            }
            _ => {}
        }
    }
    Ok(same)
}

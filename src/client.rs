//! The reference client: a local replica that works offline and syncs over any
//! transport.
//!
//! - [`Client`]: the handle an app holds. Local writes ([`Client::insert`],
//!   [`Client::update`], [`Client::delete`]) apply at once to the local replica
//!   and queue their automerge changes; [`Client::push`] sends the queue,
//!   [`Client::pull_all`] brings the server's changes, [`Client::sync`] does both.
//!   Every method returns quickly: document loads, merges and batch decoding run
//!   on blocking threads, and the state lock is never held across an `.await`.
//! - [`Replica`]: what the device persists, laid out as the server stores it:
//!   saved automerge bytes plus the visible row per record, the cursor, the
//!   records to fetch whole, the hybrid clock, the actor and the [`WriteQueue`].
//!   Pulling appends bytes and rows without loading documents; a record is
//!   loaded only to write it or to merge a batch into local edits not yet
//!   echoed by the server. Each batch is stored whole or not at all, with its
//!   cursor, so an interrupted sync resumes after the last stored batch.
//! - [`Transport`]: how messages reach the server. [`InProcess`] calls a
//!   [`SyncServer`](crate::sync::SyncServer) directly; [`SimulatedNetwork`] adds
//!   latency, bandwidth and faults (lost requests, lost answers, cut and
//!   corrupted messages, disconnections).
//!
//! Pushes are idempotent: an op that failed on the way stays queued and is resent
//! with the same id and the same changes, which the server answers from memory
//! (and automerge changes are idempotent by hash anyway).
//!
//! ```
//! use mobilesyncdb::client::{Client, ClientConfig, InProcess};
//! use mobilesyncdb::config::{EngineConfig, SyncConfig};
//! use mobilesyncdb::crdt::Value;
//! use mobilesyncdb::engine::Database;
//! use mobilesyncdb::schema::{FieldSpec, FieldType, TableSchema};
//! use mobilesyncdb::sync::{SyncServer, WireScope};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let db = Database::new(EngineConfig::default())?;
//! db.create_table(
//!     TableSchema::new("todos", "id").field(FieldSpec::new("title", FieldType::String)),
//! )?;
//! let server = SyncServer::new(db.clone(), SyncConfig::default())?;
//!
//! let config = ClientConfig::new("phone-1", vec![WireScope::all("todos")]);
//! let phone = Client::new(config, InProcess::new(server))?;
//! // Offline: the write lands in the local replica and the queue.
//! let fields = [("id", Value::str("t1")), ("title", Value::str("buy milk"))]
//!     .into_iter()
//!     .map(|(name, value)| (name.to_owned(), value))
//!     .collect();
//! phone.insert("todos", fields).await?;
//! // Online: push the queue, pull what changed.
//! let report = phone.sync().await?;
//! assert_eq!(report.push.applied, 1);
//! assert!(db.get("todos", "t1")?.is_some());
//! assert!(!phone.is_pending("todos", "t1"));
//! # Ok(())
//! # }
//! ```

mod autosync;
mod config;
mod error;
mod http;
mod network;
mod power;
mod queue;
mod replica;
mod sync;
mod transport;
mod write;

use std::sync::{Arc, Mutex, MutexGuard};

use mobilesyncdb_crdt::{ActorId, Record};

pub use autosync::Autosync;
pub use config::{ClientConfig, RetryPolicy};
pub use error::{ApplyError, ClientError, TransportError, WriteError};
pub use http::{HttpTransport, HttpTransportBuilder};
pub use network::{Fault, FaultRates, NetworkConditions, NetworkStats, SimulatedNetwork};
pub use power::{ClientPower, FetchDeferred, ModeBehaviour, Polling};
pub use queue::{QueuedOp, WriteQueue};
pub use replica::{BatchOutcome, LocalRecord, LocalRow, LocalTable, Replica, derive_row};
pub use sync::{PullReport, PushReport, RejectedOp, SyncReport};
pub use transport::{InProcess, Transport};

use crate::power::PowerProfile;
use crate::schema::Fields;
use crate::sync::{RecordRef, SyncHint};
use write::{PreparedWrite, WriteKind};

/// How often a local write or a batch is recomputed when a concurrent write
/// changed the records it touches before it could be stored.
const MAX_ATTEMPTS: usize = 16;

/// Counters of what the client did, since it was created.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// Messages sent, retries included.
    pub requests: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    /// Requests sent again after a transport failure or a damaged answer.
    pub retries: u64,
    /// Answers refused as invalid (cut, corrupted, malformed).
    pub invalid_responses: u64,
    pub batches_applied: u64,
    /// Records in the batches stored.
    pub records_received: u64,
    /// Records of stored batches that were already stored (re-sent batches).
    pub records_skipped: u64,
    /// Records merged with pending local edits (the only document loads of a pull).
    pub records_merged: u64,
    pub local_writes: u64,
    pub ops_applied: u64,
    pub ops_duplicate: u64,
    pub ops_rejected: u64,
    pub acks: u64,
    pub acks_failed: u64,
    /// Records the server deferred for the power profile.
    pub records_deferred: u64,
    /// Pulls sent as long polls.
    pub long_polls: u64,
    /// Time spent on the client's own CPU work, in microseconds: encoding
    /// requests, decoding and storing batches, making local writes (the
    /// energy model's CPU term).
    pub cpu_micros: u64,
}

/// The client: a local replica synced over `T`. Clone it freely: clones share
/// the replica.
pub struct Client<T> {
    inner: Arc<Inner<T>>,
}

struct Inner<T> {
    config: ClientConfig,
    transport: T,
    /// The replica and counters. A std mutex: held only for in-memory updates,
    /// never across an `.await` (document work happens outside it).
    state: Mutex<State>,
    /// One push or pull at a time; local writes do not wait for it.
    syncing: tokio::sync::Mutex<()>,
    /// Wakes [`Client::autosync`]: a local write, a new power state, the app
    /// coming to the foreground or leaving it.
    wake: tokio::sync::Notify,
    /// Asks a long poll of [`Client::autosync`] to give way: the app called a
    /// sync of its own.
    interrupt: tokio::sync::Notify,
}

/// What the lock guards.
#[derive(Debug)]
struct State {
    replica: Replica,
    stats: ClientStats,
    /// Bumped by every change to local records or the queue outside a pull, so a
    /// batch planned on an older state is planned again.
    epoch: u64,
    /// The power profile reported to the server (`None`: none reported).
    profile: Option<PowerProfile>,
    foreground: bool,
    /// The server's last suggestion for the next sync.
    hint: Option<SyncHint>,
    /// When the last exchange with the server ended (tokio's clock): the
    /// radio is likely still awake shortly after.
    last_exchange: Option<tokio::time::Instant>,
}

impl<T> Clone for Client<T> {
    fn clone(&self) -> Client<T> {
        Client {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<T> std::fmt::Debug for Client<T> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Client")
            .field("device", &self.inner.config.device)
            .field("cursor", &self.cursor())
            .finish_non_exhaustive()
    }
}

fn micros(duration: std::time::Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

/// Locks the client's state.
fn lock_state(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // Every update under the lock completes before it is released or is a
    // whole swap; a panic elsewhere leaves the state consistent.
    state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl<T> Client<T> {
    fn lock(&self) -> MutexGuard<'_, State> {
        lock_state(&self.inner.state)
    }

    fn count(&self, update: impl FnOnce(&mut ClientStats)) {
        update(&mut self.lock().stats);
    }

    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    pub fn transport(&self) -> &T {
        &self.inner.transport
    }

    /// The visible row of a live record.
    pub fn get(&self, table: &str, id: &str) -> Option<LocalRow> {
        self.lock().replica.get(table, id).cloned()
    }

    /// The live rows of `table`, by id.
    pub fn rows(&self, table: &str) -> Vec<(String, LocalRow)> {
        self.lock()
            .replica
            .rows(table)
            .map(|(id, row)| (id.to_owned(), row.clone()))
            .collect()
    }

    /// Whether the record has local edits the server has not echoed yet.
    pub fn is_pending(&self, table: &str, id: &str) -> bool {
        self.lock()
            .replica
            .record(table, id)
            .is_some_and(|record| record.pending)
    }

    /// Operations waiting in the write queue.
    pub fn queued_ops(&self) -> usize {
        self.lock().replica.queue.len()
    }

    /// Everything up to this server sequence number is stored.
    pub fn cursor(&self) -> u64 {
        self.lock().replica.cursor
    }

    pub fn stats(&self) -> ClientStats {
        self.lock().stats
    }

    /// A copy of the replica, as the device would persist it.
    pub fn replica(&self) -> Replica {
        self.lock().replica.clone()
    }

    /// Reports the phone's power state and network from now on (the app reads
    /// them from the OS). Pulls and pushes carry it, and
    /// [`Client::autosync`] switches to its mode at once.
    pub fn set_power(&self, profile: PowerProfile) {
        let changed = self.lock().profile.replace(profile) != Some(profile);
        if changed {
            tracing::debug!(device = %self.inner.config.device, %profile, "power profile changed");
            self.inner.wake.notify_one();
        }
    }

    /// The power profile the client syncs in (`normal`, `unmetered` when none
    /// was reported).
    pub fn power(&self) -> PowerProfile {
        self.lock().profile.unwrap_or_default()
    }

    /// Tells the client whether the app is in the foreground: the foreground
    /// and background polling of the power mode differ, and coming to the
    /// foreground syncs at once (when the mode says so).
    pub fn set_foreground(&self, foreground: bool) {
        let changed = std::mem::replace(&mut self.lock().foreground, foreground) != foreground;
        if changed {
            self.inner.wake.notify_one();
        }
    }

    pub fn is_foreground(&self) -> bool {
        self.lock().foreground
    }

    /// The server's last suggestion for the next sync.
    pub fn hint(&self) -> Option<SyncHint> {
        self.lock().hint.clone()
    }

    /// Records the server deferred, waiting to be fetched.
    pub fn deferred(&self) -> Vec<RecordRef> {
        self.lock().replica.deferred.iter().cloned().collect()
    }
}

impl<T: Transport> Client<T> {
    /// A client with an empty replica and a fresh random actor.
    ///
    /// # Errors
    ///
    /// [`ClientError::Config`] for an invalid configuration.
    pub fn new(config: ClientConfig, transport: T) -> Result<Client<T>, ClientError> {
        let replica = Replica::new(
            config.device.clone(),
            ActorId::random(),
            config.tables.clone(),
        );
        Client::from_replica(config, replica, transport)
    }

    /// A client resuming from a stored replica (its records, cursor, actor, clock
    /// and queue). The replica's scope becomes the configuration's tables.
    ///
    /// # Errors
    ///
    /// [`ClientError::Config`] for an invalid configuration.
    pub fn from_replica(
        config: ClientConfig,
        mut replica: Replica,
        transport: T,
    ) -> Result<Client<T>, ClientError> {
        config.validate()?;
        replica.device.clone_from(&config.device);
        replica.scope.clone_from(&config.tables);
        let state = State {
            replica,
            stats: ClientStats::default(),
            epoch: 0,
            profile: config.profile,
            foreground: true,
            hint: None,
            last_exchange: None,
        };
        Ok(Client {
            inner: Arc::new(Inner {
                config,
                transport,
                state: Mutex::new(state),
                syncing: tokio::sync::Mutex::new(()),
                wake: tokio::sync::Notify::new(),
                interrupt: tokio::sync::Notify::new(),
            }),
        })
    }

    /// Creates a record locally and queues it for the next push; returns its id
    /// (the value of the table's primary key field). A deleted record with the
    /// same id is revived.
    ///
    /// # Errors
    ///
    /// [`WriteError`]: an unknown table or field, a value of the wrong type, no
    /// primary key, a live record with this id, or a full queue.
    pub async fn insert(&self, table: &str, fields: Fields) -> Result<String, ClientError> {
        self.write(table, None, WriteKind::Insert(fields)).await
    }

    /// Sets fields of a live record locally (null unsets a field) and queues the
    /// change for the next push.
    ///
    /// # Errors
    ///
    /// [`WriteError`]: an unknown table, record or field, a value of the wrong
    /// type, a changed primary key, or a full queue.
    pub async fn update(&self, table: &str, id: &str, fields: Fields) -> Result<(), ClientError> {
        self.write(table, Some(id), WriteKind::Update(fields))
            .await
            .map(drop)
    }

    /// Deletes a live record locally (a tombstone that syncs like any change) and
    /// queues the change for the next push.
    ///
    /// # Errors
    ///
    /// [`WriteError`]: an unknown table or record, or a full queue.
    pub async fn delete(&self, table: &str, id: &str) -> Result<(), ClientError> {
        self.write(table, Some(id), WriteKind::Delete)
            .await
            .map(drop)
    }

    /// The record's document, loaded from its stored bytes (live or deleted).
    ///
    /// # Errors
    ///
    /// [`ClientError::Corrupt`] when the stored bytes do not load.
    pub async fn document(&self, table: &str, id: &str) -> Result<Option<Record>, ClientError> {
        let Some(bytes) = self
            .lock()
            .replica
            .record(table, id)
            .map(|record| record.bytes.clone())
        else {
            return Ok(None);
        };
        let (table, id) = (table.to_owned(), id.to_owned());
        let loaded = tokio::task::spawn_blocking(move || Record::load(&bytes))
            .await
            .map_err(ClientError::Task)?;
        match loaded {
            Ok(record) => Ok(Some(record)),
            Err(source) => Err(ClientError::Corrupt { table, id, source }),
        }
    }

    /// Checks and stamps a write under the lock, makes it on the document off
    /// the async thread, and stores it if the record did not change meanwhile
    /// (otherwise it is made again on the new state).
    async fn write(
        &self,
        table: &str,
        id: Option<&str>,
        kind: WriteKind,
    ) -> Result<String, ClientError> {
        let config = &self.inner.config;
        for _ in 0..MAX_ATTEMPTS {
            let prepared =
                PreparedWrite::prepare(&mut self.lock().replica, config, table, id, kind.clone())?;
            let (prepared, written, cpu) = tokio::task::spawn_blocking(move || {
                let started = std::time::Instant::now();
                let written = prepared.perform();
                (prepared, written, started.elapsed())
            })
            .await
            .map_err(ClientError::Task)?;
            let mut state = self.lock();
            state.stats.cpu_micros += micros(cpu);
            let written = written?;
            let replica = &mut state.replica;
            if replica.record(&prepared.table, &prepared.id) != prepared.existing.as_ref() {
                continue;
            }
            let Some(change) = written.change else {
                return Ok(prepared.id);
            };
            replica
                .queue
                .enqueue(&prepared.table, &prepared.id, change, config.max_queue)?;
            replica
                .tables
                .entry(prepared.table.clone())
                .or_default()
                .records
                .insert(prepared.id.clone(), written.record);
            state.epoch += 1;
            state.stats.local_writes += 1;
            drop(state);
            self.inner.wake.notify_one();
            return Ok(prepared.id);
        }
        Err(ClientError::Contended)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{EngineConfig, SyncConfig};
    use crate::engine::Database;
    use crate::sync::{SyncServer, WireScope};

    fn assert_send<F: std::future::Future + Send>(_: F) {}

    /// Apps spawn the client's futures on multi-threaded runtimes.
    #[test]
    fn every_client_future_is_send() {
        let db = Database::new(EngineConfig::default()).expect("config");
        let server = SyncServer::new(db, SyncConfig::default()).expect("config");
        let config = ClientConfig::new("phone", vec![WireScope::all("todos")]);
        let client = Client::new(config, InProcess::new(server)).expect("client");
        assert_send(client.insert("todos", Fields::new()));
        assert_send(client.update("todos", "a", Fields::new()));
        assert_send(client.delete("todos", "a"));
        assert_send(client.document("todos", "a"));
        assert_send(client.sync());
        assert_send(client.push());
        assert_send(client.pull_all());
        assert_send(client.pull_once());
    }
}

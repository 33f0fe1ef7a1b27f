//! A cluster node: its connection, publisher, applier and heartbeat.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer, stream};
use futures_util::{FutureExt, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, error, info, warn};

use super::message::{Received, Ticket, WireMessage, encoded_len, message_id};
use super::progress::Progress;
use crate::config::{ClusterAck, ClusterConfig};
use crate::engine::{
    Database, EngineError, Held, MergeOutcome, SequencedWrite, Sequencer, StreamWrite, WriteError,
};

/// A node could not join its cluster.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    #[error("cannot reach NATS at {url}: {reason}")]
    Connect { url: String, reason: String },
    #[error(
        "cannot open the stream `{stream}` (is JetStream enabled, `nats-server -js`?): {reason}"
    )]
    Stream { stream: String, reason: String },
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// A peer as the heartbeat shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerStatus {
    pub node: String,
    /// Where its HTTP API is reached.
    pub address: String,
    /// The last stream position it applied.
    pub applied_position: u64,
    /// How long ago it was last heard from.
    pub seen_ms_ago: u64,
    /// Heard from within three heartbeats.
    pub alive: bool,
}

/// A node's view of its cluster, for `/health`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterStatus {
    pub node: String,
    pub stream: String,
    /// `stream` or `local`: when writes are answered.
    pub ack: ClusterAck,
    /// Whether the NATS connection is up.
    pub connected: bool,
    /// The stream's last position, as last read.
    pub stream_position: u64,
    /// The last position this node applied.
    pub applied_position: u64,
    /// Writes on the stream this node has not applied yet.
    pub lag: u64,
    /// Writes this node put on the stream, and writes it applied, since it
    /// started.
    pub published: u64,
    pub applied: u64,
    /// Of the writes applied, how many were stored as the node that took
    /// them showed them (the record was in the state they were made on),
    /// and how many were merged.
    pub applied_as_shown: u64,
    pub applied_merged: u64,
    /// Other nodes heard from.
    pub peers: Vec<PeerStatus>,
    /// The latest trouble, if any (cleared when things work again).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// A node's handle on its cluster. Clones share the node; its tasks stop when
/// [`Cluster::stop`] is called.
#[derive(Clone, Debug)]
pub struct Cluster {
    shared: Arc<Shared>,
}

#[derive(Debug)]
pub(super) struct Shared {
    pub(super) config: ClusterConfig,
    pub(super) node: String,
    address: Mutex<String>,
    pub(super) db: Database,
    pub(super) client: async_nats::Client,
    pub(super) js: jetstream::Context,
    pub(super) subject: String,
    pub(super) progress: Arc<Progress>,
    /// Drawn at random when the node joins: names this run in write tickets.
    run: u64,
    /// The admin key this node shows its peers (anti-entropy).
    pub(super) peer_key: Option<String>,
    stream_position: AtomicU64,
    published: Arc<AtomicU64>,
    peers: Mutex<BTreeMap<String, Peer>>,
    last_error: Mutex<Option<String>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    stopped: AtomicBool,
}

#[derive(Clone, Debug)]
struct Peer {
    address: String,
    applied_position: u64,
    seen: Instant,
}

/// What a heartbeat says.
#[derive(Debug, Serialize, Deserialize)]
struct Beat {
    node: String,
    address: String,
    applied_position: u64,
}

impl Cluster {
    /// Joins the cluster `config` names: connects to NATS, opens (or creates)
    /// the stream, makes `db` a cluster node and starts applying the stream
    /// from the position `db` holds. `address` is where peers reach this
    /// node's HTTP API, with `peer_key` (an admin key) for anti-entropy.
    ///
    /// # Errors
    ///
    /// [`ClusterError`] when NATS or the stream cannot be reached.
    pub async fn join(
        db: Database,
        config: &ClusterConfig,
        address: String,
        peer_key: Option<String>,
    ) -> Result<Cluster, ClusterError> {
        let node = config.node_name();
        let servers: Vec<&str> = config.nats_url.split(',').map(str::trim).collect();
        let client = async_nats::ConnectOptions::new()
            .name(format!("mobilesyncdb {node}"))
            .connection_timeout(Duration::from_secs(5))
            .max_reconnects(None)
            .connect(servers)
            .await
            .map_err(|error| ClusterError::Connect {
                url: config.nats_url.clone(),
                reason: error.to_string(),
            })?;
        let js = jetstream::new(client.clone());
        let subject = format!("msdb.{}.writes", config.stream);
        let stream_error = |error: &dyn std::fmt::Display| ClusterError::Stream {
            stream: config.stream.clone(),
            reason: error.to_string(),
        };
        let mut stream = js
            .get_or_create_stream(stream::Config {
                name: config.stream.clone(),
                subjects: vec![subject.clone()],
                storage: stream::StorageType::File,
                retention: stream::RetentionPolicy::Limits,
                max_age: Duration::from_secs(config.max_age_secs),
                duplicate_window: Duration::from_secs(120),
                ..Default::default()
            })
            .await
            .map_err(|error| stream_error(&error))?;
        let last = stream
            .info()
            .await
            .map_err(|error| stream_error(&error))?
            .state
            .last_sequence;
        let progress = Arc::new(Progress::default());
        progress.resume(db.stream_position());
        let run = fastrand::u64(..);
        let shared = Arc::new(Shared {
            config: config.clone(),
            node: node.clone(),
            address: Mutex::new(address),
            db: db.clone(),
            client,
            js,
            subject,
            progress: Arc::clone(&progress),
            run,
            peer_key,
            stream_position: AtomicU64::new(last),
            published: Arc::new(AtomicU64::new(0)),
            peers: Mutex::new(BTreeMap::new()),
            last_error: Mutex::new(None),
            tasks: Mutex::new(Vec::new()),
            stopped: AtomicBool::new(false),
        });
        let (requests, receiver) = mpsc::unbounded_channel();
        db.attach_sequencer(Arc::new(NatsSequencer {
            requests,
            progress,
            tickets: AtomicU64::new(0),
            ack: config.ack,
            timeout: Duration::from_millis(config.write_timeout_ms),
        }))?;
        let tasks = vec![
            tokio::spawn(publish(Arc::clone(&shared), receiver)),
            tokio::spawn(apply(Arc::clone(&shared), stream)),
            tokio::spawn(heartbeat(Arc::clone(&shared))),
            tokio::spawn(listen(Arc::clone(&shared))),
            tokio::spawn(super::repair::anti_entropy(Arc::clone(&shared))),
        ];
        *shared.tasks.lock().unwrap_or_else(|p| p.into_inner()) = tasks;
        info!(
            node = %node,
            stream = %config.stream,
            stream_position = last,
            applied_position = db.stream_position(),
            ack = ?config.ack,
            "joined the cluster"
        );
        Ok(Cluster { shared })
    }

    /// Where peers reach this node's HTTP API, unless configured: the
    /// address the server listens on.
    pub fn advertise_default(&self, address: &str) {
        let mut current = self
            .shared
            .address
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if current.is_empty() {
            *current = address.to_owned();
        }
    }

    /// This node's name.
    pub fn node(&self) -> &str {
        &self.shared.node
    }

    /// The node's view of the cluster.
    pub fn status(&self) -> ClusterStatus {
        let shared = &self.shared;
        let applied_position = shared.progress.applied();
        let applies = shared.db.stream_applies();
        let stream_position = shared
            .stream_position
            .load(Ordering::Relaxed)
            .max(applied_position);
        let beat = Duration::from_millis(shared.config.heartbeat_ms);
        let peers = shared
            .peers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(node, peer)| {
                let ago = peer.seen.elapsed();
                PeerStatus {
                    node: node.clone(),
                    address: peer.address.clone(),
                    applied_position: peer.applied_position,
                    seen_ms_ago: u64::try_from(ago.as_millis()).unwrap_or(u64::MAX),
                    alive: ago < beat * 3,
                }
            })
            .collect();
        ClusterStatus {
            node: shared.node.clone(),
            stream: shared.config.stream.clone(),
            ack: shared.config.ack,
            connected: shared.client.connection_state() == async_nats::connection::State::Connected,
            stream_position,
            applied_position,
            lag: stream_position - applied_position,
            published: shared.published.load(Ordering::Relaxed),
            applied: applies.shown + applies.merged,
            applied_as_shown: applies.shown,
            applied_merged: applies.merged,
            peers,
            last_error: shared
                .last_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        }
    }

    /// Waits until this node has applied everything the stream held when
    /// called, or `timeout` passes; whether it did.
    pub async fn caught_up(&self, timeout: Duration) -> bool {
        let target = match self.shared.js.get_stream(&self.shared.config.stream).await {
            Ok(mut stream) => match stream.info().await {
                Ok(info) => info.state.last_sequence,
                Err(_) => return false,
            },
            Err(_) => return false,
        };
        let deadline = Instant::now() + timeout;
        while self.shared.progress.applied() < target {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        true
    }

    /// Compares this node's records with every live peer's and repairs what
    /// differs (see [`super::repair`]); what it found.
    ///
    /// # Errors
    ///
    /// A description of the first peer that could not be compared.
    pub async fn repair_now(&self) -> Result<super::RepairReport, String> {
        super::repair::repair_with_peers(&self.shared).await
    }

    /// Stops the node's tasks: it applies and announces nothing more, and
    /// its writes are refused.
    pub fn stop(&self) {
        self.shared.stopped.store(true, Ordering::SeqCst);
        for task in self
            .shared
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            task.abort();
        }
    }
}

impl Shared {
    pub(super) fn note_error(&self, message: String) {
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(message);
    }

    fn clear_error(&self) {
        let mut last = self.last_error.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_some() {
            *last = None;
        }
    }

    pub(super) fn live_peers(&self) -> Vec<(String, String)> {
        let beat = Duration::from_millis(self.config.heartbeat_ms);
        self.peers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(_, peer)| peer.seen.elapsed() < beat * 3 && !peer.address.is_empty())
            .map(|(node, peer)| (node.clone(), peer.address.clone()))
            .collect()
    }

    pub(super) fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::SeqCst)
    }
}

/// A write on its way to the publisher.
#[derive(Debug)]
struct Publish {
    write: SequencedWrite,
    /// Given back once the write is applied (`ack = "local"`).
    held: Held,
    /// The ticket its writer waits on (`ack = "stream"`).
    ticket: Option<u64>,
}

/// The engine's side of the cluster: hands writes to the publisher.
#[derive(Debug)]
struct NatsSequencer {
    requests: mpsc::UnboundedSender<Publish>,
    progress: Arc<Progress>,
    tickets: AtomicU64,
    ack: ClusterAck,
    timeout: Duration,
}

fn unavailable(reason: String) -> EngineError {
    EngineError::Write(WriteError::Unavailable { reason })
}

impl Sequencer for NatsSequencer {
    fn sequence(
        &self,
        write: SequencedWrite,
        held: Held,
    ) -> Result<Option<MergeOutcome>, EngineError> {
        let stopped = || unavailable("this cluster node is shutting down".to_owned());
        if self.ack == ClusterAck::Local {
            self.requests
                .send(Publish {
                    write,
                    held,
                    ticket: None,
                })
                .map_err(|_| stopped())?;
            return Ok(None);
        }
        let ticket = self.tickets.fetch_add(1, Ordering::Relaxed);
        let answer = self.progress.register(ticket);
        let sent = self.requests.send(Publish {
            write,
            held: Held::none(),
            ticket: Some(ticket),
        });
        if sent.is_err() {
            self.progress.give_up(ticket);
            return Err(stopped());
        }
        let answered = answer.recv_timeout(self.timeout);
        drop(held);
        match answered {
            Ok(answer) => answer,
            Err(_) => Err(unavailable(match self.progress.give_up(ticket) {
                Some(position) => format!(
                    "the write is on the cluster's stream at position {position}, but this node has not applied it within {} ms; it will be applied, and repeating the write is harmless",
                    self.timeout.as_millis()
                ),
                None => format!(
                    "the cluster's stream did not take the write within {} ms; nothing was applied by this request, and repeating it is harmless",
                    self.timeout.as_millis()
                ),
            })),
        }
    }
}

/// The most writes one message holds.
const MESSAGE_WRITES: usize = 256;

/// About the most bytes one message holds, unless the NATS server takes
/// less (half its `max_payload` then; 1 MiB by default); a single larger
/// write goes alone.
const MESSAGE_BYTES: usize = 256 << 10;

/// Publishes writes in the order they come, without waiting for each answer:
/// many are in flight at once, and each answer goes back to its writer.
/// Writes that queued up while the last message went out go together in the
/// next one.
async fn publish(shared: Arc<Shared>, mut requests: mpsc::UnboundedReceiver<Publish>) {
    let max_payload = shared.client.server_info().max_payload;
    let message_bytes = match max_payload {
        0 => MESSAGE_BYTES,
        server => MESSAGE_BYTES.min(server / 2),
    };
    // A write that did not fit the last message starts the next one.
    let mut carried: Option<Publish> = None;
    loop {
        let first = match carried.take() {
            Some(first) => first,
            None => match requests.recv().await {
                Some(first) => first,
                None => return,
            },
        };
        let mut bytes = encoded_len(&first.write);
        let mut batch = vec![first];
        while batch.len() < MESSAGE_WRITES {
            let Ok(next) = requests.try_recv() else {
                break;
            };
            let more = encoded_len(&next.write);
            if bytes + more > message_bytes {
                carried = Some(next);
                break;
            }
            bytes += more;
            batch.push(next);
        }
        let writes: Vec<(&SequencedWrite, Option<Ticket>)> = batch
            .iter()
            .map(|request| {
                let ticket = request.ticket.map(|number| Ticket {
                    run: shared.run,
                    number,
                });
                (&request.write, ticket)
            })
            .collect();
        let id = message_id(&writes.iter().map(|(write, _)| *write).collect::<Vec<_>>());
        let body = WireMessage::encode(&shared.node, &writes);
        let mut message = jetstream::message::PublishMessage::build().payload(body.into());
        if let Some(id) = &id {
            message = message.message_id(id);
        }
        let sent = shared
            .js
            .send_publish(shared.subject.clone(), message)
            .await;
        let shared = Arc::clone(&shared);
        let answered = async move {
            let acked = match sent {
                Ok(pending) => pending.await.map_err(|error| error.to_string()),
                Err(error) => Err(error.to_string()),
            };
            match acked {
                Ok(ack) => {
                    shared
                        .published
                        .fetch_add(batch.len() as u64, Ordering::Relaxed);
                    if ack.duplicate {
                        debug!(position = ack.sequence, id = ?id, "the stream had this write already");
                    }
                    for request in batch {
                        match request.ticket {
                            Some(ticket) => {
                                shared.progress.placed(ticket, ack.sequence, ack.duplicate);
                            }
                            None => shared.progress.hold_until(ack.sequence, request.held),
                        }
                    }
                }
                Err(reason) => {
                    let reason = format!("the cluster's stream refused the write: {reason}");
                    shared.note_error(reason.clone());
                    for request in batch {
                        match request.ticket {
                            Some(ticket) => shared.progress.failed(ticket, reason.clone()),
                            None => {
                                let write = &request.write;
                                error!(table = %write.table, record = %write.id, %reason, "a write answered before the stream took it is lost");
                            }
                        }
                    }
                }
            }
        };
        tokio::spawn(answered);
    }
}

/// Applies the stream from the node's position, in order, in batches; opens
/// the consumer again from the node's position after any trouble.
async fn apply(shared: Arc<Shared>, stream: stream::Stream) {
    let mut backoff = Duration::from_millis(50);
    while !shared.is_stopped() {
        let start = shared.db.stream_position() + 1;
        match apply_from(&shared, &stream, start).await {
            Ok(()) => backoff = Duration::from_millis(50),
            Err(reason) => {
                warn!(node = %shared.node, start, %reason, "reading the stream again");
                shared.note_error(reason);
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
        tokio::time::sleep(backoff).await;
    }
}

async fn apply_from(
    shared: &Arc<Shared>,
    stream: &stream::Stream,
    start: u64,
) -> Result<(), String> {
    let consumer = stream
        .create_consumer(consumer::pull::OrderedConfig {
            deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                start_sequence: start,
            },
            ..Default::default()
        })
        .await
        .map_err(|error| format!("cannot open a consumer at position {start}: {error}"))?;
    let mut messages = consumer
        .messages()
        .await
        .map_err(|error| format!("cannot read the stream: {error}"))?;
    let limit = shared.config.apply_batch;
    loop {
        let first = match messages.next().await {
            Some(Ok(message)) => message,
            Some(Err(error)) => return Err(format!("reading the stream failed: {error}")),
            None => return Err("the stream's consumer ended".to_owned()),
        };
        let mut batch = vec![first];
        while batch.len() < limit {
            match messages.next().now_or_never() {
                Some(Some(Ok(message))) => batch.push(message),
                Some(Some(Err(error))) => {
                    warn!(%error, "reading the stream failed; applying what came before");
                    break;
                }
                _ => break,
            }
        }
        let applied = shared.progress.applied();
        let mut writes = Vec::with_capacity(batch.len());
        let mut tickets = Vec::with_capacity(batch.len());
        for message in &batch {
            let position = message
                .info()
                .map_err(|error| format!("a stream message without its position: {error}"))?
                .stream_sequence;
            if position <= applied {
                continue;
            }
            let decoded = WireMessage::decode(&message.payload).and_then(|received| {
                if received.writes.is_empty() {
                    Err("an empty message".to_owned())
                } else {
                    Ok(received)
                }
            });
            let Received { node, writes: held } = decoded.unwrap_or_else(|reason| {
                // Still a position: it is applied as a write that fails.
                error!(position, %reason, "a stream message holds no writes; applied as nothing");
                let nothing = SequencedWrite {
                    table: String::new(),
                    id: String::new(),
                    origin: mobilesyncdb_crdt::ClientId::from("stream"),
                    changes: Vec::new(),
                    shown: None,
                };
                Received {
                    node: String::new(),
                    writes: vec![(None, nothing)],
                }
            });
            let own = node == shared.node;
            for (ticket, write) in held {
                tickets.push(
                    ticket
                        .filter(|ticket| own && ticket.run == shared.run)
                        .map(|ticket| ticket.number),
                );
                writes.push(StreamWrite {
                    position,
                    own,
                    write,
                });
            }
        }
        if writes.is_empty() {
            continue;
        }
        let db = shared.db.clone();
        let (writes, outcomes) = tokio::task::spawn_blocking(move || {
            let outcomes = db.apply_stream(&writes);
            (writes, outcomes)
        })
        .await
        .map_err(|error| format!("applying writes failed: {error}"))?;
        let outcomes =
            outcomes.map_err(|error| format!("storing applied writes failed: {error}"))?;
        let count = outcomes.len();
        let held_back = writes.get(count).map(|write| write.write.table.clone());
        let last = writes[..count]
            .last()
            .map_or(applied, |write| write.position);
        let own = tickets
            .into_iter()
            .zip(outcomes)
            .filter_map(|(ticket, outcome)| Some((ticket?, outcome)))
            .collect();
        shared.progress.record(last, own);
        shared.stream_position.fetch_max(last, Ordering::Relaxed);
        if let Some(table) = held_back {
            tokio::time::sleep(Duration::from_millis(200)).await;
            return Err(format!(
                "holding back writes to table `{table}`, which this node does not have: create it here"
            ));
        }
        shared.clear_error();
    }
}

/// Announces this node every heartbeat and reads the stream's last position.
async fn heartbeat(shared: Arc<Shared>) {
    let subject = format!("msdb.{}.nodes", shared.config.stream);
    let period = Duration::from_millis(shared.config.heartbeat_ms);
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let beat = Beat {
            node: shared.node.clone(),
            address: shared
                .address
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
            applied_position: shared.progress.applied(),
        };
        if let Ok(body) = serde_json::to_vec(&beat) {
            let _ = shared.client.publish(subject.clone(), body.into()).await;
        }
        match shared.js.get_stream(&shared.config.stream).await {
            Ok(mut stream) => {
                if let Ok(info) = stream.info().await {
                    let last = info.state.last_sequence;
                    shared.stream_position.fetch_max(last, Ordering::Relaxed);
                    skip_lost(&shared, &stream, last).await;
                }
            }
            Err(error) => shared.note_error(format!("cannot read the stream's state: {error}")),
        }
    }
}

/// Moves the applied position over writes the stream no longer holds, when
/// nothing after them is left to apply (the applier steps over gaps between
/// messages by itself; a gap at the end leaves it waiting).
async fn skip_lost(shared: &Arc<Shared>, stream: &stream::Stream, last: u64) {
    let applied = shared.progress.applied();
    if last <= applied {
        return;
    }
    // Only a bounded look: a long run of lost writes is stepped over in parts.
    let mut gap_end = applied;
    for position in applied + 1..=last.min(applied + 1_000) {
        match stream.get_raw_message(position).await {
            Ok(_) => break,
            Err(error)
                if error.kind()
                    == async_nats::jetstream::stream::RawMessageErrorKind::NoMessageFound =>
            {
                gap_end = position;
            }
            Err(_) => break,
        }
    }
    if gap_end == applied || shared.progress.applied() != applied {
        return;
    }
    let db = shared.db.clone();
    let skipped = tokio::task::spawn_blocking(move || db.skip_stream_to(gap_end)).await;
    if let Ok(Ok(())) = skipped {
        shared.progress.record(gap_end, Vec::new());
        shared.note_error(format!(
            "stream positions {}..={gap_end} are no longer on the stream; anti-entropy repairs their records",
            applied + 1
        ));
    }
}

/// Collects the other nodes' heartbeats.
async fn listen(shared: Arc<Shared>) {
    let subject = format!("msdb.{}.nodes", shared.config.stream);
    loop {
        match shared.client.subscribe(subject.clone()).await {
            Ok(mut beats) => {
                while let Some(message) = beats.next().await {
                    let Ok(beat) = serde_json::from_slice::<Beat>(&message.payload) else {
                        continue;
                    };
                    if beat.node == shared.node {
                        continue;
                    }
                    let mut peers = shared.peers.lock().unwrap_or_else(|p| p.into_inner());
                    if !peers.contains_key(&beat.node) {
                        info!(node = %shared.node, peer = %beat.node, address = %beat.address, "a peer joined");
                    }
                    peers.insert(
                        beat.node,
                        Peer {
                            address: beat.address,
                            applied_position: beat.applied_position,
                            seen: Instant::now(),
                        },
                    );
                }
            }
            Err(error) => shared.note_error(format!("cannot hear peers: {error}")),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

//! The server side of the protocol: pulls, pushes and acknowledgements against a
//! database.
//!
//! Every method is synchronous and CPU-bound (scanning, encoding, merging): async
//! callers run them on a blocking thread.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use mobilesyncdb_crdt::{Causality, Change, ChangeHash, ClientId};
use tracing::{debug, info, warn};

use crate::compress::{CompressionStats, Compressor, StatsSnapshot};
use crate::config::SyncConfig;
use crate::engine::{
    Database, Deferral, EngineError, Filter, FilterOp, FullAccess, OperatorShape, RowAccess,
    ScanRequest, ScannedRecord, SystemClock, TableScope, WallClock,
};
use crate::power::{PowerProfile, ServePlan};
use crate::schema::{Fields, Lens, TableSchema};
use crate::storage::StorageError;
use crate::storage::entry::Entry;
use crate::sync::batch::{self, BatchBody, DeferredIds};
use crate::sync::message::{
    AckRequest, AckResult, ErrorBody, OpResult, OpStatus, PullRequest, PushOp, PushRequest,
    PushResult, SyncHint, WireFilter, WireScope,
};
use crate::sync::session::{SavedSession, SessionInfo, Sessions};
use crate::sync::wait::{LongPoll, long_poll_wait};
use crate::sync::wire::{self, MessageKind, WireError};

/// How long a cluster node that has applied less of the stream than a
/// device's cursor shows waits to catch up before it answers with nothing.
const CLUSTER_CATCH_UP: Duration = Duration::from_secs(2);

/// A request the server refuses as a whole.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SyncError {
    #[error(transparent)]
    Wire(#[from] WireError),
    #[error("the request names no device; every request carries the device's stable id")]
    NoDevice,
    #[error("the pull names no table; list the tables to replicate")]
    NoTables,
    #[error("table `{table}` does not exist")]
    UnknownTable { table: String },
    #[error("filter on `{table}`.`{field}` is invalid: {problem}")]
    BadFilter {
        table: String,
        field: String,
        problem: String,
    },
    #[error("a push holds at most {limit} operations, got {count}; split it")]
    TooManyOps { count: usize, limit: usize },
    #[error(
        "cursor {cursor} is ahead of the server's latest change {latest}; it was not served by this server"
    )]
    CursorAhead { cursor: u64, latest: u64 },
    #[error(
        "the checksum {found:08x} does not match the batch served up to cursor {cursor} ({served:08x}); pull again from the last stored cursor"
    )]
    ChecksumMismatch {
        cursor: u64,
        found: u32,
        served: u32,
    },
    #[error("a {kind:?} message is not a request for this route")]
    NotARequest { kind: MessageKind },
    #[error(
        "the request names device `{named}` but the token is for device `{token}`; leave the device out or use that device's token"
    )]
    DeviceMismatch { named: String, token: String },
    #[error("the JSON body is not a valid request: {problem}")]
    BadJson { problem: String },
    #[error(transparent)]
    BadProfile(#[from] crate::power::ParseProfileError),
    #[error("the server's work on the request failed: {0}")]
    Task(String),
    #[error(transparent)]
    Engine(#[from] EngineError),
}

impl SyncError {
    /// A stable, machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            SyncError::Wire(WireError::Checksum { .. }) => "corrupt_message",
            SyncError::Wire(WireError::TooLarge { .. }) => "message_too_large",
            SyncError::Wire(WireError::UnknownVersion { .. }) => "unsupported_version",
            SyncError::Wire(_) => "bad_message",
            SyncError::NoDevice => "no_device",
            SyncError::NoTables => "no_tables",
            SyncError::UnknownTable { .. } => "unknown_table",
            SyncError::BadFilter { .. } => "bad_filter",
            SyncError::TooManyOps { .. } => "too_many_ops",
            SyncError::CursorAhead { .. } => "cursor_ahead",
            SyncError::ChecksumMismatch { .. } => "checksum_mismatch",
            SyncError::NotARequest { .. } => "not_a_request",
            SyncError::DeviceMismatch { .. } => "device_mismatch",
            SyncError::BadJson { .. } => "bad_json",
            SyncError::BadProfile(_) => "bad_profile",
            SyncError::Task(_) => "internal",
            SyncError::Engine(error) => error.code(),
        }
    }
}

/// Answers sync protocol messages for one database. Clone it freely.
#[derive(Clone, Debug)]
pub struct SyncServer {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    db: Database,
    config: SyncConfig,
    /// Held only for a session lookup or update, never across encoding.
    sessions: Mutex<Sessions>,
    stats: Arc<CompressionStats>,
    wall: Arc<dyn WallClock>,
}

/// A pull's answer: the encoded batch and what it holds.
#[derive(Clone, Debug)]
pub struct EncodedBatch {
    pub message: Vec<u8>,
    pub checksum: u32,
    pub records: usize,
    pub next_cursor: u64,
    pub has_more: bool,
    /// Records held back by the power profile.
    pub deferred: usize,
    /// The longest a long poll may wait in the request's power profile (`None`:
    /// no profile stated, the server's own bound applies).
    pub long_poll: Option<std::time::Duration>,
}

impl SyncServer {
    /// A sync server for `db`.
    ///
    /// # Errors
    ///
    /// [`crate::config::ConfigError`] for a setting out of range.
    pub fn new(db: Database, config: SyncConfig) -> Result<SyncServer, crate::config::ConfigError> {
        SyncServer::with_clock(db, config, Arc::new(SystemClock))
    }

    /// A sync server whose session times come from `wall` (tests use a manual clock).
    ///
    /// # Errors
    ///
    /// As [`SyncServer::new`].
    pub fn with_clock(
        db: Database,
        config: SyncConfig,
        wall: Arc<dyn WallClock>,
    ) -> Result<SyncServer, crate::config::ConfigError> {
        config.validate()?;
        let sessions = Sessions::new(
            config.max_sessions,
            config.session_idle,
            config.remembered_ops,
        );
        Ok(SyncServer {
            inner: Arc::new(Inner {
                db,
                config,
                sessions: Mutex::new(sessions),
                stats: Arc::new(CompressionStats::default()),
                wall,
            }),
        })
    }

    pub fn database(&self) -> &Database {
        &self.inner.db
    }

    pub fn config(&self) -> &SyncConfig {
        &self.inner.config
    }

    /// Bytes in and out and time spent per kind of data, since start.
    pub fn compression_stats(&self) -> StatsSnapshot {
        self.inner.stats.snapshot()
    }

    /// Every live session.
    pub fn sessions(&self) -> Vec<SessionInfo> {
        self.sessions_lock().list()
    }

    /// How many sessions are live (without copying them).
    pub fn session_count(&self) -> usize {
        self.sessions_lock().len()
    }

    /// One device's session.
    pub fn session(&self, device: &str) -> Option<SessionInfo> {
        self.sessions_lock().get(device)
    }

    /// Ends a device's session: its cursor and remembered operation ids are
    /// forgotten (the device keeps its own cursor). True when there was one.
    pub fn end_session(&self, device: &str) -> bool {
        let (ended, lsn) = {
            let mut sessions = self.sessions_lock();
            let ended = sessions.end(device);
            let lsn = self.inner.db.journal().filter(|_| ended).map(|journal| {
                let entry = Entry::EndSession {
                    device: device.into(),
                };
                journal.append(&entry.encode(), None)
            });
            (ended, lsn)
        };
        if let (Some(journal), Some(lsn)) = (self.inner.db.journal(), lsn)
            && let Err(error) = journal.wait(lsn)
        {
            warn!(device, %error, "the end of a session was not logged; it comes back after a restart");
        }
        ended
    }

    /// Puts back a logged session (recovery).
    pub(crate) fn restore_session(&self, info: SessionInfo) {
        self.sessions_lock().restore(info);
    }

    /// Puts back a logged operation result (recovery).
    pub(crate) fn restore_op(&self, device: &str, result: OpResult) {
        self.sessions_lock().restore_op(device, result);
    }

    /// Forgets a session whose end was logged (recovery).
    pub(crate) fn end_session_restored(&self, device: &str) {
        self.sessions_lock().end(device);
    }

    /// Puts back a snapshot's sessions, least recently seen first.
    pub(crate) fn restore_sessions(&self, sessions: Vec<SavedSession>) {
        let mut all = self.sessions_lock();
        for (info, ops) in sessions {
            let device = info.device.clone();
            all.restore(info);
            for op in ops {
                all.restore_op(&device, op);
            }
        }
    }

    /// Drops sessions idle past the expiry (after a restart).
    pub(crate) fn expire_sessions(&self) {
        let now = self.inner.wall.now_ms();
        self.sessions_lock().expire(now);
    }

    /// Every session with its remembered operations (least recently seen
    /// first), copied while `cut` runs under the sessions' lock, so no session
    /// update falls between the copy and the journal position `cut` gives.
    ///
    /// # Errors
    ///
    /// `cut`'s error.
    pub(crate) fn snapshot_sessions(
        &self,
        cut: impl FnOnce() -> Result<u64, StorageError>,
    ) -> Result<(u64, Vec<SavedSession>), StorageError> {
        let sessions = self.sessions_lock();
        let exported = sessions.export();
        let lsn = cut()?;
        Ok((lsn, exported))
    }

    /// Logs a session's state as a note: nobody waits for it, and losing the
    /// last ones to a crash costs only freshness (the device holds its cursor).
    fn note_session(&self, info: &SessionInfo) {
        if let Some(journal) = self.inner.db.journal() {
            journal.append_note(&Entry::Session(info.clone()).encode());
        }
    }

    /// Answers one protocol message with full access to every row.
    pub fn handle(&self, request: &[u8]) -> Vec<u8> {
        self.handle_as(&FullAccess, request)
    }

    /// Answers one protocol message; `access` decides which rows the caller sees.
    /// A refused request is answered with an error message; nothing of it applied.
    pub fn handle_as(&self, access: &dyn RowAccess, request: &[u8]) -> Vec<u8> {
        self.dispatch(access, request).unwrap_or_else(refusal)
    }

    /// Answers one protocol message as [`SyncServer::handle_as`] does, on a
    /// blocking thread; a pull with `wait_ms` that has nothing to send is held
    /// until a change comes (then pulled again) or the wait ends: at most
    /// `max_wait`, and at most the power profile's `long_poll`. A change the
    /// caller does not get wakes the wait too; its pull is empty, so it waits
    /// on.
    pub async fn handle_waiting(
        &self,
        access: Arc<dyn RowAccess>,
        request: Vec<u8>,
        max_wait: Duration,
    ) -> Vec<u8> {
        let limit = self.inner.config.max_message_bytes;
        let pull = wire::open(&request, limit)
            .ok()
            .filter(|opened| opened.kind == MessageKind::PullRequest)
            .and_then(|opened| wire::decode_body::<PullRequest>(&opened, opened.kind).ok())
            .filter(|pull| pull.wait_ms.is_some_and(|wait| wait > 0));
        let server = self.clone();
        let Some(pull) = pull else {
            return tokio::task::spawn_blocking(move || {
                server.handle_as(access.as_ref(), &request)
            })
            .await
            .unwrap_or_else(|error| refusal(SyncError::Task(error.to_string())));
        };
        let mut poll = LongPoll::start(&self.inner.db);
        let pull = Arc::new(pull);
        loop {
            let (server, access, job) = (self.clone(), Arc::clone(&access), Arc::clone(&pull));
            let answer = tokio::task::spawn_blocking(move || server.pull(access.as_ref(), &job))
                .await
                .unwrap_or_else(|error| Err(SyncError::Task(error.to_string())));
            let batch = match answer {
                Ok(batch) if batch.records == 0 => batch,
                Ok(batch) => return batch.message,
                Err(error) => return refusal(error),
            };
            let asked = Duration::from_millis(pull.wait_ms.unwrap_or(0));
            let wait = long_poll_wait(asked, max_wait, batch.long_poll);
            if !poll.changed(wait, std::future::pending()).await {
                return batch.message;
            }
        }
    }

    fn dispatch(&self, access: &dyn RowAccess, request: &[u8]) -> Result<Vec<u8>, SyncError> {
        let limit = self.inner.config.max_message_bytes;
        let opened = wire::open(request, limit)?;
        match opened.kind {
            MessageKind::PullRequest => {
                let pull: PullRequest = wire::decode_body(&opened, opened.kind)?;
                Ok(self.pull(access, &pull)?.message)
            }
            MessageKind::PushRequest => {
                let push: PushRequest = wire::decode_body(&opened, opened.kind)?;
                let result = self.push_as(access, push)?;
                Ok(wire::seal_value(MessageKind::PushResult, &result, false))
            }
            MessageKind::AckRequest => {
                let ack: AckRequest = wire::decode_body(&opened, opened.kind)?;
                let result = self.ack(&ack)?;
                Ok(wire::seal_value(MessageKind::AckResult, &result, false))
            }
            kind => Err(SyncError::NotARequest { kind }),
        }
    }

    /// Builds the next batch for a pull. Pulling with a cursor acknowledges it.
    ///
    /// # Errors
    ///
    /// [`SyncError`] for a request without device or tables, an unknown table, a
    /// bad filter, or a cursor this server never served.
    pub fn pull(
        &self,
        access: &dyn RowAccess,
        request: &PullRequest,
    ) -> Result<EncodedBatch, SyncError> {
        let started = Instant::now();
        if request.device.is_empty() {
            return Err(SyncError::NoDevice);
        }
        if request.tables.is_empty() {
            return Err(SyncError::NoTables);
        }
        let db = &self.inner.db;
        db.check_client_version(request.schema_version)?;
        // Each table as the app's schema version shows it, over the current rows.
        let views: Vec<(TableSchema, TableSchema)> = request
            .tables
            .iter()
            .map(|scope| view_of(db, &scope.table, request.schema_version))
            .collect::<Result<_, _>>()?;
        let lenses: Vec<Lens> = views
            .iter()
            .map(|(view, current)| Lens::new(view, current))
            .collect();
        let scopes: Vec<TableScope> = request
            .tables
            .iter()
            .zip(&views)
            .map(|(scope, (view, current))| table_scope(scope, view, current))
            .collect::<Result<_, _>>()?;
        // A device that states no profile is served by the server's own bounds.
        let profile = reported_profile(request.profile.as_deref(), request.network.as_deref())?;
        let plan = profile.map(|profile| self.inner.config.power.plan(profile));
        let latest = db.latest_seq();
        if request.cursor > latest {
            if !db.is_clustered() {
                return Err(SyncError::CursorAhead {
                    cursor: request.cursor,
                    latest,
                });
            }
            // A cursor from another node of the cluster, which has applied
            // more of the stream than this one: wait for this node to catch
            // up; if it does not in time, the device has nothing to fetch here
            // yet and keeps its cursor.
            if !db.wait_for_seq(request.cursor, CLUSTER_CATCH_UP) {
                debug!(device = %request.device, cursor = request.cursor, latest = db.latest_seq(), "cluster node behind the device's cursor: nothing to send yet");
                return Ok(self.nothing_yet(request, plan.as_ref()));
            }
        }
        let base = request.base.unwrap_or(request.cursor).min(request.cursor);
        self.note_pull(request, base, profile);
        let fetch: Vec<(usize, String)> = request
            .fetch
            .iter()
            .filter_map(|wanted| {
                let scope = scopes
                    .iter()
                    .position(|scope| scope.table == wanted.table)?;
                Some((scope, wanted.id.clone()))
            })
            .collect();
        let config = &self.inner.config;
        let bound = |asked: Option<u32>, default: usize, max: usize| {
            asked.map_or(default, |asked| (asked as usize).clamp(1, max))
        };
        // The power plan's deferral, per scope: the scan holds those records
        // back before copying their payloads.
        let deferral = plan.as_ref().map(|plan| Deferral {
            scopes: scopes
                .iter()
                .map(|scope| plan.defer_low_priority && config.power.is_low_priority(&scope.table))
                .collect(),
            over_bytes: plan.defer_over_bytes,
        });
        let scan = db.scan_changes(&ScanRequest {
            scopes: &scopes,
            cursor: request.cursor,
            base,
            fetch: &fetch,
            payloads: true,
            max_records: bound(
                request.max_records,
                plan.as_ref()
                    .map_or(config.batch_records, |plan| plan.batch_records),
                config.max_batch_records,
            ),
            max_bytes: bound(
                request.max_bytes,
                plan.as_ref()
                    .map_or(config.batch_bytes, |plan| plan.batch_bytes),
                config.max_batch_bytes,
            ),
            access,
            defer: deferral.as_ref(),
        })?;
        let deferred = deferred_ids(&scopes, scan.deferred);
        let level = request
            .level
            .unwrap_or_else(|| plan.as_ref().map_or(config.compression, |plan| plan.level));
        let compressor = Compressor::new(level, Arc::clone(&self.inner.stats));
        let tables = (0..scopes.len())
            .filter_map(|scope| {
                let records: Vec<&ScannedRecord> = scan
                    .records
                    .iter()
                    .filter(|record| record.scope == scope)
                    .collect();
                (!records.is_empty()).then(|| {
                    let derive = !request.explicit_rows;
                    batch::table_body(&lenses[scope], &records, &compressor, derive)
                })
            })
            .collect();
        let deferred_count = deferred.iter().map(|table| table.ids.len()).sum();
        let sent = scan.records.len();
        let body = BatchBody {
            from: request.cursor,
            next: scan.next_cursor,
            more: scan.has_more,
            base: if scan.has_more {
                base
            } else {
                scan.next_cursor
            },
            catch_up: base > 0 && base < scan.horizon,
            tables,
            deferred,
            hint: plan.as_ref().map(hint_of),
        };
        let (message, checksum) = batch::seal_batch(&body);
        if body.catch_up && request.cursor == base {
            self.note_too_stale(&request.device, base, scan.horizon);
        }
        self.note_served(&request.device, scan.next_cursor, checksum);
        debug!(
            device = %request.device,
            cursor = request.cursor,
            next_cursor = scan.next_cursor,
            records = sent,
            deferred = deferred_count,
            profile = %plan.as_ref().map_or_else(|| "-".to_owned(), |plan| plan.profile.to_string()),
            level = %level,
            bytes = message.len(),
            has_more = scan.has_more,
            catch_up = body.catch_up,
            micros = started.elapsed().as_micros() as u64,
            "pull served"
        );
        Ok(EncodedBatch {
            message,
            checksum,
            records: sent,
            next_cursor: scan.next_cursor,
            has_more: scan.has_more,
            deferred: deferred_count,
            long_poll: plan.map(|plan| plan.long_poll),
        })
    }

    /// An empty batch that leaves the device at its cursor: a cluster node
    /// behind the device has nothing to send it yet.
    fn nothing_yet(&self, request: &PullRequest, plan: Option<&ServePlan>) -> EncodedBatch {
        let body = BatchBody {
            from: request.cursor,
            next: request.cursor,
            more: false,
            base: request.cursor,
            catch_up: false,
            tables: Vec::new(),
            deferred: Vec::new(),
            hint: plan.map(hint_of),
        };
        let (message, checksum) = batch::seal_batch(&body);
        self.note_served(&request.device, request.cursor, checksum);
        EncodedBatch {
            message,
            checksum,
            records: 0,
            next_cursor: request.cursor,
            has_more: false,
            deferred: 0,
            long_poll: plan.map(|plan| plan.long_poll),
        }
    }

    /// Applies pushed operations, each on its own: one refused operation does not
    /// stop the others.
    ///
    /// # Errors
    ///
    /// [`SyncError::NoDevice`] and [`SyncError::TooManyOps`] refuse the whole push.
    pub fn push(&self, request: PushRequest) -> Result<PushResult, SyncError> {
        self.push_as(&FullAccess, request)
    }

    /// Applies pushed operations as a caller who reaches only the rows `access`
    /// admits: an operation on a record out of reach is refused as `not_found`, and
    /// one that would move a record out of reach as `access_denied`.
    ///
    /// # Errors
    ///
    /// As [`SyncServer::push`].
    pub fn push_as(
        &self,
        access: &dyn RowAccess,
        request: PushRequest,
    ) -> Result<PushResult, SyncError> {
        if request.device.is_empty() {
            return Err(SyncError::NoDevice);
        }
        let limit = self.inner.config.max_push_ops;
        if request.ops.len() > limit {
            return Err(SyncError::TooManyOps {
                count: request.ops.len(),
                limit,
            });
        }
        if let Some(journal) = self.inner.db.journal() {
            journal
                .check_healthy()
                .map_err(|error| SyncError::Engine(error.into()))?;
        }
        self.inner.db.check_client_version(request.schema_version)?;
        if let Some(profile) =
            reported_profile(request.profile.as_deref(), request.network.as_deref())?
        {
            self.note_profile(&request.device, profile);
        }
        let origin = ClientId::from(request.device.as_str());
        let mut results = Vec::with_capacity(request.ops.len());
        // Schemas of the tables patched so far: a push of many patches to one
        // table reads its schema once.
        let mut schemas = BTreeMap::new();
        for op in request.ops {
            if let Some(mut earlier) = self.remembered(&request.device, &op.op) {
                earlier.status = OpStatus::Duplicate;
                results.push(earlier);
                continue;
            }
            let result = self.apply(op, &origin, access, request.schema_version, &mut schemas);
            if result.status != OpStatus::Rejected {
                self.remember(&request.device, &result);
            }
            results.push(result);
        }
        // One wait for every write of the push (and their remembered results):
        // they share an fsync, and nothing is answered before it.
        self.inner.db.acknowledge()?;
        debug!(device = %request.device, ops = results.len(), "push applied");
        Ok(PushResult {
            results,
            latest: self.inner.db.latest_seq(),
        })
    }

    /// Records that the device stored everything up to `cursor`.
    ///
    /// # Errors
    ///
    /// [`SyncError::CursorAhead`] for a cursor this server never reached, and
    /// [`SyncError::ChecksumMismatch`] when the checksum is not the one of the
    /// batch served up to that cursor.
    pub fn ack(&self, request: &AckRequest) -> Result<AckResult, SyncError> {
        if request.device.is_empty() {
            return Err(SyncError::NoDevice);
        }
        let db = &self.inner.db;
        let latest = db.latest_seq();
        if request.cursor > latest
            && !(db.is_clustered() && db.wait_for_seq(request.cursor, CLUSTER_CATCH_UP))
        {
            return Err(SyncError::CursorAhead {
                cursor: request.cursor,
                latest,
            });
        }
        let now = self.inner.wall.now_ms();
        let mut sessions = self.sessions_lock();
        let session = sessions.touch(&request.device, now);
        let info = &mut session.info;
        if info.served_cursor == request.cursor && info.served_checksum != request.checksum {
            return Err(SyncError::ChecksumMismatch {
                cursor: request.cursor,
                found: request.checksum,
                served: info.served_checksum,
            });
        }
        if request.cursor < info.acked_cursor {
            warn!(device = %request.device, from = info.acked_cursor, to = request.cursor, "acknowledged cursor moved back: the device restored older data");
        }
        info.acked_cursor = request.cursor;
        let lsn = self.inner.db.journal().map(|journal| {
            let entry = Entry::Session(info.clone());
            (journal, journal.append(&entry.encode(), None))
        });
        drop(sessions);
        if let Some((journal, lsn)) = lsn {
            journal
                .wait(lsn)
                .map_err(|error| SyncError::Engine(error.into()))?;
        }
        Ok(AckResult {
            cursor: request.cursor,
        })
    }

    fn apply(
        &self,
        op: PushOp,
        origin: &ClientId,
        access: &dyn RowAccess,
        version: Option<u32>,
        schemas: &mut BTreeMap<String, TableSchema>,
    ) -> OpResult {
        let op_id = op.op.clone();
        match self.apply_op(op, origin, access, version, schemas) {
            Ok(result) => result,
            Err((code, reason)) => {
                debug!(op = %op_id, code, reason, "pushed operation rejected");
                OpResult {
                    op: op_id,
                    status: OpStatus::Rejected,
                    seqs: Vec::new(),
                    concurrent: false,
                    conflicts: Vec::new(),
                    code: Some(code.to_owned()),
                    reason: Some(reason),
                }
            }
        }
    }

    fn apply_op(
        &self,
        op: PushOp,
        origin: &ClientId,
        access: &dyn RowAccess,
        version: Option<u32>,
        schemas: &mut BTreeMap<String, TableSchema>,
    ) -> Result<OpResult, (&'static str, String)> {
        let db = self
            .inner
            .db
            .writer(access)
            .deferred()
            .schema_version(version);
        let read = &self.inner.db;
        let engine = |error: EngineError| (error.code(), error.to_string());
        let mut result = OpResult {
            op: op.op.clone(),
            status: OpStatus::Applied,
            seqs: Vec::new(),
            concurrent: false,
            conflicts: Vec::new(),
            code: None,
            reason: None,
        };
        if !op.changes.is_empty() {
            if !op.set.is_empty() || op.insert || op.delete || !op.base.is_empty() {
                return Err((
                    "mixed_op",
                    "an operation carries either automerge changes or a patch, not both".to_owned(),
                ));
            }
            let changes = op
                .changes
                .into_iter()
                .map(|bytes| Change::from_bytes(bytes.into_vec()))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|error| {
                    (
                        "invalid_change",
                        format!("a change is not valid automerge: {error}"),
                    )
                })?;
            let outcome = db
                .merge_changes(&op.table, &op.id, changes, origin)
                .map_err(engine)?;
            if outcome.seqs.is_empty() {
                result.status = OpStatus::Duplicate;
            }
            result.seqs = outcome.seqs;
            result.concurrent = outcome.causality == Causality::Concurrent;
            result.conflicts = outcome.conflicted_fields;
            return Ok(result);
        }
        if op.delete {
            let outcome = db.delete(&op.table, &op.id, origin).map_err(engine)?;
            result.seqs.extend(outcome.seq);
            return Ok(result);
        }
        if !schemas.contains_key(&op.table) {
            let (schema, _) = view_of(read, &op.table, version)
                .map_err(|error| (error.code(), error.to_string()))?;
            schemas.insert(op.table.clone(), schema);
        }
        let fields = typed_fields(&schemas[&op.table], &op.set)?;
        if op.insert {
            let outcome = db.insert(&op.table, fields, origin).map_err(engine)?;
            result.seqs.extend(outcome.seq);
            return Ok(result);
        }
        let edits = crate::schema::field_edits(fields);
        if op.base.is_empty() {
            let outcome = db.patch(&op.table, &op.id, edits, origin).map_err(engine)?;
            result.seqs.extend(outcome.seq);
            return Ok(result);
        }
        let base = op
            .base
            .iter()
            .map(|head| ChangeHash::try_from(head.as_slice()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| {
                (
                    "unknown_base",
                    "a base head is not a 32-byte change hash".to_owned(),
                )
            })?;
        let outcome = db
            .patch_at(&op.table, &op.id, edits, &base, origin)
            .map_err(engine)?;
        result.seqs.extend(outcome.write.seq);
        result.concurrent = outcome.causality == Causality::Concurrent;
        result.conflicts = outcome.conflicted_fields;
        Ok(result)
    }

    fn sessions_lock(&self) -> MutexGuard<'_, Sessions> {
        // A panic while holding the lock leaves sessions consistent (each update
        // is a single assignment), so a poisoned lock is still usable.
        self.inner
            .sessions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records the power profile a push reported, when it changed.
    fn note_profile(&self, device: &str, profile: PowerProfile) {
        let now = self.inner.wall.now_ms();
        let mut sessions = self.sessions_lock();
        let info = &mut sessions.touch(device, now).info;
        let reported = profile.to_string();
        if info.profile.as_ref() != Some(&reported) {
            info.profile = Some(reported);
            self.note_session(info);
        }
    }

    fn note_pull(&self, request: &PullRequest, base: u64, profile: Option<PowerProfile>) {
        let reported = profile.map(|profile| profile.to_string());
        let now = self.inner.wall.now_ms();
        let mut sessions = self.sessions_lock();
        let info = &mut sessions.touch(&request.device, now).info;
        // A pull that moves nothing but counters and the contact time is not
        // logged: a no-change poll costs no journal bytes (and no copies).
        let changed = info.pulls == 0 && info.pushes == 0
            || info.acked_cursor != base
            || request
                .schema_version
                .is_some_and(|v| info.schema_version != Some(v))
            || reported.is_some() && info.profile != reported;
        info.acked_cursor = base;
        info.pulls += 1;
        if request.schema_version.is_some() {
            info.schema_version = request.schema_version;
        }
        if reported.is_some() {
            info.profile = reported;
        }
        if changed {
            self.note_session(info);
        }
    }

    /// Announces a device whose cursor was older than the change log's
    /// horizon: it catches up record by record (`client.too_stale`).
    fn note_too_stale(&self, device: &str, cursor: u64, horizon: u64) {
        info!(
            device,
            cursor, horizon, "a device's cursor is older than the change log; catching up"
        );
        let data = serde_json::json!({
            "device": device,
            "cursor": cursor,
            "horizon": horizon,
        });
        let db = self.database();
        if let Err(error) = db.emit_event(crate::engine::EventKind::ClientTooStale, None, data) {
            warn!(device, %error, "the client.too_stale event could not be recorded");
        }
    }

    fn note_served(&self, device: &str, cursor: u64, checksum: u32) {
        let now = self.inner.wall.now_ms();
        let mut sessions = self.sessions_lock();
        let info = &mut sessions.touch(device, now).info;
        let changed = (info.served_cursor, info.served_checksum) != (cursor, checksum);
        info.served_cursor = cursor;
        info.served_checksum = checksum;
        if changed {
            self.note_session(info);
        }
    }

    fn remembered(&self, device: &str, op: &str) -> Option<OpResult> {
        if op.is_empty() {
            return None;
        }
        let now = self.inner.wall.now_ms();
        self.sessions_lock().touch(device, now).remembered(op)
    }

    fn remember(&self, device: &str, result: &OpResult) {
        if result.op.is_empty() {
            return;
        }
        let now = self.inner.wall.now_ms();
        let mut sessions = self.sessions_lock();
        let session = sessions.touch(device, now);
        session.info.pushes += 1;
        session.remember(result);
        if let Some(journal) = self.inner.db.journal() {
            let op = Entry::Op {
                device: device.into(),
                result: result.clone(),
            };
            journal.append(&op.encode(), None);
            journal.append_note(&Entry::Session(session.info.clone()).encode());
        }
    }
}

/// The table as schema version `version` shows it (the engine's form), and as
/// it is now.
fn view_of(
    db: &Database,
    table: &str,
    version: Option<u32>,
) -> Result<(TableSchema, TableSchema), SyncError> {
    db.table_view(table, version).map_err(|error| match error {
        EngineError::Read(crate::engine::ReadError::UnknownTable { table }) => {
            SyncError::UnknownTable { table }
        }
        error => SyncError::Engine(error),
    })
}

/// A wire scope as the engine's scope: filters named and typed as the app's
/// schema version (`view`) has them, on the current fields.
fn table_scope(
    scope: &WireScope,
    view: &TableSchema,
    current: &TableSchema,
) -> Result<TableScope, SyncError> {
    let filters = scope
        .filters
        .iter()
        .map(|filter| engine_filter(filter, view, current))
        .collect::<Result<_, _>>()?;
    Ok(TableScope {
        table: scope.table.clone(),
        filters,
    })
}

fn engine_filter(
    filter: &WireFilter,
    view: &TableSchema,
    current: &TableSchema,
) -> Result<Filter, SyncError> {
    let bad = |problem: &str| SyncError::BadFilter {
        table: view.name.clone(),
        field: filter.field.clone(),
        problem: problem.to_owned(),
    };
    let spec = view
        .spec(&filter.field)
        .ok_or_else(|| bad("no such field"))?;
    // The same values under the current version's name and type.
    let now = current
        .position_of_key(spec.doc_key())
        .map(|position| &current.fields[position])
        .filter(|field| !field.retired)
        .ok_or_else(|| bad("the field was removed: filter on it with the current app"))?;
    let typed = |value: &crate::sync::message::WireValue| {
        value
            .typed(spec.kind)
            .and_then(|value| now.kind.convert(value))
            .ok_or_else(|| bad(&format!("the value does not fit a {} field", spec.kind)))
    };
    let shape = FilterOp::shape(&filter.op)
        .ok_or_else(|| bad(&format!("unknown operator; use {}", FilterOp::NAMES)))?;
    let op = match shape {
        OperatorShape::One(make) => make(typed(&filter.value)?),
        OperatorShape::List => match &filter.value {
            crate::sync::message::WireValue::Array(items) => {
                FilterOp::In(items.iter().map(typed).collect::<Result<_, _>>()?)
            }
            _ => return Err(bad("`in` takes an array")),
        },
        OperatorShape::Text => match &filter.value {
            crate::sync::message::WireValue::Str(prefix) => FilterOp::Prefix(prefix.clone()),
            _ => return Err(bad("`prefix` takes a string")),
        },
    };
    Ok(Filter::new(now.name.clone(), op))
}

/// Pushed field values typed by the schema.
fn typed_fields(
    schema: &TableSchema,
    set: &BTreeMap<String, crate::sync::message::WireValue>,
) -> Result<Fields, (&'static str, String)> {
    set.iter()
        .map(|(field, value)| {
            let spec = schema.spec(field).ok_or_else(|| {
                (
                    "unknown_field",
                    format!("table `{}` has no field `{field}`", schema.name),
                )
            })?;
            let typed = value.typed(spec.kind).ok_or_else(|| {
                (
                    "type_mismatch",
                    format!(
                        "field `{field}` of table `{}` takes {} values",
                        schema.name, spec.kind
                    ),
                )
            })?;
            Ok((field.clone(), typed))
        })
        .collect()
}

/// A refused request's answer: an error message.
/// What a pull's answer tells the device about its next sync.
fn hint_of(plan: &ServePlan) -> SyncHint {
    SyncHint {
        mode: plan.profile.power.name().to_owned(),
        next_sync_ms: millis(plan.next_sync),
        long_poll_ms: millis(plan.long_poll),
    }
}

fn refusal(error: SyncError) -> Vec<u8> {
    debug!(code = error.code(), %error, "sync request refused");
    let body = ErrorBody {
        code: error.code().to_owned(),
        message: error.to_string(),
    };
    wire::seal_value(MessageKind::Error, &body, false)
}

/// Held-back records grouped by table, in the order the scan listed them.
fn deferred_ids(scopes: &[TableScope], held: Vec<(usize, String)>) -> Vec<DeferredIds> {
    let mut deferred: Vec<DeferredIds> = Vec::new();
    for (scope, id) in held {
        let table = &scopes[scope].table;
        match deferred.iter_mut().find(|entry| &entry.table == table) {
            Some(entry) => entry.ids.push(id),
            None => deferred.push(DeferredIds {
                table: table.clone(),
                ids: vec![id],
            }),
        }
    }
    deferred
}

/// The profile a request reports, if it reports one.
fn reported_profile(
    power: Option<&str>,
    network: Option<&str>,
) -> Result<Option<PowerProfile>, SyncError> {
    if power.is_none() && network.is_none() {
        return Ok(None);
    }
    Ok(Some(PowerProfile::from_wire(power, network)?))
}

fn millis(duration: std::time::Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

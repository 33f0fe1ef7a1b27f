//! Pull, push and acknowledgement: the client's side of the sync protocol.
//!
//! A pull stores each batch whole (planned on a blocking thread, swapped in with
//! its cursor in one step), so an interruption loses at most the batch in
//! flight and the next pull starts after the last stored one. A push sends the
//! oldest queued ops; an op leaves the queue only once the server answered it,
//! and a retry resends the very same bytes.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{debug, warn};

use crate::client::error::{ApplyError, ClientError, TransportError};
use crate::client::replica::{BatchOutcome, BatchSnapshot, plan};
use crate::client::transport::Transport;
use crate::client::{Client, MAX_ATTEMPTS, State, lock_state, micros};
use crate::power::PowerProfile;
use crate::sync::wire::MessageKind;
use crate::sync::{
    AckRequest, AckResult, OpResult, OpStatus, PullBatch, PullRequest, PushOp, PushRequest,
    PushResult, RecordRef, decode_pull_response_with, decode_response, encode_request,
};

/// The most records asked for whole in one pull.
const MAX_FETCH_PER_PULL: usize = 1_000;

/// Extra pulls one `pull_all` makes only to fetch records whole.
const MAX_FETCH_ROUNDS: usize = 4;

/// What a pull stored.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PullReport {
    pub batches: usize,
    /// Records received in the stored batches.
    pub records: usize,
    /// Records already stored (re-sent), skipped.
    pub skipped: usize,
    /// Records merged with pending local edits.
    pub merged: usize,
    /// The cursor after the pull.
    pub cursor: u64,
}

impl PullReport {
    fn add(&mut self, outcome: &BatchOutcome) {
        self.batches += 1;
        self.records += outcome.records;
        self.skipped += outcome.skipped;
        self.merged += outcome.merged;
        self.cursor = outcome.next_cursor;
    }
}

/// An operation the server refused. Its local edits are dropped: the record is
/// fetched whole on the next pull (or removed, if the server never had it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RejectedOp {
    pub op: String,
    pub table: String,
    pub id: String,
    /// The server's stable code (`dependency_rejected` for a later op on the same
    /// record, dropped because it builds on the refused one).
    pub code: String,
    pub reason: String,
}

/// What a push did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PushReport {
    /// Ops answered by the server.
    pub answered: usize,
    pub applied: usize,
    /// Ops the server had already applied (a retry after a lost answer).
    pub duplicates: usize,
    pub rejected: Vec<RejectedOp>,
}

/// What a sync (push, then pull) did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncReport {
    pub push: PushReport,
    pub pull: PullReport,
}

impl<T: Transport> Client<T> {
    /// Pushes the write queue, then pulls until the replica is up to date.
    ///
    /// # Errors
    ///
    /// As [`Client::push`] and [`Client::pull_all`]; what was stored before the
    /// error stays stored.
    pub async fn sync(&self) -> Result<SyncReport, ClientError> {
        let _syncing = self.sync_lock().await;
        let push = self.push_queue().await?;
        let pull = self.pull_until_done().await?;
        Ok(SyncReport { push, pull })
    }

    /// Pulls one batch and stores it.
    ///
    /// # Errors
    ///
    /// [`ClientError`] for a transport failure (after retries), a refusal, or a
    /// batch that cannot be stored; the replica is unchanged then.
    pub async fn pull_once(&self) -> Result<PullReport, ClientError> {
        let _syncing = self.sync_lock().await;
        let mut report = PullReport::default();
        report.add(&self.pull_batch(None).await?);
        Ok(report)
    }

    /// Pulls batches until none is left (and the records to fetch whole are
    /// fetched), then acknowledges the cursor if it moved (a pull acknowledges
    /// the cursor it was made with, so a pull that found nothing costs one
    /// request).
    ///
    /// # Errors
    ///
    /// As [`Client::pull_once`]; the batches stored before the error stay stored,
    /// and the next pull resumes after them.
    pub async fn pull_all(&self) -> Result<PullReport, ClientError> {
        let _syncing = self.sync_lock().await;
        self.pull_until_done().await
    }

    /// Sends the queued operations, oldest first, and settles each by the
    /// server's answer.
    ///
    /// # Errors
    ///
    /// [`ClientError`] for a transport failure (after retries) or a refusal of
    /// the whole push; the unanswered ops stay queued, to be resent unchanged.
    pub async fn push(&self) -> Result<PushReport, ClientError> {
        let _syncing = self.sync_lock().await;
        self.push_queue().await
    }

    /// Takes the sync lock for a sync the app asked for: a long poll of
    /// [`Client::autosync`] holding it gives way.
    async fn sync_lock(&self) -> tokio::sync::MutexGuard<'_, ()> {
        if let Ok(guard) = self.inner.syncing.try_lock() {
            return guard;
        }
        self.inner.interrupt.notify_waiters();
        self.inner.syncing.lock().await
    }

    async fn pull_until_done(&self) -> Result<PullReport, ClientError> {
        self.pull_from(None).await
    }

    /// Pulls until done as [`Client::pull_all`] does; with `wait`, the first
    /// pull is held as a long poll when it has nothing to send. The caller
    /// holds the sync lock.
    pub(crate) async fn pull_from(
        &self,
        mut wait: Option<Duration>,
    ) -> Result<PullReport, ClientError> {
        let mut report = PullReport::default();
        let mut fetch_rounds = 0;
        let started_at = self.cursor();
        loop {
            let cursor = self.cursor();
            let outcome = self.pull_batch(wait.take()).await?;
            report.add(&outcome);
            if outcome.has_more {
                // A batch of fetched records may leave the cursor where it was; an
                // empty one that does not move it would repeat forever.
                if outcome.next_cursor <= cursor && outcome.records == 0 {
                    return Err(ApplyError::NoProgress { cursor }.into());
                }
                continue;
            }
            let fetch_waiting = {
                let mut state = self.lock();
                state.replica.refetch_confirmed();
                let profile = state.profile.unwrap_or_default();
                !state.replica.fetch.is_empty()
                    || (self.inner.config.power.fetches_deferred(profile)
                        && !state.replica.deferred.is_empty())
            };
            if !fetch_waiting || fetch_rounds == MAX_FETCH_ROUNDS {
                break;
            }
            fetch_rounds += 1;
        }
        // A pull with a cursor acknowledges it already: a pull that found
        // nothing new costs one request, not two.
        if self.cursor() != started_at {
            self.acknowledge().await;
        }
        Ok(report)
    }

    /// Pulls and stores one batch; with `wait`, as a long poll.
    async fn pull_batch(&self, wait: Option<Duration>) -> Result<BatchOutcome, ClientError> {
        let (request, cursor) = self.pull_request(wait);
        if wait.is_some() {
            self.count(|stats| stats.long_polls += 1);
        }
        let message = self.encode(MessageKind::PullRequest, &request);
        let limit = self.inner.config.max_message_bytes;
        let batch = self
            .retrying(|| {
                let message = message.clone();
                async move {
                    let answer = self.round_trip_waiting(message, wait).await?;
                    let inner = Arc::clone(&self.inner);
                    let (decoded, cpu) = tokio::task::spawn_blocking(move || {
                        let started = Instant::now();
                        // Asked only for a record whose changes name a
                        // dependency by prefix.
                        let held = |table: &str, id: &str| {
                            let state = lock_state(&inner.state);
                            state
                                .replica
                                .record(table, id)
                                .map(|record| record.bytes.clone())
                        };
                        let decoded = decode_pull_response_with(&answer, limit, &held);
                        (decoded, started.elapsed())
                    })
                    .await
                    .map_err(ClientError::Task)?;
                    self.count(|stats| stats.cpu_micros += micros(cpu));
                    decoded.map_err(ClientError::from)
                }
            })
            .await?;
        if batch.hint.is_some() {
            self.lock().hint.clone_from(&batch.hint);
        }
        if batch.from != cursor {
            return Err(ApplyError::OutOfOrder {
                expected: cursor,
                found: batch.from,
            }
            .into());
        }
        self.store(Arc::new(batch), request.fetch).await
    }

    fn pull_request(&self, wait: Option<Duration>) -> (PullRequest, u64) {
        let config = &self.inner.config;
        let mut state = self.lock();
        state.replica.restate_schema(config.schema_version);
        let profile = state.profile;
        let fetch_deferred = config.power.fetches_deferred(profile.unwrap_or_default());
        let replica = &state.replica;
        let deferred = replica.deferred.iter().filter(|_| fetch_deferred);
        let (power, network) = PowerProfile::to_wire(profile);
        let request = PullRequest {
            device: config.device.clone(),
            cursor: replica.cursor,
            base: Some(replica.base),
            tables: config.tables.clone(),
            fetch: replica
                .fetch
                .iter()
                .chain(deferred.filter(|key| !replica.fetch.contains(*key)))
                .take(MAX_FETCH_PER_PULL)
                .cloned()
                .collect(),
            max_records: config.batch_records,
            max_bytes: config.batch_bytes,
            level: config.level,
            schema_version: config.schema_version,
            profile: power,
            network,
            wait_ms: wait.map(|wait| u64::try_from(wait.as_millis()).unwrap_or(u64::MAX)),
            explicit_rows: false,
        };
        (request, replica.cursor)
    }

    /// Plans the batch off the async thread on a snapshot of the records it
    /// touches, then swaps it in, unless a local write changed the replica
    /// meanwhile (then it is planned again).
    async fn store(
        &self,
        batch: Arc<PullBatch>,
        requested: Vec<RecordRef>,
    ) -> Result<BatchOutcome, ClientError> {
        let requested = Arc::new(requested);
        for _ in 0..MAX_ATTEMPTS {
            let (snapshot, epoch) = {
                let state = self.lock();
                (BatchSnapshot::of(&state.replica, &batch), state.epoch)
            };
            let planned = {
                let batch = Arc::clone(&batch);
                let requested = Arc::clone(&requested);
                tokio::task::spawn_blocking(move || {
                    let started = Instant::now();
                    let planned = plan(&batch, snapshot, &requested);
                    planned.map(|planned| (planned, started.elapsed()))
                })
                .await
                .map_err(ClientError::Task)?
            }?;
            let (planned, cpu) = planned;
            let mut state = self.lock();
            state.stats.cpu_micros += micros(cpu);
            if state.epoch != epoch {
                continue;
            }
            let outcome = state.replica.commit(planned);
            let stats = &mut state.stats;
            stats.records_deferred += outcome.deferred as u64;
            stats.batches_applied += 1;
            stats.records_received += outcome.records as u64;
            stats.records_skipped += outcome.skipped as u64;
            stats.records_merged += outcome.merged as u64;
            debug!(
                device = %self.inner.config.device,
                cursor = outcome.next_cursor,
                records = outcome.records,
                skipped = outcome.skipped,
                merged = outcome.merged,
                "batch stored"
            );
            return Ok(outcome);
        }
        Err(ClientError::Contended)
    }

    /// Tells the server the cursor is stored. A failure is only counted: the
    /// next pull acknowledges the cursor too.
    async fn acknowledge(&self) {
        let config = &self.inner.config;
        let ack = {
            let state = self.lock();
            AckRequest {
                device: config.device.clone(),
                cursor: state.replica.cursor,
                checksum: state.replica.checksum,
            }
        };
        let message = encode_request(MessageKind::AckRequest, &ack);
        let answer = match self.round_trip(message).await {
            Ok(answer) => decode_response::<AckResult>(
                &answer,
                MessageKind::AckResult,
                config.max_message_bytes,
            )
            .map_err(ClientError::from),
            Err(error) => Err(error),
        };
        match answer {
            Ok(_) => self.count(|stats| stats.acks += 1),
            Err(error) => {
                warn!(device = %config.device, %error, "acknowledgement failed; the next pull acknowledges the cursor");
                self.count(|stats| stats.acks_failed += 1);
            }
        }
    }

    pub(crate) async fn push_queue(&self) -> Result<PushReport, ClientError> {
        let config = &self.inner.config;
        let mut report = PushReport::default();
        let profile = self.lock().profile;
        // Writes to low-priority tables wait in modes that hold them back.
        let admit = |table: &str| config.power.pushes(profile.unwrap_or_default(), table);
        let rounds = self
            .lock()
            .replica
            .queue
            .count_where(admit)
            .div_ceil(config.push_ops);
        for _ in 0..rounds {
            let ops = self
                .lock()
                .replica
                .queue
                .next_batch_where(config.push_ops, admit);
            if ops.is_empty() {
                break;
            }
            let (power, network) = PowerProfile::to_wire(profile);
            let request = PushRequest {
                device: config.device.clone(),
                ops,
                schema_version: config.schema_version,
                profile: power,
                network,
            };
            let message = self.encode(MessageKind::PushRequest, &request);
            let result: PushResult = self
                .retrying(|| {
                    let message = message.clone();
                    async move {
                        let answer = self.round_trip(message).await?;
                        decode_response(&answer, MessageKind::PushResult, config.max_message_bytes)
                            .map_err(ClientError::from)
                    }
                })
                .await?;
            self.lock()
                .settle(&request.ops, result.results, &mut report);
        }
        Ok(report)
    }

    /// Runs `attempt` until it succeeds, fails for good, or the retry policy
    /// gives up, waiting between tries.
    async fn retrying<R, F, Fut>(&self, mut attempt: F) -> Result<R, ClientError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<R, ClientError>>,
    {
        let policy = &self.inner.config.retry;
        let mut tries = 0;
        loop {
            tries += 1;
            let error = match attempt().await {
                Ok(value) => return Ok(value),
                Err(error) => error,
            };
            if matches!(error, ClientError::InvalidResponse(_)) {
                self.count(|stats| stats.invalid_responses += 1);
            }
            if !error.is_retryable() || tries >= policy.attempts {
                return Err(error);
            }
            debug!(device = %self.inner.config.device, %error, tries, "request failed; retrying");
            self.count(|stats| stats.retries += 1);
            // A server that said when to come back (429, 503) is not asked sooner.
            let backoff = policy.backoff(tries);
            let wait = error
                .retry_after()
                .map_or(backoff, |after| after.max(backoff));
            tokio::time::sleep(wait).await;
        }
    }

    /// Encodes (and compresses) a request, counting the CPU time it took.
    fn encode<R: serde::Serialize>(&self, kind: MessageKind, request: &R) -> Vec<u8> {
        let started = Instant::now();
        let message = encode_request(kind, request);
        self.count(|stats| stats.cpu_micros += micros(started.elapsed()));
        message
    }

    /// One exchange, bounded by the request timeout, counted.
    async fn round_trip(&self, message: Vec<u8>) -> Result<Vec<u8>, ClientError> {
        self.round_trip_waiting(message, None).await
    }

    /// One exchange; a long poll of up to `wait` may take that much longer
    /// than the request timeout.
    async fn round_trip_waiting(
        &self,
        message: Vec<u8>,
        wait: Option<Duration>,
    ) -> Result<Vec<u8>, ClientError> {
        let sent = message.len() as u64;
        self.count(|stats| {
            stats.requests += 1;
            stats.bytes_sent += sent;
        });
        let timeout = self.inner.config.request_timeout + wait.unwrap_or_default();
        let answer = tokio::time::timeout(timeout, self.inner.transport.exchange(message))
            .await
            .map_err(|_| TransportError::TimedOut {
                timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
            })??;
        let mut state = self.lock();
        state.stats.bytes_received += answer.len() as u64;
        state.last_exchange = Some(tokio::time::Instant::now());
        Ok(answer)
    }
}

impl State {
    /// Settles pushed ops by the server's results: answered ops leave the queue;
    /// accepted ones wait for their echo, rejected ones drop their record's local
    /// edits. Ops without a result stay queued.
    fn settle(&mut self, sent: &[PushOp], results: Vec<OpResult>, report: &mut PushReport) {
        for result in results {
            if !sent.iter().any(|op| op.op == result.op) {
                continue;
            }
            let Some(queued) = self.replica.queue.remove(&result.op) else {
                continue;
            };
            report.answered += 1;
            let key = RecordRef {
                table: queued.op.table,
                id: queued.op.id,
            };
            match result.status {
                OpStatus::Applied | OpStatus::Duplicate => {
                    if result.status == OpStatus::Applied {
                        report.applied += 1;
                        self.stats.ops_applied += 1;
                    } else {
                        report.duplicates += 1;
                        self.stats.ops_duplicate += 1;
                    }
                    let seq = result.seqs.iter().copied().max().unwrap_or(0);
                    let confirm = self.replica.confirm.entry(key).or_insert(0);
                    *confirm = (*confirm).max(seq);
                }
                OpStatus::Rejected => self.reject(key, result, report),
            }
        }
        self.epoch += 1;
    }

    /// Drops the record's local edits after the server refused one: later ops
    /// on it build on the refused change, so they go too. A record the server
    /// has is fetched whole; one it never had is removed.
    fn reject(&mut self, key: RecordRef, result: OpResult, report: &mut PushReport) {
        let code = result.code.unwrap_or_else(|| "rejected".to_owned());
        let reason = result.reason.unwrap_or_default();
        warn!(table = %key.table, record = %key.id, op = %result.op, %code, %reason, "pushed operation rejected");
        report.rejected.push(RejectedOp {
            op: result.op.clone(),
            table: key.table.clone(),
            id: key.id.clone(),
            code,
            reason,
        });
        let dropped = self.replica.queue.remove_record(&key.table, &key.id);
        self.stats.ops_rejected += 1 + dropped.len() as u64;
        for dropped in dropped {
            report.rejected.push(RejectedOp {
                op: dropped.op.op,
                table: key.table.clone(),
                id: key.id.clone(),
                code: "dependency_rejected".to_owned(),
                reason: format!(
                    "an earlier operation on this record ({}) was rejected",
                    result.op
                ),
            });
        }
        let confirmed = self.replica.confirm.remove(&key).is_some();
        let Some(table) = self.replica.tables.get_mut(&key.table) else {
            return;
        };
        match table.records.get_mut(&key.id) {
            Some(record) if record.seq == 0 && !confirmed => {
                table.records.remove(&key.id);
            }
            Some(record) => {
                record.pending = false;
                self.replica.refused.insert(key.clone());
                self.replica.fetch.insert(key);
            }
            None => {}
        }
    }
}

//! The journal: an append-only log of frames with group commit.
//!
//! Writers append a frame while they hold the engine's lock (so frames are in
//! the order the changes were made), release the lock, then wait for the frame
//! to be acknowledged. The first waiter to find no write in progress becomes the
//! leader: it takes every frame appended so far, writes them with one positional
//! write, syncs once (under `fsync = always`), and wakes every waiter its write
//! covered. While it works, new frames pile up for the next leader, so one
//! `fsync` acknowledges as many writes as arrived during the previous one.
//!
//! Positions in the journal (LSNs) are byte offsets in the stream of frames
//! across segment files; a segment's header names the LSN it starts at.
//!
//! Bytes not yet known durable stay in memory until an `fsync` succeeds. When a
//! write or a sync fails (a full disk, an I/O error), the journal is marked
//! failed: waiters get [`StorageError::Unavailable`], the engine refuses new
//! writes up front, and a background thread retries every `retry` by writing
//! the kept bytes again at their place and syncing. After a failed `fsync` the
//! kernel may have dropped the dirty pages, so the kept bytes are rewritten,
//! never trusted to the page cache. When the retry succeeds, writes resume.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tracing::{debug, error, info};

use super::disk::{Disk, LogFile};
use super::{FsyncPolicy, StorageError, frame};

/// The first bytes of a segment's header frame body.
pub(crate) const SEGMENT_MAGIC: &[u8; 8] = b"MSDB-WAL";
/// The segment format version.
pub(crate) const SEGMENT_VERSION: u32 = 1;

/// A segment file's name for the LSN it starts at.
pub(crate) fn segment_name(base: u64) -> String {
    format!("wal-{base:020}.log")
}

/// The header frame of a segment starting at `base`.
pub(crate) fn segment_header(base: u64) -> Vec<u8> {
    let mut body = Vec::with_capacity(20);
    body.extend_from_slice(SEGMENT_MAGIC);
    body.extend_from_slice(&SEGMENT_VERSION.to_le_bytes());
    body.extend_from_slice(&base.to_le_bytes());
    let mut out = Vec::new();
    frame::put(&body, &mut out);
    out
}

/// The open segment: where frames go.
#[derive(Debug)]
pub(crate) struct Segment {
    pub(crate) file: Arc<dyn LogFile>,
    pub(crate) path: PathBuf,
    /// The LSN of the segment's first frame.
    pub(crate) base: u64,
    /// Bytes of the header before it.
    pub(crate) header: u64,
}

impl Segment {
    fn offset(&self, lsn: u64) -> u64 {
        self.header + (lsn - self.base)
    }

    /// Creates the segment starting at `base` in `dir`, durably.
    pub(crate) fn create(disk: &dyn Disk, dir: &Path, base: u64) -> Result<Segment, StorageError> {
        let path = dir.join(segment_name(base));
        let io = |source| StorageError::io(&path, source);
        let file = disk.create(&path).map_err(io)?;
        let header = segment_header(base);
        file.write_at(&header, 0).map_err(io)?;
        file.sync().map_err(io)?;
        disk.sync_dir(dir)
            .map_err(|source| StorageError::io(dir, source))?;
        Ok(Segment {
            file,
            path,
            base,
            header: header.len() as u64,
        })
    }
}

/// What the journal has done, for health and metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct JournalStats {
    /// The LSN after the last frame appended.
    pub appended: u64,
    /// The LSN up to which frames are handed to the operating system.
    pub written: u64,
    /// The LSN up to which frames are known durable.
    pub synced: u64,
    /// Group writes made (each covering every frame appended before it).
    pub groups: u64,
    /// Successful `fsync`s of the journal.
    pub syncs: u64,
    /// Frame bytes appended since the last snapshot.
    pub since_snapshot: u64,
    /// Session notes not logged because storage was failing.
    pub dropped_notes: u64,
    /// Why storage refuses writes, while it does.
    pub failure: Option<String>,
}

/// What the journal counts, beside its positions.
#[derive(Debug, Default)]
struct Counters {
    groups: u64,
    syncs: u64,
    since_snapshot: u64,
    dropped_notes: u64,
    /// Why storage refuses writes, while it does.
    failure: Option<String>,
}

#[derive(Debug)]
struct Inner {
    segment: Segment,
    /// Frame bytes from `buf_start` to `appended`: everything not yet known durable.
    buf: Vec<u8>,
    buf_start: u64,
    appended: u64,
    written: u64,
    synced: u64,
    /// (LSN after a frame, the sequence number it carries), oldest first.
    marks: VecDeque<(u64, u64)>,
    /// A leader is writing (or syncing) outside the lock.
    leader: bool,
    last_sync: Instant,
    closed: bool,
    counters: Counters,
}

/// How far a waiter needs the journal to be.
#[derive(Clone, Copy, Debug)]
enum Reach {
    /// As the policy acknowledges writes.
    Acknowledged,
    /// As the policy makes changes durable for pulls.
    Durable,
    /// Synced, whatever the policy.
    Synced,
}

#[derive(Debug)]
struct Shared {
    inner: Mutex<Inner>,
    wake: Condvar,
    policy: FsyncPolicy,
    interval: Duration,
    retry: Duration,
    /// The latest sequence number whose change is durable (as the policy means
    /// it): what a pull may serve.
    durable_seq: AtomicU64,
    healthy: AtomicBool,
    disk: Arc<dyn Disk>,
    dir: PathBuf,
}

/// The journal handle; clones share one journal.
#[derive(Clone, Debug)]
pub struct Journal {
    shared: Arc<Shared>,
    /// Held for its drop: the last handle stops the background thread.
    _background: Arc<Background>,
}

/// The background thread: syncs under `interval`, flushes notes nobody waits
/// for, retries after a failure. Stopped when the last handle goes.
#[derive(Debug)]
struct Background {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Background {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.wake.notify_all();
        if let Some(thread) = self.thread.lock().ok().and_then(|mut slot| slot.take()) {
            let _ = thread.join();
        }
    }
}

/// How a journal is opened.
#[derive(Debug)]
pub(crate) struct JournalOptions {
    pub(crate) policy: FsyncPolicy,
    pub(crate) interval: Duration,
    pub(crate) retry: Duration,
    pub(crate) disk: Arc<dyn Disk>,
    pub(crate) dir: PathBuf,
}

impl Journal {
    /// A journal appending to `segment` at `end`, with `durable_seq` durable.
    pub(crate) fn start(
        options: JournalOptions,
        segment: Segment,
        end: u64,
        durable_seq: u64,
        since_snapshot: u64,
    ) -> Journal {
        let inner = Inner {
            segment,
            buf: Vec::new(),
            buf_start: end,
            appended: end,
            written: end,
            synced: end,
            marks: VecDeque::new(),
            leader: false,
            last_sync: Instant::now(),
            closed: false,
            counters: Counters {
                since_snapshot,
                ..Counters::default()
            },
        };
        let shared = Arc::new(Shared {
            inner: Mutex::new(inner),
            wake: Condvar::new(),
            policy: options.policy,
            interval: options.interval,
            retry: options.retry,
            durable_seq: AtomicU64::new(durable_seq),
            healthy: AtomicBool::new(true),
            disk: options.disk,
            dir: options.dir,
        });
        let thread = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("msdb-journal".into())
                .spawn(move || shared.background())
                .expect("the journal thread starts")
        };
        Journal {
            _background: Arc::new(Background {
                shared: Arc::clone(&shared),
                thread: Mutex::new(Some(thread)),
            }),
            shared,
        }
    }

    /// Appends a frame holding `body`; `seq` is the latest sequence number the
    /// frame makes durable, if any. Returns the LSN to wait for.
    pub fn append(&self, body: &[u8], seq: Option<u64>) -> u64 {
        let mut inner = self.shared.lock();
        frame::put(body, &mut inner.buf);
        let end = inner.buf_start + inner.buf.len() as u64;
        inner.appended = end;
        inner.counters.since_snapshot += (frame::HEADER_BYTES + body.len()) as u64;
        if let Some(seq) = seq {
            inner.marks.push_back((end, seq));
        }
        end
    }

    /// Appends a frame nobody waits for and whose loss costs nothing but
    /// freshness (a session's counters): skipped while storage is failing.
    pub fn append_note(&self, body: &[u8]) {
        if !self.is_healthy() {
            self.shared.lock().counters.dropped_notes += 1;
            return;
        }
        self.append(body, None);
    }

    /// Waits until the frame ending at `lsn` is acknowledged under the policy:
    /// synced (`always`) or handed to the operating system (`interval`, `never`).
    ///
    /// # Errors
    ///
    /// [`StorageError::Unavailable`] when storage failed before it was.
    pub fn wait(&self, lsn: u64) -> Result<(), StorageError> {
        self.shared.wait_for(Some(lsn), Reach::Acknowledged)
    }

    /// Waits until everything appended so far is durable (synced, or handed
    /// to the operating system under `never`), syncing now rather than at the
    /// next interval: what a pull needs before it serves the latest changes.
    ///
    /// # Errors
    ///
    /// [`StorageError::Unavailable`] when storage is failing.
    pub fn make_durable(&self) -> Result<(), StorageError> {
        self.shared.wait_for(None, Reach::Durable)
    }

    /// Waits for everything appended so far; see [`Journal::wait`].
    ///
    /// # Errors
    ///
    /// As [`Journal::wait`].
    pub fn wait_all(&self) -> Result<(), StorageError> {
        let lsn = self.shared.lock().appended;
        self.wait(lsn)
    }

    /// Whether storage takes writes (false from a failure until a retry succeeds).
    pub fn is_healthy(&self) -> bool {
        self.shared.healthy.load(Ordering::Acquire)
    }

    /// Why storage refuses writes, while it does.
    ///
    /// # Errors
    ///
    /// [`StorageError::Unavailable`] while storage is failing.
    pub fn check_healthy(&self) -> Result<(), StorageError> {
        if self.is_healthy() {
            return Ok(());
        }
        let reason = self.shared.lock().counters.failure.clone();
        Err(StorageError::Unavailable {
            reason: reason.unwrap_or_else(|| "storage is recovering".to_owned()),
        })
    }

    /// The latest sequence number whose change is durable.
    pub fn durable_seq(&self) -> u64 {
        self.shared.durable_seq.load(Ordering::Acquire)
    }

    pub fn stats(&self) -> JournalStats {
        let inner = self.shared.lock();
        let counters = &inner.counters;
        JournalStats {
            appended: inner.appended,
            written: inner.written,
            synced: inner.synced,
            groups: counters.groups,
            syncs: counters.syncs,
            since_snapshot: counters.since_snapshot,
            dropped_notes: counters.dropped_notes,
            failure: counters.failure.clone(),
        }
    }

    pub fn policy(&self) -> FsyncPolicy {
        self.shared.policy
    }

    /// Flushes and syncs everything appended, then starts a new segment at the
    /// current end, which it returns. The caller holds every lock that appends,
    /// so the end is a consistent cut for a snapshot.
    ///
    /// # Errors
    ///
    /// [`StorageError`] when the flush, the sync or the new segment fails.
    pub(crate) fn rotate(&self) -> Result<u64, StorageError> {
        let shared = &self.shared;
        let mut inner = shared.lock();
        while inner.leader {
            inner = shared.wake.wait(inner).unwrap_or_else(|p| p.into_inner());
        }
        if let Some(failure) = &inner.counters.failure {
            return Err(StorageError::Unavailable {
                reason: failure.clone(),
            });
        }
        let from = inner.written;
        let end = inner.appended;
        let start = usize::try_from(from - inner.buf_start).unwrap_or(usize::MAX);
        let offset = inner.segment.offset(from);
        let io = |source| StorageError::io(&inner.segment.path, source);
        inner
            .segment
            .file
            .write_at(&inner.buf[start..], offset)
            .and_then(|()| inner.segment.file.sync())
            .map_err(io)?;
        let segment = Segment::create(shared.disk.as_ref(), &shared.dir, end)?;
        inner.segment = segment;
        inner.written = end;
        inner.synced = end;
        inner.counters.since_snapshot = 0;
        inner.counters.syncs += 1;
        shared.settle(&mut inner);
        shared.wake.notify_all();
        Ok(end)
    }

    /// Flushes and syncs everything appended (a clean shutdown).
    ///
    /// # Errors
    ///
    /// As [`Journal::wait`].
    pub fn flush(&self) -> Result<(), StorageError> {
        self.shared.wait_for(None, Reach::Synced)
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Where waiters are acknowledged.
    fn acknowledged(&self, inner: &Inner) -> u64 {
        match self.policy {
            FsyncPolicy::Always => inner.synced,
            FsyncPolicy::Interval | FsyncPolicy::Never => inner.written,
        }
    }

    /// Waits until the journal reached `target` (everything appended so far
    /// when `None`) in the sense of `reach`, leading groups while no one else
    /// does.
    fn wait_for(&self, target: Option<u64>, reach: Reach) -> Result<(), StorageError> {
        let mut inner = self.lock();
        let target = target.unwrap_or(inner.appended);
        let sync = match reach {
            Reach::Acknowledged => self.policy == FsyncPolicy::Always,
            Reach::Durable => self.policy != FsyncPolicy::Never,
            Reach::Synced => true,
        };
        loop {
            let reached = match reach {
                Reach::Acknowledged => self.acknowledged(&inner),
                Reach::Durable => self.durable(&inner),
                Reach::Synced => inner.synced,
            };
            if reached >= target {
                return Ok(());
            }
            if let Some(failure) = &inner.counters.failure {
                return Err(StorageError::Unavailable {
                    reason: failure.clone(),
                });
            }
            if inner.closed {
                return Err(StorageError::Unavailable {
                    reason: "storage is closed".to_owned(),
                });
            }
            if inner.leader {
                inner = self.wake.wait(inner).unwrap_or_else(|p| p.into_inner());
            } else {
                inner = self.lead(inner, sync);
            }
        }
    }

    /// Where a change counts as durable for pulls.
    fn durable(&self, inner: &Inner) -> u64 {
        match self.policy {
            FsyncPolicy::Always | FsyncPolicy::Interval => inner.synced,
            FsyncPolicy::Never => inner.written,
        }
    }

    /// Writes every frame appended (and syncs when `sync`) as the leader, with
    /// the lock released during the I/O.
    fn lead<'a>(&'a self, mut inner: MutexGuard<'a, Inner>, sync: bool) -> MutexGuard<'a, Inner> {
        inner.leader = true;
        let from = inner.written;
        let end = inner.appended;
        let start = usize::try_from(from - inner.buf_start).unwrap_or(usize::MAX);
        let bytes = inner.buf[start..].to_vec();
        let file = Arc::clone(&inner.segment.file);
        let offset = inner.segment.offset(from);
        let path = inner.segment.path.clone();
        drop(inner);
        let mut result = if bytes.is_empty() {
            Ok(())
        } else {
            file.write_at(&bytes, offset)
        };
        if sync && result.is_ok() {
            result = file.sync();
        }
        let mut inner = self.lock();
        inner.leader = false;
        match result {
            Ok(()) => {
                inner.written = end;
                inner.counters.groups += u64::from(!bytes.is_empty());
                if sync {
                    inner.synced = end;
                    inner.last_sync = Instant::now();
                    inner.counters.syncs += 1;
                }
                self.settle(&mut inner);
            }
            Err(source) => self.fail(&mut inner, &path, &source),
        }
        self.wake.notify_all();
        inner
    }

    /// After progress: drops bytes known durable, moves the durable sequence
    /// number, updates the figures.
    fn settle(&self, inner: &mut Inner) {
        let keep_from = match self.policy {
            FsyncPolicy::Never => inner.written,
            FsyncPolicy::Always | FsyncPolicy::Interval => inner.synced,
        };
        if keep_from > inner.buf_start {
            let drop = usize::try_from(keep_from - inner.buf_start).unwrap_or(usize::MAX);
            inner.buf.drain(..drop);
            inner.buf_start = keep_from;
        }
        let durable = self.durable(inner);
        let mut latest = None;
        while let Some(&(end, seq)) = inner.marks.front() {
            if end > durable {
                break;
            }
            latest = Some(seq);
            inner.marks.pop_front();
        }
        if let Some(seq) = latest {
            self.durable_seq.store(seq, Ordering::Release);
        }
    }

    fn fail(&self, inner: &mut Inner, path: &Path, source: &std::io::Error) {
        let reason = format!(
            "writing {} failed: {source}; writes are refused until the disk takes them again",
            path.display()
        );
        if inner.counters.failure.is_none() {
            error!(path = %path.display(), error = %source, "storage failed: refusing writes, reads go on; retrying every {:?}", self.retry);
        }
        inner.counters.failure = Some(reason);
        self.healthy.store(false, Ordering::Release);
    }

    /// The background thread's loop.
    fn background(&self) {
        let mut inner = self.lock();
        loop {
            if inner.closed {
                return;
            }
            if inner.leader {
                inner = self.wake.wait(inner).unwrap_or_else(|p| p.into_inner());
                continue;
            }
            if inner.counters.failure.is_some() {
                let (guard, _) = self
                    .wake
                    .wait_timeout(inner, self.retry)
                    .unwrap_or_else(|p| p.into_inner());
                inner = guard;
                if !inner.closed && !inner.leader && inner.counters.failure.is_some() {
                    inner = self.retry_failed(inner);
                }
                continue;
            }
            let unsynced = match self.policy {
                FsyncPolicy::Never => inner.appended > inner.written,
                FsyncPolicy::Always | FsyncPolicy::Interval => inner.appended > inner.synced,
            };
            let due = inner.last_sync + self.interval;
            let now = Instant::now();
            if unsynced && now >= due {
                let sync = self.policy != FsyncPolicy::Never;
                inner = self.lead(inner, sync);
                inner.last_sync = Instant::now();
                continue;
            }
            let timeout = if unsynced { due - now } else { self.interval };
            let (guard, _) = self
                .wake
                .wait_timeout(inner, timeout)
                .unwrap_or_else(|p| p.into_inner());
            inner = guard;
        }
    }

    /// Writes every kept byte again at its place and syncs; on success the
    /// failure is over.
    fn retry_failed<'a>(&'a self, mut inner: MutexGuard<'a, Inner>) -> MutexGuard<'a, Inner> {
        inner.leader = true;
        let from = inner.buf_start;
        let end = inner.appended;
        let bytes = inner.buf.clone();
        let file = Arc::clone(&inner.segment.file);
        let offset = inner.segment.offset(from);
        drop(inner);
        let result = file.write_at(&bytes, offset).and_then(|()| file.sync());
        let mut inner = self.lock();
        inner.leader = false;
        match result {
            Ok(()) => {
                inner.written = end;
                inner.synced = end;
                inner.last_sync = Instant::now();
                inner.counters.syncs += 1;
                inner.counters.failure = None;
                self.settle(&mut inner);
                self.healthy.store(true, Ordering::Release);
                info!(
                    rewritten = bytes.len(),
                    "storage recovered: every kept frame is durable, writes resume"
                );
            }
            Err(source) => debug!(error = %source, "storage still failing"),
        }
        self.wake.notify_all();
        inner
    }
}

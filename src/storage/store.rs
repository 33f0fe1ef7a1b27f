//! Opening a data directory (recovery), snapshots and compaction.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mobilesyncdb_crdt::MergePolicy;
use serde::Serialize;
use tracing::{error, info, warn};

use super::disk::{Disk, OsDisk};
use super::entry::{self, Entry, SnapshotEnd};
use super::journal::{Journal, JournalOptions, JournalStats, Segment};
use super::recover::{self, Scanned, snapshot_name};
use super::{StorageConfig, StorageError, frame};
use crate::config::{EngineConfig, SyncConfig};
use crate::engine::{Database, SystemClock, WallClock};
use crate::sync::SyncServer;

/// How to open a data directory.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    pub config: StorageConfig,
    /// The file system (tests pass a [`super::FaultyDisk`]).
    pub disk: Arc<dyn Disk>,
    pub wall: Arc<dyn WallClock>,
    /// Custom merge policies the stored schemas may name, registered before
    /// anything is restored.
    pub policies: Vec<Arc<dyn MergePolicy>>,
}

impl StoreOptions {
    /// The real file system and clock, no custom policies.
    pub fn new(config: StorageConfig) -> StoreOptions {
        StoreOptions {
            config,
            disk: Arc::new(OsDisk),
            wall: Arc::new(SystemClock),
            policies: Vec::new(),
        }
    }
}

/// An opened data directory: the store, and the sync server (with its
/// database) restored from it.
#[derive(Debug)]
pub struct Opened {
    pub store: Store,
    pub sync: SyncServer,
    pub report: RecoveryReport,
}

/// What a start found and did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RecoveryReport {
    /// The journal position of the snapshot loaded, if any.
    pub snapshot_lsn: Option<u64>,
    pub snapshot_records: u64,
    /// Journal frames replayed after the snapshot.
    pub journal_frames: u64,
    pub journal_bytes: u64,
    /// A torn tail cut: the file, where, and how many bytes.
    pub torn_tail: Option<(PathBuf, u64, u64)>,
    pub latest_seq: u64,
    pub sessions: usize,
    pub elapsed_ms: u64,
}

/// A snapshot written.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SnapshotInfo {
    pub path: PathBuf,
    /// The journal position it covers.
    pub lsn: u64,
    pub bytes: u64,
    pub records: u64,
    pub log_entries: u64,
    pub sessions: u64,
    /// How long writes waited while the state was copied, in ms.
    pub pause_ms: u64,
    /// How long the whole snapshot took, in ms.
    pub elapsed_ms: u64,
}

/// Storage as operators see it.
#[derive(Clone, Debug, Serialize)]
pub struct StorageStatus {
    pub data_dir: PathBuf,
    pub fsync: super::FsyncPolicy,
    pub healthy: bool,
    pub journal: JournalStats,
    pub last_snapshot: Option<SnapshotInfo>,
}

/// An open data directory. Clones share it; the last one dropped stops its
/// background thread (the journal is flushed by [`Store::close`]).
#[derive(Clone, Debug)]
pub struct Store {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    config: StorageConfig,
    disk: Arc<dyn Disk>,
    wall: Arc<dyn WallClock>,
    journal: Journal,
    sync: SyncServer,
    /// One snapshot at a time; the last one written.
    snapshots: Mutex<Option<SnapshotInfo>>,
    /// Held for the life of the store: one process per directory.
    _lock: File,
    /// Dropped with the store, which stops the snapshot thread.
    _stop: Mutex<Option<Sender<()>>>,
}

impl Store {
    /// Opens (creating if needed) the data directory of `options.config`,
    /// restores everything in it, and starts journaling.
    ///
    /// # Errors
    ///
    /// [`StorageError::Corrupt`] for damage that is not a torn tail,
    /// [`StorageError::Locked`] when another process has the directory,
    /// [`StorageError::Io`] and [`StorageError::Inconsistent`] otherwise.
    pub fn open(
        options: StoreOptions,
        engine: EngineConfig,
        sync: SyncConfig,
    ) -> Result<Opened, StorageError> {
        let started = Instant::now();
        let StoreOptions {
            config,
            disk,
            wall,
            policies,
        } = options;
        let dir = config
            .data_dir
            .clone()
            .ok_or_else(|| StorageError::Setup("no data directory is configured".to_owned()))?;
        std::fs::create_dir_all(&dir).map_err(|source| StorageError::io(&dir, source))?;
        let lock = lock(&dir)?;
        let db = Database::with_clock(engine, Arc::clone(&wall))
            .map_err(|error| StorageError::Setup(error.to_string()))?;
        for policy in policies {
            db.register_policy(policy)
                .map_err(|error| StorageError::Setup(error.to_string()))?;
        }
        let sync = SyncServer::with_clock(db.clone(), sync, Arc::clone(&wall))
            .map_err(|error| StorageError::Setup(error.to_string()))?;
        let listing = recover::list(&dir)?;
        for path in &listing.temporary {
            info!(path = %path.display(), "removing a snapshot a crash left unfinished");
            let _ = disk.remove(path);
        }
        let mut report = RecoveryReport::default();
        let mut restore = db.restore();
        let start = match listing.snapshots.last() {
            Some((lsn, path)) => {
                let records = load_snapshot(&dir, path, *lsn, disk.as_ref(), &mut restore, &sync)?;
                report.snapshot_lsn = Some(*lsn);
                report.snapshot_records = records;
                *lsn
            }
            None => 0,
        };
        let used: Vec<&(u64, PathBuf)> = listing
            .segments
            .iter()
            .filter(|(base, _)| *base >= start)
            .collect();
        let mut expected = start;
        let mut open_at = None;
        for (index, (base, path)) in used.iter().enumerate() {
            if *base != expected {
                return Err(StorageError::inconsistent(
                    path,
                    format!(
                        "the journal should continue at position {expected}, this segment starts at {base}: a segment is missing"
                    ),
                ));
            }
            let scanned = recover::scan(
                disk.read(path)
                    .map_err(|source| StorageError::io(path, source))?,
            );
            let last = index + 1 == used.len();
            let header = scanned.bodies.first().map(|body| body.end as u64);
            match scanned
                .bodies
                .first()
                .map(|_| recover::segment_base(scanned.body(0)))
            {
                Some(Some(found)) if found == *base => {}
                Some(_) => {
                    return Err(StorageError::inconsistent(
                        path,
                        "the segment header does not name this segment",
                    ));
                }
                None if scanned
                    .damage
                    .as_ref()
                    .is_none_or(|damage| recover::is_torn_tail(last, damage))
                    && last =>
                {
                    // Created by a rotation a crash interrupted: nothing in it.
                    warn!(path = %path.display(), "journal segment without a header: recreated");
                    open_at = Some((None, *base, 0));
                    break;
                }
                None => {
                    return Err(corrupt(
                        &dir,
                        path,
                        &scanned,
                        "an unreadable segment header",
                    ));
                }
            }
            let header = header.unwrap_or(0);
            if let Some(damage) = &scanned.damage
                && !recover::is_torn_tail(last, damage)
            {
                return Err(corrupt(&dir, path, &scanned, &damage.problem));
            }
            for index in 1..scanned.bodies.len() {
                let body = scanned.body(index);
                let entry = entry::decode(body).map_err(|error| {
                    StorageError::inconsistent(
                        path,
                        format!("frame {index} is intact but unreadable: {error}"),
                    )
                })?;
                apply(&mut restore, &sync, entry).map_err(|problem| {
                    StorageError::inconsistent(path, format!("frame {index}: {problem}"))
                })?;
                report.journal_frames += 1;
            }
            let length = scanned.end as u64 - header;
            report.journal_bytes += length;
            expected = base + length;
            if last {
                if let Some(damage) = &scanned.damage {
                    warn!(
                        path = %path.display(),
                        offset = damage.offset,
                        cut = damage.bytes_after,
                        problem = %damage.problem,
                        "journal tail torn by a crash: the interrupted write is cut"
                    );
                    report.torn_tail = Some(((*path).clone(), damage.offset, damage.bytes_after));
                }
                open_at = Some((Some(((*path).clone(), scanned)), *base, header));
            }
        }
        report.latest_seq = restore.latest_seq();
        restore.finish();
        let segment = match open_at {
            Some((Some((path, scanned)), base, header)) => {
                let file = disk
                    .open(&path)
                    .map_err(|source| StorageError::io(&path, source))?;
                if scanned.damage.is_some() {
                    file.set_len(scanned.end as u64)
                        .and_then(|()| file.sync())
                        .map_err(|source| StorageError::io(&path, source))?;
                }
                Segment {
                    file,
                    path,
                    base,
                    header,
                }
            }
            Some((None, base, _)) => Segment::create(disk.as_ref(), &dir, base)?,
            None => Segment::create(disk.as_ref(), &dir, start)?,
        };
        let journal = Journal::start(
            JournalOptions {
                policy: config.fsync,
                interval: Duration::from_millis(config.fsync_interval_ms),
                retry: Duration::from_millis(config.retry_interval_ms),
                disk: Arc::clone(&disk),
                dir: dir.clone(),
            },
            segment,
            expected,
            report.latest_seq,
            expected - start,
        );
        db.attach_journal(journal.clone());
        sync.expire_sessions();
        report.sessions = sync.session_count();
        report.elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        info!(
            dir = %dir.display(),
            fsync = %config.fsync,
            snapshot = ?report.snapshot_lsn,
            records = report.snapshot_records,
            journal_frames = report.journal_frames,
            latest_seq = report.latest_seq,
            sessions = report.sessions,
            elapsed_ms = report.elapsed_ms,
            "data directory opened"
        );
        let (stop, stopped) = mpsc::channel();
        let store = Store {
            inner: Arc::new(Inner {
                dir,
                config,
                disk,
                wall,
                journal,
                sync: sync.clone(),
                snapshots: Mutex::new(None),
                _lock: lock,
                _stop: Mutex::new(Some(stop)),
            }),
        };
        let weak = Arc::downgrade(&store.inner);
        std::thread::Builder::new()
            .name("msdb-snapshot".into())
            .spawn(move || {
                loop {
                    match stopped.recv_timeout(Duration::from_secs(1)) {
                        Err(RecvTimeoutError::Timeout) => {}
                        _ => return,
                    }
                    let Some(inner) = weak.upgrade() else { return };
                    let store = Store { inner };
                    if let Err(error) = store.snapshot_if_due() {
                        error!(%error, "snapshot failed; the journal keeps everything, retrying later");
                    }
                }
            })
            .map_err(|source| StorageError::io(&store.inner.dir, source))?;
        Ok(Opened {
            store,
            sync,
            report,
        })
    }

    pub fn journal(&self) -> &Journal {
        &self.inner.journal
    }

    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Storage as operators see it.
    pub fn status(&self) -> StorageStatus {
        StorageStatus {
            data_dir: self.inner.dir.clone(),
            fsync: self.inner.config.fsync,
            healthy: self.inner.journal.is_healthy(),
            journal: self.inner.journal.stats(),
            last_snapshot: self.last_snapshot(),
        }
    }

    pub fn last_snapshot(&self) -> Option<SnapshotInfo> {
        self.inner
            .snapshots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Takes a snapshot when the journal grew past `snapshot_after_bytes`.
    ///
    /// # Errors
    ///
    /// As [`Store::snapshot`].
    pub fn snapshot_if_due(&self) -> Result<Option<SnapshotInfo>, StorageError> {
        let journal = &self.inner.journal;
        if !journal.is_healthy()
            || journal.stats().since_snapshot < self.inner.config.snapshot_after_bytes
        {
            return Ok(None);
        }
        self.snapshot().map(Some)
    }

    /// Writes a snapshot of everything, then deletes the journal segments and
    /// older snapshots it covers. Writes wait while the state is copied into
    /// memory (readers do not); the file is written after.
    ///
    /// # Errors
    ///
    /// [`StorageError`] when the journal cannot be cut or the file written; the
    /// journal then still holds everything.
    pub fn snapshot(&self) -> Result<SnapshotInfo, StorageError> {
        let inner = &*self.inner;
        let mut last = inner.snapshots.lock().unwrap_or_else(|p| p.into_inner());
        let started = Instant::now();
        let (copy, (lsn, sessions)) = inner
            .sync
            .database()
            .snapshot_copy(inner.wall.now_ms(), || {
                inner.sync.snapshot_sessions(|| inner.journal.rotate())
            })?;
        let pause_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let path = inner.dir.join(snapshot_name(lsn));
        let temporary = path.with_extension("tmp");
        let mut file = SnapshotFile::create(inner.disk.as_ref(), &temporary)?;
        let counts = copy.write(&mut |entry| file.put(entry))?;
        drop(copy);
        for batch in sessions.chunks(1_024) {
            file.put(&Entry::Sessions(batch.to_vec()))?;
        }
        file.put(&Entry::SnapshotEnd(SnapshotEnd {
            lsn,
            tables: counts.tables,
            records: counts.records,
            log_entries: counts.log_entries,
            sessions: sessions.len() as u64,
        }))?;
        let bytes = file.finish()?;
        let disk = inner.disk.as_ref();
        disk.rename(&temporary, &path)
            .map_err(|source| StorageError::io(&temporary, source))?;
        disk.sync_dir(&inner.dir)
            .map_err(|source| StorageError::io(&inner.dir, source))?;
        self.compact(lsn);
        let info = SnapshotInfo {
            path,
            lsn,
            bytes,
            records: counts.records,
            log_entries: counts.log_entries,
            sessions: sessions.len() as u64,
            pause_ms,
            elapsed_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        };
        info!(
            lsn = info.lsn,
            bytes = info.bytes,
            records = info.records,
            pause_ms = info.pause_ms,
            elapsed_ms = info.elapsed_ms,
            "snapshot written; covered journal segments deleted"
        );
        *last = Some(info.clone());
        Ok(info)
    }

    /// Deletes segments and snapshots older than the snapshot at `lsn`.
    fn compact(&self, lsn: u64) {
        let inner = &*self.inner;
        let Ok(listing) = recover::list(&inner.dir) else {
            return;
        };
        let old_segments = listing.segments.iter().filter(|(base, _)| *base < lsn);
        let old_snapshots = listing.snapshots.iter().filter(|(at, _)| *at < lsn);
        for (_, path) in old_segments.chain(old_snapshots) {
            if let Err(error) = inner.disk.remove(path) {
                warn!(path = %path.display(), %error, "could not delete a file the snapshot covers");
            }
        }
    }

    /// Flushes and syncs the journal (a clean shutdown).
    ///
    /// # Errors
    ///
    /// [`StorageError::Unavailable`] when storage is failing: what was not
    /// written is lost with the process, and none of it was acknowledged.
    pub fn close(&self) -> Result<(), StorageError> {
        self.inner.journal.flush()
    }
}

/// A snapshot being written: frames are encoded into a buffer written out
/// every few MiB, so a snapshot never sits whole in memory.
struct SnapshotFile {
    file: Arc<dyn super::LogFile>,
    path: PathBuf,
    buffer: Vec<u8>,
    offset: u64,
}

/// Bytes gathered before a snapshot's buffer is written out.
const SNAPSHOT_BUFFER_BYTES: usize = 4 << 20;

impl SnapshotFile {
    fn create(disk: &dyn Disk, path: &Path) -> Result<SnapshotFile, StorageError> {
        let file = disk
            .create(path)
            .map_err(|source| StorageError::io(path, source))?;
        Ok(SnapshotFile {
            file,
            path: path.to_owned(),
            buffer: Vec::with_capacity(SNAPSHOT_BUFFER_BYTES + (1 << 20)),
            offset: 0,
        })
    }

    fn put(&mut self, entry: &Entry<'_>) -> Result<(), StorageError> {
        frame::put(&entry.encode(), &mut self.buffer);
        if self.buffer.len() >= SNAPSHOT_BUFFER_BYTES {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StorageError> {
        self.file
            .write_at(&self.buffer, self.offset)
            .map_err(|source| StorageError::io(&self.path, source))?;
        self.offset += self.buffer.len() as u64;
        self.buffer.clear();
        Ok(())
    }

    /// Writes what is left and syncs; returns the file's length.
    fn finish(mut self) -> Result<u64, StorageError> {
        self.flush()?;
        self.file
            .sync()
            .map_err(|source| StorageError::io(&self.path, source))?;
        Ok(self.offset)
    }
}

/// Takes the directory's `LOCK` file: one process per data directory.
pub(crate) fn lock(dir: &Path) -> Result<File, StorageError> {
    let path = dir.join("LOCK");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| StorageError::io(&path, source))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(StorageError::Locked {
            dir: dir.to_owned(),
        }),
        Err(std::fs::TryLockError::Error(source)) => Err(StorageError::io(&path, source)),
    }
}

fn corrupt(dir: &Path, path: &Path, scanned: &Scanned, problem: &str) -> StorageError {
    let damage = scanned.damage.as_ref();
    let after = match damage.and_then(|damage| damage.intact_after) {
        Some(at) => {
            format!(", with intact frames after it (from byte {at}): this is not a torn tail")
        }
        None => ", in a journal segment that is not the last".to_owned(),
    };
    StorageError::Corrupt {
        dir: dir.to_owned(),
        path: path.to_owned(),
        offset: damage.map_or(0, |damage| damage.offset),
        damage: problem.to_owned(),
        after,
    }
}

fn load_snapshot(
    dir: &Path,
    path: &Path,
    lsn: u64,
    disk: &dyn Disk,
    restore: &mut crate::engine::Restore<'_>,
    sync: &SyncServer,
) -> Result<u64, StorageError> {
    let mut records = 0;
    let mut end = None;
    let streamed = recover::stream(disk, path, |index, body| {
        let entry = entry::decode(body).map_err(|error| {
            StorageError::inconsistent(
                path,
                format!("frame {index} is intact but unreadable: {error}"),
            )
        })?;
        let applied = match entry {
            Entry::SnapshotStart(start) => {
                if start.format != entry::SNAPSHOT_FORMAT {
                    return Err(StorageError::inconsistent(
                        path,
                        format!(
                            "snapshot format {} is not one this version reads",
                            start.format
                        ),
                    ));
                }
                restore.start(&start);
                Ok(())
            }
            Entry::Table { schema } => restore.table(&schema),
            Entry::SchemaHistory { history } => restore.schema_history(&history),
            Entry::Settings(settings) => {
                for (key, value) in settings {
                    restore.setting(&key, Some(&value));
                }
                Ok(())
            }
            Entry::Records {
                table,
                records: batch,
            } => {
                records += batch.len() as u64;
                restore.records(table, batch)
            }
            Entry::LogEntries(entries) => restore.log_entries(entries),
            Entry::Conflicts(last_id, conflicts) => {
                restore.conflicts(last_id, conflicts);
                Ok(())
            }
            Entry::Events(last_id, events) => {
                restore.events(last_id, events);
                Ok(())
            }
            Entry::Sessions(sessions) => {
                sync.restore_sessions(sessions);
                Ok(())
            }
            Entry::SnapshotEnd(found) => {
                end = Some(found);
                Ok(())
            }
            other => Err(format!("a journal entry in a snapshot: {other:?}")),
        };
        applied.map_err(|problem| StorageError::inconsistent(path, problem))
    })?;
    if let Some(damage) = streamed.damage {
        return Err(StorageError::Corrupt {
            dir: dir.to_owned(),
            path: path.to_owned(),
            offset: streamed.end,
            damage: format!("{damage} in the newest snapshot"),
            after: String::new(),
        });
    }
    match end {
        Some(end) if end.lsn == lsn && end.records == records => Ok(records),
        Some(end) => Err(StorageError::inconsistent(
            path,
            format!(
                "the snapshot says position {} and {} records, its name and content say {lsn} and {records}",
                end.lsn, end.records
            ),
        )),
        None => Err(StorageError::Corrupt {
            dir: dir.to_owned(),
            path: path.to_owned(),
            offset: streamed.end,
            damage: "the snapshot has no end frame".to_owned(),
            after: String::new(),
        }),
    }
}

/// Applies one journal entry.
fn apply(
    restore: &mut crate::engine::Restore<'_>,
    sync: &SyncServer,
    entry: Entry<'_>,
) -> Result<(), String> {
    match entry {
        Entry::Table { schema } => restore.table(&schema),
        Entry::Write(write) => restore.write(write),
        Entry::Policies { table, schema } => restore.policies(table, &schema),
        Entry::Schema { doc } => restore.schema(&doc),
        Entry::MinClientVersion(version) => {
            restore.min_client_version(version);
            Ok(())
        }
        Entry::Conflict(conflict) => {
            restore.conflict(conflict.into_owned());
            Ok(())
        }
        Entry::Event(event) => {
            restore.event(event.into_owned());
            Ok(())
        }
        Entry::Setting { key, value } => {
            restore.setting(&key, value.as_deref());
            Ok(())
        }
        Entry::Session(info) => {
            sync.restore_session(info);
            Ok(())
        }
        Entry::Op { device, result } => {
            sync.restore_op(&device, result);
            Ok(())
        }
        Entry::EndSession { device } => {
            sync.end_session_restored(&device);
            Ok(())
        }
        other => Err(format!("a snapshot entry in the journal: {other:?}")),
    }
}

//! Reading a data directory back: which files there are, which frames they
//! hold, where they are damaged, and whether that damage is a torn tail (cut on
//! start, logged) or damage in the middle (the start stops; `check` reports it
//! and `repair` cuts it).

use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::disk::Disk;
use super::entry::{self, Entry};
use super::frame;
use super::journal::{SEGMENT_MAGIC, SEGMENT_VERSION};
use super::{OsDisk, StorageError};

/// The files of a data directory, each kind in order.
#[derive(Debug, Default)]
pub(crate) struct Listing {
    /// Snapshots by the journal position they cover, oldest first.
    pub(crate) snapshots: Vec<(u64, PathBuf)>,
    /// Journal segments by the position they start at, oldest first.
    pub(crate) segments: Vec<(u64, PathBuf)>,
    /// Snapshots a crash left half-written.
    pub(crate) temporary: Vec<PathBuf>,
}

pub(crate) fn snapshot_name(lsn: u64) -> String {
    format!("snapshot-{lsn:020}.msdb")
}

/// Lists the data directory.
pub(crate) fn list(dir: &Path) -> Result<Listing, StorageError> {
    let mut listing = Listing::default();
    let entries = std::fs::read_dir(dir).map_err(|source| StorageError::io(dir, source))?;
    for entry in entries {
        let entry = entry.map_err(|source| StorageError::io(dir, source))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        let number = |prefix: &str, suffix: &str| {
            name.strip_prefix(prefix)?
                .strip_suffix(suffix)?
                .parse::<u64>()
                .ok()
        };
        if let Some(lsn) = number("snapshot-", ".msdb") {
            listing.snapshots.push((lsn, path));
        } else if let Some(base) = number("wal-", ".log") {
            listing.segments.push((base, path));
        } else if name.starts_with("snapshot-") && name.ends_with(".tmp") {
            listing.temporary.push(path);
        }
    }
    listing.snapshots.sort();
    listing.segments.sort();
    Ok(listing)
}

/// Where a file stops being intact.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Damage {
    /// The byte where the first damaged frame starts.
    pub offset: u64,
    /// What is wrong there.
    pub problem: String,
    /// The first intact frame after it, if any: intact frames after damage mean
    /// damage in the middle, none mean a torn tail.
    pub intact_after: Option<u64>,
    /// Bytes from the damage to the end of the file.
    pub bytes_after: u64,
}

/// A file read into frames.
#[derive(Debug)]
pub(crate) struct Scanned {
    pub(crate) bytes: Vec<u8>,
    /// The body of every intact frame before the damage.
    pub(crate) bodies: Vec<Range<usize>>,
    /// The offset after the last intact frame.
    pub(crate) end: usize,
    pub(crate) damage: Option<Damage>,
}

impl Scanned {
    pub(crate) fn body(&self, index: usize) -> &[u8] {
        &self.bytes[self.bodies[index].clone()]
    }
}

/// Reads every frame of `bytes` up to the first damage.
pub(crate) fn scan(bytes: Vec<u8>) -> Scanned {
    let mut bodies = Vec::new();
    let mut offset = 0;
    let mut damage = None;
    while offset < bytes.len() {
        match frame::read(&bytes, offset) {
            Ok((body, next)) => {
                let start = next - body.len();
                bodies.push(start..next);
                offset = next;
            }
            Err(problem) => {
                damage = Some(Damage {
                    offset: offset as u64,
                    problem: problem.to_string(),
                    intact_after: frame::next_intact(&bytes, offset + 1).map(|at| at as u64),
                    bytes_after: (bytes.len() - offset) as u64,
                });
                break;
            }
        }
    }
    Scanned {
        bytes,
        bodies,
        end: offset,
        damage,
    }
}

/// Whether damage in a journal segment is a torn tail that recovery cuts by
/// itself: it is in the last segment and no intact frame follows it. Anything
/// else would cut frames that may have been acknowledged.
pub(crate) fn is_torn_tail(last: bool, damage: &Damage) -> bool {
    last && damage.intact_after.is_none()
}

/// How a file read frame by frame ended.
#[derive(Debug)]
pub(crate) struct Streamed {
    /// Intact frames read.
    pub(crate) frames: u64,
    /// The offset after the last intact frame.
    pub(crate) end: u64,
    /// What stopped the reading before the end of the file, if anything.
    pub(crate) damage: Option<frame::Damage>,
}

/// Reads `path` frame by frame, never whole (a snapshot may be larger than is
/// wise to hold), handing each intact body to `each`; stops at the first damage.
///
/// # Errors
///
/// [`StorageError::Io`], or `each`'s error.
pub(crate) fn stream(
    disk: &dyn Disk,
    path: &Path,
    mut each: impl FnMut(u64, &[u8]) -> Result<(), StorageError>,
) -> Result<Streamed, StorageError> {
    let io = |source| StorageError::io(path, source);
    let mut reader = disk.reader(path).map_err(io)?;
    let mut body = Vec::new();
    let mut streamed = Streamed {
        frames: 0,
        end: 0,
        damage: None,
    };
    while let Some(read) = frame::read_next(&mut reader, &mut body).map_err(io)? {
        if let Err(damage) = read {
            streamed.damage = Some(damage);
            break;
        }
        each(streamed.frames, &body)?;
        streamed.frames += 1;
        streamed.end += (frame::HEADER_BYTES + body.len()) as u64;
    }
    Ok(streamed)
}

/// The base a segment's header frame names, if it is one.
pub(crate) fn segment_base(body: &[u8]) -> Option<u64> {
    let rest = body.strip_prefix(SEGMENT_MAGIC)?;
    let version = u32::from_le_bytes(rest.get(..4)?.try_into().ok()?);
    if version != SEGMENT_VERSION || rest.len() != 12 {
        return None;
    }
    Some(u64::from_le_bytes(rest[4..12].try_into().ok()?))
}

/// One file as `check` saw it.
#[derive(Clone, Debug, Serialize)]
pub struct FileReport {
    pub path: PathBuf,
    /// `snapshot` or `segment`.
    pub kind: &'static str,
    pub bytes: u64,
    /// Intact frames (for a segment, its header included).
    pub frames: u64,
    /// Frames whose content is not an entry this version reads.
    pub unreadable: u64,
    pub damage: Option<Damage>,
    /// What recovery does with this file: `ok`, `torn tail: cut on start`,
    /// `damaged: start refused`, `not used` (covered by a newer snapshot).
    pub verdict: String,
}

/// What `check` found in a data directory.
#[derive(Clone, Debug, Serialize)]
pub struct CheckReport {
    pub dir: PathBuf,
    pub files: Vec<FileReport>,
    /// Problems that stop the server from starting, in words.
    pub problems: Vec<String>,
}

impl CheckReport {
    /// Whether the server starts on the directory (a torn tail it cuts by
    /// itself is no problem).
    pub fn healthy(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Reads a whole data directory without changing it, and reports every file.
///
/// # Errors
///
/// [`StorageError::Io`] when the directory cannot be read.
pub fn check(dir: &Path) -> Result<CheckReport, StorageError> {
    let listing = list(dir)?;
    let mut files = Vec::new();
    let mut problems = Vec::new();
    let newest_snapshot = listing.snapshots.last().map(|(lsn, _)| *lsn);
    for (lsn, path) in &listing.snapshots {
        let mut unreadable = 0;
        let mut complete = false;
        let streamed = stream(&OsDisk, path, |_, body| {
            match entry::decode(body) {
                Ok(Entry::SnapshotEnd(end)) => complete = end.lsn == *lsn,
                Ok(_) => {}
                Err(_) => unreadable += 1,
            }
            Ok(())
        })?;
        let bytes = std::fs::metadata(path)
            .map_err(|source| StorageError::io(path, source))?
            .len();
        let mut report = FileReport {
            path: path.clone(),
            kind: "snapshot",
            bytes,
            frames: streamed.frames,
            unreadable,
            damage: streamed.damage.map(|damage| Damage {
                offset: streamed.end,
                problem: damage.to_string(),
                intact_after: None,
                bytes_after: bytes - streamed.end,
            }),
            verdict: String::new(),
        };
        report.verdict = if Some(*lsn) != newest_snapshot {
            "not used: a newer snapshot covers it".to_owned()
        } else if report.damage.is_some() || !complete {
            problems.push(format!(
                "{}: the newest snapshot is damaged or incomplete",
                path.display()
            ));
            "damaged: start refused".to_owned()
        } else {
            "ok".to_owned()
        };
        files.push(report);
    }
    let start = newest_snapshot.unwrap_or(0);
    let mut expected = None;
    let last_index = listing.segments.len().saturating_sub(1);
    for (index, (base, path)) in listing.segments.iter().enumerate() {
        let scanned = read(path)?;
        let mut report = segment_report(path, &scanned);
        let header = (!scanned.bodies.is_empty())
            .then(|| segment_base(scanned.body(0)))
            .flatten();
        let length = scanned.end as u64 - scanned.bodies.first().map_or(0, |body| body.end as u64);
        let is_last = index == last_index;
        report.verdict = match (&report.damage, header) {
            _ if header.is_some_and(|found| found != *base) => {
                problems.push(format!(
                    "{}: its header names another position",
                    path.display()
                ));
                "damaged: start refused".to_owned()
            }
            (Some(damage), _) if !is_torn_tail(is_last, damage) => {
                problems.push(format!(
                    "{}: damaged at byte {} ({}) with {} bytes after it",
                    path.display(),
                    damage.offset,
                    damage.problem,
                    damage.bytes_after
                ));
                "damaged: start refused".to_owned()
            }
            (Some(_), _) => "torn tail: cut on start".to_owned(),
            (None, None) if is_last => "torn tail: cut on start".to_owned(),
            (None, None) => {
                problems.push(format!("{}: no segment header", path.display()));
                "damaged: start refused".to_owned()
            }
            (None, Some(_)) if base + length <= start && !is_last => {
                "not used: a snapshot covers it".to_owned()
            }
            (None, Some(_)) => "ok".to_owned(),
        };
        if *base >= start || base + length > start {
            if let Some(expected) = expected
                && expected != *base
            {
                problems.push(format!(
                    "{}: starts at {base}, but the segment before ends at {expected}: a segment is missing",
                    path.display()
                ));
            }
            expected = Some(base + length);
        }
        files.push(report);
    }
    Ok(CheckReport {
        dir: dir.to_owned(),
        files,
        problems,
    })
}

fn read(path: &Path) -> Result<Scanned, StorageError> {
    let bytes = OsDisk
        .read(path)
        .map_err(|source| StorageError::io(path, source))?;
    Ok(scan(bytes))
}

/// A segment's report, its verdict still to be given.
fn segment_report(path: &Path, scanned: &Scanned) -> FileReport {
    // The first frame is the segment's header, not an entry.
    let unreadable = (1..scanned.bodies.len())
        .filter(|index| entry::decode(scanned.body(*index)).is_err())
        .count();
    FileReport {
        path: path.to_owned(),
        kind: "segment",
        bytes: scanned.bytes.len() as u64,
        frames: scanned.bodies.len() as u64,
        unreadable: unreadable as u64,
        damage: scanned.damage.clone(),
        verdict: String::new(),
    }
}

/// Makes a damaged data directory startable by cutting it at its first
/// damage: the damaged segment is truncated there and what followed (in it and
/// in later segments) is moved aside as `*.damaged` files, never deleted. A
/// damaged newest snapshot is moved aside too; the older snapshot and the
/// journal take over if they cover the same history. Returns the check report
/// after the repair.
///
/// # Errors
///
/// [`StorageError::Locked`] while a server runs on the directory, and
/// [`StorageError::Io`] when a file cannot be read, moved or cut.
pub fn repair(dir: &Path) -> Result<(CheckReport, Vec<String>), StorageError> {
    // Never under a running server: it would write past the cut.
    let _lock = super::store::lock(dir)?;
    let before = check(dir)?;
    let mut actions = Vec::new();
    let listing = list(dir)?;
    let aside = |path: &Path, actions: &mut Vec<String>| -> Result<(), StorageError> {
        let mut target = path.as_os_str().to_owned();
        target.push(".damaged");
        std::fs::rename(path, &target).map_err(|source| StorageError::io(path, source))?;
        actions.push(format!(
            "moved {} aside to {}",
            path.display(),
            PathBuf::from(&target).display()
        ));
        Ok(())
    };
    for report in before
        .files
        .iter()
        .filter(|report| report.kind == "snapshot")
    {
        if report.verdict.starts_with("damaged") {
            aside(&report.path, &mut actions)?;
        }
    }
    let mut cut = false;
    for (_, path) in &listing.segments {
        let Some(report) = before.files.iter().find(|report| &report.path == path) else {
            continue;
        };
        if cut {
            aside(path, &mut actions)?;
            continue;
        }
        if let Some(damage) = &report.damage
            && report.verdict.starts_with("damaged")
        {
            let bytes = OsDisk
                .read(path)
                .map_err(|source| StorageError::io(path, source))?;
            let mut kept = path.as_os_str().to_owned();
            kept.push(format!(".damaged-at-{}", damage.offset));
            let offset = usize::try_from(damage.offset).unwrap_or(bytes.len());
            std::fs::write(&kept, &bytes[offset..])
                .map_err(|source| StorageError::io(path, source))?;
            let file = OsDisk
                .open(path)
                .map_err(|source| StorageError::io(path, source))?;
            file.set_len(damage.offset)
                .and_then(|()| file.sync())
                .map_err(|source| StorageError::io(path, source))?;
            actions.push(format!(
                "cut {} at byte {} ({} bytes moved to {})",
                path.display(),
                damage.offset,
                damage.bytes_after,
                PathBuf::from(&kept).display()
            ));
            cut = true;
        }
    }
    OsDisk
        .sync_dir(dir)
        .map_err(|source| StorageError::io(dir, source))?;
    Ok((check(dir)?, actions))
}

//! The file operations storage needs, behind a trait so tests can inject faults.
//!
//! [`OsDisk`] is the real file system. [`FaultyDisk`] wraps it and, on command,
//! fills up (writes fail with `StorageFull` after the space left, the last one
//! partly written), fails `fsync`, or corrupts the bytes of the next write.

use std::fmt::Debug;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// A file storage appends to and syncs.
pub trait LogFile: Send + Sync + Debug {
    /// Writes all of `bytes` at `offset`.
    ///
    /// # Errors
    ///
    /// The operating system's error; part of `bytes` may have been written.
    fn write_at(&self, bytes: &[u8], offset: u64) -> io::Result<()>;
    /// Makes everything written so far durable (`fdatasync`).
    ///
    /// # Errors
    ///
    /// The operating system's error: the written bytes may not be durable.
    fn sync(&self) -> io::Result<()>;
    /// Cuts or extends the file to `len` bytes.
    ///
    /// # Errors
    ///
    /// The operating system's error.
    fn set_len(&self, len: u64) -> io::Result<()>;
}

/// The directory operations storage needs.
pub trait Disk: Send + Sync + Debug {
    /// Creates `path` empty (replacing a file there) for writing.
    ///
    /// # Errors
    ///
    /// The operating system's error.
    fn create(&self, path: &Path) -> io::Result<Arc<dyn LogFile>>;
    /// Opens the existing file `path` for writing.
    ///
    /// # Errors
    ///
    /// The operating system's error.
    fn open(&self, path: &Path) -> io::Result<Arc<dyn LogFile>>;
    /// Reads the whole file.
    ///
    /// # Errors
    ///
    /// The operating system's error.
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
    /// Opens the file for reading from the start, for files too large to
    /// read whole.
    ///
    /// # Errors
    ///
    /// The operating system's error.
    fn reader(&self, path: &Path) -> io::Result<Box<dyn io::Read + Send>> {
        Ok(Box::new(io::BufReader::with_capacity(
            1 << 20,
            File::open(path)?,
        )))
    }
    /// Renames `from` to `to`, replacing `to`.
    ///
    /// # Errors
    ///
    /// The operating system's error.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Removes a file.
    ///
    /// # Errors
    ///
    /// The operating system's error.
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Makes the directory's entries (created, renamed, removed files) durable.
    ///
    /// # Errors
    ///
    /// The operating system's error.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
}

/// The real file system.
#[derive(Clone, Copy, Debug, Default)]
pub struct OsDisk;

#[derive(Debug)]
struct OsFile(File);

impl LogFile for OsFile {
    fn write_at(&self, bytes: &[u8], offset: u64) -> io::Result<()> {
        self.0.write_all_at(bytes, offset)
    }

    fn sync(&self) -> io::Result<()> {
        self.0.sync_data()
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
}

/// Opens `path` for writing: created empty when `create`, else existing.
fn open_for_writing(path: &Path, create: bool) -> io::Result<OsFile> {
    let file = OpenOptions::new()
        .write(true)
        .create(create)
        .truncate(create)
        .open(path)?;
    Ok(OsFile(file))
}

impl Disk for OsDisk {
    fn create(&self, path: &Path) -> io::Result<Arc<dyn LogFile>> {
        Ok(Arc::new(open_for_writing(path, true)?))
    }

    fn open(&self, path: &Path) -> io::Result<Arc<dyn LogFile>> {
        Ok(Arc::new(open_for_writing(path, false)?))
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        fs::read(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }
}

/// The faults a [`FaultyDisk`] injects, switched at any time from any thread.
#[derive(Debug, Default)]
pub struct Faults {
    /// Bytes that may still be written before the disk is full (`None`: no limit).
    space_left: Mutex<Option<u64>>,
    fail_sync: AtomicBool,
    corrupt_next_write: AtomicBool,
    syncs: AtomicU64,
    failed_syncs: AtomicU64,
}

impl Faults {
    /// Lets `bytes` more bytes be written, then fails writes as a full disk
    /// (`None`: space returns).
    pub fn set_space_left(&self, bytes: Option<u64>) {
        *self.space_left.lock().unwrap_or_else(|p| p.into_inner()) = bytes;
    }

    /// Makes every `fsync` fail (or succeed again).
    pub fn set_fail_sync(&self, fail: bool) {
        self.fail_sync.store(fail, Ordering::SeqCst);
    }

    /// Flips a byte in the middle of the next write, which still reports success.
    pub fn corrupt_next_write(&self) {
        self.corrupt_next_write.store(true, Ordering::SeqCst);
    }

    /// Successful syncs so far.
    pub fn syncs(&self) -> u64 {
        self.syncs.load(Ordering::SeqCst)
    }

    /// Failed syncs so far.
    pub fn failed_syncs(&self) -> u64 {
        self.failed_syncs.load(Ordering::SeqCst)
    }

    /// How much of a write of `len` bytes fits; the space is consumed.
    fn take_space(&self, len: u64) -> u64 {
        let mut left = self.space_left.lock().unwrap_or_else(|p| p.into_inner());
        match left.as_mut() {
            None => len,
            Some(space) => {
                let granted = len.min(*space);
                *space -= granted;
                granted
            }
        }
    }

    fn sync(&self) -> io::Result<()> {
        if self.fail_sync.load(Ordering::SeqCst) {
            self.failed_syncs.fetch_add(1, Ordering::SeqCst);
            return Err(io::Error::other("injected fsync failure (EIO)"));
        }
        self.syncs.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

/// The real file system with injected faults; see [`Faults`].
#[derive(Clone, Debug, Default)]
pub struct FaultyDisk {
    faults: Arc<Faults>,
}

impl FaultyDisk {
    /// A disk with no faults switched on yet.
    pub fn new() -> FaultyDisk {
        FaultyDisk::default()
    }

    /// The switches.
    pub fn faults(&self) -> Arc<Faults> {
        Arc::clone(&self.faults)
    }
}

#[derive(Debug)]
struct FaultyFile {
    inner: OsFile,
    faults: Arc<Faults>,
}

impl LogFile for FaultyFile {
    fn write_at(&self, bytes: &[u8], offset: u64) -> io::Result<()> {
        let granted = usize::try_from(self.faults.take_space(bytes.len() as u64))
            .unwrap_or(usize::MAX)
            .min(bytes.len());
        let mut written = bytes[..granted].to_vec();
        if !written.is_empty() && self.faults.corrupt_next_write.swap(false, Ordering::SeqCst) {
            let middle = written.len() / 2;
            written[middle] ^= 0x5A;
        }
        self.inner.write_at(&written, offset)?;
        if granted < bytes.len() {
            return Err(io::Error::new(
                io::ErrorKind::StorageFull,
                "injected full disk (ENOSPC)",
            ));
        }
        Ok(())
    }

    fn sync(&self) -> io::Result<()> {
        self.faults.sync()?;
        self.inner.sync()
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.inner.set_len(len)
    }
}

impl Disk for FaultyDisk {
    fn create(&self, path: &Path) -> io::Result<Arc<dyn LogFile>> {
        Ok(Arc::new(FaultyFile {
            inner: open_for_writing(path, true)?,
            faults: self.faults(),
        }))
    }

    fn open(&self, path: &Path) -> io::Result<Arc<dyn LogFile>> {
        Ok(Arc::new(FaultyFile {
            inner: open_for_writing(path, false)?,
            faults: self.faults(),
        }))
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        OsDisk.read(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        OsDisk.rename(from, to)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        OsDisk.remove(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.faults.sync()?;
        OsDisk.sync_dir(dir)
    }
}

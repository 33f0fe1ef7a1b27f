//! The hot-document cache: loaded automerge documents of recently written records.
//!
//! A loaded document costs about fifty times its saved bytes, so the engine keeps
//! records saved and loads a document only to merge a write. Records written
//! again soon (a chat being edited, a todo being ticked) stay loaded here, within
//! a fixed number of documents.

use std::num::NonZeroUsize;

use lru::LruCache;
use mobilesyncdb_crdt::Record;

/// Heap bytes of one loaded document of a small record, measured with a counting
/// allocator by `cargo bench --bench engine` (`loaded_doc_bytes`).
pub(crate) const LOADED_DOC_BYTES: usize = 15_400;

#[derive(Debug)]
pub(crate) struct DocCache {
    docs: Option<LruCache<(u16, u32), Record>>,
    pub(crate) hits: u64,
    pub(crate) misses: u64,
}

impl DocCache {
    /// A cache of at most `capacity` documents (0 disables it).
    pub(crate) fn new(capacity: usize) -> DocCache {
        DocCache {
            docs: NonZeroUsize::new(capacity).map(LruCache::new),
            hits: 0,
            misses: 0,
        }
    }

    /// Takes a record's document out of the cache; the caller puts it back once the
    /// write succeeded, so a failed write never leaves a half-written document here.
    pub(crate) fn take(&mut self, table: u16, slot: u32) -> Option<Record> {
        let taken = self.docs.as_mut().and_then(|docs| docs.pop(&(table, slot)));
        match taken {
            Some(_) => self.hits += 1,
            None => self.misses += 1,
        }
        taken
    }

    pub(crate) fn put(&mut self, table: u16, slot: u32, record: Record) {
        if let Some(docs) = self.docs.as_mut() {
            docs.put((table, slot), record);
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.docs.as_ref().map_or(0, LruCache::len)
    }

    pub(crate) fn clear(&mut self) {
        if let Some(docs) = self.docs.as_mut() {
            docs.clear();
        }
    }

    pub(crate) fn estimated_bytes(&self) -> usize {
        self.len() * LOADED_DOC_BYTES
    }
}

//! MobileSyncDB: a sync server for offline-first mobile apps.
//!
//! Records are automerge CRDT documents (see [`mobilesyncdb_crdt`]) kept in an
//! in-memory relational [`engine`], so offline edits from many phones merge without
//! loss while merge policies decide what apps see.
//!
//! - [`engine`]: tables, indexes, queries, the change log and memory accounting.
//! - [`schema`]: typed table schemas and JSON conversion of values.
//! - [`config`]: every bound the engine enforces, with its default.
//! - [`dataset`]: a seeded generator of typical mobile app data for benchmarks.
//! - [`sync`]: the differential sync protocol: sessions, pulls, pushes, the wire format.
//! - [`compress`]: the column compression engine sync batches are encoded with.
//! - [`client`]: the reference client: a local replica that syncs over any transport.
//! - [`transfer`]: export and import of whole tables or the whole database, as files.
//! - [`storage`]: durability: the data directory's journal and snapshots.
//! - [`webhook`]: outgoing webhooks: Standard Webhooks signing and the SSRF guard.

pub mod api;
pub mod client;
#[cfg(feature = "cluster")]
pub mod cluster;
pub mod compress;
pub mod config;
pub mod dataset;
pub mod engine;
pub mod power;
pub mod schema;
pub mod storage;
pub mod sync;
pub mod transfer;
pub mod webhook;

pub use mobilesyncdb_crdt as crdt;

/// The README's Rust examples, compiled and run as doctests.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

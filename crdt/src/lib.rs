//! Records as CRDT documents, hybrid logical clocks, version vectors and merge
//! policies for MobileSyncDB.
//!
//! # The data model
//!
//! A [`Record`] is one automerge document. Its fields live in the document's root
//! map; every write is a change stamped with a [`Stamp`] from a [`HybridClock`] and
//! the [`ClientId`] of its writer, carried inside the change so that every replica
//! sees the same metadata. Replicas exchange changes in any order and any number of
//! times and end up identical: automerge keeps every concurrent write to a field
//! as that field's [`ConflictSet`], and nothing is lost at merge time.
//!
//! What an app *sees* is decided by a [`MergePolicy`], a pure function of the
//! conflict set: [`LastWriterWins`], [`ClientPriority`], the declarative [`Max`],
//! [`Min`], [`Sum`] and [`SetUnion`], [`Manual`] (the conflict stays open), or your
//! own ([`Custom`] or any implementation of the trait). A [`PolicySet`] holds a
//! table's policy and per-field overrides.
//!
//! [`VersionVector`]s tell whether two replicas' histories are equal, ordered or
//! concurrent.
//!
//! This crate is pure: no I/O, no threads, no clock reads. Time is passed in.
//!
//! ```
//! use automerge::ActorId;
//! use mobilesyncdb_crdt::{ClientPriority, ClientId, Edit, HybridClock, Record, StampMeta, Value};
//!
//! let mut clock = HybridClock::default();
//! let mut server = Record::new(ActorId::from(b"server-actor-001".to_vec()));
//! let admin = StampMeta::new(clock.tick(1_000), "admin");
//! server.write(&[Edit::set("status", "approved")], &admin).unwrap();
//!
//! // A phone was offline and rejected the same item, later by the clock.
//! let mut phone = Record::new(ActorId::from(b"phone-actor-0001".to_vec()));
//! let user = StampMeta::new(clock.tick(5_000), "phone-7");
//! phone.write(&[Edit::set("status", "rejected")], &user).unwrap();
//!
//! server.apply_changes(phone.changes_since(&[])).unwrap();
//! let admin_first = ClientPriority::new([ClientId::from("admin")]);
//! let shown = server.resolve("status", &admin_first).unwrap();
//! assert_eq!(shown.value, Value::str("approved"));
//! ```

#[cfg(feature = "quickcheck")]
mod arbitrary;
mod clock;
mod error;
mod policy;
mod record;
mod value;
mod version;

pub use automerge;
pub use automerge::{ActorId, Change, ChangeHash};
pub use clock::{ClientId, DEFAULT_MAX_SKEW_MS, HybridClock, Stamp};
pub use error::{ClockError, CrdtError, PolicyError, RecordError};
pub use policy::{
    Candidate, ClientPriority, ConflictSet, Custom, LastWriterWins, Manual, Max, MergePolicy, Min,
    OpId, PolicyRegistry, PolicySet, PolicySpec, Resolution, SetUnion, Sum, resolve,
};
pub use record::{
    DELETED_FIELD, Edit, MergeReport, POLICY_FIELD, Record, STAMP_MESSAGE_PREFIX, StampMeta,
};
pub use value::{Value, ValueKind};
pub use version::{Causality, VersionVector};

//! Merge policies: what an app sees when writes to one field collide.
//!
//! Automerge keeps every concurrent write to a field; nothing is thrown away when
//! replicas merge. A [`ConflictSet`] holds those concurrent values, each with the
//! stamp and writer that travelled inside its change. A [`MergePolicy`] picks the
//! visible value from the set. Policies are pure and deterministic: the answer
//! depends only on the candidates, never on their order, the clock or randomness,
//! so every replica that applies the same policy shows the same value.
//!
//! Built-ins: [`LastWriterWins`], [`ClientPriority`], [`Max`], [`Min`], [`Sum`],
//! [`SetUnion`], [`Manual`], and [`Custom`] for closures. [`PolicySet`] holds a
//! table's default policy and per-field overrides; [`PolicySpec`] is the declarative
//! form REST users choose from, resolved against a [`PolicyRegistry`].

mod builtin;
mod spec;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use automerge::ActorId;

use crate::clock::{ClientId, Stamp};
use crate::value::Value;

pub use builtin::{ClientPriority, Custom, LastWriterWins, Manual, Max, Min, SetUnion, Sum};
pub use spec::{PolicyRegistry, PolicySpec};

/// The automerge operation that wrote a candidate: `counter@actor`.
///
/// Ordered by counter, then actor, which is automerge's own rule for the winner of
/// a conflict; policies use it as the last tie-break.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OpId {
    pub counter: u64,
    pub actor: ActorId,
}

impl fmt::Display for OpId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}@{}", self.counter, self.actor)
    }
}

/// One concurrent value of a field.
#[derive(Clone, Debug, PartialEq)]
pub struct Candidate {
    pub value: Value,
    /// The write's stamp; `None` for a change written without MobileSyncDB metadata.
    pub stamp: Option<Stamp>,
    /// Who wrote it; `None` for a change written without MobileSyncDB metadata.
    pub writer: Option<ClientId>,
    pub op: OpId,
}

impl Candidate {
    /// The last-writer-wins order: stamp, then writer, then operation id. Unstamped
    /// values sort below stamped ones and among themselves by automerge's winner rule.
    pub fn recency_key(&self) -> (Option<Stamp>, Option<&ClientId>, &OpId) {
        (self.stamp, self.writer.as_ref(), &self.op)
    }
}

/// The concurrent values of one field, in canonical order (oldest first by
/// [`Candidate::recency_key`]), however they were gathered.
#[derive(Clone, Debug, PartialEq)]
pub struct ConflictSet {
    field: String,
    candidates: Vec<Candidate>,
}

impl ConflictSet {
    /// A conflict set; the candidates are put in canonical order.
    pub fn new(field: impl Into<String>, mut candidates: Vec<Candidate>) -> ConflictSet {
        candidates.sort_by(|left, right| left.recency_key().cmp(&right.recency_key()));
        ConflictSet {
            field: field.into(),
            candidates,
        }
    }

    /// The field the values belong to.
    pub fn field(&self) -> &str {
        &self.field
    }

    /// The candidates, oldest first.
    pub fn candidates(&self) -> &[Candidate] {
        &self.candidates
    }

    /// More than one concurrent value: a conflict a policy has to decide.
    pub fn is_conflict(&self) -> bool {
        self.candidates.len() > 1
    }

    /// The most recent candidate by stamp, writer and operation id.
    pub fn latest(&self) -> Option<&Candidate> {
        self.candidates.last()
    }
}

/// What a policy decided.
#[derive(Clone, Debug, PartialEq)]
pub struct Resolution {
    /// The visible value.
    pub value: Value,
    /// True when the conflict stays open for a person to resolve (manual policy);
    /// `value` is then a provisional, deterministic choice.
    pub open: bool,
}

impl Resolution {
    /// A settled value.
    pub fn settled(value: Value) -> Resolution {
        Resolution { value, open: false }
    }
}

/// Decides the visible value of a field from its concurrent values.
///
/// Implementations must be deterministic: the same set gives the same answer on
/// every replica, whatever order the candidates arrived in. They are only called for
/// real conflicts (two or more candidates).
pub trait MergePolicy: Send + Sync {
    /// A short name for logs and audit records.
    fn name(&self) -> &str;

    /// The visible value for `conflict`, which has at least two candidates.
    fn resolve(&self, conflict: &ConflictSet) -> Resolution;
}

impl fmt::Debug for dyn MergePolicy {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "MergePolicy({})", self.name())
    }
}

/// Resolves a field's conflict set: a single value stands as it is, an empty set is
/// `Null`, and two or more go to `policy`.
pub fn resolve(policy: &dyn MergePolicy, conflict: &ConflictSet) -> Resolution {
    match conflict.candidates() {
        [] => Resolution::settled(Value::Null),
        [only] => Resolution::settled(only.value.clone()),
        _ => policy.resolve(conflict),
    }
}

/// A table's policy and its per-field overrides.
#[derive(Clone)]
pub struct PolicySet {
    default: Arc<dyn MergePolicy>,
    fields: BTreeMap<String, Arc<dyn MergePolicy>>,
}

impl Default for PolicySet {
    /// Last-writer-wins for every field.
    fn default() -> PolicySet {
        PolicySet::new(Arc::new(LastWriterWins))
    }
}

impl fmt::Debug for PolicySet {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let fields: BTreeMap<&str, &str> = self
            .fields
            .iter()
            .map(|(field, policy)| (field.as_str(), policy.name()))
            .collect();
        formatter
            .debug_struct("PolicySet")
            .field("default", &self.default.name())
            .field("fields", &fields)
            .finish()
    }
}

impl PolicySet {
    /// `default` for every field without an override.
    pub fn new(default: Arc<dyn MergePolicy>) -> PolicySet {
        PolicySet {
            default,
            fields: BTreeMap::new(),
        }
    }

    /// Overrides the policy of one field.
    pub fn with_field(
        mut self,
        field: impl Into<String>,
        policy: Arc<dyn MergePolicy>,
    ) -> PolicySet {
        self.fields.insert(field.into(), policy);
        self
    }

    /// The policy that decides `field`.
    pub fn for_field(&self, field: &str) -> &dyn MergePolicy {
        self.fields.get(field).unwrap_or(&self.default).as_ref()
    }

    /// The table-wide policy.
    pub fn default_policy(&self) -> &dyn MergePolicy {
        self.default.as_ref()
    }
}

//! Version vectors: which changes of which writer a replica has seen.
//!
//! Each automerge actor writes one linear history, so "has seen changes 1..=n of
//! actor A" is one number per actor. Two vectors compare as equal, before, after or
//! concurrent; concurrent means each side has a change the other has not, which is
//! exactly a concurrent modification.

use std::collections::BTreeMap;

use automerge::ActorId;

/// How two version vectors relate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Causality {
    Equal,
    /// Every change of the left side is in the right side, which has more.
    Before,
    /// The left side has every change of the right side, and more.
    After,
    /// Each side has a change the other lacks.
    Concurrent,
}

/// The highest change sequence number seen per actor.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VersionVector {
    seen: BTreeMap<ActorId, u64>,
}

impl VersionVector {
    /// An empty vector: nothing seen.
    pub fn new() -> VersionVector {
        VersionVector::default()
    }

    /// The highest sequence number seen from `actor` (0 for none).
    pub fn get(&self, actor: &ActorId) -> u64 {
        self.seen.get(actor).copied().unwrap_or(0)
    }

    /// Records that changes up to `seq` from `actor` were seen.
    pub fn observe(&mut self, actor: ActorId, seq: u64) {
        let entry = self.seen.entry(actor).or_insert(0);
        *entry = (*entry).max(seq);
    }

    /// The actors and their highest sequence numbers, in actor order.
    pub fn iter(&self) -> impl Iterator<Item = (&ActorId, u64)> {
        self.seen.iter().map(|(actor, seq)| (actor, *seq))
    }

    /// The pointwise maximum of both vectors.
    pub fn merge(&mut self, other: &VersionVector) {
        for (actor, seq) in other.iter() {
            self.observe(actor.clone(), seq);
        }
    }

    /// How `self` relates to `other`.
    pub fn compare(&self, other: &VersionVector) -> Causality {
        let self_has_more = self.iter().any(|(actor, seq)| seq > other.get(actor));
        let other_has_more = other.iter().any(|(actor, seq)| seq > self.get(actor));
        match (self_has_more, other_has_more) {
            (false, false) => Causality::Equal,
            (false, true) => Causality::Before,
            (true, false) => Causality::After,
            (true, true) => Causality::Concurrent,
        }
    }
}

impl FromIterator<(ActorId, u64)> for VersionVector {
    fn from_iter<I: IntoIterator<Item = (ActorId, u64)>>(entries: I) -> VersionVector {
        let mut vector = VersionVector::new();
        for (actor, seq) in entries {
            vector.observe(actor, seq);
        }
        vector
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn actor(byte: u8) -> ActorId {
        ActorId::from(vec![byte; 16])
    }

    fn vector(entries: &[(u8, u64)]) -> VersionVector {
        entries
            .iter()
            .map(|(byte, seq)| (actor(*byte), *seq))
            .collect()
    }

    #[test]
    fn compares_all_four_ways() {
        let base = vector(&[(1, 2), (2, 1)]);
        assert_eq!(base.compare(&vector(&[(1, 2), (2, 1)])), Causality::Equal);
        assert_eq!(base.compare(&vector(&[(1, 3), (2, 1)])), Causality::Before);
        assert_eq!(base.compare(&vector(&[(1, 2)])), Causality::After);
        assert_eq!(
            base.compare(&vector(&[(1, 3), (2, 0)])),
            Causality::Concurrent
        );
        assert_eq!(
            base.compare(&vector(&[(1, 2), (2, 1), (3, 1)])),
            Causality::Before
        );
    }

    #[test]
    fn zero_entries_count_as_unseen() {
        assert_eq!(
            vector(&[(1, 0)]).compare(&VersionVector::new()),
            Causality::Equal
        );
    }

    #[test]
    fn merge_takes_the_pointwise_maximum() {
        let mut left = vector(&[(1, 2), (2, 5)]);
        left.merge(&vector(&[(1, 4), (3, 1)]));
        assert_eq!(left, vector(&[(1, 4), (2, 5), (3, 1)]));
    }
}

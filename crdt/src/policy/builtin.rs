//! The built-in merge policies.

use std::collections::BTreeSet;
use std::sync::Arc;

use crate::clock::ClientId;
use crate::policy::{ConflictSet, MergePolicy, Resolution};
use crate::value::Value;

/// The value with the greatest stamp wins; equal stamps are broken by writer id,
/// then by automerge's operation order. Unstamped values lose to stamped ones.
#[derive(Clone, Copy, Debug, Default)]
pub struct LastWriterWins;

impl MergePolicy for LastWriterWins {
    fn name(&self) -> &str {
        "last_writer_wins"
    }

    fn resolve(&self, conflict: &ConflictSet) -> Resolution {
        Resolution::settled(latest_value(conflict))
    }
}

fn latest_value(conflict: &ConflictSet) -> Value {
    conflict
        .latest()
        .map_or(Value::Null, |candidate| candidate.value.clone())
}

/// Writers ranked from most to least trusted: the best-ranked writer's value wins,
/// whatever its stamp. Writers of equal rank, and writers not in the ranking (which
/// rank below everyone listed), fall back to last-writer-wins.
#[derive(Clone, Debug, Default)]
pub struct ClientPriority {
    ranking: Vec<ClientId>,
}

impl ClientPriority {
    /// `ranking` lists writers from most to least trusted.
    pub fn new(ranking: impl IntoIterator<Item = ClientId>) -> ClientPriority {
        ClientPriority {
            ranking: ranking.into_iter().collect(),
        }
    }

    fn rank(&self, writer: Option<&ClientId>) -> usize {
        writer
            .and_then(|writer| self.ranking.iter().position(|ranked| ranked == writer))
            .unwrap_or(self.ranking.len())
    }

    /// The writers, most trusted first.
    pub fn ranking(&self) -> &[ClientId] {
        &self.ranking
    }
}

impl MergePolicy for ClientPriority {
    fn name(&self) -> &str {
        "client_priority"
    }

    fn resolve(&self, conflict: &ConflictSet) -> Resolution {
        // Candidates are oldest first, so the last of the best rank is the most recent.
        let winner = conflict
            .candidates()
            .iter()
            .rev()
            .min_by_key(|candidate| self.rank(candidate.writer.as_ref()));
        Resolution::settled(winner.map_or(Value::Null, |candidate| candidate.value.clone()))
    }
}

/// The greatest non-null value in the total order of [`Value`].
#[derive(Clone, Copy, Debug, Default)]
pub struct Max;

impl MergePolicy for Max {
    fn name(&self) -> &str {
        "max"
    }

    fn resolve(&self, conflict: &ConflictSet) -> Resolution {
        let values = non_null_values(conflict);
        Resolution::settled(values.max().cloned().unwrap_or(Value::Null))
    }
}

/// The least non-null value in the total order of [`Value`].
#[derive(Clone, Copy, Debug, Default)]
pub struct Min;

impl MergePolicy for Min {
    fn name(&self) -> &str {
        "min"
    }

    fn resolve(&self, conflict: &ConflictSet) -> Resolution {
        let values = non_null_values(conflict);
        Resolution::settled(values.min().cloned().unwrap_or(Value::Null))
    }
}

fn non_null_values(conflict: &ConflictSet) -> impl Iterator<Item = &Value> {
    conflict
        .candidates()
        .iter()
        .map(|candidate| &candidate.value)
        .filter(|value| !value.is_null())
}

/// The sum of the concurrent numeric values: integers add up (saturating) to an
/// integer, and any float makes the sum a float. Non-numeric values are ignored;
/// with none numeric, last-writer-wins decides. For running totals prefer a counter
/// field, whose increments merge exactly.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sum;

impl MergePolicy for Sum {
    fn name(&self) -> &str {
        "sum"
    }

    fn resolve(&self, conflict: &ConflictSet) -> Resolution {
        let numbers: Vec<&Value> = conflict
            .candidates()
            .iter()
            .map(|candidate| &candidate.value)
            .filter(|value| matches!(value, Value::Int(_) | Value::Float(_)))
            .collect();
        if numbers.is_empty() {
            return LastWriterWins.resolve(conflict);
        }
        Resolution::settled(sum(&numbers))
    }
}

fn sum(numbers: &[&Value]) -> Value {
    let all_integers = numbers.iter().all(|value| matches!(value, Value::Int(_)));
    if all_integers {
        let total = numbers.iter().fold(0i64, |total, value| match value {
            Value::Int(n) => total.saturating_add(*n),
            _ => total,
        });
        return Value::Int(total);
    }
    // Adding in canonical value order keeps the float result independent of arrival.
    let mut floats: Vec<f64> = numbers.iter().filter_map(|value| value.as_f64()).collect();
    floats.sort_by(f64::total_cmp);
    Value::Float(floats.iter().sum())
}

/// The union of the concurrent lists, as a list sorted in the total order of
/// [`Value`] without duplicates. A non-list value counts as a one-element list and
/// null as the empty list.
#[derive(Clone, Copy, Debug, Default)]
pub struct SetUnion;

impl MergePolicy for SetUnion {
    fn name(&self) -> &str {
        "set_union"
    }

    fn resolve(&self, conflict: &ConflictSet) -> Resolution {
        let mut union = BTreeSet::new();
        for candidate in conflict.candidates() {
            match &candidate.value {
                Value::Null => {}
                Value::List(items) => union.extend(items.iter().cloned()),
                other => {
                    union.insert(other.clone());
                }
            }
        }
        Resolution::settled(Value::List(union.into_iter().collect()))
    }
}

/// The conflict stays open until someone resolves it by writing the field again.
/// Meanwhile the provisional value is the last-writer-wins choice, so every
/// replica shows the same thing.
#[derive(Clone, Copy, Debug, Default)]
pub struct Manual;

impl MergePolicy for Manual {
    fn name(&self) -> &str {
        "manual"
    }

    fn resolve(&self, conflict: &ConflictSet) -> Resolution {
        Resolution {
            value: latest_value(conflict),
            open: true,
        }
    }
}

type MergeFn = dyn Fn(&ConflictSet) -> Resolution + Send + Sync;

/// A merge function given as a closure.
///
/// ```
/// use mobilesyncdb_crdt::{Custom, MergePolicy, Resolution, Value};
///
/// // Keep the longest text.
/// let longest = Custom::new("longest_text", |conflict| {
///     let longest = conflict
///         .candidates()
///         .iter()
///         .filter_map(|candidate| match &candidate.value {
///             Value::Str(text) => Some(text.clone()),
///             _ => None,
///         })
///         .max_by(|left, right| left.len().cmp(&right.len()).then(left.cmp(right)));
///     Resolution::settled(longest.map_or(Value::Null, Value::Str))
/// });
/// assert_eq!(longest.name(), "longest_text");
/// ```
#[derive(Clone)]
pub struct Custom {
    name: String,
    merge: Arc<MergeFn>,
}

impl Custom {
    /// A policy named `name` that calls `merge`. `merge` sees candidates in
    /// canonical order and must not read the clock or randomness.
    pub fn new(
        name: impl Into<String>,
        merge: impl Fn(&ConflictSet) -> Resolution + Send + Sync + 'static,
    ) -> Custom {
        Custom {
            name: name.into(),
            merge: Arc::new(merge),
        }
    }
}

impl std::fmt::Debug for Custom {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Custom")
            .field("name", &self.name)
            .finish()
    }
}

impl MergePolicy for Custom {
    fn name(&self) -> &str {
        &self.name
    }

    fn resolve(&self, conflict: &ConflictSet) -> Resolution {
        (self.merge)(conflict)
    }
}

#[cfg(test)]
mod tests {
    use automerge::ActorId;

    use super::*;
    use crate::clock::Stamp;
    use crate::policy::{Candidate, OpId, resolve};

    fn candidate(value: Value, at_ms: Option<u64>, writer: &str, counter: u64) -> Candidate {
        Candidate {
            value,
            stamp: at_ms.map(Stamp::at),
            writer: at_ms.map(|_| ClientId::from(writer)),
            op: OpId {
                counter,
                actor: ActorId::from(writer.as_bytes().to_vec()),
            },
        }
    }

    fn conflict(candidates: Vec<Candidate>) -> ConflictSet {
        ConflictSet::new("field", candidates)
    }

    fn phones() -> ConflictSet {
        conflict(vec![
            candidate(Value::Int(10), Some(300), "phone-a", 1),
            candidate(Value::Int(30), Some(100), "phone-b", 2),
            candidate(Value::Int(20), Some(200), "admin", 3),
        ])
    }

    #[test]
    fn last_writer_wins_takes_the_greatest_stamp() {
        assert_eq!(LastWriterWins.resolve(&phones()).value, Value::Int(10));
    }

    #[test]
    fn last_writer_wins_breaks_equal_stamps_by_writer() {
        let tied = conflict(vec![
            candidate(Value::str("from b"), Some(5), "phone-b", 1),
            candidate(Value::str("from a"), Some(5), "phone-a", 9),
        ]);
        assert_eq!(LastWriterWins.resolve(&tied).value, Value::str("from b"));
    }

    #[test]
    fn unstamped_values_lose_to_stamped_and_use_automerge_order_among_themselves() {
        let plain = conflict(vec![
            candidate(Value::str("plain 1"), None, "js-client-1", 7),
            candidate(Value::str("stamped"), Some(1), "phone-a", 1),
            candidate(Value::str("plain 2"), None, "js-client-2", 8),
        ]);
        assert_eq!(LastWriterWins.resolve(&plain).value, Value::str("stamped"));
        let only_plain = conflict(vec![
            candidate(Value::str("plain 1"), None, "js-client-1", 7),
            candidate(Value::str("plain 2"), None, "js-client-2", 8),
        ]);
        assert_eq!(
            LastWriterWins.resolve(&only_plain).value,
            Value::str("plain 2")
        );
    }

    #[test]
    fn client_priority_prefers_the_ranking_over_recency() {
        let policy = ClientPriority::new([ClientId::from("admin"), ClientId::from("phone-b")]);
        assert_eq!(policy.resolve(&phones()).value, Value::Int(20));
        let policy = ClientPriority::new([ClientId::from("phone-b")]);
        assert_eq!(policy.resolve(&phones()).value, Value::Int(30));
    }

    #[test]
    fn client_priority_falls_back_to_last_writer_wins_for_unranked_writers() {
        let policy = ClientPriority::new([ClientId::from("nobody-here")]);
        assert_eq!(policy.resolve(&phones()).value, Value::Int(10));
    }

    #[test]
    fn max_and_min_ignore_nulls() {
        let mut with_null = phones().candidates().to_vec();
        with_null.push(candidate(Value::Null, Some(999), "phone-c", 4));
        let set = conflict(with_null);
        assert_eq!(Max.resolve(&set).value, Value::Int(30));
        assert_eq!(Min.resolve(&set).value, Value::Int(10));
        let nulls = conflict(vec![
            candidate(Value::Null, Some(1), "a", 1),
            candidate(Value::Null, Some(2), "b", 1),
        ]);
        assert_eq!(Max.resolve(&nulls).value, Value::Null);
    }

    #[test]
    fn sum_adds_integers_and_promotes_to_float() {
        assert_eq!(Sum.resolve(&phones()).value, Value::Int(60));
        let mixed = conflict(vec![
            candidate(Value::Int(1), Some(1), "a", 1),
            candidate(Value::Float(0.5), Some(2), "b", 1),
        ]);
        assert_eq!(Sum.resolve(&mixed).value, Value::Float(1.5));
        let saturating = conflict(vec![
            candidate(Value::Int(i64::MAX), Some(1), "a", 1),
            candidate(Value::Int(5), Some(2), "b", 1),
        ]);
        assert_eq!(Sum.resolve(&saturating).value, Value::Int(i64::MAX));
    }

    #[test]
    fn sum_of_non_numbers_falls_back_to_last_writer_wins() {
        let texts = conflict(vec![
            candidate(Value::str("old"), Some(1), "a", 1),
            candidate(Value::str("new"), Some(2), "b", 1),
        ]);
        assert_eq!(Sum.resolve(&texts).value, Value::str("new"));
    }

    #[test]
    fn set_union_merges_lists_sorted_without_duplicates() {
        let lists = conflict(vec![
            candidate(
                Value::List(vec![Value::str("milk"), Value::str("eggs")].into()),
                Some(1),
                "a",
                1,
            ),
            candidate(
                Value::List(vec![Value::str("bread"), Value::str("milk")].into()),
                Some(2),
                "b",
                1,
            ),
            candidate(Value::str("jam"), Some(3), "c", 1),
            candidate(Value::Null, Some(4), "d", 1),
        ]);
        let expected = ["bread", "eggs", "jam", "milk"].map(Value::str);
        assert_eq!(SetUnion.resolve(&lists).value, Value::List(expected.into()));
    }

    #[test]
    fn manual_keeps_the_conflict_open_with_the_last_writer_as_provisional_value() {
        let resolution = Manual.resolve(&phones());
        assert!(resolution.open);
        assert_eq!(resolution.value, Value::Int(10));
    }

    #[test]
    fn custom_closures_decide() {
        let smallest_writer = Custom::new("first_writer_alphabetically", |conflict| {
            let first = conflict
                .candidates()
                .iter()
                .min_by(|left, right| left.writer.cmp(&right.writer));
            Resolution::settled(first.map_or(Value::Null, |candidate| candidate.value.clone()))
        });
        assert_eq!(smallest_writer.resolve(&phones()).value, Value::Int(20));
        assert_eq!(smallest_writer.name(), "first_writer_alphabetically");
    }

    #[test]
    fn a_single_value_is_never_sent_to_the_policy() {
        let single = conflict(vec![candidate(Value::Int(4), Some(1), "a", 1)]);
        let resolution = resolve(&Manual, &single);
        assert_eq!(resolution, Resolution::settled(Value::Int(4)));
        assert_eq!(resolve(&Manual, &conflict(Vec::new())).value, Value::Null);
    }
}

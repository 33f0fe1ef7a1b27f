//! Secondary indexes over a table's visible rows.
//!
//! An [`Index`] keeps one entry `(key, slot)` per live record: the record's visible
//! value of one field and the record's slot (its position in the table). Entries are
//! ordered by [`Value`]'s total order and then by slot, so the index answers equality
//! lookups, ranges, string prefixes and ordered walks in both directions.
//!
//! The index does not enforce uniqueness itself. A unique index still accepts
//! duplicate keys, because merged remote data may violate the constraint and must
//! stay findable; the table checks local writes with [`Index::holder`] before it
//! applies them.

use std::collections::BTreeSet;
use std::ops::Bound;

use mobilesyncdb_crdt::Value;

/// Bytes one entry costs besides its key's heap: the `(Value, u32)` tuple plus
/// its share of B-tree nodes, which run about two-thirds full.
const ENTRY_BYTES: usize = std::mem::size_of::<(Value, u32)>() * 3 / 2;

/// A secondary index on one field.
#[derive(Clone, Debug)]
pub(crate) struct Index {
    field_position: usize,
    unique: bool,
    entries: BTreeSet<(Value, u32)>,
    /// Kept up to date on every insert and remove so that memory accounting never
    /// has to walk the tree.
    heap_bytes: usize,
}

impl Index {
    /// An empty index on the field at `field_position`.
    pub(crate) fn new(field_position: usize, unique: bool) -> Index {
        Index {
            field_position,
            unique,
            entries: BTreeSet::new(),
            heap_bytes: 0,
        }
    }

    /// An index holding `entries`, built at once (sorting them and building the
    /// tree bottom-up costs a fraction of inserting them one by one).
    pub(crate) fn from_entries(
        field_position: usize,
        unique: bool,
        entries: Vec<(Value, u32)>,
    ) -> Index {
        let heap_bytes = entries.iter().map(|(key, _)| entry_bytes(key)).sum();
        Index {
            field_position,
            unique,
            entries: entries.into_iter().collect(),
            heap_bytes,
        }
    }

    /// The schema position of the indexed field.
    pub(crate) fn field_position(&self) -> usize {
        self.field_position
    }

    /// Whether local writes must keep non-null keys unique.
    pub(crate) fn is_unique(&self) -> bool {
        self.unique
    }

    /// The number of entries.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Adds the entry `(key, slot)`; adding it twice changes nothing.
    pub(crate) fn insert(&mut self, key: &Value, slot: u32) {
        if self.entries.insert((key.clone(), slot)) {
            self.heap_bytes += entry_bytes(key);
        }
    }

    /// Removes the entry `(key, slot)` if it is there.
    pub(crate) fn remove(&mut self, key: &Value, slot: u32) {
        if self.entries.remove(&(key.clone(), slot)) {
            self.heap_bytes -= entry_bytes(key);
        }
    }

    /// Another slot than `except` that holds `key`, for unique checks. Null keys never
    /// conflict: an unset field does not claim a value.
    pub(crate) fn holder(&self, key: &Value, except: u32) -> Option<u32> {
        if key.is_null() {
            return None;
        }
        self.eq(key).find(|&slot| slot != except)
    }

    /// Approximate heap bytes owned by the index, for memory accounting.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.heap_bytes
    }

    /// The slots holding `key`, in slot order.
    pub(crate) fn eq<'a>(&'a self, key: &Value) -> impl DoubleEndedIterator<Item = u32> + use<'a> {
        self.range(Bound::Included(key), Bound::Included(key))
            .map(|(_, slot)| slot)
    }

    /// The entries whose key lies between `lower` and `upper`, in key order then slot
    /// order. Reverse the iterator for descending order. Bounds that leave nothing
    /// between them yield nothing.
    pub(crate) fn range<'a>(
        &'a self,
        lower: Bound<&Value>,
        upper: Bound<&Value>,
    ) -> impl DoubleEndedIterator<Item = (&'a Value, u32)> + use<'a> {
        let (lower, upper) = (entry_floor(lower), entry_ceiling(upper));
        // BTreeSet::range panics on inverted bounds, which contradictory filters
        // (`x > 5 and x < 3`) produce; those simply select nothing.
        let entries = (!is_empty_span(&lower, &upper)).then(|| self.entries.range((lower, upper)));
        entries
            .into_iter()
            .flatten()
            .map(|(key, slot)| (key, *slot))
    }

    /// The entries whose key is a string starting with `prefix`, in key order.
    #[cfg(test)]
    pub(crate) fn prefix<'a>(
        &'a self,
        prefix: &str,
    ) -> impl DoubleEndedIterator<Item = (&'a Value, u32)> + use<'a> {
        let (lower, upper) = prefix_bounds(prefix);
        self.range(lower.as_ref(), upper.as_ref())
    }

    /// Every entry in key order.
    #[cfg(test)]
    pub(crate) fn iter(&self) -> impl DoubleEndedIterator<Item = (&Value, u32)> {
        self.range(Bound::Unbounded, Bound::Unbounded)
    }
}

fn entry_bytes(key: &Value) -> usize {
    ENTRY_BYTES + key.heap_bytes()
}

/// The entry bound for a lower key bound: an included key starts at its first
/// possible slot, an excluded key after its last.
fn entry_floor(bound: Bound<&Value>) -> Bound<(Value, u32)> {
    match bound {
        Bound::Included(key) => Bound::Included((key.clone(), 0)),
        Bound::Excluded(key) => Bound::Excluded((key.clone(), u32::MAX)),
        Bound::Unbounded => Bound::Unbounded,
    }
}

/// The entry bound for an upper key bound: an included key ends at its last
/// possible slot, an excluded key before its first.
fn entry_ceiling(bound: Bound<&Value>) -> Bound<(Value, u32)> {
    match bound {
        Bound::Included(key) => Bound::Included((key.clone(), u32::MAX)),
        Bound::Excluded(key) => Bound::Excluded((key.clone(), 0)),
        Bound::Unbounded => Bound::Unbounded,
    }
}

fn is_empty_span<T: Ord>(lower: &Bound<T>, upper: &Bound<T>) -> bool {
    match (lower, upper) {
        (Bound::Included(low), Bound::Included(high)) => low > high,
        (
            Bound::Included(low) | Bound::Excluded(low),
            Bound::Included(high) | Bound::Excluded(high),
        ) => low >= high,
        _ => false,
    }
}

/// Key bounds that select exactly the strings starting with `prefix`.
///
/// Strings compare byte-wise, which for UTF-8 is code point order, so the strings
/// with a prefix are those from the prefix itself up to (excluding) its successor:
/// the prefix with its last incrementable character incremented and the rest
/// dropped (`"ab"` → `"ac"`, `"a\u{10FFFF}"` → `"b"`). A prefix with no successor
/// (empty, or only `char::MAX`) reaches the end of the strings, which is where the
/// smallest bytes value starts in the total order.
pub(crate) fn prefix_bounds(prefix: &str) -> (Bound<Value>, Bound<Value>) {
    let upper = match prefix_successor(prefix) {
        Some(successor) => Value::from(successor),
        None => Value::bytes(Vec::new()),
    };
    (Bound::Included(Value::str(prefix)), Bound::Excluded(upper))
}

fn prefix_successor(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        if let Some(next) = next_char(last) {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

/// The next Unicode scalar value, skipping the surrogate gap.
fn next_char(c: char) -> Option<char> {
    match c {
        '\u{D7FF}' => Some('\u{E000}'),
        _ => char::from_u32(u32::from(c) + 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index_of(entries: &[(Value, u32)]) -> Index {
        let mut index = Index::new(1, false);
        for (key, slot) in entries {
            index.insert(key, *slot);
        }
        index
    }

    fn slots<'a>(entries: impl Iterator<Item = (&'a Value, u32)>) -> Vec<u32> {
        entries.map(|(_, slot)| slot).collect()
    }

    #[test]
    fn entries_order_by_key_then_slot() {
        let index = index_of(&[
            (Value::Int(2), 5),
            (Value::Null, 9),
            (Value::Int(1), 7),
            (Value::Int(2), 1),
        ]);
        assert_eq!(slots(index.iter()), vec![9, 7, 1, 5]);
        assert_eq!(slots(index.iter().rev()), vec![5, 1, 7, 9]);
        assert_eq!(index.eq(&Value::Int(2)).collect::<Vec<_>>(), vec![1, 5]);
        assert_eq!(index.eq(&Value::Null).collect::<Vec<_>>(), vec![9]);
        assert_eq!(index.eq(&Value::Int(3)).count(), 0);
    }

    #[test]
    fn ranges_honour_inclusive_and_exclusive_bounds() {
        let entries: Vec<(Value, u32)> = (0..10).map(|n| (Value::Int(n), n as u32)).collect();
        let index = index_of(&entries);
        let (two, five) = (Value::Int(2), Value::Int(5));
        let cases = [
            (
                Bound::Included(&two),
                Bound::Included(&five),
                vec![2, 3, 4, 5],
            ),
            (Bound::Excluded(&two), Bound::Excluded(&five), vec![3, 4]),
            (Bound::Unbounded, Bound::Excluded(&two), vec![0, 1]),
            (Bound::Excluded(&five), Bound::Unbounded, vec![6, 7, 8, 9]),
        ];
        for (lower, upper, expected) in cases {
            assert_eq!(
                slots(index.range(lower, upper)),
                expected,
                "{lower:?}..{upper:?}"
            );
        }
    }

    #[test]
    fn contradictory_ranges_are_empty_not_a_panic() {
        let index = index_of(&[(Value::Int(3), 0), (Value::Int(4), 1)]);
        let (three, four) = (Value::Int(3), Value::Int(4));
        assert_eq!(
            index
                .range(Bound::Included(&four), Bound::Included(&three))
                .count(),
            0
        );
        assert_eq!(
            index
                .range(Bound::Excluded(&three), Bound::Excluded(&three))
                .count(),
            0
        );
        assert_eq!(
            index
                .range(Bound::Excluded(&three), Bound::Included(&three))
                .count(),
            0
        );
        assert_eq!(
            index
                .range(Bound::Included(&three), Bound::Excluded(&three))
                .count(),
            0
        );
        assert_eq!(
            slots(index.range(Bound::Included(&three), Bound::Included(&three))),
            vec![0]
        );
    }

    #[test]
    fn prefix_selects_exactly_the_strings_that_start_with_it() {
        let words = [
            "",
            "a",
            "ab",
            "abc",
            "abd",
            "ac",
            "b",
            "a\u{10FFFF}",
            "a\u{10FFFF}x",
            "\u{D7FF}z",
            "\u{E000}",
        ];
        let mut entries: Vec<(Value, u32)> = words
            .iter()
            .zip(0..)
            .map(|(word, slot)| (Value::str(*word), slot))
            .collect();
        entries.push((Value::Null, 100));
        entries.push((Value::Int(1), 101));
        entries.push((Value::bytes(b"ab".to_vec()), 102));
        let index = index_of(&entries);
        for prefix in [
            "",
            "a",
            "ab",
            "abc",
            "a\u{10FFFF}",
            "\u{D7FF}",
            "\u{10FFFF}",
            "z",
        ] {
            let found: Vec<&str> = index
                .prefix(prefix)
                .map(|(key, _)| match key {
                    Value::Str(text) => &**text,
                    other => panic!("non-string {other:?} for prefix {prefix:?}"),
                })
                .collect();
            let mut expected: Vec<&str> = words
                .iter()
                .copied()
                .filter(|word| word.starts_with(prefix))
                .collect();
            expected.sort();
            assert_eq!(found, expected, "prefix {prefix:?}");
        }
    }

    #[test]
    fn holder_finds_other_slots_but_never_for_null() {
        let mut index = Index::new(0, true);
        assert!(index.is_unique());
        index.insert(&Value::str("a@x"), 1);
        index.insert(&Value::Null, 2);
        index.insert(&Value::Null, 3);
        assert_eq!(index.holder(&Value::str("a@x"), 1), None);
        assert_eq!(index.holder(&Value::str("a@x"), 2), Some(1));
        assert_eq!(index.holder(&Value::str("b@x"), 2), None);
        assert_eq!(index.holder(&Value::Null, 2), None);
        assert_eq!(index.holder(&Value::Null, 9), None);
    }

    #[test]
    fn unique_index_still_keeps_duplicate_keys() {
        let mut index = Index::new(0, true);
        index.insert(&Value::str("a@x"), 1);
        index.insert(&Value::str("a@x"), 2);
        assert_eq!(index.len(), 2);
        assert_eq!(index.holder(&Value::str("a@x"), 1), Some(2));
    }

    #[test]
    fn heap_bytes_follow_inserts_and_removes() {
        let mut index = Index::new(0, false);
        assert_eq!(index.heap_bytes(), 0);
        index.insert(&Value::str("hello"), 1);
        index.insert(&Value::str("hello"), 1);
        assert_eq!(index.heap_bytes(), ENTRY_BYTES + 5);
        index.insert(&Value::Int(3), 2);
        assert_eq!(index.heap_bytes(), 2 * ENTRY_BYTES + 5);
        index.remove(&Value::str("hello"), 7);
        assert_eq!(index.heap_bytes(), 2 * ENTRY_BYTES + 5);
        index.remove(&Value::str("hello"), 1);
        index.remove(&Value::Int(3), 2);
        assert_eq!(index.heap_bytes(), 0);
        assert_eq!(index.len(), 0);
        assert_eq!(index.field_position(), 0);
    }
}

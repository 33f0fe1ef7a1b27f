//! Running a prepared query: filtering the examined rows, ordering them and
//! cutting the page.

use std::cmp::Ordering;

use mobilesyncdb_crdt::Value;

use super::plan::{Check, KeyRange, Prepared};
use super::{Direction, PageToken, QueryResult, RowSource};
use crate::engine::row::Row;

impl<'a> Prepared<'a> {
    /// Walks the order-by field's index in the query's direction until `wanted`
    /// hits are found.
    pub(super) fn walk_in_order<S: RowSource>(
        &self,
        scan: &Scan<'a, '_, S>,
        wanted: usize,
    ) -> Vec<Hit<'a>> {
        let Some((index, _, ranges)) = &self.walk else {
            return Vec::new();
        };
        // The token's value is a key of this index: skip straight to it.
        let ranges: Vec<KeyRange> = match scan.after {
            Some(token) => ranges
                .iter()
                .map(|range| range.starting_at(token, self.direction))
                .collect(),
            None => ranges.clone(),
        };
        let mut walk = OrderedWalk {
            hits: Vec::new(),
            group: Vec::new(),
            direction: self.direction,
        };
        for range in directed(&ranges, self.direction) {
            let entries = index.range(range.lower.as_ref(), range.upper.as_ref());
            match self.direction {
                Direction::Asc => walk.feed(scan, entries, wanted),
                Direction::Desc => walk.feed(scan, entries.rev(), wanted),
            }
            // Ranges are disjoint, so a range's end is always a group boundary.
            walk.flush();
            if walk.hits.len() >= wanted {
                break;
            }
        }
        walk.hits
    }

    /// Collects every hit of the access path, then sorts the first `wanted`.
    pub(super) fn collect_sorted<S: RowSource>(
        &self,
        scan: &Scan<'a, '_, S>,
        wanted: usize,
    ) -> Vec<Hit<'a>> {
        let mut hits: Vec<Hit<'a>> = match &self.walk {
            Some((index, _, ranges)) => ranges
                .iter()
                .flat_map(|range| index.range(range.lower.as_ref(), range.upper.as_ref()))
                .filter_map(|(_, slot)| scan.hit(slot))
                .collect(),
            None => (0..scan.source.slot_count())
                .filter_map(|slot| scan.hit(slot))
                .collect(),
        };
        let direction = self.direction;
        let by_order = |a: &Hit<'_>, b: &Hit<'_>| compare_hits(a, b, direction);
        if wanted < hits.len() {
            // Selection moves the page's hits to the front in linear time, so only
            // they need the full sort.
            hits.select_nth_unstable_by(wanted, by_order);
            hits.truncate(wanted);
        }
        hits.sort_unstable_by(by_order);
        hits
    }

    pub(super) fn finish(&self, mut hits: Vec<Hit<'a>>, limit: Option<usize>) -> QueryResult {
        let limit = limit.unwrap_or(usize::MAX);
        let more = hits.len() > limit;
        hits.truncate(limit);
        let next = hits.last().filter(|_| more).map(Hit::token);
        QueryResult {
            rows: hits.iter().map(|hit| hit.row.clone()).collect(),
            next,
            plan: self.plan(),
        }
    }
}

fn directed(ranges: &[KeyRange], direction: Direction) -> Box<dyn Iterator<Item = &KeyRange> + '_> {
    match direction {
        Direction::Asc => Box::new(ranges.iter()),
        Direction::Desc => Box::new(ranges.iter().rev()),
    }
}

/// What decides whether an examined row is a hit.
pub(super) struct Scan<'a, 'q, S> {
    pub(super) source: &'a S,
    pub(super) residual: &'q [Check],
    pub(super) order: usize,
    pub(super) direction: Direction,
    pub(super) after: Option<&'q PageToken>,
}

impl<'a, S: RowSource> Scan<'a, '_, S> {
    fn hit(&self, slot: u32) -> Option<Hit<'a>> {
        let row = self.source.live_row(slot)?;
        if !self
            .residual
            .iter()
            .all(|check| check.matches(self.source.schema(), row))
        {
            return None;
        }
        let hit = Hit {
            row,
            value: self.source.value(row, self.order),
            id: self.source.record_id(slot),
            slot,
        };
        match self.after {
            Some(token) if !hit.is_after(token, self.direction) => None,
            _ => Some(hit),
        }
    }
}

/// A matching row, by reference until it makes the page.
pub(super) struct Hit<'a> {
    row: &'a Row,
    /// The row's order-by value, decoded once.
    value: Value,
    id: &'a str,
    slot: u32,
}

impl Hit<'_> {
    fn is_after(&self, token: &PageToken, direction: Direction) -> bool {
        let ordering = self
            .value
            .cmp(&token.value)
            .then_with(|| self.id.cmp(token.id.as_str()));
        ordering == direction_ordering(direction)
    }

    fn token(&self) -> PageToken {
        PageToken {
            value: self.value.clone(),
            id: self.id.to_owned(),
        }
    }
}

/// The ordering a later row has against an earlier one.
fn direction_ordering(direction: Direction) -> Ordering {
    match direction {
        Direction::Asc => Ordering::Greater,
        Direction::Desc => Ordering::Less,
    }
}

fn compare_hits(a: &Hit<'_>, b: &Hit<'_>, direction: Direction) -> Ordering {
    // The slot settles duplicate record ids, which only corrupt data could hold,
    // so that the order stays total.
    let ordering = a
        .value
        .cmp(&b.value)
        .then_with(|| a.id.cmp(b.id))
        .then(a.slot.cmp(&b.slot));
    match direction {
        Direction::Asc => ordering,
        Direction::Desc => ordering.reverse(),
    }
}

/// Hits gathered from an index walk in key order, one group of equal keys at a time.
struct OrderedWalk<'a> {
    hits: Vec<Hit<'a>>,
    /// Hits sharing the current key, which the index orders by slot, not record id.
    group: Vec<Hit<'a>>,
    direction: Direction,
}

impl<'a> OrderedWalk<'a> {
    /// Takes entries in walk order until `wanted` hits are complete.
    fn feed<'e, S: RowSource>(
        &mut self,
        scan: &Scan<'a, '_, S>,
        entries: impl Iterator<Item = (&'e Value, u32)>,
        wanted: usize,
    ) {
        // Group boundaries come from the index keys, so that a full page is known
        // before the next group's first row is read.
        let mut current: Option<&Value> = None;
        for (key, slot) in entries {
            if current.is_some_and(|current| current != key) {
                self.flush();
                if self.hits.len() >= wanted {
                    return;
                }
            }
            current = Some(key);
            if let Some(hit) = scan.hit(slot) {
                self.group.push(hit);
            }
        }
    }

    fn flush(&mut self) {
        let direction = self.direction;
        self.group
            .sort_unstable_by(|a, b| compare_hits(a, b, direction));
        self.hits.append(&mut self.group);
    }
}

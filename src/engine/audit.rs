//! What the engine remembers about what happened, besides the data: the
//! record of every detected conflict, and the events webhooks deliver.
//!
//! Both are bounded histories kept under the engine's lock, so an entry takes
//! its place in the same order as the write that caused it, is logged to the
//! journal in the same group as that write, and is in snapshots.

use std::collections::{BTreeMap, VecDeque};

use mobilesyncdb_crdt::{ClientId, Stamp, Value};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::config::KeepPolicy;
use crate::schema::value_to_json;

/// One concurrent value of a conflicted field, as the audit keeps it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConflictCandidate {
    pub value: Value,
    /// The write's stamp; `None` for a value written without MobileSyncDB metadata.
    pub stamp: Option<Stamp>,
    /// Who wrote it, when known.
    pub writer: Option<ClientId>,
    /// The automerge operation that wrote it, `counter@actor`.
    pub op: String,
}

/// How a manual conflict was closed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConflictResolution {
    pub time_ms: u64,
    /// The value the field shows since.
    pub value: Value,
    /// Who wrote it.
    pub by: ClientId,
    /// The sequence number of the change that resolved it, or `None` when a later
    /// conflict on the same field took its place (`superseded_by`).
    pub seq: Option<u64>,
    pub superseded_by: Option<u64>,
}

/// A detected conflict: a write left a field with two or more concurrent values.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConflictRecord {
    /// Increasing, from 1.
    pub id: u64,
    /// When the conflict was detected (server wall time, epoch ms).
    pub time_ms: u64,
    pub table: String,
    pub record: String,
    pub field: String,
    /// The sequence number of the change that made it detected.
    pub seq: u64,
    /// The policy that decided it, by name.
    pub policy: String,
    /// The concurrent values, oldest first.
    pub candidates: Vec<ConflictCandidate>,
    /// The value the policy chose (for a manual conflict, the provisional one).
    pub chosen: Value,
    /// A manual conflict waiting for someone to resolve it; false once it is
    /// closed (`resolution` then says how).
    pub open: bool,
    /// Set once an open conflict is closed.
    pub resolution: Option<ConflictResolution>,
}

impl ConflictRecord {
    /// The record as the API and webhooks show it: values as plain JSON
    /// (bytes in base64, timestamps in epoch ms), stamps as `{ms, logical}`.
    pub fn to_json(&self) -> serde_json::Value {
        let stamp = |stamp: &Stamp| json!({"ms": stamp.physical_ms, "logical": stamp.logical});
        let candidates: Vec<serde_json::Value> = self
            .candidates
            .iter()
            .map(|candidate| {
                json!({
                    "value": value_to_json(&candidate.value),
                    "stamp": candidate.stamp.as_ref().map(stamp),
                    "writer": candidate.writer.as_ref().map(ClientId::as_str),
                    "op": candidate.op,
                })
            })
            .collect();
        let resolution = self.resolution.as_ref().map(|resolution| {
            json!({
                "time_ms": resolution.time_ms,
                "value": value_to_json(&resolution.value),
                "by": resolution.by.as_str(),
                "seq": resolution.seq,
                "superseded_by": resolution.superseded_by,
            })
        });
        json!({
            "id": self.id,
            "time_ms": self.time_ms,
            "table": self.table,
            "record": self.record,
            "field": self.field,
            "seq": self.seq,
            "policy": self.policy,
            "candidates": candidates,
            "chosen": value_to_json(&self.chosen),
            "open": self.open,
            "resolution": resolution,
        })
    }
}

/// Which conflicts to list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConflictFilter {
    pub table: Option<String>,
    pub record: Option<String>,
    pub field: Option<String>,
    /// Only manual conflicts still open.
    pub open_only: bool,
    /// Conflicts with a greater id (the page cursor).
    pub after: u64,
    pub limit: usize,
}

impl ConflictFilter {
    fn admits(&self, conflict: &ConflictRecord) -> bool {
        let equal =
            |wanted: &Option<String>, found: &str| wanted.as_deref().is_none_or(|w| w == found);
        equal(&self.table, &conflict.table)
            && equal(&self.record, &conflict.record)
            && equal(&self.field, &conflict.field)
            && (!self.open_only || conflict.open)
    }
}

/// A page of conflict records, oldest first.
#[derive(Clone, Debug, PartialEq)]
pub struct ConflictPage {
    pub conflicts: Vec<ConflictRecord>,
    /// The cursor of the next page, when there may be one.
    pub next: Option<u64>,
}

/// Every retained conflict record. Closed ones are trimmed by age and count;
/// open manual conflicts stay until resolved, whatever their age.
#[derive(Debug, Default)]
pub(crate) struct ConflictLog {
    closed: BTreeMap<u64, ConflictRecord>,
    open: BTreeMap<u64, ConflictRecord>,
    last_id: u64,
}

impl ConflictLog {
    /// Ids continue after `id` (the last one given before a restart).
    pub(crate) fn resume_after(&mut self, id: u64) {
        self.last_id = self.last_id.max(id);
    }

    pub(crate) fn last_id(&self) -> u64 {
        self.last_id
    }

    pub(crate) fn next_id(&mut self) -> u64 {
        self.last_id += 1;
        self.last_id
    }

    /// Adds a record (new, or restored with its id).
    pub(crate) fn insert(&mut self, conflict: ConflictRecord) {
        self.last_id = self.last_id.max(conflict.id);
        if conflict.open && conflict.resolution.is_none() {
            self.open.insert(conflict.id, conflict);
        } else {
            self.open.remove(&conflict.id);
            self.closed.insert(conflict.id, conflict);
        }
    }

    pub(crate) fn get(&self, id: u64) -> Option<&ConflictRecord> {
        self.open.get(&id).or_else(|| self.closed.get(&id))
    }

    /// The open conflicts of one record, by id.
    pub(crate) fn open_of(&self, table: &str, record: &str) -> Vec<u64> {
        self.open
            .values()
            .filter(|conflict| conflict.table == table && conflict.record == record)
            .map(|conflict| conflict.id)
            .collect()
    }

    /// Closes an open conflict; returns it as closed.
    pub(crate) fn close(
        &mut self,
        id: u64,
        resolution: ConflictResolution,
    ) -> Option<ConflictRecord> {
        let mut conflict = self.open.remove(&id)?;
        conflict.open = false;
        conflict.resolution = Some(resolution);
        self.closed.insert(id, conflict.clone());
        Some(conflict)
    }

    pub(crate) fn page(&self, filter: &ConflictFilter) -> ConflictPage {
        let limit = filter.limit.max(1);
        let start = filter.after.saturating_add(1);
        let mut open = self.open.range(start..).map(|(_, c)| c).peekable();
        let mut closed = self
            .closed
            .range(start..)
            .map(|(_, c)| c)
            .filter(|_| !filter.open_only)
            .peekable();
        let mut conflicts = Vec::new();
        loop {
            let next = match (open.peek(), closed.peek()) {
                (Some(a), Some(b)) if a.id < b.id => open.next(),
                (Some(_), Some(_)) | (None, Some(_)) => closed.next(),
                (Some(_), None) => open.next(),
                (None, None) => None,
            };
            let Some(conflict) = next else {
                return ConflictPage {
                    conflicts,
                    next: None,
                };
            };
            if filter.admits(conflict) {
                conflicts.push(conflict.clone());
                if conflicts.len() == limit {
                    return ConflictPage {
                        conflicts,
                        next: Some(conflict.id),
                    };
                }
            }
        }
    }

    /// Drops closed records beyond the count or older than the age bound.
    pub(crate) fn trim(&mut self, keep: KeepPolicy, now_ms: u64) {
        let oldest = now_ms.saturating_sub(keep.max_age_ms);
        loop {
            let over = self.closed.len() + self.open.len() > keep.max_entries;
            match self.closed.first_entry() {
                Some(entry) if over || entry.get().time_ms < oldest => {
                    entry.remove();
                }
                _ => break,
            }
        }
    }

    pub(crate) fn len(&self) -> (usize, usize) {
        (self.open.len(), self.closed.len())
    }

    /// Every record, by id (for a snapshot).
    pub(crate) fn all(&self) -> Vec<ConflictRecord> {
        let mut all: Vec<ConflictRecord> = self
            .open
            .values()
            .chain(self.closed.values())
            .cloned()
            .collect();
        all.sort_by_key(|conflict| conflict.id);
        all
    }
}

/// What an event announces.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum EventKind {
    /// A record was created (or a deleted one revived).
    #[serde(rename = "record.created")]
    RecordCreated,
    #[serde(rename = "record.changed")]
    RecordChanged,
    #[serde(rename = "record.deleted")]
    RecordDeleted,
    /// A write left a field with concurrent values.
    #[serde(rename = "conflict.detected")]
    ConflictDetected,
    /// A manual conflict is waiting for someone to resolve it.
    #[serde(rename = "conflict.opened")]
    ConflictOpened,
    /// A manual conflict was resolved.
    #[serde(rename = "conflict.resolved")]
    ConflictResolved,
    /// A table was created or its policies changed.
    #[serde(rename = "schema.changed")]
    SchemaChanged,
    /// A client's cursor was older than the change log could serve.
    #[serde(rename = "client.too_stale")]
    ClientTooStale,
}

impl EventKind {
    /// Every kind, in the order of [`EventKind::bit`].
    pub const ALL: [EventKind; 8] = [
        EventKind::RecordCreated,
        EventKind::RecordChanged,
        EventKind::RecordDeleted,
        EventKind::ConflictDetected,
        EventKind::ConflictOpened,
        EventKind::ConflictResolved,
        EventKind::SchemaChanged,
        EventKind::ClientTooStale,
    ];

    /// The kind's name, as webhooks send it in `type`.
    pub fn name(self) -> &'static str {
        match self {
            EventKind::RecordCreated => "record.created",
            EventKind::RecordChanged => "record.changed",
            EventKind::RecordDeleted => "record.deleted",
            EventKind::ConflictDetected => "conflict.detected",
            EventKind::ConflictOpened => "conflict.opened",
            EventKind::ConflictResolved => "conflict.resolved",
            EventKind::SchemaChanged => "schema.changed",
            EventKind::ClientTooStale => "client.too_stale",
        }
    }

    /// The kind named `name`.
    pub fn from_name(name: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|kind| kind.name() == name)
    }

    /// The kind's bit in an [`EventKinds`] set.
    pub fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

/// A set of event kinds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventKinds(pub u16);

impl EventKinds {
    pub fn contains(self, kind: EventKind) -> bool {
        self.0 & kind.bit() != 0
    }

    pub fn with(self, kind: EventKind) -> EventKinds {
        EventKinds(self.0 | kind.bit())
    }

    pub fn with_all(self, kinds: EventKinds) -> EventKinds {
        EventKinds(self.0 | kinds.0)
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl FromIterator<EventKind> for EventKinds {
    fn from_iter<I: IntoIterator<Item = EventKind>>(kinds: I) -> EventKinds {
        kinds
            .into_iter()
            .fold(EventKinds::default(), EventKinds::with)
    }
}

/// Something that happened, for webhooks.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Increasing, from 1: the event's stable identity across retries, restarts
    /// and replays.
    pub id: u64,
    pub time_ms: u64,
    pub kind: EventKind,
    /// The table concerned, when there is one (webhooks filter on it).
    pub table: Option<String>,
    /// What happened, as JSON (the record's row, the conflict record, …).
    pub data: serde_json::Value,
}

/// The retained events, oldest first, with the kinds anyone wants: while no
/// webhook endpoint asks for a kind, events of that kind are not made at all.
#[derive(Debug, Default)]
pub(crate) struct EventLog {
    events: VecDeque<Event>,
    last_id: u64,
    pub(crate) wanted: EventKinds,
}

impl EventLog {
    pub(crate) fn wants(&self, kind: EventKind) -> bool {
        self.wanted.contains(kind)
    }

    pub(crate) fn latest_id(&self) -> u64 {
        self.last_id
    }

    /// The oldest retained event's id, or the next id when none is retained.
    pub(crate) fn first_id(&self) -> u64 {
        self.events
            .front()
            .map_or(self.last_id + 1, |event| event.id)
    }

    /// Adds a new event; returns it.
    pub(crate) fn push(
        &mut self,
        time_ms: u64,
        kind: EventKind,
        table: Option<String>,
        data: serde_json::Value,
    ) -> &Event {
        self.last_id += 1;
        self.restore(Event {
            id: self.last_id,
            time_ms,
            kind,
            table,
            data,
        });
        self.events.back().expect("just pushed")
    }

    /// Ids continue after `id` (the last one given before a restart).
    pub(crate) fn resume_after(&mut self, id: u64) {
        self.last_id = self.last_id.max(id);
    }

    /// Adds an event with its id (from the journal or a snapshot).
    pub(crate) fn restore(&mut self, event: Event) {
        self.last_id = self.last_id.max(event.id);
        if self.events.back().is_some_and(|last| last.id >= event.id) {
            return;
        }
        self.events.push_back(event);
    }

    /// Up to `limit` events with an id greater than `after`.
    pub(crate) fn after(&self, after: u64, limit: usize) -> Vec<Event> {
        let first = self.first_id();
        let skip =
            usize::try_from(after.saturating_add(1).saturating_sub(first)).unwrap_or(usize::MAX);
        self.events.iter().skip(skip).take(limit).cloned().collect()
    }

    pub(crate) fn trim(&mut self, keep: KeepPolicy, now_ms: u64) {
        let oldest = now_ms.saturating_sub(keep.max_age_ms);
        while let Some(first) = self.events.front() {
            if self.events.len() > keep.max_entries || first.time_ms < oldest {
                self.events.pop_front();
            } else {
                break;
            }
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.events.len()
    }

    pub(crate) fn all(&self) -> Vec<Event> {
        self.events.iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conflict(id: u64, open: bool, time_ms: u64) -> ConflictRecord {
        ConflictRecord {
            id,
            time_ms,
            table: "notes".into(),
            record: format!("r{}", id % 3),
            field: "title".into(),
            seq: id,
            policy: "manual".into(),
            candidates: Vec::new(),
            chosen: Value::Null,
            open,
            resolution: None,
        }
    }

    #[test]
    fn pages_merge_open_and_closed_records_by_id() {
        let mut log = ConflictLog::default();
        for id in 1..=10 {
            log.insert(conflict(id, id % 4 == 0, id));
        }
        let mut seen = Vec::new();
        let mut after = 0;
        loop {
            let page = log.page(&ConflictFilter {
                after,
                limit: 3,
                ..ConflictFilter::default()
            });
            seen.extend(page.conflicts.iter().map(|c| c.id));
            match page.next {
                Some(next) => after = next,
                None => break,
            }
        }
        assert_eq!(seen, (1..=10).collect::<Vec<_>>());
        let open = log.page(&ConflictFilter {
            open_only: true,
            limit: 100,
            ..ConflictFilter::default()
        });
        assert_eq!(
            open.conflicts.iter().map(|c| c.id).collect::<Vec<_>>(),
            [4, 8]
        );
    }

    #[test]
    fn retention_keeps_open_conflicts_whatever_their_age() {
        let mut log = ConflictLog::default();
        for id in 1..=10 {
            log.insert(conflict(id, id == 2, id));
        }
        log.trim(
            KeepPolicy {
                max_entries: 4,
                max_age_ms: 1_000,
            },
            100,
        );
        let ids: Vec<u64> = log.all().iter().map(|c| c.id).collect();
        assert_eq!(ids, [2, 8, 9, 10]);
        log.trim(
            KeepPolicy {
                max_entries: 100,
                max_age_ms: 5,
            },
            100,
        );
        assert_eq!(log.all().iter().map(|c| c.id).collect::<Vec<_>>(), [2]);
        let closed = log.close(
            2,
            ConflictResolution {
                time_ms: 101,
                value: Value::Null,
                by: ClientId::from("admin"),
                seq: Some(11),
                superseded_by: None,
            },
        );
        assert!(closed.is_some_and(|c| c.resolution.is_some()));
        assert_eq!(log.len(), (0, 1));
    }

    #[test]
    fn events_after_an_id_skip_what_was_trimmed() {
        let mut log = EventLog::default();
        for time in 0..10 {
            log.push(
                time,
                EventKind::RecordChanged,
                None,
                serde_json::Value::Null,
            );
        }
        log.trim(
            KeepPolicy {
                max_entries: 6,
                max_age_ms: 1_000,
            },
            10,
        );
        assert_eq!(log.first_id(), 5);
        let ids = |events: Vec<Event>| events.iter().map(|e| e.id).collect::<Vec<_>>();
        assert_eq!(ids(log.after(0, 3)), [5, 6, 7]);
        assert_eq!(ids(log.after(7, 10)), [8, 9, 10]);
        assert!(log.after(10, 10).is_empty());
        for kind in EventKind::ALL {
            assert_eq!(EventKind::from_name(kind.name()), Some(kind));
            let json = serde_json::to_string(&kind).expect("serializes");
            assert_eq!(json, format!("\"{}\"", kind.name()));
        }
    }
}

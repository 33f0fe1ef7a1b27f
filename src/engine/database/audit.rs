//! Conflicts, events and policies at run time: what the write path records
//! about the conflicts it detects and closes, the events it makes for
//! webhooks, and policy changes that re-resolve the records they concern.

use std::borrow::Cow;
use std::collections::BTreeMap;

use mobilesyncdb_crdt::{Change, ClientId, ConflictSet, Edit, OpId, PolicySpec, Record, Value};
use serde_json::json;
use tracing::{info, warn};

use super::state::{State, Written};
use super::{Database, EngineError, RowAccess};
use crate::engine::audit::{
    ConflictCandidate, ConflictFilter, ConflictPage, ConflictRecord, ConflictResolution, Event,
    EventKind, EventKinds,
};
use crate::engine::error::{ReadError, SchemaError, WriteError};
use crate::storage::entry::Entry;

/// A change to a table's policies, as the API takes it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PolicyChange {
    /// The new table-wide policy, or `None` to keep it.
    pub policy: Option<PolicySpec>,
    /// Per-field overrides to set (`Some`) or remove (`None`: the field follows
    /// the table's policy again).
    pub fields: BTreeMap<String, Option<PolicySpec>>,
}

/// What a policy change did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyOutcome {
    /// The table's schema version after the change.
    pub version: u32,
    /// Records whose visible row the new policies changed; each got a change
    /// of its own so that every replica fetches the new row.
    pub reresolved: usize,
}

impl State {
    /// Records what a stored write did: the conflicts it made, the manual
    /// conflicts it closed, and its event.
    pub(super) fn note_write(&mut self, written: &Written<'_>, detected: Vec<ConflictSet>) {
        let table = &self.tables[usize::from(written.table)];
        let deleted = table.record(written.slot).deleted;
        let kind = match (written.before.live, deleted) {
            (false, false) => Some(EventKind::RecordCreated),
            (true, false) => Some(EventKind::RecordChanged),
            (true, true) => Some(EventKind::RecordDeleted),
            (false, true) => None,
        }
        .filter(|kind| self.events.wants(*kind));
        let open_now = table.has_open_conflict(written.slot);
        let audited = !detected.is_empty() || written.before.open_conflict || open_now;
        if !audited && kind.is_none() {
            return;
        }
        let now = self.wall.now_ms();
        for set in detected {
            self.note_conflict(written, &set, now);
        }
        // A write stored without its document (see `Shown`) never has a
        // conflict open before or after it.
        if let Some(record) = written.record {
            if written.before.open_conflict {
                self.close_resolved(written, record, now);
            }
            if open_now {
                self.open_unrecorded(written, record, now);
            }
        }
        if let Some(kind) = kind {
            let table = &self.tables[usize::from(written.table)];
            let stored = table.record(written.slot);
            let row = (!stored.deleted).then(|| stored.row.to_json(&table.schema));
            let data = json!({
                "table": table.name(),
                "id": &*stored.id,
                "seq": written.seq,
                "writer": written.origin.as_str(),
                "row": row,
            });
            let table = Some(table.name().to_owned());
            self.push_event(now, kind, table, data);
        }
        if audited {
            self.conflicts.trim(self.config.conflicts, now);
        }
    }

    fn note_conflict(&mut self, written: &Written<'_>, set: &ConflictSet, now: u64) {
        let table = &self.tables[usize::from(written.table)];
        let policy = table.policy_of_key(set.field());
        let resolution = mobilesyncdb_crdt::resolve(policy, set);
        let conflict = ConflictRecord {
            id: self.conflicts.next_id(),
            time_ms: now,
            table: table.name().to_owned(),
            record: table.record(written.slot).id.to_string(),
            field: table
                .field_of_key(set.field())
                .map_or_else(|| set.field().to_owned(), |(_, field)| field.name.clone()),
            seq: written.seq,
            policy: policy.name().to_owned(),
            candidates: set
                .candidates()
                .iter()
                .map(|candidate| ConflictCandidate {
                    value: candidate.value.clone(),
                    stamp: candidate.stamp,
                    writer: candidate.writer.clone(),
                    op: candidate.op.to_string(),
                })
                .collect(),
            chosen: resolution.value,
            open: resolution.open,
            resolution: None,
        };
        info!(
            table = %conflict.table,
            record = %conflict.record,
            field = %conflict.field,
            policy = %conflict.policy,
            candidates = conflict.candidates.len(),
            open = conflict.open,
            "conflict detected"
        );
        if conflict.open {
            // One open conflict per field: the newer one lists every value.
            for older in self.conflicts.open_of(&conflict.table, &conflict.record) {
                let same_field = self
                    .conflicts
                    .get(older)
                    .is_some_and(|older| older.field == conflict.field);
                if same_field {
                    let resolution = ConflictResolution {
                        time_ms: now,
                        value: conflict.chosen.clone(),
                        by: written.origin.clone(),
                        seq: None,
                        superseded_by: Some(conflict.id),
                    };
                    if let Some(closed) = self.conflicts.close(older, resolution) {
                        self.journal_conflict(&closed);
                    }
                }
            }
        }
        self.journal_conflict(&conflict);
        self.conflicts.insert(conflict.clone());
        let table = Some(conflict.table.clone());
        if self.events.wants(EventKind::ConflictDetected) {
            self.push_event(
                now,
                EventKind::ConflictDetected,
                table.clone(),
                conflict.to_json(),
            );
        }
        if conflict.open && self.events.wants(EventKind::ConflictOpened) {
            self.push_event(now, EventKind::ConflictOpened, table, conflict.to_json());
        }
    }

    /// Records the open manual conflicts of the written record that no write
    /// detected: a policy change that made a field manual while it already
    /// held concurrent values opens its conflict with the policy's change.
    fn open_unrecorded(&mut self, written: &Written<'_>, record: &Record, now: u64) {
        let table = &self.tables[usize::from(written.table)];
        let id = table.record(written.slot).id.to_string();
        let recorded: Vec<String> = self
            .conflicts
            .open_of(table.name(), &id)
            .into_iter()
            .filter_map(|open| self.conflicts.get(open).map(|c| c.field.clone()))
            .collect();
        let unrecorded: Vec<ConflictSet> = table
            .schema
            .fields
            .iter()
            .filter(|field| !field.retired && !recorded.contains(&field.name))
            .filter(|field| record.has_conflict(field.doc_key()))
            .filter_map(|field| record.conflict_set(field.doc_key()).ok())
            .filter(|set| mobilesyncdb_crdt::resolve(table.policy_of_key(set.field()), set).open)
            .collect();
        for set in unrecorded {
            self.note_conflict(written, &set, now);
        }
    }

    /// Closes the open conflicts of the written record whose field no longer
    /// holds concurrent values, or whose policy no longer keeps them open (a
    /// policy change away from manual).
    fn close_resolved(&mut self, written: &Written<'_>, record: &Record, now: u64) {
        let table = &self.tables[usize::from(written.table)];
        let id = table.record(written.slot).id.to_string();
        for open in self.conflicts.open_of(table.name(), &id) {
            let table = &self.tables[usize::from(written.table)];
            let Some(conflict) = self.conflicts.get(open) else {
                continue;
            };
            let key = table.key_of(&conflict.field);
            let still_open = record.has_conflict(key)
                && record.conflict_set(key).is_ok_and(|set| {
                    let policy = table.policies.for_field(&conflict.field);
                    mobilesyncdb_crdt::resolve(policy, &set).open
                });
            if still_open {
                continue;
            }
            let value = table
                .schema
                .position(&conflict.field)
                .map_or(Value::Null, |position| {
                    table.read(&table.record(written.slot).row, position)
                });
            let resolution = ConflictResolution {
                time_ms: now,
                value,
                by: written.origin.clone(),
                seq: Some(written.seq),
                superseded_by: None,
            };
            let Some(closed) = self.conflicts.close(open, resolution) else {
                continue;
            };
            info!(
                table = %closed.table,
                record = %closed.record,
                field = %closed.field,
                by = %written.origin,
                "manual conflict resolved"
            );
            self.journal_conflict(&closed);
            if self.events.wants(EventKind::ConflictResolved) {
                let table = Some(closed.table.clone());
                self.push_event(now, EventKind::ConflictResolved, table, closed.to_json());
            }
        }
    }

    /// The `schema.changed` event of a table just created or changed: the
    /// table's whole schema as it is now.
    pub(super) fn note_schema_changed(&mut self, table: &str, created: bool) {
        if !self.events.wants(EventKind::SchemaChanged) {
            return;
        }
        let Ok(target) = self.table(table) else {
            return;
        };
        let data = json!({
            "table": table,
            "version": target.schema.version,
            "schema_version": self.history.version(),
            "created": created,
            "schema": target.schema.public(),
        });
        let now = self.wall.now_ms();
        self.push_event(now, EventKind::SchemaChanged, Some(table.to_owned()), data);
    }

    /// Adds an event (logged with the write that made it) and trims old ones.
    pub(super) fn push_event(
        &mut self,
        now: u64,
        kind: EventKind,
        table: Option<String>,
        data: serde_json::Value,
    ) {
        if self.events_muted {
            return;
        }
        let event = self.events.push(now, kind, table, data);
        if let Some(journal) = &self.journal {
            let lsn = journal.append(&Entry::Event(Cow::Borrowed(event)).encode(), None);
            self.pending_lsn = Some(lsn);
        }
        self.events.trim(self.config.events, now);
    }

    fn journal_conflict(&mut self, conflict: &ConflictRecord) {
        if let Some(journal) = &self.journal {
            let lsn = journal.append(&Entry::Conflict(Cow::Borrowed(conflict)).encode(), None);
            self.pending_lsn = Some(lsn);
        }
    }

    /// Replaces a table's policies, then gives every record they now show
    /// differently a change of its own.
    fn set_policies(
        &mut self,
        table: &str,
        change: PolicyChange,
        origin: &ClientId,
    ) -> Result<PolicyOutcome, EngineError> {
        let table_id = self.table_id(table)?;
        let mut schema = self.tables[usize::from(table_id)].schema.clone();
        if let Some(policy) = change.policy {
            schema.policy = policy;
        }
        for (field, policy) in change.fields {
            if schema.spec(&field).is_none() {
                return Err(SchemaError::BadPolicy {
                    table: table.to_owned(),
                    field,
                    problem: "no such field".to_owned(),
                }
                .into());
            }
            match policy {
                Some(policy) => schema.field_policies.insert(field, policy),
                None => schema.field_policies.remove(&field),
            };
        }
        schema.version += 1;
        let version = schema.version;
        let target = &mut self.tables[usize::from(table_id)];
        target.set_policies(schema, &self.registry)?;
        self.history.amend(&target.schema);
        info!(
            table,
            version,
            policy = ?target.schema.policy,
            fields = ?target.schema.field_policies,
            "policies changed"
        );
        self.journal_policies(table_id);
        self.note_schema_changed(table, false);
        let mut reresolved = 0;
        for slot in self.tables[usize::from(table_id)].conflicted() {
            if self.reresolve(table_id, slot, origin)? {
                reresolved += 1;
            }
        }
        Ok(PolicyOutcome {
            version,
            reresolved,
        })
    }

    /// Re-derives one record under its table's current policies; when its
    /// visible row changed, writes the policy mark so replicas fetch it.
    pub(super) fn reresolve(
        &mut self,
        table_id: u16,
        slot: u32,
        origin: &ClientId,
    ) -> Result<bool, EngineError> {
        let table = &self.tables[usize::from(table_id)];
        let stored = table.record(slot);
        if stored.deleted {
            return Ok(false);
        }
        let id = stored.id.to_string();
        let record = self.load(table_id, slot)?;
        let table = &self.tables[usize::from(table_id)];
        let still_conflicted = table
            .schema
            .fields
            .iter()
            .any(|field| record.has_conflict(&field.name));
        let (row, open) = table
            .derive_row(&record)
            .map_err(|source| WriteError::Record {
                table: table.name().to_owned(),
                record: id.clone(),
                source,
            })?;
        let unchanged = row == table.record(slot).row && open == table.has_open_conflict(slot);
        if unchanged {
            self.tables[usize::from(table_id)].set_conflicted(slot, still_conflicted);
            self.cache.put(table_id, slot, record);
            return Ok(false);
        }
        let meta = self.stamp(origin);
        let mark = self.log.next_seq();
        self.commit(
            super::state::Target::existing(table_id, slot, &id, &super::FullAccess),
            record,
            &meta,
            super::state::Expected::Derived,
            |record| record.mark_policy(mark, &meta),
        )?;
        Ok(true)
    }
}

/// The conflicts `new` changes made in `record`: of the `conflicted`
/// fields (those holding two or more concurrent values), the ones where
/// one of the values was written by one of the new changes. Values that
/// were in conflict before and untouched now are not detected again.
pub(super) fn detect_conflicts(
    record: &Record,
    conflicted: &[String],
    new: &[Change],
) -> Vec<ConflictSet> {
    let written_by_new = |op: &OpId| {
        new.iter().any(|change| {
            let start = change.start_op().get();
            change.actor_id() == &op.actor
                && (start..start + change.len() as u64).contains(&op.counter)
        })
    };
    conflicted
        .iter()
        .filter_map(|field| record.conflict_set(field).ok())
        .filter(|set| {
            set.candidates()
                .iter()
                .any(|candidate| written_by_new(&candidate.op))
        })
        .collect()
}

impl Database {
    /// A page of recorded conflicts, oldest first.
    pub fn conflict_log(&self, filter: &ConflictFilter) -> ConflictPage {
        self.read().conflicts.page(filter)
    }

    /// One recorded conflict.
    ///
    /// # Errors
    ///
    /// [`ReadError::UnknownConflict`] when there is none with this id (or it
    /// was trimmed by retention).
    pub fn conflict(&self, id: u64) -> Result<ConflictRecord, EngineError> {
        self.read()
            .conflicts
            .get(id)
            .cloned()
            .ok_or_else(|| ReadError::UnknownConflict { id }.into())
    }

    /// Resolves an open manual conflict by writing `value` to its field at the
    /// record's current state: the write supersedes every concurrent value,
    /// so every replica that syncs shows `value`. Returns the closed conflict.
    ///
    /// # Errors
    ///
    /// [`ReadError::UnknownConflict`], [`WriteError::ConflictClosed`] when it
    /// was resolved already, and the errors of a patch (the value's type, the
    /// caller's access, …).
    pub fn resolve_conflict(
        &self,
        id: u64,
        value: Value,
        origin: &ClientId,
        access: &dyn RowAccess,
    ) -> Result<ConflictRecord, EngineError> {
        // The check and the write under one lock: of two resolves at once,
        // the second finds the conflict closed. On a cluster node the write
        // closes the conflict when it comes back from the stream.
        let record = self
            .read()
            .conflicts
            .get(id)
            .map(|conflict| (conflict.table.clone(), conflict.record.clone()));
        let turn = record
            .as_ref()
            .map(|(table, record)| (table.as_str(), record.as_str()));
        let resolved = self.commit_write(false, turn, |state| {
            let conflict = state
                .conflicts
                .get(id)
                .cloned()
                .ok_or(ReadError::UnknownConflict { id })?;
            if !conflict.open || conflict.resolution.is_some() {
                return Err(EngineError::from(WriteError::ConflictClosed { id }));
            }
            let edits = vec![Edit::set(conflict.field.clone(), value)];
            let guard = super::state::Guard {
                access,
                version: None,
                schema: None,
            };
            state.patch(
                &conflict.table,
                &conflict.record,
                edits,
                None,
                origin,
                guard,
            )?;
            let closed = state.conflicts.get(id).cloned().unwrap_or(conflict);
            if closed.resolution.is_none() && state.mode == super::state::WriteMode::Local {
                warn!(id, "a resolving write left the conflict open");
            }
            Ok(closed)
        })?;
        if self.is_clustered() {
            return Ok(self.read().conflicts.get(id).cloned().unwrap_or(resolved));
        }
        Ok(resolved)
    }

    /// Changes a table's policies at run time. The change is durable, and every
    /// record the new policies show differently gets a change of its own, so
    /// that replicas fetch its new visible row.
    ///
    /// # Errors
    ///
    /// [`SchemaError::BadPolicy`] for an unknown field or custom policy;
    /// nothing changes then. [`WriteError::Unavailable`] on a cluster node:
    /// the changes it writes would be made apart on each node; set policies
    /// in the schema, on every node, instead.
    pub fn set_policies(
        &self,
        table: &str,
        change: PolicyChange,
        origin: &ClientId,
    ) -> Result<PolicyOutcome, EngineError> {
        if self.is_clustered() {
            return Err(EngineError::Write(WriteError::Unavailable {
                reason: "policies cannot change at run time on a cluster node: set them in the table's schema on every node".to_owned(),
            }));
        }
        self.commit(false, |state| state.set_policies(table, change, origin))
    }

    /// The names of the registered custom policies.
    pub fn custom_policies(&self) -> Vec<String> {
        self.read().registry.names().map(str::to_owned).collect()
    }

    /// Up to `limit` events with an id greater than `after`, oldest first.
    pub fn events_after(&self, after: u64, limit: usize) -> Vec<Event> {
        self.read().events.after(after, limit)
    }

    /// The oldest retained event id and the latest one.
    pub fn event_range(&self) -> (u64, u64) {
        let state = self.read();
        (state.events.first_id(), state.events.latest_id())
    }

    /// Which kinds of events are made from now on: no event of a kind nobody
    /// wants is made (a database without webhooks makes none).
    pub fn want_events(&self, kinds: EventKinds) {
        self.write().events.wanted = kinds;
    }

    /// Adds an event from outside the write path (a stale client, …), if its
    /// kind is wanted.
    ///
    /// # Errors
    ///
    /// [`WriteError::Storage`] when storage refuses writes.
    pub fn emit_event(
        &self,
        kind: EventKind,
        table: Option<String>,
        data: serde_json::Value,
    ) -> Result<(), EngineError> {
        if !self.read().events.wants(kind) {
            return Ok(());
        }
        self.commit(false, |state| {
            if state.events.wants(kind) {
                let now = state.wall.now_ms();
                state.push_event(now, kind, table, data);
            }
            Ok::<(), EngineError>(())
        })
    }

    /// How many conflict records are kept: open ones, closed ones.
    pub fn conflict_counts(&self) -> (usize, usize) {
        self.read().conflicts.len()
    }

    /// How many events are kept.
    pub fn event_count(&self) -> usize {
        self.read().events.len()
    }
}

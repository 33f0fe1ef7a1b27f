//! One record as one automerge document.
//!
//! Field values live in the document's root map under the field's name, so any
//! automerge client reads `doc.title` as it expects. What a merge policy needs
//! travels inside each change: its `time` holds the write's hybrid-logical-clock
//! milliseconds and its `message` is `msdb1 <logical> <writer>` (see
//! [`StampMeta`]). A write costs no extra operations for its metadata, and a value
//! written by a plain automerge client, without that message, still resolves
//! deterministically: it ranks below stamped values and among its peers by
//! automerge's own winner rule.
//!
//! Concurrent writes to a field stay in the document as its conflict set
//! ([`Record::conflict_set`]); a [`MergePolicy`] picks the visible value.
//!
//! Unsetting a field writes `null` rather than deleting the key, so that an unset and
//! a concurrent set meet as candidates of one conflict set and the policy decides,
//! exactly as for two sets. Deleting a record writes the reserved `_deleted` flag,
//! resolved by last-writer-wins: a tombstone, so that the deletion syncs like any
//! other change and a later write can revive the record.

use std::collections::{BTreeMap, BTreeSet};

use automerge::transaction::{CommitOptions, Transactable};
use automerge::{ActorId, Automerge, Change, ChangeHash, ObjId, ObjType, PatchLog, ROOT, ReadDoc};

use crate::clock::{ClientId, Stamp};
use crate::error::RecordError;
use crate::policy::{self, Candidate, ConflictSet, LastWriterWins, OpId, PolicySet, Resolution};
use crate::value::Value;
use crate::version::{Causality, VersionVector};

/// The reserved root key that marks a deleted record.
pub const DELETED_FIELD: &str = "_deleted";

/// The reserved root key a server writes when its policies now show a record
/// differently: a change that carries no data but moves the record forward,
/// so every replica fetches the visible row the new policies give.
pub const POLICY_FIELD: &str = "_policy";

/// The prefix of the change message that carries a write's stamp and writer.
pub const STAMP_MESSAGE_PREFIX: &str = "msdb1";

/// When and by whom a write was made; stored in the change it produces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StampMeta {
    pub stamp: Stamp,
    pub writer: ClientId,
}

impl StampMeta {
    /// Metadata for a write by `writer` at `stamp`.
    pub fn new(stamp: Stamp, writer: impl Into<ClientId>) -> StampMeta {
        StampMeta {
            stamp,
            writer: writer.into(),
        }
    }

    /// The change message that carries the logical counter and the writer.
    pub fn message(&self) -> String {
        format!(
            "{STAMP_MESSAGE_PREFIX} {} {}",
            self.stamp.logical, self.writer
        )
    }

    /// The metadata of a change with this `time` and `message`, or `None` when the
    /// change was not written with MobileSyncDB metadata.
    pub fn parse(time: i64, message: Option<&str>) -> Option<StampMeta> {
        let mut words = message?.splitn(3, ' ');
        if words.next()? != STAMP_MESSAGE_PREFIX {
            return None;
        }
        let logical = words.next()?.parse().ok()?;
        let writer = words.next().filter(|writer| !writer.is_empty())?;
        let physical_ms = u64::try_from(time).ok()?;
        Some(StampMeta::new(
            Stamp {
                physical_ms,
                logical,
            },
            writer,
        ))
    }

    /// The metadata carried by `change`, if any.
    pub fn of_change(change: &Change) -> Option<StampMeta> {
        StampMeta::parse(change.timestamp(), change.message())
    }

    fn commit_options(&self) -> CommitOptions {
        let time = i64::try_from(self.stamp.physical_ms).unwrap_or(i64::MAX);
        CommitOptions::default()
            .with_time(time)
            .with_message(self.message())
    }
}

/// What [`Record::merge`] did.
#[derive(Clone, Debug)]
pub struct MergeReport {
    /// The changes that were new, in causal order.
    pub applied: Vec<Change>,
    /// Changes the record already had.
    pub duplicates: usize,
    /// How this record's history before the merge relates to the merged changes'
    /// history: `Concurrent` means both sides had edits the other had not seen.
    pub causality: Causality,
}

/// How many dependencies of `fresh` are neither in the document nor in `fresh`.
fn missing_dependencies(doc: &Automerge, fresh: &[Change]) -> usize {
    let incoming: BTreeSet<ChangeHash> = fresh.iter().map(Change::hash).collect();
    let mut missing = BTreeSet::new();
    for change in fresh {
        for dep in change.deps() {
            if !incoming.contains(dep) && doc.get_change_meta_by_hash(dep).is_none() {
                missing.insert(*dep);
            }
        }
    }
    missing.len()
}

/// One edit of one field.
#[derive(Clone, Debug, PartialEq)]
pub enum Edit {
    /// Writes the value; lists and maps become nested automerge objects.
    Set { field: String, value: Value },
    /// Writes `null`: the field is absent from the visible row.
    Unset { field: String },
    /// Adds to a counter field; concurrent increments add up.
    Increment { field: String, by: i64 },
}

impl Edit {
    /// Sets `field` to `value`.
    pub fn set(field: impl Into<String>, value: impl Into<Value>) -> Edit {
        Edit::Set {
            field: field.into(),
            value: value.into(),
        }
    }

    /// Unsets `field`.
    pub fn unset(field: impl Into<String>) -> Edit {
        Edit::Unset {
            field: field.into(),
        }
    }

    /// Adds `by` to the counter `field`.
    pub fn increment(field: impl Into<String>, by: i64) -> Edit {
        Edit::Increment {
            field: field.into(),
            by,
        }
    }

    /// The field this edit writes.
    pub fn field(&self) -> &str {
        match self {
            Edit::Set { field, .. } | Edit::Unset { field } | Edit::Increment { field, .. } => {
                field
            }
        }
    }
}

/// A record: one automerge document, changed through `&mut self`.
///
/// ```
/// use automerge::ActorId;
/// use mobilesyncdb_crdt::{Edit, LastWriterWins, Record, Stamp, StampMeta, Value};
///
/// let mut phone = Record::new(ActorId::from(b"phone-a-actor-01".to_vec()));
/// let write = StampMeta::new(Stamp::at(1_000), "phone-a");
/// phone.write(&[Edit::set("title", "buy milk")], &write).unwrap();
///
/// // A second replica edits the same field concurrently, with a later stamp.
/// let mut tablet = Record::load(&phone.save()).unwrap();
/// tablet.set_actor(ActorId::from(b"tablet-actor-001".to_vec()));
/// let later = StampMeta::new(Stamp::at(2_000), "tablet");
/// tablet.write(&[Edit::set("title", "buy oat milk")], &later).unwrap();
/// phone.write(&[Edit::set("title", "buy soy milk")], &write).unwrap();
///
/// phone.apply_changes(tablet.changes_since(&[])).unwrap();
/// let conflict = phone.conflict_set("title").unwrap();
/// assert_eq!(conflict.candidates().len(), 2);
/// let shown = phone.resolve("title", &LastWriterWins).unwrap();
/// assert_eq!(shown.value, Value::str("buy oat milk"));
/// ```
#[derive(Debug, Clone)]
pub struct Record {
    doc: Automerge,
}

impl Record {
    /// An empty record whose writes are made by `actor`.
    pub fn new(actor: ActorId) -> Record {
        Record {
            doc: Automerge::new().with_actor(actor),
        }
    }

    /// Loads a record from saved bytes: a document chunk, change chunks, or a
    /// document chunk followed by change chunks.
    ///
    /// # Errors
    ///
    /// [`RecordError::Load`] for bytes that are not automerge storage.
    pub fn load(bytes: &[u8]) -> Result<Record, RecordError> {
        let doc = Automerge::load(bytes).map_err(|error| RecordError::Load(Box::new(error)))?;
        Ok(Record { doc })
    }

    /// Sets the actor for this replica's future writes. Each actor must write one
    /// linear history: give every writing process or device its own.
    pub fn set_actor(&mut self, actor: ActorId) {
        self.doc.set_actor(actor);
    }

    /// The underlying automerge document, for reads this type does not wrap.
    pub fn document(&self) -> &Automerge {
        &self.doc
    }

    /// True when the record has no changes at all.
    pub fn is_empty(&self) -> bool {
        self.doc.is_empty()
    }

    /// Applies `edits` as one change stamped with `meta`, and returns the change, or
    /// `None` when nothing changed (every edit wrote the value already there).
    /// Either every edit is applied or none is.
    ///
    /// # Errors
    ///
    /// [`RecordError::ReservedField`] for a field starting with `_`,
    /// [`RecordError::NotACounter`] for incrementing a field that is not a counter,
    /// [`RecordError::Write`] when automerge refuses an operation.
    pub fn write(
        &mut self,
        edits: &[Edit],
        meta: &StampMeta,
    ) -> Result<Option<Change>, RecordError> {
        self.commit(edits, None, meta, None)
    }

    /// Applies `edits` as one change made on the document as it was at `heads`, as
    /// a replica that had seen only those changes would have made it: the change
    /// is concurrent with every later change, so a field both touched keeps both
    /// values for its policy to decide. With the current heads this is
    /// [`Record::write`].
    ///
    /// # Errors
    ///
    /// [`RecordError::UnknownHeads`] when a head is not a change of this record,
    /// and the errors of [`Record::write`].
    pub fn write_at(
        &mut self,
        heads: &[ChangeHash],
        edits: &[Edit],
        meta: &StampMeta,
    ) -> Result<Option<Change>, RecordError> {
        if let Some(missing) = heads
            .iter()
            .find(|head| self.doc.get_change_by_hash(head).is_none())
        {
            return Err(RecordError::UnknownHeads {
                head: missing.to_string(),
            });
        }
        self.commit(edits, None, meta, Some(heads))
    }

    /// Writes the tombstone: the record is deleted for every replica that merges
    /// this change. Returns `None` when it was deleted already.
    ///
    /// # Errors
    ///
    /// [`RecordError::Write`] when automerge refuses the operation.
    pub fn delete(&mut self, meta: &StampMeta) -> Result<Option<Change>, RecordError> {
        self.commit(&[], Some(true), meta, None)
    }

    /// Writes the policy mark ([`POLICY_FIELD`]) with the table's policy
    /// version: a change with no data, made when the visible row changed
    /// because the policies did.
    ///
    /// # Errors
    ///
    /// [`RecordError::Write`] when automerge refuses the operation.
    pub fn mark_policy(
        &mut self,
        version: u64,
        meta: &StampMeta,
    ) -> Result<Option<Change>, RecordError> {
        let mut transaction = self.doc.transaction();
        if let Err(source) = transaction.put(ROOT, POLICY_FIELD, version) {
            transaction.rollback();
            return Err(RecordError::Write {
                field: POLICY_FIELD.to_owned(),
                source: Box::new(source),
            });
        }
        let (hash, _) = transaction.commit_with(meta.commit_options());
        Ok(hash.and_then(|hash| self.doc.get_change_by_hash(&hash)))
    }

    /// Clears the tombstone and applies `edits` in the same change.
    ///
    /// # Errors
    ///
    /// As [`Record::write`].
    pub fn revive(
        &mut self,
        edits: &[Edit],
        meta: &StampMeta,
    ) -> Result<Option<Change>, RecordError> {
        self.commit(edits, Some(false), meta, None)
    }

    fn commit(
        &mut self,
        edits: &[Edit],
        tombstone: Option<bool>,
        meta: &StampMeta,
        at: Option<&[ChangeHash]>,
    ) -> Result<Option<Change>, RecordError> {
        if let Some(edit) = edits.iter().find(|edit| edit.field().starts_with('_')) {
            return Err(RecordError::ReservedField {
                field: edit.field().to_owned(),
            });
        }
        let mut transaction = match at {
            None => self.doc.transaction(),
            Some(heads) => self
                .doc
                .transaction_at(PatchLog::inactive(), heads)
                .map_err(|error| RecordError::WriteAt(error.to_string()))?,
        };
        let written = write_edits(&mut transaction, edits, tombstone);
        if let Err(error) = written {
            transaction.rollback();
            return Err(error);
        }
        let (hash, _) = transaction.commit_with(meta.commit_options());
        Ok(hash.and_then(|hash| self.doc.get_change_by_hash(&hash)))
    }

    /// Applies changes from other replicas. Duplicates are ignored; a change whose
    /// dependencies are missing waits inside the document until they arrive (see
    /// [`Record::missing_deps`]).
    ///
    /// # Errors
    ///
    /// [`RecordError::Apply`] when automerge refuses the changes.
    pub fn apply_changes(&mut self, changes: Vec<Change>) -> Result<(), RecordError> {
        self.doc
            .apply_changes(changes)
            .map_err(|error| RecordError::Apply(Box::new(error)))
    }

    /// Merges changes from another replica and reports what was new and whether
    /// the other side's history was concurrent with this one (a concurrent
    /// modification, found by comparing version vectors).
    ///
    /// Unlike [`Record::apply_changes`], a batch whose dependencies are missing is
    /// refused whole: a record must never hold changes it cannot show.
    ///
    /// # Errors
    ///
    /// [`RecordError::MissingDependencies`] (the record is unchanged) or
    /// [`RecordError::Apply`].
    pub fn merge(&mut self, changes: Vec<Change>) -> Result<MergeReport, RecordError> {
        let (fresh, duplicates): (Vec<Change>, Vec<Change>) = changes
            .into_iter()
            .partition(|change| self.doc.get_change_by_hash(&change.hash()).is_none());
        let duplicates = duplicates.len();
        if fresh.is_empty() {
            return Ok(MergeReport {
                applied: Vec::new(),
                duplicates,
                causality: Causality::Equal,
            });
        }
        let missing = missing_dependencies(&self.doc, &fresh);
        if missing > 0 {
            return Err(RecordError::MissingDependencies { missing });
        }
        let before = self.version_vector();
        let heads_before = self.doc.get_heads();
        self.apply_changes(fresh.clone())?;
        let theirs = self.version_vector_at(&fresh.iter().map(Change::hash).collect::<Vec<_>>());
        let applied = self.doc.get_changes(&heads_before);
        let applied = applied
            .into_iter()
            .filter(|change| fresh.iter().any(|f| f.hash() == change.hash()))
            .collect();
        Ok(MergeReport {
            applied,
            duplicates,
            causality: before.compare(&theirs),
        })
    }

    /// The version vector of the history that ends at `heads` (changes this record
    /// holds; unknown hashes are skipped).
    pub fn version_vector_at(&self, heads: &[ChangeHash]) -> VersionVector {
        let mut vector = VersionVector::new();
        let mut pending: Vec<ChangeHash> = heads.to_vec();
        let mut seen = BTreeSet::new();
        while let Some(hash) = pending.pop() {
            if !seen.insert(hash) {
                continue;
            }
            if let Some(meta) = self.doc.get_change_meta_by_hash(&hash) {
                vector.observe(meta.actor.into_owned(), meta.seq);
                pending.extend(meta.deps.iter().copied());
            }
        }
        vector
    }

    /// Applies saved bytes (document or change chunks) from another replica and
    /// returns how many operations were new.
    ///
    /// # Errors
    ///
    /// [`RecordError::Load`] for bytes that are not automerge storage.
    pub fn load_incremental(&mut self, bytes: &[u8]) -> Result<usize, RecordError> {
        self.doc
            .load_incremental(bytes)
            .map_err(|error| RecordError::Load(Box::new(error)))
    }

    /// The whole record as compact bytes.
    pub fn save(&self) -> Vec<u8> {
        self.doc.save()
    }

    /// The whole record as change chunks in a canonical order: causal, with
    /// concurrent changes ordered by hash. Two replicas holding the same changes
    /// produce identical bytes, whatever order the changes arrived in (automerge's
    /// compact [`Record::save`] follows arrival order). Any automerge library loads it.
    pub fn save_canonical(&self) -> Vec<u8> {
        let mut bytes = Vec::new();
        for change in canonical_order(self.doc.get_changes(&[])) {
            bytes.extend_from_slice(change.raw_bytes());
        }
        bytes
    }

    /// The changes after `heads`, encoded as change chunks.
    pub fn save_after(&self, heads: &[ChangeHash]) -> Vec<u8> {
        self.doc.save_after(heads)
    }

    /// The changes after `heads` (all of them for `&[]`), in causal order.
    pub fn changes_since(&self, heads: &[ChangeHash]) -> Vec<Change> {
        self.doc.get_changes(heads)
    }

    /// The hashes of the latest changes.
    pub fn heads(&self) -> Vec<ChangeHash> {
        self.doc.get_heads()
    }

    /// Dependencies of received changes that have not arrived yet.
    pub fn missing_deps(&self) -> Vec<ChangeHash> {
        self.doc.get_missing_deps(&[])
    }

    /// Which changes of which actor this record holds.
    pub fn version_vector(&self) -> VersionVector {
        self.doc
            .get_changes_meta(&[])
            .into_iter()
            .map(|meta| (meta.actor.into_owned(), meta.seq))
            .collect()
    }

    /// The names of the fields present in the document, without reserved keys, sorted.
    pub fn field_names(&self) -> Vec<String> {
        self.doc
            .keys(ROOT)
            .filter(|key| !key.starts_with('_'))
            .collect()
    }

    /// The concurrent values of `field` with their stamps and writers. Empty when the
    /// field was never written.
    ///
    /// # Errors
    ///
    /// [`RecordError::Read`] when automerge cannot read the field.
    pub fn conflict_set(&self, field: &str) -> Result<ConflictSet, RecordError> {
        let read_error = |source| RecordError::Read {
            field: field.to_owned(),
            source: Box::new(source),
        };
        let values = self.doc.get_all(ROOT, field).map_err(read_error)?;
        let mut candidates = Vec::with_capacity(values.len());
        for (value, id) in values {
            let value = read_value(&self.doc, value, &id).map_err(read_error)?;
            candidates.push(self.candidate(value, id));
        }
        Ok(ConflictSet::new(field, candidates))
    }

    fn candidate(&self, value: Value, id: ObjId) -> Candidate {
        let meta = self
            .doc
            .hash_for_opid(&id)
            .and_then(|hash| self.doc.get_change_meta_by_hash(&hash))
            .and_then(|change| StampMeta::parse(change.timestamp, change.message.as_deref()));
        let op = match id {
            ObjId::Id(counter, actor, _) => OpId { counter, actor },
            ObjId::Root => OpId {
                counter: 0,
                actor: ActorId::from(Vec::new()),
            },
        };
        let (stamp, writer) =
            meta.map_or((None, None), |meta| (Some(meta.stamp), Some(meta.writer)));
        Candidate {
            value,
            stamp,
            writer,
            op,
        }
    }

    /// Whether `field` was ever written (an unset field holds `null`; a field
    /// never written holds nothing).
    pub fn has_field(&self, field: &str) -> bool {
        self.doc.get(ROOT, field).is_ok_and(|value| value.is_some())
    }

    /// Whether `field` holds concurrent values, without reading their stamps.
    pub fn has_conflict(&self, field: &str) -> bool {
        self.doc
            .get_all(ROOT, field)
            .is_ok_and(|values| values.len() > 1)
    }

    /// The visible value of `field` under `policy`.
    ///
    /// # Errors
    ///
    /// [`RecordError::Read`] when automerge cannot read the field.
    pub fn resolve(
        &self,
        field: &str,
        policy: &dyn policy::MergePolicy,
    ) -> Result<Resolution, RecordError> {
        let read_error = |source| RecordError::Read {
            field: field.to_owned(),
            source: Box::new(source),
        };
        // A single value needs no stamps: looking them up is most of the cost.
        let mut values = self.doc.get_all(ROOT, field).map_err(read_error)?;
        if values.len() > 1 {
            return Ok(policy::resolve(policy, &self.conflict_set(field)?));
        }
        match values.pop() {
            Some((value, id)) => Ok(Resolution::settled(
                read_value(&self.doc, value, &id).map_err(read_error)?,
            )),
            None => Ok(Resolution::settled(Value::Null)),
        }
    }

    /// Whether the tombstone is set, by last-writer-wins over concurrent deletes and
    /// revivals.
    pub fn is_deleted(&self) -> bool {
        self.resolve(DELETED_FIELD, &LastWriterWins)
            .map(|resolution| resolution.value == Value::Bool(true))
            .unwrap_or(false)
    }

    /// Every present field's resolution under `policies`, sorted by field name.
    ///
    /// # Errors
    ///
    /// [`RecordError::Read`] when automerge cannot read a field.
    pub fn resolve_all(
        &self,
        policies: &PolicySet,
    ) -> Result<Vec<(String, Resolution)>, RecordError> {
        self.field_names()
            .into_iter()
            .map(|field| {
                let resolution = self.resolve(&field, policies.for_field(&field))?;
                Ok((field, resolution))
            })
            .collect()
    }
}

/// Kahn's topological sort with ready changes taken in hash order.
fn canonical_order(changes: Vec<Change>) -> Vec<Change> {
    let known: BTreeSet<ChangeHash> = changes.iter().map(Change::hash).collect();
    let mut waiting_on: BTreeMap<ChangeHash, usize> = BTreeMap::new();
    let mut dependents: BTreeMap<ChangeHash, Vec<ChangeHash>> = BTreeMap::new();
    let mut by_hash: BTreeMap<ChangeHash, Change> = BTreeMap::new();
    let mut ready = BTreeSet::new();
    for change in changes {
        let deps: Vec<ChangeHash> = change
            .deps()
            .iter()
            .filter(|dep| known.contains(dep))
            .copied()
            .collect();
        for dep in &deps {
            dependents.entry(*dep).or_default().push(change.hash());
        }
        if deps.is_empty() {
            ready.insert(change.hash());
        }
        waiting_on.insert(change.hash(), deps.len());
        by_hash.insert(change.hash(), change);
    }
    let mut ordered = Vec::with_capacity(by_hash.len());
    while let Some(hash) = ready.pop_first() {
        for dependent in dependents.remove(&hash).unwrap_or_default() {
            let count = waiting_on.entry(dependent).or_insert(1);
            *count -= 1;
            if *count == 0 {
                ready.insert(dependent);
            }
        }
        ordered.extend(by_hash.remove(&hash));
    }
    ordered
}

fn write_edits(
    transaction: &mut impl Transactable,
    edits: &[Edit],
    tombstone: Option<bool>,
) -> Result<(), RecordError> {
    if let Some(deleted) = tombstone {
        transaction
            .put(ROOT, DELETED_FIELD, deleted)
            .map_err(|source| RecordError::Write {
                field: DELETED_FIELD.to_owned(),
                source: Box::new(source),
            })?;
    }
    for edit in edits {
        write_edit(transaction, edit)?;
    }
    Ok(())
}

fn write_edit(transaction: &mut impl Transactable, edit: &Edit) -> Result<(), RecordError> {
    let write_error = |source| RecordError::Write {
        field: edit.field().to_owned(),
        source: Box::new(source),
    };
    match edit {
        Edit::Set { field, value } => write_value(transaction, &ROOT, field.as_str().into(), value),
        Edit::Unset { field } => transaction.put(ROOT, field.as_str(), ()),
        Edit::Increment { field, by } => {
            let is_counter = matches!(
                transaction.get(ROOT, field.as_str()).map_err(write_error)?,
                Some((automerge::Value::Scalar(scalar), _)) if scalar.is_counter()
            );
            if !is_counter {
                return Err(RecordError::NotACounter {
                    field: field.clone(),
                });
            }
            transaction.increment(ROOT, field.as_str(), *by)
        }
    }
    .map_err(write_error)
}

fn write_value(
    transaction: &mut impl Transactable,
    parent: &ObjId,
    key: automerge::Prop,
    value: &Value,
) -> Result<(), automerge::AutomergeError> {
    match value {
        Value::List(items) => {
            let list = put_object(transaction, parent, key, ObjType::List)?;
            for (index, item) in items.iter().enumerate() {
                insert_value(transaction, &list, index, item)?;
            }
            Ok(())
        }
        Value::Map(entries) => {
            let map = put_object(transaction, parent, key, ObjType::Map)?;
            for (name, item) in entries.iter() {
                write_value(transaction, &map, name.as_str().into(), item)?;
            }
            Ok(())
        }
        scalar => {
            let scalar = scalar.to_scalar().unwrap_or(automerge::ScalarValue::Null);
            match key {
                automerge::Prop::Map(name) => transaction.put(parent, name, scalar),
                automerge::Prop::Seq(index) => transaction.insert(parent, index, scalar),
            }
        }
    }
}

fn put_object(
    transaction: &mut impl Transactable,
    parent: &ObjId,
    key: automerge::Prop,
    kind: ObjType,
) -> Result<ObjId, automerge::AutomergeError> {
    match key {
        automerge::Prop::Map(name) => transaction.put_object(parent, name, kind),
        automerge::Prop::Seq(index) => transaction.insert_object(parent, index, kind),
    }
}

fn insert_value(
    transaction: &mut impl Transactable,
    list: &ObjId,
    index: usize,
    value: &Value,
) -> Result<(), automerge::AutomergeError> {
    write_value(transaction, list, automerge::Prop::Seq(index), value)
}

/// Reads a value, hydrating nested objects. A text object (how JavaScript automerge
/// 3 stores plain strings) reads as a string.
fn read_value(
    doc: &Automerge,
    value: automerge::Value<'_>,
    id: &ObjId,
) -> Result<Value, automerge::AutomergeError> {
    match value {
        automerge::Value::Scalar(scalar) => Ok(Value::from_scalar(&scalar)),
        automerge::Value::Object(ObjType::Text) => Ok(Value::Str(doc.text(id)?.into_boxed_str())),
        automerge::Value::Object(ObjType::Map | ObjType::Table) => {
            let mut entries = std::collections::BTreeMap::new();
            for key in doc.keys(id) {
                if let Some((item, item_id)) = doc.get(id, key.as_str())? {
                    entries.insert(key, read_value(doc, item, &item_id)?);
                }
            }
            Ok(Value::Map(Box::new(entries)))
        }
        automerge::Value::Object(ObjType::List) => {
            let mut items = Vec::with_capacity(doc.length(id));
            for index in 0..doc.length(id) {
                if let Some((item, item_id)) = doc.get(id, index)? {
                    items.push(read_value(doc, item, &item_id)?);
                }
            }
            Ok(Value::List(items.into_boxed_slice()))
        }
    }
}

#[cfg(test)]
mod tests;

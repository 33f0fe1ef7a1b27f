//! Schema versions: planning a migration from a schema document (the diff, the
//! engine's steps, what blocks it and which records), applying it in constant
//! time, and the versions apps state.
//!
//! Applying never touches a record: tables take their next schema in the
//! engine's form ([`crate::schema::evolve`]) and rows read through it. Only
//! checks that concern values (a conversion that not every value survives, a
//! field made required, a new unique index) read the rows, and only an index
//! whose keys change is built.

use std::collections::BTreeMap;

use mobilesyncdb_crdt::{ClientId, Value};
use tracing::info;

use super::Database;
use super::state::State;
use crate::engine::error::{EngineError, MigrationError, WriteError};
use crate::engine::table::Table;
use crate::schema::migrate::BLOCKED_EXAMPLES;
use crate::schema::{
    BlockedRecord, Blocker, Converter, Coverage, FieldChange, MigrationReport, SchemaDiff,
    SchemaDoc, SchemaHistory, TableChange, TableSchema, evolve, fresh, value_to_json,
};

/// A migration worked out against the current state: its report and, when
/// nothing blocks it, the next version in the engine's form.
struct Planned {
    report: MigrationReport,
    next: SchemaDoc,
}

impl State {
    /// The current version as people write it.
    pub(super) fn public_schema(&self, version: &SchemaDoc) -> SchemaDoc {
        SchemaDoc {
            version: version.version,
            min_client_version: version.min_client_version,
            tables: version.tables.iter().map(TableSchema::public).collect(),
        }
    }

    fn plan(&self, doc: &SchemaDoc) -> Result<Planned, MigrationError> {
        doc.validate()
            .map_err(|error| MigrationError::Invalid(error.to_string()))?;
        let current = self.history.current();
        if doc.version <= current.version {
            return Err(MigrationError::NotNewer {
                version: doc.version,
                current: current.version,
            });
        }
        let diff = SchemaDiff::between(&self.public_schema(current), doc);
        let mut steps = Vec::new();
        let mut blockers = Vec::new();
        let mut next_tables = Vec::with_capacity(doc.tables.len());
        for target in &doc.tables {
            let next = match self.table(&target.name) {
                Ok(table) => {
                    let changed = diff.tables.iter().any(|change| {
                        matches!(change, TableChange::Changed { table, .. } if *table == target.name)
                    });
                    if changed {
                        evolve(&table.schema, target, doc.version)
                    } else {
                        table.schema.clone()
                    }
                }
                Err(_) => fresh(target),
            };
            next_tables.push(next);
        }
        for change in &diff.tables {
            match change {
                TableChange::Added { table } => {
                    steps.push(format!(
                        "create table `{}` ({} fields)",
                        table.name,
                        table.fields.len()
                    ));
                }
                TableChange::Removed { .. } => {}
                TableChange::Changed { table, fields } => {
                    let Ok(current) = self.table(table) else {
                        continue;
                    };
                    let next = next_tables
                        .iter()
                        .find(|next| next.name == *table)
                        .expect("a changed table is in the document");
                    for change in fields {
                        let check = Check {
                            doc,
                            table: current,
                            next,
                        };
                        check.change(change, &mut steps, &mut blockers);
                    }
                }
            }
        }
        // What no data can make possible, with the records it concerns: every
        // live record of a removed table or of a primary key that changes, the
        // records holding a value that has no converter.
        for mut blocker in diff.blockers_without_data() {
            if let Ok(table) = self.table(&blocker.table) {
                let next = next_tables.iter().find(|next| next.name == blocker.table);
                let keyed = |field: &str| {
                    field == table.schema.primary_key
                        || next.is_some_and(|next| next.primary_key == field)
                };
                let column = match (blocker.field.as_deref(), next) {
                    (Some(field), Some(next)) if !keyed(field) => next.position(field),
                    _ => None,
                };
                (blocker.records, blocker.examples) = match column {
                    Some(_) => records_where(table, column, |value| !value.is_null()),
                    None => records_where(table, None, |_| true),
                };
            }
            blockers.push(blocker);
        }
        let report = MigrationReport {
            diff,
            steps,
            blockers,
            applied: false,
        };
        let next = SchemaDoc {
            version: doc.version,
            min_client_version: doc.min_client_version,
            tables: next_tables,
        };
        Ok(Planned { report, next })
    }

    /// Makes `next` (a version in the engine's form) the current version:
    /// tables take their new schemas, new tables are created. Used by a
    /// migration and by a restart replaying one. Returns the tables whose
    /// policies changed.
    pub(super) fn install(
        &mut self,
        next: SchemaDoc,
        restoring: bool,
    ) -> Result<Vec<u16>, EngineError> {
        let mut repolicied = Vec::new();
        for schema in &next.tables {
            match self.table_ids.get(&schema.name).copied() {
                Some(id) => {
                    let table = &mut self.tables[usize::from(id)];
                    if table.schema == *schema {
                        continue;
                    }
                    let policies_changed = table.schema.policy != schema.policy
                        || table.schema.field_policies != schema.field_policies;
                    table.migrate(schema.clone(), &self.registry)?;
                    if policies_changed {
                        repolicied.push(id);
                    }
                }
                None => {
                    let mut table = Table::new(schema.clone(), &self.registry)?;
                    if restoring {
                        table.defer_indexes();
                    }
                    self.add_table(table);
                }
            }
        }
        self.history.push(next);
        Ok(repolicied)
    }

    /// The schema of `table` as an app on `version` knows it (the engine's
    /// form, keys included). `None` for the current version.
    pub(super) fn table_as_of(
        &self,
        table: &str,
        version: Option<u32>,
    ) -> Result<Option<&TableSchema>, WriteError> {
        let Some(version) = version.filter(|version| *version != self.history.version()) else {
            return Ok(None);
        };
        let doc = self.check_version(version).map_err(WriteError::Version)?;
        doc.table(table)
            .map(Some)
            .ok_or_else(|| WriteError::UnknownTable {
                table: table.to_owned(),
            })
    }

    /// The version an app states, if it is served.
    pub(super) fn check_version(&self, version: u32) -> Result<&SchemaDoc, MigrationError> {
        let current = self.history.version();
        let minimum = self.history.min_client_version();
        if version < minimum {
            return Err(MigrationError::UpgradeRequired {
                stated: version,
                minimum,
            });
        }
        self.history
            .at(version)
            .ok_or(MigrationError::UnknownVersion {
                stated: version,
                current,
            })
    }
}

/// The checks and steps of one change of one table.
struct Check<'a> {
    doc: &'a SchemaDoc,
    table: &'a Table,
    next: &'a TableSchema,
}

impl Check<'_> {
    fn change(&self, change: &FieldChange, steps: &mut Vec<String>, blockers: &mut Vec<Blocker>) {
        let name = &self.table.schema.name;
        let blocker = |field: &str, problem: String| Blocker {
            table: name.clone(),
            field: Some(field.to_owned()),
            problem,
            records: 0,
            examples: Vec::new(),
        };
        match change {
            FieldChange::FieldAdded {
                field,
                kind,
                required,
                default,
            } => {
                if *required && default.is_none() {
                    let live = self.table.live_count() as u64;
                    if live > 0 {
                        let mut blocked = blocker(
                            field,
                            format!(
                                "a new required field needs a default: {live} existing record{} \
                                 ha{} no value for it",
                                if live == 1 { "" } else { "s" },
                                if live == 1 { "s" } else { "ve" },
                            ),
                        );
                        (blocked.records, blocked.examples) =
                            records_where(self.table, None, |_| true);
                        blockers.push(blocked);
                    }
                    if self.doc.min_client_version < self.doc.version {
                        blockers.push(blocker(
                            field,
                            format!(
                                "a new required field needs a default while apps on versions {} to \
                                 {} are supported: they cannot give it a value",
                                self.doc.min_client_version,
                                self.doc.version - 1
                            ),
                        ));
                    }
                }
                steps.push(match default {
                    Some(default) => format!(
                        "add `{name}.{field}` ({kind}); records without a value read {default}"
                    ),
                    None => format!("add `{name}.{field}` ({kind})"),
                });
            }
            FieldChange::FieldRemoved { field, .. } => steps.push(format!(
                "remove `{name}.{field}`: its values stay for apps on versions before {}",
                self.doc.version
            )),
            FieldChange::FieldRenamed { from, to } => steps.push(format!(
                "rename `{name}.{from}` to `{to}`: values stay where they are"
            )),
            FieldChange::TypeChanged {
                field, converter, ..
            } => {
                // A primary key's type and a change without a converter are
                // blocked whatever the records hold: `blockers_without_data`.
                let Some(converter) = converter
                    .as_ref()
                    .filter(|_| *field != self.next.primary_key)
                else {
                    return;
                };
                if converter.coverage == Coverage::Checked {
                    self.check_values(field, converter, blockers);
                }
                steps.push(format!(
                    "convert `{name}.{field}` {}; each record converts when read or written",
                    converter.describe()
                ));
            }
            FieldChange::RequiredChanged { field, required } => {
                if *required {
                    self.check_present(field, blockers);
                }
                steps.push(format!(
                    "`{name}.{field}` becomes {}",
                    if *required { "required" } else { "optional" }
                ));
            }
            FieldChange::DefaultChanged { field, to, .. } => steps.push(match to {
                Some(to) => format!("`{name}.{field}` defaults to {to}"),
                None => format!("`{name}.{field}` has no default"),
            }),
            FieldChange::IndexAdded { field, unique } => {
                if *unique {
                    self.check_unique(field, blockers);
                }
                steps.push(format!(
                    "build {}index on `{name}.{field}` ({} records)",
                    if *unique { "unique " } else { "" },
                    self.table.live_count()
                ));
            }
            FieldChange::IndexRemoved { field, .. } => {
                steps.push(format!("drop index on `{name}.{field}`"));
            }
            FieldChange::PolicyChanged { field, to, .. } => {
                let policy = to
                    .as_ref()
                    .map_or_else(|| "the table's".to_owned(), |to| format!("{to:?}"));
                steps.push(match field {
                    Some(field) => format!(
                        "`{name}.{field}` follows {policy} policy; conflicted records re-resolve"
                    ),
                    None => {
                        format!("`{name}` follows {policy} policy; conflicted records re-resolve")
                    }
                });
            }
            FieldChange::PrimaryKeyChanged { .. } => {}
        }
    }

    /// The column of `field` (its name in the new version) and the current
    /// table's reading of it.
    fn column(&self, field: &str) -> Option<usize> {
        self.next.position(field)
    }

    /// Records whose value of `field` matches `bad`, as a blocker.
    fn scan(
        &self,
        field: &str,
        problem: &str,
        bad: impl Fn(&Value) -> bool,
        blockers: &mut Vec<Blocker>,
    ) {
        let Some(position) = self.column(field) else {
            return;
        };
        let (records, examples) = records_where(self.table, Some(position), bad);
        if records > 0 {
            let plural = if records == 1 { "" } else { "s" };
            blockers.push(Blocker {
                table: self.table.schema.name.clone(),
                field: Some(field.to_owned()),
                problem: format!("{problem} ({records} record{plural})"),
                records,
                examples,
            });
        }
    }

    fn check_values(&self, field: &str, converter: &Converter, blockers: &mut Vec<Blocker>) {
        let to = converter.to;
        self.scan(
            field,
            &format!("values that do not convert to {to}"),
            |value| !value.is_null() && to.convert(value.clone()).is_none(),
            blockers,
        );
    }

    fn check_present(&self, field: &str, blockers: &mut Vec<Blocker>) {
        let default = self
            .next
            .spec(field)
            .map_or(Value::Null, crate::schema::FieldSpec::default_value);
        self.scan(
            field,
            "a required field has no value",
            |value| value.is_null() && default.is_null(),
            blockers,
        );
    }

    fn check_unique(&self, field: &str, blockers: &mut Vec<Blocker>) {
        let Some(position) = self.column(field) else {
            return;
        };
        let mut seen: BTreeMap<Value, u32> = BTreeMap::new();
        for record in self.table.records().iter().filter(|record| !record.deleted) {
            let value = self.table.read(&record.row, position);
            if !value.is_null() {
                *seen.entry(value).or_default() += 1;
            }
        }
        self.scan(
            field,
            "a unique index on values that repeat",
            |value| seen.get(value).is_some_and(|count| *count > 1),
            blockers,
        );
    }
}

/// How many live records of `table` match `bad` (by their value in `column`,
/// or every one without a column), and the first [`BLOCKED_EXAMPLES`] of them
/// with that value.
fn records_where(
    table: &Table,
    column: Option<usize>,
    bad: impl Fn(&Value) -> bool,
) -> (u64, Vec<BlockedRecord>) {
    let mut records = 0_u64;
    let mut examples = Vec::new();
    for record in table.records().iter().filter(|record| !record.deleted) {
        let value = column.map_or(Value::Null, |column| table.read(&record.row, column));
        if !bad(&value) {
            continue;
        }
        records += 1;
        if examples.len() < BLOCKED_EXAMPLES {
            examples.push(BlockedRecord {
                id: record.id.to_string(),
                value: column.map(|_| value_to_json(&value)),
            });
        }
    }
    (records, examples)
}

impl Database {
    /// What applying `doc` would do: the diff from the current version, the
    /// engine's steps, and what blocks it with the records concerned. Changes
    /// nothing.
    ///
    /// # Errors
    ///
    /// [`MigrationError::Invalid`] and [`MigrationError::NotNewer`].
    pub fn plan_schema(&self, doc: &SchemaDoc) -> Result<MigrationReport, EngineError> {
        Ok(self.read().plan(doc)?.report)
    }

    /// Applies `doc` as the next schema version, in time that does not grow with
    /// the number of records (records migrate when read or written), unless it
    /// builds an index. Tables whose policies changed re-resolve their
    /// conflicted records as [`Database::set_policies`] does.
    ///
    /// # Errors
    ///
    /// [`MigrationError::Blocked`] with the report when a change cannot be
    /// migrated automatically, and the errors of [`Database::plan_schema`];
    /// nothing changes then.
    pub fn apply_schema(
        &self,
        doc: &SchemaDoc,
        origin: &ClientId,
    ) -> Result<MigrationReport, EngineError> {
        self.commit(false, |state| {
            let Planned { mut report, next } = state.plan(doc)?;
            if !report.blockers.is_empty() {
                return Err(EngineError::from(MigrationError::Blocked(Box::new(report))));
            }
            state.journal_schema(&next);
            let changed: Vec<(String, bool)> = report
                .diff
                .tables
                .iter()
                .filter_map(|change| match change {
                    TableChange::Added { table } => Some((table.name.clone(), true)),
                    TableChange::Changed { table, .. } => Some((table.clone(), false)),
                    TableChange::Removed { .. } => None,
                })
                .collect();
            let repolicied = state.install(next, false)?;
            for (table, created) in &changed {
                state.note_schema_changed(table, *created);
            }
            for table_id in repolicied {
                for slot in state.tables[usize::from(table_id)].conflicted() {
                    state.reresolve(table_id, slot, origin)?;
                }
            }
            info!(
                version = doc.version,
                min_client_version = doc.min_client_version,
                steps = report.steps.len(),
                "schema migrated"
            );
            report.applied = true;
            Ok(report)
        })
    }

    /// Sets the oldest schema version apps may state; older ones are refused
    /// with "upgrade required".
    ///
    /// # Errors
    ///
    /// [`MigrationError::MinimumAhead`] when `version` is newer than the
    /// current version.
    pub fn set_min_client_version(&self, version: u32) -> Result<(), EngineError> {
        self.commit(false, |state| {
            let current = state.history.version();
            if version > current {
                return Err(EngineError::from(MigrationError::MinimumAhead {
                    minimum: version,
                    current,
                }));
            }
            state.history.set_min_client_version(version);
            state.journal_min_client_version(version);
            info!(
                min_client_version = version,
                version = current,
                "minimum app version set"
            );
            Ok(())
        })
    }

    /// The current schema version as people write it.
    pub fn schema_doc(&self) -> SchemaDoc {
        let state = self.read();
        state.public_schema(state.history.current())
    }

    /// Schema version `version` as people write it, if the database had it.
    pub fn schema_doc_at(&self, version: u32) -> Option<SchemaDoc> {
        let state = self.read();
        state
            .history
            .at(version)
            .map(|doc| state.public_schema(doc))
    }

    /// The diff between two schema versions the database had. Renames are
    /// found by document key, so a rename shows as one even when the versions
    /// are several apart.
    pub fn schema_diff(&self, from: u32, to: u32) -> Option<SchemaDiff> {
        let state = self.read();
        let (old, new) = (state.history.at(from)?, state.history.at(to)?);
        let mut public = state.public_schema(new);
        for (table, engine) in public.tables.iter_mut().zip(&new.tables) {
            let Some(before) = old.table(&engine.name) else {
                continue;
            };
            for field in &mut table.fields {
                let key = engine.spec(&field.name).map(|spec| spec.doc_key());
                field.renamed_from = before
                    .live_fields()
                    .find(|earlier| Some(earlier.doc_key()) == key && earlier.name != field.name)
                    .map(|earlier| earlier.name.clone());
            }
        }
        Some(SchemaDiff::between(&state.public_schema(old), &public))
    }

    /// Every schema version in the engine's form (keys and removed fields).
    pub fn schema_history(&self) -> SchemaHistory {
        self.read().history.clone()
    }

    /// The current schema version.
    pub fn schema_version(&self) -> u32 {
        self.read().history.version()
    }

    /// The oldest schema version apps may state.
    pub fn min_client_version(&self) -> u32 {
        self.read().history.min_client_version()
    }

    /// The schema of `table` as an app on `version` sees it (the engine's form,
    /// keys included), with the current schema of the table: what a pull
    /// translates rows between.
    ///
    /// # Errors
    ///
    /// [`MigrationError::UpgradeRequired`] below the minimum,
    /// [`MigrationError::UnknownVersion`] for a version the database never had,
    /// and an unknown table.
    pub fn table_view(
        &self,
        table: &str,
        version: Option<u32>,
    ) -> Result<(TableSchema, TableSchema), EngineError> {
        let state = self.read();
        let current = state.table(table)?.schema.clone();
        let Some(version) = version else {
            return Ok((current.clone(), current));
        };
        let doc = state.check_version(version)?;
        if version == state.history.version() {
            return Ok((current.clone(), current));
        }
        let old =
            doc.table(table)
                .cloned()
                .ok_or_else(|| crate::engine::ReadError::UnknownTable {
                    table: table.to_owned(),
                })?;
        Ok((old, current))
    }

    /// Refuses a schema version apps may not state.
    ///
    /// # Errors
    ///
    /// As [`Database::table_view`].
    pub fn check_client_version(&self, version: Option<u32>) -> Result<(), EngineError> {
        match version {
            Some(version) => self
                .read()
                .check_version(version)
                .map(|_| ())
                .map_err(Into::into),
            None => Ok(()),
        }
    }
}

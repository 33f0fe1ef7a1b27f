//! A seeded generator of typical mobile app data, for benchmarks and tests.
//!
//! [`Dataset::generate`] builds six tables an offline-first app might sync:
//!
//! | table             | rows                                                        |
//! |-------------------|-------------------------------------------------------------|
//! | `todos`           | titles, optional notes, done flags, priorities, due dates, tags |
//! | `messages`        | chat messages in a few hundred conversations, some with emoji or non-ASCII text |
//! | `contacts`        | names, e-mail addresses, phone numbers, employers            |
//! | `gps_points`      | fixes along tracks, 1–5 s apart, drifting along a path       |
//! | `sensor_readings` | temperature, humidity, pressure, steps, heart rate at fixed intervals |
//! | `thumbnails`      | 1–6 KB JPEG-like images: already compressed, incompressible  |
//!
//! Each table has a [`TableSchema`] with typed fields, an `id` string primary key
//! and secondary indexes; every generated value fits its field's type. Rows are
//! added, interleaved across tables, until their JSON (as [`Dataset::json_bytes`]
//! measures it) reaches the target size: the set averages roughly 300 bytes of JSON
//! per record, with thumbnails about 1.3 % of the records but a fifth of the bytes.
//!
//! The output depends only on the [`DatasetSpec`]: the same seed and size give the
//! same rows, byte for byte, on every run and machine (no wall clock, no
//! platform-dependent arithmetic). Timestamps fall in 2024.
//!
//! ```
//! use mobilesyncdb::dataset::{Dataset, DatasetSpec};
//!
//! let dataset = Dataset::generate(DatasetSpec::kb100(7));
//! assert!(dataset.json_bytes() <= 100_000 && dataset.json_bytes() > 99_000);
//! let todos = dataset.table("todos").expect("always generated");
//! assert_eq!(todos.schema.primary_key, "id");
//!
//! // Edits for an incremental-sync benchmark: each names a record and its new fields.
//! for edit in dataset.random_edits(1, 10) {
//!     assert!(dataset.table(&edit.table).is_some() && !edit.fields.is_empty());
//! }
//! ```

mod dice;
mod edits;
mod rows;
mod tables;
mod text;
mod words;

use std::io::Write;

use mobilesyncdb_crdt::ClientId;

use crate::engine::{Database, EngineError};
use crate::schema::{TableSchema, value_to_json};
use rows::Generator;
use tables::Kind;

pub use crate::schema::Fields;
pub use dice::Dice;

/// One table: its schema and its rows, in the order they were generated.
#[derive(Clone, Debug, PartialEq)]
pub struct TableData {
    pub schema: TableSchema,
    /// Every row holds its primary key and every required field; optional fields
    /// that are unset are absent rather than `Null`.
    pub rows: Vec<Fields>,
}

impl TableData {
    /// The table's name.
    pub fn name(&self) -> &str {
        &self.schema.name
    }

    /// The total size of the rows as compact JSON objects (see [`Dataset::json_bytes`]).
    pub fn json_bytes(&self) -> usize {
        self.rows.iter().map(record_json_len).sum()
    }
}

/// A generated data set: the six tables, always in the same order (`todos`,
/// `messages`, `contacts`, `gps_points`, `sensor_readings`, `thumbnails`), some
/// possibly empty for tiny targets.
#[derive(Clone, Debug, PartialEq)]
pub struct Dataset {
    pub tables: Vec<TableData>,
}

/// What to generate: a seed and a size.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DatasetSpec {
    /// The same seed (and size) always gives the same data.
    pub seed: u64,
    /// The size to reach, in bytes of JSON as [`Dataset::json_bytes`] counts them.
    pub target_json_bytes: usize,
}

impl DatasetSpec {
    /// A spec for `target_json_bytes` of JSON.
    pub fn new(seed: u64, target_json_bytes: usize) -> DatasetSpec {
        DatasetSpec {
            seed,
            target_json_bytes,
        }
    }

    /// 100 KB (100,000 bytes) of JSON: a few hundred records.
    pub fn kb100(seed: u64) -> DatasetSpec {
        DatasetSpec::new(seed, 100_000)
    }

    /// 1 MB (10⁶ bytes) of JSON: a few thousand records.
    pub fn mb1(seed: u64) -> DatasetSpec {
        DatasetSpec::new(seed, 1_000_000)
    }

    /// 10 MB (10⁷ bytes) of JSON: about 34,000 records.
    pub fn mb10(seed: u64) -> DatasetSpec {
        DatasetSpec::new(seed, 10_000_000)
    }

    /// 100 MB (10⁸ bytes) of JSON: about 340,000 records.
    pub fn mb100(seed: u64) -> DatasetSpec {
        DatasetSpec::new(seed, 100_000_000)
    }
}

/// A change to one record: the new values of the changed fields only (a counter's
/// new total, not the increment).
#[derive(Clone, Debug, PartialEq)]
pub struct EditSpec {
    /// The table's name.
    pub table: String,
    /// The record's primary key.
    pub id: String,
    pub fields: Fields,
}

impl Dataset {
    /// Generates a data set whose JSON size reaches `spec.target_json_bytes`
    /// without exceeding it (it falls short by less than one small record, a few
    /// hundred bytes at most).
    ///
    /// Rows are added one at a time to whichever table is furthest below its share
    /// of the bytes, so the mix is the same at every size. When a row would
    /// overshoot the target its table is closed and the others fill the rest.
    pub fn generate(spec: DatasetSpec) -> Dataset {
        let target = spec.target_json_bytes;
        let mut generator = Generator::new(spec.seed, target);
        let mut rows: Vec<Vec<Fields>> = Kind::ALL.iter().map(|_| Vec::new()).collect();
        let mut bytes = [0usize; Kind::ALL.len()];
        let mut open = [true; Kind::ALL.len()];
        let mut total = 0;
        while let Some(kind) = neediest(&bytes, total, &open, &rows) {
            let Some(row) = generator.row(kind, &rows) else {
                open[kind.index()] = false;
                continue;
            };
            let size = record_json_len(&row);
            if total + size > target {
                open[kind.index()] = false;
                continue;
            }
            total += size;
            bytes[kind.index()] += size;
            rows[kind.index()].push(row);
        }
        let tables = Kind::ALL
            .iter()
            .zip(rows)
            .map(|(kind, rows)| TableData {
                schema: kind.schema(),
                rows,
            })
            .collect();
        Dataset { tables }
    }

    /// The schemas of the tables, in table order.
    pub fn schemas(&self) -> Vec<TableSchema> {
        self.tables
            .iter()
            .map(|table| table.schema.clone())
            .collect()
    }

    /// The number of records in all tables.
    pub fn record_count(&self) -> usize {
        self.tables.iter().map(|table| table.rows.len()).sum()
    }

    /// The total size of all rows encoded as compact JSON objects, one per record,
    /// with [`value_to_json`] (bytes as base64, timestamps and counters as
    /// integers); separators between records are not counted.
    pub fn json_bytes(&self) -> usize {
        self.tables.iter().map(TableData::json_bytes).sum()
    }

    /// The table named `name`.
    pub fn table(&self, name: &str) -> Option<&TableData> {
        self.tables.iter().find(|table| table.schema.name == name)
    }

    /// Creates the data set's tables in `database` and inserts every row, written
    /// by `origin`.
    ///
    /// # Errors
    ///
    /// The first error the engine reports (a table that exists already, or a full
    /// memory limit).
    pub fn load_into(&self, database: &Database, origin: &ClientId) -> Result<(), EngineError> {
        for table in &self.tables {
            database.create_table(table.schema.clone())?;
        }
        for table in &self.tables {
            for row in &table.rows {
                database.insert(&table.schema.name, row.clone(), origin)?;
            }
        }
        Ok(())
    }

    /// Writes every record as one line of JSON, `{"table":"todos","record":{...}}`,
    /// table by table. Writes many small pieces: give it a buffered writer.
    ///
    /// # Errors
    ///
    /// Any error of `out`.
    pub fn write_ndjson(&self, out: &mut impl Write) -> std::io::Result<()> {
        for table in &self.tables {
            let name = serde_json::to_string(&table.schema.name)?;
            for row in &table.rows {
                write!(out, "{{\"table\":{name},\"record\":")?;
                serde_json::to_writer(&mut *out, &record_to_json(row))?;
                out.write_all(b"}\n")?;
            }
        }
        Ok(())
    }

    /// Realistic edits for incremental-sync and update benchmarks: `count` edits
    /// spread over the data set (mark todos done, retitle or reschedule them, edit a
    /// message body, add a reaction, change a contact's phone or e-mail, ...), each
    /// naming the table, the record id and the changed fields only (with a new
    /// `updated_at` where the table has one). A record may be edited more than
    /// once; later edits build on earlier ones (reactions keep counting up,
    /// `updated_at` keeps moving forward), so applying them in order is consistent.
    /// Deterministic per data set and `seed`; empty when the data set has no
    /// todos, messages or contacts.
    pub fn random_edits(&self, seed: u64, count: usize) -> Vec<EditSpec> {
        edits::random_edits(self, seed, count)
    }
}

/// A record as a JSON object, each field through [`value_to_json`].
pub fn record_to_json(fields: &Fields) -> serde_json::Value {
    serde_json::Value::Object(
        fields
            .iter()
            .map(|(name, value)| (name.clone(), value_to_json(value)))
            .collect(),
    )
}

/// The length of a record's compact JSON.
fn record_json_len(fields: &Fields) -> usize {
    let mut counter = ByteCounter(0);
    // Infallible: the counter's writes never fail and a JSON value always
    // serialises (its keys are strings).
    serde_json::to_writer(&mut counter, &record_to_json(fields))
        .expect("JSON values always serialise");
    counter.0
}

/// A writer that only counts bytes, so that sizes need no buffer.
struct ByteCounter(usize);

impl Write for ByteCounter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0 += bytes.len();
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The open, ready table furthest below its share of the bytes so far; ties go to
/// the earlier table. `None` once every table is closed.
fn neediest(bytes: &[usize], total: usize, open: &[bool], rows: &[Vec<Fields>]) -> Option<Kind> {
    Kind::ALL
        .iter()
        .copied()
        .filter(|kind| open[kind.index()] && Generator::ready(*kind, rows))
        .map(|kind| {
            (
                kind,
                kind.byte_share() * total as f64 - bytes[kind.index()] as f64,
            )
        })
        .fold(
            None,
            |best: Option<(Kind, f64)>, (kind, deficit)| match best {
                Some((_, best_deficit)) if best_deficit >= deficit => best,
                _ => Some((kind, deficit)),
            },
        )
        .map(|(kind, _)| kind)
}

#[cfg(test)]
mod tests;

//! Table schemas: typed fields, the primary key, defaults, indexes and policies.
//!
//! A [`TableSchema`] is plain data that serialises to JSON or TOML, so it can be
//! kept in git and sent over the API. Field values convert to and from JSON through
//! [`FieldType`]: bytes travel as base64 text and timestamps as milliseconds since
//! the Unix epoch (an RFC 3339 string is accepted on input).

use std::collections::BTreeMap;

use base64::Engine as _;
use mobilesyncdb_crdt::{Edit, PolicySpec, Value};
use serde::{Deserialize, Serialize};

mod convert;
pub mod diff;
pub mod doc;
pub mod lens;
pub mod migrate;

pub use convert::{Converter, Coverage, format_rfc3339_ms};
pub use diff::{FieldChange, SchemaDiff, TableChange};
pub use doc::{SchemaDoc, SchemaDocError};
pub use lens::Lens;
pub use migrate::{BlockedRecord, Blocker, MigrationReport, SchemaHistory, evolve, fresh};

/// A record's fields by name, as inserts and updates give them.
pub type Fields = BTreeMap<String, Value>;

/// Field values as the edits of a patch: a null value unsets its field.
pub fn field_edits(fields: Fields) -> Vec<Edit> {
    fields
        .into_iter()
        .map(|(field, value)| match value {
            Value::Null => Edit::unset(field),
            value => Edit::Set { field, value },
        })
        .collect()
}

/// The type of a field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldType {
    String,
    Integer,
    Float,
    Boolean,
    /// Milliseconds since the Unix epoch.
    Timestamp,
    /// Raw bytes; base64 in JSON.
    Bytes,
    /// Any JSON-like value: nested maps and lists of scalars.
    Json,
    /// An integer whose concurrent increments add up.
    Counter,
}

impl std::fmt::Display for FieldType {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self {
            FieldType::String => "string",
            FieldType::Integer => "integer",
            FieldType::Float => "float",
            FieldType::Boolean => "boolean",
            FieldType::Timestamp => "timestamp",
            FieldType::Bytes => "bytes",
            FieldType::Json => "json",
            FieldType::Counter => "counter",
        };
        formatter.write_str(name)
    }
}

/// A value that does not fit its field's type.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("expected {expected}, found {found}")]
pub struct TypeMismatch {
    pub expected: FieldType,
    pub found: String,
}

impl FieldType {
    /// Whether `value` may be stored in a field of this type as it is. `Null` fits
    /// every type (an unset field).
    pub fn accepts(self, value: &Value) -> bool {
        matches!(
            (self, value),
            (_, Value::Null)
                | (FieldType::String, Value::Str(_))
                | (FieldType::Integer, Value::Int(_))
                | (FieldType::Float, Value::Float(_))
                | (FieldType::Boolean, Value::Bool(_))
                | (FieldType::Timestamp, Value::Timestamp(_))
                | (FieldType::Bytes, Value::Bytes(_))
                | (FieldType::Counter, Value::Counter(_))
                | (FieldType::Json, _)
        )
    }

    /// Converts a value to this type where that loses nothing: an integer to a
    /// float, a float with a whole value to an integer (JavaScript clients write
    /// whole numbers as floats), an integer to a timestamp or a counter, and a
    /// counter to an integer. Returns the value unchanged otherwise.
    pub fn coerce(self, value: Value) -> Value {
        match (self, value) {
            (FieldType::Float, Value::Int(n)) => Value::Float(n as f64),
            (FieldType::Integer, Value::Float(x)) if is_whole(x) => Value::Int(x as i64),
            (FieldType::Integer, Value::Counter(n)) => Value::Int(n),
            (FieldType::Timestamp, Value::Int(n)) => Value::Timestamp(n),
            (FieldType::Timestamp, Value::Float(x)) if is_whole(x) => Value::Timestamp(x as i64),
            (FieldType::Counter, Value::Int(n)) => Value::Counter(n),
            (FieldType::Counter, Value::Float(x)) if is_whole(x) => Value::Counter(x as i64),
            (_, value) => value,
        }
    }

    /// `value` coerced to this type.
    ///
    /// # Errors
    ///
    /// [`TypeMismatch`] when it does not fit even after coercion.
    pub fn check(self, value: Value) -> Result<Value, TypeMismatch> {
        let value = self.coerce(value);
        if self.accepts(&value) {
            Ok(value)
        } else {
            Err(TypeMismatch {
                expected: self,
                found: value.kind().to_string(),
            })
        }
    }

    /// Reads a JSON value as this type.
    ///
    /// # Errors
    ///
    /// [`TypeMismatch`] when the JSON does not fit.
    pub fn from_json(self, json: &serde_json::Value) -> Result<Value, TypeMismatch> {
        use serde_json::Value as Json;
        let mismatch = || TypeMismatch {
            expected: self,
            found: json_kind(json).to_owned(),
        };
        let value = match (self, json) {
            (_, Json::Null) => Value::Null,
            (FieldType::Json, json) => json_to_value(json),
            (FieldType::String, Json::String(text)) => Value::str(text.as_str()),
            (FieldType::Boolean, Json::Bool(flag)) => Value::Bool(*flag),
            (FieldType::Float, Json::Number(number)) => {
                Value::Float(number.as_f64().ok_or_else(mismatch)?)
            }
            (
                FieldType::Integer | FieldType::Counter | FieldType::Timestamp,
                Json::Number(number),
            ) => {
                let whole = number
                    .as_i64()
                    .or_else(|| number.as_f64().filter(|x| is_whole(*x)).map(|x| x as i64))
                    .ok_or_else(mismatch)?;
                self.coerce(Value::Int(whole))
            }
            (FieldType::Timestamp, Json::String(text)) => {
                Value::Timestamp(parse_rfc3339_ms(text).ok_or_else(mismatch)?)
            }
            (FieldType::Bytes, Json::String(text)) => Value::bytes(
                base64::engine::general_purpose::STANDARD
                    .decode(text)
                    .map_err(|_| mismatch())?,
            ),
            _ => return Err(mismatch()),
        };
        Ok(value)
    }
}

fn is_whole(x: f64) -> bool {
    x.fract() == 0.0 && x.abs() < 9.007_199_254_740_992e15
}

fn json_kind(json: &serde_json::Value) -> &'static str {
    match json {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "boolean",
        serde_json::Value::Number(_) => "number",
        serde_json::Value::String(_) => "string",
        serde_json::Value::Array(_) => "array",
        serde_json::Value::Object(_) => "object",
    }
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.fff]Z` (UTC only) into milliseconds since the epoch.
fn parse_rfc3339_ms(text: &str) -> Option<i64> {
    let (date, time) = text.strip_suffix('Z')?.split_once('T')?;
    let mut date_parts = date.splitn(3, '-').map(|part| part.parse::<i64>().ok());
    let (year, month, day) = (
        date_parts.next()??,
        date_parts.next()??,
        date_parts.next()??,
    );
    let (clock, fraction) = time.split_once('.').unwrap_or((time, "0"));
    let mut clock_parts = clock.splitn(3, ':').map(|part| part.parse::<i64>().ok());
    let (hour, minute, second) = (
        clock_parts.next()??,
        clock_parts.next()??,
        clock_parts.next()??,
    );
    let valid = (1..=12).contains(&month)
        && (1..=31).contains(&day)
        && hour < 24
        && minute < 60
        && second < 61;
    let millis: i64 = format!("{fraction:0<3}").get(..3)?.parse().ok()?;
    valid.then(|| {
        (days_from_civil(year, month, day) * 86_400 + hour * 3_600 + minute * 60 + second) * 1_000
            + millis
    })
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// A JSON value as a [`Value`] with no schema: numbers become integers when whole.
pub fn json_to_value(json: &serde_json::Value) -> Value {
    use serde_json::Value as Json;
    match json {
        Json::Null => Value::Null,
        Json::Bool(flag) => Value::Bool(*flag),
        Json::Number(number) => number
            .as_i64()
            .map(Value::Int)
            .unwrap_or_else(|| Value::Float(number.as_f64().unwrap_or(f64::NAN))),
        Json::String(text) => Value::str(text.as_str()),
        Json::Array(items) => Value::List(items.iter().map(json_to_value).collect()),
        Json::Object(entries) => Value::Map(Box::new(
            entries
                .iter()
                .map(|(key, item)| (key.clone(), json_to_value(item)))
                .collect(),
        )),
    }
}

/// A value as JSON: bytes as base64 text, timestamps and counters as integers,
/// non-finite floats as null.
pub fn value_to_json(value: &Value) -> serde_json::Value {
    use serde_json::Value as Json;
    match value {
        Value::Null => Json::Null,
        Value::Bool(flag) => Json::Bool(*flag),
        Value::Int(n) | Value::Timestamp(n) | Value::Counter(n) => Json::from(*n),
        Value::Float(x) => serde_json::Number::from_f64(*x).map_or(Json::Null, Json::Number),
        Value::Str(text) => Json::String(text.to_string()),
        Value::Bytes(bytes) => {
            Json::String(base64::engine::general_purpose::STANDARD.encode(bytes))
        }
        Value::List(items) => Json::Array(items.iter().map(value_to_json).collect()),
        Value::Map(entries) => Json::Object(
            entries
                .iter()
                .map(|(key, item)| (key.clone(), value_to_json(item)))
                .collect(),
        ),
    }
}

/// One field of a table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FieldSpec {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: FieldType,
    /// An insert must give a non-null value (or the default supplies one).
    #[serde(default)]
    pub required: bool,
    /// Written on insert when the insert does not give the field, and read for
    /// records whose document has no value for it (records older than the field,
    /// records written by apps that do not know it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<serde_json::Value>,
    /// In a schema document: the field's name in the previous version. A
    /// declared rename keeps the field's values; without it a new name is a new
    /// field and the old name a removed one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renamed_from: Option<String>,
    /// The key of the field's values in each record's document, set by the
    /// engine: the name the field was created with (a rename keeps it), or a
    /// fresh key when the name was used before by a removed field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Set by the engine: the field was removed from the schema. Its values stay
    /// in the documents and its column in the rows, for apps on older versions.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub retired: bool,
}

impl FieldSpec {
    /// An optional field with no default.
    pub fn new(name: impl Into<String>, kind: FieldType) -> FieldSpec {
        FieldSpec {
            name: name.into(),
            kind,
            required: false,
            default: None,
            renamed_from: None,
            key: None,
            retired: false,
        }
    }

    /// The key of the field's values in record documents.
    pub fn doc_key(&self) -> &str {
        self.key.as_deref().unwrap_or(&self.name)
    }

    /// Declares that the field was called `old` in the previous version.
    pub fn renamed_from(mut self, old: impl Into<String>) -> FieldSpec {
        self.renamed_from = Some(old.into());
        self
    }

    /// The default as a value of the field's type (`Null` without one).
    pub fn default_value(&self) -> Value {
        self.default
            .as_ref()
            .and_then(|default| self.kind.from_json(default).ok())
            .unwrap_or(Value::Null)
    }

    /// Makes the field required.
    pub fn required(mut self) -> FieldSpec {
        self.required = true;
        self
    }

    /// Gives the field a default, written on insert when the field is missing.
    pub fn with_default(mut self, default: serde_json::Value) -> FieldSpec {
        self.default = Some(default);
        self
    }
}

/// A secondary index on one field.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexSpec {
    pub field: String,
    /// No two live records may share a non-null value.
    #[serde(default)]
    pub unique: bool,
}

/// A table's definition.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TableSchema {
    pub name: String,
    /// Incremented by every schema change; 1 for a new table.
    #[serde(default = "first_version")]
    pub version: u32,
    /// The field whose value is the record id. It must be a string or integer field.
    pub primary_key: String,
    pub fields: Vec<FieldSpec>,
    #[serde(default)]
    pub indexes: Vec<IndexSpec>,
    /// The table's merge policy.
    #[serde(default)]
    pub policy: PolicySpec,
    /// Per-field overrides of the table's policy.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub field_policies: BTreeMap<String, PolicySpec>,
}

fn first_version() -> u32 {
    1
}

impl TableSchema {
    /// A table keyed by `primary_key`, which is added as a required string field.
    pub fn new(name: impl Into<String>, primary_key: impl Into<String>) -> TableSchema {
        let primary_key = primary_key.into();
        TableSchema {
            name: name.into(),
            version: 1,
            fields: vec![FieldSpec::new(primary_key.clone(), FieldType::String).required()],
            primary_key,
            indexes: Vec::new(),
            policy: PolicySpec::LastWriterWins,
            field_policies: BTreeMap::new(),
        }
    }

    /// Adds a field, replacing one of the same name.
    pub fn field(mut self, spec: FieldSpec) -> TableSchema {
        match self.fields.iter_mut().find(|field| field.name == spec.name) {
            Some(existing) => *existing = spec,
            None => self.fields.push(spec),
        }
        self
    }

    /// Adds a non-unique index on `field`.
    pub fn index(mut self, field: impl Into<String>) -> TableSchema {
        self.indexes.push(IndexSpec {
            field: field.into(),
            unique: false,
        });
        self
    }

    /// Adds a unique index on `field`.
    pub fn unique_index(mut self, field: impl Into<String>) -> TableSchema {
        self.indexes.push(IndexSpec {
            field: field.into(),
            unique: true,
        });
        self
    }

    /// Sets the table's policy.
    pub fn policy(mut self, policy: PolicySpec) -> TableSchema {
        self.policy = policy;
        self
    }

    /// Overrides the policy of one field.
    pub fn field_policy(mut self, field: impl Into<String>, policy: PolicySpec) -> TableSchema {
        self.field_policies.insert(field.into(), policy);
        self
    }

    /// The position of the field named `name` among the fields (its column in
    /// the rows). Removed fields have no name.
    pub fn position(&self, name: &str) -> Option<usize> {
        self.fields
            .iter()
            .position(|field| field.name == name && !field.retired)
    }

    /// The field named `name` (not a removed one).
    pub fn spec(&self, name: &str) -> Option<&FieldSpec> {
        self.fields
            .iter()
            .find(|field| field.name == name && !field.retired)
    }

    /// The position of the field, removed or not, whose values are under `key`
    /// in record documents.
    pub fn position_of_key(&self, key: &str) -> Option<usize> {
        self.fields.iter().position(|field| field.doc_key() == key)
    }

    /// The fields of the schema, without the removed ones the rows still hold.
    pub fn live_fields(&self) -> impl Iterator<Item = &FieldSpec> {
        self.fields.iter().filter(|field| !field.retired)
    }

    /// The schema as people write it: removed fields left out, no document keys.
    pub fn public(&self) -> TableSchema {
        let mut public = self.clone();
        public.fields.retain(|field| !field.retired);
        for field in &mut public.fields {
            field.key = None;
            field.renamed_from = None;
        }
        public
    }

    /// The position of the primary key field.
    pub fn key_position(&self) -> usize {
        self.position(&self.primary_key).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn javascript_whole_floats_read_as_integers() {
        assert_eq!(
            FieldType::Integer.check(Value::Float(3.0)),
            Ok(Value::Int(3))
        );
        assert!(FieldType::Integer.check(Value::Float(3.5)).is_err());
    }

    #[test]
    fn json_round_trips_per_type() {
        let cases = [
            (FieldType::String, serde_json::json!("hello")),
            (FieldType::Integer, serde_json::json!(-12)),
            (FieldType::Float, serde_json::json!(2.5)),
            (FieldType::Boolean, serde_json::json!(true)),
            (
                FieldType::Timestamp,
                serde_json::json!(1_700_000_000_123_i64),
            ),
            (FieldType::Bytes, serde_json::json!("/9j/4AAQ")),
            (
                FieldType::Json,
                serde_json::json!({"tags": ["a", 1, null], "n": {"x": 1.5}}),
            ),
            (FieldType::Counter, serde_json::json!(7)),
        ];
        for (kind, json) in cases {
            let value = kind.from_json(&json).expect("fits");
            assert!(kind.accepts(&value), "{kind} accepts {value:?}");
            assert_eq!(value_to_json(&value), json, "{kind}");
        }
    }

    #[test]
    fn mismatches_name_both_types() {
        let error = FieldType::Integer
            .from_json(&serde_json::json!("twelve"))
            .expect_err("mismatch");
        assert_eq!(error.to_string(), "expected integer, found string");
        assert!(
            FieldType::Bytes
                .from_json(&serde_json::json!("not base64!"))
                .is_err()
        );
    }

    #[test]
    fn rfc3339_timestamps_parse_to_milliseconds() {
        let value = FieldType::Timestamp.from_json(&serde_json::json!("2023-11-14T22:13:20.5Z"));
        assert_eq!(value, Ok(Value::Timestamp(1_700_000_000_500)));
        assert!(
            FieldType::Timestamp
                .from_json(&serde_json::json!("2023-13-14T22:13:20Z"))
                .is_err()
        );
    }

    #[test]
    fn schema_reads_from_json() {
        let schema: TableSchema = serde_json::from_value(serde_json::json!({
            "name": "todos",
            "primary_key": "id",
            "fields": [
                {"name": "id", "type": "string", "required": true},
                {"name": "done", "type": "boolean", "default": false}
            ],
            "indexes": [{"field": "done"}],
            "policy": {"kind": "client_priority", "ranking": ["admin"]}
        }))
        .expect("valid schema");
        assert_eq!(schema.version, 1);
        assert_eq!(schema.position("done"), Some(1));
        assert!(!schema.indexes[0].unique);
    }
}

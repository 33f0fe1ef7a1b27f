//! Field values: the plain data a record holds and a policy chooses between.
//!
//! [`Value`] is what the visible row holds and what merge policies see. It has a
//! total order (type rank first, then the value; floats by `total_cmp`) so that
//! indexes, `max`/`min` policies and canonical candidate orders are deterministic.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use automerge::ScalarValue;
use serde::{Deserialize, Serialize};

/// One field value.
///
/// Strings and bytes are boxed slices rather than `String`/`Vec` because the engine
/// keeps one visible row per record in memory: the smaller enum (24 bytes) matters.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Value {
    /// Absent, or explicitly unset.
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(Box<str>),
    /// Milliseconds since the Unix epoch (automerge's `Timestamp`).
    Timestamp(i64),
    Bytes(Box<[u8]>),
    /// An automerge counter: concurrent increments add up instead of conflicting.
    Counter(i64),
    List(Box<[Value]>),
    Map(Box<BTreeMap<String, Value>>),
}

impl Value {
    /// A string value.
    pub fn str(text: impl Into<Box<str>>) -> Value {
        Value::Str(text.into())
    }

    /// A bytes value.
    pub fn bytes(bytes: impl Into<Box<[u8]>>) -> Value {
        Value::Bytes(bytes.into())
    }

    /// True for [`Value::Null`].
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// The type's rank in the total order, and its name for error messages.
    pub fn kind(&self) -> ValueKind {
        match self {
            Value::Null => ValueKind::Null,
            Value::Bool(_) => ValueKind::Bool,
            Value::Int(_) => ValueKind::Int,
            Value::Float(_) => ValueKind::Float,
            Value::Str(_) => ValueKind::Str,
            Value::Timestamp(_) => ValueKind::Timestamp,
            Value::Bytes(_) => ValueKind::Bytes,
            Value::Counter(_) => ValueKind::Counter,
            Value::List(_) => ValueKind::List,
            Value::Map(_) => ValueKind::Map,
        }
    }

    /// The value as a number, for numeric policies (`sum`, `max`, `min`).
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Int(n) | Value::Counter(n) | Value::Timestamp(n) => Some(*n as f64),
            Value::Float(x) => Some(*x),
            _ => None,
        }
    }

    /// Heap bytes this value owns beyond its own 24 bytes (for memory accounting).
    pub fn heap_bytes(&self) -> usize {
        match self {
            Value::Str(text) => text.len(),
            Value::Bytes(bytes) => bytes.len(),
            Value::List(items) => items
                .iter()
                .map(|item| std::mem::size_of::<Value>() + item.heap_bytes())
                .sum(),
            Value::Map(map) => map
                .iter()
                .map(|(key, item)| 48 + key.len() + item.heap_bytes())
                .sum(),
            _ => 0,
        }
    }

    /// The automerge scalar for this value, or `None` for lists and maps, which are
    /// written as nested objects.
    pub fn to_scalar(&self) -> Option<ScalarValue> {
        Some(match self {
            Value::Null => ScalarValue::Null,
            Value::Bool(flag) => ScalarValue::Boolean(*flag),
            Value::Int(n) => ScalarValue::Int(*n),
            Value::Float(x) => ScalarValue::F64(*x),
            Value::Str(text) => ScalarValue::Str(text.as_ref().into()),
            Value::Timestamp(ms) => ScalarValue::Timestamp(*ms),
            Value::Bytes(bytes) => ScalarValue::Bytes(bytes.to_vec()),
            Value::Counter(n) => ScalarValue::counter(*n),
            Value::List(_) | Value::Map(_) => return None,
        })
    }

    /// The value of an automerge scalar. Unsigned integers beyond `i64` become floats;
    /// unknown scalar types (from newer automerge versions) become `Null`.
    pub fn from_scalar(scalar: &ScalarValue) -> Value {
        match scalar {
            ScalarValue::Null | ScalarValue::Unknown { .. } => Value::Null,
            ScalarValue::Boolean(flag) => Value::Bool(*flag),
            ScalarValue::Int(n) => Value::Int(*n),
            ScalarValue::Uint(n) => i64::try_from(*n).map_or(Value::Float(*n as f64), Value::Int),
            ScalarValue::F64(x) => Value::Float(*x),
            ScalarValue::Str(text) => Value::Str(text.as_str().into()),
            ScalarValue::Timestamp(ms) => Value::Timestamp(*ms),
            ScalarValue::Bytes(bytes) => Value::Bytes(bytes.as_slice().into()),
            ScalarValue::Counter(counter) => Value::Counter(i64::from(counter)),
        }
    }
}

/// The kinds of [`Value`], in the order the total order ranks them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ValueKind {
    Null,
    Bool,
    Int,
    Float,
    Timestamp,
    Counter,
    Str,
    Bytes,
    List,
    Map,
}

impl std::fmt::Display for ValueKind {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self {
            ValueKind::Null => "null",
            ValueKind::Bool => "boolean",
            ValueKind::Int => "integer",
            ValueKind::Float => "float",
            ValueKind::Timestamp => "timestamp",
            ValueKind::Counter => "counter",
            ValueKind::Str => "string",
            ValueKind::Bytes => "bytes",
            ValueKind::List => "list",
            ValueKind::Map => "map",
        };
        formatter.write_str(name)
    }
}

impl Ord for Value {
    fn cmp(&self, other: &Value) -> Ordering {
        match (self, other) {
            (Value::Null, Value::Null) => Ordering::Equal,
            (Value::Bool(a), Value::Bool(b)) => a.cmp(b),
            (Value::Int(a), Value::Int(b))
            | (Value::Timestamp(a), Value::Timestamp(b))
            | (Value::Counter(a), Value::Counter(b)) => a.cmp(b),
            (Value::Float(a), Value::Float(b)) => a.total_cmp(b),
            (Value::Str(a), Value::Str(b)) => a.cmp(b),
            (Value::Bytes(a), Value::Bytes(b)) => a.cmp(b),
            (Value::List(a), Value::List(b)) => a.cmp(b),
            (Value::Map(a), Value::Map(b)) => a.cmp(b),
            _ => self.kind().cmp(&other.kind()),
        }
    }
}

impl PartialOrd for Value {
    fn partial_cmp(&self, other: &Value) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Value {
    fn eq(&self, other: &Value) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Value {}

impl From<&str> for Value {
    fn from(text: &str) -> Value {
        Value::Str(text.into())
    }
}

impl From<String> for Value {
    fn from(text: String) -> Value {
        Value::Str(text.into_boxed_str())
    }
}

impl From<i64> for Value {
    fn from(n: i64) -> Value {
        Value::Int(n)
    }
}

impl From<f64> for Value {
    fn from(x: f64) -> Value {
        Value::Float(x)
    }
}

impl From<bool> for Value {
    fn from(flag: bool) -> Value {
        Value::Bool(flag)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_ranks_types_then_values() {
        let mut values = vec![
            Value::str("b"),
            Value::Int(2),
            Value::Null,
            Value::Float(f64::NAN),
            Value::Float(-1.5),
            Value::Int(-3),
            Value::str("a"),
            Value::Bool(true),
        ];
        values.sort();
        let expected = vec![
            Value::Null,
            Value::Bool(true),
            Value::Int(-3),
            Value::Int(2),
            Value::Float(-1.5),
            Value::Float(f64::NAN),
            Value::str("a"),
            Value::str("b"),
        ];
        assert_eq!(values, expected);
    }

    #[test]
    fn nan_equals_itself_so_indexes_can_find_it() {
        assert_eq!(Value::Float(f64::NAN), Value::Float(f64::NAN));
    }

    #[test]
    fn scalars_round_trip() {
        let values = [
            Value::Null,
            Value::Bool(false),
            Value::Int(-7),
            Value::Float(2.5),
            Value::str("hé"),
            Value::Timestamp(1_700_000_000_000),
            Value::bytes(vec![0xff, 0xd8]),
            Value::Counter(41),
        ];
        for value in values {
            let scalar = value.to_scalar().expect("scalar");
            assert_eq!(Value::from_scalar(&scalar), value);
        }
    }

    #[test]
    fn huge_unsigned_becomes_float() {
        let value = Value::from_scalar(&ScalarValue::Uint(u64::MAX));
        assert_eq!(value, Value::Float(u64::MAX as f64));
    }
}

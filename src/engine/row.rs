//! Visible rows: the policy-resolved values of a record, in schema field order.

use mobilesyncdb_crdt::Value;

/// A record's visible values, one per schema field, in the schema's field order.
///
/// Derived state: the engine rebuilds it from the record's document whenever the
/// document changes, and can always rebuild it from scratch.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    values: Box<[Value]>,
}

impl Row {
    /// A row from values in schema field order.
    pub fn new(values: Vec<Value>) -> Row {
        Row {
            values: values.into_boxed_slice(),
        }
    }

    /// The value at a field position (`Null` past the end, so that rows built before
    /// a field was added read it as absent).
    pub fn get(&self, position: usize) -> &Value {
        self.values.get(position).unwrap_or(&Value::Null)
    }

    /// All values in schema field order.
    pub fn values(&self) -> &[Value] {
        &self.values
    }

    /// Heap bytes owned by the row, for memory accounting.
    pub fn heap_bytes(&self) -> usize {
        self.values
            .iter()
            .map(|value| std::mem::size_of::<Value>() + value.heap_bytes())
            .sum()
    }
}

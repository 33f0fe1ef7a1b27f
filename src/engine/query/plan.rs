//! Resolving a query against the table's schema and choosing its access path:
//! the part of a query that [`explain`](super::explain) reports.

use std::cmp::Ordering;
use std::ops::Bound;

use mobilesyncdb_crdt::Value;

use super::{
    AccessPath, Direction, Filter, FilterOp, PageToken, Plan, Query, QueryError, RowSource,
};
use crate::engine::index::{Index, prefix_bounds};
use crate::engine::row::Row;
use crate::schema::{FieldType, TableSchema};

/// A filter resolved against the schema: the field's position and the operand
/// coerced to the field's type, `In` lists sorted and deduplicated.
#[derive(Debug)]
pub(super) struct Check {
    field: String,
    position: usize,
    op: FilterOp,
}

impl Check {
    pub(super) fn matches(&self, schema: &TableSchema, row: &Row) -> bool {
        op_matches(
            &self.op,
            &row.read(self.position, &schema.fields[self.position]),
        )
    }
}

fn op_matches(op: &FilterOp, value: &Value) -> bool {
    match op {
        FilterOp::Eq(operand) => value == operand,
        FilterOp::Ne(operand) => value != operand,
        FilterOp::Lt(operand) => !value.is_null() && value < operand,
        FilterOp::Le(operand) => !value.is_null() && value <= operand,
        FilterOp::Gt(operand) => !value.is_null() && value > operand,
        FilterOp::Ge(operand) => !value.is_null() && value >= operand,
        FilterOp::In(operands) => operands.binary_search(value).is_ok(),
        FilterOp::Prefix(prefix) => {
            matches!(value, Value::Str(text) if text.starts_with(prefix.as_str()))
        }
    }
}

fn resolve(schema: &TableSchema, field: &str) -> Result<(usize, FieldType), QueryError> {
    schema
        .fields
        .iter()
        .enumerate()
        .find(|(_, spec)| spec.name == field)
        .map(|(position, spec)| (position, spec.kind))
        .ok_or_else(|| QueryError::UnknownField {
            table: schema.name.clone(),
            field: field.to_owned(),
        })
}

pub(super) fn compile(schema: &TableSchema, filter: &Filter) -> Result<Check, QueryError> {
    let (position, kind) = resolve(schema, &filter.field)?;
    let fit = |value: &Value| {
        kind.check(value.clone())
            .map_err(|mismatch| QueryError::TypeMismatch {
                table: schema.name.clone(),
                field: filter.field.clone(),
                expected: mismatch.expected,
                found: mismatch.found,
            })
    };
    let op = match &filter.op {
        FilterOp::Eq(value) => FilterOp::Eq(fit(value)?),
        FilterOp::Ne(value) => FilterOp::Ne(fit(value)?),
        FilterOp::Lt(value) => FilterOp::Lt(fit(value)?),
        FilterOp::Le(value) => FilterOp::Le(fit(value)?),
        FilterOp::Gt(value) => FilterOp::Gt(fit(value)?),
        FilterOp::Ge(value) => FilterOp::Ge(fit(value)?),
        FilterOp::In(values) => {
            // Sorted and deduplicated: rows are matched by binary search, and an
            // index lookup must not visit a key twice.
            let mut values = values.iter().map(fit).collect::<Result<Vec<_>, _>>()?;
            values.sort_unstable();
            values.dedup();
            FilterOp::In(values)
        }
        FilterOp::Prefix(_) if kind != FieldType::String => {
            return Err(QueryError::PrefixOnNonString {
                table: schema.name.clone(),
                field: filter.field.clone(),
                kind,
            });
        }
        FilterOp::Prefix(prefix) => FilterOp::Prefix(prefix.clone()),
    };
    Ok(Check {
        field: filter.field.clone(),
        position,
        op,
    })
}

/// The kinds of filters an index can answer, best first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Family {
    Lookup,
    Prefix,
    Range,
    Residual,
}

fn family(op: &FilterOp) -> Family {
    match op {
        FilterOp::Eq(_) | FilterOp::In(_) => Family::Lookup,
        FilterOp::Prefix(_) => Family::Prefix,
        FilterOp::Lt(_) | FilterOp::Le(_) | FilterOp::Gt(_) | FilterOp::Ge(_) => Family::Range,
        FilterOp::Ne(_) => Family::Residual,
    }
}

/// A span of index keys.
#[derive(Clone, Debug)]
pub(super) struct KeyRange {
    pub(super) lower: Bound<Value>,
    pub(super) upper: Bound<Value>,
}

impl KeyRange {
    fn point(key: Value) -> KeyRange {
        KeyRange {
            lower: Bound::Included(key.clone()),
            upper: Bound::Included(key),
        }
    }

    /// The part of the range at or past the token's value in walk order. Ties with
    /// the token's value stay in: their record ids decide.
    pub(super) fn starting_at(&self, token: &PageToken, direction: Direction) -> KeyRange {
        let at = Bound::Included(token.value.clone());
        match direction {
            Direction::Asc => KeyRange {
                lower: tighter_lower(self.lower.clone(), at),
                upper: self.upper.clone(),
            },
            Direction::Desc => KeyRange {
                lower: self.lower.clone(),
                upper: tighter_upper(self.upper.clone(), at),
            },
        }
    }
}

/// The tighter of two lower bounds.
fn tighter_lower(a: Bound<Value>, b: Bound<Value>) -> Bound<Value> {
    tighter(a, b, Ordering::Greater)
}

/// The tighter of two upper bounds.
fn tighter_upper(a: Bound<Value>, b: Bound<Value>) -> Bound<Value> {
    tighter(a, b, Ordering::Less)
}

/// The bound further `inward` (greater for lower bounds, less for upper bounds); at
/// equal values an excluding bound is further in than an including one.
fn tighter(a: Bound<Value>, b: Bound<Value>, inward: Ordering) -> Bound<Value> {
    let (Some(value_a), Some(value_b)) = (bound_value(&a), bound_value(&b)) else {
        return if matches!(a, Bound::Unbounded) { b } else { a };
    };
    let excluded = |bound: &Bound<Value>| matches!(bound, Bound::Excluded(_));
    let ordering = value_a
        .cmp(value_b)
        .then_with(|| match (excluded(&a), excluded(&b)) {
            (true, false) => inward,
            (false, true) => inward.reverse(),
            _ => Ordering::Equal,
        });
    if ordering == inward.reverse() { b } else { a }
}

fn bound_value(bound: &Bound<Value>) -> Option<&Value> {
    match bound {
        Bound::Included(value) | Bound::Excluded(value) => Some(value),
        Bound::Unbounded => None,
    }
}

/// How the rows to examine are found.
struct Access<'a> {
    path: AccessPath,
    /// The index walked, its field's position, and the key ranges to walk in
    /// ascending, disjoint order; `None` for a full scan.
    walk: Option<(&'a Index, usize, Vec<KeyRange>)>,
    /// Indexes into the compiled filters that the walk guarantees.
    consumed: Vec<usize>,
}

fn choose_access<'a>(
    source: &'a impl RowSource,
    checks: &[Check],
    order: usize,
    order_field: &str,
) -> Access<'a> {
    for wanted in [Family::Lookup, Family::Prefix, Family::Range] {
        if let Some((chosen, index)) = pick(source, checks, wanted, order) {
            return indexed_access(checks, chosen, index);
        }
    }
    match source.index_on(order) {
        Some(index) => Access {
            path: AccessPath::IndexOrder {
                field: order_field.to_owned(),
            },
            walk: Some((
                index,
                order,
                vec![KeyRange {
                    lower: Bound::Unbounded,
                    upper: Bound::Unbounded,
                }],
            )),
            consumed: Vec::new(),
        },
        None => Access {
            path: AccessPath::FullScan,
            walk: None,
            consumed: Vec::new(),
        },
    }
}

/// The filter of family `wanted` to answer with an index: one on the order-by field
/// if any, else the first.
fn pick<'a>(
    source: &'a impl RowSource,
    checks: &[Check],
    wanted: Family,
    order: usize,
) -> Option<(usize, &'a Index)> {
    let mut usable = checks
        .iter()
        .enumerate()
        .filter(|(_, check)| family(&check.op) == wanted)
        .filter_map(|(at, check)| Some((at, check.position, source.index_on(check.position)?)));
    let first = usable.next()?;
    let on_order = std::iter::once(first)
        .chain(usable)
        .find(|(_, position, _)| *position == order);
    let (at, _, index) = on_order.unwrap_or(first);
    Some((at, index))
}

fn indexed_access<'a>(checks: &[Check], chosen: usize, index: &'a Index) -> Access<'a> {
    let check = &checks[chosen];
    let field = check.field.clone();
    let (path, ranges, consumed) = match &check.op {
        FilterOp::Eq(key) => (
            AccessPath::IndexLookup { field, keys: 1 },
            vec![KeyRange::point(key.clone())],
            vec![chosen],
        ),
        FilterOp::In(keys) => (
            AccessPath::IndexLookup {
                field,
                keys: keys.len(),
            },
            keys.iter().cloned().map(KeyRange::point).collect(),
            vec![chosen],
        ),
        FilterOp::Prefix(prefix) => {
            let (lower, upper) = prefix_bounds(prefix);
            (
                AccessPath::IndexPrefix { field },
                vec![KeyRange { lower, upper }],
                vec![chosen],
            )
        }
        _ => {
            let (range, consumed) = merged_range(checks, check.position);
            (AccessPath::IndexRange { field }, vec![range], consumed)
        }
    };
    Access {
        path,
        walk: Some((index, check.position, ranges)),
        consumed,
    }
}

/// Every range filter on the field at `position`, merged into one range.
fn merged_range(checks: &[Check], position: usize) -> (KeyRange, Vec<usize>) {
    // Range filters never match null, which is the smallest value: start past it.
    let mut range = KeyRange {
        lower: Bound::Excluded(Value::Null),
        upper: Bound::Unbounded,
    };
    let mut consumed = Vec::new();
    for (at, check) in checks
        .iter()
        .enumerate()
        .filter(|(_, check)| check.position == position)
    {
        match &check.op {
            FilterOp::Gt(value) => {
                range.lower = tighter_lower(range.lower, Bound::Excluded(value.clone()))
            }
            FilterOp::Ge(value) => {
                range.lower = tighter_lower(range.lower, Bound::Included(value.clone()))
            }
            FilterOp::Lt(value) => {
                range.upper = tighter_upper(range.upper, Bound::Excluded(value.clone()))
            }
            FilterOp::Le(value) => {
                range.upper = tighter_upper(range.upper, Bound::Included(value.clone()))
            }
            _ => continue,
        }
        consumed.push(at);
    }
    (range, consumed)
}

/// A query resolved against the table, ready to run.
pub(super) struct Prepared<'a> {
    pub(super) path: AccessPath,
    pub(super) walk: Option<(&'a Index, usize, Vec<KeyRange>)>,
    pub(super) residual: Vec<Check>,
    pub(super) order: usize,
    pub(super) direction: Direction,
    /// The walk follows the order-by field's index, so no sort is needed.
    pub(super) ordered: bool,
}

pub(super) fn prepare<'a>(
    source: &'a impl RowSource,
    query: &Query,
) -> Result<Prepared<'a>, QueryError> {
    let schema = source.schema();
    let checks = query
        .filters
        .iter()
        .map(|filter| compile(schema, filter))
        .collect::<Result<Vec<_>, _>>()?;
    let (order_field, direction) = match &query.order_by {
        Some((field, direction)) => (field.as_str(), *direction),
        None => (schema.primary_key.as_str(), Direction::Asc),
    };
    let (order, _) = resolve(schema, order_field)?;
    let access = choose_access(source, &checks, order, order_field);
    let ordered = access
        .walk
        .as_ref()
        .is_some_and(|(_, position, _)| *position == order);
    let residual = checks
        .into_iter()
        .enumerate()
        .filter(|(at, _)| !access.consumed.contains(at))
        .map(|(_, check)| check)
        .collect();
    Ok(Prepared {
        path: access.path,
        walk: access.walk,
        residual,
        order,
        direction,
        ordered,
    })
}

impl<'a> Prepared<'a> {
    pub(super) fn plan(&self) -> Plan {
        Plan {
            access: self.path.clone(),
            residual_filters: self.residual.len(),
            sorted_in_memory: !self.ordered,
        }
    }
}

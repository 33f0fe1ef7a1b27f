//! Queries over a table's visible rows: filters, ordering, keyset pagination and
//! explain.
//!
//! # Overview
//!
//! A [`Query`] selects the live rows of one table that pass all of its [`Filter`]s,
//! orders them and returns at most `limit` of them as a [`QueryResult`]. When the
//! limit cut the result, [`QueryResult::next`] holds a [`PageToken`] to pass as
//! [`Query::after`] for the next page. Every result carries the [`Plan`] it ran
//! with; [`explain`] returns that plan without running the query.
//!
//! Execution reads the table through the [`RowSource`] trait, so that it can be
//! tested without the real table.
//!
//! # Semantics
//!
//! - Filters are AND-combined. A filter's value is first coerced to the field's type
//!   with [`FieldType::check`] (so a whole float fits an integer field), then values
//!   compare by [`Value`]'s total order.
//! - `eq` on null matches unset (null) fields. `lt`, `le`, `gt` and `ge` never match
//!   a null field, whatever their bound. `ne` matches every row whose value differs,
//!   nulls included. `in` matches any listed value; an empty list matches nothing.
//!   `prefix` matches string values starting with the prefix (case-sensitive) and is
//!   refused on fields that are not of the string type.
//! - Rows are ordered by the order-by field (by default the primary key), ties
//!   broken by record id, the whole order ascending or descending. Nulls sort first
//!   in ascending order.
//! - A [`PageToken`] is the (order-by value, record id) of the last row of a page.
//!   The next page starts strictly after it in the same order, so walking the pages
//!   never repeats or skips a row, even among tied values and when rows are deleted
//!   between pages. `next` is set only when rows beyond the limit exist, so the last
//!   page has none. A limit of zero returns no rows and no token.
//! - Deleted rows never appear.
//!
//! # Plans
//!
//! One access path narrows the rows to examine. In order of preference: an index
//! lookup for `eq`/`in`, an index prefix scan, an index range for `lt`/`le`/`gt`/
//! `ge` (every bound on that field merged into one range), an index-order walk when
//! no filter can use an index but the order-by field is indexed, and else a full
//! scan. Among usable filters of the same kind, one on the order-by field wins (it
//! spares the sort), else the first. The filters the access path does not
//! guarantee are checked on each row ("residual" filters).
//!
//! When the path walks the order-by field's index, rows come out already ordered and
//! the walk stops as soon as the page is full: that is what keeps "latest 20" cheap
//! on a large table. Otherwise the matches are collected (as references; rows are
//! cloned only into the result) and sorted, fully sorting only the page's worth of
//! them.

use std::fmt;

use mobilesyncdb_crdt::Value;
use serde::{Deserialize, Serialize};

use super::index::Index;
use super::row::Row;
use crate::schema::{FieldType, TableSchema};

mod exec;
mod plan;
#[cfg(test)]
mod tests;
mod token;

use exec::Scan;
use plan::prepare;

/// A comparison of a field with a value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FilterOp {
    /// Equal to the value; `Eq(Value::Null)` matches unset fields.
    Eq(Value),
    /// Different from the value; null fields match unless the value is null.
    Ne(Value),
    /// Less than the value; never matches a null field.
    Lt(Value),
    /// Less than or equal to the value; never matches a null field.
    Le(Value),
    /// Greater than the value; never matches a null field.
    Gt(Value),
    /// Greater than or equal to the value; never matches a null field.
    Ge(Value),
    /// Equal to any of the values.
    In(Vec<Value>),
    /// A string starting with this prefix (string fields only).
    Prefix(String),
}

/// What an operator name, as filters are written in requests, takes.
#[derive(Clone, Copy, Debug)]
pub enum OperatorShape {
    /// One value of the field's type (`eq`, `ne`, `lt`, `le`, `gt`, `ge`).
    One(fn(Value) -> FilterOp),
    /// A list of values of the field's type (`in`).
    List,
    /// A string (`prefix`).
    Text,
}

impl FilterOp {
    /// The operator names requests may use, for error messages.
    pub const NAMES: &str = "eq, ne, lt, le, gt, ge, in or prefix";

    /// What the operator `name` takes, or `None` for a name that is not one.
    pub fn shape(name: &str) -> Option<OperatorShape> {
        Some(match name {
            "eq" => OperatorShape::One(FilterOp::Eq),
            "ne" => OperatorShape::One(FilterOp::Ne),
            "lt" => OperatorShape::One(FilterOp::Lt),
            "le" => OperatorShape::One(FilterOp::Le),
            "gt" => OperatorShape::One(FilterOp::Gt),
            "ge" => OperatorShape::One(FilterOp::Ge),
            "in" => OperatorShape::List,
            "prefix" => OperatorShape::Text,
            _ => return None,
        })
    }
}

/// One condition of a [`Query`]: a field and how it must compare.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Filter {
    pub field: String,
    pub op: FilterOp,
}

impl Filter {
    /// A filter on `field`.
    pub fn new(field: impl Into<String>, op: FilterOp) -> Filter {
        Filter {
            field: field.into(),
            op,
        }
    }

    /// `field = value`.
    pub fn eq(field: impl Into<String>, value: impl Into<Value>) -> Filter {
        Filter::new(field, FilterOp::Eq(value.into()))
    }

    /// `field != value`.
    pub fn ne(field: impl Into<String>, value: impl Into<Value>) -> Filter {
        Filter::new(field, FilterOp::Ne(value.into()))
    }

    /// `field < value`.
    pub fn lt(field: impl Into<String>, value: impl Into<Value>) -> Filter {
        Filter::new(field, FilterOp::Lt(value.into()))
    }

    /// `field <= value`.
    pub fn le(field: impl Into<String>, value: impl Into<Value>) -> Filter {
        Filter::new(field, FilterOp::Le(value.into()))
    }

    /// `field > value`.
    pub fn gt(field: impl Into<String>, value: impl Into<Value>) -> Filter {
        Filter::new(field, FilterOp::Gt(value.into()))
    }

    /// `field >= value`.
    pub fn ge(field: impl Into<String>, value: impl Into<Value>) -> Filter {
        Filter::new(field, FilterOp::Ge(value.into()))
    }

    /// `field in (values…)`.
    pub fn is_in<V: Into<Value>>(
        field: impl Into<String>,
        values: impl IntoIterator<Item = V>,
    ) -> Filter {
        Filter::new(
            field,
            FilterOp::In(values.into_iter().map(Into::into).collect()),
        )
    }

    /// `field` is a string starting with `prefix`.
    pub fn prefix(field: impl Into<String>, prefix: impl Into<String>) -> Filter {
        Filter::new(field, FilterOp::Prefix(prefix.into()))
    }
}

/// The direction of a query's order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Smallest first; nulls come first.
    #[default]
    Asc,
    /// Largest first; nulls come last.
    Desc,
}

/// A query over one table's live rows.
///
/// ```
/// use mobilesyncdb::engine::{Direction, Filter, Query};
///
/// let query = Query::new()
///     .filter(Filter::eq("owner", "u1"))
///     .order_by("due", Direction::Desc)
///     .limit(50);
/// assert_eq!(query.filters.len(), 1);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Query {
    /// Conditions every returned row meets (AND-combined).
    pub filters: Vec<Filter>,
    /// The order field and direction; by default the primary key, ascending.
    pub order_by: Option<(String, Direction)>,
    /// At most this many rows per page.
    pub limit: Option<usize>,
    /// Continue strictly after this position (the previous page's `next`).
    pub after: Option<PageToken>,
}

impl Query {
    /// A query for every live row, by primary key.
    pub fn new() -> Query {
        Query::default()
    }

    /// Adds a condition.
    pub fn filter(mut self, filter: Filter) -> Query {
        self.filters.push(filter);
        self
    }

    /// Orders by `field` in `direction` (ties by record id).
    pub fn order_by(mut self, field: impl Into<String>, direction: Direction) -> Query {
        self.order_by = Some((field.into(), direction));
        self
    }

    /// Returns at most `limit` rows.
    pub fn limit(mut self, limit: usize) -> Query {
        self.limit = Some(limit);
        self
    }

    /// Continues after the position of a previous page's `next`.
    pub fn after(mut self, token: PageToken) -> Query {
        self.after = Some(token);
        self
    }
}

/// A keyset pagination position: the order-by value and record id of the last row
/// a page returned.
///
/// In JSON it is the opaque string of [`PageToken::encode`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct PageToken {
    pub value: Value,
    pub id: String,
}

/// One page of a query's rows.
#[derive(Clone, Debug, PartialEq)]
pub struct QueryResult {
    /// The rows, in the query's order.
    pub rows: Vec<Row>,
    /// Where the next page starts; `None` when no rows follow.
    pub next: Option<PageToken>,
    /// How the query ran.
    pub plan: Plan,
}

/// How a query runs: what `explain` says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// How the rows to examine are found.
    pub access: AccessPath,
    /// Filters checked on each examined row because the access path does not
    /// guarantee them.
    pub residual_filters: usize,
    /// Whether matches are sorted after collection; false when the access path
    /// yields them in order.
    pub sorted_in_memory: bool,
}

/// How a query finds the rows it examines.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AccessPath {
    /// Looks up `keys` distinct values (`eq`, `in`) in the index on `field`.
    IndexLookup { field: String, keys: usize },
    /// Walks one range (`lt`, `le`, `gt`, `ge`) of the index on `field`.
    IndexRange { field: String },
    /// Walks the strings with a prefix in the index on `field`.
    IndexPrefix { field: String },
    /// Walks the whole index on the order-by `field`, stopping when the page is full.
    IndexOrder { field: String },
    /// Examines every row.
    FullScan,
}

impl fmt::Display for AccessPath {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AccessPath::IndexLookup { field, keys } => {
                let plural = if *keys == 1 { "" } else { "s" };
                write!(formatter, "index lookup on {field} ({keys} key{plural})")
            }
            AccessPath::IndexRange { field } => write!(formatter, "index range on {field}"),
            AccessPath::IndexPrefix { field } => write!(formatter, "index prefix scan on {field}"),
            AccessPath::IndexOrder { field } => write!(formatter, "index order on {field}"),
            AccessPath::FullScan => formatter.write_str("full scan"),
        }
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}, ", self.access)?;
        match self.residual_filters {
            0 => formatter.write_str("no residual filters")?,
            1 => formatter.write_str("1 residual filter")?,
            count => write!(formatter, "{count} residual filters")?,
        }
        let sort = if self.sorted_in_memory {
            "sorted in memory"
        } else {
            "sorted by index"
        };
        write!(formatter, ", {sort}")
    }
}

/// Why a query cannot run.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum QueryError {
    /// A filter or the order names a field the table does not have.
    #[error("table {table} has no field {field}; use one of the fields of its schema")]
    UnknownField { table: String, field: String },
    /// A filter value does not fit its field's type, even after coercion.
    #[error(
        "filter on {table}.{field} expects {expected}, found {found}; pass a value of type {expected}"
    )]
    TypeMismatch {
        table: String,
        field: String,
        expected: FieldType,
        found: String,
    },
    /// A prefix filter on a field that does not hold strings.
    #[error(
        "prefix filter on {table}.{field} needs a string field, but it is {kind}; use a range filter instead"
    )]
    PrefixOnNonString {
        table: String,
        field: String,
        kind: FieldType,
    },
    /// A page token that was not made by [`PageToken::encode`].
    #[error(
        "bad page token ({reason}); pass the previous page's `next` token unchanged, or start over without one"
    )]
    BadPageToken { reason: String },
}

/// The table as queries see it.
pub(crate) trait RowSource {
    fn schema(&self) -> &TableSchema;
    /// One past the highest slot.
    fn slot_count(&self) -> u32;
    /// The live (not deleted) row at a slot.
    fn live_row(&self, slot: u32) -> Option<&Row>;
    /// The record id at a slot.
    fn record_id(&self, slot: u32) -> &str;
    /// The index on the field at `position`, if there is one.
    fn index_on(&self, position: usize) -> Option<&Index>;
    /// The value of the field at `position` in a row, as the field reads it
    /// (converted to its type, or its default when the record has none).
    fn value(&self, row: &Row, position: usize) -> Value {
        row.read(position, &self.schema().fields[position])
    }
}

/// Runs `query` against `source`.
///
/// # Errors
///
/// A [`QueryError`] when the query does not fit the table's schema.
pub(crate) fn execute(source: &impl RowSource, query: &Query) -> Result<QueryResult, QueryError> {
    let prepared = prepare(source, query)?;
    // One row past the limit tells whether another page exists.
    let wanted = query
        .limit
        .map_or(usize::MAX, |limit| limit.saturating_add(1));
    let scan = Scan {
        source,
        residual: &prepared.residual,
        order: prepared.order,
        direction: prepared.direction,
        after: query.after.as_ref(),
    };
    let hits = if prepared.ordered {
        prepared.walk_in_order(&scan, wanted)
    } else {
        prepared.collect_sorted(&scan, wanted)
    };
    Ok(prepared.finish(hits, query.limit))
}

/// The plan `query` would run with.
///
/// # Errors
///
/// A [`QueryError`] when the query does not fit the table's schema.
pub(crate) fn explain(source: &impl RowSource, query: &Query) -> Result<Plan, QueryError> {
    prepare(source, query).map(|prepared| prepared.plan())
}

/// Filters compiled against a table's schema, to test rows one at a time (sync
/// scopes use it to decide which changed rows a client replicates).
#[derive(Debug, Default)]
pub(crate) struct RowFilter {
    checks: Vec<plan::Check>,
}

impl RowFilter {
    /// # Errors
    ///
    /// A [`QueryError`] for an unknown field or a mistyped operand.
    pub(crate) fn compile(
        schema: &TableSchema,
        filters: &[Filter],
    ) -> Result<RowFilter, QueryError> {
        let checks = filters
            .iter()
            .map(|filter| plan::compile(schema, filter))
            .collect::<Result<_, _>>()?;
        Ok(RowFilter { checks })
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.checks.is_empty()
    }

    pub(crate) fn matches(&self, schema: &TableSchema, row: &Row) -> bool {
        self.checks.iter().all(|check| check.matches(schema, row))
    }
}

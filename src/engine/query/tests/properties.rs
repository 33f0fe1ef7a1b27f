//! Random tables and queries: every plan must return what a naive evaluation does.

use std::cmp::Ordering;

use mobilesyncdb_crdt::Value;
use quickcheck::{Arbitrary, Gen, QuickCheck};

use super::TestTable;
use crate::engine::query::{Direction, Filter, FilterOp, Query};
use crate::engine::row::Row;
use crate::schema::{FieldSpec, FieldType, TableSchema};

/// A random table, with ids `r000…` (not in slot order), an integer `n`, a string `s`, some rows
/// deleted, and a random query over it.
#[derive(Clone, Debug)]
struct Scenario {
    rows: Vec<(Value, Value, bool)>,
    query: Query,
    page: usize,
}

const STRINGS: [&str; 8] = ["", "a", "ab", "abc", "b", "ba", "B", "\u{10FFFF}"];

fn pick<T: Clone>(g: &mut Gen, items: &[T]) -> T {
    g.choose(items).cloned().expect("non-empty")
}

fn random_value(g: &mut Gen, field: &str) -> Value {
    if u8::arbitrary(g) % 6 == 0 {
        return Value::Null;
    }
    let small = i64::from(u8::arbitrary(g) % 9) - 4;
    match field {
        // Whole floats must coerce to the integer field.
        "n" if bool::arbitrary(g) => Value::Float(small as f64),
        "n" => Value::Int(small),
        "s" => Value::str(pick(g, &STRINGS)),
        _ => Value::from(format!("r{:03}", u8::arbitrary(g) % 97)),
    }
}

fn random_filter(g: &mut Gen) -> Filter {
    let field = pick(g, &["n", "n", "s", "s", "id"]);
    let value = random_value(g, field);
    match u8::arbitrary(g) % 8 {
        0 => Filter::eq(field, value),
        1 => Filter::ne(field, value),
        2 => Filter::lt(field, value),
        3 => Filter::le(field, value),
        4 => Filter::gt(field, value),
        5 => Filter::ge(field, value),
        6 => Filter::is_in(
            field,
            (0..u8::arbitrary(g) % 4)
                .map(|_| random_value(g, field))
                .collect::<Vec<_>>(),
        ),
        _ if field == "n" => Filter::ge(field, value),
        _ => Filter::prefix(field, pick(g, &["", "a", "ab", "b", "r00", "\u{10FFFF}"])),
    }
}

impl Arbitrary for Scenario {
    fn arbitrary(g: &mut Gen) -> Scenario {
        let rows = (0..usize::arbitrary(g) % 30)
            .map(|_| {
                let n = match random_value(g, "n") {
                    Value::Float(x) => Value::Int(x as i64),
                    other => other,
                };
                (n, random_value(g, "s"), u8::arbitrary(g) % 5 == 0)
            })
            .collect();
        let mut query = Query::new();
        for _ in 0..u8::arbitrary(g) % 4 {
            query = query.filter(random_filter(g));
        }
        if bool::arbitrary(g) {
            let direction = pick(g, &[Direction::Asc, Direction::Desc]);
            query = query.order_by(pick(g, &["n", "s", "id"]), direction);
        }
        Scenario {
            rows,
            query,
            page: 1 + usize::arbitrary(g) % 5,
        }
    }

    /// Drops one filter or one row at a time, so failures shrink to a readable case.
    fn shrink(&self) -> Box<dyn Iterator<Item = Scenario>> {
        let without_filter = (0..self.query.filters.len()).map(|at| {
            let mut smaller = self.clone();
            smaller.query.filters.remove(at);
            smaller
        });
        let without_row = (0..self.rows.len()).map(|at| {
            let mut smaller = self.clone();
            smaller.rows.remove(at);
            smaller
        });
        Box::new(
            without_filter
                .chain(without_row)
                .collect::<Vec<_>>()
                .into_iter(),
        )
    }
}

fn random_table(scenario: &Scenario, indexed: bool) -> TestTable {
    let schema = TableSchema::new("random", "id")
        .field(FieldSpec::new("n", FieldType::Integer))
        .field(FieldSpec::new("s", FieldType::String))
        .unique_index("id")
        .index("n")
        .index("s");
    let rows = scenario
        .rows
        .iter()
        .enumerate()
        // Ids in another order than slots, as after deletes and reuse.
        .map(|(at, (n, s, _))| {
            vec![
                Value::from(format!("r{:03}", at * 17 % 97)),
                n.clone(),
                s.clone(),
            ]
        })
        .collect();
    let mut table = TestTable::new(schema, rows, indexed);
    for (slot, (_, _, deleted)) in scenario.rows.iter().enumerate() {
        if *deleted {
            table.delete(slot as u32);
        }
    }
    table
}

/// The query answered the obvious way, independently of the planner.
fn reference(table: &TestTable, query: &Query) -> Vec<String> {
    let schema = &table.schema;
    let position = |field: &str| schema.position(field).expect("field");
    let coerce = |field: &str, value: &Value| {
        schema
            .spec(field)
            .expect("field")
            .kind
            .check(value.clone())
            .expect("fits")
    };
    let matches = |row: &Row, filter: &Filter| {
        let field = row.get(position(&filter.field));
        let compare =
            |value: &Value| (!field.is_null()).then(|| field.cmp(&coerce(&filter.field, value)));
        match &filter.op {
            FilterOp::Eq(value) => field == coerce(&filter.field, value),
            FilterOp::Ne(value) => field != coerce(&filter.field, value),
            FilterOp::Lt(value) => compare(value) == Some(Ordering::Less),
            FilterOp::Le(value) => {
                matches!(compare(value), Some(Ordering::Less | Ordering::Equal))
            }
            FilterOp::Gt(value) => compare(value) == Some(Ordering::Greater),
            FilterOp::Ge(value) => {
                matches!(compare(value), Some(Ordering::Greater | Ordering::Equal))
            }
            FilterOp::In(values) => values
                .iter()
                .any(|value| field == coerce(&filter.field, value)),
            FilterOp::Prefix(prefix) => {
                matches!(field, Value::Str(text) if text.starts_with(prefix.as_str()))
            }
        }
    };
    let (order_field, direction) = query
        .order_by
        .clone()
        .unwrap_or(("id".to_owned(), Direction::Asc));
    let mut rows: Vec<(Value, String)> = table
        .rows
        .iter()
        .zip(&table.ids)
        .filter_map(|(row, id)| Some((row.as_ref()?, id)))
        .filter(|(row, _)| query.filters.iter().all(|filter| matches(row, filter)))
        .map(|(row, id)| (row.get(position(&order_field)).clone(), id.clone()))
        .collect();
    rows.sort();
    if direction == Direction::Desc {
        rows.reverse();
    }
    rows.into_iter().map(|(_, id)| id).collect()
}

fn indexed_plan_matches_full_scan(scenario: Scenario) -> bool {
    let mut indexed = random_table(&scenario, true);
    let scanned = random_table(&scenario, false);
    let expected = reference(&scanned, &scenario.query);
    let by_scan = scanned.ids(&scenario.query);
    let by_index = indexed.ids(&scenario.query);
    let paged = indexed.all_pages(&scenario.query, scenario.page, None);
    let ok = by_scan == expected && by_index == expected && paged == expected;
    if !ok {
        eprintln!(
            "expected {expected:?}\nscan     {by_scan:?}\nindex    {by_index:?}\npaged    {paged:?}"
        );
    }
    ok
}

#[test]
fn indexed_plans_return_what_a_full_scan_returns() {
    QuickCheck::new()
        .tests(500)
        .quickcheck(indexed_plan_matches_full_scan as fn(Scenario) -> bool);
}

use std::cell::Cell;
use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::*;
use crate::schema::FieldSpec;

mod properties;

/// A table stand-in: rows by slot (`None` once deleted) and optional indexes.
struct TestTable {
    schema: TableSchema,
    rows: Vec<Option<Row>>,
    ids: Vec<String>,
    indexes: Vec<Index>,
    /// How many rows queries examined, to prove that indexes avoid scans.
    touched: Cell<usize>,
}

impl TestTable {
    fn new(schema: TableSchema, rows: Vec<Vec<Value>>, indexed: bool) -> TestTable {
        let key = schema.key_position();
        let ids = rows
            .iter()
            .map(|values| match &values[key] {
                Value::Str(id) => id.to_string(),
                other => panic!("test ids are strings, not {other:?}"),
            })
            .collect();
        let rows: Vec<Option<Row>> = rows
            .into_iter()
            .map(|values| Some(Row::new(values)))
            .collect();
        let mut indexes: Vec<Index> = Vec::new();
        if indexed {
            for spec in &schema.indexes {
                let position = schema.position(&spec.field).expect("indexed field exists");
                let mut index = Index::new(position, spec.unique);
                for (slot, row) in rows.iter().enumerate() {
                    let row = row.as_ref().expect("new rows are live");
                    index.insert(&row.get(position), slot as u32);
                }
                indexes.push(index);
            }
        }
        TestTable {
            schema,
            rows,
            ids,
            indexes,
            touched: Cell::new(0),
        }
    }

    fn delete(&mut self, slot: u32) {
        let Some(row) = self.rows[slot as usize].take() else {
            return;
        };
        for index in &mut self.indexes {
            index.remove(&row.get(index.field_position()), slot);
        }
    }

    fn slot_of(&self, id: &str) -> u32 {
        self.ids
            .iter()
            .position(|known| known == id)
            .expect("known id") as u32
    }

    fn run(&self, query: &Query) -> QueryResult {
        execute(self, query).expect("query runs")
    }

    fn ids(&self, query: &Query) -> Vec<String> {
        self.ids_of(&self.run(query).rows)
    }

    fn ids_of(&self, rows: &[Row]) -> Vec<String> {
        let key = self.schema.key_position();
        rows.iter()
            .map(|row| match row.get(key) {
                Value::Str(id) => id.to_string(),
                other => panic!("id {other:?}"),
            })
            .collect()
    }

    /// Every page of `query` with page size `limit`, deleting `delete` (if any)
    /// after the first page.
    fn all_pages(&mut self, query: &Query, limit: usize, delete: Option<&str>) -> Vec<String> {
        let mut seen = Vec::new();
        let mut page = query.clone().limit(limit);
        loop {
            let result = self.run(&page);
            assert!(result.rows.len() <= limit);
            seen.extend(self.ids_of(&result.rows));
            if let Some(id) = delete.filter(|_| seen.len() == result.rows.len()) {
                let slot = self.slot_of(id);
                self.delete(slot);
            }
            match result.next {
                Some(token) => {
                    assert_eq!(
                        result.rows.len(),
                        limit,
                        "only full pages have a next token"
                    );
                    // Through the wire format, as a client would send it back.
                    let token = PageToken::decode(&token.encode()).expect("own token decodes");
                    page = page.after(token);
                }
                None => return seen,
            }
        }
    }
}

impl RowSource for TestTable {
    fn schema(&self) -> &TableSchema {
        &self.schema
    }

    fn slot_count(&self) -> u32 {
        self.rows.len() as u32
    }

    fn live_row(&self, slot: u32) -> Option<&Row> {
        self.touched.set(self.touched.get() + 1);
        self.rows.get(slot as usize)?.as_ref()
    }

    fn record_id(&self, slot: u32) -> &str {
        &self.ids[slot as usize]
    }

    fn index_on(&self, position: usize) -> Option<&Index> {
        self.indexes
            .iter()
            .find(|index| index.field_position() == position)
    }
}

fn todo_schema() -> TableSchema {
    TableSchema::new("todos", "id")
        .field(FieldSpec::new("owner", FieldType::String))
        .field(FieldSpec::new("due", FieldType::Integer))
        .field(FieldSpec::new("title", FieldType::String))
        .field(FieldSpec::new("score", FieldType::Float))
        .field(FieldSpec::new("done", FieldType::Boolean))
        .index("owner")
        .index("due")
        .index("title")
}

fn text(value: Option<&str>) -> Value {
    value.map_or(Value::Null, Value::str)
}

/// Six todos with nulls, ties and mixed case.
fn todos(indexed: bool) -> TestTable {
    let rows = [
        (
            "a",
            Some("u1"),
            Some(10),
            Some("buy milk"),
            Some(1.5),
            false,
        ),
        ("b", Some("u2"), Some(20), Some("buy eggs"), None, true),
        ("c", Some("u1"), None, Some("call mom"), Some(2.0), false),
        (
            "d",
            Some("u3"),
            Some(20),
            Some("Call bob"),
            Some(0.5),
            false,
        ),
        ("e", None, Some(5), None, Some(3.0), true),
        (
            "f",
            Some("u1"),
            Some(30),
            Some("buy bread"),
            Some(1.0),
            true,
        ),
    ];
    let rows = rows
        .into_iter()
        .map(|(id, owner, due, title, score, done)| {
            vec![
                Value::str(id),
                text(owner),
                due.map_or(Value::Null, Value::Int),
                text(title),
                score.map_or(Value::Null, Value::Float),
                Value::Bool(done),
            ]
        })
        .collect();
    TestTable::new(todo_schema(), rows, indexed)
}

fn both_tables() -> [TestTable; 2] {
    [todos(true), todos(false)]
}

fn filter_cases() -> Vec<(Vec<Filter>, &'static str)> {
    vec![
        (vec![Filter::eq("owner", "u1")], "acf"),
        (vec![Filter::eq("owner", Value::Null)], "e"),
        (vec![Filter::ne("owner", "u1")], "bde"),
        (vec![Filter::ne("owner", Value::Null)], "abcdf"),
        (vec![Filter::lt("due", 20)], "ae"),
        (vec![Filter::le("due", 20)], "abde"),
        (vec![Filter::gt("due", 10)], "bdf"),
        (vec![Filter::ge("due", 20)], "bdf"),
        (vec![Filter::ge("due", 20.0)], "bdf"),
        (vec![Filter::eq("due", Value::Null)], "c"),
        (vec![Filter::gt("due", Value::Null)], "abdef"),
        (vec![Filter::le("due", Value::Null)], ""),
        (vec![Filter::is_in("due", [5, 30, 99])], "ef"),
        (vec![Filter::is_in("owner", ["u2", "u3", "u2"])], "bd"),
        (
            vec![Filter::is_in("owner", [Value::Null, Value::str("u3")])],
            "de",
        ),
        (vec![Filter::is_in("owner", Vec::<Value>::new())], ""),
        (vec![Filter::prefix("title", "buy")], "abf"),
        (vec![Filter::prefix("title", "")], "abcdf"),
        (vec![Filter::prefix("title", "Call")], "d"),
        (vec![Filter::prefix("id", "c")], "c"),
        (vec![Filter::ge("score", 1.5)], "ace"),
        (vec![Filter::eq("score", 2)], "c"),
        (vec![Filter::eq("done", true)], "bef"),
        (vec![Filter::eq("owner", "u1"), Filter::gt("due", 10)], "f"),
        (
            vec![
                Filter::eq("owner", "u1"),
                Filter::eq("done", false),
                Filter::prefix("title", "c"),
            ],
            "c",
        ),
        (vec![Filter::gt("due", 5), Filter::lt("due", 30)], "abd"),
        (
            vec![
                Filter::ge("due", 10),
                Filter::le("due", 10),
                Filter::ge("due", 5),
            ],
            "a",
        ),
        (vec![Filter::ge("due", 10), Filter::gt("due", 10)], "bdf"),
        (vec![Filter::gt("due", 10), Filter::ge("due", 10)], "bdf"),
        (vec![Filter::le("due", 20), Filter::lt("due", 20)], "ae"),
        (vec![Filter::lt("due", 20), Filter::le("due", 20)], "ae"),
        (vec![Filter::gt("due", 25), Filter::lt("due", 10)], ""),
        (vec![Filter::gt("due", 20), Filter::le("due", 20)], ""),
        (
            vec![Filter::ne("due", 20), Filter::prefix("title", "buy")],
            "af",
        ),
        (
            vec![Filter::eq("owner", "u1"), Filter::eq("owner", "u2")],
            "",
        ),
    ]
}

#[test]
fn every_filter_form_matches_with_and_without_an_index() {
    for table in both_tables() {
        for (filters, expected) in filter_cases() {
            let query = Query {
                filters: filters.clone(),
                ..Query::default()
            };
            let expected: Vec<String> = expected.chars().map(String::from).collect();
            assert_eq!(table.ids(&query), expected, "{filters:?}");
        }
    }
}

#[test]
fn orders_by_any_field_with_ties_broken_by_id() {
    let cases = [
        ("due", Direction::Asc, "ceabdf"),
        ("due", Direction::Desc, "fdbaec"),
        ("owner", Direction::Asc, "eacfbd"),
        ("owner", Direction::Desc, "dbfcae"),
        ("done", Direction::Asc, "acdbef"),
        ("score", Direction::Desc, "ecafdb"),
        ("id", Direction::Desc, "fedcba"),
    ];
    for table in both_tables() {
        for (field, direction, expected) in cases {
            let query = Query::new().order_by(field, direction);
            let expected: Vec<String> = expected.chars().map(String::from).collect();
            assert_eq!(table.ids(&query), expected, "{field} {direction:?}");
        }
    }
}

#[test]
fn deleted_rows_never_appear() {
    for mut table in both_tables() {
        let slot = table.slot_of("f");
        table.delete(slot);
        assert_eq!(
            table.ids(&Query::new().filter(Filter::eq("owner", "u1"))),
            ["a", "c"]
        );
        assert_eq!(
            table.ids(&Query::new().order_by("due", Direction::Desc).limit(2)),
            ["d", "b"]
        );
        assert_eq!(table.ids(&Query::new()).len(), 5);
    }
}

#[test]
fn limit_sets_next_only_when_rows_follow() {
    for table in both_tables() {
        let page = table.run(&Query::new().order_by("due", Direction::Asc).limit(2));
        assert_eq!(table.ids_of(&page.rows), ["c", "e"]);
        let next = page.next.expect("more rows");
        assert_eq!(
            next,
            PageToken {
                value: Value::Int(5),
                id: "e".into()
            }
        );

        let exact = table.run(&Query::new().limit(6));
        assert_eq!(exact.rows.len(), 6);
        assert_eq!(exact.next, None, "no empty last page");

        let zero = table.run(&Query::new().limit(0));
        assert!(zero.rows.is_empty());
        assert_eq!(zero.next, None);
    }
}

#[test]
fn pages_walk_every_row_once_in_order() {
    let orders = [
        ("due", Direction::Asc),
        ("due", Direction::Desc),
        ("owner", Direction::Asc),
        ("done", Direction::Desc),
        ("score", Direction::Asc),
    ];
    let filters = [
        vec![],
        vec![Filter::ne("owner", "u2")],
        vec![Filter::eq("owner", "u1")],
        vec![Filter::gt("due", 5)],
    ];
    for indexed in [true, false] {
        for (field, direction) in orders {
            for filters in &filters {
                let query = Query {
                    filters: filters.clone(),
                    order_by: Some((field.to_owned(), direction)),
                    ..Query::default()
                };
                let mut table = todos(indexed);
                let whole = table.ids(&query);
                for limit in 1..=4 {
                    let mut table = todos(indexed);
                    assert_eq!(
                        table.all_pages(&query, limit, None),
                        whole,
                        "{query:?} by {limit}"
                    );
                }
                // A row deleted after the first page: the rest never repeats nor skips.
                let first = table.run(&query.clone().limit(2));
                let seen = table.ids_of(&first.rows);
                let Some(victim) = whole.iter().find(|id| !seen.contains(id)) else {
                    continue;
                };
                let expected: Vec<String> =
                    whole.iter().filter(|id| *id != victim).cloned().collect();
                assert_eq!(
                    table.all_pages(&query, 2, Some(victim)),
                    expected,
                    "{query:?} deleting {victim}"
                );
            }
        }
    }
}

fn many_rows(count: usize, indexed: bool) -> TestTable {
    let rows = (0..count)
        .map(|n| {
            vec![
                Value::from(format!("r{n:05}")),
                Value::from(format!("u{}", n % 700)),
                Value::Int(n as i64),
                Value::from(format!("t{}", n % 13)),
                Value::Float((n % 7) as f64),
                Value::Bool(n % 2 == 0),
            ]
        })
        .collect();
    TestTable::new(todo_schema(), rows, indexed)
}

#[test]
fn pages_over_many_ties_match_the_whole_result() {
    let mut table = many_rows(300, true);
    for (field, direction) in [
        ("score", Direction::Desc),
        ("title", Direction::Asc),
        ("done", Direction::Asc),
    ] {
        let query = Query::new()
            .filter(Filter::ne("done", Value::Null))
            .order_by(field, direction);
        let whole = table.ids(&query);
        assert_eq!(whole.len(), 300);
        assert_eq!(
            table.all_pages(&query, 7, None),
            whole,
            "{field} {direction:?}"
        );
    }
}

#[test]
fn indexed_lookups_and_ordered_walks_touch_only_what_they_return() {
    let table = many_rows(35_000, true);
    let owned = table.run(&Query::new().filter(Filter::eq("owner", "u7")));
    assert_eq!(owned.rows.len(), 50);
    assert_eq!(table.touched.replace(0), 50);

    let latest = table.run(&Query::new().order_by("due", Direction::Desc).limit(20));
    assert_eq!(table.ids_of(&latest.rows)[0], "r34999");
    assert_eq!(
        table.touched.replace(0),
        21,
        "one row past the limit proves a next page"
    );

    let next = latest.next.expect("more");
    let page = table.run(
        &Query::new()
            .order_by("due", Direction::Desc)
            .limit(20)
            .after(next),
    );
    assert_eq!(table.ids_of(&page.rows)[0], "r34979");
    assert!(
        table.touched.replace(0) <= 22,
        "the token seeks, it does not rescan"
    );

    let range = table.run(
        &Query::new()
            .filter(Filter::ge("due", 100))
            .filter(Filter::lt("due", 110)),
    );
    assert_eq!(range.rows.len(), 10);
    assert_eq!(table.touched.replace(0), 10);
}

#[test]
fn full_scan_of_35k_rows_is_quick() {
    let table = many_rows(35_000, false);
    let started = std::time::Instant::now();
    let result = table.run(
        &Query::new()
            .filter(Filter::eq("done", true))
            .order_by("score", Direction::Desc)
            .limit(20),
    );
    let elapsed = started.elapsed();
    assert_eq!(result.rows.len(), 20);
    assert_eq!(result.plan.access, AccessPath::FullScan);
    // Generous for unoptimised test builds; release builds take a few ms at most.
    assert!(elapsed.as_millis() < 500, "took {elapsed:?}");
}

fn plan_of(table: &TestTable, query: Query) -> Plan {
    let plan = explain(table, &query).expect("plans");
    assert_eq!(
        table.run(&query).plan,
        plan,
        "execute runs what explain says"
    );
    plan
}

fn access(field: &str) -> String {
    field.to_owned()
}

#[test]
fn explain_names_the_index_of_each_access_path() {
    let table = todos(true);
    let lookup = plan_of(&table, Query::new().filter(Filter::eq("owner", "u1")));
    assert_eq!(
        lookup.access,
        AccessPath::IndexLookup {
            field: access("owner"),
            keys: 1
        }
    );
    assert_eq!(
        lookup.to_string(),
        "index lookup on owner (1 key), no residual filters, sorted in memory"
    );

    let many = plan_of(
        &table,
        Query::new().filter(Filter::is_in("owner", ["u1", "u2", "u1", "u9"])),
    );
    assert_eq!(
        many.access,
        AccessPath::IndexLookup {
            field: access("owner"),
            keys: 3
        }
    );

    let range = plan_of(
        &table,
        Query::new()
            .filter(Filter::gt("due", 5))
            .filter(Filter::eq("done", false))
            .filter(Filter::le("due", 20))
            .order_by("due", Direction::Desc),
    );
    assert_eq!(
        range.access,
        AccessPath::IndexRange {
            field: access("due")
        }
    );
    assert_eq!(
        range.to_string(),
        "index range on due, 1 residual filter, sorted by index"
    );

    let prefix = plan_of(
        &table,
        Query::new()
            .filter(Filter::prefix("title", "b"))
            .filter(Filter::gt("due", 1)),
    );
    assert_eq!(
        prefix.access,
        AccessPath::IndexPrefix {
            field: access("title")
        }
    );
    assert_eq!(prefix.residual_filters, 1);

    let order = plan_of(
        &table,
        Query::new()
            .filter(Filter::gt("score", 1))
            .order_by("due", Direction::Desc)
            .limit(20),
    );
    assert_eq!(
        order.access,
        AccessPath::IndexOrder {
            field: access("due")
        }
    );
    assert_eq!(
        order.to_string(),
        "index order on due, 1 residual filter, sorted by index"
    );

    let scan = plan_of(
        &table,
        Query::new()
            .filter(Filter::gt("score", 1))
            .filter(Filter::ne("owner", "u1")),
    );
    assert_eq!(scan.access, AccessPath::FullScan);
    assert_eq!(
        scan.to_string(),
        "full scan, 2 residual filters, sorted in memory"
    );

    let unindexed = plan_of(
        &todos(false),
        Query::new()
            .filter(Filter::eq("owner", "u1"))
            .order_by("due", Direction::Asc),
    );
    assert_eq!(unindexed.access, AccessPath::FullScan);
}

#[test]
fn explain_prefers_lookup_then_prefix_then_range_then_order() {
    let table = todos(true);
    let all = Query::new()
        .filter(Filter::gt("due", 1))
        .filter(Filter::prefix("title", "b"))
        .filter(Filter::eq("owner", "u1"))
        .order_by("due", Direction::Asc);
    assert_eq!(
        plan_of(&table, all.clone()).access,
        AccessPath::IndexLookup {
            field: access("owner"),
            keys: 1
        }
    );
    let mut no_lookup = all.clone();
    no_lookup.filters.pop();
    assert_eq!(
        plan_of(&table, no_lookup.clone()).access,
        AccessPath::IndexPrefix {
            field: access("title")
        }
    );
    no_lookup.filters.pop();
    assert_eq!(
        plan_of(&table, no_lookup).access,
        AccessPath::IndexRange {
            field: access("due")
        }
    );

    // Between two lookups, the one on the order-by field spares the sort.
    let two = Query::new()
        .filter(Filter::eq("owner", "u1"))
        .filter(Filter::is_in("due", [10, 30]))
        .order_by("due", Direction::Desc);
    let plan = plan_of(&table, two.clone());
    assert_eq!(
        plan.access,
        AccessPath::IndexLookup {
            field: access("due"),
            keys: 2
        }
    );
    assert!(!plan.sorted_in_memory);
    assert_eq!(table.ids(&two), ["f", "a"]);
}

#[test]
fn schema_mismatches_are_errors_that_name_the_field() {
    let table = todos(true);
    let run = |query: Query| execute(&table, &query).expect_err("refused");
    let unknown = run(Query::new().filter(Filter::eq("colour", "red")));
    assert_eq!(
        unknown,
        QueryError::UnknownField {
            table: "todos".into(),
            field: "colour".into()
        }
    );
    assert_eq!(
        unknown.to_string(),
        "table todos has no field colour; use one of the fields of its schema"
    );
    assert!(matches!(
        run(Query::new().order_by("colour", Direction::Asc)),
        QueryError::UnknownField { .. }
    ));

    let mismatch = run(Query::new().filter(Filter::eq("due", "soon")));
    assert_eq!(
        mismatch.to_string(),
        "filter on todos.due expects integer, found string; pass a value of type integer"
    );
    assert!(matches!(
        run(Query::new().filter(Filter::lt("due", 2.5))),
        QueryError::TypeMismatch { .. }
    ));
    assert!(matches!(
        run(Query::new().filter(Filter::is_in("done", [Value::Bool(true), Value::Int(1)]))),
        QueryError::TypeMismatch { .. }
    ));

    let prefix = run(Query::new().filter(Filter::prefix("due", "1")));
    assert_eq!(
        prefix,
        QueryError::PrefixOnNonString {
            table: "todos".into(),
            field: "due".into(),
            kind: FieldType::Integer
        }
    );
    assert!(prefix.to_string().contains("use a range filter"));
    assert!(explain(&table, &Query::new().filter(Filter::prefix("score", "1"))).is_err());
}

#[test]
fn page_tokens_round_trip_every_value_and_reject_garbage() {
    let values = [
        Value::Null,
        Value::Bool(true),
        Value::Int(-7),
        Value::Float(f64::NAN),
        Value::Float(-0.0),
        Value::str("héllo/+="),
        Value::Timestamp(1_700_000_000_000),
        Value::bytes(vec![0, 255]),
        Value::Counter(3),
        Value::List(vec![Value::Int(1), Value::str("x")].into_boxed_slice()),
        Value::Map(Box::new(BTreeMap::from([(
            "k".to_owned(),
            Value::Float(0.5),
        )]))),
    ];
    for value in values {
        let token = PageToken {
            value,
            id: "r1".into(),
        };
        let encoded = token.encode();
        assert!(
            encoded
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_')
        );
        let decoded = PageToken::decode(&encoded).expect("round trip");
        assert_eq!(decoded, token);
        assert_eq!(
            format!("{:?}", decoded.value),
            format!("{:?}", token.value),
            "bit-exact"
        );
    }
    for garbage in [
        "",
        "!!!",
        "bm90IGpzb24",
        &URL_SAFE_NO_PAD.encode(r#"{"v":"Q","i":"x"}"#),
    ] {
        let error = PageToken::decode(garbage).expect_err("garbage");
        assert!(
            matches!(error, QueryError::BadPageToken { .. }),
            "{garbage:?}"
        );
        assert!(error.to_string().starts_with("bad page token ("), "{error}");
    }
}

#[test]
fn queries_travel_as_json_with_opaque_tokens() {
    let token = PageToken {
        value: Value::Int(20),
        id: "b".into(),
    };
    let query = Query::new()
        .filter(Filter::eq("owner", "u1"))
        .order_by("due", Direction::Desc)
        .limit(5)
        .after(token.clone());
    let json = serde_json::to_value(&query).expect("serialises");
    assert_eq!(json["after"], serde_json::Value::String(token.encode()));
    assert_eq!(json["order_by"], serde_json::json!(["due", "desc"]));
    let back: Query = serde_json::from_value(json).expect("deserialises");
    assert_eq!(back, query);
    let minimal: Query = serde_json::from_str("{}").expect("defaults");
    assert_eq!(minimal, Query::new());
    assert!(serde_json::from_str::<Query>(r#"{"after": "!!"}"#).is_err());
}

#[test]
fn prefix_bounds_rely_on_strings_ranking_just_below_bytes() {
    assert!(Value::str("\u{10FFFF}\u{10FFFF}") < Value::bytes(Vec::new()));
    assert!(Value::Counter(i64::MAX) < Value::str(""));
}

//! Random values for property tests (the `quickcheck` feature).
//!
//! Property-test suites of applications built on MobileSyncDB can generate field
//! values of every kind, nested lists and maps included, with
//! `Value::arbitrary(&mut gen)`.

use quickcheck::{Arbitrary, Gen};

use crate::value::Value;

/// How deep generated lists and maps nest.
const MAX_DEPTH: u8 = 2;

impl Arbitrary for Value {
    fn arbitrary(rng: &mut Gen) -> Value {
        value(rng, MAX_DEPTH)
    }
}

fn value(rng: &mut Gen, depth: u8) -> Value {
    let kinds = if depth == 0 { 8 } else { 10 };
    match u8::arbitrary(rng) % kinds {
        0 => Value::Null,
        1 => Value::Bool(bool::arbitrary(rng)),
        2 => Value::Int(i64::arbitrary(rng)),
        3 => Value::Float(f64::arbitrary(rng)),
        4 => Value::str(String::arbitrary(rng)),
        5 => Value::Timestamp(i64::arbitrary(rng)),
        6 => Value::bytes(Vec::<u8>::arbitrary(rng)),
        7 => Value::Counter(i64::arbitrary(rng)),
        8 => Value::List(
            (0..u8::arbitrary(rng) % 4)
                .map(|_| value(rng, depth - 1))
                .collect(),
        ),
        _ => Value::Map(Box::new(
            (0..u8::arbitrary(rng) % 4)
                .map(|_| (String::arbitrary(rng), value(rng, depth - 1)))
                .collect(),
        )),
    }
}

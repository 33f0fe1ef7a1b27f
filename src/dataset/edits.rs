//! Realistic edits to a generated data set, for incremental-sync and update
//! benchmarks.

use std::collections::BTreeMap;

use mobilesyncdb_crdt::Value;

use super::dice::Dice;
use super::rows::{DAY_MS, MINUTE_MS, due_after, tags};
use super::tables::Kind;
use super::{Dataset, EditSpec, Fields, TableData, text, words};

/// The tables users edit, with how often: todos and chats change most, the
/// address book sometimes. GPS points, readings and thumbnails are append-only.
const EDITED: [(Kind, usize); 3] = [
    (Kind::Todos, 40),
    (Kind::Messages, 40),
    (Kind::Contacts, 20),
];

/// `count` edits spread uniformly over the editable rows of `dataset` (fewer only
/// if rows were changed to lack their primary key). A record
/// edited twice sees its first edit: a second reaction counts on from the first,
/// and `updated_at` only moves forward.
pub fn random_edits(dataset: &Dataset, seed: u64, count: usize) -> Vec<EditSpec> {
    let mut dice = Dice::new(seed);
    let editable: Vec<(&TableData, Kind, usize)> = EDITED
        .iter()
        .filter_map(|&(kind, weight)| {
            let table = dataset.table(kind.name())?;
            (!table.rows.is_empty()).then_some((table, kind, weight))
        })
        .collect();
    let total_weight: usize = editable.iter().map(|&(_, _, weight)| weight).sum();
    if total_weight == 0 {
        return Vec::new();
    }
    // The fields changed so far, by table and row.
    let mut changed: BTreeMap<(usize, usize), Fields> = BTreeMap::new();
    let mut edits = Vec::with_capacity(count);
    for _ in 0..count {
        let (table, kind) = choose_table(&mut dice, &editable, total_weight);
        let index = dice.below(table.rows.len());
        let Some(Value::Str(id)) = table.rows[index].get(&table.schema.primary_key) else {
            // Generated rows always have their key; if a caller removed one, that
            // edit is skipped (looping until `count` could then never end).
            continue;
        };
        let mut current = table.rows[index].clone();
        let earlier = changed.entry((kind.index(), index)).or_default();
        current.extend(
            earlier
                .iter()
                .map(|(name, value)| (name.clone(), value.clone())),
        );
        let fields = match kind {
            Kind::Todos => edit_todo(&mut dice, &current),
            Kind::Messages => edit_message(&mut dice, &current),
            _ => edit_contact(&mut dice, &current),
        };
        earlier.extend(
            fields
                .iter()
                .map(|(name, value)| (name.clone(), value.clone())),
        );
        edits.push(EditSpec {
            table: kind.name().to_owned(),
            id: id.to_string(),
            fields,
        });
    }
    edits
}

/// A table drawn by weight.
fn choose_table<'a>(
    dice: &mut Dice,
    editable: &[(&'a TableData, Kind, usize)],
    total_weight: usize,
) -> (&'a TableData, Kind) {
    let mut roll = dice.below(total_weight);
    for &(table, kind, weight) in editable {
        if roll < weight {
            return (table, kind);
        }
        roll -= weight;
    }
    // The rolls add up to `total_weight`, so the loop always returns; this is the
    // last table for the compiler's sake.
    let &(table, kind, _) = &editable[editable.len() - 1];
    (table, kind)
}

fn timestamp(row: &Fields, name: &str) -> Option<i64> {
    match row.get(name) {
        Some(Value::Timestamp(at)) => Some(*at),
        _ => None,
    }
}

/// A new `updated_at`: a minute to two weeks after the row's last change.
fn touched(dice: &mut Dice, row: &Fields) -> Value {
    let last = timestamp(row, "updated_at").unwrap_or(super::rows::START_MS);
    Value::Timestamp(last + dice.int(MINUTE_MS, 14 * DAY_MS))
}

/// Mostly ticking a todo off; sometimes a new title, priority, due date, tags or
/// notes.
fn edit_todo(dice: &mut Dice, row: &Fields) -> Fields {
    let mut fields = Fields::new();
    let (name, value) = match dice.below(100) {
        0..=39 => (
            "done",
            Value::Bool(!matches!(row.get("done"), Some(Value::Bool(true)))),
        ),
        40..=54 => ("title", Value::from(text::todo_title(dice))),
        55..=64 => ("priority", Value::Int(dice.int(0, 4))),
        65..=79 => {
            let from = timestamp(row, "due")
                .or_else(|| timestamp(row, "updated_at"))
                .unwrap_or(super::rows::START_MS);
            ("due", Value::Timestamp(due_after(dice, from)))
        }
        80..=89 => ("tags", tags(dice)),
        _ => ("notes", Value::from(text::todo_note(dice))),
    };
    fields.insert(name.to_owned(), value);
    fields.insert("updated_at".to_owned(), touched(dice, row));
    fields
}

/// Mostly a new reaction (the counter's new total); sometimes a corrected body.
fn edit_message(dice: &mut Dice, row: &Fields) -> Fields {
    let mut fields = Fields::new();
    if dice.chance(0.7) {
        let reactions = match row.get("reactions") {
            Some(Value::Counter(count)) => *count,
            _ => 0,
        };
        fields.insert("reactions".to_owned(), Value::Counter(reactions + 1));
    } else {
        fields.insert("body".to_owned(), Value::from(text::message_body(dice)));
        fields.insert("edited".to_owned(), Value::Bool(true));
    }
    fields
}

/// A new phone number, e-mail address or employer, or a (un)starred contact.
fn edit_contact(dice: &mut Dice, row: &Fields) -> Fields {
    let mut fields = Fields::new();
    let (name, value) = match dice.below(100) {
        0..=39 => ("phone", Value::from(text::phone(dice))),
        40..=59 => (
            "favourite",
            Value::Bool(!matches!(row.get("favourite"), Some(Value::Bool(true)))),
        ),
        60..=84 => {
            let name = match row.get("name") {
                Some(Value::Str(name)) => name.as_ref(),
                _ => "",
            };
            let (first, last) = name.split_once(' ').unwrap_or((name, ""));
            ("email", Value::from(text::email(dice, first, last)))
        }
        _ => ("company", Value::from(dice.pick(words::COMPANIES))),
    };
    fields.insert(name.to_owned(), value);
    fields.insert("updated_at".to_owned(), touched(dice, row));
    fields
}

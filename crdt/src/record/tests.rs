use automerge::transaction::Transactable;

use super::*;
use crate::policy::{Manual, Sum};

fn actor(name: &str) -> ActorId {
    ActorId::from(name.as_bytes().to_vec())
}

fn meta(at_ms: u64, writer: &str) -> StampMeta {
    StampMeta::new(Stamp::at(at_ms), writer)
}

/// Two replicas of one record that each write `field` without seeing the other.
fn concurrent(field: &str, left: Value, right: Value) -> Record {
    let mut base = Record::new(actor("server"));
    base.write(&[Edit::set("title", "x")], &meta(1, "server"))
        .expect("create");
    let mut phone = Record::load(&base.save()).expect("load");
    phone.set_actor(actor("phone"));
    phone
        .write(&[Edit::set(field, left)], &meta(10, "phone"))
        .expect("phone");
    base.write(&[Edit::set(field, right)], &meta(20, "tablet"))
        .expect("tablet");
    base.apply_changes(phone.changes_since(&[])).expect("merge");
    base
}

#[test]
fn concurrent_writes_keep_both_values_with_their_stamps() {
    let record = concurrent("status", Value::str("done"), Value::str("open"));
    assert!(record.has_conflict("status"));
    assert!(!record.has_conflict("title"));
    let conflict = record.conflict_set("status").expect("read");
    let summary: Vec<_> = conflict
        .candidates()
        .iter()
        .map(|candidate| {
            (
                candidate.value.clone(),
                candidate.stamp,
                candidate.writer.clone(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (
                Value::str("done"),
                Some(Stamp::at(10)),
                Some(ClientId::from("phone"))
            ),
            (
                Value::str("open"),
                Some(Stamp::at(20)),
                Some(ClientId::from("tablet"))
            ),
        ]
    );
    assert_eq!(
        record.resolve("status", &Sum).expect("resolve").value,
        Value::str("open")
    );
    assert!(record.resolve("status", &Manual).expect("resolve").open);
}

#[test]
fn a_later_write_that_saw_the_conflict_settles_it() {
    let mut record = concurrent("status", Value::str("done"), Value::str("open"));
    record
        .write(&[Edit::set("status", "archived")], &meta(5, "admin"))
        .expect("write");
    let conflict = record.conflict_set("status").expect("read");
    assert!(!conflict.is_conflict());
    assert!(!record.has_conflict("status"));
    assert_eq!(conflict.candidates()[0].value, Value::str("archived"));
}

#[test]
fn unset_meets_a_concurrent_set_in_one_conflict_set() {
    let mut base = Record::new(actor("server"));
    base.write(&[Edit::set("note", "hello")], &meta(1, "server"))
        .expect("create");
    let mut phone = Record::load(&base.save()).expect("load");
    phone.set_actor(actor("phone"));
    phone
        .write(&[Edit::unset("note")], &meta(30, "phone"))
        .expect("unset");
    base.write(&[Edit::set("note", "hello there")], &meta(20, "tablet"))
        .expect("set");
    base.apply_changes(phone.changes_since(&[])).expect("merge");
    assert_eq!(
        base.conflict_set("note").expect("read").candidates().len(),
        2
    );
    assert_eq!(
        base.resolve("note", &LastWriterWins)
            .expect("resolve")
            .value,
        Value::Null
    );
}

#[test]
fn writing_the_same_value_again_makes_no_change() {
    let mut record = Record::new(actor("server"));
    record
        .write(&[Edit::set("n", 1_i64)], &meta(1, "s"))
        .expect("first");
    assert!(
        record
            .write(&[Edit::set("n", 1_i64)], &meta(2, "s"))
            .expect("again")
            .is_none()
    );
}

#[test]
fn delete_is_a_tombstone_that_a_revive_clears() {
    let mut record = Record::new(actor("server"));
    record
        .write(&[Edit::set("title", "t")], &meta(1, "s"))
        .expect("create");
    assert!(!record.is_deleted());
    record.delete(&meta(2, "s")).expect("delete");
    assert!(record.is_deleted());
    assert!(record.delete(&meta(3, "s")).expect("again").is_none());
    record
        .revive(&[Edit::set("title", "back")], &meta(4, "s"))
        .expect("revive");
    assert!(!record.is_deleted());
    assert_eq!(record.field_names(), vec!["title".to_owned()]);
}

#[test]
fn counters_merge_increments_and_refuse_non_counters() {
    let mut base = Record::new(actor("server"));
    base.write(
        &[Edit::set("likes", Value::Counter(0)), Edit::set("n", 1_i64)],
        &meta(1, "s"),
    )
    .expect("create");
    let mut phone = Record::load(&base.save()).expect("load");
    phone.set_actor(actor("phone"));
    phone
        .write(&[Edit::increment("likes", 2)], &meta(2, "p"))
        .expect("phone");
    base.write(&[Edit::increment("likes", 3)], &meta(2, "s"))
        .expect("server");
    base.apply_changes(phone.changes_since(&[])).expect("merge");
    assert_eq!(
        base.resolve("likes", &LastWriterWins).expect("read").value,
        Value::Counter(5)
    );
    let error = base
        .write(&[Edit::increment("n", 1)], &meta(3, "s"))
        .expect_err("not a counter");
    assert!(matches!(error, RecordError::NotACounter { field } if field == "n"));
}

#[test]
fn a_failed_edit_rolls_back_the_whole_write() {
    let mut record = Record::new(actor("server"));
    record
        .write(&[Edit::set("n", 1_i64)], &meta(1, "s"))
        .expect("create");
    let heads = record.heads();
    let edits = [Edit::set("title", "half"), Edit::increment("n", 1)];
    assert!(record.write(&edits, &meta(2, "s")).is_err());
    assert_eq!(record.heads(), heads);
    assert_eq!(
        record
            .resolve("title", &LastWriterWins)
            .expect("read")
            .value,
        Value::Null
    );
}

#[test]
fn reserved_fields_are_refused() {
    let mut record = Record::new(actor("server"));
    let error = record
        .write(&[Edit::set("_deleted", false)], &meta(1, "s"))
        .expect_err("reserved");
    assert!(matches!(error, RecordError::ReservedField { .. }));
}

#[test]
fn garbage_bytes_do_not_load() {
    assert!(matches!(
        Record::load(b"not automerge"),
        Err(RecordError::Load(_))
    ));
}

#[test]
fn plain_automerge_writes_read_as_unstamped_values_and_text_as_strings() {
    let mut doc = Automerge::new().with_actor(actor("js-client"));
    let mut transaction = doc.transaction();
    let text = transaction
        .put_object(ROOT, "title", ObjType::Text)
        .expect("text");
    transaction
        .splice_text(&text, 0, 0, "from javascript")
        .expect("splice");
    transaction.put(ROOT, "count", 2.0).expect("float");
    transaction.commit();
    let record = Record::load(&doc.save()).expect("load");
    let conflict = record.conflict_set("title").expect("read");
    assert_eq!(
        conflict.candidates()[0].value,
        Value::str("from javascript")
    );
    assert_eq!(conflict.candidates()[0].stamp, None);
    assert_eq!(conflict.candidates()[0].writer, None);
}

#[test]
fn stamp_messages_round_trip_and_foreign_messages_are_ignored() {
    let original = StampMeta::new(
        Stamp {
            physical_ms: 1_700_000_000_000,
            logical: 3,
        },
        "phone 7",
    );
    let parsed = StampMeta::parse(1_700_000_000_000, Some(&original.message()));
    assert_eq!(parsed, Some(original));
    assert_eq!(StampMeta::parse(5, Some("fixed a typo")), None);
    assert_eq!(StampMeta::parse(-5, Some("msdb1 0 phone")), None);
    assert_eq!(StampMeta::parse(5, Some("msdb1 x phone")), None);
    assert_eq!(StampMeta::parse(5, None), None);
}

#[test]
fn version_vectors_detect_concurrent_histories() {
    let mut base = Record::new(actor("server"));
    base.write(&[Edit::set("a", 1_i64)], &meta(1, "s"))
        .expect("create");
    let mut phone = Record::load(&base.save()).expect("load");
    phone.set_actor(actor("phone"));
    assert_eq!(
        phone.version_vector().compare(&base.version_vector()),
        crate::Causality::Equal
    );
    phone
        .write(&[Edit::set("a", 2_i64)], &meta(2, "p"))
        .expect("phone");
    assert_eq!(
        base.version_vector().compare(&phone.version_vector()),
        crate::Causality::Before
    );
    base.write(&[Edit::set("a", 3_i64)], &meta(2, "s"))
        .expect("server");
    assert_eq!(
        base.version_vector().compare(&phone.version_vector()),
        crate::Causality::Concurrent
    );
}

#[test]
fn merge_reports_new_changes_duplicates_and_concurrency() {
    let mut server = Record::new(actor("server"));
    server
        .write(&[Edit::set("a", 1_i64)], &meta(1, "s"))
        .expect("create");
    let mut phone = Record::load(&server.save()).expect("load");
    phone.set_actor(actor("phone"));
    phone
        .write(&[Edit::set("a", 2_i64)], &meta(2, "p"))
        .expect("phone");
    let report = server.merge(phone.changes_since(&[])).expect("merge");
    assert_eq!(report.applied.len(), 1);
    assert_eq!(report.duplicates, 1);
    assert_eq!(report.causality, crate::Causality::Before);
    phone
        .write(&[Edit::set("a", 3_i64)], &meta(3, "p"))
        .expect("phone again");
    server
        .write(&[Edit::set("a", 4_i64)], &meta(3, "s"))
        .expect("server again");
    let report = server.merge(phone.changes_since(&[])).expect("merge");
    assert_eq!(report.causality, crate::Causality::Concurrent);
    let again = server.merge(phone.changes_since(&[])).expect("merge");
    assert!(again.applied.is_empty());
}

/// Two changes by one writer, the second depending on the first.
fn two_linear_changes() -> Vec<Change> {
    let mut origin = Record::new(actor("server"));
    for value in [1_i64, 2] {
        let written = origin.write(&[Edit::set("a", value)], &meta(value as u64, "s"));
        written.expect("write");
    }
    origin.changes_since(&[])
}

#[test]
fn merge_refuses_a_batch_with_missing_dependencies() {
    let changes = two_linear_changes();
    let mut replica = Record::new(actor("replica"));
    let error = replica
        .merge(vec![changes[1].clone()])
        .expect_err("missing");
    assert!(matches!(
        error,
        RecordError::MissingDependencies { missing: 1 }
    ));
    assert!(replica.is_empty());
}

#[test]
fn changes_with_missing_dependencies_wait() {
    let changes = two_linear_changes();
    let mut replica = Record::new(actor("replica"));
    replica
        .apply_changes(vec![changes[1].clone()])
        .expect("queued");
    assert_eq!(replica.missing_deps(), vec![changes[0].hash()]);
    replica
        .apply_changes(vec![changes[0].clone()])
        .expect("complete");
    assert!(replica.missing_deps().is_empty());
    assert_eq!(
        replica.resolve("a", &LastWriterWins).expect("read").value,
        Value::Int(2)
    );
}

#[test]
fn a_write_at_old_heads_is_concurrent_with_later_writes() {
    let mut record = Record::new(actor("server"));
    record
        .write(&[Edit::set("title", "draft")], &meta(1, "server"))
        .expect("create");
    let base = record.heads();
    record
        .write(&[Edit::set("title", "final")], &meta(2, "tablet"))
        .expect("later write");
    record
        .write_at(
            &base,
            &[Edit::set("title", "edited offline")],
            &meta(3, "phone"),
        )
        .expect("write at base");
    assert!(record.has_conflict("title"));
    let shown = record.resolve("title", &LastWriterWins).expect("resolve");
    assert_eq!(shown.value, Value::str("edited offline"));
}

#[test]
fn a_write_at_unknown_heads_is_refused_and_changes_nothing() {
    let mut record = Record::new(actor("server"));
    record
        .write(&[Edit::set("title", "draft")], &meta(1, "server"))
        .expect("create");
    let mut other = Record::new(actor("other"));
    other
        .write(&[Edit::set("title", "x")], &meta(1, "other"))
        .expect("other");
    let heads = record.heads();
    let refused = record.write_at(&other.heads(), &[Edit::set("title", "y")], &meta(2, "p"));
    assert!(matches!(refused, Err(RecordError::UnknownHeads { .. })));
    assert_eq!(record.heads(), heads);
}

//! Which fields a payload's change chunks write: the server sends only those of
//! a record the client holds. Read from the chunks' operation columns without
//! automerge, as the change columns read them.

use crate::sync::batch::chunk::{read_change, read_chunk_ops, split_chunks};

/// What a run of change chunks writes to a record's fields.
#[derive(Debug)]
pub(super) struct OpsSummary {
    /// Fields written (bit per schema field, least significant first).
    pub(super) touched: Vec<u8>,
    /// Something besides plain root fields was written (nested values, the
    /// tombstone): the whole row must be sent.
    pub(super) opaque: bool,
}

/// Reads a payload of concatenated change chunks; `None` when it is not one (a
/// saved document, or bytes that are not automerge storage).
/// `position` gives the field of a document key, among `width` fields.
pub(super) fn read_payload(
    payload: &[u8],
    position: &dyn Fn(&str) -> Option<usize>,
    width: usize,
) -> Option<OpsSummary> {
    let mut summary = OpsSummary {
        touched: vec![0_u8; width.div_ceil(8).max(1)],
        opaque: false,
    };
    for chunk in split_chunks(payload)? {
        let layout = read_change(chunk).filter(|layout| layout.len == chunk.len())?;
        // The chunk is the server's own, checked when it was stored.
        let ops = read_chunk_ops(chunk, &layout, usize::MAX)?;
        for key in ops.keys {
            let Some(key) = key else {
                summary.opaque = true;
                continue;
            };
            match position(key) {
                Some(position) => summary.touched[position / 8] |= 1 << (position % 8),
                None => summary.opaque |= key.starts_with('_'),
            }
        }
    }
    Some(summary)
}

#[cfg(test)]
mod tests {
    use mobilesyncdb_crdt::{ActorId, Edit, Record, Stamp, StampMeta, Value};

    use super::*;

    const KEYS: [&str; 3] = ["title", "due", "likes"];

    fn read(payload: &[u8]) -> Option<OpsSummary> {
        read_payload(
            payload,
            &|key| KEYS.iter().position(|known| *known == key),
            KEYS.len(),
        )
    }

    fn changes() -> Vec<Vec<u8>> {
        let mut record = Record::new(ActorId::random());
        let meta = StampMeta::new(Stamp::at(1), "w");
        let first = record
            .write(
                &[
                    Edit::set("title", "a"),
                    Edit::set("due", Value::Timestamp(5)),
                    Edit::set("likes", Value::Counter(0)),
                ],
                &meta,
            )
            .unwrap()
            .unwrap();
        let second = record
            .write(
                &[Edit::set("title", "b"), Edit::increment("likes", 2)],
                &meta,
            )
            .unwrap()
            .unwrap();
        vec![first.raw_bytes().to_vec(), second.raw_bytes().to_vec()]
    }

    #[test]
    fn the_fields_the_changes_write_are_touched() {
        let summary = read(&changes().concat()).unwrap();
        assert_eq!(summary.touched, [0b111]);
        assert!(!summary.opaque);
        let second = &changes()[1];
        let summary = read(second).unwrap();
        assert_eq!(summary.touched, [0b101]);
    }

    #[test]
    fn a_tombstone_makes_the_payload_opaque_and_bad_bytes_unreadable() {
        let mut record = Record::new(ActorId::random());
        let meta = StampMeta::new(Stamp::at(1), "w");
        record.write(&[Edit::set("title", "a")], &meta).unwrap();
        let change = record.delete(&meta).unwrap().unwrap();
        let summary = read(change.raw_bytes()).unwrap();
        assert!(summary.opaque);
        let payload = changes().concat();
        assert!(read(&payload[..payload.len() - 1]).is_none());
    }
}

//! A write as it travels on the stream: MessagePack (an array per struct),
//! with the node that took it and the ticket its writer waits on.

use mobilesyncdb_crdt::{Causality, Change, ChangeHash, ClientId, Stamp};
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use crate::engine::{SequencedWrite, Shown};

/// The message body's format version.
const VERSION: u8 = 1;

/// A write on the stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireWrite {
    pub v: u8,
    /// The node that took the write: only it makes the write's webhook
    /// events, and answers its writer.
    pub node: String,
    /// The ticket the write's writer waits on, with the run of the node that
    /// gave it (drawn at random each time a node joins, so that a ticket of
    /// an earlier run is never taken for one of this run).
    pub ticket: Option<Ticket>,
    pub table: String,
    pub id: String,
    pub origin: String,
    pub changes: Vec<ByteBuf>,
    /// What the write shows once stored (see [`Shown`]); absent for writes
    /// every node merges. A node that cannot read it merges.
    #[serde(default)]
    pub shown: Option<WireShown>,
}

/// A writer's ticket: the run of the node that gave it, and its number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ticket {
    pub run: u64,
    pub number: u64,
}

/// A write read from the stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Received {
    pub node: String,
    pub ticket: Option<Ticket>,
    pub write: SequencedWrite,
}

/// [`Shown`] on the stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireShown {
    /// Change hashes, 32 bytes each.
    pub base: Vec<ByteBuf>,
    pub hash: ByteBuf,
    /// Physical milliseconds and logical counter of each change's stamp.
    pub stamps: Vec<(u64, u32)>,
    pub row: ByteBuf,
    pub deleted: bool,
    pub layout: u64,
    /// 0 equal, 1 before, 2 after, 3 concurrent.
    pub causality: u8,
}

impl WireShown {
    fn of(shown: &Shown) -> WireShown {
        WireShown {
            base: shown
                .base
                .iter()
                .map(|hash| ByteBuf::from(hash.0.to_vec()))
                .collect(),
            hash: ByteBuf::from(shown.hash.0.to_vec()),
            stamps: shown
                .stamps
                .iter()
                .map(|stamp| (stamp.physical_ms, stamp.logical))
                .collect(),
            row: ByteBuf::from(shown.row.clone()),
            deleted: shown.deleted,
            layout: shown.layout,
            causality: match shown.causality {
                Causality::Equal => 0,
                Causality::Before => 1,
                Causality::After => 2,
                Causality::Concurrent => 3,
            },
        }
    }

    /// `None` when malformed: the write is then merged, as one without.
    fn read(self) -> Option<Shown> {
        let hash = |bytes: &ByteBuf| ChangeHash::try_from(bytes.as_slice()).ok();
        Some(Shown {
            base: self.base.iter().map(hash).collect::<Option<_>>()?,
            hash: hash(&self.hash)?,
            stamps: self
                .stamps
                .into_iter()
                .map(|(physical_ms, logical)| Stamp {
                    physical_ms,
                    logical,
                })
                .collect(),
            row: self.row.into_vec(),
            deleted: self.deleted,
            layout: self.layout,
            causality: match self.causality {
                0 => Causality::Equal,
                1 => Causality::Before,
                2 => Causality::After,
                3 => Causality::Concurrent,
                _ => return None,
            },
        })
    }
}

impl WireWrite {
    /// The body of `write`, taken by `node`, whose writer waits on `ticket`.
    pub fn encode(write: &SequencedWrite, node: &str, ticket: Option<Ticket>) -> Vec<u8> {
        let wire = WireWrite {
            v: VERSION,
            node: node.to_owned(),
            ticket,
            table: write.table.clone(),
            id: write.id.clone(),
            origin: write.origin.as_str().to_owned(),
            changes: write
                .changes
                .iter()
                .map(|change| ByteBuf::from(change.clone()))
                .collect(),
            shown: write.shown.as_ref().map(WireShown::of),
        };
        // A struct of strings and byte strings always encodes.
        rmp_serde::to_vec(&wire).unwrap_or_default()
    }

    /// The write a body holds.
    ///
    /// # Errors
    ///
    /// A description of what is wrong with the body.
    pub fn decode(body: &[u8]) -> Result<Received, String> {
        let wire: WireWrite =
            rmp_serde::from_slice(body).map_err(|error| format!("not a write: {error}"))?;
        if wire.v != VERSION {
            return Err(format!("write format {} is not {VERSION}", wire.v));
        }
        Ok(Received {
            node: wire.node,
            ticket: wire.ticket,
            write: SequencedWrite {
                table: wire.table,
                id: wire.id,
                origin: ClientId::from(wire.origin.as_str()),
                changes: wire.changes.into_iter().map(ByteBuf::into_vec).collect(),
                shown: wire.shown.and_then(WireShown::read),
            },
        })
    }
}

/// The origin of changes anti-entropy puts back on the stream.
pub(crate) const REPAIR_ORIGIN: &str = "anti-entropy";

/// The message id of a write: its last change's hash, so that the stream
/// stores a write published twice (a retry, or the same changes pushed to
/// two nodes) once within its duplicate window. A repair has none: the
/// stream may remember the id of the very message that was lost.
pub(crate) fn message_id(write: &SequencedWrite) -> Option<String> {
    if write.origin.as_str() == REPAIR_ORIGIN {
        return None;
    }
    if let Some(shown) = &write.shown {
        return Some(shown.hash.to_string());
    }
    let hash = write
        .changes
        .last()
        .and_then(|bytes| Change::from_bytes(bytes.clone()).ok())
        .map(|change| change.hash().to_string());
    Some(hash.unwrap_or_else(|| format!("{}/{}", write.table, write.id)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use mobilesyncdb_crdt::{Edit, Record, StampMeta, Value};

    fn change() -> Change {
        let mut record = Record::new(mobilesyncdb_crdt::ActorId::random());
        let meta = StampMeta::new(Stamp::at(1_000), ClientId::from("phone"));
        record
            .write(&[Edit::set("title", Value::from("milk"))], &meta)
            .ok()
            .flatten()
            .expect("a change")
    }

    fn write(change: &Change) -> SequencedWrite {
        SequencedWrite {
            table: "todos".into(),
            id: "t1".into(),
            origin: ClientId::from("phone"),
            changes: vec![change.raw_bytes().to_vec()],
            shown: None,
        }
    }

    #[test]
    fn a_write_comes_back_as_it_went() {
        let change = change();
        let write = write(&change);
        let ticket = Ticket { run: 7, number: 42 };
        let body = WireWrite::encode(&write, "node-a", Some(ticket));
        let received = Received {
            node: "node-a".to_owned(),
            ticket: Some(ticket),
            write: write.clone(),
        };
        assert_eq!(WireWrite::decode(&body), Ok(received));
        let id = message_id(&write).unwrap_or_default();
        assert_eq!(id, change.hash().to_string(), "the change's hash");
        let repair = SequencedWrite {
            origin: ClientId::from(REPAIR_ORIGIN),
            ..write
        };
        assert_eq!(message_id(&repair), None);
    }

    #[test]
    fn what_a_write_shows_comes_back_as_it_went() {
        let change = change();
        let shown = Shown {
            base: change.deps().to_vec(),
            hash: change.hash(),
            stamps: vec![Stamp {
                physical_ms: 1_000,
                logical: 7,
            }],
            row: vec![5, 2, b'h', b'i'],
            deleted: false,
            layout: 0xfeed,
            causality: Causality::Concurrent,
        };
        let write = SequencedWrite {
            shown: Some(shown),
            ..write(&change)
        };
        let body = WireWrite::encode(&write, "node-a", None);
        let received = WireWrite::decode(&body).expect("a write");
        assert_eq!((received.write, received.ticket), (write.clone(), None));
        assert_eq!(message_id(&write), Some(change.hash().to_string()));

        // A body whose `shown` is malformed is still the write, merged.
        let mut wire: WireWrite = rmp_serde::from_slice(&body).expect("a body");
        if let Some(shown) = wire.shown.as_mut() {
            shown.hash = ByteBuf::from(vec![1, 2, 3]);
        }
        let body = rmp_serde::to_vec(&wire).expect("encodes");
        let decoded = WireWrite::decode(&body).expect("a write").write;
        assert_eq!(decoded.shown, None);
        assert_eq!(decoded.changes, write.changes);

        // Bodies written with field names read the same.
        let named = rmp_serde::to_vec_named(&wire).expect("encodes");
        assert_eq!(WireWrite::decode(&named).expect("a write").write, decoded);
    }

    #[test]
    fn a_body_that_is_not_a_write_is_refused_with_a_reason() {
        let refused = WireWrite::decode(b"\x01\x02").unwrap_err();
        assert!(refused.starts_with("not a write"), "{refused}");
        let mut wire = WireWrite {
            v: 9,
            node: String::new(),
            ticket: None,
            table: String::new(),
            id: String::new(),
            origin: String::new(),
            changes: Vec::new(),
            shown: None,
        };
        let body = rmp_serde::to_vec_named(&wire).unwrap_or_default();
        assert_eq!(
            WireWrite::decode(&body).unwrap_err(),
            "write format 9 is not 1"
        );
        wire.v = VERSION;
        assert!(WireWrite::decode(&rmp_serde::to_vec_named(&wire).unwrap_or_default()).is_ok());
    }
}

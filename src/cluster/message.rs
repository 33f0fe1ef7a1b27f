//! Writes as they travel on the stream: MessagePack (an array per struct).
//!
//! A message holds the writes one node published together: one when writes
//! come one at a time, several when they queue up behind the publisher (the
//! stream then stores, and every node reads, one message for all of them).

use mobilesyncdb_crdt::{Causality, Change, ChangeHash, ClientId, Stamp};
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use crate::engine::{SequencedWrite, Shown};

/// The message body's format version.
const VERSION: u8 = 1;

/// A message on the stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireMessage {
    pub v: u8,
    /// The node that took the writes: only it makes their webhook events,
    /// and answers their writers.
    pub node: String,
    pub writes: Vec<WireWrite>,
}

/// A write in a message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireWrite {
    /// The ticket the write's writer waits on.
    pub ticket: Option<Ticket>,
    pub table: String,
    pub id: String,
    pub origin: String,
    pub changes: Vec<ByteBuf>,
    /// What the write shows once stored (see [`Shown`]); absent for writes
    /// every node merges. A node that cannot read it merges.
    pub shown: Option<WireShown>,
}

/// A writer's ticket: the run of the node that gave it (drawn at random each
/// time a node joins, so that a ticket of an earlier run is never taken for
/// one of this run), and its number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ticket {
    pub run: u64,
    pub number: u64,
}

/// A message read from the stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Received {
    pub node: String,
    pub writes: Vec<(Option<Ticket>, SequencedWrite)>,
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

impl WireMessage {
    /// The body of a message of `writes`, taken by `node`, each with the
    /// ticket its writer waits on.
    pub fn encode(node: &str, writes: &[(&SequencedWrite, Option<Ticket>)]) -> Vec<u8> {
        let wire = WireMessage {
            v: VERSION,
            node: node.to_owned(),
            writes: writes
                .iter()
                .map(|(write, ticket)| WireWrite {
                    ticket: *ticket,
                    table: write.table.clone(),
                    id: write.id.clone(),
                    origin: write.origin.as_str().to_owned(),
                    changes: write
                        .changes
                        .iter()
                        .map(|change| ByteBuf::from(change.clone()))
                        .collect(),
                    shown: write.shown.as_ref().map(WireShown::of),
                })
                .collect(),
        };
        // Strings, numbers and byte strings always encode.
        rmp_serde::to_vec(&wire).unwrap_or_default()
    }

    /// The writes a body holds.
    ///
    /// # Errors
    ///
    /// A description of what is wrong with the body.
    pub fn decode(body: &[u8]) -> Result<Received, String> {
        let wire: WireMessage = rmp_serde::from_slice(body)
            .map_err(|error| format!("not a message of writes: {error}"))?;
        if wire.v != VERSION {
            return Err(format!("message format {} is not {VERSION}", wire.v));
        }
        let writes = wire
            .writes
            .into_iter()
            .map(|wire| {
                let write = SequencedWrite {
                    table: wire.table,
                    id: wire.id,
                    origin: ClientId::from(wire.origin.as_str()),
                    changes: wire.changes.into_iter().map(ByteBuf::into_vec).collect(),
                    shown: wire.shown.and_then(WireShown::read),
                };
                (wire.ticket, write)
            })
            .collect();
        Ok(Received {
            node: wire.node,
            writes,
        })
    }
}

/// The bytes a write adds to a message, about.
pub(crate) fn encoded_len(write: &SequencedWrite) -> usize {
    let changes: usize = write.changes.iter().map(Vec::len).sum();
    let shown = write.shown.as_ref().map_or(0, |shown| {
        shown.row.len() + 32 * (shown.base.len() + 1) + 16 * shown.stamps.len() + 24
    });
    64 + write.table.len() + write.id.len() + write.origin.as_str().len() + changes + shown
}

/// The origin of changes anti-entropy puts back on the stream.
pub(crate) const REPAIR_ORIGIN: &str = "anti-entropy";

/// The message id of a message of one write: its last change's hash, so
/// that the stream stores a write published twice (a retry, or the same
/// changes pushed to two nodes) once within its duplicate window. A repair
/// has none: the stream may remember the id of the very message that was
/// lost. A message of several writes has none either: a write in it that the
/// stream holds already is found a duplicate when applied, by its changes'
/// hashes, and changes nothing.
pub(crate) fn message_id(writes: &[&SequencedWrite]) -> Option<String> {
    let [write] = writes else {
        return None;
    };
    if write.origin.as_str() == REPAIR_ORIGIN {
        return None;
    }
    if let Some(shown) = &write.shown {
        return Some(shown.hash.to_string());
    }
    write
        .changes
        .last()
        .and_then(|bytes| Change::from_bytes(bytes.clone()).ok())
        .map(|change| change.hash().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use mobilesyncdb_crdt::{Edit, Record, StampMeta, Value};

    fn change(title: &str) -> Change {
        let mut record = Record::new(mobilesyncdb_crdt::ActorId::random());
        let meta = StampMeta::new(Stamp::at(1_000), ClientId::from("phone"));
        record
            .write(&[Edit::set("title", Value::from(title))], &meta)
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

    fn shown(change: &Change) -> Shown {
        Shown {
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
        }
    }

    #[test]
    fn a_message_of_writes_comes_back_as_it_went() {
        let (first, second) = (change("milk"), change("eggs"));
        let plain = write(&first);
        let with_shown = SequencedWrite {
            shown: Some(shown(&second)),
            ..write(&second)
        };
        let ticket = Ticket { run: 7, number: 42 };
        let body = WireMessage::encode("node-a", &[(&plain, Some(ticket)), (&with_shown, None)]);
        let received = Received {
            node: "node-a".to_owned(),
            writes: vec![(Some(ticket), plain.clone()), (None, with_shown.clone())],
        };
        assert_eq!(WireMessage::decode(&body), Ok(received));
    }

    #[test]
    fn a_lone_write_is_identified_by_its_change_hash_and_a_message_of_several_or_a_repair_is_not() {
        let change = change("milk");
        let plain = write(&change);
        assert_eq!(message_id(&[&plain]), Some(change.hash().to_string()));
        let with_shown = SequencedWrite {
            shown: Some(shown(&change)),
            ..plain.clone()
        };
        assert_eq!(message_id(&[&with_shown]), Some(change.hash().to_string()));
        assert_eq!(message_id(&[&plain, &with_shown]), None);
        let repair = SequencedWrite {
            origin: ClientId::from(REPAIR_ORIGIN),
            ..plain
        };
        assert_eq!(message_id(&[&repair]), None);
    }

    #[test]
    fn a_malformed_shown_leaves_the_write_to_be_merged() {
        let change = change("milk");
        let write = SequencedWrite {
            shown: Some(shown(&change)),
            ..write(&change)
        };
        let body = WireMessage::encode("node-a", &[(&write, None)]);
        let mut wire: WireMessage = rmp_serde::from_slice(&body).expect("a body");
        if let Some(shown) = wire.writes[0].shown.as_mut() {
            shown.hash = ByteBuf::from(vec![1, 2, 3]);
        }
        let body = rmp_serde::to_vec(&wire).expect("encodes");
        let (_, decoded) = WireMessage::decode(&body)
            .expect("a message")
            .writes
            .remove(0);
        assert_eq!(decoded.shown, None);
        assert_eq!(decoded.changes, write.changes);
    }

    #[test]
    fn a_body_that_is_not_a_message_of_writes_is_refused_with_a_reason() {
        let refused = WireMessage::decode(b"\x01\x02").unwrap_err();
        assert!(refused.starts_with("not a message of writes"), "{refused}");
        let mut wire = WireMessage {
            v: 9,
            node: String::new(),
            writes: Vec::new(),
        };
        let body = rmp_serde::to_vec(&wire).unwrap_or_default();
        assert_eq!(
            WireMessage::decode(&body).unwrap_err(),
            "message format 9 is not 1"
        );
        wire.v = VERSION;
        assert!(WireMessage::decode(&rmp_serde::to_vec(&wire).unwrap_or_default()).is_ok());
    }
}

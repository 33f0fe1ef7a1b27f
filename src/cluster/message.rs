//! A write as it travels on the stream: MessagePack, with the node that took
//! it in a header.

use mobilesyncdb_crdt::{Change, ClientId};
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use crate::engine::SequencedWrite;

/// The header naming the node that took a write.
pub(crate) const NODE_HEADER: &str = "Msdb-Node";

/// The message body's format version.
const VERSION: u8 = 1;

/// A write on the stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireWrite {
    pub v: u8,
    pub table: String,
    pub id: String,
    pub origin: String,
    pub changes: Vec<ByteBuf>,
}

impl WireWrite {
    /// The body of `write`.
    pub fn encode(write: &SequencedWrite) -> Vec<u8> {
        let wire = WireWrite {
            v: VERSION,
            table: write.table.clone(),
            id: write.id.clone(),
            origin: write.origin.as_str().to_owned(),
            changes: write
                .changes
                .iter()
                .map(|change| ByteBuf::from(change.clone()))
                .collect(),
        };
        // A struct of strings and byte strings always encodes.
        rmp_serde::to_vec_named(&wire).unwrap_or_default()
    }

    /// The write a body holds.
    ///
    /// # Errors
    ///
    /// A description of what is wrong with the body.
    pub fn decode(body: &[u8]) -> Result<SequencedWrite, String> {
        let wire: WireWrite =
            rmp_serde::from_slice(body).map_err(|error| format!("not a write: {error}"))?;
        if wire.v != VERSION {
            return Err(format!("write format {} is not {VERSION}", wire.v));
        }
        Ok(SequencedWrite {
            table: wire.table,
            id: wire.id,
            origin: ClientId::from(wire.origin.as_str()),
            changes: wire.changes.into_iter().map(ByteBuf::into_vec).collect(),
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
    use mobilesyncdb_crdt::{Edit, Record, Stamp, StampMeta, Value};

    fn change() -> Vec<u8> {
        let mut record = Record::new(mobilesyncdb_crdt::ActorId::random());
        let meta = StampMeta::new(Stamp::at(1_000), ClientId::from("phone"));
        let change = record
            .write(&[Edit::set("title", Value::from("milk"))], &meta)
            .ok()
            .flatten()
            .map(|change| change.raw_bytes().to_vec());
        change.unwrap_or_default()
    }

    #[test]
    fn a_write_comes_back_as_it_went() {
        let write = SequencedWrite {
            table: "todos".into(),
            id: "t1".into(),
            origin: ClientId::from("phone"),
            changes: vec![change()],
        };
        let body = WireWrite::encode(&write);
        assert_eq!(WireWrite::decode(&body), Ok(write.clone()));
        let id = message_id(&write).unwrap_or_default();
        assert_eq!(id.len(), 64, "a change hash in hex: {id}");
        let repair = SequencedWrite {
            origin: ClientId::from(REPAIR_ORIGIN),
            ..write
        };
        assert_eq!(message_id(&repair), None);
    }

    #[test]
    fn a_body_that_is_not_a_write_is_refused_with_a_reason() {
        let refused = WireWrite::decode(b"\x01\x02").unwrap_err();
        assert!(refused.starts_with("not a write"), "{refused}");
        let mut wire = WireWrite {
            v: 9,
            table: String::new(),
            id: String::new(),
            origin: String::new(),
            changes: Vec::new(),
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

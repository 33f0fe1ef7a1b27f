//! The differential sync protocol: sessions, pulls, pushes and the wire format.
//!
//! - [`SyncServer`]: answers protocol messages against a [`Database`]: pulls
//!   (batches of what changed after a cursor), pushes (automerge changes or field
//!   patches, each idempotent) and acknowledgements.
//! - Sessions ([`SessionInfo`]): one per device, holding its acknowledged cursor,
//!   schema version, power profile and last contact; bounded, and expired when idle.
//! - Messages ([`PullRequest`], [`PullBatch`], [`PushRequest`], [`PushResult`],
//!   [`AckRequest`]) travel in a checked envelope (`wire`): magic, version, kind,
//!   codec, length and CRC-32 around a MessagePack body. A pull batch's body is
//!   columnar, each column encoded by [`crate::compress`].
//!
//! A cursor is a database-wide sequence number. A batch lists each changed record
//! once, with the automerge chunks newer than the cursor and its visible row (only
//! the fields that changed, for records the client holds), so the client stores a
//! batch without loading a single document. The cursor moves only when the client
//! says it stored the batch; re-sending a batch is harmless. `docs/PROTOCOL.md`
//! describes every byte.
//!
//! [`Database`]: crate::engine::Database

mod batch;
pub(crate) mod message;
mod server;
pub(crate) mod session;
pub(crate) mod wait;
pub mod wire;

pub use batch::{BatchError, decode_batch, decode_batch_with};
pub use message::{
    AckRequest, AckResult, DeltaState, ErrorBody, OpResult, OpStatus, PullBatch, PullRequest,
    PushOp, PushRequest, PushResult, RecordDelta, RecordRef, SyncHint, TableBatch, WireFilter,
    WireScope, WireValue,
};
pub use server::{SyncError, SyncServer};
pub use session::SessionInfo;

use serde::de::DeserializeOwned;
use wire::{MessageKind, WireError};

/// An answer that is not the one asked for.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ResponseError {
    #[error(transparent)]
    Wire(#[from] WireError),
    #[error(transparent)]
    Batch(#[from] BatchError),
    /// The server refused the request.
    #[error("the server refused the request ({}): {}", .0.code, .0.message)]
    Refused(ErrorBody),
}

impl ResponseError {
    /// The server's error code, when it refused the request.
    pub fn code(&self) -> Option<&str> {
        match self {
            ResponseError::Refused(body) => Some(&body.code),
            _ => None,
        }
    }
}

/// Encodes a request message; bodies over 1 KiB travel as an LZ4 frame.
pub fn encode_request<T: serde::Serialize>(kind: MessageKind, request: &T) -> Vec<u8> {
    let body = wire::body_of(request);
    wire::seal(kind, &body, body.len() > 1024)
}

/// Decodes an answer of the `expected` kind, or the server's refusal.
///
/// # Errors
///
/// [`ResponseError::Refused`] for an error message, otherwise the wire error.
pub fn decode_response<T: DeserializeOwned>(
    message: &[u8],
    expected: MessageKind,
    limit: usize,
) -> Result<T, ResponseError> {
    refusal(message, limit)?;
    Ok(wire::open_value(message, expected, limit)?.0)
}

/// Decodes a pull answer: a batch, or the server's refusal.
///
/// # Errors
///
/// As [`decode_response`], and [`BatchError`] for an invalid batch.
pub fn decode_pull_response(message: &[u8], limit: usize) -> Result<PullBatch, ResponseError> {
    decode_pull_response_with(message, limit, &|_, _| None)
}

/// [`decode_pull_response`] with the local copies of records, as
/// [`decode_batch_with`] takes them.
///
/// # Errors
///
/// As [`decode_pull_response`].
pub fn decode_pull_response_with(
    message: &[u8],
    limit: usize,
    held: &dyn Fn(&str, &str) -> Option<Vec<u8>>,
) -> Result<PullBatch, ResponseError> {
    refusal(message, limit)?;
    Ok(decode_batch_with(message, limit, held)?)
}

/// `Err(Refused)` when the message is a valid error message.
fn refusal(message: &[u8], limit: usize) -> Result<(), ResponseError> {
    if message.get(5) == Some(&(MessageKind::Error as u8)) {
        let (body, _) = wire::open_value::<ErrorBody>(message, MessageKind::Error, limit)?;
        return Err(ResponseError::Refused(body));
    }
    Ok(())
}

//! What can go wrong in the client, one enum per concern, all convertible into
//! [`ClientError`].

use std::time::Duration;

use mobilesyncdb_crdt::RecordError;

use crate::schema::TypeMismatch;
use crate::sync::ResponseError;

/// A message could not be carried to the server and back.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    #[error("the network is unreachable; retry when the device is back online")]
    Disconnected,
    #[error("the request was lost before it reached the server; retry it")]
    RequestDropped,
    #[error(
        "the connection broke before the answer arrived; the server may have applied the request, so retry it unchanged"
    )]
    ResponseLost,
    #[error("no answer within {timeout_ms} ms; retry it unchanged")]
    TimedOut { timeout_ms: u64 },
    /// No HTTP connection could be made (refused, unresolvable, TLS failure,
    /// connect timeout): the request surely did not reach the server.
    #[error("cannot connect to the sync server: {source}; retry when the device is back online")]
    Connect {
        #[source]
        source: reqwest::Error,
    },
    /// The HTTP exchange broke after the connection was made: the server may
    /// have applied the request.
    #[error(
        "the HTTP exchange with the sync server failed: {source}; the server may have applied the request, so retry it unchanged"
    )]
    Http {
        #[source]
        source: reqwest::Error,
    },
    /// The server (or a proxy before it) answered with something other than a
    /// sync message: a `problem+json` document for 401, 403, 413, 429, 5xx…
    /// `code` and `detail` come from the problem document when there is one;
    /// `retry_after` from the `Retry-After` header (429, 503).
    #[error(
        "the sync server answered HTTP {status} ({}): {detail}",
        .code.as_deref().unwrap_or("no problem code")
    )]
    HttpStatus {
        status: u16,
        code: Option<String>,
        detail: String,
        retry_after: Option<Duration>,
    },
    /// The HTTP transport cannot be built: a bad base URL or token.
    #[error("the HTTP transport is misconfigured: {problem}")]
    InvalidEndpoint { problem: String },
    /// The bytes given to the HTTP transport are not a pull, push or ack
    /// request, so no endpoint takes them. A bug in the caller.
    #[error(
        "the message (kind byte {kind:?}) is not a pull, push or ack request; no sync endpoint takes it"
    )]
    NotARequest { kind: Option<u8> },
}

impl TransportError {
    /// True when sending the same request again may succeed: the network
    /// failed, the server is overloaded or briefly unavailable (408, 429, 500,
    /// 502, 503, 504). An authentication failure (401), a refusal (403), a
    /// message too large (413) or a misconfiguration fails the same way again.
    pub fn is_retryable(&self) -> bool {
        match self {
            TransportError::HttpStatus { status, .. } => {
                matches!(status, 408 | 429 | 500 | 502 | 503 | 504)
            }
            TransportError::InvalidEndpoint { .. } | TransportError::NotARequest { .. } => false,
            _ => true,
        }
    }

    /// How long the server asked to wait before a retry (`Retry-After`).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            TransportError::HttpStatus { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The HTTP status of an answer that was not a sync message.
    pub fn status(&self) -> Option<u16> {
        match self {
            TransportError::HttpStatus { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// A pull batch that cannot be stored. Nothing of the batch was stored.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApplyError {
    #[error(
        "the batch starts after cursor {found}, but the replica stored everything up to {expected}; pull again"
    )]
    OutOfOrder { expected: u64, found: u64 },
    #[error(
        "the server says more changes wait after cursor {cursor} but its batch does not advance it; pull again later"
    )]
    NoProgress { cursor: u64 },
    #[error(
        "record `{id}` of table `{table}` carries {found} row values for {expected} fields; the batch is malformed"
    )]
    RowLength {
        table: String,
        id: String,
        expected: usize,
        found: usize,
    },
    #[error(
        "record `{id}` of table `{table}` could not be merged with its local edits: {source}; drop the local copy and pull it again"
    )]
    Merge {
        table: String,
        id: String,
        #[source]
        source: RecordError,
    },
}

/// A local write the client refuses. Nothing was written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WriteError {
    #[error("table `{table}` is not replicated by this client; add it to the client's tables")]
    UnknownTable { table: String },
    #[error("record `{id}` of table `{table}` does not exist here; pull it first, or insert it")]
    UnknownRecord { table: String, id: String },
    #[error("record `{id}` of table `{table}` exists already; update it instead")]
    AlreadyExists { table: String, id: String },
    #[error(
        "the insert into `{table}` has no value for its primary key `{field}`; give the record an id"
    )]
    MissingPrimaryKey { table: String, field: String },
    #[error("table `{table}` has no field `{field}`")]
    UnknownField { table: String, field: String },
    #[error(
        "the primary key `{field}` of record `{id}` in `{table}` cannot change; insert a new record instead"
    )]
    PrimaryKeyChange {
        table: String,
        id: String,
        field: String,
    },
    #[error("field `{field}` of table `{table}`: {problem}")]
    TypeMismatch {
        table: String,
        field: String,
        #[source]
        problem: TypeMismatch,
    },
    #[error(
        "the server refused an earlier edit of record `{id}` in table `{table}`; pull to get the server's copy, then edit it"
    )]
    AwaitingServerCopy { table: String, id: String },
    #[error(
        "the write queue holds {limit} operations, its limit; sync to send them before writing more"
    )]
    QueueFull { limit: usize },
    #[error("record `{id}` of table `{table}` could not be written: {source}")]
    Record {
        table: String,
        id: String,
        #[source]
        source: RecordError,
    },
}

/// Any error of the client.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error("the server refused the request ({code}): {message}")]
    Refused { code: String, message: String },
    #[error("the server's answer is invalid and was not used: {0}; sync again")]
    InvalidResponse(#[source] ResponseError),
    #[error(transparent)]
    Apply(#[from] ApplyError),
    #[error(transparent)]
    Write(#[from] WriteError),
    #[error("the client configuration is invalid: {problem}")]
    Config { problem: &'static str },
    #[error(
        "the stored copy of record `{id}` in table `{table}` does not load: {source}; drop it and pull it again"
    )]
    Corrupt {
        table: String,
        id: String,
        #[source]
        source: RecordError,
    },
    #[error(
        "local writes kept changing the records a batch touches; the batch was not stored, sync again"
    )]
    Contended,
    #[error("a background task of the client failed: {0}; this is a bug in the client")]
    Task(#[source] tokio::task::JoinError),
}

/// Server error codes that a retry of the same request can cure: the request was
/// damaged in transit.
const RETRYABLE_CODES: [&str; 2] = ["corrupt_message", "bad_message"];

impl ClientError {
    /// True when sending the same request again may succeed: the network failed,
    /// or a message was damaged on the way.
    pub fn is_retryable(&self) -> bool {
        match self {
            ClientError::Transport(error) => error.is_retryable(),
            ClientError::InvalidResponse(_) => true,
            ClientError::Refused { code, .. } => RETRYABLE_CODES.contains(&code.as_str()),
            _ => false,
        }
    }

    /// How long the server asked to wait before a retry, when it said
    /// (`Retry-After` of an HTTP 429 or 503).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ClientError::Transport(error) => error.retry_after(),
            _ => None,
        }
    }

    /// The server's error code, when the server refused the request (in a sync
    /// error message, or in the problem document of an HTTP error).
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Refused { code, .. } => Some(code),
            ClientError::Transport(TransportError::HttpStatus {
                code: Some(code), ..
            }) => Some(code),
            _ => None,
        }
    }
}

impl From<ResponseError> for ClientError {
    fn from(error: ResponseError) -> ClientError {
        match error {
            ResponseError::Refused(body) => ClientError::Refused {
                code: body.code,
                message: body.message,
            },
            other => ClientError::InvalidResponse(other),
        }
    }
}

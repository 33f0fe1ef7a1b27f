//! Every error the API answers is an RFC 9457 problem document
//! (`application/problem+json`) with a stable `type`: the one place where
//! engine, sync and transfer errors become HTTP statuses.

use std::time::Duration;

use serde::Serialize;
use warp::http::{HeaderValue, StatusCode, header};
use warp::reply::Response;

use crate::engine::{EngineError, MigrationError, ReadError, WriteError};
use crate::sync::SyncError;
use crate::transfer::TransferError;

/// The base of every problem `type`: `https://mobilesyncdb.dev/problems/<code>`.
pub const PROBLEM_BASE: &str = "https://mobilesyncdb.dev/problems/";

/// A problem's extension members, boxed: most problems have none, and every
/// handler's `Result` carries a `Problem`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Extensions(Option<Box<serde_json::Map<String, serde_json::Value>>>);

impl Extensions {
    pub fn is_empty(&self) -> bool {
        self.0.as_ref().is_none_or(|map| map.is_empty())
    }
}

impl Serialize for Extensions {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(None)?;
        for (name, value) in self.0.iter().flat_map(|map| map.iter()) {
            map.serialize_entry(name, value)?;
        }
        map.end()
    }
}

/// A problem document and its status.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// `https://mobilesyncdb.dev/problems/<code>`.
    #[serde(rename = "type")]
    pub kind: String,
    /// A short summary of the problem type.
    pub title: &'static str,
    pub status: u16,
    /// What went wrong with this request and what to do.
    pub detail: String,
    /// The stable code (the last segment of `type`).
    pub code: &'static str,
    /// For 429: seconds until a retry may succeed (also in `Retry-After`).
    #[serde(skip)]
    pub retry_after: Option<Duration>,
    /// Members beyond the standard ones (RFC 9457 extensions), such as a
    /// blocked migration's `report`.
    #[serde(flatten, skip_serializing_if = "Extensions::is_empty")]
    #[schema(value_type = Object)]
    pub extensions: Extensions,
}

impl Problem {
    /// A problem with this status and stable code.
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Problem {
        Problem {
            kind: format!("{PROBLEM_BASE}{code}"),
            title: status.canonical_reason().unwrap_or("Error"),
            status: status.as_u16(),
            detail: detail.into(),
            code,
            retry_after: None,
            extensions: Extensions::default(),
        }
    }

    /// Adds an extension member.
    pub fn with_extension(mut self, name: &str, value: serde_json::Value) -> Problem {
        self.extensions
            .0
            .get_or_insert_with(Default::default)
            .insert(name.to_owned(), value);
        self
    }

    pub fn bad_request(code: &'static str, detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::BAD_REQUEST, code, detail)
    }

    pub fn unauthorized(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::UNAUTHORIZED, "unauthorized", detail)
    }

    pub fn forbidden(code: &'static str, detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::FORBIDDEN, code, detail)
    }

    pub fn not_found(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::NOT_FOUND, "not_found", detail)
    }

    /// A record the caller may not see, or that does not exist: the two are
    /// answered the same, so a 404 never tells that a record exists.
    pub fn no_record(table: &str, id: &str) -> Problem {
        Problem::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("table `{table}`: record `{id}` does not exist"),
        )
    }

    /// A table the caller may not see, or that does not exist.
    pub fn no_table(table: &str) -> Problem {
        Problem::new(
            StatusCode::NOT_FOUND,
            "unknown_table",
            format!("table `{table}` does not exist"),
        )
    }

    pub fn too_many_requests(retry_after: Duration) -> Problem {
        let mut problem = Problem::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!(
                "too many requests for this token; retry after {} s",
                whole_seconds(retry_after)
            ),
        );
        problem.retry_after = Some(retry_after);
        problem
    }

    pub fn internal(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", detail)
    }

    /// The response: the JSON document with its content type, and `Retry-After`
    /// or `WWW-Authenticate` where the status calls for them.
    pub fn into_response(self) -> Response {
        let body = serde_json::to_vec(&self).unwrap_or_default();
        let mut response = Response::new(body.into());
        *response.status_mut() =
            StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(after) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(whole_seconds(after)));
        }
        if self.status == 401 {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"mobilesyncdb\""),
            );
        }
        response
    }
}

/// Seconds to wait, rounded up, at least 1 (the body and `Retry-After` agree).
fn whole_seconds(after: Duration) -> u64 {
    (after.as_secs() + u64::from(after.subsec_nanos() > 0)).max(1)
}

impl From<EngineError> for Problem {
    fn from(error: EngineError) -> Problem {
        let status = match &error {
            EngineError::Write(write) => write_status(write),
            EngineError::Read(
                ReadError::UnknownTable { .. } | ReadError::UnknownConflict { .. },
            ) => StatusCode::NOT_FOUND,
            EngineError::Read(ReadError::Query(_)) => StatusCode::BAD_REQUEST,
            EngineError::Read(ReadError::CursorTooOld(_)) => StatusCode::GONE,
            EngineError::Read(ReadError::Corrupt { .. }) => StatusCode::INTERNAL_SERVER_ERROR,
            EngineError::Schema(_) | EngineError::Config(_) => StatusCode::BAD_REQUEST,
            EngineError::Migration(migration) => migration_status(migration),
        };
        let problem = Problem::new(status, error.code(), error.to_string());
        match error {
            EngineError::Migration(MigrationError::Blocked(report)) => {
                problem.with_extension("report", serde_json::json!(report))
            }
            _ => problem,
        }
    }
}

fn migration_status(error: &MigrationError) -> StatusCode {
    match error {
        MigrationError::NotNewer { .. } | MigrationError::Blocked(_) => StatusCode::CONFLICT,
        MigrationError::UpgradeRequired { .. } => StatusCode::UPGRADE_REQUIRED,
        _ => StatusCode::BAD_REQUEST,
    }
}

fn write_status(error: &WriteError) -> StatusCode {
    match error {
        WriteError::Version(version) => migration_status(version),
        WriteError::UnknownTable { .. } | WriteError::NotFound { .. } => StatusCode::NOT_FOUND,
        WriteError::AlreadyExists { .. }
        | WriteError::UniqueViolation { .. }
        | WriteError::ConflictClosed { .. } => StatusCode::CONFLICT,
        WriteError::VersionMismatch { .. } => StatusCode::PRECONDITION_FAILED,
        WriteError::AccessDenied { .. } => StatusCode::FORBIDDEN,
        WriteError::RecordTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        WriteError::MemoryLimit { .. } | WriteError::Storage { .. } => {
            StatusCode::INSUFFICIENT_STORAGE
        }
        WriteError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::UNPROCESSABLE_ENTITY,
    }
}

impl From<SyncError> for Problem {
    fn from(error: SyncError) -> Problem {
        match error {
            SyncError::Engine(engine) => engine.into(),
            error => {
                let status = match &error {
                    SyncError::UnknownTable { .. } => StatusCode::NOT_FOUND,
                    SyncError::DeviceMismatch { .. } => StatusCode::FORBIDDEN,
                    SyncError::CursorAhead { .. } | SyncError::ChecksumMismatch { .. } => {
                        StatusCode::CONFLICT
                    }
                    SyncError::Wire(crate::sync::wire::WireError::TooLarge { .. }) => {
                        StatusCode::PAYLOAD_TOO_LARGE
                    }
                    SyncError::Task(_) => StatusCode::INTERNAL_SERVER_ERROR,
                    _ => StatusCode::BAD_REQUEST,
                };
                Problem::new(status, error.code(), error.to_string())
            }
        }
    }
}

impl From<TransferError> for Problem {
    fn from(error: TransferError) -> Problem {
        let status = match error.code() {
            "unknown_table" => StatusCode::NOT_FOUND,
            "schema_conflict" => StatusCode::CONFLICT,
            "too_large" | "record_too_large" => StatusCode::PAYLOAD_TOO_LARGE,
            "memory_limit" | "storage_unavailable" => StatusCode::INSUFFICIENT_STORAGE,
            "clock_skew" => StatusCode::UNPROCESSABLE_ENTITY,
            _ => StatusCode::BAD_REQUEST,
        };
        Problem::new(status, error.code(), error.to_string())
    }
}

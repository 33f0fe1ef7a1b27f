//! Sync over HTTP: pull, push and acknowledge, as JSON by default and as the
//! binary messages of `docs/PROTOCOL.md` by content negotiation; sessions.
//!
//! A client token syncs as its own device: the device of a request must be the
//! token's (or be left out), and only the rows the tables' access rules give the
//! token's user are pulled or pushed.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tracing::debug;
use warp::http::{HeaderValue, StatusCode, header};
use warp::reply::Response;
use warp::{Filter, Rejection};

use crate::api::auth::Principal;
use crate::api::problem::Problem;
use crate::api::routes::live::Live;
use crate::api::routes::{
    SYNC_CONTENT_TYPE, answer, blocking, body, caller, json, no_content, with_state,
};
use crate::api::state::AppState;
use crate::schema::value_to_json;
use crate::sync::wait::{LongPoll, long_poll_wait};
use crate::sync::wire::{self, MessageKind};
use crate::sync::{
    AckRequest, DeltaState, ErrorBody, PullRequest, PushOp, PushRequest, SessionInfo, SyncError,
    decode_batch,
};

pub(crate) fn routes(
    state: AppState,
    live: Live,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    let limit = state.config().limits.max_sync_body_bytes;
    let exchange = |kind: MessageKind| {
        warp::post()
            .and(with_state(state.clone()))
            .and(caller(state.clone()))
            .and(warp::header::optional::<String>("content-type"))
            .and(warp::header::optional::<String>("accept"))
            .and(body(limit))
            .map(move |state, principal, content_type, accept, bytes| {
                (
                    state,
                    principal,
                    Exchange {
                        kind,
                        content_type,
                        accept,
                        bytes,
                    },
                )
            })
            .untuple_one()
    };
    let pull = warp::path!("v1" / "sync" / "pull")
        .and(exchange(MessageKind::PullRequest))
        .and(warp::query::<PullParams>())
        .and(warp::any().map(move || live.clone()))
        .then(|state, principal, request, params, live| {
            answer(pull(state, principal, request, params, live))
        });
    let push = warp::path!("v1" / "sync" / "push")
        .and(exchange(MessageKind::PushRequest))
        .then(|state, principal, request| answer(push(state, principal, request)));
    let ack = warp::path!("v1" / "sync" / "ack")
        .and(exchange(MessageKind::AckRequest))
        .then(|state, principal, request| answer(ack(state, principal, request)));
    let sessions = warp::path!("v1" / "sync" / "sessions")
        .and(warp::get())
        .and(with_state(state.clone()))
        .and(caller(state.clone()))
        .then(|state, principal| answer(list_sessions(state, principal)));
    let end = warp::path!("v1" / "sync" / "sessions" / String)
        .and(warp::delete())
        .and(with_state(state.clone()))
        .and(caller(state))
        .then(|device, state, principal| answer(end_session(device, state, principal)));
    pull.or(push)
        .unify()
        .or(ack)
        .unify()
        .or(sessions)
        .unify()
        .or(end)
        .unify()
}

pub(crate) struct Exchange {
    kind: MessageKind,
    content_type: Option<String>,
    accept: Option<String>,
    bytes: Bytes,
}

impl Exchange {
    fn binary_request(&self) -> bool {
        self.content_type
            .as_deref()
            .is_some_and(|kind| kind.trim().starts_with(SYNC_CONTENT_TYPE))
    }

    /// Binary when asked for by `Accept`, or when the request was binary and
    /// `Accept` does not ask for JSON.
    fn binary_response(&self) -> bool {
        match self.accept.as_deref() {
            Some(accept) if accept.contains(SYNC_CONTENT_TYPE) => true,
            Some(accept) if accept.contains("json") => false,
            _ => self.binary_request(),
        }
    }
}

/// A long poll: how long the caller asked a pull with nothing to send to wait
/// (`?wait_ms=`; the body's `wait_ms` otherwise).
struct Wait {
    asked_ms: Option<u64>,
    live: Live,
}

async fn exchange(
    state: AppState,
    principal: Principal,
    request: Exchange,
    wait: Option<Wait>,
) -> Result<Response, Problem> {
    if let Some(kind) = request.content_type.as_deref()
        && !request.binary_request()
        && !crate::api::routes::is_json(kind)
    {
        return Err(Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!("send `application/json` or `{SYNC_CONTENT_TYPE}`, not `{kind}`"),
        ));
    }
    let binary = request.binary_response();
    let started = Instant::now();
    let label = principal.label();
    let kind = request.kind;
    let answer = match wait {
        Some(wait) => long_poll(state, principal, request, wait).await?,
        None => blocking(move || Ok(run(&state, &principal, &request))).await?,
    };
    let response = respond(answer, binary);
    debug!(
        caller = %label,
        kind = ?kind,
        binary,
        micros = started.elapsed().as_micros() as u64,
        "sync exchange"
    );
    response
}

/// Runs a pull until it has records to send, or until the wait is up (or
/// the server starts shutting down): then its last, empty answer. The wait is
/// what the caller asked, at most `live.max_wait_ms` and the power profile's
/// `long_poll` (0 in low and critical: answered at once).
///
/// The watch of the latest sequence number is taken before the first pull, so
/// a change made while that pull runs wakes the wait (no lost wake-up). A
/// change the caller does not get (another table, a row out of its scope or
/// reach) wakes it too, but the pull it runs then is empty again, so it just
/// waits on. Each pull runs as a plain pull does, off the async threads.
async fn long_poll(
    state: AppState,
    principal: Principal,
    request: Exchange,
    wait: Wait,
) -> Result<Result<Answer, SyncError>, Problem> {
    let max_wait = Duration::from_millis(state.config().live.max_wait_ms);
    let mut poll = LongPoll::start(state.database());
    let stopping = wait.live.stopping();
    let mut stopping = std::pin::pin!(stopping);
    let shared = Arc::new((state, principal, request));
    let mut first = true;
    loop {
        let job = Arc::clone(&shared);
        let answer = blocking(move || {
            let (state, principal, request) = &*job;
            Ok(run(state, principal, request))
        })
        .await?;
        let Ok(Answer::Batch {
            records: 0,
            wait_ms,
            long_poll,
            ..
        }) = &answer
        else {
            return Ok(answer);
        };
        let asked = Duration::from_millis(wait.asked_ms.or(*wait_ms).unwrap_or(0));
        let waits = long_poll_wait(asked, max_wait, *long_poll);
        if std::mem::take(&mut first) && !waits.is_zero() {
            shared.0.metrics().record_long_poll();
        }
        if !poll.changed(waits, stopping.as_mut()).await {
            return Ok(answer);
        }
    }
}

/// What a sync request came to, encoded only once the answer's form (JSON or
/// binary) is known.
enum Answer {
    /// A sealed pull batch: sent as it is, or read back for JSON.
    Batch {
        message: Vec<u8>,
        records: usize,
        /// The long poll the request's body asked for.
        wait_ms: Option<u64>,
        /// The power profile's cap on a long poll.
        long_poll: Option<Duration>,
    },
    Push(crate::sync::PushResult),
    Ack(crate::sync::AckResult),
}

fn run(state: &AppState, principal: &Principal, request: &Exchange) -> Result<Answer, SyncError> {
    let decoded = if request.binary_request() {
        decode_binary(state, request)?
    } else {
        decode_json(request)?
    };
    let db = state.database();
    let sync = state.sync();
    Ok(match own_device(principal, decoded)? {
        Decoded::Pull(pull) => {
            let access = state.access().reader(principal, db);
            let batch = sync.pull(access.as_ref(), &pull)?;
            debug!(
                device = %pull.device,
                cursor = pull.cursor,
                next_cursor = batch.next_cursor,
                records = batch.records,
                bytes = batch.message.len(),
                has_more = batch.has_more,
                "pull over http"
            );
            Answer::Batch {
                message: batch.message,
                records: batch.records,
                wait_ms: pull.wait_ms,
                long_poll: batch.long_poll,
            }
        }
        Decoded::Push(push) => {
            let access = state.access().writer(principal, db);
            Answer::Push(sync.push_as(access.as_ref(), push)?)
        }
        Decoded::Ack(ack) => Answer::Ack(sync.ack(&ack)?),
    })
}

enum Decoded {
    Pull(PullRequest),
    Push(PushRequest),
    Ack(AckRequest),
}

impl Decoded {
    fn device_mut(&mut self) -> &mut String {
        match self {
            Decoded::Pull(pull) => &mut pull.device,
            Decoded::Push(push) => &mut push.device,
            Decoded::Ack(ack) => &mut ack.device,
        }
    }
}

/// A client token syncs as its device: an empty device becomes the token's,
/// another device is refused.
fn own_device(principal: &Principal, mut decoded: Decoded) -> Result<Decoded, SyncError> {
    if let Principal::User { device, .. } = principal {
        let named = decoded.device_mut();
        if named.is_empty() {
            named.clone_from(device);
        } else if named != device {
            return Err(SyncError::DeviceMismatch {
                named: named.clone(),
                token: device.clone(),
            });
        }
    }
    Ok(decoded)
}

fn decode_binary(state: &AppState, request: &Exchange) -> Result<Decoded, SyncError> {
    let limit = state.sync().config().max_message_bytes;
    let opened = wire::open(&request.bytes, limit)?;
    if opened.kind != request.kind {
        return Err(SyncError::NotARequest { kind: opened.kind });
    }
    Ok(match opened.kind {
        MessageKind::PullRequest => Decoded::Pull(wire::decode_body(&opened, opened.kind)?),
        MessageKind::PushRequest => Decoded::Push(wire::decode_body(&opened, opened.kind)?),
        MessageKind::AckRequest => Decoded::Ack(wire::decode_body(&opened, opened.kind)?),
        kind => return Err(SyncError::NotARequest { kind }),
    })
}

fn decode_json(request: &Exchange) -> Result<Decoded, SyncError> {
    let bad = |error: serde_json::Error| SyncError::BadJson {
        problem: error.to_string(),
    };
    Ok(match request.kind {
        MessageKind::PullRequest => {
            let pull: JsonPull = serde_json::from_slice(&request.bytes).map_err(bad)?;
            Decoded::Pull(pull.into_request()?)
        }
        MessageKind::PushRequest => {
            let push: JsonPush = serde_json::from_slice(&request.bytes).map_err(bad)?;
            Decoded::Push(push.into_request()?)
        }
        _ => {
            let ack: JsonAck = serde_json::from_slice(&request.bytes).map_err(bad)?;
            Decoded::Ack(AckRequest {
                device: ack.device.unwrap_or_default(),
                cursor: ack.cursor,
                checksum: ack.checksum,
            })
        }
    })
}

fn respond(answer: Result<Answer, SyncError>, binary: bool) -> Result<Response, Problem> {
    let answer = match answer {
        Ok(answer) => answer,
        Err(error) if binary => {
            let body = ErrorBody {
                code: error.code().to_owned(),
                message: error.to_string(),
            };
            // The status is the problem document's, so both forms agree.
            let status = StatusCode::from_u16(Problem::from(error).status)
                .unwrap_or(StatusCode::BAD_REQUEST);
            let sealed = wire::seal_value(MessageKind::Error, &body, false);
            return Ok(binary_response(status, sealed));
        }
        Err(error) => return Err(error.into()),
    };
    Ok(match (answer, binary) {
        (Answer::Batch { message, .. }, true) => binary_response(StatusCode::OK, message),
        (Answer::Batch { message, .. }, false) => json(StatusCode::OK, &json_batch(&message)?),
        (Answer::Push(result), true) => binary_response(
            StatusCode::OK,
            wire::seal_value(MessageKind::PushResult, &result, false),
        ),
        (Answer::Push(result), false) => json(StatusCode::OK, &result),
        (Answer::Ack(result), true) => binary_response(
            StatusCode::OK,
            wire::seal_value(MessageKind::AckResult, &result, false),
        ),
        (Answer::Ack(result), false) => json(StatusCode::OK, &result),
    })
}

fn binary_response(status: StatusCode, message: Vec<u8>) -> Response {
    let mut response = Response::new(message.into());
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(SYNC_CONTENT_TYPE),
    );
    response
}

/// A pull as JSON: the binary request's fields, `device` optional for tokens.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct JsonPull {
    /// The device; a client token's device when left out.
    #[serde(default)]
    device: Option<String>,
    /// The `next_cursor` of the last batch stored; 0 for an initial sync.
    #[serde(default)]
    cursor: u64,
    /// The `base` of the last batch stored.
    #[serde(default)]
    base: Option<u64>,
    /// Tables to replicate: names, or `{"table": …, "filters": [{"field", "op", "value"}]}`.
    #[schema(value_type = Vec<Object>)]
    tables: Vec<TableChoice>,
    #[serde(default)]
    #[schema(value_type = Vec<Object>)]
    fetch: Vec<crate::sync::RecordRef>,
    #[serde(default)]
    max_records: Option<u32>,
    #[serde(default)]
    max_bytes: Option<u32>,
    #[serde(default)]
    schema_version: Option<u32>,
    /// The device's power state: `charging`, `normal`, `low` or `critical`.
    #[serde(default)]
    profile: Option<String>,
    /// The device's network: `unmetered` or `metered`.
    #[serde(default)]
    network: Option<String>,
    /// Long poll, as the `wait_ms` query parameter.
    #[serde(default)]
    wait_ms: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum TableChoice {
    Name(String),
    Scope(crate::sync::WireScope),
}

impl JsonPull {
    fn into_request(self) -> Result<PullRequest, SyncError> {
        Ok(PullRequest {
            device: self.device.unwrap_or_default(),
            cursor: self.cursor,
            base: self.base,
            tables: self
                .tables
                .into_iter()
                .map(|choice| match choice {
                    TableChoice::Name(name) => crate::sync::WireScope::all(name),
                    TableChoice::Scope(scope) => scope,
                })
                .collect(),
            fetch: self.fetch,
            max_records: self.max_records,
            max_bytes: self.max_bytes,
            level: None,
            schema_version: self.schema_version,
            // JSON clients read rows, not automerge operations.
            explicit_rows: true,
            profile: self.profile,
            network: self.network,
            wait_ms: self.wait_ms,
        })
    }
}

/// A push as JSON.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct JsonPush {
    #[serde(default)]
    device: Option<String>,
    ops: Vec<JsonPushOp>,
    /// The schema version the app was built against: `set` is named and typed
    /// in it. Absent means the current version.
    #[serde(default)]
    schema_version: Option<u32>,
    /// The device's power state and network, as in a pull.
    #[serde(default)]
    profile: Option<String>,
    #[serde(default)]
    network: Option<String>,
}

/// One pushed operation: a field patch (`set`, with `insert` or `delete`) or
/// automerge changes (`changes`, base64).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct JsonPushOp {
    /// The client's id for the operation: a retry with the same id is not applied twice.
    op: String,
    table: String,
    id: String,
    /// Automerge change chunks, base64.
    #[serde(default)]
    changes: Vec<String>,
    /// Field values to set; `null` unsets a field.
    #[serde(default)]
    #[schema(value_type = Object)]
    set: BTreeMap<String, crate::sync::WireValue>,
    #[serde(default)]
    insert: bool,
    #[serde(default)]
    delete: bool,
    /// The record's heads the patch was made on (hex change hashes).
    #[serde(default)]
    base: Vec<String>,
}

impl JsonPush {
    fn into_request(self) -> Result<PushRequest, SyncError> {
        let bad = |problem: String| SyncError::BadJson { problem };
        let ops = self
            .ops
            .into_iter()
            .map(|op| {
                let changes = op
                    .changes
                    .iter()
                    .map(|text| BASE64.decode(text).map(serde_bytes::ByteBuf::from))
                    .collect::<Result<_, _>>()
                    .map_err(|error| {
                        bad(format!("op `{}`: a change is not base64: {error}", op.op))
                    })?;
                let base = op
                    .base
                    .iter()
                    .map(|text| hex(text).map(serde_bytes::ByteBuf::from))
                    .collect::<Option<_>>()
                    .ok_or_else(|| bad(format!("op `{}`: a base head is not hex", op.op)))?;
                Ok(PushOp {
                    op: op.op,
                    table: op.table,
                    id: op.id,
                    changes,
                    set: op.set,
                    insert: op.insert,
                    delete: op.delete,
                    base,
                })
            })
            .collect::<Result<_, SyncError>>()?;
        Ok(PushRequest {
            device: self.device.unwrap_or_default(),
            ops,
            schema_version: self.schema_version,
            profile: self.profile,
            network: self.network,
        })
    }
}

fn hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|at| {
            text.get(at..at + 2)
                .and_then(|pair| u8::from_str_radix(pair, 16).ok())
        })
        .collect()
}

/// An acknowledgement as JSON.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct JsonAck {
    #[serde(default)]
    device: Option<String>,
    cursor: u64,
    checksum: u32,
}

/// A pull batch as JSON.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct JsonBatch {
    from: u64,
    /// Store the batch, then pull again with this cursor.
    next_cursor: u64,
    has_more: bool,
    /// Send back as `base` with the next pull.
    base: u64,
    catch_up: bool,
    /// Acknowledge the batch with it.
    checksum: u32,
    tables: Vec<JsonTableBatch>,
    /// Records held back by the power profile: fetch them (`fetch`) when the
    /// device's mode allows.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<Object>)]
    deferred: Vec<crate::sync::RecordRef>,
    /// When to sync again, from the power profile.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    hint: Option<crate::sync::SyncHint>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct JsonTableBatch {
    table: String,
    records: Vec<JsonDelta>,
}

/// One record of a batch.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct JsonDelta {
    id: String,
    seq: u64,
    /// `live`, `deleted`, or `left` (out of the caller's reach now: drop it).
    state: &'static str,
    /// The fields that may have changed (every field for a record new to the client).
    #[schema(value_type = Object)]
    row: serde_json::Map<String, serde_json::Value>,
    /// Automerge storage bytes, base64: the changes, or the whole document when `whole`.
    payload: String,
    whole: bool,
}

fn json_batch(message: &[u8]) -> Result<JsonBatch, Problem> {
    let batch = decode_batch(message, usize::MAX)
        .map_err(|error| Problem::internal(format!("cannot read the batch back: {error}")))?;
    let tables = batch
        .tables
        .into_iter()
        .map(|table| JsonTableBatch {
            records: table
                .records
                .into_iter()
                .map(|delta| JsonDelta {
                    row: table
                        .fields
                        .iter()
                        .zip(&delta.row)
                        .filter_map(|((name, _), value)| {
                            value
                                .as_ref()
                                .map(|value| (name.clone(), value_to_json(value)))
                        })
                        .collect(),
                    id: delta.id,
                    seq: delta.seq,
                    state: match delta.state {
                        DeltaState::Live => "live",
                        DeltaState::Deleted => "deleted",
                        DeltaState::Left => "left",
                    },
                    payload: BASE64.encode(&delta.payload),
                    whole: delta.whole,
                })
                .collect(),
            table: table.table,
        })
        .collect();
    let batch = JsonBatch {
        from: batch.from,
        next_cursor: batch.next_cursor,
        has_more: batch.has_more,
        base: batch.base,
        catch_up: batch.catch_up,
        checksum: batch.checksum,
        tables,
        deferred: batch.deferred,
        hint: batch.hint,
    };
    Ok(batch)
}

/// The query of a pull.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct PullParams {
    /// Long poll: when there is nothing to send, wait up to this many
    /// milliseconds (at most `live.max_wait_ms`) for a change the caller gets,
    /// then answer (an empty batch when none came).
    wait_ms: Option<u64>,
}

/// Pulls what changed after a cursor. JSON by default; the binary message of
/// `docs/PROTOCOL.md` with `Content-Type: application/vnd.mobilesyncdb` (and the
/// answer in kind, or as `Accept` asks). With `?wait_ms=`, a pull that would
/// be empty waits for a change first (a long poll); the wait does not count
/// against `server.request_timeout`.
#[utoipa::path(post, path = "/v1/sync/pull", tag = "sync", security(("bearer" = [])),
    params(PullParams),
    request_body(content((JsonPull = "application/json"), (Vec<u8> = "application/vnd.mobilesyncdb"))),
    responses((status = 200, description = "A batch", content((JsonBatch = "application/json"), (Vec<u8> = "application/vnd.mobilesyncdb"))),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 404, body = Problem),
        (status = 409, body = Problem), (status = 413, body = Problem)))]
pub(crate) async fn pull(
    state: AppState,
    principal: Principal,
    request: Exchange,
    params: PullParams,
    live: Live,
) -> Result<Response, Problem> {
    let wait = Some(Wait {
        asked_ms: params.wait_ms,
        live,
    });
    exchange(state, principal, request, wait).await
}

/// Pushes operations; each is applied or refused on its own, and a retried
/// operation id is not applied twice.
#[utoipa::path(post, path = "/v1/sync/push", tag = "sync", security(("bearer" = [])),
    request_body(content((JsonPush = "application/json"), (Vec<u8> = "application/vnd.mobilesyncdb"))),
    responses((status = 200, description = "One result per operation", content_type = "application/json"),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 413, body = Problem),
        (status = 507, body = Problem, description = "The memory limit is reached, or the data directory refuses writes (a full disk, a failed fsync): retry later")))]
pub(crate) async fn push(
    state: AppState,
    principal: Principal,
    request: Exchange,
) -> Result<Response, Problem> {
    exchange(state, principal, request, None).await
}

/// Acknowledges a stored batch.
#[utoipa::path(post, path = "/v1/sync/ack", tag = "sync", security(("bearer" = [])),
    request_body(content((JsonAck = "application/json"), (Vec<u8> = "application/vnd.mobilesyncdb"))),
    responses((status = 200, description = "The cursor now held", content_type = "application/json"),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 409, body = Problem),
        (status = 507, body = Problem, description = "The memory limit is reached, or the data directory refuses writes (a full disk, a failed fsync): retry later")))]
pub(crate) async fn ack(
    state: AppState,
    principal: Principal,
    request: Exchange,
) -> Result<Response, Problem> {
    exchange(state, principal, request, None).await
}

/// Sync sessions: every device's for an admin key, the token's own device's
/// otherwise.
#[utoipa::path(get, path = "/v1/sync/sessions", tag = "sync", security(("bearer" = [])),
    responses((status = 200, description = "Sessions", content_type = "application/json"), (status = 401, body = Problem)))]
pub(crate) async fn list_sessions(
    state: AppState,
    principal: Principal,
) -> Result<Response, Problem> {
    let sessions: Vec<SessionInfo> = match &principal {
        Principal::Admin => state.sync().sessions(),
        Principal::User { device, .. } => state.sync().session(device).into_iter().collect(),
    };
    Ok(json(StatusCode::OK, &sessions))
}

/// Ends a device's session (an admin key, or the device's own token).
#[utoipa::path(delete, path = "/v1/sync/sessions/{device}", tag = "sync", security(("bearer" = [])),
    params(("device" = String, Path)),
    responses((status = 204, description = "Ended"), (status = 401, body = Problem), (status = 404, body = Problem)))]
pub(crate) async fn end_session(
    device: String,
    state: AppState,
    principal: Principal,
) -> Result<Response, Problem> {
    let own = match &principal {
        Principal::Admin => true,
        Principal::User { device: own, .. } => *own == device,
    };
    if !own || !state.sync().end_session(&device) {
        return Err(Problem::not_found(format!(
            "no session for device `{device}`"
        )));
    }
    Ok(no_content())
}

//! Live change notifications: the change stream (server-sent events) and what
//! long-poll pulls share with it (the subscriber bound, the shutdown signal).
//!
//! `GET /v1/sync/stream?tables=a,b&cursor=N` answers `text/event-stream`: an
//! `event: change` (with `id: <seq>`) for every record of those tables that
//! changed after the cursor and that the caller may see under the same access
//! rules as a pull, in sequence order, then more as they happen (the stream
//! waits on [`crate::engine::Database::watch_seq`], it does not poll). Each
//! record appears with its latest sequence number: a record changed twice
//! between two looks is announced once. A record that left the caller's reach
//! is announced without its id (`"left": true`): pull to drop it. Heartbeat
//! comments (`: heartbeat`) keep an idle stream open. `Last-Event-ID` resumes
//! like `cursor` (and wins over it, as a browser's `EventSource` reconnects
//! with the same URL). A cursor the engine cannot serve change by change (older
//! than the change log's horizon, or ahead of the latest change) gets an
//! `event: reset`: pull, then go on from the reset's `id`.
//!
//! Streams are bounded by `live.max_subscribers` (503 with `Retry-After`
//! beyond), scan at most [`STEP_RECORDS`] records per look so a subscriber far
//! behind holds the engine's read lock briefly, and end when the server starts
//! shutting down.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::time::Instant;
use tracing::debug;
use warp::http::{HeaderValue, StatusCode, Uri, header};
use warp::reply::Response;
use warp::{Filter, Rejection};

use crate::api::auth::Principal;
use crate::api::problem::Problem;
use crate::api::routes::{answer, blocking, caller, with_state};
use crate::api::serve::StreamedBody;
use crate::api::state::AppState;
use crate::config::LiveConfig;
use crate::engine::{ScanRequest, ScannedState, TableScope};

/// At most this many records per look at the engine.
pub(crate) const STEP_RECORDS: usize = 1_000;
/// A look stops after the record that reaches this many bytes of ids and rows.
const STEP_BYTES: usize = 4 << 20;
/// How long a refused subscriber is asked to wait.
const RETRY_AFTER: Duration = Duration::from_secs(5);
/// How often a stream whose latest announced change is not yet durable looks
/// again (a failing journal); otherwise it waits for the next change.
const NOT_DURABLE_RETRY: Duration = Duration::from_millis(200);

/// What long polls and change streams share, one per server.
#[derive(Clone, Debug)]
pub(crate) struct Live {
    subscribers: Arc<Semaphore>,
    shutdown: watch::Receiver<bool>,
}

impl Live {
    pub(crate) fn new(config: &LiveConfig, shutdown: watch::Receiver<bool>) -> Live {
        Live {
            subscribers: Arc::new(Semaphore::new(config.max_subscribers)),
            shutdown,
        }
    }

    /// Resolves once the server starts shutting down (or is gone).
    pub(crate) fn stopping(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut shutdown = self.shutdown.clone();
        async move {
            let _ = shutdown.wait_for(|stop| *stop).await;
        }
    }
}

/// The extra time a request may take beyond `server.request_timeout`: a long
/// poll's wait (at most `live.max_wait_ms`) is not counted against it, so a
/// long poll within `max_wait_ms` is never cut by the request timeout. The
/// pulls it runs still are (each one, and its answer, within the timeout).
pub(crate) fn long_poll_allowance(uri: &Uri, config: &LiveConfig) -> Duration {
    let asks_to_wait = uri.path() == "/v1/sync/pull"
        && uri.query().is_some_and(|query| {
            query
                .split('&')
                .any(|pair| pair.split('=').next() == Some("wait_ms"))
        });
    if asks_to_wait {
        Duration::from_millis(config.max_wait_ms)
    } else {
        Duration::ZERO
    }
}

fn with_live(
    live: Live,
) -> impl Filter<Extract = (Live,), Error = std::convert::Infallible> + Clone {
    warp::any().map(move || live.clone())
}

pub(crate) fn routes(
    state: AppState,
    live: Live,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    warp::path!("v1" / "sync" / "stream")
        .and(warp::get())
        .and(with_state(state.clone()))
        .and(caller(state))
        .and(warp::query::<StreamParams>())
        .and(warp::header::optional::<String>("last-event-id"))
        .and(with_live(live))
        .then(|state, principal, params, last, live| {
            answer(stream(state, principal, params, last, live))
        })
}

/// Where a change stream starts.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct StreamParams {
    /// Table names, comma-separated.
    tables: Option<String>,
    /// Announce the changes after this sequence number (the `next_cursor` of
    /// the last pull, or the last event's `id`); the latest change when absent
    /// (only changes from now on). `Last-Event-ID` wins over it.
    cursor: Option<u64>,
}

/// The `data` of an `event: change`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct ChangeEvent<'a> {
    /// The sequence number of the record's latest change (also the event's `id`).
    seq: u64,
    table: &'a str,
    /// The record's id; absent when the record left the caller's reach.
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    /// The change deleted the record.
    deleted: bool,
    /// The record is out of the caller's reach now: pull to drop any copy.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    left: bool,
}

/// The `data` of an `event: reset`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct ResetEvent {
    /// `cursor_too_old` or `cursor_ahead`.
    reason: &'static str,
    /// The cursor the stream was at.
    cursor: u64,
    /// The oldest cursor the change log serves change by change.
    horizon: u64,
    /// The stream goes on after this sequence number (the event's `id`).
    latest: u64,
}

/// A stream of the changes to some tables, as server-sent events. Same
/// credentials as a pull; only rows the caller may see are announced.
#[utoipa::path(get, path = "/v1/sync/stream", tag = "sync", security(("bearer" = [])),
    params(StreamParams,
        ("Last-Event-ID" = Option<u64>, Header, description = "Resume after this sequence number (wins over `cursor`)")),
    responses(
        (status = 200, description = "`text/event-stream`: `event: change` with `id: <seq>` and `data:` a `ChangeEvent` (JSON) per changed record, in sequence order; `event: reset` with a `ResetEvent` when the cursor cannot be served (pull, then go on); `: heartbeat` comments when idle. Ends when the server shuts down.",
            content_type = "text/event-stream", body = String),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 404, body = Problem),
        (status = 503, body = Problem, description = "`live.max_subscribers` streams are open: retry after `Retry-After`")))]
pub(crate) async fn stream(
    state: AppState,
    principal: Principal,
    params: StreamParams,
    last_event_id: Option<String>,
    live: Live,
) -> Result<Response, Problem> {
    let tables = tables_of(&state, &principal, params.tables.as_deref())?;
    let resume = last_event_id
        .map(|text| {
            text.trim().parse::<u64>().map_err(|_| {
                Problem::bad_request(
                    "bad_last_event_id",
                    format!("`Last-Event-ID` must be a sequence number, not `{text}`"),
                )
            })
        })
        .transpose()?;
    let Ok(permit) = Arc::clone(&live.subscribers).try_acquire_owned() else {
        let mut problem = Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_subscribers",
            format!(
                "{} change streams are open, the most this server takes; retry later or long-poll `POST /v1/sync/pull?wait_ms=`",
                state.config().live.max_subscribers
            ),
        );
        problem.retry_after = Some(RETRY_AFTER);
        return Err(problem);
    };
    // Subscribed before the first look: a change made from here on wakes it.
    let changes = state.database().watch_seq();
    let cursor = resume
        .or(params.cursor)
        .unwrap_or_else(|| state.database().latest_seq());
    let heartbeat = Duration::from_millis(state.config().live.heartbeat_ms);
    let (sender, receiver) = mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    let subscriber = Subscriber {
        open: Open::new(&state, permit),
        state,
        principal,
        scopes: tables.into_iter().map(TableScope::all).collect(),
        cursor,
        changes,
        sender,
        heartbeat,
        last_sent: Instant::now(),
    };
    tokio::spawn(subscriber.run(live.stopping()));
    let mut response = StreamedBody::response(receiver);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // Proxies that buffer answers (nginx) pass this one through as it comes.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

/// The tables named, each existing and visible to the caller.
fn tables_of(
    state: &AppState,
    principal: &Principal,
    tables: Option<&str>,
) -> Result<Vec<String>, Problem> {
    let names: Vec<String> = tables
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .map(str::to_owned)
        .collect();
    if names.is_empty() {
        return Err(Problem::bad_request(
            "no_tables",
            "name the tables to watch: `?tables=notes,tasks`",
        ));
    }
    for name in &names {
        state.access().check_visible(principal, name)?;
        if state.database().schema(name).is_none() {
            return Err(Problem::no_table(name));
        }
    }
    Ok(names)
}

/// An open stream, counted in the metrics while it lasts; its permit goes
/// back when it ends.
struct Open {
    state: AppState,
    _permit: OwnedSemaphorePermit,
}

impl Open {
    fn new(state: &AppState, permit: OwnedSemaphorePermit) -> Open {
        state.metrics().stream_opened();
        Open {
            state: state.clone(),
            _permit: permit,
        }
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.state.metrics().stream_closed();
    }
}

struct Subscriber {
    open: Open,
    state: AppState,
    principal: Principal,
    scopes: Vec<TableScope>,
    /// Every visible change up to it was announced.
    cursor: u64,
    changes: watch::Receiver<u64>,
    sender: mpsc::Sender<Result<Bytes, std::io::Error>>,
    heartbeat: Duration,
    last_sent: Instant,
}

/// What ended a wait.
enum Wake {
    Look,
    Heartbeat,
    End,
}

/// One look at the engine.
enum Step {
    Events {
        text: String,
        cursor: u64,
        more: bool,
    },
    Reset(ResetEvent),
}

impl Subscriber {
    async fn run(mut self, stopping: impl std::future::Future<Output = ()>) {
        let mut stopping = std::pin::pin!(stopping);
        let label = self.principal.label();
        debug!(caller = %label, cursor = self.cursor, "change stream opened");
        let mut more = true;
        loop {
            if more {
                let step = tokio::select! {
                    step = self.look() => step,
                    () = stopping.as_mut() => break,
                };
                let (text, next, again) = match step {
                    Ok(Step::Events { text, cursor, more }) => (text, cursor, more),
                    Ok(Step::Reset(reset)) => {
                        let next = reset.latest;
                        (event("reset", next, &reset), next, true)
                    }
                    Err(problem) => {
                        let text = format!(
                            "event: error\ndata: {}\n\n",
                            serde_json::to_string(&problem).unwrap_or_default()
                        );
                        let _ = self.send(text, stopping.as_mut()).await;
                        break;
                    }
                };
                self.cursor = next;
                more = again;
                if !text.is_empty() && !self.send(text, stopping.as_mut()).await {
                    break;
                }
                if more {
                    continue;
                }
            }
            // Caught up: wait for a change, a heartbeat, or the end.
            let behind = self.cursor < *self.changes.borrow();
            let retry = async {
                if behind {
                    tokio::time::sleep(NOT_DURABLE_RETRY).await;
                } else {
                    std::future::pending::<()>().await;
                }
            };
            let heartbeat_at = self.last_sent + self.heartbeat;
            let wake = tokio::select! {
                changed = self.changes.changed() => {
                    if changed.is_err() { Wake::End } else { Wake::Look }
                }
                () = retry => Wake::Look,
                () = tokio::time::sleep_until(heartbeat_at) => Wake::Heartbeat,
                () = self.sender.closed() => Wake::End,
                () = stopping.as_mut() => Wake::End,
            };
            match wake {
                Wake::Look => more = true,
                Wake::Heartbeat => {
                    if !self
                        .send(": heartbeat\n\n".to_owned(), stopping.as_mut())
                        .await
                    {
                        break;
                    }
                }
                Wake::End => break,
            }
        }
        debug!(caller = %label, cursor = self.cursor, "change stream closed");
        drop(self.open);
    }

    /// Sends text; false when the client is gone or the server stops.
    async fn send(
        &mut self,
        text: String,
        stopping: std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
    ) -> bool {
        let sent = tokio::select! {
            sent = self.sender.send(Ok(Bytes::from(text))) => sent.is_ok(),
            () = stopping => false,
        };
        self.last_sent = Instant::now();
        sent
    }

    /// The next changes after the cursor, at most [`STEP_RECORDS`] of them,
    /// read off the async threads (the scan holds the engine's read lock).
    async fn look(&self) -> Result<Step, Problem> {
        let state = self.state.clone();
        let principal = self.principal.clone();
        let scopes = self.scopes.clone();
        let cursor = self.cursor;
        blocking(move || look(&state, &principal, &scopes, cursor)).await
    }
}

fn look(
    state: &AppState,
    principal: &Principal,
    scopes: &[TableScope],
    cursor: u64,
) -> Result<Step, Problem> {
    let db = state.database();
    let (horizon, latest) = (db.horizon(), db.latest_seq());
    if cursor < horizon || cursor > latest {
        return Ok(Step::Reset(ResetEvent {
            reason: if cursor > latest {
                "cursor_ahead"
            } else {
                "cursor_too_old"
            },
            cursor,
            horizon,
            latest,
        }));
    }
    // The access rules as they are now: an admin may change them while the
    // stream is open.
    let access = state.access().reader(principal, db);
    let scan = db.scan_changes(&ScanRequest {
        scopes,
        cursor,
        base: cursor,
        fetch: &[],
        max_records: STEP_RECORDS,
        max_bytes: STEP_BYTES,
        payloads: false,
        access: access.as_ref(),
        defer: None,
    })?;
    let mut text = String::new();
    let mut last = cursor;
    for record in &scan.records {
        if record.seq <= cursor {
            continue;
        }
        let table = scopes[record.scope].table.as_str();
        let (id, deleted, left) = match &record.state {
            ScannedState::Live { .. } => (Some(record.id.as_str()), false, false),
            ScannedState::Deleted { .. } => (Some(record.id.as_str()), true, false),
            // It may be someone else's record now: its id is not told.
            ScannedState::Left => (None, false, true),
        };
        let data = ChangeEvent {
            seq: record.seq,
            table,
            id,
            deleted,
            left,
        };
        text.push_str(&event("change", record.seq, &data));
        last = last.max(record.seq);
    }
    // A scan that stops at a change not yet durable keeps its cursor where it
    // began, although it listed the records before: they are not announced
    // twice, because the records are in sequence order and `last` passed them.
    Ok(Step::Events {
        text,
        cursor: scan.next_cursor.max(last),
        more: scan.has_more,
    })
}

/// One event, as the text of the stream.
fn event(kind: &str, id: u64, data: &impl Serialize) -> String {
    let mut text = String::with_capacity(96);
    let data = serde_json::to_string(data).unwrap_or_default();
    let _ = write!(text, "event: {kind}\nid: {id}\ndata: {data}\n\n");
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_long_polls_get_more_time() {
        let config = LiveConfig::default();
        let allowance = |uri: &str| long_poll_allowance(&uri.parse().unwrap(), &config);
        assert_eq!(
            allowance("/v1/sync/pull?wait_ms=5000"),
            Duration::from_millis(config.max_wait_ms)
        );
        assert_eq!(allowance("/v1/sync/pull"), Duration::ZERO);
        assert_eq!(allowance("/v1/sync/pull?x_wait_ms=1"), Duration::ZERO);
        assert_eq!(allowance("/v1/sync/push?wait_ms=1"), Duration::ZERO);
    }

    #[test]
    fn events_are_server_sent_event_text() {
        let data = ChangeEvent {
            seq: 7,
            table: "notes",
            id: Some("n1"),
            deleted: false,
            left: false,
        };
        assert_eq!(
            event("change", 7, &data),
            "event: change\nid: 7\ndata: {\"seq\":7,\"table\":\"notes\",\"id\":\"n1\",\"deleted\":false}\n\n"
        );
        let left = ChangeEvent {
            seq: 8,
            table: "notes",
            id: None,
            deleted: false,
            left: true,
        };
        assert!(event("change", 8, &left).contains("\"left\":true"));
        assert!(!event("change", 8, &left).contains("\"id\""));
    }
}

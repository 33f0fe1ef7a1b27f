//! The routes, as warp filters, and what every handler shares: authentication,
//! body limits, JSON and problem answers.

use std::convert::Infallible;
use std::future::Future;

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;
use warp::http::{HeaderValue, StatusCode, header};
use warp::reject::Reject;
use warp::reply::Response;
use warp::{Filter, Rejection};

use crate::api::auth::Principal;
use crate::api::problem::Problem;
use crate::api::state::AppState;

#[cfg(feature = "cluster")]
pub(crate) mod cluster;
pub(crate) mod conflicts;
pub(crate) mod live;
pub(crate) mod records;
pub(crate) mod schema;
pub(crate) mod sync;
pub(crate) mod system;
pub(crate) mod tables;
pub(crate) mod transfer;
pub(crate) mod webhooks;

/// The content type of sync protocol messages (`docs/PROTOCOL.md`).
pub const SYNC_CONTENT_TYPE: &str = "application/vnd.mobilesyncdb";

/// A problem raised while a request was being matched (authentication, body
/// limits), answered by [`recover`].
#[derive(Debug)]
pub(crate) struct Rejected(pub(crate) Problem);

impl Reject for Rejected {}

/// Every route of the API. `shutdown` turns true when the server starts
/// shutting down: long polls and change streams end then, so they never hold
/// the drain for `server.shutdown_grace`.
pub fn all(
    state: AppState,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> impl Filter<Extract = (Response,), Error = Infallible> + Clone {
    let live = live::Live::new(&state.config().live, shutdown);
    let routes = system::routes(state.clone())
        .or(tables::routes(state.clone()))
        .unify()
        .or(conflicts::routes(state.clone()))
        .unify()
        .or(schema::routes(state.clone()))
        .unify()
        .or(records::routes(state.clone()))
        .unify()
        .or(sync::routes(state.clone(), live.clone()))
        .unify()
        .or(live::routes(state.clone(), live))
        .unify()
        .or(webhooks::routes(state.clone()))
        .unify()
        .or(transfer::routes(state.clone()))
        .unify();
    #[cfg(feature = "cluster")]
    let routes = routes.or(cluster::routes(state)).unify();
    #[cfg(not(feature = "cluster"))]
    drop(state);
    routes.recover(recover).unify()
}

/// The shared state, for handlers.
pub(crate) fn with_state(
    state: AppState,
) -> impl Filter<Extract = (AppState,), Error = Infallible> + Clone {
    warp::any().map(move || state.clone())
}

/// The authenticated caller; a 401 problem otherwise.
pub(crate) fn caller(
    state: AppState,
) -> impl Filter<Extract = (Principal,), Error = Rejection> + Clone {
    warp::header::optional::<String>("authorization").and_then(move |header: Option<String>| {
        let state = state.clone();
        async move {
            state
                .authenticate(header.as_deref())
                .map_err(|problem| warp::reject::custom(Rejected(problem)))
        }
    })
}

/// A request body of at most `limit` bytes with a `Content-Length` (411
/// without one, 413 above the limit).
pub(crate) fn body(limit: u64) -> impl Filter<Extract = (Bytes,), Error = Rejection> + Clone {
    warp::body::content_length_limit(limit).and(warp::body::bytes())
}

/// A JSON body, parsed into `T` with a 400 problem naming what is wrong.
///
/// # Errors
///
/// 400 `bad_json` or 415 for a body that is not JSON.
pub(crate) fn parse_json<T: DeserializeOwned>(
    content_type: Option<&str>,
    bytes: &[u8],
) -> Result<T, Problem> {
    if let Some(kind) = content_type
        && !is_json(kind)
    {
        return Err(Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!("send `Content-Type: application/json`, not `{kind}`"),
        ));
    }
    serde_json::from_slice(bytes).map_err(|error| {
        Problem::bad_request("bad_json", format!("the body is not valid here: {error}"))
    })
}

pub(crate) fn is_json(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or("").trim();
    essence.eq_ignore_ascii_case("application/json") || essence.ends_with("+json")
}

/// A JSON answer.
pub(crate) fn json<T: Serialize>(status: StatusCode, value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => {
            let mut response = Response::new(body.into());
            *response.status_mut() = status;
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            response
        }
        Err(error) => {
            Problem::internal(format!("cannot encode the answer: {error}")).into_response()
        }
    }
}

/// A 204 answer.
pub(crate) fn no_content() -> Response {
    let mut response = Response::new(Vec::new().into());
    *response.status_mut() = StatusCode::NO_CONTENT;
    response
}

/// Answers a handler's result: its response, or its problem.
pub(crate) async fn answer(handler: impl Future<Output = Result<Response, Problem>>) -> Response {
    handler.await.unwrap_or_else(Problem::into_response)
}

/// Runs CPU-bound work (engine calls, encoding) off the async threads.
///
/// # Errors
///
/// 500 when the work panicked; the work's own problem otherwise.
pub(crate) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, Problem> + Send + 'static,
) -> Result<T, Problem> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|error| Problem::internal(format!("the request's work failed: {error}")))?
}

/// Turns every rejection into a problem document: ours, and warp's own (no
/// route, wrong method, body limits, headers).
pub(crate) async fn recover(rejection: Rejection) -> Result<Response, Infallible> {
    let problem = if let Some(Rejected(problem)) = rejection.find::<Rejected>() {
        problem.clone()
    } else if rejection.is_not_found() {
        Problem::new(
            StatusCode::NOT_FOUND,
            "no_route",
            "no such route; see /openapi.json",
        )
    } else if rejection.find::<warp::reject::PayloadTooLarge>().is_some() {
        Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            "the request body is larger than this route accepts",
        )
    } else if rejection.find::<warp::reject::LengthRequired>().is_some() {
        Problem::new(
            StatusCode::LENGTH_REQUIRED,
            "length_required",
            "send the body with a Content-Length header",
        )
    } else if rejection.find::<warp::reject::MethodNotAllowed>().is_some() {
        Problem::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "this route does not take that method; see /openapi.json",
        )
    } else if rejection.find::<warp::reject::InvalidQuery>().is_some() {
        Problem::bad_request(
            "bad_query_string",
            "the query string is not valid for this route",
        )
    } else if let Some(missing) = rejection.find::<warp::reject::MissingHeader>() {
        Problem::bad_request(
            "missing_header",
            format!("the `{}` header is required", missing.name()),
        )
    } else if let Some(invalid) = rejection.find::<warp::reject::InvalidHeader>() {
        Problem::bad_request(
            "bad_header",
            format!("the `{}` header is not valid", invalid.name()),
        )
    } else if rejection
        .find::<warp::reject::UnsupportedMediaType>()
        .is_some()
    {
        Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "this route does not take that content type",
        )
    } else {
        tracing::warn!(?rejection, "unhandled rejection");
        Problem::bad_request("bad_request", "the request could not be read")
    };
    Ok(problem.into_response())
}

//! Webhook endpoints (admin): registration, secret rotation, the delivery log,
//! replay, and the event log they deliver from.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Rejection};

use crate::api::auth::Principal;
use crate::api::problem::Problem;
use crate::api::routes::{answer, blocking, body, caller, json, parse_json, with_state};
use crate::api::state::{AppState, require_admin};
use crate::engine::Event;
use crate::webhook::{EndpointUpdate, EndpointView, NewEndpoint, WebhookError, guard};

pub(crate) fn routes(
    state: AppState,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    let limit = state.config().limits.max_json_body_bytes;
    let admin = with_state(state.clone()).and(caller(state));
    let content = warp::header::optional::<String>("content-type").and(body(limit));
    let create = warp::path!("v1" / "webhooks")
        .and(warp::post())
        .and(admin.clone())
        .and(content.clone())
        .then(|state, principal, kind: Option<String>, bytes: Bytes| {
            answer(create_webhook(state, principal, kind, bytes))
        });
    let list = warp::path!("v1" / "webhooks")
        .and(warp::get())
        .and(admin.clone())
        .then(|state, principal| answer(list_webhooks(state, principal)));
    let get = warp::path!("v1" / "webhooks" / String)
        .and(warp::get())
        .and(admin.clone())
        .then(|id, state, principal| answer(get_webhook(id, state, principal)));
    let update = warp::path!("v1" / "webhooks" / String)
        .and(warp::patch())
        .and(admin.clone())
        .and(content.clone())
        .then(|id, state, principal, kind: Option<String>, bytes: Bytes| {
            answer(update_webhook(id, state, principal, kind, bytes))
        });
    let delete = warp::path!("v1" / "webhooks" / String)
        .and(warp::delete())
        .and(admin.clone())
        .then(|id, state, principal| answer(delete_webhook(id, state, principal)));
    let rotate = warp::path!("v1" / "webhooks" / String / "rotate")
        .and(warp::post())
        .and(admin.clone())
        .then(|id, state, principal| answer(rotate_secret(id, state, principal)));
    let deliveries = warp::path!("v1" / "webhooks" / String / "deliveries")
        .and(warp::get())
        .and(admin.clone())
        .and(warp::query::<LimitQuery>())
        .then(|id, state, principal, query| answer(list_deliveries(id, state, principal, query)));
    let replay = warp::path!("v1" / "webhooks" / String / "replay")
        .and(warp::post())
        .and(admin.clone())
        .and(content)
        .then(|id, state, principal, kind: Option<String>, bytes: Bytes| {
            answer(replay(id, state, principal, kind, bytes))
        });
    let events = warp::path!("v1" / "events")
        .and(warp::get())
        .and(admin)
        .and(warp::query::<EventsQuery>())
        .then(|state, principal, query| answer(list_events(state, principal, query)));
    create
        .or(list)
        .unify()
        .or(get)
        .unify()
        .or(update)
        .unify()
        .or(delete)
        .unify()
        .or(rotate)
        .unify()
        .or(deliveries)
        .unify()
        .or(replay)
        .unify()
        .or(events)
        .unify()
}

impl From<WebhookError> for Problem {
    fn from(error: WebhookError) -> Problem {
        let status = match &error {
            WebhookError::UnknownEndpoint { .. } => StatusCode::NOT_FOUND,
            WebhookError::TooMany { .. } => StatusCode::CONFLICT,
            WebhookError::NotRetained { .. } => StatusCode::GONE,
            WebhookError::Engine(_) => {
                let WebhookError::Engine(engine) = error else {
                    unreachable!("matched above")
                };
                return Problem::from(engine);
            }
            _ => StatusCode::BAD_REQUEST,
        };
        Problem::new(status, error.code(), error.to_string())
    }
}

/// A registered endpoint, with its secret: shown only when created.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct CreatedEndpoint {
    #[serde(flatten)]
    #[schema(value_type = Object)]
    endpoint: EndpointView,
    /// The signing secret (`whsec_…`): keep it, it is not shown again.
    secret: String,
}

/// A rotated secret.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct RotatedSecret {
    /// The new signing secret.
    secret: String,
    /// Until when (epoch ms) deliveries are also signed with the previous one.
    previous_valid_until_ms: u64,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub(crate) struct LimitQuery {
    /// At most this many entries, newest first (default 100, at most 1,000).
    limit: Option<usize>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub(crate) struct EventsQuery {
    /// Events with a greater id (default 0).
    after: Option<u64>,
    /// At most this many (default 100, at most 1,000).
    limit: Option<usize>,
}

/// Where a replay starts.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReplayRequest {
    /// The first event id to send again.
    from: u64,
}

/// A page of events.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct EventPage {
    #[schema(value_type = Vec<Object>)]
    events: Vec<Event>,
    /// The oldest retained event id.
    oldest: u64,
    /// The newest event id.
    latest: u64,
}

/// The body of a new endpoint.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[allow(dead_code)]
pub(crate) struct NewEndpointDoc {
    /// `http` or `https`; refused when the host is (or resolves only to) an
    /// internal address, unless `webhooks.allow_networks` admits it.
    url: String,
    /// Event kinds, or `"*"`: record.created, record.changed, record.deleted,
    /// conflict.detected, conflict.opened, conflict.resolved, schema.changed,
    /// client.too_stale.
    events: Vec<String>,
    /// Only events of these tables (default: all).
    tables: Option<Vec<String>>,
    description: Option<String>,
    /// A signing secret (`whsec_<base64>`); generated when absent.
    secret: Option<String>,
}

/// Registers a webhook endpoint (admin).
#[utoipa::path(post, path = "/v1/webhooks", tag = "webhooks", security(("bearer" = [])),
    request_body = NewEndpointDoc,
    responses((status = 201, body = CreatedEndpoint), (status = 400, body = Problem),
        (status = 401, body = Problem), (status = 403, body = Problem), (status = 409, body = Problem)))]
pub(crate) async fn create_webhook(
    state: AppState,
    principal: Principal,
    content_type: Option<String>,
    bytes: Bytes,
) -> Result<Response, Problem> {
    require_admin(&principal)?;
    let request: NewEndpoint = parse_json(content_type.as_deref(), &bytes)?;
    request.check(state.webhooks().policy())?;
    // A host name must resolve to at least one permitted address; every
    // delivery is checked again at connect time.
    guard::check_resolved(&request.url, state.webhooks().policy())
        .await
        .map_err(WebhookError::from)?;
    let endpoint = blocking(move || {
        let endpoint = state.webhooks().register(request)?;
        let view = state.webhooks().view(&endpoint.id)?;
        let secret = endpoint
            .secrets
            .first()
            .map(|keyed| keyed.secret.to_string())
            .unwrap_or_default();
        Ok(CreatedEndpoint {
            endpoint: view,
            secret,
        })
    })
    .await?;
    Ok(json(StatusCode::CREATED, &endpoint))
}

/// Every webhook endpoint with its delivery state (admin).
#[utoipa::path(get, path = "/v1/webhooks", tag = "webhooks", security(("bearer" = [])),
    responses((status = 200, body = Vec<Object>), (status = 401, body = Problem), (status = 403, body = Problem)))]
pub(crate) async fn list_webhooks(
    state: AppState,
    principal: Principal,
) -> Result<Response, Problem> {
    require_admin(&principal)?;
    Ok(json(StatusCode::OK, &state.webhooks().list()))
}

/// One webhook endpoint (admin).
#[utoipa::path(get, path = "/v1/webhooks/{id}", tag = "webhooks", security(("bearer" = [])),
    params(("id" = String, Path, description = "The endpoint's id")),
    responses((status = 200, body = Object), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub(crate) async fn get_webhook(
    id: String,
    state: AppState,
    principal: Principal,
) -> Result<Response, Problem> {
    require_admin(&principal)?;
    Ok(json(StatusCode::OK, &state.webhooks().view(&id)?))
}

/// Changes an endpoint: url, events, tables, description, enabled (admin).
#[utoipa::path(patch, path = "/v1/webhooks/{id}", tag = "webhooks", security(("bearer" = [])),
    params(("id" = String, Path, description = "The endpoint's id")),
    request_body = Object,
    responses((status = 200, body = Object), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem)))]
pub(crate) async fn update_webhook(
    id: String,
    state: AppState,
    principal: Principal,
    content_type: Option<String>,
    bytes: Bytes,
) -> Result<Response, Problem> {
    require_admin(&principal)?;
    let update: EndpointUpdate = parse_json(content_type.as_deref(), &bytes)?;
    update.check(state.webhooks().policy())?;
    if let Some(url) = &update.url {
        guard::check_resolved(url, state.webhooks().policy())
            .await
            .map_err(WebhookError::from)?;
    }
    let view = blocking(move || Ok(state.webhooks().update(&id, update)?)).await?;
    Ok(json(StatusCode::OK, &view))
}

/// Removes an endpoint (admin).
#[utoipa::path(delete, path = "/v1/webhooks/{id}", tag = "webhooks", security(("bearer" = [])),
    params(("id" = String, Path, description = "The endpoint's id")),
    responses((status = 204, description = "Removed"), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub(crate) async fn delete_webhook(
    id: String,
    state: AppState,
    principal: Principal,
) -> Result<Response, Problem> {
    require_admin(&principal)?;
    blocking(move || Ok(state.webhooks().delete(&id)?)).await?;
    let mut response = Response::new(Vec::new().into());
    *response.status_mut() = StatusCode::NO_CONTENT;
    Ok(response)
}

/// Gives an endpoint a new signing secret; the previous one keeps signing
/// for `webhooks.rotation_grace_ms` (admin).
#[utoipa::path(post, path = "/v1/webhooks/{id}/rotate", tag = "webhooks", security(("bearer" = [])),
    params(("id" = String, Path, description = "The endpoint's id")),
    responses((status = 200, body = RotatedSecret), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub(crate) async fn rotate_secret(
    id: String,
    state: AppState,
    principal: Principal,
) -> Result<Response, Problem> {
    require_admin(&principal)?;
    let (secret, until) = blocking(move || Ok(state.webhooks().rotate(&id)?)).await?;
    let rotated = RotatedSecret {
        secret: secret.to_string(),
        previous_valid_until_ms: until,
    };
    Ok(json(StatusCode::OK, &rotated))
}

/// An endpoint's delivery log, newest first (admin).
#[utoipa::path(get, path = "/v1/webhooks/{id}/deliveries", tag = "webhooks", security(("bearer" = [])),
    params(("id" = String, Path, description = "The endpoint's id"), LimitQuery),
    responses((status = 200, body = Vec<Object>), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub(crate) async fn list_deliveries(
    id: String,
    state: AppState,
    principal: Principal,
    query: LimitQuery,
) -> Result<Response, Problem> {
    require_admin(&principal)?;
    let limit = query.limit.unwrap_or(100).clamp(1, 1_000);
    Ok(json(
        StatusCode::OK,
        &state.webhooks().deliveries(&id, limit)?,
    ))
}

/// Sends an endpoint every event from `from` on again, with their original
/// ids, and enables it if it was disabled (admin).
#[utoipa::path(post, path = "/v1/webhooks/{id}/replay", tag = "webhooks", security(("bearer" = [])),
    params(("id" = String, Path, description = "The endpoint's id")),
    request_body = ReplayRequest,
    responses((status = 200, body = Object), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 410, body = Problem, description = "The event is older than the retained ones")))]
pub(crate) async fn replay(
    id: String,
    state: AppState,
    principal: Principal,
    content_type: Option<String>,
    bytes: Bytes,
) -> Result<Response, Problem> {
    require_admin(&principal)?;
    let request: ReplayRequest = parse_json(content_type.as_deref(), &bytes)?;
    let view = blocking(move || Ok(state.webhooks().replay(&id, request.from)?)).await?;
    Ok(json(StatusCode::OK, &view))
}

/// The retained events, as webhooks deliver them (admin).
#[utoipa::path(get, path = "/v1/events", tag = "webhooks", security(("bearer" = [])),
    params(EventsQuery),
    responses((status = 200, body = EventPage), (status = 401, body = Problem), (status = 403, body = Problem)))]
pub(crate) async fn list_events(
    state: AppState,
    principal: Principal,
    query: EventsQuery,
) -> Result<Response, Problem> {
    require_admin(&principal)?;
    let limit = query.limit.unwrap_or(100).clamp(1, 1_000);
    let db = state.database();
    let events = db.events_after(query.after.unwrap_or(0), limit);
    let (oldest, latest) = db.event_range();
    let page = EventPage {
        events,
        oldest,
        latest,
    };
    Ok(json(StatusCode::OK, &page))
}

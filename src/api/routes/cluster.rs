//! A cluster node's routes (admin keys only).
//!
//! - `GET /v1/cluster`: the node's view: peers, stream position, lag.
//! - `GET /v1/cluster/heads?table=&from=`: a page of a table's records with
//!   their heads, for a peer's anti-entropy pass.
//! - `POST /v1/cluster/sync?table=&id=`: one round of the automerge sync
//!   protocol for a record: the body is the peer's sync message, the answer
//!   this node's (204 when it has nothing the peer lacks).
//! - `POST /v1/cluster/repair`: an anti-entropy pass now, against every live
//!   peer; the answer says what it found.

use bytes::Bytes;
use serde::Deserialize;
use warp::http::{HeaderValue, StatusCode, header};
use warp::reply::Response;
use warp::{Filter, Rejection};

use crate::api::auth::Principal;
use crate::api::problem::Problem;
use crate::api::routes::{answer, blocking, body, caller, json, no_content, with_state};
use crate::api::state::{AppState, require_admin};
use crate::cluster::{Cluster, ClusterStatus, HeadsPage, RepairReport};

/// The largest sync message a peer may send (16 MiB).
const MAX_SYNC_MESSAGE: u64 = 16 << 20;

pub(crate) fn routes(
    state: AppState,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    let status = warp::path!("v1" / "cluster")
        .and(warp::get())
        .and(with_state(state.clone()))
        .and(caller(state.clone()))
        .then(|state, principal| answer(cluster_status(state, principal)));
    let heads = warp::path!("v1" / "cluster" / "heads")
        .and(warp::get())
        .and(with_state(state.clone()))
        .and(caller(state.clone()))
        .and(warp::query::<HeadsParams>())
        .then(|state, principal, params| answer(heads(state, principal, params)));
    let sync = warp::path!("v1" / "cluster" / "sync")
        .and(warp::post())
        .and(with_state(state.clone()))
        .and(caller(state.clone()))
        .and(warp::query::<SyncParams>())
        .and(body(MAX_SYNC_MESSAGE))
        .then(|state, principal, params, bytes| answer(sync(state, principal, params, bytes)));
    let repair = warp::path!("v1" / "cluster" / "repair")
        .and(warp::post())
        .and(with_state(state.clone()))
        .and(caller(state))
        .then(|state, principal| answer(repair(state, principal)));
    status.or(heads).unify().or(sync).unify().or(repair).unify()
}

fn node(state: &AppState) -> Result<Cluster, Problem> {
    state.cluster().cloned().ok_or_else(|| {
        Problem::not_found("this server is no cluster node (`cluster.enabled` is false)")
    })
}

/// The node's view of its cluster.
#[utoipa::path(get, path = "/v1/cluster", tag = "cluster", security(("bearer" = [])),
    responses((status = 200, description = "Peers, stream position, applied position, lag", body = Object),
        (status = 404, description = "Not a cluster node", body = Problem)))]
pub(crate) async fn cluster_status(
    state: AppState,
    principal: Principal,
) -> Result<Response, Problem> {
    require_admin(&principal)?;
    let status: ClusterStatus = node(&state)?.status();
    Ok(json(StatusCode::OK, &status))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub(crate) struct HeadsParams {
    table: String,
    #[serde(default)]
    from: u32,
}

/// A page of a table's records with their heads.
#[utoipa::path(get, path = "/v1/cluster/heads", tag = "cluster", security(("bearer" = [])),
    params(HeadsParams),
    responses((status = 200, description = "Records and heads; `next` starts the next page", body = Object),
        (status = 404, description = "Not a cluster node, or no such table", body = Problem)))]
pub(crate) async fn heads(
    state: AppState,
    principal: Principal,
    params: HeadsParams,
) -> Result<Response, Problem> {
    require_admin(&principal)?;
    node(&state)?;
    let page: HeadsPage = blocking(move || {
        crate::cluster::heads_page(state.database(), &params.table, params.from)
            .map_err(|_| Problem::no_table(&params.table))
    })
    .await?;
    Ok(json(StatusCode::OK, &page))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub(crate) struct SyncParams {
    table: String,
    id: String,
}

/// One round of the automerge sync protocol for a record.
#[utoipa::path(post, path = "/v1/cluster/sync", tag = "cluster", security(("bearer" = [])),
    params(SyncParams),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "The peer's automerge sync message"),
    responses((status = 200, description = "This node's sync message", content_type = "application/octet-stream"),
        (status = 204, description = "This node has nothing the peer lacks"),
        (status = 400, description = "Not a sync message", body = Problem)))]
pub(crate) async fn sync(
    state: AppState,
    principal: Principal,
    params: SyncParams,
    bytes: Bytes,
) -> Result<Response, Problem> {
    require_admin(&principal)?;
    node(&state)?;
    let reply = blocking(move || {
        crate::cluster::answer_sync(state.database(), &params.table, &params.id, &bytes)
            .map_err(|reason| Problem::bad_request("bad_sync_message", reason))
    })
    .await?;
    let Some(reply) = reply else {
        return Ok(no_content());
    };
    let mut response = Response::new(reply.into());
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    Ok(response)
}

/// An anti-entropy pass now, against every live peer.
#[utoipa::path(post, path = "/v1/cluster/repair", tag = "cluster", security(("bearer" = [])),
    responses((status = 200, description = "What the pass compared and repaired", body = Object),
        (status = 503, description = "A peer could not be compared", body = Problem)))]
pub(crate) async fn repair(state: AppState, principal: Principal) -> Result<Response, Problem> {
    require_admin(&principal)?;
    let report: RepairReport = node(&state)?
        .repair_now()
        .await
        .map_err(|reason| Problem::new(StatusCode::SERVICE_UNAVAILABLE, "repair_failed", reason))?;
    Ok(json(StatusCode::OK, &report))
}

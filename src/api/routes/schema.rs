//! Schema versions (admin keys only).
//!
//! - `GET /v1/schema`: the current version as a schema document.
//! - `GET /v1/schema/versions`, `GET /v1/schema/versions/{version}`: the history.
//! - `GET /v1/schema/diff?from=&to=`: the diff between two stored versions
//!   (JSON, or text with `Accept: text/plain`).
//! - `POST /v1/schema/plan`: what applying a document would do, changing nothing.
//! - `PUT /v1/schema`: applies a document as the next version (JSON, or TOML
//!   with `Content-Type: application/toml`); 409 with the report when a change
//!   cannot be migrated.
//! - `PUT /v1/schema/min-client-version`: the oldest version apps may state.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use warp::http::{HeaderValue, StatusCode, header};
use warp::reply::Response;
use warp::{Filter, Rejection};

use crate::api::auth::Principal;
use crate::api::problem::Problem;
use crate::api::routes::{answer, blocking, body, caller, is_json, json, parse_json, with_state};
use crate::api::state::{AppState, require_admin};
use crate::crdt::ClientId;
use crate::schema::SchemaDoc;

pub(crate) fn routes(
    state: AppState,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    let limit = state.config().limits.max_json_body_bytes;
    let doc_body = warp::header::optional::<String>("content-type").and(body(limit));
    let current = warp::path!("v1" / "schema")
        .and(warp::get())
        .and(with_state(state.clone()))
        .and(caller(state.clone()))
        .then(|state, principal| answer(get_schema(state, principal)));
    let versions = warp::path!("v1" / "schema" / "versions")
        .and(warp::get())
        .and(with_state(state.clone()))
        .and(caller(state.clone()))
        .then(|state, principal| answer(list_versions(state, principal)));
    let version = warp::path!("v1" / "schema" / "versions" / u32)
        .and(warp::get())
        .and(with_state(state.clone()))
        .and(caller(state.clone()))
        .then(|version, state, principal| answer(get_version(version, state, principal)));
    let diff = warp::path!("v1" / "schema" / "diff")
        .and(warp::get())
        .and(with_state(state.clone()))
        .and(caller(state.clone()))
        .and(warp::query::<DiffParams>())
        .and(warp::header::optional::<String>("accept"))
        .then(|state, principal, params, accept| {
            answer(diff_versions(state, principal, params, accept))
        });
    let plan = warp::path!("v1" / "schema" / "plan")
        .and(warp::post())
        .and(with_state(state.clone()))
        .and(caller(state.clone()))
        .and(doc_body.clone())
        .then(|state, principal, kind: Option<String>, bytes: Bytes| {
            answer(plan_schema(state, principal, kind, bytes))
        });
    let apply = warp::path!("v1" / "schema")
        .and(warp::put())
        .and(with_state(state.clone()))
        .and(caller(state.clone()))
        .and(doc_body.clone())
        .then(|state, principal, kind: Option<String>, bytes: Bytes| {
            answer(apply_schema(state, principal, kind, bytes))
        });
    let minimum = warp::path!("v1" / "schema" / "min-client-version")
        .and(warp::put())
        .and(with_state(state.clone()))
        .and(caller(state))
        .and(doc_body)
        .then(|state, principal, kind: Option<String>, bytes: Bytes| {
            answer(put_min_client_version(state, principal, kind, bytes))
        });
    current
        .or(versions)
        .unify()
        .or(version)
        .unify()
        .or(diff)
        .unify()
        .or(plan)
        .unify()
        .or(apply)
        .unify()
        .or(minimum)
        .unify()
}

/// The schema versions a database has had.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct SchemaVersions {
    /// The current version.
    current: u32,
    /// The oldest version apps may state.
    min_client_version: u32,
    /// Every version, oldest first (0: tables created before any document).
    versions: Vec<u32>,
}

/// The oldest schema version apps may state.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct MinClientVersion {
    min_client_version: u32,
}

/// Which stored versions to compare.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct DiffParams {
    /// The older version.
    from: u32,
    /// The newer version (the current one when absent).
    #[serde(default)]
    to: Option<u32>,
}

/// A schema document from a request body: JSON, or TOML with
/// `Content-Type: application/toml`.
fn read_doc(content_type: Option<&str>, bytes: &[u8]) -> Result<SchemaDoc, Problem> {
    let toml = content_type.is_some_and(|kind| {
        let essence = kind.split(';').next().unwrap_or("").trim();
        essence.eq_ignore_ascii_case("application/toml")
            || essence.eq_ignore_ascii_case("text/toml")
    });
    if !toml {
        if content_type.is_some_and(|kind| !is_json(kind)) {
            return Err(Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send a schema document as `application/json` or `application/toml`",
            ));
        }
        let text = std::str::from_utf8(bytes)
            .map_err(|_| Problem::bad_request("bad_schema_document", "the body is not UTF-8"))?;
        return SchemaDoc::from_json(text)
            .map_err(|error| Problem::bad_request("bad_schema_document", error.to_string()));
    }
    let text = std::str::from_utf8(bytes)
        .map_err(|_| Problem::bad_request("bad_schema_document", "the body is not UTF-8"))?;
    SchemaDoc::from_toml(text)
        .map_err(|error| Problem::bad_request("bad_schema_document", error.to_string()))
}

/// The current schema version as a document (admin).
#[utoipa::path(get, path = "/v1/schema", tag = "schema", security(("bearer" = [])),
    responses((status = 200, description = "The current schema document", body = Object),
        (status = 401, body = Problem), (status = 403, body = Problem)))]
pub(crate) async fn get_schema(state: AppState, principal: Principal) -> Result<Response, Problem> {
    require_admin(&principal)?;
    Ok(json(StatusCode::OK, &state.database().schema_doc()))
}

/// Every schema version (admin).
#[utoipa::path(get, path = "/v1/schema/versions", tag = "schema", security(("bearer" = [])),
    responses((status = 200, body = SchemaVersions), (status = 401, body = Problem), (status = 403, body = Problem)))]
pub(crate) async fn list_versions(
    state: AppState,
    principal: Principal,
) -> Result<Response, Problem> {
    require_admin(&principal)?;
    let history = state.database().schema_history();
    let answer = SchemaVersions {
        current: history.version(),
        min_client_version: history.min_client_version(),
        versions: history.versions().iter().map(|doc| doc.version).collect(),
    };
    Ok(json(StatusCode::OK, &answer))
}

/// One schema version as a document (admin).
#[utoipa::path(get, path = "/v1/schema/versions/{version}", tag = "schema", security(("bearer" = [])),
    params(("version" = u32, Path, description = "The schema version")),
    responses((status = 200, description = "The schema document of that version", body = Object),
        (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub(crate) async fn get_version(
    version: u32,
    state: AppState,
    principal: Principal,
) -> Result<Response, Problem> {
    require_admin(&principal)?;
    let doc = state
        .database()
        .schema_doc_at(version)
        .ok_or_else(|| no_version(version))?;
    Ok(json(StatusCode::OK, &doc))
}

fn no_version(version: u32) -> Problem {
    Problem::new(
        StatusCode::NOT_FOUND,
        "unknown_schema_version",
        format!("the database never had schema version {version}"),
    )
}

/// The diff between two stored schema versions (admin): JSON, or the text
/// `mobilesyncdb schema diff` prints with `Accept: text/plain`.
#[utoipa::path(get, path = "/v1/schema/diff", tag = "schema", security(("bearer" = [])),
    params(DiffParams),
    responses((status = 200, description = "The diff", body = Object),
        (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub(crate) async fn diff_versions(
    state: AppState,
    principal: Principal,
    params: DiffParams,
    accept: Option<String>,
) -> Result<Response, Problem> {
    require_admin(&principal)?;
    let db = state.database();
    let to = params.to.unwrap_or_else(|| db.schema_version());
    for version in [params.from, to] {
        if db.schema_doc_at(version).is_none() {
            return Err(no_version(version));
        }
    }
    let diff = db
        .schema_diff(params.from, to)
        .ok_or_else(|| no_version(to))?;
    if accept.is_some_and(|accept| accept.contains("text/plain")) {
        let mut response = Response::new(diff.to_string().into());
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        return Ok(response);
    }
    Ok(json(StatusCode::OK, &diff))
}

/// What applying a schema document would do: the diff, the steps, and what
/// blocks it with the records concerned. Changes nothing (admin).
#[utoipa::path(post, path = "/v1/schema/plan", tag = "schema", security(("bearer" = [])),
    request_body(content = Object, description = "A schema document (JSON, or TOML as application/toml)"),
    responses((status = 200, description = "The migration report; `blockers` is empty when it can be applied", body = Object),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 409, body = Problem, description = "The version is not newer than the current one")))]
pub(crate) async fn plan_schema(
    state: AppState,
    principal: Principal,
    content_type: Option<String>,
    bytes: Bytes,
) -> Result<Response, Problem> {
    require_admin(&principal)?;
    let doc = read_doc(content_type.as_deref(), &bytes)?;
    blocking(move || {
        let report = state.database().plan_schema(&doc)?;
        Ok(json(StatusCode::OK, &report))
    })
    .await
}

/// Applies a schema document as the next version (admin). Records are not
/// rewritten: they read through the new version from now on.
#[utoipa::path(put, path = "/v1/schema", tag = "schema", security(("bearer" = [])),
    request_body(content = Object, description = "A schema document (JSON, or TOML as application/toml)"),
    responses((status = 200, description = "The migration report, `applied: true`", body = Object),
        (status = 400, body = Problem, description = "Not a valid schema document"),
        (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 409, body = Problem, description = "A change cannot be migrated automatically (`report` lists the blockers and records) or the version is not newer: nothing changed"),
        (status = 507, body = Problem)))]
pub(crate) async fn apply_schema(
    state: AppState,
    principal: Principal,
    content_type: Option<String>,
    bytes: Bytes,
) -> Result<Response, Problem> {
    require_admin(&principal)?;
    let doc = read_doc(content_type.as_deref(), &bytes)?;
    blocking(move || {
        let report = state
            .database()
            .apply_schema(&doc, &ClientId::from("admin"))?;
        Ok(json(StatusCode::OK, &report))
    })
    .await
}

/// Sets the oldest schema version apps may state (admin); older apps get 426
/// `upgrade_required`.
#[utoipa::path(put, path = "/v1/schema/min-client-version", tag = "schema", security(("bearer" = [])),
    request_body = MinClientVersion,
    responses((status = 200, body = MinClientVersion),
        (status = 400, body = Problem, description = "Newer than the current version"),
        (status = 401, body = Problem), (status = 403, body = Problem)))]
pub(crate) async fn put_min_client_version(
    state: AppState,
    principal: Principal,
    content_type: Option<String>,
    bytes: Bytes,
) -> Result<Response, Problem> {
    require_admin(&principal)?;
    let request: MinClientVersion = parse_json(content_type.as_deref(), &bytes)?;
    blocking(move || {
        state
            .database()
            .set_min_client_version(request.min_client_version)?;
        Ok(json(StatusCode::OK, &request))
    })
    .await
}

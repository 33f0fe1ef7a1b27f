//! Merge policies at run time and the conflict log (admin keys only).
//!
//! - `GET /v1/policies`: the built-in policy kinds and the registered custom names.
//! - `GET|PUT /v1/tables/{table}/policies`: a table's policy and per-field overrides.
//! - `GET /v1/conflicts`, `GET /v1/conflicts/{id}`: the recorded conflicts.
//! - `POST /v1/conflicts/{id}/resolve`: closes an open manual conflict by
//!   writing the chosen value at the record's current state.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Rejection};

use crate::api::auth::Principal;
use crate::api::problem::Problem;
use crate::api::routes::{answer, blocking, body, caller, json, parse_json, with_state};
use crate::api::state::{AppState, require_admin};
use crate::crdt::{ClientId, PolicySpec, Value};
use crate::engine::{
    ConflictFilter, ConflictRecord, EngineError, FullAccess, PolicyChange, SchemaError,
};
use crate::schema::TableSchema;

/// Conflicts per page when the request names no `limit`.
pub const DEFAULT_CONFLICT_PAGE: usize = 100;
/// The largest `limit` a conflict page takes.
pub const MAX_CONFLICT_PAGE: usize = 1_000;

/// The built-in policy kinds, as `{"kind": ...}` names them.
pub const BUILTIN_POLICIES: [&str; 7] = [
    "last_writer_wins",
    "client_priority",
    "max",
    "min",
    "sum",
    "set_union",
    "manual",
];

pub(crate) fn routes(
    state: AppState,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    let limit = state.config().limits.max_json_body_bytes;
    let json_body = warp::header::optional::<String>("content-type").and(body(limit));
    let policies = warp::path!("v1" / "policies")
        .and(warp::get())
        .and(with_state(state.clone()))
        .and(caller(state.clone()))
        .then(|state, principal| answer(list_policies(state, principal)));
    let get_policies = warp::path!("v1" / "tables" / String / "policies")
        .and(warp::get())
        .and(with_state(state.clone()))
        .and(caller(state.clone()))
        .then(|table, state, principal| answer(get_table_policies(table, state, principal)));
    let put_policies = warp::path!("v1" / "tables" / String / "policies")
        .and(warp::put())
        .and(with_state(state.clone()))
        .and(caller(state.clone()))
        .and(json_body.clone())
        .then(
            |table, state, principal, kind: Option<String>, bytes: Bytes| {
                answer(put_table_policies(table, state, principal, kind, bytes))
            },
        );
    let list = warp::path!("v1" / "conflicts")
        .and(warp::get())
        .and(with_state(state.clone()))
        .and(caller(state.clone()))
        .and(warp::query::<ConflictParams>())
        .then(|state, principal, params| answer(list_conflicts(state, principal, params)));
    let one = warp::path!("v1" / "conflicts" / u64)
        .and(warp::get())
        .and(with_state(state.clone()))
        .and(caller(state.clone()))
        .then(|id, state, principal| answer(get_conflict(id, state, principal)));
    let resolve = warp::path!("v1" / "conflicts" / u64 / "resolve")
        .and(warp::post())
        .and(with_state(state.clone()))
        .and(caller(state))
        .and(json_body)
        .then(|id, state, principal, kind: Option<String>, bytes: Bytes| {
            answer(resolve_conflict(id, state, principal, kind, bytes))
        });
    policies
        .or(get_policies)
        .unify()
        .or(put_policies)
        .unify()
        .or(list)
        .unify()
        .or(one)
        .unify()
        .or(resolve)
        .unify()
}

/// The policies a table or field can name.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct PolicyCatalog {
    /// The built-in kinds: `{"kind": "<name>"}` (`client_priority` also takes a
    /// `ranking`, most trusted writer first).
    builtin: Vec<&'static str>,
    /// Custom merge functions registered in Rust: `{"kind": "custom", "name": "<name>"}`.
    custom: Vec<String>,
}

/// A table's policies.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct TablePolicies {
    table: String,
    /// The table's schema version; every policy change increments it.
    version: u32,
    /// The table-wide policy.
    #[schema(value_type = Object)]
    policy: PolicySpec,
    /// Per-field overrides.
    #[schema(value_type = Object)]
    field_policies: BTreeMap<String, PolicySpec>,
    /// After a change: how many records the new policies show differently
    /// (each got a change so that phones fetch its new row).
    #[serde(skip_serializing_if = "Option::is_none")]
    reresolved: Option<usize>,
}

impl TablePolicies {
    fn of(schema: TableSchema, reresolved: Option<usize>) -> TablePolicies {
        TablePolicies {
            table: schema.name,
            version: schema.version,
            policy: schema.policy,
            field_policies: schema.field_policies,
            reresolved,
        }
    }
}

/// A change of a table's policies: `policy` replaces the table-wide policy
/// when present; each entry of `fields` sets a field's override, or removes
/// it when `null`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PolicyRequest {
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    policy: Option<serde_json::Value>,
    #[serde(default)]
    #[schema(value_type = Object)]
    fields: BTreeMap<String, serde_json::Value>,
}

impl PolicyRequest {
    fn change(self) -> Result<PolicyChange, Problem> {
        let spec = |what: &str, json: serde_json::Value| {
            serde_json::from_value::<PolicySpec>(json).map_err(|error| {
                Problem::bad_request("bad_policy", format!("{what}: not a policy: {error}"))
            })
        };
        let policy = match self.policy {
            None | Some(serde_json::Value::Null) => None,
            Some(json) => Some(spec("policy", json)?),
        };
        let fields = self
            .fields
            .into_iter()
            .map(|(field, json)| {
                let policy = match json {
                    serde_json::Value::Null => None,
                    json => Some(spec(&format!("field `{field}`"), json)?),
                };
                Ok((field, policy))
            })
            .collect::<Result<_, Problem>>()?;
        Ok(PolicyChange { policy, fields })
    }
}

/// The built-in policy kinds and the registered custom policies (admin).
#[utoipa::path(get, path = "/v1/policies", tag = "conflicts", security(("bearer" = [])),
    responses((status = 200, body = PolicyCatalog), (status = 401, body = Problem), (status = 403, body = Problem)))]
pub(crate) async fn list_policies(
    state: AppState,
    principal: Principal,
) -> Result<Response, Problem> {
    require_admin(&principal)?;
    let catalog = PolicyCatalog {
        builtin: BUILTIN_POLICIES.to_vec(),
        custom: state.database().custom_policies(),
    };
    Ok(json(StatusCode::OK, &catalog))
}

/// A table's policy and per-field overrides (admin).
#[utoipa::path(get, path = "/v1/tables/{table}/policies", tag = "conflicts", security(("bearer" = [])),
    params(("table" = String, Path, description = "The table's name")),
    responses((status = 200, body = TablePolicies), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem)))]
pub(crate) async fn get_table_policies(
    table: String,
    state: AppState,
    principal: Principal,
) -> Result<Response, Problem> {
    require_admin(&principal)?;
    let schema = state
        .database()
        .schema(&table)
        .ok_or_else(|| Problem::no_table(&table))?;
    Ok(json(StatusCode::OK, &TablePolicies::of(schema, None)))
}

/// Changes a table's policies at run time (admin). Records the new policies
/// show differently get a change of their own, so phones fetch their new row.
#[utoipa::path(put, path = "/v1/tables/{table}/policies", tag = "conflicts", security(("bearer" = [])),
    params(("table" = String, Path, description = "The table's name")),
    request_body = PolicyRequest,
    responses((status = 200, body = TablePolicies),
        (status = 400, body = Problem, description = "Not a policy, an unknown field or custom policy: nothing changed"),
        (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 507, body = Problem, description = "The memory limit is reached, or the data directory refuses writes (a full disk, a failed fsync): retry later")))]
pub(crate) async fn put_table_policies(
    table: String,
    state: AppState,
    principal: Principal,
    content_type: Option<String>,
    bytes: Bytes,
) -> Result<Response, Problem> {
    require_admin(&principal)?;
    let request: PolicyRequest = parse_json(content_type.as_deref(), &bytes)?;
    let change = request.change()?;
    blocking(move || {
        let db = state.database();
        if db.schema(&table).is_none() {
            return Err(Problem::no_table(&table));
        }
        let outcome = db
            .set_policies(&table, change, &ClientId::from("admin"))
            .map_err(policy_problem)?;
        let schema = db.schema(&table).ok_or_else(|| Problem::no_table(&table))?;
        Ok(json(
            StatusCode::OK,
            &TablePolicies::of(schema, Some(outcome.reresolved)),
        ))
    })
    .await
}

fn policy_problem(error: EngineError) -> Problem {
    match error {
        EngineError::Schema(error @ SchemaError::BadPolicy { .. }) => {
            Problem::bad_request("bad_policy", error.to_string())
        }
        error => error.into(),
    }
}

/// Which conflicts to list.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct ConflictParams {
    /// Only conflicts of this table.
    table: Option<String>,
    /// Only conflicts of this record (its primary key).
    record: Option<String>,
    /// Only conflicts of this field.
    field: Option<String>,
    /// `true`: only manual conflicts still waiting to be resolved.
    open: Option<bool>,
    /// The `next` of the previous page.
    after: Option<u64>,
    /// Conflicts per page (default 100, at most 1000).
    limit: Option<usize>,
}

/// A page of conflicts, oldest first.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct ConflictList {
    #[schema(value_type = Vec<ConflictJson>)]
    conflicts: Vec<serde_json::Value>,
    /// Pass as `after` for the next page; null on the last page.
    next: Option<u64>,
}

/// A recorded conflict: a write left a field with two or more concurrent values.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[allow(dead_code)] // documents the shape of `ConflictRecord::to_json`
pub(crate) struct ConflictJson {
    id: u64,
    /// When it was detected (server time, epoch ms).
    time_ms: u64,
    table: String,
    record: String,
    field: String,
    /// The sequence number of the change that made it detected.
    seq: u64,
    /// The policy that decided it.
    policy: String,
    /// The concurrent values, oldest first.
    candidates: Vec<CandidateJson>,
    /// The value the policy chose (for a manual conflict: the provisional one).
    #[schema(value_type = Object)]
    chosen: serde_json::Value,
    /// A manual conflict still waiting to be resolved.
    open: bool,
    resolution: Option<ResolutionJson>,
}

/// One concurrent value of the field.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[allow(dead_code)] // documents the shape of `ConflictRecord::to_json`
pub(crate) struct CandidateJson {
    #[schema(value_type = Object)]
    value: serde_json::Value,
    /// The write's hybrid-clock stamp; null for a write without MobileSyncDB metadata.
    stamp: Option<StampJson>,
    /// Who wrote it (device or `admin`), when known.
    writer: Option<String>,
    /// The automerge operation, `counter@actor`.
    op: String,
}

/// A hybrid logical clock stamp.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[allow(dead_code)] // documents the shape of `ConflictRecord::to_json`
pub(crate) struct StampJson {
    /// Milliseconds since the Unix epoch.
    ms: u64,
    /// Orders stamps within one millisecond.
    logical: u32,
}

/// How a manual conflict was closed.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[allow(dead_code)] // documents the shape of `ConflictRecord::to_json`
pub(crate) struct ResolutionJson {
    time_ms: u64,
    /// The value the field shows since.
    #[schema(value_type = Object)]
    value: serde_json::Value,
    /// Who closed it.
    by: String,
    /// The change that resolved it; null when a newer conflict on the same
    /// field took its place.
    seq: Option<u64>,
    /// The id of the conflict that took its place.
    superseded_by: Option<u64>,
}

/// A conflict record as the API shows it (the shape [`ConflictJson`] documents).
pub(crate) fn conflict_json(conflict: &ConflictRecord) -> serde_json::Value {
    conflict.to_json()
}

/// The recorded conflicts, oldest first, a page at a time (admin).
#[utoipa::path(get, path = "/v1/conflicts", tag = "conflicts", security(("bearer" = [])),
    params(ConflictParams),
    responses((status = 200, body = ConflictList), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem, description = "An unknown table")))]
pub(crate) async fn list_conflicts(
    state: AppState,
    principal: Principal,
    params: ConflictParams,
) -> Result<Response, Problem> {
    require_admin(&principal)?;
    let limit = params.limit.unwrap_or(DEFAULT_CONFLICT_PAGE);
    if !(1..=MAX_CONFLICT_PAGE).contains(&limit) {
        return Err(Problem::bad_request(
            "bad_limit",
            format!("`limit` must be between 1 and {MAX_CONFLICT_PAGE}, not {limit}"),
        ));
    }
    if let Some(table) = &params.table
        && state.database().schema(table).is_none()
    {
        return Err(Problem::no_table(table));
    }
    let filter = ConflictFilter {
        table: params.table,
        record: params.record,
        field: params.field,
        open_only: params.open.unwrap_or(false),
        after: params.after.unwrap_or(0),
        limit,
    };
    blocking(move || {
        let page = state.database().conflict_log(&filter);
        let list = ConflictList {
            conflicts: page.conflicts.iter().map(conflict_json).collect(),
            next: page.next,
        };
        Ok(json(StatusCode::OK, &list))
    })
    .await
}

/// One recorded conflict (admin).
#[utoipa::path(get, path = "/v1/conflicts/{id}", tag = "conflicts", security(("bearer" = [])),
    params(("id" = u64, Path, description = "The conflict's id")),
    responses((status = 200, body = ConflictJson), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem, description = "No such conflict, or trimmed by retention")))]
pub(crate) async fn get_conflict(
    id: u64,
    state: AppState,
    principal: Principal,
) -> Result<Response, Problem> {
    require_admin(&principal)?;
    let conflict = state.database().conflict(id)?;
    Ok(json(StatusCode::OK, &conflict_json(&conflict)))
}

/// How to resolve: `{"value": <json>}` (read by the field's type) or
/// `{"candidate": <index into candidates>}`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ResolveRequest {
    /// The value to keep (null is a value: it clears the field).
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<Object>)]
    value: Option<serde_json::Value>,
    /// Keep the value of this candidate (0 = the oldest).
    candidate: Option<usize>,
}

/// A present key, even with a `null` value, is `Some`.
fn present<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<serde_json::Value>, D::Error> {
    serde_json::Value::deserialize(deserializer).map(Some)
}

/// Resolves an open manual conflict (admin): writes the chosen value to the
/// field at the record's current state, so every replica that syncs shows it.
/// Answers the closed conflict.
#[utoipa::path(post, path = "/v1/conflicts/{id}/resolve", tag = "conflicts", security(("bearer" = [])),
    params(("id" = u64, Path, description = "The conflict's id")),
    request_body = ResolveRequest,
    responses((status = 200, body = ConflictJson, description = "The closed conflict"),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 409, body = Problem, description = "The conflict is closed already"),
        (status = 422, body = Problem, description = "The value does not fit the field"),
        (status = 507, body = Problem, description = "The memory limit is reached, or the data directory refuses writes (a full disk, a failed fsync): retry later")))]
pub(crate) async fn resolve_conflict(
    id: u64,
    state: AppState,
    principal: Principal,
    content_type: Option<String>,
    bytes: Bytes,
) -> Result<Response, Problem> {
    require_admin(&principal)?;
    let request: ResolveRequest = parse_json(content_type.as_deref(), &bytes)?;
    blocking(move || {
        let db = state.database();
        let conflict = db.conflict(id)?;
        if !conflict.open || conflict.resolution.is_some() {
            return Err(EngineError::from(crate::engine::WriteError::ConflictClosed { id }).into());
        }
        let value = match (request.value, request.candidate) {
            (Some(json), None) => typed_value(db, &conflict, &json)?,
            (None, Some(index)) => conflict
                .candidates
                .get(index)
                .map(|candidate| candidate.value.clone())
                .ok_or_else(|| {
                    Problem::bad_request(
                        "bad_candidate",
                        format!(
                            "conflict {id} has {} candidates; `candidate` {index} is none of them",
                            conflict.candidates.len()
                        ),
                    )
                })?,
            _ => {
                return Err(Problem::bad_request(
                    "bad_resolution",
                    "send exactly one of `value` and `candidate`",
                ));
            }
        };
        let closed = db.resolve_conflict(id, value, &ClientId::from("admin"), &FullAccess)?;
        Ok(json(StatusCode::OK, &conflict_json(&closed)))
    })
    .await
}

/// `json` read by the type of the conflict's field.
fn typed_value(
    db: &crate::engine::Database,
    conflict: &ConflictRecord,
    json: &serde_json::Value,
) -> Result<Value, Problem> {
    let schema = db
        .schema(&conflict.table)
        .ok_or_else(|| Problem::no_table(&conflict.table))?;
    let spec = schema.spec(&conflict.field).ok_or_else(|| {
        Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown_field",
            format!("table `{}` has no field `{}`", schema.name, conflict.field),
        )
    })?;
    spec.kind.from_json(json).map_err(|mismatch| {
        Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "type_mismatch",
            format!("field `{}`: {mismatch}", conflict.field),
        )
    })
}

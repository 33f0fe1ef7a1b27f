//! Records: create, read, patch, replace, delete (with `ETag` and `If-Match`),
//! list and query.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use warp::http::{HeaderValue, StatusCode, header};
use warp::reply::Response;
use warp::{Filter, Rejection};

use crate::api::auth::Principal;
use crate::api::problem::Problem;
use crate::api::routes::{
    answer, blocking, body, caller, json, no_content, parse_json, with_state,
};
use crate::api::state::AppState;
use crate::crdt::{ClientId, Value};
use crate::engine::{
    Direction, Filter as RowFilter, FilterOp, OperatorShape, PageToken, Query, Row,
};
use crate::schema::{Fields, TableSchema};

type Object = serde_json::Map<String, serde_json::Value>;

pub(crate) fn routes(
    state: AppState,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    let limit = state.config().limits.max_json_body_bytes;
    let base = warp::path("v1")
        .and(warp::path("tables"))
        .and(warp::path::param::<String>())
        .and(with_state(state.clone()))
        .and(caller(state));
    let json_body = warp::header::optional::<String>("content-type").and(body(limit));
    let create = base
        .clone()
        .and(warp::path!("records"))
        .and(warp::post())
        .and(json_body.clone())
        .then(
            |table, state, principal, kind: Option<String>, bytes: Bytes| {
                answer(create(table, state, principal, kind, bytes))
            },
        );
    let list = base
        .clone()
        .and(warp::path!("records"))
        .and(warp::get())
        .and(warp::query::<ListParams>())
        .then(|table, state, principal, params| answer(list(table, state, principal, params)));
    let query = base
        .clone()
        .and(warp::path!("query"))
        .and(warp::post())
        .and(json_body.clone())
        .then(
            |table, state, principal, kind: Option<String>, bytes: Bytes| {
                answer(query(table, state, principal, kind, bytes))
            },
        );
    let one = base.and(warp::path!("records" / String));
    let read = one
        .clone()
        .and(warp::get())
        .then(|table, state, principal, id| answer(read(table, state, principal, id)));
    let conditional = warp::header::optional::<String>("if-match");
    let patch = one
        .clone()
        .and(warp::patch())
        .and(conditional)
        .and(json_body.clone())
        .then(
            |table, state, principal, id, if_match, kind: Option<String>, bytes: Bytes| {
                let write = Write {
                    table,
                    id,
                    if_match,
                    replace: false,
                };
                answer(patch_record(write, state, principal, kind, bytes))
            },
        );
    let replace = one
        .clone()
        .and(warp::put())
        .and(conditional)
        .and(json_body)
        .then(
            |table, state, principal, id, if_match, kind: Option<String>, bytes: Bytes| {
                let write = Write {
                    table,
                    id,
                    if_match,
                    replace: true,
                };
                answer(replace_record(write, state, principal, kind, bytes))
            },
        );
    let delete =
        one.and(warp::delete())
            .and(conditional)
            .then(|table, state, principal, id, if_match| {
                answer(delete(table, state, principal, id, if_match))
            });
    create
        .or(list)
        .unify()
        .or(query)
        .unify()
        .or(read)
        .unify()
        .or(patch)
        .unify()
        .or(replace)
        .unify()
        .or(delete)
        .unify()
}

/// The writer id of REST writes: the device of a client token, `admin` for keys.
fn origin(principal: &Principal) -> ClientId {
    match principal {
        Principal::Admin => ClientId::from("admin"),
        Principal::User { device, .. } => ClientId::from(device.as_str()),
    }
}

fn etag(version: u64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{version}\"")).unwrap_or(HeaderValue::from_static("\"0\""))
}

/// The version an `If-Match` names; `*` matches any live record. A value that
/// is not one of our tags can never match: the write is refused with 412.
fn if_match_version(header: Option<&str>) -> Result<Option<u64>, Problem> {
    let Some(header) = header.map(str::trim) else {
        return Ok(None);
    };
    if header == "*" {
        return Ok(None);
    }
    header
        .trim_start_matches("W/")
        .trim_matches('"')
        .parse::<u64>()
        .map(Some)
        .map_err(|_| {
            Problem::new(
                StatusCode::PRECONDITION_FAILED,
                "version_mismatch",
                format!("If-Match `{header}` is not a version of this record; read it again"),
            )
        })
}

fn schema(state: &AppState, principal: &Principal, table: &str) -> Result<TableSchema, Problem> {
    state.access().check_visible(principal, table)?;
    state
        .database()
        .schema(table)
        .ok_or_else(|| Problem::no_table(table))
}

/// A JSON object as typed fields: unknown fields and wrong types refused.
fn typed_fields(schema: &TableSchema, object: &Object) -> Result<Fields, Problem> {
    object
        .iter()
        .map(|(name, json)| {
            let spec = schema.spec(name).ok_or_else(|| {
                Problem::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "unknown_field",
                    format!("table `{}` has no field `{name}`", schema.name),
                )
            })?;
            let value = spec.kind.from_json(json).map_err(|mismatch| {
                Problem::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "type_mismatch",
                    format!("field `{name}`: {mismatch}"),
                )
            })?;
            Ok((name.clone(), value))
        })
        .collect()
}

fn record_response(status: StatusCode, schema: &TableSchema, row: &Row, version: u64) -> Response {
    let mut response = json(status, &row.to_json(schema));
    response.headers_mut().insert(header::ETAG, etag(version));
    response
}

/// Creates a record from a JSON object of its fields. In a table whose rows
/// belong to users, a client token's record is its user's, and the owner field
/// is filled in when absent.
#[utoipa::path(post, path = "/v1/tables/{table}/records", tag = "records", security(("bearer" = [])),
    params(("table" = String, Path)),
    request_body(content = Object, description = "The record's fields, the primary key included"),
    responses((status = 201, description = "Created; `ETag` is its version, `Location` its address", content_type = "application/json"),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem),
        (status = 507, body = Problem, description = "The memory limit is reached, or the data directory refuses writes (a full disk, a failed fsync): retry later")))]
pub(crate) async fn create(
    table: String,
    state: AppState,
    principal: Principal,
    content_type: Option<String>,
    bytes: Bytes,
) -> Result<Response, Problem> {
    state.access().check_writable(&principal, &table)?;
    let schema = schema(&state, &principal, &table)?;
    let mut object: Object = parse_json(content_type.as_deref(), &bytes)?;
    if let (Some(field), Principal::User { user, .. }) =
        (state.access().owner_field(&table), &principal)
    {
        object
            .entry(field)
            .or_insert_with(|| serde_json::Value::String(user.clone()));
    }
    let fields = typed_fields(&schema, &object)?;
    blocking(move || {
        let db = state.database();
        let access = state.access().writer(&principal, db);
        let outcome = db
            .writer(access.as_ref())
            .insert(&table, fields, &origin(&principal))?;
        let (row, version) = db
            .get_versioned(&table, &outcome.id)?
            .ok_or_else(|| Problem::no_record(&table, &outcome.id))?;
        let mut response = record_response(StatusCode::CREATED, &schema, &row, version);
        if let Ok(location) =
            HeaderValue::from_str(&format!("/v1/tables/{table}/records/{}", outcome.id))
        {
            response.headers_mut().insert(header::LOCATION, location);
        }
        Ok(response)
    })
    .await
}

/// A record's fields; `ETag` is its version, for `If-Match`.
#[utoipa::path(get, path = "/v1/tables/{table}/records/{id}", tag = "records", security(("bearer" = [])),
    params(("table" = String, Path), ("id" = String, Path)),
    responses((status = 200, description = "The record", content_type = "application/json"),
        (status = 401, body = Problem), (status = 404, body = Problem)))]
pub(crate) async fn read(
    table: String,
    state: AppState,
    principal: Principal,
    id: String,
) -> Result<Response, Problem> {
    let schema = schema(&state, &principal, &table)?;
    blocking(move || {
        let db = state.database();
        let access = state.access().reader(&principal, db);
        match db.get_versioned(&table, &id)? {
            Some((row, version)) if access.admits(&table, &row) => {
                Ok(record_response(StatusCode::OK, &schema, &row, version))
            }
            _ => Err(Problem::no_record(&table, &id)),
        }
    })
    .await
}

pub(crate) struct Write {
    table: String,
    id: String,
    if_match: Option<String>,
    /// PUT: fields the body leaves out are unset. PATCH: they are kept.
    replace: bool,
}

/// Changes the fields the body names (`null` unsets one); with `If-Match`, only
/// if the record is still at that version (412 otherwise).
#[utoipa::path(patch, path = "/v1/tables/{table}/records/{id}", tag = "records", security(("bearer" = [])),
    params(("table" = String, Path), ("id" = String, Path),
        ("If-Match" = Option<String>, Header, description = "The ETag the change was made on")),
    request_body(content = Object, description = "The fields to change"),
    responses((status = 200, description = "The record after the change", content_type = "application/json"),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 412, body = Problem), (status = 422, body = Problem),
        (status = 507, body = Problem, description = "The memory limit is reached, or the data directory refuses writes (a full disk, a failed fsync): retry later")))]
pub(crate) async fn patch_record(
    write: Write,
    state: AppState,
    principal: Principal,
    content_type: Option<String>,
    bytes: Bytes,
) -> Result<Response, Problem> {
    write_record(write, state, principal, content_type, bytes).await
}

/// Replaces the record's fields: those the body leaves out are unset.
#[utoipa::path(put, path = "/v1/tables/{table}/records/{id}", tag = "records", security(("bearer" = [])),
    params(("table" = String, Path), ("id" = String, Path),
        ("If-Match" = Option<String>, Header, description = "The ETag the change was made on")),
    request_body(content = Object, description = "Every field of the record"),
    responses((status = 200, description = "The record after the change", content_type = "application/json"),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 412, body = Problem), (status = 422, body = Problem),
        (status = 507, body = Problem, description = "The memory limit is reached, or the data directory refuses writes (a full disk, a failed fsync): retry later")))]
pub(crate) async fn replace_record(
    write: Write,
    state: AppState,
    principal: Principal,
    content_type: Option<String>,
    bytes: Bytes,
) -> Result<Response, Problem> {
    write_record(write, state, principal, content_type, bytes).await
}

async fn write_record(
    write: Write,
    state: AppState,
    principal: Principal,
    content_type: Option<String>,
    bytes: Bytes,
) -> Result<Response, Problem> {
    let Write {
        table,
        id,
        if_match,
        replace,
    } = write;
    state.access().check_writable(&principal, &table)?;
    let schema = schema(&state, &principal, &table)?;
    let version = if_match_version(if_match.as_deref())?;
    let object: Object = parse_json(content_type.as_deref(), &bytes)?;
    let mut fields = typed_fields(&schema, &object)?;
    if let Some(key) = fields.remove(&schema.primary_key)
        && key != Value::str(id.as_str())
        && !matches!(&key, Value::Int(n) if n.to_string() == id)
    {
        return Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "primary_key_change",
            format!(
                "the body's `{}` differs from the record's id in the path",
                schema.primary_key
            ),
        ));
    }
    if replace {
        for spec in schema.live_fields() {
            if spec.name != schema.primary_key {
                fields.entry(spec.name.clone()).or_insert(Value::Null);
            }
        }
    }
    let edits = crate::schema::field_edits(fields);
    blocking(move || {
        let db = state.database();
        let access = state.access().writer(&principal, db);
        db.writer(access.as_ref()).if_version(version).patch(
            &table,
            &id,
            edits,
            &origin(&principal),
        )?;
        let (row, version) = db
            .get_versioned(&table, &id)?
            .ok_or_else(|| Problem::no_record(&table, &id))?;
        Ok(record_response(StatusCode::OK, &schema, &row, version))
    })
    .await
}

/// Deletes the record; with `If-Match`, only if it is still at that version.
#[utoipa::path(delete, path = "/v1/tables/{table}/records/{id}", tag = "records", security(("bearer" = [])),
    params(("table" = String, Path), ("id" = String, Path),
        ("If-Match" = Option<String>, Header, description = "The ETag the deletion was decided on")),
    responses((status = 204, description = "Deleted"), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 412, body = Problem),
        (status = 507, body = Problem, description = "The memory limit is reached, or the data directory refuses writes (a full disk, a failed fsync): retry later")))]
pub(crate) async fn delete(
    table: String,
    state: AppState,
    principal: Principal,
    id: String,
    if_match: Option<String>,
) -> Result<Response, Problem> {
    state.access().check_writable(&principal, &table)?;
    schema(&state, &principal, &table)?;
    let version = if_match_version(if_match.as_deref())?;
    blocking(move || {
        let db = state.database();
        let access = state.access().writer(&principal, db);
        db.writer(access.as_ref())
            .if_version(version)
            .delete(&table, &id, &origin(&principal))?;
        Ok(no_content())
    })
    .await
}

/// Paging through a table by primary key, or by `order_by`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListParams {
    /// Rows per page (default 100, at most the server's `engine.max_query_rows`).
    limit: Option<usize>,
    /// The `next_page_token` of the previous page.
    page_token: Option<String>,
    /// The field to order by (default: the primary key).
    order_by: Option<String>,
    /// `asc` (default) or `desc`.
    #[param(value_type = Option<String>)]
    direction: Option<Direction>,
}

/// A query: filters (AND-combined), an order and a page.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct QueryRequest {
    #[serde(default)]
    filters: Vec<QueryFilter>,
    order_by: Option<String>,
    #[schema(value_type = Option<String>)]
    direction: Option<Direction>,
    limit: Option<usize>,
    page_token: Option<String>,
}

/// `field op value`; `op` is `eq`, `ne`, `lt`, `le`, `gt`, `ge`, `in` (the
/// value is an array) or `prefix` (a string).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct QueryFilter {
    field: String,
    op: String,
    #[schema(value_type = Object)]
    value: serde_json::Value,
}

/// One page of rows.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct Page {
    #[schema(value_type = Vec<Object>)]
    rows: Vec<Object>,
    /// Pass as `page_token` for the next page; absent on the last page.
    next_page_token: Option<String>,
}

/// The table's rows the caller can see, a page at a time.
#[utoipa::path(get, path = "/v1/tables/{table}/records", tag = "records", security(("bearer" = [])),
    params(("table" = String, Path), ListParams),
    responses((status = 200, body = Page), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 404, body = Problem)))]
pub(crate) async fn list(
    table: String,
    state: AppState,
    principal: Principal,
    params: ListParams,
) -> Result<Response, Problem> {
    let request = QueryRequest {
        filters: Vec::new(),
        order_by: params.order_by,
        direction: params.direction,
        limit: params.limit,
        page_token: params.page_token,
    };
    run_query(table, state, principal, request).await
}

/// Rows matching filters, ordered and paged.
#[utoipa::path(post, path = "/v1/tables/{table}/query", tag = "records", security(("bearer" = [])),
    params(("table" = String, Path)), request_body = QueryRequest,
    responses((status = 200, body = Page), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 404, body = Problem)))]
pub(crate) async fn query(
    table: String,
    state: AppState,
    principal: Principal,
    content_type: Option<String>,
    bytes: Bytes,
) -> Result<Response, Problem> {
    let request: QueryRequest = parse_json(content_type.as_deref(), &bytes)?;
    run_query(table, state, principal, request).await
}

async fn run_query(
    table: String,
    state: AppState,
    principal: Principal,
    request: QueryRequest,
) -> Result<Response, Problem> {
    let schema = schema(&state, &principal, &table)?;
    let mut query = Query::new().limit(request.limit.unwrap_or(100).max(1));
    for filter in &request.filters {
        query = query.filter(engine_filter(&schema, filter)?);
    }
    if let Some(filter) = state.access().query_filter(&principal, &table) {
        query = query.filter(filter);
    }
    if let Some(field) = request.order_by {
        query = query.order_by(field, request.direction.unwrap_or_default());
    } else if let Some(direction) = request.direction {
        query = query.order_by(schema.primary_key.clone(), direction);
    }
    if let Some(token) = request.page_token {
        let token = PageToken::decode(&token).map_err(|_| {
            Problem::bad_request("bad_page_token", "`page_token` is not one this server gave")
        })?;
        query = query.after(token);
    }
    blocking(move || {
        let db = state.database();
        let result = db.query(&table, &query)?;
        let access = state.access().reader(&principal, db);
        let page = Page {
            rows: result
                .rows
                .iter()
                .filter(|row| access.admits(&table, row))
                .map(|row| row.to_json(&schema))
                .collect(),
            next_page_token: result.next.map(|token| token.encode()),
        };
        Ok(json(StatusCode::OK, &page))
    })
    .await
}

fn engine_filter(schema: &TableSchema, filter: &QueryFilter) -> Result<RowFilter, Problem> {
    let bad = |detail: String| Problem::bad_request("bad_filter", detail);
    let spec = schema.spec(&filter.field).ok_or_else(|| {
        bad(format!(
            "table `{}` has no field `{}`",
            schema.name, filter.field
        ))
    })?;
    let typed = |json: &serde_json::Value| {
        spec.kind
            .from_json(json)
            .map_err(|mismatch| bad(format!("filter on `{}`: {mismatch}", filter.field)))
    };
    let shape = FilterOp::shape(&filter.op).ok_or_else(|| {
        bad(format!(
            "unknown filter operator `{}`; use {}",
            filter.op,
            FilterOp::NAMES
        ))
    })?;
    let op = match shape {
        OperatorShape::One(make) => make(typed(&filter.value)?),
        OperatorShape::List => {
            let items = filter
                .value
                .as_array()
                .ok_or_else(|| bad(format!("filter on `{}`: `in` takes an array", filter.field)))?;
            FilterOp::In(items.iter().map(typed).collect::<Result<_, _>>()?)
        }
        OperatorShape::Text => {
            let prefix = filter.value.as_str().ok_or_else(|| {
                bad(format!(
                    "filter on `{}`: `prefix` takes a string",
                    filter.field
                ))
            })?;
            FilterOp::Prefix(prefix.to_owned())
        }
    };
    Ok(RowFilter::new(filter.field.clone(), op))
}

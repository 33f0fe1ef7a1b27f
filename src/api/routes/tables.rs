//! Tables and their schemas.

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
use crate::config::AccessRule;
use crate::crdt::PolicySpec;
use crate::schema::{FieldSpec, IndexSpec, TableSchema};

pub(crate) fn routes(
    state: AppState,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    let limit = state.config().limits.max_json_body_bytes;
    let list = warp::path!("v1" / "tables")
        .and(warp::get())
        .and(with_state(state.clone()))
        .and(caller(state.clone()))
        .then(|state, principal| answer(list_tables(state, principal)));
    let get = warp::path!("v1" / "tables" / String)
        .and(warp::get())
        .and(with_state(state.clone()))
        .and(caller(state.clone()))
        .then(|table, state, principal| answer(get_table(table, state, principal)));
    let put = warp::path!("v1" / "tables" / String)
        .and(warp::put())
        .and(with_state(state.clone()))
        .and(caller(state.clone()))
        .and(warp::header::optional::<String>("content-type"))
        .and(body(limit))
        .then(
            |table, state, principal, kind: Option<String>, bytes: Bytes| {
                answer(put_table(table, state, principal, kind, bytes))
            },
        );
    let access = warp::path!("v1" / "tables" / String / "access")
        .and(warp::put())
        .and(with_state(state.clone()))
        .and(caller(state))
        .and(warp::header::optional::<String>("content-type"))
        .and(body(limit))
        .then(
            |table, state, principal, kind: Option<String>, bytes: Bytes| {
                answer(put_access(table, state, principal, kind, bytes))
            },
        );
    list.or(get).unify().or(put).unify().or(access).unify()
}

/// A table: its schema, its access rule and how many live records it holds.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct TableInfo {
    #[schema(value_type = Object)]
    schema: TableSchema,
    /// Who reaches the rows with a client token; absent: admin keys only.
    #[schema(value_type = Option<Object>)]
    access: Option<AccessRule>,
}

/// A table to create: its schema (the name comes from the path) and access rule.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct TableDefinition {
    /// The field whose value is the record id (a string or integer field).
    primary_key: String,
    /// The fields; the primary key is added as a required string field when
    /// it is not listed.
    #[schema(value_type = Vec<Object>)]
    fields: Vec<FieldSpec>,
    #[serde(default)]
    #[schema(value_type = Vec<Object>)]
    indexes: Vec<IndexSpec>,
    #[serde(default)]
    #[schema(value_type = Object)]
    policy: PolicySpec,
    #[serde(default)]
    #[schema(value_type = Object)]
    field_policies: BTreeMap<String, PolicySpec>,
    /// For example `{"kind": "owner", "field": "owner"}`, `{"kind": "shared"}`,
    /// `{"kind": "read_only"}` or `{"kind": "private"}`.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    access: Option<AccessRule>,
}

impl TableDefinition {
    fn schema(self, name: &str) -> (TableSchema, Option<AccessRule>) {
        let mut schema = TableSchema::new(name, self.primary_key.clone());
        let listed = self
            .fields
            .iter()
            .any(|field| field.name == self.primary_key);
        if listed {
            schema.fields.clear();
        }
        // Keys, renames and removals are the engine's, made by migrations.
        schema
            .fields
            .extend(self.fields.into_iter().map(|field| FieldSpec {
                renamed_from: None,
                key: None,
                retired: false,
                ..field
            }));
        schema.indexes = self.indexes;
        schema.policy = self.policy;
        schema.field_policies = self.field_policies;
        (schema, self.access)
    }
}

fn info(state: &AppState, schema: TableSchema) -> TableInfo {
    let access = state.access().get(&schema.name);
    TableInfo { schema, access }
}

/// The tables the caller can reach, with their schemas.
#[utoipa::path(get, path = "/v1/tables", tag = "tables", security(("bearer" = [])),
    responses((status = 200, body = Vec<TableInfo>), (status = 401, body = Problem)))]
pub(crate) async fn list_tables(
    state: AppState,
    principal: Principal,
) -> Result<Response, Problem> {
    let tables: Vec<TableInfo> = state
        .database()
        .schemas()
        .into_iter()
        .filter(|schema| {
            state
                .access()
                .check_visible(&principal, &schema.name)
                .is_ok()
        })
        .map(|schema| info(&state, schema))
        .collect();
    Ok(json(StatusCode::OK, &tables))
}

/// One table's schema and access rule.
#[utoipa::path(get, path = "/v1/tables/{table}", tag = "tables", security(("bearer" = [])),
    params(("table" = String, Path, description = "The table's name")),
    responses((status = 200, body = TableInfo), (status = 401, body = Problem), (status = 404, body = Problem)))]
pub(crate) async fn get_table(
    table: String,
    state: AppState,
    principal: Principal,
) -> Result<Response, Problem> {
    state.access().check_visible(&principal, &table)?;
    let schema = state
        .database()
        .schema(&table)
        .ok_or_else(|| Problem::no_table(&table))?;
    Ok(json(StatusCode::OK, &info(&state, schema)))
}

/// Creates a table (admin). Sending the same definition again only updates its
/// access rule; a different schema for an existing table is refused with 409.
#[utoipa::path(put, path = "/v1/tables/{table}", tag = "tables", security(("bearer" = [])),
    params(("table" = String, Path, description = "The table's name")),
    request_body = TableDefinition,
    responses((status = 201, body = TableInfo, description = "Created"),
        (status = 200, body = TableInfo, description = "Already there with this schema"),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 409, body = Problem),
        (status = 507, body = Problem, description = "The memory limit is reached, or the data directory refuses writes (a full disk, a failed fsync): retry later")))]
pub(crate) async fn put_table(
    table: String,
    state: AppState,
    principal: Principal,
    content_type: Option<String>,
    bytes: Bytes,
) -> Result<Response, Problem> {
    require_admin(&principal)?;
    let definition: TableDefinition = parse_json(content_type.as_deref(), &bytes)?;
    let (schema, access) = definition.schema(&table);
    if let Some(rule) = &access {
        check_owner_field(&schema, rule)?;
    }
    blocking(move || {
        let db = state.database();
        let status = match db.schema(&table) {
            Some(existing) if same_definition(&existing, &schema) => StatusCode::OK,
            Some(_) => {
                return Err(Problem::new(
                    StatusCode::CONFLICT,
                    "schema_conflict",
                    format!("table `{table}` exists with a different schema; existing tables keep their schema"),
                ));
            }
            None => {
                db.create_table(schema)?;
                StatusCode::CREATED
            }
        };
        if let Some(rule) = access {
            state.access().set(db, &table, rule)?;
        }
        let schema = db.schema(&table).ok_or_else(|| Problem::no_table(&table))?;
        Ok(json(status, &info(&state, schema)))
    })
    .await
}

/// An owner rule must name a field of the table.
fn check_owner_field(schema: &TableSchema, rule: &AccessRule) -> Result<(), Problem> {
    match rule {
        AccessRule::Owner { field } if schema.position(field).is_none() => {
            Err(Problem::bad_request(
                "unknown_field",
                format!(
                    "table `{}` has no field `{field}` to hold the owner",
                    schema.name
                ),
            ))
        }
        _ => Ok(()),
    }
}

fn same_definition(existing: &TableSchema, asked: &TableSchema) -> bool {
    let mut asked = asked.clone();
    asked.version = existing.version;
    *existing == asked
}

/// Sets the access rule of a table (admin).
#[utoipa::path(put, path = "/v1/tables/{table}/access", tag = "tables", security(("bearer" = [])),
    params(("table" = String, Path, description = "The table's name")),
    request_body(content = Object, description = "An access rule, for example {\"kind\": \"owner\", \"field\": \"owner\"}"),
    responses((status = 200, body = TableInfo), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 507, body = Problem, description = "The memory limit is reached, or the data directory refuses writes (a full disk, a failed fsync): retry later")))]
pub(crate) async fn put_access(
    table: String,
    state: AppState,
    principal: Principal,
    content_type: Option<String>,
    bytes: Bytes,
) -> Result<Response, Problem> {
    require_admin(&principal)?;
    let rule: AccessRule = parse_json(content_type.as_deref(), &bytes)?;
    let schema = state
        .database()
        .schema(&table)
        .ok_or_else(|| Problem::no_table(&table))?;
    check_owner_field(&schema, &rule)?;
    blocking(move || {
        state.access().set(state.database(), &table, rule)?;
        Ok(json(StatusCode::OK, &info(&state, schema)))
    })
    .await
}

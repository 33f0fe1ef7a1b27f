//! Export and import of whole tables or the database (admin), streamed as
//! NDJSON or the binary export format (`docs/EXPORT.md`).

use std::collections::BTreeMap;

use bytes::{Buf, Bytes};
use futures_util::{Stream, StreamExt};
use serde::Deserialize;
use tracing::{info, warn};
use warp::http::{HeaderValue, StatusCode, header};
use warp::reply::Response;
use warp::{Filter, Rejection};

use crate::api::auth::Principal;
use crate::api::problem::Problem;
use crate::api::routes::{answer, blocking, caller, json, with_state};
use crate::api::serve::StreamedBody;
use crate::api::state::{AppState, require_admin};
use crate::transfer::{ExportOptions, Exporter, Format, ImportLimits, Importer};

pub(crate) fn routes(
    state: AppState,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    let export = warp::path!("v1" / "export")
        .and(warp::get())
        .and(with_state(state.clone()))
        .and(caller(state.clone()))
        .and(warp::query::<ExportParams>())
        .and(warp::header::optional::<String>("accept"))
        .then(|state, principal, params, accept| answer(export(state, principal, params, accept)));
    let import = warp::path!("v1" / "import")
        .and(warp::post())
        .and(with_state(state.clone()))
        .and(caller(state))
        .and(warp::header::optional::<String>("content-type"))
        .and(warp::header::optional::<u64>("content-length"))
        .and(warp::body::stream())
        .then(|state, principal, kind, length, body| {
            answer(import(state, principal, kind, length, body))
        });
    export.or(import).unify()
}

/// What to export.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct ExportParams {
    /// Table names, comma-separated; every table when absent.
    tables: Option<String>,
    /// `ndjson` or `binary`; otherwise from `Accept` (NDJSON by default).
    format: Option<String>,
}

fn format_named(name: &str) -> Result<Format, Problem> {
    match name {
        "ndjson" => Ok(Format::Ndjson),
        "binary" => Ok(Format::Binary),
        other => Err(Problem::bad_request(
            "bad_format",
            format!("unknown export format `{other}`; use `ndjson` or `binary`"),
        )),
    }
}

/// Streams the tables' records (admin): a header with the schemas and access
/// rules, every record's automerge document, and a trailer with a count and a
/// CRC-32. Importing the file into any server gives the same rows and documents.
#[utoipa::path(get, path = "/v1/export", tag = "transfer", security(("bearer" = [])),
    params(ExportParams),
    responses((status = 200, description = "The export file, streamed",
        content((String = "application/x-ndjson"), (Vec<u8> = "application/vnd.mobilesyncdb.export"))),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem)))]
pub(crate) async fn export(
    state: AppState,
    principal: Principal,
    params: ExportParams,
    accept: Option<String>,
) -> Result<Response, Problem> {
    require_admin(&principal)?;
    let format = match (&params.format, accept.as_deref()) {
        (Some(name), _) => format_named(name)?,
        (None, Some(accept)) => accept
            .split(',')
            .find_map(Format::from_content_type)
            .unwrap_or(Format::Ndjson),
        (None, None) => Format::Ndjson,
    };
    let tables = params.tables.map(|names| {
        names
            .split(',')
            .map(str::trim)
            .filter(|name| !name.is_empty())
            .map(str::to_owned)
            .collect::<Vec<_>>()
    });
    let access: BTreeMap<String, serde_json::Value> = state
        .access()
        .all()
        .into_iter()
        .filter_map(|(table, rule)| Some((table, serde_json::to_value(rule).ok()?)))
        .collect();
    let options = ExportOptions {
        tables,
        access,
        ..ExportOptions::default()
    };
    let exporter = Exporter::new(state.database().clone(), format, options)?;
    let (sender, receiver) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    tokio::task::spawn_blocking(move || {
        for chunk in exporter {
            let item = chunk
                .map(Bytes::from)
                .map_err(|error| std::io::Error::other(error.to_string()));
            let failed = item.is_err();
            if let Err(error) = &item {
                warn!(%error, "export stopped");
            }
            // A closed channel means the client went away: stop reading pages.
            if sender.blocking_send(item).is_err() || failed {
                return;
            }
        }
        info!("export streamed");
    });
    let mut response = StreamedBody::response(receiver);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    Ok(response)
}

/// Imports an export file (admin), NDJSON or binary by `Content-Type`. The whole
/// file is checked (structure, documents, count, CRC-32, schemas) before
/// anything is applied: a damaged file changes nothing. Records merge as
/// automerge documents, so importing the same file again changes nothing.
#[utoipa::path(post, path = "/v1/import", tag = "transfer", security(("bearer" = [])),
    request_body(content((String = "application/x-ndjson"), (Vec<u8> = "application/vnd.mobilesyncdb.export"))),
    responses((status = 200, description = "What the import changed", content_type = "application/json"),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 409, body = Problem), (status = 413, body = Problem), (status = 415, body = Problem),
        (status = 507, body = Problem, description = "The memory limit is reached, or the data directory refuses writes (a full disk, a failed fsync): retry later")))]
pub(crate) async fn import(
    state: AppState,
    principal: Principal,
    content_type: Option<String>,
    length: Option<u64>,
    body: impl Stream<Item = Result<impl Buf, warp::Error>> + Send + 'static,
) -> Result<Response, Problem> {
    require_admin(&principal)?;
    let format = content_type
        .as_deref()
        .and_then(Format::from_content_type)
        .ok_or_else(|| {
            Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                format!(
                    "send `Content-Type: {}` or `{}`",
                    Format::Ndjson.content_type(),
                    Format::Binary.content_type()
                ),
            )
        })?;
    let max_bytes = state.config().limits.max_import_body_bytes;
    if length.is_some_and(|length| length > max_bytes) {
        return Err(too_large(max_bytes));
    }
    let limits = ImportLimits {
        max_bytes: usize::try_from(max_bytes).unwrap_or(usize::MAX),
        ..ImportLimits::default()
    };
    let importer = Importer::new(state.database().clone(), format, limits);
    let (sender, mut receiver) = tokio::sync::mpsc::channel::<Bytes>(8);
    let applying = tokio::task::spawn_blocking(move || {
        let mut importer = importer;
        while let Some(chunk) = receiver.blocking_recv() {
            importer.push(&chunk)?;
        }
        importer.finish()
    });
    // The importer bounds the bytes it takes (`too_large`); when it refuses,
    // it drops the receiver and the body is read no further.
    let mut body = std::pin::pin!(body);
    while let Some(chunk) = body.next().await {
        let mut chunk = chunk.map_err(|error| {
            Problem::bad_request(
                "truncated_body",
                format!("the body could not be read: {error}"),
            )
        })?;
        let bytes = chunk.copy_to_bytes(chunk.remaining());
        if sender.send(bytes).await.is_err() {
            break;
        }
    }
    drop(sender);
    let report = applying
        .await
        .map_err(|error| Problem::internal(format!("the import failed: {error}")))??;
    let rules = report.access.clone();
    let kept = state.clone();
    blocking(move || {
        for (table, rule) in &rules {
            match serde_json::from_value(rule.clone()) {
                Ok(rule) => kept.access().set(kept.database(), table, rule)?,
                Err(error) => {
                    warn!(table, %error, "the file's access rule is not one this server knows");
                }
            }
        }
        Ok(())
    })
    .await?;
    info!(
        records = report.records,
        changed = report.changed,
        "import applied"
    );
    Ok(json(StatusCode::OK, &report))
}

fn too_large(limit: u64) -> Problem {
    Problem::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
        format!("an import is at most {limit} bytes (`limits.max_import_body_bytes`)"),
    )
}

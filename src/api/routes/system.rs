//! Health, statistics, metrics, the OpenAPI document, configuration and tokens.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use warp::http::{HeaderValue, StatusCode, header};
use warp::reply::Response;
use warp::{Filter, Rejection};

use crate::api::auth::Principal;
use crate::api::metrics::{Gauge, GaugeKind};
use crate::api::problem::Problem;
use crate::api::routes::{answer, blocking, body, caller, json, parse_json, with_state};
use crate::api::state::{AppState, require_admin};

pub(crate) fn routes(
    state: AppState,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    let health = warp::path!("health")
        .and(warp::get())
        .and(with_state(state.clone()))
        .then(|state: AppState| answer(health(state)));
    let openapi = warp::path!("openapi.json")
        .and(warp::get())
        .then(|| answer(async { Ok(openapi()) }));
    let metrics = warp::path!("metrics")
        .and(warp::get())
        .and(with_state(state.clone()))
        .and(caller(state.clone()))
        .then(|state, principal| answer(metrics(state, principal)));
    let stats = warp::path!("v1" / "stats")
        .and(warp::get())
        .and(with_state(state.clone()))
        .and(caller(state.clone()))
        .then(|state, principal| answer(stats(state, principal)));
    let config = warp::path!("v1" / "config")
        .and(warp::get())
        .and(with_state(state.clone()))
        .and(caller(state.clone()))
        .then(|state, principal| answer(config(state, principal)));
    let limit = state.config().limits.max_json_body_bytes;
    let tokens = warp::path!("v1" / "tokens")
        .and(warp::post())
        .and(with_state(state.clone()))
        .and(caller(state))
        .and(warp::header::optional::<String>("content-type"))
        .and(body(limit))
        .then(
            |state, principal, kind: Option<String>, bytes: bytes::Bytes| {
                answer(mint_token(state, principal, kind, bytes))
            },
        );
    health
        .or(openapi)
        .unify()
        .or(metrics)
        .unify()
        .or(stats)
        .unify()
        .or(config)
        .unify()
        .or(tokens)
        .unify()
}

/// The server is up.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct Health {
    /// `ok`, or `degraded` while a cluster node has lost its NATS
    /// connection (writes are refused with 503), or while the data directory refuses writes (reads
    /// go on; writes resume by themselves).
    status: &'static str,
    version: &'static str,
    uptime_secs: u64,
    /// The latest sequence number: the cursor a client fully in sync holds.
    latest_seq: u64,
    /// The data directory's state, when the server has one: fsync policy,
    /// journal positions, the last snapshot, and why writes are refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    storage: Option<crate::storage::StorageStatus>,
    /// On a cluster node: its peers, the stream's position, the position
    /// this node applied and its lag.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    cluster: Option<serde_json::Value>,
}

/// Liveness and version. Needs no credential.
#[utoipa::path(get, path = "/health", tag = "system",
    responses((status = 200, description = "The server is up", body = Health)))]
pub(crate) async fn health(state: AppState) -> Result<Response, Problem> {
    let storage = state.store().map(crate::storage::Store::status);
    #[cfg_attr(not(feature = "cluster"), allow(unused_mut))]
    let mut healthy = storage.as_ref().is_none_or(|storage| storage.healthy);
    #[cfg(feature = "cluster")]
    let cluster = state.cluster().map(|cluster| {
        let status = cluster.status();
        healthy &= status.connected;
        serde_json::to_value(status).unwrap_or_default()
    });
    #[cfg(not(feature = "cluster"))]
    let cluster = None;
    Ok(json(
        StatusCode::OK,
        &Health {
            status: if healthy { "ok" } else { "degraded" },
            version: env!("CARGO_PKG_VERSION"),
            uptime_secs: state.uptime().as_secs(),
            latest_seq: state.database().latest_seq(),
            storage,
            cluster,
        },
    ))
}

/// This API's OpenAPI 3.1 document, generated from the code.
#[utoipa::path(get, path = "/openapi.json", tag = "system",
    responses((status = 200, description = "The OpenAPI document", content_type = "application/json")))]
pub(crate) fn openapi() -> Response {
    let document = crate::api::openapi::document();
    let mut response = Response::new(document.into());
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// Prometheus metrics (admin). Text exposition format 0.0.4.
#[utoipa::path(get, path = "/metrics", tag = "system", security(("bearer" = [])),
    responses((status = 200, description = "Metrics", content_type = "text/plain"),
        (status = 401, body = Problem), (status = 403, body = Problem)))]
pub(crate) async fn metrics(state: AppState, principal: Principal) -> Result<Response, Problem> {
    require_admin(&principal)?;
    let text = blocking(move || Ok(state.metrics().render(&gauges(&state)))).await?;
    let mut response = Response::new(text.into());
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    Ok(response)
}

fn gauge(name: &'static str, help: &'static str, value: f64) -> Gauge {
    Gauge {
        name,
        help,
        kind: GaugeKind::Gauge,
        labels: Vec::new(),
        value,
    }
}

fn gauges(state: &AppState) -> Vec<Gauge> {
    let stats = state.database().stats();
    let compression = state.sync().compression_stats();
    let sessions = state.sync().session_count();
    let mut gauges = vec![
        gauge(
            "msdb_records",
            "Live records in every table",
            stats.live_records as f64,
        ),
        gauge("msdb_tables", "Tables", stats.tables as f64),
        gauge(
            "msdb_latest_seq",
            "The latest change's sequence number",
            stats.latest_seq as f64,
        ),
        gauge(
            "msdb_change_log_entries",
            "Entries in the change log",
            stats.change_log_entries as f64,
        ),
        gauge(
            "msdb_change_log_bytes",
            "Bytes of change data in the log",
            stats.change_log_bytes as f64,
        ),
        gauge(
            "msdb_memory_used_bytes",
            "Memory the engine's data uses",
            stats.memory.total as f64,
        ),
        gauge(
            "msdb_memory_limit_bytes",
            "The engine's memory limit",
            stats.memory.limit as f64,
        ),
        gauge("msdb_sync_sessions", "Live sync sessions", sessions as f64),
        gauge(
            "msdb_uptime_seconds",
            "Seconds since the server started",
            state.uptime().as_secs_f64(),
        ),
    ];
    let (open, closed) = state.database().conflict_counts();
    let endpoints = state.webhooks().list();
    let backlog: u64 = endpoints
        .iter()
        .filter(|endpoint| endpoint.enabled)
        .map(|endpoint| {
            endpoint
                .latest_event
                .saturating_sub(endpoint.delivered_through)
        })
        .sum();
    let failing = endpoints
        .iter()
        .filter(|endpoint| endpoint.failing_since_ms.is_some())
        .count();
    gauges.extend([
        gauge(
            "msdb_conflicts_open",
            "Manual conflicts waiting to be resolved",
            open as f64,
        ),
        gauge(
            "msdb_conflicts_retained",
            "Closed conflict records kept for audit",
            closed as f64,
        ),
        gauge(
            "msdb_events_retained",
            "Events kept for webhook delivery and replay",
            state.database().event_count() as f64,
        ),
        gauge(
            "msdb_webhook_endpoints",
            "Registered webhook endpoints",
            endpoints.len() as f64,
        ),
        gauge(
            "msdb_webhook_endpoints_failing",
            "Webhook endpoints whose last attempt failed",
            failing as f64,
        ),
        gauge(
            "msdb_webhook_backlog_events",
            "Events not yet past every enabled endpoint's cursor, summed over endpoints",
            backlog as f64,
        ),
    ]);
    let storage = state.store().map(crate::storage::Store::status);
    if let Some(status) = &storage {
        gauges.push(gauge(
            "msdb_storage_healthy",
            "1 while the data directory takes writes, 0 while it refuses them",
            f64::from(u8::from(status.healthy)),
        ));
        gauges.push(gauge(
            "msdb_journal_bytes_since_snapshot",
            "Journal bytes a restart would replay",
            status.journal.since_snapshot as f64,
        ));
    }
    let mut counter = |name, help, value: u64| {
        gauges.push(Gauge {
            name,
            help,
            kind: GaugeKind::Counter,
            labels: Vec::new(),
            value: value as f64,
        });
    };
    if let Some(status) = storage {
        counter(
            "msdb_journal_synced_bytes_total",
            "Journal bytes known durable (the journal position)",
            status.journal.synced,
        );
        counter(
            "msdb_journal_syncs_total",
            "fsync calls that succeeded on the journal",
            status.journal.syncs,
        );
        counter(
            "msdb_journal_group_writes_total",
            "Group writes of the journal (each covers every frame queued before it)",
            status.journal.groups,
        );
    }
    counter(
        "msdb_writes_refused_for_memory_total",
        "Writes refused at the memory limit",
        stats.writes_refused_for_memory,
    );
    counter(
        "msdb_doc_cache_hits_total",
        "Document cache hits",
        stats.doc_cache_hits,
    );
    counter(
        "msdb_doc_cache_misses_total",
        "Document cache misses",
        stats.doc_cache_misses,
    );
    counter(
        "msdb_compression_input_bytes_total",
        "Bytes given to the batch compressor",
        compression.total.bytes_in,
    );
    counter(
        "msdb_compression_output_bytes_total",
        "Bytes the batch compressor produced",
        compression.total.bytes_out,
    );
    gauges
}

/// What the server holds and serves (admin).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct Stats {
    uptime_secs: u64,
    #[schema(value_type = Object)]
    engine: crate::engine::EngineStats,
    /// Compression of sync batches by kind of data.
    #[schema(value_type = Object)]
    compression: crate::compress::StatsSnapshot,
    sync: SyncStats,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct SyncStats {
    sessions: usize,
    max_sessions: usize,
}

/// Memory, compression and sync statistics (admin).
#[utoipa::path(get, path = "/v1/stats", tag = "system", security(("bearer" = [])),
    responses((status = 200, body = Stats), (status = 401, body = Problem), (status = 403, body = Problem)))]
pub(crate) async fn stats(state: AppState, principal: Principal) -> Result<Response, Problem> {
    require_admin(&principal)?;
    blocking(move || {
        let stats = Stats {
            uptime_secs: state.uptime().as_secs(),
            engine: state.database().stats(),
            compression: state.sync().compression_stats(),
            sync: SyncStats {
                sessions: state.sync().session_count(),
                max_sessions: state.sync().config().max_sessions,
            },
        };
        Ok(json(StatusCode::OK, &stats))
    })
    .await
}

/// The configuration in effect, secrets redacted (admin).
#[utoipa::path(get, path = "/v1/config", tag = "system", security(("bearer" = [])),
    responses((status = 200, description = "The configuration, as the TOML file's sections", content_type = "application/json"),
        (status = 401, body = Problem), (status = 403, body = Problem)))]
pub(crate) async fn config(state: AppState, principal: Principal) -> Result<Response, Problem> {
    require_admin(&principal)?;
    let mut config = state.config().clone();
    config.auth.admin_keys = vec![format!("{} keys, redacted", config.auth.admin_keys.len())];
    config.auth.jwt_secret = "redacted".to_owned();
    config.access = state.access().all();
    Ok(json(StatusCode::OK, &config))
}

/// A client token to mint.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct TokenRequest {
    user: String,
    device: String,
    /// Lifetime in seconds; the configured `auth.token_ttl` by default.
    #[serde(default)]
    ttl_secs: Option<u64>,
}

/// A minted client token.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct TokenResponse {
    /// Send as `Authorization: Bearer <token>`.
    token: String,
    user: String,
    device: String,
    /// Seconds since the Unix epoch.
    expires_at: u64,
}

/// Mints a client token for a user's device (admin).
#[utoipa::path(post, path = "/v1/tokens", tag = "system", security(("bearer" = [])),
    request_body = TokenRequest,
    responses((status = 201, body = TokenResponse), (status = 400, body = Problem),
        (status = 401, body = Problem), (status = 403, body = Problem)))]
pub(crate) async fn mint_token(
    state: AppState,
    principal: Principal,
    content_type: Option<String>,
    bytes: bytes::Bytes,
) -> Result<Response, Problem> {
    require_admin(&principal)?;
    let request: TokenRequest = parse_json(content_type.as_deref(), &bytes)?;
    let ttl = request.ttl_secs.map(Duration::from_secs);
    let (token, claims) = state.auth().mint(&request.user, &request.device, ttl)?;
    Ok(json(
        StatusCode::CREATED,
        &TokenResponse {
            token,
            user: claims.sub,
            device: claims.device,
            expires_at: claims.exp,
        },
    ))
}

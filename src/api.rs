//! The HTTP API: warp routes served through hyper-util.
//!
//! - [`start`] binds and serves a [`Config`]; the [`ServerHandle`] it returns
//!   gives the address and shuts the server down gracefully.
//! - Authentication: admin API keys and client tokens (JWT, HS256) carrying a
//!   user and a device ([`auth`]); per-table access rules decide which rows a
//!   token reaches on every read, query, pull and push.
//! - Routes: tables, records (with `ETag`/`If-Match`), queries, sync (JSON, or
//!   the binary protocol by content negotiation), sessions, export and import,
//!   health, statistics, Prometheus metrics, and the OpenAPI 3.1 document at
//!   `/openapi.json`.
//! - Every error is an `application/problem+json` document ([`Problem`]).
//!
//! Only this module knows HTTP.

mod access;
pub mod auth;
mod limit;
mod metrics;
pub mod openapi;
mod problem;
mod routes;
mod serve;
mod state;

pub use access::AccessRules;
pub use auth::{Authenticator, Claims, Principal};
pub use problem::{PROBLEM_BASE, Problem};
pub use routes::SYNC_CONTENT_TYPE;
pub use serve::ServerHandle;
pub use state::AppState;

use crate::config::Config;
use crate::engine::Database;
use crate::storage::Store;
use crate::sync::SyncServer;
use crate::webhook::Webhooks;

/// A server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Engine(#[from] crate::engine::EngineError),
    #[error(transparent)]
    Storage(#[from] crate::storage::StorageError),
    #[error(transparent)]
    Webhooks(#[from] crate::webhook::WebhookError),
    #[cfg(feature = "cluster")]
    #[error(transparent)]
    Cluster(#[from] crate::cluster::ClusterError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Starts a server: on the data directory of `config.storage` when one is set
/// (restoring what it holds), otherwise on a new in-memory database.
///
/// # Errors
///
/// [`StartError`] for a bad configuration, a data directory that cannot be
/// opened (damaged, in use), or an address that cannot be bound.
pub async fn start(config: Config) -> Result<ServerHandle, StartError> {
    config.validate()?;
    if config.storage.data_dir.is_none() {
        let db = Database::new(config.engine.clone())?;
        return start_with(config, db).await;
    }
    let options = crate::storage::StoreOptions::new(config.storage.clone());
    start_durable(config, options).await
}

/// Starts a server on a data directory opened with `options` (tests pass a
/// disk that injects faults).
///
/// # Errors
///
/// As [`start`].
pub async fn start_durable(
    config: Config,
    options: crate::storage::StoreOptions,
) -> Result<ServerHandle, StartError> {
    config.validate()?;
    let (engine, sync) = (config.engine.clone(), config.sync.clone());
    let opened = tokio::task::spawn_blocking(move || Store::open(options, engine, sync))
        .await
        .map_err(|error| {
            crate::storage::StorageError::Setup(format!(
                "opening the data directory failed: {error}"
            ))
        })??;
    let addr = config.server.listen;
    let webhooks = Webhooks::start(opened.sync.database().clone(), config.webhooks.clone())?;
    let state = AppState::with_store(config, opened.sync, opened.store, webhooks);
    serve_node(state, addr).await
}

/// Joins the cluster when the configuration names one (before any request
/// is served: every write of a node goes through the stream), then serves.
async fn serve_node(
    state: AppState,
    addr: std::net::SocketAddr,
) -> Result<ServerHandle, StartError> {
    #[cfg(feature = "cluster")]
    let cluster = if state.config().cluster.enabled {
        let config = &state.config().cluster;
        let key = state.config().auth.admin_keys.first().cloned();
        let cluster = crate::cluster::Cluster::join(
            state.database().clone(),
            config,
            config.advertise.clone(),
            key,
        )
        .await?;
        state.webhooks().set_namespace(cluster.node());
        state.set_cluster(cluster.clone());
        Some(cluster)
    } else {
        None
    };
    let handle = serve::start(state)
        .await
        .map_err(|source| StartError::Bind { addr, source })?;
    #[cfg(feature = "cluster")]
    if let Some(cluster) = cluster {
        cluster.advertise_default(&handle.addr().to_string());
    }
    Ok(handle)
}

/// Starts a server on an existing database (tables created, data loaded).
///
/// # Errors
///
/// As [`start`].
pub async fn start_with(config: Config, db: Database) -> Result<ServerHandle, StartError> {
    config.validate()?;
    let sync = SyncServer::new(db, config.sync.clone())?;
    let addr = config.server.listen;
    let webhooks = Webhooks::start(sync.database().clone(), config.webhooks.clone())?;
    let state = AppState::new(config, sync, webhooks);
    serve_node(state, addr).await
}

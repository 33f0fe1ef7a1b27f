//! What every request handler shares.

use std::sync::Arc;
use std::time::Instant;

use crate::api::access::AccessRules;
use crate::api::auth::{Authenticator, Principal};
use crate::api::limit::RateLimiter;
use crate::api::metrics::Metrics;
use crate::api::problem::Problem;
use crate::config::Config;
use crate::engine::Database;
use crate::storage::Store;
use crate::sync::SyncServer;
use crate::webhook::Webhooks;

/// The server's shared state. Cheap to clone.
#[derive(Clone, Debug)]
pub struct AppState {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: Config,
    sync: SyncServer,
    auth: Authenticator,
    access: AccessRules,
    limiter: RateLimiter,
    metrics: Metrics,
    started: Instant,
    /// The data directory, when the server has one.
    store: Option<Store>,
    webhooks: Webhooks,
    /// The node's cluster, on a cluster node.
    #[cfg(feature = "cluster")]
    cluster: std::sync::OnceLock<crate::cluster::Cluster>,
}

impl AppState {
    /// State for a server on `sync`'s database, in memory.
    pub fn new(config: Config, sync: SyncServer, webhooks: Webhooks) -> AppState {
        AppState::build(config, sync, None, webhooks)
    }

    /// State for a server on a data directory.
    pub fn with_store(
        config: Config,
        sync: SyncServer,
        store: Store,
        webhooks: Webhooks,
    ) -> AppState {
        AppState::build(config, sync, Some(store), webhooks)
    }

    fn build(
        config: Config,
        sync: SyncServer,
        store: Option<Store>,
        webhooks: Webhooks,
    ) -> AppState {
        let limits = &config.limits;
        let limiter = RateLimiter::new(
            limits.requests_per_second,
            limits.burst,
            limits.rate_limit_keys,
        );
        AppState {
            inner: Arc::new(Inner {
                auth: Authenticator::new(&config.auth),
                access: AccessRules::restored(config.access.clone(), sync.database()),
                limiter,
                metrics: Metrics::new(),
                started: Instant::now(),
                store,
                webhooks,
                sync,
                config,
                #[cfg(feature = "cluster")]
                cluster: std::sync::OnceLock::new(),
            }),
        }
    }

    /// The data directory, when the server has one.
    pub fn store(&self) -> Option<&Store> {
        self.inner.store.as_ref()
    }

    /// The node's cluster, on a cluster node.
    #[cfg(feature = "cluster")]
    pub fn cluster(&self) -> Option<&crate::cluster::Cluster> {
        self.inner.cluster.get()
    }

    /// Makes this server's state a cluster node's (once).
    #[cfg(feature = "cluster")]
    pub(crate) fn set_cluster(&self, cluster: crate::cluster::Cluster) {
        let _ = self.inner.cluster.set(cluster);
    }

    /// Outgoing webhooks.
    pub fn webhooks(&self) -> &Webhooks {
        &self.inner.webhooks
    }

    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    pub fn database(&self) -> &Database {
        self.inner.sync.database()
    }

    pub fn sync(&self) -> &SyncServer {
        &self.inner.sync
    }

    pub fn auth(&self) -> &Authenticator {
        &self.inner.auth
    }

    pub fn access(&self) -> &AccessRules {
        &self.inner.access
    }

    pub(crate) fn limiter(&self) -> &RateLimiter {
        &self.inner.limiter
    }

    pub(crate) fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    pub fn uptime(&self) -> std::time::Duration {
        self.inner.started.elapsed()
    }

    /// The caller, from the `Authorization` header.
    ///
    /// # Errors
    ///
    /// 401 [`Problem`] for a missing or invalid credential.
    pub fn authenticate(&self, header: Option<&str>) -> Result<Principal, Problem> {
        self.inner.auth.authenticate(header).map_err(|failure| {
            self.inner.metrics.record_auth_failure(failure.reason());
            failure.problem()
        })
    }
}

/// Refuses a caller that is not an admin.
///
/// # Errors
///
/// 403 `admin_only`.
pub fn require_admin(principal: &Principal) -> Result<(), Problem> {
    if principal.is_admin() {
        return Ok(());
    }
    Err(Problem::forbidden(
        "admin_only",
        "this route needs an admin key; client tokens cannot use it",
    ))
}

//! The server's settings: where it listens, how it authenticates, its bounds.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{
    ConfigError, EngineConfig, LiveConfig, StorageConfig, SyncConfig, WebhookConfig, at_least,
    duration_secs,
};

/// The development admin key of the embedded default. The server refuses it on
/// any address but loopback.
pub const DEV_ADMIN_KEY: &str = "msdb-dev-admin-key";
/// The development token secret of the embedded default, refused like
/// [`DEV_ADMIN_KEY`] beyond loopback.
pub const DEV_JWT_SECRET: &str = "msdb-dev-jwt-secret-do-not-use-in-production";

/// Everything `mobilesyncdb serve` reads: the TOML file's sections.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub auth: AuthConfig,
    pub limits: LimitsConfig,
    pub engine: EngineConfig,
    pub sync: SyncConfig,
    pub storage: StorageConfig,
    pub live: LiveConfig,
    pub webhooks: WebhookConfig,
    /// Several nodes sharing one NATS JetStream stream.
    pub cluster: crate::config::ClusterConfig,
    /// Access rules by table name; a table without one is reachable by admin keys
    /// only.
    pub access: BTreeMap<String, AccessRule>,
}

/// Who may reach a table's rows with a client token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", deny_unknown_fields)]
pub enum AccessRule {
    /// A row belongs to the user named in `field`: users read and write only
    /// their own rows, and a row they create is theirs.
    Owner { field: String },
    /// Every user reads and writes every row.
    Shared,
    /// Every user reads every row; only admin keys write.
    ReadOnly,
    /// Admin keys only: users see nothing of the table.
    Private,
}

/// Listening and connections.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// The address to listen on (default 127.0.0.1:7700). Port 0 picks a free port.
    pub listen: SocketAddr,
    /// The most open connections; further connections wait in the listen queue
    /// (default 10,000).
    pub max_connections: usize,
    /// How long a client may take to send a request's headers, and how long an
    /// idle keep-alive connection stays open waiting for the next request, in
    /// seconds (default 10).
    #[serde(with = "duration_secs")]
    pub header_read_timeout: Duration,
    /// How long an idle keep-alive connection is kept, in seconds (default 60).
    #[serde(with = "duration_secs")]
    pub keep_alive_timeout: Duration,
    /// The longest a request may take to be answered, in seconds (default 60).
    #[serde(with = "duration_secs")]
    pub request_timeout: Duration,
    /// How long shutdown waits for requests in flight, in seconds (default 30).
    #[serde(with = "duration_secs")]
    pub shutdown_grace: Duration,
}

impl Default for ServerConfig {
    fn default() -> ServerConfig {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 7700)),
            max_connections: 10_000,
            header_read_timeout: Duration::from_secs(10),
            keep_alive_timeout: Duration::from_secs(60),
            request_timeout: Duration::from_secs(60),
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

/// Admin keys and client tokens.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Keys that grant admin access, sent as `Authorization: Bearer <key>`
    /// (default: the development key, on loopback only).
    pub admin_keys: Vec<String>,
    /// The HS256 secret client tokens are signed with, at least 32 bytes.
    pub jwt_secret: String,
    /// The audience every client token must name (default `mobilesyncdb`).
    pub audience: String,
    /// The issuer tokens must name, when set.
    pub issuer: Option<String>,
    /// How long a token minted by the server lasts, in seconds (default 30 days).
    #[serde(with = "duration_secs")]
    pub token_ttl: Duration,
    /// Clock difference tolerated when checking expiry, in seconds (default 30).
    pub leeway_secs: u64,
}

impl Default for AuthConfig {
    fn default() -> AuthConfig {
        AuthConfig {
            admin_keys: vec![DEV_ADMIN_KEY.to_owned()],
            jwt_secret: DEV_JWT_SECRET.to_owned(),
            audience: "mobilesyncdb".to_owned(),
            issuer: None,
            token_ttl: Duration::from_secs(30 * 24 * 3600),
            leeway_secs: 30,
        }
    }
}

impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("AuthConfig")
            .field(
                "admin_keys",
                &format_args!("[{} redacted]", self.admin_keys.len()),
            )
            .field("jwt_secret", &"redacted")
            .field("audience", &self.audience)
            .field("issuer", &self.issuer)
            .field("token_ttl", &self.token_ttl)
            .field("leeway_secs", &self.leeway_secs)
            .finish()
    }
}

impl AuthConfig {
    /// True when the development key or secret is in use.
    pub fn uses_development_secrets(&self) -> bool {
        self.jwt_secret == DEV_JWT_SECRET || self.admin_keys.iter().any(|key| key == DEV_ADMIN_KEY)
    }
}

/// Request bodies and rates.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// The largest JSON request body, in bytes (default 1 MiB).
    pub max_json_body_bytes: u64,
    /// The largest sync request body, in bytes (default 16 MiB; the decoded
    /// message is further bounded by `sync.max_message_bytes`).
    pub max_sync_body_bytes: u64,
    /// The largest import body, in bytes (default 1 GiB). An import is checked
    /// whole before anything is applied, so it is held in memory.
    pub max_import_body_bytes: u64,
    /// Requests per second each token (or each address, without one) may make on
    /// average (default 100).
    pub requests_per_second: u32,
    /// How many requests a token may make at once above the average (default 200).
    pub burst: u32,
    /// How many tokens and addresses the rate limiter tracks; the least recently
    /// seen is forgotten first (default 100,000).
    pub rate_limit_keys: usize,
}

impl Default for LimitsConfig {
    fn default() -> LimitsConfig {
        LimitsConfig {
            max_json_body_bytes: 1 << 20,
            max_sync_body_bytes: 16 << 20,
            max_import_body_bytes: 1 << 30,
            requests_per_second: 100,
            burst: 200,
            rate_limit_keys: 100_000,
        }
    }
}

impl Config {
    /// Checks every setting, including the engine's and sync's.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming the first setting out of range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.engine.validate()?;
        self.sync.validate()?;
        self.storage.validate()?;
        self.live.validate()?;
        self.webhooks.validate()?;
        self.cluster.validate()?;
        at_least(
            "server.max_connections",
            self.server.max_connections as u64,
            1,
        )?;
        at_least(
            "server.header_read_timeout",
            self.server.header_read_timeout.as_secs(),
            1,
        )?;
        at_least(
            "limits.max_json_body_bytes",
            self.limits.max_json_body_bytes,
            1 << 10,
        )?;
        at_least(
            "limits.max_sync_body_bytes",
            self.limits.max_sync_body_bytes,
            1 << 10,
        )?;
        at_least(
            "limits.requests_per_second",
            u64::from(self.limits.requests_per_second),
            1,
        )?;
        at_least("limits.burst", u64::from(self.limits.burst), 1)?;
        at_least(
            "limits.rate_limit_keys",
            self.limits.rate_limit_keys as u64,
            1,
        )?;
        if self.auth.jwt_secret.len() < 32 {
            return Err(ConfigError::WeakSecret {
                length: self.auth.jwt_secret.len(),
            });
        }
        if self.auth.admin_keys.iter().any(|key| key.len() < 16) {
            return Err(ConfigError::WeakAdminKey);
        }
        if self.auth.audience.is_empty() {
            return Err(ConfigError::Empty {
                setting: "auth.audience",
            });
        }
        if self.auth.uses_development_secrets() && !self.server.listen.ip().is_loopback() {
            return Err(ConfigError::DevelopmentSecretsExposed {
                listen: self.server.listen,
            });
        }
        let owner_without_field = self
            .access
            .values()
            .any(|rule| matches!(rule, AccessRule::Owner { field } if field.is_empty()));
        if owner_without_field {
            return Err(ConfigError::Empty {
                setting: "access.<table>.field",
            });
        }
        Ok(())
    }
}

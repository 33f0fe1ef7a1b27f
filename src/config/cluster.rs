//! The `[cluster]` section: several nodes sharing one NATS JetStream stream.

use serde::{Deserialize, Serialize};

use super::{ConfigError, at_least};

/// When a cluster node answers a write.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClusterAck {
    /// Once the stream has the write and this node has applied it (the
    /// default): an answered write is on the stream, so every node gets it,
    /// and a pull from this node shows it.
    #[default]
    Stream,
    /// Once the write is checked and handed to the NATS connection, without
    /// waiting for the stream: lower latency, weaker. A write answered this
    /// way is lost if the node or the connection fails before the stream
    /// stores it, and a pull right after may not show it yet.
    Local,
}

/// The `[cluster]` section.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// Whether this server is a cluster node (default false: one server on
    /// its own).
    pub enabled: bool,
    /// The NATS server(s), comma-separated (default `nats://127.0.0.1:4222`).
    pub nats_url: String,
    /// This node's name, unique in the cluster (default: the host name and
    /// the process id).
    pub node: String,
    /// The JetStream stream that orders the cluster's writes (default
    /// `MSDB`); its subject is `msdb.<stream>.writes`. Nodes with the same
    /// stream form one cluster.
    pub stream: String,
    /// When a write is answered: `stream` (default) or `local`.
    pub ack: ClusterAck,
    /// How long a write may wait for the stream and its apply on this node,
    /// in milliseconds, before it is answered 503 (default 10,000).
    pub write_timeout_ms: u64,
    /// How many writes from the stream are applied under one lock and one
    /// journal wait (default 512).
    pub apply_batch: usize,
    /// How often a node announces itself and reads the stream's state, in
    /// milliseconds (default 1,000). A peer not heard from for three periods
    /// is shown as gone.
    pub heartbeat_ms: u64,
    /// How long the stream keeps writes, in seconds (default 0: forever).
    /// A node that was away longer needs a snapshot.
    pub max_age_secs: u64,
    /// How often a node compares its records with a peer's and repairs what
    /// differs, in seconds (default 300; 0 turns it off).
    pub anti_entropy_secs: u64,
    /// The address peers reach this node's HTTP API on, for anti-entropy
    /// (default: the listen address).
    pub advertise: String,
}

impl Default for ClusterConfig {
    fn default() -> ClusterConfig {
        ClusterConfig {
            enabled: false,
            nats_url: "nats://127.0.0.1:4222".to_owned(),
            node: String::new(),
            stream: "MSDB".to_owned(),
            ack: ClusterAck::Stream,
            write_timeout_ms: 10_000,
            apply_batch: 512,
            heartbeat_ms: 1_000,
            max_age_secs: 0,
            anti_entropy_secs: 300,
            advertise: String::new(),
        }
    }
}

impl ClusterConfig {
    /// Checks every setting.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming the first setting out of range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !self.enabled {
            return Ok(());
        }
        if !cfg!(feature = "cluster") {
            return Err(ConfigError::Invalid {
                setting: "cluster.enabled".to_owned(),
                reason: "this build has no cluster support (cargo feature `cluster`)".to_owned(),
            });
        }
        let name_ok = |name: &str| {
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        };
        if !name_ok(&self.stream) {
            return Err(ConfigError::Invalid {
                setting: "cluster.stream".to_owned(),
                reason: "letters, digits, `-` and `_` only".to_owned(),
            });
        }
        if !self.node.is_empty() && !name_ok(&self.node) {
            return Err(ConfigError::Invalid {
                setting: "cluster.node".to_owned(),
                reason: "letters, digits, `-` and `_` only".to_owned(),
            });
        }
        if self.nats_url.trim().is_empty() {
            return Err(ConfigError::Invalid {
                setting: "cluster.nats_url".to_owned(),
                reason: "name at least one NATS server".to_owned(),
            });
        }
        at_least("cluster.write_timeout_ms", self.write_timeout_ms, 100)?;
        at_least("cluster.apply_batch", self.apply_batch as u64, 1)?;
        at_least("cluster.heartbeat_ms", self.heartbeat_ms, 50)
    }

    /// The node's name: as configured, or the host name and process id.
    pub fn node_name(&self) -> String {
        if !self.node.is_empty() {
            return self.node.clone();
        }
        let host = std::fs::read_to_string("/etc/hostname")
            .ok()
            .map(|host| {
                host.trim()
                    .chars()
                    .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
                    .collect::<String>()
            })
            .filter(|host| !host.is_empty())
            .unwrap_or_else(|| "node".to_owned());
        format!("{host}-{}", std::process::id())
    }
}

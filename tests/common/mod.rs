//! Setup shared by the integration-test binaries: tables, databases, sync
//! servers, clients over an in-process link, HTTP servers with tokens, and
//! the server-side views that assertions compare replicas against.

// Each test binary compiles this module on its own and uses only a subset of
// it; the helpers another binary needs would be dead code here.
#![allow(dead_code)]

use std::sync::Arc;

use mobilesyncdb::api::ServerHandle;
use mobilesyncdb::client::{ClientConfig, LocalRow, Replica};
use mobilesyncdb::config::{Config, EngineConfig, SyncConfig};
use mobilesyncdb::crdt::{ActorId, ChangeHash, ClientId, Value};
use mobilesyncdb::engine::{Database, WallClock};
use mobilesyncdb::schema::{FieldSpec, FieldType, Fields, TableSchema};
use mobilesyncdb::sync::{SyncServer, WireScope};

/// Named values as a record's fields.
pub fn fields(pairs: &[(&str, Value)]) -> Fields {
    pairs
        .iter()
        .map(|(name, value)| ((*name).to_owned(), value.clone()))
        .collect()
}

/// The table the sync tests edit: one field of each kind a phone writes, and
/// a counter.
pub fn todos_of_every_kind(table: &str) -> TableSchema {
    TableSchema::new(table, "id")
        .field(FieldSpec::new("title", FieldType::String))
        .field(FieldSpec::new("done", FieldType::Boolean))
        .field(FieldSpec::new("priority", FieldType::Integer))
        .field(FieldSpec::new("due", FieldType::Timestamp))
        .field(FieldSpec::new("likes", FieldType::Counter))
}

/// A database on `clock` holding `schema`'s table with `rows`, all inserted by
/// `admin`.
pub fn database(
    config: EngineConfig,
    clock: Arc<dyn WallClock>,
    schema: TableSchema,
    rows: impl IntoIterator<Item = Fields>,
) -> Database {
    let db = Database::with_clock(config, clock).expect("engine config");
    let table = schema.name.clone();
    db.create_table(schema).expect("table");
    let admin = ClientId::from("admin");
    for row in rows {
        db.insert(&table, row, &admin).expect("insert");
    }
    db
}

/// A sync server over `db` with the default settings.
pub fn sync_server(db: &Database) -> SyncServer {
    SyncServer::new(db.clone(), SyncConfig::default()).expect("sync config")
}

/// A device's settings: all of `table`, on `wall`'s time.
pub fn client_config(device: &str, table: &str, wall: Arc<dyn WallClock>) -> ClientConfig {
    let mut config = ClientConfig::new(device, vec![WireScope::all(table)]);
    config.wall = wall;
    config
}

/// An empty replica of all of `table`, its actor named after `device`.
pub fn replica(device: &str, table: &str) -> Replica {
    Replica::new(
        device,
        ActorId::from(format!("{device:-<16}").into_bytes()),
        vec![WireScope::all(table)],
    )
}

/// The server's row as the client shows rows: set fields by name.
pub fn server_row(db: &Database, schema: &TableSchema, id: &str) -> Option<LocalRow> {
    let row = db.get(&schema.name, id).expect("read")?;
    Some(
        schema
            .fields
            .iter()
            .enumerate()
            .map(|(position, field)| (field.name.clone(), row.get(position)))
            .filter(|(_, value)| !value.is_null())
            .collect(),
    )
}

pub fn sorted(mut heads: Vec<ChangeHash>) -> Vec<ChangeHash> {
    heads.sort();
    heads
}

/// The default configuration, listening on an ephemeral loopback port.
pub fn local_config() -> Config {
    let mut config = Config::default();
    config.server.listen = "127.0.0.1:0".parse().unwrap();
    config
}

/// A fresh token of `user` on `device`, minted by the running server.
pub fn mint_token(handle: &ServerHandle, user: &str, device: &str) -> String {
    handle
        .state()
        .auth()
        .mint(user, device, None)
        .expect("mint")
        .0
}

/// [`local_config`] whose webhooks may target loopback receivers (tests run
/// them on 127.0.0.1), retrying after `retry_base_ms` and giving up an
/// attempt after `timeout_ms`.
pub fn local_config_with_loopback_webhooks(retry_base_ms: u64, timeout_ms: u64) -> Config {
    let mut config = local_config();
    config.webhooks.allow_networks = vec!["127.0.0.0/8".parse().expect("a network")];
    config.webhooks.retry_base_ms = retry_base_ms;
    config.webhooks.retry_max_ms = config.webhooks.retry_max_ms.min(retry_base_ms * 10);
    config.webhooks.timeout_ms = timeout_ms;
    config
}

/// A directory under the system's temporary directory, removed on drop.
pub struct TempDir(std::path::PathBuf);

impl TempDir {
    /// A new empty directory; `name` says which test made it.
    pub fn new(name: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!(
            "msdb-test-{}-{name}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(&path).expect("a temporary directory");
        TempDir(path)
    }

    pub fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

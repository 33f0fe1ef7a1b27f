//! Code shared by the benches (`mod common;` in each): the figure line, the seed,
//! the loaded database, the client configuration, the records changed between two
//! pulls and a hand-driven full pull.

// Each bench uses a subset of these helpers; the rest would be dead code there.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use mobilesyncdb::client::ClientConfig;
use mobilesyncdb::config::EngineConfig;
use mobilesyncdb::crdt::{ClientId, Edit};
use mobilesyncdb::dataset::Dataset;
use mobilesyncdb::engine::Database;
use mobilesyncdb::sync::wire::MessageKind;
use mobilesyncdb::sync::{PullBatch, PullRequest, WireScope, decode_pull_response, encode_request};

/// The largest pull response the benches decode.
pub const MAX_MESSAGE: usize = 64 << 20;

/// Prints one `figure <name> = <value> <unit>` line: whole numbers and values of
/// 100 or more without decimals, the rest with two.
pub fn figure(name: &str, value: f64, unit: &str) {
    if value.fract() == 0.0 || value.abs() >= 100.0 {
        println!("figure {name} = {value:.0} {unit}");
    } else {
        println!("figure {name} = {value:.2} {unit}");
    }
}

pub fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

/// The middle value once sorted (the upper one of an even count).
pub fn median<T: Ord + Copy>(mut values: Vec<T>) -> T {
    values.sort_unstable();
    values[values.len() / 2]
}

/// The number in environment variable `name`, or `default` when unset or not a
/// number.
pub fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

/// The data set's seed: `MSDB_BENCH_SEED`, or `default`.
pub fn seed(default: u64) -> u64 {
    env_number("MSDB_BENCH_SEED", default)
}

/// The engine configuration of the sync benches: the default one, with room for
/// the whole data set in memory.
pub fn engine_config() -> EngineConfig {
    EngineConfig {
        max_memory_bytes: 8 << 30,
        ..EngineConfig::default()
    }
}

/// A new database with `dataset` loaded by `origin`, and the time the load took
/// (creating the database not included).
pub fn load_timed(dataset: &Dataset, config: EngineConfig, origin: &str) -> (Database, Duration) {
    let database = Database::new(config).expect("engine config");
    let started = Instant::now();
    dataset
        .load_into(&database, &ClientId::from(origin))
        .expect("load");
    (database, started.elapsed())
}

/// A new database with `dataset` loaded (by `seed`).
pub fn loaded_database(dataset: &Dataset, config: EngineConfig) -> Database {
    load_timed(dataset, config, "seed").0
}

/// Every table of the data set, whole.
pub fn scopes(dataset: &Dataset) -> Vec<WireScope> {
    dataset
        .schemas()
        .into_iter()
        .map(|schema| WireScope::all(schema.name))
        .collect()
}

/// A client of every table, with the data set's primary keys (default retries).
pub fn client_config(dataset: &Dataset, device: &str) -> ClientConfig {
    let mut config = ClientConfig::new(device, scopes(dataset));
    for schema in dataset.schemas() {
        config = config.primary_key(&schema.name, &schema.primary_key);
    }
    config
}

/// Applies the data set's random edits (by `web`) until `wanted` distinct records
/// changed; returns how many did.
pub fn change_records(db: &Database, dataset: &Dataset, seed: u64, wanted: usize) -> usize {
    let origin = ClientId::from("web");
    let mut changed = BTreeSet::new();
    for edit in dataset.random_edits(seed, wanted * 4) {
        if changed.len() == wanted {
            break;
        }
        if !changed.insert((edit.table.clone(), edit.id.clone())) {
            continue;
        }
        let edits: Vec<Edit> = edit
            .fields
            .into_iter()
            .map(|(field, value)| Edit::Set { field, value })
            .collect();
        db.patch(&edit.table, &edit.id, edits, &origin)
            .expect("edit");
    }
    changed.len()
}

/// A full pull driven by hand, without a client: send `next_message()` however
/// the bench likes, hand the answer to `answer()`, until `next_message()` says
/// the server has no more.
#[derive(Debug)]
pub struct FullPull {
    request: PullRequest,
    follow_base: bool,
    done: bool,
    /// Batches answered so far.
    pub batches: usize,
    /// Bytes of the request messages sent so far.
    pub bytes_sent: usize,
    /// Bytes of the answers so far.
    pub bytes_received: usize,
}

impl FullPull {
    /// Starts from `request` (cursor and base as given). With `follow_base`,
    /// each next request carries the last batch's `base`, as the client's do;
    /// without it, the base is left as it was.
    pub fn new(request: PullRequest, follow_base: bool) -> FullPull {
        FullPull {
            request,
            follow_base,
            done: false,
            batches: 0,
            bytes_sent: 0,
            bytes_received: 0,
        }
    }

    /// The next request, encoded; `None` once the last batch was answered.
    pub fn next_message(&mut self) -> Option<Vec<u8>> {
        if self.done {
            return None;
        }
        let message = encode_request(MessageKind::PullRequest, &self.request);
        self.bytes_sent += message.len();
        Some(message)
    }

    /// Takes the answer to the last request: decodes it and moves the cursor.
    pub fn answer(&mut self, answer: &[u8]) -> PullBatch {
        let batch = decode_pull_response(answer, MAX_MESSAGE).expect("batch");
        self.batches += 1;
        self.bytes_received += answer.len();
        self.request.cursor = batch.next_cursor;
        if self.follow_base {
            self.request.base = Some(batch.base);
        }
        self.done = !batch.has_more;
        batch
    }
}

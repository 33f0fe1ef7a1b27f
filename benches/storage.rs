//! Storage figures: what durability costs writers, and how long a restart takes.
//!
//! `cargo bench --bench storage` prints one `figure <name> = <value> <unit>` line
//! per figure. Every record is a row of `notes`, a typical mobile table of six
//! fields (`id`, `owner`, `title`, `body` of about 100 characters, `done`,
//! `updated_at`) indexed on `owner` and `updated_at`; owners, titles and bodies
//! come from the seeded data set's todos and messages, so text looks like an
//! app's (some of it non-ASCII).
//!
//! Write throughput: `W` writer threads (default 32) insert `N` records in all
//! (default 100,000), each its own share, all released at once by a barrier;
//! the figure is `N` over the wall time until the last writer returns. A write
//! returns once it is durable under the policy, and concurrent writers share one
//! `fsync` (group commit), so throughput needs many writers. Each case runs on a
//! fresh database (and a fresh data directory under the system temporary
//! directory, removed afterwards) with the default storage settings, background
//! snapshots included; the cases are interleaved, `R` times each (default 3), and
//! the median is printed.
//!
//! - `writes_per_s_in_memory`: a `Database` without storage: the engine alone.
//! - `writes_per_s_fsync_{always,interval,never}`: a `Store` under each policy.
//! - `interval_vs_in_memory_pct`: interval over in memory, in %; target ≥ 50.
//! - `writes_per_s_fsync_always_1_writer`: one writer under `always`: every
//!   write waits for its own `fsync` (the disk's sync latency, inverted).
//! - `journal_{groups,syncs}_per_s_fsync_always` and `writes_per_sync_fsync_always`:
//!   how group commit behaved in the median `always` run.
//!
//! Restart: a data directory is filled with `M` records (default 1,000,000) by
//! four writers under `fsync = never` with background snapshots off, then
//! closed; `load_per_s_fsync_never` is how fast that went.
//!
//! - `restart_ms_1m_records_journal_only`: `Store::open` on it, wall time until
//!   it returns: everything replayed from the journal. Skipped with
//!   `MSDB_BENCH_JOURNAL_ONLY=0`.
//! - `snapshot_ms_1m_records`, `snapshot_pause_ms_1m_records`,
//!   `snapshot_mb_1m_records`: then a snapshot of it is taken.
//! - `restart_ms_1m_records`: after the snapshot `T` more records are written
//!   (default 10,000: a journal tail), the store is closed and dropped, and
//!   `Store::open` is timed again: a snapshot plus the tail. The slower of two
//!   opens; target ≤ 5,000 ms.
//! - `restart_ms_1m_records_cold`: the same open once more after dropping the
//!   page cache (root only; skipped otherwise), as after a reboot.
//!
//! Every restored database is checked to hold every record written before its
//! restart time is printed, and no figure is printed after a failed write. The
//! warm figures read the files back through the page cache (they were just
//! written); the cold one reads them from the disk.
//!
//! Overrides for quick runs: `MSDB_BENCH_WRITES` (`N`), `MSDB_BENCH_WRITERS`
//! (`W`), `MSDB_BENCH_RUNS` (`R`), `MSDB_BENCH_SINGLE_WRITES` (writes of the
//! one-writer case, default 2,000), `MSDB_BENCH_RECORDS` (`M`),
//! `MSDB_BENCH_TAIL` (`T`), `MSDB_BENCH_JOURNAL_ONLY`, `MSDB_BENCH_SEED`.

use std::path::{Path, PathBuf};
use std::sync::Barrier;
use std::time::{Duration, Instant};

#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use mobilesyncdb::config::{EngineConfig, FsyncPolicy, StorageConfig, SyncConfig};
use mobilesyncdb::crdt::{ClientId, Value};
use mobilesyncdb::dataset::{Dataset, DatasetSpec, Dice, Fields};
use mobilesyncdb::engine::Database;
use mobilesyncdb::schema::{FieldSpec, FieldType, TableSchema};
use mobilesyncdb::storage::{JournalStats, Opened, Store, StoreOptions};
use serde_json::json;

mod common;
use common::{env_number, figure, median, ms};

/// The table every record goes to.
const TABLE: &str = "notes";
/// Writers that fill the restart data directory: the engine applies writes one
/// at a time, so a few suffice to keep it busy while others wait on the journal.
const LOAD_WRITERS: usize = 4;
/// Opens timed for `restart_ms_1m_records`.
const RESTART_RUNS: usize = 2;
/// 2024-01-01T00:00:00Z, where `updated_at` stamps start.
const START_MS: i64 = 1_704_067_200_000;
const YEAR_MS: i64 = 366 * 24 * 3_600_000;

/// The `notes` table: six fields, two secondary indexes.
fn schema() -> TableSchema {
    TableSchema::new(TABLE, "id")
        .field(FieldSpec::new("owner", FieldType::String).required())
        .field(FieldSpec::new("title", FieldType::String).required())
        .field(FieldSpec::new("body", FieldType::String).required())
        .field(
            FieldSpec::new("done", FieldType::Boolean)
                .required()
                .with_default(json!(false)),
        )
        .field(FieldSpec::new("updated_at", FieldType::Timestamp).required())
        .index("owner")
        .index("updated_at")
}

/// The engine configuration: the default one, with room for a million records.
fn engine_config() -> EngineConfig {
    common::engine_config()
}

/// Text of the seeded data set (1 MB of it), which records are made of.
struct TextPool {
    owners: Vec<String>,
    titles: Vec<String>,
    bodies: Vec<String>,
}

impl TextPool {
    fn new(seed: u64) -> TextPool {
        let dataset = Dataset::generate(DatasetSpec::mb1(seed));
        let strings = |table: &str, field: &str| -> Vec<String> {
            let rows = &dataset.table(table).expect("always generated").rows;
            rows.iter()
                .filter_map(|row| match row.get(field) {
                    Some(Value::Str(text)) => Some(text.to_string()),
                    _ => None,
                })
                .collect()
        };
        let pool = TextPool {
            owners: strings("todos", "owner"),
            titles: strings("todos", "title"),
            bodies: strings("messages", "body"),
        };
        assert!(
            !pool.owners.is_empty() && !pool.titles.is_empty() && !pool.bodies.is_empty(),
            "the data set has todos and messages"
        );
        pool
    }

    fn pick<'a>(rng: &mut Dice, items: &'a [String]) -> &'a str {
        &items[rng.below(items.len())]
    }

    /// One record: a random version-4 UUID as its id, an owner and a title of
    /// the data set's todos, and message bodies joined and cut to 80–120 bytes.
    fn record(&self, rng: &mut Dice) -> Fields {
        let id = rng.uuid();
        let length = rng.int(80, 120) as usize;
        let mut body = String::with_capacity(length + 64);
        while body.len() < length {
            if !body.is_empty() {
                body.push(' ');
            }
            body.push_str(Self::pick(rng, &self.bodies));
        }
        let mut cut = length;
        while !body.is_char_boundary(cut) {
            cut -= 1;
        }
        body.truncate(cut);
        let mut fields = Fields::new();
        fields.insert("id".into(), Value::Str(id.into()));
        fields.insert(
            "owner".into(),
            Value::Str(Self::pick(rng, &self.owners).into()),
        );
        fields.insert(
            "title".into(),
            Value::Str(Self::pick(rng, &self.titles).into()),
        );
        fields.insert("body".into(), Value::Str(body.into()));
        fields.insert("done".into(), Value::Bool(rng.chance(0.35)));
        fields.insert(
            "updated_at".into(),
            Value::Timestamp(START_MS + rng.int(0, YEAR_MS - 1)),
        );
        fields
    }

    /// `count` records drawn from `seed`, split among `writers` (as evenly as
    /// possible).
    fn shares(&self, seed: u64, count: usize, writers: usize) -> Vec<Vec<Fields>> {
        let mut rng = Dice::new(seed);
        (0..writers)
            .map(|writer| {
                let share = count / writers + usize::from(writer < count % writers);
                (0..share).map(|_| self.record(&mut rng)).collect()
            })
            .collect()
    }
}

/// A directory under the system temporary directory, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let path =
            std::env::temp_dir().join(format!("msdb-bench-storage-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The bytes of the files in `dir` (not recursive).
fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|entry| entry.ok()?.metadata().ok())
                .filter(|metadata| metadata.is_file())
                .map(|metadata| metadata.len())
                .sum()
        })
        .unwrap_or(0)
}

fn open(config: &StorageConfig) -> (Opened, Duration) {
    let started = Instant::now();
    let opened = Store::open(
        StoreOptions::new(config.clone()),
        engine_config(),
        SyncConfig::default(),
    )
    .expect("the data directory opens");
    (opened, started.elapsed())
}

/// Inserts every share from its own thread, all started together; returns the
/// wall time from the start until the last writer is done. Panics on the first
/// failed write, after every writer stopped.
fn write_concurrently(db: &Database, shares: Vec<Vec<Fields>>, origin: &str) -> Duration {
    let barrier = Barrier::new(shares.len() + 1);
    let (elapsed, errors) = std::thread::scope(|scope| {
        let writers: Vec<_> = shares
            .into_iter()
            .enumerate()
            .map(|(index, share)| {
                let barrier = &barrier;
                let origin = ClientId::from(format!("{origin}-{index}"));
                scope.spawn(move || -> Result<(), String> {
                    barrier.wait();
                    for fields in share {
                        db.insert(TABLE, fields, &origin)
                            .map_err(|error| error.to_string())?;
                    }
                    Ok(())
                })
            })
            .collect();
        barrier.wait();
        let started = Instant::now();
        let errors: Vec<String> = writers
            .into_iter()
            .filter_map(|writer| writer.join().expect("a writer panicked").err())
            .collect();
        (started.elapsed(), errors)
    });
    assert!(
        errors.is_empty(),
        "{} writer(s) failed; the first: {}",
        errors.len(),
        errors[0]
    );
    elapsed
}

/// Where the writes of a throughput case go.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Target {
    InMemory,
    Store(FsyncPolicy),
}

/// One throughput run.
struct WriteRun {
    per_s: f64,
    elapsed: Duration,
    /// What the journal did during the writes (stores only).
    journal: Option<JournalStats>,
    /// Whether a background snapshot was taken during the writes.
    snapshotted: bool,
}

/// Inserts `shares` into a fresh database of `target` and checks every record
/// is there.
fn write_run(target: Target, shares: Vec<Vec<Fields>>, name: &str) -> WriteRun {
    let count: usize = shares.iter().map(Vec::len).sum();
    let per_s = |elapsed: Duration| count as f64 / elapsed.as_secs_f64();
    match target {
        Target::InMemory => {
            let db = Database::new(engine_config()).expect("engine config");
            db.create_table(schema()).expect("table");
            let elapsed = write_concurrently(&db, shares, "writer");
            assert_eq!(db.stats().live_records, count, "every record was stored");
            WriteRun {
                per_s: per_s(elapsed),
                elapsed,
                journal: None,
                snapshotted: false,
            }
        }
        Target::Store(policy) => {
            let dir = TempDir::new(name);
            let config = StorageConfig {
                data_dir: Some(dir.0.clone()),
                fsync: policy,
                ..StorageConfig::default()
            };
            let (opened, _) = open(&config);
            let db = opened.sync.database().clone();
            db.create_table(schema()).expect("table");
            let before = opened.store.status().journal;
            let elapsed = write_concurrently(&db, shares, "writer");
            let after = opened.store.status().journal;
            opened.store.close().expect("the journal flushes");
            assert_eq!(db.stats().live_records, count, "every record was stored");
            let journal = JournalStats {
                groups: after.groups - before.groups,
                syncs: after.syncs - before.syncs,
                ..after
            };
            WriteRun {
                per_s: per_s(elapsed),
                elapsed,
                journal: Some(journal),
                snapshotted: opened.store.last_snapshot().is_some(),
            }
        }
    }
}

fn bench_writes(pool: &TextPool, seed: u64) {
    let writes = env_number("MSDB_BENCH_WRITES", 100_000) as usize;
    let writers = env_number("MSDB_BENCH_WRITERS", 32).max(1) as usize;
    let runs = env_number("MSDB_BENCH_RUNS", 3).max(1) as usize;
    let single = env_number("MSDB_BENCH_SINGLE_WRITES", 2_000) as usize;
    println!(
        "writes: {writes} inserts by {writers} writers, {runs} runs per case (median), seed {seed}"
    );
    let shares = pool.shares(seed, writes, writers);
    let single_shares = pool.shares(seed + 1, single, 1);
    let cases = [
        ("in_memory", Target::InMemory),
        ("fsync_always", Target::Store(FsyncPolicy::Always)),
        ("fsync_interval", Target::Store(FsyncPolicy::Interval)),
        ("fsync_never", Target::Store(FsyncPolicy::Never)),
        ("fsync_always_1_writer", Target::Store(FsyncPolicy::Always)),
    ];
    let mut results: Vec<Vec<WriteRun>> = cases.iter().map(|_| Vec::new()).collect();
    for run in 0..runs {
        for ((name, target), results) in cases.iter().zip(&mut results) {
            let work = if name.ends_with("1_writer") {
                single_shares.clone()
            } else {
                shares.clone()
            };
            let result = write_run(*target, work, &format!("{name}-{run}"));
            let journal = result.journal.as_ref().map_or(String::new(), |journal| {
                format!(
                    ", {} groups, {} syncs{}",
                    journal.groups,
                    journal.syncs,
                    if result.snapshotted {
                        ", a background snapshot"
                    } else {
                        ""
                    }
                )
            });
            println!(
                "  run {run} {name}: {:.0} writes/s ({:.0} ms{journal})",
                result.per_s,
                ms(result.elapsed)
            );
            results.push(result);
        }
    }
    // The median run of each case (by throughput).
    let medians: Vec<&WriteRun> = results
        .iter()
        .map(|runs| {
            let middle = median(runs.iter().map(|run| run.per_s as u64).collect());
            runs.iter()
                .find(|run| run.per_s as u64 == middle)
                .expect("the median is one of the runs")
        })
        .collect();
    for ((name, _), result) in cases.iter().zip(&medians) {
        figure(&format!("writes_per_s_{name}"), result.per_s, "writes/s");
    }
    figure(
        "interval_vs_in_memory_pct",
        100.0 * medians[2].per_s / medians[0].per_s,
        "%",
    );
    let always = medians[1];
    let journal = always.journal.as_ref().expect("a store run");
    let seconds = always.elapsed.as_secs_f64();
    figure(
        "journal_groups_per_s_fsync_always",
        journal.groups as f64 / seconds,
        "groups/s",
    );
    figure(
        "journal_syncs_per_s_fsync_always",
        journal.syncs as f64 / seconds,
        "syncs/s",
    );
    figure(
        "writes_per_sync_fsync_always",
        writes as f64 / journal.syncs.max(1) as f64,
        "writes",
    );
}

/// Writes `count` new records (drawn from `seed`) into `db` with
/// [`LOAD_WRITERS`] threads, each drawing its own records as it goes.
fn load(db: &Database, pool: &TextPool, seed: u64, count: usize) -> Duration {
    let started = Instant::now();
    std::thread::scope(|scope| {
        let loaders: Vec<_> = (0..LOAD_WRITERS)
            .map(|index| {
                let share = count / LOAD_WRITERS + usize::from(index < count % LOAD_WRITERS);
                scope.spawn(move || {
                    let mut rng = Dice::new(seed ^ ((index as u64) << 32));
                    let origin = ClientId::from(format!("loader-{index}"));
                    for _ in 0..share {
                        db.insert(TABLE, pool.record(&mut rng), &origin)
                            .unwrap_or_else(|error| panic!("a load write failed: {error}"));
                    }
                })
            })
            .collect();
        for loader in loaders {
            loader.join().expect("a loader panicked");
        }
    });
    started.elapsed()
}

/// Opens the directory of `config`, timed, and checks it holds `expected` live
/// records.
fn restart(config: &StorageConfig, expected: usize, what: &str) -> (Opened, Duration) {
    let (opened, elapsed) = open(config);
    let live = opened.sync.database().stats().live_records;
    assert_eq!(live, expected, "the restored database holds every record");
    let report = &opened.report;
    println!(
        "  restart ({what}): {:.0} ms wall, {} ms by the report: {} snapshot records, {} journal frames ({:.1} MB)",
        ms(elapsed),
        report.elapsed_ms,
        report.snapshot_records,
        report.journal_frames,
        report.journal_bytes as f64 / 1e6
    );
    (opened, elapsed)
}

fn bench_restart(pool: &TextPool, seed: u64) {
    let records = env_number("MSDB_BENCH_RECORDS", 1_000_000) as usize;
    let tail = env_number("MSDB_BENCH_TAIL", 10_000) as usize;
    let journal_only = env_number("MSDB_BENCH_JOURNAL_ONLY", 1) != 0;
    println!("restart: {records} records, then a snapshot and {tail} more");
    let dir = TempDir::new("restart");
    let config = StorageConfig {
        data_dir: Some(dir.0.clone()),
        fsync: FsyncPolicy::Never,
        snapshot_after_bytes: u64::MAX,
        ..StorageConfig::default()
    };

    let (opened, _) = open(&config);
    let db = opened.sync.database().clone();
    db.create_table(schema()).expect("table");
    let elapsed = load(&db, pool, seed + 2, records);
    drop(db);
    opened.store.close().expect("the journal flushes");
    println!(
        "  loaded in {:.1} s ({:.0} records/s), journal {:.1} MB",
        elapsed.as_secs_f64(),
        records as f64 / elapsed.as_secs_f64(),
        dir_bytes(&dir.0) as f64 / 1e6
    );
    figure(
        "load_per_s_fsync_never",
        records as f64 / elapsed.as_secs_f64(),
        "records/s",
    );

    let opened = if journal_only {
        drop(opened);
        let (opened, elapsed) = restart(&config, records, "journal only");
        figure("restart_ms_1m_records_journal_only", ms(elapsed), "ms");
        opened
    } else {
        opened
    };

    let snapshot = opened.store.snapshot().expect("the snapshot is written");
    figure("snapshot_ms_1m_records", snapshot.elapsed_ms as f64, "ms");
    figure(
        "snapshot_pause_ms_1m_records",
        snapshot.pause_ms as f64,
        "ms",
    );
    figure("snapshot_mb_1m_records", snapshot.bytes as f64 / 1e6, "MB");
    load(opened.sync.database(), pool, seed + 3, tail);
    opened.store.close().expect("the journal flushes");
    println!(
        "  snapshot of {} records, then {tail} writes: the directory holds {:.1} MB",
        snapshot.records,
        dir_bytes(&dir.0) as f64 / 1e6
    );
    drop(opened);

    let times: Vec<Duration> = (0..RESTART_RUNS)
        .map(|_| restart(&config, records + tail, "snapshot and journal tail").1)
        .collect();
    figure("restart_ms_1m_records", ms(median(times)), "ms");

    // A reboot reads the files from the disk, not from the page cache.
    if drop_page_cache() {
        let (_, elapsed) = restart(&config, records + tail, "cold page cache");
        figure("restart_ms_1m_records_cold", ms(elapsed), "ms");
    } else {
        println!("  cold restart skipped: dropping the page cache needs root");
    }
}

/// Writes dirty pages back and drops the page cache (Linux, root only);
/// false when it cannot.
fn drop_page_cache() -> bool {
    let synced = std::process::Command::new("sync")
        .status()
        .is_ok_and(|status| status.success());
    synced && std::fs::write("/proc/sys/vm/drop_caches", "3\n").is_ok()
}

fn main() {
    let seed = common::seed(42);
    let started = Instant::now();
    let pool = TextPool::new(seed);
    bench_writes(&pool, seed);
    bench_restart(&pool, seed);
    println!("done in {:.0} s", started.elapsed().as_secs_f64());
}

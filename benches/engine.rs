//! Engine figures on the seeded 10 MB mixed data set.
//!
//! `cargo bench --bench engine` prints one `figure <name> = <value> <unit>` line per
//! figure. Resident memory is measured with a counting allocator: every byte the
//! engine holds after loading, divided by the data set's JSON size. Counting is
//! switched on only while memory is measured, so that the instrument's atomic
//! updates do not slow the timed phases. `rss_over_json` is the growth of the
//! process's resident set over the load, allocator overhead and retained free
//! memory included.
//!
//! Set `MSDB_BENCH_SEED` to change the data set, `MSDB_BENCH_MB` to change its size.

#![allow(
    unsafe_code,
    reason = "a counting global allocator measures resident memory"
)]

use std::alloc::{GlobalAlloc, Layout};

#[cfg(not(feature = "jemalloc"))]
use std::alloc::System as Backend;
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
/// The allocator the `mobilesyncdb` binary uses, under the counting wrapper.
#[cfg(feature = "jemalloc")]
use tikv_jemallocator::Jemalloc as Backend;

use mobilesyncdb::config::EngineConfig;
use mobilesyncdb::crdt::{ClientId, Record, Value};
use mobilesyncdb::dataset::{Dataset, DatasetSpec};
use mobilesyncdb::engine::{Database, Filter, Query};

mod common;
use common::{env_number, figure};

struct CountingAllocator;

static ALLOCATED: AtomicUsize = AtomicUsize::new(0);
static COUNTING: AtomicBool = AtomicBool::new(false);

fn count(added: usize, removed: usize) {
    if COUNTING.load(Ordering::Relaxed) {
        ALLOCATED.fetch_add(added, Ordering::Relaxed);
        ALLOCATED.fetch_sub(removed, Ordering::Relaxed);
    }
}

/// Runs `work` with allocation counting on, and returns its result and the bytes
/// it left allocated.
fn counted<T>(work: impl FnOnce() -> T) -> (T, usize) {
    let before = ALLOCATED.load(Ordering::Relaxed);
    COUNTING.store(true, Ordering::Relaxed);
    let result = work();
    COUNTING.store(false, Ordering::Relaxed);
    (
        result,
        ALLOCATED.load(Ordering::Relaxed).wrapping_sub(before),
    )
}

// SAFETY: forwards every call to the system allocator unchanged and only counts
// the sizes it was asked for.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size(), 0);
        // SAFETY: same layout contract as the caller's.
        unsafe { Backend.alloc(layout) }
    }

    unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
        count(0, layout.size());
        // SAFETY: `pointer` came from `alloc` with this layout.
        unsafe { Backend.dealloc(pointer, layout) }
    }

    unsafe fn realloc(&self, pointer: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size, layout.size());
        // SAFETY: same contract as the caller's.
        unsafe { Backend.realloc(pointer, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

/// The process's resident set size, from `/proc/self/statm` (0 where unavailable).
fn rss_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|field| field.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn per_second(count: usize, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64()
}

fn load(dataset: &Dataset, config: EngineConfig) -> (Database, Duration) {
    common::load_timed(dataset, config, "bench-loader")
}

fn per_record(
    memory: mobilesyncdb::engine::MemoryStats,
    records: usize,
) -> [(&'static str, usize); 6] {
    [
        ("documents", memory.documents / records),
        ("rows", memory.rows / records),
        ("records", memory.records / records),
        ("indexes", memory.indexes / records),
        ("change_log", memory.change_log / records),
        ("doc_cache", memory.doc_cache / records),
    ]
}

fn main() {
    let seed = common::seed(42);
    let megabytes = env_number("MSDB_BENCH_MB", 10) as usize;
    let dataset = Dataset::generate(DatasetSpec {
        seed,
        target_json_bytes: megabytes * 1_000_000,
    });
    let json_bytes = dataset.json_bytes();
    let records = dataset.record_count();
    println!("data set: seed {seed}, {records} records, {json_bytes} bytes of JSON");

    // Memory freed during the load (dropped documents) but allocated before it
    // cannot be miscounted: nothing the engine frees predates the engine.
    let rss_before = rss_bytes();
    let ((database, load_time), resident) = counted(|| load(&dataset, EngineConfig::default()));
    figure("insert_per_s", per_second(records, load_time), "records/s");
    figure(
        "resident_bytes_per_record",
        resident as f64 / records as f64,
        "B",
    );
    figure(
        "resident_over_json",
        resident as f64 / json_bytes as f64,
        "x",
    );
    let rss = rss_bytes().saturating_sub(rss_before);
    figure("rss_over_json", rss as f64 / json_bytes as f64, "x");
    let accounted = database.stats().memory.total;
    println!(
        "  accounted per record: {:?}",
        per_record(database.stats().memory, records)
    );
    figure(
        "accounted_over_resident",
        accounted as f64 / resident as f64,
        "x",
    );

    bench_updates(&database, &dataset, seed);
    bench_queries(&database, &dataset);
    bench_changed_since(&database, &dataset, seed);
    bench_loaded_document();
}

/// Field updates spread uniformly over the whole data set, so most miss the
/// hot-document cache and load their document: the honest case.
fn bench_updates(database: &Database, dataset: &Dataset, seed: u64) {
    let edits = dataset.random_edits(seed + 1, 20_000);
    let editor = ClientId::from("bench-editor");
    let stats_before = database.stats();
    let started = Instant::now();
    for edit in &edits {
        database
            .update(&edit.table, &edit.id, edit.fields.clone(), &editor)
            .expect("update");
    }
    let elapsed = started.elapsed();
    let stats = database.stats();
    figure(
        "field_update_per_s",
        per_second(edits.len(), elapsed),
        "updates/s",
    );
    let misses = stats.doc_cache_misses - stats_before.doc_cache_misses;
    let hits = stats.doc_cache_hits - stats_before.doc_cache_hits;
    figure(
        "field_update_cache_hit_pct",
        100.0 * hits as f64 / (hits + misses).max(1) as f64,
        "%",
    );

    // Fewer records than the document cache holds: the hot path.
    let hot: Vec<_> = edits.iter().take(48).collect();
    let started = Instant::now();
    let mut count = 0;
    for round in 0..100 {
        for edit in &hot {
            let fields = edit
                .fields
                .iter()
                .map(|(name, value)| (name.clone(), vary(value, round)))
                .collect();
            let outcome = database
                .update(&edit.table, &edit.id, fields, &editor)
                .expect("update");
            count += usize::from(outcome.seq.is_some());
        }
    }
    figure(
        "field_update_hot_per_s",
        per_second(count, started.elapsed()),
        "updates/s",
    );
}

/// A different value of the same type for each round, so that every hot update
/// really changes the record.
fn vary(value: &Value, round: i64) -> Value {
    match value {
        Value::Str(text) => Value::from(format!("{text} #{round}")),
        Value::Int(n) => Value::Int(n.wrapping_add(round + 1)),
        Value::Counter(n) => Value::Counter(n.wrapping_add(round + 1)),
        Value::Timestamp(ms) => Value::Timestamp(ms + round + 1),
        Value::Float(x) => Value::Float(x + round as f64 + 1.0),
        Value::Bool(flag) => Value::Bool(*flag == (round % 2 == 0)),
        other => other.clone(),
    }
}

fn bench_queries(database: &Database, dataset: &Dataset) {
    let messages = dataset.table("messages").expect("messages table");
    let conversations: Vec<_> = messages
        .rows
        .iter()
        .step_by(97)
        .filter_map(|row| row.get("conversation").cloned())
        .collect();
    let started = Instant::now();
    let mut returned = 0;
    for conversation in &conversations {
        let query = Query::new()
            .filter(Filter::eq("conversation", conversation.clone()))
            .limit(50);
        returned += black_box(database.query("messages", &query).expect("query"))
            .rows
            .len();
    }
    let per_query = started.elapsed() / conversations.len() as u32;
    figure("indexed_query_us", per_query.as_secs_f64() * 1e6, "us");
    println!(
        "  ({} queries on messages.conversation, {returned} rows)",
        conversations.len()
    );
    let plan = database
        .explain(
            "messages",
            &Query::new().filter(Filter::eq("conversation", conversations[0].clone())),
        )
        .expect("explain");
    println!("  plan: {plan}");

    let scan = Query::new().filter(Filter::eq("edited", true)).limit(50);
    println!(
        "  plan: {}",
        database.explain("messages", &scan).expect("explain")
    );
    let rounds = 50;
    let started = Instant::now();
    for _ in 0..rounds {
        black_box(database.query("messages", &scan).expect("query"));
    }
    figure(
        "scan_query_us",
        (started.elapsed() / rounds).as_secs_f64() * 1e6,
        "us",
    );
    println!("  ({} messages scanned per query)", messages.rows.len());
}

/// 1,000 records changed after a cursor in a database of the whole data set.
fn bench_changed_since(database: &Database, dataset: &Dataset, seed: u64) {
    let cursor = database.latest_seq();
    let editor = ClientId::from("bench-editor");
    let mut changed = 0;
    for edit in dataset.random_edits(seed + 2, 5_000) {
        let outcome = database
            .update(&edit.table, &edit.id, edit.fields, &editor)
            .expect("update");
        changed += usize::from(outcome.seq.is_some());
        if changed == 1_000 {
            break;
        }
    }
    let rounds = 100;
    let started = Instant::now();
    for _ in 0..rounds {
        let changes = database
            .changes_since(cursor, 10_000)
            .expect("within horizon");
        assert_eq!(changes.len(), 1_000);
        black_box(changes);
    }
    let per_call = started.elapsed() / rounds;
    figure(
        "changed_since_1000_of_35k_us",
        per_call.as_secs_f64() * 1e6,
        "us",
    );
    println!("  ({} live records)", database.stats().live_records);
}

/// What one loaded document costs, for the cache's memory estimate.
fn bench_loaded_document() {
    let mut record = Record::new(mobilesyncdb::crdt::ActorId::random());
    let edits: Vec<_> = ["title", "owner", "notes", "status", "kind", "tag"]
        .iter()
        .map(|field| {
            mobilesyncdb::crdt::Edit::set(*field, format!("{field} value of a typical length"))
        })
        .collect();
    let meta = mobilesyncdb::crdt::StampMeta::new(mobilesyncdb::crdt::Stamp::at(1), "bench");
    record.write(&edits, &meta).expect("write");
    let saved = record.save();
    let (loaded, bytes) = counted(|| {
        (0..1_000)
            .map(|_| Record::load(&saved).expect("load"))
            .collect::<Vec<_>>()
    });
    let per_doc = bytes / loaded.len();
    figure("loaded_doc_bytes", per_doc as f64, "B");
    println!("  (saved size {} B)", saved.len());
}

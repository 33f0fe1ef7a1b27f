//! Sync figures on the seeded mixed data set, in process: a `SyncServer` over the
//! loaded database and a reference `Client` through the in-process transport.
//!
//! `cargo bench --bench sync` prints one `figure <name> = <value> <unit>` line per
//! figure:
//!
//! - `initial_sync_{100kb,1mb,10mb}_ms`: a fresh client pulls everything, batch
//!   after batch, and stores it (saved bytes and visible rows), acknowledgement
//!   included. Best of three runs.
//! - `initial_sync_10mb_bytes`: bytes the client received for it.
//! - `incremental_1000_of_35k_ms` and `_bytes_pct`: after 1,000 distinct records
//!   changed on the server (the data set's own random edits), the client pulls
//!   again; bytes are a percentage of the whole data set's JSON size.
//! - `compression_saving_pct_<kind>` and `compression_saving_pct`: the saving of the
//!   balanced level over the uncompressed encoding (the `off` level), per kind of
//!   data and overall, over the 10 MB initial sync.
//! - `gzip_saving_pct`: gzip (level 6) of the same batches in the uncompressed
//!   encoding, for comparison.
//! - `compress_mb_per_s`: uncompressed-encoding bytes through the column encoders
//!   per second of encoding time at the balanced level.
//!
//! Set `MSDB_BENCH_SEED` to change the data set.

use std::io::Write;
use std::time::{Duration, Instant};

#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use mobilesyncdb::client::{Client, InProcess};
use mobilesyncdb::compress::{DataKind, Level};
use mobilesyncdb::config::SyncConfig;
use mobilesyncdb::dataset::{Dataset, DatasetSpec};
use mobilesyncdb::sync::{PullRequest, SyncServer};

mod common;
use common::{FullPull, change_records, client_config, figure, ms, scopes};

fn server_for(dataset: &Dataset) -> SyncServer {
    let db = common::loaded_database(dataset, common::engine_config());
    SyncServer::new(db, SyncConfig::default()).expect("sync config")
}

fn client(server: &SyncServer, dataset: &Dataset, device: &str) -> Client<InProcess> {
    Client::new(
        client_config(dataset, device),
        InProcess::new(server.clone()),
    )
    .expect("client")
}

/// A fresh client's full pull: the time and the bytes received.
async fn initial_sync(
    server: &SyncServer,
    dataset: &Dataset,
    device: &str,
) -> (Duration, u64, Client<InProcess>) {
    let client = client(server, dataset, device);
    let started = Instant::now();
    client.pull_all().await.expect("initial sync");
    let elapsed = started.elapsed();
    (elapsed, client.stats().bytes_received, client)
}

async fn best_initial_sync(name: &str, spec: DatasetSpec) {
    let dataset = Dataset::generate(spec);
    let server = server_for(&dataset);
    let mut best = Duration::MAX;
    for run in 0..3 {
        let (elapsed, _, _) = initial_sync(&server, &dataset, &format!("{name}-{run}")).await;
        best = best.min(elapsed);
    }
    println!(
        "  {name}: {} records, {} bytes of JSON",
        dataset.record_count(),
        dataset.json_bytes()
    );
    figure(&format!("initial_sync_{name}_ms"), ms(best), "ms");
}

/// Every batch of a full pull at `level`, as the server sends them.
fn batches_at(server: &SyncServer, dataset: &Dataset, level: Level) -> Vec<Vec<u8>> {
    // The cursor alone moves from batch to batch: no `base`, as before.
    let mut pull = FullPull::new(
        PullRequest {
            device: format!("level-{level}"),
            tables: scopes(dataset),
            level: Some(level),
            ..PullRequest::default()
        },
        false,
    );
    let mut batches = Vec::new();
    while let Some(message) = pull.next_message() {
        let answer = server.handle(&message);
        pull.answer(&answer);
        batches.push(answer);
    }
    batches
}

fn gzip(bytes: &[u8]) -> usize {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).expect("gzip");
    encoder.finish().expect("gzip").len()
}

fn compression(seed: u64) {
    let dataset = Dataset::generate(DatasetSpec::mb10(seed));
    let plain: Vec<Vec<u8>> = batches_at(&server_for(&dataset), &dataset, Level::Off);
    let plain_bytes: usize = plain.iter().map(Vec::len).sum();
    let gzipped: usize = plain.iter().map(|batch| gzip(batch)).sum();
    for level in [Level::Fast, Level::Balanced, Level::Max] {
        // A fresh server per level, so that its statistics hold this level alone.
        let server = server_for(&dataset);
        let started = Instant::now();
        let bytes: usize = batches_at(&server, &dataset, level)
            .iter()
            .map(Vec::len)
            .sum();
        let elapsed = started.elapsed();
        let stats = server.compression_stats();
        println!(
            "  level {level}: {bytes} bytes ({:.1}% below off), columns saving {:.1}% at {:.0} MB/s, full pull {:.0} ms",
            100.0 * (1.0 - bytes as f64 / plain_bytes as f64),
            stats.total.saving_pct(),
            stats.total.throughput_mb_s(),
            ms(elapsed)
        );
        if level == Level::Balanced {
            for kind in DataKind::ALL {
                let kind_stats = stats.kind(kind);
                let kind = format!("{kind:?}").to_lowercase();
                if kind_stats.bytes_in > 0 {
                    println!(
                        "    {kind}: {} -> {} bytes",
                        kind_stats.bytes_in, kind_stats.bytes_out
                    );
                    figure(
                        &format!("compression_saving_pct_{kind}"),
                        kind_stats.saving_pct(),
                        "%",
                    );
                }
            }
            figure("compression_saving_pct", stats.total.saving_pct(), "%");
            figure("compress_mb_per_s", stats.total.throughput_mb_s(), "MB/s");
        }
    }
    println!("  off: {plain_bytes} bytes; gzip of them: {gzipped} bytes");
    figure(
        "gzip_saving_pct",
        100.0 * (1.0 - gzipped as f64 / plain_bytes as f64),
        "%",
    );
}

async fn ten_mb(seed: u64) {
    let dataset = Dataset::generate(DatasetSpec::mb10(seed));
    let server = server_for(&dataset);
    let json = dataset.json_bytes();
    println!(
        "  10mb: {} records, {json} bytes of JSON",
        dataset.record_count()
    );
    let mut best = Duration::MAX;
    let mut bytes = 0;
    let mut kept = None;
    for run in 0..3 {
        let (elapsed, received, client) =
            initial_sync(&server, &dataset, &format!("10mb-{run}")).await;
        best = best.min(elapsed);
        bytes = received;
        kept = Some(client);
    }
    figure("initial_sync_10mb_ms", ms(best), "ms");
    figure("initial_sync_10mb_bytes", bytes as f64, "B");
    figure(
        "initial_sync_10mb_bytes_pct",
        100.0 * bytes as f64 / json as f64,
        "%",
    );
    let client = kept.expect("three runs");
    let changed = change_records(server.database(), &dataset, seed ^ 0x5eed, 1_000);
    let before = client.stats();
    let started = Instant::now();
    let report = client.pull_all().await.expect("incremental");
    let elapsed = started.elapsed();
    let received = client.stats().bytes_received - before.bytes_received;
    println!(
        "  incremental: {changed} records changed, {} received in {} batches",
        report.records, report.batches
    );
    figure("incremental_1000_of_35k_ms", ms(elapsed), "ms");
    figure("incremental_1000_of_35k_bytes", received as f64, "B");
    figure(
        "incremental_1000_of_35k_bytes_pct",
        100.0 * received as f64 / json as f64,
        "%",
    );
    let started = Instant::now();
    client.pull_all().await.expect("nothing new");
    let quiet = client.stats().bytes_received - before.bytes_received - received;
    figure("pull_nothing_changed_ms", ms(started.elapsed()), "ms");
    figure("pull_nothing_changed_bytes", quiet as f64, "B");
}

fn main() {
    let seed = common::seed(7);
    println!("sync figures, seed {seed}");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        best_initial_sync("100kb", DatasetSpec::kb100(seed)).await;
        best_initial_sync("1mb", DatasetSpec::mb1(seed)).await;
        ten_mb(seed).await;
    });
    compression(seed);
}

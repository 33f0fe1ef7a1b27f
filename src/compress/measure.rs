//! A measurement of every level on the data set the benchmarks use, run by hand:
//! `cargo test --release --lib measure_levels -- --ignored --nocapture`.

use std::sync::Arc;

use mobilesyncdb_crdt::Value;

use super::{CompressionStats, Compressor, Level};
use crate::schema::FieldType;

/// One table's batch as the sync protocol sends it: ids, sequence numbers, flags,
/// automerge change chunks, empty touched masks, and one column per field.
struct Batch {
    ids: Vec<String>,
    seqs: Vec<u64>,
    changes: Vec<Vec<u8>>,
    fields: Vec<(FieldType, Vec<Value>)>,
}

fn batches(records: usize, skip_thumbnails: bool) -> Vec<Batch> {
    use crate::dataset::{Dataset, DatasetSpec};
    use crate::engine::Database;
    let dataset = Dataset::generate(DatasetSpec::new(7, records * 300));
    let database = Database::new(crate::config::EngineConfig::default()).expect("engine");
    dataset
        .load_into(&database, &"measure".into())
        .expect("loads");
    let changes = database.changes_since(0, usize::MAX).expect("all changes");
    let mut batches = Vec::new();
    for table in &dataset.tables {
        if skip_thumbnails && table.name() == "thumbnails" {
            continue;
        }
        let logged: Vec<_> = changes
            .iter()
            .filter(|change| change.table == table.name())
            .collect();
        for (rows, logged) in table.rows.chunks(500).zip(logged.chunks(500)) {
            let fields = table
                .schema
                .fields
                .iter()
                .map(|field| {
                    let values = rows
                        .iter()
                        .map(|row| row.get(&field.name).cloned().unwrap_or(Value::Null))
                        .collect();
                    (field.kind, values)
                })
                .collect();
            batches.push(Batch {
                ids: logged
                    .iter()
                    .map(|change| change.record_id.clone())
                    .collect(),
                seqs: logged.iter().map(|change| change.seq).collect(),
                changes: logged.iter().map(|change| change.change.clone()).collect(),
                fields,
            });
        }
    }
    batches
}

/// One encoded column and what decodes it.
enum Encoded {
    Strs(usize, Vec<u8>),
    U64s(usize, Vec<u8>),
    Blobs(usize, Vec<u8>),
    Values(FieldType, usize, Vec<u8>),
}

impl Encoded {
    fn decode(&self) -> bool {
        match self {
            Encoded::Strs(count, bytes) => super::decode_strs(*count, bytes).is_ok(),
            Encoded::U64s(count, bytes) => super::decode_u64s(*count, bytes).is_ok(),
            Encoded::Blobs(count, bytes) => super::decode_blobs(*count, bytes).is_ok(),
            Encoded::Values(kind, count, bytes) => {
                super::decode_values(*kind, *count, bytes).is_ok()
            }
        }
    }
}

fn encode_batch(compressor: &Compressor, batch: &Batch) -> Vec<Encoded> {
    let n = batch.ids.len();
    let ids: Vec<&str> = batch.ids.iter().map(String::as_str).collect();
    let changes: Vec<&[u8]> = batch.changes.iter().map(Vec::as_slice).collect();
    let flags = vec![8u64; n];
    let masks = vec![&[][..]; n];
    let mut encoded = vec![
        Encoded::Strs(n, compressor.encode_strs(&ids)),
        Encoded::U64s(n, compressor.encode_u64s(&batch.seqs)),
        Encoded::U64s(n, compressor.encode_u64s(&flags)),
        Encoded::Blobs(n, compressor.encode_blobs(&changes)),
        Encoded::Blobs(n, compressor.encode_blobs(&masks)),
    ];
    for (kind, values) in &batch.fields {
        let bytes = compressor.encode_values(*kind, values);
        encoded.push(Encoded::Values(*kind, values.len(), bytes));
    }
    encoded
}

fn measure_decoding(encoded: &[Encoded], plain_bytes: u64) {
    let started = std::time::Instant::now();
    assert!(encoded.iter().all(Encoded::decode));
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "          decoding: {:.0} MB/s of plain bytes",
        plain_bytes as f64 / 1e6 / seconds
    );
}

#[test]
#[ignore = "a measurement, not a check: cargo test --release --lib measure_levels -- --ignored --nocapture"]
fn measure_levels() {
    for skip_thumbnails in [true, false] {
        let batches = batches(20_000, skip_thumbnails);
        println!("\nthumbnails skipped: {skip_thumbnails}");
        for level in Level::ALL {
            let stats = Arc::new(CompressionStats::new());
            let compressor = Compressor::new(level, stats.clone());
            let started = std::time::Instant::now();
            let mut encoded = Vec::new();
            for _ in 0..5 {
                encoded.clear();
                for batch in &batches {
                    encoded.extend(encode_batch(&compressor, batch));
                }
            }
            let wall = started.elapsed().as_secs_f64();
            let snapshot = stats.snapshot();
            let total = snapshot.total;
            println!(
                "{level:>8}: {:.1} MB plain, saving {:.1}%, {:.0} MB/s (wall {:.0} MB/s)",
                total.bytes_in as f64 / 1e6,
                total.saving_pct(),
                total.throughput_mb_s(),
                total.bytes_in as f64 / 1e6 / wall,
            );
            measure_decoding(&encoded, total.bytes_in / 5);
            for (kind, stats) in snapshot.kinds.iter().filter(|(_, stats)| stats.columns > 0) {
                println!(
                    "          {kind:?}: {:.2} MB, saving {:.1}%, {:.0} MB/s",
                    stats.bytes_in as f64 / 1e6,
                    stats.saving_pct(),
                    stats.throughput_mb_s()
                );
            }
        }
    }
}

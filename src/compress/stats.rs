//! [`CompressionStats`]: what the compressor saw and saved, per kind of data.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::ser::SerializeStruct;
use serde::{Deserialize, Serialize};

use crate::schema::FieldType;

/// The kind of data in a column, as the statistics count it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataKind {
    Text,
    Integers,
    Floats,
    Timestamps,
    Booleans,
    /// Byte strings that LZ4 compresses (or that were too short to try).
    Binary,
    /// Byte strings found to be compressed already (LZ4 saves less than 5%),
    /// stored without LZ4 except at `Max` when it is a few bytes smaller.
    Compressed,
    /// JSON values: lists, maps and mixed scalars.
    Other,
}

impl DataKind {
    /// Every kind, in declaration order.
    pub const ALL: [DataKind; 8] = [
        DataKind::Text,
        DataKind::Integers,
        DataKind::Floats,
        DataKind::Timestamps,
        DataKind::Booleans,
        DataKind::Binary,
        DataKind::Compressed,
        DataKind::Other,
    ];

    /// The kind of a column of `field` values, before any detection (a bytes
    /// column is [`DataKind::Binary`] until found to be compressed).
    pub fn of_field(field: FieldType) -> DataKind {
        match field {
            FieldType::String => DataKind::Text,
            FieldType::Integer | FieldType::Counter => DataKind::Integers,
            FieldType::Float => DataKind::Floats,
            FieldType::Boolean => DataKind::Booleans,
            FieldType::Timestamp => DataKind::Timestamps,
            FieldType::Bytes => DataKind::Binary,
            FieldType::Json => DataKind::Other,
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

#[derive(Debug, Default)]
struct Counters {
    columns: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    nanos: AtomicU64,
}

/// Counters of encoded columns per [`DataKind`], shared by every [`Compressor`]
/// of a server (wrap it in an `Arc`). Counting is lock-free.
///
/// `bytes_in` is the length of a column's plain encoding (the MessagePack array,
/// the uncompressed form every saving is measured against), `bytes_out` the
/// length of what the compressor produced, `nanos` the time spent encoding.
///
/// [`Compressor`]: super::Compressor
#[derive(Debug, Default)]
pub struct CompressionStats {
    kinds: [Counters; DataKind::ALL.len()],
}

impl CompressionStats {
    /// Empty counters.
    pub fn new() -> CompressionStats {
        CompressionStats::default()
    }

    /// Counts one encoded column.
    pub fn record(&self, kind: DataKind, bytes_in: usize, bytes_out: usize, elapsed: Duration) {
        let counters = &self.kinds[kind.index()];
        counters.columns.fetch_add(1, Ordering::Relaxed);
        counters
            .bytes_in
            .fetch_add(bytes_in as u64, Ordering::Relaxed);
        counters
            .bytes_out
            .fetch_add(bytes_out as u64, Ordering::Relaxed);
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        counters.nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// The counters now. Each counter is read on its own, so a snapshot taken
    /// while columns are being encoded may count a column in one field and not yet
    /// in another; `total` is always the sum of the kinds in the snapshot.
    pub fn snapshot(&self) -> StatsSnapshot {
        let kinds: BTreeMap<DataKind, KindStats> = DataKind::ALL
            .iter()
            .map(|kind| {
                let counters = &self.kinds[kind.index()];
                let stats = KindStats {
                    columns: counters.columns.load(Ordering::Relaxed),
                    bytes_in: counters.bytes_in.load(Ordering::Relaxed),
                    bytes_out: counters.bytes_out.load(Ordering::Relaxed),
                    nanos: counters.nanos.load(Ordering::Relaxed),
                };
                (*kind, stats)
            })
            .collect();
        let total = kinds
            .values()
            .fold(KindStats::default(), |sum, stats| sum.add(stats));
        StatsSnapshot { kinds, total }
    }
}

/// The counters of one kind, or their sum.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KindStats {
    pub columns: u64,
    /// Length of the plain encodings.
    pub bytes_in: u64,
    /// Length of the encoded columns.
    pub bytes_out: u64,
    /// Time spent encoding.
    pub nanos: u64,
}

impl KindStats {
    /// The share of the plain encoding's bytes saved, in percent (0 when nothing
    /// was encoded; negative when the encoding grew the data).
    pub fn saving_pct(&self) -> f64 {
        if self.bytes_in == 0 {
            return 0.0;
        }
        100.0 * (1.0 - self.bytes_out as f64 / self.bytes_in as f64)
    }

    /// Plain-encoding megabytes (10^6 bytes) encoded per second of encoding time.
    pub fn throughput_mb_s(&self) -> f64 {
        if self.nanos == 0 {
            return 0.0;
        }
        self.bytes_in as f64 * 1_000.0 / self.nanos as f64
    }

    fn add(self, other: &KindStats) -> KindStats {
        KindStats {
            columns: self.columns + other.columns,
            bytes_in: self.bytes_in + other.bytes_in,
            bytes_out: self.bytes_out + other.bytes_out,
            nanos: self.nanos + other.nanos,
        }
    }
}

/// Serialises the counters and `saving_pct`, so a stats endpoint shows the saving.
impl Serialize for KindStats {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut state = serializer.serialize_struct("KindStats", 5)?;
        state.serialize_field("columns", &self.columns)?;
        state.serialize_field("bytes_in", &self.bytes_in)?;
        state.serialize_field("bytes_out", &self.bytes_out)?;
        state.serialize_field("nanos", &self.nanos)?;
        state.serialize_field("saving_pct", &self.saving_pct())?;
        state.end()
    }
}

/// A copy of [`CompressionStats`] at one moment.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StatsSnapshot {
    /// Every kind, including those with no columns yet.
    pub kinds: BTreeMap<DataKind, KindStats>,
    /// The sum over the kinds.
    pub total: KindStats,
}

impl StatsSnapshot {
    /// The counters of `kind`.
    pub fn kind(&self, kind: DataKind) -> KindStats {
        self.kinds.get(&kind).copied().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_add_up_and_serialise_with_the_saving() {
        let stats = CompressionStats::new();
        stats.record(DataKind::Text, 100, 40, Duration::from_nanos(10));
        stats.record(DataKind::Text, 100, 20, Duration::from_nanos(10));
        stats.record(DataKind::Compressed, 50, 52, Duration::from_nanos(5));
        let snapshot = stats.snapshot();
        assert_eq!(snapshot.kind(DataKind::Text).columns, 2);
        assert_eq!(snapshot.kind(DataKind::Text).saving_pct(), 70.0);
        assert_eq!(snapshot.total.bytes_in, 250);
        assert_eq!(snapshot.total.bytes_out, 112);
        assert_eq!(snapshot.total.nanos, 25);
        let json = serde_json::to_value(&snapshot).expect("serialises");
        assert_eq!(json["kinds"]["text"]["saving_pct"], 70.0);
        assert_eq!(json["total"]["columns"], 3);
    }
}

//! Properties of the whole engine: every level round-trips every column, the
//! plain encoding is exactly what a MessagePack library writes, damaged input is
//! an error and never a panic, detection picks the intended encodings, and the
//! statistics add up.

use std::sync::Arc;

use mobilesyncdb_crdt::Value;
use quickcheck::{Arbitrary, Gen, QuickCheck, TestResult};
use serde::Serialize;

use super::msgpack::IntMeaning;
use super::*;

const KINDS: [FieldType; 8] = [
    FieldType::String,
    FieldType::Integer,
    FieldType::Float,
    FieldType::Boolean,
    FieldType::Timestamp,
    FieldType::Bytes,
    FieldType::Json,
    FieldType::Counter,
];

fn compressor(level: Level) -> Compressor {
    Compressor::new(level, Arc::new(CompressionStats::new()))
}

/// A column of one field's values: mostly well-typed with some nulls; sometimes
/// repetitive (dictionaries, LZ4), sometimes any values at all (plain fallback).
#[derive(Clone, Debug)]
struct Column {
    kind: FieldType,
    values: Vec<Value>,
}

impl Arbitrary for Column {
    fn arbitrary(rng: &mut Gen) -> Column {
        let kind = *rng.choose(&KINDS).expect("kinds");
        let style = u8::arbitrary(rng) % 6;
        let len = usize::arbitrary(rng) % (rng.size() * 2);
        let values = (0..len).map(|i| entry(rng, kind, style, i)).collect();
        Column { kind, values }
    }

    fn shrink(&self) -> Box<dyn Iterator<Item = Column>> {
        let kind = self.kind;
        Box::new(
            self.values
                .shrink()
                .map(move |values| Column { kind, values }),
        )
    }
}

fn entry(rng: &mut Gen, kind: FieldType, style: u8, index: usize) -> Value {
    if style == 0 {
        return Value::arbitrary(rng);
    }
    if u8::arbitrary(rng) % 6 == 0 && style != 5 {
        return Value::Null;
    }
    let repetitive = style == 1;
    match kind {
        FieldType::String if repetitive => Value::str(
            *rng.choose(&["open", "closed", "a much longer status value"])
                .expect("pool"),
        ),
        FieldType::String if style == 2 || style == 3 => Value::str(uuid(rng, style == 3)),
        FieldType::String => Value::str(String::arbitrary(rng)),
        FieldType::Integer => Value::Int(i64::arbitrary(rng)),
        FieldType::Counter => Value::Counter(i64::arbitrary(rng) % 1000),
        FieldType::Timestamp if repetitive => Value::Timestamp(
            1_700_000_000_000 + index as i64 * 1_000 + i64::from(u8::arbitrary(rng)),
        ),
        FieldType::Timestamp => Value::Timestamp(i64::arbitrary(rng)),
        FieldType::Float => Value::Float(f64::arbitrary(rng)),
        FieldType::Boolean => Value::Bool(bool::arbitrary(rng)),
        FieldType::Bytes if repetitive => Value::bytes(b"abcabcabcabcabcabcabc".repeat(3)),
        FieldType::Bytes => Value::bytes(Vec::<u8>::arbitrary(rng)),
        FieldType::Json => Value::arbitrary(rng),
    }
}

fn uuid(rng: &mut Gen, upper: bool) -> String {
    let bytes: Vec<u8> = (0..16).map(|_| u8::arbitrary(rng)).collect();
    let hex: String = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
    let text = format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    );
    if upper { text.to_uppercase() } else { text }
}

fn round_trips(column: &Column, level: Level) -> bool {
    let encoded = compressor(level).encode_values(column.kind, &column.values);
    decode_values(column.kind, column.values.len(), &encoded).ok() == Some(column.values.clone())
}

#[test]
fn every_level_round_trips_every_column() {
    fn property(column: Column) -> bool {
        Level::ALL.iter().all(|level| round_trips(&column, *level))
    }
    QuickCheck::new()
        .tests(500)
        .quickcheck(property as fn(Column) -> bool);
}

#[test]
fn max_is_never_larger_than_the_other_levels() {
    fn property(column: Column) -> bool {
        let size = |level| {
            compressor(level)
                .encode_values(column.kind, &column.values)
                .len()
        };
        let max = size(Level::Max);
        [Level::Off, Level::Fast, Level::Balanced]
            .iter()
            .all(|level| max <= size(*level))
    }
    QuickCheck::new().quickcheck(property as fn(Column) -> bool);
}

#[test]
fn blobs_u64s_and_strs_round_trip_at_every_level() {
    fn property(blobs: Vec<Vec<u8>>, numbers: Vec<u64>, strings: Vec<String>) -> bool {
        let blob_refs: Vec<&[u8]> = blobs.iter().map(Vec::as_slice).collect();
        let str_refs: Vec<&str> = strings.iter().map(String::as_str).collect();
        Level::ALL.iter().all(|level| {
            let compressor = compressor(*level);
            let encoded_blobs = compressor.encode_blobs(&blob_refs);
            let encoded_u64s = compressor.encode_u64s(&numbers);
            let encoded_strs = compressor.encode_strs(&str_refs);
            decode_blobs(blobs.len(), &encoded_blobs).ok().as_ref() == Some(&blobs)
                && decode_u64s(numbers.len(), &encoded_u64s).ok().as_ref() == Some(&numbers)
                && decode_strs(strings.len(), &encoded_strs).ok().as_ref() == Some(&strings)
        })
    }
    QuickCheck::new().quickcheck(property as fn(Vec<Vec<u8>>, Vec<u64>, Vec<String>) -> bool);
}

/// Large columns cross the 4 KiB sampling threshold and the 64 KiB LZ4 block.
#[test]
fn large_columns_round_trip_at_every_level() {
    let mut rng = Gen::new(100);
    for kind in KINDS {
        for style in 1..6 {
            let values: Vec<Value> = (0..20_000)
                .map(|i| entry(&mut rng, kind, style, i))
                .collect();
            let column = Column { kind, values };
            for level in Level::ALL {
                assert!(
                    round_trips(&column, level),
                    "{kind} style {style} at {level}"
                );
            }
        }
    }
}

/// The plain encoding, written by rmp-serde, for comparison.
struct Reference<'a> {
    value: &'a Value,
    ints: IntMeaning,
}

impl Serialize for Reference<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let ints = self.ints;
        match self.value {
            Value::Null => serializer.serialize_unit(),
            Value::Bool(flag) => serializer.serialize_bool(*flag),
            Value::Int(n) => integer(serializer, *n, IntMeaning::Int, ints),
            Value::Timestamp(n) => integer(serializer, *n, IntMeaning::Timestamp, ints),
            Value::Counter(n) => integer(serializer, *n, IntMeaning::Counter, ints),
            Value::Float(x) => serializer.serialize_f64(*x),
            Value::Str(text) => serializer.serialize_str(text),
            Value::Bytes(bytes) => serializer.serialize_bytes(bytes),
            Value::List(items) => {
                serializer.collect_seq(items.iter().map(|value| Reference { value, ints }))
            }
            Value::Map(entries) => serializer.collect_map(
                entries
                    .iter()
                    .map(|(key, value)| (key, Reference { value, ints })),
            ),
        }
    }
}

fn integer<S: serde::Serializer>(
    serializer: S,
    n: i64,
    meaning: IntMeaning,
    ints: IntMeaning,
) -> Result<S::Ok, S::Error> {
    if meaning == ints {
        return serializer.serialize_i64(n);
    }
    let ext_type: i8 = match meaning {
        IntMeaning::Int => 1,
        IntMeaning::Timestamp => 2,
        IntMeaning::Counter => 3,
    };
    let payload = serde_bytes::ByteBuf::from(n.to_be_bytes().to_vec());
    serializer.serialize_newtype_struct(rmp_serde::MSGPACK_EXT_STRUCT_NAME, &(ext_type, payload))
}

#[test]
fn plain_is_what_a_messagepack_library_writes_and_bytes_in_is_its_length() {
    fn property(column: Column) -> bool {
        let ints = IntMeaning::of(column.kind);
        let references: Vec<Reference<'_>> = column
            .values
            .iter()
            .map(|value| Reference { value, ints })
            .collect();
        let mut expected = vec![0u8];
        expected.extend(rmp_serde::to_vec(&references).expect("serialises"));
        Level::ALL.iter().all(|level| {
            let stats = Arc::new(CompressionStats::new());
            let encoded =
                Compressor::new(*level, stats.clone()).encode_values(column.kind, &column.values);
            let bytes_in = stats.snapshot().total.bytes_in as usize;
            bytes_in == expected.len() - 1 && (*level != Level::Off || encoded == expected)
        })
    }
    QuickCheck::new().quickcheck(property as fn(Column) -> bool);
}

#[test]
fn plain_sizes_of_slice_columns_match_rmp_serde() {
    fn property(blobs: Vec<Vec<u8>>, numbers: Vec<u64>, strings: Vec<String>) -> bool {
        let stats = Arc::new(CompressionStats::new());
        let compressor = Compressor::new(Level::Balanced, stats.clone());
        let blob_refs: Vec<&[u8]> = blobs.iter().map(Vec::as_slice).collect();
        let bins: Vec<serde_bytes::ByteBuf> = blobs
            .iter()
            .cloned()
            .map(serde_bytes::ByteBuf::from)
            .collect();
        let str_refs: Vec<&str> = strings.iter().map(String::as_str).collect();
        compressor.encode_blobs(&blob_refs);
        compressor.encode_u64s(&numbers);
        compressor.encode_strs(&str_refs);
        let expected = [
            rmp_serde::to_vec(&bins),
            rmp_serde::to_vec(&numbers),
            rmp_serde::to_vec(&strings),
        ]
        .iter()
        .map(|bytes| bytes.as_ref().expect("serialises").len() as u64)
        .sum::<u64>();
        stats.snapshot().total.bytes_in == expected
    }
    QuickCheck::new().quickcheck(property as fn(Vec<Vec<u8>>, Vec<u64>, Vec<String>) -> bool);
}

// Malformed input.

/// Columns of every encoding, with and without LZ4, with the values they hold.
fn sample_columns() -> Vec<(FieldType, Vec<Value>, Vec<u8>)> {
    let mut rng = Gen::new(40);
    let mut samples = Vec::new();
    for kind in KINDS {
        for style in 0..6 {
            samples.push((
                kind,
                (0..60).map(|i| entry(&mut rng, kind, style, i)).collect(),
            ));
        }
    }
    // Columns that always compress, so that LZ4 frames are among the samples.
    let titles = (0..100).map(|i| Value::str(format!("Buy groceries for trip {i}")));
    samples.push((FieldType::String, titles.collect()));
    samples.push((FieldType::Integer, vec![Value::Int(8); 500]));
    samples.push((FieldType::Bytes, vec![Value::bytes(b"abcd".repeat(40)); 3]));
    let mut columns = Vec::new();
    for (kind, values) in samples {
        for level in Level::ALL {
            let encoded = compressor(level).encode_values(kind, &values);
            columns.push((kind, values.clone(), encoded));
        }
    }
    columns
}

#[test]
fn every_truncation_is_an_error() {
    for (kind, values, encoded) in sample_columns() {
        for len in 0..encoded.len() {
            assert!(
                decode_values(kind, values.len(), &encoded[..len]).is_err(),
                "{kind} column {encoded:02x?} cut at {len}"
            );
        }
    }
}

/// A damaged frame is an error, or (when the damage hits a bit the LZ4 format
/// ignores, such as the match length of a block's last sequence) the same values.
#[test]
fn damaged_lz4_frames_never_give_different_values() {
    let (mut checked, mut refused) = (0, 0);
    for (kind, values, encoded) in sample_columns() {
        if !EncodingByte::of(&encoded).expect("valid").lz4 {
            continue;
        }
        for index in 1..encoded.len() {
            for flip in [0x01, 0x80] {
                let mut damaged = encoded.clone();
                damaged[index] ^= flip;
                checked += 1;
                match decode_values(kind, values.len(), &damaged) {
                    Ok(decoded) => assert_eq!(decoded, values, "{kind} flip at {index}"),
                    Err(_) => refused += 1,
                }
            }
        }
    }
    assert!(
        checked > 1_000,
        "the samples hold LZ4 columns: {checked} flips"
    );
    assert!(
        refused * 100 > checked * 97,
        "{refused} of {checked} refused"
    );
}

#[test]
fn unknown_encoding_bytes_are_errors() {
    for byte in 0..=255u8 {
        if EncodingByte::parse(byte).is_err() {
            for kind in KINDS {
                assert!(matches!(
                    decode_values(kind, 0, &[byte]),
                    Err(ColumnError::UnknownEncoding(_))
                ));
            }
        }
    }
    assert!(matches!(
        decode_values(FieldType::String, 0, &[]),
        Err(ColumnError::Empty)
    ));
}

#[test]
fn huge_declared_counts_and_lengths_are_errors_without_allocating() {
    let huge = usize::MAX;
    let cases: Vec<(FieldType, usize, Vec<u8>)> = vec![
        (FieldType::Integer, huge, vec![0x41]),
        (FieldType::Integer, huge, vec![0x01]),
        (FieldType::Boolean, huge, vec![0x45, 0xff]),
        (FieldType::Float, 1 << 40, vec![0x44; 100]),
        (
            FieldType::String,
            1,
            [vec![0x42], varint(1 << 62), vec![1, b'a', 0]].concat(),
        ),
        (
            FieldType::String,
            1,
            [vec![0x43], varint(u64::MAX)].concat(),
        ),
        (
            FieldType::Bytes,
            2,
            [vec![0x46], varint(1 << 40), varint(1 << 40)].concat(),
        ),
        (
            FieldType::Json,
            0xffff_ffff,
            vec![0x00, 0xdd, 0xff, 0xff, 0xff, 0xff],
        ),
        (
            FieldType::Json,
            1,
            vec![0x00, 0x91, 0xdf, 0xff, 0xff, 0xff, 0xff],
        ),
        (
            FieldType::Json,
            1,
            vec![0x00, 0x91, 0xc6, 0xff, 0xff, 0xff, 0xff],
        ),
        (
            FieldType::Json,
            1,
            vec![
                0x00, 0x91, 0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            ],
        ),
    ];
    for (kind, count, bytes) in cases {
        assert!(
            decode_values(kind, count, &bytes).is_err(),
            "{kind} {bytes:02x?}"
        );
    }
    assert!(decode_u64s(huge, &[0x41]).is_err());
    assert!(decode_strs(huge, &[0x43]).is_err());
    assert!(decode_blobs(huge, &[0x46]).is_err());
}

#[test]
fn a_frame_claiming_a_huge_content_size_is_refused() {
    // Magic, FLG with content size, BD 64 KiB, 8 bytes of content size, HC.
    let mut frame = vec![0x80 | 0x03, 0x04, 0x22, 0x4d, 0x18, 0x48, 0x40];
    frame.extend_from_slice(&(1u64 << 40).to_le_bytes());
    frame.extend_from_slice(&[0x00, 0, 0, 0, 0]);
    assert!(matches!(
        decode_values(FieldType::String, 1, &frame),
        Err(ColumnError::AllocationTooLarge { .. })
    ));
}

fn varint(value: u64) -> Vec<u8> {
    let mut out = Vec::new();
    super::wire::put_varint(&mut out, value);
    out
}

#[test]
fn null_entries_in_never_null_columns_are_errors() {
    assert!(matches!(
        decode_u64s(2, &[0x01, 0b01, 0x02]),
        Err(ColumnError::UnexpectedNull { entry: 1 })
    ));
    assert!(decode_strs(1, &[0x03, 0b0]).is_err());
    assert!(decode_blobs(1, &[0x06, 0b0]).is_err());
}

#[test]
fn random_bytes_never_panic() {
    fn property(kind: u8, count: u8, bytes: Vec<u8>) -> bool {
        let kind = KINDS[usize::from(kind) % KINDS.len()];
        let count = usize::from(count);
        let _ = decode_values(kind, count, &bytes);
        let _ = decode_blobs(count, &bytes);
        let _ = decode_u64s(count, &bytes);
        let _ = decode_strs(count, &bytes);
        true
    }
    QuickCheck::new()
        .tests(2_000)
        .quickcheck(property as fn(u8, u8, Vec<u8>) -> bool);
}

#[test]
fn damaged_columns_never_panic() {
    fn property(column: Column, level: u8, flips: Vec<(usize, u8)>) -> TestResult {
        let level = Level::ALL[usize::from(level) % Level::ALL.len()];
        let mut encoded = compressor(level).encode_values(column.kind, &column.values);
        if flips.is_empty() {
            return TestResult::discard();
        }
        for (index, flip) in flips {
            let len = encoded.len();
            encoded[index % len] ^= flip;
        }
        let count = column.values.len();
        for count in [count, count + 1, count.saturating_sub(1)] {
            let _ = decode_values(column.kind, count, &encoded);
        }
        TestResult::passed()
    }
    QuickCheck::new().quickcheck(property as fn(Column, u8, Vec<(usize, u8)>) -> TestResult);
}

// Detection.

fn encoding_of(column: &[u8]) -> EncodingByte {
    EncodingByte::of(column).expect("an encoded column")
}

#[test]
fn random_bytes_are_stored_without_lz4_and_counted_compressed() {
    let mut rng = fastrand::Rng::with_seed(5);
    let blobs: Vec<Vec<u8>> = (0..40)
        .map(|_| (0..300).map(|_| rng.u8(..)).collect())
        .collect();
    let refs: Vec<&[u8]> = blobs.iter().map(Vec::as_slice).collect();
    for level in [Level::Fast, Level::Balanced, Level::Max] {
        let stats = Arc::new(CompressionStats::new());
        let encoded = Compressor::new(level, stats.clone()).encode_blobs(&refs);
        // At `Max` LZ4 may win by the few bytes it saves on the lengths.
        assert!(level == Level::Max || !encoding_of(&encoded).lz4, "{level}");
        assert_eq!(
            stats.snapshot().kind(DataKind::Compressed).columns,
            1,
            "{level}"
        );
    }
}

#[test]
fn blobs_with_a_compressed_magic_number_skip_lz4_at_balanced() {
    let jpeg = [&[0xff, 0xd8, 0xff, 0xe0][..], &[0u8; 500]].concat();
    let values = vec![Value::bytes(jpeg.clone()), Value::Null, Value::bytes(jpeg)];
    let stats = Arc::new(CompressionStats::new());
    let encoded =
        Compressor::new(Level::Balanced, stats.clone()).encode_values(FieldType::Bytes, &values);
    assert_eq!(encoding_of(&encoded).encoding, ColumnEncoding::Blobs);
    assert!(!encoding_of(&encoded).lz4);
    assert_eq!(stats.snapshot().kind(DataKind::Compressed).columns, 1);
}

#[test]
fn repeated_text_gets_lz4() {
    let titles: Vec<String> = (0..200)
        .map(|i| format!("Buy groceries for the weekend trip number {i}"))
        .collect();
    let values: Vec<Value> = titles
        .iter()
        .map(|title| Value::str(title.as_str()))
        .collect();
    for level in [Level::Fast, Level::Balanced] {
        let encoded = compressor(level).encode_values(FieldType::String, &values);
        let header = encoding_of(&encoded);
        assert_eq!(header.encoding, ColumnEncoding::Strings, "{level}");
        assert!(header.lz4 && header.all_present, "{level}");
    }
}

#[test]
fn low_cardinality_strings_get_a_dictionary_at_balanced_only() {
    let statuses = ["open", "in progress", "done", "blocked"];
    let values: Vec<Value> = (0..1_000)
        .map(|i| {
            if i % 10 == 3 {
                Value::Null
            } else {
                Value::str(statuses[i % 4])
            }
        })
        .collect();
    let balanced = compressor(Level::Balanced).encode_values(FieldType::String, &values);
    assert_eq!(encoding_of(&balanced).encoding, ColumnEncoding::Dictionary);
    assert!(!encoding_of(&balanced).all_present);
    let fast = compressor(Level::Fast).encode_values(FieldType::String, &values);
    assert_eq!(encoding_of(&fast).encoding, ColumnEncoding::Strings);
    let ids: Vec<String> = (0..1_000).map(|i| format!("id-{i:05}")).collect();
    let id_refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let encoded_ids = compressor(Level::Balanced).encode_strs(&id_refs);
    assert_ne!(
        encoding_of(&encoded_ids).encoding,
        ColumnEncoding::Dictionary
    );
}

#[test]
fn uuid_strings_pack_into_sixteen_bytes_at_balanced() {
    let mut rng = Gen::new(10);
    for upper in [false, true] {
        let ids: Vec<String> = (0..100).map(|_| uuid(&mut rng, upper)).collect();
        let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        let encoded = compressor(Level::Balanced).encode_strs(&refs);
        assert_eq!(encoding_of(&encoded).encoding, ColumnEncoding::Uuids);
        assert_eq!(encoded.len(), 1 + 1 + 16 * 100);
        assert_eq!(decode_strs(100, &encoded).expect("valid"), ids);
    }
    let mut mixed: Vec<String> = (0..10).map(|_| uuid(&mut rng, false)).collect();
    mixed.push("ABCDEF01-0000-0000-0000-000000000000".to_owned());
    let refs: Vec<&str> = mixed.iter().map(String::as_str).collect();
    let encoded = compressor(Level::Balanced).encode_strs(&refs);
    assert_eq!(encoding_of(&encoded).encoding, ColumnEncoding::Strings);
}

#[test]
fn timestamps_become_deltas_far_smaller_than_plain() {
    let values: Vec<Value> = (0..1_000)
        .map(|i| Value::Timestamp(1_704_067_200_000 + i * 4_000 + (i * 7919) % 1_000))
        .collect();
    let plain = compressor(Level::Off).encode_values(FieldType::Timestamp, &values);
    let balanced = compressor(Level::Balanced).encode_values(FieldType::Timestamp, &values);
    assert_eq!(encoding_of(&balanced).encoding, ColumnEncoding::DeltaVarint);
    assert!(
        balanced.len() * 3 < plain.len(),
        "{} vs {}",
        balanced.len(),
        plain.len()
    );
}

#[test]
fn mismatched_values_fall_back_to_plain() {
    let values = vec![Value::str("a"), Value::Int(3), Value::Null];
    let encoded = compressor(Level::Balanced).encode_values(FieldType::String, &values);
    assert_eq!(encoding_of(&encoded).encoding, ColumnEncoding::Plain);
    assert_eq!(
        decode_values(FieldType::String, 3, &encoded).expect("valid"),
        values
    );
}

#[test]
fn decoding_with_the_wrong_column_type_is_an_error() {
    let encoded = compressor(Level::Fast).encode_values(FieldType::Boolean, &[Value::Bool(true)]);
    assert!(matches!(
        decode_values(FieldType::Integer, 1, &encoded),
        Err(ColumnError::WrongEncoding { .. })
    ));
}

/// The examples of docs/COMPRESSION.md, so that the document stays true.
#[test]
fn documented_examples_encode_and_decode() {
    let fast = compressor(Level::Fast);
    let balanced = compressor(Level::Balanced);
    let map = Value::Map(Box::new([("a".to_owned(), Value::Int(1))].into()));
    let cases: Vec<(FieldType, Vec<Value>, &Compressor, Vec<u8>)> = vec![
        (
            FieldType::Json,
            vec![map, Value::Null],
            &fast,
            vec![0x00, 0x92, 0x81, 0xa1, 0x61, 0x01, 0xc0],
        ),
        (
            FieldType::Timestamp,
            vec![Value::Timestamp(5), Value::Int(5)],
            &fast,
            vec![0x00, 0x92, 0x05, 0xd7, 0x01, 0, 0, 0, 0, 0, 0, 0, 0x05],
        ),
        (
            FieldType::Timestamp,
            vec![Value::Timestamp(1000), Value::Null, Value::Timestamp(1003)],
            &fast,
            vec![0x01, 0x05, 0xd0, 0x0f, 0x06],
        ),
        (
            FieldType::String,
            ["open", "done", "open", "open"].map(Value::str).to_vec(),
            &balanced,
            vec![
                0x42, 0x02, 0x04, 0x6f, 0x70, 0x65, 0x6e, 0x04, 0x64, 0x6f, 0x6e, 0x65, 0x00, 0x01,
                0x00, 0x00,
            ],
        ),
        (
            FieldType::String,
            vec![Value::str("ab"), Value::Null, Value::str("c")],
            &fast,
            vec![0x03, 0x05, 0x02, 0x61, 0x62, 0x01, 0x63],
        ),
        (
            FieldType::Float,
            vec![Value::Float(1.5)],
            &fast,
            vec![0x44, 0, 0, 0, 0, 0, 0, 0xf8, 0x3f],
        ),
        (
            FieldType::Boolean,
            vec![
                Value::Bool(true),
                Value::Null,
                Value::Bool(false),
                Value::Bool(true),
            ],
            &fast,
            vec![0x05, 0x0d, 0x05],
        ),
        (
            FieldType::Bytes,
            vec![Value::bytes(b"hi".to_vec()), Value::bytes(Vec::new())],
            &fast,
            vec![0x46, 0x02, 0x00, 0x68, 0x69],
        ),
        (
            FieldType::String,
            vec![Value::str("123e4567-e89b-12d3-a456-426614174000")],
            &balanced,
            [
                vec![0x47, 0x00],
                0x123e_4567_e89b_12d3_a456_4266_1417_4000_u128
                    .to_be_bytes()
                    .to_vec(),
            ]
            .concat(),
        ),
    ];
    for (kind, values, compressor, bytes) in cases {
        assert_eq!(
            compressor.encode_values(kind, &values),
            bytes,
            "{kind} {values:?}"
        );
        assert_eq!(
            decode_values(kind, values.len(), &bytes).expect("valid"),
            values
        );
    }
    assert_eq!(
        fast.encode_u64s(&[5, 6, 7, 10]),
        [0x41, 0x0a, 0x02, 0x02, 0x06]
    );
}

// Statistics.

#[test]
fn stats_add_up_to_the_columns_written() {
    let stats = Arc::new(CompressionStats::new());
    let compressor = Compressor::new(Level::Balanced, stats.clone());
    let names: Vec<Value> = (0..100).map(|i| Value::str(format!("name {i}"))).collect();
    let outputs = [
        compressor.encode_values(FieldType::String, &names),
        compressor.encode_values(FieldType::Float, &[Value::Float(1.5), Value::Null]),
        compressor.encode_u64s(&[1, 2, 3]),
        compressor.encode_strs(&["a", "b"]),
        compressor.encode_blobs(&[b"chunk".as_slice()]),
    ];
    let snapshot = stats.snapshot();
    assert_eq!(snapshot.total.columns, 5);
    let written: usize = outputs.iter().map(Vec::len).sum();
    assert_eq!(snapshot.total.bytes_out as usize, written);
    assert_eq!(snapshot.kind(DataKind::Text).columns, 2);
    assert_eq!(snapshot.kind(DataKind::Floats).bytes_in, 1 + 9 + 1);
    assert_eq!(snapshot.kind(DataKind::Integers).bytes_in, 4);
    let sum: u64 = snapshot.kinds.values().map(|kind| kind.bytes_in).sum();
    assert_eq!(sum, snapshot.total.bytes_in);
}

#[test]
fn levels_parse_and_print() {
    for level in Level::ALL {
        assert_eq!(level.to_string().parse::<Level>(), Ok(level));
        assert_eq!(
            serde_json::to_value(level).expect("serialises"),
            level.to_string()
        );
    }
    assert_eq!(Level::default(), Level::Balanced);
    let error = "ultra".parse::<Level>().expect_err("unknown");
    assert_eq!(
        error.to_string(),
        "unknown compression level \"ultra\": use off, fast, balanced or max"
    );
}

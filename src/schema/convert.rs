//! Type converters: how a value written under one field type reads under another.
//!
//! A record's document keeps every value as its writer wrote it, so after a type
//! change it may hold values of the old type (old records, old apps still
//! writing). Every read goes through [`FieldType::read`], which converts them;
//! the same conversions translate the current type back to an older app's type.
//! [`Converter`] names the conversion between two types for diffs and plans, and
//! says whether every value converts or each must be checked.

use base64::Engine as _;
use mobilesyncdb_crdt::Value;
use serde::{Deserialize, Serialize};

use super::{FieldType, is_whole, parse_rfc3339_ms, value_to_json};

/// Whether every value of a type converts to another type, or only some do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Coverage {
    /// Every value converts (an integer to a float, anything to a string).
    Total,
    /// Only some values convert (a string to a number when it parses): a
    /// migration checks every record's value first.
    Checked,
}

/// The conversion of a field from one type to another.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Converter {
    pub from: FieldType,
    pub to: FieldType,
    pub coverage: Coverage,
}

impl Converter {
    /// The converter from `from` to `to`, if there is one.
    pub fn between(from: FieldType, to: FieldType) -> Option<Converter> {
        use FieldType::{Boolean, Bytes, Counter, Float, Integer, Json, String, Timestamp};
        let coverage = match (from, to) {
            _ if from == to => Coverage::Total,
            // Counters count by automerge increments, which only a counter
            // value takes: nothing becomes one.
            (_, Counter) => return None,
            (_, Json | String) => Coverage::Total,
            (Integer | Counter | Timestamp, Integer | Float | Timestamp) => Coverage::Total,
            (Boolean, Integer | Float) => Coverage::Total,
            (Float, Integer | Timestamp) => Coverage::Checked,
            (String, Integer | Float | Boolean | Timestamp | Bytes) => Coverage::Checked,
            (Integer, Boolean) => Coverage::Checked,
            (Json, _) => Coverage::Checked,
            _ => return None,
        };
        Some(Converter { from, to, coverage })
    }

    /// A short description for diffs: `integer → float (every value)`.
    pub fn describe(&self) -> std::string::String {
        let coverage = match self.coverage {
            Coverage::Total => "every value converts",
            Coverage::Checked => "each value must convert",
        };
        format!("{} → {} ({coverage})", self.from, self.to)
    }
}

impl FieldType {
    /// `value` as this type, if it converts: unchanged when it already has the
    /// type (after [`FieldType::coerce`]); converted by the rules of
    /// [`Converter`] otherwise; `None` when it cannot be. `Null` stays `Null`.
    pub fn convert(self, value: Value) -> Option<Value> {
        let value = self.coerce(value);
        if self.accepts(&value) {
            return Some(value);
        }
        match self {
            FieldType::String => Some(Value::str(text_of(&value))),
            FieldType::Integer => whole_of(&value).map(Value::Int),
            FieldType::Timestamp => match &value {
                Value::Str(text) => parse_rfc3339_ms(text.trim())
                    .or_else(|| text.trim().parse().ok())
                    .map(Value::Timestamp),
                other => whole_of(other).map(Value::Timestamp),
            },
            FieldType::Float => match &value {
                Value::Str(text) => text
                    .trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|x| x.is_finite())
                    .map(Value::Float),
                Value::Bool(flag) => Some(Value::Float(f64::from(u8::from(*flag)))),
                other => other.as_f64().map(Value::Float),
            },
            FieldType::Boolean => match &value {
                Value::Str(text) => match text.trim() {
                    "true" => Some(Value::Bool(true)),
                    "false" => Some(Value::Bool(false)),
                    _ => None,
                },
                Value::Int(0) => Some(Value::Bool(false)),
                Value::Int(1) => Some(Value::Bool(true)),
                _ => None,
            },
            FieldType::Bytes => match &value {
                Value::Str(text) => base64::engine::general_purpose::STANDARD
                    .decode(text.trim())
                    .ok()
                    .map(Value::bytes),
                _ => None,
            },
            FieldType::Json | FieldType::Counter => None,
        }
    }

    /// `value` as this type for reading: converted, or `Null` when it cannot be
    /// (the document keeps it as written; apps on the version that wrote it
    /// still see it).
    pub fn read(self, value: Value) -> Value {
        if self.accepts(&value) {
            return value;
        }
        self.convert(value).unwrap_or(Value::Null)
    }
}

/// A whole number from an integer-like value, a whole float, a boolean or a
/// string that parses as one.
fn whole_of(value: &Value) -> Option<i64> {
    match value {
        Value::Int(n) | Value::Counter(n) | Value::Timestamp(n) => Some(*n),
        Value::Float(x) if is_whole(*x) => Some(*x as i64),
        Value::Bool(flag) => Some(i64::from(*flag)),
        Value::Str(text) => {
            let text = text.trim();
            text.parse::<i64>().ok().or_else(|| {
                text.parse::<f64>()
                    .ok()
                    .filter(|x| is_whole(*x))
                    .map(|x| x as i64)
            })
        }
        _ => None,
    }
}

/// A value as text: numbers in decimal, booleans as `true`/`false`, timestamps
/// in RFC 3339 (UTC), bytes in base64, lists and maps as JSON.
fn text_of(value: &Value) -> std::string::String {
    match value {
        Value::Null => std::string::String::new(),
        Value::Str(text) => text.to_string(),
        Value::Bool(flag) => flag.to_string(),
        Value::Int(n) | Value::Counter(n) => n.to_string(),
        Value::Float(x) => x.to_string(),
        Value::Timestamp(ms) => format_rfc3339_ms(*ms),
        Value::Bytes(_) | Value::List(_) | Value::Map(_) => match value_to_json(value) {
            serde_json::Value::String(text) => text,
            json => json.to_string(),
        },
    }
}

/// Milliseconds since the epoch as `YYYY-MM-DDTHH:MM:SS.fffZ`.
pub fn format_rfc3339_ms(ms: i64) -> std::string::String {
    let days = ms.div_euclid(86_400_000);
    let in_day = ms.rem_euclid(86_400_000);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        in_day / 3_600_000,
        in_day / 60_000 % 60,
        in_day / 1_000 % 60,
        in_day % 1_000
    )
}

/// The proleptic Gregorian date of a day number since 1970-01-01 (Howard
/// Hinnant's algorithm, the inverse of `days_from_civil`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_widen_and_narrow_when_whole() {
        assert_eq!(
            FieldType::Float.convert(Value::Int(3)),
            Some(Value::Float(3.0))
        );
        assert_eq!(
            FieldType::Integer.convert(Value::Float(3.0)),
            Some(Value::Int(3))
        );
        assert_eq!(FieldType::Integer.convert(Value::Float(3.5)), None);
        assert_eq!(FieldType::Integer.read(Value::Float(3.5)), Value::Null);
    }

    #[test]
    fn strings_parse_or_refuse() {
        assert_eq!(
            FieldType::Integer.convert(Value::str(" 42 ")),
            Some(Value::Int(42))
        );
        assert_eq!(
            FieldType::Float.convert(Value::str("2.5")),
            Some(Value::Float(2.5))
        );
        assert_eq!(FieldType::Float.convert(Value::str("NaN")), None);
        assert_eq!(FieldType::Integer.convert(Value::str("forty")), None);
        assert_eq!(
            FieldType::Boolean.convert(Value::str("true")),
            Some(Value::Bool(true))
        );
        assert_eq!(FieldType::Boolean.convert(Value::str("yes")), None);
    }

    #[test]
    fn everything_reads_as_text() {
        assert_eq!(FieldType::String.read(Value::Int(7)), Value::str("7"));
        assert_eq!(FieldType::String.read(Value::Float(2.5)), Value::str("2.5"));
        assert_eq!(
            FieldType::String.read(Value::Bool(true)),
            Value::str("true")
        );
        assert_eq!(
            FieldType::String.read(Value::Timestamp(1_700_000_000_500)),
            Value::str("2023-11-14T22:13:20.500Z")
        );
        assert_eq!(
            FieldType::Timestamp.read(Value::str("2023-11-14T22:13:20.500Z")),
            Value::Timestamp(1_700_000_000_500)
        );
    }

    #[test]
    fn dates_round_trip_through_text() {
        for ms in [
            0,
            -1,
            951_782_400_000,
            4_102_444_799_999,
            -62_135_596_800_000,
        ] {
            let text = format_rfc3339_ms(ms);
            assert_eq!(parse_rfc3339_ms(&text), Some(ms), "{text}");
        }
    }

    #[test]
    fn converters_name_their_coverage() {
        let check = |from, to| Converter::between(from, to).map(|converter| converter.coverage);
        assert_eq!(
            check(FieldType::Integer, FieldType::Float),
            Some(Coverage::Total)
        );
        assert_eq!(
            check(FieldType::Integer, FieldType::String),
            Some(Coverage::Total)
        );
        assert_eq!(
            check(FieldType::String, FieldType::Integer),
            Some(Coverage::Checked)
        );
        assert_eq!(check(FieldType::Bytes, FieldType::Integer), None);
        assert_eq!(check(FieldType::Integer, FieldType::Counter), None);
    }
}

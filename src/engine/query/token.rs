//! The wire form of a [`PageToken`]: URL-safe base64 of a small JSON document.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use mobilesyncdb_crdt::Value;
use serde::{Deserialize, Serialize};

use super::{PageToken, QueryError};

impl PageToken {
    /// The token as an opaque, URL-safe string.
    pub fn encode(&self) -> String {
        let wire = WireToken {
            v: WireValue::from(&self.value),
            i: self.id.clone(),
        };
        // Plain data with string map keys always serialises; an empty token would
        // only fail to decode, never select wrong rows.
        let json = serde_json::to_vec(&wire).unwrap_or_default();
        URL_SAFE_NO_PAD.encode(json)
    }

    /// Reads a token made by [`PageToken::encode`].
    ///
    /// # Errors
    ///
    /// [`QueryError::BadPageToken`] when `token` is not one.
    pub fn decode(token: &str) -> Result<PageToken, QueryError> {
        let bad = |reason: String| QueryError::BadPageToken { reason };
        let json = URL_SAFE_NO_PAD
            .decode(token)
            .map_err(|error| bad(format!("not base64url: {error}")))?;
        let wire: WireToken = serde_json::from_slice(&json)
            .map_err(|error| bad(format!("unreadable content: {error}")))?;
        Ok(PageToken {
            value: wire.v.into(),
            id: wire.i,
        })
    }
}

impl From<PageToken> for String {
    fn from(token: PageToken) -> String {
        token.encode()
    }
}

impl TryFrom<String> for PageToken {
    type Error = QueryError;

    fn try_from(token: String) -> Result<PageToken, QueryError> {
        PageToken::decode(&token)
    }
}

/// The encoded form of a [`PageToken`]. Floats travel as their bits so that every
/// value, NaN and -0.0 included, round-trips exactly (JSON numbers cannot).
#[derive(Serialize, Deserialize)]
struct WireToken {
    v: WireValue,
    i: String,
}

#[derive(Serialize, Deserialize)]
enum WireValue {
    N,
    B(bool),
    I(i64),
    F(u64),
    S(String),
    T(i64),
    Y(Vec<u8>),
    C(i64),
    L(Vec<WireValue>),
    M(BTreeMap<String, WireValue>),
}

impl From<&Value> for WireValue {
    fn from(value: &Value) -> WireValue {
        match value {
            Value::Null => WireValue::N,
            Value::Bool(flag) => WireValue::B(*flag),
            Value::Int(n) => WireValue::I(*n),
            Value::Float(x) => WireValue::F(x.to_bits()),
            Value::Str(text) => WireValue::S(text.to_string()),
            Value::Timestamp(ms) => WireValue::T(*ms),
            Value::Bytes(bytes) => WireValue::Y(bytes.to_vec()),
            Value::Counter(n) => WireValue::C(*n),
            Value::List(items) => WireValue::L(items.iter().map(WireValue::from).collect()),
            Value::Map(entries) => WireValue::M(
                entries
                    .iter()
                    .map(|(key, item)| (key.clone(), WireValue::from(item)))
                    .collect(),
            ),
        }
    }
}

impl From<WireValue> for Value {
    fn from(wire: WireValue) -> Value {
        match wire {
            WireValue::N => Value::Null,
            WireValue::B(flag) => Value::Bool(flag),
            WireValue::I(n) => Value::Int(n),
            WireValue::F(bits) => Value::Float(f64::from_bits(bits)),
            WireValue::S(text) => Value::from(text),
            WireValue::T(ms) => Value::Timestamp(ms),
            WireValue::Y(bytes) => Value::bytes(bytes),
            WireValue::C(n) => Value::Counter(n),
            WireValue::L(items) => Value::List(items.into_iter().map(Value::from).collect()),
            WireValue::M(entries) => Value::Map(Box::new(
                entries
                    .into_iter()
                    .map(|(key, item)| (key, Value::from(item)))
                    .collect(),
            )),
        }
    }
}

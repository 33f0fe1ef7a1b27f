//! [Standard Webhooks](https://www.standardwebhooks.com) signing of webhook deliveries.
//!
//! Every delivery carries three headers: [`HEADER_ID`] (a unique message id, which
//! receivers use to drop duplicates), [`HEADER_TIMESTAMP`] (Unix seconds at signing)
//! and [`HEADER_SIGNATURE`]. The signature is
//! `v1,<base64 of HMAC-SHA256(key, "{id}.{timestamp}.{body}")>`; while a secret is being
//! rotated the header holds one such signature per secret, separated by spaces, and a
//! receiver accepts the delivery when any of them matches.
//!
//! Because the id and the timestamp are signed together with the body, a receiver that
//! checks the timestamp against its own clock ([`verify`], [`Verifier`]) refuses replays
//! of old deliveries as well as forged or altered ones.

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit as _, Mac as _};
use sha2::Sha256;
use subtle::ConstantTimeEq as _;

type HmacSha256 = Hmac<Sha256>;

/// Name of the header carrying the message id.
pub const HEADER_ID: &str = "webhook-id";
/// Name of the header carrying the signing time, in Unix seconds.
pub const HEADER_TIMESTAMP: &str = "webhook-timestamp";
/// Name of the header carrying the space-separated signatures.
pub const HEADER_SIGNATURE: &str = "webhook-signature";

/// The prefix of a secret's textual form.
pub const SECRET_PREFIX: &str = "whsec_";

/// The signature scheme version this module produces and checks (HMAC-SHA256).
const SIGNATURE_VERSION: &str = "v1";

/// How many random bytes [`Secret::generate`] draws (the specification asks for 24 to 64).
const GENERATED_SECRET_LEN: usize = 32;

/// Errors creating or parsing a [`Secret`].
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// The text is not a `whsec_<base64>` (or bare base64) secret.
    #[error("invalid webhook secret: {0}")]
    BadSecret(&'static str),
    /// The operating system's random number generator failed.
    #[error("cannot generate a webhook secret: the system random number generator failed: {0}")]
    Random(String),
}

/// Why a receiver refused a delivery.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// One of the three Standard Webhooks headers is absent or empty.
    #[error("missing `{0}` header")]
    MissingHeader(&'static str),
    /// The timestamp header is not an integer number of seconds.
    #[error("the `webhook-timestamp` header is not a Unix time in seconds")]
    BadTimestamp,
    /// The timestamp is further from the receiver's clock than the tolerance: a replay
    /// of an old delivery, or a badly skewed clock.
    #[error(
        "the delivery timestamp {timestamp} is more than {tolerance_secs} s away from now ({now}): refusing a possible replay"
    )]
    TimestampOutOfTolerance {
        /// The timestamp the delivery carries.
        timestamp: i64,
        /// The receiver's current time.
        now: i64,
        /// The largest accepted distance between the two, in seconds.
        tolerance_secs: i64,
    },
    /// No `v1` signature in the header matches the body, id and timestamp.
    #[error("no signature matches the delivery")]
    NoMatchingSignature,
    /// The receiver's secret could not be parsed.
    #[error("invalid webhook secret: {0}")]
    BadSecret(&'static str),
}

/// A webhook signing secret: the HMAC key shared by the sender and one endpoint.
///
/// Its text form (through [`Display`](fmt::Display), [`Secret::parse`] and serde) is
/// `whsec_<standard base64 of the key>`. [`Debug`](fmt::Debug) never shows the key.
#[derive(Clone)]
pub struct Secret {
    key: Vec<u8>,
}

impl Secret {
    /// A new random secret of 32 bytes from the operating system's CSPRNG.
    pub fn generate() -> Result<Self, SignError> {
        let mut key = vec![0u8; GENERATED_SECRET_LEN];
        getrandom::fill(&mut key).map_err(|e| SignError::Random(e.to_string()))?;
        Ok(Self { key })
    }

    /// Parses `whsec_<base64>`, or bare standard base64 as some providers display it.
    ///
    /// The key may have any non-zero length (receivers must accept what their sender
    /// issued); secrets this server issues come from [`Secret::generate`].
    pub fn parse(text: &str) -> Result<Self, SignError> {
        let text = text.trim();
        let encoded = text.strip_prefix(SECRET_PREFIX).unwrap_or(text);
        if encoded.is_empty() {
            return Err(SignError::BadSecret("the key is empty"));
        }
        let key = STANDARD
            .decode(encoded)
            .map_err(|_| SignError::BadSecret("the key is not standard base64"))?;
        if key.is_empty() {
            return Err(SignError::BadSecret("the key is empty"));
        }
        Ok(Self { key })
    }

    /// A keyed HMAC-SHA256 instance.
    fn mac(&self) -> HmacSha256 {
        // HMAC takes keys of any length (longer ones are hashed), so this cannot fail.
        match HmacSha256::new_from_slice(&self.key) {
            Ok(mac) => mac,
            Err(_) => unreachable!("HMAC accepts keys of any length"),
        }
    }

    /// The raw signature bytes of one delivery.
    fn sign_raw(&self, id: &str, timestamp: i64, body: &[u8]) -> Vec<u8> {
        let mut mac = self.mac();
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac.finalize().into_bytes().to_vec()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SECRET_PREFIX}{}", STANDARD.encode(&self.key))
    }
}

impl FromStr for Secret {
    type Err = SignError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse(text)
    }
}

/// Compares keys in constant time.
impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        self.key.ct_eq(&other.key).into()
    }
}

impl Eq for Secret {}

impl serde::Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// The `v1,<base64>` signature of one delivery: HMAC-SHA256 under `secret` of
/// `"{id}.{timestamp}.{body}"`.
pub fn signature(secret: &Secret, id: &str, timestamp: i64, body: &[u8]) -> String {
    format!(
        "{SIGNATURE_VERSION},{}",
        STANDARD.encode(secret.sign_raw(id, timestamp, body))
    )
}

/// The value of the [`HEADER_SIGNATURE`] header: one [`signature`] per secret, separated
/// by spaces (several while an endpoint's secret is being rotated).
pub fn signature_header(secrets: &[&Secret], id: &str, timestamp: i64, body: &[u8]) -> String {
    secrets
        .iter()
        .map(|secret| signature(secret, id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A header's trimmed value, or [`VerifyError::MissingHeader`] when absent or empty.
fn present<'a>(value: Option<&'a str>, name: &'static str) -> Result<&'a str, VerifyError> {
    value
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .ok_or(VerifyError::MissingHeader(name))
}

/// Receiver-side check of a delivery, with a secret and a timestamp tolerance.
#[derive(Debug, Clone)]
pub struct Verifier {
    secret: Secret,
    tolerance_secs: i64,
}

impl Verifier {
    /// The default tolerance between the delivery's timestamp and the receiver's clock.
    pub const DEFAULT_TOLERANCE_SECS: i64 = 300;

    /// A verifier with the [default tolerance](Self::DEFAULT_TOLERANCE_SECS).
    pub fn new(secret: Secret) -> Self {
        Self {
            secret,
            tolerance_secs: Self::DEFAULT_TOLERANCE_SECS,
        }
    }

    /// A verifier for a secret in text form (`whsec_...` or bare base64).
    pub fn from_secret_str(secret: &str) -> Result<Self, VerifyError> {
        match Secret::parse(secret) {
            Ok(secret) => Ok(Self::new(secret)),
            Err(SignError::BadSecret(reason)) => Err(VerifyError::BadSecret(reason)),
            Err(SignError::Random(_)) => Err(VerifyError::BadSecret("unparsable")),
        }
    }

    /// Sets the largest accepted distance, in seconds, between the delivery's timestamp
    /// and the receiver's clock (negative values count as zero).
    pub fn with_tolerance(mut self, tolerance_secs: i64) -> Self {
        self.tolerance_secs = tolerance_secs.max(0);
        self
    }

    /// Checks a delivery given its three headers (`None` when absent), its raw body and
    /// the receiver's current Unix time in seconds.
    pub fn verify(
        &self,
        id: Option<&str>,
        timestamp: Option<&str>,
        signature_header: Option<&str>,
        body: &[u8],
        now_secs: i64,
    ) -> Result<(), VerifyError> {
        let id = present(id, HEADER_ID)?;
        let timestamp = present(timestamp, HEADER_TIMESTAMP)?;
        let signatures = present(signature_header, HEADER_SIGNATURE)?;

        let timestamp: i64 = timestamp.parse().map_err(|_| VerifyError::BadTimestamp)?;
        if now_secs.abs_diff(timestamp) > self.tolerance_secs.unsigned_abs() {
            return Err(VerifyError::TimestampOutOfTolerance {
                timestamp,
                now: now_secs,
                tolerance_secs: self.tolerance_secs,
            });
        }

        let expected = self.secret.sign_raw(id, timestamp, body);
        let mut matched = subtle::Choice::from(0u8);
        for candidate in signatures.split_ascii_whitespace() {
            let Some((version, encoded)) = candidate.split_once(',') else {
                continue;
            };
            if version != SIGNATURE_VERSION {
                continue;
            }
            let Ok(candidate) = STANDARD.decode(encoded) else {
                continue;
            };
            // `ct_eq` on slices of different lengths is false without comparing contents.
            matched |= expected.as_slice().ct_eq(&candidate);
        }
        if bool::from(matched) {
            Ok(())
        } else {
            Err(VerifyError::NoMatchingSignature)
        }
    }
}

/// Receiver-side check of a delivery: `headers` are the values of [`HEADER_ID`],
/// [`HEADER_TIMESTAMP`] and [`HEADER_SIGNATURE`] (an empty string counts as missing).
///
/// Refuses a timestamp more than `tolerance_secs` away from `now_secs` (use
/// [`Verifier::DEFAULT_TOLERANCE_SECS`]), and accepts when any `v1` signature in the
/// header matches, comparing in constant time.
pub fn verify(
    secret: &Secret,
    headers: (&str, &str, &str),
    body: &[u8],
    now_secs: i64,
    tolerance_secs: i64,
) -> Result<(), VerifyError> {
    let (id, timestamp, signature_header) = headers;
    Verifier::new(secret.clone())
        .with_tolerance(tolerance_secs)
        .verify(
            Some(id),
            Some(timestamp),
            Some(signature_header),
            body,
            now_secs,
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    // The Standard Webhooks reference vector, from the specification repository's official
    // JavaScript library test "sign function works":
    // github.com/standard-webhooks/standard-webhooks, libraries/javascript/src/webhook.test.ts
    // (checked at commit 10d3e46d720c4e5861a792bec25792a04ad4e2b3). The same values are in
    // Svix's manual-verification docs (docs.svix.com/receiving/verifying-payloads/how-manual).
    const VECTOR_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const VECTOR_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const VECTOR_TIMESTAMP: i64 = 1_614_265_330;
    const VECTOR_BODY: &[u8] = br#"{"test": 2432232314}"#;
    const VECTOR_SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    fn vector_secret() -> Secret {
        Secret::parse(VECTOR_SECRET).unwrap()
    }

    fn check(
        secret: &Secret,
        id: &str,
        timestamp: &str,
        sig: &str,
        body: &[u8],
    ) -> Result<(), VerifyError> {
        verify(
            secret,
            (id, timestamp, sig),
            body,
            VECTOR_TIMESTAMP,
            Verifier::DEFAULT_TOLERANCE_SECS,
        )
    }

    #[test]
    fn signature_matches_the_standard_webhooks_vector() {
        let sig = signature(&vector_secret(), VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_BODY);
        assert_eq!(sig, VECTOR_SIGNATURE);
    }

    #[test]
    fn bare_base64_secret_gives_the_same_signature() {
        let secret = Secret::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        assert_eq!(secret, vector_secret());
        assert_eq!(
            signature(&secret, VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_BODY),
            VECTOR_SIGNATURE
        );
    }

    #[test]
    fn vector_verifies() {
        let ts = VECTOR_TIMESTAMP.to_string();
        check(
            &vector_secret(),
            VECTOR_ID,
            &ts,
            VECTOR_SIGNATURE,
            VECTOR_BODY,
        )
        .unwrap();
        let verifier = Verifier::from_secret_str(VECTOR_SECRET).unwrap();
        verifier
            .verify(
                Some(VECTOR_ID),
                Some(&ts),
                Some(VECTOR_SIGNATURE),
                VECTOR_BODY,
                VECTOR_TIMESTAMP + 299,
            )
            .unwrap();
    }

    #[test]
    fn tampered_body_is_refused() {
        let ts = VECTOR_TIMESTAMP.to_string();
        let body = br#"{"test": 2432232315}"#;
        assert_eq!(
            check(&vector_secret(), VECTOR_ID, &ts, VECTOR_SIGNATURE, body),
            Err(VerifyError::NoMatchingSignature)
        );
    }

    #[test]
    fn tampered_id_is_refused() {
        let ts = VECTOR_TIMESTAMP.to_string();
        assert_eq!(
            check(
                &vector_secret(),
                "msg_other",
                &ts,
                VECTOR_SIGNATURE,
                VECTOR_BODY
            ),
            Err(VerifyError::NoMatchingSignature)
        );
    }

    #[test]
    fn tampered_timestamp_is_refused() {
        let ts = (VECTOR_TIMESTAMP + 1).to_string();
        assert_eq!(
            check(
                &vector_secret(),
                VECTOR_ID,
                &ts,
                VECTOR_SIGNATURE,
                VECTOR_BODY
            ),
            Err(VerifyError::NoMatchingSignature)
        );
    }

    #[test]
    fn other_secret_is_refused() {
        let ts = VECTOR_TIMESTAMP.to_string();
        let other = Secret::generate().unwrap();
        assert_eq!(
            check(&other, VECTOR_ID, &ts, VECTOR_SIGNATURE, VECTOR_BODY),
            Err(VerifyError::NoMatchingSignature)
        );
    }

    #[test]
    fn replayed_old_delivery_is_refused() {
        let secret = vector_secret();
        let ts = VECTOR_TIMESTAMP.to_string();
        let headers = (VECTOR_ID, ts.as_str(), VECTOR_SIGNATURE);
        let later = VECTOR_TIMESTAMP + Verifier::DEFAULT_TOLERANCE_SECS + 1;
        assert!(matches!(
            verify(&secret, headers, VECTOR_BODY, later, 300),
            Err(VerifyError::TimestampOutOfTolerance { .. })
        ));
        // From the future, too.
        let earlier = VECTOR_TIMESTAMP - 301;
        assert!(matches!(
            verify(&secret, headers, VECTOR_BODY, earlier, 300),
            Err(VerifyError::TimestampOutOfTolerance { .. })
        ));
        // At the edge of the tolerance it is still accepted.
        verify(&secret, headers, VECTOR_BODY, VECTOR_TIMESTAMP + 300, 300).unwrap();
    }

    #[test]
    fn missing_and_malformed_headers_are_refused() {
        let secret = vector_secret();
        let ts = VECTOR_TIMESTAMP.to_string();
        assert_eq!(
            check(&secret, "", &ts, VECTOR_SIGNATURE, VECTOR_BODY),
            Err(VerifyError::MissingHeader(HEADER_ID))
        );
        assert_eq!(
            check(&secret, VECTOR_ID, "", VECTOR_SIGNATURE, VECTOR_BODY),
            Err(VerifyError::MissingHeader(HEADER_TIMESTAMP))
        );
        assert_eq!(
            check(&secret, VECTOR_ID, &ts, " ", VECTOR_BODY),
            Err(VerifyError::MissingHeader(HEADER_SIGNATURE))
        );
        assert_eq!(
            check(&secret, VECTOR_ID, "hello", VECTOR_SIGNATURE, VECTOR_BODY),
            Err(VerifyError::BadTimestamp)
        );
        for bad in [
            "v1,",
            "v1,dawfeoifkpqwoekfpqoekf",
            &VECTOR_SIGNATURE[..8],
            "v2,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
            "g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
        ] {
            assert_eq!(
                check(&secret, VECTOR_ID, &ts, bad, VECTOR_BODY),
                Err(VerifyError::NoMatchingSignature),
                "{bad}"
            );
        }
    }

    #[test]
    fn rotation_header_verifies_with_either_secret() {
        let old = Secret::generate().unwrap();
        let new = Secret::generate().unwrap();
        let body = b"{\"table\":\"notes\"}";
        let header = signature_header(&[&old, &new], "msg_1", VECTOR_TIMESTAMP, body);
        assert_eq!(header.split(' ').count(), 2);
        assert_eq!(
            header.split(' ').next(),
            Some(signature(&old, "msg_1", VECTOR_TIMESTAMP, body).as_str())
        );
        let ts = VECTOR_TIMESTAMP.to_string();
        check(&old, "msg_1", &ts, &header, body).unwrap();
        check(&new, "msg_1", &ts, &header, body).unwrap();
        let unrelated = Secret::generate().unwrap();
        assert_eq!(
            check(&unrelated, "msg_1", &ts, &header, body),
            Err(VerifyError::NoMatchingSignature)
        );
        // Other versions and garbage around a valid signature do not hurt.
        let noisy = format!("v1a,abc v1,!!! {header}  v2,xyz");
        check(&new, "msg_1", &ts, &noisy, body).unwrap();
    }

    #[test]
    fn secret_round_trips() {
        let secret = Secret::generate().unwrap();
        let text = secret.to_string();
        assert!(text.starts_with(SECRET_PREFIX), "{text}");
        assert_eq!(Secret::parse(&text).unwrap(), secret);
        assert_eq!(text.parse::<Secret>().unwrap(), secret);
        assert_eq!(vector_secret().to_string(), VECTOR_SECRET);

        let json = serde_json::to_string(&secret).unwrap();
        assert_eq!(json, format!("\"{text}\""));
        let back: Secret = serde_json::from_str(&json).unwrap();
        assert_eq!(back, secret);
        assert!(serde_json::from_str::<Secret>("\"whsec_not base64!\"").is_err());
    }

    #[test]
    fn bad_secrets_are_refused() {
        for bad in ["", "whsec_", "whsec_not base64!", "whsec_%%%%"] {
            assert!(
                matches!(Secret::parse(bad), Err(SignError::BadSecret(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            Verifier::from_secret_str("whsec_"),
            Err(VerifyError::BadSecret(_))
        ));
    }

    #[test]
    fn generate_gives_distinct_secrets() {
        let a = Secret::generate().unwrap();
        let b = Secret::generate().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.key.len(), GENERATED_SECRET_LEN);
    }

    #[test]
    fn debug_does_not_show_the_key() {
        let secret = vector_secret();
        let shown = format!("{secret:?} {:?}", Verifier::new(secret.clone()));
        assert!(
            !shown.contains("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
            "{shown}"
        );
        assert!(shown.contains("redacted"), "{shown}");
    }
}

//! Who is calling: admin API keys and client tokens (JWT, HS256).
//!
//! Every route but `/health` and `/openapi.json` needs `Authorization: Bearer
//! <credential>`. An admin key (compared in constant time against each
//! configured key) grants everything; a client token names a user and a device
//! and reaches only what the tables' access rules give that user.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::api::problem::Problem;
use crate::config::AuthConfig;

/// The caller of a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Principal {
    /// An admin key: every table, every row, every route.
    Admin,
    /// A client token's user on one device.
    User { user: String, device: String },
}

impl Principal {
    pub fn is_admin(&self) -> bool {
        matches!(self, Principal::Admin)
    }

    /// The name logs carry (never a credential).
    pub fn label(&self) -> String {
        match self {
            Principal::Admin => "admin".to_owned(),
            Principal::User { user, device } => format!("{user}/{device}"),
        }
    }
}

/// The claims of a client token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Claims {
    /// The user.
    pub sub: String,
    /// The device: one sync session per device.
    pub device: String,
    pub aud: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// Issued at, seconds since the Unix epoch.
    pub iat: u64,
    /// Expires at, seconds since the Unix epoch.
    pub exp: u64,
}

/// Why a credential was refused (the label of the `msdb_auth_failures_total`
/// metric). The response never says more than "unauthorized".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthFailure {
    Missing,
    Malformed,
    Expired,
    BadToken,
}

impl AuthFailure {
    pub fn reason(self) -> &'static str {
        match self {
            AuthFailure::Missing => "missing",
            AuthFailure::Malformed => "malformed",
            AuthFailure::Expired => "expired",
            AuthFailure::BadToken => "bad_token",
        }
    }

    pub fn problem(self) -> Problem {
        Problem::unauthorized(match self {
            AuthFailure::Missing => {
                "send `Authorization: Bearer <token>` with a client token or an admin key"
            }
            AuthFailure::Malformed => "the Authorization header is not `Bearer <token>`",
            AuthFailure::Expired => "the token has expired; get a new one",
            AuthFailure::BadToken => "the token or key is not valid for this server",
        })
    }
}

/// Checks credentials and mints client tokens.
pub struct Authenticator {
    admin_keys: Vec<Vec<u8>>,
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    audience: String,
    issuer: Option<String>,
    ttl: Duration,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Authenticator")
            .field("admin_keys", &self.admin_keys.len())
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    pub fn new(config: &AuthConfig) -> Authenticator {
        // Only HS256 is accepted: `alg: none` and every other algorithm are
        // refused before the signature is looked at.
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_audience(&[config.audience.as_str()]);
        validation.set_required_spec_claims(&["exp", "aud", "sub"]);
        validation.leeway = config.leeway_secs;
        if let Some(issuer) = &config.issuer {
            validation.set_issuer(&[issuer.as_str()]);
        }
        Authenticator {
            admin_keys: config
                .admin_keys
                .iter()
                .map(|key| key.as_bytes().to_vec())
                .collect(),
            encoding: EncodingKey::from_secret(config.jwt_secret.as_bytes()),
            decoding: DecodingKey::from_secret(config.jwt_secret.as_bytes()),
            validation,
            audience: config.audience.clone(),
            issuer: config.issuer.clone(),
            ttl: config.token_ttl,
        }
    }

    /// The caller named by an `Authorization` header value.
    ///
    /// # Errors
    ///
    /// [`AuthFailure`] for a missing, malformed, expired or invalid credential.
    pub fn authenticate(&self, header: Option<&str>) -> Result<Principal, AuthFailure> {
        let header = header.ok_or(AuthFailure::Missing)?;
        let credential = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .map(str::trim)
            .filter(|credential| !credential.is_empty())
            .ok_or(AuthFailure::Malformed)?;
        if self.is_admin_key(credential.as_bytes()) {
            return Ok(Principal::Admin);
        }
        let claims = self.verify(credential)?;
        Ok(Principal::User {
            user: claims.sub,
            device: claims.device,
        })
    }

    /// Every configured key is compared, in constant time, so timing tells
    /// neither which key nor how much of one matched.
    fn is_admin_key(&self, credential: &[u8]) -> bool {
        let mut found = subtle::Choice::from(0);
        for key in &self.admin_keys {
            found |= key.as_slice().ct_eq(credential);
        }
        found.into()
    }

    /// The claims of a valid client token.
    ///
    /// # Errors
    ///
    /// [`AuthFailure::Expired`] or [`AuthFailure::BadToken`].
    pub fn verify(&self, token: &str) -> Result<Claims, AuthFailure> {
        use jsonwebtoken::errors::ErrorKind;
        match jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation) {
            Ok(data) if !data.claims.sub.is_empty() && !data.claims.device.is_empty() => {
                Ok(data.claims)
            }
            Ok(_) => Err(AuthFailure::BadToken),
            Err(error) if matches!(error.kind(), ErrorKind::ExpiredSignature) => {
                Err(AuthFailure::Expired)
            }
            Err(_) => Err(AuthFailure::BadToken),
        }
    }

    /// A client token for `user` on `device`, valid for `ttl` (the configured
    /// lifetime when `None`).
    ///
    /// # Errors
    ///
    /// [`Problem`] 400 for an empty user or device.
    pub fn mint(
        &self,
        user: &str,
        device: &str,
        ttl: Option<Duration>,
    ) -> Result<(String, Claims), Problem> {
        if user.is_empty() || device.is_empty() {
            return Err(Problem::bad_request(
                "bad_token_request",
                "a token needs a non-empty `user` and `device`",
            ));
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_secs());
        let claims = Claims {
            sub: user.to_owned(),
            device: device.to_owned(),
            aud: self.audience.clone(),
            iss: self.issuer.clone(),
            iat: now,
            exp: now.saturating_add(ttl.unwrap_or(self.ttl).as_secs()),
        };
        let token = self.sign(&claims)?;
        Ok((token, claims))
    }

    /// Signs any claims (tests craft expired or foreign ones this way).
    ///
    /// # Errors
    ///
    /// [`Problem`] 500 when signing fails.
    pub fn sign(&self, claims: &Claims) -> Result<String, Problem> {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.encoding)
            .map_err(|error| Problem::internal(format!("cannot sign the token: {error}")))
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    use super::*;

    fn authenticator() -> Authenticator {
        Authenticator::new(&AuthConfig::default())
    }

    #[test]
    fn admin_keys_and_minted_tokens_are_accepted() {
        let auth = authenticator();
        let admin = format!("Bearer {}", crate::config::DEV_ADMIN_KEY);
        assert_eq!(auth.authenticate(Some(&admin)), Ok(Principal::Admin));
        let (token, _) = auth.mint("alice", "phone-1", None).expect("mint");
        assert_eq!(
            auth.authenticate(Some(&format!("Bearer {token}"))),
            Ok(Principal::User {
                user: "alice".into(),
                device: "phone-1".into()
            })
        );
    }

    #[test]
    fn missing_malformed_and_unknown_credentials_are_refused() {
        let auth = authenticator();
        assert_eq!(auth.authenticate(None), Err(AuthFailure::Missing));
        assert_eq!(
            auth.authenticate(Some("Basic abc")),
            Err(AuthFailure::Malformed)
        );
        assert_eq!(
            auth.authenticate(Some("Bearer ")),
            Err(AuthFailure::Malformed)
        );
        assert_eq!(
            auth.authenticate(Some("Bearer nope")),
            Err(AuthFailure::BadToken)
        );
        let near = format!("Bearer {}x", crate::config::DEV_ADMIN_KEY);
        assert_eq!(auth.authenticate(Some(&near)), Err(AuthFailure::BadToken));
    }

    #[test]
    fn expired_unsigned_and_foreign_tokens_are_refused() {
        let auth = authenticator();
        let (token, claims) = auth.mint("alice", "phone", None).expect("mint");
        let mut old = claims.clone();
        old.iat -= 7_200;
        old.exp = old.iat + 3_600;
        let expired = auth.sign(&old).expect("sign");
        assert_eq!(auth.verify(&expired), Err(AuthFailure::Expired));

        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).expect("claims"));
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
        assert_eq!(
            auth.verify(&format!("{header}.{payload}.")),
            Err(AuthFailure::BadToken)
        );
        let mut tampered = token.clone();
        tampered.pop();
        tampered.push(if token.ends_with('A') { 'B' } else { 'A' });
        assert_eq!(auth.verify(&tampered), Err(AuthFailure::BadToken));

        let mut other = AuthConfig {
            audience: "someone-else".into(),
            ..AuthConfig::default()
        };
        let (foreign, _) = Authenticator::new(&other)
            .mint("alice", "phone", None)
            .expect("mint");
        assert_eq!(auth.verify(&foreign), Err(AuthFailure::BadToken));
        other = AuthConfig::default();
        other.jwt_secret = "another-secret-another-secret-another".into();
        let (resigned, _) = Authenticator::new(&other)
            .mint("alice", "phone", None)
            .expect("mint");
        assert_eq!(auth.verify(&resigned), Err(AuthFailure::BadToken));
    }
}

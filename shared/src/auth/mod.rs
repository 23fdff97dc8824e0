//! Bearer tokens: JWTs whose `sub` is the user id.
//!
//! Two kinds of keys, as an identity provider gives them:
//! - **JWKS** (production): RS256 or ES256 tokens checked against the provider's public
//!   keys, fetched from a URL (and refreshed when a token names a key id we have not seen,
//!   so the provider can rotate its keys) or read from a file; see [`jwks`].
//! - **HS256** with a shared secret of at least 32 bytes (development, tests, small
//!   installations that mint their own tokens with `taskctl login --secret`).
//!
//! Every other algorithm (`none` included) is refused, `exp` and `sub` are required, and
//! `iss` and `aud` are checked when configured. Each key accepts only its own algorithm,
//! so a token cannot make us use an RSA public key as an HMAC secret.
//!
//! A client sends the same token with every call until it expires, so the verifier keeps
//! the tokens it has accepted: a repeated token costs a map lookup instead of a signature
//! check and two JSON parses (about 3% of task-service's CPU per GetTask). Only accepted
//! tokens are kept, each only until its `exp`, keyed by the whole token, and all of them
//! are forgotten when the key set changes (a key the provider withdrew vouches for nothing).

pub mod callers;
pub mod jwks;
#[cfg(any(test, feature = "testing"))]
pub mod test_keys;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::error::ApiError;
pub use jwks::{Jwks, JwksError, JwksSource};

/// The secret of the explicit development mode. Anyone can mint tokens with it.
pub const DEV_SECRET: &str = "taskmesh-insecure-dev-secret-0123456789";

/// The shortest HS256 secret accepted: RFC 7518 asks for a key as long as the hash.
pub const MIN_SECRET_LEN: usize = 32;

const MAX_USER_ID_LEN: usize = 128;
/// Longer `authorization` values are refused before any parsing.
const MAX_TOKEN_LEN: usize = 8 * 1024;

/// The authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UserId(String);

impl UserId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for UserId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for UserId {
    type Error = &'static str;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        if value.trim().is_empty() {
            Err("user id must not be empty")
        } else if value.chars().count() > MAX_USER_ID_LEN {
            Err("user id is longer than 128 characters")
        } else if value.chars().any(char::is_control) {
            Err("user id contains control characters")
        } else {
            Ok(Self(value))
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub exp: u64,
    #[serde(default)]
    pub iat: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
}

/// What a token must say besides its signature.
#[derive(Debug, Clone, Default)]
pub struct Expectations {
    /// Required `iss`, when set.
    pub issuer: Option<String>,
    /// Required `aud` (one of the token's audiences), when set.
    pub audience: Option<String>,
}

/// Where the keys come from.
#[derive(Clone)]
pub enum Keys {
    /// HS256 with a shared secret.
    Secret(Arc<DecodingKey>),
    /// RS256/ES256 with the public keys of a JWKS.
    Jwks(Jwks),
}

impl Keys {
    /// HS256 keys; the secret must be at least [`MIN_SECRET_LEN`] bytes (checked where it
    /// is configured, so that tests may use short ones).
    pub fn secret(secret: &[u8]) -> Self {
        Self::Secret(Arc::new(DecodingKey::from_secret(secret)))
    }
}

/// Accepted tokens kept at most; past it, expired ones go, and if none has, all of them.
const MAX_ACCEPTED: usize = 4096;

/// Token -> (its user, its `exp`), for tokens a verifier has accepted, with the key set
/// generation they were accepted under.
#[derive(Default)]
struct Accepted {
    generation: u64,
    tokens: HashMap<Box<str>, (UserId, u64)>,
}

/// Checks `authorization` header values.
#[derive(Clone)]
pub struct TokenVerifier {
    keys: Keys,
    expect: Expectations,
    accepted: Arc<Mutex<Accepted>>,
}

impl std::fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenVerifier")
            .field("expect", &self.expect)
            .finish_non_exhaustive()
    }
}

const LEEWAY_SECS: u64 = 30;

impl TokenVerifier {
    /// HS256 with `secret`, no `iss`/`aud` required.
    pub fn new(secret: &[u8]) -> Self {
        Self::with_keys(Keys::secret(secret), Expectations::default())
    }

    pub fn with_keys(keys: Keys, expect: Expectations) -> Self {
        Self {
            keys,
            expect,
            accepted: Arc::default(),
        }
    }

    /// The token of an `authorization: Bearer <JWT>` header value.
    pub fn bearer(header: Option<&str>) -> Result<&str, ApiError> {
        let header = header.ok_or_else(|| {
            ApiError::Unauthenticated("missing `authorization: Bearer <token>` metadata".into())
        })?;
        header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .map(str::trim)
            .ok_or_else(|| {
                ApiError::Unauthenticated("authorization metadata must be `Bearer <token>`".into())
            })
    }

    /// The user of an `authorization: Bearer <JWT>` header value, with the keys known now.
    pub fn verify_header(&self, header: Option<&str>) -> Result<UserId, ApiError> {
        self.verify(Self::bearer(header)?)
    }

    /// The user of a token, with the keys known now (no JWKS refresh).
    pub fn verify(&self, token: &str) -> Result<UserId, ApiError> {
        self.verify_at(token, unix_now())
            .map_err(Refusal::into_api_error)
    }

    /// Like [`verify`](Self::verify), but a token signed with a key id the JWKS does not
    /// have yet makes the verifier fetch the key set again (rate-limited) and retry once:
    /// that is how a provider's new key is learnt.
    pub async fn verify_fresh(&self, token: &str) -> Result<UserId, ApiError> {
        match self.verify_at(token, unix_now()) {
            Err(Refusal::UnknownKey(kid)) => {
                if let Keys::Jwks(jwks) = &self.keys
                    && jwks.refresh_for_unknown_kid().await
                {
                    return self.verify(token);
                }
                Err(Refusal::UnknownKey(kid).into_api_error())
            }
            other => other.map_err(Refusal::into_api_error),
        }
    }

    fn generation(&self) -> u64 {
        match &self.keys {
            Keys::Secret(_) => 0,
            Keys::Jwks(jwks) => jwks.generation(),
        }
    }

    fn verify_at(&self, token: &str, now: u64) -> Result<UserId, Refusal> {
        // jsonwebtoken's own test: a token is live until `exp` plus the leeway.
        let live = |exp: u64| now <= exp.saturating_add(LEEWAY_SECS);
        let generation = self.generation();
        if let Ok(accepted) = self.accepted.lock()
            && accepted.generation == generation
            && let Some((user, exp)) = accepted.tokens.get(token)
        {
            return if live(*exp) {
                Ok(user.clone())
            } else {
                Err(Refusal::Expired)
            };
        }
        if token.len() > MAX_TOKEN_LEN {
            return Err(Refusal::Invalid("longer than 8 KiB"));
        }
        let header =
            jsonwebtoken::decode_header(token).map_err(|_| Refusal::Invalid("malformed"))?;
        let (key, algorithm) = match &self.keys {
            Keys::Secret(key) => (Arc::clone(key), Algorithm::HS256),
            Keys::Jwks(jwks) => {
                let kid = header
                    .kid
                    .as_deref()
                    .ok_or(Refusal::Invalid("no key id (`kid`) in the header"))?;
                jwks.key(kid)
                    .ok_or_else(|| Refusal::UnknownKey(kid.chars().take(64).collect()))?
            }
        };
        if header.alg != algorithm {
            return Err(Refusal::Invalid("algorithm not accepted for this key"));
        }
        let data = jsonwebtoken::decode::<Claims>(token, &key, &self.validation(algorithm))
            .map_err(|err| {
                use jsonwebtoken::errors::ErrorKind;
                match err.kind() {
                    ErrorKind::ExpiredSignature => Refusal::Expired,
                    ErrorKind::InvalidIssuer => Refusal::Invalid("wrong issuer (`iss`)"),
                    ErrorKind::InvalidAudience => Refusal::Invalid("wrong audience (`aud`)"),
                    ErrorKind::MissingRequiredClaim(_) => {
                        Refusal::Invalid("a required claim is missing")
                    }
                    _ => Refusal::Invalid("bad signature or claims"),
                }
            })?;
        let user = UserId::try_from(data.claims.sub).map_err(Refusal::Invalid)?;
        if let Ok(mut accepted) = self.accepted.lock() {
            if accepted.generation != generation {
                accepted.tokens.clear();
                accepted.generation = generation;
            }
            if accepted.tokens.len() >= MAX_ACCEPTED {
                accepted.tokens.retain(|_, (_, exp)| live(*exp));
                if accepted.tokens.len() >= MAX_ACCEPTED {
                    accepted.tokens.clear();
                }
            }
            accepted
                .tokens
                .insert(token.into(), (user.clone(), data.claims.exp));
        }
        Ok(user)
    }

    fn validation(&self, algorithm: Algorithm) -> Validation {
        let mut validation = Validation::new(algorithm);
        validation.leeway = LEEWAY_SECS;
        let mut required = vec!["exp", "sub"];
        if let Some(issuer) = &self.expect.issuer {
            validation.set_issuer(&[issuer]);
            required.push("iss");
        }
        match &self.expect.audience {
            Some(audience) => {
                validation.set_audience(&[audience]);
                required.push("aud");
            }
            None => validation.validate_aud = false,
        }
        validation.set_required_spec_claims(&required);
        validation
    }
}

/// Why a token was refused; clients learn the reason, never a key.
#[derive(Debug)]
enum Refusal {
    Expired,
    UnknownKey(String),
    Invalid(&'static str),
}

impl Refusal {
    fn into_api_error(self) -> ApiError {
        ApiError::Unauthenticated(match self {
            Self::Expired => "token expired".into(),
            Self::UnknownKey(kid) => format!("invalid token: unknown signing key {kid:?}"),
            Self::Invalid(reason) => format!("invalid token: {reason}"),
        })
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

#[derive(Debug, thiserror::Error)]
pub enum MintError {
    #[error("invalid user id: {0}")]
    User(&'static str),
    #[error("cannot sign the token")]
    Sign(#[from] jsonwebtoken::errors::Error),
}

/// Signs an HS256 token for `user` valid for `ttl` (taskctl's login, tests, benchmarks).
pub fn mint(secret: &[u8], user: &str, ttl: Duration) -> Result<String, MintError> {
    mint_with(
        &Header::new(Algorithm::HS256),
        &EncodingKey::from_secret(secret),
        &claims_for(user, ttl)?,
    )
}

/// The claims of a token for `user` valid for `ttl`, to add `iss`/`aud` to.
pub fn claims_for(user: &str, ttl: Duration) -> Result<Claims, MintError> {
    UserId::try_from(user.to_owned()).map_err(MintError::User)?;
    let now = unix_now();
    Ok(Claims {
        sub: user.to_owned(),
        iat: now,
        exp: now + ttl.as_secs(),
        iss: None,
        aud: None,
    })
}

/// Signs `claims` with any key and header (RS256/ES256 tokens in tests).
pub fn mint_with(header: &Header, key: &EncodingKey, claims: &Claims) -> Result<String, MintError> {
    Ok(jsonwebtoken::encode(header, claims, key)?)
}

#[cfg(test)]
mod tests;

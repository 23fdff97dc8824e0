//! Bearer tokens: HS256 JWTs whose `sub` is the user id.
//!
//! Only HS256 is accepted (so `alg: none` and every other algorithm are rejected) and
//! `exp` is required.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::error::ApiError;

/// The secret of the explicit development mode. Anyone can mint tokens with it.
pub const DEV_SECRET: &str = "taskmesh-insecure-dev-secret";

const MAX_USER_ID_LEN: usize = 128;

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
}

/// Checks `authorization` header values.
#[derive(Clone)]
pub struct TokenVerifier {
    key: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenVerifier").finish_non_exhaustive()
    }
}

impl TokenVerifier {
    pub fn new(secret: &[u8]) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.leeway = 30;
        Self {
            key: DecodingKey::from_secret(secret),
            validation,
        }
    }

    /// The user of an `authorization: Bearer <JWT>` header value.
    pub fn verify_header(&self, header: Option<&str>) -> Result<UserId, ApiError> {
        let header = header.ok_or_else(|| {
            ApiError::Unauthenticated("missing `authorization: Bearer <token>` metadata".into())
        })?;
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .ok_or_else(|| {
                ApiError::Unauthenticated("authorization metadata must be `Bearer <token>`".into())
            })?;
        self.verify(token.trim())
    }

    pub fn verify(&self, token: &str) -> Result<UserId, ApiError> {
        let data =
            jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation).map_err(|err| {
                match err.kind() {
                    jsonwebtoken::errors::ErrorKind::ExpiredSignature => {
                        ApiError::Unauthenticated("token expired".into())
                    }
                    _ => ApiError::Unauthenticated("invalid token".into()),
                }
            })?;
        UserId::try_from(data.claims.sub)
            .map_err(|reason| ApiError::Unauthenticated(format!("invalid token: {reason}")))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MintError {
    #[error("invalid user id: {0}")]
    User(&'static str),
    #[error("cannot sign the token")]
    Sign(#[from] jsonwebtoken::errors::Error),
}

/// Signs a token for `user` valid for `ttl` (taskctl's login, tests, benchmarks).
pub fn mint(secret: &[u8], user: &str, ttl: Duration) -> Result<String, MintError> {
    UserId::try_from(user.to_owned()).map_err(MintError::User)?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let claims = Claims {
        sub: user.to_owned(),
        iat: now,
        exp: now + ttl.as_secs(),
    };
    Ok(jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret),
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"test-secret";

    #[test]
    fn round_trip() {
        let token = mint(SECRET, "alice", Duration::from_secs(60)).unwrap();
        let user = TokenVerifier::new(SECRET)
            .verify_header(Some(&format!("Bearer {token}")))
            .unwrap();
        assert_eq!(user.as_str(), "alice");
    }

    #[test]
    fn wrong_secret_is_rejected() {
        let token = mint(b"other", "alice", Duration::from_secs(60)).unwrap();
        assert!(TokenVerifier::new(SECRET).verify(&token).is_err());
    }

    #[test]
    fn missing_or_malformed_header_is_rejected() {
        let v = TokenVerifier::new(SECRET);
        assert!(v.verify_header(None).is_err());
        assert!(v.verify_header(Some("Basic abc")).is_err());
        assert!(v.verify_header(Some("Bearer not.a.jwt")).is_err());
    }
}

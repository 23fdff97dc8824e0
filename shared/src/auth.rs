//! Bearer tokens: HS256 JWTs whose `sub` is the user id.
//!
//! Only HS256 is accepted (so `alg: none` and every other algorithm are rejected) and
//! `exp` is required.
//!
//! A client sends the same token with every call until it expires, so the verifier keeps
//! the tokens it has accepted: a repeated token costs a map lookup instead of an HMAC and
//! two JSON parses (about 3% of task-service's CPU per GetTask). Only accepted tokens are
//! kept, each only until its `exp`, keyed by the whole token: any other string, one
//! differing in a single byte of its payload or signature included, is verified in full.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
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

/// Accepted tokens kept at most; past it, expired ones go, and if none has, all of them.
const MAX_ACCEPTED: usize = 4096;

/// Token -> (its user, its `exp`), for tokens a verifier has accepted.
type Accepted = HashMap<Box<str>, (UserId, u64)>;

/// Checks `authorization` header values.
#[derive(Clone)]
pub struct TokenVerifier {
    key: DecodingKey,
    validation: Validation,
    accepted: Arc<Mutex<Accepted>>,
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
            accepted: Arc::default(),
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
        self.verify_at(token, unix_now())
    }

    fn verify_at(&self, token: &str, now: u64) -> Result<UserId, ApiError> {
        // jsonwebtoken's own test: a token is live until `exp` plus the leeway.
        let live = |exp: u64| now <= exp.saturating_add(self.validation.leeway);
        if let Ok(accepted) = self.accepted.lock()
            && let Some((user, exp)) = accepted.get(token)
        {
            return if live(*exp) {
                Ok(user.clone())
            } else {
                Err(ApiError::Unauthenticated("token expired".into()))
            };
        }
        let data =
            jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation).map_err(|err| {
                match err.kind() {
                    jsonwebtoken::errors::ErrorKind::ExpiredSignature => {
                        ApiError::Unauthenticated("token expired".into())
                    }
                    _ => ApiError::Unauthenticated("invalid token".into()),
                }
            })?;
        let user = UserId::try_from(data.claims.sub)
            .map_err(|reason| ApiError::Unauthenticated(format!("invalid token: {reason}")))?;
        if let Ok(mut accepted) = self.accepted.lock() {
            if accepted.len() >= MAX_ACCEPTED {
                accepted.retain(|_, (_, exp)| live(*exp));
                if accepted.len() >= MAX_ACCEPTED {
                    accepted.clear();
                }
            }
            accepted.insert(token.into(), (user.clone(), data.claims.exp));
        }
        Ok(user)
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

/// Signs a token for `user` valid for `ttl` (taskctl's login, tests, benchmarks).
pub fn mint(secret: &[u8], user: &str, ttl: Duration) -> Result<String, MintError> {
    UserId::try_from(user.to_owned()).map_err(MintError::User)?;
    let now = unix_now();
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

    #[test]
    fn an_accepted_token_expires_like_any_other() {
        let v = TokenVerifier::new(SECRET);
        let token = mint(SECRET, "alice", Duration::from_secs(60)).unwrap();
        let now = unix_now();
        assert_eq!(v.verify_at(&token, now).unwrap().as_str(), "alice");
        assert_eq!(v.verify_at(&token, now).unwrap().as_str(), "alice");
        // 60 s of life plus the 30 s leeway, then no more, from the cache as from a decode.
        assert!(v.verify_at(&token, now + 89).is_ok());
        assert!(v.verify_at(&token, now + 120).is_err());
    }

    #[test]
    fn an_accepted_token_does_not_vouch_for_a_tampered_copy() {
        let v = TokenVerifier::new(SECRET);
        let alice = mint(SECRET, "alice", Duration::from_secs(60)).unwrap();
        let mallory = mint(SECRET, "mallory", Duration::from_secs(60)).unwrap();
        v.verify(&alice).unwrap();
        // Alice's header and signature around another payload.
        let [header, _, signature]: [&str; 3] =
            alice.split('.').collect::<Vec<_>>().try_into().unwrap();
        let payload = mallory.split('.').nth(1).unwrap();
        let tampered = format!("{header}.{payload}.{signature}");
        assert!(v.verify(&tampered).is_err());
        let accepted = v.accepted.lock().unwrap();
        assert!(accepted.contains_key(alice.as_str()));
        assert!(
            !accepted.contains_key(tampered.as_str()),
            "refused tokens are not kept"
        );
    }

    #[test]
    fn the_kept_tokens_stay_bounded() {
        let v = TokenVerifier::new(SECRET);
        for i in 0..MAX_ACCEPTED + 10 {
            let token = mint(SECRET, &format!("user{i}"), Duration::from_secs(60)).unwrap();
            v.verify(&token).unwrap();
        }
        let kept = v.accepted.lock().unwrap().len();
        assert!((1..=MAX_ACCEPTED).contains(&kept), "{kept}");
    }
}

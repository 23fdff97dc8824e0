//! The public keys of an identity provider, as a JSON Web Key Set (RFC 7517).
//!
//! Providers rotate keys by publishing the next key in the set before they sign with it,
//! and withdrawing the old one once its tokens have expired. So the set is fetched at
//! start (a provider we cannot read is a configuration error), again periodically
//! ([`Jwks::refresh_every`]), and again when a token names a key id we do not have, at most
//! once per [`Jwks::min_refresh_interval`] so that tokens with random key ids cannot make
//! us hammer the provider.
//!
//! Only RS256 (RSA) and ES256 (P-256) keys are used; others in the set are skipped with a
//! warning, since a provider may publish keys for other purposes.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{
    AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm, PublicKeyUse,
};
use jsonwebtoken::{Algorithm, DecodingKey};

/// A key set larger than this is refused: real ones hold a handful of keys.
const MAX_JWKS_BYTES: usize = 256 * 1024;
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    #[error(
        "{0:?} is not a JWKS location: use https://..., file:///path, or http:// on a \
         loopback address"
    )]
    Location(String),
    #[error("cannot read the JWKS at {location}: {reason}")]
    Fetch { location: String, reason: String },
    #[error("the JWKS at {location} is not a JSON Web Key Set: {reason}")]
    Parse { location: String, reason: String },
    #[error("the JWKS at {0} holds no RS256 or ES256 key with a key id")]
    NoUsableKey(String),
}

/// Where the key set is read from (`TASKMESH_JWT_JWKS_URL`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwksSource {
    Url(String),
    File(PathBuf),
}

impl JwksSource {
    /// `https://...`, `file:///path`, or `http://` to a loopback address (a provider on
    /// the same host, or a test): key sets travel in the clear otherwise.
    pub fn parse(location: &str) -> Result<Self, JwksError> {
        if let Some(path) = location.strip_prefix("file://") {
            return if path.starts_with('/') {
                Ok(Self::File(PathBuf::from(path)))
            } else {
                Err(JwksError::Location(location.to_owned()))
            };
        }
        let url =
            reqwest::Url::parse(location).map_err(|_| JwksError::Location(location.to_owned()))?;
        let host = url.host_str().unwrap_or_default();
        let loopback = host == "localhost"
            || host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        match url.scheme() {
            "https" if !host.is_empty() => Ok(Self::Url(location.to_owned())),
            "http" if loopback => Ok(Self::Url(location.to_owned())),
            _ => Err(JwksError::Location(location.to_owned())),
        }
    }

    fn describe(&self) -> String {
        match self {
            Self::Url(url) => url.clone(),
            Self::File(path) => format!("file://{}", path.display()),
        }
    }
}

type Key = (Arc<DecodingKey>, Algorithm);

struct Inner {
    source: JwksSource,
    client: reqwest::Client,
    keys: RwLock<HashMap<String, Key>>,
    /// The set's key ids, to tell whether a fetch changed anything.
    fingerprint: RwLock<Vec<(String, String)>>,
    /// Bumped whenever the set changes; verifiers forget the tokens they accepted before.
    generation: AtomicU64,
    /// One fetch at a time, and when the last one for an unknown key id happened.
    last_forced: tokio::sync::Mutex<Option<Instant>>,
    min_refresh_interval: Duration,
}

/// A provider's key set, shared by every clone.
#[derive(Clone)]
pub struct Jwks {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Jwks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jwks")
            .field("source", &self.inner.source)
            .finish_non_exhaustive()
    }
}

impl Jwks {
    /// Reads the set once; fails when it cannot be read or holds no usable key.
    pub async fn load(
        source: JwksSource,
        min_refresh_interval: Duration,
    ) -> Result<Self, JwksError> {
        let client = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .build()
            .map_err(|err| JwksError::Fetch {
                location: source.describe(),
                reason: err.to_string(),
            })?;
        let jwks = Self {
            inner: Arc::new(Inner {
                source,
                client,
                keys: RwLock::default(),
                fingerprint: RwLock::default(),
                generation: AtomicU64::new(0),
                last_forced: tokio::sync::Mutex::new(None),
                min_refresh_interval,
            }),
        };
        jwks.refresh().await?;
        Ok(jwks)
    }

    pub fn key(&self, kid: &str) -> Option<Key> {
        self.inner.keys.read().ok()?.get(kid).cloned()
    }

    pub fn generation(&self) -> u64 {
        self.inner.generation.load(Ordering::Acquire)
    }

    /// Fetches the set and replaces the keys; keeps the old ones if the new set is
    /// unreadable or empty (a provider's bad minute must not log everyone out).
    pub async fn refresh(&self) -> Result<(), JwksError> {
        let location = self.inner.source.describe();
        let bytes = self.fetch().await?;
        let keys = parse_key_set(&bytes, &location)?;
        let mut fingerprint: Vec<(String, String)> = keys
            .iter()
            .map(|(kid, (_, alg))| (kid.clone(), format!("{alg:?}")))
            .collect();
        fingerprint.sort();
        let changed = self
            .inner
            .fingerprint
            .read()
            .map(|old| *old != fingerprint)
            .unwrap_or(true);
        if let (Ok(mut current), Ok(mut old)) =
            (self.inner.keys.write(), self.inner.fingerprint.write())
        {
            *current = keys;
            *old = fingerprint;
        }
        if changed {
            self.inner.generation.fetch_add(1, Ordering::AcqRel);
            tracing::info!(jwks = %location, "signing keys loaded");
        }
        Ok(())
    }

    /// For a token whose key id is unknown: refetches unless that was done less than
    /// `min_refresh_interval` ago. Whether a fetch happened and succeeded.
    pub async fn refresh_for_unknown_kid(&self) -> bool {
        let mut last = self.inner.last_forced.lock().await;
        if last.is_some_and(|at| at.elapsed() < self.inner.min_refresh_interval) {
            return false;
        }
        *last = Some(Instant::now());
        match self.refresh().await {
            Ok(()) => true,
            Err(err) => {
                tracing::warn!(%err, "cannot refresh the signing keys; keeping the old ones");
                false
            }
        }
    }

    /// Refetches every `period` until `stop` resolves (keys withdrawn by the provider stop
    /// being accepted within a period).
    pub async fn refresh_every(
        self,
        period: Duration,
        stop: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(stop);
        let mut ticks = tokio::time::interval(period);
        ticks.tick().await;
        loop {
            tokio::select! {
                () = &mut stop => return,
                _ = ticks.tick() => {
                    if let Err(err) = self.refresh().await {
                        tracing::warn!(%err, "cannot refresh the signing keys; keeping the old ones");
                    }
                }
            }
        }
    }

    async fn fetch(&self) -> Result<Vec<u8>, JwksError> {
        let location = self.inner.source.describe();
        let fail = |reason: String| JwksError::Fetch {
            location: location.clone(),
            reason,
        };
        match &self.inner.source {
            JwksSource::File(path) => {
                let bytes = tokio::fs::read(path)
                    .await
                    .map_err(|e| fail(e.to_string()))?;
                if bytes.len() > MAX_JWKS_BYTES {
                    return Err(fail("larger than 256 KiB".into()));
                }
                Ok(bytes)
            }
            JwksSource::Url(url) => {
                let mut response = self
                    .inner
                    .client
                    .get(url)
                    .send()
                    .await
                    .and_then(reqwest::Response::error_for_status)
                    .map_err(|e| fail(e.without_url().to_string()))?;
                let mut bytes = Vec::new();
                while let Some(chunk) = response.chunk().await.map_err(|e| fail(e.to_string()))? {
                    if bytes.len() + chunk.len() > MAX_JWKS_BYTES {
                        return Err(fail("larger than 256 KiB".into()));
                    }
                    bytes.extend_from_slice(&chunk);
                }
                Ok(bytes)
            }
        }
    }
}

fn parse_key_set(bytes: &[u8], location: &str) -> Result<HashMap<String, Key>, JwksError> {
    let set: JwkSet = serde_json::from_slice(bytes).map_err(|err| JwksError::Parse {
        location: location.to_owned(),
        reason: err.to_string(),
    })?;
    let mut keys = HashMap::new();
    for jwk in &set.keys {
        match usable_key(jwk) {
            Ok((kid, key)) => {
                keys.insert(kid, key);
            }
            Err(reason) => tracing::warn!(
                kid = jwk.common.key_id.as_deref().unwrap_or(""),
                reason,
                "skipping a key of the JWKS"
            ),
        }
    }
    if keys.is_empty() {
        return Err(JwksError::NoUsableKey(location.to_owned()));
    }
    Ok(keys)
}

fn usable_key(jwk: &Jwk) -> Result<(String, Key), &'static str> {
    let kid = jwk.common.key_id.clone().ok_or("no key id")?;
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return Err("an encryption key");
    }
    let algorithm = match (&jwk.algorithm, jwk.common.key_algorithm) {
        (AlgorithmParameters::RSA(_), None | Some(KeyAlgorithm::RS256)) => Algorithm::RS256,
        (AlgorithmParameters::EllipticCurve(ec), None | Some(KeyAlgorithm::ES256))
            if ec.curve == EllipticCurve::P256 =>
        {
            Algorithm::ES256
        }
        _ => return Err("not an RS256 or ES256 key"),
    };
    let key = DecodingKey::from_jwk(jwk).map_err(|_| "malformed key parameters")?;
    Ok((kid, (Arc::new(key), algorithm)))
}

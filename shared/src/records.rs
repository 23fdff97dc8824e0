//! Typed JSON records in the state store, changed by read-modify-write under an ETag
//! guard: what every consumer's exactly-once effect rests on. A writer that loses a race
//! reads again and re-decides, up to `MAX_CONFLICTS` times.

use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::state::{Expect, StateError, StateStore, Versioned};

/// Writers racing on one record retry this often before giving up for now.
const MAX_CONFLICTS: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error(transparent)]
    Store(#[from] StateError),
    /// Our own record is unreadable: not the caller's fault, and not fixed by retrying
    /// soon, so it is reported loudly.
    #[error("stored {key} is corrupt: {source}")]
    Corrupt {
        key: String,
        source: serde_json::Error,
    },
    #[error("{0} kept changing concurrently")]
    Contended(String),
}

/// What every consumer that keeps records counts, on `/metrics` under its own prefix.
#[derive(Debug, Clone, Default)]
pub struct RecordMetrics {
    pub applied: Counter,
    pub duplicates: Counter,
    pub conflicts: Counter,
}

impl RecordMetrics {
    /// Registers `events_applied` (described by `applied_help`), `dedup_hits` and
    /// `write_conflicts` in `registry`, which the caller has prefixed with its name.
    pub fn register(registry: &mut Registry, applied_help: &str) -> Self {
        let metrics = Self::default();
        registry.register("events_applied", applied_help, metrics.applied.clone());
        registry.register(
            "dedup_hits",
            "Deliveries already applied (redelivered or older than the stored version)",
            metrics.duplicates.clone(),
        );
        registry.register(
            "write_conflicts",
            "Concurrent writes to one record that had to be retried",
            metrics.conflicts.clone(),
        );
        metrics
    }
}

pub struct Records<S: ?Sized> {
    store: Arc<S>,
    /// Writes that lost a race and were tried again.
    conflicts: Counter,
}

impl<S: StateStore + ?Sized> Records<S> {
    pub fn new(store: Arc<S>, conflicts: Counter) -> Self {
        Self { store, conflicts }
    }

    pub fn store(&self) -> &Arc<S> {
        &self.store
    }

    pub async fn read<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, RecordError> {
        let stored = self.store.get(key).await?;
        Ok(decode(key, stored)?.0)
    }

    /// The raw records at `keys` in one round trip, to seed `update_seeded` and `decode`.
    pub async fn prefetch(&self, keys: &[String]) -> Result<Vec<Option<Versioned>>, RecordError> {
        Ok(self.store.get_many(keys).await?)
    }

    /// Applies `change` to the record at `key` (or to `T::default()` when there is none)
    /// and writes it back if `change` says it changed something; retried on conflicts.
    pub async fn update<T, R>(
        &self,
        key: &str,
        change: impl FnMut(Option<T>) -> Change<T, R>,
    ) -> Result<R, RecordError>
    where
        T: Serialize + DeserializeOwned,
    {
        self.update_seeded(key, None, change).await
    }

    /// `update`, starting from a record read beforehand (`Some(read)`) instead of reading.
    pub async fn update_seeded<T, R>(
        &self,
        key: &str,
        mut seed: Option<Option<Versioned>>,
        mut change: impl FnMut(Option<T>) -> Change<T, R>,
    ) -> Result<R, RecordError>
    where
        T: Serialize + DeserializeOwned,
    {
        for _ in 0..MAX_CONFLICTS {
            let stored = match seed.take() {
                Some(stored) => stored,
                None => self.store.get(key).await?,
            };
            let (current, expect) = decode(key, stored)?;
            let (value, lifetime, result) = match change(current) {
                Change::Keep(result) => return Ok(result),
                Change::Write(value, result) => (value, None, result),
                Change::WriteFor(value, lifetime, result) => (value, Some(lifetime), result),
            };
            let bytes = serde_json::to_vec(&value).map_err(|source| RecordError::Corrupt {
                key: key.to_owned(),
                source,
            })?;
            let written = match lifetime {
                None => self.store.put(key, bytes, expect).await,
                Some(ttl) => self.store.put_expiring(key, bytes, expect, ttl).await,
            };
            match written {
                Ok(()) => {
                    crate::failpoint::hit(crate::failpoint::RECORD_WRITTEN);
                    return Ok(result);
                }
                Err(StateError::Conflict) => {
                    self.conflicts.inc();
                }
                Err(err) => return Err(err.into()),
            }
        }
        Err(RecordError::Contended(key.to_owned()))
    }

    pub async fn delete(&self, key: &str) -> Result<bool, RecordError> {
        for _ in 0..MAX_CONFLICTS {
            let Some(stored) = self.store.get(key).await? else {
                return Ok(false);
            };
            match self.store.delete(key, Expect::Etag(stored.etag)).await {
                Ok(()) => return Ok(true),
                Err(StateError::Conflict) => {
                    self.conflicts.inc();
                }
                Err(err) => return Err(err.into()),
            }
        }
        Err(RecordError::Contended(key.to_owned()))
    }
}

/// A stored record and the expectation to write it back with.
pub fn decode<T: DeserializeOwned>(
    key: &str,
    stored: Option<Versioned>,
) -> Result<(Option<T>, Expect), RecordError> {
    let Some(stored) = stored else {
        return Ok((None, Expect::Absent));
    };
    let value = serde_json::from_slice(&stored.value).map_err(|source| RecordError::Corrupt {
        key: key.to_owned(),
        source,
    })?;
    Ok((Some(value), Expect::Etag(stored.etag)))
}

/// What an update decided.
pub enum Change<T, R> {
    /// Nothing to write; return `R`.
    Keep(R),
    /// Write `T` (its lifetime as it was), then return `R`.
    Write(T, R),
    /// Write `T` to expire after `Some(ttl)`, or to stay for good (`None`), then return `R`.
    WriteFor(T, Option<std::time::Duration>, R),
}

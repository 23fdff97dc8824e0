//! The Dapr state store behind a small port: reads with their ETag, and writes guarded by
//! an expectation (absent, or at an ETag), which is how consumers apply each event once.
//!
//! Why single-key guarded writes and not `ExecuteStateTransaction`: Dapr's Redis store runs
//! a transaction as a MULTI/EXEC pipeline, and Redis does not roll back the other commands
//! when one fails its ETag check. A dedup marker written in the same "transaction" as a
//! refused effect would stay, and the event's effect would be lost on redelivery. So the
//! marker lives inside the record it protects, and the record is written with
//! `SaveState` under first-write concurrency.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use dapr::dapr::proto::common::v1::state_options::{StateConcurrency, StateConsistency};
use dapr::dapr::proto::common::v1::{Etag, StateItem, StateOptions};
use dapr::dapr::proto::runtime::v1::{
    DeleteStateRequest, GetBulkStateRequest, GetStateRequest, SaveStateRequest,
};
use tonic::Code;

use crate::sidecar::DaprGrpc;

/// A stored value and the ETag to write it back with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned {
    pub value: Vec<u8>,
    pub etag: String,
}

/// What a write expects to find.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// The key does not exist yet.
    Absent,
    /// The key is unchanged since it was read with this ETag.
    Etag(String),
}

impl Expect {
    /// `Absent` for a missing record, else the ETag it was read with.
    pub fn from_read(read: Option<&Versioned>) -> Self {
        read.map_or(Self::Absent, |v| Self::Etag(v.etag.clone()))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Someone else wrote first: read again and retry.
    #[error("the record changed concurrently")]
    Conflict,
    /// The store or the sidecar is down or failed: a transient error.
    #[error("the state store failed: {0}")]
    Unavailable(String),
}

#[async_trait]
pub trait StateStore: Send + Sync + 'static {
    async fn get(&self, key: &str) -> Result<Option<Versioned>, StateError>;
    /// Several keys in one round trip, in the order asked (the default reads one by one).
    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Versioned>>, StateError> {
        let mut found = Vec::with_capacity(keys.len());
        for key in keys {
            found.push(self.get(key).await?);
        }
        Ok(found)
    }
    async fn put(&self, key: &str, value: Vec<u8>, expect: Expect) -> Result<(), StateError>;
    /// `put` with a lifetime (Dapr's `ttlInSeconds`): the store removes the record after
    /// `Some(ttl)`; `None` keeps it for good, clearing a TTL an earlier write set (a plain
    /// `put` leaves that TTL running).
    async fn put_expiring(
        &self,
        key: &str,
        value: Vec<u8>,
        expect: Expect,
        ttl: Option<std::time::Duration>,
    ) -> Result<(), StateError>;
    async fn delete(&self, key: &str, expect: Expect) -> Result<(), StateError>;
}

/// The state store component `store` behind the local sidecar.
#[derive(Debug, Clone)]
pub struct DaprStateStore {
    client: DaprGrpc,
    store: String,
    timeout: Duration,
}

impl DaprStateStore {
    pub fn new(client: DaprGrpc, store: impl Into<String>) -> Self {
        Self {
            client,
            store: store.into(),
            timeout: Duration::from_secs(5),
        }
    }

    async fn save(
        &self,
        key: &str,
        value: Vec<u8>,
        expect: Expect,
        metadata: HashMap<String, String>,
    ) -> Result<(), StateError> {
        let (etag, options) = guarded(expect);
        self.client
            .clone()
            .save_state(self.request(SaveStateRequest {
                store_name: self.store.clone(),
                states: vec![StateItem {
                    key: key.to_owned(),
                    value,
                    etag,
                    metadata,
                    options,
                }],
            }))
            .await
            .map(drop)
            .map_err(state_error)
    }

    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.set_timeout(self.timeout);
        request
    }
}

/// Every write is first-write: Redis then refuses a write at ETag "0" ("absent") when the
/// key exists, which last-write writes would not.
fn guarded(expect: Expect) -> (Option<Etag>, Option<StateOptions>) {
    let etag = match expect {
        Expect::Absent => "0".to_owned(),
        Expect::Etag(etag) => etag,
    };
    (
        Some(Etag { value: etag }),
        Some(StateOptions {
            concurrency: StateConcurrency::ConcurrencyFirstWrite as i32,
            consistency: StateConsistency::ConsistencyStrong as i32,
        }),
    )
}

fn state_error(status: tonic::Status) -> StateError {
    match status.code() {
        Code::Aborted => StateError::Conflict,
        _ => StateError::Unavailable(format!("{:?}: {}", status.code(), status.message())),
    }
}

#[async_trait]
impl StateStore for DaprStateStore {
    async fn get(&self, key: &str) -> Result<Option<Versioned>, StateError> {
        let response = self
            .client
            .clone()
            .get_state(self.request(GetStateRequest {
                store_name: self.store.clone(),
                key: key.to_owned(),
                consistency: StateConsistency::ConsistencyStrong as i32,
                metadata: HashMap::new(),
            }))
            .await
            .map_err(state_error)?
            .into_inner();
        if response.data.is_empty() && response.etag.is_empty() {
            return Ok(None);
        }
        Ok(Some(Versioned {
            value: response.data,
            etag: response.etag,
        }))
    }

    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Versioned>>, StateError> {
        let response = self
            .client
            .clone()
            .get_bulk_state(self.request(GetBulkStateRequest {
                store_name: self.store.clone(),
                keys: keys.to_vec(),
                parallelism: 0,
                metadata: HashMap::new(),
            }))
            .await
            .map_err(state_error)?
            .into_inner();
        let mut by_key = HashMap::with_capacity(response.items.len());
        for item in response.items {
            if !item.error.is_empty() {
                return Err(StateError::Unavailable(format!(
                    "{}: {}",
                    item.key, item.error
                )));
            }
            let found = (!(item.data.is_empty() && item.etag.is_empty())).then_some(Versioned {
                value: item.data,
                etag: item.etag,
            });
            by_key.insert(item.key, found);
        }
        keys.iter()
            .map(|key| {
                by_key.remove(key).ok_or_else(|| {
                    StateError::Unavailable(format!("the bulk read did not answer for {key}"))
                })
            })
            .collect()
    }

    async fn put(&self, key: &str, value: Vec<u8>, expect: Expect) -> Result<(), StateError> {
        self.save(key, value, expect, HashMap::new()).await
    }

    async fn put_expiring(
        &self,
        key: &str,
        value: Vec<u8>,
        expect: Expect,
        ttl: Option<std::time::Duration>,
    ) -> Result<(), StateError> {
        // -1: no expiry (Dapr's Redis store then PERSISTs the key).
        let secs = ttl.map_or_else(|| "-1".to_owned(), |ttl| ttl.as_secs().max(1).to_string());
        self.save(
            key,
            value,
            expect,
            HashMap::from([("ttlInSeconds".to_owned(), secs)]),
        )
        .await
    }

    async fn delete(&self, key: &str, expect: Expect) -> Result<(), StateError> {
        let (etag, options) = guarded(expect);
        self.client
            .clone()
            .delete_state(self.request(DeleteStateRequest {
                store_name: self.store.clone(),
                key: key.to_owned(),
                etag,
                options,
                metadata: HashMap::new(),
            }))
            .await
            .map(drop)
            .map_err(state_error)
    }
}

#[cfg(any(test, feature = "testing"))]
pub use crate::memory_state::MemoryStateStore;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[tokio::test]
    async fn memory_store_guards_like_dapr_redis() {
        let store = MemoryStateStore::new();
        store.put("k", b"1".to_vec(), Expect::Absent).await.unwrap();
        assert!(matches!(
            store.put("k", b"2".to_vec(), Expect::Absent).await,
            Err(StateError::Conflict)
        ));
        let read = store.get("k").await.unwrap().unwrap();
        store
            .put("k", b"2".to_vec(), Expect::from_read(Some(&read)))
            .await
            .unwrap();
        assert!(matches!(
            store.put("k", b"3".to_vec(), Expect::Etag(read.etag)).await,
            Err(StateError::Conflict)
        ));
        store.set_down(true);
        assert!(matches!(
            store.get("k").await,
            Err(StateError::Unavailable(_))
        ));
    }
}

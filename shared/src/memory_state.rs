//! An in-memory `StateStore` for unit tests (the `testing` feature): the same guard
//! semantics as Dapr's Redis store, switchable "down" and with writes that can be made to
//! fail, so that consumers' RETRY paths and cut-short deliveries can be exercised. Not in
//! production builds.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;

use crate::state::{Expect, StateError, StateStore, Versioned};

/// Value and version by key.
type Records = HashMap<String, (Vec<u8>, u64)>;

/// An in-memory `StateStore` with the same guard semantics, for unit tests; it can be
/// switched "down" to exercise RETRY paths.
#[derive(Debug, Default)]
pub struct MemoryStateStore {
    records: Mutex<Records>,
    down: std::sync::atomic::AtomicBool,
    /// Writes to keys with this prefix fail: a delivery that dies between two writes.
    failing_writes: Mutex<Option<String>>,
    /// The TTL each record was last written with (nothing expires here; tests read it).
    ttls: Mutex<HashMap<String, std::time::Duration>>,
}

impl MemoryStateStore {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn set_down(&self, down: bool) {
        self.down.store(down, std::sync::atomic::Ordering::SeqCst);
    }

    /// Makes writes to keys starting with `prefix` fail (`None`: none fail).
    pub fn fail_writes_under(&self, prefix: Option<&str>) {
        *self
            .failing_writes
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = prefix.map(str::to_owned);
    }

    /// The TTL `key` was last written with, if any.
    pub fn ttl_of(&self, key: &str) -> Option<std::time::Duration> {
        self.ttls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .copied()
    }

    fn write_fails(&self, key: &str) -> bool {
        self.failing_writes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_deref()
            .is_some_and(|prefix| key.starts_with(prefix))
    }

    pub fn keys(&self) -> Vec<String> {
        let records = self.records.lock().unwrap_or_else(|e| e.into_inner());
        let mut keys: Vec<String> = records.keys().cloned().collect();
        keys.sort();
        keys
    }

    fn check(&self) -> Result<std::sync::MutexGuard<'_, Records>, StateError> {
        if self.down.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(StateError::Unavailable("memory store is down".into()));
        }
        Ok(self.records.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

fn matches(current: Option<u64>, expect: &Expect) -> bool {
    match (current, expect) {
        (None, Expect::Absent) => true,
        (Some(version), Expect::Etag(etag)) => version.to_string() == *etag,
        _ => false,
    }
}

#[async_trait]
impl StateStore for MemoryStateStore {
    async fn get(&self, key: &str) -> Result<Option<Versioned>, StateError> {
        // A real store is a network hop away: let concurrent callers interleave.
        tokio::task::yield_now().await;
        Ok(self.check()?.get(key).map(|(value, version)| Versioned {
            value: value.clone(),
            etag: version.to_string(),
        }))
    }

    async fn put(&self, key: &str, value: Vec<u8>, expect: Expect) -> Result<(), StateError> {
        tokio::task::yield_now().await;
        if self.write_fails(key) {
            return Err(StateError::Unavailable(format!("writes to {key} fail")));
        }
        let mut records = self.check()?;
        let current = records.get(key).map(|(_, v)| *v);
        if !matches(current, &expect) {
            return Err(StateError::Conflict);
        }
        records.insert(key.to_owned(), (value, current.unwrap_or(0) + 1));
        Ok(())
    }

    async fn put_expiring(
        &self,
        key: &str,
        value: Vec<u8>,
        expect: Expect,
        ttl: Option<std::time::Duration>,
    ) -> Result<(), StateError> {
        self.put(key, value, expect).await?;
        let mut ttls = self.ttls.lock().unwrap_or_else(|e| e.into_inner());
        match ttl {
            Some(ttl) => ttls.insert(key.to_owned(), ttl),
            None => ttls.remove(key),
        };
        Ok(())
    }

    async fn delete(&self, key: &str, expect: Expect) -> Result<(), StateError> {
        let mut records = self.check()?;
        let current = records.get(key).map(|(_, v)| *v);
        if current.is_some() && !matches(current, &expect) {
            return Err(StateError::Conflict);
        }
        records.remove(key);
        Ok(())
    }
}

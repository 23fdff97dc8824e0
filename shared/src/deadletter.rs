//! Dead letters kept in the consumer's own state store, so that an operator can list them
//! and replay them after a fix. Each app reads its own dead-letter topic (daprd publishes
//! there what the app DROPped, or what it RETRYed until the resiliency policy gave up) and
//! keeps every event whole, once per event id, for a bounded time and up to a bounded
//! count.
//!
//! Layout, under the app's own key prefix (Dapr prefixes keys with the app id):
//! - `deadletter:<event id>`: the event and why it failed, written with `ttlInSeconds`;
//! - `deadletters:index`: the ids in arrival order with their arrival time, rewritten
//!   under an ETag guard, and pruned of entries older than the TTL on every write.
//!
//! The record is written before the index: a delivery cut short in between leaves a
//! record the next delivery of the same dead letter finds (it is then only indexed), and
//! an orphan that nobody indexed expires with its TTL.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use prometheus_client::metrics::counter::Counter;

use crate::callback::Delivery;
use crate::records::{self, Change, RecordError, Records};
use crate::state::{Expect, StateError, StateStore, Versioned};

const RECORD_PREFIX: &str = "deadletter:";
const INDEX_KEY: &str = "deadletters:index";
/// Records read per bulk read.
const READ_CHUNK: usize = 16;
/// Event ids longer than this are not ours and would make odd keys.
pub const MAX_ID_LEN: usize = 256;

/// How long and how many dead letters an app keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeadLetterLimits {
    /// After this a dead letter is gone (`TASKMESH_DEAD_LETTER_TTL_SECS`).
    pub ttl: Duration,
    /// With this many kept, a new one is refused (RETRY: it waits on the broker's
    /// dead-letter topic) until some are replayed, discarded or expire
    /// (`TASKMESH_DEAD_LETTER_MAX`).
    pub max: usize,
}

impl Default for DeadLetterLimits {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(14 * 24 * 3600),
            max: 1000,
        }
    }
}

/// One kept event: the CloudEvent as it was delivered, and why it failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub id: String,
    #[serde(rename = "type")]
    pub event_type: String,
    pub source: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// The topic the event was published to (the one its replay is handled as).
    pub topic: String,
    pub pubsub: String,
    #[serde(default)]
    pub datacontenttype: String,
    /// The `data`, exactly as delivered.
    pub data_base64: String,
    /// The CloudEvent's `time`, when it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    pub dead_lettered_at: DateTime<Utc>,
    /// Why the consumer failed it, when this process saw the failure (the last RETRY or
    /// DROP reason), or why its last replay failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default)]
    pub replays: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_replay_at: Option<DateTime<Utc>>,
}

impl DeadLetter {
    /// A dead letter of `delivery`, which was published to `topic`.
    pub fn from_delivery(
        delivery: &Delivery,
        topic: String,
        time: Option<String>,
        reason: Option<String>,
        now: DateTime<Utc>,
    ) -> Self {
        Self {
            id: delivery.id.clone(),
            event_type: delivery.event_type.clone(),
            source: delivery.source.clone(),
            subject: delivery.subject.clone(),
            topic,
            pubsub: delivery.pubsub.clone(),
            datacontenttype: delivery.data_content_type.clone(),
            data_base64: STANDARD.encode(&delivery.data),
            time,
            traceparent: delivery.traceparent.clone(),
            dead_lettered_at: now,
            reason,
            replays: 0,
            last_replay_at: None,
        }
    }

    /// The event as its topic's handler receives it.
    pub fn delivery(&self) -> Result<Delivery, DeadLetterError> {
        let data = STANDARD
            .decode(&self.data_base64)
            .map_err(|err| DeadLetterError::Corrupt(format!("{}: data_base64: {err}", self.id)))?;
        Ok(Delivery {
            id: self.id.clone(),
            source: self.source.clone(),
            event_type: self.event_type.clone(),
            subject: self.subject.clone(),
            topic: self.topic.clone(),
            pubsub: self.pubsub.clone(),
            data,
            data_content_type: self.datacontenttype.clone(),
            traceparent: self.traceparent.clone(),
        })
    }

    /// What an operator reads: the fields, with `data` as JSON when it is JSON.
    pub fn summary(&self) -> serde_json::Value {
        let mut value = serde_json::to_value(self).unwrap_or_default();
        if let Some(object) = value.as_object_mut()
            && let Ok(bytes) = STANDARD.decode(&self.data_base64)
            && let Ok(data) = serde_json::from_slice::<serde_json::Value>(&bytes)
        {
            object.remove("data_base64");
            object.insert("data".to_owned(), data);
        }
        value
    }

    fn expires_at(&self, ttl: Duration) -> DateTime<Utc> {
        self.dead_lettered_at + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DeadLetterError {
    #[error(transparent)]
    Store(#[from] StateError),
    #[error(
        "{kept} dead letters are kept, the most allowed (TASKMESH_DEAD_LETTER_MAX): replay or discard some"
    )]
    Full { kept: usize },
    #[error("a kept dead letter is corrupt: {0}")]
    Corrupt(String),
    #[error("the dead-letter index kept changing concurrently")]
    Contended,
    #[error("event id of {0} bytes is longer than {MAX_ID_LEN}")]
    IdTooLong(usize),
}

/// Whether `keep` stored a new dead letter or found it already kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kept {
    New,
    /// A second delivery of the same dead letter (Redis Streams redelivers, daprd may
    /// dead-letter one event more than once): stored once.
    Already,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Index {
    entries: Vec<IndexEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct IndexEntry {
    id: String,
    at: DateTime<Utc>,
}

impl Index {
    fn prune(&mut self, ttl: Duration, now: DateTime<Utc>) {
        let ttl = chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX);
        self.entries.retain(|entry| entry.at + ttl > now);
    }

    fn contains(&self, id: &str) -> bool {
        self.entries.iter().any(|entry| entry.id == id)
    }
}

/// The dead letters of one app.
#[derive(Clone)]
pub struct DeadLetterStore {
    records: Arc<Records<dyn StateStore>>,
    limits: DeadLetterLimits,
}

impl DeadLetterStore {
    pub fn new(store: Arc<dyn StateStore>, limits: DeadLetterLimits) -> Self {
        // Conflicts are not counted on `/metrics` here: the router counts what it keeps.
        let records = Records::new(store, Counter::default());
        Self {
            records: Arc::new(records),
            limits,
        }
    }

    pub fn limits(&self) -> DeadLetterLimits {
        self.limits
    }

    fn record_key(id: &str) -> String {
        format!("{RECORD_PREFIX}{id}")
    }

    /// Changes the index by `change` (which answers whether it changed anything), under
    /// the ETag guard, pruning expired entries on the way; from `seed` when the index was
    /// read beforehand.
    async fn update_index(
        &self,
        now: DateTime<Utc>,
        seed: Option<Option<Versioned>>,
        change: impl Fn(&mut Index) -> Result<bool, DeadLetterError>,
    ) -> Result<(), DeadLetterError> {
        let ttl = self.limits.ttl;
        self.records
            .update_seeded(INDEX_KEY, seed, |index: Option<Index>| {
                let mut index = index.unwrap_or_default();
                let before = index.entries.len();
                index.prune(ttl, now);
                match change(&mut index) {
                    Err(err) => Change::Keep(Err(err)),
                    Ok(false) if index.entries.len() == before => Change::Keep(Ok(())),
                    Ok(_) => Change::WriteFor(index, Some(ttl), Ok(())),
                }
            })
            .await?
    }

    /// Keeps `letter` (once per event id); refused when `max` are kept already.
    pub async fn keep(&self, letter: &DeadLetter) -> Result<Kept, DeadLetterError> {
        if letter.id.len() > MAX_ID_LEN {
            return Err(DeadLetterError::IdTooLong(letter.id.len()));
        }
        let now = letter.dead_lettered_at;
        let read = self.records.store().get(INDEX_KEY).await?;
        let (index, _) = records::decode::<Index>(INDEX_KEY, read.clone())?;
        let mut index = index.unwrap_or_default();
        index.prune(self.limits.ttl, now);
        if !index.contains(&letter.id) && index.entries.len() >= self.limits.max {
            return Err(DeadLetterError::Full {
                kept: index.entries.len(),
            });
        }
        let body =
            serde_json::to_vec(letter).map_err(|err| DeadLetterError::Corrupt(err.to_string()))?;
        let kept = match self
            .records
            .store()
            .put_expiring(
                &Self::record_key(&letter.id),
                body,
                Expect::Absent,
                Some(self.limits.ttl),
            )
            .await
        {
            Ok(()) => Kept::New,
            Err(StateError::Conflict) => Kept::Already,
            Err(err) => return Err(err.into()),
        };
        let (id, max) = (letter.id.clone(), self.limits.max);
        // From the index read above: re-read only if it changed since.
        self.update_index(now, Some(read), move |index| {
            if index.contains(&id) {
                return Ok(false);
            }
            // A racing writer may have filled it since the check above.
            if index.entries.len() >= max {
                return Err(DeadLetterError::Full {
                    kept: index.entries.len(),
                });
            }
            index.entries.push(IndexEntry {
                id: id.clone(),
                at: now,
            });
            Ok(true)
        })
        .await?;
        Ok(kept)
    }

    /// One dead letter, if kept.
    pub async fn get(&self, id: &str) -> Result<Option<DeadLetter>, DeadLetterError> {
        Ok(self.records.read(&Self::record_key(id)).await?)
    }

    /// The ids of the kept dead letters, oldest first (from the index; a record may have
    /// expired since).
    pub async fn ids(&self, now: DateTime<Utc>) -> Result<Vec<String>, DeadLetterError> {
        let mut index: Index = self.records.read(INDEX_KEY).await?.unwrap_or_default();
        index.prune(self.limits.ttl, now);
        Ok(index.entries.into_iter().map(|entry| entry.id).collect())
    }

    /// The dead letters of `ids` that are still kept, in that order. Read `READ_CHUNK` at
    /// a time: one bulk read of a thousand events could exceed a gRPC message.
    pub async fn get_many(&self, ids: &[String]) -> Result<Vec<DeadLetter>, DeadLetterError> {
        let mut letters = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(READ_CHUNK) {
            let keys: Vec<String> = chunk.iter().map(|id| Self::record_key(id)).collect();
            let found = self.records.prefetch(&keys).await?;
            for (key, found) in keys.iter().zip(found) {
                // An indexed record that expired (or was removed) is simply gone.
                if let (Some(letter), _) = records::decode(key, found)? {
                    letters.push(letter);
                }
            }
        }
        Ok(letters)
    }

    /// Every kept dead letter, oldest first.
    pub async fn list(&self, now: DateTime<Utc>) -> Result<Vec<DeadLetter>, DeadLetterError> {
        let ids = self.ids(now).await?;
        self.get_many(&ids).await
    }

    /// Removes a dead letter (replayed, or discarded by an operator); whether it was kept.
    pub async fn remove(&self, id: &str, now: DateTime<Utc>) -> Result<bool, DeadLetterError> {
        let existed = self.records.delete(&Self::record_key(id)).await?;
        let id = id.to_owned();
        self.update_index(now, None, move |index| {
            let before = index.entries.len();
            index.entries.retain(|entry| entry.id != id);
            Ok(index.entries.len() != before)
        })
        .await?;
        Ok(existed)
    }

    /// Notes a failed replay: its reason, and one more replay. The dead letter keeps its
    /// place and its expiry.
    pub async fn failed_again(
        &self,
        id: &str,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<(), DeadLetterError> {
        let ttl = self.limits.ttl;
        self.records
            .update(&Self::record_key(id), |letter: Option<DeadLetter>| {
                let Some(mut letter) = letter else {
                    return Change::Keep(());
                };
                letter.reason = Some(reason.to_owned());
                letter.replays = letter.replays.saturating_add(1);
                letter.last_replay_at = Some(now);
                let left = (letter.expires_at(ttl) - now)
                    .to_std()
                    .unwrap_or_default()
                    .max(Duration::from_secs(1));
                Change::WriteFor(letter, Some(left), ())
            })
            .await?;
        Ok(())
    }
}

impl From<RecordError> for DeadLetterError {
    fn from(err: RecordError) -> Self {
        match err {
            RecordError::Store(err) => Self::Store(err),
            RecordError::Corrupt { key, source } => Self::Corrupt(format!("{key}: {source}")),
            RecordError::Contended(_) => Self::Contended,
        }
    }
}

#[cfg(test)]
mod tests;

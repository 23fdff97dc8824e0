//! Applies task events to the statistics of the users they count for, once per event and
//! user, at a cost that does not depend on how many tasks a user has.
//!
//! An event counts for up to three users (`stats::shares`): the task's owner, the user who
//! completed it, the user it was assigned to. Each user's share is applied on its own, by
//! the same design, as if it were an event of that user's: the owner's first, then the
//! others' (a share the owner's record refuses is not applied for anyone). The delivery
//! succeeds once every share is counted; a share that fails asks for a redelivery, which
//! finds the shares already counted counted (below) and applies the rest.
//!
//! Records, per user and task:
//! - `task:<id>` (`TaskRecord`), the owner's: what the task was at the last applied event
//!   (version, completed, deleted, due time) and the versions whose completion or
//!   assignment was counted for the owner. Kept for good while the task is open; once it
//!   is completed or deleted it expires `FORGET_AFTER` (30 days) after its last event
//!   (`ttlInSeconds`).
//! - `task:<id>:<user>`, another user's: the versions of the task whose completion or
//!   assignment was counted for them. Expires `FORGET_AFTER` after its last write.
//! - `user:<id>` (`Aggregate`): the user's `UserStats` (bounded, see `stats.rs`) and the
//!   transitions it counted whose task records may not be written yet (`pending`).
//!
//! **The aggregate write is the commit point** of a user's share. A share is counted when
//! the aggregate that includes it is written; the task record follows. A crash between the two leaves
//! the aggregate ahead of the task record, and the aggregate says so: it keeps the new
//! state of every task it counted in `pending` until a later write has seen the task record
//! hold that version. So whoever decides what an event changes takes a task's prior state
//! as the newer of its record and its `pending` entry: a redelivered event then finds its
//! version already counted (a duplicate, nothing doubled), and a newer event starts from
//! the counted state (nothing lost). Invariant: a task record is never ahead of the
//! aggregate (it is written only with a state the aggregate already holds, and only
//! forward, under its ETag); reading the aggregate before the task records makes the
//! pair consistent, since anything counted after that read changes the aggregate's ETag
//! and our write fails.
//!
//! **Pending stays small.** Each aggregate write drops the pending entries of earlier
//! writes, after checking in the same bulk read as the batch's task records that their
//! records caught up, and writing those that did not (a crash, a failed write) first.
//! So it holds about one batch of transitions.
//!
//! **One writer per user in a process.** Every event of a user goes through one queue:
//! the first event to arrive flushes it, and the events that arrive meanwhile wait and are
//! applied together in the next flush (at most `MAX_BATCH`). One aggregate read and write
//! per batch instead of per event, and no ETag conflicts between deliveries of one
//! process. Replicas still race on the aggregate's ETag, and retry.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::Utc;
use futures::FutureExt;
use serde::{Deserialize, Serialize};
use taskmesh_shared::callback::{Delivery, Outcome, TopicHandler};
use taskmesh_shared::events::{TaskEventData, TaskEventKind};
use taskmesh_shared::failpoint::{self, RECORD_WRITTEN};
use taskmesh_shared::records::{Change, RecordError, RecordMetrics, Records, decode};
use taskmesh_shared::state::{Expect, StateError, StateStore, Versioned};
use tokio::sync::oneshot;
use tracing::Instrument;
use uuid::Uuid;

use crate::legacy::{LegacyStats, legacy_key};
use crate::stats::{Share, TaskState, UserStats, shares};

/// Events applied in one aggregate write.
const MAX_BATCH: usize = 64;
/// Aggregate writes that lost a race are tried again this often (as `Records` does).
const MAX_CONFLICTS: usize = 32;

pub fn user_key(user_id: &str) -> String {
    format!("user:{user_id}")
}

pub fn task_key(task: Uuid) -> String {
    format!("task:{task}")
}

/// The record of what `user`'s statistics counted of `task`: `task:<id>` for the task's
/// owner (the key earlier versions wrote), `task:<id>:<user>` for anyone else.
pub fn record_key(user: &str, task: Uuid, own: bool) -> String {
    if own {
        task_key(task)
    } else {
        format!("task:{task}:{user}")
    }
}

/// `user:<id>`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Aggregate {
    pub stats: UserStats,
    /// Transitions counted in `stats` whose task records may lag, oldest first.
    #[serde(default)]
    pending: Vec<Pending>,
}

impl From<UserStats> for Aggregate {
    fn from(stats: UserStats) -> Self {
        Self {
            stats,
            pending: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Pending {
    #[serde(rename = "t")]
    task: Uuid,
    /// The user owns the task (its record is `task:<id>`); absent in entries written
    /// before other users' shares were kept, which were all the owner's.
    #[serde(rename = "o", default = "own", skip_serializing_if = "is_own")]
    own: bool,
    #[serde(rename = "s")]
    state: TaskState,
}

fn own() -> bool {
    true
}

fn is_own(own: &bool) -> bool {
    *own
}

impl Pending {
    fn key(&self, user: &str) -> String {
        record_key(user, self.task, self.own)
    }
}

/// `task:<id>` and `task:<id>:<user>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskRecord {
    /// The user whose statistics the record is of: for `task:<id>`, the task's owner.
    pub owner: String,
    pub state: TaskState,
}

/// One user's share of one event, waiting in that user's queue.
struct Job {
    kind: TaskEventKind,
    data: Arc<TaskEventData>,
    share: Share,
    done: oneshot::Sender<Outcome>,
}

pub struct StatsConsumer<S> {
    inner: Arc<Inner<S>>,
}

struct Inner<S> {
    records: Records<S>,
    metrics: RecordMetrics,
    /// Events waiting, by user. A user is present while a flush of theirs runs.
    queues: Mutex<HashMap<String, Vec<Job>>>,
}

impl<S: StateStore> StatsConsumer<S> {
    pub fn new(store: Arc<S>, metrics: RecordMetrics) -> Self {
        Self {
            inner: Arc::new(Inner {
                records: Records::new(store, metrics.conflicts.clone()),
                metrics,
                queues: Mutex::new(HashMap::new()),
            }),
        }
    }

    #[cfg(test)]
    fn metrics(&self) -> &RecordMetrics {
        &self.inner.metrics
    }

    /// Applies the owner's share of the event, then the other users' (concurrently): the
    /// first outcome that is not a success, or success.
    async fn apply(&self, kind: TaskEventKind, data: TaskEventData) -> Outcome {
        let data = Arc::new(data);
        let mut shares = shares(kind, &data).into_iter();
        let Some((owner, share)) = shares.next() else {
            return Outcome::Success;
        };
        let outcome = self.queue(owner, kind, data.clone(), share).await;
        if outcome != Outcome::Success {
            return outcome;
        }
        let others = shares.map(|(user, share)| self.queue(user, kind, data.clone(), share));
        futures::future::join_all(others)
            .await
            .into_iter()
            .find(|outcome| *outcome != Outcome::Success)
            .unwrap_or(Outcome::Success)
    }

    /// Queues one user's share behind that user's others; the first in line flushes the
    /// queue, in a task of its own so that a delivery the sidecar gives up on cannot
    /// strand the others.
    async fn queue(
        &self,
        user: String,
        kind: TaskEventKind,
        data: Arc<TaskEventData>,
        share: Share,
    ) -> Outcome {
        let (done, outcome) = oneshot::channel();
        let job = Job {
            kind,
            data,
            share,
            done,
        };
        let first = {
            let mut queues = self.inner.queues.lock().unwrap_or_else(|e| e.into_inner());
            match queues.get_mut(&user) {
                Some(queue) => {
                    queue.push(job);
                    false
                }
                None => {
                    queues.insert(user.clone(), vec![job]);
                    true
                }
            }
        };
        if first {
            let inner = self.inner.clone();
            tokio::spawn(async move { inner.drain(user).await });
        }
        outcome
            .await
            .unwrap_or_else(|_| Outcome::Retry("the flush of this event stopped".into()))
    }
}

impl<S: StateStore> Inner<S> {
    async fn drain(&self, user: String) {
        loop {
            let batch: Vec<Job> = {
                let mut queues = self.queues.lock().unwrap_or_else(|e| e.into_inner());
                let Some(queue) = queues.get_mut(&user) else {
                    return;
                };
                if queue.is_empty() {
                    queues.remove(&user);
                    return;
                }
                let n = queue.len().min(MAX_BATCH);
                queue.drain(..n).collect()
            };
            let span = tracing::debug_span!("flush", user = %user, events = batch.len());
            let events: Vec<(TaskEventKind, &TaskEventData, Share)> = batch
                .iter()
                .map(|job| (job.kind, job.data.as_ref(), job.share))
                .collect();
            // A panic must not leave the user's queue without a writer (its events would
            // wait for ever): it fails this batch, the sidecar redelivers, the loop goes on.
            let flushed = std::panic::AssertUnwindSafe(self.flush(&user, &events).instrument(span))
                .catch_unwind()
                .await;
            let outcomes = match flushed {
                Ok(Ok(outcomes)) => outcomes,
                Ok(Err(err)) => {
                    tracing::warn!(user = %user, error = %err, "statistics not updated");
                    // A corrupt record of ours is not the events' fault either, so no DROP:
                    // the resiliency policy retries and an operator sees it in the logs.
                    vec![Outcome::Retry(err.to_string()); batch.len()]
                }
                Err(_) => {
                    tracing::error!(user = %user, "the statistics flush panicked");
                    vec![Outcome::Retry("the statistics flush panicked".into()); batch.len()]
                }
            };
            for (job, outcome) in batch.into_iter().zip(outcomes) {
                let _ = job.done.send(outcome);
            }
        }
    }

    /// Applies `events` (`user`'s shares of them) in one aggregate write; one outcome per
    /// event.
    async fn flush(
        &self,
        user: &str,
        events: &[(TaskEventKind, &TaskEventData, Share)],
    ) -> Result<Vec<Outcome>, RecordError> {
        let key = user_key(user);
        let store = self.records.store();
        let record_of =
            |data: &TaskEventData, share: Share| record_key(user, data.task.id, share.owner);
        for _ in 0..MAX_CONFLICTS {
            // The aggregate first, then the task records (see the module's invariant).
            let (aggregate, expect) = decode::<Aggregate>(&key, store.get(&key).await?)?;
            let now = Utc::now();
            let (mut aggregate, migrated) = match aggregate {
                Some(aggregate) => (aggregate, None),
                None => self.migrate(user, now).await?,
            };
            let earlier = std::mem::take(&mut aggregate.pending);
            let mut keys: Vec<String> = Vec::new();
            let mut seen = HashSet::new();
            for record in events
                .iter()
                .map(|(_, data, share)| record_of(data, *share))
                .chain(earlier.iter().map(|p| p.key(user)))
            {
                if seen.insert(record.clone()) {
                    keys.push(record);
                }
            }
            let reads = self.records.prefetch(&keys).await?;
            let mut stored: HashMap<String, (Option<Versioned>, Option<TaskRecord>)> =
                HashMap::with_capacity(keys.len());
            for (record, read) in keys.into_iter().zip(reads) {
                let decoded = decode::<TaskRecord>(&record, read.clone())?.0;
                stored.insert(record, (read, decoded));
            }

            // What each task is, as far as the aggregate counted: its record, or the newer
            // pending state.
            let mut current: HashMap<String, TaskState> = stored
                .iter()
                .filter_map(|(record, (_, found))| {
                    Some((record.clone(), found.as_ref()?.state.clone()))
                })
                .collect();
            let mut lagging = Vec::new();
            for entry in &earlier {
                let record = entry.key(user);
                let written = current.get(&record).map(TaskState::progress);
                if written.is_none_or(|w| w < entry.state.progress()) {
                    lagging.push(entry.clone());
                    current.insert(record, entry.state.clone());
                }
            }

            let mut outcomes = Vec::with_capacity(events.len());
            let (mut applied, mut duplicates) = (0u64, 0u64);
            // Records changed, in the order first changed: (task, own).
            let mut touched: Vec<(Uuid, bool)> = Vec::new();
            for (kind, data, share) in events {
                let id = data.task.id;
                let record = record_of(data, *share);
                let owner = stored.get(&record).and_then(|(_, r)| r.as_ref());
                if share.owner && owner.is_some_and(|r| r.owner != data.owner_id) {
                    outcomes.push(Outcome::Drop(format!(
                        "task {id} belongs to another owner than {}",
                        data.owner_id
                    )));
                    continue;
                }
                match aggregate
                    .stats
                    .apply(current.get(&record), *kind, data, *share, now)
                {
                    Some(state) => {
                        current.insert(record, state);
                        if !touched.contains(&(id, share.owner)) {
                            touched.push((id, share.owner));
                        }
                        applied += 1;
                        outcomes.push(Outcome::Success);
                    }
                    None => {
                        duplicates += 1;
                        outcomes.push(Outcome::Success);
                    }
                }
            }

            // Records of earlier writes that did not catch up are written before the
            // aggregate forgets their pending state.
            let lagging: Vec<Pending> = lagging
                .into_iter()
                .filter(|p| !touched.contains(&(p.task, p.own)))
                .collect();
            self.write_tasks(user, &lagging, &stored).await?;

            let pending: Vec<Pending> = touched
                .iter()
                .map(|&(task, own)| Pending {
                    task,
                    own,
                    state: current[&record_key(user, task, own)].clone(),
                })
                .collect();
            if applied > 0 || !earlier.is_empty() || migrated.is_some() {
                aggregate.pending = pending.clone();
                let bytes =
                    serde_json::to_vec(&aggregate).map_err(|source| RecordError::Corrupt {
                        key: key.clone(),
                        source,
                    })?;
                match store.put(&key, bytes, expect).await {
                    Ok(()) => failpoint::hit(RECORD_WRITTEN),
                    Err(StateError::Conflict) => {
                        self.metrics.conflicts.inc();
                        continue;
                    }
                    Err(err) => return Err(err.into()),
                }
            }
            // With the ETag it was read with: the old record may be megabytes, and is not
            // read again only to be deleted.
            if let Some(read_as) = migrated
                && let Err(err) = store.delete(&legacy_key(user), read_as).await
            {
                // Never read again (the aggregate exists now); only space is lost.
                tracing::warn!(user, error = %err, "the old statistics record stays");
            }
            self.metrics.applied.inc_by(applied);
            self.metrics.duplicates.inc_by(duplicates);

            // Counted: now the task records. One that fails is written by a later flush
            // (it stays pending), and the redelivery this asks for brings one soon.
            if let Err(err) = self.write_tasks(user, &pending, &stored).await {
                tracing::warn!(user, error = %err, "task records lag the aggregate");
                for (outcome, (_, data, share)) in outcomes.iter_mut().zip(events) {
                    if touched.contains(&(data.task.id, share.owner))
                        && *outcome == Outcome::Success
                    {
                        *outcome = Outcome::Retry(err.to_string());
                    }
                }
            }
            return Ok(outcomes);
        }
        Err(RecordError::Contended(key))
    }

    /// The aggregate of a user who has none: from the record earlier versions kept
    /// (`legacy.rs`), whose tasks are written as task records first (forward only, so a
    /// redone migration changes nothing), or empty. When migrated, the old record's ETag
    /// as read.
    async fn migrate(
        &self,
        user: &str,
        now: chrono::DateTime<Utc>,
    ) -> Result<(Aggregate, Option<Expect>), RecordError> {
        let key = legacy_key(user);
        let (legacy, read_as) = decode::<LegacyStats>(&key, self.records.store().get(&key).await?)?;
        let Some(legacy) = legacy else {
            return Ok((Aggregate::default(), None));
        };
        let (stats, tasks) = legacy.convert(now);
        tracing::info!(
            user,
            tasks = tasks.len(),
            "statistics moved to per-task records"
        );
        let states: Vec<Pending> = tasks
            .into_iter()
            .map(|(task, state)| Pending {
                task,
                own: true,
                state,
            })
            .collect();
        for chunk in states.chunks(MAX_BATCH) {
            self.write_tasks(user, chunk, &HashMap::new()).await?;
        }
        Ok((Aggregate::from(stats), Some(read_as)))
    }

    /// Writes each task record forward to its pending state (never back), concurrently.
    async fn write_tasks(
        &self,
        user: &str,
        states: &[Pending],
        stored: &HashMap<String, (Option<Versioned>, Option<TaskRecord>)>,
    ) -> Result<(), RecordError> {
        let writes = states.iter().map(|pending| {
            let key = pending.key(user);
            // Seeded with what was read, if it was.
            let seed = stored.get(&key).map(|(read, _)| read.clone());
            let record = TaskRecord {
                owner: user.to_owned(),
                state: pending.state.clone(),
            };
            let ttl = record.state.ttl(pending.own);
            async move {
                self.records
                    .update_seeded(&key, seed, |found: Option<TaskRecord>| {
                        if found.is_some_and(|f| f.state.progress() >= record.state.progress()) {
                            Change::Keep(())
                        } else {
                            Change::WriteFor(record.clone(), ttl, ())
                        }
                    })
                    .await
            }
        });
        futures::future::join_all(writes)
            .await
            .into_iter()
            .collect::<Result<Vec<()>, _>>()
            .map(drop)
    }
}

/// Checks what the type system cannot: the event is about a task of its owner, and names
/// users as task-service accepts them (record keys are made of them).
pub fn validate(data: &TaskEventData) -> Result<(), String> {
    if data.owner_id.is_empty() || data.owner_id.len() > 128 {
        return Err("owner_id must be 1 to 128 characters".into());
    }
    for (field, user) in [
        ("actor_id", &data.actor_id),
        ("task.assignee_id", &data.task.assignee_id),
        ("previous_assignee_id", &data.previous_assignee_id),
    ] {
        if user.as_ref().is_some_and(|u| u.is_empty() || u.len() > 128) {
            return Err(format!("{field} must be 1 to 128 characters"));
        }
    }
    if data.task.owner_id != data.owner_id {
        return Err("task.owner_id differs from owner_id".into());
    }
    if data.version < 1 {
        return Err("version must be positive".into());
    }
    Ok(())
}

#[async_trait]
impl<S: StateStore> TopicHandler for StatsConsumer<S> {
    async fn handle(&self, delivery: Delivery) -> Outcome {
        let Some(kind) = TaskEventKind::from_event_type(&delivery.event_type) else {
            return Outcome::Drop(format!("unknown event type {:?}", delivery.event_type));
        };
        let data: TaskEventData = match delivery.json() {
            Ok(data) => data,
            Err(outcome) => return outcome,
        };
        if let Err(reason) = validate(&data) {
            return Outcome::Drop(format!("event {}: {reason}", delivery.id));
        }
        self.apply(kind, data).await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use taskmesh_shared::state::MemoryStateStore;

    use super::*;
    use crate::stats::FORGET_AFTER;
    use crate::stats::tests::data;

    fn delivery(event_type: &str, data: &TaskEventData) -> Delivery {
        Delivery {
            id: "e1".into(),
            source: "test".into(),
            event_type: event_type.into(),
            subject: None,
            topic: "task-events".into(),
            pubsub: "p".into(),
            data: serde_json::to_vec(data).unwrap(),
            data_content_type: "application/json".into(),
            traceparent: None,
        }
    }

    const CREATED: &str = "taskmesh.task.created.v1";
    const COMPLETED: &str = "taskmesh.task.completed.v1";
    const DELETED: &str = "taskmesh.task.deleted.v1";

    fn consumer(store: &Arc<MemoryStateStore>) -> Arc<StatsConsumer<MemoryStateStore>> {
        Arc::new(StatsConsumer::new(store.clone(), RecordMetrics::default()))
    }

    async fn stored(store: &MemoryStateStore) -> Aggregate {
        let read = store.get(&user_key("alice")).await.unwrap().unwrap();
        serde_json::from_slice(&read.value).unwrap()
    }

    async fn task(store: &MemoryStateStore, id: Uuid) -> Option<TaskState> {
        let read = store.get(&task_key(id)).await.unwrap()?;
        Some(
            serde_json::from_slice::<TaskRecord>(&read.value)
                .unwrap()
                .state,
        )
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn fifty_concurrent_redeliveries_apply_once() {
        let store = Arc::new(MemoryStateStore::new());
        let consumer = consumer(&store);
        let event = data(Uuid::now_v7(), 1, false, "2026-11-20T08:00:00Z");
        let deliveries = (0..50).map(|_| {
            let consumer = consumer.clone();
            let d = delivery(CREATED, &event);
            tokio::spawn(async move { consumer.handle(d).await })
        });
        for outcome in futures::future::join_all(deliveries).await {
            assert_eq!(outcome.unwrap(), Outcome::Success);
        }
        assert_eq!(stored(&store).await.stats.created, 1);
        assert_eq!(consumer.metrics().applied.get(), 1);
        assert_eq!(consumer.metrics().duplicates.get(), 49);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_different_events_all_apply() {
        let store = Arc::new(MemoryStateStore::new());
        let consumer = consumer(&store);
        let handles = (0..200).map(|_| {
            let consumer = consumer.clone();
            let d = delivery(
                CREATED,
                &data(Uuid::now_v7(), 1, false, "2026-11-20T08:00:00Z"),
            );
            tokio::spawn(async move { consumer.handle(d).await })
        });
        for outcome in futures::future::join_all(handles).await {
            assert_eq!(outcome.unwrap(), Outcome::Success);
        }
        let aggregate = stored(&store).await;
        assert_eq!((aggregate.stats.created, aggregate.stats.open), (200, 200));
        // One writer per user in a process: batches, and no conflicts among them.
        assert_eq!(consumer.metrics().conflicts.get(), 0);
        assert_eq!(store.keys().len(), 201);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn two_processes_racing_on_one_user_count_each_event_once() {
        let store = Arc::new(MemoryStateStore::new());
        let (one, two) = (consumer(&store), consumer(&store));
        let events: Vec<TaskEventData> = (0..100)
            .map(|_| data(Uuid::now_v7(), 1, false, "2026-11-20T08:00:00Z"))
            .collect();
        let handles = events.iter().flat_map(|event| {
            [one.clone(), two.clone()].map(|consumer| {
                let d = delivery(CREATED, event);
                tokio::spawn(async move { consumer.handle(d).await })
            })
        });
        for outcome in futures::future::join_all(handles).await {
            assert_eq!(outcome.unwrap(), Outcome::Success);
        }
        assert_eq!(stored(&store).await.stats.created, 100);
        let applied = one.metrics().applied.get() + two.metrics().applied.get();
        assert_eq!(applied, 100);
    }

    /// A delivery that dies after the aggregate counted it and before its task record was
    /// written: its redelivery, and a newer event of the task, count nothing twice and
    /// lose nothing.
    #[tokio::test]
    async fn a_crash_between_the_aggregate_and_the_task_record_neither_loses_nor_doubles() {
        let store = Arc::new(MemoryStateStore::new());
        let consumer = consumer(&store);
        let id = Uuid::now_v7();
        let created = data(id, 1, false, "2026-11-20T08:00:00Z");
        let completed = data(id, 2, true, "2026-11-21T08:00:00Z");

        store.fail_writes_under(Some("task:"));
        let cut = consumer.handle(delivery(CREATED, &created)).await;
        assert!(matches!(cut, Outcome::Retry(_)), "{cut:?}");
        assert_eq!(stored(&store).await.stats.created, 1);
        assert_eq!(task(&store, id).await, None);
        // Redelivered while the record still cannot be written: counted once.
        let again = consumer.handle(delivery(CREATED, &created)).await;
        assert!(matches!(again, Outcome::Retry(_)), "{again:?}");
        // The task's next event starts from what the aggregate counted.
        let next = consumer.handle(delivery(COMPLETED, &completed)).await;
        assert!(matches!(next, Outcome::Retry(_)), "{next:?}");
        let stats = stored(&store).await.stats;
        assert_eq!(
            (stats.created, stats.completed, stats.open, stats.done),
            (1, 1, 0, 1)
        );

        store.fail_writes_under(None);
        for (event_type, event) in [(CREATED, &created), (COMPLETED, &completed)] {
            assert_eq!(
                consumer.handle(delivery(event_type, event)).await,
                Outcome::Success
            );
        }
        let aggregate = stored(&store).await;
        assert_eq!((aggregate.stats.created, aggregate.stats.completed), (1, 1));
        assert_eq!(task(&store, id).await.unwrap().version, 2);
        // The next write found the record caught up and let go of its pending state.
        let other = data(Uuid::now_v7(), 1, false, "2026-11-22T08:00:00Z");
        consumer.handle(delivery(CREATED, &other)).await;
        let aggregate = stored(&store).await;
        assert_eq!(aggregate.pending.len(), 1);
        assert_eq!(aggregate.pending[0].task, other.task.id);
        assert_eq!(aggregate.stats.created, 2);
    }

    /// The record of an earlier event that never got written (its process died) is written
    /// by the next flush of its user, before the aggregate lets go of it, even when no
    /// event of that task comes again.
    #[tokio::test]
    async fn a_lagging_task_record_is_written_by_the_next_flush() {
        let store = Arc::new(MemoryStateStore::new());
        let consumer = consumer(&store);
        let id = Uuid::now_v7();
        store.fail_writes_under(Some("task:"));
        consumer
            .handle(delivery(
                COMPLETED,
                &data(id, 2, true, "2026-11-20T08:00:00Z"),
            ))
            .await;
        store.fail_writes_under(None);
        let other = data(Uuid::now_v7(), 1, false, "2026-11-20T09:00:00Z");
        assert_eq!(
            consumer.handle(delivery(CREATED, &other)).await,
            Outcome::Success
        );
        assert_eq!(task(&store, id).await.unwrap().version, 2);
        let aggregate = stored(&store).await;
        assert!(aggregate.pending.iter().all(|p| p.task != id));
        assert_eq!((aggregate.stats.created, aggregate.stats.completed), (2, 1));
    }

    #[tokio::test]
    async fn finished_tasks_expire_and_open_ones_stay() {
        let store = Arc::new(MemoryStateStore::new());
        let consumer = consumer(&store);
        let (open, done, gone) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        for id in [open, done, gone] {
            consumer
                .handle(delivery(
                    CREATED,
                    &data(id, 1, false, "2026-11-20T08:00:00Z"),
                ))
                .await;
        }
        consumer
            .handle(delivery(
                COMPLETED,
                &data(done, 2, true, "2026-11-21T08:00:00Z"),
            ))
            .await;
        consumer
            .handle(delivery(
                DELETED,
                &data(gone, 2, false, "2026-11-21T08:00:00Z"),
            ))
            .await;
        let month = FORGET_AFTER.to_std().ok();
        assert_eq!(store.ttl_of(&task_key(open)), None);
        assert_eq!(store.ttl_of(&task_key(done)), month);
        assert_eq!(store.ttl_of(&task_key(gone)), month);
        let stats = stored(&store).await.stats;
        assert_eq!(
            (stats.created, stats.open, stats.done, stats.deleted),
            (3, 1, 1, 1)
        );
    }

    #[tokio::test]
    async fn the_aggregate_does_not_grow_with_the_tasks() {
        let store = Arc::new(MemoryStateStore::new());
        let consumer = consumer(&store);
        let mut sizes = Vec::new();
        for i in 0..4_400i64 {
            let mut event = data(Uuid::now_v7(), 1, i % 2 == 0, "2026-11-20T08:00:00Z");
            event.task.due_time =
                Some(chrono::Utc::now() + chrono::Duration::minutes(10 * (i + 1)));
            let kind = if i % 2 == 0 { COMPLETED } else { CREATED };
            assert_eq!(
                consumer.handle(delivery(kind, &event)).await,
                Outcome::Success
            );
            if i == 2_199 || i == 4_399 {
                sizes.push(
                    store
                        .get(&user_key("alice"))
                        .await
                        .unwrap()
                        .unwrap()
                        .value
                        .len(),
                );
            }
        }
        assert_eq!(stored(&store).await.stats.created, 4_400);
        // Past the bucket and sample limits (2,200 events in) only the digits of its counts
        // grow: 2,200 more tasks add less than one task's worth of bytes.
        assert!(sizes[0] < 8_000 && sizes[1] <= sizes[0] + 100, "{sizes:?}");
    }

    #[tokio::test]
    async fn the_old_single_record_is_moved_once_and_counted_on() {
        let store = Arc::new(MemoryStateStore::new());
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let old = serde_json::json!({
            "created": 2, "completed": 1, "deleted": 0,
            "tasks": {
                a.to_string(): {"version": 1, "completed": false, "deleted": false, "due": null},
                b.to_string(): {"version": 2, "completed": true, "deleted": false, "due": null},
            },
            "completions_by_day": {}, "durations": [60]
        });
        store
            .put(
                &legacy_key("alice"),
                serde_json::to_vec(&old).unwrap(),
                taskmesh_shared::state::Expect::Absent,
            )
            .await
            .unwrap();
        let methods = crate::methods::GetStats::new(store.clone());
        let report = taskmesh_shared::callback::Method::call(
            &methods,
            serde_json::json!({"user_id": "alice"}),
        )
        .await
        .unwrap();
        assert_eq!(
            (report["created"].as_u64(), report["open"].as_u64()),
            (Some(2), Some(1))
        );

        let consumer = consumer(&store);
        // An old event of a task it knew changes nothing; a's completion counts.
        let stale = data(b, 2, true, "2026-11-21T08:00:00Z");
        let done = data(a, 2, true, "2026-11-22T08:00:00Z");
        for (event_type, event) in [(COMPLETED, &stale), (COMPLETED, &done), (COMPLETED, &done)] {
            assert_eq!(
                consumer.handle(delivery(event_type, event)).await,
                Outcome::Success
            );
        }
        let stats = stored(&store).await.stats;
        assert_eq!(
            (stats.created, stats.completed, stats.open, stats.done),
            (2, 2, 0, 2)
        );
        assert_eq!(store.get(&legacy_key("alice")).await.unwrap(), None);
        assert_eq!(task(&store, b).await.unwrap().version, 2);
        assert_eq!(consumer.metrics().applied.get(), 1);
    }

    #[tokio::test]
    async fn a_task_of_another_owner_is_dropped() {
        let store = Arc::new(MemoryStateStore::new());
        let consumer = consumer(&store);
        let event = data(Uuid::now_v7(), 1, false, "2026-11-20T08:00:00Z");
        consumer.handle(delivery(CREATED, &event)).await;
        let mut forged = data(event.task.id, 2, true, "2026-11-21T08:00:00Z");
        forged.owner_id = "mallory".into();
        forged.task.owner_id = "mallory".into();
        let outcome = consumer.handle(delivery(COMPLETED, &forged)).await;
        assert!(matches!(outcome, Outcome::Drop(_)), "{outcome:?}");
        assert_eq!(task(&store, event.task.id).await.unwrap().version, 1);
    }

    async fn stats_of(store: &MemoryStateStore, user: &str) -> UserStats {
        match store.get(&user_key(user)).await.unwrap() {
            Some(read) => {
                serde_json::from_slice::<Aggregate>(&read.value)
                    .unwrap()
                    .stats
            }
            None => UserStats::default(),
        }
    }

    /// alice's task, assigned to bob, completed by bob: (created, completed, assigned,
    /// done) for alice and for bob.
    async fn counts(store: &MemoryStateStore) -> [(u64, u64, u64, u64); 2] {
        let mut counts = [(0, 0, 0, 0); 2];
        for (user, count) in ["alice", "bob"].iter().zip(&mut counts) {
            let s = stats_of(store, user).await;
            *count = (s.created, s.completed, s.assigned, s.done);
        }
        counts
    }

    fn for_bob(id: Uuid) -> (TaskEventData, TaskEventData) {
        let mut created = data(id, 1, false, "2026-11-20T08:00:00Z");
        created.task.assignee_id = Some("bob".into());
        let mut completed = data(id, 2, true, "2026-11-21T08:00:00Z");
        completed.task.assignee_id = Some("bob".into());
        completed.changed_fields = vec!["completed".into()];
        completed.actor_id = Some("bob".into());
        (created, completed)
    }

    /// One event counts for two users, each committed by their own aggregate write. When
    /// bob's write fails after alice's, the delivery is retried: alice's share is found
    /// counted, bob's is applied, once.
    #[tokio::test]
    async fn a_share_that_fails_for_one_user_is_retried_without_doubling_the_other() {
        let store = Arc::new(MemoryStateStore::new());
        let consumer = consumer(&store);
        let (created, completed) = for_bob(Uuid::now_v7());

        store.fail_writes_under(Some("user:bob"));
        for (event_type, event) in [(CREATED, &created), (COMPLETED, &completed)] {
            for _ in 0..2 {
                let cut = consumer.handle(delivery(event_type, event)).await;
                assert!(matches!(cut, Outcome::Retry(_)), "{cut:?}");
            }
        }
        assert_eq!(counts(&store).await, [(1, 0, 0, 1), (0, 0, 0, 0)]);

        store.fail_writes_under(None);
        for _ in 0..3 {
            for (event_type, event) in [(COMPLETED, &completed), (CREATED, &created)] {
                assert_eq!(
                    consumer.handle(delivery(event_type, event)).await,
                    Outcome::Success
                );
            }
        }
        assert_eq!(counts(&store).await, [(1, 0, 0, 1), (0, 1, 1, 0)]);
        let bobs = format!("task:{}:bob", created.task.id);
        assert_eq!(store.ttl_of(&bobs), FORGET_AFTER.to_std().ok());
    }

    /// A delivery that dies after bob's aggregate counted his share and before his record
    /// of the task was written: the redelivery and a newer event start from what the
    /// aggregate counted.
    #[tokio::test]
    async fn a_crash_between_another_users_two_writes_neither_loses_nor_doubles() {
        let store = Arc::new(MemoryStateStore::new());
        let consumer = consumer(&store);
        let id = Uuid::now_v7();
        let (created, completed) = for_bob(id);
        store.fail_writes_under(Some(&format!("task:{id}:")));
        for (event_type, event) in [
            (CREATED, &created),
            (CREATED, &created),
            (COMPLETED, &completed),
        ] {
            let cut = consumer.handle(delivery(event_type, event)).await;
            assert!(matches!(cut, Outcome::Retry(_)), "{cut:?}");
        }
        assert_eq!(counts(&store).await, [(1, 0, 0, 1), (0, 1, 1, 0)]);
        store.fail_writes_under(None);
        for (event_type, event) in [(COMPLETED, &completed), (CREATED, &created)] {
            assert_eq!(
                consumer.handle(delivery(event_type, event)).await,
                Outcome::Success
            );
        }
        assert_eq!(counts(&store).await, [(1, 0, 0, 1), (0, 1, 1, 0)]);
        // bob's record caught up; his next write lets go of the pending state.
        let read = store.get(&format!("task:{id}:bob")).await.unwrap().unwrap();
        let record: TaskRecord = serde_json::from_slice(&read.value).unwrap();
        assert_eq!(record.state.version, 2);
        let (other, _) = for_bob(Uuid::now_v7());
        consumer.handle(delivery(CREATED, &other)).await;
        let bob = store.get(&user_key("bob")).await.unwrap().unwrap();
        let bob: Aggregate = serde_json::from_slice(&bob.value).unwrap();
        assert_eq!(bob.pending.len(), 1);
        assert!(!bob.pending[0].own);
        assert_eq!(bob.stats.assigned, 2);
    }

    /// Records and pending entries written before other users' shares were kept read as
    /// the owner's, with every version up to their own counted.
    #[test]
    fn earlier_records_read_as_the_owners() {
        let id = Uuid::now_v7();
        let old = serde_json::json!({
            "stats": {"created": 1, "completed": 1, "deleted": 0},
            "pending": [{"t": id, "s": {"v": 3, "c": false}}]
        });
        let aggregate: Aggregate = serde_json::from_value(old).unwrap();
        assert!(aggregate.pending[0].own);
        assert_eq!(aggregate.pending[0].key("alice"), task_key(id));
        let mut stats = aggregate.stats.clone();
        let state = aggregate.pending[0].state.clone();
        // The completion at version 2 was counted by the earlier version (or inferred).
        let late = data(id, 2, true, "2026-11-21T08:00:00Z");
        let share = crate::stats::shares(TaskEventKind::Completed, &late)[0].1;
        assert_eq!(
            stats.apply(
                Some(&state),
                TaskEventKind::Completed,
                &late,
                share,
                Utc::now()
            ),
            None
        );
        assert_eq!(stats.completed, 1);
    }

    #[tokio::test]
    async fn poison_is_dropped_and_a_down_store_is_retried() {
        let store = Arc::new(MemoryStateStore::new());
        let consumer = consumer(&store);
        let good = data(Uuid::now_v7(), 1, false, "2026-11-20T08:00:00Z");

        let unknown = consumer
            .handle(delivery("taskmesh.task.created.v9", &good))
            .await;
        assert!(matches!(unknown, Outcome::Drop(_)), "{unknown:?}");
        let mut bad_json = delivery(CREATED, &good);
        bad_json.data = b"{\"task\":".to_vec();
        assert!(matches!(consumer.handle(bad_json).await, Outcome::Drop(_)));
        let mut missing = delivery(CREATED, &good);
        missing.data = br#"{"version":1}"#.to_vec();
        assert!(matches!(consumer.handle(missing).await, Outcome::Drop(_)));
        let mut foreign = good.clone();
        foreign.task.owner_id = "mallory".into();
        assert!(matches!(
            consumer.handle(delivery(CREATED, &foreign)).await,
            Outcome::Drop(_)
        ));
        for user in [String::new(), "b".repeat(129)] {
            let mut bad_user = good.clone();
            bad_user.task.assignee_id = Some(user);
            assert!(matches!(
                consumer.handle(delivery(CREATED, &bad_user)).await,
                Outcome::Drop(_)
            ));
        }

        store.set_down(true);
        let retry = consumer.handle(delivery(CREATED, &good)).await;
        assert!(matches!(retry, Outcome::Retry(_)), "{retry:?}");
        store.set_down(false);
        assert_eq!(
            consumer.handle(delivery(CREATED, &good)).await,
            Outcome::Success
        );
        assert_eq!(stored(&store).await.stats.created, 1);
    }
}

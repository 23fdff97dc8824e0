//! The relay loop: publish pending events in commit order, mark them published once the
//! sidecar accepted them, back off while the sidecar or broker is down.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng as _;
use tokio::sync::{Notify, watch};
// Tokio's clock, which tests can pause; the same as std's otherwise.
use tokio::time::Instant;

use super::{
    EventPublisher, Leadership, OutboxMetrics, OutboxSettings, OutboxStore, PendingEvent,
    PublishError, StoreError,
};

pub struct Relay<S, P, L> {
    store: S,
    publisher: P,
    leadership: L,
    wake: Arc<Notify>,
    settings: OutboxSettings,
    metrics: OutboxMetrics,
}

#[derive(Debug, thiserror::Error)]
enum CycleError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Publish(#[from] PublishError),
}

impl<S: OutboxStore + Clone, P: EventPublisher, L: Leadership> Relay<S, P, L> {
    pub fn new(
        store: S,
        publisher: P,
        leadership: L,
        wake: Arc<Notify>,
        settings: OutboxSettings,
        metrics: OutboxMetrics,
    ) -> Self {
        Self {
            store,
            publisher,
            leadership,
            wake,
            settings,
            metrics,
        }
    }

    /// Runs until `stop` turns true. A batch in flight is finished first; anything not
    /// marked published by then goes out again after the restart (same event id).
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        // Separate from the publishing loop, so the figures stay fresh while it backs off
        // (and on standby replicas).
        let housekeeping = tokio::spawn(housekeeping(
            self.store.clone(),
            self.metrics.clone(),
            self.settings.retention,
            stop.clone(),
        ));
        self.publish_while_leader(&mut stop).await;
        let _ = housekeeping.await;
    }

    async fn publish_while_leader(&mut self, stop: &mut watch::Receiver<bool>) {
        loop {
            tokio::select! {
                () = self.leadership.acquire() => {}
                () = stopped(stop) => return,
            }
            self.metrics.leader.set(1);
            self.lead(stop).await;
            self.metrics.leader.set(0);
            if *stop.borrow() {
                return;
            }
        }
    }

    async fn lead(&mut self, stop: &mut watch::Receiver<bool>) {
        let mut backoff = Backoff::new(self.settings.backoff_min, self.settings.backoff_max);
        let mut last_leader_check = Instant::now();
        loop {
            if *stop.borrow() {
                return;
            }
            let wait = match self.cycle().await {
                Ok(published) if published >= self.settings.batch_size => {
                    backoff.reset();
                    None
                }
                Ok(_) => {
                    backoff.reset();
                    Some(self.settings.poll_interval)
                }
                Err(err) => {
                    self.metrics.publish_failures.inc();
                    let delay = backoff.next();
                    if backoff.attempt == 1 || backoff.attempt.is_multiple_of(20) {
                        let hint = match &err {
                            CycleError::Publish(err) => err.hint(),
                            CycleError::Store(_) => None,
                        };
                        tracing::warn!(%err, hint = hint.unwrap_or(""), retry_in = ?delay,
                            attempt = backoff.attempt,
                            "outbox relay cannot publish; events wait in the outbox");
                    }
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = stopped(stop) => return,
                    }
                    None
                }
            };
            if last_leader_check.elapsed() >= Duration::from_secs(1) {
                last_leader_check = Instant::now();
                if !self.leadership.still_leader().await {
                    return;
                }
            }
            if let Some(poll) = wait {
                tokio::select! {
                    () = self.wake.notified() => {}
                    () = tokio::time::sleep(poll) => {}
                    () = stopped(stop) => return,
                }
            }
        }
    }

    /// Publishes one batch; returns how many events it held.
    async fn cycle(&mut self) -> Result<u64, CycleError> {
        let started = Instant::now();
        let batch = self.store.pending(self.settings.batch_size).await?;
        let count = batch.len() as u64;
        let fetched = started.elapsed();
        let (mut publishing, mut marking) = (Duration::ZERO, Duration::ZERO);
        for wave in waves(batch) {
            let seqs: Vec<i64> = wave.iter().map(|e| e.seq).collect();
            let publish_started = Instant::now();
            let published = self.publisher.publish(&wave).await;
            publishing += publish_started.elapsed();
            match published {
                Ok(()) => {
                    let mark_started = Instant::now();
                    self.store.mark_published(&seqs, chrono::Utc::now()).await?;
                    marking += mark_started.elapsed();
                    self.metrics.published.inc_by(seqs.len() as u64);
                }
                Err(PublishError::Partial {
                    failed,
                    first_error,
                }) => {
                    let accepted: Vec<i64> =
                        seqs.into_iter().filter(|s| !failed.contains(s)).collect();
                    self.store
                        .mark_published(&accepted, chrono::Utc::now())
                        .await?;
                    self.metrics.published.inc_by(accepted.len() as u64);
                    self.store.record_attempt(&failed).await?;
                    // Later waves may hold the next events of a refused one: stop here.
                    return Err(PublishError::Partial {
                        failed,
                        first_error,
                    }
                    .into());
                }
                Err(err) => {
                    self.store.record_attempt(&seqs).await?;
                    return Err(err.into());
                }
            }
        }
        if count > 0 {
            tracing::debug!(
                count,
                ?fetched,
                ?publishing,
                ?marking,
                "outbox batch published"
            );
        }
        Ok(count)
    }
}

/// Splits a batch (in commit order) into waves that hold at most one event per task, each
/// wave's events later than the previous wave's events of the same task. Waves go out one
/// after the other, so one task's events are published in order even though daprd may
/// publish the entries of one bulk request concurrently.
fn waves(batch: Vec<PendingEvent>) -> Vec<Vec<PendingEvent>> {
    let mut waves: Vec<Vec<PendingEvent>> = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for event in batch {
        let index = seen.entry(event.task_id.clone()).or_insert(0);
        if waves.len() <= *index {
            waves.push(Vec::new());
        }
        waves[*index].push(event);
        *index += 1;
    }
    waves
}

async fn stopped(stop: &mut watch::Receiver<bool>) {
    // A dropped sender also means stop.
    let _ = stop.wait_for(|stopped| *stopped).await;
}

/// Exponential backoff with full jitter, so that replicas and restarts spread out.
#[derive(Debug)]
struct Backoff {
    min: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max,
            attempt: 0,
        }
    }

    fn reset(&mut self) {
        self.attempt = 0;
    }

    fn next(&mut self) -> Duration {
        self.attempt = self.attempt.saturating_add(1);
        let ceiling = self
            .min
            .saturating_mul(1 << self.attempt.min(16))
            .min(self.max);
        let jittered = rand::rng().random_range(self.min..=ceiling.max(self.min));
        jittered.min(self.max)
    }
}

/// How often the backlog figures are refreshed, at the most.
const BACKLOG_REFRESH: Duration = Duration::from_secs(1);
/// Counting the backlog is one query over the unpublished rows: cheap while the relay
/// keeps up, but a backlog of 60,000 events (a broker outage) took 40-50 ms of the
/// database's CPU. The count then waits this many times its own duration, so that it
/// never takes more than 1% of a core, however long the outage.
const BACKLOG_COUNT_DUTY: u32 = 100;
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// Refreshes the backlog figures every second and prunes published rows every minute.
/// While counting is slow the count waits longer, and the age of the oldest event counted
/// goes on growing in the meantime, as it would if nothing had been published since.
async fn housekeeping(
    store: impl OutboxStore,
    metrics: OutboxMetrics,
    retention: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(BACKLOG_REFRESH);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_prune: Option<Instant> = None;
    let mut next_count = Instant::now();
    let mut oldest = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stopped(&mut stop) => return,
        }
        if Instant::now() >= next_count {
            let started = Instant::now();
            match store.backlog().await {
                Ok(backlog) => {
                    metrics
                        .backlog
                        .set(i64::try_from(backlog.events).unwrap_or(i64::MAX));
                    oldest = backlog.oldest;
                }
                Err(err) => tracing::debug!(%err, "cannot read the outbox backlog"),
            }
            next_count = started + started.elapsed() * BACKLOG_COUNT_DUTY;
        }
        let age = oldest.map_or(0.0, |oldest| {
            (chrono::Utc::now() - oldest).num_milliseconds().max(0) as f64 / 1000.0
        });
        metrics.oldest_age_seconds.set(age);
        if last_prune.is_none_or(|at| at.elapsed() >= PRUNE_EVERY) {
            last_prune = Some(Instant::now());
            let retention = chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::MAX);
            match store.prune(chrono::Utc::now() - retention).await {
                Ok(0) => {}
                Ok(pruned) => tracing::debug!(pruned, "pruned published outbox rows"),
                Err(err) => tracing::warn!(%err, "cannot prune the outbox"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Mutex;

    use async_trait::async_trait;
    use chrono::{DateTime, Utc};

    use super::super::{Backlog, SingleProcess};
    use super::*;

    fn event(seq: i64, task: &str) -> PendingEvent {
        PendingEvent {
            seq,
            event_id: format!("e{seq}"),
            task_id: task.to_owned(),
            payload: "{}".to_owned(),
        }
    }

    #[test]
    fn waves_keep_each_tasks_events_in_order() {
        let batch = vec![
            event(1, "a"),
            event(2, "b"),
            event(3, "a"),
            event(4, "a"),
            event(5, "c"),
            event(6, "b"),
        ];
        let seqs: Vec<Vec<i64>> = waves(batch)
            .iter()
            .map(|w| w.iter().map(|e| e.seq).collect())
            .collect();
        assert_eq!(seqs, vec![vec![1, 2, 5], vec![3, 6], vec![4]]);
    }

    #[test]
    fn backoff_grows_within_bounds_and_resets() {
        let (min, max) = (Duration::from_millis(10), Duration::from_millis(500));
        let mut backoff = Backoff::new(min, max);
        for _ in 0..40 {
            let delay = backoff.next();
            assert!(delay >= min && delay <= max, "{delay:?}");
        }
        backoff.reset();
        assert!(backoff.next() <= min * 2);
    }

    #[derive(Default)]
    struct FakeStore {
        rows: Mutex<Vec<(PendingEvent, bool)>>,
        /// How long counting the backlog takes, and how often it was counted.
        count_takes: Duration,
        counts: Mutex<u32>,
    }

    #[async_trait]
    impl OutboxStore for Arc<FakeStore> {
        async fn pending(&self, limit: u64) -> Result<Vec<PendingEvent>, StoreError> {
            let rows = self.rows.lock().unwrap();
            Ok(rows
                .iter()
                .filter(|(_, published)| !published)
                .take(limit as usize)
                .map(|(e, _)| e.clone())
                .collect())
        }
        async fn mark_published(&self, seqs: &[i64], _: DateTime<Utc>) -> Result<(), StoreError> {
            for (e, published) in self.rows.lock().unwrap().iter_mut() {
                if seqs.contains(&e.seq) {
                    *published = true;
                }
            }
            Ok(())
        }
        async fn record_attempt(&self, _: &[i64]) -> Result<(), StoreError> {
            Ok(())
        }
        async fn prune(&self, _: DateTime<Utc>) -> Result<u64, StoreError> {
            Ok(0)
        }
        async fn backlog(&self) -> Result<Backlog, StoreError> {
            tokio::time::sleep(self.count_takes).await;
            *self.counts.lock().unwrap() += 1;
            Ok(Backlog::default())
        }
    }

    /// Refuses the first `fail_calls` calls, and every entry of task "poison".
    #[derive(Default)]
    struct FakePublisher {
        calls: Mutex<Vec<Vec<i64>>>,
        fail_calls: Mutex<usize>,
    }

    #[async_trait]
    impl EventPublisher for Arc<FakePublisher> {
        async fn publish(&self, events: &[PendingEvent]) -> Result<(), PublishError> {
            self.calls
                .lock()
                .unwrap()
                .push(events.iter().map(|e| e.seq).collect());
            let mut fail = self.fail_calls.lock().unwrap();
            if *fail > 0 {
                *fail -= 1;
                return Err(PublishError::Call(tonic::Status::unavailable(
                    "sidecar down",
                )));
            }
            let failed: Vec<i64> = events
                .iter()
                .filter(|e| e.task_id == "poison")
                .map(|e| e.seq)
                .collect();
            if failed.is_empty() {
                Ok(())
            } else {
                Err(PublishError::Partial {
                    failed,
                    first_error: "too large".into(),
                })
            }
        }
    }

    fn relay(
        store: &Arc<FakeStore>,
        publisher: &Arc<FakePublisher>,
    ) -> Relay<Arc<FakeStore>, Arc<FakePublisher>, SingleProcess> {
        let settings = OutboxSettings {
            batch_size: 3,
            backoff_min: Duration::from_millis(1),
            backoff_max: Duration::from_millis(5),
            ..OutboxSettings::default()
        };
        Relay::new(
            store.clone(),
            publisher.clone(),
            SingleProcess,
            Arc::new(Notify::new()),
            settings,
            OutboxMetrics::default(),
        )
    }

    #[tokio::test]
    async fn failed_calls_leave_events_pending_and_they_go_out_after_recovery() {
        let store = Arc::new(FakeStore::default());
        *store.rows.lock().unwrap() = (1..=5)
            .map(|s| (event(s, &format!("t{s}")), false))
            .collect();
        let publisher = Arc::new(FakePublisher::default());
        *publisher.fail_calls.lock().unwrap() = 2;
        let mut relay = relay(&store, &publisher);

        assert!(relay.cycle().await.is_err());
        assert!(relay.cycle().await.is_err());
        assert_eq!(store.pending(10).await.unwrap().len(), 5);
        assert_eq!(relay.cycle().await.unwrap(), 3);
        assert_eq!(relay.cycle().await.unwrap(), 2);
        assert!(store.pending(10).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_refused_entry_holds_back_its_tasks_later_events_only() {
        let store = Arc::new(FakeStore::default());
        *store.rows.lock().unwrap() = vec![
            (event(1, "poison"), false),
            (event(2, "ok"), false),
            (event(3, "poison"), false),
        ];
        let publisher = Arc::new(FakePublisher::default());
        let mut relay = relay(&store, &publisher);

        assert!(relay.cycle().await.is_err());
        let pending: Vec<i64> = store
            .pending(10)
            .await
            .unwrap()
            .iter()
            .map(|e| e.seq)
            .collect();
        assert_eq!(
            pending,
            vec![1, 3],
            "the good event went out, the poison task waits"
        );
        assert_eq!(*publisher.calls.lock().unwrap(), vec![vec![1, 2]]);
    }

    #[tokio::test]
    async fn run_publishes_on_wake_and_stops_on_request() {
        let store = Arc::new(FakeStore::default());
        let publisher = Arc::new(FakePublisher::default());
        let relay = relay(&store, &publisher);
        let wake = relay.wake.clone();
        let (stop_tx, stop_rx) = watch::channel(false);
        let task = tokio::spawn(relay.run(stop_rx));

        tokio::time::sleep(Duration::from_millis(20)).await;
        store.rows.lock().unwrap().push((event(1, "a"), false));
        wake.notify_one();
        let deadline = Instant::now() + Duration::from_millis(500);
        while !store.pending(1).await.unwrap().is_empty() {
            assert!(Instant::now() < deadline, "not published after a wake-up");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        stop_tx.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(1), task)
            .await
            .unwrap()
            .unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn the_backlog_is_counted_every_second_unless_counting_is_slow() {
        for (count_takes, expected) in [
            (Duration::ZERO, 19..=21),
            // 50 ms a count: one every 5 s, 1% of the time.
            (Duration::from_millis(50), 4..=5),
        ] {
            let store = Arc::new(FakeStore {
                count_takes,
                ..FakeStore::default()
            });
            let (stop_tx, stop_rx) = watch::channel(false);
            let task = tokio::spawn(housekeeping(
                store.clone(),
                OutboxMetrics::default(),
                Duration::from_secs(3600),
                stop_rx,
            ));
            tokio::time::sleep(Duration::from_secs(20)).await;
            stop_tx.send(true).unwrap();
            task.await.unwrap();
            let counts = *store.counts.lock().unwrap();
            assert!(
                expected.contains(&counts),
                "{counts} counts in 20 s when a count takes {count_takes:?}"
            );
        }
    }
}

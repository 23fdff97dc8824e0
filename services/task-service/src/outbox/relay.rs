//! The relay loop: publish pending events in commit order, mark them published once the
//! sidecar accepted them, back off while the sidecar or broker is down.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use rand::Rng as _;
use tokio::sync::{Notify, watch};
// Tokio's clock, which tests can pause; the same as std's otherwise.
use tokio::time::Instant;

use super::{
    EventPublisher, Leadership, OutboxMetrics, OutboxSettings, OutboxStore, PendingEvent,
    PublishError, StoreError, bulk_entry_bytes,
};

pub struct Relay<S, P, L> {
    store: S,
    publisher: P,
    leadership: L,
    wake: Arc<Notify>,
    settings: OutboxSettings,
    metrics: OutboxMetrics,
    /// Where the next one-at-a-time search starts in its wave (see `one_at_a_time`).
    probe_offset: usize,
}

#[derive(Debug, thiserror::Error)]
enum CycleError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Publish(#[from] PublishError),
    /// This replica could not prove it still holds leadership (see `Leadership`).
    #[error("this replica can no longer prove that it publishes the outbox")]
    Deposed,
    /// The rest went out.
    #[error("the sidecar refused {refused} events ({parked} parked), e.g. {first_reason}")]
    Refused {
        refused: usize,
        parked: usize,
        first_reason: String,
    },
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
            probe_offset: 0,
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
                Err(CycleError::Deposed) => {
                    self.metrics.leadership_lost.inc();
                    return;
                }
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
                            CycleError::Store(_)
                            | CycleError::Refused { .. }
                            | CycleError::Deposed => None,
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
                    self.metrics.leadership_lost.inc();
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

    /// Publishes one batch; returns how many events it held. Events the sidecar refused
    /// hold back their tasks' later events for the rest of the cycle, count a refusal, and
    /// are parked at the last one; the cycle then fails, so that the relay backs off.
    async fn cycle(&mut self) -> Result<u64, CycleError> {
        let started = Instant::now();
        let batch = self.store.pending(self.settings.batch_size).await?;
        let count = batch.len() as u64;
        let fetched = started.elapsed();
        let (mut publishing, mut marking) = (Duration::ZERO, Duration::ZERO);
        let mut held: HashSet<String> = HashSet::new();
        let mut refusals = Refusals::default();
        for wave in waves(batch, self.settings.max_batch_bytes) {
            let wave: Vec<PendingEvent> = wave
                .into_iter()
                .filter(|event| !held.contains(&event.task_id))
                .collect();
            if wave.is_empty() {
                continue;
            }
            // The fence: a replica that cannot prove it still leads publishes nothing more
            // (a round trip on the lock's session; the wave before it has been marked).
            // Marks need no fence: they only record what the sidecar accepted, which stays
            // true whoever leads now.
            // Refusals seen so far are not counted: the next leader finds them again.
            if !self.leadership.still_leader().await {
                return Err(CycleError::Deposed);
            }
            let publish_started = Instant::now();
            let outcome = self.publish_wave(&wave).await;
            publishing += publish_started.elapsed();
            let (accepted, refused) = match outcome {
                Ok(outcome) => outcome,
                // Nothing tells the events apart: it is the sidecar or the broker. Later
                // waves may hold the next events of this one's tasks, so stop here.
                Err(err) => {
                    if refusals.count > 0 {
                        self.handle_refusals(&mut refusals).await?;
                    }
                    return Err(err.into());
                }
            };
            let mark_started = Instant::now();
            self.store
                .mark_published(&accepted, chrono::Utc::now())
                .await?;
            marking += mark_started.elapsed();
            self.metrics.published.inc_by(accepted.len() as u64);
            for (event, reason) in refused {
                held.insert(event.task_id.clone());
                refusals.add(event, reason);
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
        if refusals.count > 0 {
            return Err(self.handle_refusals(&mut refusals).await?);
        }
        Ok(count)
    }

    /// Counts each refusal, parks the events refused `max_attempts` times, and returns the
    /// error the cycle reports.
    async fn handle_refusals(&mut self, refusals: &mut Refusals) -> Result<CycleError, StoreError> {
        let mut parked = 0;
        let mut counted = Vec::new();
        for (event, reason) in refusals.events.drain(..) {
            if event.attempts.saturating_add(1) >= self.settings.max_attempts {
                self.store
                    .park(event.seq, &reason, chrono::Utc::now())
                    .await?;
                self.metrics.parked_total.inc();
                parked += 1;
                tracing::error!(seq = event.seq, event_id = %event.event_id,
                    task_id = %event.task_id, attempts = event.attempts + 1, %reason,
                    "the sidecar refused this event too often: parked it; its task's later \
                     events wait for `task-service outbox retry`");
            } else {
                counted.push(event.seq);
            }
        }
        self.store.record_attempt(&counted).await?;
        Ok(CycleError::Refused {
            refused: refusals.count,
            parked,
            first_reason: std::mem::take(&mut refusals.first_reason),
        })
    }

    /// Publishes one wave; returns the events the sidecar accepted and those it refused,
    /// or the error when nothing tells the events apart.
    async fn publish_wave(
        &mut self,
        wave: &[PendingEvent],
    ) -> Result<(Vec<i64>, Vec<(PendingEvent, String)>), PublishError> {
        let seqs = || wave.iter().map(|e| e.seq);
        match self.publisher.publish(wave).await {
            Ok(()) => Ok((seqs().collect(), Vec::new())),
            Err(PublishError::Partial { failed }) if failed.len() < wave.len() => {
                let reasons: HashMap<i64, String> = failed.into_iter().collect();
                let (refused, accepted): (Vec<&PendingEvent>, Vec<&PendingEvent>) =
                    wave.iter().partition(|e| reasons.contains_key(&e.seq));
                Ok((
                    accepted.iter().map(|e| e.seq).collect(),
                    refused
                        .into_iter()
                        .map(|e| (e.clone(), reasons.get(&e.seq).cloned().unwrap_or_default()))
                        .collect(),
                ))
            }
            Err(err) if wave.len() > 1 && err.may_be_about_the_events() => {
                self.one_at_a_time(wave, err).await
            }
            Err(err) => Err(err),
        }
    }

    /// After a bulk publish failed whole (Dapr 1.18 fails the call when one entry fails),
    /// publishes the wave's events one by one to find the refused ones. A refusal counts
    /// only when the sidecar accepted another event meanwhile: otherwise the broker may be
    /// down, and an outage must never park anything. Gives up after
    /// `PROBES_WITHOUT_SUCCESS` refusals in a row with none accepted, starting from a
    /// different event each time, so that a few bad events at the front do not hide the
    /// good ones forever.
    async fn one_at_a_time(
        &mut self,
        wave: &[PendingEvent],
        bulk_error: PublishError,
    ) -> Result<(Vec<i64>, Vec<(PendingEvent, String)>), PublishError> {
        // Loud: either an event is bad, or the sidecar takes less than
        // TASKMESH_OUTBOX_MAX_BATCH_BYTES (RESOURCE_EXHAUSTED), which costs a call per event.
        tracing::warn!(err = %bulk_error, events = wave.len(),
            bytes = wave.iter().map(|e| bulk_entry_bytes(&e.payload, &e.task_id)).sum::<usize>(),
            "the sidecar refused a bulk publish whole; publishing its events one at a time");
        let start = self.probe_offset % wave.len();
        self.probe_offset = self.probe_offset.wrapping_add(1);
        let (mut accepted, mut refused) = (Vec::new(), Vec::new());
        for event in wave[start..].iter().chain(&wave[..start]) {
            // The fence again: one at a time, a wave is many requests. What was accepted
            // is marked; the refusals are left for the next leader to find again.
            if !self.leadership.still_leader().await {
                return if accepted.is_empty() {
                    Err(bulk_error)
                } else {
                    Ok((accepted, Vec::new()))
                };
            }
            match self.publisher.publish(std::slice::from_ref(event)).await {
                Ok(()) => accepted.push(event.seq),
                Err(err) if !err.may_be_about_the_events() => {
                    return if accepted.is_empty() {
                        Err(err)
                    } else {
                        // What was accepted is marked; the rest waits for the next cycle.
                        Ok((accepted, refused))
                    };
                }
                Err(err) => {
                    refused.push((event.clone(), err.reason()));
                    if accepted.is_empty() && refused.len() >= PROBES_WITHOUT_SUCCESS {
                        return Err(bulk_error);
                    }
                }
            }
        }
        if accepted.is_empty() {
            return Err(bulk_error);
        }
        Ok((accepted, refused))
    }
}

/// Single publishes refused in a row, none accepted, after which the relay takes a failed
/// bulk publish for an outage rather than for bad events.
const PROBES_WITHOUT_SUCCESS: usize = 3;

/// Events the sidecar refused in this cycle, with its reasons.
#[derive(Debug, Default)]
struct Refusals {
    events: Vec<(PendingEvent, String)>,
    count: usize,
    first_reason: String,
}

impl Refusals {
    fn add(&mut self, event: PendingEvent, reason: String) {
        if self.count == 0 {
            self.first_reason.clone_from(&reason);
        }
        self.count += 1;
        self.events.push((event, reason));
    }
}

/// Splits a batch (in commit order) into waves that hold at most one event per task, each
/// wave's events later than the previous wave's events of the same task. Waves go out one
/// after the other, so one task's events are published in order even though daprd may
/// publish the entries of one bulk request concurrently. A wave larger than `max_bytes`
/// (`bulk_entry_bytes`) is cut into requests that are not; one event larger than that
/// goes alone (the API refuses to write such events, but a lowered limit may find some).
fn waves(batch: Vec<PendingEvent>, max_bytes: usize) -> Vec<Vec<PendingEvent>> {
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
    let mut requests = Vec::with_capacity(waves.len());
    for wave in waves {
        let mut request = Vec::new();
        let mut bytes = 0;
        for event in wave {
            let size = bulk_entry_bytes(&event.payload, &event.task_id);
            if !request.is_empty() && bytes + size > max_bytes {
                requests.push(std::mem::take(&mut request));
                bytes = 0;
            }
            bytes += size;
            request.push(event);
        }
        if !request.is_empty() {
            requests.push(request);
        }
    }
    requests
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
                    metrics
                        .parked
                        .set(i64::try_from(backlog.parked).unwrap_or(i64::MAX));
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
            attempts: 0,
        }
    }

    fn seqs(events: &[PendingEvent]) -> Vec<i64> {
        events.iter().map(|e| e.seq).collect()
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
        let waves: Vec<Vec<i64>> = waves(batch, usize::MAX).iter().map(|w| seqs(w)).collect();
        assert_eq!(waves, vec![vec![1, 2, 5], vec![3, 6], vec![4]]);
    }

    #[test]
    fn requests_stay_within_the_byte_limit() {
        let sized = |seq, task: &str, bytes| PendingEvent {
            payload: "x".repeat(bytes),
            ..event(seq, task)
        };
        let per = |bytes| bulk_entry_bytes(&"x".repeat(bytes), "a");
        let batch = vec![
            sized(1, "a", 100),
            sized(2, "b", 100),
            sized(3, "c", 100),
            sized(4, "a", 100),
            // Larger than the limit by itself: alone in its request.
            sized(5, "d", 1000),
            sized(6, "e", 100),
        ];
        let limit = per(100) * 2;
        let requests: Vec<Vec<i64>> = waves(batch, limit).iter().map(|w| seqs(w)).collect();
        assert_eq!(
            requests,
            vec![vec![1, 2], vec![3], vec![5], vec![6], vec![4]]
        );
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
        parked: Mutex<Vec<(PendingEvent, String)>>,
        /// How long counting the backlog takes, and how often it was counted.
        count_takes: Duration,
        counts: Mutex<u32>,
    }

    #[async_trait]
    impl OutboxStore for Arc<FakeStore> {
        async fn pending(&self, limit: u64) -> Result<Vec<PendingEvent>, StoreError> {
            let held: HashSet<String> = self
                .parked
                .lock()
                .unwrap()
                .iter()
                .map(|(e, _)| e.task_id.clone())
                .collect();
            let rows = self.rows.lock().unwrap();
            Ok(rows
                .iter()
                .filter(|(e, published)| !published && !held.contains(&e.task_id))
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
        async fn record_attempt(&self, seqs: &[i64]) -> Result<(), StoreError> {
            for (e, _) in self.rows.lock().unwrap().iter_mut() {
                if seqs.contains(&e.seq) {
                    e.attempts += 1;
                }
            }
            Ok(())
        }
        async fn park(&self, seq: i64, reason: &str, _: DateTime<Utc>) -> Result<(), StoreError> {
            let mut rows = self.rows.lock().unwrap();
            if let Some(index) = rows.iter().position(|(e, _)| e.seq == seq) {
                let (event, _) = rows.remove(index);
                self.parked.lock().unwrap().push((event, reason.to_owned()));
            }
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

    impl FakeStore {
        fn with(events: Vec<PendingEvent>) -> Arc<Self> {
            let store = Arc::new(Self::default());
            *store.rows.lock().unwrap() = events.into_iter().map(|e| (e, false)).collect();
            store
        }

        fn pending_seqs(&self) -> Vec<i64> {
            let rows = self.rows.lock().unwrap();
            rows.iter()
                .filter(|(_, p)| !p)
                .map(|(e, _)| e.seq)
                .collect()
        }

        /// Whether no event's refusal has been counted.
        fn no_attempt_counted(&self) -> bool {
            self.rows
                .lock()
                .unwrap()
                .iter()
                .all(|(e, _)| e.attempts == 0)
        }

        fn parked_seqs(&self) -> Vec<i64> {
            let mut seqs: Vec<i64> = self
                .parked
                .lock()
                .unwrap()
                .iter()
                .map(|(e, _)| e.seq)
                .collect();
            seqs.sort_unstable();
            seqs
        }
    }

    /// Refuses the first `fail_calls` calls (sidecar down), and every event of a task
    /// named "poison...": in a bulk call, like Dapr 1.18 (the whole call fails), or with
    /// per-entry failures when `partial` is set.
    #[derive(Default)]
    struct FakePublisher {
        calls: Mutex<Vec<Vec<i64>>>,
        fail_calls: Mutex<usize>,
        partial: bool,
    }

    #[async_trait]
    impl EventPublisher for Arc<FakePublisher> {
        async fn publish(&self, events: &[PendingEvent]) -> Result<(), PublishError> {
            self.calls.lock().unwrap().push(seqs(events));
            let mut fail = self.fail_calls.lock().unwrap();
            if *fail > 0 {
                *fail -= 1;
                return Err(PublishError::Call(tonic::Status::unavailable(
                    "sidecar down",
                )));
            }
            let failed: Vec<(i64, String)> = events
                .iter()
                .filter(|e| e.task_id.starts_with("poison"))
                .map(|e| (e.seq, "too large".to_owned()))
                .collect();
            if failed.is_empty() {
                Ok(())
            } else if self.partial {
                Err(PublishError::Partial { failed })
            } else {
                Err(PublishError::Call(tonic::Status::internal(
                    "error when publish to topic: too large",
                )))
            }
        }
    }

    fn relay(
        store: &Arc<FakeStore>,
        publisher: &Arc<FakePublisher>,
    ) -> Relay<Arc<FakeStore>, Arc<FakePublisher>, SingleProcess> {
        relay_led_by(store, publisher, SingleProcess)
    }

    fn relay_led_by<L: Leadership>(
        store: &Arc<FakeStore>,
        publisher: &Arc<FakePublisher>,
        leadership: L,
    ) -> Relay<Arc<FakeStore>, Arc<FakePublisher>, L> {
        let settings = OutboxSettings {
            batch_size: 3,
            backoff_min: Duration::from_millis(1),
            backoff_max: Duration::from_millis(5),
            ..OutboxSettings::default()
        };
        Relay::new(
            store.clone(),
            publisher.clone(),
            leadership,
            Arc::new(Notify::new()),
            settings,
            OutboxMetrics::default(),
        )
    }

    /// Leads at once, proves its lead `proofs` times, then cannot any more; never leads
    /// again.
    struct Proofs {
        left: usize,
        acquired: bool,
    }

    #[async_trait]
    impl Leadership for Proofs {
        async fn acquire(&mut self) {
            if self.acquired {
                std::future::pending::<()>().await;
            }
            self.acquired = true;
        }

        async fn still_leader(&mut self) -> bool {
            let proved = self.left > 0;
            self.left = self.left.saturating_sub(1);
            proved
        }
    }

    fn fenced_relay(
        store: &Arc<FakeStore>,
        publisher: &Arc<FakePublisher>,
        proofs: usize,
    ) -> Relay<Arc<FakeStore>, Arc<FakePublisher>, Proofs> {
        relay_led_by(
            store,
            publisher,
            Proofs {
                left: proofs,
                acquired: false,
            },
        )
    }

    #[tokio::test]
    async fn a_replica_that_cannot_prove_its_lead_publishes_no_further_wave() {
        // Two waves (one task's two events); the proof before the second fails.
        let store = FakeStore::with(vec![event(1, "a"), event(2, "b"), event(3, "a")]);
        let publisher = Arc::new(FakePublisher::default());
        let mut relay = fenced_relay(&store, &publisher, 1);

        assert!(matches!(relay.cycle().await, Err(CycleError::Deposed)));
        assert_eq!(*publisher.calls.lock().unwrap(), vec![vec![1, 2]]);
        // What went out is marked; the rest waits for whoever leads now.
        assert_eq!(store.pending_seqs(), vec![3]);
    }

    #[tokio::test]
    async fn one_at_a_time_stops_at_the_first_failed_proof() {
        // The bulk call fails whole; the search publishes one event, then cannot prove
        // its lead: it publishes no other, and counts no refusal.
        let store = FakeStore::with(vec![event(1, "poison"), event(2, "a"), event(3, "b")]);
        let publisher = Arc::new(FakePublisher::default());
        let mut relay = fenced_relay(&store, &publisher, 2);

        assert!(matches!(relay.cycle().await, Err(CycleError::Publish(_))));
        assert_eq!(
            *publisher.calls.lock().unwrap(),
            vec![vec![1, 2, 3], vec![1]]
        );
        assert!(store.no_attempt_counted());
        assert_eq!(store.pending_seqs(), vec![1, 2, 3]);
    }

    #[tokio::test]
    async fn a_deposed_relay_stops_publishing_and_counts_it() {
        let store = FakeStore::with(vec![event(1, "a")]);
        let publisher = Arc::new(FakePublisher::default());
        let relay = fenced_relay(&store, &publisher, 1);
        let (metrics, wake) = (relay.metrics.clone(), relay.wake.clone());
        let (stop_tx, stop_rx) = watch::channel(false);
        let task = tokio::spawn(relay.run(stop_rx));

        let deadline = Instant::now() + Duration::from_secs(2);
        while metrics.leadership_lost.get() == 0 {
            assert!(Instant::now() < deadline, "the relay never noticed");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(metrics.leader.get(), 0);
        assert_eq!(*publisher.calls.lock().unwrap(), vec![vec![1]]);
        // New events are no longer its business.
        store.rows.lock().unwrap().push((event(2, "b"), false));
        wake.notify_one();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(publisher.calls.lock().unwrap().len(), 1);
        assert_eq!(store.pending_seqs(), vec![2]);
        stop_tx.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(1), task)
            .await
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn failed_calls_leave_events_pending_and_they_go_out_after_recovery() {
        let store = FakeStore::with((1..=5).map(|s| event(s, &format!("t{s}"))).collect());
        let publisher = Arc::new(FakePublisher::default());
        *publisher.fail_calls.lock().unwrap() = 2;
        let mut relay = relay(&store, &publisher);

        assert!(relay.cycle().await.is_err());
        assert!(relay.cycle().await.is_err());
        assert_eq!(store.pending(10).await.unwrap().len(), 5);
        assert_eq!(relay.cycle().await.unwrap(), 3);
        assert_eq!(relay.cycle().await.unwrap(), 2);
        assert!(store.pending(10).await.unwrap().is_empty());
        assert!(store.no_attempt_counted(), "an outage counts no refusal");
    }

    #[tokio::test]
    async fn a_refused_entry_holds_back_its_tasks_later_events_only() {
        for partial in [true, false] {
            let store =
                FakeStore::with(vec![event(1, "poison"), event(2, "ok"), event(3, "poison")]);
            let publisher = Arc::new(FakePublisher {
                partial,
                ..FakePublisher::default()
            });
            let mut relay = relay(&store, &publisher);

            assert!(relay.cycle().await.is_err());
            assert_eq!(
                store.pending_seqs(),
                vec![1, 3],
                "the good event went out, the poison task waits"
            );
            let calls = publisher.calls.lock().unwrap().clone();
            if partial {
                assert_eq!(calls, vec![vec![1, 2]]);
            } else {
                // The bulk call failed whole; one at a time found the refused event.
                assert_eq!(calls, vec![vec![1, 2], vec![1], vec![2]]);
            }
            assert_eq!(store.rows.lock().unwrap()[0].0.attempts, 1);
            assert_eq!(store.rows.lock().unwrap()[2].0.attempts, 0);
        }
    }

    /// Another task's event, so that each cycle has one the sidecar accepts.
    fn add_good_event(store: &FakeStore) {
        let mut rows = store.rows.lock().unwrap();
        let seq = rows.iter().map(|(e, _)| e.seq).max().unwrap_or(0) + 1;
        rows.push((event(seq, &format!("good{seq}")), false));
    }

    #[tokio::test]
    async fn an_event_refused_max_attempts_times_is_parked_and_the_rest_flow_on() {
        let store = FakeStore::with(vec![event(1, "poison"), event(2, "a"), event(3, "poison")]);
        let publisher = Arc::new(FakePublisher::default());
        let mut relay = relay(&store, &publisher);
        relay.settings.batch_size = 10;
        relay.settings.max_attempts = 3;
        let metrics = relay.metrics.clone();

        for parked in [0, 0, 1] {
            add_good_event(&store);
            match relay.cycle().await {
                Err(CycleError::Refused { parked: p, .. }) => assert_eq!(p, parked),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(store.parked_seqs(), vec![1]);
        assert_eq!(
            store.parked.lock().unwrap()[0].1,
            "Internal: error when publish to topic: too large"
        );
        assert_eq!(metrics.parked_total.get(), 1);
        // Everyone else went out; the parked event's later event waits behind it.
        assert_eq!(store.pending_seqs(), vec![3]);
        assert_eq!(relay.cycle().await.unwrap(), 0);
        assert!(store.pending(10).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn an_outage_parks_nothing() {
        // Every event refused, none accepted: indistinguishable from a broker that is
        // down, so no refusal counts however often it happens.
        let store = FakeStore::with((1..=5).map(|s| event(s, &format!("poison{s}"))).collect());
        let publisher = Arc::new(FakePublisher::default());
        let mut all_bad = relay(&store, &publisher);
        all_bad.settings.max_attempts = 1;
        for _ in 0..10 {
            assert!(matches!(all_bad.cycle().await, Err(CycleError::Publish(_))));
        }
        assert!(store.parked_seqs().is_empty());
        assert!(store.no_attempt_counted());
        // A lone event is never singled out either.
        let store = FakeStore::with(vec![event(1, "poison")]);
        let mut alone = relay(&store, &publisher);
        alone.settings.max_attempts = 1;
        assert!(alone.cycle().await.is_err());
        assert!(store.parked_seqs().is_empty());
    }

    #[tokio::test]
    async fn bad_events_at_the_front_do_not_hide_the_good_ones() {
        // More refused events at the front of a wave than one search tries: later
        // searches start further on, find a good one, and then the refusals count.
        let store = FakeStore::with((1..=4).map(|s| event(s, &format!("poison{s}"))).collect());
        let publisher = Arc::new(FakePublisher::default());
        let mut relay = relay(&store, &publisher);
        relay.settings.batch_size = 10;
        relay.settings.max_attempts = 2;
        for _ in 0..20 {
            add_good_event(&store);
            let _ = relay.cycle().await;
        }
        assert_eq!(store.parked_seqs(), vec![1, 2, 3, 4]);
        assert_eq!(store.pending_seqs(), Vec::<i64>::new());
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

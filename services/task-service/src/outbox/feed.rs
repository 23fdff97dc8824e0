//! The watch feed: the outbox read as it grows, fanned out to this replica's watchers
//! (`WatchTasks`, see `api::watch`).
//!
//! One poller per replica reads the shared outbox past its `Cursor` and hands each new
//! row to the watchers whose lists it touches. Commits in this process wake it at once;
//! other replicas' commits are found by polling every `poll_interval` (PostgreSQL
//! LISTEN/NOTIFY would wake it sooner, but NOTIFY serialises the commits of every
//! notifying transaction on one lock, which halved CreateTask throughput when the relay
//! tried it: see `OutboxSettings::poll_interval`).
//!
//! Each watcher has a bounded queue. The poller never waits for a watcher: one whose
//! queue is full is cut off (`Subscription::is_cut`) and resumes with its last token, so
//! a slow client costs at most its queue and never holds the others back.
//!
//! Membership is not in the outbox, so each watched user's lists are read again every
//! `membership_refresh`, and at once when a change names a list the feed has not seen
//! (a list created a moment ago). A member added to a list that already had changes gets
//! its changes within `membership_refresh`; one removed stops getting them within it.

mod cursor;
mod read;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use sea_orm::DatabaseConnection;
use taskmesh_shared::error::ApiError;
use tokio::sync::{Notify, mpsc, watch};
use tracing::Instrument;
use uuid::Uuid;

pub use cursor::{Cursor, Gap, MAX_GAPS};
pub use read::{Row, statements};

use super::StoreError;
use read::OutboxReader;

/// Rows one poll reads at most; a full batch is followed by another read at once.
const POLL_BATCH: u64 = 1000;
/// Rows one catch-up query returns at most.
pub const CATCH_UP_PAGE: u64 = 500;
/// How far below the highest seq a starting poller looks for transactions in flight.
const START_WINDOW: i64 = 1024;
/// How often the poller polls while nobody watches (its cursor must stay near the head,
/// so that the first watcher starts from now without reading a backlog).
const IDLE_POLL: Duration = Duration::from_secs(1);
/// How long the poller waits after a failed read.
const RETRY_AFTER: Duration = Duration::from_secs(1);
/// Lists the feed remembers having seen; past this it forgets them all (and refreshes
/// memberships once more per list).
const MAX_KNOWN_LISTS: usize = 100_000;

/// Where a user's visible lists come from (`store::ListStore`).
#[async_trait]
pub trait Memberships: Send + Sync + 'static {
    /// Every list `user` is a member of, archived ones included.
    async fn visible_lists(&self, user: &str) -> Result<Vec<Uuid>, ApiError>;
}

#[async_trait]
impl<T: crate::store::ListStore + ?Sized> Memberships for T {
    async fn visible_lists(&self, user: &str) -> Result<Vec<Uuid>, ApiError> {
        crate::store::ListStore::visible_lists(self, user).await
    }
}

#[derive(Debug, Clone)]
pub struct FeedSettings {
    /// How often the poller looks for other replicas' commits (`TASKMESH_WATCH_POLL_MS`).
    pub poll_interval: Duration,
    /// How long a missing seq below the highest one is looked for again: longer than any
    /// transaction stays open (request deadline plus statement timeout, with a margin).
    pub gap_grace: Duration,
    /// Changes queued for one watcher before it is cut off (`TASKMESH_WATCH_BUFFER`).
    pub buffer: usize,
    /// How often watched users' lists are read again
    /// (`TASKMESH_WATCH_MEMBERSHIP_REFRESH_MS`).
    pub membership_refresh: Duration,
}

impl Default for FeedSettings {
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_millis(50),
            gap_grace: Duration::from_secs(30),
            buffer: 1000,
            membership_refresh: Duration::from_secs(1),
        }
    }
}

/// A change as the poller read it, with its position.
#[derive(Debug)]
pub struct Change {
    pub row: Row,
    /// The poller's cursor once it had read this row: a watcher given every row of its
    /// lists up to this one stands here.
    pub after: Arc<Cursor>,
}

/// The feed of one replica; clones share it.
#[derive(Clone)]
pub struct Feed {
    shared: Arc<Shared>,
}

struct Shared {
    reader: OutboxReader,
    memberships: Arc<dyn Memberships>,
    settings: FeedSettings,
    state: Mutex<State>,
    /// The cursor after the last batch handed out; see `Subscription::position`.
    published: watch::Sender<Arc<Cursor>>,
    /// Commits of this process (the store notifies it) and new watchers.
    wake: Arc<Notify>,
    stopping: watch::Sender<bool>,
}

struct State {
    cursor: Arc<Cursor>,
    watchers: HashMap<u64, Slot>,
    users: HashMap<Arc<str>, Watched>,
    known_lists: HashSet<Uuid>,
    next_id: u64,
}

/// A watched user's lists, shared by their watchers.
struct Watched {
    lists: Arc<HashSet<Uuid>>,
    watchers: usize,
}

struct Slot {
    user: Arc<str>,
    list: Option<Uuid>,
    tx: mpsc::Sender<Arc<Change>>,
    cut: Arc<Cut>,
}

/// Set when the poller gave up on a watcher whose queue was full.
#[derive(Default)]
struct Cut {
    flag: AtomicBool,
    notify: Notify,
}

impl Feed {
    /// Reads where the outbox ends, then starts the poller and the membership refresher;
    /// both end on `stop`.
    pub async fn start(
        db: DatabaseConnection,
        memberships: Arc<dyn Memberships>,
        wake: Arc<Notify>,
        settings: FeedSettings,
    ) -> Result<Self, StoreError> {
        let reader = OutboxReader::new(db);
        let start = start_cursor(&reader, &settings).await?;
        tracing::debug!(
            high = start.high,
            gaps = start.gaps.len(),
            "watch feed starts"
        );
        let start = Arc::new(start);
        let (published, _) = watch::channel(start.clone());
        let (stopping, _) = watch::channel(false);
        let feed = Self {
            shared: Arc::new(Shared {
                reader,
                memberships,
                settings,
                state: Mutex::new(State {
                    cursor: start,
                    watchers: HashMap::new(),
                    users: HashMap::new(),
                    known_lists: HashSet::new(),
                    next_id: 0,
                }),
                published,
                wake,
                stopping,
            }),
        };
        let span = tracing::info_span!("watch_feed");
        tokio::spawn(feed.clone().poll().instrument(span.clone()));
        tokio::spawn(feed.clone().refresh().instrument(span));
        Ok(feed)
    }

    /// Ends the poller and every watcher's stream (each sends its last position first).
    pub fn stop(&self) {
        self.shared.stopping.send_replace(true);
    }

    /// Reads `user`'s lists again now, for a membership change made in this process.
    pub async fn memberships_changed(&self, user: &str) {
        if let Err(err) = self.refresh_user(user).await {
            tracing::warn!(%err, user, "cannot read the user's lists again");
        }
    }

    /// Registers a watcher of `user`'s lists (only `list`, when given). It gets every
    /// change the poller reads after `Subscription::from`.
    pub async fn subscribe(
        &self,
        user: &str,
        list: Option<Uuid>,
    ) -> Result<Subscription, ApiError> {
        // Read afresh on every call: a list made or shared a moment ago is in it, and the
        // user's other watchers get the fresher view too.
        let lists: Arc<HashSet<Uuid>> = Arc::new(
            self.shared
                .memberships
                .visible_lists(user)
                .await?
                .into_iter()
                .collect(),
        );
        let (tx, rx) = mpsc::channel(self.shared.settings.buffer.max(1));
        let cut = Arc::new(Cut::default());
        let mut state = self.state();
        let user: Arc<str> = match state.users.get_key_value(user) {
            Some((name, _)) => name.clone(),
            None => Arc::from(user),
        };
        state.known_lists.extend(lists.iter().copied());
        let watched = state.users.entry(user.clone()).or_insert_with(|| Watched {
            lists: lists.clone(),
            watchers: 0,
        });
        watched.lists = lists;
        watched.watchers += 1;
        let id = state.next_id;
        state.next_id += 1;
        state.watchers.insert(
            id,
            Slot {
                user,
                list,
                tx,
                cut: cut.clone(),
            },
        );
        let from = state.cursor.clone();
        drop(state);
        // The poller may be idling: it polls fast from now on.
        self.shared.wake.notify_one();
        Ok(Subscription {
            id,
            from,
            rx,
            cut,
            published: self.shared.published.subscribe(),
            stopping: self.shared.stopping.subscribe(),
            feed: self.clone(),
        })
    }

    /// The rows of `lists` above `after` that `from` has not seen, up to `to.high`
    /// (`CATCH_UP_PAGE` at most, lowest seqs first). The caller skips the ones `to` has
    /// not seen either (they come live); a full page means there may be more.
    pub async fn between(
        &self,
        from: &Cursor,
        to: &Cursor,
        lists: &[Uuid],
        after: i64,
    ) -> Result<Vec<Row>, StoreError> {
        self.shared
            .reader
            .between(from, to, lists, after, CATCH_UP_PAGE)
            .await
    }

    /// The highest seq pruned from the outbox (see `OutboxReader::pruned_through`).
    pub async fn pruned_through(&self) -> Result<i64, StoreError> {
        self.shared.reader.pruned_through().await
    }

    /// Watchers registered now.
    pub fn watchers(&self) -> usize {
        self.state().watchers.len()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves the maps consistent (each update is one
        // insert or remove), so a poisoned lock is still usable.
        self.shared
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn unsubscribe(&self, id: u64) {
        let mut state = self.state();
        remove(&mut state, id);
    }

    async fn poll(self) {
        let settings = &self.shared.settings;
        let mut stopping = self.shared.stopping.subscribe();
        let mut cursor = (*self.state().cursor).clone();
        loop {
            if *stopping.borrow() {
                return;
            }
            let watched = self.watchers() > 0;
            match self.poll_once(&mut cursor, watched).await {
                // A full batch: read on at once.
                Ok(true) => continue,
                Ok(false) => {}
                Err(err) => {
                    tracing::warn!(%err, "cannot read the outbox for watchers; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(RETRY_AFTER) => {}
                        _ = stopping.wait_for(|stop| *stop) => return,
                    }
                    continue;
                }
            }
            let interval = if watched {
                settings.poll_interval
            } else {
                IDLE_POLL
            };
            tokio::select! {
                () = self.shared.wake.notified() => {}
                () = tokio::time::sleep(interval) => {}
                _ = stopping.wait_for(|stop| *stop) => return,
            }
        }
    }

    /// One read past `cursor`, handed out; returns whether the batch was full.
    async fn poll_once(&self, cursor: &mut Cursor, watched: bool) -> Result<bool, StoreError> {
        let started = now_ms();
        let rows = self
            .shared
            .reader
            .after(cursor, POLL_BATCH, watched)
            .await?;
        let full = rows.len() as u64 >= POLL_BATCH;
        // A seq missing now was taken before this read began, so whatever transaction
        // holds it ends within the grace from now.
        let until = started.saturating_add(millis(self.shared.settings.gap_grace));
        let mut changes = Vec::new();
        let before = cursor.clone();
        for row in rows {
            cursor.see(row.seq, until);
            if watched && row.event.is_some() {
                changes.push(Arc::new(Change {
                    row,
                    after: Arc::new(cursor.clone()),
                }));
            }
        }
        // This read looked for every gap (they sort before the new rows, so only a batch
        // of nothing but filled gaps could have left some out): the ones whose grace
        // ended before it began will never fill.
        if !full {
            cursor.expire(started);
        }
        if *cursor == before {
            return Ok(full);
        }
        if !watched {
            let mut state = self.state();
            if !state.watchers.is_empty() {
                // A watcher registered during this read, which left the changes out: it
                // starts from the old cursor, so read them again, this time whole.
                *cursor = before;
                return Ok(true);
            }
            let cursor = Arc::new(cursor.clone());
            state.cursor = cursor.clone();
            self.shared.published.send_replace(cursor);
            return Ok(full);
        }
        if !changes.is_empty() {
            self.learn_lists(&changes).await;
        }
        self.dispatch(&changes, Arc::new(cursor.clone()));
        Ok(full)
    }

    /// Reads every watched user's lists again when a change names a list the feed has not
    /// seen (most likely just created, with a watcher among its members).
    async fn learn_lists(&self, changes: &[Arc<Change>]) {
        let unknown: Vec<Uuid> = {
            let state = self.state();
            changes
                .iter()
                .flat_map(|change| [change.row.list_id, change.row.previous_list_id])
                .flatten()
                .filter(|list| !state.known_lists.contains(list))
                .collect()
        };
        if unknown.is_empty() {
            return;
        }
        self.refresh_all().await;
        let mut state = self.state();
        if state.known_lists.len() + unknown.len() > MAX_KNOWN_LISTS {
            state.known_lists.clear();
        }
        state.known_lists.extend(unknown);
    }

    /// Hands `changes` to the watchers they concern, then publishes `cursor`. Under the
    /// lock, so that a watcher registers either before a batch (and gets it) or after it
    /// (and starts from its cursor).
    fn dispatch(&self, changes: &[Arc<Change>], cursor: Arc<Cursor>) {
        let mut state = self.state();
        let mut cut = Vec::new();
        for change in changes {
            let State {
                watchers, users, ..
            } = &*state;
            for (id, slot) in watchers {
                if slot.cut.flag.load(Ordering::Relaxed) {
                    continue;
                }
                let Some(watched) = users.get(&slot.user) else {
                    continue;
                };
                if !concerns(&change.row, &watched.lists, slot.list) {
                    continue;
                }
                match slot.tx.try_send(change.clone()) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        tracing::info!(
                            user = %slot.user,
                            queued = self.shared.settings.buffer,
                            "a watcher is too slow; cutting it off"
                        );
                        slot.cut.flag.store(true, Ordering::Relaxed);
                        slot.cut.notify.notify_one();
                        cut.push(*id);
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => cut.push(*id),
                }
            }
        }
        for id in cut {
            remove(&mut state, id);
        }
        state.cursor = cursor.clone();
        // Published after the changes are queued: see `Subscription::position`.
        self.shared.published.send_replace(cursor);
    }

    async fn refresh(self) {
        let mut stopping = self.shared.stopping.subscribe();
        loop {
            tokio::select! {
                () = tokio::time::sleep(self.shared.settings.membership_refresh) => {}
                _ = stopping.wait_for(|stop| *stop) => return,
            }
            self.refresh_all().await;
        }
    }

    async fn refresh_all(&self) {
        let users: Vec<Arc<str>> = self.state().users.keys().cloned().collect();
        for user in users {
            if let Err(err) = self.refresh_user(&user).await {
                tracing::warn!(%err, %user, "cannot read the user's lists again");
            }
        }
    }

    async fn refresh_user(&self, user: &str) -> Result<(), ApiError> {
        if !self.state().users.contains_key(user) {
            return Ok(());
        }
        let lists: HashSet<Uuid> = self
            .shared
            .memberships
            .visible_lists(user)
            .await?
            .into_iter()
            .collect();
        let mut state = self.state();
        if let Some(watched) = state.users.get_mut(user) {
            watched.lists = Arc::new(lists.clone());
        }
        state.known_lists.extend(lists);
        Ok(())
    }
}

fn remove(state: &mut State, id: u64) {
    let Some(slot) = state.watchers.remove(&id) else {
        return;
    };
    if let Some(watched) = state.users.get_mut(&slot.user) {
        watched.watchers -= 1;
        if watched.watchers == 0 {
            state.users.remove(&slot.user);
        }
    }
}

/// Whether a watcher of `lists` (only `only`, when given) is to get the change: it is in
/// one of them, or it left one of them.
fn concerns(row: &Row, lists: &HashSet<Uuid>, only: Option<Uuid>) -> bool {
    [row.list_id, row.previous_list_id]
        .into_iter()
        .flatten()
        .any(|list| lists.contains(&list) && only.is_none_or(|only| only == list))
}

/// Where a new poller starts: after the highest seq, with the absent seqs just below it
/// as gaps (transactions that may still commit). Never below the pruned horizon.
async fn start_cursor(
    reader: &OutboxReader,
    settings: &FeedSettings,
) -> Result<Cursor, StoreError> {
    let until = now_ms().saturating_add(millis(settings.gap_grace));
    let pruned = reader.pruned_through().await?;
    let (high, present) = reader.tail(START_WINDOW).await?;
    let mut cursor = Cursor::at(high.saturating_sub(START_WINDOW).max(pruned));
    for seq in present {
        cursor.see(seq, until);
    }
    Ok(cursor)
}

/// A watcher's registration: its queue, and where it starts. Dropping it unregisters.
pub struct Subscription {
    id: u64,
    from: Arc<Cursor>,
    rx: mpsc::Receiver<Arc<Change>>,
    cut: Arc<Cut>,
    published: watch::Receiver<Arc<Cursor>>,
    stopping: watch::Receiver<bool>,
    feed: Feed,
}

impl Subscription {
    /// The poller's cursor when the watcher registered: every change it reads after this
    /// comes through `next`; the ones before are the watcher's to read (`Feed::between`).
    pub fn from(&self) -> &Arc<Cursor> {
        &self.from
    }

    /// The user's visible lists now.
    pub fn lists(&self) -> Arc<HashSet<Uuid>> {
        let state = self.feed.state();
        state
            .watchers
            .get(&self.id)
            .and_then(|slot| state.users.get(&slot.user))
            .map(|watched| watched.lists.clone())
            .unwrap_or_default()
    }

    pub fn feed(&self) -> &Feed {
        &self.feed
    }

    /// The next change for this watcher; `None` once it is cut off (`is_cut`) or the feed
    /// stopped.
    pub async fn next(&mut self) -> Option<Arc<Change>> {
        if self.is_cut() {
            return None;
        }
        tokio::select! {
            biased;
            () = self.cut.notify.notified() => None,
            change = self.rx.recv() => change.filter(|_| !self.is_cut()),
        }
    }

    /// Whether the poller gave up on this watcher because its queue was full.
    pub fn is_cut(&self) -> bool {
        self.cut.flag.load(Ordering::Relaxed)
    }

    /// Resolves once the watcher is cut off.
    pub async fn cut(&self) {
        if !self.is_cut() {
            self.cut.notify.notified().await;
        }
    }

    /// Turns true when the feed stops (the server shuts down).
    pub fn stopping(&self) -> watch::Receiver<bool> {
        self.stopping.clone()
    }

    /// The poller's position, if this watcher has taken every change queued for it:
    /// then every change the poller read up to that position has reached the watcher,
    /// since the poller publishes a position only after queueing its changes. `None`
    /// while changes wait in the queue.
    pub fn position(&self) -> Option<Arc<Cursor>> {
        let published = self.published.borrow().clone();
        self.rx.is_empty().then_some(published)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.feed.unsubscribe(self.id);
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(list: Option<Uuid>, previous: Option<Uuid>) -> Row {
        Row {
            seq: 1,
            list_id: list,
            previous_list_id: previous,
            event: None,
        }
    }

    #[test]
    fn a_change_concerns_the_watchers_of_its_list_and_of_the_list_it_left() {
        let (a, b, c) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let lists: HashSet<Uuid> = [a, b].into_iter().collect();
        assert!(concerns(&row(Some(a), None), &lists, None));
        assert!(
            concerns(&row(Some(c), Some(b)), &lists, None),
            "moved out of b"
        );
        assert!(
            concerns(&row(Some(b), Some(c)), &lists, None),
            "moved into b"
        );
        assert!(!concerns(&row(Some(c), None), &lists, None));
        assert!(!concerns(&row(None, None), &lists, None));
        assert!(concerns(&row(Some(a), None), &lists, Some(a)));
        assert!(!concerns(&row(Some(a), None), &lists, Some(b)));
        assert!(
            !concerns(&row(Some(c), None), &lists, Some(c)),
            "not a member of c"
        );
    }
}

//! `WatchTasks`: the changes of the caller's lists as they commit, resumable.
//!
//! A watcher registers with this replica's feed (`outbox::feed`), which reads the shared
//! outbox, so changes made through any replica reach it. With a resume token it first
//! reads what it missed from the outbox (between the token's cursor and the feed's cursor
//! when it registered), then takes the live changes; every message carries the position
//! after it as a signed token. Positions are cursors with gaps (`outbox::feed::cursor`),
//! so a change whose transaction committed late, below one already delivered, is still
//! delivered, and a resumed watch gets each change exactly once.
//!
//! The stream is a task per watcher feeding a small queue; a client that does not read
//! stops that task at its send, its feed queue fills, and the feed cuts it off
//! (RESOURCE_EXHAUSTED). The server's deadline (`gate`) covers only this handler's
//! return, which comes before any message: streams last as long as the client keeps them.

mod token;

use std::collections::HashSet;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use taskmesh_proto::tasks::v1 as pb;
use taskmesh_shared::error::ApiError;
use taskmesh_shared::events::{TaskEvent, TaskEventKind, TaskSnapshot};
use tokio::sync::{mpsc, oneshot, watch};
use tonic::Status;
use tracing::Instrument;
use uuid::Uuid;

use super::convert::timestamp;
use crate::outbox::StoreError;
use crate::outbox::feed::{CATCH_UP_PAGE, Cursor, Feed, Row, Subscription};

pub use token::ResumeTokens;

/// Messages queued between a watcher's task and its HTTP/2 stream; the feed's queue
/// (`TASKMESH_WATCH_BUFFER`) is the one that bounds a slow client.
const OUTLET: usize = 16;

/// Every replica's `WatchTasks`.
#[derive(Clone)]
pub struct Watches {
    feed: Feed,
    tokens: ResumeTokens,
    /// A keep-alive goes out after this long without a message
    /// (`TASKMESH_WATCH_KEEPALIVE_SECS`).
    keepalive: Duration,
}

/// What `WatchTasks` answers: the messages, then the status that ended the stream.
pub struct WatchStream {
    messages: mpsc::Receiver<pb::WatchTasksResponse>,
    end: Option<oneshot::Receiver<Status>>,
}

impl Stream for WatchStream {
    type Item = Result<pb::WatchTasksResponse, Status>;

    /// The queued messages first, then the status: a cut-off client gets what was queued
    /// for it (a handful) and then why it was cut off.
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let closed = match self.messages.poll_recv(cx) {
            Poll::Ready(Some(message)) => return Poll::Ready(Some(Ok(message))),
            Poll::Ready(None) => true,
            Poll::Pending => false,
        };
        if let Some(end) = self.end.as_mut() {
            match Pin::new(end).poll(cx) {
                Poll::Ready(Ok(status)) => {
                    self.end = None;
                    return Poll::Ready(Some(Err(status)));
                }
                Poll::Ready(Err(_)) => self.end = None,
                Poll::Pending => return Poll::Pending,
            }
        }
        if closed {
            Poll::Ready(None)
        } else {
            Poll::Pending
        }
    }
}

impl Watches {
    pub fn new(feed: Feed, tokens: ResumeTokens, keepalive: Duration) -> Self {
        Self {
            feed,
            tokens,
            keepalive,
        }
    }

    pub fn feed(&self) -> &Feed {
        &self.feed
    }

    /// Checks the request (token, list, retention) and starts the watcher's task. What
    /// can be refused is refused here, as the call's status, before any message.
    pub async fn watch(
        &self,
        user: &str,
        request: pb::WatchTasksRequest,
    ) -> Result<WatchStream, Status> {
        let list = request
            .list_id
            .as_deref()
            .map(|id| Uuid::parse_str(id).map_err(|_| ApiError::invalid("list_id", "not a UUID")))
            .transpose()?;
        let from = if request.resume_token.is_empty() {
            None
        } else {
            let cursor = self
                .tokens
                .decode(&request.resume_token, user, list)
                .map_err(|err| ApiError::invalid("resume_token", err.to_string()))?;
            Some(cursor)
        };
        let subscription = self.feed.subscribe(user, list).await?;
        if let Some(list) = list
            && !subscription.lists().contains(&list)
        {
            // As for a missing list: the caller cannot tell one they may not see from none.
            return Err(ApiError::NotFound(format!("list {list}")).into());
        }
        if let Some(from) = &from {
            check_retained(&self.feed, from).await?;
        }
        let (messages, outlet) = mpsc::channel(OUTLET);
        let (end_tx, end) = oneshot::channel();
        let watcher = Watcher {
            user: user.to_owned(),
            list,
            tokens: self.tokens.clone(),
            keepalive: self.keepalive,
            stopping: subscription.stopping(),
            subscription,
            out: messages,
        };
        let span = tracing::info_span!("watch", user, list = ?list);
        tokio::spawn(
            async move {
                tracing::debug!("watcher starts");
                if let Some(status) = watcher.run(from).await {
                    tracing::debug!(code = ?status.code(), "watcher ends");
                    let _ = end_tx.send(status);
                }
            }
            .instrument(span),
        );
        Ok(WatchStream {
            messages: outlet,
            end: Some(end),
        })
    }
}

/// OUT_OF_RANGE when the outbox has pruned a seq the cursor has not seen: a change the
/// watcher never got may be gone.
async fn check_retained(feed: &Feed, from: &Cursor) -> Result<(), Status> {
    let pruned = feed.pruned_through().await.map_err(store_error)?;
    if pruned >= from.first_uncovered() {
        return Err(Status::out_of_range(
            "the resume token is older than the changes task-service keeps \
             (TASKMESH_OUTBOX_RETENTION_SECS, a day by default): read the tasks again \
             (ListTasks), then watch without a resume_token",
        ));
    }
    Ok(())
}

fn store_error(err: StoreError) -> Status {
    ApiError::Unavailable(err.into()).into()
}

/// Why a watcher stopped.
enum Stop {
    /// The client went away: nobody to tell.
    Gone,
    /// Its feed queue filled up.
    Cut,
    /// The server is shutting down.
    Shutdown,
    Failed(Status),
}

impl From<Status> for Stop {
    fn from(status: Status) -> Self {
        Self::Failed(status)
    }
}

struct Watcher {
    user: String,
    list: Option<Uuid>,
    tokens: ResumeTokens,
    keepalive: Duration,
    subscription: Subscription,
    stopping: watch::Receiver<bool>,
    out: mpsc::Sender<pb::WatchTasksResponse>,
}

impl Watcher {
    /// Serves the stream; returns the status to end it with, or `None` when the client is
    /// gone.
    async fn run(mut self, from: Option<Cursor>) -> Option<Status> {
        let stop = self.serve(from).await;
        match stop {
            Stop::Gone => None,
            Stop::Cut => Some(Status::resource_exhausted(
                "client too slow; resume with your last token",
            )),
            Stop::Shutdown => Some(Status::unavailable(
                "task-service is shutting down; reconnect with your last resume_token",
            )),
            Stop::Failed(status) => Some(status),
        }
    }

    async fn serve(&mut self, from: Option<Cursor>) -> Stop {
        let start = self.subscription.from().clone();
        // What the client had before this call: never sent again.
        let base = match from {
            Some(from) => {
                if let Err(stop) = self.catch_up(&from, &start).await {
                    return stop;
                }
                from
            }
            None => (*start).clone(),
        };
        // Caught up: the first keep-alive says so, with the position to resume from.
        let mut position = base.union(&start);
        if let Err(stop) = self.send(None, &position).await {
            return stop;
        }
        let mut keepalive = tokio::time::Instant::now() + self.keepalive;
        loop {
            tokio::select! {
                biased;
                () = stopped(&mut self.stopping) => {
                    return self.shut_down(&base, &position);
                }
                // A client that hung up is noticed at once, not at its next message.
                () = self.out.closed() => return Stop::Gone,
                change = self.subscription.next() => {
                    let Some(change) = change else {
                        return if self.subscription.is_cut() { Stop::Cut } else { Stop::Shutdown };
                    };
                    position = base.union(&change.after);
                    if base.covers(change.row.seq) {
                        continue;
                    }
                    let Some(message) = to_change(&change.row) else {
                        continue;
                    };
                    if let Err(stop) = self.send(Some(message), &position).await {
                        return stop;
                    }
                    keepalive = tokio::time::Instant::now() + self.keepalive;
                }
                () = tokio::time::sleep_until(keepalive) => {
                    keepalive = tokio::time::Instant::now() + self.keepalive;
                    // Only with an empty queue may the feed's position be claimed (see
                    // `Subscription::position`); otherwise a change follows at once.
                    if let Some(published) = self.subscription.position() {
                        position = base.union(&published);
                        if let Err(stop) = self.send(None, &position).await {
                            return stop;
                        }
                    }
                }
            }
        }
    }

    /// Sends what the client missed: the rows of its lists that `start` (the feed's
    /// position at registration) has seen and `from` has not. The rest comes live.
    async fn catch_up(&mut self, from: &Cursor, start: &Cursor) -> Result<(), Stop> {
        let lists = self.lists();
        let feed = self.subscription.feed().clone();
        let mut after = from.first_uncovered().saturating_sub(1);
        loop {
            let rows = feed
                .between(from, start, &lists, after)
                .await
                .map_err(store_error)?;
            let full = rows.len() as u64 >= CATCH_UP_PAGE;
            for row in &rows {
                after = row.seq;
                if !start.covers(row.seq) {
                    continue;
                }
                let Some(message) = to_change(row) else {
                    continue;
                };
                let position = from.union(&start.truncated(row.seq));
                self.send(Some(message), &position).await?;
            }
            if !full {
                break;
            }
        }
        // Pruning may have run while we read: what we sent is only whole if it did not
        // reach past where we started.
        check_retained(&feed, from).await?;
        Ok(())
    }

    /// The lists whose changes this watcher gets now.
    fn lists(&self) -> Vec<Uuid> {
        let lists: Arc<HashSet<Uuid>> = self.subscription.lists();
        match self.list {
            Some(only) => lists.contains(&only).then_some(only).into_iter().collect(),
            None => lists.iter().copied().collect(),
        }
    }

    /// Sends a change (a keep-alive without one) with the token of `position`; gives up
    /// when the watcher is cut off or the server shuts down while the client does not
    /// read.
    async fn send(
        &mut self,
        change: Option<pb::TaskChange>,
        position: &Cursor,
    ) -> Result<(), Stop> {
        let message = pb::WatchTasksResponse {
            change,
            resume_token: self.tokens.encode(&self.user, self.list, position),
        };
        tokio::select! {
            biased;
            () = self.subscription.cut() => Err(Stop::Cut),
            () = stopped(&mut self.stopping) => Err(Stop::Shutdown),
            sent = self.out.send(message) => sent.map_err(|_| Stop::Gone),
        }
    }

    /// On shutdown: a last keep-alive with the freshest position, if it fits in the
    /// queue (the client's last token is as good otherwise), then UNAVAILABLE.
    fn shut_down(&mut self, base: &Cursor, position: &Cursor) -> Stop {
        let position = match self.subscription.position() {
            Some(published) => base.union(&published),
            None => position.clone(),
        };
        let _ = self.out.try_send(pb::WatchTasksResponse {
            change: None,
            resume_token: self.tokens.encode(&self.user, self.list, &position),
        });
        Stop::Shutdown
    }
}

/// Resolves once the feed stops (or is gone).
async fn stopped(stopping: &mut watch::Receiver<bool>) {
    let _ = stopping.wait_for(|stop| *stop).await;
}

/// The message for an outbox row; `None` for an event this build does not know.
fn to_change(row: &Row) -> Option<pb::TaskChange> {
    let event: &TaskEvent = row.event.as_ref()?;
    let kind = TaskEventKind::from_event_type(&event.event_type)?;
    let data = &event.data;
    Some(pb::TaskChange {
        event_id: event.id.clone(),
        r#type: change_type(kind) as i32,
        task: Some(snapshot_to_proto(&data.task)),
        version: data.version,
        occur_time: Some(timestamp(data.occurred_at)),
    })
}

fn change_type(kind: TaskEventKind) -> pb::ChangeType {
    match kind {
        TaskEventKind::Created => pb::ChangeType::Created,
        TaskEventKind::Updated => pb::ChangeType::Updated,
        TaskEventKind::Completed => pb::ChangeType::Completed,
        TaskEventKind::Reopened => pb::ChangeType::Reopened,
        TaskEventKind::Deleted => pb::ChangeType::Deleted,
    }
}

fn snapshot_to_proto(task: &TaskSnapshot) -> pb::Task {
    let priority = match task.priority.as_str() {
        "low" => pb::Priority::Low,
        "medium" => pb::Priority::Medium,
        "high" => pb::Priority::High,
        "urgent" => pb::Priority::Urgent,
        _ => pb::Priority::Unspecified,
    };
    pb::Task {
        id: task.id.to_string(),
        owner_id: task.owner_id.clone(),
        title: task.title.clone(),
        description: task.description.clone(),
        priority: priority as i32,
        tags: task.tags.clone(),
        due_time: task.due_time.map(timestamp),
        time_zone: task.time_zone.clone(),
        recurrence: task.recurrence.clone(),
        completed: task.completed,
        completed_time: task.completed_time.map(timestamp),
        create_time: Some(timestamp(task.create_time)),
        update_time: Some(timestamp(task.update_time)),
        version: task.version,
        list_id: task.list_id.map(|id| id.to_string()).unwrap_or_default(),
        assignee_id: task.assignee_id.clone(),
    }
}

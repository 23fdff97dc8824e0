//! The router's side of dead letters: it subscribes to the app's own dead-letter topic and
//! keeps what arrives there (`crate::deadletter`), remembers why recent deliveries failed
//! so that the kept event says why, and answers the operators' methods
//! `deadletters/list`, `deadletters/replay` and `deadletters/discard`. A replay runs the
//! kept event through the same handler its topic's deliveries reach, in this process;
//! consumers deduplicate by event id, so replaying an event that was applied after all
//! changes nothing.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use chrono::Utc;
use dapr::dapr::proto::runtime::v1::TopicEventRequest;
use dapr::dapr::proto::runtime::v1::topic_event_response::TopicEventResponseStatus;
use serde_json::json;
use tracing::Instrument as _;

use super::handlers::{Delivery, InvokeError, Outcome};
use super::metrics::ReplayLabel;
use super::{Router, string_extension};
use crate::deadletter::{DeadLetter, DeadLetterError, DeadLetterStore, Kept};

pub const LIST_METHOD: &str = "deadletters/list";
pub const REPLAY_METHOD: &str = "deadletters/replay";
pub const DISCARD_METHOD: &str = "deadletters/discard";
pub const METHODS: [&str; 3] = [LIST_METHOD, REPLAY_METHOD, DISCARD_METHOD];

/// The most dead letters one `deadletters/list` answers, by count and by size.
const LIST_LIMIT: usize = 100;
const LIST_BYTES: usize = 1024 * 1024;

/// How many recent failure reasons are remembered (by event id) for the dead letters
/// that follow them.
const REASONS_KEPT: usize = 1024;

/// The last RETRY or DROP reason of recent events, bounded: the dead-letter topic carries
/// the event but not why it failed.
#[derive(Default)]
struct Reasons {
    by_id: HashMap<String, String>,
    order: VecDeque<String>,
}

impl Reasons {
    fn note(&mut self, id: &str, reason: &str) {
        if self
            .by_id
            .insert(id.to_owned(), reason.to_owned())
            .is_none()
        {
            self.order.push_back(id.to_owned());
        }
        while self.order.len() > REASONS_KEPT {
            if let Some(oldest) = self.order.pop_front() {
                self.by_id.remove(&oldest);
            }
        }
    }

    fn get(&self, id: &str) -> Option<String> {
        self.by_id.get(id).cloned()
    }
}

/// The app's dead-letter topic and where its dead letters are kept.
pub struct DeadLetters {
    pub(super) pubsub: String,
    pub(super) topic: String,
    store: DeadLetterStore,
    reasons: Mutex<Reasons>,
}

impl DeadLetters {
    pub fn new(
        pubsub: impl Into<String>,
        topic: impl Into<String>,
        store: DeadLetterStore,
    ) -> Self {
        Self {
            pubsub: pubsub.into(),
            topic: topic.into(),
            store,
            reasons: Mutex::default(),
        }
    }

    pub(super) fn is_ours(&self, pubsub: &str, topic: &str) -> bool {
        self.pubsub == pubsub && self.topic == topic
    }

    pub(super) fn note_failure(&self, id: &str, reason: &str) {
        self.reasons
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .note(id, reason);
    }

    fn reason_of(&self, id: &str) -> Option<String> {
        self.reasons
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
    }
}

/// Which dead letters a replay or discard is about.
enum Target {
    One(String),
    All,
}

fn target(input: &serde_json::Value) -> Result<Target, InvokeError> {
    match (
        input.get("id").and_then(serde_json::Value::as_str),
        input.get("all").and_then(serde_json::Value::as_bool),
    ) {
        (Some(id), None | Some(false)) if !id.is_empty() => Ok(Target::One(id.to_owned())),
        (None, Some(true)) => Ok(Target::All),
        _ => Err(InvokeError::InvalidArgument(
            r#"give {"id": "<event id>"} or {"all": true}"#.into(),
        )),
    }
}

fn method_error(err: DeadLetterError) -> InvokeError {
    match err {
        DeadLetterError::Store(err) => InvokeError::Unavailable(err.to_string()),
        DeadLetterError::Contended => InvokeError::Unavailable(err.to_string()),
        other => InvokeError::internal(other),
    }
}

impl Router {
    /// A delivery from the app's own dead-letter topic: kept. RETRY (the broker keeps it
    /// on the dead-letter topic) when it cannot be kept now.
    pub(super) async fn keep_dead_letter(
        &self,
        dead_letters: &DeadLetters,
        request: TopicEventRequest,
    ) -> TopicEventResponseStatus {
        // daprd passes the envelope's own fields on as extensions: `topic` is the one the
        // event was published to (the delivery's `topic` is the dead-letter topic).
        let published_to = string_extension(&request, "topic")
            .filter(|topic| !dead_letters.is_ours(&request.pubsub_name, topic))
            .or_else(|| {
                self.subscriptions
                    .iter()
                    .find(|s| s.pubsub == request.pubsub_name)
                    .map(|s| s.topic.clone())
            })
            .unwrap_or_default();
        let time = string_extension(&request, "time");
        let delivery = Delivery::from_request(request);
        let span = tracing::info_span!(
            "dead_letter",
            event.id = %delivery.id,
            event.r#type = %delivery.event_type,
            topic = %published_to,
        );
        async {
            let reason = dead_letters.reason_of(&delivery.id);
            let letter =
                DeadLetter::from_delivery(&delivery, published_to, time, reason, Utc::now());
            match dead_letters.store.keep(&letter).await {
                Ok(Kept::New) => {
                    tracing::warn!(
                        reason = letter.reason.as_deref().unwrap_or("unknown"),
                        "kept a dead letter: list it with {LIST_METHOD}, replay it with {REPLAY_METHOD}"
                    );
                    if let Some(metrics) = &self.metrics {
                        metrics.dead_letters_kept.inc();
                    }
                    TopicEventResponseStatus::Success
                }
                Ok(Kept::Already) => {
                    tracing::info!("this dead letter is kept already");
                    TopicEventResponseStatus::Success
                }
                Err(err @ DeadLetterError::IdTooLong(_)) => {
                    tracing::error!(%err, "a dead letter that cannot be kept");
                    TopicEventResponseStatus::Drop
                }
                Err(err) => {
                    tracing::error!(error = %err, "cannot keep a dead letter now; it waits on the dead-letter topic");
                    TopicEventResponseStatus::Retry
                }
            }
        }
        .instrument(span)
        .await
    }

    /// `deadletters/*`, when this router keeps dead letters; `None` for other methods.
    pub(super) async fn dead_letter_method(
        &self,
        method: &str,
        input: &serde_json::Value,
    ) -> Option<Result<serde_json::Value, InvokeError>> {
        let dead_letters = self.dead_letters.as_ref()?;
        let result = match method {
            LIST_METHOD => self.list_dead_letters(dead_letters, input).await,
            REPLAY_METHOD => self.replay_dead_letters(dead_letters, input).await,
            DISCARD_METHOD => discard_dead_letters(dead_letters, input).await,
            _ => return None,
        };
        Some(result)
    }

    /// One page of dead letters, oldest first: `{"id": ...}` for one, else up to `limit`
    /// (default and most 100) after the id `after`, and no more than `LIST_BYTES` of them
    /// (an event may be megabytes): `next` names the id to ask `after` for the rest.
    async fn list_dead_letters(
        &self,
        dead_letters: &DeadLetters,
        input: &serde_json::Value,
    ) -> Result<serde_json::Value, InvokeError> {
        let store = &dead_letters.store;
        let limits = store.limits();
        let one = input.get("id").and_then(serde_json::Value::as_str);
        let ids = match one {
            Some(id) => vec![id.to_owned()],
            None => store.ids(Utc::now()).await.map_err(method_error)?,
        };
        let mut kept = ids.len();
        let start = match input.get("after").and_then(serde_json::Value::as_str) {
            Some(after) => ids.iter().position(|id| id == after).map_or(0, |at| at + 1),
            None => 0,
        };
        let limit = input
            .get("limit")
            .and_then(serde_json::Value::as_u64)
            .map_or(LIST_LIMIT, |n| usize::try_from(n).unwrap_or(LIST_LIMIT))
            .clamp(1, LIST_LIMIT);
        let page: Vec<String> = ids.iter().skip(start).take(limit).cloned().collect();
        let letters = store.get_many(&page).await.map_err(method_error)?;
        if one.is_some() {
            kept = letters.len();
        }
        let (mut listed, mut bytes, mut last) = (Vec::new(), 0usize, None);
        for letter in &letters {
            let summary = letter.summary();
            bytes += summary.to_string().len();
            if bytes > LIST_BYTES && !listed.is_empty() {
                break;
            }
            listed.push(summary);
            last = Some(letter.id.clone());
        }
        let more = match &last {
            Some(last) => ids.last() != Some(last),
            None => false,
        };
        Ok(json!({
            "topic": dead_letters.topic,
            "kept": kept,
            "max": limits.max,
            "ttl_secs": limits.ttl.as_secs(),
            "dead_letters": listed,
            "next": if more { last } else { None },
        }))
    }

    async fn replay_dead_letters(
        &self,
        dead_letters: &DeadLetters,
        input: &serde_json::Value,
    ) -> Result<serde_json::Value, InvokeError> {
        let store = &dead_letters.store;
        let (ids, one) = match target(input)? {
            Target::One(id) => (vec![id], true),
            Target::All => (store.ids(Utc::now()).await.map_err(method_error)?, false),
        };
        let mut results = Vec::with_capacity(ids.len());
        let (mut applied, mut failed) = (0usize, 0usize);
        // One at a time: the set may be large, and each event up to megabytes.
        for id in ids {
            let Some(letter) = store.get(&id).await.map_err(method_error)? else {
                if one {
                    return Err(InvokeError::NotFound(format!("no dead letter {id:?}")));
                }
                continue;
            };
            let span = tracing::info_span!(
                "replay",
                event.id = %letter.id,
                event.r#type = %letter.event_type,
                topic = %letter.topic,
            );
            let outcome = async {
                let delivery = letter.delivery().map_err(method_error)?;
                // Through the same handler the topic's deliveries reach.
                let outcome = self.dispatch("", delivery).await;
                match &outcome {
                    Outcome::Success => {
                        store
                            .remove(&letter.id, Utc::now())
                            .await
                            .map_err(method_error)?;
                        tracing::info!("replayed a dead letter: applied");
                    }
                    Outcome::Retry(reason) | Outcome::Drop(reason) => {
                        store
                            .failed_again(&letter.id, reason, Utc::now())
                            .await
                            .map_err(method_error)?;
                        tracing::warn!(%reason, "replayed a dead letter: failed again, kept");
                    }
                }
                Ok::<_, InvokeError>(outcome)
            }
            .instrument(span)
            .await?;
            let label = match &outcome {
                Outcome::Success => "applied",
                _ => "failed",
            };
            if let Some(metrics) = &self.metrics {
                metrics
                    .dead_letters_replayed
                    .get_or_create(&ReplayLabel { outcome: label })
                    .inc();
            }
            match outcome {
                Outcome::Success => {
                    applied += 1;
                    results.push(json!({"id": letter.id, "outcome": label}));
                }
                Outcome::Retry(reason) | Outcome::Drop(reason) => {
                    failed += 1;
                    results.push(json!({"id": letter.id, "outcome": label, "reason": reason}));
                }
            }
        }
        Ok(json!({"applied": applied, "failed": failed, "replayed": results}))
    }
}

async fn discard_dead_letters(
    dead_letters: &DeadLetters,
    input: &serde_json::Value,
) -> Result<serde_json::Value, InvokeError> {
    let store = &dead_letters.store;
    let ids: Vec<String> = match target(input)? {
        Target::One(id) => vec![id],
        Target::All => store.ids(Utc::now()).await.map_err(method_error)?,
    };
    let mut discarded = 0usize;
    for id in &ids {
        if store.remove(id, Utc::now()).await.map_err(method_error)? {
            tracing::warn!(event.id = %id, "discarded a dead letter");
            discarded += 1;
        }
    }
    if ids.len() == 1 && discarded == 0 {
        return Err(InvokeError::NotFound(format!(
            "no dead letter {:?}",
            ids[0]
        )));
    }
    Ok(json!({"discarded": discarded}))
}

#![allow(clippy::unwrap_used)]

use super::*;
use crate::state::MemoryStateStore;

fn delivery(id: &str) -> Delivery {
    Delivery {
        id: id.into(),
        source: "taskmesh/task-service".into(),
        event_type: "taskmesh.task.completed.v1".into(),
        subject: Some("task-1".into()),
        topic: "task-events-deadletter.recurring-service".into(),
        pubsub: "taskmesh-pubsub".into(),
        data: br#"{"version": 2}"#.to_vec(),
        data_content_type: "application/json".into(),
        traceparent: None,
    }
}

fn letter(id: &str, at: DateTime<Utc>) -> DeadLetter {
    DeadLetter::from_delivery(
        &delivery(id),
        "task-events".into(),
        None,
        Some("PERMISSION_DENIED".into()),
        at,
    )
}

fn store(max: usize) -> (Arc<MemoryStateStore>, DeadLetterStore) {
    let memory = Arc::new(MemoryStateStore::new());
    let limits = DeadLetterLimits {
        ttl: Duration::from_secs(3600),
        max,
    };
    (memory.clone(), DeadLetterStore::new(memory, limits))
}

#[tokio::test]
async fn a_dead_letter_is_kept_whole_once_and_with_its_ttl() {
    let (memory, letters) = store(10);
    let now = Utc::now();
    assert_eq!(letters.keep(&letter("e1", now)).await.unwrap(), Kept::New);
    // The same dead letter delivered again, later: still one.
    let later = now + chrono::Duration::seconds(5);
    assert_eq!(
        letters.keep(&letter("e1", later)).await.unwrap(),
        Kept::Already
    );
    let kept = letters.list(later).await.unwrap();
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0].dead_lettered_at, now, "the first one is kept");
    assert_eq!(kept[0].topic, "task-events");
    assert_eq!(kept[0].reason.as_deref(), Some("PERMISSION_DENIED"));
    // Replayed, it is the event that was delivered, on the topic it was published to.
    let replay = kept[0].delivery().unwrap();
    assert_eq!(replay.data, br#"{"version": 2}"#);
    assert_eq!(replay.topic, "task-events");
    assert_eq!(replay.subject.as_deref(), Some("task-1"));
    assert_eq!(
        memory.ttl_of("deadletter:e1"),
        Some(Duration::from_secs(3600))
    );
    assert_eq!(
        memory.ttl_of("deadletters:index"),
        Some(Duration::from_secs(3600))
    );
    // What an operator reads: the data as JSON.
    assert_eq!(kept[0].summary()["data"]["version"], 2);
}

#[tokio::test]
async fn the_set_is_bounded_by_count_and_by_age() {
    let (_, letters) = store(2);
    let now = Utc::now();
    letters.keep(&letter("a", now)).await.unwrap();
    letters.keep(&letter("b", now)).await.unwrap();
    assert!(matches!(
        letters.keep(&letter("c", now)).await,
        Err(DeadLetterError::Full { kept: 2 })
    ));
    // One already kept is no new one: still answered.
    assert_eq!(
        letters.keep(&letter("b", now)).await.unwrap(),
        Kept::Already
    );
    // Replayed or discarded, it makes room.
    assert!(letters.remove("a", now).await.unwrap());
    assert!(!letters.remove("a", now).await.unwrap());
    letters.keep(&letter("c", now)).await.unwrap();
    let ids: Vec<String> = letters
        .list(now)
        .await
        .unwrap()
        .into_iter()
        .map(|l| l.id)
        .collect();
    assert_eq!(ids, ["b", "c"]);
    // Past the TTL the index forgets them (the store expires the records itself), and
    // there is room again.
    let much_later = now + chrono::Duration::hours(2);
    assert!(letters.list(much_later).await.unwrap().is_empty());
    letters.keep(&letter("d", much_later)).await.unwrap();
    letters.keep(&letter("e", much_later)).await.unwrap();
    assert_eq!(letters.list(much_later).await.unwrap().len(), 2);
}

#[tokio::test]
async fn a_failed_replay_keeps_the_letter_with_its_new_reason() {
    let (_, letters) = store(10);
    let now = Utc::now();
    letters.keep(&letter("e1", now)).await.unwrap();
    let then = now + chrono::Duration::minutes(1);
    letters
        .failed_again("e1", "UNAVAILABLE: task-service", then)
        .await
        .unwrap();
    let kept = letters.get("e1").await.unwrap().unwrap();
    assert_eq!(kept.reason.as_deref(), Some("UNAVAILABLE: task-service"));
    assert_eq!(kept.replays, 1);
    assert_eq!(kept.last_replay_at, Some(then));
    assert_eq!(kept.dead_lettered_at, now);
}

#[tokio::test]
async fn a_store_outage_is_an_error_not_a_loss() {
    let (memory, letters) = store(10);
    memory.set_down(true);
    assert!(matches!(
        letters.keep(&letter("e1", Utc::now())).await,
        Err(DeadLetterError::Store(StateError::Unavailable(_)))
    ));
    memory.set_down(false);
    // Cut short between the record and the index: the next delivery indexes it.
    memory.fail_writes_under(Some("deadletters:"));
    assert!(letters.keep(&letter("e2", Utc::now())).await.is_err());
    memory.fail_writes_under(None);
    assert_eq!(
        letters.keep(&letter("e2", Utc::now())).await.unwrap(),
        Kept::Already
    );
    assert_eq!(letters.list(Utc::now()).await.unwrap().len(), 1);
}

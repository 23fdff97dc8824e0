#![allow(clippy::unwrap_used)]

use chrono::{DateTime, Utc};
use serde_json::json;
use taskmesh_shared::callback::{Delivery, Outcome, TopicHandler};
use taskmesh_shared::events::{TaskEventData, TaskEventKind, TaskSnapshot};
use taskmesh_shared::state::MemoryStateStore;

use super::*;
use crate::consumer::TaskEventConsumer;
use crate::methods;
use crate::ports::fakes::{FakeOutbound, FakeScheduler};
use crate::reminder::job_name;

struct Harness {
    store: Arc<MemoryStateStore>,
    jobs: Arc<FakeScheduler>,
    out: Arc<FakeOutbound>,
    reminders: Arc<Reminders<MemoryStateStore>>,
}

fn harness() -> Harness {
    let store = Arc::new(MemoryStateStore::new());
    let jobs = Arc::new(FakeScheduler::default());
    let out = Arc::new(FakeOutbound::default());
    let reminders = Arc::new(Reminders::new(
        store.clone(),
        jobs.clone(),
        out.clone(),
        Settings {
            default_lead: Duration::minutes(15),
            webhook_base: Some("http://hooks.test/taskmesh".into()),
            email_enabled: true,
        },
        Metrics::default(),
    ));
    Harness {
        store,
        jobs,
        out,
        reminders,
    }
}

impl Harness {
    async fn deliver(&self, kind: TaskEventKind, id: &str, data: &TaskEventData) -> Outcome {
        self.deliver_raw(kind, id, serde_json::to_vec(data).unwrap())
            .await
    }

    async fn deliver_raw(&self, kind: TaskEventKind, id: &str, data: Vec<u8>) -> Outcome {
        TaskEventConsumer::new(kind, self.reminders.clone())
            .handle(Delivery {
                id: id.into(),
                source: "test".into(),
                event_type: kind.event_type().into(),
                subject: None,
                topic: "task-events".into(),
                pubsub: "taskmesh-pubsub".into(),
                data,
                data_content_type: "application/json".into(),
                traceparent: None,
            })
            .await
    }

    async fn call(
        &self,
        method: &str,
        input: serde_json::Value,
    ) -> Result<serde_json::Value, InvokeError> {
        let (_, method) = methods::all(&self.reminders)
            .into_iter()
            .find(|(name, _)| *name == method)
            .unwrap();
        method.call(input).await
    }

    /// alice wants reminders by e-mail and on her webhook.
    async fn mail_and_webhook_for_alice(&self) {
        self.call(
            "preferences/set",
            json!({"user_id": "alice", "preferences": {"email": "alice@example.com",
                "webhook_url": "http://hooks.test/taskmesh/alice"}}),
        )
        .await
        .unwrap();
    }

    async fn inbox(&self, user: &str) -> Vec<serde_json::Value> {
        let page = self
            .call(
                "notifications/list",
                json!({"user_id": user, "page_size": 100}),
            )
            .await
            .unwrap();
        page["notifications"].as_array().unwrap().clone()
    }
}

fn task(id: Uuid, version: i64, due: Option<DateTime<Utc>>) -> TaskEventData {
    let now = Utc::now();
    TaskEventData {
        task: TaskSnapshot {
            id,
            owner_id: "alice".into(),
            title: "Pay rent".into(),
            description: String::new(),
            priority: "high".into(),
            tags: vec![],
            due_time: due,
            time_zone: Some("Europe/Paris".into()),
            recurrence: None,
            completed: false,
            completed_time: None,
            create_time: now,
            update_time: now,
            version,
            list_id: None,
            assignee_id: None,
        },
        changed_fields: vec!["title".into(), "due_time".into()],
        version,
        owner_id: "alice".into(),
        occurred_at: now,
        actor_id: None,
        previous_list_id: None,
        previous_assignee_id: None,
    }
}

#[tokio::test]
async fn a_dated_task_gets_a_notification_and_a_job_once_under_fifty_redeliveries() {
    let h = harness();
    let id = Uuid::now_v7();
    let due = Utc::now() + Duration::hours(2);
    let created = task(id, 1, Some(due));
    let outcomes = futures::future::join_all(
        (0..50).map(|_| h.deliver(TaskEventKind::Created, "event-1", &created)),
    )
    .await;
    assert!(
        outcomes.iter().all(|o| *o == Outcome::Success),
        "{outcomes:?}"
    );
    let inbox = h.inbox("alice").await;
    assert_eq!(inbox.len(), 1, "{inbox:?}");
    assert_eq!(inbox[0]["kind"], "due_time_set");
    assert_eq!(h.jobs.at(&job_name(id)), Some(due - Duration::minutes(15)));
    assert_eq!(h.reminders.metrics().records.applied.get(), 1);
}

#[tokio::test]
async fn a_fired_reminder_is_published_kept_and_mailed_once_then_overdue_follows() {
    let h = harness();
    h.mail_and_webhook_for_alice().await;
    let id = Uuid::now_v7();
    let due = Utc::now() + Duration::minutes(10);
    h.deliver(TaskEventKind::Created, "e1", &task(id, 1, Some(due)))
        .await;
    // Inside the lead time already: the job is due now.
    assert!(h.jobs.at(&job_name(id)).unwrap() <= Utc::now());

    h.reminders.fire(id).await.unwrap();
    // The scheduler delivers at least once: a second trigger sends nothing more.
    h.reminders.fire(id).await.unwrap();

    let published = h.out.published.lock().unwrap().clone();
    assert_eq!(published.len(), 1);
    assert_eq!(published[0].event_type, "taskmesh.task.due_soon.v1");
    assert_eq!(published[0].data.due_time, due);
    let emails = h.out.emails.lock().unwrap().clone();
    assert_eq!(emails.len(), 1);
    assert_eq!(emails[0].0, "alice@example.com");
    assert!(
        emails[0].1.starts_with("Reminder: Pay rent is due"),
        "{}",
        emails[0].1
    );
    assert_eq!(h.out.webhooks.lock().unwrap()[0].0, "alice");
    let kinds: Vec<_> = h
        .inbox("alice")
        .await
        .iter()
        .map(|n| n["kind"].clone())
        .collect();
    assert_eq!(kinds, [json!("due_soon"), json!("due_time_set")]);
    // Next: the overdue notice at the due time.
    assert_eq!(h.jobs.at(&job_name(id)), Some(due));
}

/// Two fires of the same job at once both find the reminder unsent (neither has marked it
/// yet): the inbox and the topic take both, idempotently, but mail and webhook go once.
#[tokio::test]
async fn a_job_fired_twice_at_once_mails_and_posts_once() {
    let h = harness();
    h.mail_and_webhook_for_alice().await;
    let id = Uuid::now_v7();
    let due = Utc::now() + Duration::minutes(10);
    h.deliver(TaskEventKind::Created, "e1", &task(id, 1, Some(due)))
        .await;
    let (a, b) = tokio::join!(h.reminders.fire(id), h.reminders.fire(id));
    a.unwrap();
    b.unwrap();
    assert_eq!(h.out.emails.lock().unwrap().len(), 1);
    assert_eq!(h.out.webhooks.lock().unwrap().len(), 1);
    let claims: Vec<String> = h
        .store
        .keys()
        .into_iter()
        .filter(|k| k.starts_with("sent:"))
        .collect();
    assert_eq!(claims.len(), 2, "{claims:?}");
    for claim in claims {
        assert_eq!(
            h.store.ttl_of(&claim),
            Some(std::time::Duration::from_secs(7 * 24 * 3600)),
            "claims expire"
        );
    }
}

/// A completed or deleted task's record expires (30 days: long enough to stay the version
/// mark for late redeliveries); reopened, it is kept for good again.
#[tokio::test]
async fn records_of_finished_tasks_expire() {
    let h = harness();
    let id = Uuid::now_v7();
    let key = format!("task:{id}");
    let month = Some(std::time::Duration::from_secs(30 * 24 * 3600));
    let due = Some(Utc::now() + Duration::days(3));
    h.deliver(TaskEventKind::Created, "e1", &task(id, 1, due))
        .await;
    assert_eq!(h.store.ttl_of(&key), None);
    let mut done = task(id, 2, due);
    done.task.completed = true;
    h.deliver(TaskEventKind::Completed, "e2", &done).await;
    assert_eq!(h.store.ttl_of(&key), month);
    h.deliver(TaskEventKind::Reopened, "e3", &task(id, 3, due))
        .await;
    assert_eq!(h.store.ttl_of(&key), None, "reopened: kept for good");
    h.deliver(TaskEventKind::Deleted, "e4", &task(id, 4, due))
        .await;
    assert_eq!(h.store.ttl_of(&key), month);
}

#[tokio::test]
async fn completing_or_deleting_cancels_and_a_late_job_does_nothing() {
    let h = harness();
    let id = Uuid::now_v7();
    let due = Utc::now() + Duration::hours(1);
    h.deliver(TaskEventKind::Created, "e1", &task(id, 1, Some(due)))
        .await;
    let mut done = task(id, 2, Some(due));
    done.task.completed = true;
    assert_eq!(
        h.deliver(TaskEventKind::Completed, "e2", &done).await,
        Outcome::Success
    );
    assert_eq!(h.jobs.at(&job_name(id)), None);
    h.reminders.fire(id).await.unwrap();
    assert!(h.out.published.lock().unwrap().is_empty());
    // The creation arriving again, late, changes nothing (version 1 < 2).
    h.deliver(TaskEventKind::Created, "e1-again", &task(id, 1, Some(due)))
        .await;
    assert_eq!(h.jobs.at(&job_name(id)), None);
}

#[tokio::test]
async fn a_new_due_time_moves_the_job_and_an_older_event_does_not_roll_it_back() {
    // e2 arrives first (e1's first delivery failed, say): the job follows e2, and e1 still
    // gets the notification it is owed, once.
    let h = harness();
    let id = Uuid::now_v7();
    let first = Utc::now() + Duration::hours(1);
    let second = Utc::now() + Duration::hours(5);
    h.deliver(TaskEventKind::Updated, "e2", &task(id, 2, Some(second)))
        .await;
    h.deliver(TaskEventKind::Created, "e1", &task(id, 1, Some(first)))
        .await;
    assert_eq!(
        h.jobs.at(&job_name(id)),
        Some(second - Duration::minutes(15))
    );
    let kinds: Vec<_> = h
        .inbox("alice")
        .await
        .iter()
        .map(|n| n["kind"].clone())
        .collect();
    assert_eq!(kinds, [json!("due_time_set"), json!("due_time_changed")]);
}

#[tokio::test]
async fn quiet_hours_defer_the_reminder_and_muted_users_get_no_mail() {
    let h = harness();
    // Quiet all day but one minute: now is inside the window.
    let now = Utc::now();
    let end = (now - Duration::minutes(1)).format("%H:%M").to_string();
    let start = (now - Duration::minutes(2)).format("%H:%M").to_string();
    h.call(
        "preferences/set",
        json!({"user_id": "alice", "preferences": {"email": "alice@example.com", "muted": true,
            "quiet_hours": {"start": end, "end": start, "time_zone": "UTC"}}}),
    )
    .await
    .unwrap();
    let id = Uuid::now_v7();
    h.deliver(
        TaskEventKind::Created,
        "e1",
        &task(id, 1, Some(now + Duration::minutes(5))),
    )
    .await;
    h.reminders.fire(id).await.unwrap();
    assert!(h.out.published.lock().unwrap().is_empty());
    let deferred_to = h.jobs.at(&job_name(id)).unwrap();
    assert!(deferred_to > now + Duration::hours(23), "{deferred_to}");
    assert_eq!(h.reminders.metrics().deferred.get(), 1);

    h.call(
        "preferences/set",
        json!({"user_id": "alice", "preferences": {"email": "alice@example.com", "muted": true}}),
    )
    .await
    .unwrap();
    h.reminders.fire(id).await.unwrap();
    assert_eq!(h.out.published.lock().unwrap().len(), 1);
    assert!(h.out.emails.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_failing_mail_server_does_not_hold_back_the_reminder() {
    let h = harness();
    h.call(
        "preferences/set",
        json!({"user_id": "alice", "preferences": {"email": "alice@example.com"}}),
    )
    .await
    .unwrap();
    *h.out.email_down.lock().unwrap() = true;
    let id = Uuid::now_v7();
    let due = Utc::now() + Duration::minutes(5);
    h.deliver(TaskEventKind::Created, "e1", &task(id, 1, Some(due)))
        .await;
    h.reminders.fire(id).await.unwrap();
    assert_eq!(h.out.published.lock().unwrap().len(), 1);
    assert_eq!(
        h.reminders
            .metrics()
            .delivery_failures
            .get_or_create(&KindLabel { kind: "email" })
            .get(),
        1
    );
    assert_eq!(h.jobs.at(&job_name(id)), Some(due));
}

#[tokio::test]
async fn poison_is_dropped_and_outages_are_retried() {
    let h = harness();
    let bad_json = h
        .deliver_raw(TaskEventKind::Created, "p1", b"{not json".to_vec())
        .await;
    assert!(matches!(bad_json, Outcome::Drop(_)), "{bad_json:?}");
    let mut forged = task(Uuid::now_v7(), 1, None);
    forged.task.owner_id = "mallory".into();
    assert!(matches!(
        h.deliver(TaskEventKind::Created, "p2", &forged).await,
        Outcome::Drop(_)
    ));
    let missing_fields = h
        .deliver_raw(TaskEventKind::Created, "p3", br#"{"version": 1}"#.to_vec())
        .await;
    assert!(matches!(missing_fields, Outcome::Drop(_)));

    let id = Uuid::now_v7();
    let created = task(id, 1, Some(Utc::now() + Duration::hours(1)));
    h.store.set_down(true);
    assert!(matches!(
        h.deliver(TaskEventKind::Created, "e1", &created).await,
        Outcome::Retry(_)
    ));
    h.store.set_down(false);
    *h.jobs.down.lock().unwrap() = true;
    assert!(matches!(
        h.deliver(TaskEventKind::Created, "e1", &created).await,
        Outcome::Retry(_)
    ));
    // The record was written before the scheduler failed: the redelivery still schedules.
    *h.jobs.down.lock().unwrap() = false;
    assert_eq!(
        h.deliver(TaskEventKind::Created, "e1", &created).await,
        Outcome::Success
    );
    assert!(h.jobs.at(&job_name(id)).is_some());
    assert_eq!(h.inbox("alice").await.len(), 1);
}

/// A delivery that dies between its writes, then a newer event of the same task, then the
/// redelivery: the first event's notification is still there, once.
#[tokio::test]
async fn a_delivery_cut_short_before_a_newer_event_loses_no_notification() {
    for failing in ["inbox:", "task:"] {
        let h = harness();
        let id = Uuid::now_v7();
        let due = Utc::now() + Duration::days(2);
        h.store.fail_writes_under(Some(failing));
        let created = h
            .deliver(TaskEventKind::Created, "e1", &task(id, 1, Some(due)))
            .await;
        assert!(
            matches!(created, Outcome::Retry(_)),
            "{failing}: {created:?}"
        );
        h.store.fail_writes_under(None);

        let mut moved = task(id, 2, Some(due + Duration::days(1)));
        moved.changed_fields = vec!["due_time".into()];
        assert_eq!(
            h.deliver(TaskEventKind::Updated, "e2", &moved).await,
            Outcome::Success
        );
        // The redelivery of e1 comes after e2: older than the record, yet its notification
        // is owed.
        assert_eq!(
            h.deliver(TaskEventKind::Created, "e1", &task(id, 1, Some(due)))
                .await,
            Outcome::Success
        );
        assert_eq!(
            h.deliver(TaskEventKind::Created, "e1", &task(id, 1, Some(due)))
                .await,
            Outcome::Success
        );
        let mut ids: Vec<String> = h
            .inbox("alice")
            .await
            .iter()
            .map(|n| n["id"].as_str().unwrap().to_owned())
            .collect();
        ids.sort();
        assert_eq!(ids, ["e1", "e2"], "with writes under {failing} failing");
        // The job follows the newest version, not the late one.
        assert_eq!(
            h.jobs.at(&job_name(id)),
            Some(due + Duration::days(1) - Duration::minutes(15))
        );
    }
}

#[tokio::test]
async fn a_completed_recurring_task_says_when_the_next_one_is_due() {
    let h = harness();
    let id = Uuid::now_v7();
    let due: DateTime<Utc> = "2030-01-07T07:00:00Z".parse().unwrap();
    let mut done = task(id, 2, Some(due));
    done.task.completed = true;
    done.task.recurrence = Some("FREQ=WEEKLY;BYDAY=MO".into());
    h.deliver(TaskEventKind::Completed, "e2", &done).await;
    let inbox = h.inbox("alice").await;
    assert_eq!(inbox[0]["kind"], "rolled_over");
    assert_eq!(inbox[0]["due_time"], "2030-01-14T07:00:00Z");
    assert!(
        inbox[0]["message"]
            .as_str()
            .unwrap()
            .contains("Mon 14 Jan 2030 08:00 CET")
    );
}

#[tokio::test]
async fn methods_validate_and_page() {
    let h = harness();
    for i in 0..5 {
        let id = Uuid::now_v7();
        h.deliver(
            TaskEventKind::Created,
            &format!("e{i}"),
            &task(id, 1, Some(Utc::now() + Duration::hours(3))),
        )
        .await;
    }
    let first = h
        .call(
            "notifications/list",
            json!({"user_id": "alice", "page_size": 2}),
        )
        .await
        .unwrap();
    assert_eq!(first["notifications"][0]["id"], "e4");
    assert_eq!(first["unread"], 5);
    let next = h
        .call(
            "notifications/list",
            json!({"user_id": "alice", "page_size": 2, "page_token": first["next_page_token"]}),
        )
        .await
        .unwrap();
    assert_eq!(next["notifications"][0]["id"], "e2");
    let acked = h
        .call(
            "notifications/ack",
            json!({"user_id": "alice", "ids": ["e4", "e3"]}),
        )
        .await
        .unwrap();
    assert_eq!(acked, json!({"acked": 2, "unread": 3}));
    let all = h
        .call(
            "notifications/ack",
            json!({"user_id": "alice", "all": true}),
        )
        .await
        .unwrap();
    assert_eq!(all, json!({"acked": 3, "unread": 0}));
    // Ids that are not alice's are not found, whoever has them, and nothing is acked.
    for ids in [json!(["e1", "someone-elses"]), json!(["nope"])] {
        let err = h
            .call("notifications/ack", json!({"user_id": "alice", "ids": ids}))
            .await
            .unwrap_err();
        assert!(matches!(err, InvokeError::NotFound(_)), "{err:?}");
    }

    for (method, input) in [
        ("notifications/list", json!({})),
        (
            "notifications/list",
            json!({"user_id": "alice", "page_size": 0}),
        ),
        (
            "notifications/list",
            json!({"user_id": "alice", "page_token": "forged"}),
        ),
        ("notifications/ack", json!({"user_id": "alice"})),
        (
            "notifications/ack",
            json!({"user_id": "alice", "ids": ["a"], "all": true}),
        ),
        (
            "preferences/set",
            json!({"user_id": "alice", "preferences": {"email": "nope"}}),
        ),
        (
            "preferences/set",
            json!({"user_id": "alice", "preferences": {"webhook_url": "http://evil/"}}),
        ),
        ("preferences/set", json!({"user_id": "", "preferences": {}})),
        ("preferences/get", json!({"user_id": "alice", "extra": 1})),
    ] {
        let err = h.call(method, input.clone()).await.unwrap_err();
        assert!(
            matches!(err, InvokeError::InvalidArgument(_)),
            "{method} {input}: {err:?}"
        );
    }

    let defaults = h
        .call("preferences/get", json!({"user_id": "bob"}))
        .await
        .unwrap();
    assert_eq!(defaults["stored"], false);
    assert_eq!(defaults["preferences"]["lead_time_secs"], 900);
    h.call(
        "preferences/set",
        json!({"user_id": "bob", "preferences": {"lead_time_secs": 60}}),
    )
    .await
    .unwrap();
    let got = h
        .call("preferences/get", json!({"user_id": "bob"}))
        .await
        .unwrap();
    assert_eq!(
        (
            got["stored"].clone(),
            got["preferences"]["lead_time_secs"].clone()
        ),
        (json!(true), json!(60))
    );
    let deleted = h
        .call("preferences/delete", json!({"user_id": "bob"}))
        .await
        .unwrap();
    assert_eq!(deleted["deleted"], true);
    let again = h
        .call("preferences/delete", json!({"user_id": "bob"}))
        .await
        .unwrap();
    assert_eq!(again["deleted"], false);
}

/// `task`, assigned to `assignee` by a change of its assignee (`from`: the one before).
fn assigned(
    id: Uuid,
    version: i64,
    due: Option<DateTime<Utc>>,
    assignee: &str,
    from: Option<&str>,
) -> TaskEventData {
    let mut event = task(id, version, due);
    event.task.assignee_id = Some(assignee.into());
    event.changed_fields = vec!["assignee_id".into()];
    event.previous_assignee_id = from.map(str::to_owned);
    event.actor_id = Some("alice".into());
    event
}

/// alice's task, reminded to her, is given to bob: the job moves to bob's lead time, and
/// what fires from then on goes to bob (inbox, e-mail, the `task-reminders` event), once
/// under redeliveries, never again to alice, and not back to her by a late older event.
#[tokio::test]
async fn a_reassigned_task_reminds_its_new_assignee_once_and_not_the_previous_one() {
    let h = harness();
    h.mail_and_webhook_for_alice().await;
    h.call(
        "preferences/set",
        json!({"user_id": "bob", "preferences": {"email": "bob@example.com",
            "lead_time_secs": 3600}}),
    )
    .await
    .unwrap();
    let id = Uuid::now_v7();
    let due = Utc::now() + Duration::minutes(30);
    h.deliver(TaskEventKind::Created, "e1", &task(id, 1, Some(due)))
        .await;
    assert_eq!(h.jobs.at(&job_name(id)), Some(due - Duration::minutes(15)));

    let to_bob = assigned(id, 2, Some(due), "bob", None);
    for _ in 0..3 {
        assert_eq!(
            h.deliver(TaskEventKind::Updated, "e2", &to_bob).await,
            Outcome::Success
        );
    }
    // bob's lead time (an hour): due now.
    assert_eq!(h.jobs.at(&job_name(id)), Some(due - Duration::hours(1)));
    // The creation redelivered late changes nothing (version 1 < 2).
    h.deliver(TaskEventKind::Created, "e1", &task(id, 1, Some(due)))
        .await;
    assert_eq!(h.jobs.at(&job_name(id)), Some(due - Duration::hours(1)));

    h.reminders.fire(id).await.unwrap();
    h.reminders.fire(id).await.unwrap();
    let published = h.out.published.lock().unwrap().clone();
    assert_eq!(published.len(), 1);
    assert_eq!(published[0].data.owner_id, "bob");
    let emails = h.out.emails.lock().unwrap().clone();
    assert_eq!(emails.len(), 1, "{emails:?}");
    assert_eq!(emails[0].0, "bob@example.com");
    assert!(h.out.webhooks.lock().unwrap().is_empty(), "alice's webhook");
    let kinds = |inbox: Vec<serde_json::Value>| -> Vec<serde_json::Value> {
        inbox.iter().map(|n| n["kind"].clone()).collect()
    };
    assert_eq!(
        kinds(h.inbox("bob").await),
        [json!("due_soon"), json!("due_time_set")]
    );
    assert_eq!(kinds(h.inbox("alice").await), [json!("due_time_set")]);
    // Next: bob's overdue notice at the due time.
    assert_eq!(h.jobs.at(&job_name(id)), Some(due));
}

/// A due-soon reminder sent to alice does not settle bob's: given the task after it, bob
/// gets his own (another id, so alice's e-mail claim does not hold his back); given back
/// to alice, she gets nothing twice.
#[tokio::test]
async fn a_reminder_sent_before_the_reassignment_is_owed_again_to_the_new_assignee() {
    let h = harness();
    h.mail_and_webhook_for_alice().await;
    h.call(
        "preferences/set",
        json!({"user_id": "bob", "preferences": {"email": "bob@example.com"}}),
    )
    .await
    .unwrap();
    let id = Uuid::now_v7();
    let due = Utc::now() + Duration::minutes(10);
    h.deliver(TaskEventKind::Created, "e1", &task(id, 1, Some(due)))
        .await;
    h.reminders.fire(id).await.unwrap();
    h.deliver(
        TaskEventKind::Updated,
        "e2",
        &assigned(id, 2, Some(due), "bob", None),
    )
    .await;
    h.reminders.fire(id).await.unwrap();
    let back = {
        let mut back = task(id, 3, Some(due));
        back.changed_fields = vec!["assignee_id".into()];
        back.previous_assignee_id = Some("bob".into());
        back
    };
    h.deliver(TaskEventKind::Updated, "e3", &back).await;
    h.reminders.fire(id).await.unwrap();

    let emails: Vec<String> = h
        .out
        .emails
        .lock()
        .unwrap()
        .iter()
        .map(|e| e.0.clone())
        .collect();
    assert_eq!(emails, ["alice@example.com", "bob@example.com"]);
    let published = h.out.published.lock().unwrap().clone();
    let to: Vec<&str> = published.iter().map(|e| e.data.owner_id.as_str()).collect();
    assert_eq!(to, ["alice", "bob", "alice"]);
    // alice's second one is her first again (same id): kept once in her inbox.
    assert_eq!(published[0].id, published[2].id);
    let due_soon =
        |inbox: Vec<serde_json::Value>| inbox.iter().filter(|n| n["kind"] == "due_soon").count();
    assert_eq!(due_soon(h.inbox("alice").await), 1);
    assert_eq!(due_soon(h.inbox("bob").await), 1);
}

#[tokio::test]
async fn an_event_with_an_impossible_assignee_is_dropped() {
    let h = harness();
    for bad in [String::new(), "b".repeat(129)] {
        let mut event = task(Uuid::now_v7(), 1, Some(Utc::now() + Duration::hours(1)));
        event.task.assignee_id = Some(bad);
        let outcome = h.deliver(TaskEventKind::Created, "p1", &event).await;
        assert!(matches!(outcome, Outcome::Drop(_)), "{outcome:?}");
    }
    assert!(h.store.keys().is_empty());
}

use taskmesh_proto::tasks::v1::*;
use tonic::Code;

use crate::helpers::*;
use crate::on_both_backends;

on_both_backends!(
    create_get_update_complete_reopen_delete,
    update_changes_only_given_fields
);

async fn create_get_update_complete_reopen_delete(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut alice = app.client("alice").await;

    let created = create(
        &mut alice,
        CreateTaskRequest {
            title: "  Write report ".into(),
            description: "Q3 numbers".into(),
            priority: Priority::High as i32,
            tags: vec!["Work".into(), "q3".into()],
            due_time: ts("2030-01-07T09:00:00Z"),
            time_zone: Some("Europe/Paris".into()),
            recurrence: Some("freq=weekly;byday=mo".into()),
            request_id: None,
            list_id: None,
            assignee_id: None,
        },
    )
    .await;
    assert_eq!(created.title, "Write report");
    assert_eq!(created.owner_id, "alice");
    assert_eq!(created.priority, Priority::High as i32);
    assert_eq!(created.tags, ["work", "q3"]);
    assert_eq!(created.recurrence.as_deref(), Some("FREQ=WEEKLY;BYDAY=MO"));
    assert_eq!(created.time_zone.as_deref(), Some("Europe/Paris"));
    assert_eq!(created.due_time, ts("2030-01-07T09:00:00Z"));
    assert_eq!(created.version, 1);
    assert!(!created.completed && created.completed_time.is_none());
    assert_eq!(created.create_time, created.update_time);
    uuid::Uuid::parse_str(&created.id).expect("uuid id");

    let fetched = alice
        .get_task(GetTaskRequest {
            id: created.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(fetched, created);

    let updated = alice
        .update_task(UpdateTaskRequest {
            id: created.id.clone(),
            expected_version: Some(1),
            title: Some("Write the report".into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(updated.title, "Write the report");
    assert_eq!(updated.version, 2);

    let completed = alice
        .complete_task(CompleteTaskRequest {
            id: created.id.clone(),
            expected_version: Some(2),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(completed.completed && completed.completed_time.is_some());
    assert_eq!(completed.version, 3);

    // Completing again is a no-op, so a retried call is harmless.
    let again = alice
        .complete_task(CompleteTaskRequest {
            id: created.id.clone(),
            expected_version: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again, completed);

    let reopened = alice
        .reopen_task(ReopenTaskRequest {
            id: created.id.clone(),
            expected_version: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!reopened.completed && reopened.completed_time.is_none());
    assert_eq!(reopened.version, 4);

    let stale = alice
        .delete_task(DeleteTaskRequest {
            id: created.id.clone(),
            expected_version: Some(3),
        })
        .await
        .unwrap_err();
    assert_eq!(stale.code(), Code::Aborted);
    assert!(stale.message().contains("version 4"), "{}", stale.message());

    alice
        .delete_task(DeleteTaskRequest {
            id: created.id.clone(),
            expected_version: Some(4),
        })
        .await
        .unwrap();
    let gone = alice
        .get_task(GetTaskRequest {
            id: created.id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);
    let gone = alice
        .delete_task(DeleteTaskRequest {
            id: created.id,
            expected_version: None,
        })
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);
    app.stop().await;
}

async fn update_changes_only_given_fields(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut alice = app.client("alice").await;
    let created = create(
        &mut alice,
        CreateTaskRequest {
            title: "Water plants".into(),
            description: "all of them".into(),
            tags: vec!["home".into()],
            due_time: ts("2030-05-01T08:00:00Z"),
            time_zone: Some("America/New_York".into()),
            recurrence: Some("FREQ=DAILY;INTERVAL=2".into()),
            ..Default::default()
        },
    )
    .await;

    let update = |req: UpdateTaskRequest| {
        let mut client = alice.clone();
        async move { client.update_task(req).await.map(|r| r.into_inner()) }
    };
    let t = update(UpdateTaskRequest {
        id: created.id.clone(),
        priority: Some(Priority::Urgent as i32),
        tags: Some(TagList {
            tags: vec!["garden".into(), "Home".into()],
        }),
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(t.priority, Priority::Urgent as i32);
    assert_eq!(t.tags, ["garden", "home"]);
    assert_eq!(
        (
            t.title.as_str(),
            t.description.as_str(),
            &t.due_time,
            &t.recurrence
        ),
        (
            "Water plants",
            "all of them",
            &created.due_time,
            &created.recurrence
        )
    );

    // Clearing: the recurrence first, since a recurring task needs a due time.
    let cleared_due = update(UpdateTaskRequest {
        id: created.id.clone(),
        clear_due_time: true,
        ..Default::default()
    })
    .await
    .unwrap_err();
    assert_invalid(&cleared_due, &["recurrence"]);
    let t = update(UpdateTaskRequest {
        id: created.id.clone(),
        recurrence: Some(String::new()),
        clear_due_time: true,
        time_zone: Some(String::new()),
        tags: Some(TagList { tags: vec![] }),
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!((t.due_time, t.recurrence, t.time_zone), (None, None, None));
    assert!(t.tags.is_empty());
    assert_eq!(t.version, 3);

    // An update that changes nothing keeps the version.
    let same = update(UpdateTaskRequest {
        id: created.id.clone(),
        title: Some("Water plants".into()),
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(same.version, 3);
    app.stop().await;
}

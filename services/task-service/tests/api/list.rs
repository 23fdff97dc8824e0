use std::collections::HashSet;

use taskmesh_proto::tasks::v1::*;
use tonic::Code;

use crate::helpers::*;
use crate::on_both_backends;

on_both_backends!(
    filters_and_orders,
    paging_is_stable_under_inserts,
    page_tokens_are_tamper_proof,
    tag_and_status_filters_follow_every_change
);

async fn filters_and_orders(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut alice = app.client("alice").await;
    let specs = [
        (
            "Buy milk",
            Priority::Low,
            vec!["home"],
            Some("2030-01-03T00:00:00Z"),
        ),
        (
            "Write report",
            Priority::High,
            vec!["work"],
            Some("2030-01-01T00:00:00Z"),
        ),
        ("Call mom", Priority::Medium, vec!["home", "family"], None),
        (
            "Fix bug 50%_off",
            Priority::Urgent,
            vec!["work"],
            Some("2030-01-02T00:00:00Z"),
        ),
    ];
    for (title, priority, tags, due) in specs {
        let task = create(
            &mut alice,
            CreateTaskRequest {
                title: title.into(),
                priority: priority as i32,
                tags: tags.into_iter().map(Into::into).collect(),
                due_time: due.and_then(ts),
                ..Default::default()
            },
        )
        .await;
        if title.starts_with("Fix") {
            alice
                .complete_task(CompleteTaskRequest {
                    id: task.id,
                    expected_version: None,
                })
                .await
                .unwrap();
        }
    }
    let query = |req: ListTasksRequest| {
        let mut client = alice.clone();
        async move {
            let tasks = list_all(&mut client, req).await;
            tasks.into_iter().map(|t| t.title).collect::<Vec<_>>()
        }
    };
    let all = ListTasksRequest::default();
    assert_eq!(
        query(all.clone()).await,
        ["Buy milk", "Write report", "Call mom", "Fix bug 50%_off"]
    );
    let status = |s: StatusFilter| ListTasksRequest {
        status: s as i32,
        ..Default::default()
    };
    assert_eq!(
        query(status(StatusFilter::Open)).await,
        ["Buy milk", "Write report", "Call mom"]
    );
    assert_eq!(
        query(status(StatusFilter::Completed)).await,
        ["Fix bug 50%_off"]
    );
    assert_eq!(query(status(StatusFilter::All)).await.len(), 4);

    let cases: Vec<(ListTasksRequest, Vec<&str>)> = vec![
        (
            ListTasksRequest {
                priority: Priority::High as i32,
                ..Default::default()
            },
            vec!["Write report"],
        ),
        (
            ListTasksRequest {
                tag: Some("home".into()),
                ..Default::default()
            },
            vec!["Buy milk", "Call mom"],
        ),
        (
            ListTasksRequest {
                tag: Some(" WORK".into()),
                ..Default::default()
            },
            vec!["Write report", "Fix bug 50%_off"],
        ),
        (
            ListTasksRequest {
                tag: Some("wor".into()),
                ..Default::default()
            },
            vec![],
        ),
        (
            ListTasksRequest {
                due_before: ts("2030-01-02T00:00:00Z"),
                ..Default::default()
            },
            vec!["Write report"],
        ),
        (
            ListTasksRequest {
                due_after: ts("2030-01-02T00:00:00Z"),
                ..Default::default()
            },
            vec!["Buy milk", "Fix bug 50%_off"],
        ),
        (
            ListTasksRequest {
                title_contains: Some("BUG 50%".into()),
                ..Default::default()
            },
            vec!["Fix bug 50%_off"],
        ),
        (
            ListTasksRequest {
                title_contains: Some("_".into()),
                ..Default::default()
            },
            vec!["Fix bug 50%_off"],
        ),
        (
            ListTasksRequest {
                title_contains: Some("m".into()),
                status: StatusFilter::Open as i32,
                tag: Some("home".into()),
                ..Default::default()
            },
            vec!["Buy milk", "Call mom"],
        ),
    ];
    for (req, expected) in cases {
        assert_eq!(query(req.clone()).await, expected, "{req:?}");
    }

    let ordered = |order: OrderBy, descending: bool| ListTasksRequest {
        order_by: order as i32,
        descending,
        page_size: 3,
        ..Default::default()
    };
    let orders = [
        (
            OrderBy::CreateTime,
            false,
            ["Buy milk", "Write report", "Call mom", "Fix bug 50%_off"],
        ),
        (
            OrderBy::CreateTime,
            true,
            ["Fix bug 50%_off", "Call mom", "Write report", "Buy milk"],
        ),
        (
            OrderBy::DueTime,
            false,
            ["Write report", "Fix bug 50%_off", "Buy milk", "Call mom"],
        ),
        (
            OrderBy::DueTime,
            true,
            ["Call mom", "Buy milk", "Fix bug 50%_off", "Write report"],
        ),
        (
            OrderBy::Priority,
            false,
            ["Fix bug 50%_off", "Write report", "Call mom", "Buy milk"],
        ),
        (
            OrderBy::Priority,
            true,
            ["Buy milk", "Call mom", "Write report", "Fix bug 50%_off"],
        ),
    ];
    for (order, descending, expected) in orders {
        assert_eq!(
            query(ordered(order, descending)).await,
            expected,
            "{order:?} descending={descending}"
        );
    }

    let mut bob = app.client("bob").await;
    assert!(
        list_all(&mut bob, ListTasksRequest::default())
            .await
            .is_empty()
    );
    app.stop().await;
}

/// A tag and a status are found through their own indexes (`task_tags`, kept by
/// triggers, and the partial indexes of open and completed tasks): each change of tags,
/// list, status or existence shows in the next listing, in every order, page by page.
async fn tag_and_status_filters_follow_every_change(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut alice = app.client("alice").await;
    let work = app
        .lists("alice")
        .await
        .create_list(CreateListRequest {
            name: "Work".into(),
            request_id: None,
        })
        .await
        .unwrap()
        .into_inner();
    let mut ids = Vec::new();
    for n in 0..7 {
        let tags = match n % 3 {
            0 => vec!["red", "blue", "red"],
            1 => vec!["red"],
            _ => vec!["green"],
        };
        let task = create(
            &mut alice,
            CreateTaskRequest {
                title: format!("t{n}"),
                tags: tags.into_iter().map(Into::into).collect(),
                due_time: ts(&format!("2030-01-0{}T00:00:00Z", 7 - n)),
                ..Default::default()
            },
        )
        .await;
        ids.push(task.id);
    }
    // The listings read through a client of their own while `alice` writes.
    let reader = alice.clone();
    let listed = |tag: Option<&str>, status: StatusFilter, order: OrderBy, descending: bool| {
        let mut client = reader.clone();
        let request = ListTasksRequest {
            tag: tag.map(Into::into),
            status: status as i32,
            order_by: order as i32,
            descending,
            page_size: 2,
            ..Default::default()
        };
        async move { titles(&list_all(&mut client, request).await).join(" ") }
    };
    let by = |tag, status, order, descending| listed(Some(tag), status, order, descending);
    let red = |descending| by("red", StatusFilter::All, OrderBy::CreateTime, descending);
    assert_eq!(red(false).await, "t0 t1 t3 t4 t6");
    assert_eq!(red(true).await, "t6 t4 t3 t1 t0");
    assert_eq!(
        by("red", StatusFilter::All, OrderBy::DueTime, false).await,
        "t6 t4 t3 t1 t0"
    );
    assert_eq!(
        by("blue", StatusFilter::All, OrderBy::Priority, false).await,
        "t0 t3 t6"
    );

    let update = |n: usize, tags: Option<Vec<&str>>, list: Option<&str>| UpdateTaskRequest {
        id: ids[n].clone(),
        tags: tags.map(|tags| TagList {
            tags: tags.into_iter().map(Into::into).collect(),
        }),
        list_id: list.map(Into::into),
        ..Default::default()
    };
    alice
        .update_task(update(1, Some(vec!["green"]), None))
        .await
        .unwrap();
    alice
        .update_task(update(3, None, Some(&work.id)))
        .await
        .unwrap();
    alice
        .update_task(update(2, Some(vec![]), None))
        .await
        .unwrap();
    alice
        .delete_task(DeleteTaskRequest {
            id: ids[6].clone(),
            expected_version: None,
        })
        .await
        .unwrap();
    for n in [0, 4] {
        alice
            .complete_task(CompleteTaskRequest {
                id: ids[n].clone(),
                expected_version: None,
            })
            .await
            .unwrap();
    }
    assert_eq!(red(false).await, "t0 t3 t4");
    assert_eq!(
        by("green", StatusFilter::All, OrderBy::CreateTime, true).await,
        "t5 t1"
    );
    let in_work = ListTasksRequest {
        tag: Some("red".into()),
        list_id: Some(work.id.clone()),
        ..Default::default()
    };
    assert_eq!(titles(&list_all(&mut alice, in_work).await), ["t3"]);
    assert_eq!(
        by("red", StatusFilter::Completed, OrderBy::CreateTime, true).await,
        "t4 t0"
    );
    assert_eq!(
        by("red", StatusFilter::Open, OrderBy::CreateTime, false).await,
        "t3"
    );
    let status = |status, descending| listed(None, status, OrderBy::CreateTime, descending);
    assert_eq!(status(StatusFilter::Open, false).await, "t1 t2 t3 t5");
    assert_eq!(status(StatusFilter::Completed, true).await, "t4 t0");
    alice
        .reopen_task(ReopenTaskRequest {
            id: ids[4].clone(),
            expected_version: None,
        })
        .await
        .unwrap();
    assert_eq!(status(StatusFilter::Completed, true).await, "t0");
    app.stop().await;
}

/// 1,000 tasks paged through while 200 more are inserted: no task is seen twice and
/// every task that existed before the first page is seen.
async fn paging_is_stable_under_inserts(backend: Backend) {
    let app = spawn_app(backend).await;
    let client = app.client("alice").await;
    let priorities = [
        Priority::Low,
        Priority::Medium,
        Priority::High,
        Priority::Urgent,
    ];
    let mut existing = HashSet::new();
    for chunk in (0..1000).collect::<Vec<_>>().chunks(50) {
        let creates = chunk.iter().map(|i| {
            let mut c = client.clone();
            let priority = priorities[i % priorities.len()];
            async move {
                create(
                    &mut c,
                    CreateTaskRequest {
                        title: format!("task {i}"),
                        priority: priority as i32,
                        ..Default::default()
                    },
                )
                .await
                .id
            }
        });
        existing.extend(futures::future::join_all(creates).await);
    }
    assert_eq!(existing.len(), 1000);

    for order in [OrderBy::CreateTime, OrderBy::Priority] {
        let mut writer = client.clone();
        let inserts = tokio::spawn(async move {
            for i in 0..100 {
                create(&mut writer, new_task(&format!("late {i}"))).await;
            }
        });
        let mut reader = client.clone();
        let mut req = ListTasksRequest {
            order_by: order as i32,
            page_size: 37,
            ..Default::default()
        };
        let mut seen = Vec::new();
        let mut last_priority = i32::MAX;
        loop {
            let page = reader.list_tasks(req.clone()).await.unwrap().into_inner();
            for task in &page.tasks {
                if order == OrderBy::Priority {
                    assert!(task.priority <= last_priority, "priority order broken");
                    last_priority = task.priority;
                }
            }
            seen.extend(page.tasks.into_iter().map(|t| t.id));
            if page.next_page_token.is_empty() {
                break;
            }
            req.page_token = page.next_page_token;
            tokio::task::yield_now().await;
        }
        inserts.await.unwrap();
        let unique: HashSet<_> = seen.iter().cloned().collect();
        assert_eq!(
            unique.len(),
            seen.len(),
            "{order:?}: a task was returned twice"
        );
        let missing = existing.difference(&unique).count();
        assert_eq!(missing, 0, "{order:?}: {missing} tasks were skipped");
    }
    app.stop().await;
}

async fn page_tokens_are_tamper_proof(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut alice = app.client("alice").await;
    for i in 0..3 {
        create(&mut alice, new_task(&format!("t{i}"))).await;
    }
    let req = ListTasksRequest {
        page_size: 1,
        ..Default::default()
    };
    let token = alice
        .list_tasks(req.clone())
        .await
        .unwrap()
        .into_inner()
        .next_page_token;
    assert!(!token.is_empty());

    let mut tampered = token.clone().into_bytes();
    tampered[5] = if tampered[5] == b'A' { b'B' } else { b'A' };
    let cases = [
        String::from_utf8(tampered).unwrap(),
        "not-a-token".into(),
        format!("{token}AA"),
    ];
    for bad in cases {
        let err = alice
            .list_tasks(ListTasksRequest {
                page_token: bad,
                ..req.clone()
            })
            .await
            .unwrap_err();
        assert_invalid(&err, &["page_token"]);
    }
    // The same token with other filters, or from another user, is refused too.
    let err = alice
        .list_tasks(ListTasksRequest {
            page_token: token.clone(),
            descending: true,
            ..req.clone()
        })
        .await
        .unwrap_err();
    assert_invalid(&err, &["page_token"]);
    let mut bob = app.client("bob").await;
    let err = bob
        .list_tasks(ListTasksRequest {
            page_token: token.clone(),
            ..req.clone()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    // The page size may change between pages.
    let rest = alice
        .list_tasks(ListTasksRequest {
            page_token: token,
            page_size: 10,
            ..req
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(titles(&rest.tasks), ["t1", "t2"]);
    app.stop().await;
}

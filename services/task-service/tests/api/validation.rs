use taskmesh_proto::tasks::v1::*;
use tonic::Code;
use tonic_types::StatusExt;

use crate::helpers::*;
use crate::on_both_backends;

on_both_backends!(bad_input_is_invalid_argument_with_field_violations);

async fn bad_input_is_invalid_argument_with_field_violations(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut c = app.client("alice").await;
    let valid = new_task("ok");

    let creates: Vec<(CreateTaskRequest, &[&str])> = vec![
        (new_task(""), &["title"]),
        (new_task("   "), &["title"]),
        (new_task(&"x".repeat(201)), &["title"]),
        (
            CreateTaskRequest {
                description: "d".repeat(10_001),
                ..valid.clone()
            },
            &["description"],
        ),
        (
            CreateTaskRequest {
                tags: (0..21).map(|i| format!("t{i}")).collect(),
                ..valid.clone()
            },
            &["tags"],
        ),
        (
            CreateTaskRequest {
                tags: vec!["fine".into(), "t".repeat(51)],
                ..valid.clone()
            },
            &["tags[1]"],
        ),
        (
            CreateTaskRequest {
                recurrence: Some("FREQ=DAILY;BYHOUR=9".into()),
                due_time: ts("2030-01-01T00:00:00Z"),
                ..valid.clone()
            },
            &["recurrence"],
        ),
        (
            CreateTaskRequest {
                recurrence: Some("every day".into()),
                due_time: ts("2030-01-01T00:00:00Z"),
                ..valid.clone()
            },
            &["recurrence"],
        ),
        (
            CreateTaskRequest {
                recurrence: Some("FREQ=DAILY".into()),
                ..valid.clone()
            },
            &["recurrence"],
        ),
        (
            CreateTaskRequest {
                time_zone: Some("Europe/Atlantis".into()),
                ..valid.clone()
            },
            &["time_zone"],
        ),
        (
            CreateTaskRequest {
                priority: 99,
                ..valid.clone()
            },
            &["priority"],
        ),
        (
            CreateTaskRequest {
                due_time: Some(prost_types::Timestamp {
                    seconds: i64::MAX,
                    nanos: 0,
                }),
                ..valid.clone()
            },
            &["due_time"],
        ),
        (
            CreateTaskRequest {
                request_id: Some("r".repeat(129)),
                ..valid.clone()
            },
            &["request_id"],
        ),
        (
            CreateTaskRequest {
                title: String::new(),
                time_zone: Some("nowhere".into()),
                ..valid.clone()
            },
            &["title", "time_zone"],
        ),
    ];
    for (req, fields) in creates {
        let err = c.create_task(req).await.unwrap_err();
        assert_invalid(&err, fields);
    }
    // The limits themselves are allowed.
    create(
        &mut c,
        CreateTaskRequest {
            title: "é".repeat(200),
            description: "d".repeat(10_000),
            tags: (0..20).map(|i| format!("{i}{}", "t".repeat(48))).collect(),
            ..Default::default()
        },
    )
    .await;

    for bad_id in ["", "42", "not-a-uuid", "'; DROP TABLE tasks; --"] {
        let err = c
            .get_task(GetTaskRequest { id: bad_id.into() })
            .await
            .unwrap_err();
        assert_invalid(&err, &["id"]);
        let err = c
            .delete_task(DeleteTaskRequest {
                id: bad_id.into(),
                expected_version: None,
            })
            .await
            .unwrap_err();
        assert_invalid(&err, &["id"]);
    }
    let task = create(&mut c, valid).await;
    let err = c
        .update_task(UpdateTaskRequest {
            id: task.id.clone(),
            expected_version: Some(0),
            title: Some(String::new()),
            priority: Some(Priority::Unspecified as i32),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_invalid(&err, &["expected_version", "title", "priority"]);
    let err = c
        .update_task(UpdateTaskRequest {
            id: "nope".into(),
            due_time: ts("2030-01-01T00:00:00Z"),
            clear_due_time: true,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_invalid(&err, &["id", "clear_due_time"]);

    for page_size in [-1, 501, i32::MAX] {
        let err = c
            .list_tasks(ListTasksRequest {
                page_size,
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_invalid(&err, &["page_size"]);
    }
    let err = c
        .list_tasks(ListTasksRequest {
            status: 17,
            order_by: -3,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_invalid(&err, &["status", "order_by"]);

    // Whatever went wrong, no SQL and no internals reach the client.
    let err = c
        .get_task(GetTaskRequest {
            id: "' OR 1=1 --".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(!err.message().to_lowercase().contains("select"));
    app.stop().await;
}

on_both_backends!(calendar_recurrence_rules_are_stored_normalised);

/// The rules calendar users write, in either form the API takes, are stored in the
/// one-line form; a bad one is a field violation on `recurrence` that says what is wrong,
/// also when only its normalised form is too long for the column.
async fn calendar_recurrence_rules_are_stored_normalised(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut c = app.client("alice").await;
    let recurring = |rule: &str| CreateTaskRequest {
        recurrence: Some(rule.into()),
        due_time: ts("2030-01-25T08:00:00Z"),
        time_zone: Some("Europe/Paris".into()),
        ..new_task("recurring")
    };
    for (given, stored) in [
        ("FREQ=MONTHLY;BYDAY=-1FR", "FREQ=MONTHLY;BYDAY=-1FR"),
        (
            "freq=monthly;bysetpos=-1;byday=mo,tu,we,th,fr",
            "FREQ=MONTHLY;BYDAY=MO,TU,WE,TH,FR;BYSETPOS=-1",
        ),
        ("FREQ=YEARLY;BYMONTH=3,9", "FREQ=YEARLY;BYMONTH=3,9"),
        (
            "FREQ=MONTHLY;BYDAY=-1FR;EXDATE=20300329,20300222",
            "FREQ=MONTHLY;BYDAY=-1FR;EXDATE=20300222,20300329",
        ),
        (
            "RRULE:FREQ=MONTHLY;BYDAY=-1FR\r\nEXDATE;VALUE=DATE:20300222",
            "FREQ=MONTHLY;BYDAY=-1FR;EXDATE=20300222",
        ),
    ] {
        let task = create(&mut c, recurring(given)).await;
        assert_eq!(task.recurrence.as_deref(), Some(stored), "{given}");
    }
    let dates: Vec<String> = (1..=52)
        .map(|d| format!("2030{:02}{:02}", d / 28 + 2, d % 28 + 1))
        .collect();
    let too_long_once_normalised = format!("FREQ=DAILY;UNTIL=20301231;EXDATE={}", dates.join(","));
    for (rule, says) in [
        ("FREQ=MONTHLY;BYDAY=-5FR", "BYDAY"),
        ("FREQ=YEARLY;BYMONTH=13", "BYMONTH"),
        ("FREQ=MONTHLY;BYSETPOS=-1", "BYSETPOS"),
        ("FREQ=DAILY;EXDATE=2030-03-01", "EXDATE"),
        ("DTSTART:20300101T090000Z\nRRULE:FREQ=DAILY", "DTSTART"),
        (too_long_once_normalised.as_str(), "500 characters"),
    ] {
        let err = c.create_task(recurring(rule)).await.unwrap_err();
        assert_invalid(&err, &["recurrence"]);
        let details = err.get_error_details();
        let violation = &details.bad_request().unwrap().field_violations[0];
        assert!(
            violation.description.contains(says),
            "{rule}: {}",
            violation.description
        );
    }
    app.stop().await;
}

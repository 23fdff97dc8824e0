//! Plans, not hopes: every ListTasks and GetTask statement the API can issue, explained on
//! a seeded database, reads `tasks` through an index, never by a sequential scan.

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement};
use task_service::domain::{Cursor, ListQuery, OrderBy, Priority, StatusFilter, TaskFilter};
use task_service::lists::default_list_id;
use task_service::store::{get_statement, list_statement};
use uuid::Uuid;

use crate::helpers::*;
use crate::on_both_backends;

on_both_backends!(every_listing_and_read_uses_an_index);

/// Users with one list of `PER_USER` tasks each, and one user with `HEAVY_LISTS` lists
/// of `PER_HEAVY_LIST`: enough rows that a scan costs more than an index to the planners.
const USERS: usize = 200;
const PER_USER: usize = 100;
const HEAVY_LISTS: usize = 5;
const PER_HEAVY_LIST: usize = 2_000;
const HEAVY: &str = "heavy";

async fn every_listing_and_read_uses_an_index(backend: Backend) {
    // The service migrates the database; the rows are written straight into it.
    let app = spawn_app(backend).await;
    let db = sea_orm::Database::connect(&app.database_url).await.unwrap();
    let heavy_lists = seed(&db).await;
    let backend = db.get_database_backend();

    let mut statements = Vec::new();
    let orders = [OrderBy::CreateTime, OrderBy::DueTime, OrderBy::Priority];
    for lists in [&heavy_lists[..1], &heavy_lists[..]] {
        for order_by in orders {
            for descending in [false, true] {
                for after in [
                    None,
                    Some(Cursor {
                        key: 1,
                        id: Uuid::now_v7(),
                    }),
                ] {
                    let filter = TaskFilter {
                        order_by,
                        descending,
                        ..all()
                    };
                    statements.push(query(backend, lists, filter, after));
                }
            }
        }
        let filters = [
            TaskFilter {
                status: StatusFilter::Open,
                ..all()
            },
            TaskFilter {
                status: StatusFilter::Completed,
                ..all()
            },
            TaskFilter {
                priority: Some(Priority::High),
                ..all()
            },
            TaskFilter {
                tag: Some("t3".into()),
                ..all()
            },
            TaskFilter {
                due_before: Some(at(2_000_000_000)),
                due_after: Some(at(1_900_000_000)),
                order_by: OrderBy::DueTime,
                ..all()
            },
            TaskFilter {
                title_contains: Some("task 7".into()),
                ..all()
            },
            TaskFilter {
                assignee: Some(Some("u1".into())),
                ..all()
            },
            TaskFilter {
                assignee: Some(None),
                ..all()
            },
        ];
        for filter in filters {
            statements.push(query(backend, lists, filter, None));
        }
    }
    let ids: Vec<String> = (0..3).map(|_| Uuid::now_v7().to_string()).collect();
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    statements.push(get_statement(backend, &ids[..1], &[HEAVY]));
    statements.push(get_statement(backend, &ids, &[HEAVY, "u1"]));

    // The detector itself: a query no index serves must be caught.
    let unindexed =
        Statement::from_string(backend, "SELECT * FROM tasks WHERE description = 'nothing'");
    assert!(
        sequential_scan(backend, &explain(&db, &unindexed).await).is_some(),
        "a scan went unnoticed"
    );

    let mut scans = Vec::new();
    for statement in &statements {
        let plan = explain(&db, statement).await;
        if let Some(scan) = sequential_scan(backend, &plan) {
            scans.push(format!("{}\n  -> {scan}\n{plan}", statement.sql));
        }
    }
    assert!(
        scans.is_empty(),
        "{} of {} statements scan a table:\n{}",
        scans.len(),
        statements.len(),
        scans.join("\n\n")
    );
    db.close().await.unwrap();
    app.stop().await;
}

fn all() -> TaskFilter {
    TaskFilter {
        status: StatusFilter::All,
        priority: None,
        tag: None,
        due_before: None,
        due_after: None,
        title_contains: None,
        list_id: None,
        assignee: None,
        query: None,
        order_by: OrderBy::CreateTime,
        descending: false,
    }
}

fn at(seconds: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(seconds, 0).unwrap()
}

fn query(
    backend: DbBackend,
    lists: &[Uuid],
    filter: TaskFilter,
    after: Option<Cursor>,
) -> Statement {
    let query = ListQuery {
        filter,
        page_size: 50,
        after,
    };
    list_statement(backend, lists, &query).unwrap().unwrap()
}

/// The plan of `statement`, one node a line (PostgreSQL's `EXPLAIN`, SQLite's
/// `EXPLAIN QUERY PLAN`).
pub(crate) async fn explain(db: &DatabaseConnection, statement: &Statement) -> String {
    let prefix = match statement.db_backend {
        DbBackend::Postgres => "EXPLAIN ",
        _ => "EXPLAIN QUERY PLAN ",
    };
    let explained = Statement {
        sql: format!("{prefix}{}", statement.sql),
        ..statement.clone()
    };
    let column = match statement.db_backend {
        DbBackend::Postgres => "QUERY PLAN",
        _ => "detail",
    };
    db.query_all_raw(explained)
        .await
        .unwrap()
        .iter()
        .map(|row| row.try_get::<String>("", column).unwrap())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The plan line that reads all of `tasks` (or the outbox), if any.
pub(crate) fn sequential_scan(backend: DbBackend, plan: &str) -> Option<String> {
    // `t` is the tasks table's alias in GetTask's read.
    whole_table_scan(backend, plan, &["tasks", "t", "outbox", "outbox_parked"])
}

/// The plan line that reads all of one of `tables` (names or aliases), if any:
/// PostgreSQL's `Seq Scan on T`, SQLite's `SCAN T` (with or without an index; `SEARCH T
/// USING INDEX` reads a range). Other tables (`tasks_fts`, `outbox_horizon`) may be read.
pub(crate) fn whole_table_scan(backend: DbBackend, plan: &str, tables: &[&str]) -> Option<String> {
    plan.lines()
        .map(str::trim)
        .find(|line| {
            let scanned = match backend {
                DbBackend::Postgres => line.split_once("Seq Scan on ").map(|(_, rest)| rest),
                _ => line.strip_prefix("SCAN "),
            };
            scanned
                .and_then(|rest| rest.split_whitespace().next())
                .is_some_and(|table| tables.contains(&table))
        })
        .map(str::to_owned)
}

/// Writes the users, lists and tasks, and has the planner look at them. Returns the heavy
/// user's lists.
async fn seed(db: &DatabaseConnection) -> Vec<Uuid> {
    let mut lists: Vec<(Uuid, String)> = (0..USERS)
        .map(|u| {
            let user = format!("u{u}");
            (default_list_id(&user), user)
        })
        .collect();
    let heavy_lists: Vec<Uuid> = (0..HEAVY_LISTS).map(|_| Uuid::now_v7()).collect();
    lists.extend(heavy_lists.iter().map(|list| (*list, HEAVY.to_owned())));
    let rows: Vec<String> = lists
        .iter()
        .map(|(list, user)| format!("('{list}', '{user}', 'L', FALSE, NULL, 1, 1, 1, NULL)"))
        .collect();
    insert(db, "lists (id, owner_id, name, is_default, archived_at, created_at, updated_at, version, request_id)", &rows).await;
    let rows: Vec<String> = lists
        .iter()
        .map(|(list, user)| format!("('{list}', '{user}', 1, 1)"))
        .collect();
    insert(db, "list_members (list_id, user_id, role, added_at)", &rows).await;

    let mut rows = Vec::new();
    for (list, user) in &lists {
        let count = if user == HEAVY {
            PER_HEAVY_LIST
        } else {
            PER_USER
        };
        for i in 0..count {
            let id = Uuid::now_v7();
            let due = if i % 3 == 0 {
                "NULL".to_owned()
            } else {
                format!("{}", 1_800_000_000_000_000_i64 + i as i64 * 1_000_000_000)
            };
            let completed = if i % 4 == 0 {
                "1700000000000000"
            } else {
                "NULL"
            };
            let assignee = if i % 5 == 0 { "'u1'" } else { "NULL" };
            rows.push(format!(
                "('{id}', '{user}', 'task {i}', 'about task {i}', {}, '[\"t{}\"]', {due}, NULL, NULL, \
                 {completed}, {}, {}, 1, NULL, '{list}', {assignee})",
                1 + i % 4,
                i % 10,
                1_700_000_000_000_000_i64 + i as i64,
                1_700_000_000_000_000_i64 + i as i64,
            ));
        }
    }
    insert(
        db,
        "tasks (id, owner_id, title, description, priority, tags, due_at, time_zone, \
         recurrence, completed_at, created_at, updated_at, version, request_id, list_id, \
         assignee_id)",
        &rows,
    )
    .await;
    db.execute_unprepared("ANALYZE").await.unwrap();
    heavy_lists
}

async fn insert(db: &DatabaseConnection, into: &str, rows: &[String]) {
    for chunk in rows.chunks(500) {
        db.execute_unprepared(&format!("INSERT INTO {into} VALUES {}", chunk.join(", ")))
            .await
            .unwrap();
    }
}

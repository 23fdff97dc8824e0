//! The plans of a search: on a seeded table, the statement the store runs for a search
//! (caught as it runs, then explained) finds its matches through the GIN index on
//! PostgreSQL and the FTS5 table on SQLite, not by reading every task of the lists.
// Tests assert by panicking.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};

use sea_orm::{ConnectionTrait, DbBackend, Statement};

use task_service::domain::{ListQuery, NewTask, OrderBy, Priority, StatusFilter, TaskFilter};
use task_service::store::{Database, SeaTaskStore, TaskStore};

/// Alice's tasks, made through the store; one in `NEEDLE_EVERY` has the word searched for.
const TASKS: usize = 1000;
const NEEDLE_EVERY: usize = 100;
/// Everyone else's, written straight into the table.
const OTHERS: usize = 30_000;

fn filter(query: &str, order_by: OrderBy) -> TaskFilter {
    TaskFilter {
        status: StatusFilter::All,
        priority: None,
        tag: None,
        due_before: None,
        due_after: None,
        title_contains: None,
        list_id: None,
        assignee: None,
        query: Some(query.to_owned()),
        order_by,
        descending: false,
    }
}

fn new_task(i: usize) -> NewTask {
    let word = if i.is_multiple_of(NEEDLE_EVERY) {
        "needle"
    } else {
        "hay"
    };
    NewTask {
        title: format!("task {i} {word}"),
        description: format!("filler text number {i} with some more {word} words"),
        priority: Priority::Medium,
        tags: Vec::new(),
        due_at: None,
        time_zone: None,
        recurrence: None,
        request_id: None,
        list_id: None,
        assignee_id: None,
    }
}

/// Other users' tasks, `OTHERS` of them in 30 lists, as many with the word searched for:
/// the table a search runs on is mostly other people's.
fn others_tasks(backend: DbBackend) -> String {
    let (numbers, id) = match backend {
        DbBackend::Postgres => (
            format!("SELECT n FROM generate_series(1, {OTHERS}) AS s(n)"),
            "gen_random_uuid()::text",
        ),
        _ => (
            format!(
                "WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < {OTHERS}) \
                 SELECT n FROM s"
            ),
            "lower(hex(randomblob(16)))",
        ),
    };
    format!(
        "INSERT INTO tasks (id, owner_id, list_id, title, description, priority, tags, \
         created_at, updated_at, version) \
         SELECT {id}, 'other' || (n % 30), 'list' || (n % 30), \
         'their task ' || n || CASE WHEN n % {NEEDLE_EVERY} = 0 THEN ' needle' ELSE ' hay' END, \
         'filler text of theirs', 2, '[]', n, n, 1 FROM ({numbers}) AS numbers"
    )
}

/// The plan of each search statement the store runs, as text.
async fn plans(url: &str) -> Vec<String> {
    let mut db = Database::connect(url, 4, std::time::Duration::from_secs(30))
        .await
        .unwrap();
    db.migrate().await.unwrap();
    let caught: Arc<Mutex<Vec<Statement>>> = Arc::default();
    let sink = caught.clone();
    db.reader.set_metric_callback(move |info| {
        if info.statement.sql.contains("MATCH") || info.statement.sql.contains("@@") {
            sink.lock().unwrap().push(info.statement.clone());
        }
    });
    let explainer = db.writer.clone();
    let store = SeaTaskStore::new(db, Arc::default());
    let now = task_service::domain::now();
    for chunk in (0..TASKS).collect::<Vec<_>>().chunks(100) {
        let creates = chunk
            .iter()
            .map(|&i| store.create("alice", new_task(i), now));
        for created in futures::future::join_all(creates).await {
            created.unwrap();
        }
    }
    let backend = explainer.get_database_backend();
    explainer
        .execute_unprepared(&others_tasks(backend))
        .await
        .unwrap();
    // PostgreSQL plans by statistics, which autovacuum would gather by now in a database
    // in use. SQLite has none unless someone runs ANALYZE, which the service does not.
    if backend == DbBackend::Postgres {
        explainer.execute_unprepared("ANALYZE tasks").await.unwrap();
    }
    for order in [OrderBy::Relevance, OrderBy::CreateTime] {
        let query = ListQuery {
            filter: filter("needle", order),
            page_size: 50,
            after: None,
        };
        let found = store.list("alice", &query).await.unwrap();
        assert_eq!(found.len(), TASKS / NEEDLE_EVERY, "{order:?}");
    }
    let statements = caught.lock().unwrap().clone();
    assert_eq!(statements.len(), 2, "one search statement per list call");
    // For the record (a debug build, this machine): the median of 20 searches, once
    // for the matches of one word and once for a word in every task of alice's.
    for (word, order) in [
        ("needle", OrderBy::Relevance),
        ("needle", OrderBy::CreateTime),
        ("filler", OrderBy::Relevance),
        ("filler", OrderBy::CreateTime),
    ] {
        let query = ListQuery {
            filter: filter(word, order),
            page_size: 50,
            after: None,
        };
        let mut times = Vec::new();
        for _ in 0..20 {
            let start = std::time::Instant::now();
            store.list("alice", &query).await.unwrap();
            times.push(start.elapsed());
        }
        times.sort();
        println!(
            "{backend:?} {word:?} {order:?}: median {:?}",
            times[times.len() / 2]
        );
    }
    let mut out = Vec::new();
    for statement in statements {
        let explain = match backend {
            DbBackend::Postgres => "EXPLAIN ",
            _ => "EXPLAIN QUERY PLAN ",
        };
        let rows = explainer
            .query_all_raw(Statement {
                sql: format!("{explain}{}", statement.sql),
                ..statement.clone()
            })
            .await
            .unwrap();
        let column = match backend {
            DbBackend::Postgres => "QUERY PLAN",
            _ => "detail",
        };
        let plan: Vec<String> = rows
            .iter()
            .map(|row| row.try_get::<String>("", column).unwrap())
            .collect();
        out.push(format!("{}\n{}", statement.sql, plan.join("\n")));
    }
    explainer.close().await.unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_searches_through_the_gin_index() {
    let admin = taskmesh_integration::postgres::shared_admin_url().unwrap();
    let url = taskmesh_integration::postgres::fresh_database(&admin)
        .await
        .unwrap();
    for plan in plans(&url).await {
        println!("{plan}\n");
        assert!(plan.contains("idx_tasks_search"), "{plan}");
        assert!(!plan.contains("Seq Scan"), "{plan}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_searches_through_the_fts_table() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("tasks.db").display()
    );
    for plan in plans(&url).await {
        println!("{plan}\n");
        // `M` in the index name: FTS5 answers the MATCH from its index.
        assert!(plan.contains("VIRTUAL TABLE INDEX"), "{plan}");
        assert!(plan.contains(":M"), "{plan}");
        // No walk over every row of `tasks` (a SEARCH by key or an index range is fine).
        let full_scan = plan
            .lines()
            .any(|line| line.starts_with("SCAN tasks") && !line.starts_with("SCAN tasks_fts"));
        assert!(!full_scan, "{plan}");
    }
}

//! Search (`ListTasksRequest.query`) through the API, on SQLite and PostgreSQL: ranking,
//! the query language, the other filters and paging with it, the index following every
//! write, and a database with tasks migrating to it.
// Tests assert by panicking, helpers included.
#![allow(clippy::unwrap_used)]

#[allow(dead_code)]
#[path = "api/helpers.rs"]
mod helpers;

use std::collections::{HashMap, HashSet};

use sea_orm::{ConnectionTrait, DatabaseConnection, Statement};
use taskmesh_proto::tasks::v1::list_service_client::ListServiceClient;
use taskmesh_proto::tasks::v1::*;

use helpers::*;

on_both_backends!(
    title_matches_rank_first,
    the_query_language,
    hostile_queries_are_answered_or_refused,
    combines_with_filters_and_lists,
    pages_through_results_while_tasks_are_added,
    the_index_follows_every_write,
    existing_tasks_are_indexed_by_the_migration,
);

fn search(query: &str) -> ListTasksRequest {
    ListTasksRequest {
        query: Some(query.to_owned()),
        status: StatusFilter::All as i32,
        ..Default::default()
    }
}

/// The titles a search finds, every page, in order.
async fn found(client: &mut Client, req: ListTasksRequest) -> Vec<String> {
    list_all(client, req)
        .await
        .into_iter()
        .map(|t| t.title)
        .collect()
}

async fn task(client: &mut Client, title: &str, description: &str) -> Task {
    create(
        client,
        CreateTaskRequest {
            title: title.into(),
            description: description.into(),
            ..Default::default()
        },
    )
    .await
}

async fn connect(url: &str) -> DatabaseConnection {
    sea_orm::Database::connect(url).await.unwrap()
}

/// On SQLite, FTS5's own check that the index holds exactly what `tasks` does: an error
/// if a trigger missed a write or indexed other text.
async fn check_index(url: &str) {
    let db = connect(url).await;
    if db.get_database_backend() == sea_orm::DbBackend::Sqlite {
        db.execute_unprepared(
            "INSERT INTO tasks_fts (tasks_fts, rank) VALUES ('integrity-check', 1)",
        )
        .await
        .expect("tasks_fts agrees with tasks");
    }
    db.close().await.unwrap();
}

async fn title_matches_rank_first(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut alice = app.client("alice").await;
    task(&mut alice, "Buy milk", "").await;
    task(&mut alice, "Groceries", "milk and eggs").await;
    task(&mut alice, "Milk the cow", "fresh milk").await;
    task(&mut alice, "Call mom", "about the party").await;
    task(&mut alice, "Buttermilk pancakes", "").await;

    // Title and description (1.0 + 0.4), title (1.0), description (0.4).
    let best_first = ["Milk the cow", "Buy milk", "Groceries"];
    assert_eq!(found(&mut alice, search("milk")).await, best_first);
    assert_eq!(found(&mut alice, search("MILK")).await, best_first);
    let explicit = ListTasksRequest {
        order_by: OrderBy::Relevance as i32,
        ..search("milk")
    };
    assert_eq!(found(&mut alice, explicit.clone()).await, best_first);
    let worst_first = ListTasksRequest {
        descending: true,
        ..explicit
    };
    assert_eq!(
        found(&mut alice, worst_first).await,
        ["Groceries", "Buy milk", "Milk the cow"]
    );
    // Any other order applies to the matches.
    let by_creation = ListTasksRequest {
        order_by: OrderBy::CreateTime as i32,
        ..search("milk")
    };
    assert_eq!(
        found(&mut alice, by_creation).await,
        ["Buy milk", "Groceries", "Milk the cow"]
    );
    // Every word must match.
    assert_eq!(found(&mut alice, search("milk eggs")).await, ["Groceries"]);
    assert!(found(&mut alice, search("milk party")).await.is_empty());

    let err = alice
        .list_tasks(ListTasksRequest {
            order_by: OrderBy::Relevance as i32,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_invalid(&err, &["order_by"]);
    app.stop().await;
}

async fn the_query_language(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut alice = app.client("alice").await;
    task(&mut alice, "Renew passport", "at the town hall").await;
    task(&mut alice, "Book flights to Tokyo", "東京 in spring").await;
    task(&mut alice, "Café with Ana", "e-mail her first").await;
    task(&mut alice, "Plan the trip", "planning notes").await;
    task(&mut alice, "Planning poker", "").await;
    task(&mut alice, "Pay the rent (50%)", "NEAR OR AND NOT").await;

    let cases: &[(&str, &[&str])] = &[
        ("\"town hall\"", &["Renew passport"]),
        ("\"hall town\"", &[]),
        // An unclosed quote runs to the end.
        ("\"the town", &["Renew passport"]),
        ("the -passport", &["Plan the trip", "Pay the rent (50%)"]),
        ("the -\"town hall\" -rent", &["Plan the trip"]),
        ("plan", &["Plan the trip"]),
        ("plan*", &["Plan the trip", "Planning poker"]),
        ("PLAN* -poker", &["Plan the trip"]),
        ("café", &["Café with Ana"]),
        ("CAFÉ", &["Café with Ana"]),
        // Diacritics count, as PostgreSQL's `simple` configuration has it.
        ("cafe", &[]),
        ("東京", &["Book flights to Tokyo"]),
        ("e-mail", &["Café with Ana"]),
        // Either backend's operators are words like any other.
        ("NEAR OR AND NOT", &["Pay the rent (50%)"]),
        ("or", &["Pay the rent (50%)"]),
        ("rent (50%)", &["Pay the rent (50%)"]),
        ("title:passport", &[]),
        // `*` only makes a prefix at a word's end; elsewhere it is punctuation.
        ("passport*:", &["Renew passport"]),
        ("pass*port", &[]),
        // Punctuation is no word: what is left is searched.
        ("tokyo !!! ***", &["Book flights to Tokyo"]),
        // A word that is no word to PostgreSQL's parser leaves only an exclusion there,
        // which must not find everything else.
        ("½ -passport", &[]),
    ];
    for (query, expected) in cases {
        assert_eq!(&found(&mut alice, search(query)).await, expected, "{query}");
    }
    for (query, reason) in [
        ("-passport", "only excludes"),
        ("-\"town hall\" -x*", "only excludes"),
        ("*** !!! \"\"", "has no words"),
        ("🎉", "has no words"),
    ] {
        let err = alice.list_tasks(search(query)).await.unwrap_err();
        assert_invalid(&err, &["query"]);
        let details = tonic_types::StatusExt::get_error_details(&err);
        let description = &details.bad_request().unwrap().field_violations[0].description;
        assert!(description.contains(reason), "{query}: {description}");
    }
    // Longer than 200 characters.
    let err = alice
        .list_tasks(search(&"a".repeat(201)))
        .await
        .unwrap_err();
    assert_invalid(&err, &["query"]);
    app.stop().await;
}

/// Text meant to break out of either backend's query syntax, or the SQL around it: each
/// is answered, or refused as INVALID_ARGUMENT on `query`; never an internal error.
async fn hostile_queries_are_answered_or_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut alice = app.client("alice").await;
    let victim = task(
        &mut alice,
        "It's a \"quoted\" title: NEAR(x y)",
        "back\\slash",
    )
    .await;
    let hostile = [
        "\"",
        "\"\"\"",
        "'",
        "''",
        "\\",
        "\\'",
        "'; DROP TABLE tasks; --",
        "\"; DROP TABLE tasks; --",
        "NEAR(",
        "NEAR(x y)",
        "NEAR/2",
        "x NEAR y",
        "title:",
        "title:x",
        "{title description}: x",
        "- title : x",
        "^x",
        "x +",
        "x*",
        "*x",
        "x * * *",
        "(",
        "(x",
        "x)",
        "((((((((((x))))))))))",
        "x AND",
        "OR x",
        "NOT x",
        "x NOT",
        "x & y | !z",
        "x <-> y",
        "x <2> y",
        "x:*",
        "x:A",
        "x:*AB",
        "!!x",
        "-",
        "--",
        "- -x",
        "-\"",
        "a\u{0}b",
        "\u{0}",
        "\u{202e}x\u{202c}",
        "x\u{301}",
        "ि",
        "½",
        "🎉 x",
        "$1",
        "?",
        "%",
        "_",
        "it's",
        "quoted",
        "\"quoted\" title",
        "near x y",
        "back\\slash",
    ];
    let mut answered = 0;
    for query in hostile {
        match alice.list_tasks(search(query)).await {
            Ok(_) => answered += 1,
            Err(err) => assert_invalid(&err, &["query"]),
        }
    }
    // Most of them are words to look for.
    assert!(
        answered >= 35,
        "only {answered} of {} answered",
        hostile.len()
    );
    // The victim is still there and found by its words, the table intact.
    for query in [
        "it's",
        "\"quoted\" title",
        "near x y",
        "back\\slash",
        "NEAR(x y)",
    ] {
        assert_eq!(
            found(&mut alice, search(query)).await,
            std::slice::from_ref(&victim.title),
            "{query}"
        );
    }
    check_index(&app.database_url).await;
    app.stop().await;
}

async fn list_client(
    app: &TestApp,
    user: &str,
) -> ListServiceClient<
    tonic::service::interceptor::InterceptedService<
        tonic::transport::Channel,
        impl tonic::service::Interceptor + Clone + use<>,
    >,
> {
    let value: tonic::metadata::MetadataValue<_> =
        format!("Bearer {}", TestApp::token(user)).parse().unwrap();
    ListServiceClient::with_interceptor(app.channel().await, move |mut req: tonic::Request<()>| {
        req.metadata_mut().insert("authorization", value.clone());
        Ok(req)
    })
}

async fn combines_with_filters_and_lists(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut alice = app.client("alice").await;
    let mut bob = app.client("bob").await;
    let mut carol = app.client("carol").await;
    let mut alice_lists = list_client(&app, "alice").await;
    let family = alice_lists
        .create_list(CreateListRequest {
            name: "Family".into(),
            request_id: None,
        })
        .await
        .unwrap()
        .into_inner();
    alice_lists
        .add_member(AddMemberRequest {
            list_id: family.id.clone(),
            user_id: "bob".into(),
            role: Role::Viewer as i32,
        })
        .await
        .unwrap();

    let make = |title: &str, priority: Priority, tag: &str, list: Option<&str>| CreateTaskRequest {
        title: title.into(),
        priority: priority as i32,
        tags: vec![tag.into()],
        list_id: list.map(Into::into),
        due_time: ts("2030-01-02T00:00:00Z"),
        ..Default::default()
    };
    create(&mut alice, make("Milk run", Priority::High, "home", None)).await;
    create(&mut alice, make("Milk budget", Priority::Low, "work", None)).await;
    let shake = create(&mut alice, make("Milk shake", Priority::Low, "home", None)).await;
    alice
        .complete_task(CompleteTaskRequest {
            id: shake.id,
            expected_version: None,
        })
        .await
        .unwrap();
    create(
        &mut alice,
        make("Family milk", Priority::Low, "home", Some(&family.id)),
    )
    .await;
    create(
        &mut alice,
        make("Family bread", Priority::Low, "home", Some(&family.id)),
    )
    .await;
    create(&mut bob, make("Bob's milk", Priority::Low, "home", None)).await;

    let all = ["Milk run", "Milk budget", "Milk shake", "Family milk"];
    assert_eq!(found(&mut alice, search("milk")).await, all);
    let cases: Vec<(ListTasksRequest, Vec<&str>)> = vec![
        (
            ListTasksRequest {
                status: StatusFilter::Open as i32,
                ..search("milk")
            },
            vec!["Milk run", "Milk budget", "Family milk"],
        ),
        (
            ListTasksRequest {
                status: StatusFilter::Completed as i32,
                ..search("milk")
            },
            vec!["Milk shake"],
        ),
        (
            ListTasksRequest {
                tag: Some("home".into()),
                ..search("milk")
            },
            vec!["Milk run", "Milk shake", "Family milk"],
        ),
        (
            ListTasksRequest {
                priority: Priority::High as i32,
                ..search("milk")
            },
            vec!["Milk run"],
        ),
        (
            ListTasksRequest {
                list_id: Some(family.id.clone()),
                ..search("milk")
            },
            vec!["Family milk"],
        ),
        (
            ListTasksRequest {
                list_id: Some(family.id.clone()),
                ..search("family")
            },
            vec!["Family milk", "Family bread"],
        ),
        (
            ListTasksRequest {
                title_contains: Some("BUD".into()),
                ..search("milk")
            },
            vec!["Milk budget"],
        ),
        (
            ListTasksRequest {
                due_before: ts("2030-01-01T00:00:00Z"),
                ..search("milk")
            },
            vec![],
        ),
        (
            ListTasksRequest {
                assignee_id: Some(String::new()),
                order_by: OrderBy::Priority as i32,
                ..search("milk")
            },
            vec!["Milk run", "Milk budget", "Milk shake", "Family milk"],
        ),
    ];
    for (req, expected) in cases {
        assert_eq!(found(&mut alice, req.clone()).await, expected, "{req:?}");
    }
    // The title filter still works without a search.
    assert_eq!(
        found(
            &mut alice,
            ListTasksRequest {
                title_contains: Some("milk".into()),
                status: StatusFilter::All as i32,
                ..Default::default()
            }
        )
        .await,
        all
    );
    // Bob finds his own and the list shared with him; Carol finds nothing of either.
    assert_eq!(
        found(&mut bob, search("milk")).await,
        ["Family milk", "Bob's milk"]
    );
    assert!(found(&mut carol, search("milk")).await.is_empty());
    assert!(found(&mut carol, search("family")).await.is_empty());
    app.stop().await;
}

/// Ranks in tiers with many ties, paged 7 at a time while more matching and other tasks
/// are created between pages: no task twice, none of those there at the start missing,
/// and the order (rank, then id) never broken.
async fn pages_through_results_while_tasks_are_added(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut alice = app.client("alice").await;
    // (title, description, rank in tenths: 10 per title match, 4 per description match)
    let tiers = [
        ("apple pie", "", 10),
        ("pie", "apple", 4),
        ("crumble", "apple and more apple", 8),
        ("apple tart", "with apple", 14),
        ("apple apple", "apple", 24),
    ];
    let mut rank_of = HashMap::new();
    let mut existing = HashSet::new();
    for i in 0..40 {
        let (title, description, rank) = tiers[i % tiers.len()];
        let t = task(&mut alice, &format!("{title} {i}"), description).await;
        rank_of.insert(t.id.clone(), rank);
        existing.insert(t.id);
        // Four others for each match: a word in few tasks is where a rank that weighs
        // words by how many tasks have them (bm25) moves with every insert.
        for j in 0..4 {
            task(
                &mut alice,
                &format!("pear {i}.{j}"),
                "no fruit of the right kind",
            )
            .await;
        }
    }
    let mut req = ListTasksRequest {
        page_size: 7,
        ..search("apple")
    };
    let mut seen = Vec::new();
    let mut added = 0;
    loop {
        let page = alice.list_tasks(req.clone()).await.unwrap().into_inner();
        seen.extend(page.tasks.into_iter().map(|t| t.id));
        if page.next_page_token.is_empty() {
            break;
        }
        req.page_token = page.next_page_token;
        for _ in 0..2 {
            let (title, description, rank) = tiers[added % tiers.len()];
            let t = task(&mut alice, &format!("{title} late {added}"), description).await;
            rank_of.insert(t.id, rank);
            added += 1;
        }
        task(&mut alice, "pear late", "").await;
    }
    let unique: HashSet<_> = seen.iter().cloned().collect();
    assert_eq!(unique.len(), seen.len(), "a task was returned twice");
    let missing = existing.difference(&unique).count();
    assert_eq!(missing, 0, "{missing} tasks were skipped");
    for pair in seen.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        let (ra, rb) = (rank_of[a], rank_of[b]);
        assert!(
            ra > rb || (ra == rb && a < b),
            "{a} ({ra}) before {b} ({rb})"
        );
    }
    assert!(seen.len() >= 40 && seen.len() <= 40 + added);

    // A page token belongs to its query.
    let first = alice
        .list_tasks(ListTasksRequest {
            page_size: 2,
            ..search("apple")
        })
        .await
        .unwrap()
        .into_inner();
    let err = alice
        .list_tasks(ListTasksRequest {
            page_size: 2,
            page_token: first.next_page_token,
            ..search("pie")
        })
        .await
        .unwrap_err();
    assert_invalid(&err, &["page_token"]);
    check_index(&app.database_url).await;
    app.stop().await;
}

async fn the_index_follows_every_write(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut alice = app.client("alice").await;
    let t = task(&mut alice, "Water the plants", "on the balcony").await;
    assert_eq!(
        found(&mut alice, search("water")).await,
        ["Water the plants"]
    );

    let update = |title: Option<&str>, description: Option<&str>, version: i64| UpdateTaskRequest {
        id: t.id.clone(),
        title: title.map(Into::into),
        description: description.map(Into::into),
        expected_version: Some(version),
        ..Default::default()
    };
    let t2 = alice
        .update_task(update(Some("Feed the cat"), None, t.version))
        .await
        .unwrap()
        .into_inner();
    assert!(found(&mut alice, search("water")).await.is_empty());
    assert_eq!(found(&mut alice, search("cat")).await, ["Feed the cat"]);
    assert_eq!(found(&mut alice, search("balcony")).await, ["Feed the cat"]);

    let t3 = alice
        .update_task(update(None, Some("in the kitchen"), t2.version))
        .await
        .unwrap()
        .into_inner();
    assert!(found(&mut alice, search("balcony")).await.is_empty());
    assert_eq!(found(&mut alice, search("kitchen")).await, ["Feed the cat"]);
    check_index(&app.database_url).await;

    // Writes that leave the text alone leave the task found.
    alice
        .complete_task(CompleteTaskRequest {
            id: t.id.clone(),
            expected_version: Some(t3.version),
        })
        .await
        .unwrap();
    assert_eq!(
        found(&mut alice, search("cat kitchen")).await,
        ["Feed the cat"]
    );
    alice
        .reopen_task(ReopenTaskRequest {
            id: t.id.clone(),
            expected_version: None,
        })
        .await
        .unwrap();
    assert_eq!(found(&mut alice, search("cat")).await, ["Feed the cat"]);
    let other = task(&mut alice, "Feed the dog", "").await;

    alice
        .delete_task(DeleteTaskRequest {
            id: t.id.clone(),
            expected_version: None,
        })
        .await
        .unwrap();
    assert!(found(&mut alice, search("cat")).await.is_empty());
    assert_eq!(found(&mut alice, search("feed")).await, ["Feed the dog"]);
    check_index(&app.database_url).await;
    alice
        .delete_task(DeleteTaskRequest {
            id: other.id,
            expected_version: None,
        })
        .await
        .unwrap();
    assert!(found(&mut alice, search("feed")).await.is_empty());
    check_index(&app.database_url).await;
    app.stop().await;
}

/// The search migration's name, and how many migrations run from it to the last.
fn search_migration_depth() -> u32 {
    use sea_orm_migration::MigratorTrait;
    let migrations = task_service::store::migration::Migrator::migrations();
    let position = migrations
        .iter()
        .position(|m| m.name() == "m20261204_000005_task_search")
        .expect("the search migration is in the list");
    u32::try_from(migrations.len() - position).unwrap()
}

/// A database whose tasks were written before the index existed (the search migration
/// and those after it undone, then a task changed and one deleted behind the service's
/// back) is indexed by the migration when the service starts on it again.
async fn existing_tasks_are_indexed_by_the_migration(backend: Backend) {
    use sea_orm_migration::MigratorTrait;
    let dir = tempfile::tempdir().unwrap();
    let url = match backend {
        Backend::Sqlite => format!("sqlite://{}?mode=rwc", dir.path().join("old.db").display()),
        Backend::Postgres => {
            let admin = taskmesh_integration::postgres::shared_admin_url().unwrap();
            taskmesh_integration::postgres::fresh_database(&admin)
                .await
                .unwrap()
        }
    };
    let settings = [("DATABASE_URL", url.as_str())];
    let app = spawn_app_with(backend, &settings).await;
    let mut alice = app.client("alice").await;
    let mut ids = Vec::new();
    for (title, description) in [
        ("Old milk", "from before search"),
        ("Old bread", "with milk"),
        ("Old eggs", ""),
        ("Old butter", "milk fat"),
    ] {
        ids.push(task(&mut alice, title, description).await.id);
    }
    app.stop().await;

    let db = sea_orm::Database::connect(&url).await.unwrap();
    task_service::store::migration::Migrator::down(&db, Some(search_migration_depth()))
        .await
        .unwrap();
    let index_gone = match backend {
        Backend::Sqlite => "SELECT name FROM sqlite_master WHERE name LIKE 'tasks_fts%'",
        Backend::Postgres => {
            "SELECT column_name AS name FROM information_schema.columns \
             WHERE table_name = 'tasks' AND column_name = 'search'"
        }
    };
    let left = db
        .query_all_raw(Statement::from_string(
            db.get_database_backend(),
            index_gone,
        ))
        .await
        .unwrap();
    assert_eq!(left.len(), 0, "the migration's down left its index");
    let p = |n: u32| match backend {
        Backend::Sqlite => "?".to_owned(),
        Backend::Postgres => format!("${n}"),
    };
    db.execute_raw(Statement::from_sql_and_values(
        db.get_database_backend(),
        format!(
            "UPDATE tasks SET title = 'Old cheese', description = 'milk, aged' WHERE id = {}",
            p(1)
        ),
        [ids[2].clone().into()],
    ))
    .await
    .unwrap();
    db.execute_raw(Statement::from_sql_and_values(
        db.get_database_backend(),
        format!("DELETE FROM tasks WHERE id = {}", p(1)),
        [ids[3].clone().into()],
    ))
    .await
    .unwrap();
    db.close().await.unwrap();

    let app = spawn_app_with(backend, &settings).await;
    let mut alice = app.client("alice").await;
    assert_eq!(
        found(&mut alice, search("milk")).await,
        ["Old milk", "Old bread", "Old cheese"]
    );
    assert_eq!(
        found(&mut alice, search("cheese aged")).await,
        ["Old cheese"]
    );
    assert!(found(&mut alice, search("eggs")).await.is_empty());
    assert!(found(&mut alice, search("butter")).await.is_empty());
    // And it follows writes from then on.
    task(&mut alice, "New milk", "").await;
    assert_eq!(found(&mut alice, search("milk")).await.len(), 4);
    check_index(&url).await;
    app.stop().await;
}

/// FTS5 is compiled into the SQLite this workspace builds (libsqlite3-sys, bundled).
#[tokio::test]
async fn sqlite_has_fts5() {
    let db = sea_orm::Database::connect("sqlite::memory:").await.unwrap();
    let row = db
        .query_one_raw(Statement::from_string(
            sea_orm::DbBackend::Sqlite,
            "SELECT sqlite_compileoption_used('ENABLE_FTS5') AS fts5, sqlite_version() AS version",
        ))
        .await
        .unwrap()
        .unwrap();
    let fts5: i32 = row.try_get("", "fts5").unwrap();
    let version: String = row.try_get("", "version").unwrap();
    assert_eq!(fts5, 1, "SQLite {version} has no FTS5");
    db.execute_unprepared("CREATE VIRTUAL TABLE t USING fts5(a)")
        .await
        .unwrap();
}

/// `VACUUM` may renumber the rowids of a table without an INTEGER PRIMARY KEY, which
/// `tasks_fts` is keyed by; SQLite's copies the b-tree as it is and keeps them. If a
/// version ever does not, this fails rather than the searches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vacuum_keeps_the_index_in_step_on_sqlite() {
    let app = spawn_app(Backend::Sqlite).await;
    let mut alice = app.client("alice").await;
    let mut doomed = Vec::new();
    for i in 0..30 {
        let t = task(&mut alice, &format!("task {i}"), &format!("word{i}")).await;
        if i % 3 == 0 {
            doomed.push(t.id);
        }
    }
    for id in doomed {
        alice
            .delete_task(DeleteTaskRequest {
                id,
                expected_version: None,
            })
            .await
            .unwrap();
    }
    let db = connect(&app.database_url).await;
    db.execute_unprepared("VACUUM").await.unwrap();
    db.close().await.unwrap();
    check_index(&app.database_url).await;
    for i in 0..30 {
        let expected: Vec<String> = if i % 3 == 0 {
            vec![]
        } else {
            vec![format!("task {i}")]
        };
        assert_eq!(
            found(&mut alice, search(&format!("word{i}"))).await,
            expected
        );
    }
    app.stop().await;
}

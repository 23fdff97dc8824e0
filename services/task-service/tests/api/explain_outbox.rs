//! Plans, not hopes, for the outbox: every statement the relay (`outbox::statements`) and
//! the watch feed (`outbox::feed::statements`) run, explained on a seeded outbox, reads
//! `outbox` and `outbox_parked` through an index, never by a sequential scan; and the
//! relay reads its pending rows in seq order from an index, never by sorting them.

use chrono::{DateTime, Duration, Utc};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement};
use task_service::outbox::feed::{Cursor, Gap, statements as feed};
use task_service::outbox::statements as relay;
use uuid::Uuid;

use crate::explain::{explain, sequential_scan, whole_table_scan};
use crate::helpers::*;
use crate::on_both_backends;

on_both_backends!(every_outbox_statement_uses_an_index);

/// Outbox rows: five events per task, a task's events in one list.
const ROWS: i64 = 120_000;
const EVENTS_PER_TASK: i64 = 5;
const LISTS: i64 = 2_000;
/// The newest rows, not yet published.
const UNPUBLISHED: i64 = 3_000;
/// One task in this many had its third event parked; its later events wait behind it.
const HELD_EVERY: i64 = 20;
/// One task in this many (of the others) had its last event parked: thousands of parked
/// events, as a sidecar refusing one kind of event for hours leaves.
const PARKED_LAST_EVERY: i64 = 3;
/// One row in this many moved its task: it names the list the task left.
const MOVED_EVERY: i64 = 97;
/// Microseconds between two rows' commits.
const SPACING: i64 = 1_000;

/// A statement, what it is for, and the tables it reads whole by design (its answer is
/// the whole table).
struct Explained {
    name: &'static str,
    statement: Statement,
    reads_whole: &'static [&'static str],
    /// Its rows must come in seq order from an index: a sort would read them all first.
    in_index_order: bool,
    /// Indexes its plan must read (where a range of the primary key would be most of the
    /// table).
    uses: &'static [&'static str],
}

async fn every_outbox_statement_uses_an_index(backend: Backend) {
    // The service migrates the database; the rows are written straight into it. Every row
    // is younger than the relay's retention, so its pruning deletes none meanwhile.
    let app = spawn_app(backend).await;
    let db = sea_orm::Database::connect(&app.database_url).await.unwrap();
    let start = Utc::now() - Duration::hours(2);
    let seeded = seed(&db, start).await;
    let backend = db.get_database_backend();
    let count = |sql: &'static str| {
        let db = &db;
        async move {
            db.query_one_raw(Statement::from_string(backend, sql))
                .await
                .unwrap()
                .unwrap()
                .try_get::<i64>("", "n")
                .unwrap()
        }
    };
    let found = Seeded {
        rows: count("SELECT COUNT(*) AS n FROM outbox").await,
        pending: count("SELECT COUNT(*) AS n FROM outbox WHERE published_at IS NULL").await,
        parked: count("SELECT COUNT(*) AS n FROM outbox_parked").await,
    };
    assert_eq!(found, seeded);
    assert!(seeded.rows > 100_000 && seeded.parked > 5_000, "{seeded:?}");

    let statements = statements(backend, start);

    // The detectors themselves: a whole read of the outbox, by a scan or along an index
    // (the primary key walked down from the newest row), and a sort of it, are caught.
    let unindexed = Statement::from_string(backend, "SELECT * FROM outbox WHERE payload = 'x'");
    assert!(
        sequential_scan(backend, &explain(&db, &unindexed).await).is_some(),
        "a scan went unnoticed"
    );
    let walked = Statement::from_string(
        backend,
        format!(
            "SELECT MAX(seq) AS n FROM outbox WHERE published_at < {}",
            (start + Duration::seconds(5)).timestamp_micros()
        ),
    );
    let plan = explain(&db, &walked).await;
    assert!(
        whole_index_read(backend, &plan, &walked.sql, &["outbox"]).is_some(),
        "a walk along an index went unnoticed:\n{plan}"
    );
    let unordered = Statement::from_string(
        backend,
        "SELECT * FROM outbox WHERE published_at IS NULL ORDER BY created_at LIMIT 10",
    );
    assert!(
        sort(backend, &explain(&db, &unordered).await).is_some(),
        "a sort went unnoticed"
    );

    let mut failures = Vec::new();
    for explained in &statements {
        let plan = explain(&db, &explained.statement).await;
        println!("{}:\n{}\n{plan}\n", explained.name, explained.statement.sql);
        let watched: Vec<&str> = ["outbox", "outbox_parked", "tasks"]
            .into_iter()
            .filter(|table| !explained.reads_whole.contains(table))
            .collect();
        if let Some(scan) = whole_table_scan(backend, &plan, &watched)
            .or_else(|| whole_index_read(backend, &plan, &explained.statement.sql, &watched))
        {
            failures.push(format!(
                "{} reads a table whole:\n{}\n  -> {scan}\n{plan}",
                explained.name, explained.statement.sql
            ));
        }
        if explained.in_index_order
            && let Some(sort) = sort(backend, &plan)
        {
            failures.push(format!(
                "{} sorts instead of reading in seq order:\n{}\n  -> {sort}\n{plan}",
                explained.name, explained.statement.sql
            ));
        }
        for index in explained.uses {
            if !plan.contains(index) {
                failures.push(format!(
                    "{} does not read {index}:\n{}\n{plan}",
                    explained.name, explained.statement.sql
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} statements read a table whole or sort it:\n{}",
        failures.len(),
        statements.len(),
        failures.join("\n\n")
    );

    // The catch-up reads its two halves apart: it returns what the single WHERE did, a
    // row that moved between two of the lists once.
    let lists: Vec<Uuid> = (0..20).map(list_id).collect();
    let to = Cursor::at(ROWS);
    let mut moved_within = 0;
    for from in [Cursor::at(0), Cursor::at(ROWS - 20_000)] {
        for lists in [&lists[..1], &lists[..]] {
            let after = from.first_uncovered() - 1;
            let rows = seqs(&db, feed::between(backend, &from, &to, lists, after, 500)).await;
            let single = seqs(&db, single_where(backend, &from, &to, lists, after, 500)).await;
            assert!(
                !rows.is_empty(),
                "lists {}, from {}",
                lists.len(),
                from.high
            );
            assert_eq!(rows, single, "lists {}, from {}", lists.len(), from.high);
            // Rows whose task moved from one of the lists to the next, also in them.
            moved_within += rows
                .iter()
                .filter(|&&seq| {
                    let list = (seq - 1) / EVENTS_PER_TASK % LISTS;
                    seq % MOVED_EVERY == 0 && list + 1 < lists.len() as i64
                })
                .count();
        }
    }
    assert!(moved_within > 0, "no row moved between two watched lists");
    db.close().await.unwrap();
    app.stop().await;
}

async fn seqs(db: &DatabaseConnection, statement: Statement) -> Vec<i64> {
    db.query_all_raw(statement)
        .await
        .unwrap()
        .iter()
        .map(|row| row.try_get::<i64>("", "seq").unwrap())
        .collect()
}

/// The catch-up as one WHERE, as it was written before it read its halves apart (no gaps
/// in `from`).
fn single_where(
    backend: DbBackend,
    from: &Cursor,
    to: &Cursor,
    lists: &[Uuid],
    after: i64,
    limit: u64,
) -> Statement {
    let placeholders: Vec<String> = (1..=lists.len())
        .map(|n| match backend {
            DbBackend::Postgres => format!("${n}"),
            _ => format!("?{n}"),
        })
        .collect();
    let placeholders = placeholders.join(", ");
    let sql = format!(
        "SELECT seq FROM outbox WHERE seq > {after} AND seq <= {} AND seq > {} \
         AND (list_id IN ({placeholders}) OR previous_list_id IN ({placeholders})) \
         ORDER BY seq LIMIT {limit}",
        to.high, from.high
    );
    let values: Vec<sea_orm::Value> = lists.iter().map(|list| list.to_string().into()).collect();
    Statement::from_sql_and_values(backend, sql, values)
}

fn statements(backend: DbBackend, start: DateTime<Utc>) -> Vec<Explained> {
    let at = |seq: i64| start + Duration::microseconds(seq * SPACING);
    let head = ROWS;
    let seqs: Vec<i64> = (head - 600..head - 100).collect();
    let mut out = vec![
        Explained {
            name: "relay pending (one event)",
            statement: relay::pending(backend, 1),
            reads_whole: &[],
            in_index_order: true,
            uses: &[],
        },
        Explained {
            name: "relay pending (a batch)",
            statement: relay::pending(backend, 500),
            reads_whole: &[],
            in_index_order: true,
            uses: &[],
        },
        Explained {
            name: "relay mark_published",
            statement: relay::mark_published(backend, &seqs, Utc::now()),
            reads_whole: &[],
            in_index_order: false,
            uses: &[],
        },
        Explained {
            name: "relay record_attempt",
            statement: relay::record_attempt(backend, &seqs[..3]),
            reads_whole: &[],
            in_index_order: false,
            uses: &[],
        },
        Explained {
            name: "relay park: read the row",
            statement: relay::unpublished(backend, head - 5),
            reads_whole: &[],
            in_index_order: false,
            uses: &[],
        },
        Explained {
            name: "relay park: delete the row",
            statement: relay::delete(backend, head - 5),
            reads_whole: &[],
            in_index_order: false,
            uses: &[],
        },
        Explained {
            name: "relay backlog",
            statement: relay::backlog(backend),
            reads_whole: &[],
            in_index_order: false,
            uses: &[],
        },
        Explained {
            // A count of every parked row reads them all (or an index of them all).
            name: "relay backlog: parked count",
            statement: relay::parked_count(backend),
            reads_whole: &["outbox_parked"],
            in_index_order: false,
            uses: &[],
        },
        Explained {
            name: "relay raise the pruned horizon",
            statement: relay::raise_horizon(backend, head / 2),
            reads_whole: &[],
            in_index_order: false,
            uses: &[],
        },
        Explained {
            name: "operator: every parked event",
            statement: relay::parked(backend),
            reads_whole: &["outbox_parked"],
            in_index_order: false,
            uses: &[],
        },
        Explained {
            name: "operator: retry every parked event",
            statement: relay::parked_all(backend),
            reads_whole: &["outbox_parked"],
            in_index_order: false,
            uses: &[],
        },
        Explained {
            name: "operator: retry a parked event by seq",
            statement: relay::parked_one(backend, &(3 * EVENTS_PER_TASK + 3).to_string()),
            reads_whole: &[],
            in_index_order: false,
            uses: &[],
        },
        Explained {
            name: "operator: retry a parked event by event id",
            statement: relay::parked_one(backend, &event_id(3 * EVENTS_PER_TASK + 3)),
            reads_whole: &[],
            in_index_order: false,
            uses: &[],
        },
        Explained {
            name: "operator: retry deletes the parked row",
            statement: relay::unpark(backend, 3),
            reads_whole: &[],
            in_index_order: false,
            uses: &[],
        },
        Explained {
            name: "watch: the highest seq",
            statement: feed::highest(backend),
            reads_whole: &[],
            in_index_order: false,
            uses: &[],
        },
        Explained {
            name: "watch: the start window",
            statement: feed::tail(backend, head, 1024),
            reads_whole: &[],
            in_index_order: false,
            uses: &[],
        },
        Explained {
            name: "watch: the pruned horizon",
            statement: feed::pruned_through(backend),
            reads_whole: &[],
            in_index_order: false,
            uses: &[],
        },
    ];
    // Pruning as the relay runs it (a day's retention: nothing older), and after an hour's
    // worth of rows has aged past it.
    for (name, before) in [
        ("nothing to prune", start - Duration::hours(22)),
        ("a slice to prune", at(ROWS / 20)),
    ] {
        out.push(Explained {
            name: leak(format!("relay prune ({name}): the horizon")),
            statement: relay::pruned_horizon(backend, before),
            reads_whole: &[],
            in_index_order: false,
            uses: &[],
        });
        out.push(Explained {
            name: leak(format!("relay prune ({name}): a batch")),
            statement: relay::prune_batch(backend, before),
            reads_whole: &[],
            in_index_order: false,
            uses: &[],
        });
    }
    // The poller near the head, with transactions in flight below it; watched or not.
    let gaps =
        |seqs: &[i64]| -> Vec<Gap> { seqs.iter().map(|&seq| Gap { seq, until_ms: 0 }).collect() };
    let near_head = Cursor {
        high: head - 50,
        gaps: gaps(&[head - 90, head - 70]),
    };
    for (name, cursor) in [
        ("at the head", Cursor::at(head)),
        ("near the head with gaps", near_head.clone()),
        ("behind", Cursor::at(head - 30_000)),
        (
            "behind with gaps",
            Cursor {
                high: head - 30_000,
                gaps: gaps(&[head - 30_040, head - 30_020]),
            },
        ),
    ] {
        for payload in [false, true] {
            out.push(Explained {
                name: leak(format!("watch poll ({name}, payload {payload})")),
                statement: feed::after(backend, &cursor, 1000, payload),
                reads_whole: &[],
                in_index_order: false,
                uses: &[],
            });
        }
    }
    // Catch-up of one list and of a user's many lists: a minute behind, an hour behind
    // with gaps, and from a day-old token (from the start).
    let to = Cursor {
        high: head,
        gaps: gaps(&[head - 3]),
    };
    let lists: Vec<Uuid> = (0..20).map(list_id).collect();
    let hour_behind = Cursor {
        high: head - 3_600,
        gaps: gaps(&[head - 3_610, head - 3_605]),
    };
    // From the start, the range of seqs is the whole outbox: the rows must come from the
    // indexes over (list, seq).
    let by_list: &[&str] = &["idx_outbox_list_seq", "idx_outbox_previous_list_seq"];
    for (name, from, uses) in [
        ("a minute behind", Cursor::at(head - 60), &[][..]),
        ("an hour behind with gaps", hour_behind, &[]),
        ("from the start", Cursor::at(0), by_list),
    ] {
        for lists in [&lists[..1], &lists[..]] {
            let after = from.first_uncovered() - 1;
            out.push(Explained {
                name: leak(format!("watch catch-up ({name}, {} lists)", lists.len())),
                statement: feed::between(backend, &from, &to, lists, after, 500),
                reads_whole: &[],
                in_index_order: false,
                uses,
            });
        }
    }
    out
}

/// The plan line that reads one of `tables` whole along an index, if any: on PostgreSQL an
/// index scan with no condition on the index (or only `IS NOT NULL`) that filters what it
/// reads, or that has neither (every row in index order); on SQLite a bare `SEARCH T`, the
/// MIN/MAX shortcut walking the primary key from one end, when the statement filters
/// (without a WHERE it reads one row).
fn whole_index_read(backend: DbBackend, plan: &str, sql: &str, tables: &[&str]) -> Option<String> {
    let lines: Vec<&str> = plan.lines().map(str::trim).collect();
    match backend {
        DbBackend::Postgres => lines.iter().enumerate().find_map(|(at, line)| {
            let node = line.trim_start_matches("->").trim_start();
            if !(node.starts_with("Index Scan") || node.starts_with("Index Only Scan")) {
                return None;
            }
            let table = node.split_once(" on ")?.1.split_whitespace().next()?;
            if !tables.contains(&table) {
                return None;
            }
            // The node's own lines, up to the next node or subplan.
            let details: Vec<&str> = lines[at + 1..]
                .iter()
                .copied()
                .take_while(|line| {
                    !line.starts_with("->")
                        && !line.starts_with("SubPlan")
                        && !line.starts_with("InitPlan")
                })
                .collect();
            let bounded = details.iter().any(|line| {
                line.strip_prefix("Index Cond: ")
                    .is_some_and(|cond| !cond.ends_with(" IS NOT NULL)"))
            });
            let conditioned = details.iter().any(|line| line.starts_with("Index Cond: "));
            let filters = details.iter().any(|line| line.starts_with("Filter: "));
            (!bounded && (filters || !conditioned)).then(|| (*line).to_owned())
        }),
        _ => lines
            .iter()
            .find(|line| {
                line.strip_prefix("SEARCH ")
                    .is_some_and(|table| tables.contains(&table))
                    && sql.contains(" WHERE ")
            })
            .map(|line| (*line).to_owned()),
    }
}

/// The plan line that sorts, if any.
fn sort(backend: DbBackend, plan: &str) -> Option<String> {
    plan.lines()
        .map(str::trim)
        .find(|line| match backend {
            DbBackend::Postgres => {
                let node = line.trim_start_matches("->").trim_start();
                node.starts_with("Sort ") || node.starts_with("Incremental Sort ")
            }
            _ => line.starts_with("USE TEMP B-TREE FOR"),
        })
        .map(str::to_owned)
}

fn leak(name: String) -> &'static str {
    Box::leak(name.into_boxed_str())
}

fn list_id(list: i64) -> Uuid {
    Uuid::from_u128(0x2000_0000_0000_0000_0000_0000_0000_0000 + list as u128)
}

fn event_id(seq: i64) -> String {
    Uuid::from_u128(0x1000_0000_0000_0000_0000_0000_0000_0000 + seq as u128).to_string()
}

fn task_id(task: i64) -> String {
    Uuid::from_u128(task as u128).to_string()
}

/// Writes the outbox and `outbox_parked`, and has the planner look at them. Row `seq`
/// belongs to task `(seq - 1) / EVENTS_PER_TASK`, in list `task % LISTS`; one task in
/// `HELD_EVERY` had its third event parked (the row is in `outbox_parked`, not in
/// `outbox`) and its later events are pending, one in `PARKED_LAST_EVERY` of the others
/// its last event; the newest `UNPUBLISHED` are pending.
async fn seed(db: &DatabaseConnection, start: DateTime<Utc>) -> Seeded {
    let start = start.timestamp_micros();
    let mut rows = Vec::new();
    let mut parked = Vec::new();
    let mut pending = 0;
    for seq in 1..=ROWS {
        let task = (seq - 1) / EVENTS_PER_TASK;
        let event = (seq - 1) % EVENTS_PER_TASK;
        let held = task % HELD_EVERY == 3;
        let parked_last = !held && task % PARKED_LAST_EVERY == 1;
        let created = start + seq * SPACING;
        let columns = format!(
            "{seq}, '{}', '{}', 'task.updated', '{{}}', {created}",
            event_id(seq),
            task_id(task),
        );
        if (held && event == 2) || (parked_last && event == EVENTS_PER_TASK - 1) {
            parked.push(format!(
                "({columns}, 5, 'refused', {})",
                created + 1_000_000
            ));
            continue;
        }
        let published = if (held && event > 2) || seq > ROWS - UNPUBLISHED {
            "NULL".to_owned()
        } else {
            (created + 500).to_string()
        };
        let list = list_id(task % LISTS);
        let previous = if seq % MOVED_EVERY == 0 {
            format!("'{}'", list_id((task + 1) % LISTS))
        } else {
            "NULL".to_owned()
        };
        rows.push(format!("({columns}, {published}, 0, '{list}', {previous})"));
        pending += i64::from(published == "NULL");
    }
    insert(
        db,
        "outbox (seq, event_id, task_id, event_type, payload, created_at, published_at, \
         attempts, list_id, previous_list_id)",
        &rows,
    )
    .await;
    insert(
        db,
        "outbox_parked (seq, event_id, task_id, event_type, payload, created_at, attempts, \
         reason, parked_at)",
        &parked,
    )
    .await;
    if db.get_database_backend() == DbBackend::Postgres {
        db.execute_unprepared(&format!(
            "SELECT setval(pg_get_serial_sequence('outbox', 'seq'), {ROWS})"
        ))
        .await
        .unwrap();
    }
    db.execute_unprepared("ANALYZE").await.unwrap();
    Seeded {
        rows: rows.len() as i64,
        pending,
        parked: parked.len() as i64,
    }
}

/// Rows in the outbox, of them unpublished, and rows in `outbox_parked`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Seeded {
    rows: i64,
    pending: i64,
    parked: i64,
}

async fn insert(db: &DatabaseConnection, into: &str, rows: &[String]) {
    for chunk in rows.chunks(1000) {
        db.execute_unprepared(&format!("INSERT INTO {into} VALUES {}", chunk.join(", ")))
            .await
            .unwrap();
    }
}

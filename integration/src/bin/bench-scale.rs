//! `just bench-scale [tasks]`: task-service's cost as its database grows (issue 19, §1).
//!
//! For each backend (SQLite, PostgreSQL) and each size (10,000 tasks, then `tasks`,
//! 1,000,000 by default), task-service migrates a fresh database, the bench seeds it with
//! bulk SQL (users with 100 tasks each, a hundredth of `tasks` users, plus one heavy user
//! with a tenth of `tasks` more, over 10 lists, with tags, due times, completions and
//! searchable words), then starts task-service again on each and drives the public gRPC
//! API of both in alternating rounds (small then large, large then small, ...), so that a
//! machine whose speed drifts during the run (a shared one does) skews both sides alike:
//! CreateTask, GetTask, ListTasks first page, ListTasks page 100 by keyset, the heavy
//! user's tasks filtered by tag, due range and status, and search. Prints rate, p50 and
//! p99 at both sizes, their ratios, task-service's peak RSS, bytes on disk per task, and
//! last `bench-scale: worst ratio X.XXx (target <= 1.30x)`.
//!
//! With `BENCH_SCALE_RELAY=1` (or the argument `relay`) it also measures the outbox relay
//! draining a backlog of 10,000 and of `tasks` seeded events, through real daprd on Redis.
//!
//! `BENCH_SCALE_TASKS` (or the first argument), `BENCH_SCALE_SMALL` (10,000), `BENCH_SECS`
//! (6 per operation and size), `BENCH_ROUNDS` (6), `BENCH_CONCURRENCY` (16),
//! `BENCH_BACKENDS` (sqlite,postgres) and `BENCH_SCALE_PLANS` (1: PostgreSQL's plans of the heavy user's queries, via
//! auto_explain, printed after the large database's run) change the run.
#![forbid(unsafe_code)]

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, Statement, TransactionTrait,
};
use taskmesh_integration::bench::{Load, drive, env_or, metric, peak_rss_mb, wait_for_metric};
use taskmesh_integration::net::free_port;
use taskmesh_integration::postgres::{self, Durability, PgCluster};
use taskmesh_integration::redis_server::RedisServer;
use taskmesh_integration::services::{ServiceProcess, unlimited};
use taskmesh_integration::sidecar::{Broker, Daprd, DaprdOptions, Resources};
use taskmesh_proto::tasks::v1::task_service_client::TaskServiceClient;
use taskmesh_proto::tasks::v1::{
    CreateTaskRequest, GetTaskRequest, ListTasksRequest, ListTasksResponse, OrderBy, StatusFilter,
};
use taskmesh_shared::events::{TaskEvent, TaskEventData, TaskEventKind, TaskSnapshot};
use tonic::Request;
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::Channel;
use uuid::Uuid;

const SECRET: &str = "bench-secret-0123456789abcdef0123456789abcdef";
const HEAVY: &str = "scale-heavy";
/// The heavy user's number in task ids: the same at every size.
const HEAVY_NO: usize = 0xffff_ffff;
const HEAVY_LISTS: usize = 10;
const LIGHT_TASKS: usize = 100;
const ROWS_PER_INSERT: usize = 1000;
const INSERTS_PER_TRANSACTION: usize = 20;
/// Each tag is on a tenth of a user's tasks, each title word `w<n>` on a hundredth.
const TAGS: usize = 10;
const WORDS: usize = 100;
/// The keyset walk's page size: page 100 exists for the heavy user at every size.
const WALK_PAGE: i32 = 10;
const PAGE: i32 = 50;
/// Due times spread over this many minutes from seeding; the due-range filter asks for
/// the 10,000 minutes from minute 10,000, a tenth of them: a full page at both sizes (a
/// hundredth gave 10 tasks at 10,000 and 50 at 1,000,000, so the sizes differed in what
/// they answered, not only in what they searched).
const DUE_SPREAD_MINUTES: i64 = 100_000;
/// task-service's own copy: `task_service::lists::default_list_id` (whose test pins it).
const DEFAULT_LIST_NAMESPACE: Uuid = Uuid::from_u128(0x7a5c_6e2e_5b1d_4f0a_9c37_0e9b_1f64_d2a1);

fn default_list_id(user: &str) -> Uuid {
    Uuid::new_v5(&DEFAULT_LIST_NAMESPACE, user.as_bytes())
}

fn light_user(i: usize) -> String {
    format!("scale-{i}")
}

/// Task `k` of user number `user_no`, known to the bench without reading it back.
fn task_id(user_no: usize, k: usize) -> String {
    format!("{user_no:08x}-0000-4000-8000-{k:012x}")
}

fn heavy_list_id(n: usize) -> String {
    if n == 0 {
        default_list_id(HEAVY).to_string()
    } else {
        format!("5ca1e000-0000-4000-8000-{n:012x}")
    }
}

/// How many tasks of whom.
#[derive(Debug, Clone, Copy)]
struct Shape {
    light_users: usize,
    heavy_tasks: usize,
}

impl Shape {
    /// `tasks / 100` users with 100 tasks each, and a heavy user with `tasks / 10` (at
    /// least enough for page 100 of the keyset walk).
    fn of(tasks: usize) -> Self {
        Self {
            light_users: (tasks / LIGHT_TASKS).max(1),
            heavy_tasks: (tasks / 10).max(100 * WALK_PAGE as usize),
        }
    }

    fn tasks(self) -> usize {
        self.light_users * LIGHT_TASKS + self.heavy_tasks
    }
}

fn micros_now() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

/// The values of one task row, in `TASK_COLUMNS`' order. `g` picks its content, so that
/// every user's tasks spread alike over tags, words, due times and statuses.
fn task_values(
    user: &str,
    user_no: usize,
    k: usize,
    count: usize,
    list: &str,
    base: i64,
) -> String {
    let g = k;
    let created = base - (count - k) as i64 * 1_000_000;
    let due = if g.is_multiple_of(5) {
        "NULL".to_owned()
    } else {
        (base + ((g as i64 * 7919) % DUE_SPREAD_MINUTES) * 60_000_000).to_string()
    };
    let completed = if g.is_multiple_of(4) {
        (created + 3_600_000_000).to_string()
    } else {
        "NULL".to_owned()
    };
    let tags = if g.is_multiple_of(3) {
        format!("[\"t{}\",\"home\"]", g % TAGS)
    } else {
        format!("[\"t{}\"]", g % TAGS)
    };
    format!(
        "('{id}','{user}','Task {k} about w{word}','Notes on task {k} of {user}: check the t{tag} details',\
         {priority},'{tags}',{due},NULL,NULL,{completed},{created},{created},1,NULL,'{list}',NULL)",
        id = task_id(user_no, k),
        word = (g / 7) % WORDS,
        tag = g % TAGS,
        priority = 1 + g % 4,
    )
}

const TASK_COLUMNS: &str = "INSERT INTO tasks (id, owner_id, title, description, priority, tags, \
    due_at, time_zone, recurrence, completed_at, created_at, updated_at, version, request_id, \
    list_id, assignee_id) VALUES ";

/// Runs `statements` in transactions of `INSERTS_PER_TRANSACTION`.
async fn run_batched(
    db: &DatabaseConnection,
    statements: impl Iterator<Item = String>,
) -> anyhow::Result<()> {
    let mut statements = statements.peekable();
    while statements.peek().is_some() {
        let txn = db.begin().await?;
        for sql in statements.by_ref().take(INSERTS_PER_TRANSACTION) {
            txn.execute_unprepared(&sql).await?;
        }
        txn.commit().await?;
    }
    Ok(())
}

/// Multi-row INSERTs of `rows`, `ROWS_PER_INSERT` at a time.
fn inserts(head: &'static str, rows: impl Iterator<Item = String>) -> impl Iterator<Item = String> {
    let mut rows = rows.peekable();
    std::iter::from_fn(move || {
        rows.peek()?;
        let chunk: Vec<String> = rows.by_ref().take(ROWS_PER_INSERT).collect();
        Some(format!("{head}{}", chunk.join(",")))
    })
}

/// Lists, memberships and tasks of `shape`, into a database task-service has migrated.
async fn seed(db: &DatabaseConnection, shape: Shape, base: i64) -> anyhow::Result<()> {
    let mut lists = Vec::new();
    for i in 0..shape.light_users {
        lists.push((
            default_list_id(&light_user(i)).to_string(),
            light_user(i),
            true,
        ));
    }
    for n in 0..HEAVY_LISTS {
        lists.push((heavy_list_id(n), HEAVY.to_owned(), n == 0));
    }
    let list_rows = lists.iter().map(|(id, owner, default)| {
        let name = if *default {
            "Tasks".to_owned()
        } else {
            format!("List {id}")
        };
        format!(
            "('{id}','{owner}','{name}',{},NULL,{base},{base},1,NULL)",
            if *default { "TRUE" } else { "FALSE" }
        )
    });
    run_batched(
        db,
        inserts(
            "INSERT INTO lists (id, owner_id, name, is_default, archived_at, created_at, \
             updated_at, version, request_id) VALUES ",
            list_rows,
        ),
    )
    .await?;
    let member_rows = lists
        .iter()
        .map(|(id, owner, _)| format!("('{id}','{owner}',1,{base})"));
    run_batched(
        db,
        inserts(
            "INSERT INTO list_members (list_id, user_id, role, added_at) VALUES ",
            member_rows,
        ),
    )
    .await?;

    let light = (0..shape.light_users).flat_map(move |i| {
        let user = light_user(i);
        let list = default_list_id(&user).to_string();
        (0..LIGHT_TASKS).map(move |k| task_values(&user, i, k, LIGHT_TASKS, &list, base))
    });
    let heavy = (0..shape.heavy_tasks).map(move |k| {
        task_values(
            HEAVY,
            HEAVY_NO,
            k,
            shape.heavy_tasks,
            // Blocks of 100 consecutive tasks per list: tags, statuses and due times
            // (which follow `k % 10`, `% 4`, `% 5`) then spread evenly over every list.
            // (`k % HEAVY_LISTS` put each tag in one list only, and completed tasks in
            // every other one: a filter then scanned whole lists without a match.)
            &heavy_list_id((k / 100) % HEAVY_LISTS),
            base,
        )
    });
    run_batched(db, inserts(TASK_COLUMNS, light.chain(heavy))).await
}

async fn scalar(db: &DatabaseConnection, sql: &str) -> anyhow::Result<i64> {
    let row = db
        .query_one_raw(Statement::from_string(db.get_database_backend(), sql))
        .await?
        .with_context(|| format!("no row from {sql}"))?;
    Ok(row.try_get_by_index::<i64>(0)?)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
        }
    }
}

/// Where a backend's databases live.
enum Place<'a> {
    Sqlite(&'a Path),
    Postgres(&'a PgCluster),
}

impl Place<'_> {
    fn backend(&self) -> Backend {
        match self {
            Self::Sqlite(_) => Backend::Sqlite,
            Self::Postgres(_) => Backend::Postgres,
        }
    }

    /// A fresh database's URL, named after `label` on SQLite.
    async fn database(&self, label: &str) -> anyhow::Result<String> {
        match self {
            Self::Sqlite(dir) => Ok(format!(
                "sqlite://{}?mode=rwc",
                dir.join(format!("{label}.db")).display()
            )),
            Self::Postgres(cluster) => postgres::fresh_database(&cluster.socket_admin_url()).await,
        }
    }
}

fn service_env(database_url: &str) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = unlimited().into();
    env.extend([
        ("DATABASE_URL".to_owned(), database_url.to_owned()),
        ("TASKMESH_JWT_SECRET".to_owned(), SECRET.to_owned()),
        ("RUST_LOG".to_owned(), "warn".to_owned()),
    ]);
    env
}

/// task-service migrates `url`'s database and stops; the bench seeds it and makes it
/// look like a database in service (a checkpointed WAL; PostgreSQL's statistics, which
/// autovacuum keeps). The time seeding took and the bytes on disk per task.
async fn prepare(
    place: &Place<'_>,
    url: &str,
    shape: Shape,
    base: i64,
) -> anyhow::Result<(Duration, f64)> {
    drop(ServiceProcess::start("task-service", service_env(url))?);
    let db = Database::connect(
        ConnectOptions::new(url.to_owned())
            .max_connections(1)
            .to_owned(),
    )
    .await?;
    let started = Instant::now();
    seed(&db, shape, base).await?;
    let took = started.elapsed();
    let rows = scalar(&db, "SELECT COUNT(*) FROM tasks").await?;
    anyhow::ensure!(
        rows as usize == shape.tasks(),
        "seeded {rows} tasks, expected {}",
        shape.tasks()
    );
    let bytes = match place {
        Place::Sqlite(_) => {
            db.execute_unprepared("PRAGMA wal_checkpoint(TRUNCATE)")
                .await?;
            let path = url
                .strip_prefix("sqlite://")
                .and_then(|rest| rest.split('?').next())
                .context("no SQLite path")?;
            let size = |p: String| std::fs::metadata(p).map_or(0, |m| m.len());
            size(path.to_owned()) + size(format!("{path}-wal"))
        }
        Place::Postgres(_) => {
            db.execute_unprepared("VACUUM ANALYZE").await?;
            scalar(&db, "SELECT pg_total_relation_size('tasks')").await? as u64
        }
    };
    db.close().await?;
    Ok((took, bytes as f64 / rows as f64))
}

type Call = Arc<
    dyn Fn(usize, u64) -> Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>> + Send + Sync,
>;

/// The calls of one database's run, as its users.
#[derive(Clone)]
struct Api {
    channels: Arc<Vec<Channel>>,
    light: Arc<Vec<AsciiMetadataValue>>,
    heavy: AsciiMetadataValue,
    shape: Shape,
    base: i64,
}

fn bearer(user: &str) -> anyhow::Result<AsciiMetadataValue> {
    let token =
        taskmesh_shared::auth::mint(SECRET.as_bytes(), user, Duration::from_secs(24 * 3600))?;
    Ok(format!("Bearer {token}").parse()?)
}

fn timestamp(micros: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: micros.div_euclid(1_000_000),
        nanos: (micros.rem_euclid(1_000_000) * 1000) as i32,
    }
}

impl Api {
    async fn connect(endpoint: &str, shape: Shape, base: i64) -> anyhow::Result<Self> {
        let mut channels = Vec::new();
        for _ in 0..4 {
            channels.push(Channel::from_shared(endpoint.to_owned())?.connect().await?);
        }
        Ok(Self {
            channels: Arc::new(channels),
            light: Arc::new(
                (0..shape.light_users)
                    .map(|i| bearer(&light_user(i)))
                    .collect::<anyhow::Result<_>>()?,
            ),
            heavy: bearer(HEAVY)?,
            shape,
            base,
        })
    }

    fn client(&self, w: usize) -> TaskServiceClient<Channel> {
        TaskServiceClient::new(self.channels[w % self.channels.len()].clone())
    }

    /// A light user for worker `w`'s call `i`, spread over all of them.
    fn light_user(&self, w: usize, i: u64) -> usize {
        (w * 7919 + i as usize * 104_729) % self.shape.light_users
    }

    fn as_user<T>(auth: &AsciiMetadataValue, message: T) -> Request<T> {
        let mut request = Request::new(message);
        request.metadata_mut().insert("authorization", auth.clone());
        request
    }

    /// The heavy user's filtered queries.
    fn heavy_query(&self, op: Op) -> ListTasksRequest {
        let mut request = ListTasksRequest {
            page_size: PAGE,
            ..ListTasksRequest::default()
        };
        match op {
            Op::Tag => request.tag = Some("t3".into()),
            // What is due in a window, soonest first, as a calendar asks. In creation
            // order every task of the window must be read to find the newest: their
            // number grows with the list (a hundredth of it here).
            Op::DueRange => {
                let minute = 60_000_000;
                request.due_after = Some(timestamp(self.base + 10_000 * minute));
                request.due_before = Some(timestamp(self.base + 20_000 * minute));
                request.order_by = OrderBy::DueTime as i32;
            }
            Op::Status => request.status = StatusFilter::Completed as i32,
            Op::Search => request.query = Some("w42".into()),
            Op::Keyset => request.page_size = WALK_PAGE,
            _ => {}
        }
        request
    }

    async fn list_heavy(
        &self,
        request: ListTasksRequest,
    ) -> Result<ListTasksResponse, tonic::Status> {
        Ok(self
            .client(0)
            .list_tasks(Self::as_user(&self.heavy, request))
            .await?
            .into_inner())
    }

    /// The token of page 100 of the heavy user's tasks, walking the 99 before it.
    async fn page_100_token(&self) -> anyhow::Result<String> {
        let mut token = String::new();
        for page in 1..100 {
            let response = self
                .list_heavy(ListTasksRequest {
                    page_token: token,
                    ..self.heavy_query(Op::Keyset)
                })
                .await?;
            anyhow::ensure!(
                response.tasks.len() == WALK_PAGE as usize && !response.next_page_token.is_empty(),
                "page {page} of the heavy user's tasks has {} tasks",
                response.tasks.len()
            );
            token = response.next_page_token;
        }
        Ok(token)
    }

    /// Operation `op` as a call for `drive`, checked once first: `None` when the service
    /// does not offer it (search before it lands).
    async fn call(&self, op: Op) -> anyhow::Result<Option<Call>> {
        let api = self.clone();
        let call: Call = match op {
            Op::Create => Arc::new(move |w, i| {
                let api = api.clone();
                Box::pin(async move {
                    let user = api.light_user(w, i);
                    let request = CreateTaskRequest {
                        title: format!("created {w} {i}"),
                        tags: vec!["bench".into()],
                        ..CreateTaskRequest::default()
                    };
                    api.client(w)
                        .create_task(Self::as_user(&api.light[user], request))
                        .await?;
                    Ok(())
                })
            }),
            Op::Get => Arc::new(move |w, i| {
                let api = api.clone();
                Box::pin(async move {
                    let user = api.light_user(w, i);
                    let id = task_id(user, (i as usize * 37 + w) % LIGHT_TASKS);
                    let task = api
                        .client(w)
                        .get_task(Self::as_user(
                            &api.light[user],
                            GetTaskRequest { id: id.clone() },
                        ))
                        .await?
                        .into_inner();
                    anyhow::ensure!(task.id == id, "GetTask {id} answered {}", task.id);
                    Ok(())
                })
            }),
            Op::FirstPage => Arc::new(move |w, i| {
                let api = api.clone();
                Box::pin(async move {
                    let user = api.light_user(w, i);
                    let request = ListTasksRequest {
                        page_size: PAGE,
                        ..ListTasksRequest::default()
                    };
                    let page = api
                        .client(w)
                        .list_tasks(Self::as_user(&api.light[user], request))
                        .await?
                        .into_inner();
                    anyhow::ensure!(
                        page.tasks.len() == PAGE as usize,
                        "a first page of {}",
                        page.tasks.len()
                    );
                    Ok(())
                })
            }),
            heavy => {
                let request = match heavy {
                    Op::Keyset => ListTasksRequest {
                        page_token: self.page_100_token().await?,
                        ..self.heavy_query(Op::Keyset)
                    },
                    _ => self.heavy_query(heavy),
                };
                match self.list_heavy(request.clone()).await {
                    Ok(page) => {
                        anyhow::ensure!(!page.tasks.is_empty(), "{} found nothing", heavy.name())
                    }
                    Err(status) if heavy == Op::Search => {
                        eprintln!(
                            "    search: {} ({:?}): n/a",
                            status.message(),
                            status.code()
                        );
                        return Ok(None);
                    }
                    Err(status) => return Err(status.into()),
                }
                Arc::new(move |w, _| {
                    let api = api.clone();
                    let request = request.clone();
                    Box::pin(async move {
                        let page = api
                            .client(w)
                            .list_tasks(Self::as_user(&api.heavy, request))
                            .await?
                            .into_inner();
                        anyhow::ensure!(!page.tasks.is_empty(), "an empty page");
                        Ok(())
                    })
                })
            }
        };
        Ok(Some(call))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Create,
    Get,
    FirstPage,
    Keyset,
    Tag,
    DueRange,
    Status,
    Search,
}

impl Op {
    const ALL: [Op; 8] = [
        Op::Create,
        Op::Get,
        Op::FirstPage,
        Op::Keyset,
        Op::Tag,
        Op::DueRange,
        Op::Status,
        Op::Search,
    ];

    fn name(self) -> &'static str {
        match self {
            Op::Create => "CreateTask",
            Op::Get => "GetTask",
            Op::FirstPage => "ListTasks first page (50)",
            Op::Keyset => "ListTasks page 100 (keyset, 10)",
            Op::Tag => "heavy: by tag",
            Op::DueRange => "heavy: due range, by due",
            Op::Status => "heavy: completed",
            Op::Search => "heavy: search",
        }
    }
}

/// What one database's run measured.
struct Measured {
    tasks: usize,
    seeding: Duration,
    bytes_per_task: f64,
    rss_mb: f64,
    loads: Vec<(Op, Option<Load>)>,
}

struct Settings {
    secs: Duration,
    rounds: u32,
    concurrency: usize,
    plans: bool,
}

/// One seeded database with its task-service running.
struct Side {
    label: &'static str,
    url: String,
    shape: Shape,
    base: i64,
    seeding: Duration,
    bytes_per_task: f64,
    service: ServiceProcess,
    api: Api,
}

async fn prepare_side(
    place: &Place<'_>,
    label: &'static str,
    tasks: usize,
) -> anyhow::Result<Side> {
    let shape = Shape::of(tasks);
    let url = place.database(label).await?;
    let base = micros_now();
    eprintln!(
        "[{} {label}] seeding {} tasks ({} users with {LIGHT_TASKS}, one with {})",
        place.backend().name(),
        shape.tasks(),
        shape.light_users,
        shape.heavy_tasks
    );
    let (seeding, bytes_per_task) = prepare(place, &url, shape, base).await?;
    eprintln!(
        "[{} {label}] seeded in {:.1} s, {bytes_per_task:.0} bytes per task",
        place.backend().name(),
        seeding.as_secs_f64()
    );
    let service = ServiceProcess::start("task-service", service_env(&url))?;
    let api = Api::connect(&service.endpoint(), shape, base).await?;
    Ok(Side {
        label,
        url,
        shape,
        base,
        seeding,
        bytes_per_task,
        service,
        api,
    })
}

/// Both databases of a backend, each with its own task-service, measured in alternating
/// rounds (small then large, then large then small, ...): a machine that slows down or
/// speeds up during the run weighs on both sides alike instead of on the ratio.
async fn bench_backend(
    place: &Place<'_>,
    small: usize,
    large: usize,
    settings: &Settings,
) -> anyhow::Result<(Measured, Measured)> {
    let sides = [
        prepare_side(place, "small", small).await?,
        prepare_side(place, "large", large).await?,
    ];
    let mut loads: [Vec<(Op, Option<Load>)>; 2] = [Vec::new(), Vec::new()];
    let round = settings.secs / settings.rounds.max(1);
    for op in Op::ALL {
        let (Some(small_call), Some(large_call)) =
            (sides[0].api.call(op).await?, sides[1].api.call(op).await?)
        else {
            loads[0].push((op, None));
            loads[1].push((op, None));
            continue;
        };
        let calls = [small_call, large_call].map(|call| Arc::new(move |w, i| call(w, i)));
        let mut measured: [Option<Load>; 2] = [None, None];
        // Not counted: the first second warms the service's and the database's caches.
        for call in &calls {
            drive(settings.concurrency, Duration::from_secs(1), call.clone()).await?;
        }
        for r in 0..settings.rounds.max(1) {
            let order = if r % 2 == 0 { [0, 1] } else { [1, 0] };
            for side in order {
                let load = drive(settings.concurrency, round, calls[side].clone()).await?;
                measured[side] = Some(match measured[side].take() {
                    None => load,
                    Some(sum) => sum.merged(load),
                });
            }
        }
        for (side, load) in measured.into_iter().enumerate() {
            if let Some(load) = &load {
                eprintln!(
                    "[{} {}] {:<32} {:>8.0}/s p50 {:>7.2} ms p99 {:>7.2} ms",
                    place.backend().name(),
                    sides[side].label,
                    op.name(),
                    load.rate(),
                    load.percentile_ms(0.5),
                    load.percentile_ms(0.99)
                );
            }
            loads[side].push((op, load));
        }
    }
    let [small_side, large_side] = sides;
    let [small_loads, large_loads] = loads;
    let measured = |side: Side, loads| {
        let rss_mb = side.service.pid().map_or(0.0, peak_rss_mb);
        drop(side.service);
        Measured {
            tasks: side.shape.tasks(),
            seeding: side.seeding,
            bytes_per_task: side.bytes_per_task,
            rss_mb,
            loads,
        }
    };
    let (large_url, shape, base) = (large_side.url.clone(), large_side.shape, large_side.base);
    let results = (
        measured(small_side, small_loads),
        measured(large_side, large_loads),
    );
    if settings.plans
        && let Place::Postgres(cluster) = place
    {
        let (plan_service, plan_api) = api_for_plans(&large_url, shape, base).await?;
        print_plans(cluster, &plan_api).await?;
        drop(plan_service);
    }
    Ok(results)
}

/// A task-service whose connections log every statement's plan (auto_explain), with the
/// bench's API to it.
async fn api_for_plans(
    url: &str,
    shape: Shape,
    base: i64,
) -> anyhow::Result<(ServiceProcess, Api)> {
    let db = Database::connect(url).await?;
    let name = scalar_text(&db, "SELECT current_database()").await?;
    for setting in [
        "session_preload_libraries = 'auto_explain'",
        "auto_explain.log_min_duration = 0",
        "auto_explain.log_analyze = on",
        "auto_explain.log_buffers = on",
    ] {
        db.execute_unprepared(&format!("ALTER DATABASE \"{name}\" SET {setting}"))
            .await?;
    }
    db.close().await?;
    let service = ServiceProcess::start("task-service", service_env(url))?;
    let api = Api::connect(&service.endpoint(), shape, base).await?;
    Ok((service, api))
}

async fn scalar_text(db: &DatabaseConnection, sql: &str) -> anyhow::Result<String> {
    let row = db
        .query_one_raw(Statement::from_string(db.get_database_backend(), sql))
        .await?
        .with_context(|| format!("no row from {sql}"))?;
    Ok(row.try_get_by_index::<String>(0)?)
}

/// Each heavy query once, then its plan from the server's log.
async fn print_plans(cluster: &PgCluster, api: &Api) -> anyhow::Result<()> {
    let log = cluster.socket_dir().join("postgres.log");
    for op in [
        Op::FirstPage,
        Op::Keyset,
        Op::Tag,
        Op::DueRange,
        Op::Status,
        Op::Search,
    ] {
        let from = std::fs::metadata(&log).map_or(0, |m| m.len()) as usize;
        if let Some(call) = api.call(op).await? {
            call(0, 0).await?;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        println!("---- plans of {} (PostgreSQL, auto_explain)", op.name());
        for line in text.get(from..).unwrap_or_default().lines() {
            println!("    {line}");
        }
    }
    Ok(())
}

/// The outbox relay draining `backlog` seeded events through real daprd on Redis: the
/// events it published per second after its first.
async fn relay_drain(redis: &RedisServer, backlog: usize) -> anyhow::Result<f64> {
    let resources = Resources::new(Broker::Redis, &redis.addr(), None)?;
    resources.open_topics()?;
    let topic = format!("bench-scale-{}-{backlog}", std::process::id());
    let dir = tempfile::tempdir()?;
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("relay.db").display()
    );
    let sidecar_grpc = free_port()?;
    let mut env = service_env(&url);
    env.extend([
        ("DAPR_GRPC_PORT".to_owned(), sidecar_grpc.to_string()),
        ("TASKMESH_TOPIC_TASK_EVENTS".to_owned(), topic),
    ]);
    // Migrated by task-service, seeded while it is stopped.
    drop(ServiceProcess::start("task-service", env.clone())?);
    let db = Database::connect(
        ConnectOptions::new(url.clone())
            .max_connections(1)
            .to_owned(),
    )
    .await?;
    let started = Instant::now();
    let now = micros_now();
    let list = default_list_id(HEAVY).to_string();
    let rows = (0..backlog).map(|k| {
        let event = outbox_event(k, &list);
        let payload = serde_json::to_string(&event)
            .unwrap_or_default()
            .replace('\'', "''");
        format!(
            "('{}','{}','{}','{payload}',{now},0,'{list}')",
            event.id, event.data.task.id, event.event_type
        )
    });
    run_batched(
        &db,
        inserts(
            "INSERT INTO outbox (event_id, task_id, event_type, payload, created_at, attempts, \
             list_id) VALUES ",
            rows,
        ),
    )
    .await?;
    db.execute_unprepared("PRAGMA wal_checkpoint(TRUNCATE)")
        .await?;
    db.close().await?;
    eprintln!(
        "[relay] seeded {backlog} outbox rows in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let task = ServiceProcess::start("task-service", env)?;
    let _sidecar = Daprd::start(DaprdOptions {
        app_id: "task-service".into(),
        app_port: Some(task.port()),
        grpc_port: Some(sidecar_grpc),
        resources: vec![resources.path().to_owned()],
        ..DaprdOptions::default()
    })?;
    let published = "taskmesh_outbox_published_events_total";
    wait_for_metric(&task, published, 1.0, Duration::from_secs(60)).await?;
    let first = metric(&task, published);
    let took = wait_for_metric(&task, published, backlog as f64, Duration::from_secs(3600)).await?;
    let rate = (backlog as f64 - first) / took.as_secs_f64();
    eprintln!(
        "[relay] drained {backlog} at {rate:.0} events/s; task-service peak RSS {:.1} MB",
        task.pid().map_or(0.0, peak_rss_mb)
    );
    Ok(rate)
}

fn outbox_event(k: usize, list: &str) -> TaskEvent {
    let now = chrono::Utc::now();
    let task = Uuid::now_v7();
    TaskEvent::task(
        TaskEventKind::Created,
        TaskEventData {
            task: TaskSnapshot {
                id: task,
                owner_id: HEAVY.into(),
                title: format!("Task {k} about w{}", k % WORDS),
                description: format!("Notes on task {k}"),
                priority: "medium".into(),
                tags: vec![format!("t{}", k % TAGS)],
                due_time: Some(now + chrono::Duration::days(1)),
                time_zone: None,
                recurrence: None,
                completed: false,
                completed_time: None,
                create_time: now,
                update_time: now,
                version: 1,
                list_id: list.parse().ok(),
                assignee_id: None,
            },
            changed_fields: vec![],
            version: 1,
            owner_id: HEAVY.into(),
            occurred_at: now,
            actor_id: None,
            previous_list_id: None,
            previous_assignee_id: None,
        },
    )
}

fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let large = args
        .iter()
        .find_map(|a| a.replace(['_', ','], "").parse().ok())
        .unwrap_or_else(|| env_or("BENCH_SCALE_TASKS", 1_000_000usize));
    let small = env_or("BENCH_SCALE_SMALL", 10_000usize);
    let relay = args.iter().any(|a| a == "relay") || env_or("BENCH_SCALE_RELAY", 0u8) == 1;
    let settings = Settings {
        secs: Duration::from_secs(env_or("BENCH_SECS", 6u64)),
        rounds: env_or("BENCH_ROUNDS", 6u32),
        concurrency: env_or("BENCH_CONCURRENCY", 16usize),
        plans: env_or("BENCH_SCALE_PLANS", 0u8) == 1,
    };
    let backends = std::env::var("BENCH_BACKENDS").unwrap_or_else(|_| "sqlite,postgres".into());
    let wanted = |name: &str| backends.split(',').any(|b| b.trim() == name);
    println!(
        "bench-scale: {} vs {} tasks (plus the heavy user's tenth), {} s per operation, concurrency {}, {} cores",
        thousands(small),
        thousands(large),
        settings.secs.as_secs(),
        settings.concurrency,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

    let mut results = Vec::new();
    let dir = tempfile::tempdir()?;
    if wanted("sqlite") {
        let place = Place::Sqlite(dir.path());
        let (at_small, at_large) = bench_backend(&place, small, large, &settings).await?;
        results.push((Backend::Sqlite, at_small, at_large));
    }
    if wanted("postgres") {
        let cluster = PgCluster::start(Durability::Full)?;
        let place = Place::Postgres(&cluster);
        let (at_small, at_large) = bench_backend(&place, small, large, &settings).await?;
        results.push((Backend::Postgres, at_small, at_large));
    }
    let mut relay_rates = None;
    if relay {
        let redis = RedisServer::start()?;
        let at_small = relay_drain(&redis, small).await?;
        let at_large = relay_drain(&redis, large).await?;
        relay_rates = Some((at_small, at_large));
    }

    let mut worst: f64 = 0.0;
    let mut worst_p99: f64 = 0.0;
    println!();
    println!(
        "| backend | operation | {s} tasks: rate, p50, p99 | {l} tasks: rate, p50, p99 | rate ratio (<= 1.30x) | p99 ratio (<= 2x) |",
        s = thousands(small),
        l = thousands(large)
    );
    println!("|---|---|---|---|---|---|");
    let verdict = |ok: bool| if ok { "" } else { " MISSED" };
    for (backend, at_small, at_large) in &results {
        for ((op, s), (_, l)) in at_small.loads.iter().zip(&at_large.loads) {
            let (Some(s), Some(l)) = (s, l) else {
                println!(
                    "| {} | {} | n/a | n/a | n/a | n/a |",
                    backend.name(),
                    op.name()
                );
                continue;
            };
            let ratio = s.rate() / l.rate();
            let p99 = l.percentile_ms(0.99) / s.percentile_ms(0.99).max(0.001);
            worst = worst.max(ratio);
            worst_p99 = worst_p99.max(p99);
            let fig = |load: &Load| {
                format!(
                    "{:.0}/s, {:.2} ms, {:.2} ms",
                    load.rate(),
                    load.percentile_ms(0.5),
                    load.percentile_ms(0.99)
                )
            };
            println!(
                "| {} | {} | {} | {} | {ratio:.2}x{} | {p99:.2}x{} |",
                backend.name(),
                op.name(),
                fig(s),
                fig(l),
                verdict(ratio <= 1.3),
                verdict(p99 <= 2.0)
            );
        }
        println!(
            "| {} | seeding (bulk SQL) | {} tasks in {:.1} s | {} tasks in {:.1} s | | |",
            backend.name(),
            thousands(at_small.tasks),
            at_small.seeding.as_secs_f64(),
            thousands(at_large.tasks),
            at_large.seeding.as_secs_f64()
        );
        println!(
            "| {} | bytes on disk per task | {:.0} | {:.0} | | |",
            backend.name(),
            at_small.bytes_per_task,
            at_large.bytes_per_task
        );
        let rss = at_small.rss_mb.max(at_large.rss_mb);
        println!(
            "| {} | task-service peak RSS (<= 64 MB) | {:.1} MB | {:.1} MB{} | | |",
            backend.name(),
            at_small.rss_mb,
            at_large.rss_mb,
            verdict(rss <= 64.0)
        );
    }
    if let Some((s, l)) = relay_rates {
        let ratio = s / l;
        worst = worst.max(ratio);
        println!(
            "| sqlite + redis | outbox relay draining its backlog | {s:.0} events/s | {l:.0} events/s | {ratio:.2}x{} | |",
            verdict(ratio <= 1.3)
        );
    }
    println!();
    println!("bench-scale: worst p99 ratio {worst_p99:.2}x (target <= 2x)");
    println!("bench-scale: worst ratio {worst:.2}x (target <= 1.30x)");
    Ok(())
}

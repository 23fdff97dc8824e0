//! `just bench-api`: drives CreateTask, GetTask and ListTasks (page of 50) against the
//! release task-service on SQLite and on PostgreSQL, next to two ceilings measured in the
//! same run: an empty unary call (grpc.health.v1 Check) with the same client, and the
//! SQL of one CreateTask driven by pgbench (GetTask and (a) take turns in four rounds).
//! Prints throughput, p50, p99, ratios, RSS, and the CPU time each call cost the service,
//! the database server and the load tool: on a shared, noisy machine the rates drift from
//! run to run, while CPU per call shows what a change to the service did.
//! `BENCH_SECS`, `BENCH_CONCURRENCY`, `BENCH_BACKENDS`, `BENCH_PG_TRANSPORT` and
//! `BENCH_DB_CONNECTIONS` change the run.
#![forbid(unsafe_code)]

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use taskmesh_integration::cpu;
use taskmesh_integration::postgres::{self, Durability, PgCluster};
use taskmesh_integration::services::ServiceProcess;
use taskmesh_proto::tasks::v1::task_service_client::TaskServiceClient;
use taskmesh_proto::tasks::v1::{CreateTaskRequest, GetTaskRequest, ListTasksRequest};
use tonic::Request;
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

const SECRET: &str = "bench-secret-0123456789abcdef0123456789abcdef";
const WARM_UP: Duration = Duration::from_secs(3);
/// Rounds in which (a) and GetTask alternate, each a quarter of the run's length.
const ROUNDS: u32 = 4;

/// What one drive of the load measured.
struct Run {
    latencies_us: Vec<u64>,
    elapsed: Duration,
    cpu: Cpu,
}

impl Run {
    fn rate(&self) -> f64 {
        self.latencies_us.len() as f64 / self.elapsed.as_secs_f64().max(f64::EPSILON)
    }
}

struct Figures {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    /// CPU time per call, in microseconds.
    cpu_us: Cpu,
}

impl Figures {
    /// One set of figures over several runs of the same call, as if they were one.
    fn of(runs: Vec<Run>) -> Self {
        let all = Run {
            elapsed: runs.iter().map(|run| run.elapsed).sum(),
            cpu: runs
                .iter()
                .fold(Cpu::default(), |sum, run| sum.plus(run.cpu)),
            latencies_us: runs.into_iter().flat_map(|run| run.latencies_us).collect(),
        };
        let rps = all.rate();
        let calls = all.latencies_us.len().max(1) as f64;
        let cpu_us = all.cpu.scaled(1e6 / calls);
        let mut all = all.latencies_us;
        all.sort_unstable();
        let pct = |p: f64| {
            all.get(((all.len() as f64) * p) as usize)
                .copied()
                .unwrap_or(0) as f64
                / 1000.0
        };
        Self {
            rps,
            p50_ms: pct(0.50),
            p99_ms: pct(0.99),
            cpu_us,
        }
    }
}

/// CPU seconds (user and system) spent by the service, the database server (PostgreSQL's
/// processes; SQLite runs inside the service) and this load tool.
#[derive(Debug, Clone, Copy, Default)]
struct Cpu {
    service: f64,
    database: f64,
    load_tool: f64,
}

impl Cpu {
    fn plus(self, other: Self) -> Self {
        Self {
            service: self.service + other.service,
            database: self.database + other.database,
            load_tool: self.load_tool + other.load_tool,
        }
    }

    fn minus(self, earlier: Self) -> Self {
        self.plus(earlier.scaled(-1.0))
    }

    fn scaled(self, factor: f64) -> Self {
        Self {
            service: self.service * factor,
            database: self.database * factor,
            load_tool: self.load_tool * factor,
        }
    }
}

/// Reads the processes' CPU times from `/proc`.
struct CpuMeter {
    service: u32,
    /// PostgreSQL's postmaster: its backends are its children.
    database: Option<u32>,
    ticks_per_second: f64,
}

impl CpuMeter {
    fn new(service: u32, database: Option<u32>) -> Self {
        Self {
            service,
            database,
            ticks_per_second: cpu::ticks_per_second(),
        }
    }

    fn sample(&self) -> Cpu {
        let seconds = |ticks: u64| ticks as f64 / self.ticks_per_second;
        let processes = process_table();
        Cpu {
            service: seconds(ticks_of_tree(&processes, self.service)),
            database: self
                .database
                .map_or(0.0, |root| seconds(ticks_of_tree(&processes, root))),
            // Not its tree: the service and the database are its children.
            load_tool: seconds(
                processes
                    .iter()
                    .find(|(pid, _, _)| *pid == std::process::id())
                    .map_or(0, |(_, _, ticks)| *ticks),
            ),
        }
    }

    async fn measure<F, Fut>(
        &self,
        concurrency: usize,
        length: Duration,
        op: Arc<F>,
    ) -> anyhow::Result<Run>
    where
        F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
    {
        let before = self.sample();
        let mut run = drive(concurrency, length, op).await?;
        run.cpu = self.sample().minus(before);
        Ok(run)
    }
}

/// Every process's (pid, parent pid, user + system ticks).
fn process_table() -> Vec<(u32, u32, u64)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let (parent, ticks) = cpu::stat(pid)?;
            Some((pid, parent, ticks))
        })
        .collect()
}

/// The ticks of `root` and all its descendants.
fn ticks_of_tree(processes: &[(u32, u32, u64)], root: u32) -> u64 {
    let mut tree = vec![root];
    let mut ticks = 0;
    while let Some(pid) = tree.pop() {
        for &(child, parent, child_ticks) in processes {
            if child == pid {
                ticks += child_ticks;
            }
            if parent == pid {
                tree.push(child);
            }
        }
    }
    ticks
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Runs `concurrency` workers in a loop for `length`, each calling `op(worker, i)`.
async fn drive<F, Fut>(concurrency: usize, length: Duration, op: Arc<F>) -> anyhow::Result<Run>
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let started = Instant::now();
    let deadline = started + length;
    let mut workers = Vec::new();
    for w in 0..concurrency {
        let op = op.clone();
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut i = 0;
            while Instant::now() < deadline {
                let start = Instant::now();
                op(w, i).await?;
                latencies.push(start.elapsed().as_micros() as u64);
                i += 1;
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut latencies_us = Vec::new();
    for worker in workers {
        latencies_us.extend(worker.await??);
    }
    Ok(Run {
        latencies_us,
        elapsed: started.elapsed(),
        cpu: Cpu::default(),
    })
}

fn peak_rss_mb(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|kb| kb.parse::<f64>().ok())
            })
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// What each worker calls with: a channel shared with a few other workers, and its own
/// user's `authorization` value, built once as a client keeps it.
#[derive(Clone)]
struct Clients {
    channels: Arc<Vec<Channel>>,
    authorization: Arc<Vec<AsciiMetadataValue>>,
}

impl Clients {
    fn channel(&self, w: usize) -> Channel {
        self.channels[w % self.channels.len()].clone()
    }

    fn tasks(&self, w: usize) -> TaskServiceClient<Channel> {
        TaskServiceClient::new(self.channel(w))
    }

    /// Worker `w`'s call, as its user.
    fn authed<T>(&self, w: usize, message: T) -> Request<T> {
        let mut req = Request::new(message);
        req.metadata_mut()
            .insert("authorization", self.authorization[w].clone());
        req
    }
}

async fn bench_backend(
    name: &str,
    database_url: &str,
    database_pid: Option<u32>,
    secs: u64,
    concurrency: usize,
) -> anyhow::Result<Figures> {
    let mut env = vec![
        ("DATABASE_URL".to_owned(), database_url.to_owned()),
        ("TASKMESH_JWT_SECRET".to_owned(), SECRET.to_owned()),
        taskmesh_integration::services::unlimited()[0].clone(),
        taskmesh_integration::services::unlimited()[1].clone(),
        ("RUST_LOG".to_owned(), "warn".to_owned()),
    ];
    // The service's own pool size unless BENCH_DB_CONNECTIONS says otherwise.
    if let Ok(pool) = std::env::var("BENCH_DB_CONNECTIONS") {
        env.push(("DATABASE_MAX_CONNECTIONS".to_owned(), pool));
    }
    let service = ServiceProcess::start("task-service", env)?;
    let meter = CpuMeter::new(
        service.pid().context("task-service has no pid")?,
        database_pid,
    );
    let url = service.endpoint();
    let mut channels = Vec::new();
    for _ in 0..4 {
        channels.push(Channel::from_shared(url.clone())?.connect().await?);
    }
    let authorization = Arc::new(
        (0..concurrency)
            .map(|w| {
                let token = taskmesh_shared::auth::mint(
                    SECRET.as_bytes(),
                    &format!("user{w}"),
                    Duration::from_secs(3600),
                )?;
                Ok(format!("Bearer {token}").parse()?)
            })
            .collect::<anyhow::Result<_>>()?,
    );
    let clients = Clients {
        channels: Arc::new(channels),
        authorization,
    };
    let secs = Duration::from_secs(secs);
    let health_check = {
        let clients = clients.clone();
        Arc::new(move |w: usize, _| {
            let mut c = HealthClient::new(clients.channel(w));
            async move {
                c.check(HealthCheckRequest {
                    service: String::new(),
                })
                .await?;
                Ok(())
            }
        })
    };
    // Not counted: the first seconds of a fresh process (its allocator's heap, the
    // connections' windows) would otherwise lower the ceiling every ratio is taken from.
    drive(concurrency, WARM_UP, health_check.clone()).await?;

    let ids: Arc<Vec<std::sync::Mutex<Vec<String>>>> = Arc::new(
        (0..concurrency)
            .map(|_| std::sync::Mutex::new(Vec::new()))
            .collect(),
    );
    let (k, idv) = (clients.clone(), ids.clone());
    let create = meter
        .measure(
            concurrency,
            secs,
            Arc::new(move |w: usize, i: u64| {
                let mut c = k.tasks(w);
                let req = k.authed(
                    w,
                    CreateTaskRequest {
                        title: format!("bench {i}"),
                        tags: vec!["bench".into()],
                        ..Default::default()
                    },
                );
                let idv = idv.clone();
                async move {
                    let task = c.create_task(req).await?.into_inner();
                    if let Ok(mut v) = idv[w].lock() {
                        v.push(task.id);
                    }
                    Ok(())
                }
            }),
        )
        .await?;

    // Each worker reads back the tasks it created, in turn.
    let ids: Arc<Vec<Vec<String>>> = Arc::new(
        ids.iter()
            .map(|v| v.lock().map(|v| v.clone()).unwrap_or_default())
            .collect(),
    );
    let (k, idv) = (clients.clone(), ids.clone());
    let get_task = Arc::new(move |w: usize, i: u64| {
        let mut c = k.tasks(w);
        let mine = &idv[w];
        let id = mine
            .get(i as usize % mine.len().max(1))
            .cloned()
            .unwrap_or_default();
        let req = k.authed(w, GetTaskRequest { id });
        async move {
            c.get_task(req).await?;
            Ok(())
        }
    });
    // The ceiling and GetTask take turns, so that the machine's drift over the run (its
    // neighbours, its clock) weighs on both alike rather than on whichever ran second.
    let (mut health_runs, mut get_runs, mut round_ratios) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let health = meter
            .measure(concurrency, secs / ROUNDS, health_check.clone())
            .await?;
        let get = meter
            .measure(concurrency, secs / ROUNDS, get_task.clone())
            .await?;
        round_ratios.push(get.rate() / health.rate());
        health_runs.push(health);
        get_runs.push(get);
    }
    let (health, get) = (Figures::of(health_runs), Figures::of(get_runs));

    let k = clients.clone();
    let list = meter
        .measure(
            concurrency,
            secs,
            Arc::new(move |w: usize, _: u64| {
                let mut c = k.tasks(w);
                let req = k.authed(
                    w,
                    ListTasksRequest {
                        page_size: 50,
                        ..Default::default()
                    },
                );
                async move {
                    c.list_tasks(req).await?;
                    Ok(())
                }
            }),
        )
        .await?;
    let (create, list) = (Figures::of(vec![create]), Figures::of(vec![list]));

    let rss = service.pid().map_or(0.0, peak_rss_mb);
    let figures = [
        ("Health/Check (a)", &health),
        ("CreateTask", &create),
        ("GetTask", &get),
        ("ListTasks/50", &list),
    ];
    for (op, f) in figures {
        println!(
            "{name:<10} {op:<18} {:>9.0}/s  p50 {:>6.2} ms  p99 {:>6.2} ms  {:>5.2}x of (a)",
            f.rps,
            f.p50_ms,
            f.p99_ms,
            f.rps / health.rps
        );
    }
    for (op, f) in figures {
        let cpu = f.cpu_us;
        println!(
            "{name:<10} {op:<18} CPU per call: task-service {:>6.1} us, database {:>6.1} us, load tool {:>6.1} us",
            cpu.service, cpu.database, cpu.load_tool
        );
    }
    let (low, high) = round_ratios
        .iter()
        .fold((f64::MAX, 0.0_f64), |(low, high), r| {
            (low.min(*r), high.max(*r))
        });
    println!(
        "{name:<10} GetTask / (a) in each of {ROUNDS} alternating rounds: {low:.2}x to {high:.2}x"
    );
    println!("{name:<10} task-service peak RSS {rss:.1} MB");
    drop(service);
    Ok(create)
}

/// How task-service and pgbench reach PostgreSQL (`BENCH_PG_TRANSPORT`): over its Unix
/// socket by default, as a client on the database's host does. Over loopback TCP the
/// kernel's network stack runs on the same two cores as everything else, and a third of
/// task-service's CPU in GetTask was `send` to PostgreSQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PgTransport {
    Socket,
    Tcp,
}

impl PgTransport {
    fn from_env() -> anyhow::Result<Self> {
        match std::env::var("BENCH_PG_TRANSPORT").as_deref() {
            Ok("tcp") => Ok(Self::Tcp),
            Ok("socket") | Err(_) => Ok(Self::Socket),
            Ok(other) => anyhow::bail!("BENCH_PG_TRANSPORT={other:?}: expected socket or tcp"),
        }
    }

    fn admin_url(self, cluster: &PgCluster) -> String {
        match self {
            Self::Socket => cluster.socket_admin_url(),
            Self::Tcp => cluster.admin_url(),
        }
    }

    /// pgbench's `-h`: the socket's directory or the loopback address.
    fn host(self, cluster: &PgCluster) -> String {
        match self {
            Self::Socket => cluster.socket_dir().display().to_string(),
            Self::Tcp => "127.0.0.1".to_owned(),
        }
    }
}

fn pgbench(
    cluster: &PgCluster,
    transport: PgTransport,
    db_url: &str,
    secs: u64,
    concurrency: usize,
) -> anyhow::Result<f64> {
    let path = db_url.split('?').next().unwrap_or(db_url);
    let db = path.rsplit('/').next().unwrap_or("postgres");
    let bin = postgres::bin_dir()?;
    let script = tempfile::NamedTempFile::new()?;
    std::fs::write(
        script.path(),
        // One CreateTask's SQL, as task-service sends it: the task row and its outbox row
        // in one statement, so in one transaction.
        "WITH task AS (INSERT INTO tasks (id, owner_id, title, description, priority, tags, created_at, updated_at, version) \
         VALUES (gen_random_uuid()::text, 'pgbench', 'bench', '', 2, '[\"bench\"]', 0, 0, 1)) \
         INSERT INTO outbox (event_id, task_id, event_type, payload, created_at, attempts) \
         VALUES (gen_random_uuid()::text, 'pgbench', 'taskmesh.task.created.v1', repeat('x', 700), 0, 0);\n",
    )?;
    let host = transport.host(cluster);
    let out = Command::new(bin.join("pgbench"))
        .args([
            "-n",
            "-h",
            &host,
            "-p",
            &cluster.port().to_string(),
            "-U",
            "postgres",
        ])
        .args([
            "-c",
            &concurrency.to_string(),
            "-j",
            "2",
            "-T",
            &secs.to_string(),
            "-f",
        ])
        .arg(script.path())
        .arg(db)
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find(|l| l.starts_with("tps = "))
        .and_then(|l| l.split_whitespace().nth(2).and_then(|v| v.parse().ok()))
        .with_context(|| {
            format!(
                "pgbench output: {text}{}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let secs = env_u64("BENCH_SECS", 20);
    let concurrency = env_u64("BENCH_CONCURRENCY", 32) as usize;
    println!(
        "bench-api: {secs} s per run, concurrency {concurrency}, {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

    // BENCH_BACKENDS=sqlite or postgres measures one alone (both by default).
    let backends = std::env::var("BENCH_BACKENDS").unwrap_or_else(|_| "sqlite,postgres".into());
    let wanted = |name: &str| backends.split(',').any(|b| b.trim() == name);

    let dir = tempfile::tempdir()?;
    if wanted("sqlite") {
        let sqlite = format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("bench.db").display()
        );
        bench_backend("sqlite", &sqlite, None, secs, concurrency).await?;
    }
    if !wanted("postgres") {
        return Ok(());
    }

    let transport = PgTransport::from_env()?;
    let cluster = PgCluster::start(Durability::Full)?;
    println!("postgres   reached over {transport:?} (BENCH_PG_TRANSPORT=socket|tcp)");
    let db = postgres::fresh_database(&transport.admin_url(&cluster)).await?;
    let create = bench_backend("postgres", &db, Some(cluster.pid()), secs, concurrency).await?;
    let tps = pgbench(&cluster, transport, &db, secs, concurrency)?;
    println!(
        "postgres   pgbench CreateTask SQL (b) {tps:>9.0} tx/s; CreateTask {:.2}x of (b)",
        create.rps / tps
    );
    println!(
        "targets: CreateTask on PostgreSQL >= 0.5x of (b), p99 <= 25 ms; GetTask >= 0.4x of (a), p99 <= 10 ms; RSS <= 64 MB"
    );
    Ok(())
}

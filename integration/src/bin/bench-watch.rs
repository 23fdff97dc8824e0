//! `just bench-watch`: WatchTasks on two release task-service replicas sharing one
//! PostgreSQL. For each number of watchers per replica (`BENCH_WATCHERS`, a list), the
//! watchers of `BENCH_USERS` users connect to both replicas, a writer creates tasks at
//! `BENCH_RATE` per second for `BENCH_SECS` through both replicas by turns, and every
//! watcher times each change from its commit (the change's `occur_time`, same host clock)
//! to its arrival. Prints p50/p99/max change-to-watcher latency, split into changes made
//! through the watcher's own replica (woken by the commit) and through the other one
//! (found by the poll, `TASKMESH_WATCH_POLL_MS`), deliveries per second, what was missed
//! or cut off, the replicas' RSS, and whether the step held: everything delivered,
//! nobody cut off, p99 within `BENCH_P99_MS`.
#![forbid(unsafe_code)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use taskmesh_integration::bench::{env_or, quiet};
use taskmesh_integration::postgres::{self, Durability, PgCluster};
use taskmesh_integration::services::{ServiceProcess, unlimited};
use taskmesh_proto::tasks::v1::task_service_client::TaskServiceClient;
use taskmesh_proto::tasks::v1::{CreateTaskRequest, WatchTasksRequest};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

const SECRET: &str = "bench-secret-0123456789abcdef0123456789abcdef";
/// Watchers sharing one HTTP/2 connection.
const STREAMS_PER_CONNECTION: usize = 100;

#[derive(Clone)]
struct Bearer(MetadataValue<Ascii>);

impl Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(request)
    }
}

type Client = TaskServiceClient<InterceptedService<Channel, Bearer>>;

fn client(channel: &Channel, user: &str) -> anyhow::Result<Client> {
    let token = taskmesh_shared::auth::mint(SECRET.as_bytes(), user, Duration::from_secs(3600))?;
    Ok(TaskServiceClient::with_interceptor(
        channel.clone(),
        Bearer(format!("Bearer {token}").parse()?),
    ))
}

fn user(n: usize) -> String {
    format!("watch-user-{n}")
}

/// What the watchers of one step measured.
#[derive(Default)]
struct Tally {
    /// Microseconds from commit to arrival, for changes made through the watcher's own
    /// replica and through the other one.
    local_us: Vec<u64>,
    remote_us: Vec<u64>,
    cut: usize,
    failed: usize,
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    sorted
        .get(((sorted.len() as f64) * p) as usize)
        .or(sorted.last())
        .copied()
        .unwrap_or(0) as f64
        / 1000.0
}

fn rss_mib(replica: &ServiceProcess) -> f64 {
    let Some(pid) = replica.pid() else { return 0.0 };
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status.lines().find_map(|line| {
                let kb = line.strip_prefix("VmRSS:")?.trim().strip_suffix("kB")?;
                kb.trim().parse::<f64>().ok()
            })
        })
        .unwrap_or(0.0)
        / 1024.0
}

/// Starts one watcher of `user` on `replica`'s `channel`; it reports its first message
/// on `ready` and every change into `tally`.
fn spawn_watcher(
    channel: Channel,
    user: String,
    replica: usize,
    tally: Arc<Mutex<Tally>>,
    ready: tokio::sync::mpsc::UnboundedSender<()>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let mut client = client(&channel, &user)?;
    Ok(tokio::spawn(async move {
        let mut stream = match client.watch_tasks(WatchTasksRequest::default()).await {
            Ok(stream) => stream.into_inner(),
            Err(_) => {
                if let Ok(mut tally) = tally.lock() {
                    tally.failed += 1;
                }
                return;
            }
        };
        let mut first = true;
        loop {
            match stream.message().await {
                Ok(Some(message)) => {
                    if first {
                        first = false;
                        let _ = ready.send(());
                    }
                    let Some(change) = message.change else {
                        continue;
                    };
                    let now = SystemTime::now()
                        .duration_since(SystemTime::UNIX_EPOCH)
                        .unwrap_or_default();
                    let Some(at) = change.occur_time else {
                        continue;
                    };
                    let at = Duration::new(
                        u64::try_from(at.seconds).unwrap_or(0),
                        u32::try_from(at.nanos).unwrap_or(0),
                    );
                    let micros = u64::try_from(now.saturating_sub(at).as_micros()).unwrap_or(0);
                    // The writer names the replica it went through in the title.
                    let through = change
                        .task
                        .as_ref()
                        .and_then(|task| task.title.strip_prefix('r'))
                        .and_then(|rest| rest.split(' ').next())
                        .and_then(|n| n.parse::<usize>().ok());
                    let Some(through) = through else { continue };
                    if let Ok(mut tally) = tally.lock() {
                        if through == replica {
                            tally.local_us.push(micros);
                        } else {
                            tally.remote_us.push(micros);
                        }
                    }
                }
                Ok(None) => return,
                Err(status) => {
                    if let Ok(mut tally) = tally.lock() {
                        if status.code() == tonic::Code::ResourceExhausted {
                            tally.cut += 1;
                        } else {
                            tally.failed += 1;
                        }
                    }
                    return;
                }
            }
        }
    }))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let steps: Vec<usize> = std::env::var("BENCH_WATCHERS")
        .unwrap_or_else(|_| "50,200,500,1000".into())
        .split(',')
        .filter_map(|n| n.trim().parse().ok())
        .collect();
    let users: usize = env_or("BENCH_USERS", 20);
    let rate: f64 = env_or("BENCH_RATE", 100.0);
    let secs: u64 = env_or("BENCH_SECS", 10);
    let p99_bound_ms: f64 = env_or("BENCH_P99_MS", 250.0);

    let cluster = PgCluster::start(Durability::Fast)?;
    let database = postgres::fresh_database(&cluster.admin_url()).await?;
    let env = || {
        let mut env = vec![
            ("DATABASE_URL".to_owned(), database.clone()),
            ("TASKMESH_JWT_SECRET".to_owned(), SECRET.to_owned()),
            // No sidecar: events stay in the outbox, which is what watchers read.
            ("DAPR_GRPC_PORT".to_owned(), "1".to_owned()),
            ("RUST_LOG".to_owned(), "error".to_owned()),
        ];
        env.extend(quiet());
        env.extend(unlimited());
        env
    };
    let replicas = [
        ServiceProcess::start("task-service", env())?,
        ServiceProcess::start("task-service", env())?,
    ];
    let writers: Vec<Vec<Client>> = replicas
        .iter()
        .map(|replica| {
            let channel = Channel::from_shared(replica.endpoint())?.connect_lazy();
            (0..users).map(|n| client(&channel, &user(n))).collect()
        })
        .collect::<anyhow::Result<_>>()?;
    // Every user's default list exists before anyone watches.
    for writer in &writers[0] {
        writer
            .clone()
            .create_task(CreateTaskRequest {
                title: "warm-up".into(),
                ..CreateTaskRequest::default()
            })
            .await?;
    }

    println!(
        "WatchTasks, 2 replicas on PostgreSQL, {users} users, {rate} changes/s for {secs} s per step"
    );
    println!(
        "{:>9} {:>11} {:>9} {:>9} {:>10} {:>10} {:>9} {:>7} {:>5} {:>7} {:>11} {:>6}",
        "watchers",
        "deliveries",
        "local",
        "local",
        "remote",
        "remote",
        "max",
        "missed",
        "cut",
        "failed",
        "RSS MiB",
        "holds"
    );
    println!(
        "{:>9} {:>11} {:>9} {:>9} {:>10} {:>10} {:>9} {:>7} {:>5} {:>7} {:>11} {:>6}",
        "/replica", "/s", "p50 ms", "p99 ms", "p50 ms", "p99 ms", "ms", "", "", "", "(2 repl.)", ""
    );
    let mut held = 0;
    for watchers in steps {
        let tally = Arc::new(Mutex::new(Tally::default()));
        let (ready_tx, mut ready) = tokio::sync::mpsc::unbounded_channel();
        let mut tasks = Vec::new();
        for (r, replica) in replicas.iter().enumerate() {
            let mut channel = None;
            for w in 0..watchers {
                if w % STREAMS_PER_CONNECTION == 0 {
                    channel = Some(Channel::from_shared(replica.endpoint())?.connect().await?);
                }
                let Some(channel) = channel.clone() else {
                    continue;
                };
                tasks.push(spawn_watcher(
                    channel,
                    user(w % users),
                    r,
                    tally.clone(),
                    ready_tx.clone(),
                )?);
            }
        }
        for _ in 0..tasks.len() {
            if tokio::time::timeout(Duration::from_secs(30), ready.recv())
                .await
                .ok()
                .flatten()
                .is_none()
            {
                anyhow::bail!("watchers did not all start");
            }
        }
        let rss_before = rss_mib(&replicas[0]) + rss_mib(&replicas[1]);

        // The writer: one change every 1/rate s, through the replicas by turns.
        let started = Instant::now();
        let interval = Duration::from_secs_f64(1.0 / rate.max(0.001));
        let total = (rate * secs as f64) as usize;
        let mut expected = 0;
        let mut in_flight = Vec::new();
        for i in 0..total {
            let at = started + interval * u32::try_from(i).unwrap_or(u32::MAX);
            tokio::time::sleep_until(at.into()).await;
            let r = i % 2;
            let n = i % users;
            let mut writer = writers[r][n].clone();
            // Watchers of user n: those w with w % users == n, on each replica.
            expected += 2 * (0..watchers).filter(|w| w % users == n).count();
            in_flight.push(tokio::spawn(async move {
                writer
                    .create_task(CreateTaskRequest {
                        title: format!("r{r} change {i}"),
                        ..CreateTaskRequest::default()
                    })
                    .await
                    .is_ok()
            }));
        }
        let mut write_errors = 0;
        for call in in_flight {
            if !call.await.unwrap_or(false) {
                write_errors += 1;
            }
        }
        let elapsed = started.elapsed();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let rss = rss_mib(&replicas[0]) + rss_mib(&replicas[1]);
        for task in &tasks {
            task.abort();
        }
        let mut tally = match tally.lock() {
            Ok(mut tally) => std::mem::take(&mut *tally),
            Err(_) => anyhow::bail!("a watcher panicked"),
        };
        tally.local_us.sort_unstable();
        tally.remote_us.sort_unstable();
        let delivered = tally.local_us.len() + tally.remote_us.len();
        let missed = expected.saturating_sub(delivered);
        let max = tally
            .local_us
            .last()
            .copied()
            .max(tally.remote_us.last().copied())
            .unwrap_or(0) as f64
            / 1000.0;
        let p99 = percentile(&tally.local_us, 0.99).max(percentile(&tally.remote_us, 0.99));
        let holds = missed == 0
            && tally.cut == 0
            && tally.failed == 0
            && write_errors == 0
            && p99 <= p99_bound_ms;
        if holds {
            held = held.max(watchers);
        }
        println!(
            "{:>9} {:>11.0} {:>9.1} {:>9.1} {:>10.1} {:>10.1} {:>9.1} {:>7} {:>5} {:>7} {:>5.0}->{:<5.0} {:>6}",
            watchers,
            delivered as f64 / elapsed.as_secs_f64(),
            percentile(&tally.local_us, 0.5),
            percentile(&tally.local_us, 0.99),
            percentile(&tally.remote_us, 0.5),
            percentile(&tally.remote_us, 0.99),
            max,
            missed,
            tally.cut,
            tally.failed + write_errors,
            rss_before,
            rss,
            if holds { "yes" } else { "no" }
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    println!(
        "holds (all delivered, none cut off, p99 <= {p99_bound_ms} ms) up to {held} watchers per replica"
    );
    drop(replicas);
    drop(cluster);
    Ok(())
}

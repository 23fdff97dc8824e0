//! `just soak [minutes] [broker]`: the whole system under steady mixed API load for a while,
//! one fault of the fault matrix injected every minute (in turn), then the count: events
//! created, delivered to each consumer, lost, duplicated effects, the largest outbox
//! backlog seen, and the RSS of every process.
//!
//! RSS is judged for Taskmesh's services and their sidecars (the data stores are shown: their
//! RSS grows with the data the run writes), per incarnation, because the faults restart most processes: a process's
//! level is its RSS once it has run `WARM_UP`, and its growth is its last RSS against that
//! level. Incarnations that did not live `WARM_UP` past their level are listed, not judged.
//!
//! The last line is `soak: lost N, duplicated N, rss growth max N%`; the exit code is
//! non-zero when anything was lost or doubled or an RSS grew more than 10%.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use taskmesh_integration::faults::{BrokerChoice, Fault, FaultStack, Load};

/// Load and no faults for this long first; also how long a process runs before its RSS
/// counts as its level.
const WARM_UP: Duration = Duration::from_secs(60);
const FAULT_EVERY: Duration = Duration::from_secs(60);
const SAMPLE_EVERY: Duration = Duration::from_secs(5);
const SCRIPTS_PER_SECOND: f64 = 20.0;
/// notification-service keeps a user's latest 500 notifications (its inbox's capacity): the
/// load is spread so that no user is owed more than this many in a run.
const NOTIFICATIONS_PER_USER: f64 = 250.0;
const RSS_GROWTH_TARGET_PERCENT: f64 = 10.0;

struct Args {
    minutes: u64,
    broker: BrokerChoice,
}

/// Enough users that none is owed more than `NOTIFICATIONS_PER_USER` (the load owes about
/// one notification per script), and a number prime to 6 so that every user runs every
/// one of the load's six kinds of script (it deals them round robin).
fn users_for(minutes: u64) -> usize {
    let scripts = SCRIPTS_PER_SECOND * (minutes * 60) as f64;
    let mut users = (scripts / NOTIFICATIONS_PER_USER).ceil().max(7.0) as usize;
    while users.is_multiple_of(2) || users.is_multiple_of(3) {
        users += 1;
    }
    users
}

/// Processes whose RSS is judged: Taskmesh's own and their sidecars.
fn is_judged(name: &str) -> bool {
    name.ends_with("-service") || name.ends_with("daprd")
}

fn args() -> anyhow::Result<Args> {
    let mut minutes = 10;
    let mut broker = BrokerChoice::Redis;
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "redis" => broker = BrokerChoice::Redis,
            "kafka" => broker = BrokerChoice::KafkaSaslTls,
            n => {
                minutes = n
                    .parse()
                    .with_context(|| format!("usage: soak [minutes] [redis|kafka]; got {n:?}"))?;
            }
        }
    }
    anyhow::ensure!(
        minutes >= 2,
        "a soak needs at least 2 minutes (1 of warm-up)"
    );
    Ok(Args { minutes, broker })
}

/// One run of one process: its level after warm-up and its latest RSS, in KiB.
#[derive(Debug, Clone)]
struct Incarnation {
    pid: u32,
    started: Instant,
    level: Option<(Instant, u64)>,
    last: u64,
}

impl Incarnation {
    /// Growth over the level, if it lived long enough past it to say.
    fn growth_percent(&self) -> Option<f64> {
        let (at, level) = self.level?;
        (at.elapsed() >= WARM_UP && level > 0)
            .then(|| (self.last as f64 - level as f64) * 100.0 / level as f64)
    }
}

/// RSS of every process of the stack, sampled over the run.
#[derive(Default)]
struct RssWatch {
    by_name: BTreeMap<String, Vec<Incarnation>>,
}

impl RssWatch {
    fn sample(&mut self, stack: &FaultStack) {
        for (name, pid) in stack.pids() {
            let Some(rss) = rss_kib(pid) else { continue };
            let runs = self.by_name.entry(name).or_default();
            if runs.last().is_none_or(|run| run.pid != pid) {
                runs.push(Incarnation {
                    pid,
                    started: Instant::now(),
                    level: None,
                    last: rss,
                });
            }
            if let Some(run) = runs.last_mut() {
                run.last = rss;
                if run.level.is_none() && run.started.elapsed() >= WARM_UP {
                    run.level = Some((Instant::now(), rss));
                }
            }
        }
    }

    fn report(&self) -> (String, f64) {
        let mut out = format!(
            "{:<28} {:>9} {:>9} {:>8}  {}\n",
            "process", "level MB", "end MB", "growth", "growth of each incarnation"
        );
        let mut worst: f64 = 0.0;
        for (name, runs) in &self.by_name {
            let (Some(first), Some(last)) = (runs.first(), runs.last()) else {
                continue;
            };
            let each: Vec<Option<f64>> = runs.iter().map(Incarnation::growth_percent).collect();
            let growth = each.iter().flatten().copied().reduce(f64::max);
            if let Some(growth) = growth.filter(|_| is_judged(name)) {
                worst = worst.max(growth);
            }
            let note = if is_judged(name) {
                ""
            } else {
                " (holds data: not judged)"
            };
            let each = each
                .iter()
                .map(|g| g.map_or("short".to_owned(), |g| format!("{g:+.1}%")))
                .collect::<Vec<_>>()
                .join(" ");
            out.push_str(&format!(
                "{:<28} {:>9} {:>9} {:>8}  {each}{note}\n",
                name,
                first.level.map_or("-".to_owned(), |(_, kib)| mb(kib)),
                mb(last.last),
                growth.map_or("-".to_owned(), |g| format!("{g:+.1}%")),
            ));
        }
        (out, worst)
    }
}

fn mb(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

/// Resident set of `pid` in KiB (PostgreSQL: its postmaster, not the backends).
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
}

/// `taskmesh_outbox_backlog_events` of task-service, if it answers.
fn backlog(stack: &FaultStack) -> Option<u64> {
    stack
        .task
        .service
        .metric("taskmesh_outbox_backlog_events")
        .map(|v| v as u64)
}

async fn soak(args: Args) -> anyhow::Result<bool> {
    let total = Duration::from_secs(args.minutes * 60);
    let users_n = users_for(args.minutes);
    println!(
        "soak: {} min on {}, {SCRIPTS_PER_SECOND} scripts/s over {users_n} users, a fault every {} s after {} s of warm-up",
        args.minutes,
        args.broker.name(),
        FAULT_EVERY.as_secs(),
        WARM_UP.as_secs()
    );
    let mut stack = FaultStack::start(args.broker).await?;
    let run = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    let users: Vec<String> = (0..users_n).map(|k| format!("soak-{run}-u{k}")).collect();
    let before = stack.deliveries();
    let load = Load::start(&stack.endpoint(), &users, SCRIPTS_PER_SECOND)?;
    let started = Instant::now();
    let mut rss = RssWatch::default();
    let mut max_backlog = 0u64;
    let mut faults = Fault::ALL.iter().copied().cycle();
    let mut next_fault = started + WARM_UP;
    let mut injected = Vec::new();
    while started.elapsed() < total {
        rss.sample(&stack);
        if let Some(now) = backlog(&stack) {
            max_backlog = max_backlog.max(now);
        }
        if Instant::now() >= next_fault && started.elapsed() + Duration::from_secs(20) < total {
            let fault = faults.next().unwrap_or(Fault::BrokerKill);
            let at = started.elapsed();
            fault
                .inject(&mut stack)
                .await
                .with_context(|| format!("inject {}", fault.name()))?;
            println!(
                "  {:>5.0}s {} (back after {:.1}s)",
                at.as_secs_f64(),
                fault.name(),
                (started.elapsed() - at).as_secs_f64()
            );
            injected.push(fault.name());
            next_fault += FAULT_EVERY;
        }
        tokio::time::sleep(SAMPLE_EVERY).await;
    }
    rss.sample(&stack);
    let load = load.stop().await;
    let counts = stack
        .settle(&users, &load, Duration::from_secs(300))
        .await?;
    rss.sample(&stack);
    let after = stack.deliveries();
    let delivered = [0, 1, 2].map(|i| after[i].saturating_sub(before[i]));

    let (table, worst) = rss.report();
    println!(
        "load: {} scripts, {} acknowledged writes, failed calls by code {:?}",
        load.scripts,
        load.acked.len(),
        load.failures
    );
    println!("faults: {}", injected.join(", "));
    println!(
        "created {} events; delivered analytics={} notification={} recurring={}; effects applied analytics={} notification={} recurring={}",
        counts.events,
        delivered[0],
        delivered[1],
        delivered[2],
        counts.applied[0],
        counts.applied[1],
        counts.applied[2]
    );
    println!(
        "unpublished {}, parked {}, max outbox backlog {max_backlog}",
        counts.unpublished, counts.parked
    );
    for problem in counts.problems.iter().take(20) {
        println!("  problem: {problem}");
    }
    print!("{table}");
    println!(
        "soak: lost {}, duplicated {}, rss growth max {:.0}%",
        counts.lost + counts.unpublished,
        counts.duplicated,
        worst.max(0.0)
    );
    if counts.lost + counts.unpublished + counts.duplicated > 0 {
        print!("{}", stack.logs());
    }
    Ok(counts.lost == 0
        && counts.unpublished == 0
        && counts.duplicated == 0
        && counts.events > 0
        && worst <= RSS_GROWTH_TARGET_PERCENT)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let args = match args() {
        Ok(args) => args,
        Err(err) => {
            eprintln!("{err:#}");
            return ExitCode::from(2);
        }
    };
    match soak(args).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(err) => {
            eprintln!("soak failed: {err:#}");
            ExitCode::FAILURE
        }
    }
}

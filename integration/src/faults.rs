//! The fault matrix: the whole system (task-service on PostgreSQL and the three subscriber
//! services, each with its own daprd) on one broker, steady mixed load through the real
//! API, one fault injected on the running stack, and then the count of what every
//! consumer made of every committed event.
//!
//! The ground truth is the outbox: every committed change has a row there with its event
//! id and payload (published rows are kept a day). From it the harness derives the
//! effects each consumer owes, reads what each consumer shows through its own API, and
//! counts what is missing (lost) and what is there too often (duplicated):
//! - analytics-service: `stats/get` per user, whose `created`, `completed` and `deleted`
//!   counters must equal the tasks the events created, completed and deleted;
//! - notification-service: `notifications/list` per user, one notification per event that
//!   implies one (its id is the event's id), none other;
//! - recurring-service: through task-service's own listing, exactly one next occurrence
//!   per completed recurring task (each script's title is unique, and the next occurrence
//!   keeps it).
//!
//! A fault is a function on a running `FaultStack` (`Fault::inject`), so that a soak run
//! can inject one after another on one stack.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use sea_orm::{ConnectionTrait, Statement};
use serde_json::{Value, json};
use taskmesh_proto::tasks::v1::{
    CompleteTaskRequest, CreateTaskRequest, DeleteTaskRequest, ListTasksRequest, UpdateTaskRequest,
};

use crate::apps::{App, Stack, eventually};
use crate::client::{TaskClient, task_client};
use crate::kafka_broker::KafkaBroker;
use crate::postgres::{Durability, PgCluster, fresh_database};
use crate::process::signal;
use crate::redis_server::RedisServer;
use crate::scheduler::Scheduler;
use crate::sidecar::{Broker, Resources, http_get};

/// The secret client tokens of the matrix are signed with.
pub const SECRET: &str = "fault-matrix-secret-0123456789abcdef0123456789abcdef";
const APP_TOKEN_SEED: &str = "fault-matrix-app-token";
const FAILPOINTS: &str = taskmesh_shared::failpoint::ENV;

/// Which broker the stack runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerChoice {
    /// Redis Streams, on a Redis that fsyncs its append-only file on every write.
    Redis,
    /// Kafka with clients on PLAINTEXT.
    Kafka,
    /// Kafka with clients on SASL_SSL: SCRAM-SHA-256 over TLS with a CA made by the test,
    /// and the component metadata of the chart's production values.
    KafkaSaslTls,
}

impl BrokerChoice {
    pub fn name(self) -> &'static str {
        match self {
            Self::Redis => "redis",
            Self::Kafka => "kafka",
            Self::KafkaSaslTls => "kafka-sasl-tls",
        }
    }

    fn broker(self) -> Broker {
        match self {
            Self::Redis => Broker::Redis,
            Self::Kafka | Self::KafkaSaslTls => Broker::Kafka,
        }
    }
}

/// The consumers, in the order of the report.
pub const CONSUMERS: [&str; 3] = ["analytics", "notification", "recurring"];

/// The running system.
pub struct FaultStack {
    pub choice: BrokerChoice,
    /// Redis Streams (the pub/sub) on its own server, so that killing it leaves the state
    /// store alone.
    broker_redis: Option<RedisServer>,
    kafka: Option<KafkaBroker>,
    state_redis: RedisServer,
    pg: PgCluster,
    database_url: String,
    _scheduler: Scheduler,
    _resources: Resources,
    _config_dir: tempfile::TempDir,
    /// task-service replica A: the load's and the counting's endpoint.
    pub task: App,
    /// task-service replica B, on the same database with its own daprd (app id
    /// `task-service` too). Started first, so that it leads the outbox relay and
    /// `leader-stall` stops a replica the load does not call.
    pub task_b: App,
    pub analytics: App,
    pub notification: App,
    pub recurring: App,
    tally: Tally,
    /// The last `leader-stall`'s takeover: SIGSTOP until the standby led.
    takeover: Option<Duration>,
}

/// How long `leader-stall` keeps the leader stopped: three leases.
const STALL: Duration = Duration::from_secs(30);
/// The documented takeover (docs/events.md, "Which replica publishes"): lease 10 s + retry
/// 1 s + lock timeout 2 s, plus room for a busy 2-core machine.
const TAKEOVER_LIMIT: Duration = Duration::from_secs(20);

impl FaultStack {
    /// Starts everything: the broker, a state-store Redis, PostgreSQL, the Dapr scheduler,
    /// task-service and the three subscribers, each with its own daprd.
    pub async fn start(choice: BrokerChoice) -> anyhow::Result<Self> {
        let state_redis = RedisServer::start()?;
        let (broker_redis, kafka) = match choice {
            BrokerChoice::Redis => (Some(RedisServer::start_durable()?), None),
            BrokerChoice::Kafka => (None, Some(KafkaBroker::start()?)),
            BrokerChoice::KafkaSaslTls => (None, Some(KafkaBroker::start_secure()?)),
        };
        let pg = PgCluster::start(Durability::Fast)?;
        let database_url = fresh_database(&pg.admin_url()).await?;
        let scheduler = Scheduler::start()?;
        let pubsub_redis = broker_redis
            .as_ref()
            .map_or_else(|| state_redis.addr(), RedisServer::addr);
        let resources = Resources::with_state_store(
            choice.broker(),
            &pubsub_redis,
            &state_redis.addr(),
            kafka.as_ref().map(KafkaBroker::bootstrap).as_deref(),
        )?;
        let mut sidecar_env = Vec::new();
        if let Some(secure) = kafka.as_ref().and_then(KafkaBroker::secure) {
            secure_pubsub(&resources, secure)?;
            // The CA where the chart's dapr.trustedCASecret puts it: on SSL_CERT_DIR,
            // beside the system's roots.
            sidecar_env.push((
                "SSL_CERT_DIR".to_owned(),
                format!("/etc/ssl/certs:{}", secure.ca_dir.display()),
            ));
        }
        // Name resolution of the stack's own (a SQLite file): with mDNS, recurring-service
        // created next occurrences in another stack's task-service while a soak ran beside
        // the tests (counted, rightly, as lost).
        let config_dir = tempfile::Builder::new()
            .prefix("taskmesh-faults-config-")
            .tempdir()?;
        let config = crate::apps::private_name_resolution(config_dir.path())?;
        // The address the sidecars register for service invocation: they listen on
        // loopback only.
        sidecar_env.push(("DAPR_HOST_IP".to_owned(), "127.0.0.1".to_owned()));
        let stack = Stack {
            token_seed: Some(APP_TOKEN_SEED.into()),
            scheduler: Some(scheduler.addr()),
            sidecar_env,
            config: Some(config),
            ..Stack::default()
        };
        let blocking = |name: &str, env: Vec<(String, String)>| {
            tokio::task::block_in_place(|| stack.start(name, &resources, env))
                .with_context(|| format!("start {name}"))
        };
        let mut task_env: Vec<(String, String)> = crate::services::unlimited().to_vec();
        task_env.extend([
            ("DATABASE_URL".to_owned(), database_url.clone()),
            ("TASKMESH_JWT_SECRET".to_owned(), SECRET.to_owned()),
            ("TASKMESH_SHUTDOWN_GRACE_SECS".to_owned(), "2".to_owned()),
        ]);
        // Replica B first, and leading before A starts: the load calls A.
        let task_b = blocking("task-service", task_env.clone())?;
        eventually(Duration::from_secs(30), async || {
            leads(&task_b).then_some(())
        })
        .await
        .with_context(|| {
            format!(
                "task-service replica B never led the relay:\n{}",
                crate::apps::tail(&task_b.service.log())
            )
        })?;
        let task = blocking("task-service", task_env)?;
        let analytics = blocking("analytics-service", vec![])?;
        let notification = blocking("notification-service", vec![])?;
        let recurring = blocking("recurring-service", vec![])?;
        let tally = Tally::start([
            analytics.service.metrics_port(),
            notification.service.metrics_port(),
            recurring.service.metrics_port(),
        ]);
        Ok(Self {
            choice,
            broker_redis,
            kafka,
            state_redis,
            pg,
            database_url,
            _scheduler: scheduler,
            _resources: resources,
            _config_dir: config_dir,
            task,
            task_b,
            analytics,
            notification,
            recurring,
            tally,
            takeover: None,
        })
    }

    pub fn endpoint(&self) -> String {
        self.task.service.endpoint()
    }

    /// The apps, by name.
    fn apps(&self) -> [(&'static str, &App); 5] {
        [
            ("task-service", &self.task),
            ("task-service B", &self.task_b),
            ("analytics-service", &self.analytics),
            ("notification-service", &self.notification),
            ("recurring-service", &self.recurring),
        ]
    }

    /// Every process of the stack that runs now, by name (for a soak's RSS report).
    pub fn pids(&self) -> Vec<(String, u32)> {
        let mut pids = vec![("postgres".to_owned(), self.pg.pid())];
        pids.extend(
            self.state_redis
                .pid()
                .map(|pid| ("redis-state-store".to_owned(), pid)),
        );
        pids.extend(
            self.broker_redis
                .as_ref()
                .and_then(RedisServer::pid)
                .map(|pid| ("redis-broker".to_owned(), pid)),
        );
        pids.extend(
            self.kafka
                .as_ref()
                .and_then(KafkaBroker::pid)
                .map(|pid| ("kafka".to_owned(), pid)),
        );
        for (name, app) in self.apps() {
            pids.extend(app.service.pid().map(|pid| (name.to_owned(), pid)));
            pids.extend(app.sidecar.pid().map(|pid| (format!("{name} daprd"), pid)));
        }
        pids
    }

    /// Deliveries each consumer has handled so far (every outcome, redeliveries included),
    /// summed over restarts of its process.
    pub fn deliveries(&self) -> [u64; 3] {
        self.tally.now()
    }

    /// The logs of every process, for a failure message: each service's first warnings
    /// and errors, and the last lines of it and of its sidecar.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for (name, app) in self.apps() {
            let log = app.service.log();
            let trouble: Vec<&str> = log
                .lines()
                .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
                .take(30)
                .collect();
            out.push_str(&format!(
                "--- {name}: warnings and errors\n{}\n--- {name}: last lines\n{}\n--- {name}'s sidecar\n{}\n",
                trouble.join("\n"),
                crate::apps::tail(&log),
                crate::apps::tail(&app.sidecar.log())
            ));
        }
        out
    }

    /// Waits until every consumer shows exactly the effects the committed events of
    /// `users` imply (or `timeout` passes, or nothing changes for a while), then counts.
    pub async fn settle(
        &self,
        users: &[String],
        load: &LoadResult,
        timeout: Duration,
    ) -> anyhow::Result<Counts> {
        let deadline = Instant::now() + timeout;
        loop {
            let counts = self.count(users, load).await?;
            if counts.lost == 0 && counts.duplicated == 0 && counts.unpublished == 0 {
                // Settled; a late redelivery would show as a duplicate a moment later.
                tokio::time::sleep(Duration::from_secs(3)).await;
                return self.count(users, load).await;
            }
            if Instant::now() > deadline {
                return Ok(counts);
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// Counts, once, what each consumer shows against what the committed events imply.
    pub async fn count(&self, users: &[String], load: &LoadResult) -> anyhow::Result<Counts> {
        let events = self.committed_events(users).await?;
        let mut counts = Counts {
            events: events.len() as u64,
            ..Counts::default()
        };
        counts.unpublished = events.iter().filter(|e| !e.published).count() as u64;
        counts.parked = self.parked().await?;

        // Every acknowledged write has its event.
        let have: HashSet<(&str, &str)> = events
            .iter()
            .map(|e| (e.task_id.as_str(), e.kind.as_str()))
            .collect();
        for (task, kind) in &load.acked {
            if !have.contains(&(task.as_str(), kind.as_str())) {
                counts.lost_acked += 1;
                counts
                    .problems
                    .push(format!("acknowledged {kind} of {task}: no event"));
            }
        }

        for user in users {
            let mine: Vec<&Event> = events.iter().filter(|e| &e.owner == user).collect();
            self.count_analytics(user, &mine, &mut counts)?;
            self.count_notifications(user, &mine, &mut counts)?;
            self.count_next_occurrences(user, &mine, &mut counts)
                .await?;
        }
        counts.lost += counts.lost_acked + counts.parked;
        Ok(counts)
    }

    fn count_analytics(
        &self,
        user: &str,
        events: &[&Event],
        counts: &mut Counts,
    ) -> anyhow::Result<()> {
        let tasks_with = |kind: &str| -> u64 {
            events
                .iter()
                .filter(|e| kind.is_empty() || e.kind == kind)
                .map(|e| e.task_id.as_str())
                .collect::<HashSet<_>>()
                .len() as u64
        };
        let expected = [
            ("created", tasks_with("")),
            ("completed", tasks_with("completed")),
            ("deleted", tasks_with("deleted")),
        ];
        let stats = match self.analytics.invoke_ok(
            "analytics-service",
            "stats/get",
            &json!({"user_id": user}),
        ) {
            Ok(stats) => stats,
            Err(err) => {
                // Not readable right now (its sidecar restarting): all of it counts as
                // missing until it is.
                counts.problems.push(format!("stats/get {user}: {err:#}"));
                counts.lost += expected.iter().map(|(_, n)| n).sum::<u64>();
                return Ok(());
            }
        };
        for (counter, want) in expected {
            let got = stats[counter].as_u64().unwrap_or(0);
            counts.applied[0] += got.min(want);
            if got < want {
                counts.lost += want - got;
                counts
                    .problems
                    .push(format!("analytics {user} {counter}: {got} of {want}"));
            } else if got > want {
                counts.duplicated += got - want;
                counts.problems.push(format!(
                    "analytics {user} {counter}: {got}, expected {want}"
                ));
            }
        }
        Ok(())
    }

    fn count_notifications(
        &self,
        user: &str,
        events: &[&Event],
        counts: &mut Counts,
    ) -> anyhow::Result<()> {
        let expected: HashSet<&str> = events
            .iter()
            .filter(|e| e.implies_notification())
            .map(|e| e.event_id.as_str())
            .collect();
        let listed = match self.notifications(user) {
            Ok(listed) => listed,
            Err(err) => {
                counts
                    .problems
                    .push(format!("notifications/list {user}: {err:#}"));
                counts.lost += expected.len() as u64;
                return Ok(());
            }
        };
        let mut seen: HashMap<&str, u64> = HashMap::new();
        for id in &listed {
            *seen.entry(id.as_str()).or_default() += 1;
        }
        for id in &expected {
            match seen.get(id) {
                None => {
                    counts.lost += 1;
                    counts
                        .problems
                        .push(format!("notification {user}: none for event {id}"));
                }
                Some(n) => {
                    counts.applied[1] += 1;
                    counts.duplicated += n - 1;
                }
            }
        }
        for (id, n) in &seen {
            if !expected.contains(id) {
                counts.duplicated += n;
                counts
                    .problems
                    .push(format!("notification {user}: unexpected {id}"));
            }
        }
        Ok(())
    }

    /// Every notification id of `user` (all pages).
    fn notifications(&self, user: &str) -> anyhow::Result<Vec<String>> {
        let mut ids = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut request = json!({"user_id": user, "page_size": 100});
            if let Some(token) = &token {
                request["page_token"] = json!(token);
            }
            let page = self.notification.invoke_ok(
                "notification-service",
                "notifications/list",
                &request,
            )?;
            let listed = page["notifications"]
                .as_array()
                .context("notifications/list: no notifications")?;
            ids.extend(
                listed
                    .iter()
                    .filter_map(|n| n["id"].as_str().map(str::to_owned)),
            );
            match page["next_page_token"].as_str() {
                Some(next) if !next.is_empty() => token = Some(next.to_owned()),
                _ => return Ok(ids),
            }
        }
    }

    async fn count_next_occurrences(
        &self,
        user: &str,
        events: &[&Event],
        counts: &mut Counts,
    ) -> anyhow::Result<()> {
        // A script's title is unique; recurring-service's next occurrence keeps it.
        let rolled: HashSet<&str> = events
            .iter()
            .filter(|e| e.kind == "completed" && e.has_next_occurrence())
            .map(|e| e.title.as_str())
            .collect();
        if rolled.is_empty() {
            return Ok(());
        }
        let titles = match self.titles(user).await {
            Ok(titles) => titles,
            Err(err) => {
                counts.problems.push(format!("ListTasks {user}: {err:#}"));
                counts.lost += rolled.len() as u64;
                return Ok(());
            }
        };
        for title in rolled {
            // The completed task itself, and exactly one next occurrence.
            let n = titles.get(title).copied().unwrap_or(0);
            match n {
                0 | 1 => {
                    counts.lost += 1;
                    counts
                        .problems
                        .push(format!("recurring {user}: no next occurrence of {title:?}"));
                }
                _ => {
                    counts.applied[2] += 1;
                    counts.duplicated += n - 2;
                    if n > 2 {
                        counts.problems.push(format!(
                            "recurring {user}: {} next occurrences of {title:?}",
                            n - 1
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// How many tasks of `user` have each title (task-service's own listing).
    async fn titles(&self, user: &str) -> anyhow::Result<HashMap<String, u64>> {
        let mut client = task_client(&self.endpoint(), SECRET, user)?;
        let mut titles = HashMap::new();
        let mut token = String::new();
        loop {
            let page = client
                .list_tasks(ListTasksRequest {
                    page_size: 500,
                    page_token: token.clone(),
                    ..ListTasksRequest::default()
                })
                .await?
                .into_inner();
            for task in page.tasks {
                *titles.entry(task.title).or_default() += 1;
            }
            if page.next_page_token.is_empty() {
                return Ok(titles);
            }
            token = page.next_page_token;
        }
    }

    /// The outbox rows of `users`' tasks: every committed event.
    async fn committed_events(&self, users: &[String]) -> anyhow::Result<Vec<Event>> {
        let rows = self
            .query("SELECT event_id, task_id, event_type, payload, published_at FROM outbox")
            .await?;
        let users: HashSet<&str> = users.iter().map(String::as_str).collect();
        let mut events = Vec::new();
        for row in rows {
            let payload: String = row.try_get("", "payload")?;
            let published: Option<i64> = row.try_get("", "published_at")?;
            let event_type: String = row.try_get("", "event_type")?;
            let envelope: Value = serde_json::from_str(&payload)?;
            let data = &envelope["data"];
            let owner = data["owner_id"].as_str().unwrap_or_default().to_owned();
            if !users.contains(owner.as_str()) {
                continue;
            }
            let task = &data["task"];
            events.push(Event {
                event_id: row.try_get("", "event_id")?,
                task_id: row.try_get("", "task_id")?,
                kind: event_type
                    .trim_start_matches("taskmesh.task.")
                    .trim_end_matches(".v1")
                    .to_owned(),
                owner,
                published: published.is_some(),
                title: task["title"].as_str().unwrap_or_default().to_owned(),
                has_due: !task["due_time"].is_null(),
                completed: task["completed"].as_bool().unwrap_or(false),
                recurrence: task["recurrence"].as_str().map(str::to_owned),
                due_time_changed: data["changed_fields"]
                    .as_array()
                    .is_some_and(|f| f.iter().any(|f| f == "due_time")),
            });
        }
        Ok(events)
    }

    async fn parked(&self) -> anyhow::Result<u64> {
        let rows = self
            .query("SELECT COUNT(*) AS n FROM outbox_parked")
            .await?;
        let n: i64 = rows.first().map_or(Ok(0), |r| r.try_get("", "n"))?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// The rows of `sql` on the stack's database, over a connection of its own.
    async fn query(&self, sql: &str) -> anyhow::Result<Vec<sea_orm::QueryResult>> {
        let db = sea_orm::Database::connect(&self.database_url).await?;
        let rows = db
            .query_all_raw(Statement::from_string(db.get_database_backend(), sql))
            .await;
        let _ = db.close().await;
        Ok(rows?)
    }
}

/// What templates/dapr-components.yaml renders with `pubsub.sasl.enabled` and
/// `pubsub.tls.enabled` (values-prod.yaml): SCRAM-SHA-256 credentials by `secretKeyRef`
/// from a secret store (`auth.secretStore`), TLS on. The chart's store is Kubernetes';
/// here it is a local file with the same secret name and keys.
fn secure_pubsub(
    resources: &Resources,
    secure: &crate::kafka_broker::Secure,
) -> anyhow::Result<()> {
    const SECRET: &str = "taskmesh-redpanda";
    const STORE: &str = "taskmesh-secrets";
    // Beside the broker's certificates (daprd reads every YAML file of a resources path).
    let file = secure
        .ca_dir
        .parent()
        .context("the CA directory has no parent")?
        .join("secrets.json");
    std::fs::write(
        &file,
        json!({SECRET: {"username": secure.username, "password": secure.password}}).to_string(),
    )?;
    resources.add(
        "secrets.yaml",
        &format!(
            "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: {STORE}\n\
             spec:\n  type: secretstores.local.file\n  version: v1\n  metadata:\n\
             \x20   - name: secretsFile\n      value: {}\n\
             \x20   - name: multiValued\n      value: \"true\"\n",
            file.display()
        ),
    )?;
    resources.replace(
        "pubsub.yaml",
        "    - name: authType\n      value: none\n",
        &format!(
            "    - name: authType\n      value: password\n\
             \x20   - name: saslMechanism\n      value: SHA-256\n\
             \x20   - name: saslUsername\n      secretKeyRef:\n        name: {SECRET}\n        key: username\n\
             \x20   - name: saslPassword\n      secretKeyRef:\n        name: {SECRET}\n        key: password\n"
        ),
    )?;
    resources.replace(
        "pubsub.yaml",
        "    - name: disableTls\n      value: \"true\"\n",
        "    - name: disableTls\n      value: \"false\"\n",
    )?;
    let path = resources.path().join("pubsub.yaml");
    let text = std::fs::read_to_string(&path)?;
    std::fs::write(
        &path,
        format!("{}\nauth:\n  secretStore: {STORE}\n", text.trim_end()),
    )?;
    Ok(())
}

/// One committed event, as the outbox holds it.
#[derive(Debug, Clone)]
struct Event {
    event_id: String,
    task_id: String,
    /// `created`, `updated`, `completed`, `reopened`, `deleted`.
    kind: String,
    owner: String,
    published: bool,
    title: String,
    has_due: bool,
    completed: bool,
    recurrence: Option<String>,
    due_time_changed: bool,
}

impl Event {
    /// notification-service's rule (`notification_for`): a new due time of an open task,
    /// or the roll-over of a completed recurring task whose series goes on.
    fn implies_notification(&self) -> bool {
        let open = !self.completed && self.kind != "deleted";
        match self.kind.as_str() {
            "created" => open && self.has_due,
            "updated" => open && self.has_due && self.due_time_changed,
            "completed" => self.has_next_occurrence(),
            _ => false,
        }
    }

    /// A completed recurring task with a due time and occurrences left (the load's
    /// recurring tasks are daily in UTC with a COUNT, so the COUNT decides).
    fn has_next_occurrence(&self) -> bool {
        let Some(rule) = &self.recurrence else {
            return false;
        };
        let count = rule
            .split(';')
            .find_map(|part| part.strip_prefix("COUNT="))
            .and_then(|n| n.parse::<u32>().ok());
        self.has_due && count.is_none_or(|n| n > 1)
    }
}

/// What a run found. `applied` is per consumer, in `CONSUMERS` order.
#[derive(Debug, Clone, Default)]
pub struct Counts {
    /// Committed events of the run's users.
    pub events: u64,
    /// Effects found exactly as owed, per consumer.
    pub applied: [u64; 3],
    /// Owed effects missing, acknowledged writes without an event, parked events.
    pub lost: u64,
    /// Effects found more often than owed, or not owed at all.
    pub duplicated: u64,
    pub unpublished: u64,
    pub parked: u64,
    pub lost_acked: u64,
    /// What is wrong, for the failure message.
    pub problems: Vec<String>,
}

/// One fault on a running stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The broker SIGKILLed, down 10 s, restarted.
    BrokerKill,
    /// PostgreSQL stopped (fast shutdown), down 5 s, started again.
    PostgresRestart,
    /// task-service SIGKILLed and restarted (on PostgreSQL).
    TaskServiceKill,
    /// Every subscriber's daprd SIGKILLed in the middle of deliveries, restarted 2 s later.
    SubscriberSidecarKill,
    /// Every consumer aborted by its fail point in the middle of an event (after its state
    /// write or its next occurrence, before it answers the delivery), then restarted.
    ConsumerKill,
    /// The outbox relay's leader (a task-service replica) stopped with SIGSTOP for 30 s,
    /// then continued: the other replica must lead within the documented bound.
    LeaderStall,
}

impl Fault {
    pub const ALL: [Fault; 6] = [
        Self::BrokerKill,
        Self::PostgresRestart,
        Self::TaskServiceKill,
        Self::SubscriberSidecarKill,
        Self::ConsumerKill,
        Self::LeaderStall,
    ];

    /// Whether the run raises the load just before this fault, so that it hits calls,
    /// publishes and deliveries in flight (a consumer's fail point aims by itself; the
    /// outages last long enough for steady load).
    pub fn surges(self) -> bool {
        matches!(self, Self::TaskServiceKill | Self::SubscriberSidecarKill)
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::BrokerKill => "broker-kill",
            Self::PostgresRestart => "postgres-restart",
            Self::TaskServiceKill => "task-service-kill",
            Self::SubscriberSidecarKill => "subscriber-sidecar-kill",
            Self::ConsumerKill => "consumer-kill",
            Self::LeaderStall => "leader-stall",
        }
    }

    /// Injects the fault and brings the stack back; returns when every process runs again.
    pub async fn inject(self, stack: &mut FaultStack) -> anyhow::Result<()> {
        tracing::info!(fault = self.name(), "injecting");
        match self {
            Self::BrokerKill => {
                match (&mut stack.broker_redis, &mut stack.kafka) {
                    (Some(redis), _) => redis.kill(),
                    (None, Some(kafka)) => kafka.kill(),
                    (None, None) => anyhow::bail!("no broker"),
                }
                tokio::time::sleep(Duration::from_secs(10)).await;
                tokio::task::block_in_place(|| match (&mut stack.broker_redis, &mut stack.kafka) {
                    (Some(redis), _) => redis.restart(),
                    (None, Some(kafka)) => kafka.restart(),
                    (None, None) => anyhow::bail!("no broker"),
                })
                .context("restart the broker")?;
            }
            Self::PostgresRestart => {
                tokio::task::block_in_place(|| stack.pg.stop());
                tokio::time::sleep(Duration::from_secs(5)).await;
                tokio::task::block_in_place(|| stack.pg.restart()).context("restart PostgreSQL")?;
            }
            Self::TaskServiceKill => {
                stack.task.service.kill();
                tokio::task::block_in_place(|| stack.task.service.restart())
                    .context("restart task-service")?;
            }
            Self::SubscriberSidecarKill => {
                for app in stack.subscribers_mut() {
                    app.sidecar.kill();
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
                for app in stack.subscribers_mut() {
                    tokio::task::block_in_place(|| app.sidecar.restart())
                        .context("restart a subscriber's daprd")?;
                }
            }
            Self::ConsumerKill => {
                // Armed for one run of each process: a few writes (or next occurrences)
                // into the load, so that it dies in the middle of it.
                let armed = [
                    format!("{}=15", taskmesh_shared::failpoint::RECORD_WRITTEN),
                    format!("{}=25", taskmesh_shared::failpoint::RECORD_WRITTEN),
                    format!("{}=2", taskmesh_shared::failpoint::NEXT_CREATED),
                ];
                for (app, spec) in stack.subscribers_mut().into_iter().zip(&armed) {
                    app.service.set_env(FAILPOINTS, Some(spec));
                    tokio::task::block_in_place(|| {
                        app.service.stop();
                        app.service.restart()
                    })
                    .context("restart a consumer with its fail point armed")?;
                }
                let deadline = Instant::now() + Duration::from_secs(90);
                for (app, spec) in stack.subscribers_mut().into_iter().zip(&armed) {
                    let left = deadline.saturating_duration_since(Instant::now());
                    eventually(left, async || app.service.exited().then_some(()))
                        .await
                        .with_context(|| {
                            format!(
                                "{spec} was never reached:\n{}",
                                crate::apps::tail(&app.service.log())
                            )
                        })?;
                    anyhow::ensure!(
                        app.service.log().contains("fail point reached"),
                        "the consumer exited, but not at its fail point:\n{}",
                        crate::apps::tail(&app.service.log())
                    );
                    app.service.set_env(FAILPOINTS, None);
                    app.service.kill();
                    tokio::task::block_in_place(|| app.service.restart())
                        .context("restart a consumer after its fail point")?;
                }
            }
            Self::LeaderStall => {
                let leader = stack.one_leader().await?;
                let standby = 1 - leader;
                let pid = stack
                    .replica(leader)
                    .service
                    .pid()
                    .context("the leading replica runs no process")?;
                // A stopped process keeps its sockets (its kernel even answers TCP
                // keepalive): only the lock's lease frees the lock. Its metrics are not
                // read while it is stopped (the read would wait for it).
                signal(pid, "STOP").context("SIGSTOP the leader")?;
                let stopped = Instant::now();
                let mut took_over = None;
                while stopped.elapsed() < STALL {
                    if took_over.is_none() && leads(stack.replica(standby)) {
                        took_over = Some(stopped.elapsed());
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                signal(pid, "CONT").context("SIGCONT the leader")?;
                stack.takeover = took_over;
                tracing::info!(?took_over, "leader stalled {STALL:?}, continued");
                let took_over = took_over.with_context(|| {
                    format!("the standby did not lead within the {STALL:?} stall")
                })?;
                anyhow::ensure!(
                    took_over <= TAKEOVER_LIMIT,
                    "the standby led {took_over:?} after SIGSTOP (documented 13 s, allowed \
                     {TAKEOVER_LIMIT:?})"
                );
                // The resumed replica finds out it lost the lock (lock timeout, 2 s): one
                // leader again before the next fault.
                eventually(Duration::from_secs(10), async || {
                    (!leads(stack.replica(leader)) && leads(stack.replica(standby))).then_some(())
                })
                .await
                .context("the resumed leader did not step down within 10 s")?;
            }
        }
        tracing::info!(fault = self.name(), "recovered");
        Ok(())
    }
}

impl FaultStack {
    /// task-service replica `i`: 0 is A (the load's), 1 is B.
    fn replica(&self, i: usize) -> &App {
        if i == 0 { &self.task } else { &self.task_b }
    }

    /// Which replica leads the relay, once exactly one does (within 30 s: after a
    /// PostgreSQL restart both may be between two tries for the lock).
    async fn one_leader(&self) -> anyhow::Result<usize> {
        eventually(Duration::from_secs(30), async || {
            match (leads(&self.task), leads(&self.task_b)) {
                (true, false) => Some(0),
                (false, true) => Some(1),
                _ => None,
            }
        })
        .await
        .with_context(|| {
            let both = (leads(&self.task), leads(&self.task_b));
            format!("no single relay leader within 30 s (A, B lead: {both:?})")
        })
    }

    fn subscribers_mut(&mut self) -> [&mut App; 3] {
        [
            &mut self.analytics,
            &mut self.notification,
            &mut self.recurring,
        ]
    }

    /// One run of the matrix: load on fresh users, `fault` injected `lead` into it, load
    /// for a few more seconds after the stack is back, then settle and count.
    pub async fn run(&mut self, fault: Fault, options: &RunOptions) -> anyhow::Result<RunReport> {
        let run = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
        let users: Vec<String> = (0..options.users)
            .map(|k| format!("{}-{run}-u{k}", fault.name()))
            .collect();
        let began = Instant::now();
        let before = self.deliveries();
        // A stalled replica holds its calls: the load goes to the one that does not lead,
        // which must take over (B leads from the start, but faults before may move it).
        let endpoint = if fault == Fault::LeaderStall {
            self.replica(1 - self.one_leader().await?)
                .service
                .endpoint()
        } else {
            self.endpoint()
        };
        let load = Load::start(&endpoint, &users, options.scripts_per_second)?;
        tokio::time::sleep(options.lead).await;
        if fault.surges() {
            // Calls, publishes and deliveries in flight at the moment of the fault.
            load.set_rate(options.surge_scripts_per_second);
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        let started = Instant::now();
        self.takeover = None;
        let injected = fault.inject(self).await;
        let outage = started.elapsed();
        load.set_rate(options.scripts_per_second);
        if injected.is_ok() {
            tokio::time::sleep(options.tail).await;
        }
        let load = load.stop().await;
        injected.with_context(|| format!("inject {}", fault.name()))?;
        let counts = self.settle(&users, &load, options.settle).await?;
        let after = self.deliveries();
        let delivered = [0, 1, 2].map(|i| after[i].saturating_sub(before[i]));
        Ok(RunReport {
            fault,
            users,
            broker: self.choice,
            counts,
            delivered,
            load,
            outage,
            takeover: self.takeover.take(),
            elapsed: began.elapsed(),
        })
    }
}

/// How a run loads the stack.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub users: usize,
    pub scripts_per_second: f64,
    /// The rate in the 2 s before a kill that must find work in flight
    /// (`Fault::surges`), and during it.
    pub surge_scripts_per_second: f64,
    /// Load before the fault.
    pub lead: Duration,
    /// Load after the stack is back.
    pub tail: Duration,
    /// How long consumers may take to catch up.
    pub settle: Duration,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            users: 4,
            scripts_per_second: 10.0,
            surge_scripts_per_second: 60.0,
            lead: Duration::from_secs(5),
            tail: Duration::from_secs(4),
            settle: Duration::from_secs(240),
        }
    }
}

pub struct RunReport {
    pub fault: Fault,
    /// The run's users: every task of the run is theirs.
    pub users: Vec<String>,
    pub broker: BrokerChoice,
    pub counts: Counts,
    pub delivered: [u64; 3],
    pub load: LoadResult,
    /// From the fault's start until every process ran again.
    pub outage: Duration,
    /// `leader-stall`: from SIGSTOP of the leader until the standby led.
    pub takeover: Option<Duration>,
    /// The whole run: load, fault, settling and counting.
    pub elapsed: Duration,
}

impl RunReport {
    /// The run's line of the matrix.
    pub fn line(&self) -> String {
        let c = &self.counts;
        format!(
            "fault={} broker={} created={} delivered{{analytics={},notification={},recurring={}}} applied={} lost={} duplicated={}",
            self.fault.name(),
            self.broker.name(),
            c.events,
            self.delivered[0],
            self.delivered[1],
            self.delivered[2],
            c.applied.iter().sum::<u64>(),
            c.lost,
            c.duplicated,
        )
    }

    /// What else a reader of the log wants: the load's answers and the effects per
    /// consumer.
    pub fn details(&self) -> String {
        let c = &self.counts;
        let takeover = self
            .takeover
            .map(|t| format!("; takeover {:.1}s", t.as_secs_f64()))
            .unwrap_or_default();
        format!(
            "  load: {} scripts, {} acknowledged writes, failures by code {:?}; outage {:.1}s{}; \
             run {:.0}s; effects analytics={} notification={} recurring={}; unpublished={} parked={}",
            self.load.scripts,
            self.load.acked.len(),
            self.load.failures,
            self.outage.as_secs_f64(),
            takeover,
            self.elapsed.as_secs_f64(),
            c.applied[0],
            c.applied[1],
            c.applied[2],
            c.unpublished,
            c.parked,
        )
    }
}

/// Deliveries handled per consumer, read from each consumer's metrics endpoint every
/// 200 ms and carried over restarts (a counter that goes down is a new process).
struct Tally {
    totals: Arc<[AtomicU64; 3]>,
    stop: Arc<AtomicBool>,
}

impl Tally {
    fn start(ports: [u16; 3]) -> Self {
        let totals: Arc<[AtomicU64; 3]> = Arc::new(Default::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (out, halt) = (totals.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut carried = [0u64; 3];
            let mut last = [0u64; 3];
            while !halt.load(Ordering::Relaxed) {
                for (i, port) in ports.iter().enumerate() {
                    let Some(now) = handled(*port) else { continue };
                    if now < last[i] {
                        carried[i] += last[i];
                    }
                    last[i] = now;
                    out[i].store(carried[i] + now, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        });
        Self { totals, stop }
    }

    fn now(&self) -> [u64; 3] {
        [0, 1, 2].map(|i| self.totals[i].load(Ordering::Relaxed))
    }
}

impl Drop for Tally {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Whether task-service replica `app` leads the outbox relay (metric
/// `taskmesh_outbox_relay_leader`). Never call it on a stopped process: its kernel accepts
/// the connection and the read waits for the process.
fn leads(app: &App) -> bool {
    app.service.metric("taskmesh_outbox_relay_leader") == Some(1.0)
}

/// `taskmesh_events_handled_total` of topic task-events, every type and outcome.
fn handled(metrics_port: u16) -> Option<u64> {
    let (status, text) = http_get(metrics_port, "/metrics").ok()?;
    if status != 200 {
        return None;
    }
    Some(
        text.lines()
            .filter(|l| l.starts_with("taskmesh_events_handled_total{"))
            .filter(|l| l.contains("\"task-events\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64,
    )
}

/// Steady mixed load through the public API: one script started every
/// `1 / scripts_per_second`, round robin over the users and six kinds:
/// plain, due, due moved (an update of the due time), completed, recurring completed
/// (daily, COUNT=3: one next occurrence), deleted.
pub struct Load {
    stop: Arc<AtomicBool>,
    /// Microseconds between two scripts.
    every_us: Arc<AtomicU64>,
    join: tokio::task::JoinHandle<LoadResult>,
}

/// What the load was told, for the accounting.
#[derive(Debug, Clone, Default)]
pub struct LoadResult {
    pub scripts: u64,
    /// `(task id, created|updated|completed|deleted)` of every acknowledged write.
    pub acked: Vec<(String, String)>,
    /// Failed calls by gRPC code.
    pub failures: BTreeMap<String, u64>,
}

/// Calls that take longer count as failed (their outcome unknown: the outbox decides).
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Scripts in flight at most; a stalled API holds the load back instead of piling up.
const MAX_IN_FLIGHT: usize = 32;

impl Load {
    pub fn start(
        endpoint: &str,
        users: &[String],
        scripts_per_second: f64,
    ) -> anyhow::Result<Self> {
        let clients: Vec<TaskClient> = users
            .iter()
            .map(|user| task_client(endpoint, SECRET, user))
            .collect::<anyhow::Result<_>>()?;
        let stop = Arc::new(AtomicBool::new(false));
        let halt = stop.clone();
        let every_us = Arc::new(AtomicU64::new(interval_us(scripts_per_second)));
        let every = every_us.clone();
        let join = tokio::spawn(async move {
            let result = Arc::new(Mutex::new(LoadResult::default()));
            let slots = Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT));
            let mut scripts = tokio::task::JoinSet::new();
            let mut next = tokio::time::Instant::now();
            let mut n: u64 = 0;
            while !halt.load(Ordering::Relaxed) {
                next += Duration::from_micros(every.load(Ordering::Relaxed));
                tokio::time::sleep_until(next).await;
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    break;
                };
                // A stalled API holds the load back: no burst of missed scripts after it.
                next = next.max(tokio::time::Instant::now());
                let client = clients[(n as usize) % clients.len()].clone();
                let result = result.clone();
                let i = n;
                scripts.spawn(async move {
                    script(client, i, &result).await;
                    drop(slot);
                });
                n += 1;
                while scripts.try_join_next().is_some() {}
            }
            while scripts.join_next().await.is_some() {}
            let mut result = result.lock().map(|r| r.clone()).unwrap_or_default();
            result.scripts = n;
            result
        });
        Ok(Self {
            stop,
            every_us: every_us.clone(),
            join,
        })
    }

    /// Changes the rate from the next script on.
    pub fn set_rate(&self, scripts_per_second: f64) {
        self.every_us
            .store(interval_us(scripts_per_second), Ordering::Relaxed);
    }

    pub async fn stop(self) -> LoadResult {
        self.stop.store(true, Ordering::Relaxed);
        self.join.await.unwrap_or_default()
    }
}

fn interval_us(scripts_per_second: f64) -> u64 {
    (1_000_000.0 / scripts_per_second.max(0.1)) as u64
}

fn timed<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(CALL_TIMEOUT);
    request
}

fn timestamp(at: chrono::DateTime<chrono::Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.timestamp(),
        nanos: 0,
    }
}

async fn script(mut client: TaskClient, i: u64, result: &Mutex<LoadResult>) {
    let kind = i % 6;
    let names = ["plain", "due", "moved", "done", "recurring", "deleted"];
    // Far enough ahead that no reminder fires during the test.
    let due = chrono::Utc::now() + chrono::Duration::days(20);
    let record = |outcome: Result<String, tonic::Status>, op: &str| -> Option<String> {
        let mut r = result.lock().ok()?;
        match outcome {
            Ok(id) => {
                r.acked.push((id.clone(), op.to_owned()));
                Some(id)
            }
            Err(status) => {
                *r.failures
                    .entry(format!("{:?}", status.code()))
                    .or_default() += 1;
                None
            }
        }
    };
    let create = CreateTaskRequest {
        title: format!("script {i} {}", names[kind as usize]),
        due_time: matches!(kind, 1 | 2 | 4).then(|| timestamp(due)),
        recurrence: (kind == 4).then(|| "FREQ=DAILY;COUNT=3".to_owned()),
        ..CreateTaskRequest::default()
    };
    let created = client
        .create_task(timed(create))
        .await
        .map(|t| t.into_inner().id);
    let Some(id) = record(created, "created") else {
        return;
    };
    let outcome = match kind {
        2 => client
            .update_task(timed(UpdateTaskRequest {
                id: id.clone(),
                due_time: Some(timestamp(due + chrono::Duration::days(1))),
                ..UpdateTaskRequest::default()
            }))
            .await
            .map(|_| "updated"),
        3 | 4 => client
            .complete_task(timed(CompleteTaskRequest {
                id: id.clone(),
                expected_version: None,
            }))
            .await
            .map(|_| "completed"),
        5 => client
            .delete_task(timed(DeleteTaskRequest {
                id: id.clone(),
                expected_version: None,
            }))
            .await
            .map(|_| "deleted"),
        _ => return,
    };
    match outcome {
        Ok(op) => {
            record(Ok(id), op);
        }
        Err(status) => {
            record(Err(status), "");
        }
    }
}

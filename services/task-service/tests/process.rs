//! The real `task-service` binary: start-up checks and graceful shutdown on SIGTERM.
// Tests assert by panicking, helpers included.
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use taskmesh_integration::net::{free_port, wait_for_tcp};
use taskmesh_integration::process::signal;
use taskmesh_proto::tasks::v1::task_service_client::TaskServiceClient;
use taskmesh_proto::tasks::v1::{CreateTaskRequest, GetTaskRequest};
use tonic::Request;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};

const SECRET: &str = "process-test-secret-0123456789abcdef0123456789abcdef";
const BIN: &str = env!("CARGO_BIN_EXE_task-service");

fn command(port: u16, db: &std::path::Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env_clear()
        .env("APP_PORT", port.to_string())
        .env(
            "DATABASE_URL",
            format!("sqlite://{}?mode=rwc", db.display()),
        )
        .env("RUST_LOG", "info")
        .env("METRICS_PORT", "0")
        // No sidecar here: events wait in the outbox.
        .env("DAPR_GRPC_PORT", "1")
        .stdin(Stdio::null());
    cmd
}

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(port: u16, db: &std::path::Path) -> Running {
    let child = command(port, db)
        .env("TASKMESH_JWT_SECRET", SECRET)
        .env("TASKMESH_RATE_LIMIT_PER_SEC", "1000000")
        .env("TASKMESH_RATE_LIMIT_BURST", "1000000")
        .env("TASKMESH_SHUTDOWN_GRACE_SECS", "10")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn task-service");
    wait_for_tcp(([127, 0, 0, 1], port).into(), Duration::from_secs(20)).expect("listening");
    Running(child)
}

#[test]
fn refuses_to_start_without_a_secret() {
    let dir = tempfile::tempdir().unwrap();
    let out = command(free_port().unwrap(), &dir.path().join("t.db"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("TASKMESH_JWT_SECRET"), "{stderr}");
}

#[test]
fn an_unusable_certificate_stops_the_start_with_its_reason() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::write(&cert, "not a certificate").unwrap();
    std::fs::write(&key, "not a key").unwrap();
    let out = command(free_port().unwrap(), &dir.path().join("t.db"))
        .env("TASKMESH_JWT_SECRET", SECRET)
        .env("TASKMESH_TLS_CERT", &cert)
        .env("TASKMESH_TLS_KEY", &key)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("TLS certificate and key are not usable"),
        "{stderr}"
    );
    let missing = command(free_port().unwrap(), &dir.path().join("t.db"))
        .env("TASKMESH_JWT_SECRET", SECRET)
        .env("TASKMESH_TLS_CERT", dir.path().join("nope.crt"))
        .env("TASKMESH_TLS_KEY", &key)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(stderr.contains("nope.crt"), "{stderr}");
}

#[test]
fn dev_mode_says_so_loudly() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port().unwrap();
    let child = command(port, &dir.path().join("t.db"))
        .env("TASKMESH_DEV_MODE", "true")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_tcp(([127, 0, 0, 1], port).into(), Duration::from_secs(20)).unwrap();
    signal(child.id(), "TERM").unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{}: {stderr}", out.status);
    assert!(stderr.contains("DEV MODE"), "{stderr}");
}

/// As the chart's hook job runs it: DATABASE_URL and the log settings, no JWT secret.
#[test]
fn migrate_subcommand_migrates_and_exits() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("t.db");
    let out = command(free_port().unwrap(), &db)
        .arg("migrate")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(db.exists());
}

#[test]
fn an_unopenable_sqlite_file_is_explained() {
    let dir = tempfile::tempdir().unwrap();
    // A directory that does not exist: what a read-only root filesystem amounts to.
    let db = dir.path().join("missing").join("t.db");
    let out = command(free_port().unwrap(), &db)
        .arg("migrate")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("cannot open the SQLite database"),
        "{stderr}"
    );
    assert!(stderr.contains("postgres://"), "{stderr}");
}

/// Calls keep coming while SIGTERM arrives: health turns NOT_SERVING, the process exits
/// cleanly, and every call that was answered OK is in the database afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_loses_no_answered_call() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("t.db");
    let port = free_port().unwrap();
    let mut server = start(port, &db);
    let url = format!("http://127.0.0.1:{port}");
    let token =
        taskmesh_shared::auth::mint(SECRET.as_bytes(), "alice", Duration::from_secs(600)).unwrap();
    let bearer = format!("Bearer {token}");

    let channel = tonic::transport::Channel::from_shared(url.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel);
    let mut watch = health
        .watch(HealthCheckRequest {
            service: "taskmesh.tasks.v1.TaskService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = watch.message().await.unwrap().unwrap();
    assert_eq!(first.status(), ServingStatus::Serving);

    let answered = Arc::new(Mutex::new(HashSet::new()));
    let mut workers = Vec::new();
    for w in 0..8 {
        let answered = answered.clone();
        let url = url.clone();
        let bearer = bearer.clone();
        workers.push(tokio::spawn(async move {
            let Ok(mut client) = TaskServiceClient::connect(url).await else {
                return;
            };
            for i in 0.. {
                let mut req = Request::new(CreateTaskRequest {
                    title: format!("w{w} #{i}"),
                    ..Default::default()
                });
                req.metadata_mut()
                    .insert("authorization", bearer.parse().unwrap());
                match client.create_task(req).await {
                    Ok(resp) => {
                        answered.lock().unwrap().insert(resp.into_inner().id);
                    }
                    Err(_) => return,
                }
            }
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while answered.lock().unwrap().len() < 200 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    signal(server.0.id(), "TERM").unwrap();
    let stopping = Instant::now();

    // The watch stream reports NOT_SERVING before the server goes away.
    let mut saw_not_serving = false;
    while let Ok(Some(update)) = watch.message().await {
        if update.status() == ServingStatus::NotServing {
            saw_not_serving = true;
            break;
        }
    }
    assert!(saw_not_serving, "health never turned NOT_SERVING");
    drop(watch);
    for worker in workers {
        worker.await.unwrap();
    }
    let status = tokio::task::spawn_blocking(move || {
        let status = server.0.wait();
        drop(server);
        status
    })
    .await
    .unwrap()
    .unwrap();
    assert!(status.success(), "exit status {status:?}");
    // Well inside the 10 s grace: the drain ends when the last call does.
    assert!(
        stopping.elapsed() < Duration::from_secs(5),
        "{:?}",
        stopping.elapsed()
    );

    let answered: Vec<String> = answered.lock().unwrap().iter().cloned().collect();
    assert!(
        answered.len() >= 200,
        "only {} calls answered",
        answered.len()
    );
    let port = free_port().unwrap();
    let _restarted = start(port, &db);
    let mut client = TaskServiceClient::connect(format!("http://127.0.0.1:{port}"))
        .await
        .unwrap();
    for id in answered {
        let mut req = Request::new(GetTaskRequest { id: id.clone() });
        req.metadata_mut()
            .insert("authorization", bearer.parse().unwrap());
        client
            .get_task(req)
            .await
            .unwrap_or_else(|e| panic!("task {id} answered OK but lost: {e:?}"));
    }
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// 100,000 calls without a valid token, to real and made-up methods, with made-up tokens:
/// each is refused, and the server keeps nothing of them (no metric series, no cached
/// token, no rate-limit bucket), so its memory stays flat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_unauthenticated_calls_leaves_memory_flat() {
    use futures::StreamExt;

    let dir = tempfile::tempdir().unwrap();
    let port = free_port().unwrap();
    let server = start(port, &dir.path().join("t.db"));
    let pid = server.0.id();
    let url = format!("http://127.0.0.1:{port}");
    // 51 clients, 2,000 calls each: past about 14,000 refused calls on one connection,
    // hyper's HTTP/2 server closes it (its guard against streams reset in bulk).
    let mut clients = Vec::new();
    for _ in 0..51 {
        let channel = tonic::transport::Channel::from_shared(url.clone())
            .unwrap()
            .connect()
            .await
            .unwrap();
        clients.push(tonic::client::Grpc::new(channel));
    }
    let call = |i: usize| {
        let mut grpc = clients[i % clients.len()].clone();
        async move {
            let path = if i.is_multiple_of(2) {
                "/taskmesh.tasks.v1.TaskService/ListTasks".to_owned()
            } else {
                format!("/flood{i}.Svc/M{i}")
            };
            let mut request = Request::new(());
            let token = format!("Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ7aX0ifQ.{i:x}");
            request
                .metadata_mut()
                .insert("authorization", token.parse().unwrap());
            grpc.ready().await.unwrap();
            let codec = tonic_prost::ProstCodec::<(), ()>::default();
            grpc.unary(request, path.parse().unwrap(), codec)
                .await
                .unwrap_err()
                .code()
        }
    };
    let flood = |range: std::ops::Range<usize>| {
        futures::stream::iter(range)
            .map(call)
            .buffer_unordered(64)
            .collect::<Vec<_>>()
    };
    // Warm up: allocator arenas, every connection's buffers, the `unknown` series.
    assert!(
        flood(0..2_000)
            .await
            .iter()
            .all(|c| *c == tonic::Code::Unauthenticated)
    );
    let before = rss_kib(pid);
    let codes = flood(2_000..102_000).await;
    let after = rss_kib(pid);
    let odd: Vec<_> = codes
        .iter()
        .enumerate()
        .filter(|(_, c)| **c != tonic::Code::Unauthenticated)
        .take(5)
        .collect();
    assert!(odd.is_empty(), "answered otherwise: {odd:?}");
    println!("task-service RSS: {before} KiB before, {after} KiB after 100,000 refused calls");
    assert!(
        after < before + 8 * 1024,
        "RSS grew from {before} KiB to {after} KiB"
    );
}

/// `task-service outbox parked` and `outbox retry` against the database only (no secret,
/// no ports, like `migrate`): the table, `--json`, one by seq, all, and an unknown id.
#[tokio::test]
async fn outbox_parked_and_retry_commands() {
    use sea_orm::{ConnectionTrait, Statement};
    use task_service::outbox::{OutboxStore, SeaOutbox};

    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("t.db");
    let outbox_command = |args: &[&str]| {
        let out = command(free_port().unwrap(), &db_path)
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, _, stderr) = outbox_command(&["migrate"]);
    assert_eq!(code, Some(0), "{stderr}");
    let (code, stdout, _) = outbox_command(&["outbox", "parked"]);
    assert_eq!((code, stdout.as_str()), (Some(0), "no parked events\n"));

    let url = format!("sqlite://{}?mode=rwc", db_path.display());
    let db = sea_orm::Database::connect(&url).await.unwrap();
    for (event, task) in [("e1", "t1"), ("e2", "t2"), ("e3", "t1")] {
        db.execute_raw(Statement::from_string(
            db.get_database_backend(),
            format!(
                "INSERT INTO outbox (event_id, task_id, event_type, payload, created_at, published_at, attempts) \
                 VALUES ('{event}', '{task}', 'taskmesh.task.created.v1', '{{}}', 1, NULL, 0)"
            ),
        ))
        .await
        .unwrap();
    }
    let outbox = SeaOutbox::new(db.clone());
    let now = chrono::Utc::now();
    outbox
        .park(1, "InvalidArgument: cannot build the envelope", now)
        .await
        .unwrap();
    outbox.park(2, "Internal: too large", now).await.unwrap();

    let (code, table, stderr) = outbox_command(&["outbox", "parked"]);
    assert_eq!(code, Some(0), "{stderr}");
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    assert!(lines[0].starts_with("SEQ  EVENT ID"), "{table}");
    assert!(lines[0].ends_with("REASON"), "{table}");
    assert!(lines[1].starts_with("1    e1        t1"), "{table}");
    assert!(
        lines[1].ends_with("InvalidArgument: cannot build the envelope"),
        "{table}"
    );
    let (code, json, _) = outbox_command(&["outbox", "parked", "--json"]);
    assert_eq!(code, Some(0));
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json[1]["seq"], 2);
    assert_eq!(json[1]["reason"], "Internal: too large");
    assert_eq!(json[1]["attempts"], 1);

    let (code, stdout, stderr) = outbox_command(&["outbox", "retry", "1"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("put parked event 1 back"), "{stdout}");
    let pending: Vec<i64> = outbox
        .pending(10)
        .await
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(pending, [1, 3], "t1's events in order; t2 still parked");

    let (code, _, stderr) = outbox_command(&["outbox", "retry", "e404"]);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("no parked event"), "{stderr}");
    let (code, _, stderr) = outbox_command(&["outbox", "retry"]);
    assert_eq!(code, Some(2), "an id or --all is required: {stderr}");

    let (code, stdout, _) = outbox_command(&["outbox", "retry", "--all"]);
    assert_eq!(code, Some(0));
    assert!(stdout.contains("put 1 parked events back"), "{stdout}");
    assert_eq!(outbox.pending(10).await.unwrap().len(), 3);
    let _ = db.close().await;
}

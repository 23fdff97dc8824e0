//! `just up`: the whole system on this machine, from the same parts the integration tests
//! use: a private Redis (state store and Redis Streams pub/sub), the Dapr scheduler (Jobs
//! API, for reminders), an SMTP server that keeps mail in a maildir, one daprd per service,
//! task-service on :50051 (SQLite in .data/, dev mode unless TASKMESH_JWT_SECRET is set)
//! and the subscriber services. Ctrl-C stops everything.
#![forbid(unsafe_code)]

use std::time::Duration;

use taskmesh_integration::net::free_port;
use taskmesh_integration::redis_server::RedisServer;
use taskmesh_integration::scheduler::Scheduler;
use taskmesh_integration::services::ServiceProcess;
use taskmesh_integration::sidecar::{
    Broker, Daprd, DaprdOptions, MAX_BODY_BYTES, Resources, outbox_max_batch_bytes,
};
use taskmesh_integration::smtp_server::SmtpServer;

/// Fixed ports, so that commands in the README work.
const SERVICES: [(&str, u16, u16); 4] = [
    ("task-service", 50051, 3500),
    ("notification-service", 50052, 3502),
    ("recurring-service", 50053, 3503),
    ("analytics-service", 50054, 3504),
];

struct Running {
    _service: ServiceProcess,
    sidecar: Daprd,
}

/// Writes `secret` to `path`, readable by this user only.
fn write_secret(path: &std::path::Path, secret: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(secret.as_bytes())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let root = taskmesh_integration::repo_root();
    let data = root.join(".data");
    std::fs::create_dir_all(&data)?;
    let redis = RedisServer::start()?;
    let scheduler = Scheduler::start()?;
    let smtp = SmtpServer::start()?;
    let resources = Resources::new(Broker::Redis, &redis.addr(), None)?;
    resources.replace("email.yaml", "\"1025\"", &format!("\"{}\"", smtp.port()))?;
    // Each app and its sidecar share a token of their own, as in the chart; operators find
    // them in .data/tokens/ for `dapr invoke` (curl -H "dapr-api-token: ...").
    let tokens = data.join("tokens");
    std::fs::create_dir_all(&tokens)?;
    let mut running = Vec::new();
    for (name, port, http_port) in SERVICES {
        if taskmesh_integration::services::binary(name).is_err() {
            eprintln!("taskmesh-up: {name} is not built yet; skipping it");
            continue;
        }
        let sidecar_grpc = free_port()?;
        let app_token = uuid::Uuid::new_v4().simple().to_string();
        write_secret(&tokens.join(name), &app_token)?;
        let mut env = vec![
            ("DAPR_GRPC_PORT".to_owned(), sidecar_grpc.to_string()),
            ("APP_API_TOKEN".to_owned(), app_token.clone()),
            ("DAPR_API_TOKEN".to_owned(), app_token.clone()),
        ];
        if name == "task-service" {
            env.push((
                "DATABASE_URL".into(),
                format!(
                    "sqlite://{}?mode=rwc",
                    data.join("task-service.db").display()
                ),
            ));
            if std::env::var_os("TASKMESH_JWT_SECRET").is_none() {
                env.push(("TASKMESH_DEV_MODE".into(), "true".into()));
            }
            // The relay's requests stay below what its sidecar accepts (set just below).
            env.push((
                "TASKMESH_OUTBOX_MAX_BATCH_BYTES".into(),
                outbox_max_batch_bytes(MAX_BODY_BYTES).to_string(),
            ));
        }
        let service = ServiceProcess::start_on(name, port, env)?;
        let sidecar = Daprd::start(DaprdOptions {
            app_id: name.to_owned(),
            app_port: Some(port),
            grpc_port: Some(sidecar_grpc),
            http_port: Some(http_port),
            resources: vec![resources.path().to_owned()],
            config: Some(root.join("dapr/config.yaml")),
            app_api_token: Some(app_token.clone()),
            dapr_api_token: Some(app_token.clone()),
            scheduler: Some(scheduler.addr()),
            max_body_bytes: Some(MAX_BODY_BYTES),
            ..DaprdOptions::default()
        })?;
        println!(
            "{name:<22} gRPC 127.0.0.1:{port}   sidecar HTTP 127.0.0.1:{http_port}   metrics 127.0.0.1:{}",
            service.metrics_port()
        );
        running.push(Running {
            _service: service,
            sidecar,
        });
    }
    println!("redis                  127.0.0.1:{}", redis.port());
    println!("dapr scheduler         {}", scheduler.addr());
    println!(
        "smtp                   127.0.0.1:{}   mail lands in {}",
        smtp.port(),
        smtp.maildir().join("new").display()
    );
    println!();
    println!(
        "Try: just taskctl login --user alice && just taskctl add \"Water plants\" --due \"2030-01-06 08:00\" --every FREQ=DAILY"
    );
    println!("     just taskctl stats && just taskctl notifications");
    println!(
        "Operators: curl -s localhost:3504/v1.0/invoke/analytics-service/method/stats/get -H \"dapr-api-token: $(cat .data/tokens/analytics-service)\" -d '{{\"user_id\":\"alice\"}}'"
    );
    println!(
        "Logs: each process writes to a file under /tmp (taskmesh-*). Ctrl-C stops everything."
    );
    taskmesh_shared::shutdown::signal().await;
    for r in &running {
        eprintln!(
            "stopping; sidecar log was {}",
            r.sidecar.log_path().display()
        );
    }
    drop(running);
    tokio::time::sleep(Duration::from_millis(200)).await;
    Ok(())
}

//! A Taskmesh service with its own daprd sidecar, the way the tests and `taskmesh-up` run
//! them, plus small helpers for waiting on eventually-consistent results.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::net::free_port;
use crate::services::ServiceProcess;
use crate::sidecar::{Daprd, DaprdOptions, Resources, http_post_json};

pub struct App {
    pub service: ServiceProcess,
    pub sidecar: Daprd,
}

/// What every app in a test stack shares.
#[derive(Debug, Clone, Default)]
pub struct Stack {
    /// Presented by sidecars to apps (`APP_API_TOKEN`).
    pub app_api_token: Option<String>,
    /// `--scheduler-host-address` for the Jobs API.
    pub scheduler: Option<String>,
}

impl Stack {
    /// Starts binary `name` (app id `name`) with `env`, then its sidecar on `resources`.
    pub fn start(
        &self,
        name: &str,
        resources: &Resources,
        mut env: Vec<(String, String)>,
    ) -> anyhow::Result<App> {
        let grpc = free_port()?;
        env.push(("DAPR_GRPC_PORT".into(), grpc.to_string()));
        if let Some(token) = &self.app_api_token {
            env.push(("APP_API_TOKEN".into(), token.clone()));
        }
        let service = ServiceProcess::start(name, env)?;
        let sidecar = Daprd::start(DaprdOptions {
            app_id: name.into(),
            app_port: Some(service.port()),
            grpc_port: Some(grpc),
            resources: vec![resources.path().to_owned()],
            app_api_token: self.app_api_token.clone(),
            scheduler: self.scheduler.clone(),
            ..DaprdOptions::default()
        })?;
        Ok(App { service, sidecar })
    }

    /// task-service (app id `task-service`) on a SQLite file in `dir`, accepting client
    /// tokens signed with `jwt_secret`, plus `env`.
    pub fn start_task_service(
        &self,
        resources: &Resources,
        dir: &Path,
        jwt_secret: &str,
        mut env: Vec<(String, String)>,
    ) -> anyhow::Result<App> {
        env.extend([
            (
                "DATABASE_URL".to_owned(),
                format!("sqlite://{}?mode=rwc", dir.join("t.db").display()),
            ),
            ("TASKMESH_JWT_SECRET".to_owned(), jwt_secret.to_owned()),
        ]);
        self.start("task-service", resources, env)
    }
}

impl App {
    /// `dapr invoke --app-id <app_id> --method <method> --data <body>` through this app's
    /// sidecar (the same HTTP call the CLI makes): status and body.
    pub fn invoke(
        &self,
        app_id: &str,
        method: &str,
        body: &serde_json::Value,
    ) -> anyhow::Result<(u16, String)> {
        http_post_json(
            self.sidecar.http_port(),
            &format!("/v1.0/invoke/{app_id}/method/{method}"),
            &body.to_string(),
        )
    }

    /// `invoke`, expecting 200 and JSON.
    pub fn invoke_ok(
        &self,
        app_id: &str,
        method: &str,
        body: &serde_json::Value,
    ) -> anyhow::Result<serde_json::Value> {
        let (status, text) = self.invoke(app_id, method, body)?;
        anyhow::ensure!(status == 200, "{app_id} {method}: {status} {text}");
        Ok(serde_json::from_str(&text)?)
    }
}

/// `check` until it gives a value; `None` after `timeout`.
pub async fn eventually<T>(
    timeout: Duration,
    mut check: impl AsyncFnMut() -> Option<T>,
) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return Some(value);
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The last lines of a log, for failure messages.
pub fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

//! A Taskmesh service with its own daprd sidecar, the way the tests and `taskmesh-up` run
//! them, plus small helpers for waiting on eventually-consistent results.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::net::free_port;
use crate::services::ServiceProcess;
use crate::sidecar::{Daprd, DaprdOptions, Resources, http_request};

pub struct App {
    pub service: ServiceProcess,
    pub sidecar: Daprd,
    /// This app's token (its `DAPR_API_TOKEN` and `APP_API_TOKEN`).
    pub token: Option<String>,
}

/// What every app in a test stack shares.
#[derive(Debug, Clone, Default)]
pub struct Stack {
    /// Each app gets its own token, `<seed>.<app id>`: the app presents it to its sidecar
    /// (`DAPR_API_TOKEN`) and the sidecar to the app (`APP_API_TOKEN`), as in the chart.
    pub token_seed: Option<String>,
    /// `--scheduler-host-address` for the Jobs API.
    pub scheduler: Option<String>,
    /// Sidecars that do not ask apps for their token (`DAPR_API_TOKEN`), for the dapr
    /// CLI: its `invoke` (1.12) sends none. Sidecars still present the app token.
    pub open_sidecars: bool,
    /// More environment for every sidecar (e.g. `SSL_CERT_DIR` with a test CA).
    pub sidecar_env: Vec<(String, String)>,
    /// A Dapr Configuration for every sidecar (`--config`).
    pub config: Option<std::path::PathBuf>,
}

impl Stack {
    /// The token of app `app_id`.
    pub fn token(&self, app_id: &str) -> Option<String> {
        self.token_seed
            .as_ref()
            .map(|seed| format!("{seed}.{app_id}"))
    }

    /// Starts binary `name` (app id `name`) with `env`, then its sidecar on `resources`.
    pub fn start(
        &self,
        name: &str,
        resources: &Resources,
        mut env: Vec<(String, String)>,
    ) -> anyhow::Result<App> {
        let grpc = free_port()?;
        env.push(("DAPR_GRPC_PORT".into(), grpc.to_string()));
        let token = self.token(name);
        let sidecar_token = token.clone().filter(|_| !self.open_sidecars);
        if let Some(token) = &token {
            env.push(("APP_API_TOKEN".into(), token.clone()));
        }
        if let Some(token) = &sidecar_token {
            env.push(("DAPR_API_TOKEN".into(), token.clone()));
        }
        let service = ServiceProcess::start(name, env)?;
        let sidecar = Daprd::start(DaprdOptions {
            app_id: name.into(),
            app_port: Some(service.port()),
            grpc_port: Some(grpc),
            resources: vec![resources.path().to_owned()],
            app_api_token: token.clone(),
            dapr_api_token: sidecar_token,
            scheduler: self.scheduler.clone(),
            env: self.sidecar_env.clone(),
            config: self.config.clone(),
            ..DaprdOptions::default()
        })?;
        Ok(App {
            service,
            sidecar,
            token,
        })
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
        // The test's own settings (a limit, say) come after, and win.
        let env: Vec<(String, String)> = crate::services::unlimited()
            .into_iter()
            .chain(env)
            .collect();
        self.start("task-service", resources, env)
    }
}

/// `dapr invoke --app-id <app_id> --method <method> --data <body>` through `sidecar` (the
/// same HTTP call the CLI makes), with `token` as the CLI sends `DAPR_API_TOKEN`.
fn invoke_via(
    sidecar: &Daprd,
    token: Option<&str>,
    app_id: &str,
    method: &str,
    body: &serde_json::Value,
) -> anyhow::Result<(u16, String)> {
    let mut headers = vec![("Content-Type", "application/json")];
    if let Some(token) = token {
        headers.push(("dapr-api-token", token));
    }
    http_request(
        sidecar.http_port(),
        "POST",
        &format!("/v1.0/invoke/{app_id}/method/{method}"),
        &headers,
        &body.to_string(),
    )
}

fn expect_ok(
    app_id: &str,
    method: &str,
    answer: (u16, String),
) -> anyhow::Result<serde_json::Value> {
    let (status, text) = answer;
    anyhow::ensure!(status == 200, "{app_id} {method}: {status} {text}");
    Ok(serde_json::from_str(&text)?)
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
        invoke_via(&self.sidecar, self.token.as_deref(), app_id, method, body)
    }

    /// `invoke`, expecting 200 and JSON.
    pub fn invoke_ok(
        &self,
        app_id: &str,
        method: &str,
        body: &serde_json::Value,
    ) -> anyhow::Result<serde_json::Value> {
        expect_ok(app_id, method, self.invoke(app_id, method, body)?)
    }
}

/// A Dapr Configuration (for `Stack::config`) whose name resolution is a SQLite file in
/// `dir`: app ids then resolve among this stack's sidecars only. With mDNS, the default,
/// they resolve host-wide, and another stack's `task-service` (a test or a soak running
/// beside) may answer this stack's recurring-service.
pub fn private_name_resolution(dir: &Path) -> anyhow::Result<std::path::PathBuf> {
    let config = dir.join("dapr-config.yaml");
    std::fs::write(
        &config,
        format!(
            "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: taskmesh\n\
             spec:\n  metric:\n    enabled: true\n  nameResolution:\n    component: sqlite\n\
             \x20   version: v1\n    configuration:\n      connectionString: {}\n",
            dir.join("names.db").display()
        ),
    )?;
    Ok(config)
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

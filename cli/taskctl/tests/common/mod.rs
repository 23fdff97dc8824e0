//! What the tests of taskctl share: a development task-service on a free port, and
//! taskctl run against it as a given user.
// Each test binary uses a part of this.
#![allow(dead_code)]

use std::collections::HashMap;
use std::process::Command;

use serde_json::Value;
use task_service::{Application, Config};

pub struct Env {
    pub server: String,
    pub config_home: tempfile::TempDir,
}

impl Env {
    pub fn taskctl(&self, args: &[&str]) -> (bool, String, String) {
        let (code, stdout, stderr) = self.run(args, &[]);
        (code == 0, stdout, stderr)
    }

    /// The exit code, stdout and stderr of taskctl with these extra environment variables
    /// (times in UTC and no colours unless a test asks).
    pub fn run(&self, args: &[&str], vars: &[(&str, &str)]) -> (i32, String, String) {
        let out = self
            .command(args)
            .envs(vars.iter().copied())
            .output()
            .expect("run taskctl");
        (
            out.status.code().expect("taskctl exited by a signal"),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// A user of `server` with a config directory (and so a token) of their own, logged
    /// in.
    pub fn user(server: &str, name: &str) -> Self {
        let env = Self {
            server: server.to_owned(),
            config_home: tempfile::tempdir().unwrap(),
        };
        let (ok, _, stderr) = env.taskctl(&["login", "--user", name]);
        assert!(ok, "login {name}: {stderr}");
        env
    }

    /// taskctl with these arguments, as this user, not started yet.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_taskctl"));
        command
            .args(["--server", &self.server])
            .args(args)
            .env("XDG_CONFIG_HOME", self.config_home.path())
            .env("TZ", "UTC")
            .env_remove("TASKMESH_TOKEN")
            .env_remove("TASKMESH_JWT_SECRET")
            .env_remove("NO_COLOR")
            .env_remove("CLICOLOR_FORCE");
        command
    }

    /// The exit code and stderr of a command that must fail.
    pub fn fails(&self, args: &[&str]) -> (i32, String) {
        let (code, stdout, stderr) = self.run(args, &[]);
        assert_ne!(code, 0, "taskctl {args:?} succeeded: {stdout}");
        (code, stderr)
    }

    pub fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.push("--json");
        let (ok, stdout, stderr) = self.taskctl(&all);
        assert!(ok, "taskctl {args:?} failed: {stderr}");
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
    }
}

/// A development task-service on SQLite in `dir`, on a free port, with these settings
/// besides the usual ones; not serving until [`serve`]d.
pub async fn dev_app(dir: &std::path::Path, extra: &[(&str, String)]) -> Application {
    let env: HashMap<String, String> = [
        ("APP_PORT", "0".to_owned()),
        (
            "DATABASE_URL",
            format!("sqlite://{}?mode=rwc", dir.join("t.db").display()),
        ),
        ("TASKMESH_DEV_MODE", "true".to_owned()),
        ("METRICS_PORT", "0".to_owned()),
        ("DAPR_GRPC_PORT", "1".to_owned()),
    ]
    .into_iter()
    .chain(extra.iter().cloned())
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    Application::build(Config::from_env(&env).unwrap())
        .await
        .unwrap()
}

/// Serves `app` until `stop` is sent.
pub fn serve(
    app: Application,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
) {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let handle = tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));
    (stop, handle)
}

/// A development task-service on SQLite, on a free port, until `stop` is sent.
pub async fn dev_server(
    dir: &std::path::Path,
) -> (
    String,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
) {
    let app = dev_app(dir, &[]).await;
    let server = format!("http://{}", app.local_addr());
    let (stop, handle) = serve(app);
    (server, stop, handle)
}

// Exit codes as documented in `taskctl --help` and the README.
pub const USAGE: i32 = 2;
pub const AUTH: i32 = 3;
pub const NOT_FOUND: i32 = 4;
pub const CONFLICT: i32 = 5;
pub const UNAVAILABLE: i32 = 6;
pub const EXPIRED: i32 = 7;

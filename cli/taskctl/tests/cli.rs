//! taskctl against a real task-service in development mode.
// Tests assert by panicking, helpers included.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::process::Command;

use serde_json::Value;
use task_service::{Application, Config};

struct Env {
    server: String,
    config_home: tempfile::TempDir,
}

impl Env {
    fn taskctl(&self, args: &[&str]) -> (bool, String, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_taskctl"))
            .args(["--server", &self.server])
            .args(args)
            .env("XDG_CONFIG_HOME", self.config_home.path())
            .env_remove("TASKMESH_TOKEN")
            .env_remove("TASKMESH_JWT_SECRET")
            .output()
            .expect("run taskctl");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.push("--json");
        let (ok, stdout, stderr) = self.taskctl(&all);
        assert!(ok, "taskctl {args:?} failed: {stderr}");
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_add_list_edit_done_reopen_rm() {
    let dir = tempfile::tempdir().unwrap();
    let env = HashMap::from([
        ("APP_PORT", "0".to_owned()),
        (
            "DATABASE_URL",
            format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display()),
        ),
        ("TASKMESH_DEV_MODE", "true".to_owned()),
        ("METRICS_PORT", "0".to_owned()),
        ("DAPR_GRPC_PORT", "1".to_owned()),
    ]);
    let env: HashMap<String, String> = env.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
    let app = Application::build(Config::from_env(&env).unwrap())
        .await
        .unwrap();
    let server = format!("http://{}", app.local_addr());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let handle = tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));

    let env = Env {
        server,
        config_home: tempfile::tempdir().unwrap(),
    };
    let result = tokio::task::spawn_blocking(move || {
        let (ok, _, stderr) = env.taskctl(&["list"]);
        assert!(!ok);
        assert!(stderr.contains("taskctl login"), "{stderr}");

        let (ok, stdout, _) = env.taskctl(&["login", "--user", "alice"]);
        assert!(ok && stdout.contains("alice"), "{stdout}");

        let task = env.json(&[
            "add",
            "Renew passport",
            "-p",
            "high",
            "-t",
            "admin",
            "--due",
            "2030-03-01",
        ]);
        let id = task["id"].as_str().unwrap().to_owned();
        assert_eq!(task["priority"], "high");
        assert_eq!(task["due_time"], "2030-03-01T00:00:00+00:00");
        env.json(&["add", "Buy milk"]);

        let (ok, table, _) = env.taskctl(&["list", "--order", "due"]);
        assert!(ok);
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].starts_with("ID"), "{table}");
        assert!(
            lines[1].contains("Renew passport") && lines[2].contains("Buy milk"),
            "{table}"
        );

        let edited = env.json(&[
            "edit",
            &id,
            "--title",
            "Renew passports",
            "--if-version",
            "1",
        ]);
        assert_eq!(edited["version"], 2);
        let (ok, _, stderr) = env.taskctl(&["edit", &id, "--title", "x", "--if-version", "1"]);
        assert!(!ok && stderr.contains("Aborted"), "{stderr}");

        assert_eq!(env.json(&["done", &id])["completed"], true);
        let open = env.json(&["list"]);
        assert_eq!(open["tasks"].as_array().unwrap().len(), 1);
        assert_eq!(env.json(&["reopen", &id])["completed"], false);
        assert_eq!(env.json(&["show", &id])["title"], "Renew passports");

        let (ok, _, stderr) = env.taskctl(&["add", ""]);
        assert!(!ok && stderr.contains("title"), "{stderr}");

        assert_eq!(env.json(&["rm", &id])["deleted"], id.as_str());
        let (ok, _, stderr) = env.taskctl(&["show", &id]);
        assert!(!ok && stderr.contains("NotFound"), "{stderr}");
    })
    .await;
    let _ = stop.send(());
    handle.await.unwrap().unwrap();
    result.unwrap();
}

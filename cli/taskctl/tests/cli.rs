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

/// A CA and a server certificate it signed for 127.0.0.1, made with `openssl`.
fn certificates(dir: &std::path::Path) -> [std::path::PathBuf; 3] {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    run(&[
        &["req", "-x509"][..],
        &ec,
        &[
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-subj",
            "/CN=taskmesh test CA",
            "-days",
            "1",
        ],
    ]
    .concat());
    run(&[
        &["req"][..],
        &ec,
        &[
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=task-service",
        ],
    ]
    .concat());
    std::fs::write(
        dir.join("san.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:task-service\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "1",
        "-extfile",
        "san.ext",
    ]);
    ["ca.pem", "server.pem", "server.key"].map(|name| dir.join(name))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_on_the_public_port_and_plaintext_health_for_probes() {
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};

    let dir = tempfile::tempdir().unwrap();
    let [ca, cert, key] = certificates(dir.path());
    let env: HashMap<String, String> = [
        ("APP_PORT", "0".to_owned()),
        (
            "DATABASE_URL",
            format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display()),
        ),
        ("TASKMESH_DEV_MODE", "true".to_owned()),
        ("METRICS_PORT", "0".to_owned()),
        ("DAPR_GRPC_PORT", "1".to_owned()),
        ("TASKMESH_TLS_CERT", cert.display().to_string()),
        ("TASKMESH_TLS_KEY", key.display().to_string()),
        ("TASKMESH_HEALTH_PORT", "0".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let app = Application::build(Config::from_env(&env).unwrap())
        .await
        .unwrap();
    let port = app.local_addr().port();
    let health_addr = app.health_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let handle = tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));

    // Probes: plaintext gRPC health on its own port.
    let mut health = HealthClient::new(
        tonic::transport::Channel::from_shared(format!("http://{health_addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap(),
    );
    let status = health
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.status(), ServingStatus::Serving);

    let ca = ca.display().to_string();
    let result = tokio::task::spawn_blocking(move || {
        let tls = Env {
            server: format!("https://127.0.0.1:{port}"),
            config_home: tempfile::tempdir().unwrap(),
        };
        let (ok, _, stderr) = tls.taskctl(&["--ca-cert", &ca, "login", "--user", "alice"]);
        assert!(ok, "{stderr}");
        let task = tls.json(&["--ca-cert", &ca, "add", "Over TLS"]);
        assert_eq!(task["title"], "Over TLS");
        // The name checked may differ from the address dialled.
        let listed = tls.json(&[
            "--ca-cert",
            &ca,
            "--tls-server-name",
            "task-service",
            "list",
        ]);
        assert_eq!(listed["tasks"][0]["title"], "Over TLS", "{listed}");
        // Without our CA the certificate is not trusted; in plaintext nothing answers.
        let (ok, _, stderr) = tls.taskctl(&["list"]);
        assert!(!ok, "an unknown CA was trusted");
        assert!(
            stderr.contains("cannot reach") || stderr.contains("error"),
            "{stderr}"
        );
        let plain = Env {
            server: format!("http://127.0.0.1:{port}"),
            config_home: tls.config_home,
        };
        let (ok, _, _) = plain.taskctl(&["list"]);
        assert!(!ok, "plaintext was answered on the TLS port");
    })
    .await;
    let _ = stop.send(());
    let _ = handle.await;
    result.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_prefs_and_stats_commands_reach_the_public_api() {
    // No subscriber behind this task-service: the commands reach the public services,
    // which answer UNAVAILABLE in words a user can act on. The full path is tested with
    // real sidecars in integration/tests/security.rs.
    let dir = tempfile::tempdir().unwrap();
    let env: HashMap<String, String> = [
        ("APP_PORT", "0".to_owned()),
        (
            "DATABASE_URL",
            format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display()),
        ),
        ("TASKMESH_DEV_MODE", "true".to_owned()),
        ("METRICS_PORT", "0".to_owned()),
        ("DAPR_GRPC_PORT", "1".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let app = Application::build(Config::from_env(&env).unwrap())
        .await
        .unwrap();
    let server = format!("http://{}", app.local_addr());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let handle = tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));
    let result = tokio::task::spawn_blocking(move || {
        let env = Env {
            server,
            config_home: tempfile::tempdir().unwrap(),
        };
        assert!(env.taskctl(&["login", "--user", "alice"]).0);
        for args in [
            &["notifications"][..],
            &["ack", "--all"],
            &["prefs", "show"],
            &["prefs", "set", "--email", "a@example.com"],
            &["prefs", "reset"],
            &["stats"],
        ] {
            let (ok, _, stderr) = env.taskctl(args);
            assert!(!ok, "{args:?}");
            assert!(stderr.contains("unavailable"), "{args:?}: {stderr}");
        }
        // Usage errors are caught before any call.
        let (ok, _, stderr) = env.taskctl(&["ack"]);
        assert!(!ok && stderr.contains("--all"), "{stderr}");
    })
    .await;
    let _ = stop.send(());
    let _ = handle.await;
    result.unwrap();
}

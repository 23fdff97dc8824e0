//! taskctl against a real task-service in development mode.
// Tests assert by panicking, helpers included.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_add_list_edit_done_reopen_rm() {
    let dir = tempfile::tempdir().unwrap();
    let (server, stop, handle) = dev_server(dir.path()).await;

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
    let app = dev_app(
        dir.path(),
        &[
            ("TASKMESH_TLS_CERT", cert.display().to_string()),
            ("TASKMESH_TLS_KEY", key.display().to_string()),
            ("TASKMESH_HEALTH_PORT", "0".to_owned()),
        ],
    )
    .await;
    let port = app.local_addr().port();
    let health_addr = app.health_addr().unwrap();
    let (stop, handle) = serve(app);

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
        let (code, _, stderr) = tls.run(&["list"], &[]);
        assert_eq!(code, UNAVAILABLE, "an unknown CA: {stderr}");
        assert!(
            stderr.contains("cannot reach") || stderr.contains("error"),
            "{stderr}"
        );
        let plain = Env {
            server: format!("http://127.0.0.1:{port}"),
            config_home: tls.config_home,
        };
        let (code, _, stderr) = plain.run(&["list"], &[]);
        assert_eq!(code, UNAVAILABLE, "plaintext on the TLS port: {stderr}");
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
    let (server, stop, handle) = dev_server(dir.path()).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_codes_id_prefixes_time_zones_colours_and_the_token_file() {
    use std::os::unix::fs::PermissionsExt;

    let dir = tempfile::tempdir().unwrap();
    let (server, stop, handle) = dev_server(dir.path()).await;
    let result = tokio::task::spawn_blocking(move || {
        let env = Env {
            server,
            config_home: tempfile::tempdir().unwrap(),
        };
        let mode =
            |path: &std::path::Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;

        // Usage (clap's own code) and auth, before any task exists.
        assert_eq!(env.run(&["list", "--bogus"], &[]).0, USAGE);
        assert_eq!(env.run(&["frobnicate"], &[]).0, USAGE);
        let (code, _, stderr) = env.run(&["list"], &[]);
        assert_eq!(code, AUTH, "{stderr}");
        let (code, help, _) = env.run(&["--help"], &[]);
        assert_eq!(code, 0);
        assert!(
            help.contains("Exit codes:") && help.contains("6  unavailable"),
            "{help}"
        );

        // The token file: 0600, and an open one is tightened with a warning.
        assert!(env.taskctl(&["login", "--user", "alice"]).0);
        let token = env.config_home.path().join("taskmesh").join("token");
        assert_eq!(mode(&token), 0o600);
        std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).unwrap();
        let (code, _, stderr) = env.run(&["list"], &[]);
        assert_eq!(code, 0, "{stderr}");
        assert!(
            stderr.contains("warning") && stderr.contains("0644"),
            "{stderr}"
        );
        assert_eq!(mode(&token), 0o600);
        let (_, _, stderr) = env.run(&["list"], &[]);
        assert!(!stderr.contains("warning"), "warned twice: {stderr}");

        // A refused token, a server that is not there.
        let (code, _, stderr) = env.run(&["--token", "not-a-jwt", "list"], &[]);
        assert_eq!(code, AUTH, "{stderr}");
        let closed = Env {
            server: "http://127.0.0.1:1".to_owned(),
            config_home: tempfile::tempdir().unwrap(),
        };
        let (code, _, stderr) = closed.run(&["--token", "x", "list"], &[]);
        assert_eq!(code, UNAVAILABLE, "{stderr}");

        // Values rejected here or by the server are usage errors.
        assert_eq!(env.run(&["add", ""], &[]).0, USAGE);
        assert_eq!(env.run(&["add", "x", "--due", "soon"], &[]).0, USAGE);
        assert_eq!(env.run(&["list", "--tz", "Mars/Olympus"], &[]).0, USAGE);

        // Times: JSON in UTC; text in --tz, else TZ.
        let task = env.json(&["add", "Water plants", "--due", "2030-01-06T07:00:00Z"]);
        let id = task["id"].as_str().unwrap().to_owned();
        assert_eq!(task["due_time"], "2030-01-06T07:00:00+00:00");
        let (_, shown, _) = env.run(&["show", &id, "--tz", "Europe/Paris"], &[]);
        assert!(shown.contains("2030-01-06 08:00 CET"), "{shown}");
        let (_, shown, _) = env.run(&["show", &id], &[("TZ", "Asia/Tokyo")]);
        assert!(shown.contains("2030-01-06 16:00 JST"), "{shown}");
        let (_, table, _) = env.run(&["list", "--tz", "America/New_York"], &[]);
        assert!(
            table.contains("DUE (America/New_York)") && table.contains("2030-01-06 02:00"),
            "{table}"
        );

        // --due-before/--due-after are read in that zone too: 07:30 in Paris is 06:30 UTC.
        let before = |zone: &str, at: &str| {
            env.json(&["list", "--tz", zone, "--due-before", at])["tasks"]
                .as_array()
                .unwrap()
                .len()
        };
        assert_eq!(before("UTC", "2030-01-06 07:30"), 1);
        assert_eq!(before("Europe/Paris", "2030-01-06 07:30"), 0);
        assert_eq!(before("Europe/Paris", "2030-01-06 08:30"), 1);
        let (_, json, _) = env.run(
            &["list", "--json", "--due-after", "2030-01-06 07:30"],
            &[("TZ", "Asia/Tokyo")],
        );
        assert!(json.contains("Water plants"), "TZ not used: {json}");

        // Colours: none on a pipe or with NO_COLOR, even when forced.
        let (_, plain, _) = env.run(&["list"], &[]);
        assert!(!plain.contains('\x1b'), "{plain:?}");
        let (_, forced, _) = env.run(&["list"], &[("CLICOLOR_FORCE", "1")]);
        assert!(forced.contains("\x1b["), "{forced:?}");
        let (_, no_color, _) = env.run(&["list"], &[("CLICOLOR_FORCE", "1"), ("NO_COLOR", "1")]);
        assert!(!no_color.contains('\x1b'), "{no_color:?}");

        // Not found, conflict.
        let (code, _, stderr) = env.run(&["show", "00000000-0000-4000-8000-000000000000"], &[]);
        assert_eq!(code, NOT_FOUND, "{stderr}");
        assert_eq!(
            env.json(&["edit", &id, "--title", "x", "--if-version", "1"])["version"],
            2
        );
        let (code, _, stderr) = env.run(&["edit", &id, "--title", "y", "--if-version", "1"], &[]);
        assert_eq!(code, CONFLICT, "{stderr}");

        // Short ids wherever an id is: the first digits, or the last (UUIDv7 ids made
        // close together share their first ones).
        let (head, tail) = (&id[..8], &id[28..]);
        assert_eq!(env.json(&["show", head])["id"], id.as_str());
        assert_eq!(env.json(&["done", &tail.to_uppercase()])["completed"], true);
        assert_eq!(env.json(&["reopen", tail])["completed"], false);
        assert_eq!(env.json(&["edit", tail, "--title", "z"])["title"], "z");
        // 17 tasks: at least two share a first hex digit.
        let mut all = vec![id.clone()];
        for n in 0..16 {
            all.push(
                env.json(&["add", &format!("t{n}")])["id"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            );
        }
        let matching = |short: &str| -> Vec<&String> {
            all.iter()
                .filter(|id| id.starts_with(short) || id.ends_with(short))
                .collect()
        };
        let digit = (0..16)
            .map(|d| format!("{d:x}"))
            .find(|d| matching(d).len() >= 2)
            .unwrap();
        let sharing = matching(&digit);
        let (code, _, stderr) = env.run(&["show", &digit], &[]);
        assert_eq!(code, USAGE, "{stderr}");
        assert!(
            stderr.contains(&format!("ambiguous: {} task ids", sharing.len())),
            "{stderr}"
        );
        // At most 10 are named, the rest counted.
        let named = sharing
            .iter()
            .filter(|c| stderr.contains(c.as_str()))
            .count();
        assert_eq!(named, sharing.len().min(10), "{stderr}");
        if sharing.len() > 10 {
            assert!(
                stderr.contains(&format!("and {} more", sharing.len() - 10)),
                "{stderr}"
            );
        }
        let unused = (0u32..)
            .map(|n| format!("{n:08x}"))
            .find(|p| matching(p).is_empty())
            .unwrap();
        let (code, _, stderr) = env.run(&["rm", &unused], &[]);
        assert_eq!(code, NOT_FOUND, "{stderr}");
        assert_eq!(env.run(&["rm", "not-hex"], &[]).0, USAGE);
        assert_eq!(env.json(&["rm", tail])["deleted"], id.as_str());
        assert_eq!(env.run(&["show", tail], &[]).0, NOT_FOUND);
    })
    .await;
    let _ = stop.send(());
    let _ = handle.await;
    result.unwrap();
}

#[test]
fn completions_and_the_manual_page_need_no_server() {
    let env = Env {
        server: "http://127.0.0.1:1".to_owned(),
        config_home: tempfile::tempdir().unwrap(),
    };
    for (shell, marker) in [
        ("bash", "_taskctl()"),
        ("zsh", "#compdef taskctl"),
        ("fish", "complete -c taskctl"),
    ] {
        let (code, script, stderr) = env.run(&["completions", shell], &[]);
        assert_eq!(code, 0, "{shell}: {stderr}");
        assert!(script.contains(marker), "{shell}: {script}");
        for command in ["reopen", "lists", "share", "assign", "search", "watch"] {
            assert!(script.contains(command), "{shell}: {command} missing");
        }
        // `lists` has actions of its own.
        assert!(
            script.contains("unarchive"),
            "{shell}: lists' actions missing"
        );
    }
    assert_eq!(env.run(&["completions", "tcsh"], &[]).0, USAGE);
    let (code, page, _) = env.run(&["man"], &[]);
    assert_eq!(code, 0);
    assert!(
        page.starts_with(".ie") || page.contains(".TH taskctl"),
        "{page}"
    );
    assert!(
        page.contains(".SH \"EXIT STATUS\"")
            && page.contains("\n6\tunavailable")
            && page.contains("\n7\twatch"),
        "{page}"
    );
    assert!(page.contains("taskctl\\-watch"), "{page}");
}

#[test]
fn a_reader_that_goes_away_is_no_error() {
    // The read end is closed before taskctl writes: every write fails with EPIPE.
    for args in [
        &["completions", "bash"][..],
        &["completions", "zsh"],
        &["man"],
        &["--help"],
    ] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_taskctl"))
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(!stderr.contains("error"), "{args:?}: {stderr}");
    }
}

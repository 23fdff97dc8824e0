//! The README's "Try it" section, run as written through `just` against a running system:
//! the lines are read from README.md itself, so the README cannot drift from what works.
//!
//! The system is the one `just up` runs (every service with its own daprd, Redis, the Dapr
//! scheduler, task-service in dev mode), started here on free ports instead of `just up`'s
//! fixed ones, so that a developer's `just up` can run beside the test. The only changes to
//! the lines: `localhost:<fixed port>` becomes the test's port, `<id>` a real task id,
//! `~` a throwaway home (the developer's token stays untouched), and `.data/tokens/` is
//! the test's directory's. `just up` itself is not run: it is the system under test.
//! The services' log files are also checked for colour escape codes (none off a terminal).
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use taskmesh_integration::apps::{App, Stack, private_name_resolution, tail};
use taskmesh_integration::client::task_client;
use taskmesh_integration::redis_server::RedisServer;
use taskmesh_integration::scheduler::Scheduler;
use taskmesh_integration::sidecar::{Broker, Resources};
use taskmesh_proto::tasks::v1::*;
use taskmesh_shared::auth::DEV_SECRET;

const APP_TOKEN: &str = "readme-app-token-0123456789";

/// One command of a ```sh block: its text (continuation lines kept, bash joins them).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Line(String);

/// The README marks a block the test cannot run with this comment on the line before it,
/// followed by why (it installs into the reader's home, say).
const SKIP: &str = "<!-- not run by integration/tests/readme.rs:";

/// The ```sh blocks of the README's "Try it" section (up to the next `## ` heading), each
/// as its commands; blocks marked with `SKIP` are left out.
fn try_it_blocks(readme: &str) -> Vec<Vec<Line>> {
    let section = readme
        .split("\n## ")
        .find(|part| part.starts_with("Try it\n"))
        .expect("README.md has a \"## Try it\" section");
    let mut blocks = Vec::new();
    let mut current: Option<Vec<Line>> = None;
    let mut pending = String::new();
    let mut skipped = false;
    let mut previous = "";
    for line in section.lines() {
        match (&mut current, line.trim_end()) {
            (None, "```sh") => {
                skipped = previous.starts_with(SKIP);
                current = Some(Vec::new());
            }
            (Some(_), "```") => {
                let block = current.take().unwrap();
                if !skipped {
                    blocks.push(block);
                }
            }
            (Some(block), text) => {
                pending.push_str(text);
                if text.ends_with('\\') {
                    pending.push('\n');
                } else if !pending.trim().is_empty() {
                    block.push(Line(std::mem::take(&mut pending)));
                }
            }
            (None, _) => {}
        }
        if !line.trim().is_empty() {
            previous = line.trim();
        }
    }
    blocks
}

/// `just up`'s fixed addresses (integration/src/bin/taskmesh-up.rs) and the test's.
struct Addresses {
    task_service: u16,
    notification_sidecar: u16,
    analytics_sidecar: u16,
}

impl Addresses {
    fn rewrite(&self, line: &str) -> String {
        line.replace(
            "localhost:50051",
            &format!("127.0.0.1:{}", self.task_service),
        )
        .replace(
            "localhost:3502",
            &format!("127.0.0.1:{}", self.notification_sidecar),
        )
        .replace(
            "localhost:3504",
            &format!("127.0.0.1:{}", self.analytics_sidecar),
        )
    }
}

/// Where the developer's caches are, kept while `HOME` points elsewhere.
struct Homes {
    cargo: PathBuf,
    rustup: PathBuf,
    taskmesh_cache: PathBuf,
}

impl Homes {
    fn of_this_user() -> Self {
        let home = PathBuf::from(std::env::var_os("HOME").unwrap());
        let var = |name: &str, default: PathBuf| {
            std::env::var_os(name).map(PathBuf::from).unwrap_or(default)
        };
        Self {
            cargo: var("CARGO_HOME", home.join(".cargo")),
            rustup: var("RUSTUP_HOME", home.join(".rustup")),
            taskmesh_cache: var("TASKMESH_CACHE", home.join(".cache/taskmesh")),
        }
    }
}

/// Runs `script` in bash (as the README's reader would), in `dir`, with `HOME` = `home`.
fn bash(script: &str, dir: &Path, home: &Path, homes: &Homes, server: &str) -> (bool, String) {
    let output = Command::new("bash")
        .args(["-euo", "pipefail", "-c", script])
        .current_dir(dir)
        .env("HOME", home)
        .env("CARGO_HOME", &homes.cargo)
        .env("RUSTUP_HOME", &homes.rustup)
        .env("TASKMESH_CACHE", &homes.taskmesh_cache)
        .env("TASKMESH_SERVER", server)
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("TASKMESH_TOKEN")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

/// Builds what `just taskctl` and `just grpcurl` would build on first use, with the
/// developer's own home, so that the timed part runs what a second use runs.
fn warm_up(root: &Path, homes: &Homes) {
    let status = Command::new("cargo")
        .args(["build", "-q", "-p", "taskctl"])
        .current_dir(root)
        .status()
        .unwrap();
    assert!(status.success(), "cargo build -p taskctl");
    let module = Command::new("just")
        .args(["--evaluate", "grpcurl_module"])
        .current_dir(root)
        .output()
        .unwrap();
    assert!(module.status.success(), "just --evaluate grpcurl_module");
    let module = String::from_utf8(module.stdout).unwrap();
    let status = Command::new("scripts/setup-go-tool.sh")
        .args(["grpcurl", module.trim()])
        .current_dir(root)
        .env("TASKMESH_CACHE", &homes.taskmesh_cache)
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "scripts/setup-go-tool.sh grpcurl");
}

async fn alice_tasks(endpoint: &str) -> Vec<Task> {
    let mut alice = task_client(endpoint, DEV_SECRET, "alice").unwrap();
    alice
        .list_tasks(ListTasksRequest {
            page_size: 100,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .tasks
}

fn by_title<'a>(tasks: &'a [Task], title: &str) -> Vec<&'a Task> {
    tasks.iter().filter(|task| task.title == title).collect()
}

/// When the output of `line` shows every event of the lines before it.
fn settled(line: &str) -> fn(&str) -> bool {
    if line.contains("taskctl notifications") {
        |text| text.contains("rolled over")
    } else if line.contains("method/stats/get") {
        // Renew passport, Water plants and its next occurrence; one completion.
        |text| {
            serde_json::from_str::<serde_json::Value>(text)
                .is_ok_and(|stats| stats["created"] == 3 && stats["completed"] == 1)
        }
    } else {
        |_| true
    }
}

#[test]
fn the_readme_parser_keeps_continuations_and_ends_at_the_next_section() {
    let readme = "# x\n## Try it\n\n```sh\njust a \"b c\"   # note\nx \\\n  -d '{}'\n```\n\
                  text\n```sh\nTOKEN=1\n```\n<!-- not run by integration/tests/readme.rs: why -->\n\n\
                  ```sh\ncargo install x\n```\n## Next\n```sh\nnot this\n```\n";
    assert_eq!(
        try_it_blocks(readme),
        vec![
            vec![
                Line("just a \"b c\"   # note".into()),
                Line("x \\\n  -d '{}'".into())
            ],
            vec![Line("TOKEN=1".into())],
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_try_it_lines_work_as_written() {
    let root = taskmesh_integration::repo_root();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let blocks = try_it_blocks(&readme);
    let lines: usize = blocks.iter().map(Vec::len).sum();
    assert!(
        lines >= 15,
        "the Try it section has {lines} lines: {blocks:?}"
    );
    let homes = Homes::of_this_user();
    warm_up(&root, &homes);

    let started = Instant::now();
    let redis = RedisServer::start().unwrap();
    let scheduler = Scheduler::start().unwrap();
    let names = tempfile::tempdir().unwrap();
    let stack = Stack {
        token_seed: Some(APP_TOKEN.into()),
        scheduler: Some(scheduler.addr()),
        config: Some(private_name_resolution(names.path()).unwrap()),
        ..Stack::default()
    };
    let resources = Resources::new(Broker::Redis, &redis.addr(), None).unwrap();
    let db = tempfile::tempdir().unwrap();
    let tasks = stack
        .start_task_service(
            &resources,
            db.path(),
            DEV_SECRET,
            vec![("TASKMESH_DEV_MODE".into(), "true".into())],
        )
        .unwrap();
    let mut apps: Vec<(&str, App)> = Vec::new();
    for name in [
        "notification-service",
        "recurring-service",
        "analytics-service",
    ] {
        apps.push((name, stack.start(name, &resources, vec![]).unwrap()));
    }
    let sidecar = |name: &str| {
        apps.iter()
            .find(|(app, _)| *app == name)
            .map(|(_, app)| app.sidecar.http_port())
            .unwrap()
    };
    let addresses = Addresses {
        task_service: tasks.service.port(),
        notification_sidecar: sidecar("notification-service"),
        analytics_sidecar: sidecar("analytics-service"),
    };

    // Inside the repository (so that `just` finds the justfile), under the ignored .data/.
    std::fs::create_dir_all(root.join(".data")).unwrap();
    let dir = tempfile::Builder::new()
        .prefix("readme-test-")
        .tempdir_in(root.join(".data"))
        .unwrap();
    let home = tempfile::tempdir().unwrap();
    let tokens = dir.path().join(".data/tokens");
    std::fs::create_dir_all(&tokens).unwrap();
    for name in [
        "task-service",
        "notification-service",
        "analytics-service",
        "recurring-service",
    ] {
        std::fs::write(tokens.join(name), stack.token(name).unwrap()).unwrap();
    }
    let server = tasks.service.endpoint();
    let stack_up = started.elapsed();

    let mut outputs: Vec<(String, String)> = Vec::new();
    for block in &blocks {
        // Assignments (TOKEN=...) stay in effect for the rest of their block.
        let mut assignments = String::new();
        for Line(line) in block {
            if line.trim_start().starts_with("just up ") || line.trim() == "just up" {
                continue; // the system under test, started above
            }
            let mut script = addresses.rewrite(line);
            if script.contains("<id>") {
                let all = alice_tasks(&server).await;
                // `done` completes the recurring task (its next occurrence follows), `edit`
                // renames the other one, still at version 1.
                let recurring = script.contains("taskctl done");
                let task = all
                    .iter()
                    .find(|task| task.recurrence.is_some() == recurring)
                    .unwrap_or_else(|| panic!("no task for {script}: {all:?}"));
                script = script.replace("<id>", &task.id);
            }
            let is_assignment = script
                .split_once('=')
                .is_some_and(|(name, _)| name.chars().all(|c| c.is_ascii_uppercase() || c == '_'));
            let full = format!("{assignments}{script}");
            // Events are applied "within moments": a line whose answer depends on them is
            // retried until it shows them (the rolled-over notice, the counts).
            let settled = settled(&script);
            let deadline = Instant::now() + Duration::from_secs(20);
            let (ok, text) = loop {
                let (ok, text) = bash(&full, dir.path(), home.path(), &homes, &server);
                if (ok && settled(&text)) || Instant::now() > deadline {
                    break (ok, text);
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            };
            println!("$ {line}\n{text}");
            assert!(
                ok,
                "README line failed: {line}\n(run as: {full})\n{text}\ntask-service log:\n{}",
                tail(&tasks.service.log())
            );
            assert!(settled(&text), "{line}: not what it should show:\n{text}");
            if is_assignment {
                assignments.push_str(&script);
                assignments.push('\n');
            }
            outputs.push((line.clone(), text));
        }
    }
    let ran = started.elapsed();

    // What the lines did, checked on the server: the quoted arguments arrived whole.
    let all = alice_tasks(&server).await;
    let water = by_title(&all, "Water plants");
    assert_eq!(
        water.len(),
        2,
        "the completed one and its next occurrence: {all:?}"
    );
    for task in &water {
        assert_eq!(task.recurrence.as_deref(), Some("FREQ=WEEKLY;BYDAY=MO"));
        assert_eq!(task.time_zone.as_deref(), Some("Europe/Paris"));
    }
    let passport = by_title(&all, "Renew passports");
    assert_eq!(passport.len(), 1, "renamed by `edit`: {all:?}");
    assert_eq!(passport[0].tags, vec!["admin".to_owned()]);
    assert_eq!(passport[0].priority, Priority::High as i32);
    let milk = by_title(&all, "Buy milk");
    assert_eq!(milk.len(), 1, "created by grpcurl: {all:?}");
    assert_eq!(milk[0].tags, vec!["home".to_owned()]);
    let output = |prefix: &str| {
        outputs
            .iter()
            .find(|(line, _)| line.starts_with(prefix))
            .map(|(_, text)| text.clone())
            .unwrap_or_else(|| panic!("no README line starts with {prefix}"))
    };
    assert!(output("just taskctl list").contains("Renew passport"));
    let inbox: serde_json::Value = serde_json::from_str(&output(
        "curl -s localhost:3502/v1.0/invoke/notification-service/method/notifications/list",
    ))
    .unwrap();
    assert!(
        inbox["notifications"]
            .as_array()
            .is_some_and(|list| !list.is_empty()),
        "{inbox}"
    );

    // Logs to files carry no colour codes (`just up` and the tests write them to files).
    let mut logs = vec![("task-service", tasks.service.log())];
    logs.extend(apps.iter().map(|(name, app)| (*name, app.service.log())));
    for (name, log) in &logs {
        assert!(!log.is_empty(), "{name} logged nothing");
        assert!(
            !log.contains("\x1b["),
            "{name}'s log has colour codes:\n{}",
            tail(log)
        );
    }
    println!(
        "{} README lines ran in {:.1} s (the system started in {:.1} s)",
        outputs.len(),
        (ran - stack_up).as_secs_f64(),
        stack_up.as_secs_f64()
    );
}

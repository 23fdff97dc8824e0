//! The README's "Try it" section, run as written through `just` against a running system:
//! the lines are read from README.md itself, so the README cannot drift from what works.
//!
//! The system is the one `just up` runs (every service with its own daprd, Redis, the Dapr
//! scheduler, task-service in dev mode), started here on free ports instead of `just up`'s
//! fixed ones, so that a developer's `just up` can run beside the test. The only changes to
//! the lines: `localhost:<fixed port>` becomes the test's port, `<id>` a real task id,
//! `~` a throwaway home (the developer's token stays untouched), and `.data/tokens/` is
//! the test's directory's. `just up` itself is not run: it is the system under test.
//! A block meant for a second terminal that runs until Ctrl-C (`taskctl watch`) is
//! started in the background, and its output checked for the changes the lines after it
//! made before it gets its Ctrl-C (SIGINT to its process group, as a terminal sends it).
//! The services' log files are also checked for colour escape codes (none off a terminal).
#![allow(clippy::unwrap_used)]

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
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

/// The README marks a block that runs until Ctrl-C in a terminal of its own with this
/// comment on the line before it, followed by why.
const BACKGROUND: &str = "<!-- run by integration/tests/readme.rs in the background:";

/// A ```sh block: its commands, and whether it is a second terminal's (run in the
/// background while the blocks after it run).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Block {
    lines: Vec<Line>,
    background: bool,
}

/// The ```sh blocks of the README's "Try it" section (up to the next `## ` heading), each
/// as its commands; blocks marked with `SKIP` are left out.
fn try_it_blocks(readme: &str) -> Vec<Block> {
    let section = readme
        .split("\n## ")
        .find(|part| part.starts_with("Try it\n"))
        .expect("README.md has a \"## Try it\" section");
    let mut blocks = Vec::new();
    let mut current: Option<Vec<Line>> = None;
    let mut pending = String::new();
    let mut skipped = false;
    let mut background = false;
    let mut previous = "";
    for line in section.lines() {
        match (&mut current, line.trim_end()) {
            (None, "```sh") => {
                skipped = previous.starts_with(SKIP);
                background = previous.starts_with(BACKGROUND);
                current = Some(Vec::new());
            }
            (Some(_), "```") => {
                let lines = current.take().unwrap();
                if !skipped {
                    blocks.push(Block { lines, background });
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

/// `script` in bash (as the README's reader would run it), in `dir`, with `HOME` = `home`.
fn bash_command(script: &str, dir: &Path, home: &Path, homes: &Homes, server: &str) -> Command {
    let mut command = Command::new("bash");
    command
        .args(["-euo", "pipefail", "-c", script])
        .current_dir(dir)
        .env("HOME", home)
        .env("CARGO_HOME", &homes.cargo)
        .env("RUSTUP_HOME", &homes.rustup)
        .env("TASKMESH_CACHE", &homes.taskmesh_cache)
        .env("TASKMESH_SERVER", server)
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("TASKMESH_TOKEN");
    command
}

/// Runs `script` to its end: whether it succeeded, and what it printed.
fn bash(script: &str, dir: &Path, home: &Path, homes: &Homes, server: &str) -> (bool, String) {
    let output = bash_command(script, dir, home, homes, server)
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

/// A second terminal's command, running in a process group of its own (as a terminal's
/// foreground job), its stdout and stderr going to `log`.
struct Background {
    line: String,
    child: Child,
    log: PathBuf,
}

impl Background {
    fn start(script: &str, line: &str, log: PathBuf, command: &mut Command) -> Self {
        let file = std::fs::File::create(&log).unwrap();
        let child = command
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {script}: {e}"));
        Self {
            line: line.to_owned(),
            child,
            log,
        }
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the output passes `check`; panics with it after `secs` seconds, or
    /// when the command ended.
    async fn wait_for(&mut self, secs: u64, what: &str, check: fn(&str) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while !check(&self.output()) {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "{}: ended ({status}) before it showed {what}:\n{}",
                    self.line,
                    self.output()
                );
            }
            assert!(
                Instant::now() < deadline,
                "{}: no {what} within {secs} s:\n{}",
                self.line,
                self.output()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Ctrl-C: SIGINT to the whole process group, as a terminal sends it. How it ended,
    /// and its output.
    async fn interrupt(mut self) -> (std::process::ExitStatus, String) {
        let group = format!("-{}", self.child.id());
        let sent = Command::new("kill")
            .args(["-INT", "--", &group])
            .status()
            .unwrap();
        assert!(sent.success(), "kill -INT -- {group}");
        let deadline = Instant::now() + Duration::from_secs(15);
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("{}: still running 15 s after Ctrl-C", self.line);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        (status, self.output())
    }
}

/// When a second terminal's command is ready for the lines after it.
fn ready(line: &str) -> fn(&str) -> bool {
    if line.contains("taskctl watch") {
        |text| text.contains("watching")
    } else {
        |_| true
    }
}

/// What a second terminal's command shows once the lines after it ran.
fn shown(line: &str) -> fn(&str) -> bool {
    if line.contains("taskctl watch") {
        // bob's task in alice's shared list, made after the watch started.
        |text| {
            text.lines().any(|l| {
                l.contains("created") && l.contains("Oat milk") && l.contains("bob -> alice")
            })
        }
    } else {
        |_| true
    }
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
                  ```sh\ncargo install x\n```\n<!-- run by integration/tests/readme.rs in the background: \
                  why -->\n```sh\njust watch\n```\n```\nshown output\n```\n\
                  ## Next\n```sh\nnot this\n```\n";
    let block = |background, lines: &[&str]| Block {
        lines: lines.iter().map(|l| Line((*l).to_owned())).collect(),
        background,
    };
    assert_eq!(
        try_it_blocks(readme),
        vec![
            block(false, &["just a \"b c\"   # note", "x \\\n  -d '{}'"]),
            block(false, &["TOKEN=1"]),
            block(true, &["just watch"]),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_try_it_lines_work_as_written() {
    let root = taskmesh_integration::repo_root();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let blocks = try_it_blocks(&readme);
    let lines: usize = blocks.iter().map(|b| b.lines.len()).sum();
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
    let mut second_terminals: Vec<Background> = Vec::new();
    for block in &blocks {
        if block.background {
            for Line(line) in &block.lines {
                let script = addresses.rewrite(line);
                let log = dir
                    .path()
                    .join(format!("terminal-{}.log", second_terminals.len()));
                let mut command = bash_command(&script, dir.path(), home.path(), &homes, &server);
                let mut terminal = Background::start(&script, line, log, &mut command);
                terminal.wait_for(60, "that it is ready", ready(line)).await;
                second_terminals.push(terminal);
            }
            continue;
        }
        // Assignments (TOKEN=..., export TASKMESH_TOKEN=...) stay in effect for the rest
        // of their block.
        let mut assignments = String::new();
        for Line(line) in &block.lines {
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
                .trim_start_matches("export ")
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
    for mut terminal in second_terminals {
        terminal
            .wait_for(
                20,
                "the changes of the lines after it",
                shown(&terminal.line),
            )
            .await;
        let line = terminal.line.clone();
        let (status, text) = terminal.interrupt().await;
        println!("$ {line}   (a second terminal, ended with Ctrl-C: {status})\n{text}");
        // taskctl ends with 0 on Ctrl-C (its own tests check that); `just` got the SIGINT
        // too and says so, exiting 130, as it does in a terminal. Nothing else may fail.
        let errors: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("error") || l.contains("panicked"))
            .filter(|l| !l.contains("interrupted by SIGINT"))
            .collect();
        assert!(errors.is_empty(), "{line}: after Ctrl-C:\n{text}");
        outputs.push((line, text));
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
    let oat = by_title(&all, "Oat milk");
    assert_eq!(oat.len(), 1, "bob's task in alice's shared list: {all:?}");
    assert_eq!(oat[0].owner_id, "bob");
    assert_eq!(oat[0].assignee_id.as_deref(), Some("alice"));
    assert_eq!(oat[0].description, "the barista kind");
    let output = |prefix: &str| {
        outputs
            .iter()
            .find(|(line, _)| line.starts_with(prefix))
            .map(|(_, text)| text.clone())
            .unwrap_or_else(|| panic!("no README line starts with {prefix}"))
    };
    assert!(output("just taskctl list").contains("Renew passport"));
    let members = output("just taskctl members Groceries");
    assert!(
        members.contains("alice") && members.contains("owner") && members.contains("bob"),
        "{members}"
    );
    assert!(output("just taskctl search barista").contains("Oat milk"));
    let shared = output("just taskctl list --list Groceries");
    assert!(
        shared.contains("Oat milk") && shared.contains("Groceries"),
        "{shared}"
    );
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

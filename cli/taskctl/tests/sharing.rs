//! taskctl's lists, sharing, assignees, search and watch, with several users against a
//! real task-service in development mode.
// Tests assert by panicking, helpers included.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::*;
use serde_json::Value;

fn titles(listed: &Value) -> Vec<String> {
    listed["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["title"].as_str().unwrap().to_owned())
        .collect()
}

fn str_of<'a>(value: &'a Value, key: &str) -> &'a str {
    value[key]
        .as_str()
        .unwrap_or_else(|| panic!("no {key} in {value}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_members_roles_assignees_moves_and_search() {
    let dir = tempfile::tempdir().unwrap();
    let (server, stop, handle) = dev_server(dir.path()).await;
    let result = tokio::task::spawn_blocking(move || {
        let alice = Env::user(&server, "alice");
        let bob = Env::user(&server, "bob");
        let carol = Env::user(&server, "carol");

        // Everyone starts with a default list.
        let lists = alice.json(&["lists"]);
        let lists = lists["lists"].as_array().unwrap();
        assert_eq!(lists.len(), 1, "{lists:?}");
        assert_eq!(lists[0]["default"], true);
        let alice_default = str_of(&lists[0], "id").to_owned();

        let groceries = alice.json(&["lists", "create", "Groceries"]);
        assert_eq!(groceries["role"], "owner");
        let gid = str_of(&groceries, "id").to_owned();
        let (ok, text, _) = alice.taskctl(&["lists"]);
        assert!(
            ok && text.contains("Groceries") && text.contains("(default)"),
            "{text}"
        );

        // Shared by name: bob edits, carol reads; sharing again changes the role.
        assert_eq!(alice.json(&["share", "Groceries", "bob"])["role"], "editor");
        let carol_added = alice.json(&["share", &gid[..8], "carol", "--role", "viewer"]);
        assert_eq!(carol_added["role"], "viewer");
        assert_eq!(
            alice.json(&["share", "groceries", "bob", "--role", "viewer"])["role"],
            "viewer"
        );
        assert_eq!(
            alice.json(&["share", &gid[28..], "bob", "--role", "editor"])["role"],
            "editor"
        );
        let members = alice.json(&["members", "Groceries"]);
        let roles: Vec<(String, String)> = members["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                (
                    str_of(m, "user_id").to_owned(),
                    str_of(m, "role").to_owned(),
                )
            })
            .collect();
        let pair = |u: &str, r: &str| (u.to_owned(), r.to_owned());
        assert_eq!(
            roles,
            vec![
                pair("alice", "owner"),
                pair("bob", "editor"),
                pair("carol", "viewer")
            ]
        );
        let (ok, text, _) = bob.taskctl(&["lists", "show", "Groceries"]);
        assert!(ok, "{text}");
        assert!(
            text.contains("your role:   editor")
                && text.contains("carol")
                && text.contains("viewer"),
            "{text}"
        );
        assert_eq!(bob.json(&["lists"])["lists"].as_array().unwrap().len(), 2);

        // A task in the shared list, assigned to bob: everyone in it sees it.
        let milk = alice.json(&[
            "add",
            "Oat milk",
            "--list",
            "Groceries",
            "--assign",
            "bob",
            "-d",
            "the barista kind, two cartons",
        ]);
        let milk_id = str_of(&milk, "id").to_owned();
        assert_eq!(milk["list_id"], gid.as_str());
        assert_eq!(milk["assignee_id"], "bob");
        assert_eq!(titles(&bob.json(&["list"])), ["Oat milk"]);
        assert_eq!(
            titles(&carol.json(&["list", "--list", "Groceries"])),
            ["Oat milk"]
        );
        let (ok, table, _) = bob.taskctl(&["list"]);
        let row = table
            .lines()
            .find(|l| l.contains("Oat milk"))
            .unwrap_or_default();
        assert!(
            ok && row.contains("Groceries") && row.contains("bob"),
            "{table}"
        );
        assert!(
            table.lines().next().unwrap().contains("ASSIGNEE"),
            "{table}"
        );
        let (ok, shown, _) = carol.taskctl(&["show", &milk_id[28..]]);
        assert!(ok, "{shown}");
        assert!(
            shown.contains("list:        Groceries") && shown.contains("assignee:    bob"),
            "{shown}"
        );

        // A viewer reads but cannot complete, change or add; an editor can.
        let (code, stderr) = carol.fails(&["done", &milk_id[28..]]);
        assert_eq!(code, AUTH, "a viewer completing: {stderr}");
        let (code, stderr) = carol.fails(&["add", "Cheese", "--list", "Groceries"]);
        assert_eq!(code, AUTH, "a viewer adding: {stderr}");
        assert_eq!(bob.json(&["done", &milk_id[28..]])["completed"], true);
        assert_eq!(bob.json(&["reopen", &milk_id])["completed"], false);
        // Someone outside the list does not see it at all.
        let dave = Env::user(&server, "dave");
        let (code, stderr) = dave.fails(&["show", &milk_id]);
        assert_eq!(code, NOT_FOUND, "{stderr}");
        let (code, stderr) = dave.fails(&["members", &gid]);
        assert_eq!(code, NOT_FOUND, "{stderr}");
        let (code, stderr) = dave.fails(&["members", "Groceries"]);
        assert_eq!(code, NOT_FOUND, "a name dave has no list by: {stderr}");

        // Assign and unassign; filter by assignee.
        assert_eq!(
            alice.json(&["assign", &milk_id, "carol"])["assignee_id"],
            "carol"
        );
        let (code, stderr) = alice.fails(&["assign", &milk_id, "dave"]);
        assert_ne!(code, 0, "dave is no member: {stderr}");
        assert_eq!(
            titles(&alice.json(&["list", "--assignee", "carol"])),
            ["Oat milk"]
        );
        assert!(titles(&alice.json(&["list", "--assignee", "bob"])).is_empty());
        assert_eq!(
            alice.json(&["assign", &milk_id, "--none"])["assignee_id"],
            Value::Null
        );
        alice.json(&["add", "Renew passport"]);
        let unassigned = titles(&alice.json(&["list", "--unassigned"]));
        assert_eq!(unassigned, ["Oat milk", "Renew passport"], "{unassigned:?}");
        assert_eq!(alice.run(&["assign", &milk_id], &[]).0, USAGE);
        assert_eq!(
            alice.run(&["assign", &milk_id, "bob", "--none"], &[]).0,
            USAGE
        );

        // Moves need rights on both lists.
        let stamps = alice.json(&["add", "Stamps"]);
        let stamps_id = str_of(&stamps, "id").to_owned();
        assert_eq!(stamps["list_id"], alice_default.as_str());
        assert!(!titles(&bob.json(&["list"])).contains(&"Stamps".to_owned()));
        assert_eq!(
            alice.json(&["move", &stamps_id, "Groceries"])["list_id"],
            gid.as_str()
        );
        assert!(titles(&bob.json(&["list"])).contains(&"Stamps".to_owned()));
        let (code, stderr) = carol.fails(&["move", &stamps_id, "Groceries"]);
        assert_eq!(code, AUTH, "a viewer moving: {stderr}");
        let bob_default = bob.json(&["lists"])["lists"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["default"] == true)
            .map(|l| str_of(l, "id").to_owned())
            .unwrap();
        assert_eq!(
            bob.json(&["move", &stamps_id, &bob_default])["list_id"],
            bob_default.as_str()
        );
        let (code, stderr) = alice.fails(&["show", &stamps_id]);
        assert_eq!(code, NOT_FOUND, "moved to bob's own list: {stderr}");

        // Search: words in the description count, filters apply, shared lists included.
        alice.json(&["add", "Call the plumber", "-d", "the kitchen sink drips"]);
        assert_eq!(
            titles(&alice.json(&["search", "sink"])),
            ["Call the plumber"]
        );
        assert_eq!(
            titles(&alice.json(&["search", "plumber"])),
            ["Call the plumber"]
        );
        assert_eq!(titles(&bob.json(&["search", "barista"])), ["Oat milk"]);
        assert_eq!(
            titles(&alice.json(&["search", "barista", "--list", &alice_default])).len(),
            0
        );
        assert!(titles(&alice.json(&["search", "zeppelin"])).is_empty());
        let (ok, table, _) = alice.taskctl(&["search", "drips"]);
        assert!(ok && table.contains("Call the plumber"), "{table}");

        // Rename, archive (its tasks leave the default listing), unarchive, delete.
        assert_eq!(
            alice.json(&["lists", "rename", "Groceries", "Shopping"])["name"],
            "Shopping"
        );
        assert_eq!(
            alice.json(&["lists", "archive", "Shopping"])["archived"],
            true
        );
        let names = |env: &Env, extra: &[&str]| -> Vec<String> {
            let mut args = vec!["lists"];
            args.extend_from_slice(extra);
            env.json(&args)["lists"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| str_of(l, "name").to_owned())
                .collect()
        };
        assert!(!names(&alice, &[]).contains(&"Shopping".to_owned()));
        assert!(names(&alice, &["--archived"]).contains(&"Shopping".to_owned()));
        assert!(!titles(&alice.json(&["list"])).contains(&"Oat milk".to_owned()));
        assert_eq!(
            titles(&alice.json(&["list", "--list", "Shopping"])),
            ["Oat milk"]
        );
        let (code, stderr) = bob.fails(&["lists", "archive", "Shopping"]);
        assert_ne!(code, 0, "only the owner archives: {stderr}");
        assert_eq!(
            alice.json(&["lists", "unarchive", &gid[..8]])["archived"],
            false
        );
        let (code, stderr) = alice.fails(&["lists", "delete", "Shopping"]);
        assert_eq!(code, CONFLICT, "open tasks in it: {stderr}");

        // Leave, unshare.
        assert_eq!(bob.json(&["leave", "Shopping"])["left"], gid.as_str());
        let (code, stderr) = bob.fails(&["show", &milk_id]);
        assert_eq!(code, NOT_FOUND, "after leaving: {stderr}");
        assert_eq!(
            alice.json(&["unshare", "Shopping", "carol"])["removed"],
            "carol"
        );
        assert_eq!(carol.fails(&["members", &gid]).0, NOT_FOUND);
        let members = alice.json(&["members", "Shopping"]);
        assert_eq!(members["members"].as_array().unwrap().len(), 1, "{members}");

        // An empty list goes.
        alice.json(&["rm", &milk_id]);
        assert_eq!(
            alice.json(&["lists", "delete", "Shopping"])["deleted"],
            gid.as_str()
        );
        assert_eq!(alice.fails(&["lists", "show", &gid]).0, NOT_FOUND);
        assert_eq!(alice.fails(&["lists", "show", "Shopping"]).0, NOT_FOUND);
    })
    .await;
    let _ = stop.send(());
    let _ = handle.await;
    result.unwrap();
}

/// The lines a child writes to one of its streams, as they come.
fn lines_of(stream: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// The next line, within `secs` seconds.
fn next_line(lines: &mpsc::Receiver<String>, secs: u64, what: &str) -> String {
    lines
        .recv_timeout(Duration::from_secs(secs))
        .unwrap_or_else(|e| panic!("no {what} within {secs} s: {e}"))
}

/// A running `taskctl watch`, its stdout and stderr read line by line.
struct Watch {
    child: Child,
    stdout: mpsc::Receiver<String>,
    stderr: mpsc::Receiver<String>,
}

impl Watch {
    /// Starts `taskctl watch ARGS` as `env`'s user and waits until it watches.
    fn start(env: &Env, args: &[&str]) -> Self {
        let mut all = vec!["watch"];
        all.extend_from_slice(args);
        let mut child = env
            .command(&all)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = lines_of(child.stdout.take().unwrap());
        let stderr = lines_of(child.stderr.take().unwrap());
        let watch = Self {
            child,
            stdout,
            stderr,
        };
        let said = watch.said(10, "watching");
        assert!(said.contains("Ctrl-C"), "{said}");
        watch
    }

    /// The first line on stderr that contains `text`, within `secs` seconds.
    fn said(&self, secs: u64, text: &str) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(line) if line.contains(text) => return line,
                Ok(_) => {}
                Err(e) => panic!("watch never said {text:?} within {secs} s: {e}"),
            }
        }
    }

    /// The next change printed, as JSON.
    fn change(&self) -> Value {
        let line = next_line(&self.stdout, 15, "change from watch");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"))
    }

    /// Ctrl-C, as a terminal sends it; the exit code.
    fn interrupt(mut self) -> i32 {
        let pid = self.child.id().to_string();
        let killed = std::process::Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap();
        assert!(killed.success());
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code().unwrap_or(-1);
            }
            if std::time::Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("watch did not end within 10 s of SIGINT");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_prints_another_users_changes_resumes_and_ends_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let (server, stop, handle) = dev_server(dir.path()).await;
    let result = tokio::task::spawn_blocking(move || {
        let alice = Env::user(&server, "alice");
        let bob = Env::user(&server, "bob");
        let gid = str_of(&alice.json(&["lists", "create", "Groceries"]), "id").to_owned();
        alice.json(&["share", "Groceries", "bob"]);

        // alice watches the shared list; bob adds and completes a task in it.
        let watch = Watch::start(&alice, &["--json", "--list", "Groceries"]);
        alice.json(&["add", "In my own list"]); // not in Groceries: not shown
        let milk = bob.json(&[
            "add",
            "Oat milk",
            "--list",
            "Groceries",
            "--assign",
            "alice",
        ]);
        let milk_id = str_of(&milk, "id").to_owned();
        bob.json(&["done", &milk_id]);

        let created = watch.change();
        assert_eq!(created["type"], "created", "{created}");
        assert_eq!(created["task"]["id"], milk_id.as_str());
        assert_eq!(created["task"]["title"], "Oat milk");
        assert_eq!(created["task"]["owner_id"], "bob");
        assert_eq!(created["task"]["assignee_id"], "alice");
        assert_eq!(created["task"]["list_id"], gid.as_str());
        assert_eq!(created["version"], 1);
        assert!(!str_of(&created, "event_id").is_empty(), "{created}");
        assert!(created["occur_time"].is_string(), "{created}");
        let first_token = str_of(&created, "resume_token").to_owned();
        assert!(!first_token.is_empty());
        let completed = watch.change();
        assert_eq!(completed["type"], "completed", "{completed}");
        assert_eq!(completed["version"], 2);
        assert_eq!(completed["task"]["completed"], true);
        assert_eq!(watch.interrupt(), 0, "Ctrl-C ends watch cleanly");

        // Resumed after the first change: the second comes again, nothing before it.
        let resumed = Watch::start(
            &alice,
            &["--json", "--list", &gid, "--resume", &first_token],
        );
        let again = resumed.change();
        assert_eq!(again["type"], "completed", "{again}");
        assert_eq!(again["event_id"], completed["event_id"]);
        // And what happens meanwhile follows it, here in text for people.
        assert_eq!(resumed.interrupt(), 0);
        let text = Watch::start(&alice, &["--tz", "Europe/Paris"]);
        bob.json(&["reopen", &milk_id]);
        let line = next_line(&text.stdout, 15, "a change in text");
        assert!(
            line.contains("reopened")
                && line.contains(&milk_id[28..])
                && line.contains("Oat milk")
                && line.contains("[Groceries]")
                && line.contains("bob -> alice"),
            "{line}"
        );
        assert!(!line.contains('\x1b'), "no colours on a pipe: {line:?}");
        assert_eq!(text.interrupt(), 0);

        // A token that is not one is a usage error; a list alice cannot see is not found.
        let (code, stderr) = alice.fails(&["watch", "--resume", "bogus"]);
        assert_eq!(code, USAGE, "{stderr}");
        let (code, stderr) = alice.fails(&["watch", "--list", "Nonesuch"]);
        assert_eq!(code, NOT_FOUND, "{stderr}");

        // A reader that goes away ends watch at the next change, with no error.
        let mut gone = alice
            .command(&["watch", "--json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = lines_of(gone.stderr.take().unwrap());
        assert!(next_line(&stderr, 10, "watching").contains("watching"));
        drop(gone.stdout.take());
        bob.json(&["done", &milk_id]);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(status) = gone.try_wait().unwrap() {
                break status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "watch outlived its reader"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        assert_eq!(status.code(), Some(0));
        let rest: Vec<String> = stderr.try_iter().collect();
        assert!(
            !rest
                .iter()
                .any(|l| l.contains("error") || l.contains("panicked")),
            "{rest:?}"
        );
    })
    .await;
    let _ = stop.send(());
    let _ = handle.await;
    result.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_reconnects_to_a_restarted_service_and_misses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let app = dev_app(dir.path(), &[]).await;
    let port = app.local_addr().port();
    let server = format!("http://{}", app.local_addr());
    let (stop, handle) = serve(app);

    let alice = Env::user(&server, "alice");
    let (watch, alice) = tokio::task::spawn_blocking(move || {
        let watch = Watch::start(&alice, &["--json"]);
        alice.json(&["add", "Before the restart"]);
        let change = watch.change();
        assert_eq!(change["task"]["title"], "Before the restart", "{change}");
        (watch, alice)
    })
    .await
    .unwrap();

    // The service goes away (its watchers are cut off), and comes back on the same port
    // and database; a change made while watch waits to reconnect still reaches it.
    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(30), handle)
        .await
        .expect("task-service stops with a watcher connected")
        .unwrap()
        .unwrap();
    let app = dev_app(dir.path(), &[("APP_PORT", port.to_string())]).await;
    let (stop, handle) = serve(app);
    let result = tokio::task::spawn_blocking(move || {
        alice.json(&["add", "While reconnecting"]);
        let change = watch.change();
        assert_eq!(change["task"]["title"], "While reconnecting", "{change}");
        watch.said(5, "reconnected");
        alice.json(&["add", "After the restart"]);
        assert_eq!(watch.change()["task"]["title"], "After the restart");
        assert_eq!(watch.interrupt(), 0);
    })
    .await;
    let _ = stop.send(());
    let _ = handle.await;
    result.unwrap();
}

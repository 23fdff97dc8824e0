//! The real dapr CLI (`scripts/setup-dapr-cli.sh`), run the way an operator runs it against
//! the sandbox's sidecars: it finds them among the host's `daprd` processes. And
//! `scripts/up-cli.sh`, the CLI's multi-app run of dapr/dapr.yaml that `just up-cli` starts.

use std::fs::File;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::children::script_output;
use crate::process::reap_after_exit;

pub struct DaprCli {
    binary: PathBuf,
}

impl DaprCli {
    pub fn new() -> anyhow::Result<Self> {
        Ok(Self {
            binary: script_output("setup-dapr-cli.sh", &[])?,
        })
    }

    /// `dapr <args>`: its standard output, or an error with everything it printed.
    pub fn run(&self, args: &[&str]) -> anyhow::Result<String> {
        let output = Command::new(&self.binary)
            .args(args)
            .output()
            .with_context(|| format!("run {}", self.binary.display()))?;
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        anyhow::ensure!(
            output.status.success(),
            "dapr {} failed ({}):\n{stdout}\n{}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(stdout)
    }

    /// `dapr invoke --app-id <app_id> --method <method> --data <data>`: the JSON the app
    /// answered (the CLI prints it before its own success line). The CLI calls the target's
    /// own sidecar and (1.12) sends no Dapr API token, so the sidecar must not ask for one.
    pub fn invoke(
        &self,
        app_id: &str,
        method: &str,
        data: &serde_json::Value,
    ) -> anyhow::Result<serde_json::Value> {
        let stdout = self.run(&[
            "invoke",
            "--app-id",
            app_id,
            "--method",
            method,
            "--data",
            &data.to_string(),
        ])?;
        let body = stdout
            .lines()
            .find(|line| line.trim_start().starts_with('{'))
            .with_context(|| format!("no JSON in the CLI's output:\n{stdout}"))?;
        Ok(serde_json::from_str(body)?)
    }
}

/// An app of a multi-app run, as `dapr list --output json` shows it.
#[derive(Debug, Clone)]
pub struct ListedApp {
    pub app_id: String,
    pub cli_pid: u32,
    pub daprd_pid: u32,
    pub app_pid: u32,
    pub app_log: PathBuf,
    pub daprd_log: PathBuf,
}

impl DaprCli {
    /// The apps that `dapr list` shows for the multi-app run of the CLI `cli_pid`.
    pub fn list_run(&self, cli_pid: u32) -> anyhow::Result<Vec<ListedApp>> {
        let listed: serde_json::Value =
            serde_json::from_str(&self.run(&["list", "--output", "json"])?)?;
        let pid = |app: &serde_json::Value, key: &str| {
            app[key]
                .as_u64()
                .and_then(|pid| u32::try_from(pid).ok())
                .unwrap_or(0)
        };
        let path =
            |app: &serde_json::Value, key: &str| PathBuf::from(app[key].as_str().unwrap_or(""));
        Ok(listed
            .as_array()
            .context("`dapr list` gave no array")?
            .iter()
            .filter(|app| pid(app, "cliPid") == cli_pid)
            .map(|app| ListedApp {
                app_id: app["appId"].as_str().unwrap_or_default().to_owned(),
                cli_pid: pid(app, "cliPid"),
                daprd_pid: pid(app, "daprdPid"),
                app_pid: pid(app, "appPid"),
                app_log: path(app, "appLogPath"),
                daprd_log: path(app, "daprdLogPath"),
            })
            .collect())
    }
}

/// `scripts/up-cli.sh` as `just up-cli` runs it, in a process group of its own as a
/// terminal's foreground job is, with the workspace's binaries next to the running test
/// (`cargo build --workspace --bins`) instead of release ones, and its data in a directory
/// of the caller's. Its ports are the fixed ones of dapr/dapr.yaml and the component files:
/// the script refuses to start when one is taken, and says which.
pub struct UpCli {
    child: Child,
    log: PathBuf,
}

impl UpCli {
    pub fn start(data: &Path) -> anyhow::Result<Self> {
        let bin_dir = crate::services::binary("task-service")?
            .parent()
            .map(Path::to_path_buf)
            .context("the binaries' directory")?;
        let log = data.join("up-cli.log");
        let out = File::create(&log).with_context(|| format!("create {}", log.display()))?;
        let child = Command::new(crate::repo_root().join("scripts/up-cli.sh"))
            .env("TASKMESH_BIN_DIR", bin_dir)
            .env("TASKMESH_UP_CLI_DATA", data)
            // As a developer's shell would have it: dev mode, sidecars without an API token.
            .env_remove("TASKMESH_JWT_SECRET")
            .env_remove("APP_API_TOKEN")
            .env_remove("DAPR_API_TOKEN")
            .env_remove("DAPR_SCHEDULER_HOST_ADDRESS_DNS_A")
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .context("start scripts/up-cli.sh")?;
        // If this test process dies first: an interrupt, which the script passes on.
        reap_after_exit(child.id(), None)?;
        Ok(Self { child, log })
    }

    /// The script's process group (its id is the script's).
    pub fn group(&self) -> u32 {
        self.child.id()
    }

    /// The dapr CLI the script runs, once it has started: the script's child that leads
    /// a process group of its own (the CLI's, with its sidecars and apps).
    pub fn cli_pid(&self) -> Option<u32> {
        cli_of(self.group(), &processes())
    }

    /// What the script and the CLI printed.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Polls `ready` until it gives a value; fails with the script's output when the
    /// script exits first (a port taken, say) or `timeout` passes.
    pub fn wait_for<T>(
        &mut self,
        timeout: Duration,
        mut ready: impl FnMut(&Self) -> Option<T>,
    ) -> anyhow::Result<T> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(value) = ready(self) {
                return Ok(value);
            }
            if let Some(status) = self.child.try_wait()? {
                anyhow::bail!("scripts/up-cli.sh exited ({status}):\n{}", self.output());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "not ready within {timeout:?}; scripts/up-cli.sh printed:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// A Ctrl-C at the terminal: SIGINT to the script's whole group; then waits for the
    /// script to exit.
    pub fn interrupt(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        signal_group(self.group(), "INT")?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "scripts/up-cli.sh still runs {timeout:?} after an interrupt:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for UpCli {
    /// Whatever is left, even after a failed test: the script's group and the group the
    /// CLI makes for itself, its sidecars and apps (led by the script's child).
    fn drop(&mut self) {
        let script = self.group();
        for group in cli_of(script, &processes()).into_iter().chain([script]) {
            let _ = signal_group(group, "KILL");
        }
        let _ = self.child.wait();
    }
}

/// A process as /proc shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proc {
    pub pid: u32,
    pub ppid: u32,
    pub pgid: u32,
    /// R, S, D, Z (a zombie: exited, not yet reaped)...
    pub state: char,
    pub name: String,
}

/// Every process of the host (Linux /proc).
pub fn processes() -> Vec<Proc> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // "pid (name) state ppid pgrp ...": the name may hold spaces and parentheses.
            let (head, rest) = stat.rsplit_once(')')?;
            let name = head.split_once('(')?.1.to_owned();
            let mut fields = rest.split_whitespace();
            let state = fields.next()?.chars().next()?;
            let ppid = fields.next()?.parse().ok()?;
            let pgid = fields.next()?.parse().ok()?;
            Some(Proc {
                pid,
                ppid,
                pgid,
                state,
                name,
            })
        })
        .collect()
}

fn cli_of(script: u32, processes: &[Proc]) -> Option<u32> {
    processes
        .iter()
        .find(|p| p.ppid == script && p.pgid == p.pid)
        .map(|p| p.pid)
}

/// `kill -<signal> -- -<group>`: the signal to every process of the group.
fn signal_group(group: u32, signal: &str) -> anyhow::Result<()> {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg("--")
        .arg(format!("-{group}"))
        .stderr(Stdio::null())
        .status()?;
    anyhow::ensure!(status.success(), "kill -{signal} -- -{group} failed");
    Ok(())
}

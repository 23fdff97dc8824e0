//! A long-running child process of the sandbox: output to a log file, stopped on drop,
//! reaped by a watchdog if the test process dies first, restartable with the same command.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::process::{reap_after_exit, signal};

pub struct Supervised {
    name: String,
    program: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    log: PathBuf,
    child: Option<Child>,
}

impl Supervised {
    pub fn spawn(
        name: impl Into<String>,
        program: impl Into<PathBuf>,
        args: Vec<String>,
        env: Vec<(String, String)>,
        log: PathBuf,
    ) -> anyhow::Result<Self> {
        let mut me = Self {
            name: name.into(),
            program: program.into(),
            args,
            env,
            log,
            child: None,
        };
        me.start()?;
        Ok(me)
    }

    /// Starts the process again (after `kill` or `stop`), appending to the same log.
    pub fn start(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(self.child.is_none(), "{} is already running", self.name);
        let out = File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("open {}", self.log.display()))?;
        let child = Command::new(&self.program)
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("start {} ({})", self.name, self.program.display()))?;
        reap_after_exit(child.id(), None)?;
        self.child = Some(child);
        Ok(())
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Sets (`Some`) or removes (`None`) one variable of the environment the next `start`
    /// uses, e.g. to arm a fail point for one run of the process and disarm it after.
    pub fn set_env(&mut self, name: &str, value: Option<&str>) {
        self.env.retain(|(k, _)| k != name);
        if let Some(value) = value {
            self.env.push((name.to_owned(), value.to_owned()));
        }
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The last lines of the log, for error messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Whether the process has exited (and, if so, reaps it).
    pub fn exited(&mut self) -> bool {
        match self.child.as_mut().map(Child::try_wait) {
            Some(Ok(Some(_))) => {
                self.child = None;
                true
            }
            Some(Ok(None)) => false,
            _ => true,
        }
    }

    /// SIGKILL: no chance to clean up, as in a crash.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then SIGKILL after `grace`.
    pub fn stop(&mut self, grace: Duration) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = signal(child.id(), "TERM");
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs a project script that prints a path (setup-*.sh), and returns the path.
pub fn script_output(script: &str, args: &[&str]) -> anyhow::Result<PathBuf> {
    let root = crate::repo_root();
    let output = Command::new(root.join("scripts").join(script))
        .args(args)
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("run scripts/{script}"))?;
    anyhow::ensure!(output.status.success(), "scripts/{script} failed");
    let text = String::from_utf8(output.stdout)?;
    let path = text.lines().last().unwrap_or_default().trim();
    anyhow::ensure!(!path.is_empty(), "scripts/{script} printed nothing");
    Ok(PathBuf::from(path))
}

/// Polls `ready` until it holds, `timeout` passes, or the process dies.
pub fn wait_until(
    process: &mut Supervised,
    timeout: Duration,
    mut ready: impl FnMut() -> bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if ready() {
            return Ok(());
        }
        if process.exited() {
            anyhow::bail!(
                "{} exited during start; log {}:\n{}",
                process.name,
                process.log.display(),
                process.log_tail(30)
            );
        }
        if Instant::now() > deadline {
            anyhow::bail!(
                "{} not ready after {timeout:?}; log {}:\n{}",
                process.name,
                process.log.display(),
                process.log_tail(30)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

//! Child processes that must not outlive the test run.

use std::path::Path;
use std::process::{Command, Stdio};

/// Starts a detached shell that waits for this test process to exit, then stops `pid`
/// and removes `dir`. It covers the cases `Drop` cannot: panics in statics, aborts,
/// SIGKILL of the test binary.
pub fn reap_after_exit(pid: u32, dir: Option<&Path>) -> std::io::Result<()> {
    let script = r#"
        while kill -0 "$1" 2>/dev/null; do sleep 1; done
        kill -INT "$2" 2>/dev/null
        for _ in 1 2 3 4 5; do kill -0 "$2" 2>/dev/null || break; sleep 1; done
        kill -KILL "$2" 2>/dev/null
        [ -n "$3" ] && rm -rf "$3"
        exit 0
    "#;
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg("reaper")
        .arg(std::process::id().to_string())
        .arg(pid.to_string())
        .arg(dir.map(|d| d.display().to_string()).unwrap_or_default())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    Ok(())
}

/// Sends a signal by name (`TERM`, `INT`, `KILL`, `STOP`, `CONT`) with the `kill` command,
/// which keeps this crate free of `unsafe`.
pub fn signal(pid: u32, name: &str) -> std::io::Result<()> {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()?;
    if status.success() {
        Ok(())
    } else {
        Err(std::io::Error::other(format!("kill -{name} {pid} failed")))
    }
}

/// Whether this process runs as root (servers like PostgreSQL refuse to).
pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.trim_ascii() == b"0")
        .unwrap_or(false)
}

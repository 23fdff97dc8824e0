//! The Taskmesh binaries as child processes on free ports.

use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

use crate::children::{Supervised, wait_until};
use crate::net::free_port;

/// A workspace binary next to the running test or bench executable
/// (`target/<profile>/`); `just test` builds them before the tests run.
pub fn binary(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let mut dir = exe.parent().map(PathBuf::from).unwrap_or_default();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path = dir.join(name);
    anyhow::ensure!(
        path.exists(),
        "{} is missing: build the services first (cargo build --workspace --bins)",
        path.display()
    );
    Ok(path)
}

pub struct ServiceProcess {
    port: u16,
    metrics_port: u16,
    process: Supervised,
    _logs: tempfile::TempDir,
}

impl ServiceProcess {
    /// Starts `name` with `env` (plus APP_PORT, METRICS_PORT, RUST_LOG) and waits until it
    /// accepts connections.
    pub fn start(name: &str, env: Vec<(String, String)>) -> anyhow::Result<Self> {
        Self::start_on(name, free_port()?, env)
    }

    /// Like `start`, on a given port.
    pub fn start_on(name: &str, port: u16, env: Vec<(String, String)>) -> anyhow::Result<Self> {
        let metrics_port = free_port()?;
        let mut full = vec![
            ("APP_PORT".to_owned(), port.to_string()),
            ("METRICS_PORT".to_owned(), metrics_port.to_string()),
            ("RUST_LOG".to_owned(), "info".to_owned()),
        ];
        full.extend(env);
        let logs = tempfile::Builder::new().prefix("taskmesh-svc-").tempdir()?;
        let process = Supervised::spawn(
            name,
            binary(name)?,
            vec![],
            full,
            logs.path().join(format!("{name}.log")),
        )?;
        let mut me = Self {
            port,
            metrics_port,
            process,
            _logs: logs,
        };
        me.wait_ready()?;
        Ok(me)
    }

    fn wait_ready(&mut self) -> anyhow::Result<()> {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        wait_until(&mut self.process, Duration::from_secs(30), || {
            TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok()
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn metrics_port(&self) -> u16 {
        self.metrics_port
    }

    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.process.log_path()).unwrap_or_default()
    }

    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Whether the process has exited on its own (a fail point, a crash).
    pub fn exited(&mut self) -> bool {
        self.process.exited()
    }

    /// Sets or removes a variable of the environment the next `restart` uses.
    pub fn set_env(&mut self, name: &str, value: Option<&str>) {
        self.process.set_env(name, value);
    }

    pub fn stop(&mut self) {
        self.process.stop(Duration::from_secs(25));
    }

    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.process.start()?;
        self.wait_ready()
    }

    /// The metrics endpoint's text.
    pub fn metrics(&self) -> String {
        use std::io::{Read, Write};
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.metrics_port)) else {
            return String::new();
        };
        let _ = write!(stream, "GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n");
        let mut text = String::new();
        let _ = stream.read_to_string(&mut text);
        text
    }

    /// The value of unlabelled metric `name`, if the endpoint shows it. Never call it on a
    /// stopped process: its kernel accepts the connection and the read waits for the
    /// process.
    pub fn metric(&self, name: &str) -> Option<f64> {
        self.metrics().lines().find_map(|line| {
            let (key, value) = line.trim().split_once(' ')?;
            (key == name).then(|| value.parse().ok())?
        })
    }
}

/// task-service's per-user rate limit lifted: tests and benchmarks call as one user far
/// faster than a person would (the limit itself is tested in task-service's API tests).
pub fn unlimited() -> [(String, String); 2] {
    ["TASKMESH_RATE_LIMIT_PER_SEC", "TASKMESH_RATE_LIMIT_BURST"]
        .map(|name| (name.to_owned(), "1000000".to_owned()))
}

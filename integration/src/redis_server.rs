//! A private Redis (Debian's `redis-server`) on a free loopback port: Dapr's state store
//! and, locally, its pub/sub (Redis Streams).

use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::children::{Supervised, script_output, wait_until};
use crate::net::free_port;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Persistence {
    None,
    AppendOnly,
    EveryWrite,
}

pub struct RedisServer {
    port: u16,
    process: Supervised,
    _dir: tempfile::TempDir,
}

impl RedisServer {
    pub fn start() -> anyhow::Result<Self> {
        Self::start_with(Persistence::None)
    }

    /// A Redis that keeps its data across `stop`/`restart` (append-only file).
    pub fn start_persistent() -> anyhow::Result<Self> {
        Self::start_with(Persistence::AppendOnly)
    }

    /// A Redis that keeps every acknowledged write across a SIGKILL too: the append-only
    /// file is written and fsynced before each reply (`appendfsync always`), what a broker
    /// that must not lose a published event needs.
    pub fn start_durable() -> anyhow::Result<Self> {
        Self::start_with(Persistence::EveryWrite)
    }

    fn start_with(persistence: Persistence) -> anyhow::Result<Self> {
        let bin = script_output("setup-redis.sh", &[])?;
        let dir = tempfile::Builder::new()
            .prefix("taskmesh-redis-")
            .tempdir()?;
        let port = free_port()?;
        let args = [
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            if persistence == Persistence::None {
                "no"
            } else {
                "yes"
            },
            "--appendfsync",
            if persistence == Persistence::EveryWrite {
                "always"
            } else {
                "everysec"
            },
            "--dir",
            &dir.path().display().to_string(),
        ]
        .map(str::to_owned)
        .to_vec();
        let process = Supervised::spawn("redis", bin, args, vec![], dir.path().join("redis.log"))?;
        let mut me = Self {
            port,
            process,
            _dir: dir,
        };
        me.wait_ready()?;
        Ok(me)
    }

    fn wait_ready(&mut self) -> anyhow::Result<()> {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        wait_until(&mut self.process, Duration::from_secs(10), || {
            TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok()
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `host:port`, as Dapr's `redisHost` wants it.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Stops the server (data is lost: it keeps nothing on disk).
    pub fn stop(&mut self) {
        self.process.stop(Duration::from_secs(5));
    }

    /// SIGKILL, as in a crash: what survives is what the append-only file holds.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.process.start()?;
        self.wait_ready()
    }
}

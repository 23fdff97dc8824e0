//! The Dapr scheduler (the Jobs API's backend, with embedded etcd) on free loopback
//! ports. Its data directory outlives `stop`/`restart`, as it would on a real volume.

use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::children::{Supervised, script_output, wait_until};
use crate::net::free_port;

pub struct Scheduler {
    port: u16,
    process: Supervised,
    _dir: tempfile::TempDir,
}

impl Scheduler {
    pub fn start() -> anyhow::Result<Self> {
        let bin = script_output("setup-daprd.sh", &["scheduler"])?;
        let dir = tempfile::Builder::new()
            .prefix("taskmesh-scheduler-")
            .tempdir()?;
        let port = free_port()?;
        let (healthz, metrics, etcd_client, etcd_peer) =
            (free_port()?, free_port()?, free_port()?, free_port()?);
        let args: Vec<String> = vec![
            "--port".into(),
            port.to_string(),
            "--listen-address".into(),
            "127.0.0.1".into(),
            "--override-broadcast-host-port".into(),
            format!("127.0.0.1:{port}"),
            "--healthz-port".into(),
            healthz.to_string(),
            "--healthz-listen-address".into(),
            "127.0.0.1".into(),
            "--metrics-port".into(),
            metrics.to_string(),
            "--metrics-listen-address".into(),
            "127.0.0.1".into(),
            "--etcd-client-port".into(),
            etcd_client.to_string(),
            "--etcd-client-listen-address".into(),
            "127.0.0.1".into(),
            "--etcd-initial-cluster".into(),
            format!("dapr-scheduler-server-0=http://127.0.0.1:{etcd_peer}"),
            "--etcd-data-dir".into(),
            dir.path().join("etcd").display().to_string(),
        ];
        let process = Supervised::spawn(
            "scheduler",
            bin,
            args,
            vec![],
            dir.path().join("scheduler.log"),
        )?;
        let mut me = Self {
            port,
            process,
            _dir: dir,
        };
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        wait_until(&mut me.process, Duration::from_secs(60), || {
            TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok()
        })?;
        Ok(me)
    }

    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    /// What daprd takes as `--scheduler-host-address`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn log(&self) -> String {
        self.process.log_tail(30)
    }
}

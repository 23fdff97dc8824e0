//! A single-node Apache Kafka 4 (KRaft) from its Maven Central jars, on free loopback
//! ports, with a data directory that survives `stop`/`restart`.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::Context;

use crate::children::{Supervised, script_output, wait_until};
use crate::net::free_port;

pub struct KafkaBroker {
    port: u16,
    process: Supervised,
    dir: tempfile::TempDir,
}

fn java() -> PathBuf {
    std::env::var_os("JAVA_HOME")
        .map(|home| PathBuf::from(home).join("bin/java"))
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("java"))
}

impl KafkaBroker {
    pub fn start() -> anyhow::Result<Self> {
        let libs = script_output("setup-kafka.sh", &[])?;
        let classpath = format!("{}/*", libs.display());
        let dir = tempfile::Builder::new()
            .prefix("taskmesh-kafka-")
            .tempdir()?;
        let (port, controller) = (free_port()?, free_port()?);
        let properties = dir.path().join("server.properties");
        std::fs::write(
            &properties,
            format!(
                "process.roles=broker,controller\n\
                 node.id=1\n\
                 controller.quorum.voters=1@127.0.0.1:{controller}\n\
                 listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}\n\
                 advertised.listeners=PLAINTEXT://127.0.0.1:{port}\n\
                 controller.listener.names=CONTROLLER\n\
                 listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT\n\
                 log.dirs={data}\n\
                 num.partitions=4\n\
                 offsets.topic.replication.factor=1\n\
                 offsets.topic.num.partitions=4\n\
                 transaction.state.log.replication.factor=1\n\
                 transaction.state.log.min.isr=1\n\
                 share.coordinator.state.topic.replication.factor=1\n\
                 share.coordinator.state.topic.min.isr=1\n\
                 group.initial.rebalance.delay.ms=0\n\
                 auto.create.topics.enable=true\n",
                data = dir.path().join("data").display(),
            ),
        )?;
        let cluster_id = Command::new(java())
            .args(["-cp", &classpath, "kafka.tools.StorageTool", "random-uuid"])
            .output()
            .context("java kafka.tools.StorageTool random-uuid")?;
        let cluster_id = String::from_utf8(cluster_id.stdout)?.trim().to_owned();
        let format = Command::new(java())
            .args(["-cp", &classpath, "kafka.tools.StorageTool", "format", "-t"])
            .arg(&cluster_id)
            .arg("-c")
            .arg(&properties)
            .output()
            .context("java kafka.tools.StorageTool format")?;
        anyhow::ensure!(
            format.status.success(),
            "kafka storage format failed: {}",
            String::from_utf8_lossy(&format.stderr)
        );
        let log4j = crate::repo_root().join("scripts/kafka/log4j2.properties");
        let args = vec![
            "-Xms256m".to_owned(),
            "-Xmx512m".to_owned(),
            format!("-Dlog4j2.configurationFile={}", log4j.display()),
            "-cp".to_owned(),
            classpath,
            "kafka.Kafka".to_owned(),
            properties.display().to_string(),
        ];
        let process =
            Supervised::spawn("kafka", java(), args, vec![], dir.path().join("kafka.log"))?;
        let mut me = Self { port, process, dir };
        me.wait_ready()?;
        Ok(me)
    }

    /// The broker logs "Kafka Server started" once it serves clients (KRaft, unfenced).
    fn wait_ready(&mut self) -> anyhow::Result<()> {
        let log = self.process.log_path().to_owned();
        let already = std::fs::read_to_string(&log)
            .map(|t| t.matches("Kafka Server started").count())
            .unwrap_or(0);
        wait_until(&mut self.process, Duration::from_secs(60), || {
            std::fs::read_to_string(&log)
                .map(|t| t.matches("Kafka Server started").count() > already)
                .unwrap_or(false)
        })
    }

    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn stop(&mut self) {
        self.process.stop(Duration::from_secs(20));
    }

    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.process.start()?;
        self.wait_ready()
    }
}

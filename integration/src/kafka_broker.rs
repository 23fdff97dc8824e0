//! A single-node Apache Kafka 4 (KRaft) from its Maven Central jars, on free loopback
//! ports, with a data directory that survives `stop`/`restart`; optionally with its client
//! listener on SASL_SSL (SCRAM-SHA-256 over TLS, a CA made for the broker), what the
//! chart's production values expect of a managed Kafka or Redpanda.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::Context;

use crate::children::{Supervised, script_output, wait_until};
use crate::net::free_port;

pub struct KafkaBroker {
    port: u16,
    process: Supervised,
    dir: tempfile::TempDir,
    secure: Option<Secure>,
}

/// How clients reach a SASL_SSL broker.
#[derive(Debug, Clone)]
pub struct Secure {
    /// The SCRAM-SHA-256 user.
    pub username: String,
    pub password: String,
    /// A directory holding only `ca.crt`, the CA that signed the broker's certificate (for
    /// `SSL_CERT_DIR`, as the chart mounts `dapr.trustedCASecret`).
    pub ca_dir: PathBuf,
}

fn java() -> PathBuf {
    std::env::var_os("JAVA_HOME")
        .map(|home| PathBuf::from(home).join("bin/java"))
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("java"))
}

impl KafkaBroker {
    /// Clients on PLAINTEXT, no authentication.
    pub fn start() -> anyhow::Result<Self> {
        Self::start_with(false)
    }

    /// Clients on SASL_SSL only: SCRAM-SHA-256 (the user created when the storage is
    /// formatted, `--add-scram`) over TLS with a certificate for 127.0.0.1 signed by a CA
    /// made here with openssl. The broker talks to itself on a PLAINTEXT listener that
    /// clients are never told about.
    pub fn start_secure() -> anyhow::Result<Self> {
        Self::start_with(true)
    }

    fn start_with(secure: bool) -> anyhow::Result<Self> {
        let libs = script_output("setup-kafka.sh", &[])?;
        let classpath = format!("{}/*", libs.display());
        let dir = tempfile::Builder::new()
            .prefix("taskmesh-kafka-")
            .tempdir()?;
        let (port, controller, internal) = (free_port()?, free_port()?, free_port()?);
        let data = dir.path().join("data");
        let mut properties_text = format!(
            "process.roles=broker,controller\n\
             node.id=1\n\
             controller.quorum.voters=1@127.0.0.1:{controller}\n\
             controller.listener.names=CONTROLLER\n\
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
            data = data.display(),
        );
        let secure = if secure {
            let tls = dir.path().join("tls");
            make_certificates(&tls)?;
            std::fs::write(
                tls.join("keystore.pem"),
                std::fs::read_to_string(tls.join("broker.key"))?
                    + &std::fs::read_to_string(tls.join("broker.crt"))?,
            )?;
            properties_text.push_str(&format!(
                "listeners=SECURE://127.0.0.1:{port},INTERNAL://127.0.0.1:{internal},CONTROLLER://127.0.0.1:{controller}\n\
                 advertised.listeners=SECURE://127.0.0.1:{port},INTERNAL://127.0.0.1:{internal}\n\
                 inter.broker.listener.name=INTERNAL\n\
                 listener.security.protocol.map=CONTROLLER:PLAINTEXT,INTERNAL:PLAINTEXT,SECURE:SASL_SSL\n\
                 sasl.enabled.mechanisms=SCRAM-SHA-256\n\
                 listener.name.secure.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;\n\
                 listener.name.secure.ssl.keystore.type=PEM\n\
                 listener.name.secure.ssl.keystore.location={keystore}\n\
                 listener.name.secure.ssl.client.auth=none\n",
                keystore = tls.join("keystore.pem").display(),
            ));
            Some(Secure {
                username: "taskmesh".into(),
                // kafka-storage's --add-scram splits at ',' and strips quotes: neither here.
                password: uuid::Uuid::new_v4().simple().to_string(),
                ca_dir: tls.join("ca"),
            })
        } else {
            properties_text.push_str(&format!(
                "listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}\n\
                 advertised.listeners=PLAINTEXT://127.0.0.1:{port}\n\
                 listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT\n"
            ));
            None
        };
        let properties = dir.path().join("server.properties");
        std::fs::write(&properties, properties_text)?;
        let cluster_id = Command::new(java())
            .args(["-cp", &classpath, "kafka.tools.StorageTool", "random-uuid"])
            .output()
            .context("java kafka.tools.StorageTool random-uuid")?;
        let cluster_id = String::from_utf8(cluster_id.stdout)?.trim().to_owned();
        let mut format = Command::new(java());
        format
            .args(["-cp", &classpath, "kafka.tools.StorageTool", "format", "-t"])
            .arg(&cluster_id)
            .arg("-c")
            .arg(&properties);
        if let Some(secure) = &secure {
            format.arg("--add-scram").arg(format!(
                "SCRAM-SHA-256=[name=\"{}\",password=\"{}\"]",
                secure.username, secure.password
            ));
        }
        let format = format
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
        let mut me = Self {
            port,
            process,
            dir,
            secure,
        };
        me.wait_ready()?;
        Ok(me)
    }

    /// The broker logs "Kafka Server started" once it serves clients (KRaft, unfenced).
    fn wait_ready(&mut self) -> anyhow::Result<()> {
        let log = self.process.log_path().to_owned();
        let already = std::fs::read_to_string(&log)
            .map(|t| t.matches("Kafka Server started").count())
            .unwrap_or(0);
        wait_until(&mut self.process, Duration::from_secs(120), || {
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

    /// The SASL user and CA of a broker from `start_secure`.
    pub fn secure(&self) -> Option<&Secure> {
        self.secure.as_ref()
    }

    pub fn stop(&mut self) {
        self.process.stop(Duration::from_secs(20));
    }

    /// SIGKILL, as in a crash: what survives is what the broker had written to its log
    /// files (the page cache outlives the process).
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

/// A CA (`ca/ca.crt`, alone in its directory) and the broker's key (`broker.key`, PKCS#8 as
/// Kafka's PEM key store wants it) and certificate for 127.0.0.1 and localhost, in `dir`.
fn make_certificates(dir: &Path) -> anyhow::Result<()> {
    let ca_dir = dir.join("ca");
    std::fs::create_dir_all(&ca_dir)?;
    let openssl = |args: &[&str]| -> anyhow::Result<()> {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .context("run openssl (apt-get install openssl)")?;
        anyhow::ensure!(
            out.status.success(),
            "openssl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca/ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=taskmesh-test-kafka-ca",
    ])?;
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "broker.key",
        "-out",
        "broker.csr",
        "-subj",
        "/CN=127.0.0.1",
    ])?;
    std::fs::write(
        dir.join("broker.ext"),
        "basicConstraints = CA:FALSE\n\
         keyUsage = critical, digitalSignature, keyEncipherment\n\
         extendedKeyUsage = serverAuth\n\
         subjectAltName = IP:127.0.0.1, DNS:localhost\n",
    )?;
    openssl(&[
        "x509",
        "-req",
        "-in",
        "broker.csr",
        "-CA",
        "ca/ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-CAserial",
        "ca.srl",
        "-days",
        "2",
        "-extfile",
        "broker.ext",
        "-out",
        "broker.crt",
    ])?;
    let key = std::fs::read_to_string(dir.join("broker.key"))?;
    anyhow::ensure!(
        key.contains("BEGIN PRIVATE KEY"),
        "openssl made a key that is not PKCS#8"
    );
    Ok(())
}

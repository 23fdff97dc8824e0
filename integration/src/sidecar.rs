//! Real `daprd` sidecars, self-hosted, on free ports, with the repo's components.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::children::{Supervised, script_output, wait_until};
use crate::net::free_port;

/// Which pub/sub component the sidecars load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Broker {
    Redis,
    Kafka,
}

impl Broker {
    pub fn name(self) -> &'static str {
        match self {
            Self::Redis => "redis",
            Self::Kafka => "kafka",
        }
    }
}

/// A resources directory made from `dapr/components` and `dapr/pubsub/<broker>`, with the
/// default addresses replaced by the sandbox's servers.
pub struct Resources {
    dir: tempfile::TempDir,
}

impl Resources {
    pub fn new(broker: Broker, redis: &str, kafka: Option<&str>) -> anyhow::Result<Self> {
        Self::with_state_store(broker, redis, redis, kafka)
    }

    /// Like `new`, with the state store on its own Redis (to stop one but not the other).
    pub fn with_state_store(
        broker: Broker,
        redis: &str,
        state_redis: &str,
        kafka: Option<&str>,
    ) -> anyhow::Result<Self> {
        let root = crate::repo_root().join("dapr");
        let dir = tempfile::Builder::new()
            .prefix("taskmesh-dapr-")
            .tempdir()?;
        let sources = [
            (root.join("components"), state_redis),
            (root.join("pubsub").join(broker.name()), redis),
        ];
        for (source, redis) in sources {
            for entry in std::fs::read_dir(&source)? {
                let path = entry?.path();
                if path.extension().is_some_and(|e| e == "yaml") {
                    let mut text = std::fs::read_to_string(&path)?.replace("localhost:6379", redis);
                    if let Some(kafka) = kafka {
                        text = text.replace("localhost:9092", kafka);
                    }
                    let name = path.file_name().map(PathBuf::from).unwrap_or_default();
                    std::fs::write(dir.path().join(name), text)?;
                }
            }
        }
        Ok(Self { dir })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Replaces `from` with `to` in every file (e.g. the SMTP port of `email.yaml`).
    pub fn replace(&self, file_name: &str, from: &str, to: &str) -> anyhow::Result<()> {
        let path = self.dir.path().join(file_name);
        let text = std::fs::read_to_string(&path)?;
        anyhow::ensure!(text.contains(from), "{file_name} has no {from:?}");
        std::fs::write(path, text.replace(from, to))?;
        Ok(())
    }

    /// Drops the pub/sub component's topic scopes, for tests that publish to topics of
    /// their own from apps of their own (a recording subscriber); the scopes themselves are
    /// tested with the real topics and apps.
    pub fn open_topics(&self) -> anyhow::Result<()> {
        const SCOPES: [&str; 3] = ["protectedTopics", "publishingScopes", "subscriptionScopes"];
        let path = self.dir.path().join("pubsub.yaml");
        let text = std::fs::read_to_string(&path)?;
        let mut kept = Vec::new();
        let mut lines = text.lines();
        while let Some(line) = lines.next() {
            let trimmed = line.trim();
            if let Some(name) = trimmed.strip_prefix("- name: ")
                && SCOPES.contains(&name)
            {
                lines.next(); // its value
                continue;
            }
            kept.push(line);
        }
        anyhow::ensure!(
            kept.len() + 6 == text.lines().count(),
            "pubsub.yaml has no scopes"
        );
        std::fs::write(path, kept.join("\n") + "\n")?;
        Ok(())
    }

    /// Adds a component file (e.g. a test-only binding).
    pub fn add(&self, file_name: &str, yaml: &str) -> anyhow::Result<()> {
        std::fs::write(self.dir.path().join(file_name), yaml)?;
        Ok(())
    }
}

#[derive(Debug, Clone, Default)]
pub struct DaprdOptions {
    pub app_id: String,
    /// The app's gRPC port; `None` for a sidecar without an app (a publisher only).
    pub app_port: Option<u16>,
    pub resources: Vec<PathBuf>,
    pub config: Option<PathBuf>,
    /// Required from the app on every call to the sidecar.
    pub dapr_api_token: Option<String>,
    /// Presented by the sidecar on every call to the app.
    pub app_api_token: Option<String>,
    pub scheduler: Option<String>,
    pub max_concurrency: Option<u32>,
    /// A gRPC port picked beforehand (the app must know it before the sidecar starts).
    pub grpc_port: Option<u16>,
    /// A fixed HTTP port (for `just up`, so that curl commands in the README work).
    pub http_port: Option<u16>,
    /// The largest request the sidecar accepts (`--max-body-size`); `MAX_BODY_BYTES`
    /// when `None`.
    pub max_body_bytes: Option<u64>,
    /// More environment for daprd (e.g. `SSL_CERT_DIR` with a test CA, as the chart's
    /// `dapr.trustedCASecret` sets it).
    pub env: Vec<(String, String)>,
}

/// What the harness's sidecars accept, passed explicitly as the chart does
/// (`dapr.io/max-body-size`): daprd's default, 4 MiB (`4Mi`), in Dapr 1.18.
pub const MAX_BODY_BYTES: u64 = 4 * 1024 * 1024;

/// The `TASKMESH_OUTBOX_MAX_BATCH_BYTES` that goes with a sidecar taking `max_body_bytes`:
/// three quarters of it, the rest headroom for the relay's estimate of the framing (the
/// chart's rule too).
pub fn outbox_max_batch_bytes(max_body_bytes: u64) -> u64 {
    max_body_bytes / 4 * 3
}

pub struct Daprd {
    grpc_port: u16,
    http_port: u16,
    process: Supervised,
    _logs: tempfile::TempDir,
}

pub fn daprd_binary() -> anyhow::Result<PathBuf> {
    script_output("setup-daprd.sh", &["daprd"])
}

impl Daprd {
    pub fn start(options: DaprdOptions) -> anyhow::Result<Self> {
        let grpc_port = match options.grpc_port {
            Some(port) => port,
            None => free_port()?,
        };
        let http_port = match options.http_port {
            Some(port) => port,
            None => free_port()?,
        };
        let (metrics_port, internal_port) = (free_port()?, free_port()?);
        let mut args: Vec<String> = vec![
            "--app-id".into(),
            options.app_id.clone(),
            "--app-protocol".into(),
            "grpc".into(),
            "--dapr-grpc-port".into(),
            grpc_port.to_string(),
            "--dapr-http-port".into(),
            http_port.to_string(),
            "--dapr-internal-grpc-port".into(),
            internal_port.to_string(),
            "--metrics-port".into(),
            metrics_port.to_string(),
            "--dapr-listen-addresses".into(),
            "127.0.0.1".into(),
            "--placement-host-address".into(),
            String::new(),
            "--scheduler-host-address".into(),
            options.scheduler.clone().unwrap_or_default(),
            "--log-level".into(),
            "info".into(),
            "--max-body-size".into(),
            options.max_body_bytes.unwrap_or(MAX_BODY_BYTES).to_string(),
        ];
        if let Some(port) = options.app_port {
            args.extend(["--app-port".into(), port.to_string()]);
        }
        if let Some(n) = options.max_concurrency {
            args.extend(["--app-max-concurrency".into(), n.to_string()]);
        }
        for resources in &options.resources {
            args.extend(["--resources-path".into(), resources.display().to_string()]);
        }
        if let Some(config) = &options.config {
            args.extend(["--config".into(), config.display().to_string()]);
        }
        let mut env = options.env.clone();
        if let Some(token) = &options.dapr_api_token {
            env.push(("DAPR_API_TOKEN".to_owned(), token.clone()));
        }
        if let Some(token) = &options.app_api_token {
            env.push(("APP_API_TOKEN".to_owned(), token.clone()));
        }
        let logs = tempfile::Builder::new()
            .prefix("taskmesh-daprd-")
            .tempdir()?;
        let log = logs.path().join(format!("{}.log", options.app_id));
        let process = Supervised::spawn(
            format!("daprd {}", options.app_id),
            daprd_binary()?,
            args,
            env,
            log,
        )?;
        let mut me = Self {
            grpc_port,
            http_port,
            process,
            _logs: logs,
        };
        me.wait_ready()?;
        Ok(me)
    }

    /// `/v1.0/healthz/outbound` answers 204 once components are loaded, before the app is
    /// up, so the app may start after its sidecar.
    fn wait_ready(&mut self) -> anyhow::Result<()> {
        let port = self.http_port;
        wait_until(&mut self.process, Duration::from_secs(30), || {
            http_status(port, "/v1.0/healthz/outbound") == Some(204)
        })
    }

    pub fn grpc_port(&self) -> u16 {
        self.grpc_port
    }

    pub fn http_port(&self) -> u16 {
        self.http_port
    }

    pub fn grpc_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.grpc_port)
    }

    pub fn log_path(&self) -> &Path {
        self.process.log_path()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.process.log_path()).unwrap_or_default()
    }

    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    /// SIGKILL, as in a crash.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.process.start()?;
        self.wait_ready()
    }
}

/// The status code of a plain HTTP/1.0 GET on loopback, if anything answered.
pub fn http_status(port: u16, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

/// `POST` JSON to the sidecar's HTTP API, as `dapr invoke` does; returns status and body.
pub fn http_post_json(port: u16, path: &str, body: &str) -> anyhow::Result<(u16, String)> {
    http_request(
        port,
        "POST",
        path,
        &[("Content-Type", "application/json")],
        body,
    )
}

/// A GET on loopback: status and body.
pub fn http_get(port: u16, path: &str) -> anyhow::Result<(u16, String)> {
    http_request(port, "GET", path, &[], "")
}

/// One HTTP/1.0 request on loopback with these headers: status and body.
pub fn http_request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> anyhow::Result<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut head = format!("{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    write!(stream, "{head}Content-Length: {}\r\n\r\n{body}", body.len())?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("not an HTTP response: {response:?}"))?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

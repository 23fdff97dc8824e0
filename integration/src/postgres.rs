//! Throwaway PostgreSQL clusters from the Debian packages, and a fresh database per test.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use sea_orm::{ConnectionTrait, Database};

use crate::net::free_port;
use crate::process::{is_root, reap_after_exit, signal};

/// What the cluster trades for speed. Tests want no fsync; benchmarks want the real thing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    Fast,
    Full,
}

pub struct PgCluster {
    child: Child,
    dir: PathBuf,
    port: u16,
    bin: PathBuf,
    /// The server's command line, to start it again after `stop`.
    server: Command,
}

/// Starts a process of `server`'s program and arguments in `dir`, its output appended to
/// `postgres.log` there.
fn spawn_server(server: &Command, dir: &Path) -> anyhow::Result<Child> {
    let log = std::fs::File::options()
        .create(true)
        .append(true)
        .open(dir.join("postgres.log"))?;
    Command::new(server.get_program())
        .args(server.get_args())
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("start postgres")
}

impl PgCluster {
    /// `initdb` and start a private cluster on a free loopback port. As root, the server
    /// runs as the `postgres` user, which the Debian package creates.
    pub fn start(durability: Durability) -> anyhow::Result<Self> {
        let bin = bin_dir()?;
        let dir = tempfile::Builder::new()
            .prefix("taskmesh-pg-")
            .tempdir()?
            .keep();
        let data = dir.join("data");
        let as_postgres = is_root();
        if as_postgres {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&dir)
                .status()?;
            if !status.success() {
                bail!("cannot chown {} to postgres", dir.display());
            }
        }
        let run = |program: &str| {
            let mut cmd = if as_postgres {
                let mut cmd = Command::new("setpriv");
                cmd.args([
                    "--reuid=postgres",
                    "--regid=postgres",
                    "--init-groups",
                    "--",
                ])
                .arg(bin.join(program));
                cmd
            } else {
                Command::new(bin.join(program))
            };
            cmd.current_dir(&dir);
            cmd
        };
        let out = run("initdb")
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync"])
            .output()
            .context("run initdb")?;
        if !out.status.success() {
            bail!("initdb failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        let port = free_port()?;
        let mut server = run("postgres");
        server
            .arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string(), "-h", "127.0.0.1", "-k"])
            .arg(&dir)
            .args(["-c", "max_connections=300", "-c", "shared_buffers=128MB"]);
        if durability == Durability::Fast {
            server.args([
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
            ]);
        }
        let child = spawn_server(&server, &dir)?;
        reap_after_exit(child.id(), Some(&dir))?;
        let cluster = Self {
            child,
            dir,
            port,
            bin,
            server,
        };
        cluster.wait_ready()?;
        Ok(cluster)
    }

    fn wait_ready(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = Command::new(self.bin.join("pg_isready"))
                .args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &self.port.to_string(),
                    "-U",
                    "postgres",
                ])
                .stdout(Stdio::null())
                .status()?
                .success();
            if ready {
                return Ok(());
            }
            if Instant::now() > deadline {
                let log =
                    std::fs::read_to_string(self.dir.join("postgres.log")).unwrap_or_default();
                bail!("PostgreSQL did not become ready:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A fast shutdown (SIGINT: sessions are cut, committed data stays), as in a restart
    /// of the server or a fail-over; waits until the server has exited.
    pub fn stop(&mut self) {
        self.shut_down(Duration::from_secs(20));
    }

    /// SIGINT (PostgreSQL's "fast" shutdown), SIGKILL if it has not exited within `grace`.
    fn shut_down(&mut self, grace: Duration) {
        let _ = signal(self.child.id(), "INT");
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the server again on the same port and data after `stop`.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        if let Ok(None) = self.child.try_wait() {
            bail!("PostgreSQL is still running");
        }
        self.child = spawn_server(&self.server, &self.dir)?;
        reap_after_exit(self.child.id(), None)?;
        self.wait_ready()
    }

    /// The superuser's URL of the `postgres` database.
    pub fn admin_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// The directory of the server's Unix socket (`.s.PGSQL.<port>`).
    pub fn socket_dir(&self) -> &Path {
        &self.dir
    }

    /// `admin_url` over the Unix socket: how a client on the same host normally connects,
    /// without the loopback TCP stack in between.
    pub fn socket_admin_url(&self) -> String {
        format!(
            "postgres://postgres@localhost/postgres?host={}&port={}",
            self.dir.display(),
            self.port
        )
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        self.shut_down(Duration::from_secs(10));
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The newest `/usr/lib/postgresql/<major>/bin`, or `$PG_BINDIR`.
pub fn bin_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("PG_BINDIR") {
        return Ok(PathBuf::from(dir));
    }
    let mut majors: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .context("PostgreSQL is not installed (apt-get install postgresql)")?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let major = entry.file_name().to_str()?.parse().ok()?;
            Some((major, entry.path().join("bin")))
        })
        .collect();
    majors.sort();
    majors
        .pop()
        .map(|(_, bin)| bin)
        .context("no PostgreSQL server under /usr/lib/postgresql")
}

/// The admin URL tests create their databases with: `$DATABASE_URL` when it names a
/// PostgreSQL server, else a cluster started once for this test process.
pub fn shared_admin_url() -> anyhow::Result<String> {
    if let Ok(url) = std::env::var("DATABASE_URL")
        && (url.starts_with("postgres://") || url.starts_with("postgresql://"))
    {
        return Ok(url);
    }
    static CLUSTER: OnceLock<Result<PgCluster, String>> = OnceLock::new();
    CLUSTER
        .get_or_init(|| PgCluster::start(Durability::Fast).map_err(|e| format!("{e:#}")))
        .as_ref()
        .map(PgCluster::admin_url)
        .map_err(|e| anyhow::anyhow!("cannot start PostgreSQL: {e}"))
}

/// Creates an empty database on the server of `admin_url` and returns its URL.
pub async fn fresh_database(admin_url: &str) -> anyhow::Result<String> {
    let name = format!("taskmesh_test_{}", uuid::Uuid::new_v4().simple());
    let admin = Database::connect(admin_url).await?;
    admin
        .execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
        .await?;
    admin.close().await?;
    let (base, query) = admin_url
        .split_once('?')
        .map_or((admin_url, None), |(b, q)| (b, Some(q)));
    let server = base
        .rsplit_once('/')
        .map(|(server, _db)| server)
        .context("DATABASE_URL has no database path")?;
    Ok(match query {
        Some(q) => format!("{server}/{name}?{q}"),
        None => format!("{server}/{name}"),
    })
}

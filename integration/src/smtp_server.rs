//! A throwaway SMTP server (aiosmtpd from PyPI) that drops every message into a
//! maildir, so tests can read what Dapr's SMTP binding sent.

use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

use crate::children::{Supervised, script_output, wait_until};
use crate::net::free_port;

pub struct SmtpServer {
    port: u16,
    maildir: PathBuf,
    _process: Supervised,
    _dir: tempfile::TempDir,
}

/// One received message, headers decoded as far as tests need.
#[derive(Debug, Clone)]
pub struct Mail {
    pub to: String,
    pub subject: String,
    pub body: String,
}

impl SmtpServer {
    pub fn start() -> anyhow::Result<Self> {
        let python = script_output("setup-smtp.sh", &[])?;
        let dir = tempfile::Builder::new()
            .prefix("taskmesh-smtp-")
            .tempdir()?;
        let port = free_port()?;
        let maildir = dir.path().join("maildir");
        let args: Vec<String> = vec![
            "-m".into(),
            "aiosmtpd".into(),
            "-n".into(),
            "-l".into(),
            format!("127.0.0.1:{port}"),
            "-c".into(),
            "aiosmtpd.handlers.Mailbox".into(),
            maildir.display().to_string(),
        ];
        let mut process =
            Supervised::spawn("smtp", python, args, vec![], dir.path().join("smtp.log"))?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        wait_until(&mut process, Duration::from_secs(20), || {
            TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok()
        })?;
        Ok(Self {
            port,
            maildir,
            _process: process,
            _dir: dir,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Where messages land (a maildir: `new/` holds one file per message).
    pub fn maildir(&self) -> &std::path::Path {
        &self.maildir
    }

    /// Every message received so far.
    pub fn messages(&self) -> Vec<Mail> {
        let Ok(entries) = std::fs::read_dir(self.maildir.join("new")) else {
            return Vec::new();
        };
        entries
            .filter_map(|entry| std::fs::read_to_string(entry.ok()?.path()).ok())
            .map(|raw| parse(&raw))
            .collect()
    }
}

fn parse(raw: &str) -> Mail {
    let raw = raw.replace("\r\n", "\n");
    let (head, body) = raw.split_once("\n\n").unwrap_or((&raw, ""));
    // Unfold continuation lines.
    let head = head.replace("\n ", " ").replace("\n\t", " ");
    let header = |name: &str| {
        head.lines()
            .find_map(|line| {
                let (key, value) = line.split_once(':')?;
                key.eq_ignore_ascii_case(name)
                    .then(|| value.trim().to_owned())
            })
            .unwrap_or_default()
    };
    Mail {
        to: header("To"),
        subject: header("Subject"),
        body: body.to_owned(),
    }
}

//! The integration sandbox: starts the real pieces (PostgreSQL, Redis, Kafka, daprd and
//! the Taskmesh binaries) on free loopback ports, and tears them down even when the test
//! process panics or is killed.
#![forbid(unsafe_code)]

pub mod apps;
pub mod bench;
pub mod children;
pub mod client;
pub mod cpu;
pub mod dapr_cli;
pub mod faults;
pub mod jwks_server;
pub mod kafka_broker;
pub mod net;
pub mod otlp_receiver;
pub mod postgres;
pub mod process;
pub mod recorder;
pub mod redis_server;
pub mod scheduler;
pub mod services;
pub mod sidecar;
pub mod smtp_server;

use std::path::PathBuf;

/// The repository root (scripts/, dapr/).
pub fn repo_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

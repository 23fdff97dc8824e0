//! Pieces every Taskmesh service shares: typed configuration from the environment,
//! telemetry, bearer-token auth, the error type that maps to `tonic::Status`, shutdown
//! signals and the recurrence-rule grammar.
#![forbid(unsafe_code)]

pub mod auth;
pub mod callback;
pub mod config;
pub mod deadletter;
pub mod error;
pub mod events;
pub mod failpoint;
pub mod grpc_metrics;
#[cfg(any(test, feature = "testing"))]
pub mod memory_state;
pub mod metrics;
pub mod net;
pub mod occurrence;
pub mod records;
pub mod recurrence;
pub mod reflection;
pub mod shutdown;
pub mod sidecar;
pub mod state;
pub mod telemetry;
pub mod trace_context;

//! The integration sandbox: starts real infrastructure (PostgreSQL today; daprd, Redis and
//! Kafka as the event work lands) on free loopback ports, and tears it down even when the
//! test process panics or is killed.
#![forbid(unsafe_code)]

pub mod net;
pub mod postgres;
pub mod process;

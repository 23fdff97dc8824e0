//! analytics-service: per-user task statistics from `task-events`, answered over
//! `dapr invoke` (`stats/get`).
#![forbid(unsafe_code)]

pub mod app;
pub mod consumer;
pub mod legacy;
pub mod methods;
pub mod stats;

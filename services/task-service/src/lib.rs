//! task-service: the Taskmesh task API.
#![forbid(unsafe_code)]

pub mod api;
pub mod app;
pub mod config;
pub mod domain;
pub mod events;
pub mod lists;
pub mod outbox;
pub mod peers;
pub mod store;

pub use app::{Application, StartError};
pub use config::Config;

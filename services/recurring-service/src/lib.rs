//! recurring-service: when a recurring task is completed, creates its next occurrence in
//! task-service through Dapr service invocation.
#![forbid(unsafe_code)]

pub mod app;
pub mod consumer;
pub mod creator;
pub mod next;

//! notification-service: keeps each user's notifications, schedules due-time reminders
//! with the Dapr Jobs API and delivers them (pub/sub, e-mail and webhook bindings).
#![forbid(unsafe_code)]

pub mod app;
pub mod consumer;
pub mod dapr_ports;
pub mod inbox;
pub mod methods;
pub mod metrics;
pub mod ports;
pub mod prefs;
mod records;
pub mod reminder;
pub mod reminders;

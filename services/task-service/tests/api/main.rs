//! API tests: a real tonic client against task-service on a random port, on SQLite and on
//! PostgreSQL (a throwaway cluster unless `DATABASE_URL` names one).
// Tests assert by panicking, helpers included.
#![allow(clippy::unwrap_used)]

mod helpers;

mod auth;
mod concurrency;
mod crud;
mod explain;
mod explain_outbox;
mod identity;
mod limits;
mod list;
mod lists;
mod migration;
mod outbox;
mod reflection;
mod validation;
mod watch;

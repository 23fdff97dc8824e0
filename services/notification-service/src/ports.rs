//! What the service needs from the outside besides the state store: the Jobs API and the
//! ways out (pub/sub, e-mail, webhook). Dapr implements them in `dapr_ports`; unit tests
//! use the fakes below.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use taskmesh_shared::events::ReminderEvent;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PortError(pub String);

/// One-shot jobs by name; scheduling a name again replaces the job.
#[async_trait]
pub trait JobScheduler: Send + Sync + 'static {
    async fn schedule(&self, name: &str, at: DateTime<Utc>) -> Result<(), PortError>;
    /// Succeeds when there is no such job.
    async fn cancel(&self, name: &str) -> Result<(), PortError>;
}

#[async_trait]
pub trait Outbound: Send + Sync + 'static {
    /// On `task-reminders`, keyed by the task for ordering.
    async fn publish(&self, event: &ReminderEvent) -> Result<(), PortError>;
    async fn email(&self, to: &str, subject: &str, body: &str) -> Result<(), PortError>;
    /// POSTs `body` to `path` under the webhook binding's base URL.
    async fn webhook(&self, path: &str, body: &[u8]) -> Result<(), PortError>;
}

#[cfg(test)]
pub(crate) mod fakes {
    use std::collections::HashMap;
    use std::sync::Mutex;

    use super::*;

    #[derive(Default)]
    pub struct FakeScheduler {
        pub jobs: Mutex<HashMap<String, DateTime<Utc>>>,
        pub down: Mutex<bool>,
    }

    impl FakeScheduler {
        pub fn at(&self, name: &str) -> Option<DateTime<Utc>> {
            self.jobs.lock().unwrap().get(name).copied()
        }
    }

    #[async_trait]
    impl JobScheduler for FakeScheduler {
        async fn schedule(&self, name: &str, at: DateTime<Utc>) -> Result<(), PortError> {
            if *self.down.lock().unwrap() {
                return Err(PortError("scheduler down".into()));
            }
            self.jobs.lock().unwrap().insert(name.into(), at);
            Ok(())
        }
        async fn cancel(&self, name: &str) -> Result<(), PortError> {
            if *self.down.lock().unwrap() {
                return Err(PortError("scheduler down".into()));
            }
            self.jobs.lock().unwrap().remove(name);
            Ok(())
        }
    }

    #[derive(Default)]
    pub struct FakeOutbound {
        pub published: Mutex<Vec<ReminderEvent>>,
        pub emails: Mutex<Vec<(String, String, String)>>,
        pub webhooks: Mutex<Vec<(String, Vec<u8>)>>,
        pub email_down: Mutex<bool>,
    }

    #[async_trait]
    impl Outbound for FakeOutbound {
        async fn publish(&self, event: &ReminderEvent) -> Result<(), PortError> {
            self.published.lock().unwrap().push(event.clone());
            Ok(())
        }
        async fn email(&self, to: &str, subject: &str, body: &str) -> Result<(), PortError> {
            if *self.email_down.lock().unwrap() {
                return Err(PortError("smtp down".into()));
            }
            self.emails
                .lock()
                .unwrap()
                .push((to.into(), subject.into(), body.into()));
            Ok(())
        }
        async fn webhook(&self, path: &str, body: &[u8]) -> Result<(), PortError> {
            self.webhooks
                .lock()
                .unwrap()
                .push((path.into(), body.to_vec()));
            Ok(())
        }
    }
}

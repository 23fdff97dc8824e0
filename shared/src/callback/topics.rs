//! The topics every subscriber reads and where its dead letters go, from the environment:
//! one place for what each service's `Config` used to repeat.

use std::sync::Arc;
use std::time::Duration;

use super::DeadLetters;
use crate::config::{self, ConfigError, Source};
use crate::deadletter::{DeadLetterLimits, DeadLetterStore};
use crate::events::{DEAD_LETTER_TOPIC_PREFIX, TASK_EVENTS_TOPIC, dead_letter_topic};
use crate::state::StateStore;

/// A subscriber's topics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    /// `TASKMESH_TOPIC_TASK_EVENTS`.
    pub task_events: String,
    /// This app's own dead-letter topic, `<TASKMESH_TOPIC_DEAD_LETTER>.<app id>`: daprd
    /// publishes there what this app failed, and only this app reads it.
    pub dead_letter: String,
    /// How long and how many dead letters the app keeps (`TASKMESH_DEAD_LETTER_TTL_SECS`,
    /// `TASKMESH_DEAD_LETTER_MAX`).
    pub dead_letter_limits: DeadLetterLimits,
}

impl Topics {
    pub fn from_env(env: &dyn Source, app_id: &str) -> Result<Self, ConfigError> {
        let prefix = config::optional(env, "TASKMESH_TOPIC_DEAD_LETTER")
            .unwrap_or_else(|| DEAD_LETTER_TOPIC_PREFIX.to_owned());
        let defaults = DeadLetterLimits::default();
        let ttl_secs: u64 =
            config::parse_or(env, "TASKMESH_DEAD_LETTER_TTL_SECS", defaults.ttl.as_secs())?;
        if ttl_secs == 0 {
            return Err(ConfigError::invalid(
                "TASKMESH_DEAD_LETTER_TTL_SECS",
                "0",
                "at least 1 second",
            ));
        }
        let max: usize = config::parse_or(env, "TASKMESH_DEAD_LETTER_MAX", defaults.max)?;
        // The index of kept dead letters is one record rewritten per dead letter: keep it
        // well under the sidecar's request limit (about 80 bytes an entry).
        if !(1..=10_000).contains(&max) {
            return Err(ConfigError::invalid(
                "TASKMESH_DEAD_LETTER_MAX",
                max.to_string(),
                "between 1 and 10000",
            ));
        }
        Ok(Self {
            task_events: config::optional(env, "TASKMESH_TOPIC_TASK_EVENTS")
                .unwrap_or_else(|| TASK_EVENTS_TOPIC.to_owned()),
            dead_letter: dead_letter_topic(&prefix, app_id),
            dead_letter_limits: DeadLetterLimits {
                ttl: Duration::from_secs(ttl_secs),
                max,
            },
        })
    }
}

impl Topics {
    /// This app's dead letters on `pubsub`, kept in `store`: for `Router::keep_dead_letters`.
    pub fn dead_letters(&self, pubsub: &str, store: Arc<dyn StateStore>) -> DeadLetters {
        DeadLetters::new(
            pubsub,
            self.dead_letter.clone(),
            DeadLetterStore::new(store, self.dead_letter_limits),
        )
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::HashMap;

    use super::*;

    #[test]
    fn each_app_has_its_own_dead_letter_topic() {
        let env: HashMap<&str, &str> = HashMap::new();
        let topics = Topics::from_env(&env, "recurring-service").unwrap();
        assert_eq!(topics.task_events, "task-events");
        assert_eq!(
            topics.dead_letter,
            "task-events-deadletter.recurring-service"
        );
        assert_eq!(topics.dead_letter_limits, DeadLetterLimits::default());
        assert_eq!(
            topics.dead_letter_limits.ttl,
            Duration::from_secs(14 * 86_400)
        );

        let env = HashMap::from([
            ("TASKMESH_TOPIC_DEAD_LETTER", "dlq"),
            ("TASKMESH_DEAD_LETTER_TTL_SECS", "60"),
            ("TASKMESH_DEAD_LETTER_MAX", "5"),
        ]);
        let topics = Topics::from_env(&env, "analytics-service").unwrap();
        assert_eq!(topics.dead_letter, "dlq.analytics-service");
        assert_eq!(topics.dead_letter_limits.max, 5);
        assert_eq!(topics.dead_letter_limits.ttl, Duration::from_secs(60));

        let env = HashMap::from([("TASKMESH_DEAD_LETTER_MAX", "0")]);
        let err = Topics::from_env(&env, "a").unwrap_err().to_string();
        assert!(err.contains("TASKMESH_DEAD_LETTER_MAX"), "{err}");
    }
}

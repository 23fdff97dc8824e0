//! `dapr invoke --app-id analytics-service --method stats/get --data '{"user_id":"alice"}'`.

use std::sync::Arc;

use async_trait::async_trait;
use serde::Deserialize;
use taskmesh_shared::callback::{InvokeError, Method};
use taskmesh_shared::state::StateStore;

use crate::consumer::{Aggregate, user_key};
use crate::legacy::{LegacyStats, legacy_key};
use crate::stats::UserStats;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StatsRequest {
    user_id: String,
}

pub struct GetStats<S> {
    store: Arc<S>,
}

impl<S> GetStats<S> {
    pub fn new(store: Arc<S>) -> Self {
        Self { store }
    }
}

pub(crate) fn user_id(input: serde_json::Value) -> Result<String, InvokeError> {
    let request: StatsRequest = serde_json::from_value(input).map_err(|err| {
        InvokeError::InvalidArgument(format!("expected {{\"user_id\": \"...\"}}: {err}"))
    })?;
    let user = request.user_id.trim();
    if user.is_empty() || user.len() > 128 {
        return Err(InvokeError::InvalidArgument(
            "user_id must be 1 to 128 characters".into(),
        ));
    }
    Ok(user.to_owned())
}

#[async_trait]
impl<S: StateStore> Method for GetStats<S> {
    async fn call(&self, input: serde_json::Value) -> Result<serde_json::Value, InvokeError> {
        let user = user_id(input)?;
        let now = chrono::Utc::now();
        let stats = match self
            .store
            .get(&user_key(&user))
            .await
            .map_err(|err| InvokeError::Unavailable(err.to_string()))?
        {
            Some(read) => {
                serde_json::from_slice::<Aggregate>(&read.value)
                    .map_err(InvokeError::internal)?
                    .stats
            }
            // Not written since the upgrade: the old record, if any (`legacy.rs`).
            None => match self
                .store
                .get(&legacy_key(&user))
                .await
                .map_err(|err| InvokeError::Unavailable(err.to_string()))?
            {
                Some(read) => {
                    serde_json::from_slice::<LegacyStats>(&read.value)
                        .map_err(InvokeError::internal)?
                        .convert(now)
                        .0
                }
                None => UserStats::default(),
            },
        };
        serde_json::to_value(stats.report(&user, now)).map_err(InvokeError::internal)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use serde_json::json;

    use super::*;

    #[test]
    fn user_id_is_validated() {
        assert_eq!(user_id(json!({"user_id": " alice "})).unwrap(), "alice");
        for bad in [
            json!({}),
            json!({"user_id": ""}),
            json!({"user_id": 3}),
            json!({"user": "a"}),
        ] {
            assert!(matches!(user_id(bad), Err(InvokeError::InvalidArgument(_))));
        }
    }
}

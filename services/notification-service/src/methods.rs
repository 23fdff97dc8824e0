//! `dapr invoke --app-id notification-service --method <name>`: notifications and
//! preferences, JSON in and out.

use std::sync::Arc;

use async_trait::async_trait;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use taskmesh_shared::callback::{InvokeError, Method};
use taskmesh_shared::state::StateStore;

use crate::inbox::Inbox;
use crate::prefs::Preferences;
use crate::records::{Change, RecordError, inbox_key, prefs_key};
use crate::reminders::Reminders;

pub const DEFAULT_PAGE_SIZE: usize = 20;
pub const MAX_PAGE_SIZE: usize = 100;

/// The methods by name, for the router.
pub fn all<S: StateStore>(reminders: &Arc<Reminders<S>>) -> Vec<(&'static str, Arc<dyn Method>)> {
    let r = || reminders.clone();
    vec![
        ("notifications/list", Arc::new(ListNotifications(r()))),
        ("notifications/ack", Arc::new(AckNotifications(r()))),
        ("preferences/get", Arc::new(GetPreferences(r()))),
        ("preferences/set", Arc::new(SetPreferences(r()))),
        ("preferences/delete", Arc::new(DeletePreferences(r()))),
    ]
}

fn parse<T: DeserializeOwned>(input: Value, expected: &str) -> Result<T, InvokeError> {
    serde_json::from_value(input)
        .map_err(|err| InvokeError::InvalidArgument(format!("expected {expected}: {err}")))
}

fn user_id(raw: &str) -> Result<&str, InvokeError> {
    let user = raw.trim();
    if user.is_empty() || user.len() > 128 || user.chars().any(char::is_control) {
        return Err(InvokeError::InvalidArgument(
            "user_id must be 1 to 128 printable characters".into(),
        ));
    }
    Ok(user)
}

fn unavailable(err: RecordError) -> InvokeError {
    match err {
        RecordError::Corrupt { .. } => InvokeError::internal(err),
        other => InvokeError::Unavailable(other.to_string()),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListRequest {
    user_id: String,
    #[serde(default)]
    page_size: Option<usize>,
    #[serde(default)]
    page_token: Option<String>,
    #[serde(default)]
    unread_only: bool,
}

pub struct ListNotifications<S>(Arc<Reminders<S>>);

#[async_trait]
impl<S: StateStore> Method for ListNotifications<S> {
    async fn call(&self, input: Value) -> Result<Value, InvokeError> {
        let request: ListRequest = parse(
            input,
            r#"{"user_id": "...", "page_size": 1-100, "page_token": "...", "unread_only": bool}"#,
        )?;
        let user = user_id(&request.user_id)?;
        let size = request.page_size.unwrap_or(DEFAULT_PAGE_SIZE);
        if !(1..=MAX_PAGE_SIZE).contains(&size) {
            return Err(InvokeError::InvalidArgument(format!(
                "page_size must be 1 to {MAX_PAGE_SIZE}"
            )));
        }
        let inbox: Inbox = self
            .0
            .records()
            .read(&inbox_key(user))
            .await
            .map_err(unavailable)?
            .unwrap_or_default();
        let token = request.page_token.as_deref().filter(|t| !t.is_empty());
        let page = inbox
            .page(token, size, request.unread_only)
            .map_err(|err| InvokeError::InvalidArgument(err.to_string()))?;
        serde_json::to_value(page).map_err(InvokeError::internal)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AckRequest {
    user_id: String,
    #[serde(default)]
    ids: Option<Vec<String>>,
    #[serde(default)]
    all: bool,
}

pub struct AckNotifications<S>(Arc<Reminders<S>>);

#[async_trait]
impl<S: StateStore> Method for AckNotifications<S> {
    async fn call(&self, input: Value) -> Result<Value, InvokeError> {
        let request: AckRequest = parse(
            input,
            r#"{"user_id": "...", "ids": ["..."]} or {"user_id": "...", "all": true}"#,
        )?;
        let user = user_id(&request.user_id)?;
        let ids = match (request.ids, request.all) {
            (Some(ids), false) if !ids.is_empty() => Some(ids),
            (None, true) => None,
            _ => {
                return Err(InvokeError::InvalidArgument(
                    "give either a non-empty \"ids\" or \"all\": true".into(),
                ));
            }
        };
        let acked = self
            .0
            .records()
            .update(&inbox_key(user), |inbox: Option<Inbox>| {
                let mut inbox = inbox.unwrap_or_default();
                // An id that is not this user's answers like a missing one, whoever has it.
                let missing = ids.iter().flatten().find(|id| !inbox.contains(id)).cloned();
                if let Some(id) = missing {
                    return Change::Keep(Err(id));
                }
                match inbox.ack(ids.as_deref()) {
                    0 => Change::Keep(Ok((0, inbox.unread()))),
                    n => {
                        let unread = inbox.unread();
                        Change::Write(inbox, Ok((n, unread)))
                    }
                }
            })
            .await
            .map_err(unavailable)?
            .map_err(|id| InvokeError::NotFound(format!("notification {id:?}")))?;
        Ok(json!({"acked": acked.0, "unread": acked.1}))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UserRequest {
    user_id: String,
}

/// The preferences as they apply: stored values, with the default lead time filled in.
fn effective<S: StateStore>(
    reminders: &Reminders<S>,
    user: &str,
    mut prefs: Preferences,
    stored: bool,
) -> Value {
    let lead = prefs.lead(reminders.settings().default_lead);
    prefs.lead_time_secs = Some(u64::try_from(lead.num_seconds()).unwrap_or(0));
    json!({"user_id": user, "stored": stored, "preferences": prefs})
}

pub struct GetPreferences<S>(Arc<Reminders<S>>);

#[async_trait]
impl<S: StateStore> Method for GetPreferences<S> {
    async fn call(&self, input: Value) -> Result<Value, InvokeError> {
        let request: UserRequest = parse(input, r#"{"user_id": "..."}"#)?;
        let user = user_id(&request.user_id)?;
        let stored: Option<Preferences> = self
            .0
            .records()
            .read(&prefs_key(user))
            .await
            .map_err(unavailable)?;
        let found = stored.is_some();
        Ok(effective(&self.0, user, stored.unwrap_or_default(), found))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SetRequest {
    user_id: String,
    preferences: Preferences,
}

pub struct SetPreferences<S>(Arc<Reminders<S>>);

#[async_trait]
impl<S: StateStore> Method for SetPreferences<S> {
    async fn call(&self, input: Value) -> Result<Value, InvokeError> {
        let request: SetRequest = parse(
            input,
            r#"{"user_id": "...", "preferences": {"lead_time_secs", "email", "webhook_url", "quiet_hours": {"start", "end", "time_zone"}, "muted"}}"#,
        )?;
        let user = user_id(&request.user_id)?;
        let prefs = request.preferences;
        if let Err(violations) = prefs.validate(self.0.settings().webhook_base.as_deref()) {
            let detail: Vec<String> = violations
                .iter()
                .map(|v| format!("{}: {}", v.field, v.description))
                .collect();
            return Err(InvokeError::InvalidArgument(format!(
                "invalid preferences: {}",
                detail.join("; ")
            )));
        }
        // A whole replacement: what the caller sends is what applies.
        self.0
            .records()
            .update(&prefs_key(user), |_: Option<Preferences>| {
                Change::Write(prefs.clone(), ())
            })
            .await
            .map_err(unavailable)?;
        Ok(effective(&self.0, user, prefs, true))
    }
}

pub struct DeletePreferences<S>(Arc<Reminders<S>>);

#[async_trait]
impl<S: StateStore> Method for DeletePreferences<S> {
    async fn call(&self, input: Value) -> Result<Value, InvokeError> {
        let request: UserRequest = parse(input, r#"{"user_id": "..."}"#)?;
        let user = user_id(&request.user_id)?;
        let deleted = self
            .0
            .records()
            .delete(&prefs_key(user))
            .await
            .map_err(unavailable)?;
        Ok(json!({"user_id": user, "deleted": deleted}))
    }
}

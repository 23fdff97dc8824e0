//! `taskmesh.notifications.v1`: a user's notifications and preferences, kept by
//! notification-service and reached through [`Peers`]. The user is always the caller.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use taskmesh_proto::notifications::v1 as pb;
use taskmesh_shared::error::ApiError;
use tonic::{Request, Response, Status};

use super::auth;
use crate::peers::Peers;

const APP: &str = "notification-service";
const MAX_PAGE_SIZE: i32 = 100;
const MAX_ACK_IDS: usize = 1000;

#[derive(Clone)]
pub struct NotificationApi {
    peers: Arc<dyn Peers>,
}

impl NotificationApi {
    pub fn new(peers: Arc<dyn Peers>) -> Self {
        Self { peers }
    }

    async fn call<T: for<'de> Deserialize<'de>>(
        &self,
        method: &str,
        body: Value,
    ) -> Result<T, ApiError> {
        let reply = self.peers.invoke(APP, method, body).await?;
        serde_json::from_value(reply).map_err(ApiError::internal)
    }
}

#[derive(Deserialize)]
struct Page {
    notifications: Vec<Notification>,
    #[serde(default)]
    next_page_token: Option<String>,
    unread: i64,
}

#[derive(Deserialize)]
struct Notification {
    id: String,
    kind: String,
    task_id: String,
    title: String,
    message: String,
    created_at: DateTime<Utc>,
    #[serde(default)]
    due_time: Option<DateTime<Utc>>,
    #[serde(default)]
    read: bool,
}

fn timestamp(at: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.timestamp(),
        nanos: i32::try_from(at.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

fn kind(name: &str) -> pb::NotificationKind {
    use pb::NotificationKind as K;
    match name {
        "due_time_set" => K::DueTimeSet,
        "due_time_changed" => K::DueTimeChanged,
        "due_soon" => K::DueSoon,
        "overdue" => K::Overdue,
        "rolled_over" => K::RolledOver,
        _ => K::Unspecified,
    }
}

impl From<Notification> for pb::Notification {
    fn from(n: Notification) -> Self {
        Self {
            kind: kind(&n.kind).into(),
            id: n.id,
            task_id: n.task_id,
            title: n.title,
            message: n.message,
            create_time: Some(timestamp(n.created_at)),
            due_time: n.due_time.map(timestamp),
            read: n.read,
        }
    }
}

#[derive(Deserialize)]
struct Acked {
    acked: i64,
    unread: i64,
}

#[tonic::async_trait]
impl pb::notification_service_server::NotificationService for NotificationApi {
    #[tracing::instrument(name = "ListNotifications", skip_all, fields(user))]
    async fn list_notifications(
        &self,
        request: Request<pb::ListNotificationsRequest>,
    ) -> Result<Response<pb::ListNotificationsResponse>, Status> {
        let user = auth::caller(&request)?;
        tracing::Span::current().record("user", user.as_str());
        let request = request.into_inner();
        let size = match request.page_size {
            0 => 20,
            n @ 1..=MAX_PAGE_SIZE => n,
            _ => {
                return Err(ApiError::invalid("page_size", "must be 0 (default) to 100").into());
            }
        };
        let mut body = json!({"user_id": user.as_str(), "page_size": size, "unread_only": request.unread_only});
        if !request.page_token.is_empty() {
            body["page_token"] = request.page_token.into();
        }
        let page: Page = self.call("notifications/list", body).await?;
        Ok(Response::new(pb::ListNotificationsResponse {
            notifications: page.notifications.into_iter().map(Into::into).collect(),
            next_page_token: page.next_page_token.unwrap_or_default(),
            unread: page.unread,
        }))
    }

    #[tracing::instrument(name = "AckNotifications", skip_all, fields(user))]
    async fn ack_notifications(
        &self,
        request: Request<pb::AckNotificationsRequest>,
    ) -> Result<Response<pb::AckNotificationsResponse>, Status> {
        let user = auth::caller(&request)?;
        tracing::Span::current().record("user", user.as_str());
        let request = request.into_inner();
        let body = match (request.ids.is_empty(), request.all) {
            (false, false) if request.ids.len() <= MAX_ACK_IDS => {
                json!({"user_id": user.as_str(), "ids": request.ids})
            }
            (false, false) => {
                return Err(ApiError::invalid("ids", "at most 1000 at a time").into());
            }
            (true, true) => json!({"user_id": user.as_str(), "all": true}),
            _ => {
                return Err(ApiError::invalid("ids", "give either ids or all = true").into());
            }
        };
        let acked: Acked = self.call("notifications/ack", body).await?;
        Ok(Response::new(pb::AckNotificationsResponse {
            acked: acked.acked,
            unread: acked.unread,
        }))
    }
}

/// Preferences as notification-service spells them in JSON.
#[derive(Serialize, Deserialize, Default)]
struct PrefsJson {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    lead_time_secs: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    webhook_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    quiet_hours: Option<QuietHoursJson>,
    #[serde(default)]
    muted: bool,
}

#[derive(Serialize, Deserialize)]
struct QuietHoursJson {
    start: String,
    end: String,
    time_zone: String,
}

#[derive(Deserialize)]
struct EffectivePrefs {
    stored: bool,
    preferences: PrefsJson,
}

impl From<EffectivePrefs> for pb::Preferences {
    fn from(e: EffectivePrefs) -> Self {
        let p = e.preferences;
        Self {
            lead_time_secs: p.lead_time_secs,
            email: p.email,
            webhook_url: p.webhook_url,
            quiet_hours: p.quiet_hours.map(|q| pb::QuietHours {
                start: q.start,
                end: q.end,
                time_zone: q.time_zone,
            }),
            muted: p.muted,
            stored: e.stored,
        }
    }
}

impl From<pb::Preferences> for PrefsJson {
    fn from(p: pb::Preferences) -> Self {
        Self {
            lead_time_secs: p.lead_time_secs,
            email: p.email,
            webhook_url: p.webhook_url,
            quiet_hours: p.quiet_hours.map(|q| QuietHoursJson {
                start: q.start,
                end: q.end,
                time_zone: q.time_zone,
            }),
            muted: p.muted,
        }
    }
}

#[tonic::async_trait]
impl pb::preference_service_server::PreferenceService for NotificationApi {
    #[tracing::instrument(name = "GetPreferences", skip_all, fields(user))]
    async fn get_preferences(
        &self,
        request: Request<pb::GetPreferencesRequest>,
    ) -> Result<Response<pb::Preferences>, Status> {
        let user = auth::caller(&request)?;
        tracing::Span::current().record("user", user.as_str());
        let prefs: EffectivePrefs = self
            .call("preferences/get", json!({"user_id": user.as_str()}))
            .await?;
        Ok(Response::new(prefs.into()))
    }

    #[tracing::instrument(name = "SetPreferences", skip_all, fields(user))]
    async fn set_preferences(
        &self,
        request: Request<pb::SetPreferencesRequest>,
    ) -> Result<Response<pb::Preferences>, Status> {
        let user = auth::caller(&request)?;
        tracing::Span::current().record("user", user.as_str());
        let prefs = request
            .into_inner()
            .preferences
            .ok_or_else(|| ApiError::invalid("preferences", "required"))?;
        let body = json!({"user_id": user.as_str(), "preferences": PrefsJson::from(prefs)});
        let prefs: EffectivePrefs = self.call("preferences/set", body).await?;
        Ok(Response::new(prefs.into()))
    }

    #[tracing::instrument(name = "DeletePreferences", skip_all, fields(user))]
    async fn delete_preferences(
        &self,
        request: Request<pb::DeletePreferencesRequest>,
    ) -> Result<Response<pb::DeletePreferencesResponse>, Status> {
        let user = auth::caller(&request)?;
        tracing::Span::current().record("user", user.as_str());
        #[derive(Deserialize)]
        struct Deleted {
            deleted: bool,
        }
        let reply: Deleted = self
            .call("preferences/delete", json!({"user_id": user.as_str()}))
            .await?;
        Ok(Response::new(pb::DeletePreferencesResponse {
            deleted: reply.deleted,
        }))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Mutex;

    use async_trait::async_trait;
    use pb::notification_service_server::NotificationService;
    use taskmesh_shared::auth::UserId;

    use super::*;
    use crate::api::auth::Caller;

    /// Records what was asked of the peer and answers with a canned reply.
    struct FakePeer {
        asked: Mutex<Vec<(String, Value)>>,
        reply: Value,
    }

    #[async_trait]
    impl Peers for FakePeer {
        async fn invoke(&self, app: &str, method: &str, body: Value) -> Result<Value, ApiError> {
            assert_eq!(app, APP);
            self.asked.lock().unwrap().push((method.to_owned(), body));
            Ok(self.reply.clone())
        }
    }

    fn as_user<T>(message: T, user: &str) -> Request<T> {
        let mut request = Request::new(message);
        request
            .extensions_mut()
            .insert(Caller::User(UserId::try_from(user.to_owned()).unwrap()));
        request
    }

    #[tokio::test]
    async fn the_user_comes_from_the_token_not_the_request() {
        let peer = Arc::new(FakePeer {
            asked: Mutex::default(),
            reply: json!({"notifications": [{
                "id": "n1", "kind": "due_soon", "task_id": "t", "title": "T", "message": "m",
                "created_at": "2030-01-01T00:00:00Z"
            }], "unread": 1}),
        });
        let api = NotificationApi::new(peer.clone());
        let page = api
            .list_notifications(as_user(pb::ListNotificationsRequest::default(), "alice"))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(page.notifications[0].kind(), pb::NotificationKind::DueSoon);
        assert_eq!(page.unread, 1);
        let asked = peer.asked.lock().unwrap();
        assert_eq!(asked[0].0, "notifications/list");
        assert_eq!(asked[0].1["user_id"], "alice");
        assert_eq!(asked[0].1["page_size"], 20);
    }

    #[tokio::test]
    async fn bad_requests_never_reach_the_peer() {
        let peer = Arc::new(FakePeer {
            asked: Mutex::default(),
            reply: json!({}),
        });
        let api = NotificationApi::new(peer.clone());
        let too_big = pb::ListNotificationsRequest {
            page_size: 101,
            ..Default::default()
        };
        let err = api
            .list_notifications(as_user(too_big, "a"))
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        for ack in [
            pb::AckNotificationsRequest::default(),
            pb::AckNotificationsRequest {
                ids: vec!["x".into()],
                all: true,
            },
        ] {
            let err = api.ack_notifications(as_user(ack, "a")).await.unwrap_err();
            assert_eq!(err.code(), tonic::Code::InvalidArgument);
        }
        let anonymous = api
            .list_notifications(Request::new(pb::ListNotificationsRequest::default()))
            .await
            .unwrap_err();
        assert_eq!(anonymous.code(), tonic::Code::Unauthenticated);
        assert!(peer.asked.lock().unwrap().is_empty());
    }
}

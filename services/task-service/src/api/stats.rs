//! `taskmesh.analytics.v1.StatsService`: a user's statistics, kept by analytics-service
//! and reached through [`Peers`]. The user is always the caller.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::json;
use taskmesh_proto::analytics::v1 as pb;
use taskmesh_shared::error::ApiError;
use tonic::{Request, Response, Status};

use super::auth;
use crate::peers::Peers;

#[derive(Clone)]
pub struct StatsApi {
    peers: Arc<dyn Peers>,
}

impl StatsApi {
    pub fn new(peers: Arc<dyn Peers>) -> Self {
        Self { peers }
    }
}

/// analytics-service's report, as JSON.
#[derive(Deserialize)]
struct Report {
    created: u64,
    completed: u64,
    // Absent in the answers of an analytics-service older than assignees.
    #[serde(default)]
    assigned: u64,
    deleted: u64,
    open: u64,
    overdue: u64,
    completion_rate: f64,
    completions_per_day: Vec<DayCount>,
    #[serde(default)]
    median_seconds_to_complete: Option<i64>,
}

#[derive(Deserialize)]
struct DayCount {
    date: String,
    completed: u64,
}

#[tonic::async_trait]
impl pb::stats_service_server::StatsService for StatsApi {
    #[tracing::instrument(name = "GetStats", skip_all, fields(user))]
    async fn get_stats(
        &self,
        request: Request<pb::GetStatsRequest>,
    ) -> Result<Response<pb::Stats>, Status> {
        let user = auth::caller(&request)?;
        tracing::Span::current().record("user", user.as_str());
        let reply = self
            .peers
            .invoke(
                "analytics-service",
                "stats/get",
                json!({"user_id": user.as_str()}),
            )
            .await?;
        let report: Report = serde_json::from_value(reply).map_err(ApiError::internal)?;
        Ok(Response::new(pb::Stats {
            created: report.created,
            completed: report.completed,
            deleted: report.deleted,
            open: report.open,
            overdue: report.overdue,
            completion_rate: report.completion_rate,
            completions_per_day: report
                .completions_per_day
                .into_iter()
                .map(|d| pb::DayCount {
                    date: d.date,
                    completed: d.completed,
                })
                .collect(),
            median_seconds_to_complete: report.median_seconds_to_complete,
            assigned: report.assigned,
        }))
    }
}

//! The ports over the local sidecar, with the SDK's generated gRPC client: the Jobs API,
//! pub/sub and output bindings.

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use dapr::dapr::proto::common::v1::{
    JobFailurePolicy, JobFailurePolicyConstant, job_failure_policy,
};
use dapr::dapr::proto::runtime::v1::{
    DeleteJobRequest, InvokeBindingRequest, Job, PublishEventRequest, ScheduleJobRequest,
};
use taskmesh_shared::events::{CLOUDEVENTS_CONTENT_TYPE, ReminderEvent};
use taskmesh_shared::sidecar::DaprGrpc;
use tonic::Code;

use crate::ports::{JobScheduler, Outbound, PortError};

/// How the scheduler retries a job whose trigger failed (the state store was down, say):
/// every 5 s for 10 minutes, rather than Dapr's default of three tries a second apart.
const RETRY_INTERVAL_SECS: i64 = 5;
const RETRY_LIMIT: u32 = 120;

fn failed(what: &str, status: &tonic::Status) -> PortError {
    PortError(format!("{what}: {:?}: {}", status.code(), status.message()))
}

#[derive(Clone)]
pub struct DaprJobs {
    client: DaprGrpc,
}

impl DaprJobs {
    pub fn new(client: DaprGrpc) -> Self {
        Self { client }
    }
}

#[async_trait]
impl JobScheduler for DaprJobs {
    async fn schedule(&self, name: &str, at: DateTime<Utc>) -> Result<(), PortError> {
        let job = Job {
            name: name.to_owned(),
            due_time: Some(at.to_rfc3339_opts(SecondsFormat::Millis, true)),
            failure_policy: Some(JobFailurePolicy {
                policy: Some(job_failure_policy::Policy::Constant(
                    JobFailurePolicyConstant {
                        interval: Some(prost_types::Duration {
                            seconds: RETRY_INTERVAL_SECS,
                            nanos: 0,
                        }),
                        max_retries: Some(RETRY_LIMIT),
                    },
                )),
            }),
            ..Job::default()
        };
        self.client
            .clone()
            .schedule_job(ScheduleJobRequest {
                job: Some(job),
                overwrite: true,
            })
            .await
            .map(|_| ())
            .map_err(|status| failed(&format!("scheduling job {name}"), &status))
    }

    async fn cancel(&self, name: &str) -> Result<(), PortError> {
        match self
            .client
            .clone()
            .delete_job(DeleteJobRequest {
                name: name.to_owned(),
            })
            .await
        {
            Ok(_) => Ok(()),
            Err(status) if status.code() == Code::NotFound => Ok(()),
            Err(status) => Err(failed(&format!("deleting job {name}"), &status)),
        }
    }
}

#[derive(Clone)]
pub struct DaprOutbound {
    client: DaprGrpc,
    pubsub: String,
    topic: String,
    email_binding: Option<String>,
    webhook_binding: Option<String>,
}

impl DaprOutbound {
    pub fn new(
        client: DaprGrpc,
        pubsub: String,
        topic: String,
        email_binding: Option<String>,
        webhook_binding: Option<String>,
    ) -> Self {
        Self {
            client,
            pubsub,
            topic,
            email_binding,
            webhook_binding,
        }
    }

    async fn invoke(
        &self,
        binding: Option<&String>,
        operation: &str,
        data: Vec<u8>,
        metadata: HashMap<String, String>,
    ) -> Result<(), PortError> {
        let Some(name) = binding else {
            return Err(PortError(format!("no binding configured for {operation}")));
        };
        self.client
            .clone()
            .invoke_binding(InvokeBindingRequest {
                name: name.clone(),
                data,
                metadata,
                operation: operation.to_owned(),
            })
            .await
            .map(|_| ())
            .map_err(|status| failed(&format!("binding {name}"), &status))
    }
}

#[async_trait]
impl Outbound for DaprOutbound {
    async fn publish(&self, event: &ReminderEvent) -> Result<(), PortError> {
        let data = serde_json::to_vec(event).map_err(|err| PortError(err.to_string()))?;
        self.client
            .clone()
            .publish_event(PublishEventRequest {
                pubsub_name: self.pubsub.clone(),
                topic: self.topic.clone(),
                data,
                data_content_type: CLOUDEVENTS_CONTENT_TYPE.to_owned(),
                metadata: HashMap::from([(
                    "partitionKey".to_owned(),
                    event.data.task_id.to_string(),
                )]),
            })
            .await
            .map(|_| ())
            .map_err(|status| failed(&format!("publishing to {}", self.topic), &status))
    }

    async fn email(&self, to: &str, subject: &str, body: &str) -> Result<(), PortError> {
        let metadata = HashMap::from([
            ("emailTo".to_owned(), to.to_owned()),
            ("subject".to_owned(), subject.to_owned()),
        ]);
        self.invoke(
            self.email_binding.as_ref(),
            "create",
            body.as_bytes().to_vec(),
            metadata,
        )
        .await
    }

    async fn webhook(&self, path: &str, body: &[u8]) -> Result<(), PortError> {
        let metadata = HashMap::from([
            ("path".to_owned(), path.to_owned()),
            ("Content-Type".to_owned(), "application/json".to_owned()),
        ]);
        self.invoke(
            self.webhook_binding.as_ref(),
            "post",
            body.to_vec(),
            metadata,
        )
        .await
    }
}

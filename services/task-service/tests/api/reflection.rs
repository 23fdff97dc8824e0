//! Server reflection answers in both versions without a token: v1 (grpcurl) and v1alpha
//! (grpcio-reflection, the official Python client, speaks only that one).

use tokio_stream::StreamExt as _;
use tonic_reflection::pb::{v1, v1alpha};

use crate::helpers::*;

/// The services a reflection client must discover on the public port.
const SERVICES: [&str; 5] = [
    "grpc.health.v1.Health",
    "taskmesh.analytics.v1.StatsService",
    "taskmesh.notifications.v1.NotificationService",
    "taskmesh.notifications.v1.PreferenceService",
    "taskmesh.tasks.v1.TaskService",
];

#[tokio::test]
async fn both_reflection_versions_list_the_api_and_describe_it() {
    let app = spawn_app(Backend::Sqlite).await;

    let mut client = v1::server_reflection_client::ServerReflectionClient::new(app.channel().await);
    let requests = tokio_stream::iter([
        v1::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(
                String::new(),
            )),
        },
        v1::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(
                v1::server_reflection_request::MessageRequest::FileContainingSymbol(
                    "taskmesh.tasks.v1.TaskService".into(),
                ),
            ),
        },
    ]);
    let mut answers = client
        .server_reflection_info(requests)
        .await
        .unwrap()
        .into_inner();
    let listed = match answers.next().await.unwrap().unwrap().message_response {
        Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(list)) => list
            .service
            .into_iter()
            .map(|service| service.name)
            .collect::<Vec<_>>(),
        other => panic!("v1: not a service list: {other:?}"),
    };
    let files = match answers.next().await.unwrap().unwrap().message_response {
        Some(v1::server_reflection_response::MessageResponse::FileDescriptorResponse(files)) => {
            files.file_descriptor_proto
        }
        other => panic!("v1: no file descriptor: {other:?}"),
    };
    for service in SERVICES {
        assert!(
            listed.iter().any(|name| name == service),
            "v1 lists {listed:?}"
        );
    }
    assert!(!files.is_empty());

    let mut client =
        v1alpha::server_reflection_client::ServerReflectionClient::new(app.channel().await);
    let requests = tokio_stream::iter([
        v1alpha::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(
                v1alpha::server_reflection_request::MessageRequest::ListServices(String::new()),
            ),
        },
        v1alpha::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(
                v1alpha::server_reflection_request::MessageRequest::FileContainingSymbol(
                    "taskmesh.tasks.v1.TaskService".into(),
                ),
            ),
        },
    ]);
    let mut answers = client
        .server_reflection_info(requests)
        .await
        .unwrap()
        .into_inner();
    let listed = match answers.next().await.unwrap().unwrap().message_response {
        Some(v1alpha::server_reflection_response::MessageResponse::ListServicesResponse(list)) => {
            list.service
                .into_iter()
                .map(|service| service.name)
                .collect::<Vec<_>>()
        }
        other => panic!("v1alpha: not a service list: {other:?}"),
    };
    let alpha_files = match answers.next().await.unwrap().unwrap().message_response {
        Some(v1alpha::server_reflection_response::MessageResponse::FileDescriptorResponse(
            files,
        )) => files.file_descriptor_proto,
        other => panic!("v1alpha: no file descriptor: {other:?}"),
    };
    for service in SERVICES {
        assert!(
            listed.iter().any(|name| name == service),
            "v1alpha lists {listed:?}"
        );
    }
    assert_eq!(alpha_files, files, "both versions describe the same file");
    app.stop().await;
}

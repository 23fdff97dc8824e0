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

/// Through reflection version `$version` (a module of `tonic_reflection::pb`, whose types
/// are alike but distinct), lists the services on `$channel` and asks for the file that
/// declares TaskService; asserts that every one of `SERVICES` is listed, and yields the
/// file descriptors.
macro_rules! list_and_describe {
    ($version:ident, $channel:expr) => {{
        use $version::server_reflection_request::MessageRequest;
        use $version::server_reflection_response::MessageResponse;
        let version = stringify!($version);
        let mut client = $version::server_reflection_client::ServerReflectionClient::new($channel);
        let requests = tokio_stream::iter([
            $version::ServerReflectionRequest {
                host: String::new(),
                message_request: Some(MessageRequest::ListServices(String::new())),
            },
            $version::ServerReflectionRequest {
                host: String::new(),
                message_request: Some(MessageRequest::FileContainingSymbol(
                    "taskmesh.tasks.v1.TaskService".into(),
                )),
            },
        ]);
        let mut answers = client
            .server_reflection_info(requests)
            .await
            .unwrap()
            .into_inner();
        let listed = match answers.next().await.unwrap().unwrap().message_response {
            Some(MessageResponse::ListServicesResponse(list)) => list
                .service
                .into_iter()
                .map(|service| service.name)
                .collect::<Vec<_>>(),
            other => panic!("{version}: not a service list: {other:?}"),
        };
        let files = match answers.next().await.unwrap().unwrap().message_response {
            Some(MessageResponse::FileDescriptorResponse(files)) => files.file_descriptor_proto,
            other => panic!("{version}: no file descriptor: {other:?}"),
        };
        for service in SERVICES {
            assert!(
                listed.iter().any(|name| name == service),
                "{version} lists {listed:?}"
            );
        }
        files
    }};
}

#[tokio::test]
async fn both_reflection_versions_list_the_api_and_describe_it() {
    let app = spawn_app(Backend::Sqlite).await;

    let files = list_and_describe!(v1, app.channel().await);
    assert!(!files.is_empty());
    let alpha_files = list_and_describe!(v1alpha, app.channel().await);
    assert_eq!(alpha_files, files, "both versions describe the same file");
    app.stop().await;
}

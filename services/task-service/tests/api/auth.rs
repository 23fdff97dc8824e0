use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use taskmesh_proto::tasks::v1::*;
use tonic::Code;

use crate::helpers::*;
use crate::on_both_backends;

on_both_backends!(
    bad_tokens_are_unauthenticated,
    other_users_tasks_do_not_exist
);

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn sign(alg: Algorithm, secret: &str, claims: serde_json::Value) -> String {
    jsonwebtoken::encode(
        &Header::new(alg),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

async fn bad_tokens_are_unauthenticated(backend: Backend) {
    let app = spawn_app(backend).await;
    let valid_claims = serde_json::json!({"sub": "alice", "exp": now() + 600});
    let unsigned = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(valid_claims.to_string())
    );
    let cases: Vec<(&str, Option<String>)> = vec![
        ("no header", None),
        (
            "not bearer",
            Some(format!("Basic {}", TestApp::token("alice"))),
        ),
        ("garbage", Some("Bearer abc.def.ghi".into())),
        ("empty", Some("Bearer ".into())),
        (
            "wrong secret",
            Some(format!(
                "Bearer {}",
                sign(
                    Algorithm::HS256,
                    "another-secret-of-some-length",
                    valid_claims.clone()
                )
            )),
        ),
        (
            "expired",
            Some(format!(
                "Bearer {}",
                sign(
                    Algorithm::HS256,
                    SECRET,
                    serde_json::json!({"sub": "alice", "exp": now() - 3600})
                )
            )),
        ),
        (
            "no exp",
            Some(format!(
                "Bearer {}",
                sign(
                    Algorithm::HS256,
                    SECRET,
                    serde_json::json!({"sub": "alice"})
                )
            )),
        ),
        (
            "empty sub",
            Some(format!(
                "Bearer {}",
                sign(
                    Algorithm::HS256,
                    SECRET,
                    serde_json::json!({"sub": "", "exp": now() + 600})
                )
            )),
        ),
        (
            "HS512",
            Some(format!(
                "Bearer {}",
                sign(Algorithm::HS512, SECRET, valid_claims.clone())
            )),
        ),
        ("alg none", Some(format!("Bearer {unsigned}"))),
    ];
    for (name, header) in cases {
        let mut client = app.client_with_header(header.as_deref()).await;
        let err = client
            .list_tasks(ListTasksRequest::default())
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "{name}: {err:?}");
        let err = client.create_task(new_task("x")).await.unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "{name}: {err:?}");
    }
    // The control: the same claims, properly signed, pass.
    let mut ok = app
        .client_with_header(Some(&format!(
            "Bearer {}",
            sign(Algorithm::HS256, SECRET, valid_claims)
        )))
        .await;
    ok.list_tasks(ListTasksRequest::default()).await.unwrap();

    // Health and reflection need no token (probes and grpcurl).
    let mut health = tonic_health::pb::health_client::HealthClient::new(app.channel().await);
    let status = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "taskmesh.tasks.v1.TaskService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.status, 1, "SERVING");
    app.stop().await;
}

async fn other_users_tasks_do_not_exist(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut alice = app.client("alice").await;
    let mut bob = app.client("bob").await;
    let task = create(&mut alice, new_task("private")).await;
    let id = task.id.clone();

    let errors = [
        bob.get_task(GetTaskRequest { id: id.clone() })
            .await
            .unwrap_err(),
        bob.update_task(UpdateTaskRequest {
            id: id.clone(),
            title: Some("mine now".into()),
            ..Default::default()
        })
        .await
        .unwrap_err(),
        bob.complete_task(CompleteTaskRequest {
            id: id.clone(),
            expected_version: Some(1),
        })
        .await
        .unwrap_err(),
        bob.reopen_task(ReopenTaskRequest {
            id: id.clone(),
            expected_version: None,
        })
        .await
        .unwrap_err(),
        bob.delete_task(DeleteTaskRequest {
            id: id.clone(),
            expected_version: Some(1),
        })
        .await
        .unwrap_err(),
    ];
    let missing = bob
        .get_task(GetTaskRequest {
            id: uuid::Uuid::now_v7().to_string(),
        })
        .await
        .unwrap_err();
    for err in errors {
        assert_eq!(err.code(), Code::NotFound, "{err:?}");
        // Word for word what a task that does not exist gives, apart from the id.
        assert_eq!(
            err.message().replace(&id, "ID"),
            missing.message().replace(&missing.message()[5..41], "ID")
        );
    }
    let unchanged = alice
        .get_task(GetTaskRequest { id })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(unchanged, task);
    app.stop().await;
}

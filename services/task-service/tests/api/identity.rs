//! Tokens of an identity provider: RS256 and ES256 against a JWKS served by the test
//! (rotated mid-test), with the issuer and audience required.

use std::time::Duration;

use taskmesh_integration::jwks_server::JwksServer;
use taskmesh_proto::tasks::v1::ListTasksRequest;
use taskmesh_shared::auth::test_keys::{TestKey, jwks};
use taskmesh_shared::auth::{Claims, claims_for};
use tonic::Code;

use crate::helpers::*;
use crate::on_both_backends;

on_both_backends!(tokens_from_a_rotating_jwks);

const ISSUER: &str = "https://id.taskmesh.test";
const AUDIENCE: &str = "taskmesh-api";

fn claims(user: &str, iss: &str, aud: &str) -> Claims {
    let mut claims = claims_for(user, Duration::from_secs(600)).unwrap();
    claims.iss = Some(iss.to_owned());
    claims.aud = Some(aud.to_owned());
    claims
}

async fn status_with(app: &TestApp, token: &str) -> Code {
    let mut client = app
        .client_with_header(Some(&format!("Bearer {token}")))
        .await;
    match client.list_tasks(ListTasksRequest::default()).await {
        Ok(_) => Code::Ok,
        Err(status) => status.code(),
    }
}

async fn tokens_from_a_rotating_jwks(backend: Backend) {
    let old = TestKey::rs256("2026-old").unwrap();
    let new = TestKey::es256("2026-new").unwrap();
    let server = JwksServer::start(&jwks(&[&old])).unwrap();
    let url = server.url();
    let app = spawn_app_with(
        backend,
        &[
            ("TASKMESH_JWT_SECRET", ""),
            ("TASKMESH_JWT_JWKS_URL", &url),
            ("TASKMESH_JWT_ISSUER", ISSUER),
            ("TASKMESH_JWT_AUDIENCE", AUDIENCE),
        ],
    )
    .await;
    let old_token = old.sign(&claims("alice", ISSUER, AUDIENCE)).unwrap();
    assert_eq!(status_with(&app, &old_token).await, Code::Ok);

    // A token from a key the provider has not published yet is refused...
    let early = new.sign(&claims("alice", ISSUER, AUDIENCE)).unwrap();
    assert_eq!(status_with(&app, &early).await, Code::Unauthenticated);

    // ...and once it is published, the next such token makes task-service fetch the set
    // again (at most every 10 s), after which old and new tokens both work.
    server.set(&jwks(&[&old, &new]));
    tokio::time::sleep(Duration::from_secs(10)).await;
    let fetches = server.fetches();
    let new_token = new.sign(&claims("bob", ISSUER, AUDIENCE)).unwrap();
    assert_eq!(status_with(&app, &new_token).await, Code::Ok);
    assert_eq!(
        server.fetches(),
        fetches + 1,
        "one fetch for the new key id"
    );
    assert_eq!(status_with(&app, &old_token).await, Code::Ok);

    // Signed with a known key, but not for us.
    for (why, token) in [
        ("wrong aud", new.sign(&claims("bob", ISSUER, "another-api"))),
        (
            "wrong iss",
            new.sign(&claims("bob", "https://evil.test", AUDIENCE)),
        ),
        (
            "unknown kid",
            TestKey::es256("nobody-knows")
                .unwrap()
                .sign(&claims("bob", ISSUER, AUDIENCE)),
        ),
        (
            "HS256 with the old development secret",
            Ok(TestApp::token("bob")),
        ),
    ] {
        assert_eq!(
            status_with(&app, &token.unwrap()).await,
            Code::Unauthenticated,
            "{why}"
        );
    }
    // Unknown key ids do not make task-service hammer the provider.
    let stranger = TestKey::es256("stranger").unwrap();
    let stranger = stranger.sign(&claims("x", ISSUER, AUDIENCE)).unwrap();
    for _ in 0..20 {
        assert_eq!(status_with(&app, &stranger).await, Code::Unauthenticated);
    }
    assert!(
        server.fetches() <= fetches + 2,
        "{} fetches",
        server.fetches()
    );
}

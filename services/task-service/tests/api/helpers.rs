//! `spawn_app`: a task-service on port 0 with a fresh database, and authenticated clients.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use prost_types::Timestamp;
use task_service::{Application, Config};
use taskmesh_proto::tasks::v1::list_service_client::ListServiceClient;
use taskmesh_proto::tasks::v1::task_service_client::TaskServiceClient;
use taskmesh_proto::tasks::v1::{CreateTaskRequest, ListTasksRequest, Task};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};
use tonic_types::StatusExt;

pub const SECRET: &str = "api-test-secret-0123456789abcdef0123456789abcdef";

#[derive(Debug, Clone, Copy)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub struct TestApp {
    pub addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    pub database_url: String,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

pub type Client = TaskServiceClient<InterceptedService<Channel, Bearer>>;
pub type ListClient = ListServiceClient<InterceptedService<Channel, Bearer>>;

/// Adds `authorization` to every call (or whatever raw header value a test wants).
#[derive(Clone)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

pub async fn spawn_app(backend: Backend) -> TestApp {
    spawn_app_with(backend, &[]).await
}

/// `spawn_app` with more settings (a limit, other keys), which win over the defaults.
pub async fn spawn_app_with(backend: Backend, settings: &[(&str, &str)]) -> TestApp {
    let dir = tempfile::tempdir().expect("temp dir");
    let database_url = match backend {
        Backend::Sqlite => format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("tasks.db").display()
        ),
        Backend::Postgres => {
            let admin = taskmesh_integration::postgres::shared_admin_url().expect("PostgreSQL");
            taskmesh_integration::postgres::fresh_database(&admin)
                .await
                .expect("fresh database")
        }
    };
    let env = HashMap::from([
        ("APP_PORT".to_owned(), "0".to_owned()),
        ("DATABASE_URL".to_owned(), database_url.clone()),
        ("METRICS_PORT".to_owned(), "0".to_owned()),
        // No sidecar in these tests: events stay in the outbox, where the tests read them.
        ("DAPR_GRPC_PORT".to_owned(), "1".to_owned()),
        ("TASKMESH_JWT_SECRET".to_owned(), SECRET.to_owned()),
        // The tests call faster than a user would; `limits` tests the limit itself.
        (
            "TASKMESH_RATE_LIMIT_PER_SEC".to_owned(),
            "1000000".to_owned(),
        ),
        ("TASKMESH_RATE_LIMIT_BURST".to_owned(), "1000000".to_owned()),
    ]);
    let mut env = env;
    for (name, value) in settings {
        if value.is_empty() {
            env.remove(*name);
        } else {
            env.insert((*name).to_owned(), (*value).to_owned());
        }
    }
    let config = Config::from_env(&env).expect("config");
    let app = Application::build(config).await.expect("build app");
    let addr = app.local_addr();
    let metrics_addr = app.metrics_addr();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let server = tokio::spawn(async move {
        app.run_until_stopped(async {
            let _ = rx.await;
        })
        .await
        .expect("server");
    });
    TestApp {
        addr,
        metrics_addr,
        database_url,
        shutdown: Some(tx),
        server: Some(server),
        _dir: dir,
    }
}

impl TestApp {
    pub async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr))
            .expect("uri")
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
            .expect("connect")
    }

    pub fn token(user: &str) -> String {
        taskmesh_shared::auth::mint(SECRET.as_bytes(), user, Duration::from_secs(600))
            .expect("mint")
    }

    pub async fn client(&self, user: &str) -> Client {
        self.client_with_header(Some(&format!("Bearer {}", Self::token(user))))
            .await
    }

    pub async fn lists(&self, user: &str) -> ListClient {
        let value = format!("Bearer {}", Self::token(user))
            .parse()
            .expect("ascii");
        ListServiceClient::with_interceptor(self.channel().await, Bearer(Some(value)))
    }

    pub async fn client_with_header(&self, header: Option<&str>) -> Client {
        let value = header.map(|h| h.parse().expect("ascii header"));
        TaskServiceClient::with_interceptor(self.channel().await, Bearer(value))
    }

    /// The outbox rows, in commit order: (event type, task id, the CloudEvent JSON).
    pub async fn outbox(&self) -> Vec<(String, String, serde_json::Value)> {
        use sea_orm::{ConnectionTrait, Statement};
        let db = sea_orm::Database::connect(&self.database_url)
            .await
            .expect("connect to the test database");
        let rows = db
            .query_all_raw(Statement::from_string(
                db.get_database_backend(),
                "SELECT event_type, task_id, payload FROM outbox ORDER BY seq",
            ))
            .await
            .expect("read the outbox");
        let out = rows
            .iter()
            .map(|row| {
                let payload: String = row.try_get("", "payload").expect("payload");
                (
                    row.try_get("", "event_type").expect("event_type"),
                    row.try_get("", "task_id").expect("task_id"),
                    serde_json::from_str(&payload).expect("payload is JSON"),
                )
            })
            .collect();
        let _ = db.close().await;
        out
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            let _ = server.await;
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

pub fn ts(rfc3339: &str) -> Option<Timestamp> {
    let t = chrono::DateTime::parse_from_rfc3339(rfc3339).expect("rfc3339");
    Some(Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    })
}

pub fn new_task(title: &str) -> CreateTaskRequest {
    CreateTaskRequest {
        title: title.to_owned(),
        ..Default::default()
    }
}

pub async fn create(client: &mut Client, req: CreateTaskRequest) -> Task {
    client.create_task(req).await.expect("create").into_inner()
}

/// Every page of a query, in order.
pub async fn list_all(client: &mut Client, mut req: ListTasksRequest) -> Vec<Task> {
    let mut out = Vec::new();
    loop {
        let page = client
            .list_tasks(req.clone())
            .await
            .expect("list")
            .into_inner();
        out.extend(page.tasks);
        if page.next_page_token.is_empty() {
            return out;
        }
        req.page_token = page.next_page_token;
    }
}

pub fn titles(tasks: &[Task]) -> Vec<&str> {
    tasks.iter().map(|t| t.title.as_str()).collect()
}

/// Asserts INVALID_ARGUMENT with exactly these field violations.
pub fn assert_invalid(status: &Status, fields: &[&str]) {
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let details = status.get_error_details();
    let bad = details
        .bad_request()
        .expect("google.rpc.BadRequest details");
    let got: Vec<&str> = bad
        .field_violations
        .iter()
        .map(|v| v.field.as_str())
        .collect();
    assert_eq!(got, fields, "{status:?}");
}

/// One test function, run once on SQLite and once on PostgreSQL.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name($crate::helpers::Backend::Sqlite).await;
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    super::$name($crate::helpers::Backend::Postgres).await;
                }
            }
        )*
    };
}

//! `just up-cli` run for real: scripts/up-cli.sh starts Redis, the Dapr scheduler and an
//! SMTP sink, then the dapr CLI's multi-app run of dapr/dapr.yaml (the four services, each
//! with its daprd). A task made through task-service's public API reaches the subscribers:
//! analytics' statistics through the same API (task-service invokes analytics-service
//! through its sidecar) and notification-service's inbox through `dapr invoke`. A Ctrl-C
//! then stops everything: no process of the run is left and the ports are free again.
//!
//! The ports are dapr/dapr.yaml's fixed ones (those of `just up`): the script refuses to
//! start when one is taken (a developer's `just up`, say), and the test fails saying which.
#![allow(clippy::unwrap_used)]

use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::json;
use taskmesh_integration::apps::eventually;
use taskmesh_integration::client::task_client;
use taskmesh_integration::dapr_cli::{DaprCli, ListedApp, UpCli, processes};
use taskmesh_proto::analytics::v1::GetStatsRequest;
use taskmesh_proto::analytics::v1::stats_service_client::StatsServiceClient;
use taskmesh_proto::tasks::v1::*;
use taskmesh_shared::auth::DEV_SECRET;

const APPS: [&str; 4] = [
    "task-service",
    "notification-service",
    "recurring-service",
    "analytics-service",
];
/// task-service's public API in dapr/dapr.yaml, where the README's `taskctl` goes.
const TASK_SERVICE: &str = "http://127.0.0.1:50051";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_cli_runs_the_four_apps_end_to_end_and_a_ctrl_c_stops_them_all() {
    let cli = DaprCli::new().unwrap();
    let data = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let mut up = UpCli::start(data.path()).unwrap();

    // All four apps and their sidecars, as `dapr list` shows them, each app listening.
    let apps: Vec<ListedApp> = up
        .wait_for(Duration::from_secs(180), |up| {
            let listed = cli.list_run(up.cli_pid()?).ok()?;
            let all = APPS.iter().all(|id| {
                listed
                    .iter()
                    .any(|app| app.app_id == *id && app.app_pid > 0 && app.daprd_pid > 0)
            });
            (all && app_ports_open()).then_some(listed)
        })
        .unwrap();
    println!("four apps up in {:.1?}", started.elapsed());

    let mut alice = task_client(TASK_SERVICE, DEV_SECRET, "alice").unwrap();
    let due = chrono::Utc::now() + chrono::Duration::days(2);
    let task = alice
        .create_task(CreateTaskRequest {
            title: "Renew passport".into(),
            due_time: Some(prost_types::Timestamp {
                seconds: due.timestamp(),
                nanos: 0,
            }),
            ..CreateTaskRequest::default()
        })
        .await
        .unwrap()
        .into_inner();

    // analytics-service counted it: `taskctl stats`, through task-service and its sidecar.
    let token =
        taskmesh_shared::auth::mint(DEV_SECRET.as_bytes(), "alice", Duration::from_secs(600))
            .unwrap();
    let bearer: tonic::metadata::MetadataValue<_> = format!("Bearer {token}").parse().unwrap();
    let channel = tonic::transport::Channel::from_static(TASK_SERVICE).connect_lazy();
    let mut stats_client =
        StatsServiceClient::with_interceptor(channel, move |mut request: tonic::Request<()>| {
            request
                .metadata_mut()
                .insert("authorization", bearer.clone());
            Ok(request)
        });
    let stats = eventually(Duration::from_secs(60), async || {
        let stats = stats_client
            .get_stats(GetStatsRequest {})
            .await
            .ok()?
            .into_inner();
        (stats.created == 1).then_some(stats)
    })
    .await
    .unwrap_or_else(|| panic!("analytics never counted the task\n{}", logs(&apps)));
    assert_eq!((stats.created, stats.open, stats.completed), (1, 1, 0));

    // notification-service noted the due time: `dapr invoke`, as the README shows operators.
    let list = eventually(Duration::from_secs(60), async || {
        let list = cli
            .invoke(
                "notification-service",
                "notifications/list",
                &json!({"user_id": "alice"}),
            )
            .ok()?;
        (!list["notifications"].as_array()?.is_empty()).then_some(list)
    })
    .await
    .unwrap_or_else(|| panic!("no notification for alice\n{}", logs(&apps)));
    assert_eq!(list["notifications"][0]["kind"], "due_time_set", "{list}");
    assert_eq!(list["notifications"][0]["task_id"], task.id.as_str());
    assert_eq!(list["unread"], 1, "{list}");

    // Ctrl-C: the script passes it to the CLI, which stops every daprd and app; then the
    // script stops Redis, the scheduler and the SMTP sink.
    let stopping = Instant::now();
    let status = up.interrupt(Duration::from_secs(60)).unwrap();
    println!("stopped in {:.1?}", stopping.elapsed());
    assert!(status.success(), "{status}:\n{}", up.output());
    let ours: Vec<u32> = apps
        .iter()
        .flat_map(|app| [app.cli_pid, app.daprd_pid, app.app_pid])
        .collect();
    let left: Vec<_> = processes()
        .into_iter()
        .filter(|p| p.state != 'Z')
        .filter(|p| ours.contains(&p.pid) || ours.contains(&p.pgid) || p.pgid == up.group())
        .collect();
    assert!(left.is_empty(), "left running: {left:?}\n{}", up.output());
    let open: Vec<u16> = [
        50051, 50052, 50053, 50054, 3500, 3502, 3503, 3504, 6379, 50006, 1025,
    ]
    .into_iter()
    .filter(|port| TcpStream::connect(("127.0.0.1", *port)).is_ok())
    .collect();
    assert!(open.is_empty(), "still listening: {open:?}");

    // The CLI's log files of this run (in the repository's .dapr/logs), kept on failure.
    for app in &apps {
        let _ = std::fs::remove_file(&app.app_log);
        let _ = std::fs::remove_file(&app.daprd_log);
    }
    println!("whole run {:.1?}", started.elapsed());
}

fn app_ports_open() -> bool {
    [50051, 50052, 50053, 50054]
        .iter()
        .all(|port| TcpStream::connect(("127.0.0.1", *port)).is_ok())
}

/// The end of every app's and sidecar's log, for failure messages.
fn logs(apps: &[ListedApp]) -> String {
    apps.iter()
        .flat_map(|app| [&app.app_log, &app.daprd_log])
        .map(|path| {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            format!(
                "--- {}\n{}",
                path.display(),
                taskmesh_integration::apps::tail(&text)
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

//! `WatchTasks` across replicas: 100 watchers of 3 users on two task-service replicas
//! sharing one PostgreSQL database, changes made through both. Each watcher must get
//! exactly the changes of its lists (a shared one included), once each, in version order
//! per task, also across a reconnect with its resume token to the other replica; and
//! SIGTERM ends a replica's streams at once, with UNAVAILABLE.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use taskmesh_integration::postgres::{fresh_database, shared_admin_url};
use taskmesh_integration::services::{ServiceProcess, unlimited};
use taskmesh_proto::tasks::v1::list_service_client::ListServiceClient;
use taskmesh_proto::tasks::v1::task_service_client::TaskServiceClient;
use taskmesh_proto::tasks::v1::{
    AddMemberRequest, CompleteTaskRequest, CreateListRequest, CreateTaskRequest, DeleteTaskRequest,
    ListListsRequest, Role, UpdateTaskRequest, WatchTasksRequest, WatchTasksResponse,
};
use tokio::sync::mpsc;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

const SECRET: &str = "watch-secret-0123456789abcdef0123456789abcdef";
const USERS: [&str; 3] = ["alice", "bob", "carol"];
const WATCHERS: usize = 100;

type Tasks = TaskServiceClient<InterceptedService<Channel, Bearer>>;
type Lists = ListServiceClient<InterceptedService<Channel, Bearer>>;

/// Adds the user's token to every call.
#[derive(Clone)]
struct Bearer(tonic::metadata::MetadataValue<tonic::metadata::Ascii>);

impl tonic::service::Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(request)
    }
}

fn bearer(user: &str) -> Bearer {
    let token =
        taskmesh_shared::auth::mint(SECRET.as_bytes(), user, Duration::from_secs(3600)).unwrap();
    Bearer(format!("Bearer {token}").parse().unwrap())
}

fn channel(replica: &ServiceProcess) -> Channel {
    Channel::from_shared(replica.endpoint())
        .unwrap()
        .connect_lazy()
}

fn tasks(channel: &Channel, user: &str) -> Tasks {
    TaskServiceClient::with_interceptor(channel.clone(), bearer(user))
}

fn lists(channel: &Channel, user: &str) -> Lists {
    ListServiceClient::with_interceptor(channel.clone(), bearer(user))
}

/// A change as a watcher or the test sees it: task id and version after the change.
type Seen = (String, i64);

/// What a watcher's task reports: each change, or how its stream ended.
enum Report {
    Change(Seen),
    Token(String),
    Ended(tonic::Status),
}

/// Watches as `user` on `channel` from `token`, reporting every message until the
/// stream ends.
fn watch(
    channel: Channel,
    user: &'static str,
    list: Option<String>,
    token: String,
    reports: mpsc::UnboundedSender<(usize, Report)>,
    index: usize,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut client = tasks(&channel, user);
        let response = client
            .watch_tasks(WatchTasksRequest {
                resume_token: token,
                list_id: list,
            })
            .await;
        let mut stream = match response {
            Ok(stream) => stream.into_inner(),
            Err(status) => {
                let _ = reports.send((index, Report::Ended(status)));
                return;
            }
        };
        loop {
            match stream.message().await {
                Ok(Some(WatchTasksResponse {
                    change,
                    resume_token,
                })) => {
                    if let Some(change) = change {
                        let task = change.task.unwrap();
                        let _ = reports.send((index, Report::Change((task.id, change.version))));
                    }
                    let _ = reports.send((index, Report::Token(resume_token)));
                }
                Ok(None) => {
                    let _ = reports.send((index, Report::Ended(tonic::Status::ok("ended"))));
                    return;
                }
                Err(status) => {
                    let _ = reports.send((index, Report::Ended(status)));
                    return;
                }
            }
        }
    })
}

struct Watcher {
    user: &'static str,
    list: Option<String>,
    replica: usize,
    seen: Vec<Seen>,
    token: String,
    ended: Option<tonic::Status>,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// The changes made, with the lists they touched: (task, version) -> lists.
#[derive(Default)]
struct Made(BTreeMap<Seen, Vec<String>>);

impl Made {
    fn note(&mut self, task: &taskmesh_proto::tasks::v1::Task, version: i64, left: Option<&str>) {
        let mut lists = vec![task.list_id.clone()];
        lists.extend(left.map(str::to_owned));
        self.0.insert((task.id.clone(), version), lists);
    }

    /// What a watcher of `visible` (only `only`, when given) must see.
    fn for_watcher(&self, visible: &HashSet<String>, only: Option<&String>) -> HashSet<Seen> {
        self.0
            .iter()
            .filter(|(_, lists)| {
                lists
                    .iter()
                    .any(|list| visible.contains(list) && only.is_none_or(|only| only == list))
            })
            .map(|(seen, _)| seen.clone())
            .collect()
    }
}

async fn default_list(lists: &mut Lists) -> String {
    let page = lists
        .list_lists(ListListsRequest::default())
        .await
        .unwrap()
        .into_inner();
    page.lists.iter().find(|l| l.default).unwrap().id.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_watcher_sees_exactly_its_changes_across_replicas_and_resumes() {
    let database = fresh_database(&shared_admin_url().unwrap()).await.unwrap();
    let env = || {
        let mut env = vec![
            ("DATABASE_URL".to_owned(), database.clone()),
            ("TASKMESH_JWT_SECRET".to_owned(), SECRET.to_owned()),
            // No sidecar: the events stay in the outbox, which is all watchers read.
            ("DAPR_GRPC_PORT".to_owned(), "1".to_owned()),
            ("TASKMESH_SHUTDOWN_GRACE_SECS".to_owned(), "20".to_owned()),
        ];
        env.extend(unlimited());
        env
    };
    let mut replicas = [
        ServiceProcess::start("task-service", env()).unwrap(),
        ServiceProcess::start("task-service", env()).unwrap(),
    ];
    let channels: Vec<Channel> = replicas.iter().map(channel).collect();

    // Lists: everyone's default list, and "Shared" of alice's with bob as an editor.
    let mut defaults = HashMap::new();
    for user in USERS {
        defaults.insert(user, default_list(&mut lists(&channels[0], user)).await);
    }
    let shared = lists(&channels[1], "alice")
        .create_list(CreateListRequest {
            name: "Shared".into(),
            request_id: None,
        })
        .await
        .unwrap()
        .into_inner()
        .id;
    lists(&channels[0], "alice")
        .add_member(AddMemberRequest {
            list_id: shared.clone(),
            user_id: "bob".into(),
            role: Role::Editor as i32,
        })
        .await
        .unwrap();
    let visible: HashMap<&str, HashSet<String>> = USERS
        .iter()
        .map(|user| {
            let mut lists: HashSet<String> = [defaults[user].clone()].into();
            if *user != "carol" {
                lists.insert(shared.clone());
            }
            (*user, lists)
        })
        .collect();

    // 100 watchers, alternately on each replica; every fourth of alice's and bob's
    // watches only the shared list.
    let (reports_tx, mut reports) = mpsc::unbounded_channel();
    let mut watchers: Vec<Watcher> = (0..WATCHERS)
        .map(|i| {
            let user = USERS[i % USERS.len()];
            let list = (user != "carol" && i % 4 == 0).then(|| shared.clone());
            Watcher {
                user,
                list,
                replica: i % 2,
                seen: Vec::new(),
                token: String::new(),
                ended: None,
                task: None,
            }
        })
        .collect();
    for (i, watcher) in watchers.iter_mut().enumerate() {
        watcher.task = Some(watch(
            channels[watcher.replica].clone(),
            watcher.user,
            watcher.list.clone(),
            String::new(),
            reports_tx.clone(),
            i,
        ));
    }
    // Every watcher's first message (a keep-alive) says it is registered.
    let drain = |reports: &mut mpsc::UnboundedReceiver<(usize, Report)>,
                 watchers: &mut Vec<Watcher>| {
        while let Ok((i, report)) = reports.try_recv() {
            match report {
                Report::Change(seen) => watchers[i].seen.push(seen),
                Report::Token(token) => watchers[i].token = token,
                Report::Ended(status) => watchers[i].ended = Some(status),
            }
        }
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        drain(&mut reports, &mut watchers);
        if watchers.iter().all(|w| !w.token.is_empty()) {
            break;
        }
        assert!(Instant::now() < deadline, "not every watcher started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for watcher in &watchers {
        assert!(watcher.ended.is_none(), "{:?}", watcher.ended);
    }

    let mut made = Made::default();
    let setting = Setting {
        channels: channels.clone(),
        defaults: defaults.clone(),
        shared: shared.clone(),
    };
    for r in 0..3 {
        setting.round(&mut made, r).await;
    }

    // Half the watchers hang up and come back with their last token, on the other
    // replica, while changes go on.
    let wait_for = |watchers: &Vec<Watcher>, made: &Made| {
        watchers.iter().all(|w| {
            let expected = made.for_watcher(&visible[w.user], w.list.as_ref());
            w.seen.len() >= expected.len()
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    drain(&mut reports, &mut watchers);
    for watcher in watchers.iter_mut().step_by(2) {
        watcher.task.take().unwrap().abort();
        watcher.replica = 1 - watcher.replica;
    }
    // Reports in flight from the aborted tasks are taken before resuming with the token.
    tokio::time::sleep(Duration::from_millis(100)).await;
    drain(&mut reports, &mut watchers);
    setting.round(&mut made, 3).await;
    for (i, watcher) in watchers.iter_mut().enumerate() {
        if watcher.task.is_none() {
            watcher.task = Some(watch(
                channels[watcher.replica].clone(),
                watcher.user,
                watcher.list.clone(),
                watcher.token.clone(),
                reports_tx.clone(),
                i,
            ));
        }
    }
    setting.round(&mut made, 4).await;
    // Concurrent writers through both replicas: PostgreSQL commits outbox rows out of
    // their seq order, which each watcher must still get, once each.
    setting.burst(&mut made, 240).await;

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        drain(&mut reports, &mut watchers);
        if wait_for(&watchers, &made) {
            break;
        }
        assert!(Instant::now() < deadline, "watchers are missing changes");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Anything extra (a duplicate, another user's change) would arrive by now.
    tokio::time::sleep(Duration::from_millis(500)).await;
    drain(&mut reports, &mut watchers);

    let mut total = 0;
    for (i, watcher) in watchers.iter().enumerate() {
        assert!(watcher.ended.is_none(), "watcher {i}: {:?}", watcher.ended);
        let expected = made.for_watcher(&visible[watcher.user], watcher.list.as_ref());
        assert!(!expected.is_empty());
        let got: HashSet<Seen> = watcher.seen.iter().cloned().collect();
        assert_eq!(got.len(), watcher.seen.len(), "watcher {i} got duplicates");
        assert_eq!(
            got, expected,
            "watcher {i} ({}, {:?})",
            watcher.user, watcher.list
        );
        // Per task, in version order.
        let mut last: HashMap<&str, i64> = HashMap::new();
        for (task, version) in &watcher.seen {
            let previous = last.insert(task, *version).unwrap_or(0);
            assert!(*version > previous, "watcher {i}: task {task} out of order");
        }
        total += got.len();
    }
    assert!(total > WATCHERS * 10, "{total} changes seen in all");

    // SIGTERM: replica 0's streams end with UNAVAILABLE at once, not at the drain
    // deadline (20 s).
    let on_first: Vec<usize> = (0..WATCHERS)
        .filter(|i| watchers[*i].replica == 0)
        .collect();
    let stopping = Instant::now();
    replicas[0].stop();
    let stopped_in = stopping.elapsed();
    assert!(
        stopped_in < Duration::from_secs(10),
        "stopping took {stopped_in:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        drain(&mut reports, &mut watchers);
        if on_first.iter().all(|i| watchers[*i].ended.is_some()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "streams on the stopped replica did not end"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for i in &on_first {
        let status = watchers[*i].ended.as_ref().unwrap();
        assert_eq!(
            status.code(),
            tonic::Code::Unavailable,
            "watcher {i}: {status:?}"
        );
    }
    for i in (0..WATCHERS).filter(|i| watchers[*i].replica == 1) {
        assert!(
            watchers[i].ended.is_none(),
            "watcher {i} on the other replica ended"
        );
    }
}

/// Where the changes go.
struct Setting {
    channels: Vec<Channel>,
    defaults: HashMap<&'static str, String>,
    shared: String,
}

impl Setting {
    /// `n` creates at once, 24 in flight, by every user through both replicas.
    async fn burst(&self, made: &mut Made, n: usize) {
        use futures::StreamExt;
        let created: Vec<taskmesh_proto::tasks::v1::Task> = futures::stream::iter(0..n)
            .map(|i| {
                let user = USERS[i % USERS.len()];
                let list = if user != "carol" && i % 2 == 0 {
                    self.shared.clone()
                } else {
                    self.defaults[user].clone()
                };
                let mut client = tasks(&self.channels[i % 2], user);
                async move {
                    client
                        .create_task(CreateTaskRequest {
                            title: format!("burst {i}"),
                            list_id: Some(list),
                            ..CreateTaskRequest::default()
                        })
                        .await
                        .unwrap()
                        .into_inner()
                }
            })
            .buffer_unordered(24)
            .collect()
            .await;
        for task in &created {
            made.note(task, 1, None);
        }
    }

    /// Each user creates four tasks and changes them through both replicas by turns: a
    /// completion, a move out of the shared list, a deletion.
    async fn round(&self, made: &mut Made, round: usize) {
        let channels = &self.channels;
        for (u, user) in USERS.iter().enumerate() {
            for i in 0..4 {
                let mut client = tasks(&channels[(u + i + round) % 2], user);
                let in_shared = *user != "carol" && i % 2 == 1;
                let list = if in_shared {
                    self.shared.clone()
                } else {
                    self.defaults[user].clone()
                };
                let task = client
                    .create_task(CreateTaskRequest {
                        title: format!("{user} {round}.{i}"),
                        list_id: Some(list),
                        ..CreateTaskRequest::default()
                    })
                    .await
                    .unwrap()
                    .into_inner();
                made.note(&task, 1, None);
                let task = tasks(&channels[(u + i + round + 1) % 2], user)
                    .update_task(UpdateTaskRequest {
                        id: task.id.clone(),
                        title: Some(format!("{user} {round}.{i}!")),
                        ..UpdateTaskRequest::default()
                    })
                    .await
                    .unwrap()
                    .into_inner();
                made.note(&task, 2, None);
                match i {
                    0 => {
                        let done = client
                            .complete_task(CompleteTaskRequest {
                                id: task.id.clone(),
                                expected_version: Some(2),
                            })
                            .await
                            .unwrap()
                            .into_inner();
                        made.note(&done, 3, None);
                    }
                    1 if in_shared => {
                        // Out of the shared list into the user's own: the other member's
                        // watchers see the task leave.
                        let moved = client
                            .update_task(UpdateTaskRequest {
                                id: task.id.clone(),
                                list_id: Some(self.defaults[user].clone()),
                                ..UpdateTaskRequest::default()
                            })
                            .await
                            .unwrap()
                            .into_inner();
                        made.note(&moved, 3, Some(&self.shared));
                    }
                    2 => {
                        client
                            .delete_task(DeleteTaskRequest {
                                id: task.id.clone(),
                                expected_version: Some(2),
                            })
                            .await
                            .unwrap();
                        made.note(&task, 3, None);
                    }
                    _ => {}
                }
            }
        }
    }
}

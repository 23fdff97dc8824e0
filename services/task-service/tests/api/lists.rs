//! Lists and members: who sees and changes which tasks.

use taskmesh_proto::tasks::v1::*;
use tonic::Code;

use crate::helpers::*;
use crate::on_both_backends;

on_both_backends!(
    a_shared_list_is_seen_by_its_members_only,
    roles_decide_who_writes,
    moves_need_rights_on_both_lists,
    assignees_are_members_and_leave_with_them,
    lists_are_renamed_archived_and_deleted,
    events_name_the_list_the_assignee_and_the_actor
);

async fn make_list(lists: &mut ListClient, name: &str) -> TaskList {
    lists
        .create_list(CreateListRequest {
            name: name.into(),
            request_id: None,
        })
        .await
        .expect("create list")
        .into_inner()
}

async fn share(lists: &mut ListClient, list: &TaskList, user: &str, role: Role) {
    lists
        .add_member(AddMemberRequest {
            list_id: list.id.clone(),
            user_id: user.into(),
            role: role as i32,
        })
        .await
        .expect("add member");
}

fn in_list(list: &TaskList, title: &str) -> CreateTaskRequest {
    CreateTaskRequest {
        title: title.into(),
        list_id: Some(list.id.clone()),
        ..Default::default()
    }
}

async fn a_shared_list_is_seen_by_its_members_only(backend: Backend) {
    let app = spawn_app(backend).await;
    let (mut alice, mut bob) = (app.client("alice").await, app.client("bob").await);
    let mut alice_lists = app.lists("alice").await;

    let private = create(&mut alice, new_task("Private")).await;
    let home = make_list(&mut alice_lists, "Home").await;
    let shared = create(&mut alice, in_list(&home, "Shared")).await;
    assert_eq!(shared.list_id, home.id);

    // Before sharing, bob is told exactly what a missing task would tell him.
    let missing = uuid::Uuid::now_v7().to_string();
    let not_found = |id: &str| GetTaskRequest { id: id.into() };
    let hidden = bob.get_task(not_found(&shared.id)).await.unwrap_err();
    let absent = bob.get_task(not_found(&missing)).await.unwrap_err();
    assert_eq!(hidden.code(), Code::NotFound);
    assert_eq!(
        hidden.message().replace(&shared.id, "ID"),
        absent.message().replace(&missing, "ID")
    );
    let list_hidden = bob
        .list_tasks(ListTasksRequest {
            list_id: Some(home.id.clone()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(list_hidden.code(), Code::NotFound);

    share(&mut alice_lists, &home, "bob", Role::Viewer).await;
    let seen = bob
        .get_task(not_found(&shared.id))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(seen.owner_id, "alice");
    assert_eq!(
        bob.get_task(not_found(&private.id))
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    // Bob's listing spans his own default list (empty) and the shared one.
    let bobs = list_all(&mut bob, ListTasksRequest::default()).await;
    assert_eq!(titles(&bobs), ["Shared"]);
    // Across her two lists, one page at a time and in either direction.
    let one_by_one = |descending| ListTasksRequest {
        page_size: 1,
        descending,
        ..Default::default()
    };
    let alices = list_all(&mut alice, one_by_one(false)).await;
    assert_eq!(titles(&alices), ["Private", "Shared"]);
    let alices = list_all(&mut alice, one_by_one(true)).await;
    assert_eq!(titles(&alices), ["Shared", "Private"]);
    let only_home = list_all(
        &mut alice,
        ListTasksRequest {
            list_id: Some(home.id.clone()),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(titles(&only_home), ["Shared"]);

    let mut bob_lists = app.lists("bob").await;
    let bob_sees = bob_lists
        .list_lists(ListListsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .lists;
    let names: Vec<(&str, bool, i32)> = bob_sees
        .iter()
        .map(|l| (l.name.as_str(), l.default, l.role))
        .collect();
    assert_eq!(
        names,
        [
            ("Tasks", true, Role::Owner as i32),
            ("Home", false, Role::Viewer as i32)
        ]
    );
    let members = alice_lists
        .list_members(ListMembersRequest {
            list_id: home.id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .members;
    let who: Vec<(&str, i32)> = members
        .iter()
        .map(|m| (m.user_id.as_str(), m.role))
        .collect();
    assert_eq!(
        who,
        [("alice", Role::Owner as i32), ("bob", Role::Viewer as i32)]
    );

    bob_lists
        .leave_list(LeaveListRequest {
            list_id: home.id.clone(),
        })
        .await
        .unwrap();
    assert_eq!(
        bob.get_task(not_found(&shared.id))
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    app.stop().await;
}

async fn roles_decide_who_writes(backend: Backend) {
    let app = spawn_app(backend).await;
    let (mut alice, mut bob) = (app.client("alice").await, app.client("bob").await);
    let mut alice_lists = app.lists("alice").await;
    let home = make_list(&mut alice_lists, "Home").await;
    let task = create(&mut alice, in_list(&home, "Water plants")).await;
    share(&mut alice_lists, &home, "bob", Role::Viewer).await;

    let complete = CompleteTaskRequest {
        id: task.id.clone(),
        expected_version: None,
    };
    let denied = bob.complete_task(complete.clone()).await.unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
    let denied = bob
        .create_task(in_list(&home, "By a viewer"))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
    // A viewer cannot manage members either.
    let mut bob_lists = app.lists("bob").await;
    let denied = bob_lists
        .add_member(AddMemberRequest {
            list_id: home.id.clone(),
            user_id: "carol".into(),
            role: Role::Editor as i32,
        })
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);

    alice_lists
        .update_member(UpdateMemberRequest {
            list_id: home.id.clone(),
            user_id: "bob".into(),
            role: Role::Editor as i32,
        })
        .await
        .unwrap();
    let done = bob.complete_task(complete).await.unwrap().into_inner();
    assert!(done.completed);
    let by_bob = create(&mut bob, in_list(&home, "By an editor")).await;
    assert_eq!(
        (by_bob.owner_id.as_str(), by_bob.list_id.as_str()),
        ("bob", home.id.as_str())
    );

    let twice = alice_lists
        .add_member(AddMemberRequest {
            list_id: home.id.clone(),
            user_id: "bob".into(),
            role: Role::Viewer as i32,
        })
        .await
        .unwrap_err();
    assert_eq!(twice.code(), Code::AlreadyExists);
    let owner = alice_lists
        .add_member(AddMemberRequest {
            list_id: home.id.clone(),
            user_id: "carol".into(),
            role: Role::Owner as i32,
        })
        .await
        .unwrap_err();
    assert_invalid(&owner, &["role"]);
    app.stop().await;
}

async fn moves_need_rights_on_both_lists(backend: Backend) {
    let app = spawn_app(backend).await;
    let (mut alice, mut bob) = (app.client("alice").await, app.client("bob").await);
    let mut alice_lists = app.lists("alice").await;
    let mut bob_lists = app.lists("bob").await;
    let work = make_list(&mut alice_lists, "Work").await;
    let task = create(&mut alice, new_task("Report")).await;
    let bobs = make_list(&mut bob_lists, "Bob's").await;

    let into = |list: &TaskList| UpdateTaskRequest {
        id: task.id.clone(),
        list_id: Some(list.id.clone()),
        ..Default::default()
    };
    // Alice cannot move her task into a list she does not see.
    let refused = alice.update_task(into(&bobs)).await.unwrap_err();
    assert_eq!(refused.code(), Code::NotFound);
    let moved = alice.update_task(into(&work)).await.unwrap().into_inner();
    assert_eq!(
        (moved.list_id.as_str(), moved.version),
        (work.id.as_str(), 2)
    );

    // An editor of both may move; a viewer of the target may not.
    share(&mut alice_lists, &work, "bob", Role::Editor).await;
    share(&mut bob_lists, &bobs, "alice", Role::Viewer).await;
    let refused = alice.update_task(into(&bobs)).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    let moved = bob.update_task(into(&bobs)).await.unwrap().into_inner();
    assert_eq!(moved.list_id, bobs.id);
    // Alice still sees it, through her viewer membership of bob's list.
    let seen = alice
        .get_task(GetTaskRequest {
            id: task.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(seen.list_id, bobs.id);
    app.stop().await;
}

async fn assignees_are_members_and_leave_with_them(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut alice = app.client("alice").await;
    let mut alice_lists = app.lists("alice").await;
    let home = make_list(&mut alice_lists, "Home").await;

    let stranger = alice
        .create_task(CreateTaskRequest {
            assignee_id: Some("bob".into()),
            ..in_list(&home, "Dishes")
        })
        .await
        .unwrap_err();
    assert_invalid(&stranger, &["assignee_id"]);

    share(&mut alice_lists, &home, "bob", Role::Editor).await;
    let dishes = create(
        &mut alice,
        CreateTaskRequest {
            assignee_id: Some("bob".into()),
            ..in_list(&home, "Dishes")
        },
    )
    .await;
    assert_eq!(dishes.assignee_id.as_deref(), Some("bob"));
    create(&mut alice, in_list(&home, "Laundry")).await;
    let mine = create(
        &mut alice,
        CreateTaskRequest {
            assignee_id: Some("alice".into()),
            ..in_list(&home, "Taxes")
        },
    )
    .await;

    let by = |assignee: &str| ListTasksRequest {
        assignee_id: Some(assignee.into()),
        ..Default::default()
    };
    assert_eq!(titles(&list_all(&mut alice, by("bob")).await), ["Dishes"]);
    assert_eq!(titles(&list_all(&mut alice, by("")).await), ["Laundry"]);
    assert_eq!(titles(&list_all(&mut alice, by("alice")).await), ["Taxes"]);

    // Unassigning, and reassigning to a non-member, through UpdateTask.
    let refused = alice
        .update_task(UpdateTaskRequest {
            id: mine.id.clone(),
            assignee_id: Some("carol".into()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_invalid(&refused, &["assignee_id"]);

    alice_lists
        .remove_member(RemoveMemberRequest {
            list_id: home.id.clone(),
            user_id: "bob".into(),
        })
        .await
        .unwrap();
    let dishes = alice
        .get_task(GetTaskRequest {
            id: dishes.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((dishes.assignee_id, dishes.version), (None, 2));
    let events = app.outbox().await;
    let (kind, task_id, last) = events.last().unwrap();
    assert_eq!(
        (kind.as_str(), task_id.as_str()),
        ("taskmesh.task.updated.v1", dishes.id.as_str())
    );
    assert_eq!(
        last["data"]["changed_fields"],
        serde_json::json!(["assignee_id"])
    );
    assert_eq!(last["data"]["previous_assignee_id"], "bob");
    assert_eq!(last["data"]["actor_id"], "alice");
    app.stop().await;
}

async fn lists_are_renamed_archived_and_deleted(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut alice = app.client("alice").await;
    let mut alice_lists = app.lists("alice").await;
    let trip = make_list(&mut alice_lists, "Trip").await;
    let open = create(&mut alice, in_list(&trip, "Book hotel")).await;
    let done = create(&mut alice, in_list(&trip, "Buy tickets")).await;
    alice
        .complete_task(CompleteTaskRequest {
            id: done.id.clone(),
            expected_version: None,
        })
        .await
        .unwrap();

    let renamed = alice_lists
        .rename_list(RenameListRequest {
            id: trip.id.clone(),
            name: "Trip to Lisbon".into(),
            expected_version: Some(1),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (renamed.name.as_str(), renamed.version),
        ("Trip to Lisbon", 2)
    );
    let stale = alice_lists
        .rename_list(RenameListRequest {
            id: trip.id.clone(),
            name: "Again".into(),
            expected_version: Some(1),
        })
        .await
        .unwrap_err();
    assert_eq!(stale.code(), Code::Aborted);

    alice_lists
        .archive_list(ArchiveListRequest {
            id: trip.id.clone(),
            expected_version: None,
        })
        .await
        .unwrap();
    // Archived: out of the cross-list listing, still there by id, and read-only.
    assert!(
        list_all(&mut alice, ListTasksRequest::default())
            .await
            .is_empty()
    );
    let by_id = ListTasksRequest {
        list_id: Some(trip.id.clone()),
        ..Default::default()
    };
    assert_eq!(list_all(&mut alice, by_id.clone()).await.len(), 2);
    let read_only = alice
        .complete_task(CompleteTaskRequest {
            id: open.id.clone(),
            expected_version: None,
        })
        .await
        .unwrap_err();
    assert_eq!(read_only.code(), Code::FailedPrecondition);
    alice_lists
        .unarchive_list(UnarchiveListRequest {
            id: trip.id.clone(),
            expected_version: None,
        })
        .await
        .unwrap();

    let delete = DeleteListRequest {
        id: trip.id.clone(),
        expected_version: None,
    };
    let refused = alice_lists.delete_list(delete.clone()).await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    alice
        .complete_task(CompleteTaskRequest {
            id: open.id.clone(),
            expected_version: None,
        })
        .await
        .unwrap();
    alice_lists.delete_list(delete).await.unwrap();
    let gone = alice.list_tasks(by_id).await.unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);
    let deleted: Vec<String> = app
        .outbox()
        .await
        .into_iter()
        .filter(|(kind, _, _)| kind == "taskmesh.task.deleted.v1")
        .map(|(_, task, _)| task)
        .collect();
    assert_eq!(deleted.len(), 2, "{deleted:?}");

    // The default list stays.
    let lists = alice_lists
        .list_lists(ListListsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .lists;
    assert_eq!(lists.len(), 1);
    let default = &lists[0];
    assert!(default.default);
    let refused = alice_lists
        .delete_list(DeleteListRequest {
            id: default.id.clone(),
            expected_version: None,
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    app.stop().await;
}

async fn events_name_the_list_the_assignee_and_the_actor(backend: Backend) {
    let app = spawn_app(backend).await;
    let (mut alice, mut bob) = (app.client("alice").await, app.client("bob").await);
    let mut alice_lists = app.lists("alice").await;
    let home = make_list(&mut alice_lists, "Home").await;
    share(&mut alice_lists, &home, "bob", Role::Editor).await;
    let task = create(
        &mut alice,
        CreateTaskRequest {
            assignee_id: Some("bob".into()),
            ..in_list(&home, "Mow the lawn")
        },
    )
    .await;
    bob.complete_task(CompleteTaskRequest {
        id: task.id.clone(),
        expected_version: None,
    })
    .await
    .unwrap();
    let events = app.outbox().await;
    let [(_, _, created), (_, _, completed)] = &events[..] else {
        panic!("two events expected: {events:?}");
    };
    assert_eq!(created["data"]["task"]["list_id"], home.id.as_str());
    assert_eq!(created["data"]["task"]["assignee_id"], "bob");
    assert_eq!(created["data"]["actor_id"], "alice");
    assert_eq!(completed["data"]["owner_id"], "alice");
    assert_eq!(completed["data"]["actor_id"], "bob");
    app.stop().await;
}

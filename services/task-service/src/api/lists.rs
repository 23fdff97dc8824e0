//! `taskmesh.tasks.v1.ListService`: lists and their members.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use taskmesh_proto::tasks::v1 as pb;
use taskmesh_shared::error::{ApiError, Violations};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use super::{auth, convert};
use crate::domain;
use crate::lists::{self, ListChange, ListView, Member, Role};
use crate::store::ListStore;

#[derive(Clone)]
pub struct ListApi {
    store: Arc<dyn ListStore>,
}

impl ListApi {
    pub fn new(store: Arc<dyn ListStore>) -> Self {
        Self { store }
    }

    /// AddMember (`replace` unset) and UpdateMember: (list id, user id, role).
    async fn put_member(
        &self,
        request: Request<(String, String, i32)>,
        replace: bool,
    ) -> Result<Response<pb::Member>, Status> {
        let user = caller(&request)?;
        let (list, member, role) = request.into_inner();
        let (list, member, role) = membership(&list, &member, Some(role))?;
        let member = self
            .store
            .put_member(user.as_str(), list, &member, role, replace, domain::now())
            .await?;
        Ok(Response::new(member_to_proto(member)))
    }

    async fn change(
        &self,
        request: Request<(String, Option<i64>)>,
        change: ListChange,
    ) -> Result<Response<pb::TaskList>, Status> {
        let user = caller(&request)?;
        let (id, expected) = request.into_inner();
        let mut v = Violations::new();
        let id = convert::uuid_field(&mut v, "id", &id);
        let expected = convert::expected_version(&mut v, expected);
        v.into_result()?;
        let id = id.ok_or_else(|| ApiError::internal("validated id is missing"))?;
        let list = self
            .store
            .change_list(user.as_str(), id, expected, change, domain::now())
            .await?;
        Ok(Response::new(list_to_proto(list)))
    }
}

fn caller<T>(request: &Request<T>) -> Result<taskmesh_shared::auth::UserId, ApiError> {
    let user = auth::caller(request)?;
    tracing::Span::current().record("user", user.as_str());
    Ok(user)
}

/// The one list id a request names, validated.
fn list_id(field: &str, raw: &str) -> Result<Uuid, ApiError> {
    convert::uuid(raw).map_err(|reason| ApiError::invalid(field, reason))
}

fn remap<T, U>(request: Request<T>, f: impl FnOnce(T) -> U) -> Request<U> {
    let (metadata, extensions, message) = request.into_parts();
    Request::from_parts(metadata, extensions, f(message))
}

fn name(raw: &str) -> Result<String, String> {
    let name = raw.trim();
    if name.is_empty() {
        Err("must not be empty".into())
    } else if name.chars().count() > lists::LIST_NAME_MAX_CHARS {
        Err(format!(
            "longer than {} characters",
            lists::LIST_NAME_MAX_CHARS
        ))
    } else if name.chars().any(char::is_control) {
        Err("must not contain control characters".into())
    } else {
        Ok(name.to_owned())
    }
}

/// A role a member may be given (the owner is the list's creator, and only they).
fn member_role(v: &mut Violations, raw: i32) -> Option<Role> {
    match pb::Role::try_from(raw) {
        Ok(pb::Role::Editor) => Some(Role::Editor),
        Ok(pb::Role::Viewer) => Some(Role::Viewer),
        Ok(pb::Role::Owner) => {
            v.add(
                "role",
                "a list has one owner, its creator; use ROLE_EDITOR or ROLE_VIEWER",
            );
            None
        }
        Ok(pb::Role::Unspecified) => {
            v.add("role", "must be ROLE_EDITOR or ROLE_VIEWER");
            None
        }
        Err(_) => {
            v.add("role", format!("{raw} is not a role"));
            None
        }
    }
}

/// A list id and a user id, both validated.
fn membership(list: &str, user: &str, role: Option<i32>) -> Result<(Uuid, String, Role), ApiError> {
    let mut v = Violations::new();
    let list = convert::uuid_field(&mut v, "list_id", list);
    let user = v.take("user_id", convert::user_id(user));
    let role = role.map_or(Some(Role::Viewer), |role| member_role(&mut v, role));
    v.into_result()?;
    match (list, user, role) {
        (Some(list), Some(user), Some(role)) => Ok((list, user, role)),
        _ => Err(ApiError::internal("validated membership is missing")),
    }
}

fn role_to_proto(role: Role) -> pb::Role {
    match role {
        Role::Owner => pb::Role::Owner,
        Role::Editor => pb::Role::Editor,
        Role::Viewer => pb::Role::Viewer,
    }
}

fn list_to_proto(view: ListView) -> pb::TaskList {
    let ListView {
        list,
        role,
        member_count,
    } = view;
    pb::TaskList {
        id: list.id.to_string(),
        name: list.name,
        owner_id: list.owner_id,
        default: list.is_default,
        archived: list.archived_at.is_some(),
        role: role_to_proto(role) as i32,
        member_count: i32::try_from(member_count).unwrap_or(i32::MAX),
        create_time: Some(convert::timestamp(list.created_at)),
        update_time: Some(convert::timestamp(list.updated_at)),
        version: list.version,
    }
}

fn member_to_proto(member: Member) -> pb::Member {
    pb::Member {
        list_id: member.list_id.to_string(),
        user_id: member.user_id,
        role: role_to_proto(member.role) as i32,
        add_time: Some(convert::timestamp(member.added_at)),
    }
}

#[tonic::async_trait]
impl pb::list_service_server::ListService for ListApi {
    #[tracing::instrument(name = "CreateList", skip_all, fields(user))]
    async fn create_list(
        &self,
        request: Request<pb::CreateListRequest>,
    ) -> Result<Response<pb::TaskList>, Status> {
        let user = caller(&request)?;
        let req = request.into_inner();
        let mut v = Violations::new();
        let name = v.take("name", name(&req.name));
        let request_id = req
            .request_id
            .map(|r| v.take("request_id", convert::request_id(&r)));
        v.into_result()?;
        let list = self
            .store
            .create_list(
                user.as_str(),
                name.unwrap_or_default(),
                request_id.flatten(),
                domain::now(),
            )
            .await?;
        Ok(Response::new(list_to_proto(list)))
    }

    #[tracing::instrument(name = "GetList", skip_all, fields(user))]
    async fn get_list(
        &self,
        request: Request<pb::GetListRequest>,
    ) -> Result<Response<pb::TaskList>, Status> {
        let user = caller(&request)?;
        let id = list_id("id", &request.get_ref().id)?;
        let list = self.store.get_list(user.as_str(), id).await?;
        Ok(Response::new(list_to_proto(list)))
    }

    #[tracing::instrument(name = "ListLists", skip_all, fields(user))]
    async fn list_lists(
        &self,
        request: Request<pb::ListListsRequest>,
    ) -> Result<Response<pb::ListListsResponse>, Status> {
        let user = caller(&request)?;
        let req = request.into_inner();
        let page_size = match req.page_size {
            0 => domain::PAGE_SIZE_DEFAULT,
            n if n > 0 && n.unsigned_abs() <= domain::PAGE_SIZE_MAX => n.unsigned_abs(),
            n => {
                return Err(ApiError::invalid(
                    "page_size",
                    format!("{n} is not between 1 and {}", domain::PAGE_SIZE_MAX),
                )
                .into());
            }
        };
        let after = if req.page_token.is_empty() {
            None
        } else {
            let bytes = URL_SAFE_NO_PAD
                .decode(&req.page_token)
                .ok()
                .and_then(|bytes| Uuid::from_slice(&bytes).ok())
                .ok_or_else(|| ApiError::invalid("page_token", "page token is malformed"))?;
            Some(bytes)
        };
        let mut lists = self
            .store
            .lists(user.as_str(), req.include_archived, page_size, after)
            .await?;
        let page_len = usize::try_from(page_size).unwrap_or(usize::MAX);
        let next_page_token = if lists.len() > page_len {
            lists.truncate(page_len);
            lists
                .last()
                .map(|last| URL_SAFE_NO_PAD.encode(last.list.id.as_bytes()))
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(pb::ListListsResponse {
            lists: lists.into_iter().map(list_to_proto).collect(),
            next_page_token,
        }))
    }

    #[tracing::instrument(name = "RenameList", skip_all, fields(user))]
    async fn rename_list(
        &self,
        request: Request<pb::RenameListRequest>,
    ) -> Result<Response<pb::TaskList>, Status> {
        let new_name =
            name(&request.get_ref().name).map_err(|reason| ApiError::invalid("name", reason))?;
        let request = remap(request, |r| (r.id, r.expected_version));
        self.change(request, ListChange::Rename(new_name)).await
    }

    #[tracing::instrument(name = "ArchiveList", skip_all, fields(user))]
    async fn archive_list(
        &self,
        request: Request<pb::ArchiveListRequest>,
    ) -> Result<Response<pb::TaskList>, Status> {
        let request = remap(request, |r| (r.id, r.expected_version));
        self.change(request, ListChange::Archive).await
    }

    #[tracing::instrument(name = "UnarchiveList", skip_all, fields(user))]
    async fn unarchive_list(
        &self,
        request: Request<pb::UnarchiveListRequest>,
    ) -> Result<Response<pb::TaskList>, Status> {
        let request = remap(request, |r| (r.id, r.expected_version));
        self.change(request, ListChange::Unarchive).await
    }

    #[tracing::instrument(name = "DeleteList", skip_all, fields(user))]
    async fn delete_list(
        &self,
        request: Request<pb::DeleteListRequest>,
    ) -> Result<Response<pb::DeleteListResponse>, Status> {
        let user = caller(&request)?;
        let req = request.into_inner();
        let mut v = Violations::new();
        let id = convert::uuid_field(&mut v, "id", &req.id);
        let expected = convert::expected_version(&mut v, req.expected_version);
        v.into_result()?;
        let id = id.ok_or_else(|| ApiError::internal("validated id is missing"))?;
        self.store
            .delete_list(user.as_str(), id, expected, domain::now())
            .await?;
        Ok(Response::new(pb::DeleteListResponse {}))
    }

    #[tracing::instrument(name = "ListMembers", skip_all, fields(user))]
    async fn list_members(
        &self,
        request: Request<pb::ListMembersRequest>,
    ) -> Result<Response<pb::ListMembersResponse>, Status> {
        let user = caller(&request)?;
        let list = list_id("list_id", &request.get_ref().list_id)?;
        let members = self.store.members(user.as_str(), list).await?;
        Ok(Response::new(pb::ListMembersResponse {
            members: members.into_iter().map(member_to_proto).collect(),
        }))
    }

    #[tracing::instrument(name = "AddMember", skip_all, fields(user))]
    async fn add_member(
        &self,
        request: Request<pb::AddMemberRequest>,
    ) -> Result<Response<pb::Member>, Status> {
        let request = remap(request, |r| (r.list_id, r.user_id, r.role));
        self.put_member(request, false).await
    }

    #[tracing::instrument(name = "UpdateMember", skip_all, fields(user))]
    async fn update_member(
        &self,
        request: Request<pb::UpdateMemberRequest>,
    ) -> Result<Response<pb::Member>, Status> {
        let request = remap(request, |r| (r.list_id, r.user_id, r.role));
        self.put_member(request, true).await
    }

    #[tracing::instrument(name = "RemoveMember", skip_all, fields(user))]
    async fn remove_member(
        &self,
        request: Request<pb::RemoveMemberRequest>,
    ) -> Result<Response<pb::RemoveMemberResponse>, Status> {
        let user = caller(&request)?;
        let req = request.into_inner();
        let (list, member, _) = membership(&req.list_id, &req.user_id, None)?;
        self.store
            .remove_member(user.as_str(), list, &member, domain::now())
            .await?;
        Ok(Response::new(pb::RemoveMemberResponse {}))
    }

    #[tracing::instrument(name = "LeaveList", skip_all, fields(user))]
    async fn leave_list(
        &self,
        request: Request<pb::LeaveListRequest>,
    ) -> Result<Response<pb::LeaveListResponse>, Status> {
        let user = caller(&request)?;
        let list = list_id("list_id", &request.get_ref().list_id)?;
        self.store
            .remove_member(user.as_str(), list, user.as_str(), domain::now())
            .await?;
        Ok(Response::new(pb::LeaveListResponse {}))
    }
}

//! The sea-orm adapter of `ListStore`.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveValue::{NotSet, Set},
    ColumnTrait, ConnectionTrait, DatabaseTransaction, EntityTrait, Order, PaginatorTrait,
    QueryFilter, QueryOrder, TransactionTrait,
};
use taskmesh_shared::error::ApiError;
use uuid::Uuid;

use super::ListStore;
use super::access;
use super::list_entity::{list, member};
use super::sea::{self, SeaTaskStore, db_error};
use crate::domain::{Change, ChangeKind, TaskPatch};
use crate::lists::{self, ListChange, ListView, Member, Role, TaskList};

/// Tasks a list operation touches in one transaction (deleting a list's completed tasks,
/// clearing a member's assignments): past it the call asks to be repeated.
const TASKS_PER_CALL: u64 = 1_000;

#[async_trait]
impl ListStore for SeaTaskStore {
    async fn create_list(
        &self,
        caller: &str,
        name: String,
        request_id: Option<String>,
        now: DateTime<Utc>,
    ) -> Result<ListView, ApiError> {
        let db = &self.db().writer;
        if let Some(request_id) = &request_id
            && let Some(existing) = list::Entity::find()
                .filter(list::Column::OwnerId.eq(caller))
                .filter(list::Column::RequestId.eq(request_id.as_str()))
                .one(db)
                .await
                .map_err(db_error)?
        {
            return view(db, to_list(existing)?, Role::Owner).await;
        }
        let owned = list::Entity::find()
            .filter(list::Column::OwnerId.eq(caller))
            .count(db)
            .await
            .map_err(db_error)?;
        if owned >= lists::OWNED_LISTS_MAX {
            return Err(ApiError::ResourceExhausted {
                message: format!(
                    "list quota reached: a user may own at most {} lists; delete some first",
                    lists::OWNED_LISTS_MAX
                ),
                retry_after: None,
            });
        }
        check_memberships(db, caller).await?;
        let created = TaskList {
            id: Uuid::now_v7(),
            name,
            owner_id: caller.to_owned(),
            is_default: false,
            archived_at: None,
            created_at: now,
            updated_at: now,
            version: 1,
        };
        let txn = db.begin().await.map_err(db_error)?;
        let inserted = list::Entity::insert(list::ActiveModel {
            request_id: Set(request_id.clone()),
            ..to_active(&created)
        })
        .exec_without_returning(&txn)
        .await;
        if let Err(err) = inserted {
            // A concurrent retry with the same request id made it: answer with its list.
            if request_id.is_some() && sea::is_unique_violation(&err) {
                drop(txn);
                return Box::pin(self.create_list(caller, created.name, request_id, now)).await;
            }
            return Err(db_error(err));
        }
        insert_member(&txn, created.id, caller, Role::Owner, now).await?;
        txn.commit().await.map_err(db_error)?;
        Ok(ListView {
            list: created,
            role: Role::Owner,
            member_count: 1,
        })
    }

    async fn get_list(&self, caller: &str, id: Uuid) -> Result<ListView, ApiError> {
        let db = &self.db().reader;
        let access = access::require(db, id, caller).await?;
        let list = find(db, id).await?;
        view(db, list, access.role).await
    }

    async fn lists(
        &self,
        caller: &str,
        include_archived: bool,
        page_size: u32,
        after: Option<Uuid>,
    ) -> Result<Vec<ListView>, ApiError> {
        let default = self.default_list(caller).await?;
        let db = &self.db().reader;
        let memberships = member::Entity::find()
            .filter(member::Column::UserId.eq(caller))
            .all(db)
            .await
            .map_err(db_error)?;
        let mut roles = std::collections::HashMap::new();
        for membership in memberships {
            let role = Role::from_i16(membership.role)
                .ok_or_else(|| ApiError::internal("corrupt role"))?;
            roles.insert(membership.list_id, role);
        }
        let mut select = list::Entity::find().filter(list::Column::Id.is_in(roles.keys().cloned()));
        if !include_archived {
            select = select.filter(list::Column::ArchivedAt.is_null());
        }
        let mut found: Vec<TaskList> = select
            .all(db)
            .await
            .map_err(db_error)?
            .into_iter()
            .map(to_list)
            .collect::<Result<_, _>>()?;
        // The default list first, then by id (ids are UUIDv7: creation order). A user is
        // a member of at most MEMBERSHIPS_MAX lists, so this sorts a bounded set.
        found.sort_by_key(|list| (list.id != default, list.id));
        let start = match after {
            Some(after) => found
                .iter()
                .position(|list| list.id == after)
                .map_or(found.len(), |at| at + 1),
            None => 0,
        };
        let page = found
            .into_iter()
            .skip(start)
            .take(usize::try_from(page_size).unwrap_or(usize::MAX) + 1);
        let mut views = Vec::new();
        for list in page {
            let role = roles
                .get(&list.id.to_string())
                .copied()
                .unwrap_or(Role::Viewer);
            views.push(view(db, list, role).await?);
        }
        Ok(views)
    }

    async fn change_list(
        &self,
        caller: &str,
        id: Uuid,
        expected_version: Option<i64>,
        change: ListChange,
        now: DateTime<Utc>,
    ) -> Result<ListView, ApiError> {
        let db = &self.db().writer;
        let access = access::require(db, id, caller).await?;
        let mut list = find(db, id).await?;
        check_version(id, expected_version, list.version)?;
        if !matches!(change, ListChange::Rename(_)) {
            access.check_owner(id)?;
        } else if !access.role.may_write_tasks() {
            return Err(ApiError::PermissionDenied(format!(
                "only the owner or an editor of list {id} may rename it"
            )));
        }
        let before = list.clone();
        match change {
            ListChange::Rename(name) => list.name = name,
            ListChange::Archive if list.is_default => {
                return Err(ApiError::FailedPrecondition(format!(
                    "list {id} is your default list, which cannot be archived"
                )));
            }
            ListChange::Archive => {
                list.archived_at = list.archived_at.or(Some(now));
            }
            ListChange::Unarchive => list.archived_at = None,
        }
        if list != before {
            list.version += 1;
            list.updated_at = now.max(list.updated_at);
            let updated = list::Entity::update_many()
                .set(to_active(&list))
                .filter(list::Column::Id.eq(id.to_string()))
                .filter(list::Column::Version.eq(before.version))
                .exec(db)
                .await
                .map_err(db_error)?;
            if updated.rows_affected == 0 {
                return Err(ApiError::Aborted(format!(
                    "list {id} was changed concurrently; read it again and retry"
                )));
            }
        }
        view(db, list, access.role).await
    }

    async fn delete_list(
        &self,
        caller: &str,
        id: Uuid,
        expected_version: Option<i64>,
        _now: DateTime<Utc>,
    ) -> Result<(), ApiError> {
        let txn = self.db().writer.begin().await.map_err(db_error)?;
        access::require(&txn, id, caller).await?.check_owner(id)?;
        let list = find(&txn, id).await?;
        check_version(id, expected_version, list.version)?;
        if list.is_default {
            return Err(ApiError::FailedPrecondition(format!(
                "list {id} is your default list, which cannot be deleted"
            )));
        }
        if !sea::tasks_in(&txn, id, sea::open_tasks(), 1)
            .await?
            .is_empty()
        {
            return Err(ApiError::FailedPrecondition(format!(
                "list {id} has open tasks; complete, move or delete them first"
            )));
        }
        let completed = sea::tasks_in(&txn, id, sea::completed_tasks(), TASKS_PER_CALL + 1).await?;
        if completed.len() as u64 > TASKS_PER_CALL {
            return Err(ApiError::FailedPrecondition(format!(
                "list {id} has more than {TASKS_PER_CALL} completed tasks; delete some of \
                 them first"
            )));
        }
        for task in &completed {
            self.delete_in(&txn, task, caller).await?;
        }
        member::Entity::delete_many()
            .filter(member::Column::ListId.eq(id.to_string()))
            .exec(&txn)
            .await
            .map_err(db_error)?;
        let deleted = list::Entity::delete_many()
            .filter(list::Column::Id.eq(id.to_string()))
            .filter(list::Column::Version.eq(list.version))
            .exec(&txn)
            .await
            .map_err(db_error)?;
        if deleted.rows_affected == 0 {
            return Err(ApiError::Aborted(format!(
                "list {id} was changed concurrently; read it again and retry"
            )));
        }
        self.commit(txn).await
    }

    async fn members(&self, caller: &str, list: Uuid) -> Result<Vec<Member>, ApiError> {
        let db = &self.db().reader;
        access::require(db, list, caller).await?;
        let mut members: Vec<Member> = member::Entity::find()
            .filter(member::Column::ListId.eq(list.to_string()))
            .order_by(member::Column::AddedAt, Order::Asc)
            .order_by(member::Column::UserId, Order::Asc)
            .all(db)
            .await
            .map_err(db_error)?
            .into_iter()
            .map(to_member)
            .collect::<Result<_, _>>()?;
        // The owner first, then by when they were added.
        members.sort_by_key(|member| member.role != Role::Owner);
        Ok(members)
    }

    async fn put_member(
        &self,
        caller: &str,
        list: Uuid,
        user: &str,
        role: Role,
        replace: bool,
        now: DateTime<Utc>,
    ) -> Result<Member, ApiError> {
        if role == Role::Owner {
            return Err(ApiError::invalid(
                "role",
                "a list has one owner; add members as editors or viewers",
            ));
        }
        let txn = self.db().writer.begin().await.map_err(db_error)?;
        access::require(&txn, list, caller)
            .await?
            .check_owner(list)?;
        let existing = member::Entity::find_by_id((list.to_string(), user.to_owned()))
            .one(&txn)
            .await
            .map_err(db_error)?;
        let member = match (existing, replace) {
            (Some(existing), true) => {
                let mut member = to_member(existing)?;
                if member.role == Role::Owner {
                    return Err(ApiError::FailedPrecondition(format!(
                        "{user} owns list {list}; the owner's role cannot change"
                    )));
                }
                member.role = role;
                member::Entity::update(member::ActiveModel {
                    list_id: Set(list.to_string()),
                    user_id: Set(user.to_owned()),
                    role: Set(role.as_i16()),
                    added_at: NotSet,
                })
                .exec(&txn)
                .await
                .map_err(db_error)?;
                member
            }
            (Some(_), false) => {
                return Err(ApiError::AlreadyExists(format!(
                    "{user} is already a member of list {list}; change their role instead"
                )));
            }
            (None, true) => {
                return Err(ApiError::NotFound(format!("member {user} of list {list}")));
            }
            (None, false) => {
                let count = member::Entity::find()
                    .filter(member::Column::ListId.eq(list.to_string()))
                    .count(&txn)
                    .await
                    .map_err(db_error)?;
                if count >= lists::MEMBERS_MAX {
                    return Err(ApiError::ResourceExhausted {
                        message: format!(
                            "list {list} has {} members, the most a list may have",
                            lists::MEMBERS_MAX
                        ),
                        retry_after: None,
                    });
                }
                check_memberships(&txn, user).await?;
                insert_member(&txn, list, user, role, now).await?
            }
        };
        txn.commit().await.map_err(db_error)?;
        Ok(member)
    }

    async fn remove_member(
        &self,
        caller: &str,
        list: Uuid,
        user: &str,
        now: DateTime<Utc>,
    ) -> Result<(), ApiError> {
        let txn = self.db().writer.begin().await.map_err(db_error)?;
        let access = access::require(&txn, list, caller).await?;
        let leaving = caller == user;
        if leaving && access.role == Role::Owner {
            return Err(ApiError::FailedPrecondition(format!(
                "you own list {list}; delete it instead of leaving it"
            )));
        }
        if !leaving {
            access.check_owner(list)?;
        }
        let removed = member::Entity::delete_many()
            .filter(member::Column::ListId.eq(list.to_string()))
            .filter(member::Column::UserId.eq(user))
            .filter(member::Column::Role.ne(Role::Owner.as_i16()))
            .exec(&txn)
            .await
            .map_err(db_error)?;
        if removed.rows_affected == 0 {
            let owner = access::access(&txn, list, user).await?.map(|a| a.role);
            return Err(match owner {
                Some(Role::Owner) => ApiError::FailedPrecondition(format!(
                    "{user} owns list {list}; the owner cannot be removed"
                )),
                _ => ApiError::NotFound(format!("member {user} of list {list}")),
            });
        }
        self.unassign(&txn, list, user, caller, now).await?;
        self.commit(txn).await
    }

    async fn visible_lists(&self, user: &str) -> Result<Vec<Uuid>, ApiError> {
        access::visible_lists(&self.db().reader, user, true).await
    }
}

impl SeaTaskStore {
    /// Clears `user`'s assignments in `list`, each an update with its event by `actor`.
    async fn unassign(
        &self,
        txn: &DatabaseTransaction,
        list: Uuid,
        user: &str,
        actor: &str,
        now: DateTime<Utc>,
    ) -> Result<(), ApiError> {
        let assigned = sea::tasks_in(txn, list, sea::assigned_to(user), TASKS_PER_CALL + 1).await?;
        if assigned.len() as u64 > TASKS_PER_CALL {
            return Err(ApiError::FailedPrecondition(format!(
                "{user} has more than {TASKS_PER_CALL} tasks assigned in list {list}; \
                 reassign some of them first"
            )));
        }
        for before in assigned {
            let mut after = before.clone();
            let patch = TaskPatch {
                assignee_id: Some(None),
                ..TaskPatch::default()
            };
            if after.apply(Change::Update(patch), now)? {
                self.write_change(txn, &before, &after, ChangeKind::Updated, actor)
                    .await?;
            }
        }
        Ok(())
    }
}

/// Refuses a membership past `MEMBERSHIPS_MAX` for `user`.
async fn check_memberships<C: ConnectionTrait>(db: &C, user: &str) -> Result<(), ApiError> {
    let count = member::Entity::find()
        .filter(member::Column::UserId.eq(user))
        .count(db)
        .await
        .map_err(db_error)?;
    if count >= lists::MEMBERSHIPS_MAX {
        return Err(ApiError::ResourceExhausted {
            message: format!(
                "{user} is a member of {} lists, the most one may be",
                lists::MEMBERSHIPS_MAX
            ),
            retry_after: None,
        });
    }
    Ok(())
}

async fn insert_member<C: ConnectionTrait>(
    db: &C,
    list: Uuid,
    user: &str,
    role: Role,
    now: DateTime<Utc>,
) -> Result<Member, ApiError> {
    let now = crate::store::sea::micros(now);
    member::Entity::insert(member::ActiveModel {
        list_id: Set(list.to_string()),
        user_id: Set(user.to_owned()),
        role: Set(role.as_i16()),
        added_at: Set(now),
    })
    .exec_without_returning(db)
    .await
    .map_err(db_error)?;
    Ok(Member {
        list_id: list,
        user_id: user.to_owned(),
        role,
        added_at: sea::time(now)?,
    })
}

async fn find<C: ConnectionTrait>(db: &C, id: Uuid) -> Result<TaskList, ApiError> {
    let row = list::Entity::find_by_id(id.to_string())
        .one(db)
        .await
        .map_err(db_error)?
        .ok_or_else(|| access::list_not_found(id))?;
    to_list(row)
}

async fn view<C: ConnectionTrait>(
    db: &C,
    list: TaskList,
    role: Role,
) -> Result<ListView, ApiError> {
    let member_count = member::Entity::find()
        .filter(member::Column::ListId.eq(list.id.to_string()))
        .count(db)
        .await
        .map_err(db_error)?;
    Ok(ListView {
        list,
        role,
        member_count,
    })
}

fn check_version(id: Uuid, expected: Option<i64>, actual: i64) -> Result<(), ApiError> {
    match expected {
        Some(expected) if expected != actual => Err(ApiError::Aborted(format!(
            "list {id} is at version {actual}, not {expected}; read it again and retry"
        ))),
        _ => Ok(()),
    }
}

fn to_active(list: &TaskList) -> list::ActiveModel {
    list::ActiveModel {
        id: Set(list.id.to_string()),
        owner_id: Set(list.owner_id.clone()),
        name: Set(list.name.clone()),
        is_default: Set(list.is_default),
        archived_at: Set(list.archived_at.map(sea::micros)),
        created_at: Set(sea::micros(list.created_at)),
        updated_at: Set(sea::micros(list.updated_at)),
        version: Set(list.version),
        request_id: NotSet,
    }
}

fn to_list(row: list::Model) -> Result<TaskList, ApiError> {
    Ok(TaskList {
        id: Uuid::parse_str(&row.id)
            .map_err(|_| ApiError::internal(format!("corrupt list id {}", row.id)))?,
        name: row.name,
        owner_id: row.owner_id,
        is_default: row.is_default,
        archived_at: row.archived_at.map(sea::time).transpose()?,
        created_at: sea::time(row.created_at)?,
        updated_at: sea::time(row.updated_at)?,
        version: row.version,
    })
}

fn to_member(row: member::Model) -> Result<Member, ApiError> {
    Ok(Member {
        list_id: Uuid::parse_str(&row.list_id)
            .map_err(|_| ApiError::internal(format!("corrupt list id {}", row.list_id)))?,
        role: Role::from_i16(row.role)
            .ok_or_else(|| ApiError::internal(format!("list {}: corrupt role", row.list_id)))?,
        added_at: sea::time(row.added_at)?,
        user_id: row.user_id,
    })
}

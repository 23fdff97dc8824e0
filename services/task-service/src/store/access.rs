//! Who may do what with a list's tasks: the membership checks every task and list call
//! starts with, and the default list every user gets on first use.

use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, JoinType, QueryFilter,
    QuerySelect, RelationDef,
};
use taskmesh_shared::error::ApiError;
use uuid::Uuid;

use super::list_entity::{list, member};
use super::sea::db_error;
use crate::lists::{self, Role};

/// The caller's standing in one list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Access {
    pub role: Role,
    pub archived: bool,
}

impl Access {
    /// Whether the caller may create, change and delete the list's tasks.
    pub fn check_write(self, list: Uuid) -> Result<(), ApiError> {
        if !self.role.may_write_tasks() {
            return Err(ApiError::PermissionDenied(format!(
                "you are a viewer of list {list}; ask its owner to make you an editor"
            )));
        }
        if self.archived {
            return Err(ApiError::FailedPrecondition(format!(
                "list {list} is archived; unarchive it first"
            )));
        }
        Ok(())
    }

    pub fn check_owner(self, list: Uuid) -> Result<(), ApiError> {
        if self.role == Role::Owner {
            Ok(())
        } else {
            Err(ApiError::PermissionDenied(format!(
                "only the owner of list {list} may do this"
            )))
        }
    }
}

/// A list the caller cannot see: the same words as a missing one.
pub fn list_not_found(list: Uuid) -> ApiError {
    ApiError::NotFound(format!("list {list}"))
}

/// The caller's role in `list` and whether it is archived; `None` when they are not a
/// member (or it does not exist).
pub async fn access<C: ConnectionTrait>(
    db: &C,
    list: Uuid,
    user: &str,
) -> Result<Option<Access>, ApiError> {
    // One read: the membership with its list's archive flag.
    let Some((role, archived_at)) = member::Entity::find_by_id((list.to_string(), user.to_owned()))
        .select_only()
        .column(member::Column::Role)
        .column(list::Column::ArchivedAt)
        .join(JoinType::InnerJoin, member_list())
        .into_tuple::<(i16, Option<i64>)>()
        .one(db)
        .await
        .map_err(db_error)?
    else {
        return Ok(None);
    };
    let archived = archived_at.is_some();
    let role = Role::from_i16(role)
        .ok_or_else(|| ApiError::internal(format!("list {list}: corrupt role")))?;
    Ok(Some(Access { role, archived }))
}

/// The caller's access to `list`, or NOT_FOUND.
pub async fn require<C: ConnectionTrait>(
    db: &C,
    list: Uuid,
    user: &str,
) -> Result<Access, ApiError> {
    access(db, list, user)
        .await?
        .ok_or_else(|| list_not_found(list))
}

pub async fn is_member<C: ConnectionTrait>(
    db: &C,
    list: Uuid,
    user: &str,
) -> Result<bool, ApiError> {
    Ok(
        member::Entity::find_by_id((list.to_string(), user.to_owned()))
            .one(db)
            .await
            .map_err(db_error)?
            .is_some(),
    )
}

/// Refuses an assignee who is not a member of `list`.
pub async fn check_assignee<C: ConnectionTrait>(
    db: &C,
    list: Uuid,
    assignee: Option<&str>,
) -> Result<(), ApiError> {
    match assignee {
        Some(user) if !is_member(db, list, user).await? => Err(ApiError::invalid(
            "assignee_id",
            format!("{user} is not a member of list {list}; share the list with them first"),
        )),
        _ => Ok(()),
    }
}

/// The lists `user` is a member of, archived ones only when `include_archived`.
pub async fn visible_lists<C: ConnectionTrait>(
    db: &C,
    user: &str,
    include_archived: bool,
) -> Result<Vec<Uuid>, ApiError> {
    let mut select = member::Entity::find()
        .select_only()
        .column(member::Column::ListId)
        .filter(member::Column::UserId.eq(user));
    if !include_archived {
        select = select
            .join(JoinType::InnerJoin, member_list())
            .filter(list::Column::ArchivedAt.is_null());
    }
    let ids: Vec<String> = select.into_tuple().all(db).await.map_err(db_error)?;
    ids.iter()
        .map(|id| {
            Uuid::parse_str(id).map_err(|_| ApiError::internal(format!("corrupt list id {id}")))
        })
        .collect()
}

/// A membership's list, for the reads that need both in one query.
fn member_list() -> RelationDef {
    member::Entity::belongs_to(list::Entity)
        .from(member::Column::ListId)
        .to(list::Column::Id)
        .into()
}

/// Makes `user`'s default list, with them as its owner, unless it exists.
pub async fn ensure_default_list<C: ConnectionTrait>(
    db: &C,
    user: &str,
    now: i64,
) -> Result<Uuid, ApiError> {
    let id = lists::default_list_id(user);
    list::Entity::insert(list::ActiveModel {
        id: Set(id.to_string()),
        owner_id: Set(user.to_owned()),
        name: Set(lists::DEFAULT_LIST_NAME.to_owned()),
        is_default: Set(true),
        archived_at: Set(None),
        created_at: Set(now),
        updated_at: Set(now),
        version: Set(1),
        request_id: Set(None),
    })
    .on_conflict_do_nothing_on([list::Column::Id])
    .exec(db)
    .await
    .map_err(db_error)?;
    member::Entity::insert(member::ActiveModel {
        list_id: Set(id.to_string()),
        user_id: Set(user.to_owned()),
        role: Set(Role::Owner.as_i16()),
        added_at: Set(now),
    })
    .on_conflict_do_nothing_on([member::Column::ListId, member::Column::UserId])
    .exec(db)
    .await
    .map_err(db_error)?;
    Ok(id)
}

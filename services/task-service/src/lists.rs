//! Lists of tasks and their members, as the service understands them.

use chrono::{DateTime, Utc};
use uuid::Uuid;

/// The name of every user's default list until they rename it.
pub const DEFAULT_LIST_NAME: &str = "Tasks";
pub const LIST_NAME_MAX_CHARS: usize = 100;
/// Members one list may have, its owner included.
pub const MEMBERS_MAX: u64 = 100;
/// Lists one user may own.
pub const OWNED_LISTS_MAX: u64 = 100;
/// Lists one user may be a member of: every ListTasks and watcher starts from them.
pub const MEMBERSHIPS_MAX: u64 = 500;

/// Derives default list ids from user ids, so that every replica (and the migration that
/// moved existing tasks into them) agrees on a user's default list without a lookup.
const DEFAULT_LIST_NAMESPACE: Uuid = Uuid::from_u128(0x7a5c_6e2e_5b1d_4f0a_9c37_0e9b_1f64_d2a1);

/// The id of `user`'s default list.
pub fn default_list_id(user: &str) -> Uuid {
    Uuid::new_v5(&DEFAULT_LIST_NAMESPACE, user.as_bytes())
}

/// What a member may do in a list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Manages the list and its members; one per list.
    Owner = 1,
    /// Creates, changes, completes and deletes the list's tasks.
    Editor = 2,
    /// Reads them.
    Viewer = 3,
}

impl Role {
    pub fn as_i16(self) -> i16 {
        self as i16
    }

    pub fn from_i16(value: i16) -> Option<Self> {
        Some(match value {
            1 => Self::Owner,
            2 => Self::Editor,
            3 => Self::Viewer,
            _ => return None,
        })
    }

    pub fn may_write_tasks(self) -> bool {
        matches!(self, Self::Owner | Self::Editor)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskList {
    pub id: Uuid,
    pub name: String,
    pub owner_id: String,
    pub is_default: bool,
    pub archived_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub version: i64,
}

/// A list as one member sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListView {
    pub list: TaskList,
    pub role: Role,
    pub member_count: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub list_id: Uuid,
    pub user_id: String,
    pub role: Role,
    pub added_at: DateTime<Utc>,
}

/// A change to a list itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListChange {
    Rename(String),
    Archive,
    Unarchive,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_lists_are_per_user_and_stable() {
        assert_eq!(default_list_id("alice"), default_list_id("alice"));
        assert_ne!(default_list_id("alice"), default_list_id("bob"));
        // Moving existing tasks depends on this value never changing.
        assert_eq!(
            default_list_id("alice").to_string(),
            Uuid::new_v5(&DEFAULT_LIST_NAMESPACE, b"alice").to_string()
        );
    }

    #[test]
    fn only_owners_and_editors_write() {
        assert!(Role::Owner.may_write_tasks());
        assert!(Role::Editor.may_write_tasks());
        assert!(!Role::Viewer.may_write_tasks());
        for role in [Role::Owner, Role::Editor, Role::Viewer] {
            assert_eq!(Role::from_i16(role.as_i16()), Some(role));
        }
    }
}

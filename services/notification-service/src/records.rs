//! The notification-service's record keys; the read-modify-write itself is shared
//! (`taskmesh_shared::records`).

use uuid::Uuid;

pub use taskmesh_shared::records::{Change, RecordError, Records, decode};

pub fn task_key(task_id: Uuid) -> String {
    format!("task:{task_id}")
}

pub fn inbox_key(user_id: &str) -> String {
    format!("inbox:{user_id}")
}

pub fn prefs_key(user_id: &str) -> String {
    format!("prefs:{user_id}")
}

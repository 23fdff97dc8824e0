//! One user's notifications: idempotent by id, newest first, bounded.

use std::collections::VecDeque;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The oldest notifications go once a user has this many.
pub const CAPACITY: usize = 500;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotificationKind {
    /// A task was created with a due time.
    DueTimeSet,
    /// A task's due time changed.
    DueTimeChanged,
    DueSoon,
    Overdue,
    /// A recurring task was completed; its next occurrence is on the way.
    RolledOver,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notification {
    /// The event (or reminder) id it came from: applying it twice adds it once.
    pub id: String,
    pub kind: NotificationKind,
    pub task_id: Uuid,
    pub title: String,
    pub message: String,
    pub created_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due_time: Option<DateTime<Utc>>,
    #[serde(default)]
    pub read: bool,
}

/// Stored oldest first, so that adding is a push.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inbox {
    items: VecDeque<Notification>,
}

/// A page of notifications, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Page<'a> {
    pub notifications: Vec<&'a Notification>,
    /// The id to pass as `page_token` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_page_token: Option<String>,
    pub unread: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("page_token does not name a notification of this user (it may have been pruned)")]
pub struct UnknownPageToken;

impl Inbox {
    /// Adds `notification` unless one with its id is there; `false` for a duplicate.
    pub fn add(&mut self, notification: Notification) -> bool {
        if self.items.iter().any(|n| n.id == notification.id) {
            return false;
        }
        self.items.push_back(notification);
        while self.items.len() > CAPACITY {
            self.items.pop_front();
        }
        true
    }

    pub fn unread(&self) -> usize {
        self.items.iter().filter(|n| !n.read).count()
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Up to `size` notifications older than the one named by `after`, newest first.
    pub fn page(
        &self,
        after: Option<&str>,
        size: usize,
        unread_only: bool,
    ) -> Result<Page<'_>, UnknownPageToken> {
        let newest_first = self.items.iter().rev();
        let mut rest: Box<dyn Iterator<Item = &Notification>> = match after {
            None => Box::new(newest_first),
            Some(token) => {
                if !self.items.iter().any(|n| n.id == token) {
                    return Err(UnknownPageToken);
                }
                Box::new(newest_first.skip_while(move |n| n.id != token).skip(1))
            }
        };
        let mut notifications = Vec::with_capacity(size);
        let mut more = false;
        for n in rest.by_ref().filter(|n| !unread_only || !n.read) {
            if notifications.len() == size {
                more = true;
                break;
            }
            notifications.push(n);
        }
        let next_page_token = more
            .then(|| notifications.last().map(|n| n.id.clone()))
            .flatten();
        Ok(Page {
            notifications,
            next_page_token,
            unread: self.unread(),
        })
    }

    /// Marks the named notifications (all of them for `None`) read; returns how many
    /// changed.
    /// Whether this inbox holds a notification with this id.
    pub fn contains(&self, id: &str) -> bool {
        self.items.iter().any(|n| n.id == id)
    }

    pub fn ack(&mut self, ids: Option<&[String]>) -> usize {
        let mut changed = 0;
        for n in self.items.iter_mut().filter(|n| !n.read) {
            if ids.is_none_or(|ids| ids.contains(&n.id)) {
                n.read = true;
                changed += 1;
            }
        }
        changed
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn note(i: usize) -> Notification {
        Notification {
            id: format!("n{i}"),
            kind: NotificationKind::DueSoon,
            task_id: Uuid::nil(),
            title: "t".into(),
            message: "m".into(),
            created_at: DateTime::from_timestamp(1_800_000_000 + i as i64, 0).unwrap(),
            due_time: None,
            read: false,
        }
    }

    fn ids(page: &Page<'_>) -> Vec<String> {
        page.notifications.iter().map(|n| n.id.clone()).collect()
    }

    #[test]
    fn adding_twice_keeps_one() {
        let mut inbox = Inbox::default();
        assert!(inbox.add(note(1)));
        assert!(!inbox.add(note(1)));
        assert_eq!(inbox.len(), 1);
    }

    #[test]
    fn pages_are_newest_first_without_gaps_or_repeats() {
        let mut inbox = Inbox::default();
        for i in 0..7 {
            inbox.add(note(i));
        }
        let first = inbox.page(None, 3, false).unwrap();
        assert_eq!(ids(&first), ["n6", "n5", "n4"]);
        let token = first.next_page_token.clone().unwrap();
        let second = inbox.page(Some(&token), 3, false).unwrap();
        assert_eq!(ids(&second), ["n3", "n2", "n1"]);
        let third = inbox
            .page(second.next_page_token.as_deref(), 3, false)
            .unwrap();
        assert_eq!(ids(&third), ["n0"]);
        assert_eq!(third.next_page_token, None);
        assert_eq!(inbox.page(Some("nope"), 3, false), Err(UnknownPageToken));
    }

    #[test]
    fn ack_marks_read_and_unread_only_hides_them() {
        let mut inbox = Inbox::default();
        for i in 0..4 {
            inbox.add(note(i));
        }
        assert_eq!(inbox.ack(Some(&["n1".into(), "n3".into(), "zz".into()])), 2);
        assert_eq!(inbox.ack(Some(&["n1".into()])), 0);
        let page = inbox.page(None, 10, true).unwrap();
        assert_eq!(ids(&page), ["n2", "n0"]);
        assert_eq!(page.unread, 2);
        assert_eq!(inbox.ack(None), 2);
        assert_eq!(inbox.unread(), 0);
    }

    #[test]
    fn the_oldest_go_beyond_capacity() {
        let mut inbox = Inbox::default();
        for i in 0..CAPACITY + 5 {
            inbox.add(note(i));
        }
        assert_eq!(inbox.len(), CAPACITY);
        let last = inbox.page(None, CAPACITY, false).unwrap();
        assert_eq!(last.notifications.last().unwrap().id, "n5");
    }
}

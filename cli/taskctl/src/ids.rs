//! Short ids: `taskctl done 0192f3a1` instead of the whole UUID.
//!
//! Task ids are UUIDv7: their first 12 hex digits are the creation time in milliseconds,
//! so tasks made within a minute of each other share their first 8 digits. A short id
//! therefore matches a task whose id starts *or ends* with it: the last 8 digits are
//! random and tell tasks apart in practice, the first ones suit ids read from a list.
//!
//! A short id is resolved by listing the user's tasks (open and completed, 500 a page, every
//! page: the only way to know a prefix is unique). That is one call per 500 tasks, fine
//! for a person at a terminal; a whole UUID skips the listing.
//!
//! Lists are named by people, so a list is also found by its name (`taskctl share
//! Groceries bob`): a name that matches wins over id digits that happen to match too.

use taskmesh_proto::tasks::v1 as pb;

use crate::exit::{Class, fail};
use crate::{Client, ListClient};

/// The most a ListTasks page holds (task-service's PAGE_SIZE_MAX).
const PAGE: i32 = 500;

/// Candidates named in an "ambiguous" error; more are counted, not listed.
const SHOWN: usize = 10;

fn is_full_id(raw: &str) -> bool {
    raw.len() == 36
        && raw.chars().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// The one task id `raw` is, starts or ends.
pub async fn resolve(client: &mut Client, raw: &str) -> anyhow::Result<String> {
    let raw = raw.trim();
    if is_full_id(raw) {
        return Ok(raw.to_ascii_lowercase());
    }
    if raw.is_empty() || !raw.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
        return Err(fail(
            Class::Usage,
            format!("{raw:?} is not a task id (a UUID, or its first or last hex digits)"),
        ));
    }
    let prefix = raw.to_ascii_lowercase();
    let mut req = pb::ListTasksRequest {
        status: pb::StatusFilter::All as i32,
        page_size: PAGE,
        ..Default::default()
    };
    let mut found = Vec::new();
    loop {
        let page = client.list_tasks(req.clone()).await?.into_inner();
        found.extend(
            page.tasks
                .into_iter()
                .filter(|t| {
                    let id = t.id.to_ascii_lowercase();
                    id.starts_with(&prefix) || id.ends_with(&prefix)
                })
                .map(|t| (t.id, t.title)),
        );
        if page.next_page_token.is_empty() {
            break;
        }
        req.page_token = page.next_page_token;
    }
    Ok(pick(raw, found, Noun::Task)?.0)
}

/// The one list `raw` names: its id, the start or end of its id, or its name (exactly, else
/// ignoring case). Archived lists count.
pub async fn resolve_list(client: &mut ListClient, raw: &str) -> anyhow::Result<String> {
    Ok(resolve_list_named(client, raw).await?.0)
}

/// [`resolve_list`], with the list's name when it was looked up (not for a whole id).
pub async fn resolve_list_named(
    client: &mut ListClient,
    raw: &str,
) -> anyhow::Result<(String, Option<String>)> {
    let raw = raw.trim();
    if is_full_id(raw) {
        return Ok((raw.to_ascii_lowercase(), None));
    }
    if raw.is_empty() {
        return Err(fail(Class::Usage, "a list is named by its id or its name"));
    }
    let lists = all_lists(client).await?;
    let named = |exact: bool| -> Vec<(String, String)> {
        lists
            .iter()
            .filter(|l| {
                if exact {
                    l.name == raw
                } else {
                    l.name.to_lowercase() == raw.to_lowercase()
                }
            })
            .map(|l| (l.id.clone(), l.name.clone()))
            .collect()
    };
    let mut found = named(true);
    if found.is_empty() {
        found = named(false);
    }
    let hex = raw.chars().all(|c| c.is_ascii_hexdigit() || c == '-');
    if found.is_empty() && hex {
        let digits = raw.to_ascii_lowercase();
        found = lists
            .iter()
            .filter(|l| l.id.starts_with(&digits) || l.id.ends_with(&digits))
            .map(|l| (l.id.clone(), l.name.clone()))
            .collect();
    }
    let (id, name) = pick(raw, found, Noun::List)?;
    Ok((id, Some(name)))
}

/// Every list the caller is a member of, archived ones included.
pub async fn all_lists(client: &mut ListClient) -> anyhow::Result<Vec<pb::TaskList>> {
    let mut req = pb::ListListsRequest {
        include_archived: true,
        page_size: PAGE,
        page_token: String::new(),
    };
    let mut lists = Vec::new();
    loop {
        let page = client.list_lists(req.clone()).await?.into_inner();
        lists.extend(page.lists);
        if page.next_page_token.is_empty() {
            return Ok(lists);
        }
        req.page_token = page.next_page_token;
    }
}

#[derive(Clone, Copy)]
enum Noun {
    Task,
    List,
}

/// The one (id, title or name) found for `raw`.
fn pick(
    raw: &str,
    mut found: Vec<(String, String)>,
    noun: Noun,
) -> anyhow::Result<(String, String)> {
    match found.len() {
        0 => Err(fail(
            Class::NotFound,
            match noun {
                Noun::Task => format!("NotFound: no task id starts or ends with {raw}"),
                Noun::List => format!(
                    "NotFound: no list of yours is named {raw:?} or has an id that starts or \
                     ends with it"
                ),
            },
        )),
        1 => Ok(found.remove(0)),
        n => {
            let mut message = match noun {
                Noun::Task => format!("{raw} is ambiguous: {n} task ids start or end with it:"),
                Noun::List => format!("{raw} is ambiguous: {n} lists match it:"),
            };
            for (id, title) in found.iter().take(SHOWN) {
                message.push_str(&format!("\n  {id}  {title}"));
            }
            if n > SHOWN {
                message.push_str(&format!("\n  ... and {} more", n - SHOWN));
            }
            Err(fail(Class::Usage, message))
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::exit::classify;

    #[test]
    fn full_ids_are_recognised() {
        assert!(is_full_id("3f2a9c1e-0b7d-4c1a-9e2f-0123456789ab"));
        assert!(!is_full_id("3f2a9c1e"));
        assert!(!is_full_id("3f2a9c1e-0b7d-4c1a-9e2f-0123456789ag"));
    }

    #[test]
    fn one_match_wins_none_is_not_found_many_are_named() {
        let t = |id: &str| (id.to_owned(), format!("title {id}"));
        let pick = |raw, found| pick(raw, found, Noun::Task).map(|(id, _)| id);
        assert_eq!(pick("ab", vec![t("abc")]).unwrap(), "abc");
        assert_eq!(classify(&pick("ab", vec![]).unwrap_err()), Class::NotFound);
        let err = pick("ab", vec![t("abc"), t("abd")]).unwrap_err();
        assert_eq!(classify(&err), Class::Usage);
        let text = err.to_string();
        assert!(
            text.contains("abc  title abc") && text.contains("abd"),
            "{text}"
        );
        let many: Vec<_> = (0..12).map(|i| t(&format!("ab{i:02}"))).collect();
        let text = pick("ab", many).unwrap_err().to_string();
        assert!(text.contains("and 2 more"), "{text}");
    }
}

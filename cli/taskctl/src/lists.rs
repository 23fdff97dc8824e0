//! Lists and the people who share them: `taskctl lists ...`, `share`, `unshare`, `leave`,
//! `members`. A list is named by its id, the first or last digits of its id, or its name.

use clap::{Args, Subcommand, ValueEnum};
use serde_json::{Value, json};
use taskmesh_proto::tasks::v1::{self as pb, list_service_client::ListServiceClient};

use crate::ids;
use crate::output::{self, View};
use crate::{Authed, ListClient};

/// `taskctl lists` alone lists your lists; with a subcommand it changes one.
#[derive(Args)]
#[command(
    args_conflicts_with_subcommands = true,
    subcommand_value_name = "ACTION",
    subcommand_help_heading = "Actions",
    after_help = "A LIST is a list's id, the first or last hex digits of its id, or its name."
)]
pub struct ListsArgs {
    /// Include archived lists.
    #[arg(long)]
    archived: bool,
    #[command(subcommand)]
    action: Option<ListsCmd>,
}

#[derive(Subcommand)]
pub enum ListsCmd {
    /// Create a list; you are its owner.
    Create {
        name: String,
        /// Idempotency key: retrying with the same key never creates a second list.
        #[arg(long)]
        request_id: Option<String>,
    },
    /// Show a list and its members.
    Show { list: String },
    /// Rename a list.
    Rename {
        list: String,
        name: String,
        /// Only apply if the list is still at this version.
        #[arg(long)]
        if_version: Option<i64>,
    },
    /// Archive a list: read-only, and its tasks left out of `taskctl list` (owner only).
    Archive { list: String },
    /// Make an archived list writable again (owner only).
    Unarchive { list: String },
    /// Delete a list and its completed tasks; refused while it has open tasks (owner only).
    Delete { list: String },
}

/// The role `share` gives.
#[derive(Clone, Copy, ValueEnum)]
pub enum RoleArg {
    /// Creates, changes, completes and deletes the list's tasks.
    Editor,
    /// Reads the list's tasks.
    Viewer,
}

impl From<RoleArg> for pb::Role {
    fn from(role: RoleArg) -> Self {
        match role {
            RoleArg::Editor => Self::Editor,
            RoleArg::Viewer => Self::Viewer,
        }
    }
}

fn role_name(role: pb::Role) -> &'static str {
    match role {
        pb::Role::Owner => "owner",
        pb::Role::Editor => "editor",
        pb::Role::Viewer => "viewer",
        pb::Role::Unspecified => "-",
    }
}

fn list_json(list: &pb::TaskList) -> Value {
    let rfc3339 = |ts| output::time(ts).map(|t| t.to_rfc3339());
    json!({
        "id": list.id,
        "name": list.name,
        "owner_id": list.owner_id,
        "default": list.default,
        "archived": list.archived,
        "role": role_name(list.role()),
        "member_count": list.member_count,
        "create_time": rfc3339(list.create_time.as_ref()),
        "update_time": rfc3339(list.update_time.as_ref()),
        "version": list.version,
    })
}

fn member_json(member: &pb::Member) -> Value {
    json!({
        "list_id": member.list_id,
        "user_id": member.user_id,
        "role": role_name(member.role()),
        "add_time": output::time(member.add_time.as_ref()).map(|t| t.to_rfc3339()),
    })
}

/// Left-aligned columns, two spaces apart, the header in bold.
fn table<const N: usize>(header: [&str; N], rows: &[[String; N]], color: bool) {
    let header = header.map(str::to_owned);
    let mut widths = [0; N];
    for row in std::iter::once(&header).chain(rows) {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |row: &[String; N], style: &str| {
        let cells: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, w)| output::paint(color, style, &format!("{cell:<w$}")))
            .collect();
        cells.join("  ").trim_end().to_owned()
    };
    println!("{}", line(&header, output::BOLD));
    for row in rows {
        println!("{}", line(row, ""));
    }
}

fn show_lists(lists: &[pb::TaskList], view: View) {
    if view.json {
        let lists: Vec<Value> = lists.iter().map(list_json).collect();
        println!("{}", json!({ "lists": lists }));
        return;
    }
    if lists.is_empty() {
        println!("no lists");
        return;
    }
    let rows: Vec<[String; 5]> = lists
        .iter()
        .map(|l| {
            let mut name = l.name.clone();
            if l.default {
                name.push_str(" (default)");
            }
            if l.archived {
                name.push_str(" (archived)");
            }
            [
                l.id.clone(),
                name,
                l.owner_id.clone(),
                role_name(l.role()).to_owned(),
                l.member_count.to_string(),
            ]
        })
        .collect();
    table(
        ["ID", "NAME", "OWNER", "YOUR ROLE", "MEMBERS"],
        &rows,
        view.color,
    );
}

fn show_list(list: &pb::TaskList, members: &[pb::Member], view: View) {
    if view.json {
        let mut out = list_json(list);
        out["members"] = members.iter().map(member_json).collect();
        println!("{out}");
        return;
    }
    let when = |ts| output::time(ts).map_or_else(|| "-".to_owned(), |t| view.zone.show(t, true));
    println!("id:          {}", list.id);
    println!("name:        {}", list.name);
    println!("owner:       {}", list.owner_id);
    println!("your role:   {}", role_name(list.role()));
    if list.default {
        println!("default:     yes (your tasks go here unless you name a list)");
    }
    if list.archived {
        println!("archived:    yes (read-only)");
    }
    println!("created:     {}", when(list.create_time.as_ref()));
    println!("version:     {}", list.version);
    println!("members:");
    for m in members {
        println!("  {:<20}  {}", m.user_id, role_name(m.role()));
    }
}

fn show_members(members: &[pb::Member], view: View) {
    if view.json {
        let members: Vec<Value> = members.iter().map(member_json).collect();
        println!("{}", json!({ "members": members }));
        return;
    }
    let rows: Vec<[String; 3]> = members
        .iter()
        .map(|m| {
            [
                m.user_id.clone(),
                role_name(m.role()).to_owned(),
                output::time(m.add_time.as_ref())
                    .map_or_else(|| "-".to_owned(), |t| view.zone.show(t, false)),
            ]
        })
        .collect();
    let added = format!("ADDED ({})", view.zone.label());
    table(["USER", "ROLE", &added], &rows, view.color);
}

/// `list Groceries (<id>)`, or `list <id>` when the name was not looked up.
fn shown(id: &str, name: Option<&str>) -> String {
    match name {
        Some(name) => format!("list {name} ({id})"),
        None => format!("list {id}"),
    }
}

/// One line saying what was done, or the JSON object it was done to.
fn done(view: View, text: String, object: Value) {
    if view.json {
        println!("{object}");
    } else {
        println!("{text}");
    }
}

pub async fn lists(channel: Authed, args: ListsArgs, view: View) -> anyhow::Result<()> {
    let mut client = ListServiceClient::new(channel);
    let Some(action) = args.action else {
        let mut lists = ids::all_lists(&mut client).await?;
        lists.retain(|l| args.archived || !l.archived);
        show_lists(&lists, view);
        return Ok(());
    };
    match action {
        ListsCmd::Create { name, request_id } => {
            let list = client
                .create_list(pb::CreateListRequest { name, request_id })
                .await?
                .into_inner();
            done(
                view,
                format!("created list {} ({})", list.name, list.id),
                list_json(&list),
            );
        }
        ListsCmd::Show { list } => {
            let id = ids::resolve_list(&mut client, &list).await?;
            let list = client
                .get_list(pb::GetListRequest { id: id.clone() })
                .await?
                .into_inner();
            let members = client
                .list_members(pb::ListMembersRequest { list_id: id })
                .await?
                .into_inner()
                .members;
            show_list(&list, &members, view);
        }
        ListsCmd::Rename {
            list,
            name,
            if_version,
        } => {
            let id = ids::resolve_list(&mut client, &list).await?;
            let list = client
                .rename_list(pb::RenameListRequest {
                    id,
                    name,
                    expected_version: if_version,
                })
                .await?
                .into_inner();
            done(
                view,
                format!("renamed list {} to {}", list.id, list.name),
                list_json(&list),
            );
        }
        ListsCmd::Archive { list } => {
            let id = ids::resolve_list(&mut client, &list).await?;
            let list = client
                .archive_list(pb::ArchiveListRequest {
                    id,
                    expected_version: None,
                })
                .await?
                .into_inner();
            done(
                view,
                format!("archived list {} ({})", list.name, list.id),
                list_json(&list),
            );
        }
        ListsCmd::Unarchive { list } => {
            let id = ids::resolve_list(&mut client, &list).await?;
            let list = client
                .unarchive_list(pb::UnarchiveListRequest {
                    id,
                    expected_version: None,
                })
                .await?
                .into_inner();
            done(
                view,
                format!("unarchived list {} ({})", list.name, list.id),
                list_json(&list),
            );
        }
        ListsCmd::Delete { list } => {
            let id = ids::resolve_list(&mut client, &list).await?;
            client
                .delete_list(pb::DeleteListRequest {
                    id: id.clone(),
                    expected_version: None,
                })
                .await?;
            done(view, format!("deleted list {id}"), json!({ "deleted": id }));
        }
    }
    Ok(())
}

/// `share LIST USER`: adds USER, or changes their role when they are a member already.
pub async fn share(
    channel: Authed,
    list: &str,
    user: String,
    role: RoleArg,
    view: View,
) -> anyhow::Result<()> {
    let mut client = ListServiceClient::new(channel);
    let (list_id, name) = ids::resolve_list_named(&mut client, list).await?;
    let role = pb::Role::from(role) as i32;
    let added = client
        .add_member(pb::AddMemberRequest {
            list_id: list_id.clone(),
            user_id: user.clone(),
            role,
        })
        .await;
    let (member, verb) = match added {
        Ok(member) => (member.into_inner(), "added"),
        Err(status) if status.code() == tonic::Code::AlreadyExists => {
            let member = client
                .update_member(pb::UpdateMemberRequest {
                    list_id,
                    user_id: user,
                    role,
                })
                .await?
                .into_inner();
            (member, "changed")
        }
        Err(status) => return Err(status.into()),
    };
    let text = format!(
        "{verb} {}: {} of {}",
        member.user_id,
        role_name(member.role()),
        shown(&member.list_id, name.as_deref())
    );
    done(view, text, member_json(&member));
    Ok(())
}

pub async fn unshare(channel: Authed, list: &str, user: String, view: View) -> anyhow::Result<()> {
    let mut client = ListServiceClient::new(channel);
    let (list_id, name) = ids::resolve_list_named(&mut client, list).await?;
    client
        .remove_member(pb::RemoveMemberRequest {
            list_id: list_id.clone(),
            user_id: user.clone(),
        })
        .await?;
    done(
        view,
        format!("removed {user} from {}", shown(&list_id, name.as_deref())),
        json!({ "list_id": list_id, "removed": user }),
    );
    Ok(())
}

pub async fn leave(channel: Authed, list: &str, view: View) -> anyhow::Result<()> {
    let mut client = ListServiceClient::new(channel);
    let (list_id, name) = ids::resolve_list_named(&mut client, list).await?;
    client
        .leave_list(pb::LeaveListRequest {
            list_id: list_id.clone(),
        })
        .await?;
    done(
        view,
        format!("left {}", shown(&list_id, name.as_deref())),
        json!({ "left": list_id }),
    );
    Ok(())
}

pub async fn members(channel: Authed, list: &str, view: View) -> anyhow::Result<()> {
    let mut client = ListServiceClient::new(channel);
    let list_id = ids::resolve_list(&mut client, list).await?;
    let members = client
        .list_members(pb::ListMembersRequest { list_id })
        .await?
        .into_inner()
        .members;
    show_members(&members, view);
    Ok(())
}

/// The names of the caller's lists by id, for showing tasks; a list that cannot be read
/// shows as its id.
pub struct Names(std::collections::HashMap<String, String>);

impl Names {
    pub async fn load(client: &mut ListClient) -> anyhow::Result<Self> {
        let lists = ids::all_lists(client).await?;
        Ok(Self(lists.into_iter().map(|l| (l.id, l.name)).collect()))
    }

    pub fn none() -> Self {
        Self(Default::default())
    }

    pub fn get<'a>(&'a self, id: &'a str) -> &'a str {
        self.0.get(id).map_or(id, String::as_str)
    }

    pub fn knows(&self, id: &str) -> bool {
        self.0.contains_key(id)
    }

    pub fn insert(&mut self, id: String, name: String) {
        self.0.insert(id, name);
    }
}

//! taskctl: the command-line client of the Taskmesh task API.
#![forbid(unsafe_code)]

mod account;
mod exit;
mod ids;
mod lists;
mod output;
mod token;
mod watch;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeZone, Utc};
use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};
use exit::{Class, fail};
use output::{View, Zone};
use prost_types::Timestamp;
use taskmesh_proto::tasks::v1::{
    self as pb, list_service_client::ListServiceClient, task_service_client::TaskServiceClient,
};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

#[derive(Parser)]
#[command(
    version,
    about = "Manage your Taskmesh tasks from the terminal",
    after_help = exit::HELP
)]
struct Cli {
    /// task-service address.
    #[arg(
        long,
        env = "TASKMESH_SERVER",
        default_value = "http://127.0.0.1:50051",
        global = true
    )]
    server: String,
    /// The CA certificate (PEM) that signed the server's, for an https:// server with a
    /// private CA; the system's public roots otherwise.
    #[arg(long, env = "TASKMESH_CA_CERT", global = true, value_name = "FILE")]
    ca_cert: Option<PathBuf>,
    /// The name to check the server's certificate against, when it is not the --server
    /// host.
    #[arg(
        long,
        env = "TASKMESH_TLS_SERVER_NAME",
        global = true,
        value_name = "NAME"
    )]
    tls_server_name: Option<String>,
    /// Bearer token; defaults to the one `taskctl login` saved.
    #[arg(long, env = "TASKMESH_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
    /// Print JSON instead of a table (times in UTC, RFC 3339).
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Mint a token for USER with the development secret (local use) and save it.
    Login {
        #[arg(long)]
        user: String,
        /// Sign with this secret instead of the public development secret.
        #[arg(long, env = "TASKMESH_JWT_SECRET", hide_env_values = true)]
        secret: Option<String>,
        /// Token lifetime in hours.
        #[arg(long, default_value_t = 24)]
        hours: u64,
        /// Print the token instead of saving it: a second user in one terminal, e.g.
        /// `export TASKMESH_TOKEN=$(taskctl login --user bob --print)`.
        #[arg(long)]
        print: bool,
    },
    /// Your notifications, newest first.
    #[command(alias = "inbox")]
    Notifications(account::NotificationsArgs),
    /// Mark notifications read.
    Ack(account::AckArgs),
    /// Your notification preferences (e-mail, webhook, lead time, quiet hours).
    #[command(subcommand)]
    Prefs(account::PrefsCmd),
    /// Your statistics.
    Stats,
    /// Create a task.
    #[command(after_help = LIST_HELP)]
    Add {
        title: String,
        #[command(flatten)]
        fields: Fields,
        /// The list to add it to (you must be its owner or an editor); default: your
        /// default list.
        #[arg(short, long)]
        list: Option<String>,
        /// A member of the list who is to do it.
        #[arg(short, long, value_name = "USER")]
        assign: Option<String>,
        /// Idempotency key: retrying with the same key never creates a second task.
        #[arg(long)]
        request_id: Option<String>,
    },
    /// List the tasks of your lists (open ones by default).
    #[command(alias = "ls", after_help = LIST_HELP)]
    List(ListArgs),
    /// Show one task.
    Show {
        /// The task id, or its first or last hex digits (e.g. the last 8).
        id: String,
        #[command(flatten)]
        zone: ZoneArg,
    },
    /// Change some fields of a task.
    Edit {
        /// The task id, or its first or last hex digits (e.g. the last 8).
        id: String,
        #[arg(long)]
        title: Option<String>,
        #[command(flatten)]
        fields: Fields,
        /// Remove the due time.
        #[arg(long, conflicts_with = "due")]
        no_due: bool,
        /// Replace the tags (comma-separated; empty removes all).
        #[arg(long, value_name = "TAGS", conflicts_with = "tag")]
        set_tags: Option<String>,
        /// Only apply if the task is still at this version.
        #[arg(long)]
        if_version: Option<i64>,
    },
    /// Mark a task completed.
    Done {
        /// The task id, or its first or last hex digits (e.g. the last 8).
        id: String,
        #[command(flatten)]
        zone: ZoneArg,
    },
    /// Mark a completed task open again.
    Reopen {
        /// The task id, or its first or last hex digits (e.g. the last 8).
        id: String,
        #[command(flatten)]
        zone: ZoneArg,
    },
    /// Delete a task.
    Rm {
        /// The task id, or its first or last hex digits (e.g. the last 8).
        id: String,
    },
    /// Your lists (`--archived` too); `lists create|show|rename|archive|unarchive|delete`
    /// change one.
    Lists(lists::ListsArgs),
    /// Share a list with USER as an editor (or --role viewer), or change their role.
    #[command(after_help = LIST_HELP)]
    Share {
        list: String,
        user: String,
        #[arg(long, value_enum, default_value = "editor")]
        role: lists::RoleArg,
    },
    /// Take a list away from USER (owner only); their tasks there become unassigned.
    #[command(after_help = LIST_HELP)]
    Unshare { list: String, user: String },
    /// Leave a list that was shared with you.
    #[command(after_help = LIST_HELP)]
    Leave { list: String },
    /// The members of a list and their roles.
    #[command(after_help = LIST_HELP)]
    Members {
        list: String,
        #[command(flatten)]
        zone: ZoneArg,
    },
    /// Assign a task to USER (a member of its list), or unassign it with --none.
    Assign {
        /// The task id, or its first or last hex digits (e.g. the last 8).
        id: String,
        #[arg(required_unless_present = "none")]
        user: Option<String>,
        /// Remove the assignee.
        #[arg(long, conflicts_with = "user")]
        none: bool,
        #[command(flatten)]
        zone: ZoneArg,
    },
    /// Move a task to another list (you must be an owner or editor of both).
    #[command(name = "move", after_help = LIST_HELP)]
    Move {
        /// The task id, or its first or last hex digits (e.g. the last 8).
        id: String,
        list: String,
        #[command(flatten)]
        zone: ZoneArg,
    },
    /// Search titles and descriptions, best match first.
    Search(SearchArgs),
    /// Print changes to the tasks of your lists as they happen, one line each, until Ctrl-C.
    Watch(watch::WatchArgs),
    /// Print a shell completion script, e.g. `taskctl completions bash`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff), e.g. `taskctl man > ~/.local/share/man/man1/taskctl.1`.
    Man,
}

/// How a list is named on the command line.
const LIST_HELP: &str =
    "A LIST is a list's id, the first or last hex digits of its id, or its name.";

/// The time zone times are shown in.
#[derive(Args)]
pub struct ZoneArg {
    /// Show times in this IANA time zone (e.g. Europe/Paris); default: `TZ`, else the
    /// system's.
    #[arg(long = "tz", value_name = "ZONE")]
    tz: Option<String>,
}

#[derive(Args)]
struct Fields {
    #[arg(short, long)]
    description: Option<String>,
    #[arg(short, long, value_enum)]
    priority: Option<PriorityArg>,
    /// A tag (repeatable).
    #[arg(short, long = "tag")]
    tag: Vec<String>,
    /// Due time: RFC 3339, or `YYYY-MM-DD [HH:MM]` in the `--tz` time zone (else UTC).
    #[arg(long)]
    due: Option<String>,
    /// IANA time zone of the task, e.g. Europe/Paris (times are also shown in it).
    #[arg(long)]
    tz: Option<String>,
    /// Recurrence rule (RFC 5545 RRULE), e.g. "FREQ=WEEKLY;BYDAY=MO" or
    /// "FREQ=MONTHLY;BYDAY=-1FR;EXDATE=20301227" (skips that date); empty removes it.
    #[arg(long)]
    every: Option<String>,
}

impl Fields {
    /// `--due`, read in the task's `--tz`.
    fn due_time(&self) -> anyhow::Result<Option<Timestamp>> {
        self.due
            .as_deref()
            .map(|due| parse_time(due, self.tz.as_deref()))
            .transpose()
    }
}

#[derive(Args)]
struct ListArgs {
    /// Text the title contains.
    #[arg(short, long)]
    search: Option<String>,
    #[arg(long, value_enum, default_value = "created")]
    order: OrderArg,
    #[command(flatten)]
    filters: Filters,
}

#[derive(Args)]
#[command(after_help = LIST_HELP)]
struct SearchArgs {
    /// Words that must all occur in the title or description; "a phrase" in quotes,
    /// -word to exclude one.
    text: String,
    /// Order by relevance (the default), or as `list` does.
    #[arg(long, value_enum, default_value = "relevance")]
    order: SearchOrderArg,
    #[command(flatten)]
    filters: Filters,
}

/// What `list` and `search` filter and page by.
#[derive(Args)]
struct Filters {
    /// Only this list's tasks (an archived list's too); default: every list you are a
    /// member of but archived ones.
    #[arg(short, long)]
    list: Option<String>,
    /// Only the tasks assigned to USER.
    #[arg(long, value_name = "USER")]
    assignee: Option<String>,
    /// Only the tasks assigned to nobody.
    #[arg(long, conflicts_with = "assignee")]
    unassigned: bool,
    #[arg(long, value_enum, default_value = "open")]
    status: StatusArg,
    #[arg(short, long, value_enum)]
    priority: Option<PriorityArg>,
    #[arg(short, long)]
    tag: Option<String>,
    /// Due before this time: RFC 3339, or `YYYY-MM-DD [HH:MM]` in the `--tz` zone (else
    /// `TZ`, else the system's), the zone times are shown in.
    #[arg(long)]
    due_before: Option<String>,
    /// Due after this time (read as --due-before is).
    #[arg(long)]
    due_after: Option<String>,
    /// Reverse the order.
    #[arg(long)]
    desc: bool,
    /// Page size.
    #[arg(long, default_value_t = 50)]
    limit: i32,
    /// Follow every page.
    #[arg(long)]
    all: bool,
    /// Start from this page token.
    #[arg(long)]
    page: Option<String>,
    #[command(flatten)]
    zone: ZoneArg,
}

#[derive(Clone, Copy, ValueEnum)]
enum PriorityArg {
    Low,
    Medium,
    High,
    Urgent,
}

#[derive(Clone, Copy, ValueEnum)]
enum StatusArg {
    Open,
    Completed,
    All,
}

#[derive(Clone, Copy, ValueEnum)]
enum OrderArg {
    Created,
    Due,
    Priority,
}

#[derive(Clone, Copy, ValueEnum)]
enum SearchOrderArg {
    Relevance,
    Created,
    Due,
    Priority,
}

impl From<PriorityArg> for pb::Priority {
    fn from(p: PriorityArg) -> Self {
        match p {
            PriorityArg::Low => Self::Low,
            PriorityArg::Medium => Self::Medium,
            PriorityArg::High => Self::High,
            PriorityArg::Urgent => Self::Urgent,
        }
    }
}

#[derive(Clone)]
struct Bearer(MetadataValue<Ascii>);

impl Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        req.metadata_mut().insert("authorization", self.0.clone());
        Ok(req)
    }
}

/// A channel that sends the caller's token with every call.
type Authed = InterceptedService<Channel, Bearer>;
type Client = TaskServiceClient<Authed>;
type ListClient = ListServiceClient<Authed>;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    quiet_on_closed_pipe();
    // clap exits 2 on a usage error and 0 on --help, as documented in exit::HELP.
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            let label = output::paint(output::color_for(std::io::stderr()), output::RED, "error:");
            match err.downcast_ref::<tonic::Status>() {
                Some(status) => eprintln!("{label} {}", output::describe_status(status)),
                None => eprintln!("{label} {err:#}"),
            }
            exit::classify(&err).into()
        }
    }
}

/// `taskctl list | head -1`: Rust ignores SIGPIPE, so `println!` panics once the reader
/// has gone. That is no error of ours: end quietly, as a C tool killed by SIGPIPE would.
/// (Only that panic: a closed socket is an error to report.)
fn quiet_on_closed_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if message.starts_with("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(0);
        }
        default(info);
    }));
}

fn view(json: bool, tz: Option<&str>) -> anyhow::Result<View> {
    Ok(View {
        json,
        zone: Zone::pick(tz)?,
        color: !json && output::color_for(std::io::stdout()),
    })
}

/// `taskctl man | head`: the reader has gone, nothing to report.
fn unless_reader_gone(written: std::io::Result<()>) -> anyhow::Result<()> {
    match written {
        Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

/// The manual page: clap_mangen's sections, with the exit codes as an EXIT STATUS table
/// rather than the --help text (which roff would reflow).
fn man_page(out: &mut dyn Write) -> std::io::Result<()> {
    let cmd = Cli::command().after_help(None::<&str>);
    let man = clap_mangen::Man::new(cmd);
    man.render_title(out)?;
    man.render_name_section(out)?;
    man.render_synopsis_section(out)?;
    man.render_description_section(out)?;
    man.render_options_section(out)?;
    man.render_subcommands_section(out)?;
    writeln!(out, ".SH \"EXIT STATUS\"\n.TS\nl l.")?;
    for line in exit::HELP.lines().skip(1) {
        if let Some((code, meaning)) = line.trim().split_once("  ") {
            writeln!(out, "{code}\t{}", meaning.replace('\\', "\\\\"))?;
        }
    }
    writeln!(out, ".TE")?;
    man.render_version_section(out)
}

/// An authenticated channel to task-service (TLS for an https:// server).
async fn connect(cli: &Cli) -> anyhow::Result<Authed> {
    let (endpoint, bearer) = endpoint(cli)?;
    let endpoint = endpoint
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30));
    let channel = endpoint
        .connect()
        .await
        .with_context(|| format!("cannot reach task-service at {}", cli.server))?;
    Ok(InterceptedService::new(channel, bearer))
}

/// Where task-service is and the token to show it; no timeouts set yet.
fn endpoint(cli: &Cli) -> anyhow::Result<(Endpoint, Bearer)> {
    let token = match &cli.token {
        Some(token) => token.clone(),
        None => {
            let path = token::path()?;
            token::load(&path)?
        }
    };
    let header: MetadataValue<Ascii> = format!("Bearer {token}")
        .parse()
        .map_err(|_| fail(Class::Auth, "the token is not valid ASCII"))?;
    let mut endpoint = Channel::from_shared(cli.server.clone()).map_err(|_| {
        fail(
            Class::Usage,
            format!("--server {} is not a URL", cli.server),
        )
    })?;
    if cli.server.starts_with("https://") {
        let mut tls = ClientTlsConfig::new();
        tls = match &cli.ca_cert {
            Some(path) => {
                let pem = std::fs::read(path)
                    .with_context(|| format!("cannot read --ca-cert {}", path.display()))?;
                tls.ca_certificate(Certificate::from_pem(pem))
            }
            None => tls.with_webpki_roots(),
        };
        if let Some(name) = &cli.tls_server_name {
            tls = tls.domain_name(name.clone());
        }
        endpoint = endpoint.tls_config(tls).context("TLS settings")?;
    } else if cli.ca_cert.is_some() {
        return Err(fail(Class::Usage, "--ca-cert needs an https:// --server"));
    }
    Ok((endpoint, Bearer(header)))
}

/// A time given on the command line. RFC 3339 says its own offset; a date or `YYYY-MM-DD
/// HH:MM` is wall-clock time in `tz` (the task's `--tz`, as a person reads it), else UTC.
/// Its errors are usage errors (exit code 2).
fn parse_time(raw: &str, tz: Option<&str>) -> anyhow::Result<Timestamp> {
    read_time(raw, |local| match tz.filter(|tz| !tz.is_empty()) {
        None => Ok(local.and_utc()),
        Some(name) => {
            let zone: chrono_tz::Tz = name
                .parse()
                .map_err(|_| anyhow::anyhow!("{name:?} is not an IANA time zone"))?;
            in_zone(raw, local, zone, Some(name))
        }
    })
}

/// A time read in the zone times are shown in (`list --due-before`), the system's
/// included.
fn parse_time_in(raw: &str, zone: Zone) -> anyhow::Result<Timestamp> {
    read_time(raw, |local| match zone {
        Zone::Named(tz) => in_zone(raw, local, tz, Some(tz.name())),
        Zone::Local => in_zone(raw, local, chrono::Local, None),
    })
}

/// `raw` as RFC 3339, else as a wall-clock time that `place` puts in its zone; its
/// errors are usage errors.
fn read_time(
    raw: &str,
    place: impl FnOnce(NaiveDateTime) -> anyhow::Result<DateTime<Utc>>,
) -> anyhow::Result<Timestamp> {
    let time = match DateTime::parse_from_rfc3339(raw) {
        Ok(t) => Ok(t.with_timezone(&Utc)),
        Err(_) => wall_clock(raw).and_then(place),
    }
    .map_err(|err| fail(Class::Usage, format!("{err:#}")))?;
    Ok(Timestamp {
        seconds: time.timestamp(),
        nanos: i32::try_from(time.timestamp_subsec_nanos()).unwrap_or(0),
    })
}

/// `YYYY-MM-DD HH:MM` or `YYYY-MM-DD` (midnight), in no zone yet.
fn wall_clock(raw: &str) -> anyhow::Result<NaiveDateTime> {
    NaiveDateTime::parse_from_str(raw, "%Y-%m-%d %H:%M")
        .ok()
        .or_else(|| {
            NaiveDate::parse_from_str(raw, "%Y-%m-%d")
                .ok()
                .and_then(|d| d.and_hms_opt(0, 0, 0))
        })
        .with_context(|| {
            format!("{raw:?} is not a time (use RFC 3339, YYYY-MM-DD or \"YYYY-MM-DD HH:MM\")")
        })
}

/// The wall-clock time `local` in `zone` (named `name`; none for the system's). A time in a
/// daylight-saving gap does not exist; in the overlap, the first of the two is meant.
fn in_zone<Z: TimeZone>(
    raw: &str,
    local: NaiveDateTime,
    zone: Z,
    name: Option<&str>,
) -> anyhow::Result<DateTime<Utc>> {
    local
        .and_local_timezone(zone)
        .earliest()
        .map(|t| t.with_timezone(&Utc))
        .with_context(|| match name {
            Some(name) => format!("{raw} does not exist in {name} (a clock change)"),
            None => format!("{raw} does not exist here (a clock change)"),
        })
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match &cli.command {
        Cmd::Login {
            user,
            secret,
            hours,
            print,
        } => {
            let secret = secret
                .clone()
                .unwrap_or_else(|| taskmesh_shared::auth::DEV_SECRET.to_owned());
            let token = taskmesh_shared::auth::mint(
                secret.as_bytes(),
                user,
                Duration::from_secs(hours.saturating_mul(3600)),
            )?;
            if *print {
                println!("{token}");
                return Ok(());
            }
            let path = token::path()?;
            token::save(&path, &token)?;
            println!(
                "logged in as {user} for {hours} h (token saved to {})",
                path.display()
            );
            return Ok(());
        }
        Cmd::Completions { shell } => {
            use clap_complete::Generator;
            // What clap_complete::generate does, without its panic on a write error.
            let mut cmd = Cli::command();
            cmd.set_bin_name("taskctl");
            cmd.build();
            let mut out = std::io::stdout().lock();
            let written = shell
                .try_generate(&cmd, &mut out)
                .and_then(|()| out.flush());
            return unless_reader_gone(written);
        }
        Cmd::Man => {
            let mut out = std::io::stdout().lock();
            let written = man_page(&mut out).and_then(|()| out.flush());
            return unless_reader_gone(written);
        }
        Cmd::Watch(args) => {
            let view = view(cli.json, args.tz.as_deref())?;
            let (endpoint, bearer) = endpoint(&cli)?;
            return watch::run(&cli.server, endpoint, bearer, args, view).await;
        }
        _ => {}
    }
    let channel = connect(&cli).await?;
    let json = cli.json;
    let mut client = TaskServiceClient::new(channel.clone());
    match cli.command {
        Cmd::Login { .. } | Cmd::Completions { .. } | Cmd::Man | Cmd::Watch(_) => Ok(()),
        Cmd::Lists(args) => lists::lists(channel, args, view(json, None)?).await,
        Cmd::Share { list, user, role } => {
            lists::share(channel, &list, user, role, view(json, None)?).await
        }
        Cmd::Unshare { list, user } => {
            lists::unshare(channel, &list, user, view(json, None)?).await
        }
        Cmd::Leave { list } => lists::leave(channel, &list, view(json, None)?).await,
        Cmd::Members { list, zone } => {
            lists::members(channel, &list, view(json, zone.tz.as_deref())?).await
        }
        Cmd::Assign {
            id,
            user,
            none: _,
            zone,
        } => {
            let view = view(json, zone.tz.as_deref())?;
            let id = ids::resolve(&mut client, &id).await?;
            // No user means --none (clap requires one or the other): an empty assignee
            // removes it.
            let req = pb::UpdateTaskRequest {
                id,
                assignee_id: Some(user.unwrap_or_default()),
                ..Default::default()
            };
            let task = client.update_task(req).await?.into_inner();
            show_task(&channel, &task, view).await
        }
        Cmd::Move { id, list, zone } => {
            let view = view(json, zone.tz.as_deref())?;
            let id = ids::resolve(&mut client, &id).await?;
            let list_id =
                ids::resolve_list(&mut ListServiceClient::new(channel.clone()), &list).await?;
            let req = pb::UpdateTaskRequest {
                id,
                list_id: Some(list_id),
                ..Default::default()
            };
            let task = client.update_task(req).await?.into_inner();
            show_task(&channel, &task, view).await
        }
        Cmd::Search(args) => {
            let view = view(json, args.filters.zone.tz.as_deref())?;
            let order = match args.order {
                SearchOrderArg::Relevance => pb::OrderBy::Relevance,
                SearchOrderArg::Created => pb::OrderBy::CreateTime,
                SearchOrderArg::Due => pb::OrderBy::DueTime,
                SearchOrderArg::Priority => pb::OrderBy::Priority,
            };
            let mut req = filtered(&channel, &args.filters, view).await?;
            req.query = Some(args.text);
            req.order_by = order as i32;
            list(&mut client, &channel, req, args.filters.all, view).await
        }
        Cmd::Notifications(args) => {
            let view = view(json, args.tz.as_deref())?;
            account::notifications(channel, args, view).await
        }
        Cmd::Ack(args) => account::ack(channel, args, json).await,
        Cmd::Prefs(command) => account::prefs(channel, command, json).await,
        Cmd::Stats => account::stats(channel, json).await,
        Cmd::Add {
            title,
            fields,
            list,
            assign,
            request_id,
        } => {
            let view = view(json, fields.tz.as_deref())?;
            let due_time = fields.due_time()?;
            let list_id = match list {
                Some(list) => Some(
                    ids::resolve_list(&mut ListServiceClient::new(channel.clone()), &list).await?,
                ),
                None => None,
            };
            let req = pb::CreateTaskRequest {
                title,
                description: fields.description.unwrap_or_default(),
                priority: fields.priority.map_or(0, |p| pb::Priority::from(p) as i32),
                tags: fields.tag,
                due_time,
                time_zone: fields.tz,
                recurrence: fields.every,
                request_id,
                list_id,
                assignee_id: assign,
            };
            let task = client.create_task(req).await?.into_inner();
            show_task(&channel, &task, view).await
        }
        Cmd::List(args) => {
            let view = view(json, args.filters.zone.tz.as_deref())?;
            let mut req = filtered(&channel, &args.filters, view).await?;
            req.title_contains = args.search;
            req.order_by = match args.order {
                OrderArg::Created => pb::OrderBy::CreateTime,
                OrderArg::Due => pb::OrderBy::DueTime,
                OrderArg::Priority => pb::OrderBy::Priority,
            } as i32;
            list(&mut client, &channel, req, args.filters.all, view).await
        }
        Cmd::Show { id, zone } => {
            let view = view(json, zone.tz.as_deref())?;
            let id = ids::resolve(&mut client, &id).await?;
            let task = client
                .get_task(pb::GetTaskRequest { id })
                .await?
                .into_inner();
            show_task(&channel, &task, view).await
        }
        Cmd::Edit {
            id,
            title,
            fields,
            no_due,
            set_tags,
            if_version,
        } => {
            let view = view(json, fields.tz.as_deref())?;
            let due_time = fields.due_time()?;
            let id = ids::resolve(&mut client, &id).await?;
            let tags = match (set_tags, fields.tag.is_empty()) {
                (Some(list), _) => Some(pb::TagList {
                    tags: list
                        .split(',')
                        .map(str::trim)
                        .filter(|t| !t.is_empty())
                        .map(str::to_owned)
                        .collect(),
                }),
                (None, false) => Some(pb::TagList { tags: fields.tag }),
                (None, true) => None,
            };
            let req = pb::UpdateTaskRequest {
                id,
                expected_version: if_version,
                title,
                description: fields.description,
                priority: fields.priority.map(|p| pb::Priority::from(p) as i32),
                tags,
                due_time,
                clear_due_time: no_due,
                time_zone: fields.tz,
                recurrence: fields.every,
                list_id: None,
                assignee_id: None,
            };
            let task = client.update_task(req).await?.into_inner();
            show_task(&channel, &task, view).await
        }
        Cmd::Done { id, zone } => {
            let view = view(json, zone.tz.as_deref())?;
            let id = ids::resolve(&mut client, &id).await?;
            let req = pb::CompleteTaskRequest {
                id,
                expected_version: None,
            };
            let task = client.complete_task(req).await?.into_inner();
            show_task(&channel, &task, view).await
        }
        Cmd::Reopen { id, zone } => {
            let view = view(json, zone.tz.as_deref())?;
            let id = ids::resolve(&mut client, &id).await?;
            let req = pb::ReopenTaskRequest {
                id,
                expected_version: None,
            };
            let task = client.reopen_task(req).await?.into_inner();
            show_task(&channel, &task, view).await
        }
        Cmd::Rm { id } => {
            let id = ids::resolve(&mut client, &id).await?;
            client
                .delete_task(pb::DeleteTaskRequest {
                    id: id.clone(),
                    expected_version: None,
                })
                .await?;
            if json {
                println!("{}", serde_json::json!({ "deleted": id }));
            } else {
                println!("deleted {id}");
            }
            Ok(())
        }
    }
}

/// The ListTasks request `filters` ask for (first page, created order, no text).
async fn filtered(
    channel: &Authed,
    filters: &Filters,
    view: View,
) -> anyhow::Result<pb::ListTasksRequest> {
    let list_id = match &filters.list {
        Some(list) => {
            Some(ids::resolve_list(&mut ListServiceClient::new(channel.clone()), list).await?)
        }
        None => None,
    };
    Ok(pb::ListTasksRequest {
        status: match filters.status {
            StatusArg::Open => pb::StatusFilter::Open,
            StatusArg::Completed => pb::StatusFilter::Completed,
            StatusArg::All => pb::StatusFilter::All,
        } as i32,
        priority: filters.priority.map_or(0, |p| pb::Priority::from(p) as i32),
        tag: filters.tag.clone(),
        due_before: filters
            .due_before
            .as_deref()
            .map(|t| parse_time_in(t, view.zone))
            .transpose()?,
        due_after: filters
            .due_after
            .as_deref()
            .map(|t| parse_time_in(t, view.zone))
            .transpose()?,
        descending: filters.desc,
        page_size: filters.limit,
        page_token: filters.page.clone().unwrap_or_default(),
        list_id,
        // An empty assignee asks for the unassigned tasks.
        assignee_id: if filters.unassigned {
            Some(String::new())
        } else {
            filters.assignee.clone()
        },
        ..Default::default()
    })
}

/// One page of `req` (every page with `all`), shown with the names of their lists.
async fn list(
    client: &mut Client,
    channel: &Authed,
    mut req: pb::ListTasksRequest,
    all: bool,
    view: View,
) -> anyhow::Result<()> {
    let mut tasks = Vec::new();
    let next = loop {
        let page = client.list_tasks(req.clone()).await?.into_inner();
        tasks.extend(page.tasks);
        if !all || page.next_page_token.is_empty() {
            break page.next_page_token;
        }
        req.page_token = page.next_page_token;
    };
    let names = if view.json || tasks.is_empty() {
        lists::Names::none()
    } else {
        lists::Names::load(&mut ListServiceClient::new(channel.clone())).await?
    };
    output::tasks(&tasks, &next, view, &names);
    Ok(())
}

/// One task; as text with its list's name (one more call), as JSON with its list's id.
async fn show_task(channel: &Authed, task: &pb::Task, view: View) -> anyhow::Result<()> {
    let mut names = lists::Names::none();
    if !view.json && !task.list_id.is_empty() {
        let list = ListServiceClient::new(channel.clone())
            .get_list(pb::GetListRequest {
                id: task.list_id.clone(),
            })
            .await?
            .into_inner();
        names.insert(list.id, list.name);
    }
    output::task(task, view, &names);
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn utc(raw: &str, tz: Option<&str>) -> String {
        let t = parse_time(raw, tz).unwrap();
        DateTime::from_timestamp(t.seconds, 0).unwrap().to_rfc3339()
    }

    #[test]
    fn wall_clock_times_are_read_in_the_tasks_time_zone() {
        assert_eq!(utc("2030-01-06 08:00", None), "2030-01-06T08:00:00+00:00");
        assert_eq!(
            utc("2030-01-06 08:00", Some("Europe/Paris")),
            "2030-01-06T07:00:00+00:00"
        );
        assert_eq!(
            utc("2030-07-01", Some("America/New_York")),
            "2030-07-01T04:00:00+00:00"
        );
        // RFC 3339 carries its own offset, whatever the zone.
        assert_eq!(
            utc("2030-01-06T08:00:00+01:00", Some("Asia/Tokyo")),
            "2030-01-06T07:00:00+00:00"
        );
    }

    #[test]
    fn clock_changes_and_bad_input_are_explained() {
        // 02:30 does not exist in Paris on the last Sunday of March 2030.
        let gap = parse_time("2030-03-31 02:30", Some("Europe/Paris")).unwrap_err();
        assert!(gap.to_string().contains("does not exist"), "{gap}");
        // In the October overlap the first 02:30 (summer time) is meant.
        assert_eq!(
            utc("2030-10-27 02:30", Some("Europe/Paris")),
            "2030-10-27T00:30:00+00:00"
        );
        assert!(parse_time("2030-01-06 08:00", Some("Mars/Olympus")).is_err());
        assert!(parse_time("next tuesday", None).is_err());
    }
}

//! Schema migrations, run at start and by `task-service migrate`.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::{
    big_integer, big_integer_null, boolean, integer, small_integer, string, string_null, text,
};

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261124_000001_create_tasks::Migration),
            Box::new(m20261124_000002_create_outbox::Migration),
            Box::new(m20261203_000003_create_outbox_parked::Migration),
            Box::new(m20261204_000004_lists::Migration),
            Box::new(super::migration_search::Migration),
            Box::new(super::migration_watch::Migration),
            Box::new(super::migration_filters::Migration),
        ]
    }
}

/// Runs SQL written out for the backend at hand, in order: what sea-query does not build
/// (triggers, full-text tables, partial and GIN indexes).
pub(super) async fn run_sql<S: AsRef<str>>(
    manager: &SchemaManager<'_>,
    statements: impl IntoIterator<Item = S>,
) -> Result<(), DbErr> {
    use sea_orm_migration::sea_orm::ConnectionTrait;
    let db = manager.get_connection();
    for statement in statements {
        db.execute_unprepared(statement.as_ref()).await?;
    }
    Ok(())
}

#[derive(DeriveIden)]
enum Tasks {
    Table,
    Id,
    OwnerId,
    Title,
    Description,
    Priority,
    Tags,
    DueAt,
    TimeZone,
    Recurrence,
    CompletedAt,
    CreatedAt,
    UpdatedAt,
    Version,
    RequestId,
    ListId,
    AssigneeId,
}

#[derive(DeriveIden)]
enum Lists {
    Table,
    Id,
    OwnerId,
    Name,
    IsDefault,
    ArchivedAt,
    CreatedAt,
    UpdatedAt,
    Version,
    RequestId,
}

#[derive(DeriveIden)]
enum ListMembers {
    Table,
    ListId,
    UserId,
    Role,
    AddedAt,
}

#[derive(DeriveIden)]
enum Outbox {
    Table,
    Seq,
    EventId,
    TaskId,
    EventType,
    Payload,
    CreatedAt,
    PublishedAt,
    Attempts,
    ListId,
    PreviousListId,
}

#[derive(DeriveIden)]
enum OutboxParked {
    Table,
    Seq,
    EventId,
    TaskId,
    EventType,
    Payload,
    CreatedAt,
    Attempts,
    Reason,
    ParkedAt,
}

// `MigrationTrait` is declared with an elided `SchemaManager` lifetime; naming it here
// breaks the async-trait signature match.
#[allow(elided_lifetimes_in_paths)]
mod m20261124_000001_create_tasks {
    use super::*;

    pub struct Migration;

    // Spelled out: the derive would name it after the file, which every migration shares.
    impl MigrationName for Migration {
        fn name(&self) -> &str {
            "m20261124_000001_create_tasks"
        }
    }

    #[async_trait::async_trait]
    impl MigrationTrait for Migration {
        async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
            manager
                .create_table(
                    Table::create()
                        .table(Tasks::Table)
                        .if_not_exists()
                        .col(string(Tasks::Id).string_len(36).primary_key())
                        .col(string(Tasks::OwnerId).string_len(128))
                        .col(string(Tasks::Title).string_len(200))
                        .col(text(Tasks::Description))
                        .col(small_integer(Tasks::Priority))
                        .col(text(Tasks::Tags))
                        .col(big_integer_null(Tasks::DueAt))
                        .col(string_null(Tasks::TimeZone).string_len(64))
                        .col(string_null(Tasks::Recurrence).string_len(500))
                        .col(big_integer_null(Tasks::CompletedAt))
                        .col(big_integer(Tasks::CreatedAt))
                        .col(big_integer(Tasks::UpdatedAt))
                        .col(big_integer(Tasks::Version))
                        .col(string_null(Tasks::RequestId).string_len(128))
                        .to_owned(),
                )
                .await?;
            // One index per sort order, each led by the owner: every query is per user.
            for (name, columns) in [
                ("idx_tasks_owner_created", [Tasks::CreatedAt, Tasks::Id]),
                ("idx_tasks_owner_due", [Tasks::DueAt, Tasks::Id]),
                ("idx_tasks_owner_priority", [Tasks::Priority, Tasks::Id]),
            ] {
                let mut index = Index::create();
                index.name(name).table(Tasks::Table).col(Tasks::OwnerId);
                for column in columns {
                    index.col(column);
                }
                manager
                    .create_index(index.if_not_exists().to_owned())
                    .await?;
            }
            // Idempotent creates: NULL request ids never collide.
            manager
                .create_index(
                    Index::create()
                        .name("uq_tasks_owner_request")
                        .table(Tasks::Table)
                        .col(Tasks::OwnerId)
                        .col(Tasks::RequestId)
                        .unique()
                        .if_not_exists()
                        .to_owned(),
                )
                .await
        }

        async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
            manager
                .drop_table(Table::drop().table(Tasks::Table).to_owned())
                .await
        }
    }
}

#[allow(elided_lifetimes_in_paths)]
mod m20261124_000002_create_outbox {
    use super::*;

    pub struct Migration;

    impl MigrationName for Migration {
        fn name(&self) -> &str {
            "m20261124_000002_create_outbox"
        }
    }

    #[async_trait::async_trait]
    impl MigrationTrait for Migration {
        async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
            manager
                .create_table(
                    Table::create()
                        .table(Outbox::Table)
                        .if_not_exists()
                        .col(big_integer(Outbox::Seq).auto_increment().primary_key())
                        .col(string(Outbox::EventId).string_len(36).unique_key())
                        .col(string(Outbox::TaskId).string_len(36))
                        .col(string(Outbox::EventType).string_len(64))
                        .col(text(Outbox::Payload))
                        .col(big_integer(Outbox::CreatedAt))
                        .col(big_integer_null(Outbox::PublishedAt))
                        .col(integer(Outbox::Attempts).default(0))
                        .to_owned(),
                )
                .await?;
            // The relay's scan (pending rows in order) and the pruning (old published rows).
            manager
                .create_index(
                    Index::create()
                        .name("idx_outbox_published_seq")
                        .table(Outbox::Table)
                        .col(Outbox::PublishedAt)
                        .col(Outbox::Seq)
                        .if_not_exists()
                        .to_owned(),
                )
                .await
        }

        async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
            manager
                .drop_table(Table::drop().table(Outbox::Table).to_owned())
                .await
        }
    }
}

/// Events the sidecar refused too often, set aside so that the rest flow on (see
/// `outbox::relay`). A new table, so it migrates a database with data in it as it does an
/// empty one.
#[allow(elided_lifetimes_in_paths)]
mod m20261203_000003_create_outbox_parked {
    use super::*;

    pub struct Migration;

    impl MigrationName for Migration {
        fn name(&self) -> &str {
            "m20261203_000003_create_outbox_parked"
        }
    }

    #[async_trait::async_trait]
    impl MigrationTrait for Migration {
        async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
            manager
                .create_table(
                    Table::create()
                        .table(OutboxParked::Table)
                        .if_not_exists()
                        // The row's `seq` in `outbox`, kept so that a retried event goes back
                        // in its place, before its task's later events.
                        .col(big_integer(OutboxParked::Seq).primary_key())
                        .col(string(OutboxParked::EventId).string_len(36).unique_key())
                        .col(string(OutboxParked::TaskId).string_len(36))
                        .col(string(OutboxParked::EventType).string_len(64))
                        .col(text(OutboxParked::Payload))
                        .col(big_integer(OutboxParked::CreatedAt))
                        .col(integer(OutboxParked::Attempts))
                        .col(text(OutboxParked::Reason))
                        .col(big_integer(OutboxParked::ParkedAt))
                        .to_owned(),
                )
                .await?;
            // The relay's scan holds back the later events of every parked task.
            manager
                .create_index(
                    Index::create()
                        .name("idx_outbox_parked_task")
                        .table(OutboxParked::Table)
                        .col(OutboxParked::TaskId)
                        .if_not_exists()
                        .to_owned(),
                )
                .await
        }

        async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
            manager
                .drop_table(Table::drop().table(OutboxParked::Table).to_owned())
                .await
        }
    }
}

/// Lists and their members. Every existing task moves into its owner's default list, which
/// is made here for every owner (the same id the service derives, `lists::default_list_id`),
/// so a database with data migrates as an empty one does.
#[allow(elided_lifetimes_in_paths)]
mod m20261204_000004_lists {
    use super::*;
    use sea_orm_migration::sea_orm::{ConnectionTrait, Statement};

    pub struct Migration;

    impl MigrationName for Migration {
        fn name(&self) -> &str {
            "m20261204_000004_lists"
        }
    }

    #[async_trait::async_trait]
    impl MigrationTrait for Migration {
        async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
            manager
                .create_table(
                    Table::create()
                        .table(Lists::Table)
                        .if_not_exists()
                        .col(string(Lists::Id).string_len(36).primary_key())
                        .col(string(Lists::OwnerId).string_len(128))
                        .col(string(Lists::Name).string_len(400))
                        .col(boolean(Lists::IsDefault))
                        .col(big_integer_null(Lists::ArchivedAt))
                        .col(big_integer(Lists::CreatedAt))
                        .col(big_integer(Lists::UpdatedAt))
                        .col(big_integer(Lists::Version))
                        .col(string_null(Lists::RequestId).string_len(128))
                        .to_owned(),
                )
                .await?;
            // CreateList's idempotency, and the count of lists a user owns.
            manager
                .create_index(
                    Index::create()
                        .name("uq_lists_owner_request")
                        .table(Lists::Table)
                        .col(Lists::OwnerId)
                        .col(Lists::RequestId)
                        .unique()
                        .if_not_exists()
                        .to_owned(),
                )
                .await?;
            manager
                .create_table(
                    Table::create()
                        .table(ListMembers::Table)
                        .if_not_exists()
                        .col(string(ListMembers::ListId).string_len(36))
                        .col(string(ListMembers::UserId).string_len(128))
                        .col(small_integer(ListMembers::Role))
                        .col(big_integer(ListMembers::AddedAt))
                        .primary_key(
                            Index::create()
                                .col(ListMembers::ListId)
                                .col(ListMembers::UserId),
                        )
                        .to_owned(),
                )
                .await?;
            // The lists a user sees (every task query starts there).
            manager
                .create_index(
                    Index::create()
                        .name("idx_list_members_user")
                        .table(ListMembers::Table)
                        .col(ListMembers::UserId)
                        .col(ListMembers::ListId)
                        .if_not_exists()
                        .to_owned(),
                )
                .await?;
            for (table, column) in [
                (Tasks::Table.into_iden(), Tasks::ListId.into_iden()),
                (Outbox::Table.into_iden(), Outbox::ListId.into_iden()),
                (
                    Outbox::Table.into_iden(),
                    Outbox::PreviousListId.into_iden(),
                ),
            ] {
                manager
                    .alter_table(
                        Table::alter()
                            .table(table)
                            .add_column(string_null(column).string_len(36))
                            .to_owned(),
                    )
                    .await?;
            }
            manager
                .alter_table(
                    Table::alter()
                        .table(Tasks::Table)
                        .add_column(string_null(Tasks::AssigneeId).string_len(128))
                        .to_owned(),
                )
                .await?;
            move_tasks_into_default_lists(manager).await?;
            // Tasks are listed per list now: one index per sort order, each led by the list
            // (ListTasks: `list_id IN (the caller's lists)`, ordered and paged by key and id).
            // The owner-led ones go; the quota's count by owner uses uq_tasks_owner_request.
            for name in [
                "idx_tasks_owner_created",
                "idx_tasks_owner_due",
                "idx_tasks_owner_priority",
            ] {
                manager
                    .drop_index(Index::drop().name(name).table(Tasks::Table).to_owned())
                    .await?;
            }
            for (name, columns) in [
                ("idx_tasks_list_created", [Tasks::CreatedAt, Tasks::Id]),
                ("idx_tasks_list_due", [Tasks::DueAt, Tasks::Id]),
                ("idx_tasks_list_priority", [Tasks::Priority, Tasks::Id]),
                // ListTasks by assignee, and clearing a leaving member's assignments.
                ("idx_tasks_list_assignee", [Tasks::AssigneeId, Tasks::Id]),
            ] {
                let mut index = Index::create();
                index.name(name).table(Tasks::Table).col(Tasks::ListId);
                for column in columns {
                    index.col(column);
                }
                manager
                    .create_index(index.if_not_exists().to_owned())
                    .await?;
            }
            Ok(())
        }

        async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
            for table in [ListMembers::Table.into_iden(), Lists::Table.into_iden()] {
                manager
                    .drop_table(Table::drop().table(table).to_owned())
                    .await?;
            }
            Ok(())
        }
    }

    /// One default list per owner of existing tasks, with the owner as its member, and
    /// their tasks in it. Per owner, in batches of statements both backends run alike.
    async fn move_tasks_into_default_lists(manager: &SchemaManager<'_>) -> Result<(), DbErr> {
        let db = manager.get_connection();
        let backend = db.get_database_backend();
        let owners = db
            .query_all_raw(Statement::from_string(
                backend,
                "SELECT DISTINCT owner_id FROM tasks",
            ))
            .await?;
        let now = chrono::Utc::now().timestamp_micros();
        // `now` is ours, so it is written into the SQL; the ids are bound.
        let (p1, p2) = match backend {
            sea_orm_migration::sea_orm::DbBackend::Postgres => ("$1", "$2"),
            _ => ("?", "?"),
        };
        for row in owners {
            let owner: String = row.try_get("", "owner_id")?;
            let list = crate::lists::default_list_id(&owner).to_string();
            db.execute_raw(Statement::from_sql_and_values(
                backend,
                format!(
                    "INSERT INTO lists (id, owner_id, name, is_default, archived_at, created_at, \
                     updated_at, version, request_id) \
                     VALUES ({p1}, {p2}, '{name}', TRUE, NULL, {now}, {now}, 1, NULL) \
                     ON CONFLICT (id) DO NOTHING",
                    name = crate::lists::DEFAULT_LIST_NAME
                ),
                [list.clone().into(), owner.clone().into()],
            ))
            .await?;
            db.execute_raw(Statement::from_sql_and_values(
                backend,
                format!(
                    "INSERT INTO list_members (list_id, user_id, role, added_at) \
                     VALUES ({p1}, {p2}, {owner_role}, {now}) ON CONFLICT DO NOTHING",
                    owner_role = crate::lists::Role::Owner.as_i16()
                ),
                [list.clone().into(), owner.clone().into()],
            ))
            .await?;
            db.execute_raw(Statement::from_sql_and_values(
                backend,
                format!(
                    "UPDATE tasks SET list_id = {p1} WHERE owner_id = {p2} AND list_id IS NULL"
                ),
                [list.into(), owner.into()],
            ))
            .await?;
        }
        Ok(())
    }
}

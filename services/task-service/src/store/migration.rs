//! Schema migrations, run at start and by `task-service migrate`.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::{
    big_integer, big_integer_null, integer, small_integer, string, string_null, text,
};

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261124_000001_create_tasks::Migration),
            Box::new(m20261124_000002_create_outbox::Migration),
            Box::new(m20261203_000003_create_outbox_parked::Migration),
        ]
    }
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

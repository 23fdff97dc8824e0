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

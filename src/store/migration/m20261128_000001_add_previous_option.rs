//! Adds `votes.previous_option_id`: the option a voter's row held before
//! the worker's last update of it (NULL on a row never updated). The
//! worker's upsert sets it from the row it replaces and returns it, so one
//! statement both writes a batch and says how the tally moves, without
//! reading the rows first (`services/worker/src/apply.rs`).

use sea_orm_migration::prelude::*;

/// The second schema.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Votes {
    Table,
    PreviousOptionId,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // Nullable, no default: PostgreSQL adds it without rewriting the table.
        manager
            .alter_table(
                Table::alter()
                    .table(Votes::Table)
                    .add_column(
                        ColumnDef::new(Votes::PreviousOptionId)
                            .string_len(32)
                            .null(),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Votes::Table)
                    .drop_column(Votes::PreviousOptionId)
                    .to_owned(),
            )
            .await
    }
}

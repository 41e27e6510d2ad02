//! Creates `votes` (one row per voter) and `tally` (one row per option).

use sea_orm_migration::prelude::*;

/// The first schema.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Votes {
    Table,
    VoterId,
    OptionId,
    VoteId,
    Sequence,
    CastAt,
    CountedAt,
}

#[derive(DeriveIden)]
enum Tally {
    Table,
    OptionId,
    Count,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Votes::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(Votes::VoterId)
                            .string_len(128)
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(Votes::OptionId).string_len(32).not_null())
                    .col(ColumnDef::new(Votes::VoteId).uuid().not_null())
                    .col(ColumnDef::new(Votes::Sequence).big_integer().not_null())
                    .col(
                        ColumnDef::new(Votes::CastAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(Votes::CountedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Tally::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(Tally::OptionId)
                            .string_len(32)
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(Tally::Count)
                            .big_integer()
                            .not_null()
                            .default(0),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Tally::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(Votes::Table).to_owned())
            .await
    }
}

//! Keeps the tally per (option, queue shard) instead of per option, and
//! adds `shard_map`, the record of the shards this database holds.
//!
//! Per option, every worker's transaction updated the same few rows (one
//! per option), so workers writing to one database waited for each other
//! at every commit; per shard, workers that hold different shards touch
//! different rows (docs/SCALING.md, "The tally per shard", has the
//! measured difference). Existing counts become shard 0's: the sum per
//! option is unchanged.
//!
//! A primary key cannot be changed in place on SQLite, so the new table
//! is built beside the old one, filled from it, and renamed over it.
//! Workers of an older release still running against the new table fail
//! their tally update (no unique key on the option alone) and retry their
//! batch until they are replaced: nothing is lost or counted twice. Result
//! services of an older release read one row per option: with a sharded
//! queue they would show one shard's count, so they are upgraded with the
//! workers (docs/SCALING.md, "Several databases").

use sea_orm_migration::prelude::*;

/// The third schema.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Tally {
    Table,
    OptionId,
    Count,
}

#[derive(DeriveIden)]
enum TallyPerShard {
    Table,
    OptionId,
    Shard,
    Count,
}

#[derive(DeriveIden)]
enum ShardMap {
    Table,
    Id,
    DatabaseIndex,
    DatabaseCount,
    ShardCount,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(TallyPerShard::Table)
                    .col(
                        ColumnDef::new(TallyPerShard::OptionId)
                            .string_len(32)
                            .not_null(),
                    )
                    .col(ColumnDef::new(TallyPerShard::Shard).integer().not_null())
                    .col(
                        ColumnDef::new(TallyPerShard::Count)
                            .big_integer()
                            .not_null()
                            .default(0),
                    )
                    .primary_key(
                        Index::create()
                            .col(TallyPerShard::OptionId)
                            .col(TallyPerShard::Shard),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .exec_stmt(
                Query::insert()
                    .into_table(TallyPerShard::Table)
                    .columns([
                        TallyPerShard::OptionId,
                        TallyPerShard::Shard,
                        TallyPerShard::Count,
                    ])
                    .select_from(
                        Query::select()
                            .column(Tally::OptionId)
                            .expr(Expr::val(0))
                            .column(Tally::Count)
                            .from(Tally::Table)
                            .to_owned(),
                    )
                    .map_err(|error| DbErr::Custom(error.to_string()))?
                    .to_owned(),
            )
            .await?;
        replace_tally(manager).await?;
        manager
            .create_table(
                Table::create()
                    .table(ShardMap::Table)
                    .col(
                        ColumnDef::new(ShardMap::Id)
                            .integer()
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(ShardMap::DatabaseIndex).integer().not_null())
                    .col(ColumnDef::new(ShardMap::DatabaseCount).integer().not_null())
                    .col(ColumnDef::new(ShardMap::ShardCount).integer().not_null())
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(ShardMap::Table).to_owned())
            .await?;
        // Back to one row per option: the shards' counts summed.
        manager
            .create_table(
                Table::create()
                    .table(TallyPerShard::Table)
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
            .await?;
        manager
            .get_connection()
            .execute_unprepared(
                "INSERT INTO tally_per_shard (option_id, count) \
                 SELECT option_id, SUM(count) FROM tally GROUP BY option_id",
            )
            .await?;
        replace_tally(manager).await
    }
}

/// Drops `tally` and gives its name to the table just filled beside it
/// (`tally_per_shard`): the last step both ways.
async fn replace_tally(manager: &SchemaManager<'_>) -> Result<(), DbErr> {
    manager
        .drop_table(Table::drop().table(Tally::Table).to_owned())
        .await?;
    manager
        .rename_table(
            Table::rename()
                .table(TallyPerShard::Table, Tally::Table)
                .to_owned(),
        )
        .await
}

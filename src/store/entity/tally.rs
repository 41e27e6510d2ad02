//! `tally`: the number of voters per option and queue shard, kept in step
//! with `votes`. An option's count is the sum of its rows.

use sea_orm::entity::prelude::*;

/// The count of one option among the voters of one shard.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "tally")]
pub struct Model {
    /// The option id.
    #[sea_orm(primary_key, auto_increment = false)]
    pub option_id: String,
    /// The queue shard of the voters counted here (0 with one shard).
    #[sea_orm(primary_key, auto_increment = false)]
    pub shard: i32,
    /// Voters of this shard whose current vote is this option. One row
    /// alone may go below zero (voters counted before the shard count
    /// changed, on one database); the sum over the shards never does.
    pub count: i64,
}

/// No relations.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

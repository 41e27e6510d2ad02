//! `shard_map`: one row, the shards this database was set up to hold
//! ([`crate::store::shard_map`]).

use sea_orm::entity::prelude::*;

/// Which of the databases this one is, and the shards it holds.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "shard_map")]
pub struct Model {
    /// Always 0: the table holds one row.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: i32,
    /// This database's place in `DB_HOSTS`, from 0.
    pub database_index: i32,
    /// How many databases share the votes.
    pub database_count: i32,
    /// The queue's shard count (`QUEUE_SHARDS`).
    pub shard_count: i32,
}

/// No relations.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

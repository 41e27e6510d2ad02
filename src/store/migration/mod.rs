//! Schema migrations, one per file, applied in order by [`Migrator`].

mod m20261127_000001_create_votes_and_tally;
mod m20261128_000001_add_previous_option;
mod m20261206_000001_tally_per_shard;

use sea_orm_migration::{MigrationTrait, MigratorTrait};

/// All migrations of the votemesh schema.
#[derive(Debug)]
pub struct Migrator;

impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261127_000001_create_votes_and_tally::Migration),
            Box::new(m20261128_000001_add_previous_option::Migration),
            Box::new(m20261206_000001_tally_per_shard::Migration),
        ]
    }
}

//! SeaORM entities of the three tables. See [`super`] for what each holds.

pub mod shard_map;
pub mod tally;
pub mod vote;

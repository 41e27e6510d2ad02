//! Which database holds which voters, when several PostgreSQL primaries
//! share the votes (`DB_HOSTS`), and the record each database keeps of it.
//!
//! ```text
//! voter id ──crc32 mod QUEUE_SHARDS──► shard s ──► the database whose range holds s
//!                                                  ├─ votes: the voter's row
//!                                                  └─ tally: the row (option, s)
//! ```
//!
//! The shards are split into contiguous ranges over the databases, in the
//! order `DB_HOSTS` names them: with `D` databases and `S` shards, database
//! `i` holds shards `⌊i·S/D⌋ .. ⌊(i+1)·S/D⌋` (16 shards over 3 databases:
//! 0-4, 5-9, 10-15). A voter is in one shard, so in one database, whose
//! `votes` row is the only one the voter has; the result service sums the
//! databases' tallies.
//!
//! Each database records its [`ShardMap`] (the `shard_map` table, one row)
//! when a worker first migrates it. A worker given another map refuses to
//! start, and a result service refuses a database that is not where its
//! `DB_HOSTS` puts it: otherwise a voter's new vote would land in another
//! database than the old one, and be counted twice. One database holds
//! every shard whatever their count, so there the shard count may change
//! (the record follows it); with several, nothing may change. Moving
//! voters between databases is a migration of data, not a restart.
//!
//! [`Databases`] is the set a process connects to, in `DB_HOSTS` order.

use std::{
    fmt,
    ops::Range,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use futures_util::future::try_join_all;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ConnectionTrait, DatabaseConnection, DbErr, EntityTrait,
};

use super::{StoreError, entity::shard_map};
use crate::{config::ConnectionUrl, queue::shard::Shards, tls::TlsFiles};

/// The shards one database holds: its place among the databases, and the
/// queue's shard count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShardMap {
    database: u16,
    databases: u16,
    shards: u16,
}

impl ShardMap {
    /// One database holding every shard.
    pub fn whole(shards: Shards) -> Self {
        Self {
            database: 0,
            databases: 1,
            shards: shards.count(),
        }
    }

    /// The map of each of `databases` databases sharing `shards`, in
    /// order. Each database must hold a shard at least.
    pub fn split(databases: usize, shards: Shards) -> Result<Vec<Self>, StoreError> {
        let too_many = || StoreError::MoreDatabasesThanShards {
            databases,
            shards: shards.count(),
        };
        let count = u16::try_from(databases).map_err(|_| too_many())?;
        if count == 0 || count > shards.count() {
            return Err(too_many());
        }
        Ok((0..count)
            .map(|database| Self {
                database,
                databases: count,
                shards: shards.count(),
            })
            .collect())
    }

    /// The shards this database holds.
    pub fn shards_held(&self) -> Range<u16> {
        self.start_of(self.database)..self.start_of(self.database + 1)
    }

    /// The first shard database `database` holds: `⌊database·S/D⌋`.
    fn start_of(&self, database: u16) -> u16 {
        let start = u32::from(database) * u32::from(self.shards) / u32::from(self.databases.max(1));
        // At most `shards`, a u16.
        start as u16
    }

    /// The database holding `shard`, among `databases` sharing `shards`.
    pub fn database_of(shard: u16, databases: u16, shards: Shards) -> u16 {
        // The last database whose range starts at or before the shard:
        // ⌊i·S/D⌋ ≤ s  ⇔  i ≤ (s·D + D − 1) / S.
        let (s, d, n) = (
            u32::from(shard),
            u32::from(databases.max(1)),
            u32::from(shards.count()),
        );
        ((s * d + d - 1) / n).min(d - 1) as u16
    }

    /// Whether a database that recorded `recorded` may be used as this
    /// map says: the same map, or one database both times (it holds every
    /// voter, whatever the shard count).
    fn agrees_with(&self, recorded: &Self) -> bool {
        self == recorded || (self.databases == 1 && recorded.databases == 1)
    }

    fn from_row(row: &shard_map::Model) -> Result<Self, StoreError> {
        let field = |value: i32| u16::try_from(value).ok();
        match (
            field(row.database_index),
            field(row.database_count),
            field(row.shard_count),
        ) {
            (Some(database), Some(databases), Some(shards))
                if database < databases && databases <= shards =>
            {
                Ok(Self {
                    database,
                    databases,
                    shards,
                })
            }
            _ => Err(DbErr::Custom(format!("shard_map holds no shard map: {row:?}")).into()),
        }
    }

    fn to_row(self) -> shard_map::ActiveModel {
        shard_map::ActiveModel {
            id: Set(0),
            database_index: Set(i32::from(self.database)),
            database_count: Set(i32::from(self.databases)),
            shard_count: Set(i32::from(self.shards)),
        }
    }
}

impl fmt::Display for ShardMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let held = self.shards_held();
        write!(
            f,
            "database {} of {} (from 0, in DB_HOSTS order), holding shards {}-{} of {}",
            self.database,
            self.databases,
            held.start,
            held.end.saturating_sub(1),
            self.shards
        )
    }
}

/// The map `db` recorded (`None`: none yet).
async fn read_record<C: ConnectionTrait>(db: &C) -> Result<Option<ShardMap>, StoreError> {
    match shard_map::Entity::find_by_id(0).one(db).await? {
        Some(row) => ShardMap::from_row(&row).map(Some),
        None => Ok(None),
    }
}

/// Records `map` in `db` if it holds no map yet; refuses a map that
/// disagrees with the one it holds (see the module's doc).
pub(super) async fn record<C: ConnectionTrait>(
    db: &C,
    map: ShardMap,
    name: &str,
) -> Result<(), StoreError> {
    let recorded = read_record(db).await?;
    check_record(map, recorded, name)?;
    write_record(db, map, recorded).await
}

/// Refuses `map` for the database `name` if it disagrees with the map
/// the database `recorded`.
fn check_record(map: ShardMap, recorded: Option<ShardMap>, name: &str) -> Result<(), StoreError> {
    match recorded {
        Some(recorded) if !map.agrees_with(&recorded) => Err(StoreError::ShardMapConflict {
            database: name.to_owned(),
            recorded: recorded.to_string(),
            configured: map.to_string(),
        }),
        _ => Ok(()),
    }
}

/// Writes `map` over what `db` `recorded` (checked to agree), when it
/// differs.
async fn write_record<C: ConnectionTrait>(
    db: &C,
    map: ShardMap,
    recorded: Option<ShardMap>,
) -> Result<(), StoreError> {
    match recorded {
        None => {
            map.to_row().insert(db).await?;
        }
        Some(recorded) if recorded != map => {
            map.to_row().update(db).await?;
        }
        Some(_) => {}
    }
    Ok(())
}

/// The databases a process uses, in `DB_HOSTS` order: one, or several
/// that share the votes. Cheap to clone (the pools are shared).
#[derive(Clone, Debug)]
pub struct Databases {
    members: Arc<[Member]>,
}

#[derive(Debug)]
struct Member {
    /// The URL without its password, for logs and errors.
    name: String,
    connection: DatabaseConnection,
    /// The database's record was found where this set puts it.
    placed: AtomicBool,
}

impl Databases {
    /// Opens a pool to each of `urls`, in order (lazily: see
    /// [`super::connect`]), with the component's TLS files filled in where
    /// a URL asks for verified TLS ([`super::with_tls_files`]).
    pub async fn connect(
        urls: &[ConnectionUrl],
        tls_files: Option<&TlsFiles>,
    ) -> Result<Self, StoreError> {
        let mut members = Vec::with_capacity(urls.len());
        for url in urls {
            let url = super::with_tls_files(url, tls_files);
            members.push(Member {
                name: url.redacted(),
                connection: super::connect(&url).await?,
                placed: AtomicBool::new(false),
            });
        }
        Ok(Self {
            members: members.into(),
        })
    }

    /// How many databases there are.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether there is no database (never, from [`Databases::connect`]
    /// with a URL).
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The databases' connections, in order.
    pub fn connections(&self) -> impl Iterator<Item = &DatabaseConnection> {
        self.members.iter().map(|member| &member.connection)
    }

    /// The `index`th database.
    pub fn get(&self, index: usize) -> Option<&DatabaseConnection> {
        self.members.get(index).map(|member| &member.connection)
    }

    /// Migrates every database and records (or checks) the shards each
    /// holds of the queue's `shards` (the worker, at start).
    ///
    /// The records are read and written holding every database's
    /// migration lock, taken in `DB_HOSTS` order (so two workers starting
    /// at once never see a set half recorded, and never wait for each
    /// other in a circle), and every record is checked before any is
    /// written: a refused start marks no database. Among several
    /// databases, one without a record while others have one is refused.
    pub async fn migrate(&self, shards: Shards) -> Result<(), StoreError> {
        let maps = ShardMap::split(self.len(), shards)?;
        try_join_all(
            self.members
                .iter()
                .map(|member| super::migrate_schema(&member.connection)),
        )
        .await?;
        let mut locked = Vec::with_capacity(self.len());
        for member in self.members.iter() {
            locked.push(super::locked_transaction(&member.connection).await?);
        }
        let mut recorded = Vec::with_capacity(self.len());
        for transaction in &locked {
            recorded.push(read_record(transaction).await?);
        }
        for ((member, map), recorded) in self.members.iter().zip(&maps).zip(&recorded) {
            check_record(*map, *recorded, &member.name)?;
        }
        self.refuse_partly_recorded(&recorded)?;
        for ((transaction, map), recorded) in locked.iter().zip(maps).zip(recorded) {
            write_record(transaction, map, recorded).await?;
        }
        for transaction in locked {
            transaction.commit().await?;
        }
        for member in self.members.iter() {
            member.placed.store(true, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Checks that each database recorded the place this set gives it (the
    /// result service, before summing; a database found in place is not
    /// read again). While no database has a record (no worker set them up
    /// yet), the check passes and is made again next time; a database
    /// recorded elsewhere is an error ([`StoreError::ShardMapConflict`]),
    /// and so is one without a record among recorded ones
    /// ([`StoreError::UnrecordedDatabase`]: the sum would miss its voters).
    pub async fn check_places(&self) -> Result<(), StoreError> {
        if self
            .members
            .iter()
            .all(|member| member.placed.load(Ordering::Relaxed))
        {
            return Ok(());
        }
        let count = self.len();
        let recorded = self.recorded().await?;
        for (index, (member, recorded)) in self.members.iter().zip(&recorded).enumerate() {
            if let Some(recorded) = recorded
                && (usize::from(recorded.database) != index
                    || usize::from(recorded.databases) != count)
            {
                return Err(StoreError::ShardMapConflict {
                    database: member.name.clone(),
                    recorded: recorded.to_string(),
                    configured: format!("database {index} of {count} (from 0, in DB_HOSTS order)"),
                });
            }
        }
        self.refuse_partly_recorded(&recorded)?;
        for (member, recorded) in self.members.iter().zip(&recorded) {
            if recorded.is_some() {
                member.placed.store(true, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    /// The map each database recorded, in order (`None`: none yet).
    async fn recorded(&self) -> Result<Vec<Option<ShardMap>>, StoreError> {
        try_join_all(
            self.members
                .iter()
                .map(|member| read_record(&member.connection)),
        )
        .await
    }

    /// Refuses several databases of which some recorded a map and others
    /// did not.
    fn refuse_partly_recorded(&self, recorded: &[Option<ShardMap>]) -> Result<(), StoreError> {
        if self.len() < 2 || recorded.iter().all(Option::is_none) {
            return Ok(());
        }
        let unrecorded: Vec<&str> = self
            .members
            .iter()
            .zip(recorded)
            .filter(|(_, recorded)| recorded.is_none())
            .map(|(member, _)| member.name.as_str())
            .collect();
        if unrecorded.is_empty() {
            return Ok(());
        }
        Err(StoreError::UnrecordedDatabase {
            databases: unrecorded.join(", "),
        })
    }

    /// `Ok` while every database answers a trivial query.
    pub async fn ping(&self) -> Result<(), StoreError> {
        try_join_all(
            self.members
                .iter()
                .map(|member| super::ping(&member.connection)),
        )
        .await?;
        Ok(())
    }

    /// Publishes the pools' state for `/metrics`, summed over the databases
    /// (see [`super::record_pool_metrics`]).
    pub fn record_pool_metrics(&self) {
        super::record_pool_metrics(self.connections());
    }
}

impl From<DatabaseConnection> for Databases {
    fn from(connection: DatabaseConnection) -> Self {
        Self {
            members: Arc::new([Member {
                name: "the database".into(),
                connection,
                placed: AtomicBool::new(false),
            }]),
        }
    }
}

/// The databases' URLs without passwords, separated by commas.
impl fmt::Display for Databases {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, member) in self.members.iter().enumerate() {
            if index > 0 {
                f.write_str(",")?;
            }
            f.write_str(&member.name)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU16;

    use super::*;

    fn shards(count: u16) -> Shards {
        Shards::new(NonZeroU16::new(count).unwrap())
    }

    #[test]
    fn shards_are_split_into_contiguous_ranges_in_order() {
        // (first shard, end) of each database.
        let held = |databases: usize, count: u16| -> Vec<(u16, u16)> {
            ShardMap::split(databases, shards(count))
                .unwrap()
                .iter()
                .map(|map| (map.shards_held().start, map.shards_held().end))
                .collect()
        };
        assert_eq!(held(1, 1), [(0, 1)]);
        assert_eq!(held(1, 16), [(0, 16)]);
        assert_eq!(held(2, 16), [(0, 8), (8, 16)]);
        assert_eq!(held(3, 16), [(0, 5), (5, 10), (10, 16)]);
        assert_eq!(held(4, 4), [(0, 1), (1, 2), (2, 3), (3, 4)]);
        assert_eq!(
            held(5, 64),
            [(0, 12), (12, 25), (25, 38), (38, 51), (51, 64)]
        );
        // Every shard is in exactly the database whose range holds it.
        for (databases, count) in [(1, 1), (2, 2), (2, 16), (3, 16), (5, 64), (7, 1000)] {
            for map in ShardMap::split(databases, shards(count)).unwrap() {
                for shard in map.shards_held() {
                    assert_eq!(
                        ShardMap::database_of(shard, databases as u16, shards(count)),
                        map.database,
                        "shard {shard} of {count} over {databases}"
                    );
                }
            }
        }
        assert!(matches!(
            ShardMap::split(3, shards(2)),
            Err(StoreError::MoreDatabasesThanShards {
                databases: 3,
                shards: 2
            })
        ));
    }

    #[test]
    fn one_database_agrees_with_any_shard_count_several_only_with_the_same_map() {
        let one = ShardMap::whole(shards(1));
        assert!(ShardMap::whole(shards(16)).agrees_with(&one));
        let two = ShardMap::split(2, shards(16)).unwrap();
        assert!(two[0].agrees_with(&two[0]));
        assert!(!two[1].agrees_with(&two[0]), "the order changed");
        assert!(!two[0].agrees_with(&one), "a database was added");
        assert!(!one.agrees_with(&two[0]), "a database was removed");
        let other_count = ShardMap::split(2, shards(8)).unwrap();
        assert!(
            !other_count[0].agrees_with(&two[0]),
            "the shard count changed"
        );
        assert_eq!(
            two[1].to_string(),
            "database 1 of 2 (from 0, in DB_HOSTS order), holding shards 8-15 of 16"
        );
    }
}

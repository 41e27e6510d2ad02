//! The database: schema, migrations, and connecting.
//!
//! Three tables, the same on PostgreSQL and on SQLite (the all-in-one run):
//! - `votes`: one row per voter, their current vote and its sequence;
//! - `tally`: one row per option id and queue shard, the number of the
//!   shard's voters whose current vote it is. The worker keeps it in step
//!   with `votes` in the same transaction, so the result service reads
//!   counts (an option's is the sum of its rows) without scanning votes;
//! - `shard_map`: which shards of the queue this database holds, when
//!   several share the votes ([`shard_map`]).
//!
//! The worker runs the migrations at start ([`migrate`], or
//! [`shard_map::Databases::migrate`] for several databases); on PostgreSQL
//! they run under an advisory lock, so several workers starting at once are
//! safe.
//!
//! TLS to PostgreSQL is asked for in `DATABASE_URL`, as libpq does
//! (`?sslmode=verify-full&sslrootcert=/path/ca.crt`); sqlx speaks it with
//! rustls. [`with_tls_files`] fills in what such a URL leaves out from the
//! component's own identity (`TLS_CA_FILE`, `TLS_CERT_FILE`,
//! `TLS_KEY_FILE`).

pub mod entity;
pub mod migration;
pub mod shard_map;

use std::time::Duration;

pub use sea_orm::DatabaseConnection;
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseTransaction, DbBackend, DbErr, RuntimeErr,
    TransactionTrait, sqlx,
};
use sea_orm_migration::MigratorTrait;
use thiserror::Error;
use url::Url;

pub use self::shard_map::{Databases, ShardMap};
use crate::{config::ConnectionUrl, queue::shard::Shards, tls::TlsFiles};

/// Connections per process.
pub const POOL_SIZE: u32 = 10;
/// How long connecting, or waiting for a pooled connection, may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Advisory lock key that serialises migrations across workers ("vote").
const MIGRATION_LOCK_KEY: i64 = 0x766f_7465;

/// The database failed.
#[derive(Debug, Error)]
pub enum StoreError {
    /// The database could not be reached; the message never holds the password.
    #[error("cannot connect to the database at {target}: {reason}")]
    Connect {
        /// The URL without its password.
        target: String,
        /// Why, with any password removed.
        reason: String,
    },
    /// A query or transaction failed.
    #[error("database error: {0}")]
    Query(#[from] DbErr),
    /// A database recorded other shards than this process would use it
    /// for (docs/SCALING.md, "Several databases").
    #[error(
        "{database} was set up as {recorded}, but this process was given it as {configured}; \
         refusing to use it, since voters would be counted in two databases. \
         Keep DB_HOSTS (in its order) and QUEUE_SHARDS as they were set up (docs/SCALING.md)"
    )]
    ShardMapConflict {
        /// The database, without its password.
        database: String,
        /// The map it recorded.
        recorded: String,
        /// The map this process was given.
        configured: String,
    },
    /// Some databases of `DB_HOSTS` recorded their place and these did
    /// not: recreated empty, or not the database set up at that place.
    #[error(
        "{databases} recorded no shard map while the other databases of DB_HOSTS did: \
         recreated empty, or not the database that was set up at that place; refusing to \
         use it, since its voters' earlier votes would be missing from the count (docs/SCALING.md)"
    )]
    UnrecordedDatabase {
        /// The databases without a record, without passwords.
        databases: String,
    },
    /// More databases than shards: some database would hold no shard.
    #[error(
        "DB_HOSTS names {databases} databases but the queue has {shards} shards; \
         each database holds a shard at least: raise QUEUE_SHARDS"
    )]
    MoreDatabasesThanShards {
        /// Databases in `DB_HOSTS`.
        databases: usize,
        /// `QUEUE_SHARDS`.
        shards: u16,
    },
}

/// The PostgreSQL notification channel on which the worker announces, in
/// the transaction that moved the tally, that the tally changed (delivered
/// only when that transaction commits).
pub const TALLY_CHANNEL: &str = "votemesh_tally";

/// Whether a database error is about reaching the database or a lost race
/// (retrying may succeed) rather than about the query itself. Sorted by
/// what the driver reports, never by words in the message: the error kind
/// (I/O, pool), PostgreSQL's SQLSTATE, SQLite's result code.
pub fn is_transient(error: &DbErr) -> bool {
    match error {
        DbErr::ConnectionAcquire(_) | DbErr::Conn(_) => true,
        DbErr::Exec(RuntimeErr::SqlxError(error)) | DbErr::Query(RuntimeErr::SqlxError(error)) => {
            is_transient_sqlx(error)
        }
        _ => false,
    }
}

fn is_transient_sqlx(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(error) => {
            if error
                .try_downcast_ref::<sqlx::sqlite::SqliteError>()
                .is_some()
            {
                error
                    .code()
                    .and_then(|code| code.parse::<i32>().ok())
                    .is_some_and(is_transient_sqlite_code)
            } else {
                error
                    .code()
                    .is_some_and(|code| is_transient_sqlstate(&code))
            }
        }
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        _ => false,
    }
}

/// PostgreSQL SQLSTATEs after which the same transaction may succeed:
/// class 08 (connection exception), 40001 (serialization failure), 40P01
/// (deadlock), class 53 (insufficient resources: too many connections,
/// disk full), 55P03 (lock not available), 57P01..57P03 (the server is
/// shutting down, crashed, or not accepting connections yet).
pub fn is_transient_sqlstate(code: &str) -> bool {
    code.starts_with("08")
        || code.starts_with("53")
        || matches!(
            code,
            "40001" | "40P01" | "55P03" | "57P01" | "57P02" | "57P03"
        )
}

/// SQLite's busy and locked results (`SQLITE_BUSY` 5, `SQLITE_LOCKED` 6,
/// with any extended code): another connection holds the lock.
fn is_transient_sqlite_code(code: i32) -> bool {
    matches!(code & 0xff, 5 | 6)
}

/// `url` with the component's TLS files filled in where a PostgreSQL URL
/// asks for a verified TLS connection (`sslmode=verify-ca` or
/// `verify-full`) but does not name them: `sslrootcert` from the CA file,
/// and `sslcert` / `sslkey` (presented if PostgreSQL asks for a client
/// certificate) from the certificate and key. Anything the URL names is
/// kept; any other URL is returned as it is. sqlx reads the files at each
/// new connection, so a rotated identity reaches new connections.
pub fn with_tls_files(url: &ConnectionUrl, files: Option<&TlsFiles>) -> ConnectionUrl {
    let Some(files) = files else {
        return url.clone();
    };
    let Ok(mut parsed) = Url::parse(url.expose()) else {
        return url.clone();
    };
    if !matches!(parsed.scheme(), "postgres" | "postgresql") {
        return url.clone();
    }
    let named: Vec<String> = parsed
        .query_pairs()
        .map(|(key, _)| key.into_owned())
        .collect();
    let verified = parsed.query_pairs().any(|(key, value)| {
        matches!(key.as_ref(), "sslmode" | "ssl-mode")
            && matches!(
                value.to_ascii_lowercase().as_str(),
                "verify-ca" | "verify-full"
            )
    });
    if !verified {
        return url.clone();
    }
    let is_named = |names: &[&str]| named.iter().any(|key| names.contains(&key.as_str()));
    let mut missing = Vec::new();
    if !is_named(&["sslrootcert", "ssl-root-cert", "ssl-ca"]) {
        missing.push(("sslrootcert", &files.ca));
    }
    if !is_named(&["sslcert", "ssl-cert", "sslkey", "ssl-key"]) {
        missing.push(("sslcert", &files.cert));
        missing.push(("sslkey", &files.key));
    }
    {
        let mut query = parsed.query_pairs_mut();
        for (key, path) in missing {
            query.append_pair(key, &path.to_string_lossy());
        }
    }
    ConnectionUrl::new(parsed.to_string())
}

/// Opens a connection pool to `url` (`postgres://…` or `sqlite://…`).
/// PostgreSQL need not be up: the pool connects when first used.
pub async fn connect(url: &ConnectionUrl) -> Result<DatabaseConnection, StoreError> {
    let mut options = ConnectOptions::new(url.expose().to_owned());
    options
        .max_connections(POOL_SIZE)
        .min_connections(0)
        .connect_timeout(CONNECT_TIMEOUT)
        .acquire_timeout(CONNECT_TIMEOUT)
        .connect_lazy(true)
        .sqlx_logging(false);
    Database::connect(options)
        .await
        .map_err(|error| connect_error(url, &error))
}

/// Runs the migrations that have not run yet, for the one database that
/// holds every voter; safe to call from several processes at once.
pub async fn migrate(db: &DatabaseConnection) -> Result<(), StoreError> {
    migrate_schema(db).await?;
    record_map(db, ShardMap::whole(Shards::ONE), "the database").await
}

/// Runs the migrations that have not run yet.
///
/// In one transaction, on both databases (their DDL is transactional):
/// two processes migrating at once (several workers, or the all-in-one
/// binary and its worker) never interleave the steps of a migration. On
/// PostgreSQL an advisory lock makes the second wait; on SQLite the second
/// fails as busy and retries, finding the work done.
async fn migrate_schema(db: &DatabaseConnection) -> Result<(), StoreError> {
    let transaction = locked_transaction(db).await?;
    migration::Migrator::up(&transaction, None).await?;
    transaction.commit().await?;
    Ok(())
}

/// Records `map` in the database, or checks it against the map recorded
/// ([`shard_map`]), under the migrations' lock; `name` names the database
/// in errors.
async fn record_map(db: &DatabaseConnection, map: ShardMap, name: &str) -> Result<(), StoreError> {
    let transaction = locked_transaction(db).await?;
    shard_map::record(&transaction, map, name).await?;
    transaction.commit().await?;
    Ok(())
}

/// A transaction holding, on PostgreSQL, the lock that serialises
/// migrations across processes.
async fn locked_transaction(db: &DatabaseConnection) -> Result<DatabaseTransaction, StoreError> {
    let transaction = db.begin().await?;
    if db.get_database_backend() == DbBackend::Postgres {
        transaction
            .execute_unprepared(&format!(
                "SELECT pg_advisory_xact_lock({MIGRATION_LOCK_KEY})"
            ))
            .await?;
    }
    Ok(transaction)
}

/// Answers `Ok` while the database answers a trivial query.
pub async fn ping(db: &DatabaseConnection) -> Result<(), StoreError> {
    db.ping().await.map_err(StoreError::from)
}

/// Publishes the connection pools' state for `/metrics`, summed over
/// `databases`: `votemesh_db_pool_connections{state="idle"|"busy"}` (the
/// readiness probes call it).
pub fn record_pool_metrics<'a>(databases: impl IntoIterator<Item = &'a DatabaseConnection>) {
    let (mut size, mut idle) = (0_u32, 0_u32);
    for db in databases {
        let (pool_size, pool_idle) = match db.get_database_backend() {
            DbBackend::Postgres => {
                let pool = db.get_postgres_connection_pool();
                (pool.size(), pool.num_idle())
            }
            DbBackend::Sqlite => {
                let pool = db.get_sqlite_connection_pool();
                (pool.size(), pool.num_idle())
            }
            _ => continue,
        };
        size = size.saturating_add(pool_size);
        idle = idle.saturating_add(u32::try_from(pool_idle).unwrap_or(u32::MAX));
    }
    metrics::gauge!("votemesh_db_pool_connections", "state" => "idle").set(f64::from(idle));
    metrics::gauge!("votemesh_db_pool_connections", "state" => "busy")
        .set(f64::from(size.saturating_sub(idle)));
}

/// A connection error whose text cannot leak the password, even if the
/// driver quotes the URL.
fn connect_error(url: &ConnectionUrl, error: &DbErr) -> StoreError {
    let mut reason = error.to_string();
    if let Ok(parsed) = Url::parse(url.expose())
        && let Some(password) = parsed.password()
        && !password.is_empty()
    {
        reason = reason.replace(password, "***");
        if let Ok(decoded) = percent_encoding::percent_decode_str(password).decode_utf8() {
            reason = reason.replace(decoded.as_ref(), "***");
        }
    }
    StoreError::Connect {
        target: url.redacted(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_sqlstates_are_about_reaching_the_database_or_a_lost_race() {
        for code in [
            "08006", "08001", "40001", "40P01", "53300", "57P01", "57P03",
        ] {
            assert!(is_transient_sqlstate(code), "{code}");
        }
        // Syntax error, undefined table, unique violation, raised by a function.
        for code in ["42601", "42P01", "23505", "P0001"] {
            assert!(!is_transient_sqlstate(code), "{code}");
        }
        assert!(is_transient_sqlite_code(5) && is_transient_sqlite_code(517));
        assert!(!is_transient_sqlite_code(19));
    }

    #[test]
    fn a_verifying_url_gets_the_component_tls_files_it_does_not_name() {
        let files = TlsFiles {
            cert: "/tls/tls.crt".into(),
            key: "/tls/tls.key".into(),
            ca: "/tls/ca.crt".into(),
        };
        let fill = |raw: &str| with_tls_files(&ConnectionUrl::new(raw), Some(&files));
        assert_eq!(
            fill("postgres://app:pw@db:5432/votes?sslmode=verify-full").expose(),
            "postgres://app:pw@db:5432/votes?sslmode=verify-full\
             &sslrootcert=%2Ftls%2Fca.crt&sslcert=%2Ftls%2Ftls.crt&sslkey=%2Ftls%2Ftls.key"
        );
        // What the URL names stays; it is not named twice.
        assert_eq!(
            fill(
                "postgres://db/votes?sslmode=verify-ca&sslrootcert=/own/ca.pem&sslcert=/c&sslkey=/k"
            )
            .expose(),
            "postgres://db/votes?sslmode=verify-ca&sslrootcert=/own/ca.pem&sslcert=/c&sslkey=/k"
        );
        // No verification asked, SQLite, or no identity: unchanged.
        for raw in [
            "postgres://db/votes",
            "postgres://db/votes?sslmode=require",
            "sqlite::memory:",
        ] {
            assert_eq!(fill(raw).expose(), raw);
        }
        let url = ConnectionUrl::new("postgres://db/votes?sslmode=verify-full");
        assert_eq!(with_tls_files(&url, None), url);
    }

    #[test]
    fn a_connection_error_hides_the_password_encoded_or_not() {
        // A literal `+` is where form decoding (which makes it a space) and
        // percent decoding differ: the password is p+w@rd.
        let url = ConnectionUrl::new("postgres://app:p+w%40rd@db:5432/votes");
        let error = DbErr::Custom("driver says p+w@rd and p+w%40rd were refused".into());
        let StoreError::Connect { target, reason } = connect_error(&url, &error) else {
            panic!("a connect error");
        };
        assert_eq!(target, "postgres://app:***@db:5432/votes");
        assert_eq!(reason, "Custom Error: driver says *** and *** were refused");
    }
}

//! Where the database is ([`DatabaseArgs`]): `DATABASE_URL`, or the
//! `DB_*` parts (the password kept in a [`Secret`]), turned into the one URL
//! the store connects to; and, for the worker and the result service,
//! several PostgreSQL primaries ([`DatabaseHostsArgs`], `DB_HOSTS`) that
//! share the other parts, turned into one URL each, in the order given.

use clap::Args;
use thiserror::Error;
use url::Url;

use super::{
    ConnectionUrl, ConnectionUrlParser, Secret,
    parse::{parse_host_optional_port, port_parser},
    parse_host,
};

/// Default PostgreSQL port.
pub const DEFAULT_DB_PORT: u16 = 5432;
/// Default database, as in the original voting app.
pub const DEFAULT_DB_NAME: &str = "postgres";
/// Default database user, as in the original voting app.
pub const DEFAULT_DB_USER: &str = "postgres";
/// SQLite database used by the all-in-one run when no database is set.
pub const DEFAULT_SQLITE_URL: &str = "sqlite://votemesh.sqlite?mode=rwc";

/// A setting that cannot be turned into a connection URL.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// A host name that is not one (set in code; the command line checks it
    /// with [`parse_host`]).
    #[error("{0:?} is not a host name or IP address")]
    BadHost(String),
    /// `DB_HOSTS` set together with the one database's `DATABASE_URL` or
    /// `DB_HOST`: which is meant is not clear.
    #[error(
        "DB_HOSTS names several databases; DATABASE_URL and DB_HOST name one: set one or the other"
    )]
    HostsAndOneDatabase,
}

/// Where the database is: `DATABASE_URL`, or the `DB_*` parts.
#[derive(Args, Clone, Debug)]
pub struct DatabaseArgs {
    /// Database URL (postgres://... or sqlite://...); overrides the DB_* parts.
    #[arg(long = "database-url", env = "DATABASE_URL", hide_env_values = true, value_parser = ConnectionUrlParser::DATABASE)]
    pub database_url: Option<ConnectionUrl>,
    /// PostgreSQL host name.
    #[arg(long = "db-host", env = "DB_HOST", value_parser = parse_host)]
    pub db_host: Option<String>,
    /// PostgreSQL port.
    #[arg(long = "db-port", env = "DB_PORT", default_value_t = DEFAULT_DB_PORT, value_parser = port_parser())]
    pub db_port: u16,
    /// Database name.
    #[arg(long = "db-name", env = "DB_NAME", default_value = DEFAULT_DB_NAME)]
    pub db_name: String,
    /// Database user.
    #[arg(long = "db-user", env = "DB_USER", default_value = DEFAULT_DB_USER)]
    pub db_user: String,
    /// Database password (from a Kubernetes Secret; never logged).
    #[arg(long = "db-password", env = "DB_PASSWORD", hide_env_values = true)]
    pub db_password: Option<Secret>,
}

impl Default for DatabaseArgs {
    fn default() -> Self {
        Self {
            database_url: None,
            db_host: None,
            db_port: DEFAULT_DB_PORT,
            db_name: DEFAULT_DB_NAME.into(),
            db_user: DEFAULT_DB_USER.into(),
            db_password: None,
        }
    }
}

impl DatabaseArgs {
    /// The database URL if a database is configured at all (by URL or host).
    pub fn configured(&self) -> Result<Option<ConnectionUrl>, ConfigError> {
        if let Some(url) = &self.database_url {
            return Ok(Some(url.clone()));
        }
        self.db_host
            .as_deref()
            .map(|host| self.postgres_url(host))
            .transpose()
    }

    /// The configured database, or PostgreSQL on this machine.
    pub fn url_or_local(&self) -> Result<ConnectionUrl, ConfigError> {
        match self.configured()? {
            Some(url) => Ok(url),
            None => self.postgres_url("127.0.0.1"),
        }
    }

    /// A `postgres://` URL from the parts, percent-encoding user and
    /// password. A host that does not make a URL is an error, never a URL
    /// without the user or password.
    fn postgres_url(&self, host: &str) -> Result<ConnectionUrl, ConfigError> {
        let bad_host = || ConfigError::BadHost(host.to_owned());
        let mut url =
            Url::parse(&format!("postgres://{host}:{}", self.db_port)).map_err(|_| bad_host())?;
        url.set_path(&self.db_name);
        url.set_username(&self.db_user).map_err(|()| bad_host())?;
        if let Some(password) = &self.db_password {
            url.set_password(Some(password.expose()))
                .map_err(|()| bad_host())?;
        }
        Ok(ConnectionUrl::new(url.to_string()))
    }
}

/// Several PostgreSQL primaries that share the votes (the worker and the
/// result service only): `DB_HOSTS`, each with the `DB_*` parts of
/// [`DatabaseArgs`] but the host (and the port, when an entry names one).
#[derive(Args, Clone, Debug, Default)]
pub struct DatabaseHostsArgs {
    /// Several PostgreSQL primaries, host[:port],host[:port],... (DB_PORT
    /// where no port is given; the same DB_NAME, DB_USER and DB_PASSWORD
    /// for each). The queue's shards are split into contiguous ranges over
    /// them, in this order, which must never change (docs/SCALING.md).
    #[arg(long = "db-hosts", env = "DB_HOSTS", value_delimiter = ',', value_parser = parse_host_optional_port)]
    pub db_hosts: Vec<(String, Option<u16>)>,
}

impl DatabaseHostsArgs {
    /// One URL per database: those of `DB_HOSTS` in order, or else the one
    /// database of `database` (configured, or PostgreSQL on this machine).
    pub fn urls(&self, database: &DatabaseArgs) -> Result<Vec<ConnectionUrl>, ConfigError> {
        if self.db_hosts.is_empty() {
            return Ok(vec![database.url_or_local()?]);
        }
        if database.database_url.is_some() || database.db_host.is_some() {
            return Err(ConfigError::HostsAndOneDatabase);
        }
        self.db_hosts
            .iter()
            .map(|(host, port)| {
                DatabaseArgs {
                    db_port: port.unwrap_or(database.db_port),
                    ..database.clone()
                }
                .postgres_url(host)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_url_from_parts_encodes_and_hides_the_password() {
        let args = DatabaseArgs {
            db_host: Some("db".into()),
            db_port: 5433,
            db_name: "votes".into(),
            db_user: "app".into(),
            db_password: Some(Secret::new("p@ss/word")),
            ..DatabaseArgs::default()
        };
        let url = args.configured().unwrap().unwrap();
        assert_eq!(url.expose(), "postgres://app:p%40ss%2Fword@db:5433/votes");
        assert_eq!(url.to_string(), "postgres://app:***@db:5433/votes");
        assert!(!format!("{args:?}").contains("p@ss"));
        assert!(!format!("{url:?}").contains("p%40ss"));
    }

    #[test]
    fn database_url_overrides_parts_and_nothing_configured_is_none() {
        let args = DatabaseArgs {
            database_url: Some(ConnectionUrl::new("sqlite::memory:")),
            db_host: Some("ignored".into()),
            ..DatabaseArgs::default()
        };
        assert_eq!(
            args.configured().unwrap().unwrap().expose(),
            "sqlite::memory:"
        );
        assert!(DatabaseArgs::default().configured().unwrap().is_none());
        let bad_host = DatabaseArgs {
            db_host: Some("db:5432".into()),
            db_password: Some(Secret::new("pw")),
            ..DatabaseArgs::default()
        };
        assert!(
            matches!(bad_host.url_or_local(), Err(ConfigError::BadHost(_))),
            "a host that makes no URL is an error, not a URL without the password"
        );
    }

    #[test]
    fn db_hosts_make_one_url_each_in_order_with_the_shared_parts() {
        let parts = DatabaseArgs {
            db_port: 5433,
            db_name: "votes".into(),
            db_user: "app".into(),
            db_password: Some(Secret::new("pw")),
            ..DatabaseArgs::default()
        };
        let hosts = DatabaseHostsArgs {
            db_hosts: ["pg-1", "pg-0:6000", "[::1]:7000", "::1", "[::2]"]
                .into_iter()
                .map(|raw| parse_host_optional_port(raw).unwrap())
                .collect(),
        };
        let urls: Vec<String> = hosts
            .urls(&parts)
            .unwrap()
            .iter()
            .map(|url| url.expose().to_owned())
            .collect();
        assert_eq!(
            urls,
            [
                "postgres://app:pw@pg-1:5433/votes",
                "postgres://app:pw@pg-0:6000/votes",
                "postgres://app:pw@[::1]:7000/votes",
                "postgres://app:pw@[::1]:5433/votes",
                "postgres://app:pw@[::2]:5433/votes",
            ]
        );
        // Unset: the one database, as before.
        assert_eq!(
            DatabaseHostsArgs::default().urls(&parts).unwrap(),
            [parts.url_or_local().unwrap()]
        );
        // With DB_HOST or DATABASE_URL as well: which one is meant?
        let with_host = DatabaseArgs {
            db_host: Some("db".into()),
            ..parts
        };
        assert!(matches!(
            hosts.urls(&with_host),
            Err(ConfigError::HostsAndOneDatabase)
        ));
        for bad in ["pg:0", "pg:99999", "pg:x", "user@pg", "pg/db", ""] {
            assert!(parse_host_optional_port(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn hosts_are_host_names_or_addresses_only() {
        assert_eq!(parse_host("redis").unwrap(), "redis");
        assert_eq!(parse_host(" 10.0.0.7 ").unwrap(), "10.0.0.7");
        assert_eq!(parse_host("::1").unwrap(), "[::1]");
        assert_eq!(parse_host("[::1]").unwrap(), "[::1]");
        for bad in ["", "  ", "db:5432", "user@db", "db/name", "a b"] {
            assert!(parse_host(bad).is_err(), "{bad:?}");
        }
        let args = DatabaseArgs {
            db_host: Some(parse_host("::1").unwrap()),
            db_password: Some(Secret::new("pw")),
            ..DatabaseArgs::default()
        };
        assert_eq!(
            args.url_or_local().unwrap().expose(),
            "postgres://postgres:pw@[::1]:5432/postgres"
        );
    }
}

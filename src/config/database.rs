//! Where the database is ([`DatabaseArgs`]): `DATABASE_URL`, or the
//! `DB_*` parts (the password kept in a [`Secret`]), turned into the one URL
//! the store connects to.

use clap::Args;
use thiserror::Error;
use url::Url;

use super::{ConnectionUrl, ConnectionUrlParser, Secret, parse::port_parser, parse_host};

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

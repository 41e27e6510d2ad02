//! Configuration shared by the binaries: each group is a clap [`Args`]
//! struct whose flags also read the environment names of the Kubernetes
//! manifests (`REDIS_HOST`, `DB_PASSWORD`, ...). A binary flattens the
//! groups it needs into its own `Cli`.
//!
//! Secrets (`DB_PASSWORD`, passwords inside URLs) are kept in [`Secret`] and
//! never reach `Debug` output, logs or `--help`.

use std::{fmt, net::SocketAddr};

use clap::Args;
use url::Url;

use crate::poll::{Poll, PollError, PollOption};

/// Default Redis port.
pub const DEFAULT_REDIS_PORT: u16 = 6379;
/// Default PostgreSQL port.
pub const DEFAULT_DB_PORT: u16 = 5432;
/// Default database, user: as in the original voting app.
pub const DEFAULT_DB_NAME: &str = "postgres";
/// Default database user.
pub const DEFAULT_DB_USER: &str = "postgres";
/// Default listen address of the vote service.
pub const DEFAULT_VOTE_LISTEN: &str = "0.0.0.0:5000";
/// Default listen address of the result service.
pub const DEFAULT_RESULT_LISTEN: &str = "0.0.0.0:5001";
/// Default listen address of the worker's health and stats server.
pub const DEFAULT_WORKER_LISTEN: &str = "0.0.0.0:8080";
/// SQLite database used by the all-in-one run when no database is set.
pub const DEFAULT_SQLITE_URL: &str = "sqlite://votemesh.sqlite?mode=rwc";

/// A value that must not be printed: `Debug` and `Display` show `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value itself, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self::new(s))
    }
}

/// A connection URL that may hold a password: [`fmt::Display`] shows it with
/// the password replaced by `***`; [`ConnectionUrl::expose`] gives the real one.
#[derive(Clone, PartialEq, Eq)]
pub struct ConnectionUrl(Secret);

impl ConnectionUrl {
    /// Wraps a URL.
    pub fn new(url: impl Into<String>) -> Self {
        Self(Secret::new(url))
    }

    /// The URL with its password, for the client library only.
    pub fn expose(&self) -> &str {
        self.0.expose()
    }

    /// The URL without its password, for logs and errors.
    pub fn redacted(&self) -> String {
        redact_url(self.expose())
    }
}

impl fmt::Display for ConnectionUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl fmt::Debug for ConnectionUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ConnectionUrl({})", self.redacted())
    }
}

/// Replaces the password of a URL by `***`; a string that does not parse as
/// a URL is hidden entirely, since it may hold anything.
pub fn redact_url(raw: &str) -> String {
    match Url::parse(raw) {
        Ok(mut url) => {
            if url.password().is_some() {
                let _ = url.set_password(Some("***"));
            }
            url.to_string()
        }
        Err(_) => "<unparsable url>".to_owned(),
    }
}

/// Where Redis is: `REDIS_URL`, or `REDIS_HOST` and `REDIS_PORT`.
#[derive(Args, Clone, Debug)]
pub struct RedisArgs {
    /// Redis URL such as redis://:password@redis:6379/0; overrides host and port.
    #[arg(long = "redis-url", env = "REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<Secret>,
    /// Redis host name.
    #[arg(long = "redis-host", env = "REDIS_HOST")]
    pub redis_host: Option<String>,
    /// Redis port.
    #[arg(long = "redis-port", env = "REDIS_PORT", default_value_t = DEFAULT_REDIS_PORT)]
    pub redis_port: u16,
}

impl Default for RedisArgs {
    fn default() -> Self {
        Self {
            redis_url: None,
            redis_host: None,
            redis_port: DEFAULT_REDIS_PORT,
        }
    }
}

impl RedisArgs {
    /// The Redis URL if Redis is configured at all (by URL or host).
    pub fn configured(&self) -> Option<ConnectionUrl> {
        if let Some(url) = &self.redis_url {
            return Some(ConnectionUrl::new(url.expose()));
        }
        self.redis_host
            .as_ref()
            .map(|host| ConnectionUrl::new(format!("redis://{host}:{}/", self.redis_port)))
    }

    /// The configured Redis, or the one on this machine's default port.
    pub fn url_or_local(&self) -> ConnectionUrl {
        self.configured().unwrap_or_else(|| {
            ConnectionUrl::new(format!("redis://127.0.0.1:{}/", self.redis_port))
        })
    }
}

/// Where the database is: `DATABASE_URL`, or the `DB_*` parts.
#[derive(Args, Clone, Debug)]
pub struct DatabaseArgs {
    /// Database URL (postgres://... or sqlite://...); overrides the DB_* parts.
    #[arg(long = "database-url", env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<Secret>,
    /// PostgreSQL host name.
    #[arg(long = "db-host", env = "DB_HOST")]
    pub db_host: Option<String>,
    /// PostgreSQL port.
    #[arg(long = "db-port", env = "DB_PORT", default_value_t = DEFAULT_DB_PORT)]
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
    pub fn configured(&self) -> Option<ConnectionUrl> {
        if let Some(url) = &self.database_url {
            return Some(ConnectionUrl::new(url.expose()));
        }
        self.db_host.as_deref().map(|host| self.postgres_url(host))
    }

    /// The configured database, or PostgreSQL on this machine.
    pub fn url_or_local(&self) -> ConnectionUrl {
        self.configured()
            .unwrap_or_else(|| self.postgres_url("127.0.0.1"))
    }

    /// A `postgres://` URL from the parts, percent-encoding user and password.
    fn postgres_url(&self, host: &str) -> ConnectionUrl {
        let fallback = || {
            ConnectionUrl::new(format!(
                "postgres://{host}:{}/{}",
                self.db_port, self.db_name
            ))
        };
        let Ok(mut url) = Url::parse(&format!("postgres://{host}:{}", self.db_port)) else {
            return fallback();
        };
        url.set_path(&self.db_name);
        let _ = url.set_username(&self.db_user);
        if let Some(password) = &self.db_password {
            let _ = url.set_password(Some(password.expose()));
        }
        ConnectionUrl::new(url.to_string())
    }
}

/// The poll's options: `OPTION_A`, `OPTION_B` and any `EXTRA_OPTIONS`.
#[derive(Args, Clone, Debug)]
pub struct PollArgs {
    /// Label of option "a".
    #[arg(long = "option-a", env = "OPTION_A", default_value = "Cats")]
    pub option_a: String,
    /// Label of option "b".
    #[arg(long = "option-b", env = "OPTION_B", default_value = "Dogs")]
    pub option_b: String,
    /// More options as id=label pairs, comma-separated (e.g. c=Birds,d=Fish).
    #[arg(long = "extra-options", env = "EXTRA_OPTIONS", value_delimiter = ',')]
    pub extra_options: Vec<String>,
}

impl Default for PollArgs {
    fn default() -> Self {
        Self {
            option_a: "Cats".into(),
            option_b: "Dogs".into(),
            extra_options: Vec::new(),
        }
    }
}

impl PollArgs {
    /// The poll these settings describe.
    pub fn poll(&self) -> Result<Poll, PollError> {
        let mut options = vec![
            PollOption::new("a", &self.option_a),
            PollOption::new("b", &self.option_b),
        ];
        for pair in self.extra_options.iter().filter(|p| !p.trim().is_empty()) {
            options.push(PollOption::parse_pair(pair)?);
        }
        Poll::new(options)
    }
}

/// This instance's name: the host name (a pod's name on Kubernetes, where
/// `HOSTNAME` is set), used as the worker id and shown as `served_by`.
pub fn instance_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "votemesh".to_owned())
}

/// Every environment variable a command reads (from its clap definition),
/// so deployment files can be checked against what binaries really read.
pub fn env_names(command: &clap::Command) -> Vec<String> {
    let mut names: Vec<String> = command
        .get_arguments()
        .filter_map(|argument| argument.get_env())
        .map(|name| name.to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Parses a listen address such as `0.0.0.0:5000`.
pub fn parse_listen_addr(raw: &str) -> Result<SocketAddr, String> {
    raw.parse()
        .map_err(|error| format!("{raw:?} is not an address like 0.0.0.0:5000: {error}"))
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
        let url = args.configured().unwrap();
        assert_eq!(url.expose(), "postgres://app:p%40ss%2Fword@db:5433/votes");
        assert_eq!(url.to_string(), "postgres://app:***@db:5433/votes");
        assert!(!format!("{args:?}").contains("p@ss"));
        assert!(!format!("{url:?}").contains("p%40ss"));
    }

    #[test]
    fn database_url_overrides_parts_and_nothing_configured_is_none() {
        let args = DatabaseArgs {
            database_url: Some(Secret::new("sqlite::memory:")),
            db_host: Some("ignored".into()),
            ..DatabaseArgs::default()
        };
        assert_eq!(args.configured().unwrap().expose(), "sqlite::memory:");
        assert!(DatabaseArgs::default().configured().is_none());
    }

    #[test]
    fn redis_url_from_host_and_port() {
        let args = RedisArgs {
            redis_host: Some("redis".into()),
            redis_port: 6380,
            ..RedisArgs::default()
        };
        assert_eq!(args.configured().unwrap().expose(), "redis://redis:6380/");
        assert!(RedisArgs::default().configured().is_none());
        assert_eq!(
            redact_url("redis://:hunter2@redis:6379/0"),
            "redis://:***@redis:6379/0"
        );
    }

    #[test]
    fn poll_from_args_with_extra_options() {
        let args = PollArgs {
            extra_options: vec!["c=Birds".into()],
            ..PollArgs::default()
        };
        let poll = args.poll().unwrap();
        assert_eq!(poll.ids(), "a, b, c");
        assert_eq!(poll.option("a").unwrap().label, "Cats");
    }
}

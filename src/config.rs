//! Configuration shared by the binaries: each group is a clap [`Args`]
//! struct whose flags also read the environment names of the Kubernetes
//! manifests (`REDIS_HOST`, `DB_PASSWORD`, ...). A binary flattens the
//! groups it needs into its own `Cli` and reads it with [`parse_cli`],
//! which adds two rules to clap's:
//!
//! - an environment variable set to the empty string counts as unset
//!   (compose and CI files often write `DB_HOST=`), for every setting: the
//!   default applies, and nothing built from the other settings changes;
//! - a value that does not parse (`REDIS_PORT=abc`, `DB_PORT=99999`, a bad
//!   URL or host) stops the binary at once with an error naming the
//!   variable, before it logs or serves anything.
//!
//! Secrets (`DB_PASSWORD`, passwords inside URLs) are kept in [`Secret`] and
//! never reach `Debug` output, logs, `--help` or a parse error.

use std::{ffi::OsStr, fmt, net::SocketAddr, path::PathBuf};

use clap::{Arg, Args, Command, CommandFactory, builder::TypedValueParser};
use thiserror::Error;
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
/// Default listen address of the plaintext health listener a gRPC server
/// opens when mutual TLS is on (the kubelet's gRPC probes speak no TLS).
pub const DEFAULT_HEALTH_LISTEN: &str = "0.0.0.0:8081";
/// Where clients (the gateway, the load generator) find the vote service
/// by default: the local run's.
pub const DEFAULT_VOTE_ADDR: &str = "http://127.0.0.1:5000";
/// Where clients find the result service by default: the local run's.
pub const DEFAULT_RESULT_ADDR: &str = "http://127.0.0.1:5001";
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

impl std::str::FromStr for ConnectionUrl {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self::new(s))
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

/// A setting that cannot be turned into a connection URL.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// A host name that is not one (set in code; the command line checks it
    /// with [`parse_host`]).
    #[error("{0:?} is not a host name or IP address")]
    BadHost(String),
}

/// Reads the command line and the environment into `C` (a binary's `Cli`),
/// with the rules of this module: an empty variable is unset, and an error
/// names the variable. On an error (or `--help`) it prints and exits, as
/// clap's own `parse` does.
pub fn parse_cli<C: clap::Parser>() -> C {
    let mut command = command::<C>();
    let matches = command.get_matches_mut();
    C::from_arg_matches(&matches).unwrap_or_else(|error| error.format(&mut command).exit())
}

/// The clap command of `C` with the rules of [`parse_cli`]: every argument
/// read from an environment variable shows the variable as its value name
/// (so `--help` and every parse error name it: `--listen
/// <VOTE_LISTEN_ADDR>`), and one whose variable is set but empty does not
/// read it, so its default applies.
pub fn command<C: CommandFactory>() -> Command {
    C::command().mut_args(|arg| empty_env_is_unset(arg, |name| std::env::var_os(name)))
}

/// One argument under the rules of [`command`], reading the environment
/// through `var`.
fn empty_env_is_unset(arg: Arg, var: impl Fn(&OsStr) -> Option<std::ffi::OsString>) -> Arg {
    let Some(name) = arg.get_env().map(OsStr::to_owned) else {
        return arg;
    };
    let arg = arg.value_name(name.to_string_lossy().into_owned());
    if var(&name).is_some_and(|value| value.is_empty()) {
        // clap would hand "" to the value parser; unset, the default applies.
        arg.env(None)
    } else {
        arg
    }
}

/// Parses a host name or IP address (`REDIS_HOST`, `DB_HOST`): a domain
/// name, an IPv4 address, or an IPv6 address with or without brackets.
/// `host:port`, user names and paths are refused, so they cannot slip into
/// the URL built from the parts.
pub fn parse_host(raw: &str) -> Result<String, String> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Err("the host name is empty".into());
    }
    if let Ok(ip) = raw.parse::<std::net::Ipv6Addr>() {
        return Ok(format!("[{ip}]"));
    }
    url::Host::parse(raw)
        .map(|host| host.to_string())
        .map_err(|error| {
            format!("{raw:?} is not a host name or IP address ({error}); give the port separately")
        })
}

/// Parses a listen or connection port (`REDIS_PORT`, `DB_PORT`): 1 to 65535.
fn port_parser() -> clap::builder::RangedI64ValueParser<u16> {
    clap::value_parser!(u16).range(1..)
}

/// A value parser for a connection URL that may hold a password
/// (`REDIS_URL`, `DATABASE_URL`): it checks the URL parses and has one of
/// `schemes`, and its errors never repeat the value.
#[derive(Clone, Copy, Debug)]
pub struct ConnectionUrlParser {
    /// What the URL is for, for the error message ("Redis").
    what: &'static str,
    /// The schemes the client library accepts.
    schemes: &'static [&'static str],
}

impl ConnectionUrlParser {
    /// Redis URLs, as the redis crate reads them.
    pub const REDIS: Self = Self {
        what: "Redis",
        schemes: &["redis", "rediss", "redis+unix", "unix", "valkey", "valkeys"],
    };
    /// Database URLs: PostgreSQL or SQLite.
    pub const DATABASE: Self = Self {
        what: "database",
        schemes: &["postgres", "postgresql", "sqlite"],
    };

    /// Checks `raw`; the error says why without repeating it.
    pub fn check(&self, raw: &str) -> Result<ConnectionUrl, String> {
        let url = Url::parse(raw.trim()).map_err(|error| {
            format!(
                "not a valid {} URL ({error}); the value is not shown as it may hold a password",
                self.what
            )
        })?;
        if !self.schemes.contains(&url.scheme()) {
            return Err(format!(
                "a {} URL starts with one of {}, not {}:",
                self.what,
                self.schemes
                    .iter()
                    .map(|scheme| format!("{scheme}:"))
                    .collect::<Vec<_>>()
                    .join(", "),
                url.scheme()
            ));
        }
        if url.scheme().starts_with("redis") && !url.scheme().contains("unix") && !url.has_host() {
            return Err(format!("a {} URL needs a host", self.what));
        }
        Ok(ConnectionUrl::new(raw.trim()))
    }
}

impl TypedValueParser for ConnectionUrlParser {
    type Value = ConnectionUrl;

    fn parse_ref(
        &self,
        command: &Command,
        arg: Option<&Arg>,
        value: &OsStr,
    ) -> Result<Self::Value, clap::Error> {
        let name = arg.map_or_else(|| "the URL".to_owned(), ToString::to_string);
        let reason = match value.to_str() {
            Some(raw) => match self.check(raw) {
                Ok(url) => return Ok(url),
                Err(reason) => reason,
            },
            None => "not valid UTF-8".to_owned(),
        };
        let mut error = clap::Error::raw(
            clap::error::ErrorKind::ValueValidation,
            format!("invalid value for '{name}': {reason}\n"),
        );
        error = error.with_cmd(command);
        Err(error)
    }
}

/// Parses the address of a gRPC server (an OTLP collector, the vote or
/// result service): an `http://` or `https://` URL with a host.
pub fn parse_endpoint(raw: &str) -> Result<String, String> {
    match Url::parse(raw.trim()) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.has_host() => {
            Ok(raw.trim().to_owned())
        }
        Ok(url) => Err(format!(
            "an endpoint is an http:// or https:// URL with a host, not {}:",
            url.scheme()
        )),
        Err(error) => Err(format!("not a URL: {error}")),
    }
}

/// Where Redis is: `REDIS_URL`, or `REDIS_HOST` and `REDIS_PORT`.
#[derive(Args, Clone, Debug)]
pub struct RedisArgs {
    /// Redis URL such as redis://:password@redis:6379/0; overrides host and port.
    #[arg(long = "redis-url", env = "REDIS_URL", hide_env_values = true, value_parser = ConnectionUrlParser::REDIS)]
    pub redis_url: Option<ConnectionUrl>,
    /// Redis host name.
    #[arg(long = "redis-host", env = "REDIS_HOST", value_parser = parse_host)]
    pub redis_host: Option<String>,
    /// Redis port.
    #[arg(long = "redis-port", env = "REDIS_PORT", default_value_t = DEFAULT_REDIS_PORT, value_parser = port_parser())]
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
            return Some(url.clone());
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

/// This component's identity for mutual TLS: its certificate and key (used
/// as server and as client) and the CA it trusts. All three or none: unset
/// means plaintext. See [`crate::tls`].
#[derive(Args, Clone, Debug, Default)]
pub struct TlsArgs {
    /// This component's certificate chain (PEM), as server and as client.
    #[arg(long = "tls-cert-file", env = "TLS_CERT_FILE")]
    pub cert_file: Option<PathBuf>,
    /// The private key of that certificate (PEM).
    #[arg(long = "tls-key-file", env = "TLS_KEY_FILE")]
    pub key_file: Option<PathBuf>,
    /// The CA certificates this component trusts for its peers (PEM).
    #[arg(long = "tls-ca-file", env = "TLS_CA_FILE")]
    pub ca_file: Option<PathBuf>,
}

/// A gRPC server's mutual TLS: its identity, who may call its API, and the
/// plaintext health listener for the kubelet.
#[derive(Args, Clone, Debug)]
pub struct TlsServerArgs {
    /// Certificate, key and CA.
    #[command(flatten)]
    pub identity: TlsArgs,
    /// Identities (DNS or URI SANs, e.g. spiffe://votemesh/gateway) allowed
    /// to call this component's API, comma-separated; empty: any
    /// certificate from the CA. Health and reflection stay open.
    #[arg(
        long = "tls-allowed-clients",
        env = "TLS_ALLOWED_CLIENTS",
        value_delimiter = ','
    )]
    pub allowed_clients: Vec<String>,
    /// With TLS on: address of the plaintext listener that serves only
    /// gRPC health (and /metrics) for the kubelet's probes.
    #[arg(long = "health-listen", env = "HEALTH_LISTEN_ADDR", default_value = DEFAULT_HEALTH_LISTEN, value_parser = parse_listen_addr)]
    pub health_listen: SocketAddr,
}

impl Default for TlsServerArgs {
    fn default() -> Self {
        Self {
            identity: TlsArgs::default(),
            allowed_clients: Vec::new(),
            health_listen: DEFAULT_HEALTH_LISTEN
                .parse()
                .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 8081))),
        }
    }
}

impl TlsServerArgs {
    /// The allowed identities, blanks (a trailing comma) left out.
    pub fn allowed(&self) -> Vec<String> {
        self.allowed_clients
            .iter()
            .map(|name| name.trim().to_owned())
            .filter(|name| !name.is_empty())
            .collect()
    }
}

/// The poll's options: `OPTION_A`, `OPTION_B` and any `EXTRA_OPTIONS`.
#[derive(Args, Clone, Debug)]
pub struct PollArgs {
    /// Label of option "a".
    #[arg(long = "option-a", env = "OPTION_A", default_value = "Cats", value_parser = parse_label)]
    pub option_a: String,
    /// Label of option "b".
    #[arg(long = "option-b", env = "OPTION_B", default_value = "Dogs", value_parser = parse_label)]
    pub option_b: String,
    /// More options as id=label pairs, comma-separated (e.g. c=Birds,d=Fish).
    #[arg(long = "extra-options", env = "EXTRA_OPTIONS", value_delimiter = ',', value_parser = parse_option_pair)]
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

/// Checks an option's label (`OPTION_A`, `OPTION_B`): not blank.
fn parse_label(raw: &str) -> Result<String, String> {
    if raw.trim().is_empty() {
        return Err("an option's label cannot be blank".into());
    }
    Ok(raw.trim().to_owned())
}

/// Checks one `id=label` pair of `EXTRA_OPTIONS` (a blank one, as after a
/// trailing comma, is skipped later).
fn parse_option_pair(raw: &str) -> Result<String, String> {
    if !raw.trim().is_empty() {
        let option = PollOption::parse_pair(raw).map_err(|error| error.to_string())?;
        Poll::new(vec![option]).map_err(|error| error.to_string())?;
    }
    Ok(raw.to_owned())
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

    #[test]
    fn an_empty_variable_drops_the_environment_and_names_the_value() {
        let arg = Arg::new("db_host")
            .long("db-host")
            .env("VOTEMESH_TEST_NEVER_SET");
        let empty = empty_env_is_unset(arg.clone(), |_| Some("".into()));
        assert_eq!(empty.get_env(), None);
        let set = empty_env_is_unset(arg, |_| Some("db".into()));
        assert_eq!(set.get_env(), Some(OsStr::new("VOTEMESH_TEST_NEVER_SET")));
        assert_eq!(
            set.get_value_names().map(<[_]>::to_vec),
            Some(vec!["VOTEMESH_TEST_NEVER_SET".into()])
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

//! The value parsers the argument groups share: host names, ports,
//! connection URLs (whose errors never repeat a password), gRPC endpoints
//! and listen addresses. Each turns a malformed value into an error that
//! names the setting, before the binary logs or serves anything.

use std::{ffi::OsStr, net::SocketAddr};

use clap::{Arg, Command, builder::TypedValueParser};
use url::Url;

use super::ConnectionUrl;

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

/// Parses a `host:port` address (a seed node of `REDIS_CLUSTER_NODES`):
/// a host as [`parse_host`] takes it (an IPv6 address in brackets) and a
/// port from 1 to 65535.
pub fn parse_host_port(raw: &str) -> Result<String, String> {
    let raw = raw.trim();
    let (host, port) = raw
        .rsplit_once(':')
        .ok_or_else(|| format!("{raw:?} is not host:port"))?;
    let host = parse_host(host.trim_start_matches('[').trim_end_matches(']'))?;
    match port.parse::<u16>() {
        Ok(port) if port > 0 => Ok(format!("{host}:{port}")),
        _ => Err(format!("{raw:?} has no port from 1 to 65535")),
    }
}

/// Parses `host[:port]` (an entry of `DB_HOSTS`): a host as
/// [`parse_host`] takes it, then, if given, a port from 1 to 65535. An
/// IPv6 address with a port is written in brackets (`[::1]:5433`); without
/// one, brackets are optional.
pub fn parse_host_optional_port(raw: &str) -> Result<(String, Option<u16>), String> {
    let raw = raw.trim();
    let bare_ipv6 = raw.parse::<std::net::Ipv6Addr>().is_ok();
    let split = match raw.rsplit_once(':') {
        Some((host, port)) if !bare_ipv6 && (!host.contains(':') || host.ends_with(']')) => {
            Some((host, port))
        }
        _ => None,
    };
    let Some((host, port)) = split else {
        return Ok((
            parse_host(raw.trim_start_matches('[').trim_end_matches(']'))?,
            None,
        ));
    };
    let host = parse_host(host.trim_start_matches('[').trim_end_matches(']'))?;
    match port.parse::<u16>() {
        Ok(port) if port > 0 => Ok((host, Some(port))),
        _ => Err(format!(
            "{raw:?} has no port from 1 to 65535 after its last ':'"
        )),
    }
}

/// Parses a listen or connection port (`REDIS_PORT`, `DB_PORT`): 1 to 65535.
pub(super) fn port_parser() -> clap::builder::RangedI64ValueParser<u16> {
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

/// Parses a listen address such as `[::]:5000` (every address, IPv6 and
/// IPv4), `0.0.0.0:5000` or `127.0.0.1:5000`.
pub fn parse_listen_addr(raw: &str) -> Result<SocketAddr, String> {
    raw.parse().map_err(|error| {
        format!("{raw:?} is not an address like [::]:5000 or 127.0.0.1:5000: {error}")
    })
}

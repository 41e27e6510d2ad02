//! Where Redis is ([`RedisArgs`]): `REDIS_URL`, or `REDIS_HOST` and
//! `REDIS_PORT`, turned into the one URL the queue connects to.

use clap::Args;

use super::{ConnectionUrl, ConnectionUrlParser, parse::port_parser, parse_host};

/// Default Redis port.
pub const DEFAULT_REDIS_PORT: u16 = 6379;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::redact_url;

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
}

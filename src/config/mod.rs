//! Configuration: every command-line flag and environment variable of the
//! binaries. Each group of settings is a clap [`Args`](clap::Args) struct
//! whose flags also read the environment names of the Kubernetes manifests
//! (`REDIS_HOST`, `DB_PASSWORD`, ...). A binary flattens the groups it
//! needs into its own `Cli` and reads it with [`parse_cli`], which adds
//! two rules to clap's:
//!
//! - an environment variable set to the empty string counts as unset
//!   (compose and CI files often write `DB_HOST=`), for every setting: the
//!   default applies, and nothing built from the other settings changes;
//! - a value that does not parse (`REDIS_PORT=abc`, `DB_PORT=99999`, a bad
//!   URL or host) stops the binary at once with an error naming the
//!   variable, before it logs or serves anything.
//!
//! Where a group lives: here are the groups that several modules or
//! binaries read (where Redis and the database are, the poll's options,
//! mutual TLS), one file per group, with the rules and value parsers they
//! share. A group that one module alone acts on lives in that module, next
//! to the code that reads it: `TelemetryArgs` in [`crate::telemetry`],
//! `ServerArgs` in [`crate::component`], `SelfCheckArgs` in
//! [`crate::client::selfcheck`]; and a group that one component alone has
//! lives in that component's crate (the gateway's edge limits, the result
//! service's refresh interval). Wherever it lives, each default is written
//! once, as a named constant beside its group, used by clap's
//! `default_value` and by `Default`.
//!
//! - [`RedisArgs`] (`redis.rs`), [`DatabaseArgs`] (`database.rs`): where
//!   the queue and the database are, turned into one connection URL each;
//! - [`TlsArgs`], [`TlsServerArgs`] (`tls.rs`): mutual TLS;
//! - [`PollArgs`] (`poll.rs`): the poll's options;
//! - `addr.rs`: the components' default addresses;
//! - `parse.rs`: the value parsers the groups share; `secret.rs`:
//!   [`Secret`] and [`ConnectionUrl`], which keep passwords (`DB_PASSWORD`,
//!   passwords inside URLs) out of `Debug` output, logs, `--help` and parse
//!   errors.

mod addr;
mod database;
mod parse;
mod poll;
mod redis;
mod secret;
mod tls;

use std::ffi::OsStr;

use clap::{Arg, Command, CommandFactory};

pub use self::{
    addr::{
        DEFAULT_RESULT_ADDR, DEFAULT_RESULT_LISTEN, DEFAULT_VOTE_ADDR, DEFAULT_VOTE_LISTEN,
        DEFAULT_WORKER_LISTEN,
    },
    database::{
        ConfigError, DEFAULT_DB_NAME, DEFAULT_DB_PORT, DEFAULT_DB_USER, DEFAULT_SQLITE_URL,
        DatabaseArgs, DatabaseHostsArgs,
    },
    parse::{
        ConnectionUrlParser, parse_endpoint, parse_host, parse_host_optional_port, parse_host_port,
        parse_listen_addr,
    },
    poll::{DEFAULT_OPTION_A, DEFAULT_OPTION_B, PollArgs},
    redis::{
        DEFAULT_CLUSTER_REPLICA_ACKS, DEFAULT_CLUSTER_SHARDS, DEFAULT_REDIS_PORT, QueueArgs,
        QueueLayout, RedisArgs,
    },
    secret::{ConnectionUrl, Secret, redact_url},
    tls::{DEFAULT_HEALTH_LISTEN, TlsArgs, TlsServerArgs},
};

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

#[cfg(test)]
mod tests {
    use super::*;

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
}

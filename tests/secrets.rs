//! The database password never shows: not in configuration dumps, not in
//! the error for a malformed URL. (What a running binary prints while its
//! database refuses it is checked on the real worker process, in
//! `services/worker/tests/secrets.rs`.)

use clap::builder::TypedValueParser;
use votemesh::config::{ConnectionUrlParser, DatabaseArgs, RedisArgs, Secret};

const PASSWORD: &str = "s3cret-Pa55word";

#[test]
fn configuration_dumps_do_not_print_the_password() {
    let args = DatabaseArgs {
        db_host: Some("127.0.0.1".into()),
        db_password: Some(Secret::new(PASSWORD)),
        ..DatabaseArgs::default()
    };
    let url = args.configured().unwrap().unwrap();
    assert!(url.expose().contains(PASSWORD), "the client gets it");
    let shown = format!("{args:?} {url} {url:?}");
    assert!(
        shown.contains("postgres://postgres:***@127.0.0.1:5432/postgres"),
        "{shown}"
    );
    assert!(!shown.contains(PASSWORD), "{shown}");
}

#[test]
fn a_malformed_url_is_refused_without_repeating_it() {
    let command = clap::Command::new("votemesh");
    let cases = [
        (
            ConnectionUrlParser::DATABASE,
            format!("postgres://app:{PASSWORD}@db:port/votes"),
        ),
        (
            ConnectionUrlParser::DATABASE,
            format!("mysql://app:{PASSWORD}@db/votes"),
        ),
        (
            ConnectionUrlParser::REDIS,
            format!("redis://:{PASSWORD}@redis:99999/0"),
        ),
        (ConnectionUrlParser::REDIS, format!("{PASSWORD}@redis")),
    ];
    for (parser, raw) in cases {
        let error = parser
            .parse_ref(&command, None, std::ffi::OsStr::new(&raw))
            .unwrap_err()
            .to_string();
        assert!(error.contains("invalid value"), "{error}");
        assert!(!error.contains(PASSWORD), "{error}");
    }
    let redis = RedisArgs {
        redis_url: Some(
            ConnectionUrlParser::REDIS
                .check(&format!("redis://:{PASSWORD}@redis:6379/0"))
                .unwrap(),
        ),
        ..RedisArgs::default()
    };
    assert!(!format!("{redis:?}").contains(PASSWORD));
}

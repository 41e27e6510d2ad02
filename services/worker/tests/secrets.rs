//! The database password never shows in what a running worker prints,
//! even while its database refuses it: the worker binary runs as a real
//! process against a database that is down, with the password in
//! `DB_PASSWORD` and in `DATABASE_URL`, at the most verbose log level, until
//! it has logged a real connection failure.

use votemesh_testing::{
    RedisServer,
    process::{free_port, output_until},
};

const PASSWORD: &str = "s3cret-Pa55word";
/// What the worker logs when the database does not answer.
const FAILED: &str = "cannot migrate the database yet";

async fn worker_output(redis: &RedisServer, env: &[(&str, String)]) -> String {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_votemesh-worker"));
    command
        .env("REDIS_URL", redis.url().expose())
        .env("WORKER_LISTEN_ADDR", "127.0.0.1:0")
        .env("RUST_LOG", "debug,sqlx=debug,sea_orm=debug");
    for (name, value) in env {
        command.env(name, value);
    }
    let (code, output) = output_until(command, FAILED).await;
    assert!(output.contains(FAILED), "(exit {code:?}):\n{output}");
    output
}

#[tokio::test]
async fn a_worker_whose_database_is_down_never_prints_the_password() {
    let redis = RedisServer::start().await.unwrap();
    // Nothing listens there: every connection attempt is refused.
    let port = free_port().await.unwrap();

    let from_parts = worker_output(
        &redis,
        &[
            ("DB_HOST", "127.0.0.1".into()),
            ("DB_PORT", port.to_string()),
            ("DB_USER", "app".into()),
            ("DB_PASSWORD", PASSWORD.into()),
        ],
    )
    .await;
    let from_url = worker_output(
        &redis,
        &[(
            "DATABASE_URL",
            format!("postgres://app:{PASSWORD}@127.0.0.1:{port}/votes"),
        )],
    )
    .await;
    for (output, url) in [
        (
            from_parts,
            format!("postgres://app:***@127.0.0.1:{port}/postgres"),
        ),
        (
            from_url,
            format!("postgres://app:***@127.0.0.1:{port}/votes"),
        ),
    ] {
        assert!(output.contains(&url), "it says where it connects: {output}");
        assert!(!output.contains(PASSWORD), "{output}");
    }
}

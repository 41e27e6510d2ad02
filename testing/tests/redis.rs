//! The harness' Redis against a real redis-server: restarts that keep
//! their port, or say why they cannot, and waiting for blocked clients.

use std::time::Duration;

use tokio::net::TcpListener;
use votemesh_testing::RedisServer;

/// A restart keeps the port the code under test was given, waiting for it
/// while another process holds it for a moment.
#[tokio::test]
async fn a_restart_waits_for_its_port_to_come_free() {
    let mut redis = RedisServer::start().await.unwrap();
    let port = redis.port();
    redis.stop().await;
    let holder = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    let release = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        drop(holder);
    });
    redis.restart().await.unwrap();
    release.await.unwrap();
    assert_eq!(redis.port(), port);
    let reply = redis.command(&["PING"]).await.unwrap();
    assert!(reply.starts_with("+PONG"), "{reply}");
}

/// A port held for good fails the restart with an error that says so,
/// instead of a server on another port the code under test cannot find.
#[tokio::test]
async fn a_restart_whose_port_stays_taken_fails_and_says_why() {
    let mut redis = RedisServer::start().await.unwrap();
    redis.stop().await;
    let _holder = TcpListener::bind(("127.0.0.1", redis.port()))
        .await
        .unwrap();
    let error = redis.restart().await.unwrap_err().to_string();
    assert!(
        error.contains("cannot restart on the port it had") && error.contains("in use"),
        "{error}"
    );
}

/// A blocking command is seen blocked while it waits, and no longer once
/// a value reached it.
#[tokio::test]
async fn a_waiting_blmove_is_a_blocked_client_until_a_value_arrives() {
    let redis = RedisServer::start().await.unwrap();
    assert_eq!(redis.blocked_clients().await.unwrap(), 0);
    let port = redis.port();
    let blmove = tokio::spawn(async move {
        RedisServer::command_on(port, &["BLMOVE", "from", "to", "RIGHT", "LEFT", "10"]).await
    });
    redis.wait_for_blocked_clients(1).await.unwrap();
    redis.command(&["LPUSH", "from", "v1"]).await.unwrap();
    assert!(blmove.await.unwrap().unwrap().contains("v1"));
    assert_eq!(redis.blocked_clients().await.unwrap(), 0);
}

//! How a Redis client is built: the one place the URL and the TLS settings
//! become a [`redis::Client`], for both producer paths (the
//! [`super::pusher`]'s multiplexed connection and the bb8 pool of
//! [`super::redis`]).
//!
//! ```text
//! REDIS_URL ─┬─ redis://  ─────────────────────────────► plaintext client
//!            └─ rediss:// ─┬─ TLS_* set ─► server verified against
//!                          │               TLS_CA_FILE; the component's
//!                          │               certificate presented if Redis
//!                          │               asks (tls-auth-clients)
//!                          └─ TLS_* unset ─► server verified against the
//!                                            system's CA store
//! ```
//!
//! The server's certificate must name the host of the URL (`rediss://redis:6379`:
//! a DNS SAN `redis`). The pool and the pusher build a client from the
//! files current at each new connection, so a rotated identity reaches
//! every connection made after the change.
//!
//! Every connection, the pool's (the probe's PING, the worker's commands)
//! and the pusher's, is opened with [`connection_config`]: at most
//! [`CONNECTION_TIMEOUT`] to connect and [`RESPONSE_TIMEOUT`] for each
//! answer. These bounds are ours, set here, not the client library's
//! defaults (which a new release may change): CastVote's UNAVAILABLE
//! within a second when Redis does not answer, and the worker's longest
//! blocking wait (`MAX_BLOCKING_WAIT`, below the response timeout), are
//! derived from them.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use bb8_redis::{
    bb8,
    redis::{
        self, AsyncConnectionConfig, Client, ClientTlsConfig, ConnectionAddr, IntoConnectionInfo,
        ProtocolVersion, RedisError, TlsCertificates, aio::MultiplexedConnection,
    },
};

use super::QueueError;
use crate::{config::ConnectionUrl, tls::Tls};

/// Longest wait for Redis' answer to one command, on every connection: a
/// command unanswered by then fails as a timeout (the command may still
/// run: [`super::QueueError::Unconfirmed`]), and the connection is kept.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_millis(500);

/// Longest a new connection may take to open (TCP, TLS, the handshake with
/// Redis): a Redis host that does not answer at all is reported
/// unavailable after this long, not after the system's TCP timeout.
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(1);

/// The settings every votemesh connection to Redis is opened with:
/// [`CONNECTION_TIMEOUT`] and [`RESPONSE_TIMEOUT`]. Callers add their own
/// (the pusher its push sender).
pub fn connection_config() -> AsyncConnectionConfig {
    AsyncConnectionConfig::new()
        .set_connection_timeout(Some(CONNECTION_TIMEOUT))
        .set_response_timeout(Some(RESPONSE_TIMEOUT))
}

/// A Redis client for `url` speaking `protocol`. A `rediss://` URL is
/// verified against `tls`'s CA and presents its certificate when `tls` is
/// set, and against the system's CA store otherwise; a `redis://` URL is
/// plaintext whatever `tls` says. Nothing is connected yet.
pub fn client(
    url: &ConnectionUrl,
    tls: Option<&Tls>,
    protocol: ProtocolVersion,
) -> Result<Client, RedisError> {
    let info = url.expose().into_connection_info()?;
    let settings = info.redis_settings().clone().set_protocol(protocol);
    let info = info.set_redis_settings(settings);
    match (info.addr(), tls) {
        (ConnectionAddr::TcpTls { .. }, Some(tls)) => {
            let pem = tls.pem();
            Client::build_with_tls(
                info,
                TlsCertificates {
                    client_tls: Some(ClientTlsConfig {
                        client_cert: pem.cert,
                        client_key: pem.key,
                    }),
                    root_cert: Some(pem.ca),
                },
            )
        }
        _ => Client::open(info),
    }
}

/// Whether `url` asks for TLS (`rediss://`, `valkeys://`).
pub fn is_tls(url: &ConnectionUrl) -> bool {
    url.expose()
        .into_connection_info()
        .is_ok_and(|info| matches!(info.addr(), ConnectionAddr::TcpTls { .. }))
}

/// The bb8 connection manager of the Redis pool: like bb8-redis's, but
/// each new connection is made by a client from [`client`] with the TLS
/// identity current at that moment, and a failure to connect is logged
/// (at info: the component warns of the outage itself, once) once per
/// distinct reason, so the reason is on record (a certificate Redis' CA
/// does not match, a plaintext URL sent to a TLS port) where the readiness
/// probe only sees that Redis does not answer.
#[derive(Clone, Debug)]
pub struct RedisManager {
    url: ConnectionUrl,
    tls: Option<Tls>,
    /// The reason of the last failed connection, until one succeeds.
    last_failure: Arc<Mutex<Option<String>>>,
}

impl RedisManager {
    /// A manager for `url`, checked now (a bad URL or TLS setting is an
    /// error here, not at the first connection).
    pub fn new(url: &ConnectionUrl, tls: Option<Tls>) -> Result<Self, RedisError> {
        client(url, tls.as_ref(), ProtocolVersion::RESP2)?;
        Ok(Self {
            url: url.clone(),
            tls,
            last_failure: Arc::default(),
        })
    }

    /// Logs `error` unless it is the reason logged last.
    fn report(&self, error: &RedisError) {
        let reason = describe(&self.url, error);
        let mut last = self
            .last_failure
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if last.as_deref() != Some(reason.as_str()) {
            tracing::info!(redis = %self.url, %reason, "cannot connect to Redis");
            *last = Some(reason);
        }
    }
}

/// Why a connection to `url` failed, with a hint where the error alone
/// misleads: a `redis://` URL sent to a TLS port reads as a dropped
/// connection or a garbled reply.
pub fn describe(url: &ConnectionUrl, error: &RedisError) -> String {
    if is_tls(url) || error.is_connection_refusal() || error.is_timeout() {
        error.to_string()
    } else {
        format!("{error} (if this Redis requires TLS, use a rediss:// URL)")
    }
}

impl bb8::ManageConnection for RedisManager {
    type Connection = MultiplexedConnection;
    type Error = RedisError;

    async fn connect(&self) -> Result<Self::Connection, Self::Error> {
        let connected = client(&self.url, self.tls.as_ref(), ProtocolVersion::RESP2)?
            .get_multiplexed_async_connection_with_config(&connection_config())
            .await;
        match &connected {
            Ok(_) => {
                self.last_failure
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .take();
            }
            Err(error) => self.report(error),
        }
        connected
    }

    async fn is_valid(&self, connection: &mut Self::Connection) -> Result<(), Self::Error> {
        let _: String = redis::cmd("PING").query_async(connection).await?;
        Ok(())
    }

    fn has_broken(&self, _: &mut Self::Connection) -> bool {
        false
    }
}

/// Sorts the error of a command that was sent to Redis:
/// - no answer (a timeout, the connection dropped mid-call): the command
///   may have run, [`QueueError::Unconfirmed`];
/// - Redis answered that it is not ready (loading its data) and ran
///   nothing: [`QueueError::Unavailable`];
/// - Redis refused a write at `maxmemory` (`OOM`), also before running
///   anything: [`QueueError::Full`];
/// - anything else: [`QueueError::Failed`].
///
/// Errors before a command is sent (no pooled connection) never come here:
/// they are [`QueueError::Unavailable`] (`RedisQueue::connection`).
pub fn classify(error: RedisError) -> QueueError {
    let unanswered = error.is_io_error()
        || error.is_timeout()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
        || error.is_unrecoverable_error();
    if unanswered {
        QueueError::Unconfirmed(error.to_string())
    } else if matches!(
        error.kind(),
        redis::ErrorKind::Server(redis::ServerErrorKind::BusyLoading)
    ) {
        QueueError::Unavailable(error.to_string())
    } else if is_out_of_memory(&error) {
        QueueError::Full(error.to_string())
    } else {
        QueueError::Failed(error.to_string())
    }
}

/// Whether Redis refused a command at `maxmemory` (`-OOM command not
/// allowed when used memory > 'maxmemory'`), directly or from inside a
/// script.
fn is_out_of_memory(error: &RedisError) -> bool {
    error.code() == Some("OOM")
        || error
            .detail()
            .is_some_and(|detail| detail.contains("OOM command not allowed"))
}

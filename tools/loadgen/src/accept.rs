//! The accept loop the floor servers share ([`crate::sse_floor`],
//! [`crate::refusal_floor`]): each accepted connection, with Nagle off,
//! goes to a handler until shutdown.

use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// Hands every connection accepted on `listener` to `handle` until
/// `shutdown`. A failed accept (out of descriptors, a connection reset
/// before it was taken) is logged and retried after a short pause.
pub async fn each_connection(
    listener: TcpListener,
    shutdown: CancellationToken,
    mut handle: impl FnMut(TcpStream),
) {
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, _)) => {
                let _ = stream.set_nodelay(true);
                handle(stream);
            }
            Err(error) => {
                tracing::warn!(%error, "cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

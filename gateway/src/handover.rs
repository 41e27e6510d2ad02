//! Long-lived responses (the live results streams) handed over from hyper
//! to a bare socket writer once their head is ready, so that an open
//! stream holds a socket and its body, not a whole HTTP connection.
//!
//! ```text
//! request ─► hyper ─► the router and every layer ─► response marked HandOver
//!                                                      │ (GET, HTTP/1.x)
//!   the connection's task: hyper's connection taken     ◄┘
//!   apart (its buffers freed), the socket kept
//!        ─► a task of its own: the head, then each body chunk
//!           as one write, until the body ends or the client leaves
//! ```
//!
//! Why: hyper gives every HTTP/1.1 connection an 8 KiB read buffer and an
//! 8 KiB write buffer for as long as it lives, with no setting to make them
//! smaller, and its connection task holds the hyper and axum futures
//! besides: about 11 KiB of RSS per open results stream, where a bare
//! stream needs under 2; written past hyper, 3.1 (docs/BENCHMARKS.md,
//! "Live results streams"). A stream never reads another request and
//! writes chunks that are already whole, so it needs neither buffer.
//!
//! What stays the same: the response went through every layer (its headers,
//! the metrics, the admission, the span until the head), and its body is
//! the body those layers made, polled here as hyper would poll it. What
//! differs is the framing: the body is delimited by the connection's close
//! (`connection: close`, no `transfer-encoding`), which HTTP/1.1 allows and
//! every client and proxy reads (RFC 9112, section 6.3); a stream only ends
//! with its connection anyway. A client that closes its side ends the
//! stream at once, as in hyper; one that stops reading is closed by the
//! kernel after `TCP_USER_TIMEOUT` ([`crate::connections::USER_TIMEOUT`]).
//!
//! Taking hyper's connection apart loses nothing: hyper reads a
//! connection's next request only once the previous response is flushed
//! (in hyper 1.x a server's connection turns to its next request in its
//! flush, `Conn::poll_flush`), so when a handler hands a response over,
//! no byte of an earlier one is left in hyper's buffer. The pipelined test
//! in `gateway/tests/live_results.rs` checks it, with writes that wait.

use std::{sync::Mutex, time::SystemTime};

use axum::{body::Body, response::Response};
use http_body_util::BodyExt;
use hyper::{Method, Request, Version, header};
use tokio::{io::AsyncWriteExt, net::TcpStream};

/// The mark of a response to be written past hyper: put in its extensions
/// by a handler whose body lasts as long as its connection (a results
/// stream). Honoured for GET requests over HTTP/1.x; any other response
/// carrying it is written by hyper as usual.
#[derive(Clone, Copy, Debug)]
pub struct HandOver;

/// Whether `request`'s response may be handed over: a GET over HTTP/1.0 or
/// HTTP/1.1 (a HEAD's response has no body to stream).
pub fn may_hand_over<B>(request: &Request<B>) -> bool {
    request.method() == Method::GET
        && matches!(request.version(), Version::HTTP_10 | Version::HTTP_11)
}

/// Where a connection's request leaves the response it hands over, for
/// the connection's task to take. The request then fails with
/// [`HandedOver`], which ends hyper's connection at once (hyper writes
/// nothing for a service's error, nor closes the socket), and the task
/// looks here only then: a served request costs the task nothing.
#[derive(Debug, Default)]
pub struct Handoff {
    response: Mutex<Option<Response>>,
}

impl Handoff {
    /// Leaves `response` for the connection's task (hyper must then never
    /// see it).
    pub fn put(&self, response: Response) {
        if let Ok(mut slot) = self.response.lock() {
            *slot = Some(response);
        }
    }

    /// The response a request left, if any.
    pub fn take(&self) -> Option<Response> {
        self.response.lock().ok()?.take()
    }
}

/// The error a request ends hyper's connection with when it has left its
/// response in the [`Handoff`].
#[derive(Debug, thiserror::Error)]
#[error("the response is written past hyper")]
pub struct HandedOver;

/// Writes `response` on `socket`: its head, then each chunk of its body as
/// it comes, until the body ends (then the connection is closed) or the
/// client closes its side or a write fails. `guard` (the connection's place
/// under the connection cap) is held until then.
pub async fn write_response<G>(mut socket: TcpStream, response: Response, guard: G) {
    let (parts, mut body) = response.into_parts();
    let head = head(&parts);
    // Neither the head nor the headers are kept while the stream lasts.
    drop(parts);
    if socket.write_all(&head).await.is_ok() {
        drop(head);
        write_body(&mut socket, &mut body).await;
    }
    drop(body);
    drop(guard);
}

/// What woke the writer: the body's next frame, or the socket readable
/// (a client that closed its side, or sent something).
enum Wake {
    Frame(Option<Result<hyper::body::Frame<axum::body::Bytes>, axum::Error>>),
    Readable(std::io::Result<()>),
}

async fn write_body(socket: &mut TcpStream, body: &mut Body) {
    // Nothing more is read from the client; what it sends is dropped.
    let mut discard = [0_u8; 64];
    loop {
        let wake = tokio::select! {
            frame = body.frame() => Wake::Frame(frame),
            readable = socket.readable() => Wake::Readable(readable),
        };
        match wake {
            Wake::Frame(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data()
                    && socket.write_all(&data).await.is_err()
                {
                    return;
                }
            }
            Wake::Frame(Some(Err(error))) => {
                tracing::debug!(%error, "a handed-over body failed");
                return;
            }
            Wake::Frame(None) => {
                let _ = socket.shutdown().await;
                return;
            }
            Wake::Readable(Err(_)) => return,
            Wake::Readable(Ok(())) => match socket.try_read(&mut discard) {
                Ok(0) => return,
                Ok(_) => {}
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => return,
            },
        }
    }
}

/// The response's head as hyper would write it, but delimited by the
/// connection's close: the status line, every header the layers set
/// (any framing header left out), `connection: close` and a `date`.
fn head(parts: &axum::http::response::Parts) -> Vec<u8> {
    let mut head = Vec::with_capacity(512);
    head.extend_from_slice(b"HTTP/1.1 ");
    head.extend_from_slice(parts.status.as_str().as_bytes());
    head.push(b' ');
    head.extend_from_slice(
        parts
            .status
            .canonical_reason()
            .unwrap_or_default()
            .as_bytes(),
    );
    head.extend_from_slice(b"\r\n");
    for (name, value) in &parts.headers {
        if matches!(
            *name,
            header::CONTENT_LENGTH | header::TRANSFER_ENCODING | header::CONNECTION
        ) {
            continue;
        }
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"connection: close\r\n");
    if !parts.headers.contains_key(header::DATE) {
        head.extend_from_slice(b"date: ");
        head.extend_from_slice(httpdate::fmt_http_date(SystemTime::now()).as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");
    head
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_head_keeps_the_layers_headers_and_is_delimited_by_the_close() {
        let response = Response::builder()
            .status(200)
            .header(header::CONTENT_TYPE, "text/event-stream")
            .header(header::TRANSFER_ENCODING, "chunked")
            .header(header::CONTENT_LENGTH, "12")
            .header(header::CONNECTION, "keep-alive")
            .header("x-frame-options", "DENY")
            .body(Body::empty())
            .unwrap();
        let (parts, _) = response.into_parts();
        let head = String::from_utf8(head(&parts)).unwrap();
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(
            head.contains("\r\ncontent-type: text/event-stream\r\n"),
            "{head}"
        );
        assert!(head.contains("\r\nx-frame-options: DENY\r\n"), "{head}");
        assert!(head.contains("\r\nconnection: close\r\n"), "{head}");
        assert!(head.contains("\r\ndate: "), "{head}");
        assert!(!head.contains("chunked"), "{head}");
        assert!(!head.contains("content-length"), "{head}");
        assert!(!head.contains("keep-alive"), "{head}");
        assert!(head.ends_with("\r\n\r\n"), "{head}");
    }
}

//! The live results floor: a bare server that holds server-sent-event
//! streams and writes one tally-sized event to each of them every
//! interval, as the gateway's pacer does, and nothing else: no HTTP
//! library, routes, layers, counters or tallies.
//!
//! ```text
//! ticker, every interval ─► watch<chunk> ─► one task per connection ─► write(2)
//! ```
//!
//! The streams bench holds the same readers on it as on the gateway. Its
//! CPU per event written is what one write costs on this machine (the
//! system call, and over loopback the receiving side's TCP work as well,
//! which the kernel does in the writer's time): the floor the gateway's
//! figure is read against. It is deliberately bare, like the no-op
//! VoteService ([`crate::noop`]); what the gateway adds above it is what
//! the ratio shows.

use std::{io, time::Duration};

use tokio::{
    net::{TcpListener, TcpStream},
    sync::watch,
};
use tokio_util::sync::CancellationToken;

use crate::accept;

/// The answer's head: what the gateway sends before the events (its
/// results streams are delimited by the connection's close,
/// `gateway/src/handover.rs`).
const HEAD: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\nconnection: close\r\n\r\n";

/// The longest request head read before the stream starts.
const MAX_HEAD: usize = 8 * 1024;

/// Serves streams on `listener`, one event per `interval`, until `shutdown`.
pub async fn serve(listener: TcpListener, interval: Duration, shutdown: CancellationToken) {
    let (chunks, receiver) = watch::channel(tally_event(0));
    tokio::spawn(tick(chunks, interval, shutdown.clone()));
    accept::each_connection(listener, shutdown, |stream| {
        tokio::spawn(hold(stream, receiver.clone()));
    })
    .await;
}

/// Publishes a new event every `interval`, its total one higher each time.
async fn tick(chunks: watch::Sender<Vec<u8>>, interval: Duration, shutdown: CancellationToken) {
    let mut ticks = tokio::time::interval(interval);
    let mut total = 0;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        total += 1;
        chunks.send_replace(tally_event(total));
    }
}

/// One stream: reads the request's head, answers with the head and the
/// current event, then writes each new event until the reader goes away.
async fn hold(stream: TcpStream, mut chunks: watch::Receiver<Vec<u8>>) {
    if read_head(&stream).await.is_err() {
        return;
    }
    let mut first = HEAD.to_vec();
    first.extend_from_slice(&chunks.borrow_and_update());
    if write_all(&stream, &first).await.is_err() {
        return;
    }
    while chunks.changed().await.is_ok() {
        let chunk = chunks.borrow_and_update().clone();
        if write_all(&stream, &chunk).await.is_err() {
            return;
        }
    }
}

/// Reads until the blank line that ends a request's head.
async fn read_head(stream: &TcpStream) -> io::Result<()> {
    let mut head = Vec::with_capacity(256);
    let mut buffer = [0u8; 512];
    while !head.windows(4).any(|window| window == b"\r\n\r\n") {
        if head.len() > MAX_HEAD {
            return Err(io::ErrorKind::InvalidData.into());
        }
        stream.readable().await?;
        match stream.try_read(&mut buffer) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => head.extend_from_slice(&buffer[..n]),
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

async fn write_all(stream: &TcpStream, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        stream.writable().await?;
        match stream.try_write(bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

/// A `tally` event shaped and sized like the gateway's (two options,
/// percentages, a timestamp), written as is.
fn tally_event(total: u64) -> Vec<u8> {
    let cats = total / 2;
    let dogs = total - cats;
    let event = format!(
        "event: tally\ndata: {{\"options\":[{{\"id\":\"a\",\"label\":\"Cats\",\"count\":{cats},\"percent\":50.0}},\
         {{\"id\":\"b\",\"label\":\"Dogs\",\"count\":{dogs},\"percent\":50.0}}],\"total\":{total},\
         \"as_of\":\"2026-12-06T12:00:00.000000Z\",\"stale\":false}}\n\n"
    );
    event.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tally_event_is_shaped_like_the_gateways() {
        let event = String::from_utf8(tally_event(7)).unwrap();
        assert!(event.starts_with("event: tally\ndata: {"), "{event}");
        assert!(event.contains("\"total\":7,"), "{event}");
        assert!(event.ends_with("}\n\n"), "{event}");
    }
}

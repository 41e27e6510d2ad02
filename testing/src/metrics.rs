//! Reading a component's `/metrics` as Prometheus does: fetch the text
//! over plain HTTP/1.1 (the gRPC servers answer it on their own port) and
//! parse it with a Prometheus text parser.

use std::net::SocketAddr;

pub use prometheus_parse::Scrape;
use prometheus_parse::{Sample, Value};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::HarnessError;

/// `GET /metrics` from the server on `addr`, parsed.
pub async fn scrape(addr: SocketAddr) -> Result<Scrape, HarnessError> {
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(HarnessError::io(format!("connecting to {addr}")))?;
    let request = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(HarnessError::io("asking for /metrics"))?;
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .await
        .map_err(HarnessError::io("reading /metrics"))?;
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .ok_or_else(|| HarnessError::Failed(format!("not an HTTP answer: {answer:?}")))?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(HarnessError::Failed(format!("/metrics answered {head:?}")));
    }
    parse(body)
}

/// Parses Prometheus text.
pub fn parse(text: &str) -> Result<Scrape, HarnessError> {
    Scrape::parse(text.lines().map(|line| Ok(line.to_owned())))
        .map_err(HarnessError::io("parsing the Prometheus text"))
}

/// The value of the one sample of `metric` whose labels include all of
/// `labels` (a histogram's: its count); 0 if there is none, as Prometheus
/// reads a series not yet created. Panics if several match.
pub fn value(scrape: &Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    let matching: Vec<&Sample> = scrape
        .samples
        .iter()
        .filter(|sample| sample.metric == metric)
        .filter(|sample| {
            labels
                .iter()
                .all(|(name, value)| sample.labels.get(name) == Some(*value))
        })
        .collect();
    assert!(
        matching.len() <= 1,
        "several {metric}{labels:?}: {matching:#?}"
    );
    match matching.first().map(|sample| &sample.value) {
        None => 0.0,
        Some(Value::Counter(value) | Value::Gauge(value) | Value::Untyped(value)) => *value,
        Some(Value::Histogram(buckets)) => buckets
            .iter()
            .find(|bucket| bucket.less_than == f64::INFINITY)
            .map_or(0.0, |bucket| bucket.count),
        Some(Value::Summary(_)) => panic!("{metric} is a summary"),
    }
}

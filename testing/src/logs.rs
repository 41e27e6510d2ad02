//! Capturing the log events a piece of code emits, to check what an
//! operator would see (which events, at which level), not how they are
//! formatted.

use std::sync::{Arc, Mutex, PoisonError};

use tracing::{
    Level, Subscriber,
    field::{Field, Visit},
};
use tracing_subscriber::{Layer, layer::Context, layer::SubscriberExt};

/// One captured event: its target, level and message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogEvent {
    /// The event's target (the module that logged it, such as
    /// `votemesh_worker::drain`).
    pub target: String,
    /// The event's level.
    pub level: Level,
    /// The event's `message` field.
    pub message: String,
}

/// The events captured so far; cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct CapturedLogs(Arc<Mutex<Vec<LogEvent>>>);

impl CapturedLogs {
    /// Every event captured so far.
    pub fn events(&self) -> Vec<LogEvent> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// votemesh's own events (not those of its dependencies) at `level`.
    pub fn own(&self, level: Level) -> Vec<LogEvent> {
        self.events()
            .into_iter()
            .filter(|event| event.level == level && event.target.starts_with("votemesh"))
            .collect()
    }

    /// How many of votemesh's own events at `level` have a message
    /// starting with `prefix`.
    pub fn count(&self, level: Level, prefix: &str) -> usize {
        self.own(level)
            .iter()
            .filter(|event| event.message.starts_with(prefix))
            .count()
    }
}

/// Installs a subscriber capturing every event on this thread until the
/// guard drops. In a current-thread tokio test (`#[tokio::test]`), that
/// includes the tasks it spawns. Put such a test alone in its test binary:
/// tracing caches per callsite whether anyone listens, across threads, so
/// a test running in parallel on another thread can hide events from it.
pub fn capture() -> (CapturedLogs, tracing::subscriber::DefaultGuard) {
    let logs = CapturedLogs::default();
    let subscriber = tracing_subscriber::registry().with(Capture(logs.clone()));
    (logs, tracing::subscriber::set_default(subscriber))
}

struct Capture(CapturedLogs);

impl<S: Subscriber> Layer<S> for Capture {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        let mut message = MessageVisitor(String::new());
        event.record(&mut message);
        self.0
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(LogEvent {
                target: event.metadata().target().to_owned(),
                level: *event.metadata().level(),
                message: message.0,
            });
    }
}

struct MessageVisitor(String);

impl Visit for MessageVisitor {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }
}

//! What the server logs during a test, read in-process. The server runs on the test's own
//! (single-threaded) runtime, so a subscriber set for the test's thread sees its events.

use std::sync::{Arc, Mutex};

use tracing::Level;
use tracing::subscriber::DefaultGuard;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

/// One event of level WARN or above.
#[derive(Debug, Clone)]
pub(crate) struct Record {
    pub(crate) level: Level,
    /// Whether it was logged under a request's `http` span (the `TraceLayer`'s).
    pub(crate) in_request: bool,
    /// Its target and fields, as text.
    pub(crate) text: String,
}

/// The events of level WARN and above seen on this thread since [`Logs::capture`].
#[derive(Clone, Default)]
pub(crate) struct Logs(Arc<Mutex<Vec<Record>>>);

impl Logs {
    /// Starts recording; the recording stops when the guard is dropped.
    pub(crate) fn capture() -> (Self, DefaultGuard) {
        let logs = Self::default();
        let guard =
            tracing::subscriber::set_default(tracing_subscriber::registry().with(logs.clone()));
        tracing::callsite::rebuild_interest_cache();
        (logs, guard)
    }

    /// What was recorded since the last call, which it forgets.
    ///
    /// It also has every span and event site ask again whether anyone listens: a site that
    /// another test's thread reached for the first time while this subscriber was being set
    /// can have stored "nobody" (tracing caches the answer for all threads), and the requests'
    /// `http` span would then be missing here.
    pub(crate) fn take(&self) -> Vec<Record> {
        tracing::callsite::rebuild_interest_cache();
        std::mem::take(&mut *self.0.lock().unwrap())
    }

    /// The records of level ERROR so far.
    pub(crate) fn errors(&self) -> Vec<Record> {
        let records = self.0.lock().unwrap();
        records
            .iter()
            .filter(|r| r.level == Level::ERROR)
            .cloned()
            .collect()
    }
}

impl<S> tracing_subscriber::Layer<S> for Logs
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_event(&self, event: &tracing::Event<'_>, ctx: Context<'_, S>) {
        let level = *event.metadata().level();
        // More verbose levels compare greater.
        if level > Level::WARN {
            return;
        }
        struct Text(String);
        impl tracing::field::Visit for Text {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                self.0.push_str(&format!(" {}={value:?}", field.name()));
            }
        }
        let mut text = Text(event.metadata().target().to_owned());
        event.record(&mut text);
        let in_request = ctx
            .event_scope(event)
            .is_some_and(|mut scope| scope.any(|span| span.name() == "http"));
        self.0.lock().unwrap().push(Record {
            level,
            in_request,
            text: text.0,
        });
    }
}

//! A tracing layer that keeps every span with its fields, for the tests of
//! the runtime's instrumentation. Installed once, globally, so spans made on
//! the runtime's worker threads are seen too.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex, OnceLock};

use tracing::Subscriber;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

/// One span as it was created and later recorded.
#[derive(Debug, Clone)]
pub struct CapturedSpan {
    pub name: String,
    pub target: String,
    pub fields: HashMap<String, String>,
    /// The index of the parent span in [`spans`], if any.
    pub parent: Option<usize>,
}

#[derive(Default)]
struct Store {
    spans: Vec<CapturedSpan>,
    live: HashMap<u64, usize>,
    /// Only spans of these objects (short ids) are kept.
    watched: std::collections::HashSet<String>,
    /// Events of the targets in `EVENT_TARGETS`, with their fields.
    events: Vec<(String, HashMap<String, String>)>,
}

/// The targets whose events are kept (they are rare).
const EVENT_TARGETS: &[&str] = &["do_runtime::stall"];

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Store>>);

struct Fields<'a>(&'a mut HashMap<String, String>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Capture {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut fields = HashMap::new();
        attrs.record(&mut Fields(&mut fields));
        let parent = attrs.parent().cloned().or_else(|| {
            attrs
                .is_contextual()
                .then(|| ctx.current_span().id().cloned())
                .flatten()
        });
        let mut store = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if !fields
            .get("id")
            .is_some_and(|id| store.watched.contains(id))
        {
            return;
        }
        let parent = parent.and_then(|p| store.live.get(&p.into_u64()).copied());
        let index = store.spans.len();
        store.spans.push(CapturedSpan {
            name: attrs.metadata().name().to_owned(),
            target: attrs.metadata().target().to_owned(),
            fields,
            parent,
        });
        store.live.insert(id.into_u64(), index);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, _ctx: Context<'_, S>) {
        let mut store = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(&index) = store.live.get(&id.into_u64()) {
            values.record(&mut Fields(&mut store.spans[index].fields));
        }
    }

    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        let target = event.metadata().target();
        if !EVENT_TARGETS.contains(&target) {
            return;
        }
        let mut fields = HashMap::new();
        event.record(&mut Fields(&mut fields));
        let mut store = self.0.lock().unwrap_or_else(|p| p.into_inner());
        store.events.push((target.to_owned(), fields));
    }

    fn on_close(&self, id: Id, _ctx: Context<'_, S>) {
        let mut store = self.0.lock().unwrap_or_else(|p| p.into_inner());
        store.live.remove(&id.into_u64());
    }
}

static CAPTURE: OnceLock<Capture> = OnceLock::new();

/// Installs the capturing subscriber (once per process).
pub fn install() {
    CAPTURE.get_or_init(|| {
        let capture = Capture::default();
        let subscriber = tracing_subscriber::registry().with(capture.clone());
        tracing::subscriber::set_global_default(subscriber)
            .expect("no other global subscriber in the test binary");
        capture
    });
}

/// Keeps the spans of the object with this short id from now on.
pub fn watch(short_id: &str) {
    install();
    if let Some(capture) = CAPTURE.get() {
        let mut store = capture.0.lock().unwrap_or_else(|p| p.into_inner());
        store.watched.insert(short_id.to_owned());
    }
}

/// Every span captured so far whose `id` field is `short_id`.
pub fn spans_of(short_id: &str) -> Vec<CapturedSpan> {
    let Some(capture) = CAPTURE.get() else {
        return Vec::new();
    };
    let store = capture.0.lock().unwrap_or_else(|p| p.into_inner());
    store
        .spans
        .iter()
        .filter(|s| s.fields.get("id").is_some_and(|id| id == short_id))
        .cloned()
        .collect()
}

/// The span at `index`.
pub fn span(index: usize) -> Option<CapturedSpan> {
    let store = CAPTURE.get()?.0.lock().unwrap_or_else(|p| p.into_inner());
    store.spans.get(index).cloned()
}

/// Every span captured so far whose `id` field is `short_id`, with its index.
pub fn indexed_spans_of(short_id: &str) -> Vec<(usize, CapturedSpan)> {
    let Some(capture) = CAPTURE.get() else {
        return Vec::new();
    };
    let store = capture.0.lock().unwrap_or_else(|p| p.into_inner());
    store
        .spans
        .iter()
        .enumerate()
        .filter(|(_, s)| s.fields.get("id").is_some_and(|id| id == short_id))
        .map(|(i, s)| (i, s.clone()))
        .collect()
}

/// The fields of every event of `target` (one of `EVENT_TARGETS`) captured
/// since [`install`].
pub fn events(target: &str) -> Vec<HashMap<String, String>> {
    let Some(capture) = CAPTURE.get() else {
        return Vec::new();
    };
    let store = capture.0.lock().unwrap_or_else(|p| p.into_inner());
    store
        .events
        .iter()
        .filter(|(t, _)| t == target)
        .map(|(_, fields)| fields.clone())
        .collect()
}

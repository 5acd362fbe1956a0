//! What the runtime reports: `tracing` spans and events, and metrics through
//! the `metrics` facade (handles registered once at build time, so the hot
//! path only bumps them; see
//! [`RuntimeBuilder::metrics_recorder`](crate::RuntimeBuilder::metrics_recorder)).
//!
//! Spans (target `do_runtime::call` on the caller's side, `do_runtime::handle`
//! on the object's), each with `class`, `id` (first 8 bytes, hex), `method`,
//! `trace_id` (shared by caller and object, also across the network) and
//! `outcome`. Events: `activate`, `evict`, `reset` (target
//! `do_runtime::lifecycle`) and one per commit group (target
//! `do_storage::commit`: batches, writes, bytes, fsync time).
//!
//! Metrics:
//!
//! | metric | kind | labels |
//! |---|---|---|
//! | `do_calls_total` | counter | `class`, `method`, `outcome` |
//! | `do_call_duration_seconds` | histogram | `class`, `method` |
//! | `do_live_instances` | gauge | |
//! | `do_queued_calls` | gauge | |
//! | `do_open_connections` | gauge | |
//! | `do_websockets` | gauge | |
//! | `do_commit_batch_writes` | histogram | |
//! | `do_commit_duration_seconds` | histogram | |
//! | `do_storage_bytes_written_total` | counter | |
//! | `do_cache_hits_total`, `do_cache_misses_total` | counter | |
//!
//! `outcome` is one of `ok`, `user_error`, `panic`, `overloaded`,
//! `disconnected`, `error`, `dropped` (the caller dropped the call's future). Calls are counted by the runtime that owns the
//! object, whether they came from a local stub or over the network.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use metrics::{Counter, Gauge, Histogram, Key, Label, Metadata, Recorder};

use crate::base::wire::MethodInfo;

/// Whether any `tracing` subscriber was ever set (globally or for a scope).
/// Until one is, spans are not built at all: a disabled span costs little,
/// but with `tracing`'s `log` feature on (some other crate in the build may
/// turn it on) it still checks the `log` crate each time it is made,
/// entered, recorded into and dropped. (`has_been_set` is hidden from
/// tracing's docs, but its own macros rely on it throughout 0.1.)
pub(crate) fn tracing_on() -> bool {
    tracing::dispatcher::has_been_set()
}

/// Sets up the clock calls are timed with, so that the first call does not
/// pay for it: `quanta` calibrates the CPU's time-stamp counter against the
/// system clock once per process (a busy loop of 10–20 ms, at most 200 ms,
/// in the first `RuntimeBuilder::build`), or falls back to the system clock
/// where the CPU does not report an invariant counter. A caller task that
/// moves between threads may take its two readings on different cores; on
/// a host whose cores' counters disagree, a duration comes out skewed
/// (never negative: it floors at zero). Durations feed only the metrics.
pub(crate) fn calibrate() {
    let _ = quanta::Instant::now();
}

/// How a call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Ok,
    UserError,
    Panic,
    Overloaded,
    Disconnected,
    Error,
    /// The caller dropped the call's future before its reply: the call may
    /// still have run.
    Dropped,
}

impl Outcome {
    const ALL: [Outcome; 7] = [
        Outcome::Ok,
        Outcome::UserError,
        Outcome::Panic,
        Outcome::Overloaded,
        Outcome::Disconnected,
        Outcome::Error,
        Outcome::Dropped,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::UserError => "user_error",
            Outcome::Panic => "panic",
            Outcome::Overloaded => "overloaded",
            Outcome::Disconnected => "disconnected",
            Outcome::Error => "error",
            Outcome::Dropped => "dropped",
        }
    }

    /// The outcome of a reply: `fallible` methods encode `Result`, whose
    /// `Err` variant is 1 on the wire.
    pub(crate) fn of(reply: &Result<Vec<u8>, crate::base::error::Error>, fallible: bool) -> Self {
        match reply {
            Ok(bytes) if fallible && bytes.first() == Some(&1) => Outcome::UserError,
            Ok(_) => Outcome::Ok,
            Err(e) => Outcome::of_error(e),
        }
    }

    pub(crate) fn of_error(e: &crate::base::error::Error) -> Self {
        match e {
            crate::base::error::Error::Panicked(_) => Outcome::Panic,
            crate::base::error::Error::App(_) => Outcome::UserError,
            crate::base::error::Error::Overloaded(_) => Outcome::Overloaded,
            crate::base::error::Error::Disconnected(_) => Outcome::Disconnected,
            _ => Outcome::Error,
        }
    }
}

/// The handles of one method.
pub(crate) struct MethodMetrics {
    pub info: MethodInfo,
    outcomes: [Counter; 7],
    duration: Histogram,
}

impl MethodMetrics {
    pub(crate) fn record(&self, outcome: Outcome, seconds: f64) {
        self.outcomes[outcome as usize].increment(1);
        self.duration.record(seconds);
    }
}

/// The handles of one class, sorted by method id (a class has few methods:
/// a binary search beats hashing); unknown ids share one entry.
pub(crate) struct ClassMetrics {
    methods: Vec<(u32, Arc<MethodMetrics>)>,
    unknown: Arc<MethodMetrics>,
    /// Steps of the class's code reported stalled (see `service::stalls`).
    pub stalled: Counter,
}

impl ClassMetrics {
    pub(crate) fn method(&self, id: u32) -> &Arc<MethodMetrics> {
        match self.methods.binary_search_by_key(&id, |(m, _)| *m) {
            Ok(i) => &self.methods[i].1,
            Err(_) => &self.unknown,
        }
    }
}

/// A counter spread over cache lines, so threads adding to it at once do
/// not contend; reading sums the shards.
#[derive(Default)]
pub(crate) struct Sharded {
    shards: [Padded; 16],
}

/// A counter alone on its cache line.
#[derive(Default)]
#[repr(align(64))]
pub(crate) struct Padded(pub AtomicU64);

thread_local! {
    static SHARD: usize = {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        NEXT.fetch_add(1, Ordering::Relaxed) % 16
    };
}

impl Sharded {
    pub(crate) fn add(&self, n: u64) {
        let shard = SHARD.with(|s| *s);
        self.shards[shard].0.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn sum(&self) -> u64 {
        self.shards
            .iter()
            .map(|s| s.0.load(Ordering::Relaxed))
            .sum()
    }
}

/// The runtime-wide handles.
pub(crate) struct RuntimeMetrics {
    pub live_instances: Gauge,
    pub queued_calls: Gauge,
    pub open_connections: Gauge,
    pub websockets: Gauge,
    pub commit_writes: Histogram,
    pub commit_seconds: Histogram,
    pub bytes_written: Counter,
    pub cache_hits: Counter,
    pub cache_misses: Counter,
    /// In a cluster (feature `cluster`): see `net::cluster`.
    #[cfg(feature = "cluster")]
    pub cluster: ClusterMetrics,
}

/// A cluster node's metrics.
#[cfg(feature = "cluster")]
pub(crate) struct ClusterMetrics {
    /// Shards this node serves now.
    pub shards_served: Gauge,
    /// Shards taken over (claimed and read back).
    pub shards_acquired: Counter,
    /// Shards drained and handed over.
    pub shards_released: Counter,
    /// Shards lost without a hand-over (the lease lapsed).
    pub shards_lost: Counter,
    /// Lease renewals answered.
    pub lease_renewals: Counter,
    /// Calls a client of this node made to objects another node serves,
    /// forwarded there.
    pub forwarded_calls: Counter,
}

/// Where handles come from: the recorder given to the builder, or the
/// global one (installed before the runtime is built).
#[derive(Clone, Default)]
pub(crate) struct Source {
    recorder: Option<Arc<dyn Recorder + Send + Sync>>,
}

impl Source {
    pub(crate) fn with(recorder: Arc<dyn Recorder + Send + Sync>) -> Self {
        Source {
            recorder: Some(recorder),
        }
    }

    fn register<T>(&self, f: impl FnOnce(&dyn Recorder) -> T) -> T {
        match &self.recorder {
            Some(recorder) => f(recorder.as_ref()),
            None => metrics::with_recorder(|r| f(r)),
        }
    }

    fn counter(&self, key: Key) -> Counter {
        self.register(|r| r.register_counter(&key, &META))
    }

    fn gauge(&self, key: Key) -> Gauge {
        self.register(|r| r.register_gauge(&key, &META))
    }

    fn histogram(&self, key: Key) -> Histogram {
        self.register(|r| r.register_histogram(&key, &META))
    }

    pub(crate) fn runtime(&self) -> RuntimeMetrics {
        let key = |name: &'static str| Key::from_static_name(name);
        RuntimeMetrics {
            live_instances: self.gauge(key("do_live_instances")),
            queued_calls: self.gauge(key("do_queued_calls")),
            open_connections: self.gauge(key("do_open_connections")),
            websockets: self.gauge(key("do_websockets")),
            commit_writes: self.histogram(key("do_commit_batch_writes")),
            commit_seconds: self.histogram(key("do_commit_duration_seconds")),
            bytes_written: self.counter(key("do_storage_bytes_written_total")),
            cache_hits: self.counter(key("do_cache_hits_total")),
            cache_misses: self.counter(key("do_cache_misses_total")),
            #[cfg(feature = "cluster")]
            cluster: ClusterMetrics {
                shards_served: self.gauge(key("do_cluster_shards_served")),
                shards_acquired: self.counter(key("do_cluster_shards_acquired_total")),
                shards_released: self.counter(key("do_cluster_shards_released_total")),
                shards_lost: self.counter(key("do_cluster_shards_lost_total")),
                lease_renewals: self.counter(key("do_cluster_lease_renewals_total")),
                forwarded_calls: self.counter(key("do_cluster_forwarded_calls_total")),
            },
        }
    }

    pub(crate) fn class(&self, class: &'static str, methods: &[MethodInfo]) -> ClassMetrics {
        let method = |info: MethodInfo| {
            let labels = |outcome: Option<Outcome>| {
                let mut labels = vec![
                    Label::from_static_parts("class", class),
                    Label::from_static_parts("method", info.name),
                ];
                if let Some(outcome) = outcome {
                    labels.push(Label::from_static_parts("outcome", outcome.as_str()));
                }
                labels
            };
            Arc::new(MethodMetrics {
                info,
                outcomes: Outcome::ALL
                    .map(|o| self.counter(Key::from_parts("do_calls_total", labels(Some(o))))),
                duration: self.histogram(Key::from_parts("do_call_duration_seconds", labels(None))),
            })
        };
        let mut methods: Vec<_> = methods.iter().map(|m| (m.id, method(*m))).collect();
        methods.sort_by_key(|(id, _)| *id);
        methods.dedup_by_key(|(id, _)| *id);
        ClassMetrics {
            stalled: self.counter(Key::from_parts(
                "do_stalled_steps_total",
                vec![Label::from_static_parts("class", class)],
            )),
            methods,
            unknown: method(MethodInfo {
                id: 0,
                name: "unknown",
                fallible: false,
            }),
        }
    }
}

static META: Metadata<'static> =
    Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()));

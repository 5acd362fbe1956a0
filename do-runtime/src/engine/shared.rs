//! The runtime's state that stubs, environments, workers and servers share:
//! registered classes, worker channels, the store, limits, counters.

use std::any::TypeId;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use do_storage::Store;
use tokio::sync::mpsc;

use crate::base::error::{DisconnectReason, Error, Result};
use crate::base::id::DurableObjectId;
use crate::engine::class::Class;
use crate::engine::registry::{QueueLimits, Registry};
use crate::engine::worker::{Envelope, WorkerMsg};

/// The runtime's state, shared by stubs, environments and workers.
/// See `Shared::on_reopen`.
pub(crate) type ReopenHook =
    Arc<dyn Fn(&do_storage::Store) -> Result<(), crate::base::error::Error> + Send + Sync>;

pub(crate) struct Shared {
    pub(crate) classes: Vec<Arc<Class>>,
    pub(crate) by_type: HashMap<TypeId, usize>,
    pub(crate) workers: Vec<mpsc::UnboundedSender<WorkerMsg>>,
    pub(crate) threads: Mutex<Vec<JoinHandle<()>>>,
    /// Taken out at stop, so the database closes even while stubs live on,
    /// and while a failed store is reopened (see `service::recovery`).
    pub(crate) store: Mutex<Option<Store>>,
    /// Where the store was opened from and how, to open it again.
    pub(crate) store_source: (std::path::PathBuf, do_storage::StoreOptions),
    /// Run on a store reopened after a failure, before objects use it: with
    /// replication, reads back from the log what the failure lost (a group
    /// the log took and the store did not).
    pub(crate) on_reopen: Option<ReopenHook>,
    /// Why the store cannot write now, while it is being reopened.
    pub(crate) storage_fault: Mutex<Option<String>>,
    /// The configuration objects read through `Env` (SPEC B1).
    pub(crate) bindings: crate::base::bindings::Bindings,
    pub(crate) value_cache_bytes: usize,
    pub(crate) worker_io: bool,
    pub(crate) worker_spin: Duration,
    pub(crate) caller_spin: Duration,
    /// The most calls in flight for the runtime to count as quiet (spinning
    /// only then); 0 turns spinning off.
    pub(crate) spinning_calls: u64,
    pub(crate) queue: QueueLimits,
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) shutdown_deadline: Duration,
    /// How long a `block_concurrency_while` future may hold its gate.
    pub(crate) block_concurrency_limit: Duration,
    /// How long a WebSocket event handler may run; `None`: no limit.
    pub(crate) websocket_event_timeout: Option<Duration>,
    pub(crate) registry: Registry,
    pub(crate) sockets: crate::engine::sockets::Sockets,
    /// Bytes held for clients (request bodies, partial frames).
    pub(crate) client_budget: Arc<crate::engine::budget::Budget>,
    pub(crate) closing: AtomicBool,
    pub(crate) stopped: AtomicBool,
    /// Spans and metrics on (a hidden switch, for measuring their cost).
    pub(crate) instrument: AtomicBool,
    pub(crate) metrics: Arc<crate::engine::telemetry::RuntimeMetrics>,
    pub(crate) counters: Arc<Counters>,
    pub(crate) alarms: Arc<crate::engine::alarms::Scheduler>,
    pub(crate) alarm_policy: crate::engine::alarms::RetryPolicy,
    pub(crate) clock: crate::base::clock::Clock,
    /// The worker the next [`Runtime::spawn`] goes to (modulo their number).
    pub(crate) next_task: AtomicUsize,
    /// Each worker's mark of the object code it runs, for the stall watch;
    /// empty when the watch is off.
    pub(crate) beats: Vec<Arc<crate::engine::stalls::Beat>>,
    /// The steps stalled as of the watch's last look.
    pub(crate) stalls: Mutex<Vec<crate::engine::stalls::Stall>>,
    /// Where ids and stubs decoded on this runtime's threads come to life
    /// (see `base::passing`); set before the workers start.
    pub(crate) home: std::sync::OnceLock<Arc<dyn crate::base::passing::Home>>,
    /// Where objects are served, when this runtime is one of a cluster
    /// (see `engine::placement`); unset, every object is served here.
    #[cfg(feature = "cluster")]
    pub(crate) placement: std::sync::OnceLock<Arc<dyn crate::engine::placement::Placement>>,
    /// This runtime's node name, when it is one of a cluster: its spans
    /// carry it.
    pub(crate) node: std::sync::OnceLock<Arc<str>>,
}

impl Shared {
    /// The node name spans carry (see [`Shared::node`]).
    pub(crate) fn node_name(&self) -> Option<&str> {
        self.node.get().map(|name| &**name)
    }
}

/// The most calls in flight with which a served client's pipelining still
/// lets idle workers spin (see `Shared::worker_spin_now`): a few clients'
/// windows of calls.
const PIPELINING_SPIN_CALLS: u64 = 1024;

/// How many times the worker spin an idle worker spins while a served
/// client pipelines calls (see `Shared::worker_spin_now`).
const PIPELINING_SPIN_FACTOR: u32 = 3;

/// Figures kept with plain atomics, for [`Runtime::stats`].
#[derive(Default)]
pub(crate) struct Counters {
    pub live_instances: AtomicUsize,
    pub open_connections: AtomicUsize,
    /// Served connections whose client is pipelining calls (see
    /// `transport::server`): load that `in_flight` does not show, since
    /// such a client's calls reach the server in bursts.
    pub pipelining: AtomicUsize,
    pub calls: crate::engine::telemetry::Sharded,
    pub failed_calls: crate::engine::telemetry::Sharded,
    /// Calls to this runtime's objects sent and not yet answered or dropped
    /// (a served connection counts its calls a batch at a time, until it
    /// has taken their replies).
    /// One counter, not sharded: it is read before every spin, and a
    /// sharded sum costs a cache miss per shard.
    pub in_flight: crate::engine::telemetry::Padded,
    /// Each worker's value cache counts its hits and misses here.
    pub caches: Vec<Arc<do_storage::CacheCounters>>,
    /// The cache figures last added to the metrics.
    pub exported_hits: std::sync::atomic::AtomicU64,
    pub exported_misses: std::sync::atomic::AtomicU64,
    /// Replies handed to callers' relays (see `relay`).
    pub relayed_replies: std::sync::atomic::AtomicU64,
    /// Steps of object code the stall watch reported.
    pub stalled_steps: std::sync::atomic::AtomicU64,
}

impl Shared {
    pub(crate) fn class_of(&self, type_id: TypeId) -> Option<Arc<Class>> {
        self.by_type.get(&type_id).map(|&i| self.classes[i].clone())
    }

    pub(crate) fn classes(&self) -> &[Arc<Class>] {
        &self.classes
    }

    /// The store, until the runtime stops.
    pub(crate) fn store(&self) -> Option<Store> {
        self.store.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Why the store cannot take writes now, if it cannot: a commit group
    /// failed, and until the store is reopened (see `service::recovery`)
    /// every write fails.
    pub(crate) fn storage_fault(&self) -> Option<String> {
        let fault = self
            .storage_fault
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        fault.or_else(|| {
            let failure = self.store()?.failure()?;
            Some(format!("the storage cannot write: {failure}"))
        })
    }

    pub(crate) fn worker_io(&self) -> bool {
        self.worker_io
    }

    #[cfg(test)]
    pub(crate) fn worker_spin(&self) -> Duration {
        self.worker_spin
    }

    pub(crate) fn caller_spin(&self) -> Duration {
        self.caller_spin
    }

    /// Whether callers or workers may spin (see `worker_spin`): calls are
    /// counted in flight only then.
    pub(crate) fn spinning(&self) -> bool {
        !(self.worker_spin.is_zero() && self.caller_spin.is_zero())
    }

    /// Whether few enough calls are in flight for spinning to be worth a
    /// core, and no served client is pipelining calls.
    pub(crate) fn quiet(&self) -> bool {
        self.counters.in_flight.0.load(Ordering::Relaxed) <= self.spinning_calls
            && self.counters.pipelining.load(Ordering::Relaxed) == 0
    }

    /// How long an idle worker may spin for its next piece of work: the
    /// worker spin when the runtime is quiet, three times that while a
    /// served client pipelines calls, and not at all otherwise.
    ///
    /// A pipelining client's calls come in bursts, one per round trip over
    /// its connection, with the worker idle in between and the machine not
    /// saturated: a worker that sleeps pays a thread wake-up for every
    /// burst, so it spins through the gap instead (the callers still do not
    /// spin: a spinning caller holds the connection's own thread). The gap
    /// is a whole round trip, longer than the quiet-time spin, hence three
    /// times that (the figures: BENCHMARKS.md, "What changed in the third
    /// session of 2026-12-02" and "What changed on 2026-12-06"). Not with more than
    /// [`PIPELINING_SPIN_CALLS`] calls in flight, though: then the runtime
    /// is loaded beyond that client's bursts, and a spinning worker would
    /// take a core from whoever makes the rest.
    pub(crate) fn worker_spin_now(&self) -> Duration {
        if self.quiet() {
            self.worker_spin
        } else if self.counters.pipelining.load(Ordering::Relaxed) > 0
            && self.counters.in_flight.0.load(Ordering::Relaxed) <= PIPELINING_SPIN_CALLS
        {
            self.worker_spin.saturating_mul(PIPELINING_SPIN_FACTOR)
        } else {
            Duration::ZERO
        }
    }

    /// Pushes the figures the hot path does not (queued calls, cache
    /// counters) to the metrics; returns the queued calls.
    pub(crate) fn refresh_gauges(&self) -> usize {
        let queued = self.registry().queued_total();
        self.metrics.queued_calls.set(queued as f64);
        self.counters.export_cache(&self.metrics);
        queued
    }

    pub(crate) fn alarms(&self) -> &Arc<crate::engine::alarms::Scheduler> {
        &self.alarms
    }

    pub(crate) fn alarm_policy(&self) -> crate::engine::alarms::RetryPolicy {
        self.alarm_policy
    }

    pub(crate) fn clock(&self) -> &crate::base::clock::Clock {
        &self.clock
    }

    pub(crate) fn instrument(&self) -> bool {
        self.instrument.load(Ordering::Relaxed)
    }

    pub(crate) fn sockets(&self) -> &crate::engine::sockets::Sockets {
        &self.sockets
    }

    pub(crate) fn registry(&self) -> &Registry {
        &self.registry
    }

    pub(crate) fn queue_limits(&self) -> QueueLimits {
        self.queue
    }

    pub(crate) fn block_concurrency_limit(&self) -> Duration {
        self.block_concurrency_limit
    }

    pub(crate) fn idle_timeout(&self) -> Option<Duration> {
        self.idle_timeout
    }

    /// Why a call whose reply channel closed unanswered was lost: the
    /// runtime stopped, or else the object's instance was reset.
    pub(crate) fn lost_reason(&self) -> DisconnectReason {
        if self.is_closing() || self.stopped.load(Ordering::Acquire) {
            DisconnectReason::Shutdown
        } else {
            DisconnectReason::Reset
        }
    }

    /// Whether the runtime is shutting down or stopped: its threads leave.
    pub(crate) fn is_stopping(&self) -> bool {
        self.is_closing() || self.stopped.load(Ordering::Acquire)
    }

    pub(crate) fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }

    pub(crate) fn class_by_tag(&self, tag: u64) -> Option<&Arc<Class>> {
        self.classes.iter().find(|c| c.key.tag() == tag)
    }

    pub(crate) fn send_msg(&self, worker: usize, msg: WorkerMsg) -> Result<()> {
        self.workers[worker].send(msg).map_err(|_| {
            Error::disconnected(DisconnectReason::Shutdown, "the runtime has shut down")
        })
    }

    /// In a cluster: resets and lets go of every object whose id `leaves`
    /// says moved to another runtime (see `WorkerMsg::Release`); resolves
    /// once every worker has. The messages are sent before this returns
    /// (the future only waits for the answers): a call sent after them
    /// finds the objects gone.
    #[cfg_attr(not(feature = "cluster"), allow(dead_code))]
    pub(crate) fn release_objects(
        &self,
        leaves: crate::engine::worker::Leaves,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut waits = Vec::with_capacity(self.workers.len());
        for worker in 0..self.workers.len() {
            let (done, wait) = tokio::sync::oneshot::channel();
            let leaves = leaves.clone();
            if self
                .send_msg(worker, WorkerMsg::Release { leaves, done })
                .is_ok()
            {
                waits.push(wait);
            }
        }
        async move {
            for wait in waits {
                let _ = wait.await;
            }
        }
    }

    #[cfg_attr(not(feature = "gateway"), allow(dead_code))]
    /// Whether the store is open and every worker answers a ping within
    /// `within`; the error says what is wrong.
    pub(crate) async fn readiness(&self, within: Duration) -> std::result::Result<(), String> {
        if self.is_closing() || self.stopped.load(Ordering::Acquire) {
            return Err("the runtime is shutting down".into());
        }
        if let Some(fault) = self.storage_fault() {
            return Err(fault);
        }
        for worker in 0..self.workers.len() {
            let (done, answered) = tokio::sync::oneshot::channel();
            self.send_msg(worker, WorkerMsg::Ping(done))
                .map_err(|_| format!("worker {worker} has stopped"))?;
            match tokio::time::timeout(within, answered).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(format!("worker {worker} has stopped")),
                Err(_) => return Err(format!("worker {worker} did not answer within {within:?}")),
            }
        }
        Ok(())
    }

    pub(crate) fn value_cache_per_worker(&self) -> usize {
        self.value_cache_bytes / self.workers.len().max(1)
    }

    /// The worker an object is pinned to. Id bytes are uniformly random (a
    /// random base or a MAC), so their first bytes spread objects evenly.
    pub(crate) fn worker_for(&self, class: u32, id: &DurableObjectId) -> usize {
        let mut head = [0u8; 8];
        head.copy_from_slice(&id.as_bytes()[..8]);
        let h = u64::from_le_bytes(head) ^ u64::from(class).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        (h % self.workers.len() as u64) as usize
    }

    pub(crate) fn send(&self, worker: usize, envelope: Envelope) -> Result<()> {
        self.send_msg(worker, WorkerMsg::Deliver(envelope))
    }

    /// Stops taking calls, lets the workers finish those already sent (until
    /// the deadline), then stops everything; see [`Runtime::shutdown`].
    pub(crate) async fn shutdown(self: Arc<Self>) {
        self.closing.store(true, Ordering::Release);
        let deadline = Instant::now() + self.shutdown_deadline;
        let mut drained = Vec::new();
        for worker in &self.workers {
            let (done, rx) = tokio::sync::oneshot::channel();
            if worker.send(WorkerMsg::Drain { deadline, done }).is_ok() {
                drained.push(rx);
            }
        }
        for rx in drained {
            let _ = rx.await;
        }
        // Joining threads and closing the store block: do it off this task.
        let (done, stopped) = tokio::sync::oneshot::channel();
        let shared = self.clone();
        let spawned = std::thread::Builder::new()
            .name("do-runtime-shutdown".into())
            .spawn(move || {
                shared.stop();
                let _ = done.send(());
            });
        match spawned {
            Ok(_) => {
                let _ = stopped.await;
            }
            Err(_) => self.stop(),
        }
    }

    pub(crate) fn lock_threads(&self) -> std::sync::MutexGuard<'_, Vec<JoinHandle<()>>> {
        self.threads.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stops the workers (dropping every instance and failing calls in flight
    /// with a disconnected error), then closes the store once every batch
    /// handed to it is durable.
    pub(crate) fn stop(&self) {
        if self.stopped.swap(true, Ordering::AcqRel) {
            return;
        }
        self.alarms.stop();
        for worker in &self.workers {
            let _ = worker.send(WorkerMsg::Stop);
        }
        let threads = std::mem::take(&mut *self.lock_threads());
        for handle in threads {
            // A worker dropping the last runtime handle cannot join itself.
            if handle.thread().id() != std::thread::current().id() {
                let _ = handle.join();
            }
        }
        let store = self.store.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(store) = store {
            store.close();
        }
    }
}

impl Counters {
    /// Adds the cache hits and misses since the last export to the metrics
    /// (as increments: several runtimes may share one recorder).
    pub(crate) fn export_cache(&self, metrics: &crate::engine::telemetry::RuntimeMetrics) {
        let (hits, misses) = self.cache_figures();
        let old_hits = self.exported_hits.swap(hits, Ordering::Relaxed);
        let old_misses = self.exported_misses.swap(misses, Ordering::Relaxed);
        metrics.cache_hits.increment(hits.saturating_sub(old_hits));
        metrics
            .cache_misses
            .increment(misses.saturating_sub(old_misses));
    }

    /// Hits and misses of every worker's value cache.
    pub(crate) fn cache_figures(&self) -> (u64, u64) {
        self.caches
            .iter()
            .fold((0, 0), |(h, m), c| (h + c.hits(), m + c.misses()))
    }
}

/// Counts one open connection (of a server or a gateway) while it lives.
pub(crate) struct ConnectionGuard(Arc<Shared>);

impl ConnectionGuard {
    pub(crate) fn open(shared: &Arc<Shared>) -> Self {
        shared
            .counters
            .open_connections
            .fetch_add(1, Ordering::Relaxed);
        shared.metrics.open_connections.increment(1.0);
        ConnectionGuard(shared.clone())
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0
            .counters
            .open_connections
            .fetch_sub(1, Ordering::Relaxed);
        self.0.metrics.open_connections.decrement(1.0);
    }
}

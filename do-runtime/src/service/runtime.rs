//! The runtime: registered classes, worker threads, and the store.

use std::any::TypeId;
use std::collections::HashMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use do_storage::{Store, StoreOptions};
use tokio::sync::mpsc;

use crate::api::env::Env;
use crate::api::namespace::Namespace;
use crate::api::object::{DurableObject, construct_erased};
use crate::base::error::{DisconnectReason, Error, Result};
use crate::base::id::{DurableObjectId, NamespaceKey};
use crate::base::secret::load_or_create_secret;
use crate::engine::class::{Class, Instance, ObjectParts};
use crate::engine::registry::{QueueLimits, Registry};
use crate::engine::shared::{Counters, Shared};
use crate::engine::worker::{self, WorkerMsg};

/// A running set of Durable Object namespaces with their storage.
///
/// Build one with [`Runtime::builder`], registering every class. Objects run
/// on a fixed set of worker threads, each object pinned to one of them, so
/// object types need be neither `Send` nor `Sync`. Dropping the runtime stops
/// the workers; stubs still held then fail with [`Error::Disconnected`].
///
/// ```
/// # fn main() -> Result<(), do_runtime::Error> {
/// # let dir = tempfile::tempdir().unwrap();
/// # let tokio = tokio::runtime::Runtime::new().unwrap();
/// # tokio.block_on(async {
/// use do_runtime::{durable_object, Ctx, Error, Runtime};
///
/// pub struct Counter { ctx: Ctx }
///
/// #[durable_object]
/// impl Counter {
///     pub fn new(ctx: Ctx) -> Self { Self { ctx } }
///
///     pub async fn increment(&self, amount: i64) -> Result<i64, Error> {
///         let value = self.ctx.storage().get::<i64>("value").await?.unwrap_or(0) + amount;
///         self.ctx.storage().put("value", &value)?;
///         Ok(value)
///     }
/// }
///
/// let rt = Runtime::builder().data_dir(dir.path()).register::<Counter>().build()?;
/// let ns = rt.namespace::<Counter>();
/// let stub = ns.get(ns.id_from_name("foo"));
/// assert_eq!(stub.increment(1).await?, 1);
/// assert_eq!(stub.increment(2).await?, 3);
/// # Ok::<_, Error>(()) })?;
/// # Ok(()) }
/// ```
pub struct Runtime {
    shared: Arc<Shared>,
    /// This runtime's membership of a cluster, once joined.
    #[cfg(feature = "cluster")]
    member: Option<Arc<dyn crate::service::membership::Member>>,
}

/// Headline figures of a runtime; see [`Runtime::stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// What the storage commit thread has done: groups (one fsync each),
    /// object batches, writes, bytes, time spent in fsync.
    pub storage: do_storage::CommitStats,
    /// Instances alive now (built and not evicted or reset).
    pub live_instances: usize,
    /// Calls sent to objects and not yet delivered.
    pub queued_calls: usize,
    /// Open connections of this runtime's servers and gateways.
    pub open_connections: usize,
    /// WebSockets accepted by objects and not yet closed.
    pub websockets: usize,
    /// Calls to this runtime's objects that ended, from local stubs or the
    /// network.
    pub calls: u64,
    /// Those that did not end `ok`: a user error, a panic, an overload, a
    /// disconnect, any other error.
    pub failed_calls: u64,
    /// Reads answered from the value cache.
    pub cache_hits: u64,
    /// Reads that went to the storage engine.
    pub cache_misses: u64,
    /// Replies released together (by the fsync that covered their writes)
    /// and handed to a task on their caller's tokio runtime to send, instead
    /// of each waking its caller from a worker's thread. (Counted when
    /// handed over: a few may still have been sent by the worker, if that
    /// runtime shut down or did not run the task in time.)
    pub relayed_replies: u64,
    /// Bytes held now on behalf of clients (request bodies being read,
    /// frames begun), against
    /// [`RuntimeBuilder::client_memory_bytes`].
    pub client_bytes_held: usize,
    /// Steps of object code reported for holding their worker thread past
    /// [`RuntimeBuilder::stall_threshold`], since the runtime started.
    pub stalled_steps: u64,
    /// Those still running as of the stall watch's last look (at most one
    /// per worker); [`Runtime::stalls`] says which.
    pub stalled_now: usize,
}

impl Stats {
    /// The share of reads the value cache answered (0 when there were none).
    pub fn cache_hit_ratio(&self) -> f64 {
        let total = self.cache_hits + self.cache_misses;
        if total == 0 {
            0.0
        } else {
            self.cache_hits as f64 / total as f64
        }
    }
}

/// Configures and starts a [`Runtime`].
#[must_use]
#[derive(Clone)]
pub struct RuntimeBuilder {
    data_dir: Option<PathBuf>,
    workers: Option<usize>,
    store: StoreOptions,
    value_cache_bytes: usize,
    worker_io: bool,
    worker_spin: Duration,
    caller_spin: Duration,
    queue: QueueLimits,
    idle_timeout: Option<Duration>,
    shutdown_deadline: Duration,
    block_concurrency_limit: Duration,
    stall_threshold: Option<Duration>,
    websocket_event_timeout: Option<Duration>,
    websockets: crate::engine::sockets::Limits,
    client_memory_bytes: usize,
    metrics: crate::engine::telemetry::Source,
    instrument: bool,
    alarm_policy: crate::engine::alarms::RetryPolicy,
    clock: crate::base::clock::Clock,
    classes: Vec<ClassSpec>,
    bindings: crate::base::bindings::Bindings,
    #[cfg(feature = "replication")]
    replication: Option<do_replica::ReplicaConfig>,
    /// See [`RuntimeBuilder::deployment_secret`].
    deployment_secret: Option<Vec<u8>>,
    /// How to join a cluster, once built (see `net::cluster`).
    #[cfg(feature = "cluster")]
    pub(crate) join: Option<crate::service::membership::Join>,
    /// The node name of the cluster to join: the log names its appends
    /// with it (`ReplicaConfig::writer`).
    #[cfg(feature = "cluster")]
    pub(crate) node: Option<String>,
}

#[derive(Clone)]
struct ClassSpec {
    type_id: TypeId,
    name: &'static str,
    schema: &'static str,
    methods: &'static [crate::base::wire::MethodInfo],
    has_alarm: bool,
    construct: fn(ObjectParts) -> Rc<dyn Instance>,
}

impl Runtime {
    /// Starts configuring a runtime.
    pub fn builder() -> RuntimeBuilder {
        RuntimeBuilder {
            data_dir: None,
            workers: None,
            store: StoreOptions::default(),
            value_cache_bytes: 64 * 1024 * 1024,
            worker_io: true,
            worker_spin: Duration::from_micros(50),
            caller_spin: Duration::from_micros(30),
            queue: QueueLimits {
                calls: 100_000,
                bytes: 64 * 1024 * 1024,
            },
            idle_timeout: Some(Duration::from_secs(30)),
            shutdown_deadline: Duration::from_secs(30),
            block_concurrency_limit: Duration::from_secs(30),
            stall_threshold: Some(Duration::from_secs(1)),
            websocket_event_timeout: None,
            websockets: crate::engine::sockets::Limits::default(),
            client_memory_bytes: 256 * 1024 * 1024,
            metrics: crate::engine::telemetry::Source::default(),
            instrument: true,
            alarm_policy: crate::engine::alarms::RetryPolicy::default(),
            clock: crate::base::clock::Clock::default(),
            classes: Vec::new(),
            bindings: Default::default(),
            #[cfg(feature = "replication")]
            replication: None,
            #[cfg(feature = "cluster")]
            join: None,
            #[cfg(feature = "cluster")]
            node: None,
            deployment_secret: None,
        }
    }

    /// The class names of the registered namespaces, in registration order.
    pub fn namespaces(&self) -> Vec<String> {
        self.env().namespaces()
    }

    /// Switches spans and metrics of calls on or off while running, to
    /// measure what they cost on the same threads.
    #[doc(hidden)]
    pub fn __set_instrument(&self, on: bool) {
        if on {
            crate::engine::telemetry::calibrate();
        }
        self.shared.instrument.store(on, Ordering::Relaxed);
    }

    /// The namespace of class `T`.
    ///
    /// # Panics
    /// When `T` was not registered; see [`Runtime::try_namespace`].
    pub fn namespace<T: DurableObject>(&self) -> Namespace<T> {
        self.env().namespace()
    }

    /// The namespace of class `T`, or [`Error::NotRegistered`].
    pub fn try_namespace<T: DurableObject>(&self) -> Result<Namespace<T>> {
        self.env().try_namespace()
    }

    /// Headline figures of this runtime, for programs that want them
    /// without a metrics stack.
    pub fn stats(&self) -> Stats {
        Self::stats_of(&self.shared)
    }

    pub(crate) fn stats_of(shared: &Arc<Shared>) -> Stats {
        let counters = &shared.counters;
        let (cache_hits, cache_misses) = counters.cache_figures();
        let queued_calls = shared.refresh_gauges();
        Stats {
            storage: shared.store().map(|s| s.commit_stats()).unwrap_or_default(),
            live_instances: counters.live_instances.load(Ordering::Relaxed),
            queued_calls,
            open_connections: counters.open_connections.load(Ordering::Relaxed),
            websockets: shared.sockets().count(),
            calls: counters.calls.sum(),
            failed_calls: counters.failed_calls.sum(),
            cache_hits,
            cache_misses,
            relayed_replies: counters.relayed_replies.load(Ordering::Relaxed),
            client_bytes_held: shared.client_budget.held(),
            stalled_steps: counters.stalled_steps.load(Ordering::Relaxed),
            stalled_now: shared
                .stalls
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .len(),
        }
    }

    /// The steps of object code holding their worker thread past
    /// [`RuntimeBuilder::stall_threshold`] as of the stall watch's last
    /// look: class, id, method, worker and for how long. Empty when
    /// nothing stalls (or the watch is off).
    pub fn stalls(&self) -> Vec<crate::engine::stalls::Stall> {
        self.shared
            .stalls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Shuts the runtime down gracefully: new calls fail at once with
    /// [`Error::Disconnected`]; calls already sent are delivered and may
    /// finish (until the deadline set with
    /// [`RuntimeBuilder::shutdown_deadline`]); every write is made durable
    /// and every reply sent; then the workers stop, and stubs still held fail
    /// with [`Error::Disconnected`]. Calling it again does nothing.
    ///
    /// Dropping a runtime without calling this stops it at once instead:
    /// calls in flight fail with [`Error::Disconnected`], and writes already
    /// handed to storage still become durable.
    pub async fn shutdown(&self) {
        if self.shared.stopped.load(Ordering::Acquire) {
            return;
        }
        // A member of a cluster hands its shards over first.
        #[cfg(feature = "cluster")]
        if let Some(member) = &self.member {
            member.leave().await;
        }
        self.shared.clone().shutdown().await;
    }

    /// Runs `future` on one of the runtime's worker threads (each in turn),
    /// beside the objects that live there, and returns its handle.
    ///
    /// A task's calls to the objects of its own thread skip the hand-off
    /// between threads; calls to other objects cost what they cost from any
    /// task. To run beside one object, use
    /// [`Namespace::spawn_beside`](crate::Namespace::spawn_beside).
    ///
    /// The task shares its thread with that worker's objects: it must not
    /// block (no blocking I/O, no long computation without an `.await`), or
    /// those objects wait too. It runs on a single-threaded tokio runtime
    /// with timers, and with I/O unless [`RuntimeBuilder::worker_io`] turned
    /// it off. When the runtime stops, tasks still running are dropped and
    /// their handles fail with [`Error::Disconnected`].
    ///
    /// ```
    /// # fn main() -> Result<(), do_runtime::Error> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let tokio = tokio::runtime::Runtime::new().unwrap();
    /// # tokio.block_on(async {
    /// # use do_runtime::Runtime;
    /// let rt = Runtime::builder().data_dir(dir.path()).build()?;
    /// let answer = rt.spawn(async { 6 * 7 }).await?;
    /// assert_eq!(answer, 42);
    /// # Ok::<_, do_runtime::Error>(()) })?;
    /// # Ok(()) }
    /// ```
    pub fn spawn<F>(&self, future: F) -> crate::engine::spawn::JoinHandle<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let worker =
            self.shared.next_task.fetch_add(1, Ordering::Relaxed) % self.shared.workers.len();
        crate::engine::spawn::spawn_on(&self.shared, worker, move || future)
    }

    /// Evicts the instance of `id` as soon as it is idle, as the idle timeout
    /// would: its memory is dropped and the next call builds a new instance
    /// from storage. Stubs keep working. Resolves to whether an instance was
    /// live. Meant for tests and tools.
    pub async fn evict(&self, id: &DurableObjectId) -> Result<bool> {
        let class = self
            .shared
            .class_by_tag(id.namespace_tag())
            .ok_or_else(|| Error::NotRegistered("the namespace of this id".into()))?;
        let (done, evicted) = tokio::sync::oneshot::channel();
        let worker = self.shared.worker_for(class.index, id);
        self.shared.send_msg(
            worker,
            WorkerMsg::Evict {
                class: class.index,
                base: id.base(),
                done,
            },
        )?;
        evicted.await.map_err(|_| {
            Error::disconnected(DisconnectReason::Shutdown, "the runtime has shut down")
        })
    }

    pub(crate) fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    /// What the cluster looks like from this runtime (members, the owner
    /// and epoch of each shard, the shards this runtime serves), when it is
    /// one of a cluster (feature `cluster`).
    #[cfg(feature = "cluster")]
    pub fn cluster_status(&self) -> Option<do_cluster::Status> {
        self.member.as_ref().map(|member| member.status())
    }

    /// The cluster as this runtime knows it, as `do-cli cluster status`
    /// and the admin API's `GET /admin/cluster` show it (members, the
    /// shards each owns and would own once nothing moves, each shard's
    /// owner and epoch), when it is one of a cluster (feature `cluster`).
    #[cfg(feature = "cluster")]
    pub fn cluster_view(&self) -> Option<do_cluster::ClusterView> {
        self.member.as_ref().and_then(|member| member.view())
    }

    /// This runtime's membership of a cluster, if it is one's (the
    /// gateway's admin API shows it).
    #[cfg(all(feature = "cluster", feature = "gateway"))]
    pub(crate) fn member(&self) -> Option<Arc<dyn crate::service::membership::Member>> {
        self.member.clone()
    }

    /// A cloneable, `Send` handle to this runtime's namespaces.
    pub fn env(&self) -> Env {
        Env::new(self.shared.clone())
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.shared.stop();
    }
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("namespaces", &self.env().namespaces())
            .field("workers", &self.shared.workers.len())
            .finish()
    }
}

impl RuntimeBuilder {
    /// The directory holding the runtime's data (created if missing). Required.
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data_dir = Some(dir.into());
        self
    }

    /// How many worker threads run objects. Default: the number of CPUs.
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = Some(n.max(1));
        self
    }

    /// The storage engine's block cache, in bytes. Default: 64 MiB.
    pub fn cache_bytes(mut self, bytes: u64) -> Self {
        self.store.cache_bytes = bytes;
        self
    }

    /// The size at which the storage engine's memtable of object data is
    /// flushed to a table. Default: 16 MiB (a smaller skiplist keeps the
    /// commit thread's inserts in the CPU's caches; larger means fewer,
    /// bigger flushes); at least 1 MiB. It applies to data directories
    /// created with it: fjall keeps a keyspace's size from its creation.
    ///
    /// ```
    /// let builder = do_runtime::Runtime::builder().memtable_bytes(32 * 1024 * 1024);
    /// # drop(builder);
    /// ```
    pub fn memtable_bytes(mut self, bytes: u64) -> Self {
        self.store.memtable_bytes = bytes;
        self
    }

    /// The total memory bound of the value cache (recently read or written
    /// values, least recently used out first), shared evenly by the workers.
    /// Reads that hit it do no I/O. Default: 64 MiB; 0 turns it off.
    ///
    /// Beside it, each live object keeps the committed values of up to 8
    /// keys it wrote (each at most 1 KiB, so at most 8 KiB an object; a
    /// value that grows larger moves to the cache), forgotten when it is
    /// evicted: a counter rewriting one key then costs the shared cache
    /// nothing per call. This is off too when the cache is.
    pub fn value_cache_bytes(mut self, bytes: usize) -> Self {
        self.value_cache_bytes = bytes;
        self
    }

    /// Whether the worker threads' event loops drive I/O (sockets, pipes), so
    /// objects can use `tokio::net` and HTTP clients in their methods.
    /// Default: on. Turning it off parks idle workers on a futex instead of
    /// epoll, which wakes them a few microseconds sooner.
    pub fn worker_io(mut self, enabled: bool) -> Self {
        self.worker_io = enabled;
        self
    }

    /// How long an idle worker keeps polling for new work before it sleeps.
    ///
    /// A call that reaches a sleeping worker pays for waking its thread (a
    /// futex or an eventfd, then the scheduler: tens of microseconds on a
    /// virtual machine); a call that reaches a spinning one costs a cache
    /// miss. Workers spin only while the runtime is quiet (at most one call
    /// in flight per two cores), or while a client of [`Runtime::serve`]
    /// pipelines calls (its bursts come one round trip apart, and the worker
    /// would sleep through each gap): under other load work arrives in
    /// batches anyway, and a spinning worker would take a core from the
    /// threads producing it. Spinning uses the core for at most this long
    /// after each burst of work, and yields it to any other runnable thread
    /// between polls.
    /// While a worker holds replies for the output gate (their writes are
    /// being fsynced), the budget counts from when the last of them left
    /// (at most 2 ms in all), so the callers' next calls find it awake. The
    /// storage thread polls this long for the next batch after a commit
    /// group of one or two batches.
    /// Default: 50 µs; zero turns it off.
    pub fn worker_spin(mut self, spin: Duration) -> Self {
        self.worker_spin = spin;
        self
    }

    /// How long a call to this runtime's objects keeps its caller's task
    /// polling for the reply before it waits to be woken.
    ///
    /// The reply to a quick call comes back within a few microseconds; a
    /// caller whose thread went to sleep meanwhile pays for waking it (tens
    /// of microseconds on a virtual machine). Only a call that finds the
    /// runtime quiet (as for [`worker_spin`](Self::worker_spin)) polls, and it
    /// holds its thread for this long, or for twice the time the object's
    /// recent replies took when that is longer (a 100-key listing, a reply
    /// held for its fsync), up to 64 × this or 2 ms, whichever is less (an
    /// object whose replies are slower than that gets this only). The spin
    /// ends as soon as other calls arrive. It holds the caller's thread:
    /// other tasks queued on that tokio worker wait for it, so a server that
    /// needs every task's latency low may prefer zero. Calls made on a
    /// worker thread (objects calling objects) or on a current-thread tokio
    /// runtime never spin, and on a single core nothing does. Default:
    /// 30 µs (so at most 1.92 ms); zero turns it off.
    pub fn caller_spin(mut self, spin: Duration) -> Self {
        self.caller_spin = spin;
        self
    }

    /// The most calls that may wait for one object. A call past it fails at
    /// once with [`Error::Overloaded`]; the stub stays usable. Default: 100 000.
    pub fn max_queued_calls(mut self, calls: usize) -> Self {
        self.queue.calls = calls.max(1);
        self
    }

    /// The most argument bytes that may wait for one object. A call past it
    /// fails at once with [`Error::Overloaded`]. Default: 64 MiB.
    pub fn max_queued_bytes(mut self, bytes: usize) -> Self {
        self.queue.bytes = bytes.max(1);
        self
    }

    /// Instances idle this long are evicted: their memory is dropped and the
    /// next call builds a new instance, which reads its state from storage.
    /// Stubs keep working. `None` never evicts. Default: 30 s.
    ///
    /// Each worker sweeps its objects every quarter of the timeout (at
    /// least every 5 ms), and counts an instance idle from the first sweep
    /// that finds it so: it leaves no sooner than the timeout after its last
    /// call, and usually within two sweeps more.
    pub fn idle_timeout(mut self, idle: Option<Duration>) -> Self {
        self.idle_timeout = idle;
        self
    }

    /// How long [`Runtime::shutdown`] lets calls in flight finish. Default: 30 s.
    pub fn shutdown_deadline(mut self, deadline: Duration) -> Self {
        self.shutdown_deadline = deadline;
        self
    }

    /// How long a [`Ctx::block_concurrency_while`] future may hold its
    /// object's input gate. Past it the instance is reset: the calls it
    /// held and the stubs bound to it fail with
    /// [`DisconnectReason::TimedOut`](crate::DisconnectReason::TimedOut),
    /// instead of the object hanging for good. Default: 30 s.
    pub fn block_concurrency_limit(mut self, limit: Duration) -> Self {
        self.block_concurrency_limit = limit;
        self
    }

    /// How long one step of an object's code (a method's poll, a
    /// constructor, a `wait_until` or `block_concurrency_while` future's
    /// poll) may hold its worker thread before the runtime reports it: a
    /// synchronous loop or a `std::thread::sleep` cannot be pre-empted, and
    /// stalls every object of that worker. A stalled step is reported once,
    /// as a `tracing` warning naming class, id and method, the counter
    /// `do_stalled_steps_total`, and in [`Runtime::stats`]. `None` turns
    /// the watch off. Default: 1 s.
    pub fn stall_threshold(mut self, threshold: Option<Duration>) -> Self {
        self.stall_threshold = threshold.filter(|t| !t.is_zero());
        self
    }

    /// How long a WebSocket event handler (`websocket_message`,
    /// `websocket_close`, `websocket_error`) may run, as Cloudflare's
    /// `setHibernatableWebSocketEventTimeout`. Past it the handler is
    /// stopped (dropped at its await; the instance and its other calls
    /// carry on, its writes so far stay), a warning is logged, and the
    /// socket's next event is delivered. `None`: no limit (the default).
    pub fn websocket_event_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.websocket_event_timeout = timeout.filter(|t| !t.is_zero());
        self
    }

    /// The most WebSockets one object may hold (accepted, not yet closed).
    /// Past it, [`Ctx::accept_websocket`] fails with
    /// [`Error::WebSocketLimit`]. Default: 32 768.
    pub fn max_websockets_per_object(mut self, sockets: usize) -> Self {
        self.websockets.per_object = sockets;
        self
    }

    /// The most bytes held on behalf of clients at once, over every
    /// connection of the runtime's gateways and servers: request bodies
    /// being read, frames begun and not yet whole. Past it, a request gets
    /// 503 and a connection whose frame does not fit is closed, so no number
    /// of connections (authenticated or not) can make the runtime hold more.
    /// Default: 256 MiB.
    pub fn client_memory_bytes(mut self, bytes: usize) -> Self {
        self.client_memory_bytes = bytes.max(1);
        self
    }

    /// The largest WebSocket message, in bytes, either way. A client that
    /// sends a larger one is disconnected (close code 1009); an object's
    /// `send` of one fails with [`Error::WebSocketLimit`]. Default: 1 MiB.
    pub fn max_websocket_message_bytes(mut self, bytes: usize) -> Self {
        self.websockets.message_bytes = bytes.max(1);
        self
    }

    /// Records metrics through `recorder` instead of the global recorder of
    /// the `metrics` crate. Without this, install the global recorder (your
    /// exporter) before building the runtime: handles are taken at build time.
    /// See [`telemetry`](crate::engine::telemetry) for what is recorded.
    pub fn metrics_recorder(mut self, recorder: Arc<dyn metrics::Recorder + Send + Sync>) -> Self {
        self.metrics = crate::engine::telemetry::Source::with(recorder);
        self
    }

    /// How failed alarm runs are retried: first after `initial`, then after
    /// twice as long each time, at most `max_retries` times; then the alarm
    /// is dropped. Default: 2 s, 6 retries.
    pub fn alarm_retries(mut self, initial: Duration, max_retries: u32) -> Self {
        self.alarm_policy = crate::engine::alarms::RetryPolicy {
            initial,
            max_retries,
        };
        self
    }

    /// Runs alarms (and [`Ctx::now`]) by `clock` instead of the system
    /// clock: time moves only when a test says so, and alarm tests need not
    /// sleep.
    ///
    /// ```
    /// # use std::{sync::Arc, time::{Duration, SystemTime}};
    /// use do_runtime::{ManualClock, Runtime};
    /// let clock = Arc::new(ManualClock::new(SystemTime::now()));
    /// let builder = Runtime::builder().manual_clock(clock.clone());
    /// clock.advance(Duration::from_secs(60)); // alarms due by then fire
    /// ```
    pub fn manual_clock(mut self, clock: Arc<crate::base::clock::ManualClock>) -> Self {
        self.clock = crate::base::clock::Clock::Manual(clock);
        self
    }

    /// Turns spans and metrics off, to measure what they cost.
    #[doc(hidden)]
    pub fn __instrument(mut self, on: bool) -> Self {
        self.instrument = on;
        self
    }

    /// Fault injection for tests: while `fail` is above zero, each commit
    /// group takes one from it and fails as a failed write would.
    #[doc(hidden)]
    pub fn __fail_commits(mut self, fail: Arc<std::sync::atomic::AtomicUsize>) -> Self {
        self.store.fail_commits = fail;
        self
    }

    /// Fault injection for tests: delay every fsync by `delay`.
    #[doc(hidden)]
    pub fn __persist_delay(mut self, delay: Duration) -> Self {
        self.store.persist_delay = delay;
        self
    }

    /// Binds the plain value `value` to `name`: objects read it with
    /// `ctx.env().var(name)` (SPEC B1). A later call with the same name
    /// replaces it.
    ///
    /// ```
    /// # use do_runtime::{durable_object, Ctx, Error, Runtime};
    /// pub struct Greeter { ctx: Ctx }
    ///
    /// #[durable_object]
    /// impl Greeter {
    ///     pub fn new(ctx: Ctx) -> Self { Self { ctx } }
    ///
    ///     pub async fn greet(&self, who: String) -> Result<String, Error> {
    ///         let greeting = self.ctx.env().var("GREETING")?;
    ///         Ok(format!("{greeting}, {who}"))
    ///     }
    /// }
    ///
    /// # #[tokio::main] async fn main() -> Result<(), Error> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// let rt = Runtime::builder()
    ///     .data_dir(dir.path())
    ///     .var("GREETING", "Hello")
    ///     .secret("API_KEY", "sk-test-only")
    ///     .register::<Greeter>()
    ///     .build()?;
    /// let greeter = rt.namespace::<Greeter>().get_by_name("a");
    /// assert_eq!(greeter.greet("Ada".into()).await?, "Hello, Ada");
    /// # Ok(()) }
    /// ```
    pub fn var(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.bindings.set_var(name.into(), value.into());
        self
    }

    /// Binds the secret `value` to `name`: objects read it with
    /// `ctx.env().secret(name)`. The runtime never shows it: not in
    /// `Debug` output, logs, spans, metrics or the admin API, and it never
    /// leaves the process (remote clients cannot read bindings).
    pub fn secret(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.bindings.set_secret(name.into(), value.into());
        self
    }

    /// The deployment secret ids are signed with: 32 bytes, or the 64 hex
    /// characters `do-cli secret --reveal` shows. Without it a new data
    /// directory makes a random one and keeps it. With it, a new directory
    /// takes this one, so that a directory restored elsewhere (a backup, a
    /// new machine) makes the very same ids; a directory made under another
    /// secret is refused with [`Error::Setup`] at `build`. With
    /// replication, it must be the log's too.
    pub fn deployment_secret(mut self, secret: impl AsRef<[u8]>) -> Self {
        self.deployment_secret = Some(secret.as_ref().to_vec());
        self
    }

    /// Binds a value of type `T` (a config struct, an HTTP client, a
    /// connection pool): objects read it with `ctx.env().get::<T>()`, one
    /// value per type. Shared by every object, so it is `Send + Sync`.
    pub fn binding<T: std::any::Any + Send + Sync>(mut self, value: T) -> Self {
        self.bindings.set_typed(value);
        self
    }

    /// Registers class `T`, under its class name.
    pub fn register<T: DurableObject>(mut self) -> Self {
        self.classes.push(ClassSpec {
            type_id: TypeId::of::<T>(),
            name: T::CLASS,
            schema: T::SCHEMA,
            methods: T::METHODS,
            has_alarm: T::HAS_ALARM,
            construct: construct_erased::<T>,
        });
        self
    }
    /// Replicates every write to a NATS JetStream stream before it is
    /// acknowledged (feature `replication`): a reply leaves only once the
    /// writes it may reflect are stored on a quorum of the stream's
    /// replicas, so they survive the loss of this machine and its disk. At
    /// build the runtime claims the stream's shards for the configured
    /// epoch (a runtime with an older epoch than the stream's is refused,
    /// and one whose epoch is overtaken has its later writes refused by
    /// the server), agrees its deployment secret with the stream, and
    /// reads back what its data directory lacks: on an empty directory,
    /// every object's state. Without it nothing changes.
    ///
    /// ```no_run
    /// # fn main() -> Result<(), do_runtime::Error> {
    /// use do_runtime::{ReplicaConfig, Runtime};
    ///
    /// let rt = Runtime::builder()
    ///     .data_dir("/var/lib/app")
    ///     .replicate(
    ///         ReplicaConfig::new(["nats://10.0.0.1:4222", "nats://10.0.0.2:4222"])
    ///             .stream("APP")
    ///             .replicas(3)
    ///             .epoch(1),
    ///     )
    ///     .build()?;
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "replication")]
    pub fn replicate(mut self, config: do_replica::ReplicaConfig) -> Self {
        self.replication = Some(config);
        self
    }

    /// Opens the data directory and starts the workers.
    ///
    /// The first runtime built in a process also calibrates the clock that
    /// times calls for the metrics: a busy loop of 10–20 ms (at most 200 ms).
    ///
    /// Fails with [`Error::Setup`] when no data directory was given, a class
    /// name is registered twice, or the directory cannot be opened.
    pub fn build(self) -> Result<Runtime> {
        // One call in flight per two cores may spin, so spinning callers
        // leave the workers a core each; none on one core, where the spinner
        // would hold the core the thread it waits for needs.
        let spinning_calls = std::thread::available_parallelism().map_or(1, |n| n.get() as u64) / 2;
        let (worker_spin, caller_spin) = if spinning_calls == 0 {
            (Duration::ZERO, Duration::ZERO)
        } else {
            (self.worker_spin, self.caller_spin)
        };
        self.bindings.check()?;
        let dir = self.data_dir.ok_or_else(|| {
            Error::Setup("no data directory: call RuntimeBuilder::data_dir".into())
        })?;
        let mut by_type = HashMap::new();
        let mut names = HashMap::new();
        for (index, spec) in self.classes.iter().enumerate() {
            if names.insert(spec.name, index).is_some()
                || by_type.insert(spec.type_id, index).is_some()
            {
                return Err(Error::Setup(format!(
                    "class {:?} is registered twice",
                    spec.name
                )));
            }
        }
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::Setup(format!("cannot create {}: {e}", dir.display())))?;
        let n = self
            .workers
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, usize::from));
        let metrics = Arc::new(self.metrics.runtime());
        if self.instrument {
            crate::engine::telemetry::calibrate();
        }
        let counters = Arc::new(Counters {
            caches: (0..n).map(|_| Arc::default()).collect(),
            ..Counters::default()
        });
        let mut store_options = self.store.clone();
        // The storage thread polls for the next batch as long as a worker
        // polls for its next call.
        store_options.commit_spin = worker_spin;
        if self.instrument {
            let (metrics, counters) = (metrics.clone(), counters.clone());
            store_options.on_commit = Some(do_storage::CommitHook(Arc::new(move |group| {
                metrics.commit_writes.record(group.writes as f64);
                metrics.commit_seconds.record(group.persist.as_secs_f64());
                if !group.failed {
                    metrics.bytes_written.increment(group.bytes);
                }
                counters.export_cache(&metrics);
            })));
        }
        #[cfg(feature = "cluster")]
        let clustered = self.join.is_some();
        #[cfg(all(feature = "replication", not(feature = "cluster")))]
        let clustered = false;
        #[cfg(feature = "cluster")]
        if clustered && self.replication.is_none() {
            return Err(Error::Setup(
                "a cluster needs replication: call RuntimeBuilder::replicate too".into(),
            ));
        }
        #[cfg(feature = "replication")]
        let replica = match self.replication.clone() {
            Some(config) => {
                // A runtime of a cluster claims shards as it is given them.
                #[cfg(feature = "cluster")]
                let replica = if clustered {
                    let config = match &self.node {
                        Some(node) => config.writer(node.clone()),
                        None => config,
                    };
                    crate::service::replication::LogReplica::open_for_cluster(config)?
                } else {
                    crate::service::replication::LogReplica::open(config)?
                };
                #[cfg(not(feature = "cluster"))]
                let replica = crate::service::replication::LogReplica::open(config)?;
                store_options.replicate = Some(do_storage::ReplicaHandle(replica.clone()));
                Some(replica)
            }
            None => None,
        };
        let given = self
            .deployment_secret
            .as_deref()
            .map(crate::base::secret::parse_deployment_secret)
            .transpose()?;
        let given = given.as_deref();
        let store = Store::open(&dir, store_options.clone()).map_err(|e| {
            Error::Setup(format!("cannot open the store in {}: {e}", dir.display()))
        })?;
        #[cfg(feature = "replication")]
        let secret = match &replica {
            Some(replica) => crate::base::secret::agreed_secret(&store, given, &mut |proposal| {
                replica.agree_secret(proposal)
            })?,
            None => load_or_create_secret(&store, given)?,
        };
        #[cfg(not(feature = "replication"))]
        let secret = load_or_create_secret(&store, given)?;
        let mut classes = Vec::with_capacity(self.classes.len());
        for (index, spec) in self.classes.iter().enumerate() {
            let storage_namespace = store.namespace_number(spec.name).map_err(|e| {
                Error::Setup(format!("cannot number namespace {:?}: {e}", spec.name))
            })?;
            classes.push(Arc::new(Class {
                index: index as u32,
                name: spec.name.to_owned(),
                schema: spec.schema,
                key: NamespaceKey::derive(&secret, spec.name),
                storage_namespace,
                construct: spec.construct,
                metrics: self.metrics.class(spec.name, spec.methods),
                methods: spec.methods,
                has_alarm: spec.has_alarm,
            }));
        }
        #[cfg(feature = "replication")]
        if let Some(replica) = &replica {
            replica.set_classes(
                classes
                    .iter()
                    .map(|c| (c.storage_namespace, c.name.clone()))
                    .collect(),
            );
            // A runtime of a cluster reads each shard back as it is given
            // it; a lone one, everything its store lacks, now.
            if !clustered {
                let read = replica.restore(&store)?;
                tracing::info!(entries = read, "read back from the replicated log");
            }
        }
        let (senders, receivers): (Vec<_>, Vec<_>) =
            (0..n).map(|_| mpsc::unbounded_channel()).unzip();
        let shared = Arc::new(Shared {
            classes,
            by_type,
            workers: senders,
            threads: Mutex::new(Vec::new()),
            store: Mutex::new(Some(store)),
            store_source: (dir.clone(), store_options),
            // What a reopened store lacks is read back from the log: all of
            // it past its position, alone; the shards it holds, in a cluster.
            #[cfg(feature = "replication")]
            on_reopen: replica.clone().map(|replica| {
                let hook: crate::engine::shared::ReopenHook = if clustered {
                    #[cfg(feature = "cluster")]
                    {
                        Arc::new(move |store| replica.reacquire_held(store))
                    }
                    #[cfg(not(feature = "cluster"))]
                    {
                        Arc::new(move |store| replica.restore(store).map(|_| ()))
                    }
                } else {
                    Arc::new(move |store| replica.restore(store).map(|_| ()))
                };
                hook
            }),
            #[cfg(not(feature = "replication"))]
            on_reopen: None,
            storage_fault: Mutex::new(None),
            bindings: self.bindings,
            value_cache_bytes: self.value_cache_bytes,
            worker_io: self.worker_io,
            worker_spin,
            caller_spin,
            spinning_calls,
            queue: self.queue,
            idle_timeout: self.idle_timeout,
            shutdown_deadline: self.shutdown_deadline,
            block_concurrency_limit: self.block_concurrency_limit,
            websocket_event_timeout: self.websocket_event_timeout,
            registry: Registry::new(),
            client_budget: crate::engine::budget::Budget::new(self.client_memory_bytes),
            sockets: crate::engine::sockets::Sockets::new(
                self.websockets,
                metrics.websockets.clone(),
            ),
            closing: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
            instrument: AtomicBool::new(self.instrument),
            metrics,
            counters,
            alarms: Arc::default(),
            alarm_policy: self.alarm_policy,
            clock: self.clock.clone(),
            next_task: AtomicUsize::new(0),
            beats: match self.stall_threshold {
                Some(_) => (0..n).map(|_| Arc::default()).collect(),
                None => Vec::new(),
            },
            stalls: Mutex::new(Vec::new()),
            home: std::sync::OnceLock::new(),
            #[cfg(feature = "cluster")]
            placement: std::sync::OnceLock::new(),
            node: std::sync::OnceLock::new(),
        });
        let _ = shared.home.set(crate::api::passing::LocalHome::of(&shared));
        // Shards the log lets go in doubt are read back once it answers.
        #[cfg(feature = "replication")]
        if let Some(replica) = &replica {
            replica.repair_in_background(Arc::downgrade(&shared));
        }
        match crate::service::alarms::spawn(shared.clone()) {
            Ok(handle) => shared.lock_threads().push(handle),
            Err(e) => {
                shared.stop();
                return Err(Error::Setup(format!(
                    "cannot start the alarm scheduler: {e}"
                )));
            }
        }
        if let Some(threshold) = self.stall_threshold {
            match crate::service::stalls::spawn(shared.clone(), threshold) {
                Ok(handle) => shared.lock_threads().push(handle),
                Err(e) => {
                    shared.stop();
                    return Err(Error::Setup(format!("cannot start the stall watch: {e}")));
                }
            }
        }
        match crate::service::recovery::spawn(shared.clone()) {
            Ok(handle) => shared.lock_threads().push(handle),
            Err(e) => {
                shared.stop();
                return Err(Error::Setup(format!(
                    "cannot start the storage recovery thread: {e}"
                )));
            }
        }
        for (i, rx) in receivers.into_iter().enumerate() {
            match worker::spawn(i, rx, shared.clone()) {
                Ok(handle) => shared.lock_threads().push(handle),
                Err(e) => {
                    shared.stop();
                    return Err(Error::Setup(format!("cannot start worker thread {i}: {e}")));
                }
            }
        }
        #[cfg(feature = "cluster")]
        let runtime = {
            let mut runtime = Runtime {
                shared,
                member: None,
            };
            if let (Some(join), Some(replica)) = (self.join, replica) {
                match join(&runtime, replica) {
                    Ok(member) => runtime.member = Some(member),
                    Err(e) => {
                        runtime.shared.stop();
                        return Err(e);
                    }
                }
            }
            runtime
        };
        #[cfg(not(feature = "cluster"))]
        let runtime = Runtime { shared };
        Ok(runtime)
    }
}

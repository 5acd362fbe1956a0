//! Worker threads: each runs a single-threaded tokio runtime, routes calls to
//! the objects pinned to it, evicts idle ones, and drains on shutdown.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use do_storage::ValueCache;
use futures_util::future::LocalBoxFuture;
use tokio::sync::{mpsc, oneshot};
use tokio::task::LocalSet;

use crate::base::error::{DisconnectReason, Error};
use crate::base::id::DurableObjectId;
use crate::engine::class::ObjectParts;
use crate::engine::instance::{Mailbox, ObjectTask};
use crate::engine::port::Port;
use crate::engine::registry::ObjectHandle;
use crate::engine::shared::Shared;

/// One message for an object.
pub(crate) struct Envelope {
    pub class: u32,
    /// Where a call's reply goes when released under load (see `relay`).
    /// Here, not in the call, so the envelope keeps to 128 bytes.
    pub relay: Option<crate::engine::relay::RelayId>,
    pub kind: Kind,
}

// Two cache lines: each call's envelope is written by its caller's thread
// and read by the worker's.
const _: () = assert!(std::mem::size_of::<Envelope>() <= 128);

impl Envelope {
    /// The object the message is for.
    pub fn id(&self) -> &DurableObjectId {
        match &self.kind {
            Kind::Call { port, .. } => port.id(),
            Kind::Run { id, .. } => id,
        }
    }

    /// Reads what delivering and answering the call reads first, in memory
    /// its caller's thread wrote: its arguments, its reply's way back, its
    /// object's generation (see the router's warm-up). The value means
    /// nothing.
    pub fn warm_up(&self) -> u64 {
        match &self.kind {
            Kind::Call {
                args, reply, port, ..
            } => {
                u64::from(args.first().copied().unwrap_or(0))
                    + reply.warm_up()
                    + port
                        .handle()
                        .generation
                        .load(std::sync::atomic::Ordering::Relaxed)
            }
            Kind::Run { .. } => 0,
        }
    }

    /// The object's handle (its queue counters and generation).
    pub fn handle(&self) -> &Arc<ObjectHandle> {
        match &self.kind {
            Kind::Call { port, .. } => port.handle(),
            Kind::Run { handle, .. } => handle,
        }
    }
}

pub(crate) enum Kind {
    /// A method call through a port; `slot` holds its queue room.
    Call {
        method: u32,
        args: Vec<u8>,
        reply: crate::engine::reply::ReplyTo,
        port: Arc<Port>,
        slot: crate::engine::registry::QueueSlot,
        /// Sent by the runtime itself (a WebSocket event): may reach handlers.
        system: bool,
        /// The caller's trace (0: none) and span, which the object's span joins.
        trace: crate::base::trace::Packed,
        span: tracing::Span,
    },
    /// A closure run with the object's context, in order with its calls.
    Run {
        id: DurableObjectId,
        handle: Arc<ObjectHandle>,
        run: Box<dyn FnOnce(ObjectParts) -> LocalBoxFuture<'static, ()> + Send>,
    },
}

/// Which objects (by id) leave this runtime: see `WorkerMsg::Release`.
pub(crate) type Leaves = Arc<dyn Fn(&[u8; 16]) -> bool + Send + Sync>;

pub(crate) enum WorkerMsg {
    Deliver(Envelope),
    /// Evict the object once it is idle; answers whether it was live.
    Evict {
        class: u32,
        base: [u8; 16],
        done: oneshot::Sender<bool>,
    },
    /// Finish the calls already sent (until `deadline`), then answer.
    Drain {
        deadline: Instant,
        done: oneshot::Sender<()>,
    },
    /// Answer at once: the worker is responsive.
    Ping(oneshot::Sender<()>),
    /// In a cluster: the objects whose id `leaves` says moved to another
    /// runtime (their shard did). Each is reset and let go at once; calls
    /// queued for it fail `Moved`. Answers once all were told.
    Release {
        leaves: Leaves,
        done: oneshot::Sender<()>,
    },
    /// The store failed: reset every object (their views of the store go
    /// with their tasks) and let go of the store until `Attach`; calls
    /// meanwhile are refused. Answers once the store is let go.
    Detach(oneshot::Sender<()>),
    /// Serve from this (reopened) store.
    Attach(do_storage::Store),
    /// Spawn a task on the worker's `LocalSet` (see `Runtime::spawn`).
    Spawn(Box<dyn FnOnce() + Send>),
    Stop,
}

pub(crate) type ObjectKey = (u32, [u8; 16]);

/// What every object task of one worker shares.
pub(crate) struct WorkerLocal {
    pub shared: Arc<Shared>,
    /// `None` while the runtime reopens a failed store (see
    /// `service::recovery`).
    pub storage: RefCell<Option<WorkerStorage>>,
    pub objects: Objects,
    /// Replies of this worker's objects waiting for their writes to be
    /// durable; the worker spins while there are some (see `spin`).
    pub awaiting: Arc<AtomicUsize>,
}
/// The worker's part of one opened store.
pub(crate) struct WorkerStorage {
    pub store: do_storage::Store,
    pub cache: ValueCache,
    /// Replies of this worker's objects held until their writes are
    /// durable; released here, by a task on the worker.
    pub releases: do_storage::Releases,
    /// That task, ended with this store.
    releasing: tokio::task::JoinHandle<()>,
}

impl WorkerStorage {
    /// Starts serving `store` on worker `index`: a new (empty) value cache,
    /// and the task that releases held replies.
    fn attach(index: usize, shared: &Arc<Shared>, store: do_storage::Store) -> WorkerStorage {
        let releases = do_storage::Releases::new(&store);
        let runtime = shared.clone();
        let releasing = tokio::task::spawn_local(releases.clone().run_in_bursts(move |release| {
            let relayed = crate::engine::relay::burst(release);
            if relayed > 0 {
                runtime
                    .counters
                    .relayed_replies
                    .fetch_add(relayed, std::sync::atomic::Ordering::Relaxed);
            }
        }));
        WorkerStorage {
            store,
            cache: ValueCache::with_counters(
                shared.value_cache_per_worker(),
                shared
                    .counters
                    .caches
                    .get(index)
                    .cloned()
                    .unwrap_or_default(),
            ),
            releases,
            releasing,
        }
    }
}

impl Drop for WorkerStorage {
    fn drop(&mut self) {
        // Replies it still holds go to the commit thread (see `Releases`).
        self.releasing.abort();
    }
}

/// The worker's objects, looked up on every call. Keyed with foldhash's
/// randomly seeded hasher: much cheaper than SipHash, and still seeded, for
/// an id's base is chosen by whoever holds its namespace's key (every remote
/// client does).
pub(crate) type Objects = Rc<RefCell<HashMap<ObjectKey, Mailbox, foldhash::fast::RandomState>>>;

pub(crate) fn spawn(
    index: usize,
    rx: mpsc::UnboundedReceiver<WorkerMsg>,
    shared: Arc<Shared>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("do-worker-{index}"))
        .spawn(move || {
            crate::engine::spin::mark_worker();
            if let Some(home) = shared.home.get() {
                crate::base::passing::install(home.clone());
            }
            if let Some(beat) = shared.beats.get(index) {
                crate::engine::stalls::install(beat.clone());
            }
            let mut builder = tokio::runtime::Builder::new_current_thread();
            builder.enable_time();
            if shared.worker_io() {
                builder.enable_io();
            }
            let rt = match builder.build() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("do-runtime: worker {index} cannot start its event loop: {e}");
                    return;
                }
            };
            let local = LocalSet::new();
            let quiet = shared.clone();
            let loaded = shared.clone();
            let awaiting = Arc::new(AtomicUsize::new(0));
            rt.block_on(
                crate::engine::spin::flagged(
                    move || quiet.worker_spin_now(),
                    crate::engine::wakes::DeferWakes::new(local.run_until(route(
                        index,
                        rx,
                        shared,
                        awaiting.clone(),
                    ))),
                )
                // Through an fsync only while the runtime is quiet: a
                // pipelining client's bursts do not come with the fsyncs.
                .awaiting(awaiting, crate::engine::spin::AWAITED_CAP, move || {
                    loaded.quiet()
                }),
            );
        })
}

/// Routes each message to its object's mailbox, starting the object's task on
/// its first message. One FIFO channel per worker keeps each stub's calls in order.
async fn route(
    index: usize,
    rx: mpsc::UnboundedReceiver<WorkerMsg>,
    shared: Arc<Shared>,
    awaiting: Arc<AtomicUsize>,
) {
    // The store is held for the worker's life; the runtime takes its own
    // copy out at stop.
    let Some(store) = shared.store() else { return };
    let local = WorkerLocal {
        shared: shared.clone(),
        storage: RefCell::new(Some(WorkerStorage::attach(index, &shared, store))),
        objects: Objects::default(),
        awaiting,
    };
    if let Some(idle) = shared.idle_timeout() {
        tokio::task::spawn_local(sweep(local.objects.clone(), idle));
    }
    let router = Rc::new(Router {
        index,
        local,
        rx: RefCell::new(rx),
        taken: RefCell::new(VecDeque::with_capacity(RECEIVE_BATCH)),
        deferred: RefCell::new(Vec::with_capacity(RECEIVE_BATCH)),
    });
    let _here = Here::enter(router.clone());
    let mut buffer = Vec::with_capacity(RECEIVE_BATCH);
    let mut since_yield = 0;
    loop {
        // The receiver is borrowed only inside each poll, so that a task of
        // this worker can check that nothing is queued (see `deliver_here`).
        let mut waited = false;
        let received = std::future::poll_fn(|cx| {
            let polled = router
                .rx
                .borrow_mut()
                .poll_recv_many(cx, &mut buffer, RECEIVE_BATCH);
            waited |= polled.is_pending();
            polled
        })
        .await;
        if waited {
            // The channel ran dry: the worker's other tasks had their turn.
            since_yield = 0;
        }
        if received == 0 {
            break;
        }
        router.warm_up(&buffer);
        router.taken.borrow_mut().extend(buffer.drain(..));
        let stop = router.handle_taken();
        // Turns run on the router's own task: let the worker's other tasks
        // (the objects' own, the releases of replies) run now and then.
        since_yield += received;
        let yielding = since_yield >= YIELD_EVERY;
        // The writes of the turns run here go to disk before the router
        // waits or yields (so never later than the end of its turn), as one
        // batch per object for all its calls handed over until then: as
        // many as its task would have found queued, had it been woken.
        if stop || yielding || router.rx.borrow().is_empty() {
            router.flush_deferred();
        }
        if stop {
            break;
        }
        if yielding {
            since_yield = 0;
            crate::engine::spin::yield_once().await;
        }
    }
}

/// How many messages the router hands over between yields to the worker's
/// other tasks.
const YIELD_EVERY: usize = 128;

/// How many messages the router takes off its channel at a time.
const RECEIVE_BATCH: usize = 64;

impl Router {
    /// Reads, for each call of `batch`, the memory its delivery reads
    /// first: its stub, its entry in the object map, its mailbox and its
    /// object's storage. Each call's chain of reads depends on itself only,
    /// so the CPU overlaps the cache misses of several calls here, where
    /// delivering them one after another would wait for each miss in turn
    /// (across 10 000 objects, nearly every one misses).
    fn warm_up(&self, batch: &[WorkerMsg]) {
        let Ok(objects) = self.local.objects.try_borrow() else {
            return;
        };
        for msg in batch {
            if let WorkerMsg::Deliver(envelope) = msg
                && let Some(mailbox) = objects.get(&(envelope.class, envelope.id().base()))
            {
                std::hint::black_box(mailbox.warm_up() + envelope.warm_up());
            }
        }
    }

    /// Handles the messages taken off the channel, in order. Returns
    /// whether the worker is to stop.
    fn handle_taken(&self) -> bool {
        loop {
            let Some(msg) = self.taken.borrow_mut().pop_front() else {
                return false;
            };
            if self.handle(msg) {
                // Dropped outside the borrow: a dropped call answers its
                // caller, whose code may look at this queue.
                let rest = std::mem::take(&mut *self.taken.borrow_mut());
                drop(rest);
                return true;
            }
        }
    }

    /// Handles one message; returns whether the worker is to stop.
    fn handle(&self, msg: WorkerMsg) -> bool {
        let router = self;
        // Every arm acts on its message without awaiting: `deliver_here`
        // relies on an empty channel and no message taken and not handled
        // meaning every message is handed over.
        match msg {
            WorkerMsg::Deliver(envelope) => router.deliver(envelope),
            WorkerMsg::Evict { class, base, done } => {
                let mailbox = router.local.objects.borrow().get(&(class, base)).cloned();
                match mailbox {
                    Some(mailbox) => mailbox.request_eviction(Some(done)),
                    None => {
                        let _ = done.send(false);
                    }
                }
            }
            WorkerMsg::Drain { deadline, done } => {
                tokio::task::spawn_local(drain(router.local.objects.clone(), deadline, done));
            }
            WorkerMsg::Spawn(start) => start(),
            WorkerMsg::Ping(done) => {
                let _ = done.send(());
            }
            WorkerMsg::Release { leaves, done } => {
                let moving: Vec<Mailbox> = {
                    let mut objects = router.local.objects.borrow_mut();
                    let keys: Vec<(u32, [u8; 16])> = objects
                        .keys()
                        .filter(|(_, base)| leaves(base))
                        .copied()
                        .collect();
                    keys.iter().filter_map(|key| objects.remove(key)).collect()
                };
                for mailbox in moving {
                    mailbox.request_move();
                }
                // The objects that left may come back, read anew from the
                // replicated log (not through this worker's views): what
                // the cache remembers of them must not hide that. The cache
                // holds no object ids, so it forgets everything.
                if let Some(storage) = router.local.storage.borrow().as_ref() {
                    storage.cache.clear();
                }
                let _ = done.send(());
            }
            WorkerMsg::Detach(done) => {
                router.local.storage.borrow_mut().take();
                // Taken out first: a task may look itself up as it leaves.
                let objects = std::mem::take(&mut *router.local.objects.borrow_mut());
                for mailbox in objects.values() {
                    mailbox.request_detach();
                }
                let _ = done.send(());
            }
            WorkerMsg::Attach(store) => {
                let storage = WorkerStorage::attach(router.index, &router.local.shared, store);
                *router.local.storage.borrow_mut() = Some(storage);
            }
            WorkerMsg::Stop => return true,
        }
        false
    }
}

/// A worker's routing state: its objects, and its queue of messages.
struct Router {
    index: usize,
    local: WorkerLocal,
    rx: RefCell<mpsc::UnboundedReceiver<WorkerMsg>>,
    /// Messages taken off the channel and not yet handled, oldest first.
    taken: RefCell<VecDeque<WorkerMsg>>,
    /// Objects whose turns ran on the router's turn and left writes to
    /// hand to the commit thread before the router waits or yields.
    deferred: RefCell<Vec<Mailbox>>,
}

impl Router {
    /// Hands `envelope` to its object's mailbox, starting the object's task
    /// if it has none.
    fn deliver(&self, envelope: Envelope) {
        let key = (envelope.class, envelope.id().base());
        let mailbox = self.local.objects.borrow().get(&key).cloned();
        let mailbox = match mailbox {
            Some(mailbox) => mailbox,
            None => {
                let mailbox = Mailbox::default();
                let class = self.local.shared.classes()[envelope.class as usize].clone();
                let task = {
                    let storage = self.local.storage.borrow();
                    let Some(storage) = storage.as_ref() else {
                        crate::engine::instance::refuse(envelope, storage_reopening());
                        return;
                    };
                    ObjectTask::new(
                        class,
                        envelope.id().clone(),
                        envelope.handle().clone(),
                        mailbox.clone(),
                        &self.local,
                        storage,
                    )
                };
                self.local.objects.borrow_mut().insert(key, mailbox.clone());
                task.spawn();
                mailbox
            }
        };
        // A sleeping object's turn runs here; a busy or new one's task
        // takes the call from its mailbox.
        match mailbox.deliver_inline(envelope) {
            Ok(true) => self.deferred.borrow_mut().push(mailbox),
            Ok(false) => {}
            Err(envelope) => mailbox.push(envelope),
        }
    }

    /// Hands the writes of the turns run on the router's turn to the commit
    /// thread.
    fn flush_deferred(&self) {
        let mut deferred = std::mem::take(&mut *self.deferred.borrow_mut());
        // Hands writes over, runs no object code: nothing is added meanwhile.
        for mailbox in deferred.drain(..) {
            mailbox.flush_deferred();
        }
        // The list's room is kept for the next batch.
        let mut slot = self.deferred.borrow_mut();
        debug_assert!(slot.is_empty());
        std::mem::swap(&mut *slot, &mut deferred);
        slot.append(&mut deferred);
    }
}

/// What a call meets while the runtime reopens its failed store: its object
/// was reset, and a new stub's call succeeds once the store is back.
pub(crate) fn storage_reopening() -> Error {
    Error::disconnected(
        DisconnectReason::Reset,
        "the storage failed and is being reopened; the object was reset: get a new stub and retry",
    )
}

thread_local! {
    /// The router of the worker running on this thread, while it runs.
    static HERE: RefCell<Option<Rc<Router>>> = const { RefCell::new(None) };
}

/// Makes a router this thread's for as long as it is held.
struct Here;

impl Here {
    fn enter(router: Rc<Router>) -> Here {
        HERE.with(|here| *here.borrow_mut() = Some(router));
        Here
    }
}

impl Drop for Here {
    fn drop(&mut self) {
        HERE.with(|here| here.borrow_mut().take());
    }
}

/// Delivers `envelope` at once, without the worker's channel, when the
/// caller runs on worker `worker` of `runtime` itself, that worker has no
/// message queued, and the object's task is running; hands it back otherwise.
///
/// The queue must be empty: a call through the same stub may have been sent
/// on the channel earlier (from another thread), and the later call must not
/// overtake it (E-order). The router takes each message off the channel and
/// hands it over in one step on this very thread, so an empty channel means
/// every message sent before this call was checked is in its mailbox.
///
/// Only a running object task is handed a call here: starting one is the
/// router's job, since the caller may be polled inside some other `LocalSet`
/// (a user's nested one, or none at all for a plain `tokio::spawn` task on
/// the worker's runtime), where a task spawned now would live and die.
/// Pushing to a mailbox and waking its task is sound from any task of this
/// thread.
// The envelope comes back whole when it cannot go this way (it is at most
// 128 bytes, asserted above): boxing it would cost an allocation per call.
#[allow(clippy::result_large_err)]
pub(crate) fn deliver_here(
    runtime: &Arc<Shared>,
    worker: usize,
    envelope: Envelope,
) -> Result<(), Envelope> {
    let router = HERE.with(|here| {
        here.borrow()
            .as_ref()
            .filter(|r| r.index == worker && Arc::ptr_eq(&r.local.shared, runtime))
            .cloned()
    });
    let Some(router) = router else {
        return Err(envelope);
    };
    if !router.rx.try_borrow().is_ok_and(|rx| rx.is_empty())
        || !router
            .taken
            .try_borrow()
            .is_ok_and(|taken| taken.is_empty())
    {
        return Err(envelope);
    }
    let key = (envelope.class, envelope.id().base());
    let mailbox = match router.local.objects.try_borrow() {
        Ok(objects) => objects.get(&key).cloned(),
        Err(_) => None,
    };
    match mailbox {
        Some(mailbox) => {
            mailbox.push(envelope);
            Ok(())
        }
        None => Err(envelope),
    }
}

/// Asks idle objects to leave, every quarter of the idle timeout.
async fn sweep(objects: Objects, idle: Duration) {
    let period = (idle / 4).max(Duration::from_millis(5));
    loop {
        tokio::time::sleep(period).await;
        let now = Instant::now();
        for mailbox in objects.borrow().values() {
            if mailbox.idle_since(now) >= idle {
                mailbox.request_eviction(None);
            }
        }
    }
}

/// Waits until no object of this worker has a call queued or running, or
/// the deadline passes.
async fn drain(objects: Objects, deadline: Instant, done: oneshot::Sender<()>) {
    while Instant::now() < deadline {
        if objects.borrow().values().all(Mailbox::is_idle) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let _ = done.send(());
}

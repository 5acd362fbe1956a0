//! One object's task: delivers its calls in order, runs them (interleaving
//! only where a method awaits), hands each result to the output gate, resets
//! the instance when a method panics, and leaves when evicted.

use std::any::Any;
use std::cell::{Cell, OnceCell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use do_storage::ObjectStore;
use futures_util::StreamExt;
use futures_util::future::LocalBoxFuture;
use futures_util::stream::FuturesUnordered;
use tokio::sync::oneshot;

use crate::base::error::{DisconnectReason, Error};
use crate::base::id::DurableObjectId;
use crate::base::trace::{ShortId, TraceId};
use crate::engine::class::{Class, Instance, ObjectParts};
use crate::engine::input_gate::{InputGate, ResetCause};
use crate::engine::registry::ObjectHandle;
use crate::engine::reply::{Reply, ReplyTo};
use crate::engine::shared::Shared;
use crate::engine::worker::{Envelope, Kind, ObjectKey, Objects, WorkerLocal, WorkerStorage};

/// How many messages one poll delivers before yielding to the worker's other tasks.
const DELIVERY_BUDGET: usize = 64;

/// An object's queue and the facts the worker's sweeper and drainer read.
#[derive(Clone)]
pub(crate) struct Mailbox {
    slot: Rc<Slot>,
}

struct Slot {
    queue: RefCell<VecDeque<Envelope>>,
    waker: RefCell<Option<Waker>>,
    /// Calls (and closures) running in the task.
    busy: Cell<usize>,
    /// `wait_until` futures running beside them: the object is not idle
    /// (not evicted) while there are any.
    background: Cell<usize>,
    /// Counts deliveries and finished calls: the sweeper tells activity
    /// from it without a clock read per call.
    activity: Cell<u64>,
    /// The activity count the sweeper last saw, and since when it has not
    /// changed.
    seen: Cell<(u64, Instant)>,
    /// `Some` once eviction was asked for, with whoever waits for it.
    eviction: RefCell<Option<Vec<oneshot::Sender<bool>>>>,
    /// Set when the store failed: the task resets its object, refuses what
    /// is queued and leaves, letting go of its view of the store.
    detached: Cell<bool>,
    /// Set with `detached` when the object's shard moved (a cluster): the
    /// calls it cuts off and refuses fail `Moved`.
    moved: Cell<bool>,
    /// The task's own waker, as of its last own poll: `waker` holds one
    /// only while the task is parked on an empty mailbox, not while it
    /// waits for its input gate or for calls, and a detach must reach it
    /// then too. Cloned only when it changes (once, in practice).
    runner: RefCell<Option<Waker>>,
    /// The task's state, which the router may drive itself (see
    /// [`Mailbox::deliver_inline`]). Weak: the task owns it.
    task: OnceCell<Weak<RefCell<ObjectTask>>>,
    /// Set while the router drives the task (see [`Mailbox::deliver_inline`]):
    /// a park then only says so here, in `parked_inline`, and the router puts
    /// back the waker it took, instead of cloning the task's waker anew (a
    /// clone writes the task's reference count, in memory no other part of
    /// the call touches).
    inline: Cell<bool>,
    parked_inline: Cell<bool>,
    /// Set while writes of a turn run on the router's turn wait for the
    /// router to hand them over (see [`Mailbox::flush_deferred`]).
    deferred: Cell<bool>,
}

impl Default for Mailbox {
    fn default() -> Self {
        Mailbox {
            slot: Rc::new(Slot {
                queue: RefCell::default(),
                waker: RefCell::default(),
                busy: Cell::new(0),
                background: Cell::new(0),
                activity: Cell::new(0),
                seen: Cell::new((0, Instant::now())),
                eviction: RefCell::default(),
                detached: Cell::new(false),
                moved: Cell::new(false),
                runner: RefCell::default(),
                task: OnceCell::new(),
                inline: Cell::new(false),
                parked_inline: Cell::new(false),
                deferred: Cell::new(false),
            }),
        }
    }
}

impl Mailbox {
    pub fn push(&self, envelope: Envelope) {
        self.slot.queue.borrow_mut().push_back(envelope);
        self.wake();
    }

    fn wake(&self) {
        if let Some(waker) = self.slot.waker.borrow_mut().take() {
            waker.wake();
        }
    }

    fn push_front(&self, envelope: Envelope) {
        self.slot.queue.borrow_mut().push_front(envelope);
    }

    fn pop(&self) -> Option<Envelope> {
        self.slot.queue.borrow_mut().pop_front()
    }

    fn park(&self, waker: &Waker) {
        if self.slot.inline.get() {
            self.slot.parked_inline.set(true);
            return;
        }
        let mut parked = self.slot.waker.borrow_mut();
        match &*parked {
            Some(old) if old.will_wake(waker) => {}
            _ => *parked = Some(waker.clone()),
        }
    }

    /// Reads what delivering a call to this object reads first: its
    /// mailbox, its task's state and its storage (see the router's warm-up).
    /// The value means nothing; it only keeps the reads from being
    /// optimised away.
    pub fn warm_up(&self) -> u64 {
        let slot = &self.slot;
        let mut sum = (slot.queue.borrow().len() + slot.busy.get()) as u64;
        if let Some(task) = slot.task.get().and_then(Weak::upgrade)
            && let Ok(task) = task.try_borrow()
        {
            sum += u64::from(task.gate.is_open())
                + task.handle.generation.load(Ordering::Relaxed)
                + task.store.warm_up();
        }
        sum
    }

    /// Delivers `envelope` and runs the object's turn right here, on the
    /// router's turn, when its task sleeps waiting for mail (nothing queued,
    /// its waker parked, nothing else driving it); hands it back otherwise.
    ///
    /// This is what the task's next poll would do, without waking the task
    /// and having the worker's `LocalSet` schedule and poll it: most calls
    /// of a busy worker go to objects whose tasks sleep. The turn runs with
    /// the task's own waker, so whatever it leaves pending (a call that
    /// awaits, a closed gate) wakes the task as before, and eviction is
    /// left to the task, which alone can end itself.
    ///
    /// The turn's writes are not handed to the commit thread here: `Ok(true)`
    /// says the router must call [`flush_deferred`](Self::flush_deferred)
    /// before it waits or yields, so that the calls one object gets until
    /// then share one write batch, as they do when its task takes them from
    /// its queue in one turn.
    ///
    /// Only the router calls this, from the top of its loop: never from an
    /// object's own turn, where a call to another object of the worker
    /// would nest that object's turn inside it.
    #[allow(clippy::result_large_err)] // handed back unboxed, as in `deliver_here`
    pub fn deliver_inline(&self, envelope: Envelope) -> Result<bool, Envelope> {
        let slot = &self.slot;
        if slot.waker.borrow().is_none() || !slot.queue.borrow().is_empty() {
            return Err(envelope);
        }
        let Some(task) = slot.task.get().and_then(Weak::upgrade) else {
            return Err(envelope);
        };
        let Ok(mut task) = task.try_borrow_mut() else {
            return Err(envelope);
        };
        let Some(waker) = slot.waker.borrow_mut().take() else {
            return Err(envelope);
        };
        slot.queue.borrow_mut().push_back(envelope);
        slot.inline.set(true);
        // The object's code catches its own panics; one here would be the
        // runtime's bug, and must not take the router down with it.
        let stepped = catch_unwind(AssertUnwindSafe(|| {
            task.step(&mut Context::from_waker(&waker), false)
        }));
        slot.inline.set(false);
        let parked = slot.parked_inline.replace(false);
        match stepped {
            Ok(_) if parked => *slot.waker.borrow_mut() = Some(waker),
            // Not parked: the turn left the task woken (its budget spent,
            // eviction asked for) or waiting on its gate, with wakers of
            // its own.
            Ok(_) => {}
            Err(panic) => {
                tracing::error!(
                    target: "do_runtime::lifecycle",
                    "an object's turn panicked outside its methods: {}",
                    panic_message(&*panic)
                );
                // Whatever the turn left half done, the task's own poll
                // takes it from here.
                waker.wake();
            }
        }
        let flush = task.store.has_unflushed() && !slot.deferred.replace(true);
        Ok(flush)
    }

    /// Hands the writes of turns run by [`deliver_inline`](Self::deliver_inline)
    /// to the commit thread, as the end of the task's own turn would.
    pub fn flush_deferred(&self) {
        let slot = &self.slot;
        slot.deferred.set(false);
        let Some(task) = slot.task.get().and_then(Weak::upgrade) else {
            return;
        };
        match task.try_borrow() {
            // A failed hand-over fails the waiting calls through their releases.
            Ok(task) if task.store.has_unflushed() => {
                let _ = task.store.flush();
            }
            Ok(_) => {}
            // Never on the router's turn; should it ever be, the task's
            // own turn flushes at its end.
            Err(_) => {
                if let Some(waker) = slot.waker.borrow_mut().take() {
                    waker.wake();
                }
            }
        }
    }

    /// Whether nothing is queued or running, not even background work.
    pub fn is_idle(&self) -> bool {
        self.slot.busy.get() == 0
            && self.slot.background.get() == 0
            && self.slot.queue.borrow().is_empty()
    }

    /// Counts a `wait_until` future started.
    pub fn background_started(&self) {
        self.slot.background.set(self.slot.background.get() + 1);
    }

    /// Counts a `wait_until` future ended (or dropped), as activity: the
    /// idle timeout counts from here; and wakes the task, in case an
    /// eviction waited for it.
    pub fn background_ended(&self) {
        self.slot
            .background
            .set(self.slot.background.get().saturating_sub(1));
        self.touch();
        self.wake_task();
    }

    /// Wakes the task wherever it waits (its mailbox, its gate, its calls),
    /// so its next turn sees what changed.
    pub fn wake_task(&self) {
        self.wake();
        if let Some(runner) = self.slot.runner.borrow().as_ref() {
            runner.wake_by_ref();
        }
    }

    /// How long the object has been idle, as far as the sweeper can tell:
    /// since the first sweep (`now`) that found its activity count as it is
    /// now. Zero while it is busy, or when it was active since the last sweep.
    pub fn idle_since(&self, now: Instant) -> Duration {
        let activity = self.slot.activity.get();
        let (seen, since) = self.slot.seen.get();
        if !self.is_idle() || seen != activity {
            self.slot.seen.set((activity, now));
            return Duration::ZERO;
        }
        now.saturating_duration_since(since)
    }

    /// Counts a delivery or a finished call.
    fn touch(&self) {
        self.slot
            .activity
            .set(self.slot.activity.get().wrapping_add(1));
    }

    /// Asks the task to reset its object and leave at once (the store
    /// failed; see `WorkerMsg::Detach`).
    pub fn request_detach(&self) {
        self.slot.detached.set(true);
        self.wake();
        let runner = self.slot.runner.borrow_mut().take();
        if let Some(runner) = runner {
            runner.wake();
        }
    }

    /// Asks the task to reset its object and leave at once because its
    /// shard moved to another runtime (see `WorkerMsg::Release`).
    pub fn request_move(&self) {
        self.slot.moved.set(true);
        self.request_detach();
    }

    /// Tells whoever asked for an eviction whether a live instance left.
    fn answer_evictions(&self, evicted: bool) {
        let waiting = self.slot.eviction.borrow_mut().take();
        for done in waiting.unwrap_or_default() {
            let _ = done.send(evicted);
        }
    }

    /// Asks the task to drop its instance and leave once idle.
    pub fn request_eviction(&self, done: Option<oneshot::Sender<bool>>) {
        self.slot
            .eviction
            .borrow_mut()
            .get_or_insert_with(Vec::new)
            .extend(done);
        self.wake();
    }
}

pub(crate) struct ObjectTask {
    class: Arc<Class>,
    id: DurableObjectId,
    handle: Arc<ObjectHandle>,
    shared: Arc<Shared>,
    mailbox: Mailbox,
    objects: Objects,
    key: ObjectKey,
    /// The worker's count of replies held for the output gate.
    awaiting: Arc<AtomicUsize>,
    store: Rc<ObjectStore>,
    gate: Rc<InputGate>,
    /// The live instance.
    instance: Option<Rc<dyn Instance>>,
    running: FuturesUnordered<Running>,
    /// Wakes the task to retry an eviction that waits for the engine.
    retry: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl ObjectTask {
    pub fn new(
        class: Arc<Class>,
        id: DurableObjectId,
        handle: Arc<ObjectHandle>,
        mailbox: Mailbox,
        worker: &WorkerLocal,
        storage: &WorkerStorage,
    ) -> Self {
        let prefix = do_storage::ObjectPrefix::new(class.storage_namespace, id.base());
        let store = Rc::new(storage.store.object_on_thread(
            prefix,
            storage.cache.clone(),
            storage.releases.clone(),
        ));
        if let Some(name) = id.name() {
            store.set_name(name);
        }
        let key = (class.index, id.base());
        let of = crate::engine::stalls::StepOf {
            class: key.0,
            base: key.1,
            method: 0,
        };
        let gate = Rc::new(InputGate::new(mailbox.clone(), of));
        ObjectTask {
            class,
            id,
            handle,
            shared: worker.shared.clone(),
            mailbox,
            objects: worker.objects.clone(),
            key,
            awaiting: worker.awaiting.clone(),
            store,
            gate,
            instance: None,
            running: FuturesUnordered::new(),
            retry: None,
        }
    }

    /// Spawns the object's task on the worker's `LocalSet`.
    pub fn spawn(self) {
        let task = Rc::new(RefCell::new(self));
        let _ = task.borrow().mailbox.slot.task.set(Rc::downgrade(&task));
        tokio::task::spawn_local(Runner(task));
    }

    /// One turn: delivers what is queued and runs what is ready. In the
    /// task's own poll (`own_poll`) it then hands the writes to the commit
    /// thread as one batch and leaves if eviction was asked for and the
    /// object is idle (`Ready` once it left); on the router's turn the
    /// router hands the writes over.
    fn step(&mut self, cx: &mut Context<'_>, own_poll: bool) -> Poll<()> {
        if self.mailbox.slot.detached.get() {
            if own_poll {
                self.detach();
                return Poll::Ready(());
            }
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        self.check_commit_failed();
        // WebSocket sends made by the object's code wait for its writes.
        let store = self.store.clone();
        crate::engine::output_gate::with(&store, || self.turn(cx));
        if !own_poll {
            // On the router's turn: the router hands the writes over before
            // it waits or yields (`flush_deferred`). Eviction ends the task:
            // let it see the request.
            if self.mailbox.slot.eviction.borrow().is_some() {
                cx.waker().wake_by_ref();
            }
            return Poll::Pending;
        }
        // End of the task's own turn: everything written in it (and in
        // turns run on the router's turn since the last hand-over) goes to
        // disk as one batch. A failed hand-over fails the waiting calls
        // through their releases.
        if self.store.has_unflushed() {
            let _ = self.store.flush();
        }
        if self.try_evict(cx) {
            return Poll::Ready(());
        }
        Poll::Pending
    }

    /// What a new instance (or a closure run with the object) is built of.
    fn parts(&self) -> ObjectParts {
        ObjectParts {
            class: self.class.clone(),
            id: self.id.clone(),
            store: self.store.clone(),
            shared: self.shared.clone(),
            gate: self.gate.clone(),
        }
    }

    fn instance(&mut self) -> Result<Rc<dyn Instance>, Error> {
        if let Some(instance) = &self.instance {
            return Ok(instance.clone());
        }
        let parts = self.parts();
        let construct = self.class.construct;
        let of = self.step_of(crate::engine::stalls::CONSTRUCTOR);
        match crate::engine::stalls::step(&of, || {
            catch_unwind(AssertUnwindSafe(|| construct(parts)))
        }) {
            Ok(instance) => {
                self.instance = Some(instance.clone());
                self.live_changed(true, "activate");
                Ok(instance)
            }
            Err(panic) => {
                // No half-built instance: forget what the constructor wrote or started.
                self.store.discard_unflushed();
                self.gate.abort_all();
                self.gate = self.fresh_gate();
                Err(Error::Panicked(format!(
                    "the constructor of {} panicked: {}",
                    self.class.name,
                    panic_message(&*panic)
                )))
            }
        }
    }

    /// Delivers one message. A call that finds the gate closed by the
    /// constructor it just ran goes back to the front of the queue.
    fn deliver(&mut self, envelope: Envelope, cx: &mut Context<'_>) {
        self.mailbox.touch();
        let (port, system) = match &envelope.kind {
            Kind::Call { port, system, .. } => (port, *system),
            Kind::Run { .. } => {
                let Kind::Run { run, .. } = envelope.kind else {
                    return;
                };
                let future = run(self.parts());
                self.start(
                    crate::engine::stalls::CLOSURE,
                    None,
                    None,
                    Box::pin(async move {
                        future.await;
                        Ok(Vec::new())
                    }),
                    ObjectSpan::none(),
                    cx,
                );
                return;
            }
        };
        let generation = self.handle.generation.load(Ordering::Acquire);
        // The runtime's own events (WebSocket messages) belong to no
        // instance: a reset does not turn them away.
        if !system && !port.bind(generation) {
            let reason = self.handle.reset_reason();
            let message = match reason {
                DisconnectReason::Aborted => {
                    "the object aborted itself since this stub's first call; get a new stub"
                }
                DisconnectReason::TimedOut => {
                    "the object was reset since this stub's first call: its input gate stayed \
                     closed past its limit; get a new stub"
                }
                _ => "the object was reset since this stub's first call; get a new stub",
            };
            self.refuse(envelope.kind, Error::disconnected(reason, message));
            return;
        }
        let instance = match self.instance() {
            Ok(live) => live,
            Err(e) => {
                self.refuse(envelope.kind, e);
                return;
            }
        };
        if !self.gate.is_open() {
            self.mailbox.push_front(envelope);
            return;
        }
        let relay = envelope.relay;
        let Kind::Call {
            method,
            args,
            reply,
            slot,
            trace,
            span,
            ..
        } = envelope.kind
        else {
            return;
        };
        self.handle.release(slot);
        let watch = self.watch(method, trace.get(), &span);
        match catch_unwind(AssertUnwindSafe(|| {
            instance.dispatch(method, &args, system)
        })) {
            Ok(Ok(call)) => {
                let call = match self.shared.websocket_event_timeout {
                    Some(limit) if system && is_websocket_event(method) => {
                        Box::pin(event_with_timeout(call, limit))
                    }
                    _ => call,
                };
                self.start(method, Some(reply), relay, call, watch, cx)
            }
            Ok(Err(e)) => {
                watch.fail(&e);
                reply.send(Err(e));
            }
            Err(panic) => {
                // Reset first, so the caller sees its stub broken at once.
                self.reset();
                let e = Error::Panicked(panic_message(&*panic));
                watch.fail(&e);
                reply.send(Err(e));
            }
        }
    }

    /// Answers a call that will not run with `e`, giving its queue room back.
    fn refuse(&self, kind: Kind, e: Error) {
        if let Kind::Call { reply, slot, .. } = kind {
            self.handle.release(slot);
            reply.send(Err(e));
        }
    }

    /// Counts an instance built or dropped, and says so.
    fn live_changed(&self, up: bool, what: &'static str) {
        let counters = &self.shared.counters;
        if up {
            counters.live_instances.fetch_add(1, Ordering::Relaxed);
            self.shared.metrics.live_instances.increment(1.0);
        } else {
            counters.live_instances.fetch_sub(1, Ordering::Relaxed);
            self.shared.metrics.live_instances.decrement(1.0);
        }
        tracing::debug!(
            target: "do_runtime::lifecycle",
            class = %self.class.name,
            id = %ShortId(&self.id),
            "{what}"
        );
    }

    /// The object-side span of a call: a child of the caller's span, in
    /// the caller's trace.
    fn watch(&self, method: u32, trace: u128, caller: &tracing::Span) -> ObjectSpan {
        if !self.shared.instrument() || !crate::engine::telemetry::tracing_on() {
            // No span, but the trace still passes on to the calls it makes.
            let mut watch = ObjectSpan::none();
            watch.trace = trace;
            return watch;
        }
        // The method's name is looked up only when the span is enabled.
        let span = tracing::info_span!(
            target: "do_runtime::handle",
            parent: caller,
            "handle",
            class = %self.class.name,
            id = %ShortId(&self.id),
            method = self.class.metrics.method(method).info.name,
            node = self.shared.node_name(),
            trace_id = tracing::field::Empty,
            outcome = tracing::field::Empty,
        );
        if span.is_disabled() {
            return ObjectSpan {
                span,
                trace,
                fallible: false,
                finished: std::cell::Cell::new(false),
            };
        }
        // A caller whose own span was off sent no trace: start one here.
        let trace = if trace == 0 {
            crate::base::trace::current_or_new()
        } else {
            trace
        };
        span.record("trace_id", tracing::field::display(TraceId(trace)));
        ObjectSpan {
            span,
            trace,
            fallible: self.class.metrics.method(method).info.fallible,
            finished: std::cell::Cell::new(false),
        }
    }

    /// Starts a call: polls it once at once, and keeps it running only if
    /// it did not finish (most calls of in-memory objects finish in their
    /// first poll, and skip the set of running calls altogether).
    fn start(
        &mut self,
        method: u32,
        reply: Option<ReplyTo>,
        relay: Option<crate::engine::relay::RelayId>,
        call: LocalBoxFuture<'static, Reply>,
        watch: ObjectSpan,
        cx: &mut Context<'_>,
    ) {
        self.mailbox.slot.busy.set(self.mailbox.slot.busy.get() + 1);
        let mut running = Running {
            step: self.step_of(method),
            reply,
            relay,
            call,
            watch,
        };
        // Polled with the object task's waker: a wake registered now wakes
        // the task, whose next turn polls the set, where the call goes next.
        // (The set polls a call it was just given once more at once: the
        // one wasted poll falls on calls that wait, not on those that end.)
        match Pin::new(&mut running).poll(cx) {
            Poll::Ready(done) => self.finish(done),
            Poll::Pending => self.running.push(running),
        }
    }

    fn finish(
        &mut self,
        (reply, relay, outcome, watch): (
            Option<ReplyTo>,
            Option<crate::engine::relay::RelayId>,
            Ended,
            ObjectSpan,
        ),
    ) {
        match &outcome {
            Ended::Done(result) => watch.finish(result),
            Ended::Panicked(_) => watch.outcome(|| crate::engine::telemetry::Outcome::Panic),
        }
        let slot = &self.mailbox.slot;
        slot.busy.set(slot.busy.get().saturating_sub(1));
        self.mailbox.touch();
        match outcome {
            Ended::Done(result) => {
                let Some(reply) = reply else { return };
                crate::engine::output_gate::release_reply(
                    &self.store,
                    &self.awaiting,
                    &self.handle,
                    reply,
                    relay,
                    result,
                );
            }
            Ended::Panicked(message) => {
                // Reset first, so the caller sees its stub broken at once.
                self.reset();
                if let Some(reply) = reply {
                    reply.send(Err(Error::Panicked(message)));
                }
            }
        }
    }

    /// Leaves because the store failed: resets the object (its running
    /// calls' callers see their stubs broken), refuses every queued call,
    /// and tells whoever waits for an eviction that nothing was evicted.
    /// The worker has already taken the task out of its object map.
    fn detach(&mut self) {
        if self.mailbox.slot.moved.get() {
            self.reset_as(ResetCause::Moved);
            while let Some(envelope) = self.mailbox.pop() {
                refuse(envelope, crate::base::error::moved(&self.id));
            }
            self.mailbox.answer_evictions(true);
            return;
        }
        self.reset();
        while let Some(envelope) = self.mailbox.pop() {
            refuse(envelope, crate::engine::worker::storage_reopening());
        }
        self.mailbox.answer_evictions(false);
    }

    /// Drops the instance and every call running on it (their callers see a
    /// disconnected error), forgets unflushed writes, and starts a new
    /// generation so the stubs bound to the old instance break.
    fn reset(&mut self) {
        self.reset_as(ResetCause::Panic);
    }

    /// [`ObjectTask::reset`] for `cause`: the calls it cuts off and the
    /// stubs it breaks report it (see [`ResetCause::disconnect`]).
    fn reset_as(&mut self, cause: ResetCause) {
        if self.instance.take().is_some() {
            let what = match cause {
                ResetCause::Aborted(_) => "abort",
                _ => "reset",
            };
            self.live_changed(false, what);
        }
        let disconnect = cause.disconnect();
        self.handle.note_reset(disconnect.clone());
        let running = std::mem::take(&mut self.running);
        if let Some(disconnect) = disconnect {
            // Told why, rather than left to find their replies dropped.
            for mut call in running {
                if let Some(reply) = call.reply.take() {
                    reply.send(Err(Error::Disconnected(disconnect.clone())));
                }
            }
        }
        self.mailbox.slot.busy.set(0);
        self.gate.abort_all();
        self.gate = self.fresh_gate();
        self.store.discard_unflushed();
        self.handle.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// The input gate of a next instance.
    fn fresh_gate(&self) -> Rc<InputGate> {
        Rc::new(InputGate::new(self.mailbox.clone(), self.step_of(0)))
    }

    /// A step of this object's `method`, for the stall watch.
    fn step_of(&self, method: u32) -> crate::engine::stalls::StepOf {
        crate::engine::stalls::StepOf {
            class: self.key.0,
            base: self.key.1,
            method,
        }
    }

    /// Resets the instance if something asked for it outside a call's own
    /// reply: the object's abort, a blocking or background future that
    /// panicked or ran too long. (A failed commit is checked at the start
    /// of each turn.)
    fn check_reset(&mut self) {
        let Some(cause) = self.gate.take_reset() else {
            return;
        };
        match &cause {
            ResetCause::Aborted(reason) => tracing::warn!(
                target: "do_runtime::lifecycle",
                class = %self.class.name,
                id = %self.id,
                reason = %reason,
                "the object aborted itself: its instance is reset"
            ),
            ResetCause::Blocked(limit) => tracing::error!(
                target: "do_runtime::lifecycle",
                class = %self.class.name,
                id = %self.id,
                limit = ?limit,
                "a block_concurrency_while future ran past its limit: the instance is reset"
            ),
            ResetCause::Panic | ResetCause::CommitFailed | ResetCause::Moved => {}
        }
        self.reset_as(cause);
    }

    /// Delivers queued messages and runs everything ready, until nothing is,
    /// the gate closes, or the delivery budget is spent.
    /// Resets the instance if a write of it failed to commit, and goes on
    /// with a new view of its storage: the failure stays in the old view,
    /// and fails the writes made there after it (they may build on it);
    /// the new instance reads what the storage holds. Before the turn
    /// takes the view the output gate holds replies on.
    fn check_commit_failed(&mut self) {
        // Once per turn, not per message: the flag shares its line with
        // the counters every caller writes. Read first: a swap writes it.
        if self.handle.commit_failed.load(Ordering::Relaxed)
            && self.handle.commit_failed.swap(false, Ordering::AcqRel)
        {
            tracing::warn!(
                target: "do_runtime::lifecycle",
                class = %self.class.name,
                id = %self.id,
                "a write failed to commit: the instance is reset"
            );
            self.reset_as(ResetCause::CommitFailed);
            let store = self.store.renewed();
            if let Some(name) = self.id.name() {
                store.set_name(name);
            }
            self.store = Rc::new(store);
        }
    }

    fn turn(&mut self, cx: &mut Context<'_>) {
        let mut delivered = 0;
        loop {
            // A panic in a blocking or background future resets like one
            // in a method.
            self.check_reset();
            // Polled only when it holds calls: polling an empty set still
            // registers the waker in its shared queue, memory the call would
            // not touch otherwise. A call pushed there was polled with this
            // task's waker (see `start`), so its wake brings the task back.
            while !self.running.is_empty()
                && let Poll::Ready(Some(done)) = self.running.poll_next_unpin(cx)
            {
                self.finish(done);
            }
            // A call that just ended may have aborted: before anything else runs.
            self.check_reset();
            if !self.gate.is_open() {
                self.gate.wait(cx.waker());
                return;
            }
            if delivered == DELIVERY_BUDGET {
                cx.waker().wake_by_ref();
                return;
            }
            match self.mailbox.pop() {
                Some(envelope) => {
                    self.deliver(envelope, cx);
                    delivered += 1;
                }
                None => {
                    self.mailbox.park(cx.waker());
                    return;
                }
            }
        }
    }

    /// Leaves when eviction was asked for and the object is idle, its gate
    /// open, and every batch it handed over applied (so a new instance reads
    /// everything from the engine). Returns whether it left.
    fn try_evict(&mut self, cx: &mut Context<'_>) -> bool {
        if self.mailbox.slot.eviction.borrow().is_none()
            || !self.mailbox.is_idle()
            || !self.gate.is_open()
        {
            return false;
        }
        if !self.store.is_settled() {
            // The commit thread does not wake us when it applies: check back soon.
            let retry = self
                .retry
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(Duration::from_millis(1))));
            if retry.as_mut().poll(cx).is_ready() {
                self.retry = None;
                cx.waker().wake_by_ref();
            }
            return false;
        }
        self.objects.borrow_mut().remove(&self.key);
        let was_live = self.instance.take().is_some();
        if was_live {
            self.live_changed(false, "evict");
        }
        // An object without sockets forgets its auto-response with its
        // instance; the next instance sets it again.
        self.shared.sockets().forget_idle(&self.class, &self.id);
        self.mailbox.answer_evictions(was_live);
        true
    }
}

/// Whether `method` is one of the WebSocket event handlers.
fn is_websocket_event(method: u32) -> bool {
    use crate::base::wire::{WEBSOCKET_CLOSE, WEBSOCKET_ERROR, WEBSOCKET_MESSAGE, method_id};
    const EVENTS: [u32; 3] = [
        method_id(WEBSOCKET_MESSAGE.name),
        method_id(WEBSOCKET_CLOSE.name),
        method_id(WEBSOCKET_ERROR.name),
    ];
    EVENTS.contains(&method)
}

/// A WebSocket event handler's call, stopped past `limit`
/// (`RuntimeBuilder::websocket_event_timeout`).
async fn event_with_timeout(call: LocalBoxFuture<'static, Reply>, limit: Duration) -> Reply {
    match tokio::time::timeout(limit, call).await {
        Ok(reply) => reply,
        // Not a disconnect: the instance carries on, and the gateway does
        // not send the event again (as it does one a reset lost).
        Err(_) => {
            tracing::warn!(
                target: "do_runtime::lifecycle",
                limit = ?limit,
                "a WebSocket event handler ran past websocket_event_timeout and was stopped"
            );
            Err(Error::App(format!(
                "the WebSocket event handler ran past its timeout of {limit:?} and was stopped"
            )))
        }
    }
}

/// Answers a message that will not run with `e`: a call's caller gets it
/// (and its queue room back); a closure is dropped unrun.
pub(crate) fn refuse(envelope: Envelope, e: Error) {
    if let Kind::Call {
        reply, slot, port, ..
    } = envelope.kind
    {
        port.handle().release(slot);
        reply.send(Err(e));
    }
}

/// An object's task as spawned: it owns the object's state, which the
/// router also drives while the task sleeps (see [`Mailbox::deliver_inline`]).
struct Runner(Rc<RefCell<ObjectTask>>);

impl Future for Runner {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        match self.0.try_borrow_mut() {
            Ok(mut task) => {
                {
                    let mut runner = task.mailbox.slot.runner.borrow_mut();
                    if !runner.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                        *runner = Some(cx.waker().clone());
                    }
                }
                task.step(cx, true)
            }
            // Never while the router drives it (that happens on the router's
            // own turn); should it ever, try again on the next.
            Err(_) => {
                cx.waker().wake_by_ref();
                Poll::Pending
            }
        }
    }
}

/// How a call ended on the object's side.
enum Ended {
    Done(Reply),
    Panicked(String),
}

impl Drop for ObjectTask {
    fn drop(&mut self) {
        // Stopped with its instance live (the runtime stopped).
        if self.instance.is_some() {
            self.shared
                .counters
                .live_instances
                .fetch_sub(1, Ordering::Relaxed);
            self.shared.metrics.live_instances.decrement(1.0);
        }
    }
}

/// The span of one call on the object's side.
struct ObjectSpan {
    span: tracing::Span,
    /// The caller's trace: calls this one makes join it.
    trace: u128,
    fallible: bool,
    finished: std::cell::Cell<bool>,
}

impl Drop for ObjectSpan {
    fn drop(&mut self) {
        // Dropped unfinished: a reset took the call with it.
        if !self.finished.get() && !self.span.is_disabled() {
            self.span.record("outcome", "disconnected");
        }
    }
}

impl ObjectSpan {
    fn none() -> Self {
        ObjectSpan {
            span: tracing::Span::none(),
            trace: 0,
            fallible: false,
            finished: std::cell::Cell::new(false),
        }
    }

    fn finish(&self, result: &Reply) {
        self.outcome(|| crate::engine::telemetry::Outcome::of(result, self.fallible));
    }

    fn fail(&self, e: &Error) {
        self.outcome(|| crate::engine::telemetry::Outcome::of_error(e));
    }

    fn outcome(&self, outcome: impl FnOnce() -> crate::engine::telemetry::Outcome) {
        self.finished.set(true);
        if !self.span.is_disabled() {
            self.span.record("outcome", outcome().as_str());
        }
    }
}

/// One call in progress; a panic while polling it becomes its outcome.
struct Running {
    /// Whose step each poll is, for the stall watch.
    step: crate::engine::stalls::StepOf,
    reply: Option<ReplyTo>,
    relay: Option<crate::engine::relay::RelayId>,
    call: LocalBoxFuture<'static, Reply>,
    watch: ObjectSpan,
}

impl Future for Running {
    type Output = (
        Option<ReplyTo>,
        Option<crate::engine::relay::RelayId>,
        Ended,
        ObjectSpan,
    );

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let polled = {
            let _entered = this.watch.span.enter();
            let call = &mut this.call;
            crate::engine::stalls::step(&this.step, || {
                crate::base::trace::with_current(this.watch.trace, || {
                    catch_unwind(AssertUnwindSafe(|| call.as_mut().poll(cx)))
                })
            })
        };
        let outcome = match polled {
            Ok(Poll::Pending) => return Poll::Pending,
            Ok(Poll::Ready(result)) => Ended::Done(result),
            Err(panic) => Ended::Panicked(panic_message(&*panic)),
        };
        let watch = std::mem::replace(&mut this.watch, ObjectSpan::none());
        Poll::Ready((this.reply.take(), this.relay.take(), outcome, watch))
    }
}

pub(crate) fn panic_message(panic: &(dyn Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic with a non-string payload".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idleness_counts_from_the_first_sweep_that_finds_no_new_activity() {
        let mailbox = Mailbox::default();
        let t0 = Instant::now();
        let s = Duration::from_secs;
        // Never used: idle since it was made.
        assert!(mailbox.idle_since(t0 + s(5)) >= s(5));
        // Active since the last sweep: not idle; from this sweep on, it is.
        mailbox.touch();
        assert_eq!(mailbox.idle_since(t0 + s(10)), Duration::ZERO);
        assert_eq!(mailbox.idle_since(t0 + s(15)), s(5));
        assert_eq!(mailbox.idle_since(t0 + s(40)), s(30));
        // Busy: never idle, whatever the count says.
        mailbox.slot.busy.set(1);
        assert_eq!(mailbox.idle_since(t0 + s(50)), Duration::ZERO);
        mailbox.slot.busy.set(0);
        mailbox.touch();
        assert_eq!(mailbox.idle_since(t0 + s(60)), Duration::ZERO);
        assert_eq!(mailbox.idle_since(t0 + s(61)), s(1));
    }
}

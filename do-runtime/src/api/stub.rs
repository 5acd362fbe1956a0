//! Stubs: the caller's handle to one object, and the future of one call.

use std::future::Future;
use std::ops::Deref;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::api::object::DurableObject;
use crate::api::remote::RemotePort;
use crate::base::error::{DisconnectReason, Error};
use crate::base::id::DurableObjectId;
use crate::base::trace::{ShortId, TraceId};
use crate::engine::class::Class;
#[cfg(feature = "cluster")]
use crate::engine::placement::Route;
use crate::engine::port::Port;
use crate::engine::reply::{Reply, ReplyTo};
use crate::engine::shared::Shared;
use crate::engine::telemetry::Outcome;
use tokio::runtime::Handle;

/// A typed handle to one Durable Object: call the object's methods on it.
///
/// `Stub<T>` dereferences to `T`'s generated client, which has one method per
/// `pub async fn` of the object, with the same arguments and result. Calls
/// made through one stub (and its clones) reach the object in the order they
/// were made, even when many are in flight and awaited in another order
/// (E-order). Stubs are cheap, `Send` and `Sync`.
///
/// A stub breaks for good when it loses its instance (the object was reset
/// after a panic, or the runtime shut down): that call and every later one
/// fails with [`Error::Disconnected`]. Get a new stub from the namespace to
/// carry on.
///
/// ```
/// # fn main() -> Result<(), do_runtime::Error> {
/// # let dir = tempfile::tempdir().unwrap();
/// # let tokio = tokio::runtime::Runtime::new().unwrap();
/// # tokio.block_on(async {
/// use do_runtime::{durable_object, Ctx, Runtime};
///
/// pub struct Log { ctx: Ctx }
///
/// #[durable_object]
/// impl Log {
///     pub fn new(ctx: Ctx) -> Self { Self { ctx } }
///     pub async fn append(&self, line: String) -> usize {
///         let storage = self.ctx.storage();
///         let n = storage.get::<usize>("len").await.ok().flatten().unwrap_or(0);
///         storage.put(&format!("line:{n:08}"), &line).ok();
///         storage.put("len", &(n + 1)).ok();
///         n + 1
///     }
/// }
///
/// let rt = Runtime::builder().data_dir(dir.path()).register::<Log>().build()?;
/// let log = rt.namespace::<Log>().get_by_name("audit");
/// let first = log.append("a".into());   // sent now, in this order
/// let second = log.append("b".into());
/// assert_eq!(second.await?, 2);          // awaiting out of order is fine
/// assert_eq!(first.await?, 1);
/// # Ok::<_, do_runtime::Error>(()) })?;
/// # Ok(()) }
/// ```
pub struct Stub<T: DurableObject> {
    client: T::Client,
}

impl<T: DurableObject> Stub<T> {
    pub(crate) fn from_raw(raw: RawStub) -> Self {
        Stub {
            client: T::Client::from_raw(raw),
        }
    }

    /// The id this stub was made from.
    pub fn id(&self) -> &DurableObjectId {
        self.client.raw().id()
    }

    /// The name the id was made from, for stubs from `get_by_name` or
    /// `get(id_from_name(…))`.
    pub fn name(&self) -> Option<&str> {
        self.id().name()
    }

    /// Whether the stub has lost its instance; every call on it now fails
    /// with [`Error::Disconnected`].
    pub fn is_broken(&self) -> bool {
        self.client.raw().is_broken()
    }
}

impl<T: DurableObject> Deref for Stub<T> {
    type Target = T::Client;
    fn deref(&self) -> &T::Client {
        &self.client
    }
}

impl<T: DurableObject> Clone for Stub<T> {
    fn clone(&self) -> Self {
        Stub {
            client: self.client.clone(),
        }
    }
}

impl<T: DurableObject> std::fmt::Debug for Stub<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stub")
            .field("class", &T::CLASS)
            .field("id", self.id())
            .finish()
    }
}

/// The untyped stub inside every generated client.
#[doc(hidden)]
#[derive(Clone)]
pub struct RawStub {
    target: Target,
}

/// Where a stub's calls go.
#[derive(Clone)]
pub(crate) enum Target {
    /// An object of this process's runtime.
    Local(Arc<Port>),
    /// An object behind a connection to a remote runtime.
    Remote(Arc<dyn RemotePort>),
}

impl Target {
    /// Why a call whose way back closed unanswered was lost.
    fn lost_reason(&self) -> DisconnectReason {
        match self {
            Target::Local(s) => match s.runtime.lost_reason() {
                DisconnectReason::Reset => s.handle().reset_reason(),
                other => other,
            },
            Target::Remote(_) => DisconnectReason::ConnectionLost,
        }
    }

    /// Where ids and stubs in results through this target come to life.
    fn home(&self) -> Option<Arc<dyn crate::base::passing::Home>> {
        match self {
            Target::Local(s) => s.runtime.home.get().cloned(),
            Target::Remote(r) => r.home(),
        }
    }

    /// Breaks the stub; `aborted`: because its object aborted itself.
    pub(crate) fn mark_broken(&self, aborted: bool) {
        match self {
            Target::Local(s) => s.mark_broken(aborted),
            Target::Remote(r) => r.mark_broken(aborted),
        }
    }

    /// Breaks the stub if `reply` says it lost its object.
    fn break_on(&self, reply: &Reply) {
        if let Err(e @ Error::Disconnected(_)) = reply {
            self.mark_broken(e.disconnect_reason() == Some(DisconnectReason::Aborted));
        }
    }
}

impl RawStub {
    /// A stub for object `id` of `class`. In a cluster, an object served by
    /// another runtime gets a remote end to it; one served nowhere now gets
    /// a local end, whose calls fail retryably (`DisconnectReason::Moved`).
    pub(crate) fn new(runtime: Arc<Shared>, class: Arc<Class>, id: DurableObjectId) -> Self {
        #[cfg(feature = "cluster")]
        if let Some(placement) = runtime.placement.get()
            && let Route::There(port) = placement.route(&class.name, &id, class.methods)
        {
            return RawStub::remote(port);
        }
        RawStub {
            target: Target::Local(Arc::new(Port::new(runtime, class, id))),
        }
    }

    pub(crate) fn remote(port: Arc<dyn RemotePort>) -> Self {
        RawStub {
            target: Target::Remote(port),
        }
    }

    pub(crate) fn id(&self) -> &DurableObjectId {
        match &self.target {
            Target::Local(s) => &s.id,
            Target::Remote(r) => r.id(),
        }
    }

    pub(crate) fn is_broken(&self) -> bool {
        match &self.target {
            Target::Local(s) => s.check_broken(),
            Target::Remote(r) => r.is_broken(),
        }
    }

    /// Sends one call now, so calls leave in the order they were made, and
    /// returns the future of its reply.
    pub(crate) fn call<O>(
        &self,
        method: u32,
        args: Result<Vec<u8>, Error>,
        decode: fn(&[u8]) -> O,
        fail: fn(Error) -> O,
    ) -> Call<O> {
        self.call_traced(None, method, args, decode, fail)
    }

    /// [`RawStub::call`] joining trace `trace` (a remote caller's), or the
    /// current one when `None`.
    pub(crate) fn call_traced<O>(
        &self,
        trace: Option<u128>,
        method: u32,
        args: Result<Vec<u8>, Error>,
        decode: fn(&[u8]) -> O,
        fail: fn(Error) -> O,
    ) -> Call<O> {
        let watch = CallRecord::start(&self.target, method, trace);
        let sent = match args {
            Err(Error::Codec(e)) => Err(Error::Codec(format!("cannot encode the arguments: {e}"))),
            Err(e) => Err(e),
            Ok(args) => match &self.target {
                Target::Local(s) => s.send(method, args, false, watch.trace, watch.span.clone()),
                Target::Remote(r) => r.send(method, args, watch.trace),
            },
        };
        self.waiting(sent, decode, fail, watch)
    }

    /// Sends a call from the runtime itself (a WebSocket event): it may reach
    /// the object's handlers, which no stub call can.
    #[cfg_attr(not(feature = "gateway"), allow(dead_code))]
    pub(crate) fn call_system<O>(
        &self,
        method: u32,
        args: Vec<u8>,
        decode: fn(&[u8]) -> O,
        fail: fn(Error) -> O,
    ) -> Call<O> {
        let watch = CallRecord::start(&self.target, method, None);
        let sent = match &self.target {
            Target::Local(s) => s.send(method, args, true, watch.trace, watch.span.clone()),
            Target::Remote(_) => Err(Error::Unsupported(
                "runtime events go to local objects only".into(),
            )),
        };
        self.waiting(sent, decode, fail, watch)
    }

    /// Sends one call whose reply goes where `reply_to` says, given the
    /// call's caller-side record (a served connection's call: see
    /// `transport::sink`). A call refused at once is answered there too.
    pub(crate) fn call_with(
        &self,
        trace: Option<u128>,
        method: u32,
        args: Vec<u8>,
        reply_to: impl FnOnce(Tracked) -> ReplyTo,
    ) {
        let watch = CallRecord::start(&self.target, method, trace);
        let (trace, span) = (watch.trace, watch.span.clone());
        let reply = reply_to(Tracked {
            target: self.target.clone(),
            watch,
        });
        match &self.target {
            // Failures are answered through the reply.
            Target::Local(s) => {
                let _ = s.send_to(method, args, false, trace, span, reply);
            }
            // In a cluster, a served connection's call to an object another
            // runtime serves is forwarded there, and its reply back.
            Target::Remote(r) => match (r.send(method, args, trace), Handle::try_current()) {
                (Ok(answer), Ok(tokio)) => {
                    let target = self.target.clone();
                    tokio.spawn(async move {
                        let answer = answer.await.unwrap_or_else(|_| {
                            Err(Error::disconnected(
                                target.lost_reason(),
                                "the runtime the call was forwarded to did not answer",
                            ))
                        });
                        target.break_on(&answer);
                        reply.send(answer);
                    });
                }
                (Err(e), _) => reply.send(Err(e)),
                (Ok(_), Err(_)) => reply.send(Err(Error::Unsupported(
                    "a call is forwarded from async code only".into(),
                ))),
            },
        }
    }

    /// Whether the stub's calls go to another process (in a cluster: to
    /// the node that serves the object).
    #[cfg_attr(not(feature = "cluster"), allow(dead_code))]
    pub(crate) fn is_remote(&self) -> bool {
        matches!(self.target, Target::Remote(_))
    }

    /// How long a caller may spin now for the reply to a call through this
    /// stub, if at all: what a [`Call`] does at its first poll, for callers
    /// that wait for replies their own way (a served connection).
    pub(crate) fn reply_spin(&self) -> Option<Duration> {
        match &self.target {
            Target::Local(s) => s.reply_spin(),
            Target::Remote(_) => None,
        }
    }

    /// A reply caught by spinning took `took`: teaches the next spin.
    pub(crate) fn record_reply(&self, took: Duration) {
        if let Target::Local(s) = &self.target {
            s.handle.record_reply(took);
        }
    }

    fn waiting<O>(
        &self,
        sent: Result<oneshot::Receiver<Reply>, Error>,
        decode: fn(&[u8]) -> O,
        fail: fn(Error) -> O,
        watch: CallRecord,
    ) -> Call<O> {
        let mut watch = watch;
        let state = match sent {
            Ok(rx) => State::Waiting(rx, self.target.clone()),
            Err(e) => {
                // Refused at once (overloaded, broken, …): recorded now.
                watch.record(&self.target, Outcome::of_error(&e));
                State::Failed(Some(e))
            }
        };
        let spin = match &state {
            // Counted only where spinning is on: one shared counter touched
            // twice per call is not free on a many-core machine.
            State::Waiting(_, Target::Local(s)) if s.runtime.spinning() => {
                s.runtime
                    .counters
                    .in_flight
                    .0
                    .fetch_add(1, Ordering::Relaxed);
                Spin::Undecided
            }
            _ => Spin::Off,
        };
        Call {
            watch,
            state,
            decode,
            fail,
            spin,
        }
    }
}

/// The caller's side of a call whose reply does not come back through a
/// [`Call`] but goes straight to a served connection (see
/// `transport::sink`): records the call's outcome when its reply is sent.
/// (The connection counts its calls in flight itself, a batch at a time.)
pub(crate) struct Tracked {
    target: Target,
    watch: CallRecord,
}

impl Tracked {
    /// Why the call was lost, if it is dropped unanswered.
    pub(crate) fn lost_reason(&self) -> DisconnectReason {
        self.target.lost_reason()
    }

    /// The call's reply is `reply`: recorded as a [`Call`] would record it.
    pub(crate) fn finish(&mut self, reply: &Reply) {
        self.target.break_on(reply);
        self.watch.finish(&self.target, reply);
    }
}

impl<O> Drop for Call<O> {
    fn drop(&mut self) {
        self.settle();
        // Dropped before its reply: counted, and its span closed, as such.
        if !self.watch.finished
            && let State::Waiting(_, target) = &self.state
        {
            self.watch.record(target, Outcome::Dropped);
        }
    }
}

/// The future of one call; resolves to the method's result.
///
/// The call was sent when the stub method was called; awaiting only waits for
/// the reply. Dropping it does not cancel the call.
#[must_use = "the call is sent already; await the future to get its result"]
pub struct Call<O> {
    state: State,
    decode: fn(&[u8]) -> O,
    fail: fn(Error) -> O,
    watch: CallRecord,
    /// Whether the caller's task polls for the reply (see
    /// `RuntimeBuilder::caller_spin`); decided at the first pending poll.
    spin: Spin,
}

/// What a call records when it ends: its span and, for calls to this
/// runtime's objects, its metrics.
pub(crate) struct CallRecord {
    span: tracing::Span,
    /// The trace the call belongs to; 0 when its span is disabled.
    pub trace: u128,
    /// Whether the method returns `Result`, when known.
    fallible: bool,
    local: Option<LocalStart>,
    finished: bool,
}

/// When a call to this runtime's objects started, and which method it is:
/// its metrics are found through the stub at the end (no shared reference
/// counts touched per call).
struct LocalStart {
    /// Read from the CPU's time-stamp counter where it is usable (half the
    /// cost of the system clock on these VMs; see `telemetry::calibrate`).
    started: quanta::Instant,
    method: u32,
}

impl CallRecord {
    fn start(target: &Target, method: u32, trace: Option<u128>) -> CallRecord {
        let (span, local, fallible) = match target {
            Target::Local(s) if s.runtime.instrument() => {
                let metrics = s.class.metrics.method(method);
                let span = if crate::engine::telemetry::tracing_on() {
                    tracing::info_span!(
                        target: "do_runtime::call",
                        "call",
                        class = %s.class.name,
                        id = %ShortId(&s.id),
                        method = metrics.info.name,
                        node = s.runtime.node_name(),
                        trace_id = tracing::field::Empty,
                        outcome = tracing::field::Empty,
                    )
                } else {
                    tracing::Span::none()
                };
                let local = LocalStart {
                    started: quanta::Instant::now(),
                    method,
                };
                (span, Some(local), metrics.info.fallible)
            }
            Target::Local(_) => (tracing::Span::none(), None, false),
            Target::Remote(r) => {
                let info = r.method(method);
                let span = if crate::engine::telemetry::tracing_on() {
                    tracing::info_span!(
                        target: "do_runtime::call",
                        "call",
                        class = r.class_name(),
                        id = %ShortId(r.id()),
                        method = info.map_or("unknown", |m| m.name),
                        remote = true,
                        node = r.node(),
                        trace_id = tracing::field::Empty,
                        outcome = tracing::field::Empty,
                    )
                } else {
                    tracing::Span::none()
                };
                (span, None, info.is_some_and(|m| m.fallible))
            }
        };
        // Calls made inside an object's call join its trace, spans or not.
        let trace = trace.or_else(|| Some(crate::base::trace::current()).filter(|t| *t != 0));
        let trace = if span.is_disabled() {
            trace.unwrap_or(0)
        } else {
            let trace = trace.unwrap_or_else(crate::base::trace::current_or_new);
            span.record("trace_id", tracing::field::display(TraceId(trace)));
            trace
        };
        CallRecord {
            span,
            trace,
            fallible,
            local,
            finished: false,
        }
    }

    fn finish(&mut self, target: &Target, reply: &Reply) {
        self.record(target, Outcome::of(reply, self.fallible));
    }

    fn record(&mut self, target: &Target, outcome: Outcome) {
        self.finished = true;
        if let (Some(local), Target::Local(stub)) = (self.local.take(), target) {
            stub.class
                .metrics
                .method(local.method)
                .record(outcome, local.started.elapsed().as_secs_f64());
            let counters = &stub.runtime.counters;
            counters.calls.add(1);
            if !matches!(outcome, Outcome::Ok) {
                counters.failed_calls.add(1);
            }
        }
        // A disabled span keeps nothing; with `tracing`'s `log` feature
        // on, recording into one would still cost a check per call.
        if !self.span.is_disabled() {
            self.span.record("outcome", outcome.as_str());
        }
    }
}

/// Whether a local call has had its chance to spin for its reply, and
/// whether it is still counted in flight.
#[derive(Clone, Copy)]
enum Spin {
    Undecided,
    /// The first poll has been; since when the caller spun, if it did.
    Decided(Option<Instant>),
    /// Answered or dropped, not a local call, or spinning is off: not
    /// counted in flight.
    Off,
}

impl<O> Call<O> {
    /// The call is answered or dropped: no longer in flight.
    fn settle(&mut self) {
        if let (Spin::Undecided | Spin::Decided(_), State::Waiting(_, Target::Local(s))) =
            (self.spin, &self.state)
        {
            s.runtime
                .counters
                .in_flight
                .0
                .fetch_sub(1, Ordering::Relaxed);
        }
        self.spin = Spin::Off;
    }
}

enum State {
    Waiting(oneshot::Receiver<Reply>, Target),
    Failed(Option<Error>),
}

impl<O> Future for Call<O> {
    type Output = O;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<O> {
        let this = self.get_mut();
        let reply: Reply = match &mut this.state {
            State::Waiting(rx, target) => {
                // Spinning before the first poll registers a waker spares
                // the worker the wake (a system call) when the reply comes
                // back during the spin.
                let received = match spin_for_reply(&mut this.spin, target, rx) {
                    Some(received) => received,
                    None => match Pin::new(&mut *rx).poll(cx) {
                        Poll::Ready(received) => received.map_err(drop),
                        Poll::Pending => return Poll::Pending,
                    },
                };
                match received {
                    Ok(reply) => {
                        // A panic in a method breaks the stub through the
                        // reset's new generation; a panic in a constructor
                        // breaks nothing.
                        target.break_on(&reply);
                        reply
                    }
                    Err(_) => {
                        let reason = target.lost_reason();
                        target.mark_broken(reason == DisconnectReason::Aborted);
                        let cause = match (reason, &*target) {
                            (DisconnectReason::Shutdown, _) | (_, Target::Remote(_)) => None,
                            (_, Target::Local(port)) => port.handle().reset_error(),
                        };
                        Err(cause.unwrap_or_else(|| {
                            Error::disconnected(
                                reason,
                                "the object's instance was reset or the runtime shut down",
                            )
                        }))
                    }
                }
            }
            State::Failed(e) => Err(e.take().unwrap_or_else(|| {
                Error::disconnected(
                    DisconnectReason::Other,
                    "the call's future was polled after it completed",
                )
            })),
        };
        // A reply the caller spun for teaches the next call how long to spin.
        if let (Spin::Decided(Some(since)), State::Waiting(_, Target::Local(s))) =
            (this.spin, &this.state)
        {
            s.handle.record_reply(since.elapsed());
        }
        this.settle();
        if let State::Waiting(_, target) = &this.state {
            this.watch.finish(target, &reply);
        }
        Poll::Ready(match reply {
            Ok(bytes) => {
                crate::base::passing::clear_flags();
                match &this.state {
                    // A remote result decodes under its client's home from
                    // the start: what it carries (ids, stubs, a streamed
                    // body's number) is the remote runtime's, whatever
                    // home this thread has.
                    State::Waiting(_, target @ Target::Remote(_)) => match target.home() {
                        Some(home) => {
                            crate::base::passing::with_home(home, || (this.decode)(&bytes))
                        }
                        None => (this.decode)(&bytes),
                    },
                    State::Waiting(_, target) => {
                        let out = (this.decode)(&bytes);
                        // The result holds ids or stubs this thread's home
                        // (if it has one) does not know: decode it again
                        // under the home of the runtime it came from.
                        match target.home() {
                            Some(home) if crate::base::passing::take_wanted() => {
                                drop(out);
                                crate::base::passing::clear_flags();
                                crate::base::passing::with_home(home, || (this.decode)(&bytes))
                            }
                            _ => out,
                        }
                    }
                    State::Failed(_) => (this.decode)(&bytes),
                }
            }
            Err(e) => (this.fail)(e),
        })
    }
}

/// At a local call's first poll, when the runtime is quiet: polls
/// for the reply for up to the caller spin budget, blocking the caller's
/// thread that long at most. The reply to a quick call to an idle object
/// comes back within microseconds; a caller whose thread went to sleep
/// meanwhile pays for waking it (a futex, then the kernel's scheduler: tens
/// of microseconds on a virtual machine). Under load no call spins: replies
/// then come in batches, and the cores are better left to the workers.
fn spin_for_reply(
    spin: &mut Spin,
    target: &Target,
    rx: &mut oneshot::Receiver<Reply>,
) -> Option<Result<Reply, ()>> {
    if !matches!(spin, Spin::Undecided) {
        return None;
    }
    // Still counted in flight: `settle` uncounts it.
    *spin = Spin::Decided(None);
    let Target::Local(s) = target else {
        return None;
    };
    let budget = s.reply_spin()?;
    *spin = Spin::Decided(Some(Instant::now()));
    let mut received = None;
    crate::engine::spin::spin_until(budget, || match rx.try_recv() {
        // Calls arriving meanwhile end the spin: the core is theirs.
        Err(oneshot::error::TryRecvError::Empty) => !s.runtime.quiet(),
        Ok(reply) => {
            received = Some(Ok(reply));
            true
        }
        Err(oneshot::error::TryRecvError::Closed) => {
            received = Some(Err(()));
            true
        }
    });
    received
}

/// The generated client type of a class: wraps a [`RawStub`].
pub trait Client: Clone + Send + Sync + 'static {
    /// Wraps a raw stub.
    fn from_raw(raw: RawStub) -> Self;
    /// The raw stub inside.
    fn raw(&self) -> &RawStub;
}

//! The input gate of one instance, and the work the instance runs beside
//! its calls: while a `block_concurrency_while` future runs, no other call
//! is delivered; while a `wait_until` future runs, the instance is not
//! evicted. Either one resets the instance when it panics, and a blocking
//! future that outlives its time limit does too.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::rc::Rc;
use std::task::Waker;
use std::time::Duration;

use futures_util::FutureExt;
use tokio::task::AbortHandle;

use crate::base::error::{Disconnect, DisconnectReason};
use crate::engine::instance::Mailbox;
use crate::engine::stalls::{self, StepOf};

/// Why an instance must be reset, as its task learns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ResetCause {
    /// A panic: in a method, a constructor, or work it started.
    Panic,
    /// The object's own `Ctx::abort`, with its reason.
    Aborted(String),
    /// A `block_concurrency_while` future held the gate past this limit.
    Blocked(Duration),
    /// A write of the object failed to commit.
    CommitFailed,
    /// In a cluster, the object's shard moved to another runtime.
    Moved,
}

impl ResetCause {
    /// What the calls and stubs the reset cuts off report; `None` for a
    /// panic, whose callers get the plain "reset".
    pub fn disconnect(&self) -> Option<Disconnect> {
        match self {
            ResetCause::Panic => None,
            ResetCause::Aborted(reason) => Some(Disconnect::new(
                DisconnectReason::Aborted,
                format!("the object aborted: {reason}"),
            )),
            ResetCause::Blocked(limit) => Some(Disconnect::new(
                DisconnectReason::TimedOut,
                format!(
                    "the object was reset: a block_concurrency_while future held its input gate \
                     past the limit of {limit:?}; get a new stub and retry"
                ),
            )),
            ResetCause::CommitFailed => Some(Disconnect::new(
                DisconnectReason::Reset,
                "the object was reset: a write of it failed to commit, so its memory no longer \
                 matched its storage; get a new stub and retry",
            )),
            ResetCause::Moved => Some(Disconnect::new(
                DisconnectReason::Moved,
                "the object's shard moved to another runtime: get a new stub and retry",
            )),
        }
    }
}

pub(crate) struct InputGate {
    blockers: Cell<usize>,
    /// The object task, to wake when the gate opens.
    waker: RefCell<Option<Waker>>,
    /// Why the instance must reset, asked from outside a call's own
    /// turn (the first cause given wins).
    reset: RefCell<Option<ResetCause>>,
    /// Blocking and background futures, stopped when the instance goes.
    tasks: RefCell<Vec<AbortHandle>>,
    /// The object's mailbox: background work keeps it from eviction, and a
    /// reset asked for wakes its task.
    mailbox: Mailbox,
    /// The object, for the stall watch's marks of its futures' polls.
    of: StepOf,
}

/// Ends a piece of background work however it ends (even aborted, when
/// its task is dropped): the count it holds in the mailbox goes.
struct Background(Mailbox);

impl Drop for Background {
    fn drop(&mut self) {
        self.0.background_ended();
    }
}

impl InputGate {
    /// The gate of a new instance whose task reads `mailbox`.
    pub fn new(mailbox: Mailbox, of: StepOf) -> Self {
        InputGate {
            blockers: Cell::new(0),
            waker: RefCell::default(),
            reset: RefCell::default(),
            tasks: RefCell::default(),
            mailbox,
            of,
        }
    }

    pub fn is_open(&self) -> bool {
        self.blockers.get() == 0
    }

    /// Asks to be woken when the gate opens.
    pub fn wait(&self, waker: &Waker) {
        *self.waker.borrow_mut() = Some(waker.clone());
    }

    /// Asks for the instance to be reset at the end of the current step
    /// (the first cause given wins), waking its task wherever it waits.
    pub fn request_reset(&self, cause: ResetCause) {
        self.reset.borrow_mut().get_or_insert(cause);
        if let Some(waker) = self.waker.borrow_mut().take() {
            waker.wake();
        }
        self.mailbox.wake_task();
    }

    pub fn take_reset(&self) -> Option<ResetCause> {
        self.reset.borrow_mut().take()
    }

    /// Stops every blocking and background future (the instance is going away).
    pub fn abort_all(&self) {
        for task in self.tasks.borrow_mut().drain(..) {
            task.abort();
        }
    }

    fn reopen(&self) {
        self.blockers.set(self.blockers.get().saturating_sub(1));
        if self.is_open()
            && let Some(waker) = self.waker.borrow_mut().take()
        {
            waker.wake();
        }
    }

    /// Runs `future` on the object's thread with the gate closed, for at
    /// most `limit`; see [`crate::Ctx::block_concurrency_while`].
    pub fn block_while<F>(
        self: &Rc<Self>,
        future: F,
        limit: Duration,
    ) -> impl Future<Output = F::Output> + 'static
    where
        F: Future + 'static,
        F::Output: 'static,
    {
        self.blockers.set(self.blockers.get() + 1);
        let gate = self.clone();
        let future = object_context(future, self.of.with_method(stalls::BLOCKING));
        let task = tokio::task::spawn_local(async move {
            let _reopen = Reopen(gate.clone());
            match tokio::time::timeout(limit, AssertUnwindSafe(future).catch_unwind()).await {
                Ok(Ok(value)) => Ok(value),
                Ok(Err(panic)) => {
                    let message = crate::engine::instance::panic_message(&*panic);
                    gate.request_reset(ResetCause::Panic);
                    Err(Some(message))
                }
                Err(_) => {
                    gate.request_reset(ResetCause::Blocked(limit));
                    Err(None)
                }
            }
        });
        self.tasks.borrow_mut().push(task.abort_handle());
        async move {
            match task.await {
                Ok(Ok(value)) => value,
                Ok(Err(Some(message))) => panic!("{message}"),
                // Timed out or aborted: the instance is being reset;
                // whoever awaits goes with it.
                Ok(Err(None)) | Err(_) => std::future::pending().await,
            }
        }
    }

    /// Runs `future` on the object's thread beside its calls; the instance
    /// is not evicted until it ends. See [`crate::Ctx::wait_until`].
    pub fn wait_until<F>(self: &Rc<Self>, future: F)
    where
        F: Future<Output = ()> + 'static,
    {
        self.mailbox.background_started();
        let running = Background(self.mailbox.clone());
        let gate = Rc::downgrade(self);
        let future = object_context(future, self.of.with_method(stalls::WAIT_UNTIL));
        let task = tokio::task::spawn_local(async move {
            let _running = running;
            if let Err(panic) = AssertUnwindSafe(future).catch_unwind().await {
                let message = crate::engine::instance::panic_message(&*panic);
                tracing::error!(
                    target: "do_runtime::lifecycle",
                    panic = %message,
                    "a wait_until future panicked: the instance is reset"
                );
                if let Some(gate) = gate.upgrade() {
                    gate.request_reset(ResetCause::Panic);
                }
            }
        });
        let mut tasks = self.tasks.borrow_mut();
        // Ended ones go: an instance that starts work per call would keep
        // a handle per call otherwise.
        tasks.retain(|t| !t.is_finished());
        tasks.push(task.abort_handle());
    }
}

/// `future`, polled as the object's calls are: with the object's output
/// gate (its WebSocket sends wait for its writes) and trace in force, and
/// its writes handed to the commit thread after each poll, since no turn
/// of the object's task ends after it to do so.
/// (`of` names the step for the stall watch.)
fn object_context<F: Future + 'static>(
    future: F,
    of: StepOf,
) -> impl Future<Output = F::Output> + 'static {
    let store = crate::engine::output_gate::current();
    let trace = crate::base::trace::current();
    let mut future = Box::pin(future);
    std::future::poll_fn(move |cx| {
        stalls::step(&of, || {
            crate::base::trace::with_current(trace, || match &store {
                Some(store) => {
                    let polled =
                        crate::engine::output_gate::with(store, || future.as_mut().poll(cx));
                    if store.has_unflushed() {
                        // A failed hand-over fails the calls waiting on it.
                        let _ = store.flush();
                    }
                    polled
                }
                None => future.as_mut().poll(cx),
            })
        })
    })
}

/// Opens the gate when the blocking future ends, however it ends.
struct Reopen(Rc<InputGate>);

impl Drop for Reopen {
    fn drop(&mut self) {
        self.0.reopen();
    }
}

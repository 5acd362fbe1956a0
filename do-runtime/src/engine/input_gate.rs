//! The input gate of one instance: while a `block_concurrency_while` future
//! runs, no other call is delivered.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::rc::Rc;
use std::task::Waker;

use futures_util::FutureExt;
use tokio::task::AbortHandle;

#[derive(Default)]
pub(crate) struct InputGate {
    blockers: Cell<usize>,
    /// The object task, to wake when the gate opens.
    waker: RefCell<Option<Waker>>,
    /// The message of a panic in a blocking future: the instance must reset.
    poisoned: RefCell<Option<String>>,
    /// Why the object aborted itself (`Ctx::abort`): the instance must reset.
    aborted: RefCell<Option<String>>,
    tasks: RefCell<Vec<AbortHandle>>,
}

impl InputGate {
    pub fn is_open(&self) -> bool {
        self.blockers.get() == 0
    }

    /// Asks to be woken when the gate opens.
    pub fn wait(&self, waker: &Waker) {
        *self.waker.borrow_mut() = Some(waker.clone());
    }

    pub fn take_poison(&self) -> Option<String> {
        self.poisoned.borrow_mut().take()
    }

    /// Asks for the instance to be reset at the end of the current step
    /// (the first reason given wins), waking the task if it waits here.
    pub fn abort(&self, reason: String) {
        self.aborted.borrow_mut().get_or_insert(reason);
        if let Some(waker) = self.waker.borrow_mut().take() {
            waker.wake();
        }
    }

    pub fn take_abort(&self) -> Option<String> {
        self.aborted.borrow_mut().take()
    }

    /// Stops every blocking future (the instance is going away).
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

    /// Runs `future` on the object's thread with the gate closed; see
    /// [`crate::Ctx::block_concurrency_while`].
    pub fn block_while<F>(self: &Rc<Self>, future: F) -> impl Future<Output = F::Output> + 'static
    where
        F: Future + 'static,
        F::Output: 'static,
    {
        self.blockers.set(self.blockers.get() + 1);
        let gate = self.clone();
        // The future runs as its own task: give it the object's output gate
        // (for WebSocket sends) and trace, as the object's calls have.
        let store = crate::engine::output_gate::current();
        let trace = crate::base::trace::current();
        let mut future = Box::pin(future);
        let future = std::future::poll_fn(move |cx| {
            crate::base::trace::with_current(trace, || match &store {
                Some(store) => crate::engine::output_gate::with(store, || future.as_mut().poll(cx)),
                None => future.as_mut().poll(cx),
            })
        });
        let task = tokio::task::spawn_local(async move {
            let _reopen = Reopen(gate.clone());
            match AssertUnwindSafe(future).catch_unwind().await {
                Ok(value) => Ok(value),
                Err(panic) => {
                    let message = crate::engine::instance::panic_message(&*panic);
                    *gate.poisoned.borrow_mut() = Some(message.clone());
                    // Wake the object task so it resets the instance.
                    if let Some(waker) = gate.waker.borrow_mut().take() {
                        waker.wake();
                    }
                    Err(message)
                }
            }
        });
        self.tasks.borrow_mut().push(task.abort_handle());
        async move {
            match task.await {
                Ok(Ok(value)) => value,
                Ok(Err(message)) => panic!("{message}"),
                // Aborted: the instance was reset; whoever awaits goes with it.
                Err(_) => std::future::pending().await,
            }
        }
    }
}

/// Opens the gate when the blocking future ends, however it ends.
struct Reopen(Rc<InputGate>);

impl Drop for Reopen {
    fn drop(&mut self) {
        self.0.reopen();
    }
}

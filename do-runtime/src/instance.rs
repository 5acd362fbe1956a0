//! One object's task: delivers its calls in order, runs them (interleaving
//! only where a method awaits), holds each reply until the object's writes are
//! durable (output gate), and resets the instance when a method panics.

use std::any::Any;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use do_storage::{ObjectStore, StorageError, ValueCache};
use futures_util::StreamExt;
use futures_util::future::LocalBoxFuture;
use futures_util::stream::FuturesUnordered;
use tokio::sync::oneshot;

use crate::ctx::Ctx;
use crate::env::Env;
use crate::error::Error;
use crate::id::DurableObjectId;
use crate::object::AnyObject;
use crate::runtime::{Class, Shared};
use crate::storage::Storage;
use crate::stub::Reply;
use crate::worker::Envelope;

/// How many calls one poll delivers before yielding to the worker's other tasks.
const DELIVERY_BUDGET: usize = 64;

/// An object's queue of calls, filled by the worker's router.
#[derive(Clone, Default)]
pub(crate) struct Mailbox {
    inner: Rc<RefCell<MailboxInner>>,
}

#[derive(Default)]
struct MailboxInner {
    queue: VecDeque<Envelope>,
    waker: Option<Waker>,
}

impl Mailbox {
    pub fn push(&self, envelope: Envelope) {
        let mut inner = self.inner.borrow_mut();
        inner.queue.push_back(envelope);
        if let Some(waker) = inner.waker.take() {
            waker.wake();
        }
    }

    fn pop(&self, waker: &Waker) -> Option<Envelope> {
        let mut inner = self.inner.borrow_mut();
        let next = inner.queue.pop_front();
        if next.is_none() {
            inner.waker = Some(waker.clone());
        }
        next
    }
}

pub(crate) struct ObjectTask {
    class: Arc<Class>,
    id: DurableObjectId,
    shared: Arc<Shared>,
    mailbox: Mailbox,
    store: Rc<ObjectStore>,
    instance: Option<Rc<dyn AnyObject>>,
    running: FuturesUnordered<Running>,
    /// Incremented at every reset; stubs bound to an older epoch are broken.
    epoch: u64,
}

impl ObjectTask {
    pub fn new(
        class: Arc<Class>,
        id: DurableObjectId,
        shared: Arc<Shared>,
        mailbox: Mailbox,
        cache: ValueCache,
    ) -> Self {
        let prefix = do_storage::ObjectPrefix::new(class.storage_namespace, id.base());
        let store = Rc::new(shared.store().object_cached(prefix, cache));
        ObjectTask {
            class,
            id,
            shared,
            mailbox,
            store,
            instance: None,
            running: FuturesUnordered::new(),
            epoch: 1,
        }
    }

    fn instance(&mut self) -> Result<Rc<dyn AnyObject>, Error> {
        if let Some(instance) = &self.instance {
            return Ok(instance.clone());
        }
        let ctx = Ctx::new(
            self.id.clone(),
            Storage::new(self.store.clone()),
            Env::new(self.shared.clone()),
        );
        let construct = self.class.construct;
        match catch_unwind(AssertUnwindSafe(|| construct(ctx))) {
            Ok(instance) => {
                self.instance = Some(instance.clone());
                Ok(instance)
            }
            Err(panic) => {
                // No half-built instance: forget whatever the constructor wrote.
                self.store.discard_unflushed();
                Err(Error::Panicked(format!(
                    "the constructor of {} panicked: {}",
                    self.class.name,
                    panic_message(&*panic)
                )))
            }
        }
    }

    fn deliver(&mut self, envelope: Envelope) {
        let Envelope {
            method,
            args,
            reply,
            stub,
            ..
        } = envelope;
        if !stub.bind(self.epoch) {
            let _ = reply.send(Err(Error::Disconnected(
                "the object was reset since this stub's first call; get a new stub".into(),
            )));
            return;
        }
        let instance = match self.instance() {
            Ok(instance) => instance,
            Err(e) => {
                let _ = reply.send(Err(e));
                return;
            }
        };
        match catch_unwind(AssertUnwindSafe(|| instance.dispatch(method, &args))) {
            Ok(Ok(call)) => {
                self.running.push(Running {
                    reply: Some(reply),
                    call,
                });
            }
            Ok(Err(e)) => {
                let _ = reply.send(Err(e));
            }
            Err(panic) => {
                let _ = reply.send(Err(Error::Panicked(panic_message(&*panic))));
                self.reset();
            }
        }
    }

    fn finish(&mut self, (reply, outcome): (Option<oneshot::Sender<Reply>>, Outcome)) {
        match outcome {
            Outcome::Done(result) => {
                let Some(reply) = reply else { return };
                // Output gate: the result leaves only once every write it may
                // reflect is durable. Writes of this turn are handed over when
                // the turn ends (see `poll`), so all calls finishing in one turn
                // share one batch; the commit thread sends the reply right
                // after the fsync that covers it.
                self.store.release_when_durable(Box::new(move |durable| {
                    let reply_value = match durable {
                        Ok(()) => result,
                        Err(StorageError::Discarded) => Err(Error::Disconnected(
                            "the object was reset before this call's writes were committed".into(),
                        )),
                        Err(e) => Err(Error::from(e)),
                    };
                    let _ = reply.send(reply_value);
                }));
            }
            Outcome::Panicked(message) => {
                if let Some(reply) = reply {
                    let _ = reply.send(Err(Error::Panicked(message)));
                }
                self.reset();
            }
        }
    }

    /// Drops the instance and every call running on it (their callers see a
    /// disconnected error), forgets unflushed writes, and moves to a new epoch
    /// so the stubs bound to the old instance break.
    fn reset(&mut self) {
        self.instance = None;
        self.running = FuturesUnordered::new();
        self.store.discard_unflushed();
        self.epoch += 1;
    }
}

impl ObjectTask {
    /// Delivers queued calls and runs everything ready, until nothing is or
    /// the delivery budget is spent.
    fn turn(&mut self, cx: &mut Context<'_>) {
        let mut delivered = 0;
        loop {
            while let Poll::Ready(Some(done)) = self.running.poll_next_unpin(cx) {
                self.finish(done);
            }
            if delivered == DELIVERY_BUDGET {
                cx.waker().wake_by_ref();
                return;
            }
            match self.mailbox.pop(cx.waker()) {
                Some(envelope) => {
                    self.deliver(envelope);
                    delivered += 1;
                }
                None => return,
            }
        }
    }
}

impl Future for ObjectTask {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        this.turn(cx);
        // End of the turn: everything written in it goes to disk as one batch.
        // A failed hand-over fails the waiting calls through their output gate.
        if this.store.has_unflushed() {
            let _ = this.store.flush();
        }
        Poll::Pending
    }
}

enum Outcome {
    Done(Reply),
    Panicked(String),
}

/// One call in progress; a panic while polling it becomes its outcome.
struct Running {
    reply: Option<oneshot::Sender<Reply>>,
    call: LocalBoxFuture<'static, Reply>,
}

impl Future for Running {
    type Output = (Option<oneshot::Sender<Reply>>, Outcome);

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        match catch_unwind(AssertUnwindSafe(|| this.call.as_mut().poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(result)) => Poll::Ready((this.reply.take(), Outcome::Done(result))),
            Err(panic) => {
                Poll::Ready((this.reply.take(), Outcome::Panicked(panic_message(&*panic))))
            }
        }
    }
}

fn panic_message(panic: &(dyn Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic with a non-string payload".to_owned()
    }
}

//! The output gate: what an object's code sends out — a method's result, a
//! WebSocket message — leaves only once every write the object made before
//! it is durable, and is dropped (or turned into a disconnected error) if
//! those writes are lost. The storage side (`do_storage::Releases`) runs
//! each release once the fsync that covers it ends; this file decides what
//! is held and how it leaves.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use do_storage::{ObjectStore, StorageError};

use crate::base::error::{DisconnectReason, Error};
use crate::engine::registry::ObjectHandle;
use crate::engine::relay::RelayId;
use crate::engine::reply::{Reply, ReplyTo};

/// Sends a finished call's `result` through `reply` once every write the
/// object made before it is durable: at once when nothing of the object's
/// waits for the disk (and no release is boxed); otherwise this worker's
/// release task sends it, through the caller's relay if it has one, when
/// the commit thread reports the fsync that covers it. Writes of a turn
/// are handed over when the turn ends, so all calls finishing in one turn
/// share one batch.
#[inline]
pub(crate) fn release_reply(
    store: &ObjectStore,
    awaiting: &Arc<AtomicUsize>,
    handle: &Arc<ObjectHandle>,
    reply: ReplyTo,
    relay: Option<RelayId>,
    result: Reply,
) {
    if let Some(durable) = store.durable_now() {
        reply.send(after_durable(durable, result, handle));
        return;
    }
    let held = HeldReply::new(awaiting);
    let handle = handle.clone();
    store.release_when_durable(Box::new(move |durable| {
        drop(held);
        let reply_now = after_durable(durable, result, &handle);
        crate::engine::relay::deliver(reply, relay, reply_now);
    }));
}

/// A call's reply, once its writes' fate is known. Writes are discarded
/// only by a reset, whose cause `handle` keeps; a failed commit marks the
/// object for a reset (before its caller hears of it) so its memory does
/// not keep what storage lost.
fn after_durable(durable: Result<(), StorageError>, result: Reply, handle: &ObjectHandle) -> Reply {
    match durable {
        Ok(()) => result,
        Err(StorageError::Discarded) => {
            drop(result);
            Err(handle.reset_error().unwrap_or_else(|| {
                Error::disconnected(
                    DisconnectReason::Reset,
                    "the object was reset before this call's writes were committed",
                )
            }))
        }
        Err(e) => {
            handle.commit_failed.store(true, Ordering::Release);
            Err(Error::from(e))
        }
    }
}

/// One reply held for the output gate, counted in its worker's
/// `awaiting` for as long as it lives (the release runs once, or is dropped
/// unrun when the store closes).
struct HeldReply(Arc<AtomicUsize>);

impl HeldReply {
    fn new(count: &Arc<AtomicUsize>) -> HeldReply {
        count.fetch_add(1, Ordering::Relaxed);
        HeldReply(count.clone())
    }
}

impl Drop for HeldReply {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

// The gate of WebSocket sends: while an object's code runs, its store is
// this thread's current gate, and its sends wait for its writes like its
// results do.

thread_local! {
    static CURRENT: RefCell<Option<Rc<ObjectStore>>> = const { RefCell::new(None) };
}

/// Runs `f` with `store` as the gate of sends made meanwhile; the
/// previous gate comes back however `f` ends.
pub(crate) fn with<R>(store: &Rc<ObjectStore>, f: impl FnOnce() -> R) -> R {
    crate::base::scoped::with_local(&CURRENT, store.clone(), f)
}

/// The gate in force on this thread.
pub(crate) fn current() -> Option<Rc<ObjectStore>> {
    CURRENT.with(|c| c.borrow().clone())
}

/// Calls `release(durable)` once the current object's writes so far are
/// durable (at once outside an object).
pub(crate) fn release(release: impl FnOnce(bool) + Send + 'static) {
    let store = CURRENT.with(|c| c.borrow().clone());
    match store {
        Some(store) => store.release_when_durable(Box::new(move |r| release(r.is_ok()))),
        None => release(true),
    }
}

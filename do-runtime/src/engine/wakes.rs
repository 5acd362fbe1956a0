//! Wakes deferred to the end of a worker's event-loop poll: whoever waits
//! for replies a worker produces in bursts (a served connection) is woken
//! once per burst, when the worker has run everything it could, not at the
//! first reply. What is woken is a [`DeferredWake`]; the engine does not
//! know what stands behind it.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

/// Something a worker may promise to wake when its poll ends.
pub(crate) trait DeferredWake: Send + Sync {
    /// The token of the worker thread that has promised the wake (see
    /// [`defer_wake`]); 0: none.
    fn promised(&self) -> &AtomicU64;
    /// Wakes whoever waits.
    fn wake(&self);
}

thread_local! {
    /// What was promised a wake during the current poll of this thread's
    /// [`DeferWakes`], if one is being polled.
    static DEFERRED: RefCell<Option<Vec<Arc<dyn DeferredWake>>>> = const { RefCell::new(None) };
    /// This thread's mark in [`DeferredWake::promised`].
    static TOKEN: u64 = NEXT_TOKEN.fetch_add(1, Ordering::Relaxed);
}

static NEXT_TOKEN: AtomicU64 = AtomicU64::new(1);

/// Promises to wake `sink` when the current poll of this
/// thread's [`DeferWakes`] ends; false when there is none. Each worker
/// that answers the connection in the meantime promises its own wake, so
/// no worker's replies wait for another worker's poll to end.
pub(crate) fn defer_wake<S: DeferredWake + 'static>(sink: &Arc<S>) -> bool {
    DEFERRED
        .try_with(|deferred| match deferred.try_borrow_mut().as_deref_mut() {
            Ok(Some(sinks)) => {
                // Ours already (and so in our list): nothing to write.
                let token = TOKEN.with(|t| *t);
                if sink.promised().load(Ordering::Acquire) != token {
                    sink.promised().store(token, Ordering::Release);
                    sinks.push(sink.clone() as Arc<dyn DeferredWake>);
                }
                true
            }
            _ => false,
        })
        .unwrap_or(false)
}

/// Wraps a worker's event loop: the replies its calls send to served
/// connections during one poll wake each connection once, when the poll
/// ends (the loop has run everything it could), not at the first of them.
/// The connection then finds the whole burst encoded, and writes it at
/// once.
pub(crate) struct DeferWakes<F> {
    future: Pin<Box<F>>,
    /// The list kept between polls, for its room.
    sinks: Vec<Arc<dyn DeferredWake>>,
}

impl<F> DeferWakes<F> {
    pub(crate) fn new(future: F) -> Self {
        DeferWakes {
            future: Box::pin(future),
            sinks: Vec::new(),
        }
    }
}

impl<F: Future> Future for DeferWakes<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        // Ends deferring and wakes however the poll ends, a panic included.
        struct Wake<'a>(&'a mut Vec<Arc<dyn DeferredWake>>);
        impl Drop for Wake<'_> {
            fn drop(&mut self) {
                let deferred = DEFERRED.try_with(|d| d.try_borrow_mut().ok()?.take());
                if let Ok(Some(mut sinks)) = deferred {
                    let token = TOKEN.try_with(|t| *t).unwrap_or(0);
                    for sink in sinks.drain(..) {
                        // Kept if another worker has promised since.
                        let _ = sink.promised().compare_exchange(
                            token,
                            0,
                            Ordering::AcqRel,
                            Ordering::Relaxed,
                        );
                        sink.wake();
                    }
                    *self.0 = sinks;
                }
            }
        }
        let outer = DEFERRED.try_with(|d| match d.try_borrow_mut() {
            Ok(mut d) if d.is_none() => {
                *d = Some(std::mem::take(&mut this.sinks));
                true
            }
            _ => false,
        });
        if outer != Ok(true) {
            // Nested, or the thread is going away: no deferring here.
            return this.future.as_mut().poll(cx);
        }
        let _wake = Wake(&mut this.sinks);
        this.future.as_mut().poll(cx)
    }
}

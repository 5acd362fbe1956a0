//! The wake-up the commit thread sends once watermarks have moved.

use std::sync::atomic::{AtomicUsize, Ordering};

/// What the commit thread signals after moving watermarks (after each group
/// for the worker threads, after each batch for an object's `sync()`): wakes
/// every future waiting for a watermark to move, when there is any.
#[derive(Debug, Default)]
pub(crate) struct GroupSignal {
    waiters: AtomicUsize,
    notify: tokio::sync::Notify,
}

impl GroupSignal {
    /// Called by the commit thread once a group's watermarks have moved.
    #[inline]
    pub fn fire(&self) {
        // SeqCst, as the watermarks: either a waiter's check saw them move,
        // or this load sees the waiter.
        if self.waiters.load(Ordering::SeqCst) > 0 {
            self.notify.notify_waiters();
        }
    }

    /// Resolves once `ready()` holds, checking after each firing.
    pub(crate) async fn until(&self, mut ready: impl FnMut() -> bool) {
        struct Registered<'a>(&'a AtomicUsize);
        impl Drop for Registered<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        self.waiters.fetch_add(1, Ordering::SeqCst);
        let _registered = Registered(&self.waiters);
        loop {
            // Made before the check, so a group that ends between the two
            // still wakes it.
            let notified = self.notify.notified();
            if ready() {
                return;
            }
            notified.await;
        }
    }
}

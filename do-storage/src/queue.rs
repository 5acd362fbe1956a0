//! The commit thread's queue: a locked `Vec` the object threads push onto
//! and the commit thread empties in one swap.
//!
//! Why not a channel: `std::sync::mpsc` and its kin allocate (and zero) a
//! block of slots every few dozen messages, and those large allocations
//! made glibc consolidate its free lists on the object threads. Here the
//! two buffers are reused for as long as the store is open, and a push is
//! one uncontended lock, one `Vec::push` and, only while the commit thread
//! sleeps, one wake-up.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// A multi-producer, single-consumer queue that hands its consumer
/// everything queued at once.
pub(crate) struct Queue<T> {
    inner: Mutex<Inner<T>>,
    ready: Condvar,
}

struct Inner<T> {
    items: Vec<T>,
    /// The consumer sleeps on `ready` and needs a wake-up.
    sleeping: bool,
    /// No more items are taken.
    closed: bool,
}

impl<T> Inner<T> {
    /// Moves every item to the end of `into` (swapping buffers when `into`
    /// is empty); whether there was any.
    fn move_to(&mut self, into: &mut Vec<T>) -> bool {
        if self.items.is_empty() {
            return false;
        }
        if into.is_empty() {
            std::mem::swap(&mut self.items, into);
        } else {
            into.append(&mut self.items);
        }
        true
    }
}

impl<T> Queue<T> {
    pub fn new() -> Self {
        Queue {
            inner: Mutex::new(Inner {
                items: Vec::new(),
                sleeping: false,
                closed: false,
            }),
            ready: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner<T>> {
        // Nothing panics while holding the lock; a poisoned one holds a
        // consistent queue all the same.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `item`; gives it back once the queue is closed.
    pub fn push(&self, item: T) -> Result<(), T> {
        let mut inner = self.lock();
        if inner.closed {
            return Err(item);
        }
        inner.items.push(item);
        let wake = std::mem::take(&mut inner.sleeping);
        drop(inner);
        if wake {
            self.ready.notify_one();
        }
        Ok(())
    }

    /// No more pushes succeed; what is queued can still be taken.
    pub fn close(&self) {
        let mut inner = self.lock();
        inner.closed = true;
        let wake = std::mem::take(&mut inner.sleeping);
        drop(inner);
        if wake {
            self.ready.notify_one();
        }
    }

    /// Moves everything queued to the end of `into` (which the queue keeps
    /// in exchange when it is empty, so neither side reallocates); returns
    /// whether anything came.
    pub fn take(&self, into: &mut Vec<T>) -> bool {
        self.lock().move_to(into)
    }

    /// Waits until something is queued and moves it to `into`: polls for up
    /// to `spin` first (yielding the core between polls), then sleeps.
    /// Returns `false` once the queue is closed and empty.
    pub fn wait(&self, into: &mut Vec<T>, spin: Duration) -> bool {
        if !spin.is_zero() {
            let start = Instant::now();
            loop {
                for _ in 0..64 {
                    if self.take(into) {
                        return true;
                    }
                    std::hint::spin_loop();
                }
                if start.elapsed() >= spin {
                    break;
                }
                std::thread::yield_now();
            }
        }
        let mut inner = self.lock();
        loop {
            if inner.move_to(into) {
                return true;
            }
            if inner.closed {
                return false;
            }
            inner.sleeping = true;
            inner = self.ready.wait(inner).unwrap_or_else(|p| p.into_inner());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_sleeping_consumer_gets_every_item_in_order_and_false_once_closed_and_empty() {
        let queue = Arc::new(Queue::new());
        let producer = {
            let queue = queue.clone();
            std::thread::spawn(move || {
                for i in 0..10_000u32 {
                    assert!(queue.push(i).is_ok());
                    if i % 1000 == 0 {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                }
                queue.close();
                assert_eq!(queue.push(7), Err(7), "closed: the item comes back");
            })
        };
        let mut got = Vec::new();
        let mut batch = Vec::new();
        while queue.wait(&mut batch, Duration::ZERO) {
            got.append(&mut batch);
        }
        producer.join().expect("producer");
        assert_eq!(got, (0..10_000).collect::<Vec<_>>());
        // The spinning path ends the same way.
        assert!(!queue.wait(&mut batch, Duration::from_millis(1)));
    }
}

//! Waiting until a view's writes are durable: futures for a batch or for
//! everything written so far, and the output gate, which releases a reply
//! only once every write it may reflect is durable, in the order the
//! replies were made.

use std::future::Future;
use std::sync::atomic::Ordering;

use super::ObjectStore;
use crate::committer::Release;
use crate::error::Result;

impl ObjectStore {
    /// What [`ObjectStore::release_when_durable`] would hand its release at
    /// once: `Some` (the outcome of the last confirmed batch) when no
    /// confirmed write is buffered and that batch is settled, `None` when a
    /// release would wait. Writes made with `allow_unconfirmed` do not count.
    pub fn durable_now(&self) -> Option<Result<()>> {
        let state = self.state.borrow();
        if state.dirty_confirmed {
            return None;
        }
        let seq = state.last_confirmed;
        drop(state);
        // Behind a reply still held on this thread: wait, to leave in order.
        if self.releases.is_some() && self.sync.held.load(Ordering::Relaxed) > 0 {
            return None;
        }
        self.sync.outcome(seq)
    }

    /// Runs `release` once every write a result released now may reflect is
    /// durable (the output gate): at once when that is already so, otherwise
    /// on the commit thread right after the fsync that covers it.
    ///
    /// The wait covers this object's confirmed writes made so far; writes
    /// still buffered are handed over at the next [`ObjectStore::flush`].
    pub fn release_when_durable(&self, release: Release) {
        let mut state = self.state.borrow_mut();
        if state.dirty_confirmed {
            state.dirty_releases.push(release);
            return;
        }
        let seq = state.last_confirmed;
        drop(state);
        self.release_after(seq, release);
    }

    fn release_after(&self, seq: u64, release: Release) {
        let behind = self.sync.held.load(Ordering::Relaxed) > 0;
        match (self.sync.outcome(seq), &self.releases) {
            // Behind a reply still held here: after it, to leave in order.
            (Some(_), Some(releases)) if behind => {
                releases.push(self.sync.clone(), seq, release);
            }
            (Some(outcome), _) => release(outcome),
            (None, Some(releases)) => releases.push(self.sync.clone(), seq, release),
            (None, None) => self.store.release(self.sync.clone(), seq, release),
        }
    }

    /// Resolves once batch `seq` (and every batch before it) is on disk.
    pub fn durable(&self, seq: u64) -> impl Future<Output = Result<()>> + 'static {
        let sync = self.sync.clone();
        async move { sync.wait(seq).await }
    }

    /// Flushes, then resolves once every write made so far is durable. The
    /// flush happens now, not when the future is first polled.
    pub fn barrier(&self) -> impl Future<Output = Result<()>> + 'static {
        let seq = self.flush();
        let wait = self.durable(*seq.as_ref().unwrap_or(&0));
        async move {
            seq?;
            wait.await
        }
    }

    /// Whether this view can be dropped and a new one start from the
    /// engine: nothing is buffered, and every batch handed over is durable
    /// (so a new view's output gate has nothing older to wait for) or has
    /// failed for good (nothing more will ever commit).
    pub fn is_settled(&self) -> bool {
        let mut state = self.state.borrow_mut();
        self.prune(&mut state);
        match self.sync.outcome(state.submitted) {
            None => false,
            Some(Ok(())) => state.is_clean() && state.inflight.is_empty(),
            Some(Err(_)) => true,
        }
    }
}

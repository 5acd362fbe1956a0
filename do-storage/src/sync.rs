//! How far one object's batches have got: applied to the engine, and
//! durable (or failed for good).

use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::error::{Result, StorageError};
use crate::keys::ObjectPrefix;
use crate::signal::GroupSignal;

/// How far an object's batches have got: applied (visible to reads of the
/// engine) and durable (on disk, or failed for good).
///
/// The durable watermark is an atomic, read without a lock on every reply;
/// futures waiting for it register in `waiters`, and the commit thread wakes
/// them only when there are any.
#[derive(Debug)]
pub(crate) struct ObjectSync {
    /// The object, for a replicated log (see `replica`).
    pub prefix: ObjectPrefix,
    /// The object's batches are read back from the replicated log, not
    /// written anew: they are not appended to it again.
    pub restoring: std::sync::atomic::AtomicBool,
    pub applied: AtomicU64,
    /// The last batch known durable (or failed).
    durable: AtomicU64,
    /// The last batch known durable before the first failure: batches up
    /// to it succeeded, whenever their replies are released.
    good: AtomicU64,
    /// Replies held on the object's thread (see `Releases`) not yet
    /// released: later replies queue behind them, to leave in order.
    pub held: AtomicUsize,
    /// The first failure: every batch from then on reports it.
    failed: OnceLock<StorageError>,
    /// Wakes the futures in [`ObjectSync::wait`], if any.
    signal: GroupSignal,
}

impl ObjectSync {
    /// `Some(outcome)` once batch `seq` is durable or has failed.
    #[inline]
    pub fn outcome(&self, seq: u64) -> Option<Result<()>> {
        if self.durable.load(Ordering::SeqCst) < seq {
            return None;
        }
        if seq <= self.good.load(Ordering::SeqCst) {
            return Some(Ok(()));
        }
        Some(self.failed.get().cloned().map_or(Ok(()), Err))
    }

    pub fn new(prefix: ObjectPrefix) -> Arc<Self> {
        Arc::new(ObjectSync {
            prefix,
            restoring: std::sync::atomic::AtomicBool::new(false),
            applied: AtomicU64::new(0),
            durable: AtomicU64::new(0),
            good: AtomicU64::new(0),
            held: AtomicUsize::new(0),
            failed: OnceLock::new(),
            signal: GroupSignal::default(),
        })
    }

    /// Whether one of the object's batches failed (later ones fail too).
    pub fn has_failed(&self) -> bool {
        self.failed.get().is_some()
    }

    /// Batches up to `seq` are durable, or (with `failed`) failed: records
    /// it, then wakes the futures waiting, if any.
    #[inline]
    pub fn settle(&self, seq: u64, failed: Option<&StorageError>) {
        match failed {
            // Only the first failure sticks; it is set before the watermark
            // moves, so whoever sees the watermark sees the failure.
            Some(e) => {
                let _ = self.failed.set(e.clone());
            }
            // Once one batch failed, later ones report it too.
            None if self.failed.get().is_none() => {
                self.good.fetch_max(seq, Ordering::SeqCst);
            }
            None => {}
        }
        self.durable.fetch_max(seq, Ordering::SeqCst);
        self.signal.fire();
    }

    /// Resolves once batch `seq` is durable or has failed.
    pub async fn wait(&self, seq: u64) -> Result<()> {
        if let Some(outcome) = self.outcome(seq) {
            return outcome;
        }
        self.signal.until(|| self.outcome(seq).is_some()).await;
        self.outcome(seq).unwrap_or(Err(StorageError::Closed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_durable_before_a_failure_stays_ok_and_later_ones_report_the_failure() {
        let sync = ObjectSync::new(ObjectPrefix::new(0, [0; 16]));
        assert!(sync.outcome(1).is_none(), "nothing durable yet");
        sync.settle(5, None);
        sync.settle(6, Some(&StorageError::Closed));
        sync.settle(7, None);
        assert_eq!(sync.outcome(5), Some(Ok(())), "durable before the failure");
        assert!(matches!(sync.outcome(6), Some(Err(StorageError::Closed))));
        assert!(
            matches!(sync.outcome(7), Some(Err(StorageError::Closed))),
            "the failure sticks"
        );
        assert!(sync.outcome(8).is_none());
    }
}

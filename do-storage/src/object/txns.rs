//! What optimistic transactions (`txn.rs`) need of a view: which keys were
//! written since a transaction began, and a way to buffer its writes in
//! one step.

use super::{ObjectStore, WriteMap};
use crate::list::KeyRange;

/// A transaction's own writes, merged into the view when it commits.
pub(crate) type TxnWrites = WriteMap;

/// The writes made while transactions are open, for their conflict check.
#[derive(Default)]
pub(super) struct TxnLog {
    /// Counts every key written, to tell transactions what changed under them.
    write_counter: u64,
    /// `(counter, key)` of the writes made while a transaction is open.
    write_log: Vec<(u64, Vec<u8>)>,
    /// Transactions open now.
    open_txns: usize,
}

impl TxnLog {
    /// Counts a write of `key`, and logs it while a transaction is open.
    #[inline]
    pub(super) fn record(&mut self, key: &[u8]) {
        self.write_counter += 1;
        if self.open_txns > 0 {
            self.write_log.push((self.write_counter, key.to_vec()));
        }
    }
}

impl ObjectStore {
    /// Opens a transaction; returns the write counter it starts from.
    pub(crate) fn txn_open(&self) -> u64 {
        let mut state = self.state.borrow_mut();
        state.txns.open_txns += 1;
        state.txns.write_counter
    }

    pub(crate) fn txn_close(&self) {
        let mut state = self.state.borrow_mut();
        state.txns.open_txns = state.txns.open_txns.saturating_sub(1);
        if state.txns.open_txns == 0 {
            state.txns.write_log.clear();
        }
    }

    /// Whether a key written since `start` was read by the transaction: as a
    /// key in `keys`, or inside one of the ranges it listed.
    pub(crate) fn txn_conflicts(
        &self,
        start: u64,
        keys: &std::collections::BTreeSet<Vec<u8>>,
        ranges: &[KeyRange],
    ) -> bool {
        let state = self.state.borrow();
        state
            .txns
            .write_log
            .iter()
            .filter(|(counter, _)| *counter > start)
            .any(|(_, key)| keys.contains(key) || ranges.iter().any(|r| r.contains(key)))
    }

    /// Buffers a committed transaction's writes, all in one step.
    pub(crate) fn txn_apply(&self, writes: WriteMap) {
        let mut state = self.state.borrow_mut();
        for (key, value) in writes {
            self.write(&mut state, key, value, true);
        }
    }
}

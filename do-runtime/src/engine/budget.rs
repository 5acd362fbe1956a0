//! The budget of bytes the runtime holds on behalf of its clients: request
//! bodies the gateway is reading, frames the TCP server has begun to read.
//! Unauthenticated clients can make the runtime hold these, so one budget
//! for all of them bounds what any number of connections can pin; past it,
//! new requests get 503 and a connection whose frame does not fit is closed.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The runtime's budget of bytes held for clients.
#[derive(Debug)]
pub(crate) struct Budget {
    limit: usize,
    held: AtomicUsize,
}

/// Bytes taken from a [`Budget`], given back when dropped.
#[derive(Debug)]
pub(crate) struct Held {
    budget: Arc<Budget>,
    bytes: usize,
}

impl Budget {
    pub(crate) fn new(limit: usize) -> Arc<Self> {
        Arc::new(Budget {
            limit,
            held: AtomicUsize::new(0),
        })
    }

    /// An empty hold, to grow with [`Held::grow`].
    pub(crate) fn hold(self: &Arc<Self>) -> Held {
        Held {
            budget: self.clone(),
            bytes: 0,
        }
    }

    /// The most bytes it holds.
    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes held now.
    pub(crate) fn held(&self) -> usize {
        self.held.load(Ordering::Acquire)
    }
}

impl Held {
    /// Takes `bytes` more from the budget; false (and nothing taken) when
    /// they do not fit.
    pub(crate) fn grow(&mut self, bytes: usize) -> bool {
        let budget = &self.budget;
        let mut current = budget.held.load(Ordering::Acquire);
        loop {
            let Some(next) = current.checked_add(bytes).filter(|n| *n <= budget.limit) else {
                return false;
            };
            match budget.held.compare_exchange_weak(
                current,
                next,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    self.bytes += bytes;
                    return true;
                }
                Err(now) => current = now,
            }
        }
    }

    /// Bytes held.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Holds exactly `bytes` (taking more or giving some back); false when
    /// more do not fit.
    pub(crate) fn resize(&mut self, bytes: usize) -> bool {
        if bytes > self.bytes {
            return self.grow(bytes - self.bytes);
        }
        let freed = self.bytes - bytes;
        self.budget.held.fetch_sub(freed, Ordering::AcqRel);
        self.bytes = bytes;
        true
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.budget.held.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_take_from_one_budget_and_give_back_on_drop() {
        let budget = Budget::new(100);
        let mut a = budget.hold();
        let mut b = budget.hold();
        assert!(a.grow(60));
        assert!(!b.grow(50), "past the budget");
        assert!(b.grow(40));
        assert_eq!(budget.held(), 100);
        assert!(a.resize(10));
        assert_eq!(budget.held(), 50);
        assert!(b.resize(90));
        drop(a);
        drop(b);
        assert_eq!(budget.held(), 0);
    }
}

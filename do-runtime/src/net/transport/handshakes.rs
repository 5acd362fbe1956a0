//! The server's connections waiting for their hello, kept apart from the
//! connections that said it: a pool of their own, smaller, with a share per
//! address (an IPv6 address counts by its /64). When the pool (or an
//! address's share) is full, the oldest waiting connection (of that
//! address) is let go to make room, if it has waited at least
//! [`Limits::min_age`]: sockets that never say hello cannot keep a good
//! client out while they wait out their handshake timeout, one address
//! cannot fill the pool for the others, and a burst of honest connections
//! (many clients behind one NAT) does not evict itself; the newcomer is
//! refused instead.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// The bounds of the pool.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Connections waiting for their hello, in all.
    pub total: usize,
    /// Connections waiting for their hello, from one address.
    pub per_addr: usize,
    /// How long a connection waits at least before a newcomer may take its
    /// place (a hello takes one round trip).
    pub min_age: Duration,
}

/// The connections waiting for their hello.
#[derive(Default)]
pub(crate) struct Handshakes {
    waiting: Mutex<Waiting>,
    /// Connections past their handshake, open now.
    pub(crate) open: AtomicUsize,
}

#[derive(Default)]
struct Waiting {
    next: u64,
    /// By arrival, oldest first: address, arrival, and the signal that
    /// lets it go.
    by_age: BTreeMap<u64, (IpAddr, Instant, Arc<Notify>)>,
    per_addr: HashMap<IpAddr, usize>,
}

/// One connection's place in the pool, given back when dropped. `evicted`
/// fires when the connection must let its place go.
pub(crate) struct Slot {
    pool: Arc<Handshakes>,
    number: u64,
    pub(crate) evicted: Arc<Notify>,
}

impl Handshakes {
    fn lock(&self) -> MutexGuard<'_, Waiting> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes a place for a connection from `addr`, letting the oldest
    /// waiting connection (of `addr`, when its share is full) go first;
    /// `None` when that one has not waited [`Limits::min_age`] yet.
    pub(crate) fn enter(self: &Arc<Self>, addr: IpAddr, limits: Limits) -> Option<Slot> {
        let addr = group(addr);
        let now = Instant::now();
        let mut waiting = self.lock();
        if waiting.per_addr.get(&addr).copied().unwrap_or(0) >= limits.per_addr.max(1) {
            let oldest = waiting
                .by_age
                .iter()
                .find(|(_, (a, _, _))| *a == addr)
                .map(|(n, (_, since, _))| (*n, *since));
            if let Some((n, since)) = oldest {
                if now.duration_since(since) < limits.min_age {
                    return None;
                }
                waiting.evict(n);
            }
        }
        while waiting.by_age.len() >= limits.total.max(1) {
            let Some((n, since)) = waiting.by_age.iter().next().map(|(n, (_, s, _))| (*n, *s))
            else {
                break;
            };
            if now.duration_since(since) < limits.min_age {
                return None;
            }
            waiting.evict(n);
        }
        let number = waiting.next;
        waiting.next += 1;
        let evicted = Arc::new(Notify::new());
        waiting.by_age.insert(number, (addr, now, evicted.clone()));
        *waiting.per_addr.entry(addr).or_default() += 1;
        Some(Slot {
            pool: self.clone(),
            number,
            evicted,
        })
    }

    /// Connections waiting now.
    #[cfg(test)]
    fn waiting(&self) -> usize {
        self.lock().by_age.len()
    }
}

impl Waiting {
    /// Takes connection `number` out and tells it to go.
    fn evict(&mut self, number: u64) {
        if let Some(notify) = self.remove(number) {
            // A permit: it goes even if it is not waiting on the signal yet.
            notify.notify_one();
        }
    }

    fn remove(&mut self, number: u64) -> Option<Arc<Notify>> {
        let (addr, _, notify) = self.by_age.remove(&number)?;
        if let Some(count) = self.per_addr.get_mut(&addr) {
            *count -= 1;
            if *count == 0 {
                self.per_addr.remove(&addr);
            }
        }
        Some(notify)
    }
}

/// What counts as one address: an IPv4 address, or an IPv6 /64 (one
/// host usually holds a whole /64).
fn group(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V4(_) => addr,
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(bits.into())
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.pool.lock().remove(self.number);
    }
}

/// Counts one connection past its handshake while it lives.
pub(crate) struct Open(Arc<Handshakes>);

impl Open {
    /// Counts a connection open, or `None` when `most` are open already.
    pub(crate) fn take(pool: &Arc<Handshakes>, most: usize) -> Option<Open> {
        let before = pool.open.fetch_add(1, Ordering::AcqRel);
        if before >= most {
            pool.open.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Open(pool.clone()))
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing unwrap is a failing test
mod tests {
    use super::*;

    fn addr(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    /// Whether `slot` was told to let its place go.
    fn told(slot: &Slot) -> bool {
        let told = slot.evicted.notified();
        futures_util::pin_mut!(told);
        futures_util::FutureExt::now_or_never(told).is_some()
    }

    #[test]
    fn a_full_pool_lets_its_oldest_connection_go() {
        let pool = Arc::new(Handshakes::default());
        let limits = Limits {
            total: 3,
            per_addr: 3,
            min_age: Duration::ZERO,
        };
        let first = pool.enter(addr(1), limits).unwrap();
        let _second = pool.enter(addr(2), limits).unwrap();
        let _third = pool.enter(addr(3), limits).unwrap();
        assert_eq!(pool.waiting(), 3);
        let _fourth = pool.enter(addr(4), limits).unwrap();
        assert_eq!(pool.waiting(), 3);
        // The first was told to go (a stored permit).
        assert!(told(&first));
        // Its drop after eviction changes nothing.
        drop(first);
        assert_eq!(pool.waiting(), 3);
    }

    #[test]
    fn one_address_only_replaces_its_own_connections() {
        let pool = Arc::new(Handshakes::default());
        let limits = Limits {
            total: 10,
            per_addr: 2,
            min_age: Duration::ZERO,
        };
        let other = pool.enter(addr(9), limits).unwrap();
        let a1 = pool.enter(addr(1), limits).unwrap();
        let _a2 = pool.enter(addr(1), limits).unwrap();
        let _a3 = pool.enter(addr(1), limits).unwrap();
        assert_eq!(pool.waiting(), 3, "one of the address's own went");
        assert!(told(&a1));
        assert!(!told(&other));
    }

    #[test]
    fn young_connections_are_not_evicted_a_newcomer_is_refused() {
        let pool = Arc::new(Handshakes::default());
        let limits = Limits {
            total: 2,
            per_addr: 2,
            min_age: Duration::from_secs(3600),
        };
        let _a = pool.enter(addr(1), limits).unwrap();
        let _b = pool.enter(addr(2), limits).unwrap();
        assert!(
            pool.enter(addr(3), limits).is_none(),
            "the pool is full of young ones"
        );
        assert!(pool.enter(addr(1), limits).is_none());
        assert_eq!(pool.waiting(), 2);
    }

    #[test]
    fn an_ipv6_64_counts_as_one_address() {
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(group(a), group(b));
        assert_ne!(group(a), group(c));
        assert_eq!(group(addr(7)), addr(7));
    }

    #[test]
    fn open_connections_are_bounded() {
        let pool = Arc::new(Handshakes::default());
        let a = Open::take(&pool, 2);
        let b = Open::take(&pool, 2);
        assert!(a.is_some() && b.is_some());
        assert!(Open::take(&pool, 2).is_none());
        drop(a);
        assert!(Open::take(&pool, 2).is_some());
    }
}

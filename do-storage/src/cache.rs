//! A bounded LRU cache of recently used values, one per worker thread.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use fjall::Slice;
use lru::LruCache;

/// Bytes charged per entry on top of its key and value: the map's own bookkeeping.
const ENTRY_OVERHEAD: usize = 64;

/// Recently read or committed values (and known-absent keys), bounded by a
/// total byte size, least recently used first out. Not `Send`: each worker
/// thread has its own, and only that thread's objects use it, so entries never
/// need invalidating across threads.
///
/// ```
/// use do_storage::ValueCache;
/// let cache = ValueCache::new(1024);
/// cache.insert(b"k".to_vec(), Some(b"v".to_vec().into()));
/// assert!(cache.get(b"k").is_some());
/// ```
#[derive(Clone)]
pub struct ValueCache {
    inner: Rc<RefCell<Inner>>,
    counters: Arc<CacheCounters>,
}

struct Inner {
    map: LruCache<Vec<u8>, Option<Slice>>,
    bytes: usize,
    limit: usize,
}

/// The hit and miss counters of a [`ValueCache`], readable from any thread.
#[derive(Debug, Default)]
pub struct CacheCounters {
    hits: AtomicU64,
    misses: AtomicU64,
}

impl CacheCounters {
    /// Lookups answered from the cache so far.
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    /// Lookups that went to the engine so far.
    pub fn misses(&self) -> u64 {
        self.misses.load(Ordering::Relaxed)
    }
}

/// Counters of a [`ValueCache`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CacheStats {
    /// Lookups answered from the cache.
    pub hits: u64,
    /// Lookups that went to the engine.
    pub misses: u64,
    /// Bytes held now (keys, values and bookkeeping).
    pub bytes: usize,
    /// Entries held now.
    pub entries: usize,
}

fn cost(key: &[u8], value: &Option<Slice>) -> usize {
    key.len() + value.as_ref().map_or(0, |v| v.len()) + ENTRY_OVERHEAD
}

impl ValueCache {
    /// A cache holding at most `limit_bytes`. Zero disables it.
    pub fn new(limit_bytes: usize) -> Self {
        Self::with_counters(limit_bytes, Arc::default())
    }

    /// A cache that counts its hits and misses in `counters`, which another
    /// thread may read.
    pub fn with_counters(limit_bytes: usize, counters: Arc<CacheCounters>) -> Self {
        ValueCache {
            inner: Rc::new(RefCell::new(Inner {
                map: LruCache::unbounded(),
                bytes: 0,
                limit: limit_bytes,
            })),
            counters,
        }
    }

    /// `Some(value)` when the cache knows the key: `Some(None)` means known absent.
    pub fn get(&self, key: &[u8]) -> Option<Option<Slice>> {
        let mut inner = self.inner.borrow_mut();
        let found = inner.map.get(key).cloned();
        let counter = if found.is_some() {
            &self.counters.hits
        } else {
            &self.counters.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    /// Replaces the value of `key` if the cache holds it (no key allocated);
    /// gives `value` back when it does not.
    pub(crate) fn update(&self, key: &[u8], value: Option<Slice>) -> Option<Option<Slice>> {
        let mut inner = self.inner.borrow_mut();
        let size = cost(key, &value);
        if size > inner.limit {
            return Some(value);
        }
        let Some(slot) = inner.map.get_mut(key) else {
            return Some(value);
        };
        let old = std::mem::replace(slot, value);
        inner.bytes = inner.bytes + size - cost(key, &old);
        inner.evict();
        None
    }

    /// Records the committed value of `key` (`None`: absent).
    pub fn insert(&self, key: Vec<u8>, value: Option<Slice>) {
        let mut inner = self.inner.borrow_mut();
        let size = cost(&key, &value);
        if size > inner.limit {
            if let Some(old) = inner.map.pop(&key) {
                inner.bytes -= cost(&key, &old);
            }
            return;
        }
        if let Some((k, old)) = inner.map.push(key, value) {
            inner.bytes -= cost(&k, &old);
        }
        inner.bytes += size;
        inner.evict();
    }

    /// Forgets everything: values written to the store other than through
    /// this thread's views (objects read back from a replicated log when
    /// their shard came back to this runtime) must not be hidden by ones
    /// remembered from before.
    pub fn clear(&self) {
        let mut inner = self.inner.borrow_mut();
        inner.map.clear();
        inner.bytes = 0;
    }

    /// Forgets `key`, if held.
    pub(crate) fn remove(&self, key: &[u8]) {
        let mut inner = self.inner.borrow_mut();
        if let Some(old) = inner.map.pop(key) {
            inner.bytes -= cost(key, &old);
        }
    }

    /// Counts a lookup answered from memory beside the cache (an object's
    /// own recent values) as a hit.
    pub(crate) fn count_hit(&self) {
        self.counters.hits.fetch_add(1, Ordering::Relaxed);
    }

    /// Whether the cache may hold anything (its limit is not zero).
    pub(crate) fn is_enabled(&self) -> bool {
        self.inner.borrow().limit > 0
    }

    /// Hit and miss counters and current size.
    pub fn stats(&self) -> CacheStats {
        let inner = self.inner.borrow();
        CacheStats {
            hits: self.counters.hits(),
            misses: self.counters.misses(),
            bytes: inner.bytes,
            entries: inner.map.len(),
        }
    }
}

impl Inner {
    /// Drops least recently used entries until within the limit.
    fn evict(&mut self) {
        while self.bytes > self.limit {
            match self.map.pop_lru() {
                Some((k, v)) => self.bytes -= cost(&k, &v),
                None => break,
            }
        }
    }
}

impl std::fmt::Debug for ValueCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("ValueCache").field(&self.stats()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(n: usize) -> Option<Slice> {
        Some(vec![0u8; n].into())
    }

    #[test]
    fn hits_are_counted_and_absent_keys_are_cached_too() {
        let cache = ValueCache::new(10_000);
        assert_eq!(cache.get(b"a"), None);
        cache.insert(b"a".to_vec(), None);
        assert_eq!(cache.get(b"a"), Some(None));
        let stats = cache.stats();
        assert_eq!((stats.hits, stats.misses), (1, 1));
    }

    #[test]
    fn the_byte_bound_holds_and_the_least_recently_used_goes_first() {
        let cache = ValueCache::new(3 * (1 + 100 + ENTRY_OVERHEAD));
        cache.insert(b"a".to_vec(), value(100));
        cache.insert(b"b".to_vec(), value(100));
        cache.insert(b"c".to_vec(), value(100));
        assert!(cache.get(b"a").is_some()); // a is now the most recent
        cache.insert(b"d".to_vec(), value(100));
        assert!(cache.get(b"b").is_none(), "b was the least recently used");
        assert!(
            cache.get(b"a").is_some() && cache.get(b"c").is_some() && cache.get(b"d").is_some()
        );
        assert!(cache.stats().bytes <= 3 * (1 + 100 + ENTRY_OVERHEAD));
    }

    #[test]
    fn a_value_larger_than_the_whole_cache_is_not_kept() {
        let cache = ValueCache::new(100);
        cache.insert(b"a".to_vec(), value(10));
        cache.insert(b"a".to_vec(), value(1_000));
        assert_eq!(cache.get(b"a"), None, "the stale small value is gone too");
        assert_eq!(cache.stats().bytes, 0);
    }

    #[test]
    fn an_update_replaces_a_held_value_and_hands_back_what_it_cannot_hold() {
        let cache = ValueCache::new(3 * (1 + 100 + ENTRY_OVERHEAD));
        assert_eq!(cache.update(b"a", value(5)), Some(value(5)), "absent");
        cache.insert(b"a".to_vec(), value(10));
        cache.insert(b"b".to_vec(), value(10));
        assert_eq!(cache.update(b"a", value(20)), None);
        assert_eq!(cache.get(b"a"), Some(value(20)));
        assert_eq!(
            cache.stats().bytes,
            (1 + 20 + ENTRY_OVERHEAD) + (1 + 10 + ENTRY_OVERHEAD)
        );
        // Growing past the bound evicts the least recently used (b).
        assert_eq!(cache.update(b"a", value(400)), None);
        assert_eq!(cache.get(b"b"), None);
        assert!(cache.stats().bytes <= 3 * (1 + 100 + ENTRY_OVERHEAD));
        // Too big to hold at all: handed back for `insert` to drop the stale value.
        assert_eq!(cache.update(b"a", value(10_000)), Some(value(10_000)));
    }

    #[test]
    fn replacing_a_value_keeps_the_byte_count_exact() {
        let cache = ValueCache::new(10_000);
        cache.insert(b"a".to_vec(), value(10));
        cache.insert(b"a".to_vec(), value(20));
        assert_eq!(cache.stats().bytes, 1 + 20 + ENTRY_OVERHEAD);
        assert_eq!(cache.stats().entries, 1);
    }
}

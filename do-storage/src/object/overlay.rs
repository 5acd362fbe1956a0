//! Reads of a view: its buffered writes (not yet handed over, and handed
//! over but not yet applied) over the engine's entries, and the committed
//! values it keeps itself or finds in the thread's cache.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::atomic::Ordering;

use fjall::Slice;

use super::{Number, OWN_KEYS, OWN_VALUE_BYTES, ObjectStore, State, WriteMap};
use crate::error::Result;
use crate::keys::DataPrefix;
use crate::limits;
use crate::list::{self, KeyRange, ListOptions};

impl ObjectStore {
    /// The value stored under `key`, if any.
    pub fn get(&self, key: &str) -> Result<Option<Slice>> {
        limits::check_key(key)?;
        self.lookup(key.as_bytes())
    }

    /// The values of those `keys` that exist, in key order.
    pub fn get_many(&self, keys: &[&str]) -> Result<Vec<(String, Slice)>> {
        limits::check_batch(keys.len())?;
        keys.iter().try_for_each(|k| limits::check_key(k))?;
        let mut found = BTreeMap::new();
        for key in keys {
            if let Some(v) = self.lookup(key.as_bytes())? {
                found.insert((*key).to_owned(), v);
            }
        }
        Ok(found.into_iter().collect())
    }

    /// Applied batches are now in the engine: their values move to the
    /// cache, which only ever holds committed values.
    pub(super) fn prune(&self, state: &mut State) {
        let applied = self.sync.applied.load(Ordering::Acquire);
        while state
            .inflight
            .front()
            .is_some_and(|(seq, _)| *seq <= applied)
        {
            if let Some((_, writes)) = state.inflight.pop_front()
                && let Some(cache) = &self.cache
                && let Number::Some(p) = self.number.get()
            {
                for (k, v) in writes {
                    let small = v.as_ref().is_none_or(|v| v.len() <= OWN_VALUE_BYTES);
                    if let Some(at) = state.own.iter().position(|(own, _)| **own == *k) {
                        if small {
                            state.own[at].1 = v;
                            continue;
                        }
                        // Grown too large to keep here: to the cache path.
                        state.own.swap_remove(at);
                    } else if state.own.len() < OWN_KEYS && small && cache.is_enabled() {
                        p.with_key(&k, |full| cache.remove(full));
                        state.own.push((k, v));
                        continue;
                    }
                    let absent = p.with_key(&k, |full| cache.update(full, v));
                    if let Some(v) = absent {
                        cache.insert(p.key(&k), v);
                    }
                }
            }
        }
    }

    pub(crate) fn lookup(&self, key: &[u8]) -> Result<Option<Slice>> {
        let mut state = self.state.borrow_mut();
        self.prune(&mut state);
        if let Some(v) = state.dirty.get(key) {
            return Ok(v.clone());
        }
        for (_, writes) in state.inflight.iter().rev() {
            if let Some(v) = writes.get(key) {
                return Ok(v.clone());
            }
        }
        if let Some((_, v)) = state.own.iter().find(|(own, _)| **own == *key) {
            if let Some(cache) = &self.cache {
                cache.count_hit();
            }
            return Ok(v.clone());
        }
        drop(state);
        let Some(prefix) = self.data_prefix()? else {
            return Ok(None);
        };
        prefix.with_key(key, |full| {
            if let Some(cache) = &self.cache
                && let Some(hit) = cache.get(full)
            {
                return Ok(hit);
            }
            let value = self.store.data().get(full)?;
            if let Some(cache) = &self.cache {
                cache.insert(full.to_vec(), value.clone());
            }
            Ok(value)
        })
    }

    /// The entries the options select, buffered writes included.
    pub fn list(&self, options: &ListOptions) -> Result<Vec<(String, Slice)>> {
        self.list_entries(options, false)
    }

    /// The keys the options select, buffered writes included, without
    /// reading the stored values (fjall's iterator yields a key alone).
    pub fn list_keys(&self, options: &ListOptions) -> Result<Vec<String>> {
        Ok(self
            .list_entries(options, true)?
            .into_iter()
            .map(|(key, _)| key)
            .collect())
    }

    /// [`list`](Self::list); with `keys_only`, every value is left empty.
    fn list_entries(&self, options: &ListOptions, keys_only: bool) -> Result<Vec<(String, Slice)>> {
        let range = options.bounds()?;
        let limit = options.limit.unwrap_or(usize::MAX);
        if range.is_empty() {
            return Ok(Vec::new());
        }
        let overlay = self.overlay_in(&range);
        let reverse = options.reverse;
        // No number: nothing of the object is in the engine.
        let Some(prefix) = self.data_prefix()? else {
            let none = std::iter::empty::<Result<(Vec<u8>, Slice)>>();
            return if reverse {
                list::merge(overlay.into_iter().rev(), none, true, limit)
            } else {
                list::merge(overlay.into_iter(), none, false, limit)
            };
        };
        let engine = self.store.data().range(full_range(prefix, &range));
        let skip = prefix.len();
        if overlay.is_empty() {
            // Nothing buffered: the engine's entries as they come.
            return if reverse {
                engine_entries(engine.rev(), skip, limit, keys_only)
            } else {
                engine_entries(engine, skip, limit, keys_only)
            };
        }
        let strip = |guard: fjall::Guard| -> Result<(Vec<u8>, Slice)> {
            let (k, v) = entry(guard, keys_only)?;
            Ok((k.get(skip..).unwrap_or_default().to_vec(), v))
        };
        if reverse {
            list::merge(
                overlay.into_iter().rev(),
                engine.rev().map(strip),
                true,
                limit,
            )
        } else {
            list::merge(overlay.into_iter(), engine.map(strip), false, limit)
        }
    }

    /// Buffered writes (in flight and dirty, newest winning) within `range`.
    fn overlay_in(&self, range: &KeyRange) -> WriteMap {
        let mut state = self.state.borrow_mut();
        self.prune(&mut state);
        let mut view = WriteMap::new();
        let bounds = (
            range.lo.as_ref().map(Vec::as_slice),
            range.hi.as_ref().map(Vec::as_slice),
        );
        let layers = state.inflight.iter().map(|(_, w)| w).chain([&state.dirty]);
        for writes in layers {
            for (k, v) in writes.range(bounds) {
                if range.contains(k) {
                    view.insert(k.clone(), v.clone());
                }
            }
        }
        view
    }
}

/// Up to `limit` entries of an engine range, their keys without the
/// object's `skip` prefix bytes.
fn engine_entries(
    range: impl Iterator<Item = fjall::Guard>,
    skip: usize,
    limit: usize,
    keys_only: bool,
) -> Result<Vec<(String, Slice)>> {
    let mut out = Vec::with_capacity(limit.min(1024));
    for guard in range.take(limit) {
        let (k, v) = entry(guard, keys_only)?;
        out.push((list::key_string(k.get(skip..).unwrap_or_default())?, v));
    }
    Ok(out)
}

/// An engine entry: key and value, or with `keys_only` the key and an
/// empty value.
fn entry(guard: fjall::Guard, keys_only: bool) -> Result<(Slice, Slice)> {
    if keys_only {
        Ok((guard.key()?, Slice::from(&[][..])))
    } else {
        Ok(guard.into_inner()?)
    }
}

/// The engine range of `range`'s keys under `prefix`.
fn full_range(prefix: DataPrefix, range: &KeyRange) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
    let lo = match &range.lo {
        Bound::Included(k) => Bound::Included(prefix.key(k)),
        Bound::Excluded(k) => Bound::Excluded(prefix.key(k)),
        Bound::Unbounded => Bound::Included(prefix.as_bytes().to_vec()),
    };
    let hi = match &range.hi {
        Bound::Included(k) => Bound::Included(prefix.key(k)),
        Bound::Excluded(k) => Bound::Excluded(prefix.key(k)),
        Bound::Unbounded => match list::successor(prefix.as_bytes()) {
            Some(end) => Bound::Excluded(end),
            None => Bound::Unbounded,
        },
    };
    (lo, hi)
}

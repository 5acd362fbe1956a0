//! One object's view of the store: its keys under a fixed-width prefix, its
//! buffered writes, and the barrier that waits until they are durable.

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::ops::Bound;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use fjall::Slice;

use crate::committer::{Commit, ObjectSync};
use crate::error::{Result, StorageError};
use crate::limits;
use crate::list::{self, KeyRange, ListOptions};
use crate::store::Store;

/// Bytes of the namespace part of an [`ObjectPrefix`].
pub const NAMESPACE_BYTES: usize = 8;
/// Bytes of the object-id part of an [`ObjectPrefix`].
pub const OBJECT_ID_BYTES: usize = 32;
/// Bytes of an [`ObjectPrefix`].
pub const PREFIX_BYTES: usize = NAMESPACE_BYTES + OBJECT_ID_BYTES;

/// Where an object's keys live: a fixed-width (namespace, object id) prefix, so
/// that no object's key range overlaps another's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectPrefix([u8; PREFIX_BYTES]);

impl ObjectPrefix {
    /// The prefix of object `id` in namespace `namespace`.
    pub fn new(namespace: [u8; NAMESPACE_BYTES], id: [u8; OBJECT_ID_BYTES]) -> Self {
        let mut p = [0u8; PREFIX_BYTES];
        p[..NAMESPACE_BYTES].copy_from_slice(&namespace);
        p[NAMESPACE_BYTES..].copy_from_slice(&id);
        ObjectPrefix(p)
    }

    /// The prefix's bytes.
    pub fn as_bytes(&self) -> &[u8; PREFIX_BYTES] {
        &self.0
    }
}

type Writes = BTreeMap<Vec<u8>, Option<Slice>>;

/// One object's storage. Not `Send`: it lives on the thread that runs the
/// object, and every method returns without blocking on a commit.
///
/// Writes are buffered and become visible to this object's reads at once
/// (read-your-writes). [`ObjectStore::flush`] hands the buffer to the commit
/// thread as one atomic batch; [`ObjectStore::barrier`] flushes and resolves
/// once everything written so far is durable.
///
/// ```
/// # fn main() -> Result<(), do_storage::StorageError> {
/// use do_storage::{ObjectPrefix, Store};
/// let dir = tempfile::tempdir().unwrap();
/// let store = Store::open(dir.path(), Default::default())?;
/// let object = store.object(ObjectPrefix::new([1; 8], [2; 32]));
/// object.put("a", b"1".to_vec())?;
/// assert_eq!(object.get("a")?.as_deref(), Some(&b"1"[..]));
/// let durable = object.barrier(); // the batch is on its way to disk
/// # drop(durable);
/// # Ok(()) }
/// ```
pub struct ObjectStore {
    store: Store,
    prefix: ObjectPrefix,
    sync: Arc<ObjectSync>,
    state: RefCell<State>,
}

#[derive(Default)]
struct State {
    /// Writes not yet handed to the commit thread.
    dirty: Writes,
    /// Batches handed over but not yet applied to the engine, oldest first.
    inflight: VecDeque<(u64, Writes)>,
    /// Sequence number of the last batch handed over.
    submitted: u64,
}

impl ObjectStore {
    pub(crate) fn new(store: Store, prefix: ObjectPrefix) -> Self {
        ObjectStore {
            store,
            prefix,
            sync: ObjectSync::new(),
            state: RefCell::new(State::default()),
        }
    }

    /// The object's key prefix.
    pub fn prefix(&self) -> ObjectPrefix {
        self.prefix
    }

    fn full_key(&self, key: &[u8]) -> Vec<u8> {
        let mut full = Vec::with_capacity(PREFIX_BYTES + key.len());
        full.extend_from_slice(self.prefix.as_bytes());
        full.extend_from_slice(key);
        full
    }

    /// Drops in-flight batches the engine has applied: reads find them there now.
    fn prune(&self, state: &mut State) {
        let applied = self.sync.applied.load(Ordering::Acquire);
        while state
            .inflight
            .front()
            .is_some_and(|(seq, _)| *seq <= applied)
        {
            state.inflight.pop_front();
        }
    }

    fn lookup(&self, key: &[u8]) -> Result<Option<Slice>> {
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
        drop(state);
        Ok(self.store.data().get(self.full_key(key))?)
    }

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

    /// Buffers a write of `value` under `key`.
    pub fn put(&self, key: &str, value: Vec<u8>) -> Result<()> {
        limits::check_entry(key, &value)?;
        self.state
            .borrow_mut()
            .dirty
            .insert(key.as_bytes().to_vec(), Some(Slice::from(value)));
        Ok(())
    }

    /// Buffers the writes of every entry, or of none when one breaks a limit.
    pub fn put_many(&self, entries: Vec<(String, Vec<u8>)>) -> Result<()> {
        limits::check_batch(entries.len())?;
        entries
            .iter()
            .try_for_each(|(k, v)| limits::check_entry(k, v))?;
        let mut state = self.state.borrow_mut();
        for (key, value) in entries {
            state
                .dirty
                .insert(key.into_bytes(), Some(Slice::from(value)));
        }
        Ok(())
    }

    /// Buffers the removal of `key`; tells whether it existed.
    pub fn delete(&self, key: &str) -> Result<bool> {
        limits::check_key(key)?;
        let existed = self.lookup(key.as_bytes())?.is_some();
        if existed {
            self.state
                .borrow_mut()
                .dirty
                .insert(key.as_bytes().to_vec(), None);
        }
        Ok(existed)
    }

    /// Buffers the removal of `keys`; tells how many of them existed.
    pub fn delete_many(&self, keys: &[&str]) -> Result<usize> {
        limits::check_batch(keys.len())?;
        keys.iter().try_for_each(|k| limits::check_key(k))?;
        let mut existing = Vec::new();
        for key in keys {
            if self.lookup(key.as_bytes())?.is_some() {
                existing.push(key.as_bytes().to_vec());
            }
        }
        existing.dedup();
        let count = existing.len();
        let mut state = self.state.borrow_mut();
        for key in existing {
            state.dirty.insert(key, None);
        }
        Ok(count)
    }

    /// Buffers the removal of every key of this object.
    pub fn delete_all(&self) -> Result<()> {
        let keys = self.list(&ListOptions::new())?;
        let mut state = self.state.borrow_mut();
        for (key, _) in keys {
            state.dirty.insert(key.into_bytes(), None);
        }
        Ok(())
    }

    /// The entries the options select, buffered writes included.
    pub fn list(&self, options: &ListOptions) -> Result<Vec<(String, Slice)>> {
        let range = options.bounds()?;
        let limit = options.limit.unwrap_or(usize::MAX);
        if range.is_empty() {
            return Ok(Vec::new());
        }
        let overlay = self.overlay_in(&range);
        let engine = self.store.data().range(self.full_range(&range));
        let strip = |guard: fjall::Guard| -> Result<(Vec<u8>, Slice)> {
            let (k, v) = guard.into_inner()?;
            Ok((k.get(PREFIX_BYTES..).unwrap_or_default().to_vec(), v))
        };
        if options.reverse {
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
    fn overlay_in(&self, range: &KeyRange) -> Writes {
        let mut state = self.state.borrow_mut();
        self.prune(&mut state);
        let mut view = Writes::new();
        let bounds = (
            range.lo.as_ref().map(Vec::as_slice),
            range.hi.as_ref().map(Vec::as_slice),
        );
        let layers = state.inflight.iter().map(|(_, w)| w).chain([&state.dirty]);
        for writes in layers {
            for (k, v) in writes.range::<[u8], _>(bounds) {
                if range.contains(k) {
                    view.insert(k.clone(), v.clone());
                }
            }
        }
        view
    }

    fn full_range(&self, range: &KeyRange) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
        let lo = match &range.lo {
            Bound::Included(k) => Bound::Included(self.full_key(k)),
            Bound::Excluded(k) => Bound::Excluded(self.full_key(k)),
            Bound::Unbounded => Bound::Included(self.prefix.as_bytes().to_vec()),
        };
        let hi = match &range.hi {
            Bound::Included(k) => Bound::Included(self.full_key(k)),
            Bound::Excluded(k) => Bound::Excluded(self.full_key(k)),
            Bound::Unbounded => match list::successor(self.prefix.as_bytes()) {
                Some(end) => Bound::Excluded(end),
                None => Bound::Unbounded,
            },
        };
        (lo, hi)
    }

    /// Whether writes are buffered that were not yet handed to the commit thread.
    pub fn has_unflushed(&self) -> bool {
        !self.state.borrow().dirty.is_empty()
    }

    /// Forgets the writes not yet handed to the commit thread (used when the
    /// object is reset after a panic). Handed-over batches still commit.
    pub fn discard_unflushed(&self) {
        self.state.borrow_mut().dirty.clear();
    }

    /// Hands the buffered writes to the commit thread as one atomic batch and
    /// returns the sequence number that [`ObjectStore::durable`] waits for.
    pub fn flush(&self) -> Result<u64> {
        let mut state = self.state.borrow_mut();
        if state.dirty.is_empty() {
            return Ok(state.submitted);
        }
        let writes = std::mem::take(&mut state.dirty);
        let seq = state.submitted + 1;
        let ops = writes
            .iter()
            .map(|(k, v)| (Slice::from(self.full_key(k)), v.clone()))
            .collect();
        self.store.submit(Commit {
            ops,
            seq,
            sync: self.sync.clone(),
        })?;
        state.submitted = seq;
        state.inflight.push_back((seq, writes));
        Ok(seq)
    }

    /// Resolves once batch `seq` (and every batch before it) is on disk.
    pub fn durable(&self, seq: u64) -> impl Future<Output = Result<()>> + 'static {
        let sync = self.sync.clone();
        async move {
            {
                let now = sync.durable.borrow();
                if now.seq >= seq {
                    return now.failed.clone().map_or(Ok(()), Err);
                }
            }
            let mut rx = sync.durable.subscribe();
            match rx.wait_for(|d| d.seq >= seq).await {
                Ok(d) => d.failed.clone().map_or(Ok(()), Err),
                Err(_) => Err(StorageError::Closed),
            }
        }
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

    /// Whether every batch handed over has been applied to the engine (nothing
    /// is buffered in memory that reads depend on).
    pub fn is_settled(&self) -> bool {
        let mut state = self.state.borrow_mut();
        self.prune(&mut state);
        state.dirty.is_empty() && state.inflight.is_empty()
    }
}

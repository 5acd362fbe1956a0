//! One object's view of the store: its keys under its object number, its
//! buffered writes, and the barrier that waits until they are durable.
//!
//! This file holds the view, its state, and the calls that buffer writes.
//! The rest of what a view does is in the files beside it:
//!
//! - `overlay.rs`: reads, which see the buffered writes over the engine's
//!   (and the values the view keeps, and the thread's cache);
//! - `flush.rs`: handing the buffered writes to the commit thread as one
//!   batch, with the object's alarm and registry entry;
//! - `alarms.rs`: the object's alarm, as the view sees it;
//! - `durability.rs`: waiting for durability, and releasing replies in
//!   order once what they reflect is durable (the output gate);
//! - `txns.rs`: what transactions need to know of the writes made under
//!   them.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use fjall::Slice;

use crate::alarm::Alarm;
use crate::cache::ValueCache;
use crate::committer::Release;
use crate::error::Result;
use crate::keys::{DataPrefix, ObjectPrefix};
use crate::limits;
use crate::list::ListOptions;
use crate::releases::Releases;
use crate::store::Store;
use crate::sync::ObjectSync;
use crate::writes::Writes;

mod alarms;
mod durability;
mod flush;
mod overlay;
mod txns;

use txns::TxnLog;
pub(crate) use txns::TxnWrites;

/// A merged view of buffered writes, or a transaction's own.
type WriteMap = BTreeMap<Slice, Option<Slice>>;

/// How many keys a view keeps the committed values of itself, and how large
/// a value may be to be kept so (see `State::own`).
const OWN_KEYS: usize = 8;
const OWN_VALUE_BYTES: usize = 1024;

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
/// let object = store.object(ObjectPrefix::new(1, [2; 16]));
/// object.put("a", b"1".to_vec(), true)?;
/// assert_eq!(object.get("a")?.as_deref(), Some(&b"1"[..]));
/// let durable = object.barrier(); // the batch is on its way to disk
/// # drop(durable);
/// # Ok(()) }
/// ```
pub struct ObjectStore {
    store: Store,
    prefix: ObjectPrefix,
    sync: Arc<ObjectSync>,
    cache: Option<ValueCache>,
    /// Where replies waiting for this view's writes are held, when not on
    /// the commit thread.
    releases: Option<Releases>,
    /// Where the object's data keys live, once looked up.
    number: Cell<Number>,
    state: RefCell<State>,
}

/// What a view knows of its object's number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Number {
    /// Not looked up yet.
    Unread,
    /// It has none: it never stored data, so the engine holds none of it.
    None,
    /// Its data keys start with this.
    Some(DataPrefix),
}

/// Whether the registry of objects lists the object (with its number, and
/// its name if known).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Registration {
    /// Not checked yet.
    #[default]
    Unknown,
    /// Written in batch `seq`, not yet known durable: written again with
    /// the next batch that stores something until it is.
    Pending(u64),
    /// On disk.
    Done,
}

#[derive(Default)]
struct State {
    /// Writes not yet handed to the commit thread.
    dirty: Writes,
    /// Whether `dirty` holds a write whose caller waits for it (not `allow_unconfirmed`).
    dirty_confirmed: bool,
    /// Releases waiting for the batch `dirty` will become.
    dirty_releases: Vec<Release>,
    /// Batches handed over but not yet applied to the engine, oldest first.
    inflight: VecDeque<(u64, Writes)>,
    /// Sequence number of the last batch handed over.
    submitted: u64,
    /// Sequence number of the last batch handed over that holds a confirmed write.
    last_confirmed: u64,
    /// What open transactions need to know of the writes made under them.
    txns: TxnLog,
    /// The alarm as of the last batch handed over; `None` until read.
    alarm_handed: Option<Option<Alarm>>,
    /// A change of the alarm not yet handed over.
    alarm_dirty: Option<Option<Alarm>>,
    /// Index entries of alarms that no longer exist, to remove.
    alarm_stale: Vec<u64>,
    /// The name the object's id was made from, if known.
    name: Option<String>,
    /// Whether the registry of objects lists this one.
    registration: Registration,
    /// The name was read back from a replicated log: the next flush
    /// registers it (see `restore_name`).
    renamed: bool,
    /// The committed values of up to [`OWN_KEYS`] keys this view wrote
    /// (each at most [`OWN_VALUE_BYTES`]), kept here rather than in the
    /// worker's cache: an object that rewrites the same few keys (a counter)
    /// then costs the cache nothing per write. While a key is here the
    /// cache does not hold it; they are dropped with the view (a view that
    /// outlived its object's eviction must not write old values into the
    /// cache over a newer view's). Only kept while the cache is enabled.
    /// Keys are `Slice`s, which hold short keys inline: finding one reads
    /// no other memory than this vector's.
    own: Vec<(Slice, Option<Slice>)>,
}

impl State {
    #[inline]
    fn is_clean(&self) -> bool {
        self.dirty.is_empty()
            && self.alarm_dirty.is_none()
            && self.alarm_stale.is_empty()
            && !self.renamed
    }
}

/// The views of a store. Here rather than in `store.rs`: the store knows
/// nothing of its views.
impl Store {
    /// The per-object view of the store for the object whose keys live under `prefix`.
    ///
    /// Keep one view per object at a time (the runtime does): a view of an
    /// object that has stored nothing remembers that, and does not see what
    /// another view of the same object writes after it looked.
    pub fn object(&self, prefix: ObjectPrefix) -> ObjectStore {
        ObjectStore::new(self.clone(), prefix, None, None)
    }

    /// Like [`Store::object`], reading through `cache` (the calling thread's).
    /// A cache serves one store: keys of objects in two stores may look alike.
    pub fn object_cached(&self, prefix: ObjectPrefix, cache: ValueCache) -> ObjectStore {
        ObjectStore::new(self.clone(), prefix, Some(cache), None)
    }

    /// Like [`Store::object_cached`], holding the replies that wait for the
    /// view's writes in `releases` (the calling thread's, whose
    /// [`Releases::run`] must be running there) rather than on the commit
    /// thread.
    pub fn object_on_thread(
        &self,
        prefix: ObjectPrefix,
        cache: ValueCache,
        releases: Releases,
    ) -> ObjectStore {
        // Another store's releases would wait for the wrong commit thread.
        let releases = releases.serve(self.commit_link()).then_some(releases);
        ObjectStore::new(self.clone(), prefix, Some(cache), releases)
    }
}

impl ObjectStore {
    pub(crate) fn new(
        store: Store,
        prefix: ObjectPrefix,
        cache: Option<ValueCache>,
        releases: Option<Releases>,
    ) -> Self {
        ObjectStore {
            store,
            prefix,
            sync: ObjectSync::new(prefix),
            cache,
            releases,
            number: Cell::new(Number::Unread),
            state: RefCell::new(State::default()),
        }
    }

    /// A new view of the same object, on the same cache and releases,
    /// sharing nothing else with this one. A write that failed to commit
    /// fails every later write of its view (they may build on it): once the
    /// object's memory is reset, it goes on with a new view.
    pub fn renewed(&self) -> ObjectStore {
        ObjectStore::new(
            self.store.clone(),
            self.prefix,
            self.cache.clone(),
            self.releases.clone(),
        )
    }

    /// The object's key prefix.
    pub fn prefix(&self) -> ObjectPrefix {
        self.prefix
    }

    /// Where the object's data keys live; `None` while it has stored none.
    #[inline]
    fn data_prefix(&self) -> Result<Option<DataPrefix>> {
        match self.number.get() {
            Number::Some(p) => Ok(Some(p)),
            Number::None => Ok(None),
            Number::Unread => {
                let found = self.store.object_number(&self.prefix)?.map(DataPrefix::of);
                self.number.set(found.map_or(Number::None, Number::Some));
                Ok(found)
            }
        }
    }

    /// Where the object's data keys live, giving it a number if it has none.
    #[inline]
    fn numbered(&self) -> Result<DataPrefix> {
        if let Some(p) = self.data_prefix()? {
            return Ok(p);
        }
        let p = DataPrefix::of(self.store.assign_object_number(&self.prefix)?);
        self.number.set(Number::Some(p));
        Ok(p)
    }

    /// Buffers one write (`None`: delete) and logs it for open transactions.
    fn write(&self, state: &mut State, key: Slice, value: Option<Slice>, confirm: bool) {
        state.txns.record(&key);
        state.dirty_confirmed |= confirm;
        state.dirty.insert(key, value);
    }

    /// Buffers a write of `value` under `key`. With `confirm`, the calling
    /// method's result waits until the write is durable; without, it does not
    /// (`allow_unconfirmed`).
    pub fn put(&self, key: &str, value: Vec<u8>, confirm: bool) -> Result<()> {
        limits::check_entry(key, &value)?;
        let mut state = self.state.borrow_mut();
        self.write(
            &mut state,
            Slice::from(key.as_bytes()),
            Some(Slice::from(value)),
            confirm,
        );
        Ok(())
    }

    /// Buffers the writes of every entry, or of none when one breaks a limit.
    pub fn put_many(&self, entries: Vec<(String, Vec<u8>)>, confirm: bool) -> Result<()> {
        limits::check_batch(entries.len())?;
        entries
            .iter()
            .try_for_each(|(k, v)| limits::check_entry(k, v))?;
        let mut state = self.state.borrow_mut();
        for (key, value) in entries {
            self.write(
                &mut state,
                Slice::from(key.as_bytes()),
                Some(Slice::from(value)),
                confirm,
            );
        }
        Ok(())
    }

    /// Buffers the removal of `key`; tells whether it existed.
    pub fn delete(&self, key: &str, confirm: bool) -> Result<bool> {
        Ok(self.delete_many(&[key], confirm)? == 1)
    }

    /// Buffers the removal of `keys`; tells how many distinct ones existed.
    pub fn delete_many(&self, keys: &[&str], confirm: bool) -> Result<usize> {
        limits::check_batch(keys.len())?;
        keys.iter().try_for_each(|k| limits::check_key(k))?;
        let mut existing = std::collections::BTreeSet::new();
        for key in keys {
            if self.lookup(key.as_bytes())?.is_some() {
                existing.insert(key.as_bytes().to_vec());
            }
        }
        let count = existing.len();
        let mut state = self.state.borrow_mut();
        for key in existing {
            self.write(&mut state, Slice::from(key), None, confirm);
        }
        Ok(count)
    }

    /// Buffers the removal of every key of this object, and of its alarm;
    /// tells how many keys there were.
    pub fn delete_all(&self, confirm: bool) -> Result<usize> {
        let keys = self.list(&ListOptions::new())?;
        let count = keys.len();
        if self.alarm()?.is_some() {
            self.set_alarm(None, confirm)?;
        }
        let mut state = self.state.borrow_mut();
        for (key, _) in keys {
            self.write(&mut state, Slice::from(key.as_bytes()), None, confirm);
        }
        Ok(count)
    }

    /// Marks this view's writes as read back from the store's replicated
    /// log: they are applied, not appended to the log again.
    pub fn restoring(&self) {
        self.sync
            .restoring
            .store(true, std::sync::atomic::Ordering::Release);
    }

    /// Records the name the object's id was made from, read back from the
    /// store's replicated log: the next flush writes it to the registry,
    /// if the object has stored data.
    pub fn restore_name(&self, name: &str) {
        let mut state = self.state.borrow_mut();
        state.name = Some(name.to_owned());
        state.registration = Registration::Unknown;
        state.renamed = true;
    }

    /// Records the name the object's id was made from, for listings.
    pub fn set_name(&self, name: &str) {
        self.state.borrow_mut().name = Some(name.to_owned());
    }

    /// Reads what the next call's storage work reads first (its batches in
    /// flight, the values it keeps, its durable watermark), so that a
    /// thread about to run many objects' calls can fetch their memory
    /// together. The value means nothing.
    #[doc(hidden)]
    pub fn warm_up(&self) -> u64 {
        let Ok(state) = self.state.try_borrow() else {
            return 0;
        };
        let first_inflight = state
            .inflight
            .front()
            .map_or(0, |(seq, w)| seq + w.len() as u64);
        let first_own = state.own.first().map_or(0, |(k, _)| k.len() as u64);
        self.sync.applied.load(Ordering::Relaxed) + first_inflight + first_own
    }
}

#[cfg(test)]
mod tests {
    use crate::{ListOptions, ObjectPrefix, ObjectStore, Store, StoreOptions};

    fn listed(object: &ObjectStore, options: ListOptions) -> Vec<String> {
        let entries = object.list(&options).expect("list");
        entries.into_iter().map(|(k, _)| k).collect()
    }

    fn keys(store: &Store, prefix: ObjectPrefix, options: ListOptions) -> Vec<String> {
        listed(&store.object(prefix), options)
    }

    /// Waits (polling) until every batch `object` handed over is applied.
    fn wait_applied(object: &ObjectStore) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while !object.is_settled() {
            assert!(std::time::Instant::now() < deadline, "never settled");
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    #[test]
    fn a_rewritten_key_is_read_from_the_view_not_the_cache_and_a_large_one_moves_to_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), StoreOptions::default()).expect("store");
        let cache = crate::ValueCache::new(1 << 20);
        let prefix = ObjectPrefix::new(1, [9; 16]);
        let object = store.object_cached(prefix, cache.clone());
        for n in 1..=3u8 {
            object.put("k", vec![n], true).expect("put");
            object.flush().expect("flush");
            wait_applied(&object);
            assert_eq!(object.get("k").expect("get").as_deref(), Some(&[n][..]));
        }
        let stats = cache.stats();
        assert_eq!(stats.entries, 0, "the view holds the value, the cache not");
        assert_eq!(stats.misses, 0, "every read answered from memory");
        assert_eq!(stats.hits, 3, "…and counted as a hit");
        // Grown past what the view keeps: the value moves to the cache.
        let big = vec![7u8; 4096];
        object.put("k", big.clone(), true).expect("put");
        object.flush().expect("flush");
        wait_applied(&object);
        assert_eq!(object.get("k").expect("get").as_deref(), Some(&big[..]));
        assert_eq!(cache.stats().entries, 1, "now in the cache");
        drop(object);
        // The next view of the object reads the last value, never an older one.
        let again = store.object_cached(prefix, cache.clone());
        assert_eq!(again.get("k").expect("get").as_deref(), Some(&big[..]));
    }

    #[test]
    fn listing_committed_keys_honours_every_option_and_sees_no_other_object() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mine, other) = (ObjectPrefix::new(1, [1; 16]), ObjectPrefix::new(1, [2; 16]));
        {
            let store = Store::open(dir.path(), StoreOptions::default()).expect("store");
            for (prefix, names) in [
                (mine, ["a1", "a2", "b1", "b2", "c1"]),
                (other, ["a0", "a3", "b0", "z", "zz"]),
            ] {
                let object = store.object(prefix);
                for name in names {
                    object
                        .put(name, name.as_bytes().to_vec(), true)
                        .expect("put");
                }
                object.flush().expect("flush");
            }
            store.close();
        }
        // Reopened: nothing buffered, every entry comes from the engine.
        let store = Store::open(dir.path(), StoreOptions::default()).expect("store");
        let all = || ListOptions::new();
        assert_eq!(keys(&store, mine, all()), ["a1", "a2", "b1", "b2", "c1"]);
        assert_eq!(
            keys(&store, mine, all().reverse(true)),
            ["c1", "b2", "b1", "a2", "a1"]
        );
        assert_eq!(
            keys(&store, mine, all().reverse(true).limit(2)),
            ["c1", "b2"]
        );
        assert_eq!(keys(&store, mine, all().prefix("b")), ["b1", "b2"]);
        assert_eq!(
            keys(&store, mine, all().prefix("a").reverse(true).limit(1)),
            ["a2"]
        );
        assert_eq!(
            keys(&store, mine, all().start_after("a2").end("c1")),
            ["b1", "b2"]
        );
        assert_eq!(keys(&store, mine, all().start("b2").limit(5)), ["b2", "c1"]);
        assert_eq!(keys(&store, other, all().start_after("z")), ["zz"]);
        // A buffered delete and put are merged over the engine's entries.
        let object = store.object(mine);
        object.delete("b1", true).expect("delete");
        object.put("b3", b"b3".to_vec(), true).expect("put");
        assert_eq!(listed(&object, all().prefix("b")), ["b2", "b3"]);
    }
}

//! One object's view of the store: its keys under its object number, its
//! buffered writes, and the barrier that waits until they are durable.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::ops::Bound;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use fjall::Slice;

use crate::alarm::Alarm;
use crate::cache::ValueCache;
use crate::committer::{Commit, Release};
use crate::error::{Result, StorageError};
use crate::keys::{DataPrefix, ObjectPrefix, Space};
use crate::limits;
use crate::list::{self, KeyRange, ListOptions};
use crate::releases::Releases;
use crate::store::Store;
use crate::sync::ObjectSync;

use crate::writes::Writes;

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
    /// Counts every key written, to tell transactions what changed under them.
    write_counter: u64,
    /// `(counter, key)` of the writes made while a transaction is open.
    write_log: Vec<(u64, Vec<u8>)>,
    /// Transactions open now.
    open_txns: usize,
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
    fn is_clean(&self) -> bool {
        self.dirty.is_empty() && self.alarm_dirty.is_none() && self.alarm_stale.is_empty()
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
            sync: ObjectSync::new(),
            cache,
            releases,
            number: Cell::new(Number::Unread),
            state: RefCell::new(State::default()),
        }
    }

    /// The object's key prefix.
    pub fn prefix(&self) -> ObjectPrefix {
        self.prefix
    }

    /// Where the object's data keys live; `None` while it has stored none.
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
    fn numbered(&self) -> Result<DataPrefix> {
        if let Some(p) = self.data_prefix()? {
            return Ok(p);
        }
        let p = DataPrefix::of(self.store.assign_object_number(&self.prefix)?);
        self.number.set(Number::Some(p));
        Ok(p)
    }

    /// Applied batches are now in the engine: their values move to the
    /// cache, which only ever holds committed values.
    fn prune(&self, state: &mut State) {
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

    /// Buffers one write (`None`: delete) and logs it for open transactions.
    fn write(&self, state: &mut State, key: Slice, value: Option<Slice>, confirm: bool) {
        state.write_counter += 1;
        if state.open_txns > 0 {
            state.write_log.push((state.write_counter, key.to_vec()));
        }
        state.dirty_confirmed |= confirm;
        state.dirty.insert(key, value);
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

    /// Records the name the object's id was made from, for listings.
    pub fn set_name(&self, name: &str) {
        self.state.borrow_mut().name = Some(name.to_owned());
    }

    /// The object's alarm, buffered changes included.
    pub fn alarm(&self) -> Result<Option<Alarm>> {
        let mut state = self.state.borrow_mut();
        if let Some(alarm) = state.alarm_dirty {
            return Ok(alarm);
        }
        if let Some(alarm) = state.alarm_handed {
            return Ok(alarm);
        }
        let stored = self.store.alarm_of(&self.prefix)?;
        state.alarm_handed = Some(stored);
        Ok(stored)
    }

    /// Buffers a change of the object's alarm (`None` deletes it); it is
    /// committed with the object's other writes.
    pub fn set_alarm(&self, alarm: Option<Alarm>, confirm: bool) -> Result<()> {
        self.alarm()?;
        let mut state = self.state.borrow_mut();
        state.alarm_dirty = Some(alarm);
        if confirm {
            state.dirty_confirmed = true;
        }
        Ok(())
    }

    /// Removes the index entry of an alarm due at `due_ms` that is not the
    /// object's alarm (any more): the scheduler found it and the object
    /// did not know it.
    pub fn forget_stale_alarm(&self, due_ms: u64) {
        self.state.borrow_mut().alarm_stale.push(due_ms);
    }

    /// The entries the options select, buffered writes included.
    pub fn list(&self, options: &ListOptions) -> Result<Vec<(String, Slice)>> {
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
                engine_entries(engine.rev(), skip, limit)
            } else {
                engine_entries(engine, skip, limit)
            };
        }
        let strip = |guard: fjall::Guard| -> Result<(Vec<u8>, Slice)> {
            let (k, v) = guard.into_inner()?;
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

    /// Whether writes are buffered that were not yet handed to the commit thread.
    pub fn has_unflushed(&self) -> bool {
        !self.state.borrow().is_clean()
    }

    /// Forgets the writes not yet handed to the commit thread (used when the
    /// object is reset after a panic). Handed-over batches still commit.
    pub fn discard_unflushed(&self) {
        drop_unflushed(self.state.borrow_mut(), StorageError::Discarded);
    }

    /// Hands the buffered writes to the commit thread as one atomic batch and
    /// returns the sequence number of the last batch handed over.
    pub fn flush(&self) -> Result<u64> {
        let mut state = self.state.borrow_mut();
        // Releases queue only behind a buffered confirmed write, so an
        // empty buffer has none waiting.
        if state.is_clean() {
            return Ok(state.submitted);
        }
        let seq = state.submitted + 1;
        let stores_something =
            state.dirty.values().any(Option::is_some) || matches!(state.alarm_dirty, Some(Some(_)));
        // Data needs the object's number; deletes alone do not give it one
        // (without a number it has nothing stored to delete).
        let numbering = if stores_something {
            self.numbered().map(Some)
        } else {
            self.data_prefix()
        };
        let numbering = numbering.and_then(|prefix| match (stores_something, prefix) {
            (true, Some(p)) => Ok((prefix, self.registration(&mut state, seq, p)?)),
            _ => Ok((prefix, None)),
        });
        let (prefix, register) = match numbering {
            Ok(found) => found,
            Err(e) => {
                // The batch cannot be handed over: it is dropped whole and
                // whoever waits for it is told, as if the commit had failed.
                drop_unflushed(state, e.clone());
                return Err(e);
            }
        };
        let writes = std::mem::take(&mut state.dirty);
        let ops = match prefix {
            Some(p) => writes
                .iter()
                .map(|(k, v)| (p.with_key(k, |full| Slice::from(full)), v.clone()))
                .collect(),
            None => crate::committer::Ops::default(),
        };
        let stale = std::mem::take(&mut state.alarm_stale);
        let mut extra = match state.alarm_dirty.take() {
            Some(new) => {
                let old = state.alarm_handed.flatten();
                state.alarm_handed = Some(new);
                crate::alarm::change(&self.prefix, old, new, &stale)
            }
            None => crate::alarm::change(&self.prefix, None, None, &stale),
        };
        if let Some((number, name)) = &register {
            extra.push((
                Space::Known,
                self.prefix.as_bytes().to_vec().into(),
                Some(crate::numbers::encode_known(*number, name)),
            ));
        }
        state.submitted = seq;
        if std::mem::take(&mut state.dirty_confirmed) {
            state.last_confirmed = seq;
        }
        state.inflight.push_back((seq, writes));
        let waiting = std::mem::take(&mut state.dirty_releases);
        // Held on this thread when it keeps its own; sent with the batch
        // to the commit thread otherwise.
        let (held, sent) = match &self.releases {
            Some(_) => (waiting, Vec::new()),
            None => (Vec::new(), waiting),
        };
        let commit = Commit {
            ops,
            extra,
            seq,
            sync: self.sync.clone(),
            releases: sent,
            registers: register.map(|(number, _)| Box::new((self.prefix, number))),
        };
        drop(state);
        if let Err(commit) = self.store.submit(commit) {
            // Nobody will commit this batch: fail whoever waits for it.
            let e = StorageError::Closed;
            self.sync.settle(seq, Some(&e));
            for release in commit.releases.into_iter().chain(held) {
                release(Err(e.clone()));
            }
            return Err(e);
        }
        if let Some(releases) = &self.releases {
            for release in held {
                releases.push(self.sync.clone(), seq, release);
            }
        }
        Ok(seq)
    }

    /// The registry entry batch `seq` must write, if any: until one is
    /// durable, every batch that stores something writes it again.
    fn registration(
        &self,
        state: &mut State,
        seq: u64,
        prefix: DataPrefix,
    ) -> Result<Option<(u64, String)>> {
        if let Registration::Pending(at) = state.registration
            && let Some(Ok(())) = self.sync.outcome(at)
        {
            state.registration = Registration::Done;
        }
        if state.registration == Registration::Done {
            return Ok(None);
        }
        let number = prefix.number();
        let name = state.name.clone().unwrap_or_default();
        if state.registration == Registration::Unknown {
            // One read per object lifetime: is it listed, with its name?
            if let Some(known) = self.store.known_name(&self.prefix)?
                && (known == name || name.is_empty())
            {
                state.registration = Registration::Done;
                return Ok(None);
            }
        }
        state.registration = Registration::Pending(seq);
        Ok(Some((number, name)))
    }

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

/// Up to `limit` entries of an engine range, their keys without the
/// object's `skip` prefix bytes.
fn engine_entries(
    range: impl Iterator<Item = fjall::Guard>,
    skip: usize,
    limit: usize,
) -> Result<Vec<(String, Slice)>> {
    let mut out = Vec::with_capacity(limit.min(1024));
    for guard in range.take(limit) {
        let (k, v) = guard.into_inner()?;
        out.push((list::key_string(k.get(skip..).unwrap_or_default())?, v));
    }
    Ok(out)
}

/// Drops the writes not yet handed over and tells their waiters `error`
/// (after letting go of the state, which a release may need).
fn drop_unflushed(mut state: std::cell::RefMut<'_, State>, error: StorageError) {
    state.dirty.clear();
    state.alarm_dirty = None;
    state.alarm_stale.clear();
    state.dirty_confirmed = false;
    let releases = std::mem::take(&mut state.dirty_releases);
    drop(state);
    for release in releases {
        release(Err(error.clone()));
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

/// What transactions need from the object's store.
impl ObjectStore {
    /// Opens a transaction; returns the write counter it starts from.
    pub(crate) fn txn_open(&self) -> u64 {
        let mut state = self.state.borrow_mut();
        state.open_txns += 1;
        state.write_counter
    }

    pub(crate) fn txn_close(&self) {
        let mut state = self.state.borrow_mut();
        state.open_txns = state.open_txns.saturating_sub(1);
        if state.open_txns == 0 {
            state.write_log.clear();
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

pub(crate) type TxnWrites = WriteMap;

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

//! Optimistic transactions over one object's store.
//!
//! A transaction buffers its writes privately and records what it read. At
//! commit, if any key it read (or any key inside a range it listed) was
//! written by someone else since it began, it reports a conflict and writes
//! nothing; the caller re-runs it. Otherwise its writes join the object's
//! buffer in one step, so they reach the disk in one atomic batch.

use std::cell::{Cell, RefCell};
use std::collections::BTreeSet;
use std::rc::Rc;

use fjall::Slice;

use crate::error::Result;
use crate::limits;
use crate::list::{self, KeyRange, ListOptions};
use crate::object::{ObjectStore, TxnWrites};

/// How a transaction ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnOutcome {
    /// Its writes are buffered and will commit atomically.
    Committed,
    /// Another write touched what it read; nothing was written. Run it again.
    Conflict,
    /// It called [`Txn::rollback`]; nothing was written.
    RolledBack,
}

/// One attempt of a transaction on one object.
///
/// ```
/// # fn main() -> Result<(), do_storage::StorageError> {
/// use std::rc::Rc;
/// use do_storage::{ObjectPrefix, Store, Txn, TxnOutcome};
/// let dir = tempfile::tempdir().unwrap();
/// let store = Store::open(dir.path(), Default::default())?;
/// let object = Rc::new(store.object(ObjectPrefix::new(0, [1; 16])));
///
/// let txn = Txn::begin(object.clone());
/// assert_eq!(txn.get("n")?, None);
/// object.put("n", b"other".to_vec(), true)?; // a write from elsewhere
/// txn.put("n", b"mine".to_vec())?;
/// assert_eq!(txn.commit(), TxnOutcome::Conflict);
/// # Ok(()) }
/// ```
pub struct Txn {
    store: Rc<ObjectStore>,
    start: u64,
    keys: RefCell<BTreeSet<Vec<u8>>>,
    ranges: RefCell<Vec<KeyRange>>,
    writes: RefCell<TxnWrites>,
    rolled_back: Cell<bool>,
    committed: Cell<bool>,
}

impl Txn {
    /// Begins a transaction on `store`.
    pub fn begin(store: Rc<ObjectStore>) -> Txn {
        let start = store.txn_open();
        Txn {
            store,
            start,
            keys: RefCell::default(),
            ranges: RefCell::default(),
            writes: RefCell::default(),
            rolled_back: Cell::new(false),
            committed: Cell::new(false),
        }
    }

    fn read(&self, key: &[u8]) -> Result<Option<Slice>> {
        if let Some(v) = self.writes.borrow().get(key) {
            return Ok(v.clone());
        }
        self.keys.borrow_mut().insert(key.to_vec());
        self.store.lookup(key)
    }

    /// The value of `key` as this transaction sees it.
    pub fn get(&self, key: &str) -> Result<Option<Slice>> {
        limits::check_key(key)?;
        self.read(key.as_bytes())
    }

    /// The values of those `keys` that exist, in key order.
    pub fn get_many(&self, keys: &[&str]) -> Result<Vec<(String, Slice)>> {
        limits::check_batch(keys.len())?;
        keys.iter().try_for_each(|k| limits::check_key(k))?;
        let mut found = std::collections::BTreeMap::new();
        for key in keys {
            if let Some(v) = self.read(key.as_bytes())? {
                found.insert((*key).to_owned(), v);
            }
        }
        Ok(found.into_iter().collect())
    }

    /// Buffers a write in the transaction.
    pub fn put(&self, key: &str, value: Vec<u8>) -> Result<()> {
        limits::check_entry(key, &value)?;
        self.writes
            .borrow_mut()
            .insert(Slice::from(key.as_bytes()), Some(Slice::from(value)));
        Ok(())
    }

    /// Buffers every entry, or none when one breaks a limit.
    pub fn put_many(&self, entries: Vec<(String, Vec<u8>)>) -> Result<()> {
        limits::check_batch(entries.len())?;
        entries
            .iter()
            .try_for_each(|(k, v)| limits::check_entry(k, v))?;
        let mut writes = self.writes.borrow_mut();
        for (k, v) in entries {
            writes.insert(Slice::from(k.as_bytes()), Some(Slice::from(v)));
        }
        Ok(())
    }

    /// Buffers the removal of `key`; tells whether it existed.
    pub fn delete(&self, key: &str) -> Result<bool> {
        Ok(self.delete_many(&[key])? == 1)
    }

    /// Buffers the removal of `keys`; tells how many distinct ones existed.
    pub fn delete_many(&self, keys: &[&str]) -> Result<usize> {
        limits::check_batch(keys.len())?;
        keys.iter().try_for_each(|k| limits::check_key(k))?;
        let mut existing = BTreeSet::new();
        for key in keys {
            if self.read(key.as_bytes())?.is_some() {
                existing.insert(key.as_bytes().to_vec());
            }
        }
        let count = existing.len();
        let mut writes = self.writes.borrow_mut();
        for key in existing {
            writes.insert(Slice::from(key), None);
        }
        Ok(count)
    }

    /// The entries `options` select, as this transaction sees them.
    pub fn list(&self, options: &ListOptions) -> Result<Vec<(String, Slice)>> {
        let range = options.bounds()?;
        self.ranges.borrow_mut().push(range.clone());
        let limit = options.limit.unwrap_or(usize::MAX);
        let local: Vec<(Slice, Option<Slice>)> = self
            .writes
            .borrow()
            .iter()
            .filter(|(k, _)| range.contains(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        // Each local delete can hide one stored entry: ask for that many more.
        let mut wider = options.clone();
        wider.limit = options.limit.map(|l| l.saturating_add(local.len()));
        let stored = self
            .store
            .list(&wider)?
            .into_iter()
            .map(|(k, v)| Ok((k.into_bytes(), v)));
        if options.reverse {
            list::merge(local.into_iter().rev(), stored, true, limit)
        } else {
            list::merge(local.into_iter(), stored, false, limit)
        }
    }

    /// Marks the transaction to be abandoned: it will write nothing and will
    /// not be re-run.
    pub fn rollback(&self) {
        self.rolled_back.set(true);
    }

    /// Whether [`Txn::rollback`] was called.
    pub fn is_rolled_back(&self) -> bool {
        self.rolled_back.get()
    }

    /// Ends the transaction: checks for conflicts and, when there is none,
    /// buffers its writes in the object's store in one step.
    /// Calling it again after a commit reports a conflict: its writes were
    /// taken by the first call.
    pub fn commit(&self) -> TxnOutcome {
        if self.rolled_back.get() {
            return TxnOutcome::RolledBack;
        }
        if self
            .store
            .txn_conflicts(self.start, &self.keys.borrow(), &self.ranges.borrow())
        {
            return TxnOutcome::Conflict;
        }
        if self.committed.replace(true) {
            return TxnOutcome::Conflict;
        }
        self.store
            .txn_apply(std::mem::take(&mut *self.writes.borrow_mut()));
        TxnOutcome::Committed
    }
}

impl Drop for Txn {
    fn drop(&mut self) {
        self.store.txn_close();
    }
}

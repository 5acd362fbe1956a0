//! The typed storage API an object sees: serde values, postcard-encoded.

use std::collections::BTreeMap;
use std::rc::Rc;

use std::future::Future;

use do_storage::{ObjectStore, Txn, TxnOutcome};
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use do_storage::ListOptions;

use crate::api::values::{
    StoredValue, decode_all, decode_bytes, decode_opt, encode, encode_all, encode_bytes, stored_all,
};
use crate::base::error::{Error, Result};

/// One object's private, transactional, durable key-value storage.
///
/// Keys are strings, ordered by their UTF-8 bytes; values are any serde type,
/// stored postcard-encoded. Reads see every earlier write of the object,
/// flushed or not. Writes need not be awaited: they are buffered, coalesced,
/// and committed as one atomic batch, and a method's result reaches its caller
/// only after every write the object made before it is on disk.
///
/// ```
/// use do_runtime::{durable_object, Ctx, Error};
///
/// pub struct Counter { ctx: Ctx }
///
/// #[durable_object]
/// impl Counter {
///     pub fn new(ctx: Ctx) -> Self { Self { ctx } }
///
///     pub async fn increment(&self, amount: i64) -> Result<i64, Error> {
///         let storage = self.ctx.storage();
///         let value = storage.get::<i64>("value").await?.unwrap_or(0) + amount;
///         storage.put("value", &value)?; // no await: the reply waits for the disk
///         Ok(value)
///     }
/// }
/// ```
#[derive(Clone)]
pub struct Storage {
    store: Rc<ObjectStore>,
    alarms: Option<AlarmHooks>,
}

/// What alarm methods need from the runtime.
#[derive(Clone)]
pub(crate) struct AlarmHooks {
    /// The class, if it has an `alarm` handler.
    pub class: String,
    pub has_handler: bool,
    pub scheduler: std::sync::Arc<crate::engine::alarms::Scheduler>,
}

/// Options of a single write.
///
/// ```
/// use do_runtime::WriteOptions;
/// let fire_and_forget = WriteOptions::new().allow_unconfirmed(true);
/// assert!(fire_and_forget.allow_unconfirmed);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WriteOptions {
    /// Let the calling method's result go out before this write is durable.
    /// The write still commits atomically with the object's other buffered
    /// writes; only the wait is skipped.
    pub allow_unconfirmed: bool,
}

impl WriteOptions {
    /// The default: the result waits for the write.
    pub fn new() -> Self {
        Self::default()
    }
    /// Sets [`WriteOptions::allow_unconfirmed`].
    pub fn allow_unconfirmed(mut self, allow: bool) -> Self {
        self.allow_unconfirmed = allow;
        self
    }
}

/// How many times `transaction` runs a closure that keeps conflicting.
pub const MAX_TRANSACTION_ATTEMPTS: u32 = 10;

impl Storage {
    pub(crate) fn new(store: Rc<ObjectStore>, alarms: Option<AlarmHooks>) -> Self {
        Storage { store, alarms }
    }

    /// The object's alarm: when it is due, if one is set.
    pub async fn get_alarm(&self) -> Result<Option<std::time::SystemTime>> {
        Ok(self
            .store
            .alarm()?
            .map(|a| std::time::UNIX_EPOCH + std::time::Duration::from_millis(a.due_ms)))
    }

    /// Sets the object's one alarm (replacing any other): its `alarm`
    /// handler runs at or after `at`, at least once, retried with backoff
    /// while it fails. Like `put`, it need not be awaited and commits with
    /// the object's other writes; the alarm survives restarts and wakes an
    /// evicted object. Use [`Ctx::now`](crate::Ctx::now) for the current
    /// time, so tests can move the clock.
    ///
    /// Fails with [`Error::Unsupported`] when the class has no `alarm` handler.
    pub fn set_alarm(&self, at: std::time::SystemTime) -> Result<()> {
        self.set_alarm_with(at, WriteOptions::new())
    }

    /// [`Storage::set_alarm`] with options.
    pub fn set_alarm_with(&self, at: std::time::SystemTime, options: WriteOptions) -> Result<()> {
        let hooks = self.alarm_hooks()?;
        self.store.set_alarm(
            Some(do_storage::Alarm {
                due_ms: crate::base::clock::millis(at),
                retries: 0,
            }),
            !options.allow_unconfirmed,
        )?;
        self.wake_after_commit(hooks);
        Ok(())
    }

    /// Removes the object's alarm, if any.
    pub fn delete_alarm(&self) -> Result<()> {
        self.delete_alarm_with(WriteOptions::new())
    }

    /// [`Storage::delete_alarm`] with options.
    pub fn delete_alarm_with(&self, options: WriteOptions) -> Result<()> {
        self.store.set_alarm(None, !options.allow_unconfirmed)?;
        Ok(())
    }

    fn alarm_hooks(&self) -> Result<&AlarmHooks> {
        match &self.alarms {
            Some(hooks) if hooks.has_handler => Ok(hooks),
            Some(hooks) => Err(Error::Unsupported(format!(
                "class {} has no `alarm` handler: add `pub async fn alarm(&self, info: AlarmInfo)`",
                hooks.class
            ))),
            None => Err(Error::Unsupported("alarms are not available here".into())),
        }
    }

    /// Tells the scheduler to look again once this alarm is on disk.
    fn wake_after_commit(&self, hooks: &AlarmHooks) {
        let scheduler = hooks.scheduler.clone();
        self.store
            .release_when_durable(Box::new(move |_| scheduler.wake()));
    }

    /// The object's store, for tools.
    pub(crate) fn object_store(&self) -> &ObjectStore {
        &self.store
    }

    /// The alarm with its retry count.
    pub(crate) fn raw_alarm(&self) -> Result<Option<do_storage::Alarm>> {
        Ok(self.store.alarm()?)
    }

    /// Sets (or removes) the alarm with its retry count.
    pub(crate) fn raw_set_alarm(&self, alarm: Option<do_storage::Alarm>) -> Result<()> {
        self.store.set_alarm(alarm, true)?;
        Ok(())
    }

    /// Forgets an index entry that is not the object's alarm.
    pub(crate) fn forget_stale_alarm(&self, due_ms: u64) {
        self.store.forget_stale_alarm(due_ms);
    }

    /// The value stored under `key`, or `None`.
    ///
    /// Fails with [`Error::ValueType`] when the stored value is not a `T`.
    /// Never yields to other calls: a read followed by a write in one method
    /// is atomic with respect to the object's other calls.
    pub async fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        decode_opt(key, self.store.get(key)?)
    }

    /// The values of those `keys` that exist (at most 128 keys), in key order.
    pub async fn get_many<T: DeserializeOwned>(
        &self,
        keys: &[&str],
    ) -> Result<BTreeMap<String, T>> {
        decode_all(self.store.get_many(keys)?).map(|v| v.into_iter().collect())
    }

    /// Stores `value` under `key`. Returns at once; the write is durable
    /// before the calling method's result reaches its caller.
    ///
    /// Fails, writing nothing, when the key or the encoded value is too large.
    pub fn put<T: Serialize + ?Sized>(&self, key: &str, value: &T) -> Result<()> {
        self.put_with(key, value, WriteOptions::new())
    }

    /// [`Storage::put`] with options.
    pub fn put_with<T: Serialize + ?Sized>(
        &self,
        key: &str,
        value: &T,
        options: WriteOptions,
    ) -> Result<()> {
        Ok(self
            .store
            .put(key, encode(value)?, !options.allow_unconfirmed)?)
    }

    /// Stores every entry (at most 128), atomically: all or none.
    pub fn put_many<K: AsRef<str>, T: Serialize>(&self, entries: &[(K, T)]) -> Result<()> {
        self.put_many_with(entries, WriteOptions::new())
    }

    /// [`Storage::put_many`] with options.
    pub fn put_many_with<K: AsRef<str>, T: Serialize>(
        &self,
        entries: &[(K, T)],
        options: WriteOptions,
    ) -> Result<()> {
        Ok(self
            .store
            .put_many(encode_all(entries)?, !options.allow_unconfirmed)?)
    }

    /// Removes `key`; tells whether it existed.
    pub async fn delete(&self, key: &str) -> Result<bool> {
        self.delete_with(key, WriteOptions::new()).await
    }

    /// [`Storage::delete`] with options.
    pub async fn delete_with(&self, key: &str, options: WriteOptions) -> Result<bool> {
        Ok(self.store.delete(key, !options.allow_unconfirmed)?)
    }

    /// Removes `keys` (at most 128); tells how many of them existed.
    pub async fn delete_many(&self, keys: &[&str]) -> Result<usize> {
        self.delete_many_with(keys, WriteOptions::new()).await
    }

    /// [`Storage::delete_many`] with options.
    pub async fn delete_many_with(&self, keys: &[&str], options: WriteOptions) -> Result<usize> {
        Ok(self.store.delete_many(keys, !options.allow_unconfirmed)?)
    }

    /// Removes every key of this object, and its alarm. Other objects are
    /// untouched.
    pub async fn delete_all(&self) -> Result<()> {
        self.delete_all_with(WriteOptions::new()).await
    }

    /// [`Storage::delete_all`] with options.
    pub async fn delete_all_with(&self, options: WriteOptions) -> Result<()> {
        self.store.delete_all(!options.allow_unconfirmed)?;
        Ok(())
    }

    /// Stores the raw `bytes` under `key`, as given: no serde, no framing;
    /// [`Storage::get_bytes`] gives back the same bytes. Like `put`, it
    /// need not be awaited and commits with the object's other writes.
    /// Reading the key with `get::<T>` (or listing it with `list::<T>`) is
    /// [`Error::ValueType`], naming the key.
    ///
    /// ```no_run
    /// # async fn f(storage: &do_runtime::Storage) -> Result<(), do_runtime::Error> {
    /// storage.put_bytes("avatar.png", b"\x89PNG...".to_vec())?;
    /// assert_eq!(storage.get_bytes("avatar.png").await?.as_deref(), Some(&b"\x89PNG..."[..]));
    /// # Ok(()) }
    /// ```
    pub fn put_bytes(&self, key: &str, bytes: impl AsRef<[u8]>) -> Result<()> {
        self.put_bytes_with(key, bytes, WriteOptions::new())
    }

    /// [`Storage::put_bytes`] with options.
    pub fn put_bytes_with(
        &self,
        key: &str,
        bytes: impl AsRef<[u8]>,
        options: WriteOptions,
    ) -> Result<()> {
        Ok(self.store.put(
            key,
            encode_bytes(bytes.as_ref()),
            !options.allow_unconfirmed,
        )?)
    }

    /// The raw bytes stored under `key` with `put_bytes`, or `None`. A key
    /// holding a serde value (written with `put`) is [`Error::ValueType`].
    pub async fn get_bytes(&self, key: &str) -> Result<Option<Vec<u8>>> {
        decode_bytes(key, self.store.get(key)?)
    }

    /// The keys `options` select, in key order (descending with
    /// `reverse`), without reading or decoding their values: for objects
    /// whose keys hold values of several types, or to count and page.
    pub async fn list_keys(&self, options: ListOptions) -> Result<Vec<String>> {
        Ok(self.store.list_keys(&options)?)
    }

    /// The entries `options` select, undecoded: each value as a
    /// [`StoredValue`], serialized or raw bytes, to decode as each key needs.
    pub async fn list_raw(&self, options: ListOptions) -> Result<Vec<(String, StoredValue)>> {
        stored_all(self.store.list(&options)?)
    }

    /// The entries `options` select, in key order (descending with `reverse`).
    ///
    /// ```no_run
    /// # async fn f(storage: &do_runtime::Storage) -> Result<(), do_runtime::Error> {
    /// use do_runtime::ListOptions;
    /// let recent = storage
    ///     .list::<String>(ListOptions::new().prefix("msg:").reverse(true).limit(10))
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn list<T: DeserializeOwned>(
        &self,
        options: ListOptions,
    ) -> Result<Vec<(String, T)>> {
        decode_all(self.store.list(&options)?)
    }

    /// Resolves when every earlier write of this object is on disk.
    pub async fn sync(&self) -> Result<()> {
        Ok(self.store.barrier().await?)
    }

    /// Runs `body` as one transaction: everything it writes commits together
    /// or not at all.
    ///
    /// When another call of this object writes a key the transaction read (or
    /// a key inside a range it listed) while the transaction is suspended at
    /// an await, the transaction's writes are dropped and `body` runs again,
    /// up to [`MAX_TRANSACTION_ATTEMPTS`] times, then
    /// [`Error::TransactionConflict`]. Work outside storage inside `body` may
    /// therefore run more than once. [`Transaction::rollback`] abandons it
    /// without re-running; an error returned by `body` abandons it and reaches
    /// the caller unchanged.
    ///
    /// ```no_run
    /// # async fn f(storage: &do_runtime::Storage) -> Result<(), do_runtime::Error> {
    /// let moved = storage
    ///     .transaction(|txn| async move {
    ///         let from: i64 = txn.get("alice").await?.unwrap_or(0);
    ///         if from < 10 {
    ///             txn.rollback();
    ///             return Ok(false);
    ///         }
    ///         let to: i64 = txn.get("bob").await?.unwrap_or(0);
    ///         txn.put("alice", &(from - 10))?;
    ///         txn.put("bob", &(to + 10))?;
    ///         Ok::<_, do_runtime::Error>(true)
    ///     })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn transaction<F, Fut, T, E>(&self, mut body: F) -> Result<T, E>
    where
        F: FnMut(Transaction) -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: From<Error>,
    {
        for _ in 0..MAX_TRANSACTION_ATTEMPTS {
            let txn = Rc::new(Txn::begin(self.store.clone()));
            let alarm = Rc::new(std::cell::Cell::new(None));
            let value = body(Transaction {
                txn: txn.clone(),
                storage: self.clone(),
                alarm: alarm.clone(),
            })
            .await?;
            match txn.commit() {
                TxnOutcome::Committed => {
                    // In the same step as the writes, so in their batch.
                    match alarm.take() {
                        Some(Some(at)) => self.set_alarm(at).map_err(E::from)?,
                        Some(None) => self.delete_alarm().map_err(E::from)?,
                        None => {}
                    }
                    return Ok(value);
                }
                TxnOutcome::RolledBack => return Ok(value),
                TxnOutcome::Conflict => continue,
            }
        }
        Err(E::from(Error::TransactionConflict {
            attempts: MAX_TRANSACTION_ATTEMPTS,
        }))
    }
}

/// The view of storage inside [`Storage::transaction`]: reads see the
/// transaction's own writes; writes stay private until it commits.
#[derive(Clone)]
pub struct Transaction {
    txn: Rc<Txn>,
    storage: Storage,
    /// The alarm change to commit with the writes: `Some(None)` deletes it.
    alarm: Rc<std::cell::Cell<Option<Option<std::time::SystemTime>>>>,
}

impl Transaction {
    /// The value of `key` as this transaction sees it.
    pub async fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        decode_opt(key, self.txn.get(key)?)
    }

    /// The values of those `keys` that exist (at most 128), in key order.
    pub async fn get_many<T: DeserializeOwned>(
        &self,
        keys: &[&str],
    ) -> Result<BTreeMap<String, T>> {
        decode_all(self.txn.get_many(keys)?).map(|v| v.into_iter().collect())
    }

    /// Writes `value` under `key` when the transaction commits.
    pub fn put<T: Serialize + ?Sized>(&self, key: &str, value: &T) -> Result<()> {
        Ok(self.txn.put(key, encode(value)?)?)
    }

    /// Writes every entry (at most 128) when the transaction commits.
    pub fn put_many<K: AsRef<str>, T: Serialize>(&self, entries: &[(K, T)]) -> Result<()> {
        Ok(self.txn.put_many(encode_all(entries)?)?)
    }

    /// Removes `key` when the transaction commits; tells whether it exists now.
    pub async fn delete(&self, key: &str) -> Result<bool> {
        Ok(self.txn.delete(key)?)
    }

    /// Removes `keys` when the transaction commits; tells how many exist now.
    pub async fn delete_many(&self, keys: &[&str]) -> Result<usize> {
        Ok(self.txn.delete_many(keys)?)
    }

    /// The entries `options` select, as this transaction sees them.
    pub async fn list<T: DeserializeOwned>(
        &self,
        options: ListOptions,
    ) -> Result<Vec<(String, T)>> {
        decode_all(self.txn.list(&options)?)
    }

    /// Stores raw `bytes` under `key` when the transaction commits (see
    /// [`Storage::put_bytes`]).
    pub fn put_bytes(&self, key: &str, bytes: impl AsRef<[u8]>) -> Result<()> {
        Ok(self.txn.put(key, encode_bytes(bytes.as_ref()))?)
    }

    /// The raw bytes of `key` as this transaction sees them (see
    /// [`Storage::get_bytes`]).
    pub async fn get_bytes(&self, key: &str) -> Result<Option<Vec<u8>>> {
        decode_bytes(key, self.txn.get(key)?)
    }

    /// The keys `options` select, as this transaction sees them.
    pub async fn list_keys(&self, options: ListOptions) -> Result<Vec<String>> {
        Ok(self
            .txn
            .list(&options)?
            .into_iter()
            .map(|(key, _)| key)
            .collect())
    }

    /// The entries `options` select, undecoded, as this transaction sees them.
    pub async fn list_raw(&self, options: ListOptions) -> Result<Vec<(String, StoredValue)>> {
        stored_all(self.txn.list(&options)?)
    }

    /// Sets the object's alarm when the transaction commits (and not if it
    /// rolls back or runs again); see [`Storage::set_alarm`].
    pub fn set_alarm(&self, at: std::time::SystemTime) -> Result<()> {
        self.storage.alarm_hooks()?;
        self.alarm.set(Some(Some(at)));
        Ok(())
    }

    /// Removes the object's alarm when the transaction commits.
    pub fn delete_alarm(&self) -> Result<()> {
        self.alarm.set(Some(None));
        Ok(())
    }

    /// The object's alarm as this transaction sees it: its own change, if
    /// it made one, or the stored alarm.
    pub async fn get_alarm(&self) -> Result<Option<std::time::SystemTime>> {
        match self.alarm.get() {
            Some(change) => Ok(change),
            None => self.storage.get_alarm().await,
        }
    }

    /// Abandons the transaction: nothing it wrote will be stored, and it is
    /// not re-run. The closure's result is still returned.
    pub fn rollback(&self) {
        self.txn.rollback();
    }
}

impl std::fmt::Debug for Transaction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transaction")
            .field("rolled_back", &self.txn.is_rolled_back())
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Storage").finish_non_exhaustive()
    }
}

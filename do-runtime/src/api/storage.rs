//! The typed storage API an object sees: serde values, postcard-encoded.

use std::collections::BTreeMap;
use std::rc::Rc;

use std::future::Future;

use do_storage::{ObjectStore, Slice, Txn, TxnOutcome};
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use do_storage::ListOptions;

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
        let hooks = self.alarm_hooks()?;
        self.store.set_alarm(
            Some(do_storage::Alarm {
                due_ms: crate::base::clock::millis(at),
                retries: 0,
            }),
            true,
        )?;
        self.wake_after_commit(hooks);
        Ok(())
    }

    /// Removes the object's alarm, if any.
    pub fn delete_alarm(&self) -> Result<()> {
        self.store.set_alarm(None, true)?;
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
        Ok(self.store.delete_many(keys, true)?)
    }

    /// Removes every key of this object. Other objects are untouched.
    pub async fn delete_all(&self) -> Result<()> {
        self.store.delete_all(true)?;
        Ok(())
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
            let value = body(Transaction { txn: txn.clone() }).await?;
            match txn.commit() {
                TxnOutcome::Committed | TxnOutcome::RolledBack => return Ok(value),
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

fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>> {
    postcard::to_allocvec(value).map_err(|e| Error::Codec(format!("cannot encode a value: {e}")))
}

fn encode_all<K: AsRef<str>, T: Serialize>(entries: &[(K, T)]) -> Result<Vec<(String, Vec<u8>)>> {
    entries
        .iter()
        .map(|(k, v)| Ok((k.as_ref().to_owned(), encode(v)?)))
        .collect()
}

fn decode_opt<T: DeserializeOwned>(key: &str, value: Option<Slice>) -> Result<Option<T>> {
    value.map(|bytes| decode(key, &bytes)).transpose()
}

fn decode_all<T: DeserializeOwned>(entries: Vec<(String, Slice)>) -> Result<Vec<(String, T)>> {
    entries
        .into_iter()
        .map(|(k, v)| decode(&k, &v).map(|v| (k, v)))
        .collect()
}

/// Decodes a stored value, insisting that the whole value is consumed: postcard
/// is not self-describing, so leftover bytes are the surest sign of a value
/// read as the wrong type.
fn decode<T: DeserializeOwned>(key: &str, bytes: &Slice) -> Result<T> {
    let wrong = |message: String| Error::ValueType {
        key: key.to_owned(),
        type_name: std::any::type_name::<T>().to_owned(),
        message,
    };
    match postcard::take_from_bytes(bytes) {
        Ok((value, [])) => Ok(value),
        Ok((_, rest)) => Err(wrong(format!(
            "{} bytes left over after decoding",
            rest.len()
        ))),
        Err(e) => Err(wrong(e.to_string())),
    }
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Storage").finish_non_exhaustive()
    }
}

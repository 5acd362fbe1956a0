//! The typed storage API an object sees: serde values, postcard-encoded.

use std::collections::BTreeMap;
use std::rc::Rc;

use do_storage::{ObjectStore, Slice};
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use do_storage::ListOptions;

use crate::error::{Error, Result};

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
}

impl Storage {
    pub(crate) fn new(store: Rc<ObjectStore>) -> Self {
        Storage { store }
    }

    /// The value stored under `key`, or `None`.
    ///
    /// Fails with [`Error::ValueType`] when the stored value is not a `T`.
    pub async fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        match self.store.get(key)? {
            Some(bytes) => decode(key, &bytes).map(Some),
            None => Ok(None),
        }
    }

    /// The values of those `keys` that exist (at most 128 keys), in key order.
    pub async fn get_many<T: DeserializeOwned>(
        &self,
        keys: &[&str],
    ) -> Result<BTreeMap<String, T>> {
        self.store
            .get_many(keys)?
            .into_iter()
            .map(|(k, v)| decode(&k, &v).map(|v| (k, v)))
            .collect()
    }

    /// Stores `value` under `key`. Returns at once; the write is durable
    /// before the calling method's result reaches its caller.
    ///
    /// Fails, writing nothing, when the key or the encoded value is too large.
    pub fn put<T: Serialize + ?Sized>(&self, key: &str, value: &T) -> Result<()> {
        self.store.put(key, encode(value)?)?;
        Ok(())
    }

    /// Stores every entry (at most 128), atomically: all or none.
    pub fn put_many<K: AsRef<str>, T: Serialize>(&self, entries: &[(K, T)]) -> Result<()> {
        let encoded = entries
            .iter()
            .map(|(k, v)| Ok((k.as_ref().to_owned(), encode(v)?)))
            .collect::<Result<Vec<_>>>()?;
        self.store.put_many(encoded)?;
        Ok(())
    }

    /// Removes `key`; tells whether it existed.
    pub async fn delete(&self, key: &str) -> Result<bool> {
        Ok(self.store.delete(key)?)
    }

    /// Removes `keys` (at most 128); tells how many of them existed.
    pub async fn delete_many(&self, keys: &[&str]) -> Result<usize> {
        Ok(self.store.delete_many(keys)?)
    }

    /// Removes every key of this object. Other objects are untouched.
    pub async fn delete_all(&self) -> Result<()> {
        Ok(self.store.delete_all()?)
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
        self.store
            .list(&options)?
            .into_iter()
            .map(|(k, v)| decode(&k, &v).map(|v| (k, v)))
            .collect()
    }

    /// Resolves when every earlier write of this object is on disk.
    pub async fn sync(&self) -> Result<()> {
        Ok(self.store.barrier().await?)
    }
}

fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>> {
    postcard::to_allocvec(value).map_err(|e| Error::Codec(format!("cannot encode a value: {e}")))
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

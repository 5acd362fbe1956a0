//! Object numbers: how an object gets the store-wide number its data keys
//! start with.
//!
//! An object is named by an 18-byte [`ObjectPrefix`] (namespace, id), but
//! its data keys start with the short [`DataPrefix`](crate::keys::DataPrefix)
//! of a number given to it at its first write (why: see there).
//!
//! The registry of objects (`known` keyspace: prefix → number and name) is
//! written in the same atomic batch as the object's first data, so data
//! never exists without its number on disk. A number handed out but not yet
//! committed is remembered here (`pending`) so every view of the object
//! agrees on it; the commit thread forgets it once the registry entry is
//! applied. The next free number is stored in the `meta` keyspace, raised
//! by the commit thread in the batch that uses a number, so numbers are
//! never reused after a restart.

use std::collections::HashMap;
use std::sync::Mutex;

use fjall::{Keyspace, Slice};

use crate::error::{Result, StorageError};
use crate::keys::{NEXT_KEY, ObjectPrefix};

/// A registry entry's value: the number (8 bytes, big-endian), then the
/// name the id was made from (empty when unknown).
pub(crate) fn encode_known(number: u64, name: &str) -> Slice {
    let mut value = Vec::with_capacity(8 + name.len());
    value.extend_from_slice(&number.to_be_bytes());
    value.extend_from_slice(name.as_bytes());
    value.into()
}

/// The number and name of a registry entry.
pub(crate) fn decode_known(value: &[u8]) -> Result<(u64, String)> {
    let number: [u8; 8] = value
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| StorageError::Engine("an entry of the object registry is damaged".into()))?;
    let name = String::from_utf8_lossy(value.get(8..).unwrap_or_default()).into_owned();
    Ok((u64::from_be_bytes(number), name))
}

/// Reads the next free number as stored in `meta` (1 in a new store).
pub(crate) fn stored_next(meta: &Keyspace) -> Result<u64> {
    match meta.get(NEXT_KEY)? {
        None => Ok(1),
        Some(v) => v
            .as_ref()
            .try_into()
            .map(u64::from_be_bytes)
            .map_err(|_| StorageError::Engine("the next object number is damaged".into())),
    }
}

/// Hands out object numbers; shared by the store and its commit thread.
#[derive(Debug)]
pub(crate) struct Numbers {
    inner: Mutex<Pending>,
}

#[derive(Debug)]
struct Pending {
    next: u64,
    /// Numbers handed out whose registry entry is not yet applied.
    by_prefix: HashMap<ObjectPrefix, u64>,
}

impl Numbers {
    pub fn new(next: u64) -> Self {
        Numbers {
            inner: Mutex::new(Pending {
                next: next.max(1),
                by_prefix: HashMap::new(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The object's number, if it has one (committed or handed out).
    ///
    /// Pending first, then the registry: the commit thread applies a
    /// registry entry before it forgets the pending number, so a number
    /// handed out before this call is seen in one of the two.
    pub fn get(&self, known: &Keyspace, prefix: &ObjectPrefix) -> Result<Option<u64>> {
        if let Some(n) = self.lock().by_prefix.get(prefix) {
            return Ok(Some(*n));
        }
        match known.get(prefix.as_bytes())? {
            Some(value) => Ok(Some(decode_known(&value)?.0)),
            None => Ok(None),
        }
    }

    /// The object's number, handing out a new one when it has none. The
    /// registry is read under the lock (once per object's first write), so
    /// two views never hand out two numbers.
    pub fn get_or_assign(&self, known: &Keyspace, prefix: &ObjectPrefix) -> Result<u64> {
        let mut pending = self.lock();
        if let Some(n) = pending.by_prefix.get(prefix) {
            return Ok(*n);
        }
        if let Some(value) = known.get(prefix.as_bytes())? {
            return Ok(decode_known(&value)?.0);
        }
        let n = pending.next;
        pending.next = n.checked_add(1).ok_or_else(|| {
            StorageError::Engine("this store has handed out every object number".into())
        })?;
        pending.by_prefix.insert(*prefix, n);
        Ok(n)
    }

    /// The registry entries of these objects are applied: forget them here.
    /// Takes the lock only when there is something to forget.
    pub fn applied(&self, prefixes: impl Iterator<Item = ObjectPrefix>) {
        let mut prefixes = prefixes.peekable();
        if prefixes.peek().is_none() {
            return;
        }
        let mut pending = self.lock();
        for prefix in prefixes {
            pending.by_prefix.remove(&prefix);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ListOptions, Store, StoreOptions};

    fn open(dir: &std::path::Path) -> Store {
        Store::open(dir, StoreOptions::default()).expect("store opens")
    }

    /// The engine's data keys, in order.
    fn data_keys(store: &Store) -> Vec<Vec<u8>> {
        store
            .data()
            .iter()
            .map(|g| g.key().expect("key").to_vec())
            .filter(|k| !k.starts_with(crate::highwater::CHAIN))
            .collect()
    }

    fn value(store: &Store, prefix: ObjectPrefix, key: &str) -> Option<Vec<u8>> {
        let object = store.object(prefix);
        object.get(key).expect("get").map(|v| v.to_vec())
    }

    #[test]
    fn data_keys_carry_the_objects_short_number_and_numbers_survive_a_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (a, b, c) = (
            ObjectPrefix::new(3, [0xAA; 16]),
            ObjectPrefix::new(3, [0xBB; 16]),
            ObjectPrefix::new(4, [0xCC; 16]),
        );
        {
            let store = open(dir.path());
            for (prefix, v) in [(a, b"a"), (b, b"b")] {
                let object = store.object(prefix);
                object.put("count", v.to_vec(), true).expect("put");
                object.flush().expect("flush");
            }
            store.close();
            let keys = data_keys(&store);
            assert_eq!(keys, [b"\x01\x01count".to_vec(), b"\x01\x02count".to_vec()]);
        }
        let store = open(dir.path());
        assert_eq!(value(&store, a, "count").as_deref(), Some(&b"a"[..]));
        assert_eq!(value(&store, b, "count").as_deref(), Some(&b"b"[..]));
        // A new object after the restart gets a number never used before.
        let object = store.object(c);
        object.put("count", b"c".to_vec(), true).expect("put");
        object.flush().expect("flush");
        store.close();
        assert_eq!(store.object_number(&c), Ok(Some(3)));
        assert_eq!(value(&store, a, "count").as_deref(), Some(&b"a"[..]));
        assert_eq!(store.known_name(&a), Ok(Some(String::new())));
    }

    #[test]
    fn two_views_of_one_object_share_its_number_before_it_is_on_disk() {
        let dir = tempfile::tempdir().expect("tempdir");
        let prefix = ObjectPrefix::new(0, [1; 16]);
        {
            let store = open(dir.path());
            let (one, two) = (store.object(prefix), store.object(prefix));
            one.put("x", b"1".to_vec(), true).expect("put");
            one.flush().expect("flush");
            two.put("y", b"2".to_vec(), true).expect("put");
            two.flush().expect("flush");
            store.close();
        }
        let store = open(dir.path());
        let keys: Vec<String> = store
            .object(prefix)
            .list(&ListOptions::new())
            .expect("list")
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(keys, ["x", "y"]);
        assert_eq!(store.object_number(&prefix), Ok(Some(1)));
    }

    #[test]
    fn deletes_alone_give_no_number_and_store_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(dir.path());
        let prefix = ObjectPrefix::new(0, [2; 16]);
        let object = store.object(prefix);
        assert_eq!(object.delete_many(&["a", "b"], true), Ok(0));
        object.put("a", b"1".to_vec(), true).expect("put");
        assert_eq!(object.delete("a", true), Ok(true));
        object.flush().expect("flush");
        store.close();
        assert_eq!(store.object_number(&prefix), Ok(None));
        assert_eq!(store.has_data(&prefix), Ok(false));
        assert!(data_keys(&store).is_empty());
    }

    #[test]
    fn a_batch_that_cannot_get_its_number_fails_its_waiters_and_is_dropped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(dir.path());
        let prefix = ObjectPrefix::new(0, [3; 16]);
        // A damaged registry entry: too short to hold a number.
        store
            .known()
            .insert(prefix.as_bytes(), [1u8, 2])
            .expect("insert");
        let object = store.object(prefix);
        object.put("a", b"1".to_vec(), true).expect("put");
        let told = std::sync::Arc::new(std::sync::Mutex::new(None));
        let tell = told.clone();
        object.release_when_durable(Box::new(move |outcome| {
            *tell.lock().expect("lock") = Some(outcome);
        }));
        let flushed = object.flush();
        assert!(
            matches!(flushed, Err(StorageError::Engine(_))),
            "{flushed:?}"
        );
        let outcome = told.lock().expect("lock").take();
        assert!(
            matches!(outcome, Some(Err(StorageError::Engine(_)))),
            "the waiter was told: {outcome:?}"
        );
        assert!(!object.has_unflushed(), "the batch was dropped whole");
        // The dropped write is not read back; the damage is reported instead.
        assert!(matches!(object.get("a"), Err(StorageError::Engine(_))));
    }

    /// A directory holding one entry written straight into fjall.
    fn raw_dir(keyspace: &str, key: &[u8], value: &[u8]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = fjall::Database::builder(dir.path()).open().expect("fjall");
        let space = db
            .keyspace(keyspace, fjall::KeyspaceCreateOptions::default)
            .expect("keyspace");
        space.insert(key, value).expect("insert");
        db.persist(fjall::PersistMode::SyncAll).expect("persist");
        dir
    }

    #[test]
    fn a_directory_in_another_storage_format_is_refused_and_left_as_it_was() {
        // Format 1: data keyed by the 18-byte prefix, no format mark.
        let dir = raw_dir("objects", &[0u8; 20], b"old");
        let refused = Store::open(dir.path(), StoreOptions::default()).map(|_| ());
        assert_eq!(
            refused,
            Err(StorageError::UnsupportedFormat {
                found: 1,
                supported: u32::from(crate::keys::FORMAT)
            })
        );
        // Refusing wrote nothing: the same answer again.
        let again = Store::open(dir.path(), StoreOptions::default()).map(|_| ());
        assert_eq!(again, refused);
        // A format from the future is refused too.
        let newer = raw_dir("meta", b"storage-format\0", &[9u8]);
        let refused = Store::open(newer.path(), StoreOptions::default()).map(|_| ());
        assert_eq!(
            refused,
            Err(StorageError::UnsupportedFormat {
                found: 9,
                supported: u32::from(crate::keys::FORMAT)
            })
        );
    }

    #[test]
    fn a_registry_entry_round_trips_and_a_damaged_one_is_an_error() {
        let v = encode_known(300, "room-1");
        assert_eq!(decode_known(&v), Ok((300, "room-1".to_owned())));
        assert_eq!(decode_known(&encode_known(7, "")), Ok((7, String::new())));
        assert!(matches!(
            decode_known(&[1, 2, 3]),
            Err(StorageError::Engine(_))
        ));
    }
}

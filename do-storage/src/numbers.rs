//! Object numbers: the short prefix an object's data keys carry in the
//! engine.
//!
//! An object is named by an 18-byte [`ObjectPrefix`] (namespace, id), but
//! its data keys start with a store-wide number given to it at its first
//! write, in a self-delimiting form of 2–9 bytes (2–4 for the first 16
//! million objects). Short keys stay inside the engine's 20-byte inline
//! key, so comparing, copying and dropping them follows no pointer: the
//! commit thread's memtable inserts and every listed entry are cheaper.
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
use crate::object::ObjectPrefix;

/// `meta` key of the next free object number (8 bytes, big-endian).
pub(crate) const NEXT_KEY: &[u8] = b"object-number-next\0";

/// The longest [`DataPrefix`]: a length byte and eight number bytes.
const MAX_PREFIX: usize = 9;

/// The bytes every data key of one object starts with: the number of bytes
/// that follow, then the object's number big-endian without leading zeros.
/// No prefix is the start of another (the first byte fixes the length), so
/// objects' key ranges never overlap. Public so tools and benchmarks can
/// name the exact bytes in the engine.
///
/// ```
/// use do_storage::DataPrefix;
/// assert_eq!(DataPrefix::of(300).key(b"value"), b"\x02\x01\x2cvalue");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataPrefix {
    number: u64,
    bytes: [u8; MAX_PREFIX],
    len: u8,
}

impl DataPrefix {
    /// The prefix of object number `number`.
    pub fn of(number: u64) -> Self {
        let be = number.to_be_bytes();
        let skip = (number.leading_zeros() / 8).min(7) as usize;
        let digits = &be[skip..];
        let mut bytes = [0u8; MAX_PREFIX];
        bytes[0] = digits.len() as u8;
        bytes[1..=digits.len()].copy_from_slice(digits);
        DataPrefix {
            number,
            bytes,
            len: digits.len() as u8 + 1,
        }
    }

    /// The object's number.
    pub fn number(&self) -> u64 {
        self.number
    }

    /// The prefix's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    pub(crate) fn len(&self) -> usize {
        usize::from(self.len)
    }

    /// Calls `f` with `self` followed by `key`, built on the stack when it
    /// is short (most keys), so a lookup allocates nothing.
    pub(crate) fn with_key<R>(&self, key: &[u8], f: impl FnOnce(&[u8]) -> R) -> R {
        let mut buf = [0u8; 64];
        let len = self.len() + key.len();
        match buf.get_mut(..len) {
            Some(full) => {
                full[..self.len()].copy_from_slice(self.as_bytes());
                full[self.len()..].copy_from_slice(key);
                f(full)
            }
            None => f(&self.key(key)),
        }
    }

    /// The engine key of the object's `key`: `self` followed by `key`.
    pub fn key(&self, key: &[u8]) -> Vec<u8> {
        let mut full = Vec::with_capacity(self.len() + key.len());
        full.extend_from_slice(self.as_bytes());
        full.extend_from_slice(key);
        full
    }
}

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
                supported: 2
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
                supported: 2
            })
        );
    }

    #[test]
    fn no_data_prefix_starts_another_and_short_numbers_stay_short() {
        let edges = [
            0u64,
            1,
            255,
            256,
            65_535,
            65_536,
            (1 << 24) - 1,
            1 << 24,
            u64::MAX - 1,
            u64::MAX,
        ];
        for a in edges {
            for b in edges {
                if a != b {
                    let (pa, pb) = (DataPrefix::of(a), DataPrefix::of(b));
                    assert!(
                        !pb.as_bytes().starts_with(pa.as_bytes()),
                        "{a} is a prefix of {b}"
                    );
                }
            }
        }
        assert_eq!(DataPrefix::of(1).as_bytes(), [1, 1]);
        assert_eq!(DataPrefix::of(256).as_bytes(), [2, 1, 0]);
        assert_eq!(DataPrefix::of((1 << 24) - 1).len(), 4);
        assert_eq!(DataPrefix::of(u64::MAX).len(), 9);
        // The stack-built key equals the allocated one, short or long.
        let p = DataPrefix::of(300);
        for key in [&b"value"[..], &[7u8; 100][..]] {
            assert_eq!(p.with_key(key, <[u8]>::to_vec), p.key(key));
        }
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

//! The kind byte in front of every stored value (storage format 3): a
//! value is either serialized by its writer (postcard, [`SERIALIZED`]) or
//! raw bytes stored as given ([`RAW`]). The runtime writes and reads the
//! byte; this crate only counts it out of the value limit and adds it to
//! values written before it existed (see [`migrate`]).

use fjall::{Keyspace, PersistMode};

use crate::error::Result;

/// A value its writer serialized (with postcard): `put`.
pub const SERIALIZED: u8 = 0;
/// Raw bytes, stored as given: `put_bytes`.
pub const RAW: u8 = 1;
/// Bytes of the kind byte.
pub const KIND_BYTES: usize = 1;

/// The kind byte and the value after it; `None` for an empty slice (no
/// value of format 3 is empty).
pub fn split(stored: &[u8]) -> Option<(u8, &[u8])> {
    stored.split_first().map(|(kind, value)| (*kind, value))
}

/// The first byte of the commit groups' chain keys (see `highwater`),
/// which hold no value: a data key never starts with it.
const CHAIN_START: u8 = 0xff;

/// How many values one step of [`migrate`] rewrites.
const STEP: usize = 4096;

/// The `meta` key of the last key a migration rewrote: it resumes after it.
pub(crate) const MIGRATED_TO: &[u8] = b"migrated-to-format-3\0";

/// Rewrites every value of `data` written by format 2 (no kind byte) as a
/// [`SERIALIZED`] one, in steps of [`STEP`] keys in key order. Each step
/// writes its values and the last key it rewrote (in `meta`) in one atomic
/// batch, so a crash leaves every key before that mark rewritten and every
/// key after it not; the next open resumes there. `finish` runs in the
/// last step's batch (it marks the format). Keys starting with `0xff`
/// (the commit groups' chain, see `highwater`) hold no value and are left.
pub(crate) fn migrate(
    db: &fjall::Database,
    data: &Keyspace,
    meta: &Keyspace,
    finish: impl FnOnce(&mut fjall::OwnedWriteBatch),
) -> Result<u64> {
    let mut after: Option<Vec<u8>> = meta.get(MIGRATED_TO)?.map(|k| k.to_vec());
    let mut rewritten = 0u64;
    loop {
        let range = match &after {
            Some(key) => (
                std::ops::Bound::Excluded(key.clone()),
                std::ops::Bound::Excluded(vec![CHAIN_START]),
            ),
            None => (
                std::ops::Bound::Unbounded,
                std::ops::Bound::Excluded(vec![CHAIN_START]),
            ),
        };
        let mut batch = db.batch();
        let mut last = None;
        let mut n = 0;
        for guard in data.range(range).take(STEP) {
            let (key, value) = guard.into_inner()?;
            let mut with_kind = Vec::with_capacity(value.len() + KIND_BYTES);
            with_kind.push(SERIALIZED);
            with_kind.extend_from_slice(&value);
            batch.insert(data, key.clone(), with_kind);
            last = Some(key.to_vec());
            n += 1;
        }
        rewritten += n as u64;
        match last {
            Some(key) if n == STEP => {
                batch.insert(meta, MIGRATED_TO, key.clone());
                batch.commit()?;
                db.persist(PersistMode::SyncAll)?;
                after = Some(key);
            }
            _ => {
                batch.remove(meta, MIGRATED_TO);
                finish(&mut batch);
                batch.commit()?;
                db.persist(PersistMode::SyncAll)?;
                return Ok(rewritten);
            }
        }
    }
}

#[allow(clippy::unwrap_used)] // a failing unwrap is a failing test
#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{FORMAT, FORMAT_BEFORE, FORMAT_KEY};
    use crate::{ObjectPrefix, Store, StoreOptions};

    const KEYS: usize = 10_000;

    fn key(i: usize) -> String {
        format!("k{i:05}")
    }

    /// A store of `KEYS` keys whose values have no kind byte, marked as
    /// format 2 (as a directory written before format 3 is), with
    /// `migrated_to` set as a crash in the middle of a migration leaves it.
    fn format_2_dir(migrated_to: Option<usize>) -> (tempfile::TempDir, ObjectPrefix) {
        let dir = tempfile::tempdir().unwrap();
        let prefix = ObjectPrefix::new(1, [5; 16]);
        let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
        let object = store.object(prefix);
        for chunk in (0..KEYS).collect::<Vec<_>>().chunks(100) {
            let entries = chunk
                .iter()
                .map(|&i| (key(i), format!("v{i}").into_bytes()))
                .collect();
            object.put_many(entries, true).unwrap();
            object.flush().unwrap();
        }
        while !object.is_settled() {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        drop(object);
        store.close();
        drop(store);
        let db = fjall::Database::builder(dir.path()).open().unwrap();
        let meta = db
            .keyspace("meta", fjall::KeyspaceCreateOptions::default)
            .unwrap();
        let data = db
            .keyspace("objects", fjall::KeyspaceCreateOptions::default)
            .unwrap();
        meta.insert(FORMAT_KEY, [FORMAT_BEFORE]).unwrap();
        if let Some(upto) = migrated_to {
            // As a step that rewrote every key up to `upto` left it.
            let mut last = Vec::new();
            for guard in data.range(..vec![0xffu8]) {
                let (k, v) = guard.into_inner().unwrap();
                let index: usize = std::str::from_utf8(&k[k.len() - 5..])
                    .unwrap()
                    .parse()
                    .unwrap();
                if index > upto {
                    break;
                }
                let mut with_kind = vec![SERIALIZED];
                with_kind.extend_from_slice(&v);
                data.insert(k.clone(), with_kind).unwrap();
                last = k.to_vec();
            }
            meta.insert(MIGRATED_TO, last).unwrap();
        }
        db.persist(fjall::PersistMode::SyncAll).unwrap();
        drop((meta, data, db));
        (dir, prefix)
    }

    fn check_migrated(dir: &std::path::Path, prefix: ObjectPrefix) {
        let store = Store::open(dir, StoreOptions::default()).unwrap();
        assert_eq!(
            store.get_meta(FORMAT_KEY).unwrap().as_deref(),
            Some(&[FORMAT][..])
        );
        assert_eq!(store.get_meta(MIGRATED_TO).unwrap(), None);
        let object = store.object(prefix);
        let all = object.list(&crate::ListOptions::new()).unwrap();
        assert_eq!(all.len(), KEYS);
        for (i, (k, v)) in all.iter().enumerate() {
            assert_eq!(k, &key(i));
            let expected = format!("v{i}");
            assert_eq!(
                split(v),
                Some((SERIALIZED, expected.as_bytes())),
                "key {k}: exactly one kind byte in front"
            );
        }
        drop(object);
        store.close();
    }

    #[test]
    fn a_format_2_directory_gets_a_kind_byte_in_front_of_every_value_once() {
        let (dir, prefix) = format_2_dir(None);
        check_migrated(dir.path(), prefix);
        // Opening again migrates nothing twice.
        check_migrated(dir.path(), prefix);
    }

    #[test]
    fn a_migration_cut_short_resumes_after_the_last_key_it_rewrote() {
        let (dir, prefix) = format_2_dir(Some(4_095));
        check_migrated(dir.path(), prefix);
    }
}

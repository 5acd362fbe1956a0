//! The database: one fjall database per runtime, one keyspace for every
//! object's data, and the group-commit thread that makes writes durable.

use std::path::Path;
use std::sync::Arc;

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode, Slice};

use crate::cache::ValueCache;
use crate::committer::{Commit, Committer};
use crate::error::{Result, StorageError};
use crate::object::{ObjectPrefix, ObjectStore};

/// Tuning knobs of a [`Store`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct StoreOptions {
    /// fjall's block cache, in bytes.
    pub cache_bytes: u64,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            cache_bytes: 64 * 1024 * 1024,
        }
    }
}

/// A handle to the runtime's database. Cheap to clone; every clone names the
/// same database and the same commit thread.
///
/// ```
/// # fn main() -> Result<(), do_storage::StorageError> {
/// let dir = tempfile::tempdir().unwrap();
/// let store = do_storage::Store::open(dir.path(), Default::default())?;
/// store.put_meta_durable(b"greeting", b"hello")?;
/// assert_eq!(store.get_meta(b"greeting")?.as_deref(), Some(&b"hello"[..]));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    db: Database,
    data: Keyspace,
    meta: Keyspace,
    committer: Committer,
}

impl Store {
    /// Opens (or creates) the database in `path` and starts its commit thread.
    pub fn open(path: &Path, options: StoreOptions) -> Result<Store> {
        let db = Database::builder(path)
            .cache_size(options.cache_bytes)
            // We persist explicitly, once per group of batches, on the commit thread.
            .manual_journal_persist(true)
            .open()?;
        let data = db.keyspace("objects", KeyspaceCreateOptions::default)?;
        let meta = db.keyspace("meta", KeyspaceCreateOptions::default)?;
        let committer = Committer::start(db.clone(), data.clone())?;
        Ok(Store {
            inner: Arc::new(Inner {
                db,
                data,
                meta,
                committer,
            }),
        })
    }

    /// The per-object view of the store for the object whose keys live under `prefix`.
    pub fn object(&self, prefix: ObjectPrefix) -> ObjectStore {
        ObjectStore::new(self.clone(), prefix, None)
    }

    /// Like [`Store::object`], reading through `cache` (the calling thread's).
    pub fn object_cached(&self, prefix: ObjectPrefix, cache: ValueCache) -> ObjectStore {
        ObjectStore::new(self.clone(), prefix, Some(cache))
    }

    /// Reads a value of the runtime's own metadata.
    pub fn get_meta(&self, key: &[u8]) -> Result<Option<Slice>> {
        Ok(self.inner.meta.get(key)?)
    }

    /// Writes a value of the runtime's own metadata and waits until it is on disk.
    /// Meant for rare writes (the runtime secret), not for object data.
    pub fn put_meta_durable(&self, key: &[u8], value: &[u8]) -> Result<()> {
        self.inner.meta.insert(key, value)?;
        self.inner.db.persist(PersistMode::SyncAll)?;
        Ok(())
    }

    pub(crate) fn data(&self) -> &Keyspace {
        &self.inner.data
    }

    pub(crate) fn submit(&self, commit: Commit) -> Result<()> {
        self.inner.committer.submit(commit)
    }

    /// Stops the commit thread after it has made every submitted batch durable.
    /// Later writes fail with [`StorageError::Closed`]. Idempotent.
    pub fn close(&self) {
        self.inner.committer.stop();
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

impl From<std::sync::mpsc::SendError<crate::committer::Job>> for StorageError {
    fn from(_: std::sync::mpsc::SendError<crate::committer::Job>) -> Self {
        StorageError::Closed
    }
}

//! The database: one fjall database per runtime, one keyspace for every
//! object's data, and the group-commit thread that makes writes durable.

use std::path::Path;
use std::sync::Arc;

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode, Slice};

use crate::alarm::{Alarm, DueAlarm};
use crate::commit_stats::{CommitHook, CommitStats};
use crate::committer::{Commit, CommitLink, Committer, Release};
use crate::error::{Result, StorageError};
use crate::highwater::{self, HighWater};
use crate::keys::{
    self, DataPrefix, FORMAT, FORMAT_KEY, NS_BY_NAME, NS_BY_NUMBER, OBJECT_ID_BYTES, ObjectPrefix,
};
use crate::marker::{self, Found};
use crate::numbers::Numbers;
use crate::releases::Releases;
use crate::sync::ObjectSync;

/// Tuning knobs of a [`Store`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct StoreOptions {
    /// fjall's block cache, in bytes.
    pub cache_bytes: u64,
    /// The size at which the data keyspace's memtable is sealed and
    /// flushed to a table. Default: 16 MiB, smaller than fjall's default
    /// (64 MiB): the commit thread inserts every write into it, and a
    /// smaller skiplist stays in the CPU's caches (BENCHMARKS.md has the
    /// measurements). At least 1 MiB is used. Only a new directory takes
    /// it: fjall keeps a keyspace's memtable size from its creation.
    pub memtable_bytes: u64,
    /// Fault injection for tests: sleep this long before every fsync, so a
    /// batch stays applied-but-not-durable for a while. Zero in production.
    #[doc(hidden)]
    pub persist_delay: std::time::Duration,
    /// Fault injection for tests: while above zero, each commit group
    /// takes one from it and fails as a failed write would (nothing of it
    /// applied, every batch in it reported failed, the store's
    /// [`failure`](Store::failure) set). Zero in production.
    #[doc(hidden)]
    pub fail_commits: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    /// Called on the commit thread after every commit group, with what it
    /// wrote and how long its fsync took.
    pub on_commit: Option<CommitHook>,
    /// How long the commit thread polls for the next batch after a small
    /// commit group (one or two batches) before it sleeps. Callers few and
    /// sequential send their next batch soon after their replies; catching
    /// it by polling saves waking the thread, which costs far more than a
    /// poll (most on a virtual machine). Under load the queue refills during
    /// each fsync and nothing spins. Default: zero (off).
    pub commit_spin: std::time::Duration,
    /// A replicated log every commit group is appended to before it is
    /// applied (see [`Replicate`](crate::Replicate)): a batch is durable
    /// once the log holds it, and the engine is then persisted without
    /// fsync (what a crash loses of it, the log has). Default: none.
    pub replicate: Option<crate::replica::ReplicaHandle>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            cache_bytes: 64 * 1024 * 1024,
            memtable_bytes: 16 * 1024 * 1024,
            persist_delay: std::time::Duration::ZERO,
            fail_commits: Default::default(),
            on_commit: None,
            commit_spin: std::time::Duration::ZERO,
            replicate: None,
        }
    }
}

/// An object found in the registry of a namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownObject {
    /// Its 16 id bytes.
    pub id: [u8; OBJECT_ID_BYTES],
    /// The name its id was made from, if known.
    pub name: Option<String>,
    /// Whether it holds stored data now.
    pub has_data: bool,
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
    /// The alarm index (due time, object) and the alarms by object.
    alarms: Keyspace,
    alarm_of: Keyspace,
    /// Every object that ever stored something: its number and its name if known.
    known: Keyspace,
    numbers: Arc<Numbers>,
    committer: Committer,
    /// Serialises the assignment of namespace numbers.
    assign: std::sync::Mutex<()>,
    /// The data directory.
    path: std::path::PathBuf,
    /// Whether the directory is marked complete (see `marker`).
    complete: std::sync::atomic::AtomicBool,
}

impl Store {
    /// Opens (or creates) the database in `path` and starts its commit thread.
    ///
    /// A store is created only in a missing or empty directory. A directory
    /// that holds anything else is refused ([`StorageError::NotAStore`]),
    /// and one marked complete ([`Store::mark_complete`]) with a part
    /// missing (a journal, a keyspace folder, the format mark) is refused
    /// as [`StorageError::Damaged`]: never opened as if it were new.
    pub fn open(path: &Path, options: StoreOptions) -> Result<Store> {
        let found = marker::inspect(path)?;
        if matches!(found, Found::New) {
            marker::write_creating(path)?;
        }
        let open = || {
            Database::builder(path)
                .cache_size(options.cache_bytes)
                // We persist explicitly, once per group of batches, on the commit thread.
                .manual_journal_persist(true)
                .open()
        };
        // Some damage to a journal trips an assertion in fjall's recovery
        // (in debug builds) rather than returning an error.
        let db = std::panic::catch_unwind(open).map_err(|_| StorageError::Damaged {
            what: "fjall failed recovering its journal (it panicked reading it)".into(),
        })??;
        let memtable = options.memtable_bytes.max(1024 * 1024);
        let data = db.keyspace("objects", || {
            KeyspaceCreateOptions::default().max_memtable_size(memtable)
        })?;
        // Small keyspaces of small entries: small memtables keep their
        // memory bounded however many alarms and objects there are (and,
        // for `meta`, however many commit groups: each writes its number).
        let small = || KeyspaceCreateOptions::default().max_memtable_size(8 * 1024 * 1024);
        let meta = db.keyspace("meta", small)?;
        let alarms = db.keyspace("alarms", small)?;
        let alarm_of = db.keyspace("alarm_of", small)?;
        let known = db.keyspace("known", small)?;
        if let Found::Marked(marked) = &found {
            marker::check_folders(
                path,
                marked,
                &Self::folders(&data, &meta, &alarms, &alarm_of, &known),
            )?;
        }
        check_format(&db, &meta, &data, &known, &found)?;
        let spaces = crate::committer::Keyspaces {
            data: data.clone(),
            alarms: alarms.clone(),
            alarm_of: alarm_of.clone(),
            known: known.clone(),
            meta: meta.clone(),
        };
        let (mark, numbers_of_groups) = HighWater::open(path, &meta, spaces.tracked())?;
        let next = crate::numbers::stored_next(&meta)?;
        let numbers = Arc::new(Numbers::new(next));
        let committer = Committer::start(
            db.clone(),
            spaces,
            crate::committer::Numbering {
                numbers: numbers.clone(),
                next,
            },
            crate::committer::Chain {
                numbers: numbers_of_groups,
                mark,
            },
            crate::committer::Knobs {
                replicate: options.replicate.clone(),
                persist_delay: options.persist_delay,
                spin: options.commit_spin,
                fail_commits: options.fail_commits.clone(),
                on_commit: options.on_commit.clone(),
            },
        )?;
        Ok(Store {
            inner: Arc::new(Inner {
                db,
                data,
                meta,
                alarms,
                alarm_of,
                known,
                numbers,
                committer,
                assign: std::sync::Mutex::new(()),
                path: path.to_owned(),
                complete: std::sync::atomic::AtomicBool::new(found.is_marked()),
            }),
        })
    }

    /// Our keyspaces with their folders, as the mark lists them.
    fn folders<'a>(
        data: &'a Keyspace,
        meta: &'a Keyspace,
        alarms: &'a Keyspace,
        alarm_of: &'a Keyspace,
        known: &'a Keyspace,
    ) -> [(&'static str, &'a Path); 5] {
        [
            ("objects", data.path()),
            ("meta", meta.path()),
            ("alarms", alarms.path()),
            ("alarm_of", alarm_of.path()),
            ("known", known.path()),
        ]
    }

    /// Whether the directory was marked complete: from then on a missing
    /// part is refused at open instead of recreated (see [`Store::open`]).
    pub fn is_complete(&self) -> bool {
        self.inner
            .complete
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// Marks the directory complete, once it holds everything its user
    /// needs (a runtime: its secret, durably). Call it after the first
    /// open of a new directory; it does nothing when already marked.
    pub fn mark_complete(&self) -> Result<()> {
        if self.is_complete() {
            return Ok(());
        }
        let i = &self.inner;
        marker::write(
            &i.path,
            &Self::folders(&i.data, &i.meta, &i.alarms, &i.alarm_of, &i.known),
        )?;
        i.complete.store(true, std::sync::atomic::Ordering::Release);
        Ok(())
    }

    /// Whether nothing was ever stored for any object (no data and no
    /// object registered).
    pub fn is_empty(&self) -> Result<bool> {
        Ok(!holds_entries(&self.inner.data)? && !holds_entries(&self.inner.known)?)
    }

    /// The committed alarm of the object under `prefix`.
    pub(crate) fn alarm_of(&self, prefix: &ObjectPrefix) -> Result<Option<Alarm>> {
        let value = self.inner.alarm_of.get(prefix.as_bytes())?;
        Ok(value.and_then(|v| crate::alarm::decode(&v)))
    }

    /// The registered name of the object under `prefix`: `None` when the
    /// object never stored anything, `Some("")` when its name is unknown.
    pub fn known_name(&self, prefix: &ObjectPrefix) -> Result<Option<String>> {
        match self.inner.known.get(prefix.as_bytes())? {
            Some(v) => Ok(Some(crate::numbers::decode_known(&v)?.1)),
            None => Ok(None),
        }
    }

    /// The number of the object under `prefix`, if it has one.
    pub(crate) fn object_number(&self, prefix: &ObjectPrefix) -> Result<Option<u64>> {
        self.inner.numbers.get(&self.inner.known, prefix)
    }

    /// The number of the object under `prefix`, handing out a new one if it
    /// has none; it is on disk once a batch registering it is.
    pub(crate) fn assign_object_number(&self, prefix: &ObjectPrefix) -> Result<u64> {
        self.inner.numbers.get_or_assign(&self.inner.known, prefix)
    }

    /// Whether any key is stored under `prefix`.
    pub fn has_data(&self, prefix: &ObjectPrefix) -> Result<bool> {
        let Some(number) = self.object_number(prefix)? else {
            return Ok(false);
        };
        match self
            .inner
            .data
            .prefix(DataPrefix::of(number).as_bytes())
            .next()
        {
            Some(entry) => {
                entry.key()?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Up to `limit` objects of namespace `namespace` that ever stored
    /// something, in id order, starting after id `after`.
    pub fn list_objects(
        &self,
        namespace: u16,
        after: Option<[u8; OBJECT_ID_BYTES]>,
        limit: usize,
    ) -> Result<Vec<KnownObject>> {
        let (start, end) = keys::registry_range(namespace, after);
        let mut out = Vec::new();
        let range = match end {
            None => self.inner.known.range(start..),
            Some(end) => self.inner.known.range(start..end),
        };
        for entry in range.take(limit) {
            let (key, value) = entry.into_inner()?;
            let Some(prefix) = ObjectPrefix::from_bytes(&key) else {
                continue;
            };
            let (_, name) = crate::numbers::decode_known(&value)?;
            out.push(KnownObject {
                id: prefix.id(),
                name: (!name.is_empty()).then_some(name),
                has_data: self.has_data(&prefix)?,
            });
        }
        Ok(out)
    }

    /// Up to `limit` alarms due at or before `now_ms`, earliest first.
    pub fn due_alarms(&self, now_ms: u64, limit: usize) -> Result<Vec<DueAlarm>> {
        let end = keys::index_end(now_ms);
        let mut due = Vec::new();
        for entry in self.inner.alarms.range(..end.to_vec()).take(limit) {
            let (key, value) = entry.into_inner()?;
            if let Some(alarm) = crate::alarm::decode_index(&key, &value) {
                due.push(alarm);
            }
        }
        Ok(due)
    }

    /// When the earliest pending alarm is due (milliseconds since the Unix
    /// epoch), if there is one.
    pub fn next_alarm_due(&self) -> Result<Option<u64>> {
        match self.inner.alarms.first_key_value() {
            Some(entry) => {
                let key = entry.key()?;
                if key.starts_with(highwater::CHAIN) {
                    return Ok(None);
                }
                Ok(keys::index_key_due(&key))
            }
            None => Ok(None),
        }
    }

    /// The commit thread, as the releases of views made on a thread see it.
    pub(crate) fn commit_link(&self) -> &CommitLink {
        self.inner.committer.link()
    }

    /// The number of the namespace called `class` in this store, assigned
    /// (durably) on first use, so key prefixes stay two bytes long and
    /// stable across restarts.
    pub fn namespace_number(&self, class: &str) -> Result<u16> {
        let key = [NS_BY_NAME, class.as_bytes()].concat();
        let stored = || -> Result<Option<u16>> {
            match self.inner.meta.get(&key)? {
                None => Ok(None),
                Some(n) => n
                    .as_ref()
                    .try_into()
                    .map(|b| Some(u16::from_be_bytes(b)))
                    .map_err(|_| {
                        StorageError::Engine(
                            format!("the namespace number of {class:?} is damaged").into(),
                        )
                    }),
            }
        };
        if let Some(n) = stored()? {
            return Ok(n);
        }
        let _guard = self.inner.assign.lock().unwrap_or_else(|p| p.into_inner());
        // Another thread may have assigned it while we waited.
        if let Some(n) = stored()? {
            return Ok(n);
        }
        let taken = self.namespaces()?;
        let next = taken.iter().map(|(n, _)| n + 1).max().unwrap_or(0);
        if taken.len() >= usize::from(u16::MAX) {
            return Err(StorageError::Engine(
                "this store holds the most namespaces it can (65 535)".into(),
            ));
        }
        self.inner.meta.insert(key, next.to_be_bytes())?;
        self.inner
            .meta
            .insert([NS_BY_NUMBER, &next.to_be_bytes()].concat(), class)?;
        self.persist()?;
        Ok(next)
    }

    /// Every namespace this store has numbered, with its class name, by number.
    pub fn namespaces(&self) -> Result<Vec<(u16, String)>> {
        let mut out = Vec::new();
        for guard in self.inner.meta.prefix(NS_BY_NUMBER) {
            let (k, v) = guard.into_inner()?;
            let number: [u8; 2] = k
                .get(NS_BY_NUMBER.len()..)
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| StorageError::Engine("a namespace entry is damaged".into()))?;
            let name = String::from_utf8(v.to_vec())
                .map_err(|_| StorageError::Engine("a namespace name is not UTF-8".into()))?;
            out.push((u16::from_be_bytes(number), name));
        }
        Ok(out)
    }

    /// How far this store's copy of its replicated log goes: the log's
    /// position of the last group applied here (0: none). A store read back
    /// from the log goes on after it.
    pub fn replica_applied(&self) -> Result<u64> {
        Ok(self.replica_position()?.0)
    }

    /// When this store's copy of its replicated log last moved on (ms since
    /// the Unix epoch), if it ever did.
    pub fn replica_applied_at(&self) -> Result<Option<u64>> {
        Ok(self.replica_position()?.1)
    }

    /// The recorded position (8 bytes, big-endian) and, after it, when it
    /// was recorded (8 bytes, ms since the Unix epoch).
    fn replica_position(&self) -> Result<(u64, Option<u64>)> {
        let Some(value) = self.inner.meta.get(crate::keys::REPLICA_APPLIED_KEY)? else {
            return Ok((0, None));
        };
        let damaged = || StorageError::Damaged {
            what: "the replicated log's position is not 8 or 16 bytes".into(),
        };
        let (position, at) = match value.len() {
            8 => (&value[..8], None),
            16 => (&value[..8], Some(&value[8..])),
            _ => return Err(damaged()),
        };
        let number = |bytes: &[u8]| -> Result<u64> {
            Ok(u64::from_be_bytes(bytes.try_into().map_err(|_| damaged())?))
        };
        Ok((number(position)?, at.map(number).transpose()?))
    }

    /// Records that this store's copy of the replicated log goes up to
    /// `position` (after reading it back), durably; never moves it back.
    pub fn set_replica_applied(&self, position: u64) -> Result<()> {
        if position > self.replica_applied()? {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            let mut value = position.to_be_bytes().to_vec();
            value.extend_from_slice(&now.to_be_bytes());
            self.put_meta_durable(crate::keys::REPLICA_APPLIED_KEY, &value)?;
        }
        Ok(())
    }

    /// Reads a value of the runtime's own metadata.
    pub fn get_meta(&self, key: &[u8]) -> Result<Option<Slice>> {
        Ok(self.inner.meta.get(key)?)
    }

    /// Writes a value of the runtime's own metadata and waits until it is on disk.
    /// Meant for rare writes (the runtime secret), not for object data.
    pub fn put_meta_durable(&self, key: &[u8], value: &[u8]) -> Result<()> {
        self.inner.meta.insert(key, value)?;
        self.persist()
    }

    /// Syncs the journal for a write made beside the commit thread; a
    /// failure is the store's failure (see [`Store::failure`]).
    fn persist(&self) -> Result<()> {
        self.inner.db.persist(PersistMode::SyncAll).map_err(|e| {
            let e = StorageError::from(e);
            self.inner.committer.record_failure(&e);
            e
        })
    }

    pub(crate) fn data(&self) -> &Keyspace {
        &self.inner.data
    }

    #[cfg(test)]
    pub(crate) fn known(&self) -> &Keyspace {
        &self.inner.known
    }

    // The commit comes back only when the store has closed: rare.
    #[allow(clippy::result_large_err)]
    pub(crate) fn submit(&self, commit: Commit) -> std::result::Result<(), Commit> {
        self.inner.committer.submit(commit)
    }

    pub(crate) fn release(&self, sync: Arc<ObjectSync>, seq: u64, release: Release) {
        self.inner.committer.link().release(sync, seq, release);
    }

    /// The failure of the first commit group that failed, if one did.
    ///
    /// After a failed write or fsync fjall refuses every later write (its
    /// journal may be torn at that point), so a store that reports a
    /// failure stays unwritable: reads of what was committed still work;
    /// close it, drop every handle and view, and open the directory again
    /// (the runtime does, see its storage recovery). Nothing acknowledged
    /// is lost by that: acknowledged groups were synced before the failure.
    pub fn failure(&self) -> Option<StorageError> {
        self.inner.committer.failure()
    }

    /// Bytes free to an unprivileged writer on the file system that holds
    /// `dir`, where the platform says (on Unix). A store needs room for a
    /// memtable's worth of table ([`StoreOptions::memtable_bytes`]) to
    /// flush; the runtime waits for that much before reopening a store
    /// whose writes failed.
    pub fn free_bytes(dir: &Path) -> Option<u64> {
        #[cfg(unix)]
        {
            let stat = rustix::fs::statvfs(dir).ok()?;
            Some(stat.f_bavail.saturating_mul(stat.f_frsize))
        }
        #[cfg(not(unix))]
        {
            let _ = dir;
            None
        }
    }

    /// The free bytes the store in `dir` needs to open and get going
    /// again after a failed write: opening replays the journal into
    /// memtables, which are then flushed to tables (about the journal's
    /// size on disk), and new writes need a memtable's worth of table and
    /// some journal (4 MiB).
    pub fn room_to_reopen(dir: &Path, options: &StoreOptions) -> u64 {
        let journals: u64 = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "jnl"))
            .filter_map(|e| e.metadata().ok())
            .map(|m| {
                // A journal is preallocated: count the blocks it uses.
                #[cfg(unix)]
                {
                    use std::os::unix::fs::MetadataExt;
                    (m.blocks() * 512).min(m.len())
                }
                #[cfg(not(unix))]
                {
                    m.len()
                }
            })
            .sum();
        journals + options.memtable_bytes.max(1 << 20) + (4 << 20)
    }

    /// What the commit thread has done so far.
    pub fn commit_stats(&self) -> CommitStats {
        self.inner.committer.stats()
    }

    /// Stops the commit thread after it has made every submitted batch durable.
    /// Later writes fail with [`StorageError::Closed`]. Idempotent.
    pub fn close(&self) {
        self.inner.committer.stop();
    }
}

/// Whether `keyspace` holds anything but the commit groups' numbers (which
/// sort last: see `highwater`).
fn holds_entries(keyspace: &Keyspace) -> Result<bool> {
    match keyspace.first_key_value() {
        Some(entry) => Ok(!entry.key()?.starts_with(highwater::CHAIN)),
        None => Ok(false),
    }
}

/// Refuses a directory written in another storage format; marks a new one
/// with this version's.
fn check_format(
    db: &Database,
    meta: &Keyspace,
    data: &Keyspace,
    known: &Keyspace,
    found: &Found,
) -> Result<()> {
    match meta.get(FORMAT_KEY)? {
        Some(v) if v.as_ref() == [FORMAT] => Ok(()),
        Some(v) if v.as_ref() == [crate::keys::FORMAT_BEFORE] => {
            let rewritten = crate::values::migrate(db, data, meta, |batch| {
                batch.insert(meta, FORMAT_KEY, [FORMAT]);
            })?;
            tracing::info!(
                target: "do_storage::migrate",
                values = rewritten,
                "migrated the data directory from storage format {} to {FORMAT}",
                crate::keys::FORMAT_BEFORE
            );
            Ok(())
        }
        Some(v) => Err(StorageError::UnsupportedFormat {
            found: v.first().copied().map_or(0, u32::from),
            supported: u32::from(FORMAT),
        }),
        // A complete directory had its mark: losing it means losing
        // what the journal or the meta keyspace held.
        None if found.is_marked() => Err(StorageError::Damaged {
            what: "the storage format mark is gone (a journal or the meta keyspace was lost)"
                .into(),
        }),
        None if !holds_entries(data)?
            && !holds_entries(known)?
            && matches!(found, Found::Unmarked) =>
        {
            Err(StorageError::Damaged {
                what: "neither the directory's mark nor its storage format mark is there".into(),
            })
        }
        None if !holds_entries(data)? && !holds_entries(known)? => {
            meta.insert(FORMAT_KEY, [FORMAT])?;
            db.persist(PersistMode::SyncAll)?;
            Ok(())
        }
        // Data but no mark: written before formats were marked.
        None => Err(StorageError::UnsupportedFormat {
            found: 1,
            supported: u32::from(FORMAT),
        }),
    }
}

impl Releases {
    /// An empty set for views of `store` (made with
    /// [`Store::object_on_thread`]): it waits for `store`'s commit thread.
    /// Defined here rather than in `releases.rs`, which knows nothing of
    /// the store.
    pub fn new(store: &Store) -> Self {
        Releases::with_link(store.commit_link().clone())
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

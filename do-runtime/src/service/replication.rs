//! Replication (feature `replication`, opt-in with
//! [`RuntimeBuilder::replicate`](crate::RuntimeBuilder::replicate)): the
//! store appends every commit group to a replicated log on NATS JetStream
//! (`do-replica`) before it applies it, so a reply leaves only once its
//! writes are on a quorum of the log's servers. At build the runtime
//! claims the log's shards for its epoch, agrees the deployment secret
//! with the log (ids must be the same wherever the objects are served),
//! and reads back from the log what its store lacks: everything, for an
//! empty data directory, before it serves a call.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use do_replica::{Entry, Log, ObjectWrites, ReplicaConfig, ReplicaError};
use do_storage::{Alarm, ObjectPrefix, ObjectStore, ReplicaBatch, Store, Unreplicated};

use crate::base::error::{Error, Result};
use crate::engine::shared::Shared;

/// Resets the live instances of the objects it is given, and makes the
/// workers forget what they remember of them; resolves once they have.
pub(crate) type Leave = dyn Fn(crate::engine::worker::Leaves) -> futures_util::future::BoxFuture<'static, ()>
    + Send
    + Sync;

/// A [`Leave`] on the runtime `shared` (while it runs).
pub(crate) fn leave_on(shared: std::sync::Weak<Shared>) -> Arc<Leave> {
    Arc::new(move |leaves| match shared.upgrade() {
        Some(shared) => Box::pin(shared.release_objects(leaves)),
        None => Box::pin(async {}),
    })
}

/// The runtime's log: its connection, the threads that drive it, and the
/// class of each of the store's namespace numbers.
pub(crate) struct LogReplica {
    log: Log,
    /// One worker thread of its own: the commit thread blocks on it. An
    /// option only so that `Drop` can let it go without blocking.
    runtime: Option<tokio::runtime::Runtime>,
    classes: OnceLock<HashMap<u16, String>>,
}

impl Drop for LogReplica {
    fn drop(&mut self) {
        // Dropped maybe on a thread that runs async code: not waited for.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Runs `f` on a thread of its own, and waits for it: the builder may be
/// called from async code, where blocking on the log's runtime is not
/// allowed.
fn aside<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|scope| match scope.spawn(f).join() {
        Ok(value) => value,
        Err(panic) => std::panic::resume_unwind(panic),
    })
}

impl std::fmt::Debug for LogReplica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogReplica")
            .field("log", &self.log)
            .finish()
    }
}

fn setup(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Setup(format!("replication: {what}: {e}"))
}

impl LogReplica {
    /// Connects to the log, opens its stream and claims every shard for
    /// the configured epoch (an older epoch than the log's is refused).
    pub(crate) fn open(config: ReplicaConfig) -> Result<Arc<Self>> {
        Self::connect(config, true)
    }

    /// Connects to the log and opens its stream, to read it only: no shard
    /// is claimed, so whoever writes it is not fenced out.
    pub(crate) fn open_reading(config: ReplicaConfig) -> Result<Arc<Self>> {
        Self::connect(config, false)
    }

    /// Connects to the log for a runtime of a cluster: no shard is claimed
    /// now; each is when the cluster gives it to this runtime (see
    /// [`LogReplica::acquire`]).
    #[cfg(feature = "cluster")]
    pub(crate) fn open_for_cluster(config: ReplicaConfig) -> Result<Arc<Self>> {
        Self::connect(config, false)
    }

    /// How many shards the log has.
    #[cfg(feature = "cluster")]
    pub(crate) fn shards(&self) -> u32 {
        self.log.config().shard_count()
    }

    /// The log's shard of object `id`.
    #[cfg(feature = "cluster")]
    pub(crate) fn shard_of(&self, id: &[u8; 16]) -> u32 {
        self.log.shard_of(id)
    }

    /// Takes `shards` over, each at its epoch (in a cluster, when it is
    /// given them; alone, to read back shards let go in doubt, see
    /// [`LogReplica::repair_in_background`]). Claims them in the log (from
    /// then on the server refuses the appends of whoever held them, and
    /// nothing sent before can land after), `leave`s their live objects,
    /// drops what `store` held of them (a copy that may be stale), reads
    /// them back from the log, `leave`s again (what was built from the copy
    /// meanwhile), and only then lets them take appends. Returns the
    /// entries read. Blocks: call it off async threads.
    pub(crate) fn acquire(
        &self,
        store: &Store,
        shards: &[(u32, u64)],
        leave: &Leave,
    ) -> Result<usize> {
        self.block_on(self.log.claim_at(shards))
            .map_err(|e| setup("cannot claim shards in the log", e))?;
        let taken: std::collections::HashSet<u32> = shards.iter().map(|(s, _)| *s).collect();
        let list: Vec<u32> = taken.iter().copied().collect();
        self.block_on(leave(self.leaves(&list)));
        let mut wiped = None;
        let stored = |e: do_storage::StorageError| setup("cannot drop a stale copy", e);
        for (namespace, _) in store.namespaces().map_err(stored)? {
            let mut after = None;
            loop {
                let page = store.list_objects(namespace, after, 1024).map_err(stored)?;
                for known in &page {
                    if taken.contains(&self.log.shard_of(&known.id)) {
                        let view = store.object(ObjectPrefix::new(namespace, known.id));
                        view.restoring();
                        view.delete_all(false).map_err(stored)?;
                        Restore::flush(&mut wiped, view)?;
                    }
                }
                match page.last() {
                    Some(last) if page.len() == 1024 => after = Some(last.id),
                    _ => break,
                }
            }
        }
        let (read, _) = self.read_back(store, 0, Some(&list), wiped)?;
        self.block_on(leave(self.leaves(&list)));
        self.log.resume(&list);
        Ok(read)
    }

    /// The objects of `shards` (see `WorkerMsg::Release`).
    pub(crate) fn leaves(&self, shards: &[u32]) -> crate::engine::worker::Leaves {
        let set: std::collections::HashSet<u32> = shards.iter().copied().collect();
        let count = self.log.config().shard_count();
        Arc::new(move |id: &[u8; 16]| set.contains(&do_replica::shard_of(id, count)))
    }

    /// Reads back, on a thread of its own, the shards the log let go after
    /// an append whose outcome could not be known (the log stayed
    /// unreachable while it was settled): once the log answers again, each
    /// is taken over anew at its epoch ([`LogReplica::acquire`]). Until
    /// then their writes fail, retryably.
    pub(crate) fn repair_in_background(self: &Arc<Self>, shared: std::sync::Weak<Shared>) {
        let replica = Arc::downgrade(self);
        let leave = leave_on(shared.clone());
        let spawned = std::thread::Builder::new()
            .name("do-replica-repair".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(std::time::Duration::from_millis(500));
                    let Some(replica) = replica.upgrade() else {
                        return;
                    };
                    let doubtful = replica.log.doubtful();
                    if doubtful.is_empty() {
                        continue;
                    }
                    let Some(store) = shared.upgrade().and_then(|shared| shared.store()) else {
                        return;
                    };
                    match replica.acquire(&store, &doubtful, &*leave) {
                        Ok(read) => tracing::info!(
                            shards = doubtful.len(),
                            entries = read,
                            "shards let go in doubt were read back from the log"
                        ),
                        Err(e) => tracing::warn!(
                            error = %e,
                            "shards let go in doubt cannot be read back yet"
                        ),
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the thread that reads back shards let go in doubt");
        }
    }

    /// In a cluster, after the store was reopened (a local failure): takes
    /// every shard this node holds over anew at its epoch, so that the
    /// copy holds what the log took and the failed disk did not. Its
    /// objects were already let go by the reopen.
    #[cfg(feature = "cluster")]
    pub(crate) fn reacquire_held(&self, store: &Store) -> Result<()> {
        let held = self.log.held();
        if held.is_empty() {
            return Ok(());
        }
        let nothing: &Leave = &|_| Box::pin(async {});
        aside(|| self.acquire(store, &held, nothing)).map(|_| ())
    }

    /// In a cluster: this runtime no longer serves `shards`; it appends
    /// nothing more to them.
    #[cfg(feature = "cluster")]
    pub(crate) fn release(&self, shards: &[u32]) {
        self.log.release(shards);
    }

    fn connect(config: ReplicaConfig, claim: bool) -> Result<Arc<Self>> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("do-replica")
            .enable_all()
            .build()
            .map_err(|e| setup("cannot start its thread", e))?;
        let log = aside(|| {
            runtime.block_on(async {
                let log = Log::open(config).await?;
                if claim {
                    log.claim_all().await?;
                }
                Ok::<_, ReplicaError>(log)
            })
        });
        let log = match log {
            Ok(log) => log,
            Err(e) => {
                runtime.shutdown_background();
                return Err(setup("cannot open the log", e));
            }
        };
        Ok(Arc::new(LogReplica {
            log,
            runtime: Some(runtime),
            classes: OnceLock::new(),
        }))
    }

    /// The class of each namespace number, once the store has numbered
    /// the runtime's classes (before any write).
    pub(crate) fn set_classes(&self, classes: HashMap<u16, String>) {
        let _ = self.classes.set(classes);
    }

    /// The deployment secret, agreed with the log (see
    /// `base::secret::agreed_secret`).
    pub(crate) fn agree_secret(&self, proposal: &[u8]) -> Result<Vec<u8>> {
        aside(|| self.block_on(self.log.agree("secret", proposal)))
            .map_err(|e| setup("cannot agree the deployment secret with the log", e))
    }

    /// The deployment secret agreed through the log, if one was.
    pub(crate) fn agreed_secret(&self) -> Result<Option<Vec<u8>>> {
        aside(|| self.block_on(self.log.agreed("secret")))
            .map_err(|e| setup("cannot read the deployment secret from the log", e))
    }

    fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        match &self.runtime {
            Some(runtime) => runtime.block_on(future),
            // Only while it is dropped.
            None => unreachable!("the log's runtime is kept until the log is dropped"),
        }
    }

    /// Reads back into `store` what the log holds past the store's copy of
    /// it (everything, for a new store), and records how far it went.
    /// Returns how many entries were read.
    pub(crate) fn restore(&self, store: &Store) -> Result<usize> {
        aside(|| self.restore_here(store))
    }

    fn restore_here(&self, store: &Store) -> Result<usize> {
        let after = store
            .replica_applied()
            .map_err(|e| setup("cannot read how far the store's copy of the log goes", e))?;
        let empty = store
            .is_empty()
            .map_err(|e| setup("cannot read the data directory", e))?;
        // The log forgets a deleted key's mark after its TTL: a copy that
        // last moved on longer ago than that (less an hour's margin) could
        // miss deletes, and must be rebuilt instead.
        let ttl = self.log.config().tombstone_lifetime();
        let at = store
            .replica_applied_at()
            .map_err(|e| setup("cannot read how far the store's copy of the log goes", e))?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let margin = ttl
            .saturating_sub(std::time::Duration::from_secs(3600))
            .max(ttl / 2);
        if let Some(at) = at
            && now.saturating_sub(at) > margin.as_millis() as u64
        {
            return Err(Error::Setup(format!(
                "replication: the data directory's copy of the log last moved on {} s ago, longer than the log keeps the marks of deleted keys ({} s): it could miss deletes; start on an empty directory, which reads everything from the log",
                now.saturating_sub(at) / 1000,
                ttl.as_secs()
            )));
        }
        if after == 0 && !empty {
            return Err(Error::Setup(
                "replication: the data directory holds objects' data that is not a copy of the log (written without replication, or before it): start on an empty directory, which reads everything from the log"
                    .into(),
            ));
        }
        let (read, last) = self.read_back(store, after, None, None)?;
        store
            .set_replica_applied(last)
            .map_err(|e| setup("cannot record how far the store's copy of the log goes", e))?;
        Ok(read)
    }
}

impl LogReplica {
    /// Reads what the log holds past `after` (of `shards`, or all) into
    /// `store`, and waits until it is applied (after `last`, a view that
    /// handed writes over before, if any): the entries read, and the last
    /// position read.
    fn read_back(
        &self,
        store: &Store,
        after: u64,
        shards: Option<&[u32]>,
        last: Option<ObjectStore>,
    ) -> Result<(usize, u64)> {
        let mut restore = Restore {
            store,
            numbers: HashMap::new(),
            views: HashMap::new(),
            names: HashMap::new(),
            last,
            read: 0,
        };
        let mut failed = None;
        let position = self.block_on(self.log.read(after, shards, |_, entry| {
            restore.apply(entry).map_err(|e| {
                let stop = ReplicaError::Stopped(e.to_string());
                failed = Some(e);
                stop
            })
        }));
        if let Some(e) = failed {
            return Err(e);
        }
        let position = position.map_err(|e| setup("cannot read the log back", e))?;
        let read = restore.read;
        restore.finish()?;
        Ok((read, position))
    }
}

impl do_storage::Replicate for LogReplica {
    fn position_trusted(&self) -> bool {
        !self.log.in_doubt()
    }

    fn append(&self, batches: &[ReplicaBatch<'_>]) -> Vec<std::result::Result<u64, Unreplicated>> {
        let classes = self.classes.get();
        let writes: Vec<ObjectWrites> = batches
            .iter()
            .map(|batch| ObjectWrites {
                // A namespace the runtime does not serve has no class: the
                // log refuses the batch (it cannot name its subjects).
                class: classes
                    .and_then(|c| c.get(&batch.object.namespace()))
                    .map_or("", String::as_str),
                id: batch.object.id(),
                writes: batch.writes.clone(),
                alarm: batch.alarm.map(|a| a.map(|a| (a.due_ms, a.retries))),
                name: batch.name.as_deref(),
            })
            .collect();
        self.block_on(self.log.append(&writes))
            .into_iter()
            .map(|outcome| {
                outcome.map_err(|e| Unreplicated {
                    fenced: matches!(
                        e,
                        ReplicaError::Fenced { .. } | ReplicaError::StaleEpoch { .. }
                    ),
                    message: e.to_string(),
                })
            })
            .collect()
    }
}

/// Entries read back from the log, applied to a store through views of
/// their objects (whose writes are not appended to the log again).
struct Restore<'a> {
    store: &'a Store,
    numbers: HashMap<String, u16>,
    views: HashMap<ObjectPrefix, ObjectStore>,
    /// Names are registered last, once each object's data is in.
    names: HashMap<ObjectPrefix, String>,
    /// The view that handed the last batch over: once it is applied, so is
    /// every batch before it (the commit thread takes them in order).
    last: Option<ObjectStore>,
    read: usize,
}

/// Entries applied between two hand-overs to the commit thread.
const RESTORE_BATCH: usize = 4096;

impl Restore<'_> {
    fn view(&mut self, class: &str, id: [u8; 16]) -> Result<&ObjectStore> {
        let namespace = match self.numbers.get(class) {
            Some(n) => *n,
            None => {
                let n = self
                    .store
                    .namespace_number(class)
                    .map_err(|e| setup("cannot number a namespace read back", e))?;
                self.numbers.insert(class.to_owned(), n);
                n
            }
        };
        let prefix = ObjectPrefix::new(namespace, id);
        Ok(self.views.entry(prefix).or_insert_with(|| {
            let view = self.store.object(prefix);
            view.restoring();
            view
        }))
    }

    fn apply(&mut self, entry: Entry) -> Result<()> {
        let stored = |e: do_storage::StorageError| setup("cannot store what was read back", e);
        match entry {
            Entry::Write {
                class,
                id,
                key,
                value,
            } => {
                let key = String::from_utf8(key)
                    .map_err(|_| setup("a key read back", "it is not UTF-8"))?;
                let view = self.view(&class, id)?;
                match value {
                    Some(value) => view.put(&key, value, false).map_err(stored)?,
                    None => {
                        view.delete(&key, false).map_err(stored)?;
                    }
                }
            }
            Entry::Alarm { class, id, at } => {
                let alarm = at.map(|(due_ms, retries)| Alarm { due_ms, retries });
                self.view(&class, id)?
                    .set_alarm(alarm, false)
                    .map_err(stored)?;
            }
            Entry::Name { class, id, name } => {
                let prefix = self.view(&class, id)?.prefix();
                self.names.insert(prefix, name);
            }
        }
        self.read += 1;
        if self.read.is_multiple_of(RESTORE_BATCH) {
            self.hand_over()?;
        }
        Ok(())
    }

    /// Hands every view's writes to the commit thread and lets the views go.
    fn hand_over(&mut self) -> Result<()> {
        for (_, view) in self.views.drain() {
            Self::flush(&mut self.last, view)?;
        }
        Ok(())
    }

    /// Hands `view`'s writes over; it becomes `last` if it had any.
    fn flush(last: &mut Option<ObjectStore>, view: ObjectStore) -> Result<()> {
        let handed = view.has_unflushed();
        view.flush()
            .map_err(|e| setup("cannot store what was read back", e))?;
        if handed {
            *last = Some(view);
        }
        Ok(())
    }

    /// Hands over the rest, registers the names, and waits until all of it
    /// is applied.
    fn finish(mut self) -> Result<()> {
        self.hand_over()?;
        for (prefix, name) in std::mem::take(&mut self.names) {
            let view = self.store.object(prefix);
            view.restoring();
            view.restore_name(&name);
            Self::flush(&mut self.last, view)?;
        }
        if let Some(last) = self.last.take() {
            while !last.is_settled() {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        }
        match self.store.failure() {
            Some(e) => Err(setup("cannot store what was read back", e)),
            None => Ok(()),
        }
    }
}

/// Makes the data directory `dir` a copy of the log `config` names (see
/// `tools::admin::rebuild_from_log`): takes the log's deployment secret (a
/// directory with another is refused) and reads back every object's state
/// past what the directory has. Claims no shard. Returns the entries read.
pub(crate) fn rebuild(dir: &std::path::Path, config: ReplicaConfig) -> Result<usize> {
    let replica = LogReplica::open_reading(config)?;
    let Some(secret) = replica.agreed_secret()? else {
        return Err(Error::Setup(
            "the log has no deployment secret: no runtime ever wrote to it".into(),
        ));
    };
    let store = Store::open(dir, do_storage::StoreOptions::default())
        .map_err(|e| Error::Setup(format!("cannot open the store in {}: {e}", dir.display())))?;
    crate::base::secret::agreed_secret(&store, None, &mut |_| Ok(secret.clone()))?;
    let read = replica.restore(&store)?;
    store.close();
    Ok(read)
}

//! Group commit: one thread drains the queue of batches from every object,
//! applies them as one fjall batch, persists the journal once, and only then
//! reports them durable.
//!
//! Why one thread: fjall holds its journal lock during fsync, so committing
//! from the object threads while another thread fsyncs serialises everyone
//! behind the fsync. Draining a queue lets one fsync cover every batch that
//! arrived while the previous one ran.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use fjall::{Database, Keyspace, PersistMode, Slice};

use crate::commit_stats::{CommitGroup, CommitHook, CommitStats};
use crate::error::{Result, StorageError};
use crate::highwater::{self, HighWater};
use crate::keys::{NEXT_KEY, ObjectPrefix, Space};
use crate::numbers::Numbers;
use crate::queue::Queue;
use crate::signal::GroupSignal;
use crate::sync::ObjectSync;

/// The most batches one commit group takes, so acknowledgements are not held
/// back without bound under a flood.
const MAX_GROUP: usize = 4096;

/// How many writes' room the commit thread keeps between groups.
const OPS_KEPT: usize = 16 * 1024;

/// Runs once the writes it waits for are durable (or failed): how a
/// method's reply leaves from the commit thread without another hand-off.
pub type Release = Box<dyn FnOnce(Result<()>) + Send>;

/// One object's atomic batch of writes: full keys, with `None` for a delete,
/// and the releases that wait for it.
pub(crate) struct Commit {
    pub ops: Ops,
    /// Writes to the alarm keyspaces, in the same atomic batch.
    pub extra: Vec<(Space, Slice, Option<Slice>)>,
    pub seq: u64,
    pub sync: Arc<ObjectSync>,
    pub releases: Vec<Release>,
    /// The object and its number, when this batch writes its registry entry.
    /// Boxed: rare, and the queue's slots stay small.
    pub registers: Option<Box<(ObjectPrefix, u64)>>,
}

/// An object batch's data writes: full keys, with `None` for a delete.
///
/// A batch of one write (an object rewriting one key: the common case
/// under load) is held inline, in the commit queue's own buffer, which the
/// commit thread reads front to back. In a `Vec` it would be a buffer the
/// worker allocates, the commit thread fetches from the worker's core's
/// cache and then frees into the worker's arena, once per batch: work on
/// the commit thread, the one part of the write path that is serial.
#[derive(Debug)]
pub(crate) enum Ops {
    One(Slice, Option<Slice>),
    Many(Vec<(Slice, Option<Slice>)>),
}

impl Default for Ops {
    fn default() -> Self {
        Ops::Many(Vec::new())
    }
}

impl Ops {
    /// The writes, by reference, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&Slice, Option<&Slice>)> {
        let (one, many) = match self {
            Ops::One(key, value) => (Some((key, value.as_ref())), &[][..]),
            Ops::Many(ops) => (None, &ops[..]),
        };
        one.into_iter()
            .chain(many.iter().map(|(key, value)| (key, value.as_ref())))
    }

    pub fn len(&self) -> usize {
        match self {
            Ops::One(..) => 1,
            Ops::Many(ops) => ops.len(),
        }
    }
}

impl FromIterator<(Slice, Option<Slice>)> for Ops {
    fn from_iter<I: IntoIterator<Item = (Slice, Option<Slice>)>>(iter: I) -> Self {
        let mut iter = iter.into_iter();
        match (iter.next(), iter.next()) {
            (None, _) => Ops::default(),
            (Some((key, value)), None) => Ops::One(key, value),
            (Some(first), Some(second)) => {
                let mut ops = Vec::with_capacity(2 + iter.size_hint().0);
                ops.push(first);
                ops.push(second);
                ops.extend(iter);
                Ops::Many(ops)
            }
        }
    }
}

impl IntoIterator for Ops {
    type Item = (Slice, Option<Slice>);
    type IntoIter = std::iter::Chain<
        std::option::IntoIter<(Slice, Option<Slice>)>,
        std::vec::IntoIter<(Slice, Option<Slice>)>,
    >;

    fn into_iter(self) -> Self::IntoIter {
        match self {
            Ops::One(key, value) => Some((key, value)).into_iter().chain(Vec::new()),
            Ops::Many(ops) => None.into_iter().chain(ops),
        }
    }
}

pub(crate) enum Job {
    Commit(Commit),
    /// Run `release` once the object's batch `seq` (handed over earlier) is durable.
    Release {
        sync: Arc<ObjectSync>,
        seq: u64,
        release: Release,
    },
}

/// What a thread that holds replies (`Releases`) needs of the commit
/// thread: the signal it fires after each group, and its queue, to hand
/// the replies still held over when that thread lets them go. Cheap to
/// clone; it does not keep the commit thread running.
#[derive(Clone)]
pub(crate) struct CommitLink {
    queue: Arc<Queue<Job>>,
    signal: Arc<GroupSignal>,
}

impl CommitLink {
    /// Fired after each group's watermarks moved.
    pub fn signal(&self) -> &GroupSignal {
        &self.signal
    }

    /// Whether both lead to the same commit thread.
    pub fn same(&self, other: &CommitLink) -> bool {
        Arc::ptr_eq(&self.signal, &other.signal)
    }

    /// Runs `release` once batch `seq` of `sync`'s object is durable.
    pub fn release(&self, sync: Arc<ObjectSync>, seq: u64, release: Release) {
        if let Some(outcome) = sync.outcome(seq) {
            release(outcome);
            return;
        }
        if let Err(Job::Release { release, .. }) =
            self.queue.push(Job::Release { sync, seq, release })
        {
            release(Err(StorageError::Closed));
        }
    }
}

pub(crate) struct Committer {
    link: CommitLink,
    thread: Mutex<Option<JoinHandle<()>>>,
    stats: Arc<Counters>,
}

/// Running totals of the commit thread.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    groups: AtomicU64,
    batches: AtomicU64,
    writes: AtomicU64,
    bytes: AtomicU64,
    persist_nanos: AtomicU64,
    /// The first group's failure: fjall refuses every write after one
    /// (see [`crate::Store::failure`]).
    failure: std::sync::OnceLock<StorageError>,
}

impl Counters {
    pub fn failure(&self) -> Option<&StorageError> {
        self.failure.get()
    }

    pub fn snapshot(&self) -> CommitStats {
        CommitStats {
            groups: self.groups.load(Ordering::Relaxed),
            batches: self.batches.load(Ordering::Relaxed),
            writes: self.writes.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            persist_time: std::time::Duration::from_nanos(
                self.persist_nanos.load(Ordering::Relaxed),
            ),
        }
    }
}

impl Committer {
    pub fn start(
        db: Database,
        data: Keyspaces,
        numbering: Numbering,
        chain: Chain,
        knobs: Knobs,
    ) -> Result<Committer> {
        let link = CommitLink {
            queue: Arc::new(Queue::new()),
            signal: Arc::new(GroupSignal::default()),
        };
        let stats = Arc::new(Counters::default());
        let thread = CommitThread {
            db,
            spaces: data,
            numbering,
            chain,
            queue: link.queue.clone(),
            stats: stats.clone(),
            signal: link.signal.clone(),
            timing: Timing {
                delay: knobs.persist_delay,
                spin: knobs.spin,
            },
            fail: knobs.fail_commits,
            hook: knobs.on_commit,
            replica: knobs.replicate,
        };
        let thread = std::thread::Builder::new()
            .name("do-storage-commit".into())
            .spawn(move || thread.run())
            .map_err(|e| {
                StorageError::Engine(format!("cannot start the commit thread: {e}").into())
            })?;
        Ok(Committer {
            link,
            thread: Mutex::new(Some(thread)),
            stats,
        })
    }

    pub fn stats(&self) -> CommitStats {
        self.stats.snapshot()
    }

    pub fn failure(&self) -> Option<StorageError> {
        self.stats.failure().cloned()
    }

    /// Records a failed write made beside the commit thread (fjall refuses
    /// the commit thread's next write after it too).
    pub fn record_failure(&self, e: &StorageError) {
        let _ = self.stats.failure.set(e.clone());
    }

    /// What a thread holding replies needs of the commit thread.
    pub fn link(&self) -> &CommitLink {
        &self.link
    }

    /// Hands a batch over; on failure gives it back, so its releases can be told.
    // The commit comes back only when the store has closed: rare.
    #[allow(clippy::result_large_err)]
    pub fn submit(&self, commit: Commit) -> std::result::Result<(), Commit> {
        self.link
            .queue
            .push(Job::Commit(commit))
            .map_err(|job| match job {
                Job::Commit(c) => c,
                Job::Release { .. } => unreachable!("pushed a commit"),
            })
    }

    pub fn stop(&self) {
        self.link.queue.close();
        let handle = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(handle) = handle {
            // The thread only panics on a bug; there is nothing to add then.
            let _ = handle.join();
        }
    }
}

impl Drop for Committer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The keyspaces batches write to.
#[derive(Clone)]
pub(crate) struct Keyspaces {
    pub data: Keyspace,
    pub alarms: Keyspace,
    pub alarm_of: Keyspace,
    pub known: Keyspace,
    pub meta: Keyspace,
}

impl Keyspaces {
    /// The keyspaces besides `meta` that carry the chain, in the order of
    /// `highwater::Numbers::lasts`.
    pub fn tracked(&self) -> [&Keyspace; highwater::TRACKED] {
        [&self.data, &self.alarms, &self.alarm_of, &self.known]
    }
}

/// Where a keyspace of [`Space`] is in [`Keyspaces::tracked`].
fn tracked_index(space: Space) -> usize {
    match space {
        Space::Index => 1,
        Space::ByObject => 2,
        Space::Known => 3,
    }
}

/// The object numbers the commit thread keeps on disk: it raises the
/// stored next free number in the batch that first uses a number, and
/// forgets pending numbers once their registry entries are applied.
pub(crate) struct Numbering {
    pub numbers: Arc<Numbers>,
    /// The next free number as stored.
    pub next: u64,
}

/// The numbers of the commit groups (see `highwater`): the last one
/// applied, and the mark of the last one durable.
pub(crate) struct Chain {
    pub numbers: highwater::Numbers,
    pub mark: HighWater,
}

/// What the store's options set of the commit thread (see `StoreOptions`).
pub(crate) struct Knobs {
    /// The replicated log every group is appended to first, if any.
    pub replicate: Option<crate::replica::ReplicaHandle>,
    pub persist_delay: std::time::Duration,
    pub spin: std::time::Duration,
    pub fail_commits: Arc<std::sync::atomic::AtomicUsize>,
    pub on_commit: Option<CommitHook>,
}

/// The commit thread's timing knobs.
#[derive(Clone, Copy)]
struct Timing {
    /// Fault injection: sleep before each fsync.
    delay: std::time::Duration,
    /// Poll for the next batch this long after a small group.
    spin: std::time::Duration,
}

/// A commit group this small means few, sequential writers: worth polling for.
const SMALL_GROUP: usize = 2;

/// What the commit thread owns.
struct CommitThread {
    db: Database,
    spaces: Keyspaces,
    numbering: Numbering,
    chain: Chain,
    queue: Arc<Queue<Job>>,
    stats: Arc<Counters>,
    signal: Arc<GroupSignal>,
    timing: Timing,
    /// Fault injection: groups left to fail (see `StoreOptions::fail_commits`).
    fail: Arc<std::sync::atomic::AtomicUsize>,
    hook: Option<CommitHook>,
    replica: Option<crate::replica::ReplicaHandle>,
}

impl CommitThread {
    fn run(self) {
        let CommitThread {
            db,
            spaces,
            mut numbering,
            mut chain,
            queue,
            stats,
            signal,
            timing,
            fail,
            hook,
            replica,
        } = self;
        let (db, data, queue, stats, signal, hook) =
            (&db, &spaces, &*queue, &*stats, &*signal, hook.as_ref());
        let replica = replica.as_ref().map(|r| &*r.0);
        let mut commit = |group: &mut Group| {
            commit_group(
                db,
                data,
                (&mut numbering, &mut chain),
                group,
                stats,
                (timing.delay, &fail),
                (hook, replica),
            );
            signal.fire();
        };
        // Should this thread ever panic (a bug), later writes fail with
        // `Closed` rather than wait for it forever.
        struct CloseOnUnwind<'a>(&'a Queue<Job>);
        impl Drop for CloseOnUnwind<'_> {
            fn drop(&mut self) {
                if std::thread::panicking() {
                    self.0.close();
                    let mut left = Vec::new();
                    self.0.take(&mut left);
                    for job in left {
                        let (sync, seq, releases) = match job {
                            Job::Commit(c) => (c.sync, c.seq, c.releases),
                            Job::Release { sync, seq, release } => (sync, seq, vec![release]),
                        };
                        sync.settle(seq, Some(&StorageError::Closed));
                        for release in releases {
                            release(Err(StorageError::Closed));
                        }
                    }
                }
            }
        }
        let _close = CloseOnUnwind(queue);
        let mut group = Group::default();
        let mut incoming = Vec::new();
        let mut spin = std::time::Duration::ZERO;
        // Ends once the store closed the queue and everything queued before is
        // committed.
        while queue.wait(&mut incoming, spin) {
            for job in incoming.drain(..) {
                group.take(job);
                if group.commits.len() >= MAX_GROUP {
                    commit(&mut group);
                }
            }
            let batches = group.commits.len();
            commit(&mut group);
            spin = if (1..=SMALL_GROUP).contains(&batches) {
                timing.spin
            } else {
                std::time::Duration::ZERO
            };
        }
        if let Err(e) = chain.mark.sync() {
            tracing::error!(target: "do_storage::commit", error = %e, "cannot sync the commit mark");
        }
    }
}

/// The batches and releases gathered for one fsync.
#[derive(Default)]
struct Group {
    commits: Vec<Commit>,
    /// Releases waiting for a batch of this group (or of an earlier one):
    /// the batch's object and number, and the release.
    waiting: Vec<(Arc<ObjectSync>, u64, Release)>,
    /// The group's data writes, each with its place in the group, gathered
    /// to be sorted; kept between groups (freeing a buffer this large every
    /// group made the allocator consolidate its free lists).
    ops: Vec<(Slice, Option<Slice>, usize)>,
}

impl Group {
    fn take(&mut self, job: Job) {
        match job {
            Job::Commit(c) => self.commits.push(c),
            Job::Release { sync, seq, release } => match sync.outcome(seq) {
                Some(outcome) => release(outcome),
                // Batches arrive in order, so `seq` is in this group.
                None => self.waiting.push((sync, seq, release)),
            },
        }
    }
}

fn commit_group(
    db: &Database,
    spaces: &Keyspaces,
    (numbering, chain): (&mut Numbering, &mut Chain),
    group: &mut Group,
    stats: &Counters,
    (delay, fail): (std::time::Duration, &std::sync::atomic::AtomicUsize),
    (hook, replica): (Option<&CommitHook>, Option<&dyn crate::replica::Replicate>),
) {
    let Group {
        commits: group,
        waiting,
        ops,
    } = group;
    if group.is_empty() {
        for (sync, seq, release) in waiting.drain(..) {
            release(sync.outcome(seq).unwrap_or(Ok(())));
        }
        return;
    }
    let replicated = match (replica, stats.failure()) {
        // The engine refuses every write after a failure: the log must not
        // take what this copy will not have (the store is reopened, and
        // reads back what the log took before).
        (Some(_), Some(e)) => {
            let e = e.clone();
            for commit in group.drain(..) {
                commit.sync.settle(commit.seq, Some(&e));
                for release in commit.releases {
                    release(Err(e.clone()));
                }
            }
            for (sync, seq, release) in waiting.drain(..) {
                release(sync.outcome(seq).unwrap_or_else(|| Err(e.clone())));
            }
            return;
        }
        (Some(replica), None) => {
            let position = replicate_group(replica, group);
            if group.is_empty() {
                for (sync, seq, release) in waiting.drain(..) {
                    release(sync.outcome(seq).unwrap_or(Ok(())));
                }
                return;
            }
            Some(position)
        }
        (None, _) => None,
    };
    // Sized up front: growing it would free ever larger buffers, and each
    // large allocation makes the allocator consolidate its free lists.
    let items: usize = group.iter().map(|c| c.ops.len() + c.extra.len()).sum();
    let mut batch =
        fjall::OwnedWriteBatch::with_capacity(db.clone(), items + 1 + 2 * (highwater::TRACKED + 1));
    let (mut writes, mut bytes) = (0u64, 0u64);
    let data = &spaces.data;
    // Which tracked keyspaces this group writes (see `highwater`).
    let mut touched = [false; highwater::TRACKED];
    for commit in group.iter_mut() {
        // Moved into the batch, not cloned: the commit thread then frees
        // nothing of them but their vectors.
        let placed = ops.len();
        ops.extend(
            std::mem::take(&mut commit.ops)
                .into_iter()
                .zip(placed..)
                .map(|((key, value), place)| (key, value, place)),
        );
        for (space, key, value) in commit.extra.drain(..) {
            touched[tracked_index(space)] = true;
            let keyspace = match space {
                Space::Index => &spaces.alarms,
                Space::ByObject => &spaces.alarm_of,
                Space::Known => &spaces.known,
            };
            match value {
                Some(v) => batch.insert(keyspace, key, v),
                None => batch.remove(keyspace, key),
            }
        }
    }
    // In key order: fjall inserts a batch into its memtable (a skiplist)
    // item by item, and neighbouring keys share most of their search path,
    // which then stays in the CPU's cache instead of being fetched from
    // memory anew for every write of the group. A key written twice in the
    // group (two batches of one object) keeps its order, so the later write
    // still wins: ties go by place. (An unstable sort: a stable one
    // allocates a scratch buffer as large as the group every time.)
    touched[0] = !ops.is_empty();
    ops.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(a.2.cmp(&b.2)));
    for (key, value, _) in ops.drain(..) {
        writes += 1;
        bytes += (key.len() + value.as_ref().map_or(0, |v| v.len())) as u64;
        match value {
            Some(v) => batch.insert(data, key, v),
            None => batch.remove(data, key),
        }
    }
    // Not the room of the largest group ever seen, for good.
    ops.shrink_to(OPS_KEPT);
    let next = group
        .iter()
        .filter_map(|c| c.registers.as_ref().map(|r| r.1.saturating_add(1)))
        .max()
        .filter(|next| *next > numbering.next);
    if let Some(next) = next {
        batch.insert(&spaces.meta, NEXT_KEY, next.to_be_bytes().to_vec());
    }
    // How far this copy of the replicated log goes, with the writes that
    // take it there: a store read back after a crash goes on from here.
    if let Some(Some(position)) = replicated.filter(|p| p.is_some_and(|p| p > 0))
        && replica.is_some_and(|r| r.position_trusted())
    {
        // With when (ms since the Unix epoch): a copy too far behind the
        // log cannot catch up (the log forgets deletes after a while).
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let mut value = position.to_be_bytes().to_vec();
        value.extend_from_slice(&now.to_be_bytes());
        batch.insert(&spaces.meta, crate::keys::REPLICA_APPLIED_KEY, value);
    }
    // Last in the batch, though the batch is one journal entry anyway.
    let number = chain.numbers.last + 1;
    let mut lasts = chain.numbers.lasts;
    for ((keyspace, last), touched) in spaces.tracked().into_iter().zip(&mut lasts).zip(touched) {
        if touched {
            if *last > 0 {
                batch.remove(keyspace, highwater::chain_key(*last));
            }
            batch.insert(keyspace, highwater::chain_key(number), []);
            *last = number;
        }
    }
    if chain.numbers.last > 0 {
        batch.remove(&spaces.meta, highwater::chain_key(chain.numbers.last));
    }
    batch.insert(
        &spaces.meta,
        highwater::chain_key(number),
        highwater::encode_lasts(&lasts),
    );
    let injected = fail.load(Ordering::Relaxed) > 0
        && fail
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .is_ok();
    let applied = if injected {
        drop(batch);
        Err(fjall::Error::Io(std::io::Error::other(
            "injected commit failure (StoreOptions::fail_commits)",
        )))
    } else {
        batch.commit()
    };
    if applied.is_ok() {
        chain.numbers = highwater::Numbers {
            last: number,
            lasts,
        };
        for commit in group.iter() {
            commit.sync.applied.fetch_max(commit.seq, Ordering::Release);
        }
        if let Some(next) = next {
            numbering.next = next;
        }
        numbering.numbers.applied(
            group
                .iter()
                .filter_map(|c| c.registers.as_ref().map(|r| r.0)),
        );
    }
    if !delay.is_zero() {
        std::thread::sleep(delay);
    }
    let persist_start = std::time::Instant::now();
    // Replicated, the group is durable in the log: this copy need not
    // reach the disk before the replies leave (what a crash loses of it is
    // read back from the log), only the operating system.
    let mode = match replicated {
        Some(_) => PersistMode::Buffer,
        None => PersistMode::SyncData,
    };
    let outcome = applied.and_then(|()| db.persist(mode));
    let persist = persist_start.elapsed();
    stats
        .persist_nanos
        .fetch_add(persist.as_nanos() as u64, Ordering::Relaxed);
    let summary = CommitGroup {
        batches: group.len() as u64,
        writes,
        bytes,
        persist,
        failed: outcome.is_err(),
    };
    tracing::debug!(
        target: "do_storage::commit",
        batches = summary.batches,
        writes,
        bytes,
        persist_us = persist.as_micros() as u64,
        failed = summary.failed,
        "commit group"
    );
    stats.groups.fetch_add(1, Ordering::Relaxed);
    stats
        .batches
        .fetch_add(group.len() as u64, Ordering::Relaxed);
    stats.writes.fetch_add(writes, Ordering::Relaxed);
    stats.bytes.fetch_add(bytes, Ordering::Relaxed);
    let durable = outcome.is_ok();
    let failed = outcome.err().map(StorageError::from);
    if let Some(e) = &failed {
        let _ = stats.failure.set(e.clone());
    }
    let result = failed.clone().map_or(Ok(()), Err);
    for commit in group.drain(..) {
        // Wakes `sync()` waiters only when there are any: replies go out below.
        commit.sync.settle(commit.seq, failed.as_ref());
        for release in commit.releases {
            release(result.clone());
        }
    }
    for (sync, seq, release) in waiting.drain(..) {
        release(sync.outcome(seq).unwrap_or_else(|| result.clone()));
    }
    // After the replies: a system call less on their way. A crash just
    // between leaves the mark one group behind, which only weakens the
    // check of that group.
    // Not with a replicated log: the group reached the operating system
    // only, and after a crash of the machine the mark would be ahead of
    // the journal (the log, not the mark, says what is missing then).
    if durable
        && replicated.is_none()
        && let Err(e) = chain.mark.advance(number)
    {
        // The group is durable; only the check of a later open is weaker.
        tracing::error!(target: "do_storage::commit", error = %e, "cannot write the commit mark");
    }
    // After the replies, so a slow hook delays none; a panicking one must
    // not take the commit thread down.
    if let Some(hook) = hook {
        let run = std::panic::AssertUnwindSafe(|| (hook.0)(&summary));
        if std::panic::catch_unwind(run).is_err() {
            tracing::error!(target: "do_storage::commit", "the commit hook panicked");
        }
    }
}

/// Appends the group's batches to the replicated log (all but those read
/// back from it), and takes out of the group those it did not take: they
/// fail, with whoever waits for them, and are not applied. Returns the
/// log's last position of the group, if it took any.
fn replicate_group(
    replica: &dyn crate::replica::Replicate,
    group: &mut Vec<Commit>,
) -> Option<u64> {
    let mut refused: Vec<(usize, StorageError)> = Vec::new();
    let mut sent = Vec::with_capacity(group.len());
    let mut batches = Vec::with_capacity(group.len());
    for (i, commit) in group.iter().enumerate() {
        if commit.sync.restoring.load(Ordering::Acquire) {
            continue;
        }
        if commit.sync.has_failed() {
            // It builds on a batch the log did not take.
            refused.push((
                i,
                StorageError::Unreplicated(crate::error::Unreplicated {
                    message: "an earlier write of the object was not replicated".into(),
                    fenced: false,
                }),
            ));
            continue;
        }
        sent.push(i);
        batches.push(replica_batch(commit));
    }
    let outcomes = if batches.is_empty() {
        Vec::new()
    } else {
        replica.append(&batches)
    };
    drop(batches);
    let mut position = None;
    let mut outcomes = outcomes.into_iter();
    for i in sent {
        match outcomes.next() {
            Some(Ok(at)) => position = position.max(Some(at)),
            Some(Err(e)) => refused.push((i, StorageError::Unreplicated(e))),
            None => refused.push((
                i,
                StorageError::Unreplicated(crate::error::Unreplicated {
                    message: "the log gave no outcome for the write".into(),
                    fenced: false,
                }),
            )),
        }
    }
    refused.sort_unstable_by_key(|(i, _)| std::cmp::Reverse(*i));
    for (i, e) in refused {
        let commit = group.remove(i);
        tracing::warn!(target: "do_storage::commit", error = %e, "a batch was not replicated");
        commit.sync.settle(commit.seq, Some(&e));
        for release in commit.releases {
            release(Err(e.clone()));
        }
    }
    position
}

/// A batch as the replicated log takes it: the object's keys (without the
/// store's data prefix), its alarm's change, its name.
fn replica_batch(commit: &Commit) -> crate::replica::ReplicaBatch<'_> {
    let writes = commit
        .ops
        .iter()
        .map(|(key, value)| {
            // A data key is its prefix (a length byte, then as many number
            // bytes), then the user's key.
            let skip = 1 + usize::from(key.first().copied().unwrap_or(0));
            (key.get(skip..).unwrap_or_default(), value.map(|v| &v[..]))
        })
        .collect();
    let mut alarm = None;
    let mut name = None;
    for (space, _, value) in &commit.extra {
        match space {
            Space::ByObject => alarm = Some(value.as_deref().and_then(crate::alarm::decode)),
            Space::Known => {
                name = value
                    .as_deref()
                    .and_then(|v| crate::numbers::decode_known(v).ok())
                    .map(|(_, name)| name)
                    .filter(|name| !name.is_empty());
            }
            Space::Index => {}
        }
    }
    crate::replica::ReplicaBatch {
        object: commit.sync.prefix,
        writes,
        alarm,
        name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ObjectPrefix, Store, StoreOptions};

    #[test]
    fn a_batch_of_one_write_is_held_inline_and_every_write_comes_back_in_order() {
        let op = |k: &str, v: Option<&str>| {
            (
                Slice::from(k.as_bytes()),
                v.map(|v| Slice::from(v.as_bytes())),
            )
        };
        let none: Ops = std::iter::empty().collect();
        assert_eq!(none.len(), 0);
        assert_eq!(none.into_iter().count(), 0);
        let one: Ops = [op("a", Some("1"))].into_iter().collect();
        assert!(matches!(one, Ops::One(..)));
        assert_eq!(
            one.into_iter().collect::<Vec<_>>(),
            vec![op("a", Some("1"))]
        );
        let writes = vec![op("b", None), op("a", Some("2")), op("c", Some("3"))];
        let many: Ops = writes.clone().into_iter().collect();
        assert_eq!(many.len(), 3);
        assert_eq!(many.into_iter().collect::<Vec<_>>(), writes);
    }

    #[test]
    fn a_key_written_by_three_batches_of_one_group_keeps_the_last_write() {
        let dir = tempfile::tempdir().expect("tempdir");
        // The first group's hook holds the commit thread until everything
        // else is queued: that all forms the second group.
        let (queued, wait) = std::sync::mpsc::channel::<()>();
        let wait = std::sync::Mutex::new(wait);
        let first = std::sync::atomic::AtomicBool::new(true);
        let options = StoreOptions {
            on_commit: Some(crate::CommitHook(Arc::new(move |_| {
                if first.swap(false, Ordering::SeqCst)
                    && let Ok(wait) = wait.lock()
                {
                    let _ = wait.recv_timeout(std::time::Duration::from_secs(20));
                }
            }))),
            ..StoreOptions::default()
        };
        let store = Store::open(dir.path(), options).expect("store");
        let a = store.object(ObjectPrefix::new(1, [1; 16]));
        let b = store.object(ObjectPrefix::new(1, [2; 16]));
        a.put("k", b"first group".to_vec(), true).expect("put");
        a.flush().expect("flush");
        while store.commit_stats().groups == 0 {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        // Enough keys around `k` that the sort is not a plain insertion sort.
        for i in 0..64 {
            b.put(&format!("k{i:02}"), vec![i], true).expect("put");
        }
        b.flush().expect("flush");
        for value in ["second", "third", "last"] {
            a.put("k", value.as_bytes().to_vec(), true).expect("put");
            a.flush().expect("flush");
        }
        queued.send(()).expect("the hook waits");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while !(a.is_settled() && b.is_settled()) {
            assert!(std::time::Instant::now() < deadline, "never settled");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let stats = store.commit_stats();
        assert_eq!(stats.batches, 5);
        assert_eq!(stats.groups, 2, "a's last three batches share a group");
        drop((a, b));
        // Read back from the engine, not from a view's own values.
        let fresh = store.object(ObjectPrefix::new(1, [1; 16]));
        let value = fresh.get("k").expect("get").expect("present");
        assert_eq!(&value[..], b"last");
        let b = store.object(ObjectPrefix::new(1, [2; 16]));
        for i in 0..64u8 {
            let value = b.get(&format!("k{i:02}")).expect("get").expect("present");
            assert_eq!(&value[..], &[i]);
        }
    }
}

//! Group commit: one thread drains the queue of batches from every object,
//! applies them as one fjall batch, persists the journal once, and only then
//! reports them durable.
//!
//! Why one thread: fjall holds its journal lock during fsync, so committing
//! from the object threads while another thread fsyncs serialises everyone
//! behind the fsync. Draining a queue lets one fsync cover every batch that
//! arrived while the previous one ran.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use fjall::{Database, Keyspace, PersistMode, Slice};
use tokio::sync::watch;

use crate::error::{Result, StorageError};

/// The most batches one commit group takes, so acknowledgements are not held
/// back without bound under a flood.
const MAX_GROUP: usize = 4096;

/// One object's atomic batch of writes: full keys, with `None` for a delete.
pub(crate) struct Commit {
    pub ops: Vec<(Slice, Option<Slice>)>,
    pub seq: u64,
    pub sync: Arc<ObjectSync>,
}

pub(crate) enum Job {
    Commit(Commit),
    Stop,
}

/// How far an object's batches have got: applied (visible to reads of the
/// engine) and durable (on disk).
#[derive(Debug)]
pub(crate) struct ObjectSync {
    pub applied: AtomicU64,
    pub durable: watch::Sender<Durable>,
}

/// The durable watermark of one object.
#[derive(Debug, Clone, Default)]
pub(crate) struct Durable {
    pub seq: u64,
    pub failed: Option<StorageError>,
}

impl ObjectSync {
    pub fn new() -> Arc<Self> {
        Arc::new(ObjectSync {
            applied: AtomicU64::new(0),
            durable: watch::Sender::new(Durable::default()),
        })
    }
}

pub(crate) struct Committer {
    tx: mpsc::Sender<Job>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Committer {
    pub fn start(db: Database, data: Keyspace) -> Result<Committer> {
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("do-storage-commit".into())
            .spawn(move || run(&db, &data, &rx))
            .map_err(|e| {
                StorageError::Engine(format!("cannot start the commit thread: {e}").into())
            })?;
        Ok(Committer {
            tx,
            thread: Mutex::new(Some(thread)),
        })
    }

    pub fn submit(&self, commit: Commit) -> Result<()> {
        Ok(self.tx.send(Job::Commit(commit))?)
    }

    pub fn stop(&self) {
        let _ = self.tx.send(Job::Stop);
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

fn run(db: &Database, data: &Keyspace, rx: &mpsc::Receiver<Job>) {
    let mut group: Vec<Commit> = Vec::new();
    let mut stopping = false;
    while !stopping {
        match rx.recv() {
            Ok(Job::Commit(c)) => group.push(c),
            Ok(Job::Stop) | Err(_) => break,
        }
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(Job::Commit(c)) => group.push(c),
                Ok(Job::Stop) => {
                    stopping = true;
                    break;
                }
                Err(_) => break,
            }
        }
        commit_group(db, data, &mut group);
    }
    // Whatever is still queued after a stop was submitted before it: commit it too.
    while let Ok(job) = rx.try_recv() {
        if let Job::Commit(c) = job {
            group.push(c);
        }
    }
    commit_group(db, data, &mut group);
}

fn commit_group(db: &Database, data: &Keyspace, group: &mut Vec<Commit>) {
    if group.is_empty() {
        return;
    }
    let mut batch = db.batch();
    for commit in group.iter() {
        for (key, value) in &commit.ops {
            match value {
                Some(v) => batch.insert(data, key.clone(), v.clone()),
                None => batch.remove(data, key.clone()),
            }
        }
    }
    let applied = batch.commit();
    if applied.is_ok() {
        for commit in group.iter() {
            commit.sync.applied.fetch_max(commit.seq, Ordering::Release);
        }
    }
    let outcome = applied.and_then(|()| db.persist(PersistMode::SyncData));
    let failed = outcome.err().map(StorageError::from);
    for commit in group.drain(..) {
        commit.sync.durable.send_modify(|d| {
            d.seq = d.seq.max(commit.seq);
            if d.failed.is_none() {
                d.failed.clone_from(&failed);
            }
        });
    }
}

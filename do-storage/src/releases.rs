//! Replies held until their object's writes are durable, kept and released
//! on the thread that runs the objects instead of on the commit thread.
//!
//! The commit thread is the one part of the write path that cannot be
//! spread over cores, so it does only what must be serial: apply a group,
//! persist it, move each object's durable watermark, and wake the threads
//! whose replies wait. The replies' releases (which send them and wake
//! their callers) run on those threads, which are many, instead.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::poll_fn;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Poll, Waker};

use crate::committer::{CommitLink, Release};
use crate::sync::ObjectSync;

/// The replies of one thread's objects that wait for their writes, oldest
/// first, and the task that releases them ([`Releases::run`], which the
/// thread must keep running while it holds views made with
/// [`Store::object_on_thread`](crate::Store::object_on_thread)).
///
/// Not `Send`: one per thread. Dropped with replies still waiting, it hands
/// them to the commit thread, which releases them as before.
///
/// Made with [`Releases::new`] from the store whose commit thread it waits
/// for; it holds only what it needs of that thread (its signal and its
/// queue), not the store.
///
/// ```
/// # fn main() -> Result<(), do_storage::StorageError> {
/// let dir = tempfile::tempdir().expect("tempdir");
/// let store = do_storage::Store::open(dir.path(), do_storage::StoreOptions::default())?;
/// let releases = do_storage::Releases::new(&store);
/// let cache = do_storage::ValueCache::new(1 << 20);
/// let object = store.object_on_thread(
///     do_storage::ObjectPrefix::new(1, [7; 16]),
///     cache,
///     releases.clone(),
/// );
/// object.put("k", b"v".to_vec(), true)?;
/// let (tx, rx) = std::sync::mpsc::channel();
/// object.release_when_durable(Box::new(move |durable| {
///     let _ = tx.send(durable);
/// }));
/// object.flush()?;
/// let rt = tokio::runtime::Builder::new_current_thread().build().expect("tokio");
/// let local = tokio::task::LocalSet::new();
/// local.block_on(&rt, async move {
///     tokio::task::spawn_local(releases.run());
///     while rx.try_recv().is_err() {
///         tokio::task::yield_now().await;
///     }
/// });
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Releases {
    inner: Rc<Inner>,
}

struct Inner {
    /// The commit thread of the store whose views hand replies here.
    link: CommitLink,
    pending: RefCell<VecDeque<(Arc<ObjectSync>, u64, Release)>>,
    /// The task of [`Releases::run`], while it waits for a first reply.
    idle: RefCell<Option<Waker>>,
}

impl Releases {
    /// An empty set for views of the store whose commit thread `link` leads to.
    pub(crate) fn with_link(link: CommitLink) -> Self {
        Releases {
            inner: Rc::new(Inner {
                link,
                pending: RefCell::default(),
                idle: RefCell::default(),
            }),
        }
    }

    /// Whether these wait for the commit thread `link` leads to.
    pub(crate) fn serve(&self, link: &CommitLink) -> bool {
        self.inner.link.same(link)
    }

    /// Holds `release` until batch `seq` of `sync`'s object is durable.
    pub(crate) fn push(&self, sync: Arc<ObjectSync>, seq: u64, release: Release) {
        sync.held.fetch_add(1, Ordering::Relaxed);
        self.inner
            .pending
            .borrow_mut()
            .push_back((sync, seq, release));
        if let Some(waker) = self.inner.idle.borrow_mut().take() {
            waker.wake();
        }
    }

    /// Replies waiting now.
    pub fn len(&self) -> usize {
        self.inner.pending.borrow().len()
    }

    /// Whether no reply waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Releases the oldest replies whose batches are settled, in order,
    /// stopping at the first that is not.
    fn release_due(&self) {
        loop {
            let next = {
                let mut pending = self.inner.pending.borrow_mut();
                let outcome = match pending.front() {
                    Some((sync, seq, _)) => sync.outcome(*seq),
                    None => return,
                };
                match outcome {
                    Some(outcome) => pending.pop_front().map(|(sync, _, r)| {
                        sync.held.fetch_sub(1, Ordering::Relaxed);
                        (r, outcome)
                    }),
                    None => return,
                }
            };
            // Outside the borrow: a release may hand a reply to a task of
            // this thread, which may add replies of its own.
            if let Some((release, outcome)) = next {
                release(outcome);
            }
        }
    }

    fn front_settled(&self) -> bool {
        self.inner
            .pending
            .borrow()
            .front()
            .is_none_or(|(sync, seq, _)| sync.outcome(*seq).is_some())
    }

    /// Releases replies as their writes become durable, for as long as it
    /// runs: spawn it on the thread's `LocalSet`.
    pub async fn run(self) {
        self.run_in_bursts(|release| release()).await
    }

    /// [`Releases::run`], with each burst of releases (all the replies due
    /// when the task wakes) run inside `burst`, which must call the function
    /// it is given once: so the thread can do its part of the sending at
    /// the burst's end.
    pub async fn run_in_bursts(self, burst: impl Fn(&dyn Fn())) {
        let signal = self.inner.link.signal();
        loop {
            burst(&|| self.release_due());
            if self.is_empty() {
                poll_fn(|cx| {
                    if self.is_empty() {
                        *self.inner.idle.borrow_mut() = Some(cx.waker().clone());
                        Poll::Pending
                    } else {
                        Poll::Ready(())
                    }
                })
                .await;
                continue;
            }
            signal.until(|| self.front_settled()).await;
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        for (sync, seq, release) in self.pending.get_mut().drain(..) {
            sync.held.fetch_sub(1, Ordering::Relaxed);
            // Released at once if settled, else by the commit thread.
            self.link.release(sync, seq, release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ObjectPrefix, Store, StoreOptions, ValueCache};
    use std::time::{Duration, Instant};

    fn slow_store(dir: &std::path::Path) -> Store {
        let options = StoreOptions {
            persist_delay: Duration::from_millis(50),
            ..StoreOptions::default()
        };
        Store::open(dir, options).expect("store")
    }

    /// A view's write, a reply held for it, and where the reply lands.
    fn held_reply(
        store: &Store,
        releases: &Releases,
    ) -> std::sync::mpsc::Receiver<crate::Result<()>> {
        let object = store.object_on_thread(
            ObjectPrefix::new(1, [3; 16]),
            ValueCache::new(1 << 20),
            releases.clone(),
        );
        object.put("k", b"v".to_vec(), true).expect("put");
        let (tx, rx) = std::sync::mpsc::channel();
        object.release_when_durable(Box::new(move |durable| {
            let _ = tx.send(durable);
        }));
        object.flush().expect("flush");
        rx
    }

    #[test]
    fn a_held_reply_is_released_on_its_thread_only_once_its_write_is_durable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = slow_store(dir.path());
        let releases = Releases::new(&store);
        let rx = held_reply(&store, &releases);
        assert_eq!(releases.len(), 1, "held here, not on the commit thread");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("tokio");
        let local = tokio::task::LocalSet::new();
        let started = Instant::now();
        let outcome = local.block_on(&rt, async {
            tokio::task::spawn_local(releases.clone().run());
            loop {
                if let Ok(outcome) = rx.try_recv() {
                    break outcome;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        });
        assert!(outcome.is_ok());
        assert!(
            started.elapsed() >= Duration::from_millis(40),
            "released before the (delayed) fsync"
        );
        assert!(releases.is_empty());
    }

    #[test]
    fn replies_still_held_when_the_thread_drops_them_go_to_the_commit_thread() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = slow_store(dir.path());
        let releases = Releases::new(&store);
        let rx = held_reply(&store, &releases);
        // No task ever runs them: dropping the last handle hands them over.
        drop(releases);
        let outcome = rx.recv_timeout(Duration::from_secs(20)).expect("released");
        assert!(outcome.is_ok());
    }
}

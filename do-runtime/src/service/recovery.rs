//! Storage recovery: a store whose commit failed is reopened in place.
//!
//! After a failed write or fsync (a full disk, an I/O error) fjall refuses
//! every later write until the database is opened again, and the objects'
//! memory may hold writes that never reached disk. So this thread, on
//! seeing the store's first failure ([`do_storage::Store::failure`]):
//!
//! 1. reports the runtime not ready (`/readyz`: 503 with the failure);
//! 2. tells every worker to let the store go: each resets its objects
//!    (running calls fail with `Disconnected`, reason `Reset`), refuses
//!    their queued calls, drops its value cache, and refuses new calls until
//!    step 4;
//! 3. closes the store, waits until its file system has room to replay
//!    and flush the journal and write a memtable's worth
//!    ([`do_storage::Store::room_to_reopen`], where the platform tells free
//!    space; and, when it failed again within 30 s of the last reopen, a
//!    hold of 1 s doubling to 30 s), and opens the directory again, retrying with backoff
//!    (up to 5 s apart) while that fails: the old handles take a moment to
//!    go, and a directory that cannot be opened keeps the runtime not
//!    ready, with the reason;
//! 4. hands the reopened store to the workers and reports ready again.
//!
//! Reads of committed data keep working until step 2. Nothing acknowledged
//! is lost: a group is acknowledged only after its fsync, and reopening
//! replays the journal up to the last synced group. A write that failed
//! may still be found after reopening (its bytes may have reached the disk
//! before the failure was seen), as with any failed write.

use std::sync::Arc;
use std::time::Duration;

use do_storage::{StorageError, Store};

use crate::engine::shared::Shared;
use crate::engine::worker::WorkerMsg;

/// How often the thread looks at the store.
const WATCH_EVERY: Duration = Duration::from_millis(50);

/// A failure this soon after a reopen counts as the same trouble.
const AGAIN_WITHIN: Duration = Duration::from_secs(30);

/// The longest hold before reopening after repeated failures.
const MAX_HOLD: Duration = Duration::from_secs(30);

/// The longest wait between two attempts to reopen.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Starts the recovery thread.
pub(crate) fn spawn(shared: Arc<Shared>) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("do-storage-recovery".into())
        .spawn(move || watch(&shared))
}

fn stopping(shared: &Shared) -> bool {
    shared.is_stopping()
}

fn watch(shared: &Shared) {
    let mut last: Option<std::time::Instant> = None;
    let mut hold = Duration::ZERO;
    while !stopping(shared) {
        std::thread::sleep(WATCH_EVERY);
        let failure = shared.store().and_then(|store| store.failure());
        if let Some(failure) = failure {
            hold = match last {
                Some(at) if at.elapsed() < AGAIN_WITHIN => {
                    (hold * 2).clamp(Duration::from_secs(1), MAX_HOLD)
                }
                _ => Duration::ZERO,
            };
            recover(shared, failure, hold);
            last = Some(std::time::Instant::now());
        }
    }
}

/// Sleeps `how_long`, or less when the runtime stops meanwhile.
fn pause(shared: &Shared, how_long: Duration) {
    let until = std::time::Instant::now() + how_long;
    while !stopping(shared) {
        let left = until.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return;
        }
        std::thread::sleep(left.min(WATCH_EVERY));
    }
}

fn set_fault(shared: &Shared, fault: Option<String>) {
    *shared
        .storage_fault
        .lock()
        .unwrap_or_else(|p| p.into_inner()) = fault;
}

fn recover(shared: &Shared, failure: StorageError, hold: Duration) {
    let fault = format!("the storage cannot write: {failure}; reopening it");
    tracing::error!(error = %failure, "a commit failed: reopening the store");
    set_fault(shared, Some(fault.clone()));
    // Every worker lets go of the store and resets its objects.
    let mut detached = Vec::with_capacity(shared.workers.len());
    for worker in &shared.workers {
        let (done, answered) = tokio::sync::oneshot::channel();
        if worker.send(WorkerMsg::Detach(done)).is_ok() {
            detached.push(answered);
        }
    }
    for answered in detached {
        // An error: the worker stopped, and holds nothing any more.
        let _ = answered.blocking_recv();
    }
    let old = shared
        .store
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take();
    if let Some(old) = old {
        old.close();
    }
    let (dir, options) = &shared.store_source;
    let mut backoff = Duration::from_millis(20);
    let mut attempts = 0u32;
    // Failing again soon after a reopen: the disk is still (nearly) full;
    // wait longer each time rather than reset every object in a loop.
    pause(shared, hold);
    while !stopping(shared) {
        let needed = Store::room_to_reopen(dir, options);
        if let Some(free) = Store::free_bytes(dir)
            && free < needed
        {
            set_fault(
                shared,
                Some(format!(
                    "{fault}: waiting for free space ({free} bytes free, {needed} needed)"
                )),
            );
            pause(shared, Duration::from_millis(250));
            continue;
        }
        attempts += 1;
        let opened = Store::open(dir, options.clone()).and_then(|store| match &shared.on_reopen {
            Some(hook) => match hook(&store) {
                Ok(()) => Ok(store),
                Err(e) => {
                    store.close();
                    Err(do_storage::StorageError::Engine(
                        format!("cannot read back from the replicated log: {e}").into(),
                    ))
                }
            },
            None => Ok(store),
        });
        match opened {
            Ok(store) => {
                {
                    let mut slot = shared.store.lock().unwrap_or_else(|p| p.into_inner());
                    if stopping(shared) {
                        store.close();
                        return;
                    }
                    *slot = Some(store.clone());
                }
                for worker in &shared.workers {
                    let _ = worker.send(WorkerMsg::Attach(store.clone()));
                }
                set_fault(shared, None);
                tracing::info!(attempts, "the store was reopened");
                return;
            }
            Err(e) => {
                // The views of the reset objects take a moment to go (the
                // database stays locked until they do): only report what
                // outlasts that.
                if backoff >= Duration::from_millis(500) {
                    tracing::warn!(error = %e, attempts, "cannot reopen the store yet");
                    set_fault(shared, Some(format!("{fault}: {e}")));
                }
                pause(shared, backoff);
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

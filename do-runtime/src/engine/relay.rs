//! Replies handed to a task on the caller's own runtime, a burst at a time.
//!
//! Under load a worker releases hundreds of replies at once, when the fsync
//! that covers them ends. Sent from the worker, each wakes its caller's task
//! from outside the caller's runtime: a lock on that runtime's shared queue
//! and, when one of its threads sleeps, a futex. The woken thread then often
//! takes the worker's core at once, runs the one task it was given, and
//! sleeps again: the callers' threads sleep and wake many times more often
//! than the work needs, and each worker is switched out as often
//! (the figures: BENCHMARKS.md, "What changed in the fourth
//! session of 2026-12-02").
//!
//! So each thread of a multi-threaded tokio runtime whose tasks call
//! objects gets a relay: a task on its runtime, and a queue. A call carries
//! its thread's relay id. A worker's release task collects the replies of one burst by
//! relay and, at the burst's end, hands each relay its share under one lock
//! and wakes it once; the relay sends them from inside the runtime, where a
//! wake is a push on a local queue. A relay given fewer than [`SMALL`]
//! replies (and holding none) gets none: the worker sends them itself, so a
//! lone call's reply takes no extra hop.
//!
//! Every reply still leaves only once the writes it may reflect are
//! durable: a relay only carries replies already released. Replies given to
//! one relay leave in the order they were released; a later reply of the
//! same object that goes directly (one with nothing to wait for, or one of
//! a small burst) may overtake replies still queued in a relay. (Replies to
//! callers on different threads never had an order on arrival.)
//!
//! A relay that takes nothing for [`STALL`] after being woken has its
//! replies sent by the worker: a runtime whose threads are all blocked
//! never runs the relay's task, and those replies then arrive that late.

use std::cell::RefCell;
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, Weak};
use std::time::Duration;

use tokio::sync::Notify;

use crate::engine::reply::Reply;
use crate::engine::reply::ReplyTo;

/// A burst that gives a relay fewer replies than this (while it holds none)
/// sends them from the worker: waking the relay costs about as much as
/// sending a few.
const SMALL: usize = 4;

/// How long a woken relay may take nothing before the worker sends its
/// replies itself: a runtime whose every thread is blocked (a caller
/// waiting with `block_on` inside a task, say) never runs the relay's task,
/// and its callers would otherwise wait for good.
const STALL: Duration = Duration::from_millis(50);

/// Relays kept by a worker beyond which it forgets the closed ones.
const KEPT: usize = 64;

/// Replies a worker keeps room for per relay between bursts.
const SHRUNK: usize = 1024;

/// Which relay a call's reply may go through.
/// (4 bytes: it fits a call's envelope without growing it.)
pub(crate) type RelayId = NonZeroU32;

type Replies = Vec<(ReplyTo, Reply)>;

/// One caller thread's relay: replies queued for its task.
pub(crate) struct Relay {
    id: RelayId,
    /// Whether the task still runs (a lock-free copy of `Queue::open`, read
    /// by the callers at every call): kept off the queue's cache line,
    /// which the workers write.
    open: Padded<AtomicBool>,
    queue: Padded<Mutex<Queue>>,
    wake: Notify,
    /// Batches the task has taken: its progress, for the stall check.
    taken: AtomicU64,
}

#[repr(align(128))]
struct Padded<T>(T);

struct Queue {
    replies: Replies,
    /// False once the task ended (its runtime shut down, or the caller's
    /// thread exited): replies are then sent by whoever has them.
    open: bool,
}

/// The calling thread's relay, closed (and its task told to end) when the
/// thread exits.
struct Mine(Arc<Relay>);

impl Drop for Mine {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// A worker's replies for relays in the current burst, and the relays it
/// has looked up (kept, with their buffers, from burst to burst).
#[derive(Default)]
struct Outbox {
    in_burst: bool,
    relays: HashMap<RelayId, Pending, foldhash::fast::RandomState>,
    /// The relays given replies in this burst.
    touched: Vec<RelayId>,
    /// How many relays are kept before the closed ones are forgotten (at
    /// least [`KEPT`]; doubled while that many are open).
    limit: usize,
}

struct Pending {
    relay: Arc<Relay>,
    replies: Replies,
}

/// What a thread's calls go by.
enum Caller {
    /// Not yet known (no call from a task yet, or its relay closed).
    Unknown,
    /// A task of a current-thread runtime (a worker's, say): never a relay.
    /// Known once, so such a thread's calls do not look up their runtime
    /// every time.
    Never,
    Relayed(Mine),
}

thread_local! {
    static MINE: RefCell<Caller> = const { RefCell::new(Caller::Unknown) };
    static OUTBOX: RefCell<Outbox> = RefCell::default();
}

/// The open relays, by id: where a worker finds a relay the first time a
/// reply goes to it.
static RELAYS: LazyLock<Mutex<HashMap<RelayId, Weak<Relay>>>> = LazyLock::new(Mutex::default);
/// Never reused: once all are spent (4 billion relays), threads get none.
static NEXT_ID: AtomicU32 = AtomicU32::new(1);

fn relays() -> MutexGuard<'static, HashMap<RelayId, Weak<Relay>>> {
    // The map stays whole if a thread panicked holding it.
    RELAYS.lock().unwrap_or_else(|e| e.into_inner())
}

/// The relay for a call made on this thread: `Some` for a task's call on a
/// thread of a multi-threaded tokio runtime (made, with its task, at the
/// thread's first such call).
/// Other threads get none: on a current-thread runtime the task would run
/// only while its thread polls, and outside tokio there is nowhere to run it.
pub(crate) fn for_caller() -> Option<RelayId> {
    // Only a task's calls: a thread blocking on a future (`block_on`) is
    // woken from outside its runtime anyway, so a relay would only add a
    // hop. (Unavailable while the thread's locals are being torn down.)
    tokio::task::try_id()?;
    MINE.try_with(|mine| {
        let mut mine = mine.try_borrow_mut().ok()?;
        match &*mine {
            Caller::Never => return None,
            Caller::Relayed(Mine(relay)) if relay.open.0.load(Ordering::Acquire) => {
                return Some(relay.id);
            }
            // None yet, or its runtime shut down: a new one on the current.
            _ => *mine = Caller::Unknown,
        }
        let handle = tokio::runtime::Handle::try_current().ok()?;
        if !matches!(
            handle.runtime_flavor(),
            tokio::runtime::RuntimeFlavor::MultiThread
        ) {
            *mine = Caller::Never;
            return None;
        }
        let relay = Relay::open()?;
        handle.spawn(run(relay.clone()));
        let id = relay.id;
        *mine = Caller::Relayed(Mine(relay));
        Some(id)
    })
    .ok()
    .flatten()
}

/// Sends `reply` on `to`: through relay `via` during a release burst on
/// this thread (see [`burst`]), at once otherwise.
pub(crate) fn deliver(to: ReplyTo, via: Option<RelayId>, reply: Reply) {
    let back = match via {
        // In a burst, the thread's locals are alive: `with` cannot fail.
        Some(id) if in_burst() => OUTBOX.with(|outbox| keep(outbox, id, to, reply)),
        _ => Err((to, reply)),
    };
    if let Err((to, reply)) = back {
        to.send(reply);
    }
}

/// Whether this thread is in a release burst (not while its locals are
/// being torn down: a release may run from a destructor then).
fn in_burst() -> bool {
    OUTBOX
        .try_with(|outbox| outbox.try_borrow().is_ok_and(|o| o.in_burst))
        .unwrap_or(false)
}

/// Keeps a reply for relay `id` until the burst ends (called in one); hands
/// it back when there is no such relay.
#[allow(clippy::result_large_err)]
fn keep(
    outbox: &RefCell<Outbox>,
    id: RelayId,
    to: ReplyTo,
    reply: Reply,
) -> Result<(), (ReplyTo, Reply)> {
    let Ok(mut outbox) = outbox.try_borrow_mut() else {
        return Err((to, reply));
    };
    let Outbox {
        relays: kept,
        touched,
        ..
    } = &mut *outbox;
    let pending = match kept.entry(id) {
        Entry::Occupied(e) => e.into_mut(),
        Entry::Vacant(e) => {
            let found = relays().get(&id).and_then(Weak::upgrade);
            match found {
                Some(relay) => e.insert(Pending {
                    relay,
                    replies: Vec::new(),
                }),
                None => return Err((to, reply)),
            }
        }
    };
    if pending.replies.is_empty() {
        touched.push(id);
    }
    pending.replies.push((to, reply));
    Ok(())
}

/// Runs `release` (a worker's release of the replies now due) as one
/// burst: the replies it gives relays leave when it ends. Returns how many
/// it handed to relays. Must run on the worker's `LocalSet`.
pub(crate) fn burst(release: &dyn Fn()) -> u64 {
    OUTBOX.with(|outbox| {
        if let Ok(mut outbox) = outbox.try_borrow_mut() {
            outbox.in_burst = true;
        }
    });
    // Ended however `release` ends, so no reply stays kept.
    struct Unwinding;
    impl Drop for Unwinding {
        fn drop(&mut self) {
            end_burst();
        }
    }
    let unwinding = Unwinding;
    release();
    std::mem::forget(unwinding);
    end_burst()
}

/// Hands each relay its replies of the burst under one lock and wakes it,
/// or sends them from here when it got a few and holds none. Returns how
/// many it handed over.
fn end_burst() -> u64 {
    let mut woken = Vec::new();
    let mut relayed = 0;
    OUTBOX.with(|outbox| {
        let Ok(mut outbox) = outbox.try_borrow_mut() else {
            return;
        };
        let outbox = &mut *outbox;
        outbox.in_burst = false;
        let mut closed = false;
        for id in outbox.touched.drain(..) {
            let Some(pending) = outbox.relays.get_mut(&id) else {
                continue;
            };
            let relay = &pending.relay;
            let mut queue = relay.lock();
            if !queue.open || (queue.replies.is_empty() && pending.replies.len() < SMALL) {
                closed |= !queue.open;
                drop(queue);
                send(pending.replies.drain(..));
            } else {
                relayed += pending.replies.len() as u64;
                queue.replies.append(&mut pending.replies);
                // Read under the lock the task takes batches under.
                let taken = relay.taken.load(Ordering::Acquire);
                drop(queue);
                relay.wake.notify_one();
                woken.push((relay.clone(), taken));
            }
            // Not the room of the largest burst ever seen, for good.
            pending.replies.shrink_to(SHRUNK);
        }
        outbox.limit = outbox.limit.max(KEPT);
        if closed || outbox.relays.len() > outbox.limit {
            outbox
                .relays
                .retain(|_, p| p.relay.open.0.load(Ordering::Acquire));
            if outbox.relays.len() > outbox.limit / 2 {
                outbox.limit = outbox.relays.len() * 2;
            }
        }
    });
    if !woken.is_empty() {
        tokio::task::spawn_local(unstall(woken));
    }
    relayed
}

fn send(replies: impl Iterator<Item = (ReplyTo, Reply)>) {
    for (to, reply) in replies {
        to.send(reply);
    }
}

impl Relay {
    /// A new open relay, registered (its task is the caller's to spawn);
    /// none once every id is spent.
    fn open() -> Option<Arc<Relay>> {
        let id = NEXT_ID
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_add(1))
            .ok()
            .and_then(RelayId::new)?;
        let relay = Arc::new(Relay {
            id,
            open: Padded(AtomicBool::new(true)),
            queue: Padded(Mutex::new(Queue {
                replies: Vec::new(),
                open: true,
            })),
            wake: Notify::new(),
            taken: AtomicU64::new(0),
        });
        relays().insert(id, Arc::downgrade(&relay));
        Some(relay)
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        // A panic while holding it leaves the queue whole: keep using it.
        self.queue.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Ends the relay: no more replies are queued, and those queued are
    /// sent from here.
    fn close(&self) {
        let mut queue = self.lock();
        queue.open = false;
        self.open.0.store(false, Ordering::Release);
        let left = std::mem::take(&mut queue.replies);
        drop(queue);
        relays().remove(&self.id);
        send(left.into_iter());
        self.wake.notify_one();
    }
}

/// The relay's task: sends what it is given until the relay closes. Dropped
/// unfinished (its runtime shutting down, even before its first poll), it
/// closes the relay, so replies go by the workers again.
fn run(relay: Arc<Relay>) -> impl Future<Output = ()> + Send + 'static {
    struct Closing(Arc<Relay>);
    impl Drop for Closing {
        fn drop(&mut self) {
            self.0.close();
        }
    }
    // Made here, not in the body: the future owns it from the start.
    let relay = Closing(relay);
    async move {
        let mut batch = Vec::new();
        loop {
            relay.0.wake.notified().await;
            {
                let mut queue = relay.0.lock();
                if !queue.open {
                    return;
                }
                std::mem::swap(&mut batch, &mut queue.replies);
                relay.0.taken.fetch_add(1, Ordering::Release);
            }
            send(batch.drain(..));
        }
    }
}

/// After [`STALL`], sends from the worker the replies of each relay woken
/// at a burst's end that has taken nothing since.
async fn unstall(woken: Vec<(Arc<Relay>, u64)>) {
    tokio::time::sleep(STALL).await;
    for (relay, taken) in woken {
        let mut queue = relay.lock();
        if relay.taken.load(Ordering::Acquire) == taken && !queue.replies.is_empty() {
            let stuck = std::mem::take(&mut queue.replies);
            drop(queue);
            send(stuck.into_iter());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::time::Instant;
    use tokio::sync::oneshot;

    fn relay(id: RelayId) -> Arc<Relay> {
        relays()
            .get(&id)
            .and_then(Weak::upgrade)
            .expect("the relay is open")
    }

    /// The relay of the runtime's thread that ran a task of `rt`.
    fn relay_of(rt: &tokio::runtime::Runtime) -> RelayId {
        rt.block_on(async { tokio::spawn(async { for_caller() }).await })
            .expect("the task")
            .expect("a relay for a task on a multi-threaded runtime")
    }

    fn multi_thread(threads: usize) -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .build()
            .expect("tokio")
    }

    /// Runs `release` as one burst on a thread set up as a worker's (a
    /// `LocalSet` on a current-thread runtime), which then lives on for
    /// `linger`; says how many replies it handed to relays.
    fn burst_on_worker(linger: Duration, release: impl FnOnce() + Send + 'static) -> u64 {
        burst_on_worker_then(release, move |relayed| async move {
            tokio::time::sleep(linger).await;
            relayed
        })
    }

    /// [`burst_on_worker`], then `then` (given how many replies went to
    /// relays) on the worker's thread.
    fn burst_on_worker_then<T: Send + 'static, F: Future<Output = T>>(
        release: impl FnOnce() + Send + 'static,
        then: impl FnOnce(u64) -> F + Send + 'static,
    ) -> T {
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .expect("tokio");
            let local = tokio::task::LocalSet::new();
            local.block_on(&rt, async move {
                let release = Cell::new(Some(release));
                let relayed = burst(&|| {
                    if let Some(release) = release.take() {
                        release();
                    }
                });
                then(relayed).await
            })
        })
        .join()
        .expect("the worker's thread")
    }

    /// `n` reply channels, and a release that answers each with its index.
    fn replies(
        n: usize,
        via: Option<RelayId>,
    ) -> (
        impl FnOnce() + Send + 'static,
        Vec<oneshot::Receiver<Reply>>,
    ) {
        let (senders, receivers): (Vec<_>, Vec<_>) = (0..n).map(|_| oneshot::channel()).unzip();
        let release = move || {
            for (i, to) in senders.into_iter().enumerate() {
                deliver(ReplyTo::Caller(to), via, Ok(vec![i as u8]));
            }
        };
        (release, receivers)
    }

    #[test]
    fn many_replies_of_a_burst_go_through_the_callers_relay_and_a_few_leave_at_once() {
        // One thread: every task of the runtime runs on it.
        let rt = multi_thread(1);
        let id = relay_of(&rt);
        assert_eq!(relay_of(&rt), id, "one relay per thread");
        let task = rt.spawn(async move {
            // A few: sent by the worker itself, when its burst ends.
            let (release, mut few) = replies(SMALL - 1, Some(id));
            assert_eq!(burst_on_worker(Duration::ZERO, release), 0);
            for (i, rx) in few.iter_mut().enumerate() {
                assert_eq!(rx.try_recv().expect("sent at once"), Ok(vec![i as u8]));
            }
            assert_eq!(relay(id).taken.load(Ordering::Acquire), 0);
            // Many: handed to the relay in one batch, which its task sends.
            let (release, many) = replies(64, Some(id));
            assert_eq!(burst_on_worker(Duration::ZERO, release), 64);
            for (i, rx) in many.into_iter().enumerate() {
                assert_eq!(rx.await.expect("sent"), Ok(vec![i as u8]));
            }
            assert_eq!(relay(id).taken.load(Ordering::Acquire), 1);
        });
        rt.block_on(task).expect("the caller's task");
    }

    #[test]
    fn a_reply_released_outside_a_burst_or_without_a_relay_leaves_at_once() {
        let rt = multi_thread(1);
        let id = relay_of(&rt);
        let (release, mut outside) = replies(SMALL * 2, Some(id));
        release();
        let (release, mut without) = replies(SMALL * 2, None);
        assert_eq!(burst_on_worker(Duration::ZERO, release), 0);
        for rx in outside.iter_mut().chain(without.iter_mut()) {
            assert!(rx.try_recv().is_ok());
        }
        assert_eq!(relay(id).taken.load(Ordering::Acquire), 0);
        // Outside a task, outside tokio, or on a current-thread runtime: no
        // relay.
        assert_eq!(rt.block_on(async { for_caller() }), None);
        std::thread::spawn(|| assert_eq!(for_caller(), None))
            .join()
            .expect("thread");
        let current = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("tokio");
        let in_task = async { tokio::spawn(async { for_caller() }).await };
        std::thread::spawn(move || assert!(matches!(current.block_on(in_task), Ok(None))))
            .join()
            .expect("thread");
    }

    #[test]
    fn a_worker_forgets_the_relays_it_finds_closed_and_keeps_only_so_many() {
        // Relays made here, without tasks: a burst's few replies each go
        // directly, but the worker keeps every relay it looked up.
        let relays: Vec<_> = (0..KEPT + 8)
            .map(|_| Relay::open().expect("an id"))
            .collect();
        let ids: Vec<_> = relays.iter().map(|r| r.id).collect();
        let kept = || OUTBOX.with(|o| o.borrow().relays.len());
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("tokio");
        let local = tokio::task::LocalSet::new();
        local.block_on(&rt, async {
            let answered = RefCell::new(Vec::new());
            let give = |ids: &[RelayId]| {
                let relayed = burst(&|| {
                    for id in ids {
                        let (to, rx) = oneshot::channel();
                        deliver(ReplyTo::Caller(to), Some(*id), Ok(Vec::new()));
                        answered.borrow_mut().push(rx);
                    }
                });
                assert_eq!(relayed, 0, "one reply per relay goes directly");
            };
            give(&ids);
            assert_eq!(kept(), KEPT + 8, "open relays are kept");
            // All but two close; one reply to a closed relay makes the
            // worker forget every closed one.
            for relay in &relays[2..] {
                relay.close();
            }
            give(&ids[..3]);
            assert_eq!(kept(), 2);
            for mut rx in answered.into_inner() {
                assert!(rx.try_recv().is_ok(), "every reply left");
            }
        });
    }

    #[test]
    fn replies_kept_by_a_burst_that_panics_still_leave() {
        let rt = multi_thread(1);
        let id = relay_of(&rt);
        let (release, sent) = replies(SMALL * 2, Some(id));
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            burst_on_worker(Duration::ZERO, move || {
                release();
                panic!("a release panicked");
            })
        }));
        assert!(panicked.is_err());
        rt.block_on(async {
            for (i, rx) in sent.into_iter().enumerate() {
                assert_eq!(rx.await.expect("sent"), Ok(vec![i as u8]));
            }
        });
    }

    #[test]
    fn a_relay_whose_runtime_shut_down_is_closed_and_not_used() {
        let rt = multi_thread(1);
        let id = relay_of(&rt);
        // Shutting the runtime down drops the relay's task, which closes it.
        drop(rt);
        let deadline = Instant::now() + Duration::from_secs(10);
        while relays().contains_key(&id) {
            assert!(Instant::now() < deadline, "the relay never closed");
            std::thread::sleep(Duration::from_millis(1));
        }
        let (release, mut sent) = replies(SMALL * 2, Some(id));
        assert_eq!(burst_on_worker(Duration::ZERO, release), 0);
        for rx in &mut sent {
            assert!(rx.try_recv().is_ok(), "sent by the worker at once");
        }
    }

    #[test]
    fn replies_for_a_relay_whose_runtime_is_blocked_are_sent_by_the_worker_after_the_stall() {
        let rt = multi_thread(1);
        let (started, running) = std::sync::mpsc::channel();
        let (unblock, blocked) = std::sync::mpsc::channel::<()>();
        let id = relay_of(&rt);
        // The runtime's only thread blocks: the relay's task cannot run.
        rt.spawn(async move {
            let _ = started.send(());
            let _ = blocked.recv();
        });
        running.recv().expect("the blocking task started");
        let (release, mut sent) = replies(SMALL * 2, Some(id));
        burst_on_worker_then(release, |_| async move {
            for rx in &mut sent {
                assert!(rx.try_recv().is_err(), "held for the relay");
            }
            for rx in sent {
                let sent = tokio::time::timeout(Duration::from_secs(10), rx).await;
                assert!(matches!(sent, Ok(Ok(Ok(_)))), "sent after the stall");
            }
        });
        assert_eq!(relay(id).taken.load(Ordering::Acquire), 0);
        let _ = unblock.send(());
    }
}

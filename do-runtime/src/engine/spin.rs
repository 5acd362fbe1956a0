//! Spinning instead of sleeping, for a moment: a thread that polls for its
//! next piece of work for a few microseconds catches it without the kernel
//! (a futex or an eventfd write by the waker, then the scheduler: tens of
//! microseconds on a virtual machine).
//!
//! A worker's whole event loop runs inside [`Flagged`]. Every wake from
//! another thread (a stub's call, a storage reply, the reply to an outgoing
//! call) reaches the worker's `LocalSet` through the waker `Flagged` hands
//! it. When the `LocalSet` has nothing left to run, `Flagged` polls a flag
//! for up to the spin budget; a wake that lands meanwhile only sets the flag
//! (no system call) and `Flagged` runs the `LocalSet` again at once. A wake
//! that comes later wakes the event loop the ordinary way.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

/// Running (or sleeping): a wake must wake the event loop.
const IDLE: u8 = 0;
/// Polling the flag: a wake only needs to set it.
const SPINNING: u8 = 1;
/// Woken since the last poll began.
const WOKEN: u8 = 2;
/// How many times one poll may run the wrapped future after catching a
/// wake by spinning, before it returns to the event loop.
const ROUNDS: usize = 16;

thread_local! {
    /// Whether this thread is a worker: its callers must not block it, for
    /// the object they wait for may live on it.
    static ON_WORKER: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Marks this thread as a worker's.
pub(crate) fn mark_worker() {
    ON_WORKER.with(|w| w.set(true));
}

/// Whether this thread is a worker's.
pub(crate) fn on_worker() -> bool {
    ON_WORKER.with(|w| w.get())
}

/// Polls `done` for up to `budget`, giving the core to other runnable
/// threads between rounds; whether `done` turned true.
pub(crate) fn spin_until(budget: Duration, done: impl FnMut() -> bool) -> bool {
    spin_while(budget, Duration::ZERO, || false, done)
}

/// The longest a spin goes on past its budget while work is awaited (see
/// [`Flagged::awaiting`]): longer than a slow fsync on these machines, short
/// enough that a stuck disk costs one core for a moment, not for good.
pub(crate) const AWAITED_CAP: Duration = Duration::from_millis(2);

/// Like [`spin_until`], but the budget counts from the last moment
/// `awaited()` said a wake is on its way (for up to `cap`).
fn spin_while(
    budget: Duration,
    cap: Duration,
    mut awaited: impl FnMut() -> bool,
    mut done: impl FnMut() -> bool,
) -> bool {
    let start = Instant::now();
    let mut since = start;
    loop {
        for _ in 0..64 {
            if done() {
                return true;
            }
            std::hint::spin_loop();
        }
        let now = Instant::now();
        if now - start < cap && awaited() {
            since = now;
        }
        if now - since >= budget {
            return done();
        }
        // On a small machine the threads this one waits for (a caller, a
        // worker, the storage thread) may need this very core.
        std::thread::yield_now();
    }
}

/// Lets the event loop's other tasks run once, then goes on. Unlike
/// `tokio::task::yield_now`, whose wake tokio defers until the event loop
/// runs next, this wakes itself at once: a [`Flagged`] loop sees that wake
/// and hands back to the event loop, instead of spinning for a wake that
/// would come only after its spin.
pub(crate) async fn yield_once() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            return Poll::Ready(());
        }
        yielded = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    })
    .await
}

/// Wraps `future` (a worker's event loop) so that it spins for up to
/// `budget()` (asked each time: zero, no spin) before it lets its thread
/// sleep.
pub(crate) fn flagged<F: Future, B: Fn() -> Duration>(budget: B, future: F) -> Flagged<F, B> {
    Flagged {
        future: Box::pin(future),
        state: Arc::new(AtomicU8::new(IDLE)),
        budget,
        awaiting: None,
        waker: None,
    }
}

/// A future that spins for its wakes before it returns `Pending`.
pub(crate) struct Flagged<F, B> {
    future: Pin<Box<F>>,
    state: Arc<AtomicU8>,
    /// How long a spin is worth a core now; zero, not at all. Under load,
    /// work arrives in batches while the thread sleeps, and a spinning
    /// thread takes the core from the threads that produce the work.
    budget: B,
    /// Work this loop waits for from other threads and will surely be woken
    /// for (replies held until their writes are durable): while there is
    /// some, and the predicate holds, the spin outlasts its budget.
    awaiting: Option<Awaited>,
    /// The event loop's waker and our wrapper of it, made once per change.
    waker: Option<(Waker, Waker)>,
}

impl<F, B> Flagged<F, B> {
    /// Spins past the budget (for up to `cap`, see [`AWAITED_CAP`]) while
    /// `count` is above zero and `worth()` holds.
    ///
    /// A worker counts the replies it holds for the output gate: the commit
    /// thread sends them once the fsync ends, and the callers' next calls
    /// follow soon after. Spinning through the fsync catches those calls
    /// without waking the worker.
    pub(crate) fn awaiting(
        mut self,
        count: Arc<AtomicUsize>,
        cap: Duration,
        worth: impl Fn() -> bool + 'static,
    ) -> Self {
        self.awaiting = Some(Awaited {
            count,
            cap,
            worth: Box::new(worth),
        });
        self
    }
}

/// See [`Flagged::awaiting`].
struct Awaited {
    count: Arc<AtomicUsize>,
    cap: Duration,
    worth: Box<dyn Fn() -> bool>,
}

struct FlagWaker {
    state: Arc<AtomicU8>,
    inner: Waker,
}

impl Wake for FlagWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        // A spinning loop sees the flag; any other needs the real wake.
        if self.state.swap(WOKEN, Ordering::AcqRel) != SPINNING {
            self.inner.wake_by_ref();
        }
    }
}

impl<F: Future, B: Fn() -> Duration + Unpin> Future for Flagged<F, B> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        let fresh = match &this.waker {
            Some((outer, _)) => !outer.will_wake(cx.waker()),
            None => true,
        };
        if fresh {
            let flag = Waker::from(Arc::new(FlagWaker {
                state: this.state.clone(),
                inner: cx.waker().clone(),
            }));
            this.waker = Some((cx.waker().clone(), flag));
        }
        let Some((_, flag)) = &this.waker else {
            return Poll::Pending;
        };
        let mut flagged = Context::from_waker(flag);
        // Timers and I/O wait while this poll spins: it hands back to the
        // event loop after ROUNDS caught wakes or this long, whichever
        // comes first (a spin through an fsync lasts longer than `budget`).
        let started = Instant::now();
        let mut most = None;
        for _ in 0..ROUNDS {
            // Wakes seen so far are handled by this poll.
            this.state.store(IDLE, Ordering::Release);
            if let Poll::Ready(out) = this.future.as_mut().poll(&mut flagged) {
                return Poll::Ready(out);
            }
            // Not spinning, or woken during the poll (the event loop was
            // woken too and polls again): wait for the event loop.
            let budget = (this.budget)();
            let most = *most.get_or_insert(budget.saturating_mul(ROUNDS as u32));
            if budget.is_zero()
                || this
                    .state
                    .compare_exchange(IDLE, SPINNING, Ordering::AcqRel, Ordering::Acquire)
                    .is_err()
            {
                return Poll::Pending;
            }
            let awaiting = this.awaiting.as_ref();
            let cap = awaiting.map_or(Duration::ZERO, |a| a.cap);
            let woken = spin_while(
                budget,
                cap,
                // Load that arrives meanwhile ends the extension.
                || awaiting.is_some_and(|a| a.count.load(Ordering::Relaxed) > 0 && (a.worth)()),
                || this.state.load(Ordering::Acquire) == WOKEN,
            );
            // Stop spinning, unless a wake slipped in just now.
            if !woken
                && this
                    .state
                    .compare_exchange(SPINNING, IDLE, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
            {
                return Poll::Pending;
            }
            if started.elapsed() >= most {
                break;
            }
        }
        // Give the event loop its turn (timers, I/O, tasks spawned on the
        // runtime rather than the `LocalSet`), then come straight back.
        this.state.store(IDLE, Ordering::Release);
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A waker that counts its wakes.
    struct Counting(std::sync::atomic::AtomicUsize);
    impl Wake for Counting {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// A waker that counts its wakes, and the count.
    fn counting() -> (Arc<Counting>, Waker) {
        let counting = Arc::new(Counting(Default::default()));
        let waker = Waker::from(counting.clone());
        (counting, waker)
    }

    /// A future woken from another thread after `delay`.
    fn woken_after(delay: Duration) -> impl Future<Output = ()> {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            std::thread::sleep(delay);
            let _ = tx.send(());
        });
        async move {
            let _ = rx.await;
        }
    }

    #[test]
    fn a_yield_hands_back_to_the_event_loop_at_once_instead_of_spinning() {
        // Inside a tokio runtime, where `tokio::task::yield_now` would defer
        // its wake past the spin: with a 30 s budget, the poll must return
        // at once with the event loop's waker called.
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("tokio");
        rt.block_on(async {
            let (counting, waker) = counting();
            let mut cx = Context::from_waker(&waker);
            let mut future = flagged(|| Duration::from_secs(30), yield_once());
            let started = Instant::now();
            assert!(Pin::new(&mut future).poll(&mut cx).is_pending());
            assert!(started.elapsed() < Duration::from_secs(10), "it spun");
            assert_eq!(counting.0.load(Ordering::SeqCst), 1, "the loop is woken");
            assert!(Pin::new(&mut future).poll(&mut cx).is_ready());
        });
    }

    #[test]
    fn a_wake_during_the_spin_is_caught_without_waking_the_event_loop() {
        // One poll by hand with a 30 s budget: the wake lands in the spin,
        // so that single poll finishes the future, and the event loop's
        // own waker is never called.
        let (counting, waker) = counting();
        let mut cx = Context::from_waker(&waker);
        let mut future = flagged(
            || Duration::from_secs(30),
            woken_after(Duration::from_millis(20)),
        );
        let started = Instant::now();
        assert!(Pin::new(&mut future).poll(&mut cx).is_ready());
        assert!(started.elapsed() < Duration::from_secs(10));
        assert_eq!(counting.0.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn the_spin_outlasts_its_budget_while_replies_are_awaited() {
        // A 5 ms budget, a wake after 20 ms: caught by the spin only
        // because a held reply is counted, so the event loop's waker is
        // never called.
        let (counting, waker) = counting();
        let mut cx = Context::from_waker(&waker);
        let awaiting = Arc::new(AtomicUsize::new(1));
        let mut future = flagged(
            || Duration::from_millis(5),
            woken_after(Duration::from_millis(20)),
        )
        .awaiting(awaiting.clone(), Duration::from_secs(30), || true);
        assert!(Pin::new(&mut future).poll(&mut cx).is_ready());
        assert_eq!(counting.0.load(Ordering::SeqCst), 0);

        // Nothing awaited: the same poll gives up after its budget.
        awaiting.store(0, Ordering::SeqCst);
        let mut future = flagged(
            || Duration::from_millis(5),
            woken_after(Duration::from_secs(5)),
        )
        .awaiting(awaiting, Duration::from_secs(30), || true);
        assert!(Pin::new(&mut future).poll(&mut cx).is_pending());
    }

    #[test]
    fn no_spin_when_not_quiet() {
        // Not quiet: the poll returns at once, and the wake reaches the
        // event loop's waker.
        let (counting, waker) = counting();
        let mut cx = Context::from_waker(&waker);
        let mut future = flagged(|| Duration::ZERO, woken_after(Duration::from_millis(20)));
        let started = Instant::now();
        assert!(Pin::new(&mut future).poll(&mut cx).is_pending());
        assert!(started.elapsed() < Duration::from_secs(10));
        let deadline = Instant::now() + Duration::from_secs(10);
        while counting.0.load(Ordering::SeqCst) == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(counting.0.load(Ordering::SeqCst), 1);
        assert!(Pin::new(&mut future).poll(&mut cx).is_ready());
    }

    #[test]
    fn timers_still_fire_while_wakes_keep_arriving() {
        // Ping-pong with another thread, one message at a time, as a
        // sequential caller does: each spin catches the next wake and each
        // poll has little to do. The event loop must still get its turn to
        // fire the timer.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime");
        let (ping, mut pings) = tokio::sync::mpsc::unbounded_channel::<()>();
        let (pong, pongs) = std::sync::mpsc::channel::<()>();
        let caller = std::thread::spawn(move || {
            let started = Instant::now();
            while started.elapsed() < Duration::from_secs(20) {
                // Late enough that the wake lands in the spin, not the poll.
                let pause = Instant::now();
                while pause.elapsed() < Duration::from_micros(100) {
                    std::hint::spin_loop();
                }
                if ping.send(()).is_err() || pongs.recv().is_err() {
                    return;
                }
            }
        });
        let local = tokio::task::LocalSet::new();
        let started = Instant::now();
        // A spin budget no wake here takes as long to come as.
        rt.block_on(flagged(
            || Duration::from_secs(2),
            local.run_until(async move {
                tokio::task::spawn_local(async move {
                    while pings.recv().await.is_some() {
                        let _ = pong.send(());
                    }
                });
                tokio::time::sleep(Duration::from_millis(10)).await;
            }),
        ));
        let took = started.elapsed();
        drop(local);
        let _ = caller.join();
        assert!(
            took < Duration::from_secs(10),
            "the timer starved: {took:?}"
        );
    }

    #[test]
    fn a_wake_after_the_spin_wakes_the_sleeping_loop() {
        // The spin ends long before the wake: the real waker must reach the
        // event loop, or `block_on` would never return.
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .build()
                .expect("runtime");
            rt.block_on(flagged(
                || Duration::from_micros(10),
                woken_after(Duration::from_millis(50)),
            ));
            let _ = done.send(());
        });
        assert!(
            finished.recv_timeout(Duration::from_secs(10)).is_ok(),
            "the wake was lost"
        );
    }
}

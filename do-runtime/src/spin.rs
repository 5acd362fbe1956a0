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
use std::sync::atomic::{AtomicU8, Ordering};
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
pub(crate) fn spin_until(budget: Duration, mut done: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        for _ in 0..64 {
            if done() {
                return true;
            }
            std::hint::spin_loop();
        }
        if start.elapsed() >= budget {
            return done();
        }
        // On a small machine the threads this one waits for (a caller, a
        // worker, the storage thread) may need this very core.
        std::thread::yield_now();
    }
}

/// Wraps `future` (a worker's event loop) so that it spins for up to
/// `budget` before it lets its thread sleep, whenever `quiet()` says so.
pub(crate) fn flagged<F: Future, Q: Fn() -> bool>(
    budget: Duration,
    quiet: Q,
    future: F,
) -> Flagged<F, Q> {
    Flagged {
        future: Box::pin(future),
        state: Arc::new(AtomicU8::new(IDLE)),
        budget,
        quiet,
        waker: None,
    }
}

/// A future that spins for its wakes before it returns `Pending`.
pub(crate) struct Flagged<F, Q> {
    future: Pin<Box<F>>,
    state: Arc<AtomicU8>,
    budget: Duration,
    /// Whether spinning is worth a core now. Under load, work arrives in
    /// batches while the thread sleeps, and a spinning thread takes the core
    /// from the threads that produce the work.
    quiet: Q,
    /// The event loop's waker and our wrapper of it, made once per change.
    waker: Option<(Waker, Waker)>,
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

impl<F: Future, Q: Fn() -> bool + Unpin> Future for Flagged<F, Q> {
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
        for _ in 0..ROUNDS {
            // Wakes seen so far are handled by this poll.
            this.state.store(IDLE, Ordering::Release);
            if let Poll::Ready(out) = this.future.as_mut().poll(&mut flagged) {
                return Poll::Ready(out);
            }
            // Not spinning, or woken during the poll (the event loop was
            // woken too and polls again): wait for the event loop.
            if this.budget.is_zero()
                || !(this.quiet)()
                || this
                    .state
                    .compare_exchange(IDLE, SPINNING, Ordering::AcqRel, Ordering::Acquire)
                    .is_err()
            {
                return Poll::Pending;
            }
            let woken = spin_until(this.budget, || this.state.load(Ordering::Acquire) == WOKEN);
            // Stop spinning, unless a wake slipped in just now.
            if !woken
                && this
                    .state
                    .compare_exchange(SPINNING, IDLE, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
            {
                return Poll::Pending;
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

    fn run_with_wake_after(budget: Duration, delay: Duration) -> Duration {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let started = Instant::now();
        let sender = std::thread::spawn(move || {
            std::thread::sleep(delay);
            let _ = tx.send(());
        });
        rt.block_on(flagged(budget, || true, async move {
            let _ = rx.await;
        }));
        let _ = sender.join();
        started.elapsed()
    }

    #[test]
    fn a_wake_during_the_spin_runs_the_future_again() {
        // The whole wait happens inside the spin: only the flag can end it
        // before the 30 s budget.
        let took = run_with_wake_after(Duration::from_secs(30), Duration::from_millis(20));
        assert!(took < Duration::from_secs(10), "took {took:?}");
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
            Duration::from_secs(2),
            || true,
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
        let took = run_with_wake_after(Duration::from_micros(10), Duration::from_millis(50));
        assert!(took >= Duration::from_millis(50), "took {took:?}");
    }
}

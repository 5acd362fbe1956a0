//! What each worker thread runs now, for the stall watch
//! (`service::stalls`): a method that blocks its thread (a synchronous
//! loop, a `std::thread::sleep`) cannot be pre-empted, and holds up every
//! object of its worker; the watch reports it.
//!
//! A worker marks each step of object code (a poll of a call, a
//! constructor, a poll of a `wait_until` or `block_concurrency_while`
//! future) in its [`Beat`]: a few relaxed stores to memory only it writes.
//! The watch thread reads the beats a few times per threshold and reports
//! a step whose mark has not moved for longer than the threshold.

use std::cell::{Cell, OnceCell};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering, fence};

/// The "method" of a constructor's step.
pub(crate) const CONSTRUCTOR: u32 = u32::MAX;
/// The "method" of a `block_concurrency_while` future's step.
pub(crate) const BLOCKING: u32 = u32::MAX - 1;
/// The "method" of a `wait_until` future's step.
pub(crate) const WAIT_UNTIL: u32 = u32::MAX - 2;
/// The "method" of a closure run with the object (`Namespace::run`-like).
pub(crate) const CLOSURE: u32 = u32::MAX - 3;

/// Whose code a step runs: class index, object base, method id (or one of
/// the constants above).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StepOf {
    pub class: u32,
    pub base: [u8; 16],
    pub method: u32,
}

impl StepOf {
    /// The same object's step of `method`.
    pub fn with_method(self, method: u32) -> StepOf {
        StepOf { method, ..self }
    }
}

/// One worker's mark. Its sequence is odd while a step runs; each step
/// entered and left adds two.
#[derive(Default)]
#[repr(align(64))]
pub(crate) struct Beat {
    seq: AtomicU64,
    class: AtomicU32,
    method: AtomicU32,
    base: [AtomicU64; 2],
}

impl Beat {
    fn enter(&self, of: &StepOf) {
        self.class.store(of.class, Ordering::Relaxed);
        self.method.store(of.method, Ordering::Relaxed);
        let (low, high) = of.base.split_at(8);
        self.base[0].store(word(low), Ordering::Relaxed);
        self.base[1].store(word(high), Ordering::Relaxed);
        // Only this thread writes `seq`: no read-modify-write needed.
        let seq = self.seq.load(Ordering::Relaxed);
        self.seq.store(seq | 1, Ordering::Release);
    }

    fn leave(&self) {
        let seq = self.seq.load(Ordering::Relaxed);
        self.seq.store((seq | 1) + 1, Ordering::Release);
    }

    /// The step running now and its sequence number, if one is; `None`
    /// also when the worker moved on while it was being read.
    pub fn read(&self) -> Option<(u64, StepOf)> {
        let before = self.seq.load(Ordering::Acquire);
        if before & 1 == 0 {
            return None;
        }
        let class = self.class.load(Ordering::Relaxed);
        let method = self.method.load(Ordering::Relaxed);
        let low = self.base[0].load(Ordering::Relaxed);
        let high = self.base[1].load(Ordering::Relaxed);
        fence(Ordering::Acquire);
        if self.seq.load(Ordering::Relaxed) != before {
            return None;
        }
        let mut base = [0u8; 16];
        base[..8].copy_from_slice(&low.to_le_bytes());
        base[8..].copy_from_slice(&high.to_le_bytes());
        Some((
            before,
            StepOf {
                class,
                base,
                method,
            },
        ))
    }
}

/// A step of object code that has held its worker thread past the stall
/// threshold ([`RuntimeBuilder::stall_threshold`](crate::RuntimeBuilder::stall_threshold)):
/// every other object of that worker waits for it. See
/// [`Runtime::stalls`](crate::Runtime::stalls).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stall {
    /// The object's class.
    pub class: String,
    /// The object.
    pub id: crate::base::id::DurableObjectId,
    /// The method whose step it is; `constructor`, `wait_until`,
    /// `block_concurrency_while` or `closure` for steps of those.
    pub method: String,
    /// The worker thread it holds (`do-worker-<n>`).
    pub worker: usize,
    /// How long it has held it, at least, as of the watch's last look.
    pub stalled_for: std::time::Duration,
}

/// The name of `method` of `class` in reports.
pub(crate) fn method_name(class: &crate::engine::class::Class, method: u32) -> &'static str {
    match method {
        CONSTRUCTOR => "constructor",
        BLOCKING => "block_concurrency_while",
        WAIT_UNTIL => "wait_until",
        CLOSURE => "closure",
        id => class.metrics.method(id).info.name,
    }
}

fn word(bytes: &[u8]) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(bytes);
    u64::from_le_bytes(w)
}

thread_local! {
    /// This worker's beat, when the watch is on.
    static BEAT: OnceCell<Arc<Beat>> = const { OnceCell::new() };
    /// How deep in steps this thread is: only the outermost one is marked.
    static DEPTH: Cell<u32> = const { Cell::new(0) };
}

/// Makes `beat` this thread's (a worker's, at its start).
pub(crate) fn install(beat: Arc<Beat>) {
    BEAT.with(|b| {
        let _ = b.set(beat);
    });
}

/// Runs `f` as a step of `of`'s code.
#[inline]
pub(crate) fn step<R>(of: &StepOf, f: impl FnOnce() -> R) -> R {
    let outermost = DEPTH.with(|d| {
        let depth = d.get();
        d.set(depth + 1);
        depth == 0
    });
    if outermost {
        BEAT.with(|b| {
            if let Some(beat) = b.get() {
                beat.enter(of);
            }
        });
    }
    // Left however `f` ends: a panic in object code is caught above us.
    let _left = Left(outermost);
    f()
}

struct Left(bool);

impl Drop for Left {
    fn drop(&mut self) {
        DEPTH.with(|d| d.set(d.get().saturating_sub(1)));
        if self.0 {
            BEAT.with(|b| {
                if let Some(beat) = b.get() {
                    beat.leave();
                }
            });
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing unwrap is a failing test
mod tests {
    use super::*;

    #[test]
    fn a_beat_shows_the_outermost_step_while_it_runs_and_nothing_after() {
        let beat = Arc::new(Beat::default());
        install(beat.clone());
        let of = StepOf {
            class: 3,
            base: *b"0123456789abcdef",
            method: 7,
        };
        assert_eq!(beat.read(), None);
        let (seq, inside) = step(&of, || {
            step(&of.with_method(CONSTRUCTOR), || beat.read().unwrap())
        });
        assert_eq!(inside, of, "the outermost step is the one shown");
        assert_eq!(beat.read(), None, "left");
        let (next, _) = step(&of, || beat.read().unwrap());
        assert_ne!(next, seq, "each step has its own number");
        let _ = std::panic::catch_unwind(|| step(&of, || panic!("in object code")));
        assert_eq!(beat.read(), None, "left by a panic too");
    }
}

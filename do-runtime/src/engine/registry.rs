//! The per-object state that stubs and the object's task share: how many
//! calls are queued (for overload checks at the stub) and the reset
//! generation (so a reset breaks the stubs bound to the old instance while an
//! eviction breaks nothing).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use crate::base::error::{Disconnect, DisconnectReason, Error};

/// Shared by every stub of one object and by its task while it runs.
#[derive(Debug)]
pub(crate) struct ObjectHandle {
    /// Calls sent and not yet delivered to the object.
    pub queued: AtomicUsize,
    /// Encoded argument bytes of those calls.
    pub queued_bytes: AtomicUsize,
    /// Starts at 1; each reset of the instance adds one.
    pub generation: AtomicU64,
    /// Why the last reset happened, when more than a panic caused it (the
    /// object's own abort, a blocked input gate, a failed commit): what the
    /// calls and stubs it cut off report. `None` after a panic's reset.
    /// Read only when a call is refused or lost: a lock is fine.
    last_reset: Mutex<Option<Disconnect>>,
    /// Set (before the reply says so) when a write a call's reply waited
    /// for failed to commit: the object's task resets the instance at the
    /// start of its next turn, before that turn's messages run. (Writes no
    /// reply waits for — `allow_unconfirmed`, `wait_until` work — set no
    /// flag; the store's recovery, which follows every failed commit
    /// within 50 ms, resets every instance anyway.)
    pub commit_failed: std::sync::atomic::AtomicBool,
    /// How long the replies of recent calls took to come back (µs, a moving
    /// average), counted over calls whose callers spun for them.
    pub reply_micros: AtomicU32,
}

/// How far a caller's spin may stretch past its base budget for an object
/// whose replies take longer (see [`ObjectHandle::caller_spin`]).
const SPIN_STRETCH: u32 = 64;

impl ObjectHandle {
    /// A handle with nothing queued, at generation 1.
    fn new() -> Self {
        ObjectHandle {
            queued: AtomicUsize::new(0),
            queued_bytes: AtomicUsize::new(0),
            generation: AtomicU64::new(1),
            last_reset: Mutex::new(None),
            commit_failed: std::sync::atomic::AtomicBool::new(false),
            reply_micros: AtomicU32::new(0),
        }
    }

    /// Records the instance's reset and what it tells the calls and
    /// stubs it cuts off (`None`: a panic's reset, the plain words).
    pub fn note_reset(&self, cause: Option<Disconnect>) {
        *self.last_reset.lock().unwrap_or_else(|p| p.into_inner()) = cause;
    }

    /// What a call lost to the last reset gets, when that reset said more
    /// than "reset" (see [`note_reset`](Self::note_reset)).
    pub fn reset_error(&self) -> Option<Error> {
        self.last_reset
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .map(Error::Disconnected)
    }

    /// Why a stub bound to an older generation lost its instance: the last
    /// reset's reason (`Aborted` after the object's own abort, `TimedOut`
    /// after a blocked input gate), `Reset` otherwise.
    pub fn reset_reason(&self) -> DisconnectReason {
        self.last_reset
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map_or(DisconnectReason::Reset, |d| d.reason)
    }

    /// How long a caller spins for this object's reply: twice its recent
    /// reply time, at least `base` and at most 64 × `base` or 2 ms
    /// ([`AWAITED_CAP`](crate::engine::spin::AWAITED_CAP)), whichever is less; just
    /// `base` when the replies take longer than that. A reply that takes
    /// 60 µs (a 100-key listing), 150 µs (an fsync) or 400 µs (a 1 000-key
    /// listing) is then caught by the spin instead of a thread wake-up.
    pub fn caller_spin(&self, base: Duration) -> Duration {
        let recent =
            Duration::from_micros(u64::from(self.reply_micros.load(Ordering::Relaxed)) * 2);
        let most = base
            .saturating_mul(SPIN_STRETCH)
            .min(crate::engine::spin::AWAITED_CAP)
            .max(base);
        // Replies slower than the stretch would not be caught anyway: a
        // long spin would only burn the core.
        if recent > most {
            return base;
        }
        recent.max(base)
    }

    /// Folds one reply time into the moving average.
    pub fn record_reply(&self, took: Duration) {
        let sample = took.as_micros().min(1_000_000) as u32;
        let old = self.reply_micros.load(Ordering::Relaxed);
        let new = if old == 0 {
            sample
        } else {
            (old * 3 + sample) / 4
        };
        // Racing callers may lose a sample: an average needs no more.
        self.reply_micros.store(new.max(1), Ordering::Relaxed);
    }
}

impl ObjectHandle {
    /// Reserves room for one call of `bytes`, or says which limit is hit.
    pub fn admit(&self, bytes: usize, limits: &QueueLimits) -> Result<QueueSlot, String> {
        let count = self.queued.fetch_add(1, Ordering::AcqRel);
        let held = self.queued_bytes.fetch_add(bytes, Ordering::AcqRel);
        if count >= limits.calls || held + bytes > limits.bytes {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            self.queued_bytes.fetch_sub(bytes, Ordering::AcqRel);
            return Err(if count >= limits.calls {
                format!("{count} calls are queued; the limit is {}", limits.calls)
            } else {
                format!(
                    "{held} bytes of arguments are queued and this call adds {bytes}; the limit is {}",
                    limits.bytes
                )
            });
        }
        Ok(QueueSlot { bytes })
    }

    /// Gives back a slot when its call is delivered (or dropped).
    pub fn release(&self, slot: QueueSlot) {
        self.queued.fetch_sub(1, Ordering::AcqRel);
        self.queued_bytes.fetch_sub(slot.bytes, Ordering::AcqRel);
    }
}

/// Room taken in an object's queue by one call.
#[derive(Debug)]
pub(crate) struct QueueSlot {
    bytes: usize,
}

/// The bounds of each object's queue.
#[derive(Debug, Clone, Copy)]
pub(crate) struct QueueLimits {
    pub calls: usize,
    pub bytes: usize,
}

type Key = (u32, [u8; 16]);

/// Finds the handle of an object, creating it on first use. Entries are weak:
/// a handle lives exactly as long as a stub or the object's task holds it.
pub(crate) struct Registry {
    shards: Vec<Mutex<Shard>>,
}

#[derive(Default)]
struct Shard {
    map: HashMap<Key, Weak<ObjectHandle>>,
    /// Size after the last sweep of dead entries; the next sweep waits for
    /// the map to double, so sweeping costs O(1) per insert on average.
    swept_len: usize,
}

impl Registry {
    pub fn new() -> Self {
        Registry {
            shards: (0..64).map(|_| Mutex::new(Shard::default())).collect(),
        }
    }

    pub fn handle(&self, class: u32, base: [u8; 16]) -> Arc<ObjectHandle> {
        let shard = &self.shards[usize::from(base[0]) % self.shards.len()];
        let mut shard = shard.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(live) = shard.map.get(&(class, base)).and_then(Weak::upgrade) {
            return live;
        }
        let handle = Arc::new(ObjectHandle::new());
        shard.map.insert((class, base), Arc::downgrade(&handle));
        if shard.map.len() > 2 * shard.swept_len.max(512) {
            shard.map.retain(|_, w| w.strong_count() > 0);
            shard.swept_len = shard.map.len();
        }
        handle
    }

    /// Calls sent and not yet delivered, over every object: a walk of the
    /// registry, for statistics.
    pub fn queued_total(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| {
                let shard = shard.lock().unwrap_or_else(|p| p.into_inner());
                shard
                    .map
                    .values()
                    .filter_map(Weak::upgrade)
                    .map(|h| h.queued.load(Ordering::Relaxed))
                    .sum::<usize>()
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_caller_spins_twice_the_recent_reply_time_within_bounds() {
        let base = Duration::from_micros(30);
        let h = ObjectHandle::new();
        assert_eq!(h.caller_spin(base), base, "nothing learnt yet: the base");
        h.record_reply(Duration::from_micros(60));
        assert_eq!(h.caller_spin(base), Duration::from_micros(120));
        // The average moves a quarter of the way to each new sample.
        h.record_reply(Duration::from_micros(100));
        assert_eq!(h.caller_spin(base), Duration::from_micros(140));
        // Quick replies never take the spin under the base…
        for _ in 0..50 {
            h.record_reply(Duration::from_micros(1));
        }
        assert_eq!(h.caller_spin(base), base);
        // …and reach 64 × the base at most…
        for _ in 0..50 {
            h.record_reply(Duration::from_micros(960));
        }
        let spin = h.caller_spin(base);
        assert!(spin > base * 63 && spin <= base * 64, "{spin:?}");
        // …and replies slower than that are not spun for beyond the base.
        for _ in 0..50 {
            h.record_reply(Duration::from_secs(5));
        }
        assert_eq!(h.caller_spin(base), base);
        // …and never past 2 ms, whatever the base.
        let big = Duration::from_micros(100);
        for _ in 0..50 {
            h.record_reply(Duration::from_micros(1500));
        }
        assert_eq!(h.caller_spin(big), big, "3 ms is past the 2 ms cap");
        for _ in 0..50 {
            h.record_reply(Duration::from_micros(900));
        }
        assert_eq!(h.caller_spin(big), Duration::from_micros(1800));
        assert_eq!(h.caller_spin(Duration::MAX), Duration::MAX);
        assert_eq!(h.caller_spin(Duration::ZERO), Duration::ZERO);
    }
}

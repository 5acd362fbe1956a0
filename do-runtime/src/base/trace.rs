//! Trace context for spans: a 128-bit trace id shared by every span of one
//! request, carried from caller to object (and across the network), and the
//! short forms spans display.

use std::cell::Cell;
use std::fmt;

use crate::base::id::DurableObjectId;

thread_local! {
    /// The trace of the object call running on this thread, if any: calls
    /// it makes join that trace.
    static CURRENT: Cell<u128> = const { Cell::new(0) };
    /// State of this thread's id generator (splitmix64).
    static SEED: Cell<u64> = const { Cell::new(0) };
}

/// A trace id kept as two halves: aligned to 8 bytes, not 16, so a call's
/// envelope keeps to two cache lines.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Packed([u64; 2]);

impl Packed {
    pub(crate) fn get(self) -> u128 {
        u128::from(self.0[0]) << 64 | u128::from(self.0[1])
    }
}

impl From<u128> for Packed {
    fn from(trace: u128) -> Self {
        Packed([(trace >> 64) as u64, trace as u64])
    }
}

/// The current trace id, or a new one. Called only when a span is enabled.
pub(crate) fn current_or_new() -> u128 {
    let current = CURRENT.with(Cell::get);
    if current != 0 {
        return current;
    }
    let hi = next_u64();
    let lo = next_u64();
    (u128::from(hi) << 64 | u128::from(lo)).max(1)
}

fn next_u64() -> u64 {
    SEED.with(|seed| {
        if seed.get() == 0 {
            let mut bytes = [0u8; 8];
            let _ = getrandom::fill(&mut bytes);
            seed.set(u64::from_le_bytes(bytes) | 1);
        }
        let mut z = seed.get().wrapping_add(0x9e37_79b9_7f4a_7c15);
        seed.set(z);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    })
}

/// This thread's current trace (0: none).
pub(crate) fn current() -> u128 {
    CURRENT.with(Cell::get)
}

/// Runs `f` with `trace` as this thread's current trace (0: none); the
/// previous one comes back however `f` ends.
pub(crate) fn with_current<R>(trace: u128, f: impl FnOnce() -> R) -> R {
    struct Restore(u128);
    impl Drop for Restore {
        fn drop(&mut self) {
            CURRENT.with(|c| c.set(self.0));
        }
    }
    let _restore = Restore(CURRENT.with(|c| c.replace(trace)));
    f()
}

/// A trace id as 32 hex digits.
pub(crate) struct TraceId(pub u128);

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

/// An object id's first 8 bytes, as 16 hex digits: enough to tell objects
/// apart in logs.
pub(crate) struct ShortId<'a>(pub &'a DurableObjectId);

impl fmt::Display for ShortId<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in &self.0.as_bytes()[..8] {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

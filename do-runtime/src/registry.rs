//! The per-object state that stubs and the object's task share: how many
//! calls are queued (for overload checks at the stub) and the reset
//! generation (so a reset breaks the stubs bound to the old instance while an
//! eviction breaks nothing).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

/// Shared by every stub of one object and by its task while it runs.
#[derive(Debug)]
pub(crate) struct ObjectHandle {
    /// Calls sent and not yet delivered to the object.
    pub queued: AtomicUsize,
    /// Encoded argument bytes of those calls.
    pub queued_bytes: AtomicUsize,
    /// Starts at 1; each reset of the instance adds one.
    pub generation: AtomicU64,
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
        let handle = Arc::new(ObjectHandle {
            queued: AtomicUsize::new(0),
            queued_bytes: AtomicUsize::new(0),
            generation: AtomicU64::new(1),
        });
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

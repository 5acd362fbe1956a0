//! The runtime's clock: the system's, or (in tests) one that moves only when
//! told, so alarm tests do not sleep.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::Notify;

/// What time it is, for alarms.
#[derive(Clone, Default)]
pub(crate) enum Clock {
    #[default]
    System,
    Manual(Arc<ManualClock>),
}

/// A clock that moves only when [`ManualClock::advance`] is called.
#[derive(Debug)]
pub struct ManualClock {
    now_ms: AtomicU64,
    advanced: Notify,
}

impl ManualClock {
    /// A clock standing at `start`.
    pub fn new(start: SystemTime) -> Self {
        ManualClock {
            now_ms: AtomicU64::new(millis(start)),
            advanced: Notify::new(),
        }
    }

    /// Moves the clock forward by `by`; alarms now due fire.
    pub fn advance(&self, by: Duration) {
        let by = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        self.now_ms.fetch_add(by, Ordering::AcqRel);
        self.advanced.notify_waiters();
    }

    /// The time it shows.
    pub fn now(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.now_ms.load(Ordering::Acquire))
    }
}

impl Clock {
    pub(crate) fn now(&self) -> SystemTime {
        match self {
            Clock::System => SystemTime::now(),
            Clock::Manual(clock) => clock.now(),
        }
    }

    pub(crate) fn now_ms(&self) -> u64 {
        millis(self.now())
    }

    /// Waits until the clock may have passed `due_ms`, or `most` passed (in
    /// real time), whichever comes first.
    pub(crate) async fn sleep_toward(&self, due_ms: Option<u64>, most: Duration) {
        match self {
            Clock::System => {
                let wait = due_ms
                    .map(|due| Duration::from_millis(due.saturating_sub(self.now_ms())))
                    .map_or(most, |d| d.min(most));
                tokio::time::sleep(wait).await;
            }
            Clock::Manual(clock) => {
                let _ = tokio::time::timeout(most, clock.advanced.notified()).await;
            }
        }
    }
}

/// Milliseconds since the Unix epoch (0 before it).
pub(crate) fn millis(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

//! The alarm scheduler's shared state: what storage wakes when an alarm
//! changes, which objects' alarms are running, and the retry policy. The
//! scheduler's thread is the service's (`service::alarms`).

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;

/// When failed alarm runs are retried: after `initial`, doubling, at most
/// `max_retries` times. Default: 2 s and 6.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RetryPolicy {
    pub initial: Duration,
    pub max_retries: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            initial: Duration::from_secs(2),
            max_retries: 6,
        }
    }
}

impl RetryPolicy {
    pub(crate) fn backoff_ms(&self, retries: u32) -> u64 {
        let initial = u64::try_from(self.initial.as_millis()).unwrap_or(u64::MAX);
        initial.saturating_mul(1u64 << retries.min(40))
    }
}

/// Objects' alarms are due: the runtime's one scheduler.
#[derive(Default)]
pub(crate) struct Scheduler {
    /// Set when an alarm changed or the runtime stops: scan again.
    pub(crate) wake: Notify,
    stop: std::sync::atomic::AtomicBool,
    /// Objects whose alarm is being run (or retried) now, by store prefix.
    running: Mutex<HashSet<[u8; do_storage::PREFIX_BYTES]>>,
}

impl Scheduler {
    pub(crate) fn wake(&self) {
        self.wake.notify_one();
    }

    pub(crate) fn stop(&self) {
        self.stop.store(true, std::sync::atomic::Ordering::Release);
        self.wake.notify_one();
    }

    pub(crate) fn stopped(&self) -> bool {
        self.stop.load(std::sync::atomic::Ordering::Acquire)
    }

    pub(crate) fn running(
        &self,
    ) -> std::sync::MutexGuard<'_, HashSet<[u8; do_storage::PREFIX_BYTES]>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }
}

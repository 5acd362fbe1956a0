//! Alarms: one per object, stored with its data, run by one scheduler per
//! runtime that scans the store's index of due times (no task or timer per
//! object). The scheduler's thread also refreshes, every 5 s, the metrics
//! the hot path does not keep (queued calls, cache counters).
//!
//! ```
//! # fn main() -> Result<(), do_runtime::Error> {
//! use std::time::Duration;
//! use do_runtime::{durable_object, AlarmInfo, Ctx, Error};
//!
//! pub struct Reminder { ctx: Ctx }
//!
//! #[durable_object]
//! impl Reminder {
//!     pub fn new(ctx: Ctx) -> Self { Self { ctx } }
//!
//!     pub async fn remind_in(&self, secs: u64) -> Result<(), Error> {
//!         self.ctx.storage().set_alarm(self.ctx.now() + Duration::from_secs(secs))
//!     }
//!
//!     /// Runs at or after the alarm time, at least once; a failure (an error
//!     /// or a panic) is retried with backoff.
//!     pub async fn alarm(&self, info: AlarmInfo) -> Result<(), Error> {
//!         let n = self.ctx.storage().get::<u32>("fired").await?.unwrap_or(0);
//!         self.ctx.storage().put("fired", &(n + 1))
//!     }
//! }
//! # Ok(()) }
//! ```

use serde::{Deserialize, Serialize};

use crate::api::object::Incoming;
use crate::base::error::Error;

/// What an `alarm` handler is told about its run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlarmInfo {
    /// How many earlier runs of this alarm failed.
    pub retry_count: u32,
    /// Whether this run is a retry.
    pub is_retry: bool,
}

/// What the scheduler sends an object's `alarm` handler.
#[derive(Serialize, Deserialize)]
pub(crate) struct Fire {
    pub due_ms: u64,
    pub retries: u32,
}

/// The argument of `alarm`: `None` when the alarm that fired is no longer
/// the object's (it was changed or deleted meanwhile), and the handler does
/// not run. Otherwise the alarm is deleted before the handler runs (which
/// may set a new one).
pub fn alarm_args(call: &Incoming<'_>) -> Result<Option<AlarmInfo>, Error> {
    let fire: Fire = postcard::from_bytes(call.args)
        .map_err(|e| Error::Codec(format!("cannot decode an alarm: {e}")))?;
    let storage = call.ctx.storage();
    match storage.raw_alarm()? {
        Some(alarm) if alarm.due_ms == fire.due_ms => {
            storage.raw_set_alarm(None)?;
            Ok(Some(AlarmInfo {
                retry_count: fire.retries,
                is_retry: fire.retries > 0,
            }))
        }
        _ => {
            storage.forget_stale_alarm(fire.due_ms);
            Ok(None)
        }
    }
}

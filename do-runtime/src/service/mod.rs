//! The runtime as a service: `Runtime` and its builder (which start the
//! engine), the alarm scheduler's thread, and `TestRuntime`. Imports `api`,
//! `engine` and `base`.

pub(crate) mod alarms;
#[cfg(feature = "cluster")]
pub(crate) mod membership;
pub(crate) mod recovery;
#[cfg(feature = "replication")]
pub(crate) mod replication;
pub(crate) mod runtime;
pub(crate) mod stalls;
#[cfg(feature = "testing")]
pub mod testing;

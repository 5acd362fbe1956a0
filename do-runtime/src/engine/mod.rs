//! The engine: what runs objects. Shared runtime state, the object registry,
//! envelopes and the ports stubs send them through, worker threads and their
//! router, object tasks (instances, input and output gates), replies and
//! relays, spinning, WebSocket bookkeeping, user tasks on workers, metrics.
//! Imports `base` only: it knows nothing of the user's API (it builds objects
//! through [`Class`](class::Class)'s constructor function), of the network
//! (reply sinks are a trait), or of the service that starts it.

pub(crate) mod alarms;
pub(crate) mod budget;
pub(crate) mod class;
pub(crate) mod input_gate;
pub(crate) mod instance;
pub(crate) mod output_gate;
#[cfg(feature = "cluster")]
pub(crate) mod placement;
pub(crate) mod port;
pub(crate) mod registry;
pub(crate) mod relay;
pub(crate) mod remote;
pub(crate) mod reply;
pub(crate) mod shared;
pub(crate) mod sockets;
pub(crate) mod spawn;
pub(crate) mod spin;
pub(crate) mod stalls;
pub mod telemetry;
pub(crate) mod wakes;
pub(crate) mod worker;

//! What the wire knows of methods: their ids and the handlers' names (from
//! `do-wire`, shared with the macro), and what the runtime keeps about each
//! method for spans and metrics.

/// What the runtime knows of a method by its id: for spans and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MethodInfo {
    /// The wire id.
    pub id: u32,
    /// The name.
    pub name: &'static str,
    /// Whether it returns `Result` (its reply's first byte tells `Ok` from `Err`).
    pub fallible: bool,
}

/// An object of a listing as it crosses the network (to a remote client,
/// or between the members of a cluster): its whole id, its name where
/// known, and whether it holds stored data now.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct WireEntry {
    pub id: Vec<u8>,
    pub name: Option<String>,
    pub has_data: bool,
}

pub use do_wire::{ALARM, FETCH, WEBSOCKET_CLOSE, WEBSOCKET_ERROR, WEBSOCKET_MESSAGE, method_id};

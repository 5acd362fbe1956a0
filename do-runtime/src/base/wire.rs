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

pub use do_wire::{ALARM, FETCH, WEBSOCKET_CLOSE, WEBSOCKET_ERROR, WEBSOCKET_MESSAGE, method_id};

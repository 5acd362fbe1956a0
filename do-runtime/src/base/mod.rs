//! The bottom layer: values and helpers with no runtime state — errors, ids
//! and their keys, clocks, trace ids, the wire form of HTTP messages, the
//! wire ids of methods, the runtime secret. Imports nothing else of the crate.

pub(crate) mod bindings;
pub(crate) mod clock;
pub(crate) mod error;
pub(crate) mod fetch;
pub(crate) mod id;
pub(crate) mod passing;
pub(crate) mod scoped;
pub(crate) mod secret;
pub(crate) mod streaming;
pub(crate) mod trace;
pub(crate) mod wire;

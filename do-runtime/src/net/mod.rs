//! The network: the TCP transport (server, client, frames, reply sinks) and
//! the HTTP gateway with WebSockets (and its admin API). Imports every
//! layer below it.

#[cfg(feature = "cluster")]
pub(crate) mod cluster;
#[cfg(feature = "gateway")]
pub mod gateway;
pub(crate) mod transport;

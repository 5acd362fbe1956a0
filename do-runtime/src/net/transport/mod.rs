//! Remote runtimes: a runtime serves its namespaces over TCP, and a
//! [`Client`](client::Client) in another process calls them through the same
//! `Namespace` and `Stub` API.

pub(crate) mod client;
pub(crate) mod frame;
pub(crate) mod handshakes;
pub(crate) mod server;
pub(crate) mod sink;
pub(crate) mod streams;
